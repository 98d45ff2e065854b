//! Test helper, not for users: the child process of the cross-process tests
//! in `tests/cache.rs`, run by them through `env!("CARGO_BIN_EXE_cacheable-test-child")`.
//! Built only with the internal `__test-child` feature, which the crate's own
//! dev-dependency on itself turns on for test builds.
//!
//! - `cacheable-test-child key`: prints `KEY=<hash>` of fixed arguments
//!   (`keys_are_stable_across_processes`);
//! - `cacheable-test-child xproc <redis-url>`: makes one `#[cacheable]` call
//!   under tenant `acme`, filling the entry the parent then reads
//!   (`a_cached_call_in_one_process_hits_in_another`).
//!
//! - `cacheable-test-child local <redis-url> <dir>`: a cache with a local
//!   tier (prefix `ltchild`, lease 1 s) reading `<dir>/value` through a
//!   cached call tagged `rec`, forever; before each read it reads
//!   `<dir>/mark`, and prints `M=<mark> V=<value> LOCAL=<0|1>`
//!   (`tests/local_tier.rs`, which pauses it with SIGSTOP);
//! - `cacheable-test-child local-cluster <url,url,..> <dir>`: the same on a
//!   Redis Cluster (the comma-separated node URLs);
//! - `cacheable-test-child procs <redis-url> <dir> <records> <own|->`: one
//!   instance of the multi-process stale-read checker of
//!   `tests/local_tier_processes.rs` (see `procs_loop`);
//! - `cacheable-test-child procs-cluster <url,url,..> <dir> <records> <own|->`:
//!   the same on a Redis Cluster.
//!
//! The types, names and arguments here must stay those of `tests/cache.rs`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use cacheable::{Cache, tenant};
use serde::Serialize;

#[derive(Serialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Serialize, serde::Deserialize)]
struct Filter {
    tags: BTreeMap<String, u32>,
    query: Option<String>,
}

#[cacheable::cacheable(name = "tests.xproc", ttl = 60, tags = ["xproc:{id}"], skip(answer))]
async fn xproc(id: u64, filter: Filter, answer: String) -> String {
    answer
}

#[cacheable::cacheable(name = "tests.local_child", ttl = 60, tags = ["rec"], global)]
async fn local_child(dir: &str) -> String {
    std::fs::read_to_string(format!("{dir}/value")).unwrap_or_default()
}

async fn local_loop(url: &str, dir: &str) {
    local_loop_on(Cache::builder().redis_url(url), dir).await;
}

