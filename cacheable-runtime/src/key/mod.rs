//! Key layout and argument hashing.
//!
//! The public description of the layout, with what users may rely on, is
//! in `crate::debug`; keep the two in step.
//!
//! # Layout (schema 2, pinned by golden tests)
//!
//! ```text
//! {prefix}:{t:<tenant>}:e:<function>:<version>:h<hash>  an entry of a cached function (default key)
//! {prefix}:{t:<tenant>}:e:<function>:<version>:t<identity>:<rendered key>
//!                                                      an entry (`key = ".."`)
//! {prefix}:{t:<tenant>}:k:<key>                        an entry of the service API (`cache.set`)
//! {prefix}:{t:<tenant>}:v:g                            the tenant's generation
//! {prefix}:{t:<tenant>}:v:t:<tag>                      a tag's version in the tenant
//! {prefix}:{t:<tenant>}:v:k:<key>                      a service-API key's version (`cache.delete`)
//! {prefix}:{t:<tenant>}:v:e                            the tenant's tag epoch: every tag
//!                                                      invalidation in the tenant moves it
//! {prefix}:{g}:…                                       the same for `global` entries
//!                                                      and calls outside any tenant
//!                                                      (no generation: an untagged
//!                                                      global entry is one `GET`)
//! {prefix}:{a}:v:t:<tag>                               a tag's version across all tenants
//! {prefix}:{a}:v:e                                     the all-tenants tag epoch
//! ```
//!
//! Schema 1 named version keys `:g` and `:tag:<tag>` and counted from 0;
//! schema 2 renamed them, so a process of each schema never shares a counter
//! in a rolling deploy (and an envelope of the other schema reads as a miss).
//!
//! The tenant sits in a Redis hash tag, so an entry, its tenant generation and
//! its tag versions share one cluster slot and are read with one `MGET`, and
//! tenants spread over the shards. One huge tenant is one hot slot; we accept
//! that for single-round-trip, atomic reads.
//!
//! The tenant id is escaped so that it never contains `:`, `{`, `}` or `*`:
//! `[A-Za-z0-9_.-]` stand as they are and every other byte becomes `%XX`.
//! The escape is injective, so two different ids never share a namespace,
//! and the hash tag always ends where the tenant ends.
//!
//! `<function>` is the readable name (`name = ".."` or `module::fn`),
//! escaped. `<identity>` is the call site's [`Identity`] (16 hex digits):
//! every distinct fn, `Self` type and generic instantiation has its own
//! (guarantee 11). The default `<hash>` (32 hex digits) covers the identity
//! first, then the arguments. A rendered `key` template escapes each part
//! (literal text and every placeholder's value) on its own with
//! [`escape_into`] and joins them with `:`, which the escape never
//! produces, so the rendering is injective.
//!
//! # What changes a key
//!
//! Keys are stable across processes, builds and machines of the same code.
//! A key changes (the cache is cold for that fn, never wrong) when one of
//! these changes: the fn's name or module path or its `Self` type's path
//! (renaming or moving them); the generic arguments of the call; `name`;
//! `version`; the `key` template; the types or values of the hashed
//! arguments; the tenant; or `core::any::type_name`'s output, which a
//! compiler upgrade may change (sites without `name` depend on it for their
//! whole identity, sites with `name` only through `Self` and type arguments).
//! Golden tests pin the layout (`golden_layout`, `golden_identities` here,
//! `golden_keys_of_fixed_fns` in `tests/identity.rs`).
//!
//! The default argument hash is xxh3-128 over a serde serialization streamed
//! into the hasher (no allocation, no `std::hash`): the same arguments give the
//! same key across processes, builds and machines. Maps are hashed entry by
//! entry and combined in an order-independent way, so a `HashMap` argument
//! gives a stable key too.

use std::fmt::Write as _;

use xxhash_rust::xxh3::Xxh3;

use crate::tenant::TenantId;

mod hash;

use hash::HashSer;
pub use hash::{HashError, KeyHasher};
use serde::Serialize;

/// The key schema version, written in every envelope. Changing the layout
/// bumps it.
pub const SCHEMA: u8 = 2;

