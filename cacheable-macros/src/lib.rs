//! Attribute macros of `cacheable`. Use them through the `cacheable` crate,
//! which re-exports them beside the runtime they call.
//!
//! Layout: `args` parses each attribute's arguments, `input` the accepted
//! fn shape, `template` the `{arg}` templates, `expand` generates code,
//! `krate` names the runtime (`crate = ".."`), and `ctxt` collects every
//! error so that one compile reports them all.
//! Nothing but the entry points below touches `proc_macro::TokenStream`, so
//! everything else is unit-tested on `proc_macro2`.

use proc_macro::TokenStream;

mod args;
mod ctxt;
mod expand;
mod input;
mod krate;
mod rate_limit;
mod template;

/// Caches the result of an `async fn` (cache-aside): a call looks its key up
/// in the cache; on a hit it returns the cached value without running the
/// body; on a miss it runs the body and stores the result.
///
/// Works on free functions, inherent methods and trait-impl methods. Keys
/// are tenant-aware: the same call under two tenants
/// (`cacheable::tenant::scope`) gives two entries, unless `global`. A cache
/// failure never fails the call: the body runs and its result is returned.
///
/// # Arguments
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `ttl = 60` / `ttl = "5m"` | time to live: integer seconds, or a string with unit `s`, `m`, `h`, `d`; greater than zero | the cache's default TTL |
/// | `policy = "profile"` | a named TTL policy configured on the `Cache` (TTL, jitter, stale window); excludes `ttl` | none |
/// | `tags = ["users", "user:{id}"]` | tags that invalidate the entry ([`cache_evict`], `Cache::delete_by_tags`); placeholders as below, and `{ret..}` names the result; `{{`/`}}` are literal braces | no tags |
/// | `key = "{id}:{lang}"` | explicit key template (same placeholders) | a hash of the arguments |
/// | `skip(db, pool)` | parameters left out of the default key | none |
/// | `name = "users.get"` | stable identity of the function in keys and in `stats().function(..)` | `module_path!()::fn_name` |
/// | `version = 2` | schema version, part of the key: bump it when the value's type changes | `0` |
/// | `global` | ignore the tenant: one entry shared by all tenants | per tenant |
/// | `stale = 30` / `stale = "30s"` | serve a value up to this long past expiry while one caller refreshes it | no stale window |
/// | `cache = <expr>` | the `Cache` to use, e.g. `self.cache` or a parameter; evaluated before the body | `cacheable::global()` |
/// | `cache_none` | also cache `None` (negative caching) | `None` is not cached |
/// | `local = false` | keep this call site out of the local in-process tier (`CacheBuilder::local_cache`) | `true`: in the local tier when one is configured |
/// | `crate = "my_cache"` | the path of the `cacheable` crate, for a renamed dependency or a re-export | `::cacheable` |
///
/// **Default key.** xxh3-128 of every parameter binding in order, streamed
/// through `serde::Serialize` (stable across processes and builds). Left out:
/// the receiver `self`; parameters named in `skip(..)`; the parameter named
/// by `cache = <param>`; and axum `State(..)` extractors (any parameter whose
/// type's last path segment is `State`). Pattern parameters such as
/// `Path(id): Path<u64>` or `Json(form): Json<Login>` contribute the
/// identifiers they bind (`id`, `form`), and `skip` names those identifiers.
///
/// **Extractors written without a pattern** are keyed by the value they
/// carry: `q: Query<Filter>` hashes `q.0` (the `Filter`), and so do `Path<T>`,
/// `Json<T>`, `Form<T>` and `Extension<T>` (by the type's last path segment,
/// with one type argument, so `axum::extract::Query<T>` too). `State<T>`
/// is left out either way; other extractors (`ConnectInfo`, `HeaderMap`,
/// `Request`) are hashed as they are, and are not `Serialize`: name the
/// part the result depends on with `key = ".."`.
///
/// **Outputs**, chosen from the return type as written (its last path
/// segment), nested as needed:
/// `Result<T, E>` (also `io::Result<T>`-style aliases named `Result`) caches
/// only `Ok`; `Option<T>` caches only `Some` unless `cache_none`;
/// `axum::Json<T>` caches `T` (needs the `axum` feature of `cacheable`);
/// anything else is cached as it is. The cached type must be
/// `Serialize + DeserializeOwned`. A type alias under another name (say
/// `type Res = Result<User, E>`) is seen as a plain value: write `Result`.
///
/// **Identity.** Every call site has its own entries, without the user
/// writing anything: distinct fns, methods of distinct `Self` types (two
/// `impl` blocks in one module, `Repo<u8>` and `Repo<u16>`) and distinct
/// generic instantiations (`f::<Users>` and `f::<Orgs>`, `g::<2>` and
/// `g::<3>`) never share an entry. Without `name`, the identity is a hash
/// (xxh3-64) of the instantiated path of the fn as `core::any::type_name`
/// spells it (crate, module, `Self` type, every type and const argument of
/// the fn and its impl). `name = ".."` replaces only the module-path-and-name
/// part: the identity is then the name, `type_name::<Self>()` (methods with
/// a `self` receiver), and the names of the fn's type arguments and the
/// values of its const arguments. (Not covered with `name`: the generic
/// arguments of an associated fn without receiver's impl, and `impl Trait`
/// parameters; drop `name` to cover them.) The identity is hashed into the
/// default key before the arguments, or written in hex before a rendered
/// `key` template. The readable name stays in the key and in
/// `stats().function(..)`. Two different sites that still end up with one
/// identity (the same `name` and `version` on two fns) are reported at run
/// time, once: an error log line and `Stats::identity_conflicts`.
///
/// **Keys are stable** across processes, builds and machines (no
/// `std::hash`, no addresses). A key changes, and the cache is cold for that
/// fn (it never serves a wrong value), when any of these change: the fn's
/// name or module path, or its `Self` type's (renaming or moving them), the
/// generic arguments of the call, `name`, `version`, the `key` template, the
/// types or values of the hashed arguments, the tenant, or the compiler's
/// `type_name` output (a compiler upgrade may change it; sites with `name`
/// depend on it only through `Self` and type arguments).
///
/// **Templates** (`tags`, `key`): a placeholder is a parameter or `self`,
/// then fields and method calls with no or literal arguments, rendered with
/// `Display`, or with `Debug` after `:?`: `{id}`, `{user.org_id}`,
/// `{self.tenant}`, `{user.id()}`, `{name.to_lowercase()}`, `{s.get(0)}`,
/// `{kind:?}`. Anything else (operators, variables as arguments, paths) is
/// a compile error that lists these forms.
///
/// **Result tags.** A tag may name the result: `{ret}`, `{ret.field}`,
/// `{ret.method()}` (for `Result`/`Option` outputs, the `Ok`/`Some` value,
/// through `Json` too). Such a tag is rendered after the body; its other
/// placeholders are rendered before it (the body takes the arguments). It
/// is as consistent as an argument tag: every tag invalidation also moves a
/// per-tenant "tag epoch", which the call snapshots before the body and
/// checks after it, so a result tag invalidated while the body runs makes
/// the value not stored (step 6 of the protocol written down in the
/// runtime's `cache` module). The price: a hit of such an entry reads the result tags' versions
/// in one more round trip, and an invalidation of any tag in the tenant, or
/// of any all-tenants tag, while the body runs leaves that one value
/// unstored. An output without a value (`Err`, or `None` under
/// `cache_none`) has no result tags and is not stored. `ret` is reserved
/// in tags: a parameter named `ret` is then a compile error.
///
/// ```
/// use cacheable::{Cache, cacheable};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Article { slug: String, author: u64 }
///
/// #[cacheable(ttl = 60, cache = cache, tags = ["author:{ret.author}", "slug:{ret.slug.to_lowercase()}"])]
/// async fn article(cache: &Cache, id: u64) -> Result<Article, String> {
///     Ok(Article { slug: format!("A{id}"), author: 5 })
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = Cache::memory();
/// article(&cache, 1).await.unwrap();
/// article(&cache, 1).await.unwrap(); // hit
/// cache.delete_by_tags(&["author:5"], None).await.unwrap(); // the entry is gone
/// article(&cache, 1).await.unwrap(); // miss
/// let stats = cache.stats();
/// let f = stats.function(concat!(module_path!(), "::article")).unwrap();
/// assert_eq!((f.hits, f.misses), (1, 2));
/// # }
/// ```
///
/// **`key` templates are injective**: each placeholder's value is escaped
/// on its own (`[A-Za-z0-9_.-]` stay, every other byte is `%XX`) and the
/// parts are joined by `:`, which the escape never produces, so
/// `key = "{a}:{b}"` gives `("x:y", "z")` and `("x", "y:z")` two entries.
///
///
/// # What must be in the key
///
/// A cached result is returned to every later call with the same key, so
/// the key must hold everything the result depends on. The default key
/// holds every argument but `self`, `State(..)`, the `cache = <param>` and
/// those in `skip(..)`. An argument that is not `Serialize` is a compile
/// error; the fix is to make it `Serialize`, or to name the part that
/// matters with `key = ".."`. `skip(..)` is for arguments the result does
/// not depend on (a pool, a client): a skipped argument no longer varies
/// the key, and calls that differ only in it share one entry.
///
/// The case to check first is a personalised response. An `article`
/// handler whose output says whether the *current user* favorited the
/// article depends on the user as much as on the slug. With the user
/// skipped, the first reader's `favorited` is served to everyone; keep the
/// user in the key (here by being `Serialize`; or `key = "{slug}:{user.id}"`):
///
/// ```
/// use cacheable::{Cache, cacheable};
/// use serde::{Deserialize, Serialize};
///
/// /// Who is asking: from the session, as an auth extractor gives it.
/// #[derive(Serialize)]
/// struct CurrentUser {
///     id: u64,
/// }
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Article {
///     slug: String,
///     /// Personalised: whether the current user favorited it.
///     favorited: bool,
/// }
///
/// #[cacheable(ttl = 60, cache = cache)] // not `skip(user)`
/// async fn article(cache: &Cache, user: Option<&CurrentUser>, slug: &str) -> Article {
///     let favorited = user.is_some_and(|u| u.id == 1); // a query in real code
///     Article { slug: slug.to_owned(), favorited }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = Cache::memory();
/// let (ann, bob) = (CurrentUser { id: 1 }, CurrentUser { id: 2 });
/// assert!(article(&cache, Some(&ann), "rust").await.favorited);
/// assert!(!article(&cache, Some(&bob), "rust").await.favorited); // its own entry
/// assert!(!article(&cache, None, "rust").await.favorited);
/// # }
/// ```
///
/// The same holds for what the body reads besides its arguments: the
/// tenant is in every key (unless `global`), nothing else is. A result that
/// depends on the time, a header or a global setting needs that value as
/// an argument, in `key`, or no cache.
///
/// # Examples
///
/// ```
/// use cacheable::{Cache, cache_evict, cacheable};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct User {
///     id: u64,
///     name: String,
/// }
///
/// struct Db;
///
/// impl Db {
///     async fn load(&self, id: u64) -> Result<User, String> {
///         Ok(User { id, name: format!("user {id}") })
///     }
/// }
///
/// #[cacheable(ttl = "5m", tags = ["users", "user:{id}"], skip(db), name = "users.get")]
/// async fn get_user(db: &Db, id: u64) -> Result<User, String> {
///     db.load(id).await
/// }
///
/// #[cache_evict(tags = ["user:{id}"], skip(db))]
/// async fn rename_user(db: &Db, id: u64, name: &str) -> Result<(), String> {
///     let _ = (db, name);
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = Cache::memory();
/// cacheable::set_global(cache.clone());
///
/// get_user(&Db, 1).await.unwrap(); // miss: runs the body
/// get_user(&Db, 1).await.unwrap(); // hit
/// rename_user(&Db, 1, "Ann").await.unwrap(); // invalidates `user:1`
/// get_user(&Db, 1).await.unwrap(); // miss again
///
/// let stats = cache.stats();
/// let f = stats.function("users.get").unwrap();
/// assert_eq!((f.hits, f.misses), (1, 2));
/// # }
/// ```
///
/// A method that uses its own cache and tags by a field of `self`:
///
/// ```
/// use cacheable::{Cache, cacheable};
///
/// struct Repo {
///     cache: Cache,
///     org: String,
/// }
///
/// impl Repo {
///     #[cacheable(ttl = 60, cache = self.cache, tags = ["org:{self.org}"], cache_none)]
///     async fn find(&self, email: &str) -> Option<u64> {
///         (email == "a@example.com").then_some(1)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let repo = Repo { cache: Cache::memory(), org: "acme".into() };
/// assert_eq!(repo.find("b@example.com").await, None); // cached: `cache_none`
/// assert_eq!(repo.find("b@example.com").await, None);
/// let stats = repo.cache.stats();
/// assert_eq!(stats.function(concat!(module_path!(), "::find")).unwrap().hits, 1);
/// # }
/// ```
///
/// # Expansion
///
/// The fn keeps its signature token for token (attributes, docs,
/// visibility, generics, where-clause); only the body changes, roughly to:
///
/// ```text
/// async fn get_user(db: &Db, id: u64) -> Result<User, String> {
///     assert_cached_value::<User>();              // E0277 on `User` unless Serialize + Deserialize
///     static SITE: Site = Site { name: "users.get", version: 0, ttl: Ttl::Secs(300), .. };
///     let id_ = site_identity(&SITE, "users.get", name_identity); // hashed on the first call only;
///                                                 // with `Self` or generics: named_identity("users.get")
///                                                 // .ty(type_name::<T>()).konst(&N).finish(); without `name`:
///                                                 // site_identity(&SITE, type_name_of(&|| ()), probe_identity)
///     let cache = global_cache();                 // or explicit_cache(&(<expr>))
///     let key = hashed_key(id_, |h| { hash_arg(h, &id)?; Ok(()) });
///                                                 // key = "..": template_key(id_, &[KeyPart::..])
///     let tags = tags([render(format_args!("users")), render(format_args!("user:{}", display(&id)))]);
///     cached::<ResultOf<Plain>, Result<User, String>, _>(cache, &SITE, id_, key, tags, async move {
///         db.load(id).await                       // the original body
///     }).await
/// }
/// ```
///
/// (all paths are `::cacheable::__private::…`, or `<crate>::__private::…`
/// with `crate = ".."`, and `::core::…`). Key and
/// tags are computed from borrowed arguments before the body takes them.
/// With result tags the call is `cached_ret::<..>(cache, &SITE, id_, key,
/// tags, move |ret| tags([render(format_args!("author:{}", display(&ret.author)))]),
/// async move { .. })`: the closure renders them from the `Ok`/`Some` value
/// after the body, and their other placeholders are rendered into locals
/// before it.
/// The body stays an `async move` block: `?` and `return` keep their
/// meaning, nothing is boxed and no `Send` bound is added, so the future is
/// `Send` exactly when the original body's is.
///
/// # Compile errors
///
/// Spanned on the offending token; on error the fn is emitted unchanged
/// beside the errors, so its callers still type-check:
///
/// - the fn is not `async` (on `fn`);
/// - an unknown argument (lists the accepted ones), a duplicate argument,
///   a value of the wrong kind;
/// - `ttl = 0`, `stale = 0`, a duration without a valid unit;
/// - `ttl` together with `policy`;
/// - a template placeholder that names no parameter, `{self.x}` in a fn
///   without receiver, an unsupported placeholder (`{id + 1}`), unbalanced
///   braces; `{ret}` in `key`, or in tags of a fn with a parameter named
///   `ret`; a `Display` placeholder whose value is not `Display` (E0277,
///   suggesting `:?`); `skip(x)` naming no parameter;
/// - a key argument that is not `Serialize` (E0277 on its type; see
///   [What must be in the key](#what-must-be-in-the-key) before you `skip` it);
/// - a cached value that is not `Serialize + DeserializeOwned` (E0277 on
///   the value's type as written: `User` in `Result<Json<User>, E>`);
/// - `crate = ".."` that is not a path (on the literal), or a path that does
///   not lead to `cacheable` (an unresolved path error).
#[proc_macro_attribute]
pub fn cacheable(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cacheable(attr.into(), item.into()).into()
}

/// Invalidates tags after an `async fn` returns: for a `Result` output only
/// on `Ok`, for any other output always. The tags are invalidated in the
/// current tenant (or in every tenant with `all_tenants`); entries of other
/// tags and other tenants stay. When the call has returned, no later read
/// returns a value computed before it started.
///
/// # Arguments
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `tags = ["user:{id}"]` | the tags to invalidate (required, not empty); placeholders as in [`cacheable`] (`{param}`, `{param.field}`, `{self.field}`, `{x.method()}`, `{x:?}`), and `{ret..}`, the result | — |
/// | `skip(..)` | accepted for symmetry with [`cacheable`]: checked against the parameters, otherwise without effect (nothing is hashed) | none |
/// | `all_tenants` | invalidate the tags in every tenant | current tenant |
/// | `cache = <expr>` | the `Cache` to use | `cacheable::global()` |
/// | `strict` | return a failed invalidation as the fn's error; needs a `Result<T, E>` output with `E: From<cacheable::CacheError>` | fail open |
/// | `crate = "my_cache"` | the path of the `cacheable` crate, for a renamed dependency or a re-export | `::cacheable` |
///
/// The tags are rendered before the body runs (from borrowed arguments),
/// and invalidated after it returns. Tags that name the result (`{ret}`,
/// `{ret.field}`; for `Result`/`Option`, the `Ok`/`Some` value) are
/// rendered after it, on success only; with no value (`Ok(None)`) only
/// the other tags are invalidated. A rename evicts the new name's entries:
///
/// ```
/// use cacheable::{Cache, cache_evict};
///
/// struct Article { slug: String }
///
/// #[cache_evict(cache = cache, tags = ["article:{id}", "slug:{ret.slug}"])]
/// async fn rename(cache: &Cache, id: u64, slug: &str) -> Result<Article, String> {
///     Ok(Article { slug: slug.to_owned() }) // `slug:<new slug>` is invalidated
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() { rename(&Cache::memory(), 1, "new").await.unwrap(); }
/// ```
/// Without `strict`, a cache failure is
/// counted and logged, never returned. With `strict`, after the body
/// returns `Ok` the tags are invalidated through `Cache::delete_by_tags`
/// (`delete_by_tags_all_tenants` with `all_tenants`), and if that fails the
/// call returns `Err(E::from(cache_error))` instead of the `Ok` value: the
/// caller knows that entries may still be served, and can retry or fail the
/// request. The body's own `Err` is returned as it is, with no
/// invalidation. Without any cache (no `cache = ..`, no global cache)
/// there is nothing to invalidate and the output is returned as it is.
///
/// ```
/// use cacheable::{Cache, CacheError, cache_evict};
///
/// #[derive(Debug)]
/// enum AppError {
///     Cache(CacheError),
/// }
///
/// impl From<CacheError> for AppError {
///     fn from(e: CacheError) -> Self {
///         AppError::Cache(e)
///     }
/// }
///
/// #[cache_evict(tags = ["user:{id}"], cache = cache, strict)]
/// async fn rename(cache: &Cache, id: u64) -> Result<(), AppError> {
///     let _ = id;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// rename(&Cache::memory(), 1).await.unwrap(); // `Err(AppError::Cache(..))` if invalidation failed
/// # }
/// ```
///
/// # Examples
///
/// ```
/// use cacheable::{Cache, cache_evict, cacheable};
///
/// struct Plans {
///     cache: Cache,
/// }
///
/// impl Plans {
///     #[cacheable(ttl = 60, cache = self.cache, tags = ["plan:{org}"])]
///     async fn plan(&self, org: &str) -> String {
///         format!("{org}: free")
///     }
///
///     #[cache_evict(cache = self.cache, tags = ["plan:{org}"])]
///     async fn upgrade(&self, org: &str) -> Result<(), String> {
///         if org.is_empty() { Err("no org".into()) } else { Ok(()) }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let plans = Plans { cache: Cache::memory() };
/// plans.plan("acme").await;
/// plans.plan("acme").await; // hit
/// plans.upgrade("acme").await.unwrap(); // `plan:acme` invalidated
/// plans.plan("acme").await; // miss
/// let stats = plans.cache.stats();
/// let f = stats.function(concat!(module_path!(), "::plan")).unwrap();
/// assert_eq!((f.hits, f.misses), (1, 2));
/// # }
/// ```
///
/// # Expansion
///
/// ```text
/// async fn upgrade(&self, org: &str) -> Result<(), String> {
///     let cache = explicit_cache(&(self.cache));
///     let tags = tags([render(format_args!("plan:{}", &org))]);
///     evict::<OnOk, Result<(), String>, _>(cache, tags, false, async move {
///         /* the original body */
///     }).await
/// }
/// ```
///
/// # Compile errors
///
/// Not `async` (on `fn`); no `tags` or empty tags; unknown or duplicate
/// arguments; placeholders that name no parameter, `{self.x}` without a
/// receiver; `skip(x)` naming no parameter; `strict` on an output that is
/// not a `Result` (on `strict`); with `strict`, an error type without
/// `From<CacheError>` (E0277).
///
/// With `strict` the expansion calls `evict_strict(cache, tags, all_tenants,
/// async move { .. }).await` instead of `evict::<..>`.
#[proc_macro_attribute]
pub fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cache_evict(attr.into(), item.into()).into()
}

#[doc = include_str!("rate_limit/doc.md")]
#[proc_macro_attribute]
pub fn rate_limit(attr: TokenStream, item: TokenStream) -> TokenStream {
    rate_limit::expand(attr.into(), item.into()).into()
}
