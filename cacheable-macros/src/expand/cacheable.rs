//! `#[cacheable]`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::LitStr;
use syn::ext::IdentExt as _;

use super::{
    adapter, await_on_output, body_future, cache_expr, local, respan, ret_tags, span_range,
    tags_expr, with_body,
};
use crate::args::CacheableArgs;
use crate::ctxt::{Ctxt, with_item};
use crate::input::{AsyncFn, Carrier};

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
    let krate = args.krate();
    let p = &krate.private();
    let site = Ident::new("__CACHEABLE_SITE", Span::mixed_site());
    let cache = local("cache");
    let key = local("key");
    let tags = local("tags");
    let keyed = local("keyed");

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
            quote!(#p::Ttl::Secs(#secs))
        }
        (None, Some(policy)) => {
            let policy = &policy.value;
            quote!(#p::Ttl::Policy(#policy))
        }
        (None, None) => quote!(#p::Ttl::Default),
    };
    let global = args.global.is_some();
    let stale = Literal::u64_unsuffixed(args.stale.as_ref().map_or(0, |s| s.value.secs));
    let cache_none = args.cache_none.is_some();
    let local_tier = args.local.as_ref().is_none_or(|l| l.value);

    let id = local("id");
    let id_value = identity(p, args, input, &site);
    let cache_value = cache_expr(&krate, args.cache.as_ref());
    let key_value = match &args.key {
        Some(template) => {
            let parts = krate.rebase(template.value.key_parts());
            quote!(#p::template_key(#id, #parts))
        }
        None => hashed_key(p, args, input, &id),
    };
    let tags_value = tags_expr(&krate, args.tags.as_ref());

    let adapter = adapter(p, &input.output.kind);
    let output = input.output_type();
    let fut = body_future(input);
    let (before_body, cached) = match ret_tags(&krate, args.tags.as_ref()) {
        None => (
            TokenStream::new(),
            await_on_output(
                input,
                quote!(#p::cached::<#adapter, #output, _>),
                quote!(#cache, &#site, #id, #key, #tags, #fut),
            ),
        ),
        Some((before, render)) => (
            before,
            await_on_output(
                input,
                quote!(#p::cached_ret::<#adapter, #output, _, _>),
                quote!(#cache, &#site, #id, #key, #tags, #render, #fut),
            ),
        ),
    };
    let check_value = check_value(p, input);
    quote! {
        #check_value
        static #site: #p::Site = #p::Site {
            name: #name,
            version: #version,
            ttl: #ttl,
            global: #global,
            stale_secs: #stale,
            cache_none: #cache_none,
            local: #local_tier,
            state: #p::SiteState::new(),
        };
        let #id = #id_value;
        let #cache = #cache_value;
        // No key work for a disabled cache (or none): the body just runs.
        let #keyed = #p::wants_key(&#cache);
        let #key = if #keyed { #key_value } else { #p::no_key() };
        let #tags = if #keyed { #tags_value } else { #p::no_tags() };
        #before_body
        #cached
    }
}

/// `assert_cached_value::<T>();` for the cached value type `T`, every token
/// at the first token of `T` as written: when `T` is not `Serialize +
/// Deserialize`, E0277 names `T` with the fix there, and rustc drops the
/// same unmet bound of the `cached` call below (same span, same predicate),
/// whose notes would name this crate's private adapters.
fn check_value(p: &TokenStream, input: &AsyncFn) -> TokenStream {
    let Some((ty, (first, _))) = input
        .nameable_value_type()
        .and_then(|ty| Some((ty, span_range(ty)?)))
    else {
        return TokenStream::new();
    };
    respan(quote!(#p::assert_cached_value::<#ty>();), first)
}

/// Hashes the value an extractor carries (`q: Query<T>` hashes the `T`), as
/// the pattern `Query(q): Query<T>` would: `let Query(v) = &q;`, so the key
/// is the same either way. The pattern compiles only for a tuple struct with
/// exactly one public field, so a type that merely shares the name either
/// is hashed whole or is an error, never hashed in part. A carried type that
/// is not `Serialize` is reported on it (`T`).
fn hash_carried(p: &TokenStream, h: &Ident, binding: &Ident, carrier: &Carrier<'_>) -> TokenStream {
    let (first, last) = span_range(carrier.inner).unwrap_or((binding.span(), binding.span()));
    let value = Ident::new("__cacheable_carried", Span::mixed_site().located_at(last));
    let pattern = &carrier.pattern;
    let amp = quote_spanned!(first=> &);
    let star = quote_spanned!(last=> *);
    let p = respan(p.clone(), first);
    quote_spanned! {first=>
        let #pattern(#value) = &#binding;
        #p::hash_arg(#h, #amp #star #value)?;
    }
}

/// The site's identity (guarantee 11). Without `name`: the type path of a
/// closure defined here, which `type_name` spells with the crate, module,
/// `Self` type and every generic argument of the fn and its impl
/// (`m::OrgRepo<u8>::name::{{closure}}::{{closure}}`). With `name`: the
/// name, `Self` (methods with a receiver; the macro cannot name `Self`
/// elsewhere) and the fn's own type and const arguments.
///
/// Computed once per site (`site_identity`), from the probe's name or the
/// name alone: both are `&'static str`, and the runtime recomputes it when
/// an instantiation of a generic site brings another string.
fn identity(p: &TokenStream, args: &CacheableArgs, input: &AsyncFn, site: &Ident) -> TokenStream {
    let Some(name) = &args.name else {
        let probe = local("probe");
        return quote! {{
            let #probe = || ();
            #p::site_identity(&#site, #p::type_name_of(&#probe), #p::probe_identity)
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
    if parts.is_empty() {
        return quote!(#p::site_identity(&#site, #name, #p::name_identity));
    }
    quote!(#p::named_identity(#name) #(#parts)* .finish())
}

/// The default key: every binding that is not skipped, hashed in order.
/// Each hash call is spanned on the parameter's type (or, in a pattern, on
/// the binding), so a binding that is not `Serialize` is reported there.
fn hashed_key(p: &TokenStream, args: &CacheableArgs, input: &AsyncFn, id: &Ident) -> TokenStream {
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
            if let Some(carrier) = param.carrier() {
                stmts.push(hash_carried(p, &h, binding, &carrier));
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
            let p = respan(p.clone(), first);
            stmts.push(quote_spanned! {first=>
                #p::hash_arg(#h, #amp #located)?;
            });
        }
    }
    if stmts.is_empty() {
        quote!(#p::hashed_key(#id, |_| {
            ::core::result::Result::Ok(())
        }))
    } else {
        quote! {
            #p::hashed_key(#id, |#h| {
                #(#stmts)*
                ::core::result::Result::Ok(())
            })
        }
    }
}
