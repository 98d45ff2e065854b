//! Helpers shared by the integration tests (a module of each test crate
//! that declares `mod common;`; each uses some of them, hence the allow).
#![allow(dead_code)]

use cacheable::{Cache, CacheOptions};
use tokio::sync::oneshot;

/// Starts `get_or_compute(key)` whose computation returns "old" once
/// released, and returns when the computation has started (its version
/// snapshot is taken): the gate of every stale-set race.
pub async fn slow_computation(
    cache: &Cache,
    key: &'static str,
    opts: &CacheOptions,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<String>) {
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (cache, opts) = (cache.clone(), opts.clone());
    let slow = tokio::spawn(async move {
        cache
            .get_or_compute(key, &opts, || async move {
                started_tx.send(()).unwrap();
                go_rx.await.unwrap();
                Ok::<_, ()>("old".to_owned())
            })
            .await
            .unwrap()
    });
    started_rx.await.unwrap();
    (go_tx, slow)
}
