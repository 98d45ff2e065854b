//! `#[rate_limit(..)]`: parse (`args`), validate, expand.
//!
//! The expansion keeps the signature token for token and puts one check in
//! front of the untouched body:
//!
//! ```text
//! async fn login(..) -> Result<T, E> {
//!     {
//!         static SITE: RateLimitSite = RateLimitSite { .. };
//!         if let Some(limited) = rate_limit_check(cache, &SITE, key).await {
//!             return reject::<ErrOf, _>(limited);      // Err(E::from(limited))
//!         }
//!     }
//!     { /* the body, as written */ }
//! }
//! ```
//!
//! The body is not moved into a closure or a future: `return`, `?`, borrows
//! of `self` and the `Send`-ness of the future stay exactly the user's.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::ctxt::{self, Ctxt};
use crate::input::AsyncFn;
use crate::krate::Krate;

mod args;

use args::{Algorithm, By, OnError, RateLimitArgs};

/// Expands `#[rate_limit(..)]`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let input = match AsyncFn::parse_item(item.clone()) {
        Ok(f) => f,
        Err(e) => return ctxt::with_item(&e, item),
    };
    let cx = Ctxt::new();
    let args = RateLimitArgs::parse(&cx, attr);
    input.require_async(&cx, "rate_limit");
    if input.output.ty.is_none() {
        cx.error_at(
            input.sig.ident.span(),
            "`#[rate_limit]` needs an output that can hold `RateLimited`: \
             `Result<T, E>` with `E: From<RateLimited>`, or a type that implements `From<RateLimited>`",
        );
    }
    args.check(&cx, &input);
    if let Err(e) = cx.check() {
        return ctxt::with_item(&e, item);
    }
    generate(&args, &input)
}

