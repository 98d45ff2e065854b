//! Items that generated code calls, through `::cacheable::__private`.
//!
//! Not public API: names and signatures here change without notice.

use std::future::Future;
use std::sync::LazyLock;

pub use serde::Serialize;
pub use serde::de::DeserializeOwned;

use crate::cache::{Cache, KeySource};
pub use crate::codec::{check as codec_check, decode as codec_decode, encode as codec_encode};
use crate::error::CacheError;
pub use crate::identity::SiteState;
pub use crate::key::{HashError, Identity, IdentityBuilder, KeyHasher, KeyPart};
pub use crate::rate_limit::private::*;
#[cfg(feature = "axum")]
pub use crate::site::JsonOf;
pub use crate::site::{
    Adapter, Always, EvictOn, OnOk, OptionOf, Plain, ResultOf, RetOf, Site, Ttl,
};

/// `core::any::type_name` of a value's type. The macro passes a closure
/// defined in the fn's body: its type's name is the instantiated path of the
/// fn (`m::OrgRepo<u8>::name::{{closure}}::{{closure}}`).
pub fn type_name_of<T>(_: &T) -> &'static str {
    core::any::type_name::<T>()
}

/// The identity of a site without `name = ".."`: see [`Identity`].
pub fn probe_identity(path: &'static str) -> Identity {
    Identity::of_path(path)
}

