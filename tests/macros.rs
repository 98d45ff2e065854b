//! Behaviour of `#[cacheable]` and `#[cache_evict]` on the in-process store
//! (`Cache::memory()`): what is cached, under which key, and what
//! invalidates it. The same expansions run against real Redis in the
//! runtime's test suites; here each test owns its cache and its functions.

use std::sync::atomic::{AtomicUsize, Ordering};

use cacheable::{Cache, cache_evict, cacheable};
use serde::{Deserialize, Serialize};

/// Counts how often a body ran.
struct Calls(AtomicUsize);

impl Calls {
    const fn new() -> Self {
        Calls(AtomicUsize::new(0))
    }
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn hits_misses(cache: &Cache, name: &str) -> (u64, u64) {
    let stats = cache.stats();
    let f = stats
        .function(name)
        .unwrap_or_else(|| panic!("no stats for `{name}`"));
    (f.hits, f.misses)
}

// ----- plain values, default name, default key -----

static PLAIN: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache)]
async fn square(cache: &Cache, n: u64) -> u64 {
    PLAIN.hit();
    n * n
}

#[tokio::test]
async fn plain_value_hits_after_first_call() {
    let cache = Cache::memory();
    assert_eq!(square(&cache, 3).await, 9);
    assert_eq!(square(&cache, 3).await, 9);
    assert_eq!(PLAIN.get(), 1);
    assert_eq!(square(&cache, 4).await, 16);
    assert_eq!(PLAIN.get(), 2);
    // The default name is the module path and the fn name.
    assert_eq!(hits_misses(&cache, "macros::square"), (1, 2));
}

// ----- Result -----

static RESULT: Calls = Calls::new();

#[derive(Debug, PartialEq)]
struct NotFound;

#[cacheable(ttl = "5m", name = "result.lookup", cache = cache)]
async fn lookup(cache: &Cache, id: u32) -> Result<String, NotFound> {
    RESULT.hit();
    if id == 0 {
        Err(NotFound)
    } else {
        Ok(format!("user {id}"))
    }
}

#[tokio::test]
async fn result_caches_only_ok() {
    let cache = Cache::memory();
    assert_eq!(lookup(&cache, 0).await, Err(NotFound));
    assert_eq!(lookup(&cache, 0).await, Err(NotFound));
    assert_eq!(RESULT.get(), 2, "Err is not cached");
    assert_eq!(lookup(&cache, 7).await.unwrap(), "user 7");
    assert_eq!(lookup(&cache, 7).await.unwrap(), "user 7");
    assert_eq!(RESULT.get(), 3, "Ok is cached");
    assert_eq!(hits_misses(&cache, "result.lookup"), (1, 3));
}

// ----- Option, with and without cache_none -----

static OPTION: Calls = Calls::new();
static OPTION_NONE: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache)]
async fn find(cache: &Cache, id: u32) -> Option<u32> {
    OPTION.hit();
    (id != 0).then_some(id * 10)
}

#[cacheable(ttl = 60, cache = cache, cache_none)]
async fn find_negative(cache: &Cache, id: u32) -> Option<u32> {
    OPTION_NONE.hit();
    (id != 0).then_some(id * 10)
}

#[tokio::test]
async fn option_caches_some_and_none_only_with_cache_none() {
    let cache = Cache::memory();
    assert_eq!(find(&cache, 0).await, None);
    assert_eq!(find(&cache, 0).await, None);
    assert_eq!(OPTION.get(), 2, "None is not cached by default");
    assert_eq!(find(&cache, 2).await, Some(20));
    assert_eq!(find(&cache, 2).await, Some(20));
    assert_eq!(OPTION.get(), 3, "Some is cached");

    assert_eq!(find_negative(&cache, 0).await, None);
    assert_eq!(find_negative(&cache, 0).await, None);
    assert_eq!(OPTION_NONE.get(), 1, "cache_none caches None");
    assert_eq!(find_negative(&cache, 3).await, Some(30));
    assert_eq!(find_negative(&cache, 3).await, Some(30));
    assert_eq!(OPTION_NONE.get(), 2);
}

// ----- axum::Json outputs -----

static JSON: Calls = Calls::new();

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[cacheable(ttl = 60, cache = cache)]
async fn user_json(cache: &Cache, id: u64) -> Result<axum::Json<User>, NotFound> {
    JSON.hit();
    Ok(axum::Json(User {
        id,
        name: format!("n{id}"),
    }))
}

