//! No tenant context is not a tenant: a non-`global` cached call made outside
//! any tenant scope (classically, in a future given to `tokio::spawn`) must
//! never share the no-tenant space between tenants when the cache is built
//! with `require_tenant()`, and `in_current_context()` carries the tenant into
//! a spawned task.

use std::time::Duration;

use cacheable::context::{self, Context};
use cacheable::{Cache, CacheError, CacheOptions, WithContext, cacheable, tenant};
use cacheable_test_support::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A tenant's database: each tenant has its own user 1.
#[derive(Clone)]
struct Db {
    tenant: &'static str,
}

#[cacheable(ttl = 60, skip(db), cache = cache, name = "require_tenant.user")]
async fn get_user(cache: &Cache, db: &Db, id: u64) -> User {
    User {
        id,
        name: format!("{} user {id}", db.tenant),
    }
}

/// Tenant A's request, then tenant B's, each looks its user 1 up in a task it
/// spawns without re-scoping. Returns what B's task got.
async fn spawned_lookups(cache: &Cache) -> (User, User) {
    let a = {
        let cache = cache.clone();
        tenant::scope("tenant-a", async move {
            tokio::spawn(async move { get_user(&cache, &Db { tenant: "a" }, 1).await })
                .await
                .unwrap()
        })
        .await
    };
    let b = {
        let cache = cache.clone();
        tenant::scope("tenant-b", async move {
            tokio::spawn(async move { get_user(&cache, &Db { tenant: "b" }, 1).await })
                .await
                .unwrap()
        })
        .await
    };
    (a, b)
}

async fn redis_cache(server: &RedisServer, prefix: &str, require: bool) -> Cache {
    let b = Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .op_timeout(Duration::from_millis(500));
    let b = if require { b.require_tenant() } else { b };
    b.build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_task_without_scope_never_gets_another_tenants_user() {
    let server = RedisServer::start();

    // The scenario is real: without `require_tenant`, B receives A's user.
    let shared = redis_cache(&server, "shared", false).await;
    let (a, b) = spawned_lookups(&shared).await;
    assert_eq!(a.name, "a user 1");
    assert_eq!(b.name, "a user 1", "the default shares the no-tenant space");

    let cache = redis_cache(&server, "strict", true).await;
    let (a, b) = spawned_lookups(&cache).await;
    assert_eq!(a.name, "a user 1");
    assert_eq!(b.name, "b user 1", "tenant B gets its own user");
    let (_, b) = spawned_lookups(&cache).await;
    assert_eq!(b.name, "b user 1", "and again: nothing was cached");
    let stats = cache.stats();
    assert_eq!(stats.errors, 4, "each tenantless call counts an error");
    assert_eq!(stats.hits, 0);
    let f = stats
        .function("require_tenant.user")
        .expect("per-function stats");
    assert_eq!(f.errors, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_current_context_carries_the_tenant_into_spawn() {
    let cache = Cache::builder()
        .memory()
        .require_tenant()
        .build()
        .await
        .unwrap();
    let ctx = Context::new().tenant("acme").user("u1");
    let (seen, user, value) = context::scope(ctx, {
        let cache = cache.clone();
        async move {
            let lost = tokio::spawn(async { tenant::current() }).await.unwrap();
            assert_eq!(lost, None, "task-locals are not inherited by spawn");
            tokio::spawn(
                async move {
                    let value = get_user(&cache, &Db { tenant: "acme" }, 7).await;
                    let again = get_user(&cache, &Db { tenant: "acme" }, 7).await;
                    assert_eq!(value, again);
                    (
                        tenant::current(),
                        context::current().and_then(|c| c.user_id().map(str::to_owned)),
                        value,
                    )
                }
                .in_current_context(),
            )
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(seen.as_ref().map(tenant::TenantId::as_str), Some("acme"));
    assert_eq!(user.as_deref(), Some("u1"));
    assert_eq!(value.name, "acme user 7");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 1, 0));

    // `with_context` sets another one; outside any context there is none.
    let other = tokio::spawn(async { tenant::current() }.with_context(Context::new().tenant("x")))
        .await
        .unwrap();
    assert_eq!(other.as_ref().map(tenant::TenantId::as_str), Some("x"));
    let none = tokio::spawn(async { tenant::current() }.in_current_context())
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn service_api_without_a_tenant() {
    let cache = Cache::builder()
        .memory()
        .require_tenant()
        .build()
        .await
        .unwrap();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    assert!(matches!(
        cache.set("k", &1u32, &opts).await,
        Err(CacheError::NoTenant)
    ));
    assert!(matches!(
        cache.get::<u32>("k", &opts).await,
        Err(CacheError::NoTenant)
    ));
    assert_eq!(CacheError::NoTenant.kind(), "no_tenant");
    for n in [1, 2] {
        let v = cache
            .get_or_compute("k", &opts, || async move { Ok::<_, ()>(n) })
            .await
            .unwrap();
        assert_eq!(v, n, "runs uncached every time");
    }
    assert_eq!(cache.stats().errors, 4);

    // An explicit tenant, the current one or `global` are fine.
    cache
        .set("k", &1u32, &opts.clone().tenant("t"))
        .await
        .unwrap();
    let got = tenant::scope("t", cache.get::<u32>("k", &opts))
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    cache.set("g", &2u32, &opts.clone().global()).await.unwrap();
    assert_eq!(
        cache.get::<u32>("g", &opts.clone().global()).await.unwrap(),
        Some(2)
    );
}
