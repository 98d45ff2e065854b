//! Guarantee 10, end to end through `#[cacheable]`: a hit returns exactly what
//! the function returned, or the value is not cached. The values JSON cannot
//! carry (NaN, infinities, `Some(None)`) are returned right on every call,
//! refused at write time (counted as `lossy`, never written, so never decoded),
//! on the memory store and on a real `redis-server`.

use std::sync::atomic::{AtomicUsize, Ordering};

use cacheable::{Cache, CacheError, CacheOptions, cacheable};
use cacheable_test_support::RedisServer;

/// How many times a body ran.
#[derive(Default)]
struct Calls(AtomicUsize);

impl Calls {
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cacheable(name = "codec.some_float", ttl = 60, cache = cache, skip(calls, x))]
async fn some_float(cache: &Cache, calls: &Calls, k: &str, x: f64) -> Option<f64> {
    calls.hit();
    Some(x)
}

#[cacheable(name = "codec.bare_float", ttl = 60, cache = cache, skip(calls, x))]
async fn bare_float(cache: &Cache, calls: &Calls, k: &str, x: f64) -> f64 {
    calls.hit();
    x
}

#[cacheable(name = "codec.nested", ttl = 60, cache = cache, cache_none, skip(calls, v))]
async fn nested(
    cache: &Cache,
    calls: &Calls,
    k: &str,
    v: Option<Option<u32>>,
) -> Option<Option<u32>> {
    calls.hit();
    v
}

#[cacheable(name = "codec.result", ttl = 60, cache = cache, skip(calls))]
async fn result_unit(cache: &Cache, calls: &Calls, k: &str) -> Result<Option<()>, String> {
    calls.hit();
    Ok(Some(()))
}

fn errors(cache: &Cache, name: &str) -> u64 {
    cache.stats().function(name).map_or(0, |f| f.errors)
}

/// Keys in the store, where the test can see them (Redis: `DBSIZE`).
type Entries<'a> = &'a dyn Fn() -> Option<u64>;

/// Three calls of an uncachable value: each returns it (recomputed), each
/// write is refused and counted, nothing is written.
async fn uncachable<T, F, Fut>(
    cache: &Cache,
    name: &str,
    entries: Entries<'_>,
    call: F,
    same: impl Fn(&T) -> bool,
) where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = (errors(cache, name), entries());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = call().await;
        seen.push((got, errors(cache, name), entries()));
    }
    for (i, (got, _, _)) in seen.iter().enumerate() {
        assert!(same(got), "{name}: call {} returned {got:?}", i + 1);
    }
    for (i, (_, errors, entries)) in (1..).zip(&seen) {
        assert_eq!(
            *errors,
            before.0 + i,
            "{name}: call {i}: one refused write counted per call, no decode error"
        );
        assert_eq!(*entries, before.1, "{name}: nothing was written");
    }
}

async fn suite(cache: &Cache, entries: Entries<'_>) {
    let calls = Calls::default();

    // Some(NaN) and Some(±inf) came back as None.
    for (k, x) in [
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
    ] {
        let n = calls.get();
        uncachable(
            cache,
            "codec.some_float",
            entries,
            || some_float(cache, &calls, k, x),
            |got| got.is_some_and(|g| g.to_bits() == x.to_bits()),
        )
        .await;
        assert_eq!(calls.get(), n + 3, "recomputed every time");
    }

    // A bare NaN was written as `null`, then failed to decode on every call.
    let n = calls.get();
    uncachable(
        cache,
        "codec.bare_float",
        entries,
        || bare_float(cache, &calls, "nan", f64::NAN),
        |got| got.is_nan(),
    )
    .await;
    assert_eq!(calls.get(), n + 3);

    // Some(None) with cache_none came back as None.
    let n = calls.get();
    uncachable(
        cache,
        "codec.nested",
        entries,
        || nested(cache, &calls, "some-none", Some(None)),
        |got| *got == Some(None),
    )
    .await;
    assert_eq!(calls.get(), n + 3);

    // Ok(Some(())) would come back as Ok(None).
    uncachable(
        cache,
        "codec.result",
        entries,
        || result_unit(cache, &calls, "unit"),
        |got| *got == Ok(Some(())),
    )
    .await;

    // No false rejections: the neighbours of those values are cached.
    let n = calls.get();
    let e = errors(cache, "codec.nested");
    for v in [None, Some(Some(7)), Some(Some(0))] {
        let k = format!("{v:?}");
        assert_eq!(nested(cache, &calls, &k, v).await, v);
        assert_eq!(nested(cache, &calls, &k, v).await, v, "a hit");
    }
    for x in [-0.0, f64::MIN_POSITIVE / 4.0, f64::MAX, 0.1 + 0.2] {
        let k = format!("{:x}", x.to_bits());
        assert_eq!(
            some_float(cache, &calls, &k, x).await.map(f64::to_bits),
            Some(x.to_bits())
        );
        assert_eq!(
            some_float(cache, &calls, &k, x).await.map(f64::to_bits),
            Some(x.to_bits()),
            "a hit, bit for bit"
        );
    }
    assert_eq!(calls.get(), n + 7, "each computed once");
    assert_eq!(errors(cache, "codec.nested"), e);
    if let Some(n) = entries() {
        assert!(n >= 7, "written");
    }

    // The service API refuses the value with a typed error.
    let opts = CacheOptions::new();
    assert!(matches!(
        cache.set("k", &Some(f64::NAN), &opts).await,
        Err(CacheError::Lossy(_))
    ));
    assert!(matches!(
        cache.set("k", &Some(None::<u8>), &opts).await,
        Err(CacheError::Lossy(_))
    ));
    let got: Result<Option<f64>, ()> = cache
        .get_or_compute("k", &opts, || async { Ok(Some(f64::INFINITY)) })
        .await;
    assert_eq!(got, Ok(Some(f64::INFINITY)));
    assert_eq!(
        cache.get::<Option<f64>>("k", &opts).await.unwrap(),
        None,
        "not cached"
    );
}

#[tokio::test]
async fn memory_store_returns_what_the_function_returned() {
    suite(&Cache::memory(), &|| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_returns_what_the_function_returned() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("codec")
        .build()
        .await
        .expect("valid configuration");
    let dbsize = || {
        let r = server.command(&[b"DBSIZE"]);
        String::from_utf8_lossy(&r[1..]).trim().parse::<u64>().ok()
    };
    suite(&cache, &dbsize).await;
}

/// The refusal is counted under its own kind, `lossy`, and nothing is ever
/// decoded: no `codec` error.
#[test]
fn refusals_are_counted_as_lossy_not_as_decode_errors() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let cache = Cache::memory();
            let calls = Calls::default();
            for _ in 0..3 {
                assert!(bare_float(&cache, &calls, "m", f64::NAN).await.is_nan());
            }
        });
    });
    let mut kinds = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "cacheable_errors_total" {
            continue;
        }
        let kind = key
            .key()
            .labels()
            .find(|l| l.key() == "kind")
            .map(|l| l.value().to_owned());
        if let DebugValue::Counter(n) = value {
            kinds.insert(kind, n);
        }
    }
    assert_eq!(kinds.get(&Some("lossy".to_owned())), Some(&3), "{kinds:?}");
    assert_eq!(kinds.get(&Some("codec".to_owned())), None, "{kinds:?}");
}