#[tokio::test]
async fn json_output_caches_its_value() {
    let cache = Cache::memory();
    let a = user_json(&cache, 5).await.unwrap().0;
    let b = user_json(&cache, 5).await.unwrap().0;
    assert_eq!(a, b);
    assert_eq!(JSON.get(), 1);
}

// ----- methods, `cache = self.cache`, tags from `self`, evict -----

struct Repo {
    cache: Cache,
    org: String,
    loads: AtomicUsize,
}

impl Repo {
    #[cacheable(ttl = 60, cache = self.cache, tags = ["org:{self.org}", "user:{id}"])]
    async fn load(&self, id: u64) -> Result<User, NotFound> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(User {
            id,
            name: format!("{}-{id}", self.org),
        })
    }

    #[cache_evict(cache = self.cache, tags = ["user:{id}"])]
    async fn rename(&self, id: u64, fail: bool) -> Result<(), NotFound> {
        if fail { Err(NotFound) } else { Ok(()) }
    }

    #[cache_evict(cache = self.cache, tags = ["org:{self.org}"])]
    async fn reset_org(&self) {}

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn methods_use_their_cache_and_evict_only_their_tags() {
    let repo = Repo {
        cache: Cache::memory(),
        org: "acme".into(),
        loads: AtomicUsize::new(0),
    };
    repo.load(1).await.unwrap();
    repo.load(2).await.unwrap();
    repo.load(1).await.unwrap();
    assert_eq!(repo.loads(), 2);

    // A failed call does not invalidate.
    assert_eq!(repo.rename(1, true).await, Err(NotFound));
    repo.load(1).await.unwrap();
    assert_eq!(repo.loads(), 2);

    // A successful one invalidates `user:1` and leaves `user:2` alone.
    repo.rename(1, false).await.unwrap();
    assert_eq!(repo.load(1).await.unwrap().name, "acme-1");
    assert_eq!(repo.loads(), 3);
    repo.load(2).await.unwrap();
    assert_eq!(repo.loads(), 3);

    // A non-Result output always invalidates; `org:acme` tags both entries.
    repo.reset_org().await;
    repo.load(1).await.unwrap();
    repo.load(2).await.unwrap();
    assert_eq!(repo.loads(), 5);
    assert_eq!(hits_misses(&repo.cache, "macros::load"), (3, 5));
}

// ----- trait-impl methods and generics -----

trait Source {
    async fn value(&self, n: u32) -> u32;
}

struct Doubler {
    cache: Cache,
    calls: AtomicUsize,
}

impl Source for Doubler {
    #[cacheable(ttl = 60, cache = self.cache, name = "doubler.value")]
    async fn value(&self, n: u32) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        n * 2
    }
}

static GENERIC: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache)]
async fn echo<T>(cache: &Cache, value: T) -> T
where
    T: Serialize + serde::de::DeserializeOwned + Send,
{
    GENERIC.hit();
    value
}

#[tokio::test]
async fn trait_methods_and_generic_fns() {
    let d = Doubler {
        cache: Cache::memory(),
        calls: AtomicUsize::new(0),
    };
    assert_eq!(d.value(4).await, 8);
    assert_eq!(d.value(4).await, 8);
    assert_eq!(d.calls.load(Ordering::SeqCst), 1);

    let cache = Cache::memory();
    assert_eq!(echo(&cache, "a".to_owned()).await, "a");
    assert_eq!(echo(&cache, "a".to_owned()).await, "a");
    assert_eq!(echo(&cache, vec![1u8, 2]).await, [1, 2]);
    assert_eq!(GENERIC.get(), 2);
}

// ----- key template and skip -----

static TEMPLATE: Calls = Calls::new();
static SKIP: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache, key = "{id}")]
async fn greeting(cache: &Cache, id: u32, lang: &str) -> String {
    TEMPLATE.hit();
    format!("{lang}:{id}")
}

#[derive(Debug)]
struct Db;

#[cacheable(ttl = 60, cache = cache, skip(db, trace))]
async fn skipped(cache: &Cache, db: &Db, id: u32, trace: u64) -> u32 {
    let _ = (db, trace);
    SKIP.hit();
    id
}

