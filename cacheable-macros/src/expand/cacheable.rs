//! `#[cacheable]`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::LitStr;
use syn::ext::IdentExt as _;

use super::{
    adapter, await_on_output, body_future, cache_expr, local, ret_tags, span_range, tags_expr,
    with_body,
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

    let id = local("id");
    let id_value = identity(args, input);
    let cache_value = cache_expr(args.cache.as_ref());
    let key_value = match &args.key {
        Some(template) => {
            let parts = template.value.key_parts();
            quote!(::cacheable::__private::template_key(#id, #parts))
        }
        None => hashed_key(args, input, &id),
    };
    let tags_value = tags_expr(args.tags.as_ref());

    let adapter = adapter(&input.output.kind);
    let output = input.output_type();
    let fut = body_future(input);
    let (before_body, cached) = match ret_tags(args.tags.as_ref()) {
        None => (
            TokenStream::new(),
            await_on_output(
                input,
                quote!(::cacheable::__private::cached::<#adapter, #output, _>),
                quote!(#cache, &#site, #id, #key, #tags, #fut),
            ),
        ),
        Some((before, render)) => (
            before,
            await_on_output(
                input,
                quote!(::cacheable::__private::cached_ret::<#adapter, #output, _, _>),
                quote!(#cache, &#site, #id, #key, #tags, #render, #fut),
            ),
        ),
    };
    quote! {
        static #site: ::cacheable::__private::Site = ::cacheable::__private::Site {
            name: #name,
            version: #version,
            ttl: #ttl,
            global: #global,
            stale_secs: #stale,
            cache_none: #cache_none,
            state: ::cacheable::__private::SiteState::new(),
        };
        let #id = #id_value;
        let #cache = #cache_value;
        let #key = #key_value;
        let #tags = #tags_value;
        #before_body
        #cached
    }
}

/// The site's identity (guarantee 11). Without `name`: the type path of a
/// closure defined here, which `type_name` spells with the crate, module,
/// `Self` type and every generic argument of the fn and its impl
/// (`m::OrgRepo<u8>::name::{{closure}}::{{closure}}`). With `name`: the
/// name, `Self` (methods with a receiver; the macro cannot name `Self`
/// elsewhere) and the fn's own type and const arguments.
fn identity(args: &CacheableArgs, input: &AsyncFn) -> TokenStream {
    let Some(name) = &args.name else {
        let probe = local("probe");
        return quote! {{
            let #probe = || ();
            ::cacheable::__private::probe_identity(::cacheable::__private::type_name_of(&#probe))
        }};
    };
    let name = &name.value;
    let mut parts = Vec::new();
    if input.has_receiver() {
        parts.push(quote!(.ty(::core::any::type_name::<Self>())));
    }
    for param in &input.sig.generics.params {
        match param {
            syn::GenericParam::Type(t) => {
                let ident = &t.ident;
                parts.push(quote!(.ty(::core::any::type_name::<#ident>())));
            }
            syn::GenericParam::Const(c) => {
                let ident = &c.ident;
                parts.push(quote!(.konst(&#ident)));
            }
            syn::GenericParam::Lifetime(_) => {}
        }
    }
    quote!(::cacheable::__private::named_identity(#name) #(#parts)* .finish())
}

/// The default key: every binding that is not skipped, hashed in order.
/// Each hash call is spanned on the parameter's type (or, in a pattern, on
/// the binding), so a binding that is not `Serialize` is reported there.
fn hashed_key(args: &CacheableArgs, input: &AsyncFn, id: &Ident) -> TokenStream {
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
        quote!(::cacheable::__private::hashed_key(#id, |_| {
            ::core::result::Result::Ok(())
        }))
    } else {
        quote! {
            ::cacheable::__private::hashed_key(#id, |#h| {
                #(#stmts)*
                ::core::result::Result::Ok(())
            })
        }
    }
}
