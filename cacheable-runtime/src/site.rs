//! The adapters that generated code hands to the engine: the static
//! description of a call site ([`Site`], [`Ttl`]), how an output is cached
//! ([`Adapter`]) and when `#[cache_evict]` invalidates ([`EvictOn`]).
//!
//! A leaf: it imports nothing from the engine (`cache`), which imports it;
//! `__private` re-exports it for the macros.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity::SiteState;

/// The static description of one `#[cacheable]` function.
#[derive(Debug)]
pub struct Site {
    /// Stable identity: `name = ".."`, or `module_path!()::fn_name`.
    pub name: &'static str,
    /// `version = N` (0 when absent).
    pub version: u32,
    /// TTL choice.
    pub ttl: Ttl,
    /// `global`: ignore the tenant.
    pub global: bool,
    /// `stale = N` seconds (0: none).
    pub stale_secs: u64,
    /// `cache_none`.
    pub cache_none: bool,
    /// Whether the local in-process tier may hold this site's entries
    /// (`local = false` opts out).
    pub local: bool,
    /// Which identities this site registered (conflict reports).
    pub state: SiteState,
}

/// How the TTL of a site is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// The cache's default TTL.
    Default,
    /// `ttl = N` or `ttl = "5m"`, in seconds.
    Secs(u64),
    /// `policy = "name"`.
    Policy(&'static str),
}

/// How an output type is cached: what is stored and how the output is rebuilt.
///
/// The macro picks the adapter from the return type's syntax:
/// `Result<T, E>` → [`ResultOf`], `Option<T>` → [`OptionOf`], `Json<T>` →
/// `JsonOf` (feature `axum`), anything else → [`Plain`].
pub trait Adapter<O> {
    /// What is decoded from the cache.
    type Value: DeserializeOwned;
    /// What is encoded into the cache: serializes exactly as `Value`.
    type View<'a>: Serialize
    where
        O: 'a;
    /// The part of `out` to cache, or `None` when this output is not cached
    /// (`Err`, `None` without `cache_none`).
    fn view(out: &O, cache_none: bool) -> Option<Self::View<'_>>;
    /// The output rebuilt from a cached value.
    fn rebuild(value: Self::Value) -> O;
}

/// A plain value, cached as it is.
pub struct Plain;

impl<T: Serialize + DeserializeOwned> Adapter<T> for Plain {
    type Value = T;
    type View<'a>
        = &'a T
    where
        T: 'a;
    fn view(out: &T, _: bool) -> Option<&T> {
        Some(out)
    }
    fn rebuild(value: T) -> T {
        value
    }
}

/// `Result<T, E>`: only `Ok` is cached.
pub struct ResultOf<K>(PhantomData<K>);

impl<T, E, K: Adapter<T>> Adapter<Result<T, E>> for ResultOf<K> {
    type Value = K::Value;
    type View<'a>
        = K::View<'a>
    where
        Result<T, E>: 'a;
    fn view(out: &Result<T, E>, cache_none: bool) -> Option<Self::View<'_>> {
        out.as_ref().ok().and_then(|t| K::view(t, cache_none))
    }
    fn rebuild(value: K::Value) -> Result<T, E> {
        Ok(K::rebuild(value))
    }
}

/// `Option<T>`: only `Some` is cached, unless `cache_none`.
pub struct OptionOf<K>(PhantomData<K>);

impl<T, K: Adapter<T>> Adapter<Option<T>> for OptionOf<K> {
    type Value = Option<K::Value>;
    type View<'a>
        = Option<K::View<'a>>
    where
        Option<T>: 'a;
    fn view(out: &Option<T>, cache_none: bool) -> Option<Self::View<'_>> {
        match out {
            Some(t) => K::view(t, cache_none).map(Some),
            None if cache_none => Some(None),
            None => None,
        }
    }
    fn rebuild(value: Option<K::Value>) -> Option<T> {
        value.map(K::rebuild)
    }
}

/// `axum::Json<T>`: `T` is cached.
#[cfg(feature = "axum")]
pub struct JsonOf<K>(PhantomData<K>);

#[cfg(feature = "axum")]
impl<T, K: Adapter<T>> Adapter<axum::Json<T>> for JsonOf<K> {
    type Value = K::Value;
    type View<'a>
        = K::View<'a>
    where
        axum::Json<T>: 'a;
    fn view(out: &axum::Json<T>, cache_none: bool) -> Option<Self::View<'_>> {
        K::view(&out.0, cache_none)
    }
    fn rebuild(value: K::Value) -> axum::Json<T> {
        axum::Json(K::rebuild(value))
    }
}

/// The value that result tags (`{ret}`, `{ret.field}`) name: for
/// `Result`/`Option` outputs the `Ok`/`Some` value (through nested ones,
/// and through `Json`), else the output itself. `None` when there is no
/// such value (`Err`, `None`): then the result tags are not rendered.
///
/// Implemented by the same marker types as [`Adapter`], without its
/// `Serialize` bounds (a `#[cache_evict]` output need not be cacheable).
pub trait RetOf<O: ?Sized> {
    /// The value result tags name.
    type Ret: ?Sized;
    /// That value in `out`, if any.
    fn ret(out: &O) -> Option<&Self::Ret>;
}

impl<T: ?Sized> RetOf<T> for Plain {
    type Ret = T;
    fn ret(out: &T) -> Option<&T> {
        Some(out)
    }
}

impl<T, E, K: RetOf<T>> RetOf<Result<T, E>> for ResultOf<K> {
    type Ret = K::Ret;
    fn ret(out: &Result<T, E>) -> Option<&K::Ret> {
        out.as_ref().ok().and_then(K::ret)
    }
}

impl<T, K: RetOf<T>> RetOf<Option<T>> for OptionOf<K> {
    type Ret = K::Ret;
    fn ret(out: &Option<T>) -> Option<&K::Ret> {
        out.as_ref().and_then(K::ret)
    }
}

#[cfg(feature = "axum")]
impl<T, K: RetOf<T>> RetOf<axum::Json<T>> for JsonOf<K> {
    type Ret = K::Ret;
    fn ret(out: &axum::Json<T>) -> Option<&K::Ret> {
        K::ret(&out.0)
    }
}

/// When `#[cache_evict]` invalidates.
pub trait EvictOn<O> {
    /// Whether the call succeeded.
    fn succeeded(out: &O) -> bool;
}

/// Any output counts as success.
pub struct Always;

impl<O> EvictOn<O> for Always {
    fn succeeded(_: &O) -> bool {
        true
    }
}

/// `Result`: only `Ok` counts as success.
pub struct OnOk;

impl<T, E> EvictOn<Result<T, E>> for OnOk {
    fn succeeded(out: &Result<T, E>) -> bool {
        out.is_ok()
    }
}