fn generate(args: &RateLimitArgs, input: &AsyncFn) -> TokenStream {
    let krate = Krate::new(args.krate.as_ref().map(|k| k.value.clone()));
    let p = &krate.private();
    let fn_name = input.ident().to_string();
    let name = match &args.name {
        Some(n) => {
            let lit = &n.value;
            quote!(#lit)
        }
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let policy = match &args.name {
        Some(n) => n.value.value(),
        None => fn_name,
    };
    let points = args.points.as_ref().map_or(1, |p| p.value.value);
    let points = u32::try_from(points).unwrap_or(u32::MAX);
    let duration_ms = args.duration_ms.as_ref().map_or(60_000, |d| d.value.value);
    let cost = args
        .cost
        .as_ref()
        .map_or(1, |c| u32::try_from(c.value.value).unwrap_or(u32::MAX));
    let algorithm = match args.algorithm.as_ref().map(|a| a.value) {
        None | Some(Algorithm::Gcra) => quote!(Gcra),
        Some(Algorithm::SlidingWindow) => quote!(SlidingWindow),
        Some(Algorithm::FixedWindow) => quote!(FixedWindow),
    };
    let on_error = match args.on_error.as_ref().map(|a| a.value) {
        None | Some(OnError::Local) => quote!(Local),
        Some(OnError::Allow) => quote!(Allow),
        Some(OnError::Deny) => quote!(Deny),
    };
    let by = match (args.key.is_some(), args.by.as_ref().map(|b| b.value)) {
        (true, _) => quote!(Key),
        (false, None) => quote!(Auto),
        (false, Some(By::User)) => quote!(User),
        (false, Some(By::Ip)) => quote!(Ip),
        (false, Some(By::Tenant)) => quote!(Tenant),
        (false, Some(By::Global)) => quote!(Global),
    };
    let roles = args.roles.iter().flat_map(|r| {
        r.value.iter().map(|(role, n)| {
            let n = u32::try_from(n.value).unwrap_or(u32::MAX);
            quote!((#role, #n))
        })
    });
    let key = match &args.key {
        Some(t) => {
            let parts = krate.rebase(t.value.key_parts());
            quote!(::core::option::Option::Some(
                #p::rate_limit_key(#parts)
            ))
        }
        None => quote!(::core::option::Option::None),
    };
    let cache = match &args.cache {
        Some(c) => {
            let e = &c.value;
            let p = krate.private_at(e.span());
            quote_spanned!(e.span()=> #p::explicit_cache(&(#e)))
        }
        None => quote!(#p::global_cache()),
    };
    // The kind is spanned on the return type: when the output cannot hold
    // `RateLimited`, E0277 points there.
    let span = input
        .output
        .ty
        .as_ref()
        .map_or(input.sig.ident.span(), syn::spanned::Spanned::span);
    let kind = {
        let p = krate.private_at(span);
        if input.output.kind.is_result() {
            quote_spanned!(span=> #p::ErrOf)
        } else {
            quote_spanned!(span=> #p::Whole)
        }
    };
    let site = Ident::new("__CACHEABLE_RATE_LIMIT", Span::mixed_site());
    let limited = Ident::new("__cacheable_limited", Span::mixed_site());
    let key_local = Ident::new("__cacheable_rate_key", Span::mixed_site());
    let attrs = &input.attrs;
    let vis = &input.vis;
    let sig = &input.sig;
    let body = &input.body;
    quote! {
        #(#attrs)*
        #vis #sig {
            {
                static #site: #p::RateLimitSite =
                    #p::RateLimitSite {
                        name: #name,
                        policy: #policy,
                        points: #points,
                        duration_ms: #duration_ms,
                        algorithm: #p::Algorithm::#algorithm,
                        cost: #cost,
                        on_error: #p::OnError::#on_error,
                        by: #p::By::#by,
                        roles: &[#(#roles),*],
                    };
                // Rendered before the await: a `format_args!` temporary held
                // across it would make the future `!Send`.
                let #key_local: ::core::option::Option<::std::string::String> = #key;
                if let ::core::option::Option::Some(#limited) =
                    #p::rate_limit_check(#cache, &#site, #key_local).await
                {
                    return #p::reject::<#kind, _>(#limited);
                }
            }
            #body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let out = expand(attr, item).to_string();
        out.split("compile_error")
            .skip(1)
            .map(|s| {
                let start = s.find('"').unwrap_or(0) + 1;
                let end = s[start..].find("\" }").map_or(s.len(), |e| start + e);
                s[start..end].to_owned()
            })
            .collect()
    }

    #[test]
    fn expands_a_check_before_the_body() {
        let out = expand(
            quote!(
                points = 10,
                duration = "1m",
                roles(admin = 1000),
                key = "{email}"
            ),
            quote!(
                async fn login(email: String) -> Result<u8, E> {
                    body()
                }
            ),
        )
        .to_string();
        assert!(out.contains("rate_limit_check"), "{out}");
        assert!(out.contains("duration_ms : 60000u64"), "{out}");
        assert!(out.contains("(\"admin\" , 1000u32)"), "{out}");
        assert!(out.contains("__private :: ErrOf"), "{out}");
        assert!(out.contains("By :: Key"), "{out}");
        assert!(out.ends_with("{ body () } }"), "{out}");
    }

    #[test]
    fn reports_every_error_at_once() {
        let errs = errors(
            quote!(
                points = 0,
                algorithm = "leaky",
                roles(admin = 0, free = "x"),
                tll = 3,
                cost = 1,
                cost = 2
            ),
            quote!(
                async fn f() -> Result<(), E> {}
            ),
        );
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(
            errs[2].starts_with("the points of role `admin` must be"),
            "{errs:?}"
        );
        assert!(
            errs[0].starts_with("`points` must be an integer from 1"),
            "{errs:?}"
        );
        assert!(errs[1].starts_with("unknown algorithm"), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.contains("duplicate `cost`")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown `rate_limit` argument `tll`")),
            "{errs:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(args::duration_ms("500ms"), Some(500));
        assert_eq!(args::duration_ms("1m"), Some(60_000));
        assert_eq!(args::duration_ms("2h"), Some(7_200_000));
        assert_eq!(args::duration_ms("1d"), Some(86_400_000));
        assert_eq!(args::duration_ms("m"), None);
        assert_eq!(args::duration_ms("1w"), None);
    }
}
