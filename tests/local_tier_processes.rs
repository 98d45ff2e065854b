//! Guarantee 2 of the local tier across instances in separate processes
//! (issue 11): three child processes (`cacheable-test-child procs`, in
//! `tests/support/child.rs`), each a `Cache` with a local tier, read records
//! through `#[cacheable]` while this process and the children write and
//! invalidate them, under each failure path of the protocol in the
//! runtime's `local` module docs: none, a killed subscription, a paused
//! instance (SIGSTOP), a restarted Redis, a delay on one instance's
//! connection. A negative control (invalidations behind the channel's back)
//! shows that the checker sees stale reads when there are some.
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
//! Only a single Redis for now: `local_cache` is refused on a Redis
//! Cluster. [`Topology`] is where a cluster goes once it is not: its URLs
//! for the children, how to kill a subscription, restart and bump behind
//! the channel's back.

use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cacheable::Cache;
use cacheable_test_support::{DelayProxy, RedisServer, ScratchDir};

const CHILD: &str = env!("CARGO_BIN_EXE_cacheable-test-child");
/// The children's prefix (`procs_loop` in `tests/support/child.rs`).
const PREFIX: &str = "ltprocs";
/// The children's lease.
const LEASE: Duration = Duration::from_secs(1);
const CHILDREN: u32 = 3;
/// Records written by this process; child `k` writes `PARENT_RECORDS + k`.
const PARENT_RECORDS: u32 = 6;
const RECORDS: u32 = PARENT_RECORDS + CHILDREN;
/// How long invalidations run once every child serves locally.
const RUN: Duration = Duration::from_millis(4000);
/// When the fault starts, and when every fault is over (the instances must
/// serve locally again after it).
const FAULT_AT: Duration = Duration::from_millis(1000);
const RECOVERED_FROM: Duration = Duration::from_millis(2600);

/// One case at a time: three children each, on two shared cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the instances find Redis, and how the failures are made on it.
enum Topology {
    Single(RedisServer),
}

impl Topology {
    fn single() -> Self {
        Self::Single(RedisServer::start())
    }

    fn url(&self) -> String {
        match self {
            Self::Single(s) => s.url(),
        }
    }

    /// The port of the node a delayed instance reaches through the proxy.
    fn port(&self) -> u16 {
        match self {
            Self::Single(s) => s.port(),
        }
    }

    /// Kills the `n`th subscription (modulo their number) Redis lists,
    /// which belongs to one of the children; false if there was none.
    fn kill_one_subscription(&self, n: usize) -> bool {
        let Self::Single(s) = self;
        let list = s.command(&[b"CLIENT", b"LIST", b"TYPE", b"pubsub"]);
        let ids: Vec<String> = String::from_utf8_lossy(&list)
            .split(['\n', ' '])
            .filter_map(|f| f.strip_prefix("id="))
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return false;
        }
        let id = &ids[n % ids.len()];
        s.command(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]) == b":1\r\n"
    }

    fn stop_redis(&mut self) {
        let Self::Single(s) = self;
        s.kill();
    }

    fn start_redis(&mut self) {
        let Self::Single(s) = self;
        s.restart();
    }

    /// Bumps the version of `tag` (all tenants) behind every instance's
    /// back: an invalidation that skips the channel.
    fn raw_bump(&self, tag: &str) {
        let Self::Single(s) = self;
        let key = format!("{PREFIX}:{{a}}:v:t:{tag}");
        s.command(&[b"INCR", key.as_bytes()]);
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    /// Kills one child's subscription (`CLIENT KILL ID`) three times.
    KillSubscription,
    /// SIGSTOPs child 0 for longer than a lease, then SIGCONT.
    Pause,
    /// Stops Redis for 400 ms and starts it again on the same port.
    RestartRedis,
    /// Child 0 reaches Redis through a `DelayProxy`: 10 ms each way, and
    /// 400 ms (beyond the acknowledgement timeout) during the fault.
    Delay,
}

/// One child process; killed on drop if it is still running.
struct Instance {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn spawn(url: &str, dir: &ScratchDir, own: Option<u32>) -> Self {
        let own = own.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let mut child = Command::new(CHILD)
            .args(["procs", url])
            .arg(dir.path())
            .args([&RECORDS.to_string(), &own])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (out, sink) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    }