/// The identity of `site` computed by `make` from `source` (its
/// `type_name_of` probe, or a `name = ".."` that nothing is added to),
/// computed on the site's first call only: hashing it took ~500
/// instructions of every hit (callgrind).
pub fn site_identity(
    site: &'static Site,
    source: &'static str,
    make: fn(&'static str) -> Identity,
) -> Identity {
    site.state.identity(source, make)
}

/// The identity of a site with `name = ".."` alone (no `Self`, no generic
/// argument).
pub fn name_identity(name: &'static str) -> Identity {
    IdentityBuilder::named(name).finish()
}

/// The identity of a site with `name = ".."`; the macro adds `Self` and the
/// generic arguments.
pub fn named_identity(name: &'static str) -> IdentityBuilder {
    IdentityBuilder::named(name)
}

/// The cache named by `cache = <expr>`.
pub fn explicit_cache(cache: &Cache) -> Option<Cache> {
    Some(cache.clone())
}

/// The global cache (`cacheable::set_global`), if any.
pub fn global_cache() -> Option<Cache> {
    crate::global()
}

/// Whether a call needs its key and tags: only on an enabled cache. Without
/// a cache (warned about) or on a disabled one (silent), the call runs its
/// body and the macro skips the hashing and the tag rendering.
pub fn wants_key(cache: &Option<Cache>) -> bool {
    cache.as_ref().is_some_and(Cache::is_enabled)
}

/// The key of a call that needs none (see [`wants_key`]); never read.
pub fn no_key() -> Result<KeySource, HashError> {
    Ok(KeySource::Hash(0))
}

/// The tags of a call that needs none (see [`wants_key`]); never read.
pub fn no_tags() -> Vec<String> {
    Vec::new()
}

/// The default key: a hash of the non-skipped arguments.
/// The site's identity is hashed first, then every argument.
pub fn hashed_key(
    id: Identity,
    f: impl FnOnce(&mut KeyHasher) -> Result<(), HashError>,
) -> Result<KeySource, HashError> {
    let mut h = KeyHasher::new();
    h.identity(id);
    f(&mut h)?;
    Ok(KeySource::Hash(h.finish()))
}

/// An explicit key from a `key = ".."` template: the identity in hex, `:`,
/// then the template rendered injectively (`key::render_parts_into`).
pub fn template_key(id: Identity, parts: &[KeyPart<'_>]) -> Result<KeySource, HashError> {
    let mut out = String::with_capacity(48);
    id.push_hex(&mut out);
    out.push(':');
    crate::key::render_parts_into(&mut out, parts);
    Ok(KeySource::Template(out))
}

/// Decisions taken without any cache configured (no `cache = ..` and no
/// global cache): an in-process limiter, so a missing cache never means "no
/// limit".
static NO_CACHE: LazyLock<Cache> = LazyLock::new(Cache::memory);

/// The check of `#[rate_limit]`: `None` when the call may run, else the
/// refusal (see `rate_limit::private::check_site`). Without a cache the
/// decision is taken in the process, with the usual "no cache" warning.
pub async fn rate_limit_check(
    cache: Option<Cache>,
    site: &'static RateLimitSite,
    key: Option<String>,
) -> Option<RateLimited> {
    let limiter = match cache {
        Some(cache) => cache.rate_limiter(),
        None => {
            crate::cache::warn_no_cache(site.name);
            NO_CACHE.rate_limiter()
        }
    };
    crate::rate_limit::private::check_site(&limiter, site, key).await
}

/// The key part of a `#[rate_limit(key = "..")]` template, rendered
/// injectively and already escaped (`key::render_parts_into`).
pub fn rate_limit_key(parts: &[KeyPart<'_>]) -> String {
    let mut out = String::with_capacity(32);
    crate::key::render_parts_into(&mut out, parts);
    out
}

/// The cache-aside wrapper of `#[cacheable]`.
pub async fn cached<A, O, F>(
    cache: Option<Cache>,
    site: &'static Site,
    id: Identity,
    key: Result<KeySource, HashError>,
    tags: Vec<String>,
    body: F,
) -> O
where
    A: Adapter<O>,
    F: Future<Output = O>,
{
    run::<A, O, F>(cache, site, id, key, tags, None, body).await
}

/// The cache-aside wrapper of a `#[cacheable]` whose tags name the result
/// (`{ret..}`): `ret_tags` renders them from the `Ok`/`Some` value after
/// the body (see [`RetOf`]).
#[allow(clippy::too_many_arguments)]
pub async fn cached_ret<A, O, F, R>(
    cache: Option<Cache>,
    site: &'static Site,
    id: Identity,
    key: Result<KeySource, HashError>,
    tags: Vec<String>,
    ret_tags: R,
    body: F,
) -> O
where
    A: Adapter<O> + RetOf<O>,
    F: Future<Output = O>,
    R: Fn(&<A as RetOf<O>>::Ret) -> Vec<String> + Sync,
{
    let render = |out: &O| A::ret(out).map(&ret_tags);
    run::<A, O, F>(cache, site, id, key, tags, Some(&render), body).await
}

/// What both wrappers do: a disabled cache runs the body and nothing else;
/// otherwise the call site's identity is registered (conflicts are
/// reported) and the engine runs the call, or the body runs with the
/// "no cache configured" warning.
async fn run<A, O, F>(
    cache: Option<Cache>,
    site: &'static Site,
    id: Identity,
    key: Result<KeySource, HashError>,
    tags: Vec<String>,
    ret_tags: Option<&crate::cache::RetTags<'_, O>>,
    body: F,
) -> O
where
    A: Adapter<O>,
    F: Future<Output = O>,
{
    if let Some(cache) = &cache
        && !cache.is_enabled()
    {
        return body.await;
    }
    crate::identity::register(
        &site.state,
        std::ptr::from_ref(site) as usize,
        site.name,
        id,
        site.version,
    );
    match cache {
        Some(cache) => {
            cache
                .run_site::<A, O, F>(site, key, tags, ret_tags, body)
                .await
        }
        None => {
            crate::cache::warn_no_cache(site.name);
            body.await
        }
    }
}

/// The wrapper of `#[cache_evict]`: runs the body, then invalidates `tags` if
/// the outcome is a success.
pub async fn evict<K, O, F>(
    cache: Option<Cache>,
    tags: Vec<String>,
    all_tenants: bool,
    body: F,
) -> O
where
    K: EvictOn<O>,
    F: Future<Output = O>,
{
    let out = body.await;
    if K::succeeded(&out) {
        evict_tags(cache, &tags, all_tenants).await;
    }
    out
}

/// The wrapper of `#[cache_evict(strict)]`: runs the body, then on `Ok`
/// invalidates `tags` through the public `Cache::delete_by_tags` (or
/// `delete_by_tags_all_tenants`) and returns a failed invalidation as the
/// function's error. Without a cache there is nothing to invalidate: the
/// output is returned as it is, with the usual "no cache" warning.
///
/// # Errors
/// The body's error, or the invalidation's error converted with `E::from`.
pub async fn evict_strict<T, E, F>(
    cache: Option<Cache>,
    tags: Vec<String>,
    all_tenants: bool,
    body: F,
) -> Result<T, E>
where
    E: From<CacheError>,
    F: Future<Output = Result<T, E>>,
{
    let out = body.await?;
    evict_tags_strict(cache, &tags, all_tenants)
        .await
        .map_err(E::from)?;
    Ok(out)
}

/// The wrapper of `#[cache_evict]` whose tags name the result (`{ret..}`):
/// on success, `ret_tags` renders them from the `Ok`/`Some` value (see
/// [`RetOf`]; none when there is no such value) and they are invalidated
/// with `tags`.
pub async fn evict_ret<K, D, O, F, R>(
    cache: Option<Cache>,
    mut tags: Vec<String>,
    all_tenants: bool,
    ret_tags: R,
    body: F,
) -> O
where
    K: EvictOn<O>,
    D: RetOf<O>,
    F: Future<Output = O>,
    R: FnOnce(&<D as RetOf<O>>::Ret) -> Vec<String>,
{
    let out = body.await;
    if cache.as_ref().is_some_and(|c| !c.is_enabled()) {
        return out;
    }
    if K::succeeded(&out) {
        if let Some(ret) = D::ret(&out) {
            tags.extend(ret_tags(ret));
        }
        evict_tags(cache, &tags, all_tenants).await;
    }
    out
}

/// [`evict_strict`] for tags that name the result (`{ret..}`).
///
/// # Errors
/// The body's error, or the invalidation's error converted with `E::from`.
pub async fn evict_strict_ret<D, T, E, F, R>(
    cache: Option<Cache>,
    mut tags: Vec<String>,
    all_tenants: bool,
    ret_tags: R,
    body: F,
) -> Result<T, E>
where
    D: RetOf<Result<T, E>>,
    E: From<CacheError>,
    F: Future<Output = Result<T, E>>,
    R: FnOnce(&<D as RetOf<Result<T, E>>>::Ret) -> Vec<String>,
{
    let out = body.await;
    if cache.as_ref().is_some_and(|c| !c.is_enabled()) {
        return out;
    }
    if out.is_ok() {
        if let Some(ret) = D::ret(&out) {
            tags.extend(ret_tags(ret));
        }
        evict_tags_strict(cache, &tags, all_tenants)
            .await
            .map_err(E::from)?;
    }
    out
}

/// Type-checks a return type at the span where the user wrote it.
pub fn assert_output<A: Adapter<O>, O>() {}

/// The value a `#[cacheable]` fn caches (`T` in `Result<Option<T>, E>`):
/// stored as JSON, so `Serialize` and `Deserialize`. The macro asserts it on
/// the type as the user wrote it, so the error names that type rather than
/// the adapters of this module.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `Serialize` and `Deserialize`",
    label = "the cached value: stored as JSON, read back on a hit",
    note = "derive both on it: `#[derive(serde::Serialize, serde::Deserialize)]`; for a type of another crate, enable its `serde` feature or return a type of yours"
)]
pub trait CachedValue: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> CachedValue for T {}

/// Asserts [`CachedValue`] for the value type of a `#[cacheable]` output.
pub fn assert_cached_value<T: CachedValue>() {}

/// Type-checks an argument that is part of the default key.
pub fn assert_key_arg<T: Serialize + ?Sized>(_: &T) {}

/// An argument that can be part of a default key: any `Serialize` type. The
/// macro calls [`hash_arg`] spanned on the argument's type, so a type that is
/// not `Serialize` gets this message there. The fix offered first keeps the
/// argument in the key: leaving it out (`skip`) makes calls that differ only
/// in it share one entry, which for a user or session argument serves one
/// user's response to another.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the cache key: it does not implement `Serialize`",
    label = "not `Serialize`, so it cannot be hashed into the default key",
    note = "implement or derive `serde::Serialize` for it, or name what the result depends on with `key = \"..\"`",
    note = "`skip(..)` leaves it out of the key: calls that differ only in this argument then share one entry; skip it only if the result does not depend on it (a pool, a client), never a user or session whose data the result holds"
)]
pub trait KeyArg: Serialize {}