/// Appends the escaped form of a tenant id (or any user-supplied key part).
pub fn escape_into(out: &mut String, raw: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Runs of bytes that stand as they are are copied at once; no `fmt`
    // on the hot path (a tag like `user:42` is escaped on every call).
    let bytes = raw.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            continue;
        }
        // `start..i` holds only bytes that stand as they are (ASCII): a
        // run is on char boundaries. Empty runs may not be (`start` can sit
        // inside a multi-byte char that is being escaped byte by byte).
        if start < i {
            out.push_str(&raw[start..i]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
        start = i + 1;
    }
    if start < bytes.len() {
        out.push_str(&raw[start..]);
    }
}

/// The length of `raw` once escaped by [`escape_into`].
fn escaped_len(raw: &str) -> usize {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                1
            } else {
                3
            }
        })
        .sum()
}

/// The namespace part of every key of one tenant (or of the global space).
pub(crate) fn namespace(prefix: &str, tenant: Option<&TenantId>) -> String {
    let mut ns = String::with_capacity(prefix.len() + 8 + tenant.map_or(0, |t| t.as_str().len()));
    namespace_into(&mut ns, prefix, tenant);
    ns
}

/// Appends [`namespace`] to `out`.
pub(crate) fn namespace_into(out: &mut String, prefix: &str, tenant: Option<&TenantId>) {
    out.push_str(prefix);
    match tenant {
        Some(t) => {
            out.push_str(":{t:");
            escape_into(out, t.as_str());
            out.push('}');
        }
        None => out.push_str(":{g}"),
    }
}

/// The entry key of a call site in one allocation, with its namespace in
/// place (the entry key starts with it: `&entry[..ns_len]` is the
/// namespace). `hash` is the default key's argument hash; `template` a
/// rendered, escaped `key = ".."` template (`t<identity>:<key>`), which
/// takes its place.
pub(crate) fn site_entry_key(
    prefix: &str,
    tenant: Option<&TenantId>,
    function: &str,
    version: u32,
    hash: u128,
    template: Option<&str>,
) -> (String, usize) {
    let mut k = String::with_capacity(
        prefix.len()
            + 8
            + tenant.map_or(0, |t| escaped_len(t.as_str()))
            + function.len()
            + 16
            + template.map_or(33, |t| t.len() + 1),
    );
    namespace_into(&mut k, prefix, tenant);
    let ns_len = k.len();
    k.push_str(":e:");
    escape_into(&mut k, function);
    k.push(':');
    push_u32(&mut k, version);
    k.push(':');
    match template {
        Some(t) => {
            k.push('t');
            k.push_str(t);
        }
        None => {
            k.push('h');
            push_hex(&mut k, hash, 32);
        }
    }
    (k, ns_len)
}

/// The namespace of all-tenant tag versions.
pub(crate) fn all_tenants_namespace(prefix: &str) -> String {
    let mut ns = String::with_capacity(prefix.len() + 4);
    ns.push_str(prefix);
    ns.push_str(":{a}");
    ns
}

/// `{ns}:e:<function>:<version>:<hash>` (calls build it with
/// [`site_entry_key`]; tests pin the two equal).
#[cfg(test)]
pub(crate) fn entry_key(ns: &str, function: &str, version: u32, hash: &str) -> String {
    let mut k = String::with_capacity(ns.len() + function.len() + hash.len() + 16);
    entry_key_head(&mut k, ns, function, version);
    k.push_str(hash);
    k
}

/// [`entry_key`] with the default hash part (`h` and 32 hex digits, as
/// [`hash_part`]) written in place.
#[cfg(test)]
pub(crate) fn entry_key_hashed(ns: &str, function: &str, version: u32, hash: u128) -> String {
    let mut k = String::with_capacity(ns.len() + function.len() + 33 + 16);
    entry_key_head(&mut k, ns, function, version);
    k.push('h');
    push_hex(&mut k, hash, 32);
    k
}

#[cfg(test)]
fn entry_key_head(k: &mut String, ns: &str, function: &str, version: u32) {
    k.push_str(ns);
    k.push_str(":e:");
    escape_into(k, function);
    k.push(':');
    push_u32(k, version);
    k.push(':');
}