async fn local_loop_on(builder: cacheable::CacheBuilder, dir: &str) {
    let cache = builder
        .prefix("ltchild")
        .local_cache(100, std::time::Duration::from_secs(60))
        .local_cache_lease(std::time::Duration::from_secs(1))
        .build()
        .await
        .expect("valid configuration");
    cacheable::set_global(cache.clone());
    loop {
        let mark = std::fs::read_to_string(format!("{dir}/mark")).unwrap_or_default();
        let before = cache.stats().local_hits;
        let v = local_child(dir).await;
        let local = u8::from(cache.stats().local_hits > before);
        println!("M={mark} V={v} LOCAL={local}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Record `r` of the checker's "database": `<dir>/db/r<r>`, a number.
#[cacheable::cacheable(name = "tests.procs", ttl = 60, tags = ["p{r}"], global)]
async fn procs_read(dir: &str, r: u32) -> u64 {
    read_number(&format!("{dir}/db/r{r}"))
}

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Replaces `path` with `value` in one step (a rename), so a reader in
/// another process sees the old number or the new one, never a torn write.
fn write_number(dir: &str, path: &str, value: u64) {
    let tmp = format!("{dir}/tmp-{}", std::process::id());
    std::fs::write(&tmp, value.to_string()).expect("write the scratch file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// One instance of the multi-process stale-read checker: a cache with a
/// local tier (prefix `ltprocs`, lease 1 s) reading records `0..records`
/// through `procs_read` in a loop. Before each read it reads the record's
/// floor, `<dir>/floor/r<r>`: the version of the last invalidation of the
/// record that has *returned* (its writer raises the floor only then). A read
/// that returns less is stale: a violation of guarantee 2.
///
/// With `own` a record, the instance is also that record's only writer:
/// every 10 ms it writes the next version to the database, invalidates the
/// record's tag (again until it succeeds) and then raises its floor.
///
/// Prints `READY` after its first local hit, `AT reads=.. local=.. stale=..`
/// about every 200 ms, a `STALE ..` line for each of the first 20
/// violations, and once its stdin closes, `REPORT reads=.. local=..
/// stale=.. writes=.. wmax_ms=..`, then exits.
async fn procs_loop(builder: cacheable::CacheBuilder, dir: &str, records: u32, own: Option<u32>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let cache = builder
        .prefix("ltprocs")
        .local_cache(1000, Duration::from_secs(60))
        .local_cache_lease(Duration::from_secs(1))
        .build()
        .await
        .expect("valid configuration");
    cacheable::set_global(cache.clone());
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        // EOF (or anything read) on stdin ends the run.
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        stop.store(true, Ordering::SeqCst);
    });
    let (writes, wmax_ms) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = own.map(|r| {
        let (cache, dir, done) = (cache.clone(), dir.to_owned(), done.clone());
        let (writes, wmax_ms) = (writes.clone(), wmax_ms.clone());
        tokio::spawn(async move {
            let tag = format!("p{r}");
            let mut v = read_number(&format!("{dir}/db/r{r}"));
            while !done.load(Ordering::SeqCst) {
                v += 1;
                write_number(&dir, &format!("{dir}/db/r{r}"), v);
                let started = Instant::now();
                while cache.delete_by_tags_all_tenants(&[&tag]).await.is_err() {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                wmax_ms.fetch_max(took, Ordering::SeqCst);
                write_number(&dir, &format!("{dir}/floor/r{r}"), v);

                writes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let (mut reads, mut stale, mut ready) = (0u64, 0u64, false);
    let mut i = u64::from(std::process::id());
    let mut shown = Instant::now();
    while !done.load(Ordering::SeqCst) {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let r = u32::try_from((i >> 33) % u64::from(records)).expect("a record index");
        let floor = read_number(&format!("{dir}/floor/r{r}"));
        let before = cache.stats().local_hits;
        let v = procs_read(dir, r).await;
        let local = cache.stats().local_hits > before;
        reads += 1;
        if v < floor {
            stale += 1;
            if stale <= 20 {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                println!(
                    "STALE r={r} floor={floor} v={v} local={} t={t} pid={}",
                    u8::from(local),
                    std::process::id()
                );
            }
        }
        if local && !ready {
            ready = true;
            println!("READY");
        }
        if shown.elapsed() >= Duration::from_millis(200) {
            shown = Instant::now();
            let local = cache.stats().local_hits;
            println!("AT reads={reads} local={local} stale={stale}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if let Some(w) = writer {
        let _ = w.await;
    }
    println!(
        "REPORT reads={reads} local={} stale={stale} writes={} wmax_ms={}",
        cache.stats().local_hits,
        writes.load(Ordering::SeqCst),
        wmax_ms.load(Ordering::SeqCst)
    );
}

fn stable_key() -> String {
    Cache::hash_args(|h| {
        h.arg(&42u64)?;
        h.arg("héllo")?;
        h.arg(&HashMap::from([("b", 2), ("a", 1), ("c", 3)]))?;
        h.arg(&Some(User {
            id: 1,
            name: "x".into(),
        }))
    })
    .expect("hashable arguments")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["key"] => println!("KEY={}", stable_key()),
        ["xproc", url] => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let got = rt.block_on(async {
                let cache = Cache::builder()
                    .redis_url(url)
                    .prefix("xproc")
                    .build()
                    .await
                    .expect("valid configuration");
                cacheable::set_global(cache);
                let filter = Filter {
                    tags: [("b".to_owned(), 2), ("a".to_owned(), 1)]
                        .into_iter()
                        .collect(),
                    query: Some("ü".into()),
                };
                tenant::scope("acme", xproc(7, filter, "from the child".into())).await
            });
            println!("XPROC={got}");
        }
        ["local", url, dir] => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(local_loop(url, dir));
        }
        [mode @ ("procs" | "procs-cluster"), url, dir, records, own] => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let builder = if mode == "procs" {
                Cache::builder().redis_url(url)
            } else {
                Cache::builder().redis_cluster(url.split(','))
            };
            let records = records.parse().expect("a record count");
            let own = (own != "-").then(|| own.parse().expect("a record index"));
            rt.block_on(procs_loop(builder, dir, records, own));
        }
        ["local-cluster", urls, dir] => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
            rt.block_on(local_loop_on(Cache::builder().redis_cluster(urls), dir));
        }
        _ => {
            eprintln!(
                "usage: cacheable-test-child key | xproc <redis-url> | local <redis-url> <dir> \
                 | local-cluster <url,url,..> <dir> | procs <redis-url> <dir> <records> <own|-> \
                 | procs-cluster <url,url,..> <dir> <records> <own|->"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