#[tokio::test]
async fn key_template_and_skip_choose_the_key() {
    let cache = Cache::memory();
    assert_eq!(greeting(&cache, 1, "en").await, "en:1");
    // `lang` is not in the key: same entry.
    assert_eq!(greeting(&cache, 1, "fr").await, "en:1");
    assert_eq!(greeting(&cache, 2, "fr").await, "fr:2");
    assert_eq!(TEMPLATE.get(), 2);

    assert_eq!(skipped(&cache, &Db, 1, 100).await, 1);
    assert_eq!(skipped(&cache, &Db, 1, 200).await, 1);
    assert_eq!(SKIP.get(), 1, "skipped arguments are not in the key");
    assert_eq!(skipped(&cache, &Db, 2, 200).await, 2);
    assert_eq!(SKIP.get(), 2);
}

// ----- version -----

static V1: Calls = Calls::new();
static V1_AGAIN: Calls = Calls::new();
static V2: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache, name = "versioned", version = 1)]
async fn versioned_v1(cache: &Cache, id: u32) -> u32 {
    V1.hit();
    id
}

#[cacheable(ttl = 60, cache = cache, name = "versioned", version = 1)]
async fn versioned_v1_again(cache: &Cache, id: u32) -> u32 {
    V1_AGAIN.hit();
    id + 1000
}

#[cacheable(ttl = 60, cache = cache, name = "versioned", version = 2)]
async fn versioned_v2(cache: &Cache, id: u32) -> u32 {
    V2.hit();
    id + 2000
}

#[tokio::test]
async fn version_is_part_of_the_key() {
    let cache = Cache::memory();
    assert_eq!(versioned_v1(&cache, 1).await, 1);
    // Same name, same version, same arguments: the same entry.
    assert_eq!(versioned_v1_again(&cache, 1).await, 1);
    assert_eq!(V1_AGAIN.get(), 0);
    // A bumped version misses.
    assert_eq!(versioned_v2(&cache, 1).await, 2001);
    assert_eq!(V2.get(), 1);
    assert_eq!(V1.get(), 1);
}

// ----- tenants -----

static TENANTED: Calls = Calls::new();
static GLOBAL: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache, tags = ["plan"])]
async fn plan(cache: &Cache) -> String {
    TENANTED.hit();
    cacheable::tenant::current().map_or_else(|| "none".to_owned(), |t| t.as_str().to_owned())
}

#[cacheable(ttl = 60, cache = cache, global)]
async fn shared(cache: &Cache) -> u32 {
    GLOBAL.hit();
    42
}

#[cache_evict(cache = cache, tags = ["plan"])]
async fn change_plan(cache: &Cache) {}

#[tokio::test]
async fn tenants_are_isolated_unless_global() {
    use cacheable::tenant::scope;
    let cache = Cache::memory();
    assert_eq!(scope("a", plan(&cache)).await, "a");
    assert_eq!(scope("b", plan(&cache)).await, "b");
    assert_eq!(scope("a", plan(&cache)).await, "a");
    assert_eq!(TENANTED.get(), 2, "one entry per tenant");

    // Invalidation in tenant `a` leaves tenant `b` cached.
    scope("a", change_plan(&cache)).await;
    assert_eq!(scope("a", plan(&cache)).await, "a");
    assert_eq!(scope("b", plan(&cache)).await, "b");
    assert_eq!(TENANTED.get(), 3);

    assert_eq!(scope("a", shared(&cache)).await, 42);
    assert_eq!(scope("b", shared(&cache)).await, 42);
    assert_eq!(shared(&cache).await, 42);
    assert_eq!(GLOBAL.get(), 1, "global ignores the tenant");
}

#[cache_evict(cache = cache, tags = ["plan"], all_tenants)]
async fn change_every_plan(cache: &Cache) {}

static ALL: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache, tags = ["plan"], name = "plan.all")]
async fn plan_all(cache: &Cache) -> u32 {
    ALL.hit();
    1
}

#[tokio::test]
async fn all_tenants_evicts_in_every_tenant() {
    use cacheable::tenant::scope;
    let cache = Cache::memory();
    scope("a", plan_all(&cache)).await;
    scope("b", plan_all(&cache)).await;
    assert_eq!(ALL.get(), 2);
    change_every_plan(&cache).await;
    scope("a", plan_all(&cache)).await;
    scope("b", plan_all(&cache)).await;
    assert_eq!(ALL.get(), 4);
}