    fn line(&self, starts: &str) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().rev().find(|l| l.starts_with(starts)).cloned()
    }

    /// The latest count of local hits the child printed.
    fn local_hits(&self) -> u64 {
        self.line("AT ").map_or(0, |l| field(&l, "local"))
    }

    /// Closes the child's stdin and waits for its report.
    fn finish(mut self) -> Report {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Some(line) = self.line("REPORT ") {
                break line;
            }
            assert!(Instant::now() < deadline, "no report from a child");
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = self.child.wait();
        let stale_lines = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("STALE "))
            .cloned()
            .collect();
        Report {
            reads: field(&line, "reads"),
            local: field(&line, "local"),
            stale: field(&line, "stale"),
            writes: field(&line, "writes"),
            wmax: Duration::from_millis(field(&line, "wmax_ms")),
            stale_lines,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> u64 {
    line.split(' ')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in {line:?}"))
}

/// What one child saw.
#[derive(Debug)]
struct Report {
    reads: u64,
    local: u64,
    stale: u64,
    writes: u64,
    /// The longest of its own invalidations.
    wmax: Duration,
    stale_lines: Vec<String>,
}

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    children: Vec<Report>,
    /// Local hits of each child when the fault was over, and at the end.
    recovered: Vec<(u64, u64)>,
    /// This process's invalidations, each from its first attempt to its
    /// success.
    latencies: Vec<Duration>,
    failed_attempts: u64,
}

impl Outcome {
    fn stale(&self) -> u64 {
        self.children.iter().map(|c| c.stale).sum()
    }