/// `{ns}:e:<user key>`, for the service API's explicit keys.
pub(crate) fn user_entry_key(ns: &str, key: &str) -> String {
    let mut k = String::with_capacity(ns.len() + key.len() + 4);
    k.push_str(ns);
    k.push_str(":k:");
    escape_into(&mut k, key);
    k
}

/// `h` and the 32 lowercase hex digits of an argument hash (the hit path
/// writes it in place: [`entry_key_hashed`]).
#[cfg(test)]
pub(crate) fn hash_part(hash: u128) -> String {
    let mut out = String::with_capacity(33);
    out.push('h');
    push_hex(&mut out, hash, 32);
    out
}

/// Whether `key` lives in a tenant's namespace (`{prefix}:{t:<tenant>}:…`);
/// prefixes cannot contain `{`, so this cannot be fooled by one.
pub(crate) fn is_tenant_key(key: &str) -> bool {
    key.contains(":{t:")
}

/// `{ns}:v:g`
pub(crate) fn generation_key(ns: &str) -> String {
    let mut k = String::with_capacity(ns.len() + 4);
    k.push_str(ns);
    k.push_str(":v:g");
    k
}

/// `{ns}:v:e`: the namespace's tag epoch. Every invalidation of a tag in
/// `ns` increments it in the same script (same slot), so a computation that
/// snapshotted it can tell, after its body, whether any tag of `ns` was
/// invalidated meanwhile (result tags, see the module docs of `cache`).
pub(crate) fn epoch_key(ns: &str) -> String {
    let mut k = String::with_capacity(ns.len() + 4);
    k.push_str(ns);
    k.push_str(":v:e");
    k
}

/// `{ns}:v:k:<user key>`: the version of a service-API key, bumped by `delete`.
pub(crate) fn user_key_version(ns: &str, key: &str) -> String {
    let mut k = String::with_capacity(ns.len() + key.len() + 5);
    k.push_str(ns);
    k.push_str(":v:k:");
    escape_into(&mut k, key);
    k
}

/// Appends `n` in decimal without going through `fmt` (keys are built on
/// every call; `format!` cost more than the rest of the key).
fn push_u32(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        out.push(char::from(*d));
    }
}

/// `{ns}:q:<window number>`: a tenant's bytes written in one quota window.
pub(crate) fn quota_key(ns: &str, window: u64) -> String {
    format!("{ns}:q:{window}")
}

/// `{ns}:v:t:<tag>`
pub(crate) fn tag_key(ns: &str, tag: &str) -> String {
    // Exact: a tag like `user:42` grows by its escapes (no realloc).
    let mut k = String::with_capacity(ns.len() + TAG_INFIX.len() + escaped_len(tag));
    k.push_str(ns);
    k.push_str(TAG_INFIX);
    escape_into(&mut k, tag);
    k
}

/// What stands between a namespace and an escaped tag in a tag key.
const TAG_INFIX: &str = ":v:t:";

/// The same tag's key in the all-tenants namespace, from its key in
/// namespace `ns` (`tag_key(ns, tag)`): the escaped tag is copied, not
/// escaped again.
pub(crate) fn all_tenants_tag_key(prefix: &str, ns: &str, ns_tag_key: &str) -> String {
    let escaped = &ns_tag_key[ns.len() + TAG_INFIX.len()..];
    let mut k = String::with_capacity(prefix.len() + 4 + TAG_INFIX.len() + escaped.len());
    k.push_str(prefix);
    k.push_str(":{a}");
    k.push_str(TAG_INFIX);
    k.push_str(escaped);
    k
}

/// The all-tenants tag epoch, `{prefix}:{a}:v:e`.
pub(crate) fn all_tenants_epoch_key(prefix: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + 8);
    k.push_str(prefix);
    k.push_str(":{a}:v:e");
    k
}

