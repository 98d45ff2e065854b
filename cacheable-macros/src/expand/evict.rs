//! `#[cache_evict]`.

use proc_macro2::TokenStream;
use quote::quote;

use super::{
    adapter, await_on_output, body_future, cache_expr, local, ret_tags, tags_expr, with_body,
};
use crate::args::EvictArgs;
use crate::ctxt::{Ctxt, with_item};
use crate::input::AsyncFn;

/// Expands `#[cache_evict(attr)] item`.
pub(crate) fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    let input = match AsyncFn::parse_item(item.clone()) {
        Ok(input) => input,
        Err(e) => return with_item(&e, item),
    };
    let cx = Ctxt::new();
    let args = EvictArgs::parse(&cx, attr);
    input.require_async(&cx, "cache_evict");
    args.check(&cx, &input);
    match cx.check() {
        Ok(()) => with_body(&input, &body(&args, &input)),
        Err(e) => with_item(&e, item),
    }
}

fn body(args: &EvictArgs, input: &AsyncFn) -> TokenStream {
    let krate = args.krate();
    let p = krate.private();
    let cache = local("cache");
    let tags = local("tags");
    let cache_value = cache_expr(&krate, args.cache.as_ref());
    let tags_value = tags_expr(&krate, args.tags.as_ref());
    let all_tenants = args.all_tenants.is_some();
    let on = if input.output.kind.is_result() {
        quote!(#p::OnOk)
    } else {
        quote!(#p::Always)
    };
    let output = input.output_type();
    let fut = body_future(input);
    // `strict` was checked to come with a `Result` output.
    let strict = args.strict.is_some();
    let (before_body, evict) = match ret_tags(&krate, args.tags.as_ref()) {
        None => {
            let callee = if strict {
                quote!(#p::evict_strict)
            } else {
                quote!(#p::evict::<#on, #output, _>)
            };
            let args = quote!(#cache, #tags, #all_tenants, #fut);
            (TokenStream::new(), await_on_output(input, callee, args))
        }
        Some((before, render)) => {
            let ret_of = adapter(&p, &input.output.kind);
            let callee = if strict {
                quote!(#p::evict_strict_ret::<#ret_of, _, _, _, _>)
            } else {
                quote!(#p::evict_ret::<#on, #ret_of, #output, _, _>)
            };
            let args = quote!(#cache, #tags, #all_tenants, #render, #fut);
            (before, await_on_output(input, callee, args))
        }
    };
    quote! {
        let #cache = #cache_value;
        // No tag rendering for a disabled cache (or none).
        let #tags = if #p::wants_key(&#cache) {
            #tags_value
        } else {
            #p::no_tags()
        };
        #before_body
        #evict
    }
}