impl<T: Serialize + ?Sized> KeyArg for T {}

/// Hashes one argument of the default key.
///
/// # Errors
/// When the argument's `Serialize` impl fails.
pub fn hash_arg<T: KeyArg + ?Sized>(h: &mut KeyHasher, value: &T) -> Result<(), HashError> {
    h.arg(value)
}

/// A value that a template placeholder renders with `Display`. The macro
/// wraps each `Display` placeholder in [`display`], so a value that is not
/// `Display` is reported with the ways to render it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be rendered in a template: it does not implement `Display`",
    label = "not `Display`",
    note = "render it with `Debug` as `{{x:?}}`, or name a field or a method that gives a `Display` value, as in `{{x.id}}` or `{{x.id()}}`"
)]
pub trait TemplateValue: std::fmt::Display {}

impl<T: std::fmt::Display + ?Sized> TemplateValue for T {}

/// A `Display` placeholder's value, checked to be [`TemplateValue`]. It
/// comes back as `&dyn Display`, so a value that is not `Display` is
/// reported once, here, and not again by `format_args!`.
pub fn display<T: TemplateValue>(value: &T) -> &dyn std::fmt::Display {
    value
}

/// Renders a template (`tags`, `key`) from `format_args!`.
pub fn render(args: std::fmt::Arguments<'_>) -> String {
    std::fmt::format(args)
}

/// The rendered tags of a call.
pub fn tags<const N: usize>(tags: [String; N]) -> Vec<String> {
    Vec::from(tags)
}

/// The invalidation after a successful `#[cache_evict]` body: failures are
/// retried (see `Cache::evict_after_call`); no tags, or a disabled cache,
/// invalidate nothing; no cache only warns.
async fn evict_tags(cache: Option<Cache>, tags: &[String], all_tenants: bool) {
    match cache {
        Some(cache) if tags.is_empty() || !cache.is_enabled() => {}
        Some(cache) => cache.evict_after_call(tags, all_tenants).await,
        None => crate::cache::warn_no_cache("cache_evict"),
    }
}

/// [`evict_tags`] for `strict`: through the public `delete_by_tags` (or
/// `delete_by_tags_all_tenants`), a failed invalidation is returned.
async fn evict_tags_strict(
    cache: Option<Cache>,
    tags: &[String],
    all_tenants: bool,
) -> Result<(), CacheError> {
    match cache {
        Some(cache) if tags.is_empty() || !cache.is_enabled() => Ok(()),
        Some(cache) => {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            if all_tenants {
                cache.delete_by_tags_all_tenants(&tags).await
            } else {
                cache.delete_by_tags(&tags, None).await
            }
        }
        None => {
            crate::cache::warn_no_cache("cache_evict");
            Ok(())
        }
    }
}