// ----- nested cached calls record dependencies (guarantee 8) -----

static INNER: Calls = Calls::new();
static OUTER: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache, tags = ["inner:{id}"])]
async fn inner(cache: &Cache, id: u32) -> u32 {
    INNER.hit();
    id
}

#[cacheable(ttl = 60, cache = cache, tags = ["outer"])]
async fn outer(cache: &Cache, id: u32) -> u32 {
    OUTER.hit();
    inner(cache, id).await + 100
}

#[cache_evict(cache = cache, tags = ["inner:{id}"])]
async fn touch_inner(cache: &Cache, id: u32) {}

#[tokio::test]
async fn invalidating_an_inner_tag_invalidates_the_outer_entry() {
    let cache = Cache::memory();
    assert_eq!(outer(&cache, 1).await, 101);
    assert_eq!(outer(&cache, 1).await, 101);
    assert_eq!((OUTER.get(), INNER.get()), (1, 1));
    touch_inner(&cache, 2).await;
    assert_eq!(outer(&cache, 1).await, 101);
    assert_eq!(OUTER.get(), 1, "another inner tag leaves the outer entry");
    touch_inner(&cache, 1).await;
    assert_eq!(outer(&cache, 1).await, 101);
    assert_eq!((OUTER.get(), INNER.get()), (2, 2));
}

// ----- `?` and early `return` in bodies, extractor patterns -----

#[derive(Debug, PartialEq)]
enum AppError {
    Parse,
    Negative,
}

impl From<std::num::ParseIntError> for AppError {
    fn from(_: std::num::ParseIntError) -> Self {
        AppError::Parse
    }
}

static PARSE: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache)]
async fn parse(cache: &Cache, raw: &str) -> Result<i64, AppError> {
    PARSE.hit();
    let n: i64 = raw.parse()?;
    if n < 0 {
        return Err(AppError::Negative);
    }
    if n == 0 {
        return Ok(-1);
    }
    Ok(n * 2)
}

#[tokio::test]
async fn question_mark_and_return_work_in_bodies() {
    let cache = Cache::memory();
    assert_eq!(parse(&cache, "x").await, Err(AppError::Parse));
    assert_eq!(parse(&cache, "-3").await, Err(AppError::Negative));
    assert_eq!(parse(&cache, "0").await, Ok(-1));
    assert_eq!(parse(&cache, "0").await, Ok(-1));
    assert_eq!(parse(&cache, "21").await, Ok(42));
    assert_eq!(PARSE.get(), 4, "early `return Ok` is cached");
}

struct Path<T>(T);
struct State<T>(T);

static PATTERN: Calls = Calls::new();

#[cacheable(ttl = 60, cache = cache)]
async fn by_path(State(cache): State<&Cache>, Path((org, id)): Path<(String, u64)>) -> String {
    PATTERN.hit();
    format!("{org}/{id}")
}

#[tokio::test]
async fn pattern_bindings_are_the_key_and_state_is_left_out() {
    let cache = Cache::memory();
    let get = |org: &str, id| by_path(State(&cache), Path((org.to_owned(), id)));
    assert_eq!(get("a", 1).await, "a/1");
    assert_eq!(get("a", 1).await, "a/1");
    assert_eq!(get("b", 1).await, "b/1");
    assert_eq!(get("a", 2).await, "a/2");
    assert_eq!(PATTERN.get(), 3);
}

// ----- axum extractors written without a pattern -----

#[derive(Serialize, Deserialize)]
struct Filter {
    name_prefix: Option<String>,
    limit: u32,
}

#[derive(Clone, Serialize, Deserialize)]
struct Viewer {
    user_id: u64,
}

static EXTRACTED: Calls = Calls::new();

/// `State` stays out of the key; `Query`, `Json` and `Extension` are keyed
/// by what they carry.
#[cacheable(ttl = 60, cache = app.0, name = "extractors.list")]
async fn list(
    app: axum::extract::State<Cache>,
    filter: axum::extract::Query<Filter>,
    viewer: axum::Extension<Viewer>,
    body: axum::Json<Vec<u8>>,
) -> String {
    EXTRACTED.hit();
    format!(
        "{}:{}:{}:{}",
        filter.name_prefix.as_deref().unwrap_or("*"),
        filter.limit,
        viewer.user_id,
        body.len()
    )
}

