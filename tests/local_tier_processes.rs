//! Guarantee 2 of the local tier across instances in separate processes
//! (issue 11): three child processes (`cacheable-test-child procs`, in
//! `tests/support/child.rs`), each a `Cache` with a local tier, read records
//! through `#[cacheable]` while this process and the children write and
//! invalidate them, under each failure path of the protocol in the
//! runtime's `local` module docs: none, a killed subscription, a paused
//! instance (SIGSTOP), a restarted Redis, a delay on one instance's
//! connection. A negative control (invalidations behind the channel's back)
//! shows that the checker sees stale reads when there are some. Every case
//! runs on a single Redis and on a Redis Cluster of three masters
//! (`cluster_*`); the harness is `tests/support/procs.rs`.
//!
//! The checker: the "database" is a file per record in a scratch directory
//! (so it survives a Redis restart and is not slowed by the delay). Each
//! record has one writer: records `0..PARENT_RECORDS` this process, record
//! `PARENT_RECORDS + k` child `k`. A writer writes version `v` to the
//! database, invalidates the record's tag, and once the invalidation has
//! *returned* writes `v` to the record's floor file (by rename, so readers
//! see whole numbers). A child reads the floor before each read; a read
//! that then returns less than the floor started after an invalidation
//! returned and saw an older value: a violation. Every child counts its
//! violations and reports them when its stdin closes.
//!
//! On the cluster, each failure is made where the protocol is exposed:
//! - the negative control bumps the version key on the master of its slot;
//! - subscriptions are killed on the registry's master, which holds them;
//! - "Redis restarted" is the registry's master killed (SIGKILL) and started
//!   again on its port, within `cluster-node-timeout`, so it comes back as
//!   master of its slots with its `nodes.conf` and no data: the registry
//!   and the version keys of its slots are gone, as when a supervisor
//!   restarts a crashed master without persistence. That is the harder of
//!   the two real paths: a failover to a replica also closes every
//!   subscription (the old master's process dies) and may lose
//!   registrations, but the replica keeps the data it had, and it takes
//!   `cluster-node-timeout` plus an election before any write is answered;
//!   `cluster_a_failover_of_the_registry_drops_everything` in
//!   `tests/local_tier.rs` covers that path for one instance;
//! - the delay: cluster clients reach nodes at the addresses the nodes
//!   announce, so a proxy in front of one port would be bypassed. Every
//!   node announces a `DelayProxy` in front of it (`cluster-announce-port`,
//!   set at run time; the bus port is kept), every instance connects
//!   through the proxies, and the proxies delay only the connections child
//!   0 opens (matched through `/proc`, so Linux only, beside the forwarding:
//!   a new connection of child 0 is undelayed for its first tens of ms):
//!   child 0's link to every node is slow, the others' are not, as on the
//!   single Redis.

#[path = "support/procs.rs"]
mod procs;

use procs::{Fault, LEASE, Outcome, SERIAL, Topology, run};

/// Runs `fault` on a fresh `topology`, one case at a time.
async fn case(topology: fn() -> Topology, fault: Fault, through_channel: bool) -> Outcome {
    let _serial = SERIAL.lock().await;
    let mut topology = topology();
    run(&mut topology, fault, through_channel).await
}

async fn plain(topology: fn() -> Topology) {
    let out = case(topology, Fault::None, true).await;
    out.assert_held();
    assert!(out.max_latency() < LEASE, "{:?}", out.max_latency());
}

async fn negative_control(topology: fn() -> Topology) {
    let out = case(topology, Fault::None, false).await;
    assert!(out.stale() > 0, "the checker sees stale reads: {out:?}");
}

async fn killed_subscription(topology: fn() -> Topology) {
    case(topology, Fault::KillSubscription, true)
        .await
        .assert_held();
}

async fn paused_instance(topology: fn() -> Topology) {
    let out = case(topology, Fault::Pause, true).await;
    out.assert_held();
    // The invalidations during the pause waited for the paused instance,
    // about one lease at most.
    assert!(out.max_latency() >= LEASE / 4, "{:?}", out.max_latency());
    assert!(out.max_latency() < LEASE * 2, "{:?}", out.max_latency());
}

async fn restarted_redis(topology: fn() -> Topology) {
    let out = case(topology, Fault::RestartRedis, true).await;
    out.assert_held();
    assert!(
        out.failed_attempts > 0,
        "invalidations failed while Redis was down"
    );
}

async fn delayed_connection(topology: fn() -> Topology) {
    let out = case(topology, Fault::Delay, true).await;
    out.assert_held();
    assert!(out.max_latency() >= LEASE / 4, "{:?}", out.max_latency());
    // Child 0's connections (at least its subscription and one to a
    // master) went through the delay.
    assert!(out.delayed_connections >= 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_plain() {
    plain(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_three_processes_behind_the_channel_are_stale() {
    negative_control(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_killed_subscription() {
    killed_subscription(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_paused_instance() {
    paused_instance(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_restarted_redis() {
    restarted_redis(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_delayed_connection() {
    delayed_connection(Topology::single).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_processes_plain() {
    plain(Topology::cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_negative_control_three_processes_behind_the_channel_are_stale() {
    negative_control(Topology::cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_processes_a_killed_subscription() {
    killed_subscription(Topology::cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_processes_a_paused_instance() {
    paused_instance(Topology::cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_processes_a_restarted_registry_master() {
    restarted_redis(Topology::cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_processes_a_delayed_connection() {
    delayed_connection(Topology::cluster).await;
}
