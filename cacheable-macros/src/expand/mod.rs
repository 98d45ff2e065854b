//! Code generation from validated arguments and fn shapes.
//!
//! The user's fn is re-emitted token for token (attributes, docs,
//! visibility, signature, generics, where-clause); only its body is replaced
//! by a body that computes the key and tags, then awaits a runtime wrapper
//! around `async move { <original body> }`. The wrapper stays an `async fn`:
//! nothing is boxed and no `Send` bound is added, so the future is `Send`
//! exactly when the original body's is. Generated locals are `__cacheable_*`
//! with [`Span::mixed_site`]; runtime items are named through
//! `::cacheable::__private` (or `<crate>::__private`, see [`Krate`]) and
//! `::core` only.

mod cacheable;
mod evict;

pub(crate) use cacheable::cacheable;
pub(crate) use evict::cache_evict;

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::Expr;

use crate::args::Arg;
use crate::input::{AsyncFn, OutputKind};
use crate::krate::Krate;
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
fn cache_expr(krate: &Krate, cache: Option<&Arg<Expr>>) -> TokenStream {
    let p = krate.private();
    match cache {
        Some(arg) => {
            let expr = &arg.value;
            quote!(#p::explicit_cache(&(#expr)))
        }
        None => quote!(#p::global_cache()),
    }
}

/// `Vec<String>`: the rendered tags that do not name the result.
fn tags_expr(krate: &Krate, tags: Option<&Arg<Vec<Template>>>) -> TokenStream {
    let p = krate.private();
    let rendered = tags
        .iter()
        .flat_map(|t| &t.value)
        .filter(|t| !t.names_ret())
        .map(|t| krate.rebase(t.render()));
    quote!(#p::tags([#(#rendered),*]))
}

/// The tags that name the result (`{ret..}`), if any: statements that
/// render their other placeholders before the body, and a closure
/// `move |ret| -> Vec<String>` that renders them from the result after it.
/// `ret` carries the span of the first such template, so the user's `ret`
/// tokens resolve to it.
fn ret_tags(
    krate: &Krate,
    tags: Option<&Arg<Vec<Template>>>,
) -> Option<(TokenStream, TokenStream)> {
    let templates: Vec<&Template> = tags
        .iter()
        .flat_map(|t| &t.value)
        .filter(|t| t.names_ret())
        .collect();
    let first = templates.first()?;
    let ret = Ident::new(crate::template::RET, first.lit.span());
    let mut before = Vec::new();
    let mut rendered = Vec::new();
    for (n, t) in templates.iter().enumerate() {
        let (stmts, expr) = t.render_after_body(n);
        before.extend(stmts);
        rendered.push(expr);
    }
    let p = krate.private();
    Some((
        krate.rebase(quote!(#(#before)*)),
        krate.rebase(quote!(move |#ret| #p::tags([#(#rendered),*]))),
    ))
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
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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
fn adapter(p: &TokenStream, kind: &OutputKind) -> TokenStream {
    match kind {
        OutputKind::Plain => quote!(#p::Plain),
        OutputKind::Result(k) => {
            let k = adapter(p, k);
            quote!(#p::ResultOf<#k>)
        }
        OutputKind::Option(k) => {
            let k = adapter(p, k);
            quote!(#p::OptionOf<#k>)
        }
        OutputKind::Json(k) => {
            let k = adapter(p, k);
            quote!(#p::JsonOf<#k>)
        }
    }
}

/// `async move { <body> }`, the user's block kept as tokens.
fn body_future(input: &AsyncFn) -> TokenStream {
    let body = &input.body;
    quote!(async move #body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_cacheable(attr: TokenStream, item: TokenStream) -> String {
        cacheable(attr, item).to_string()
    }

    #[test]
    fn keeps_the_signature_and_wraps_the_body() {
        let out = expand_cacheable(
            quote!(ttl = 60, tags = ["user:{id}"], skip(db)),
            quote! {
                /// Docs.
                #[inline]
                pub async fn get<T: Clone>(db: &Db, id: u64) -> Result<User, E> where T: Send { db.get(id).await }
            },
        );
        let sig = quote! {
            #[doc = r" Docs."]
            #[inline]
            pub async fn get<T: Clone>(db: &Db, id: u64) -> Result<User, E> where T: Send
        }
        .to_string();
        assert!(out.starts_with(&sig), "{out}");
        assert!(
            out.contains("async move { db . get (id) . await }"),
            "{out}"
        );
        assert!(out.contains("Ttl :: Secs (60)"), "{out}");
        assert!(
            out.contains("ResultOf < :: cacheable :: __private :: Plain >"),
            "{out}"
        );
        // `db` is skipped, `id` is hashed.
        assert!(out.contains("hash_arg (__cacheable_h , & id)"), "{out}");
        assert!(!out.contains("& db)"), "{out}");
    }

    /// Every prelude or crate name in the generated code is reached through
    /// a leading `::` (the user's fn below names none of them itself).
    #[test]
    fn names_only_absolute_paths() {
        fn check(tokens: TokenStream, prev: &mut Vec<TokenTree>) {
            const NAMES: &[&str] = &[
                "Result",
                "Option",
                "Ok",
                "Err",
                "Some",
                "None",
                "String",
                "Vec",
                "Box",
                "format",
                "vec",
                "core",
                "std",
                "alloc",
                "cacheable",
            ];
            for t in tokens {
                if let TokenTree::Ident(i) = &t
                    && NAMES.iter().any(|n| i == n)
                {
                    let n = prev.len();
                    let absolute = n >= 2
                        && matches!((&prev[n - 2], &prev[n - 1]),
                            (TokenTree::Punct(a), TokenTree::Punct(b))
                                if a.as_char() == ':' && b.as_char() == ':');
                    assert!(absolute, "`{i}` is not an absolute path");
                }
                if let TokenTree::Group(g) = &t {
                    check(g.stream(), &mut Vec::new());
                }
                prev.push(t);
            }
        }
        for (attr, item) in [
            (
                quote!(ttl = 1, tags = ["a:{x}"]),
                quote!(
                    async fn f(x: u8) -> u8 {
                        x
                    }
                ),
            ),
            (
                quote!(key = "{x}", cache = c),
                quote!(
                    async fn f(c: &C, x: u8) {}
                ),
            ),
            (
                quote!(),
                quote!(
                    async fn f() {}
                ),
            ),
        ] {
            check(cacheable(attr, item), &mut Vec::new());
        }
        check(
            cache_evict(
                quote!(tags = ["a:{x}"]),
                quote!(
                    async fn f(x: u8) {}
                ),
            ),
            &mut Vec::new(),
        );
    }

    /// With `crate = ".."`, nothing generated names `::cacheable` (nor
    /// `cacheable::` without the leading colons): every runtime item,
    /// template code included, goes through the given path.
    #[test]
    fn crate_path_reaches_every_runtime_item() {
        fn names_cacheable(tokens: TokenStream) -> bool {
            tokens.into_iter().any(|t| match t {
                TokenTree::Ident(i) => i == "cacheable",
                TokenTree::Group(g) => names_cacheable(g.stream()),
                _ => false,
            })
        }
        let outs = [
            cacheable(
                quote!(crate = "my_cache", ttl = 1, tags = ["a:{x}"]),
                quote!(
                    async fn f(q: Query<F>, x: u8) -> Result<Option<Json<u8>>, E> {
                        Ok(None)
                    }
                ),
            ),
            cacheable(
                quote!(key = "{x}", crate = "my_cache", name = "n", cache = c),
                quote!(
                    async fn f<T>(&self, c: &C, x: u8) {}
                ),
            ),
            cache_evict(
                quote!(tags = ["a:{x}"], crate = "my_cache", strict),
                quote!(
                    async fn f(x: u8) -> Result<(), E> {
                        Ok(())
                    }
                ),
            ),
            cache_evict(
                quote!(tags = ["a"], crate = "my_cache"),
                quote!(
                    async fn f() {}
                ),
            ),
            crate::rate_limit::expand(
                quote!(points = 1, key = "{x}", crate = "my_cache", cache = c),
                quote!(
                    async fn f(c: &C, x: u8) -> Result<(), E> {
                        Ok(())
                    }
                ),
            ),
            crate::rate_limit::expand(
                quote!(crate = "my_cache", points = 1),
                quote!(
                    async fn f() -> Out {
                        Out
                    }
                ),
            ),
        ];
        for out in outs {
            let text = out.to_string();
            assert!(!text.contains("compile_error"), "{text}");
            assert!(text.contains("my_cache :: __private ::"), "{text}");
            assert!(!names_cacheable(out), "{text}");
        }
    }

    #[test]
    fn bad_crate_path_is_an_error_on_the_literal() {
        let out = cacheable(
            quote!(crate = "my cache"),
            quote!(
                async fn f() {}
            ),
        )
        .to_string();
        assert!(
            out.contains("`crate` expects the path of the `cacheable` crate"),
            "{out}"
        );
        let out = cache_evict(
            quote!(tags = ["a"], crate = my_cache),
            quote!(
                async fn f() {}
            ),
        )
        .to_string();
        assert!(out.contains("compile_error"), "{out}");
    }

    /// A value-carrying extractor written without a pattern is hashed by
    /// what it carries, through the pattern the user could have written;
    /// `State` stays out of the key.
    #[test]
    fn extractors_are_keyed_by_their_value() {
        let out = cacheable(
            quote!(),
            quote!(
                async fn f(s: State<A>, q: axum::extract::Query<F>, Path(id): Path<u64>) {}
            ),
        )
        .to_string();
        assert!(
            out.contains(
                "let axum :: extract :: Query (__cacheable_carried) = & q ; \
                 :: cacheable :: __private :: hash_arg (__cacheable_h , & * __cacheable_carried) ?"
            ),
            "{out}"
        );
        assert!(out.contains("hash_arg (__cacheable_h , & id)"), "{out}");
        assert!(!out.contains("& s"), "{out}");
    }

    #[test]
    fn errors_keep_the_item_unchanged() {
        let item = quote!(
            fn f(x: u8) -> u8 {
                x
            }
        );
        let out = cacheable(quote!(ttl = 0), item.clone()).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
        let out = cache_evict(quote!(tags = ["{nope}"]), item.clone()).to_string();
        assert!(out.ends_with(&item.to_string()), "{out}");
    }

    #[test]
    fn evict_on_ok_only_for_results() {
        let ok = cache_evict(
            quote!(tags = ["a"]),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            ok.to_string()
                .contains("evict :: < :: cacheable :: __private :: OnOk")
        );
        let always = cache_evict(
            quote!(tags = ["a"], all_tenants),
            quote!(
                async fn f() {}
            ),
        );
        let always = always.to_string();
        assert!(
            always.contains("evict :: < :: cacheable :: __private :: Always , ()"),
            "{always}"
        );
        assert!(always.contains("true"), "{always}");
    }

    #[test]
    fn default_name_is_module_path_and_fn_name() {
        let out = expand_cacheable(
            TokenStream::new(),
            quote!(
                async fn r#type() {}
            ),
        );
        assert!(
            out.contains(r#"concat ! (:: core :: module_path ! () , "::" , "type")"#),
            "{out}"
        );
        let out = expand_cacheable(
            quote!(name = "x.y", version = 3),
            quote!(
                async fn f() {}
            ),
        );
        assert!(out.contains(r#"name : "x.y" , version : 3"#), "{out}");
    }
}