#[tokio::test]
async fn extractors_without_a_pattern_are_keyed_by_their_value() {
    use axum::extract::{Query, State};
    use axum::{Extension, Json};
    let cache = Cache::memory();
    let call = |prefix: Option<&str>, limit, user_id, body: &[u8]| {
        list(
            State(cache.clone()),
            Query(Filter {
                name_prefix: prefix.map(str::to_owned),
                limit,
            }),
            Extension(Viewer { user_id }),
            Json(body.to_vec()),
        )
    };
    assert_eq!(call(Some("al"), 10, 1, b"").await, "al:10:1:0");
    assert_eq!(call(Some("bo"), 10, 1, b"").await, "bo:10:1:0");
    assert_eq!(call(None, 10, 1, b"").await, "*:10:1:0");
    assert_eq!(call(Some("al"), 20, 1, b"").await, "al:20:1:0");
    assert_eq!(call(Some("al"), 10, 2, b"").await, "al:10:2:0");
    assert_eq!(call(Some("al"), 10, 1, b"x").await, "al:10:1:1");
    assert_eq!(EXTRACTED.get(), 6, "every value a distinct entry");
    // The same values, in a new `State`: hits.
    assert_eq!(call(Some("al"), 10, 1, b"").await, "al:10:1:0");
    assert_eq!(call(Some("bo"), 10, 1, b"").await, "bo:10:1:0");
    assert_eq!(EXTRACTED.get(), 6);
    assert_eq!(hits_misses(&cache, "extractors.list"), (2, 6));
}

// ----- the global cache -----

static NO_CACHE: Calls = Calls::new();

#[cacheable(ttl = 60, name = "uses.global")]
async fn uses_global(id: u32) -> u32 {
    NO_CACHE.hit();
    id
}

#[tokio::test]
async fn without_cache_argument_the_global_cache_is_used() {
    // The only test in this binary that sets the global cache.
    let cache = Cache::memory();
    cacheable::set_global(cache.clone());
    assert_eq!(uses_global(1).await, 1);
    assert_eq!(uses_global(1).await, 1);
    assert_eq!(NO_CACHE.get(), 1);
    assert_eq!(hits_misses(&cache, "uses.global"), (1, 1));
}

// ----- Debug, method calls and the result in templates -----

static TEMPLATED: Calls = Calls::new();

#[derive(Debug, Clone, Copy)]
enum Lang {
    En,
}

/// `{lang:?}` renders `En`; `{name.to_lowercase()}` calls the method; the
/// key template renders both injectively.
#[cacheable(
    ttl = 60,
    cache = cache,
    skip(lang),
    tags = ["lang:{lang:?}", "name:{name.to_lowercase()}", "len:{ret.len()}"],
    key = "{lang:?}:{name.to_lowercase()}"
)]
async fn templated(cache: &Cache, lang: Lang, name: &str) -> String {
    TEMPLATED.hit();
    format!("{lang:?}:{name}")
}

#[cache_evict(cache = cache, tags = ["len:{ret}"])]
async fn touch_len(cache: &Cache, n: usize) -> usize {
    n
}

#[tokio::test]
async fn debug_method_and_result_placeholders_render_tags_and_keys() {
    let cache = Cache::memory();
    assert_eq!(templated(&cache, Lang::En, "Ann").await, "En:Ann");
    // Same lowercased name: the same key (the method runs in the key).
    assert_eq!(templated(&cache, Lang::En, "ANN").await, "En:Ann");
    assert_eq!(TEMPLATED.get(), 1);
    cache.delete_by_tags(&["lang:En"], None).await.unwrap();
    assert_eq!(templated(&cache, Lang::En, "ann").await, "En:ann");
    assert_eq!(TEMPLATED.get(), 2);
    cache.delete_by_tags(&["name:ann"], None).await.unwrap();
    assert_eq!(templated(&cache, Lang::En, "Ann").await, "En:Ann");
    assert_eq!(TEMPLATED.get(), 3);
    // The result's length (6) is a tag, evicted by `{ret}` of another fn.
    touch_len(&cache, 5).await;
    assert_eq!(templated(&cache, Lang::En, "ann").await, "En:Ann");
    assert_eq!(TEMPLATED.get(), 3);
    touch_len(&cache, 6).await;
    assert_eq!(templated(&cache, Lang::En, "ann").await, "En:ann");
    assert_eq!(TEMPLATED.get(), 4);
}
