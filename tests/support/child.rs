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
//!   Redis Cluster (the comma-separated node URLs).
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
                 | local-cluster <url,url,..> <dir>"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
