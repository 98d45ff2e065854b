//! `#[cacheable]`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::LitStr;
use syn::ext::IdentExt as _;

use super::{
    adapter, await_on_output, body_future, cache_expr, local, span_range, tags_expr, with_body,
};
use crate::args::CacheableArgs;
use crate::ctxt::{Ctxt, with_item};
use crate::input::AsyncFn;

/// Expands `#[cacheable(attr)] item`.
pub(crate) fn cacheable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let input = match AsyncFn::parse_item(item.clone()) {
        Ok(input) => input,
        Err(e) => return with_item(&e, item),
    };
    let cx = Ctxt::new();
    let args = CacheableArgs::parse(&cx, attr);
    input.require_async(&cx, "cacheable");
    args.check(&cx, &input);
    match cx.check() {
        Ok(()) => with_body(&input, &body(&args, &input)),
        Err(e) => with_item(&e, item),
    }
}

fn body(args: &CacheableArgs, input: &AsyncFn) -> TokenStream {
    let site = Ident::new("__CACHEABLE_SITE", Span::mixed_site());
    let cache = local("cache");
    let key = local("key");
    let tags = local("tags");

    let name = match &args.name {
        Some(name) => {
            let lit = &name.value;
            quote!(#lit)
        }
        None => {
            let fn_name = LitStr::new(&input.ident().unraw().to_string(), input.ident().span());
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let version = Literal::u32_unsuffixed(args.version.as_ref().map_or(0, |v| v.value));
    let ttl = match (&args.ttl, &args.policy) {
        (Some(ttl), _) => {
            let mut secs = Literal::u64_unsuffixed(ttl.value.secs);
            secs.set_span(ttl.value.span);
            quote!(::cacheable::__private::Ttl::Secs(#secs))
        }
        (None, Some(policy)) => {
            let policy = &policy.value;
            quote!(::cacheable::__private::Ttl::Policy(#policy))
        }
        (None, None) => quote!(::cacheable::__private::Ttl::Default),
    };
    let global = args.global.is_some();
    let stale = Literal::u64_unsuffixed(args.stale.as_ref().map_or(0, |s| s.value.secs));
    let cache_none = args.cache_none.is_some();

    let cache_value = cache_expr(args.cache.as_ref());
    let key_value = match &args.key {
        Some(template) => {
            let rendered = template.value.render();
            quote!(::cacheable::__private::template_key(#rendered))
        }
        None => hashed_key(args, input),
    };
    let tags_value = tags_expr(args.tags.as_ref());

    let adapter = adapter(&input.output.kind);
    let output = input.output_type();
    let fut = body_future(input);
    let cached = await_on_output(
        input,
        quote!(::cacheable::__private::cached::<#adapter, #output, _>),
        quote!(#cache, &#site, #key, #tags, #fut),
    );
    quote! {
        static #site: ::cacheable::__private::Site = ::cacheable::__private::Site {
            name: #name,
            version: #version,
            ttl: #ttl,
            global: #global,
            stale_secs: #stale,
            cache_none: #cache_none,
        };
        let #cache = #cache_value;
        let #key = #key_value;
        let #tags = #tags_value;
        #cached
    }
}

/// The default key: every binding that is not skipped, hashed in order.
/// Each hash call is spanned on the parameter's type (or, in a pattern, on
/// the binding), so a binding that is not `Serialize` is reported there.
fn hashed_key(args: &CacheableArgs, input: &AsyncFn) -> TokenStream {
    let h = local("h");
    let mut stmts = Vec::new();
    for param in &input.params {
        if param.is_state_extractor() {
            continue;
        }
        for binding in &param.bindings {
            if args.skips(binding) {
                continue;
            }
            let (first, last) = if param.is_simple() {
                span_range(&param.ty).unwrap_or((binding.span(), binding.span()))
            } else {
                (binding.span(), binding.span())
            };
            let mut located = binding.clone();
            located.set_span(binding.span().located_at(last));
            let amp = quote_spanned!(first=> &);
            stmts.push(quote_spanned! {first=>
                ::cacheable::__private::hash_arg(#h, #amp #located)?;
            });
        }
    }
    if stmts.is_empty() {
        quote!(::cacheable::__private::hashed_key(|_| {
            ::core::result::Result::Ok(())
        }))
    } else {
        quote! {
            ::cacheable::__private::hashed_key(|#h| {
                #(#stmts)*
                ::core::result::Result::Ok(())
            })
        }
    }
}
