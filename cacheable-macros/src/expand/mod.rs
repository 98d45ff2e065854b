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

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Expr;
use syn::spanned::Spanned;

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

/// The span that type errors about the output point at: the return type,
/// or the fn's name when there is none.
fn output_span(input: &AsyncFn) -> Span {
    input
        .output
        .ty
        .as_ref()
        .map_or_else(|| input.ident().span(), Spanned::span)
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