/// The identity of one call site (guarantee 11): xxh3-64 over framed parts.
///
/// Without `name = ".."` it is the hash of the instantiated path of the fn's
/// body, as `core::any::type_name` spells it (for example
/// `app::repo::OrgRepo<u8>::name::{{closure}}::{{closure}}`): crate, module,
/// `Self` type, the impl's and the fn's generic arguments. With `name`, it is
/// the hash of the name, of `type_name::<Self>()` (methods with a receiver)
/// and of every type argument's name and const argument's value of the fn.
/// It is mixed into every entry key: first into the argument hash, or as a
/// hex part before a rendered `key = ".."` template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity(pub(crate) u64);

impl Identity {
    /// The identity of a site without `name`, from its body's type path.
    pub fn of_path(path: &str) -> Self {
        let mut b = IdentityBuilder(Xxh3::new());
        b.0.update(b"p");
        b.part(path);
        b.finish()
    }

    /// The 16 lowercase hex digits of the identity, the form used in keys.
    pub fn push_hex(self, out: &mut String) {
        push_hex(out, u128::from(self.0), 16);
    }
}

/// Builds the identity of a site with `name = ".."`.
#[derive(Clone)]
pub struct IdentityBuilder(Xxh3);

impl std::fmt::Debug for IdentityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityBuilder")
    }
}

impl IdentityBuilder {
    /// Starts with the explicit name.
    pub fn named(name: &str) -> Self {
        let mut b = Self(Xxh3::new());
        b.0.update(b"n");
        b.part(name);
        b
    }

    /// Adds a type: `type_name::<Self>()` or a type argument's name.
    #[must_use]
    pub fn ty(mut self, type_name: &str) -> Self {
        self.0.update(b"t");
        self.part(type_name);
        self
    }

    /// Adds the value of a const argument.
    #[must_use]
    pub fn konst<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.0.update(b"c");
        // Const arguments are integers, `bool` and `char`: infallible.
        let _ = value.serialize(&mut HashSer { state: &mut self.0 });
        self
    }

    /// The identity.
    pub fn finish(&self) -> Identity {
        Identity(self.0.digest())
    }

    fn part(&mut self, s: &str) {
        self.0.update(&(s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }
}

/// Appends the last `digits` hex digits of `n`, lowercase.
fn push_hex(out: &mut String, n: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Into a buffer, then appended at once: a `push` per digit (the 32 of
    // every entry key) cost ~600 instructions of each hit (callgrind).
    let mut buf = [0u8; 32];
    let digits = digits.min(32) as usize;
    for (i, d) in buf[..digits].iter_mut().rev().enumerate() {
        *d = HEX[((n >> (i * 4)) & 0xF) as usize];
    }
    out.push_str(std::str::from_utf8(&buf[..digits]).unwrap_or_default());
}

/// One piece of a `key = ".."` template: literal text or a placeholder's value.
#[derive(Clone, Copy)]
pub enum KeyPart<'a> {
    /// Literal text of the template.
    Text(&'static str),
    /// A placeholder, rendered with `Display`.
    Value(&'a dyn std::fmt::Display),
    /// A placeholder written with `:?`, rendered with `Debug`.
    Debug(&'a dyn std::fmt::Debug),
}

impl std::fmt::Debug for KeyPart<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Self::Value(_) => f.write_str("Value(..)"),
            Self::Debug(_) => f.write_str("Debug(..)"),
        }
    }
}

/// A `fmt::Write` that escapes as it writes ([`escape_into`] is byte-wise,
/// so how `Display` splits its output does not matter).
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Renders a template injectively: every part (literal text and each
/// placeholder's value) is escaped on its own with [`escape_into`] and the
/// parts are joined by `:`, which the escape never produces. So `{a}:{b}`
/// renders `("x:y", "z")` as `x%3Ay:%3A:z` and `("x", "y:z")` as
/// `x:%3A:y%3Az`: different values always give different strings.
pub fn render_parts_into(out: &mut String, parts: &[KeyPart<'_>]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        match part {
            KeyPart::Text(t) => escape_into(out, t),
            KeyPart::Value(v) => {
                let _ = write!(Escaping(out), "{v}");
            }
            KeyPart::Debug(v) => {
                let _ = write!(Escaping(out), "{v:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
