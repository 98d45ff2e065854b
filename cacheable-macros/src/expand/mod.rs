//! Code generation from validated arguments and fn shapes.
//!
//! The user's fn is re-emitted token for token (attributes, docs,
//! visibility, signature, generics, where-clause); only its body is replaced
//! by a body that computes the key and tags, then awaits a runtime wrapper
//! around `async move { <original body> }`. The wrapper stays an `async fn`:
//! nothing is boxed and no `Send` bound is added, so the future is `Send`
//! exactly when the original body's is. Generated locals are `__cacheable_*`
//! with [`Span::mixed_site`]; runtime items are named through
//! `::cacheable::__private` and `::core` only.

mod cacheable;
mod evict;

pub(crate) use cacheable::cacheable;
pub(crate) use evict::cache_evict;

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::Expr;

use crate::args::Arg;
use crate::input::{AsyncFn, OutputKind};
use crate::template::Template;

/// A generated local: `__cacheable_<name>`, invisible to the user's code.
fn local(name: &str) -> Ident {
    Ident::new(&format!("__cacheable_{name}"), Span::mixed_site())
}

/// The user's fn with `body` in place of its block.
fn with_body(input: &AsyncFn, body: &TokenStream) -> TokenStream {
    let AsyncFn {
        attrs, vis, sig, ..
    } = input;
    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}

/// `Option<Cache>`: the one named by `cache = <expr>`, else the global one.
fn cache_expr(cache: Option<&Arg<Expr>>) -> TokenStream {
    match cache {
        Some(arg) => {
            let expr = &arg.value;
            quote!(::cacheable::__private::explicit_cache(&(#expr)))
        }
        None => quote!(::cacheable::__private::global_cache()),
    }
}

/// `Vec<String>`: the rendered tags.
fn tags_expr(tags: Option<&Arg<Vec<Template>>>) -> TokenStream {
    let rendered = tags.iter().flat_map(|t| &t.value).map(Template::render);
    quote!(::cacheable::__private::tags([#(#rendered),*]))
}

/// The first and last token spans of `tokens`. Stable Rust cannot join
/// spans, but an expression whose first token carries `first` and whose last
/// carries `last` is reported over the whole range.
fn span_range(tokens: &impl ToTokens) -> Option<(Span, Span)> {
    let mut iter = tokens.to_token_stream().into_iter();
    let first = iter.next()?.span();
    let last = iter.last().map_or(first, |t| t.span());
    Some((first, last))
}

/// `path(args).await`, every token of it spanned on the first token of the
/// cached value's type (`User` in `Result<Option<User>, E>`), or on the fn's
/// name when there is no return type: an output that cannot be cached is
/// reported once, where the user wrote it. (The callee, the call and the
/// `.await` each check the `Adapter` bound; with one span for all, rustc
/// reports it once.)
fn await_on_output(input: &AsyncFn, path: TokenStream, args: TokenStream) -> TokenStream {
    let span = input
        .output
        .value_type()
        .and_then(span_range)
        .map_or_else(|| input.ident().span(), |(first, _)| first);
    let path = respan(path, span);
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(span);
    let await_ = quote_spanned!(span=> .await);
    quote!(#path #args #await_)
}

/// `tokens` with every top-level token (groups' delimiters included) at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let TokenTree::Group(g) = &t {
                let mut g2 = Group::new(g.delimiter(), respan(g.stream(), span));
                g2.set_span(span);
                t = TokenTree::Group(g2);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// The `Adapter` type of an output kind.
fn adapter(kind: &OutputKind) -> TokenStream {
    match kind {
        OutputKind::Plain => quote!(::cacheable::__private::Plain),
        OutputKind::Result(k) => {
            let k = adapter(k);
            quote!(::cacheable::__private::ResultOf<#k>)
        }
        OutputKind::Option(k) => {
            let k = adapter(k);
            quote!(::cacheable::__private::OptionOf<#k>)
        }
        OutputKind::Json(k) => {
            let k = adapter(k);
            quote!(::cacheable::__private::JsonOf<#k>)
        }
    }
}

/// `async move { <body> }`, the user's block kept as tokens.
fn body_future(input: &AsyncFn) -> TokenStream {
    let body = &input.body;
    quote!(async move #body)
}