    fn max_latency(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// Asserts the guarantee held and the run had something to check: every
    /// child read, hit locally, wrote, and served locally again after the
    /// fault.
    fn assert_held(&self) {
        for (k, c) in self.children.iter().enumerate() {
            assert_eq!(
                c.stale, 0,
                "child {k} read stale values: {:?}",
                c.stale_lines
            );
            assert!(c.reads >= 100, "child {k} read little: {c:?}");
            assert!(c.local >= 10, "child {k} hit locally little: {c:?}");
            assert!(c.writes >= 5, "child {k} wrote little: {c:?}");
        }
        for (k, (then, end)) in self.recovered.iter().enumerate() {
            assert!(
                end > then,
                "child {k} did not serve locally after the fault: {then} then, {end} at the end"
            );
        }
        assert!(
            self.latencies.len() >= 5,
            "{} invalidations",
            self.latencies.len()
        );
    }
}

fn write_number(dir: &ScratchDir, name: &str, value: u64) {
    let tmp = dir.path().join(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, value.to_string()).unwrap();
    std::fs::rename(&tmp, dir.path().join(name)).unwrap();
}

/// The checker: three children on `topology`, invalidations for [`RUN`]
/// (through the cache, or with `through_channel == false` behind its back,
/// and then the children do not write), `fault` injected at [`FAULT_AT`].
async fn run(topology: &mut Topology, fault: Fault, through_channel: bool) -> Outcome {
    let dir = ScratchDir::new("local-procs");
    for sub in ["db", "floor"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for r in 0..RECORDS {
            write_number(&dir, &format!("{sub}/r{r}"), 1);
        }
    }
    let proxy = (fault == Fault::Delay)
        .then(|| DelayProxy::start(topology.port(), Duration::from_millis(10)));
    let children: Vec<Instance> = (0..CHILDREN)
        .map(|k| {
            let url = match &proxy {
                Some(p) if k == 0 => p.redis_url(),
                _ => topology.url(),
            };
            Instance::spawn(&url, &dir, through_channel.then_some(PARENT_RECORDS + k))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !children.iter().all(|c| c.line("READY").is_some()) {
        assert!(Instant::now() < deadline, "a child never hit locally");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This process is an instance without a tier: it waits for the
    // children all the same.
    let cache = Cache::builder()
        .redis_url(topology.url())
        .prefix(PREFIX)
        .build()
        .await
        .unwrap();
    let mut steps: Vec<(Duration, &str)> = match fault {
        Fault::None => vec![],
        Fault::KillSubscription => vec![
            (FAULT_AT, "kill"),
            (FAULT_AT + Duration::from_millis(500), "kill"),
            (FAULT_AT + Duration::from_millis(1000), "kill"),
        ],
        Fault::Pause => vec![(FAULT_AT, "stop"), (FAULT_AT + LEASE / 2 * 3, "cont")],
        Fault::RestartRedis => vec![
            (FAULT_AT, "down"),
            (FAULT_AT + Duration::from_millis(400), "up"),
        ],
        Fault::Delay => vec![(FAULT_AT, "slow"), (FAULT_AT + LEASE / 2 * 3, "fast")],
    };
    steps.push((RECOVERED_FROM, "mark"));
    steps.reverse();
    let mut versions = vec![1u64; PARENT_RECORDS as usize];
    let (mut latencies, mut failed_attempts, mut kills) = (Vec::new(), 0, 0);
    let mut recovered = Vec::new();
    let mut pending: Option<(usize, Instant)> = None;
    let mut i = 7u64;
    let started = Instant::now();
    loop {
        let t = started.elapsed();
        while steps.last().is_some_and(|(at, _)| *at <= t) {
            match steps.pop().unwrap().1 {
                "kill" => {
                    assert!(
                        topology.kill_one_subscription(kills),
                        "no subscription to kill"
                    );
                    kills += 1;
                }
                "stop" => children[0].signal("-STOP"),
                "cont" => children[0].signal("-CONT"),
                "down" => tokio::task::block_in_place(|| topology.stop_redis()),
                "up" => tokio::task::block_in_place(|| topology.start_redis()),
                "slow" => proxy
                    .as_ref()
                    .unwrap()
                    .set_delay(Duration::from_millis(400)),
                "fast" => proxy.as_ref().unwrap().set_delay(Duration::from_millis(10)),
                "mark" => recovered = children.iter().map(Instance::local_hits).collect(),
                other => unreachable!("{other}"),
            }
        }
        if t >= RUN && pending.is_none() {
            break;
        }
        assert!(t < RUN * 4, "invalidations did not succeed again");
        let (r, first) = pending.take().unwrap_or_else(|| {
            i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = usize::try_from((i >> 33) % u64::from(PARENT_RECORDS)).unwrap();
            versions[r] += 1;
            write_number(&dir, &format!("db/r{r}"), versions[r]);
            (r, Instant::now())
        });
        let tag = format!("p{r}");
        if through_channel {
            if cache.delete_by_tags_all_tenants(&[&tag]).await.is_err() {
                failed_attempts += 1;
                pending = Some((r, first));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        } else {
            topology.raw_bump(&tag);
        }
        latencies.push(first.elapsed());
        write_number(&dir, &format!("floor/r{r}"), versions[r]);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let children: Vec<Report> = children.into_iter().map(Instance::finish).collect();
    let recovered = recovered
        .into_iter()
        .zip(children.iter().map(|c| c.local))
        .collect();
    drop(proxy);
    let outcome = Outcome {
        children,
        recovered,
        latencies,
        failed_attempts,
    };
    let mut sorted = outcome.latencies.clone();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q) as usize)
            .copied()
    };
    eprintln!(
        "{fault:?} (through the channel: {through_channel}): {} invalidations, p50 {:?}, p99 {:?}, max {:?}, {} failed attempts",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        outcome.failed_attempts
    );
    for (k, c) in outcome.children.iter().enumerate() {
        eprintln!(
            "  child {k}: {} reads, {} local, {} stale, {} writes (max {:?})",
            c.reads, c.local, c.stale, c.writes, c.wmax
        );
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_plain() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::None, true).await;
    out.assert_held();
    assert!(out.max_latency() < LEASE, "{:?}", out.max_latency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_three_processes_behind_the_channel_are_stale() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::None, false).await;
    assert!(out.stale() > 0, "the checker sees stale reads: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_killed_subscription() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::KillSubscription, true).await;
    out.assert_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_paused_instance() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::Pause, true).await;
    out.assert_held();
    // The invalidations during the pause waited for the paused instance,
    // about one lease at most.
    assert!(out.max_latency() >= LEASE / 4, "{:?}", out.max_latency());
    assert!(out.max_latency() < LEASE * 2, "{:?}", out.max_latency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_restarted_redis() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::RestartRedis, true).await;
    out.assert_held();
    assert!(
        out.failed_attempts > 0,
        "invalidations failed while Redis was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_a_delayed_connection() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::single();
    let out = run(&mut topology, Fault::Delay, true).await;
    out.assert_held();
    assert!(out.max_latency() >= LEASE / 4, "{:?}", out.max_latency());
}
