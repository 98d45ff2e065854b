//! The harness of `tests/local_tier_processes.rs` (a module of that test
//! crate): the topologies (a single Redis, a Redis Cluster) and how each
//! failure is made on them, the child processes, and [`run`], the checker
//! described in that file's docs.

use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cacheable::{Cache, CacheBuilder};
use cacheable_test_support::{DelayProxy, RedisCluster, RedisServer, ScratchDir};

const CHILD: &str = env!("CARGO_BIN_EXE_cacheable-test-child");
/// The children's prefix (`procs_loop` in `tests/support/child.rs`).
const PREFIX: &str = "ltprocs";
/// The children's lease.
pub const LEASE: Duration = Duration::from_secs(1);
const CHILDREN: u32 = 3;
/// Records written by this process; child `k` writes `PARENT_RECORDS + k`.
const PARENT_RECORDS: u32 = 6;
const RECORDS: u32 = PARENT_RECORDS + CHILDREN;
/// How long invalidations run once every child serves locally.
const RUN: Duration = Duration::from_millis(4000);
/// When the fault starts, and when every fault is over (the instances must
/// serve locally again after it): on a cluster, not before every node
/// reports `cluster_state:ok` again, and the run then goes on for
/// `RUN - RECOVERED_FROM` after that.
const FAULT_AT: Duration = Duration::from_millis(1000);
const RECOVERED_FROM: Duration = Duration::from_millis(2600);

/// One case at a time: three children each, on two shared cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the instances find Redis, and how the failures are made on it.
pub enum Topology {
    Single(RedisServer),
    /// Three masters, no replicas.
    Cluster(RedisCluster),
}

impl Topology {
    pub fn single() -> Self {
        Self::Single(RedisServer::start())
    }

    pub fn cluster() -> Self {
        Self::Cluster(RedisCluster::start(3, 0))
    }

    /// The node URLs an instance is given.
    fn urls(&self) -> Vec<String> {
        match self {
            Self::Single(s) => vec![s.url()],
            Self::Cluster(c) => c.urls(),
        }
    }

    /// The child's mode (`tests/support/child.rs`).
    fn child_mode(&self) -> &'static str {
        match self {
            Self::Single(_) => "procs",
            Self::Cluster(_) => "procs-cluster",
        }
    }

    fn builder(&self, urls: Vec<String>) -> CacheBuilder {
        match self {
            Self::Single(_) => Cache::builder().redis_url(urls.concat()), // one URL
            Self::Cluster(_) => Cache::builder().redis_cluster(urls),
        }
    }

    /// The server that holds `key`: on a cluster, its slot's master.
    fn node_of(&self, key: &str) -> &RedisServer {
        match self {
            Self::Single(s) => s,
            Self::Cluster(c) => &c.nodes()[c.master_of(key)],
        }
    }

    /// The server the instances subscribe on: on a cluster, the master of
    /// the registry's slot (see the runtime's `local` module docs).
    fn home(&self) -> &RedisServer {
        self.node_of(&format!("{PREFIX}:local:{{{PREFIX}.local}}:instances"))
    }

    /// Kills the `n`th subscription (modulo their number) Redis lists,
    /// which belongs to one of the children; false if there was none.
    fn kill_one_subscription(&self, n: usize) -> bool {
        let home = self.home();
        let list = home.command(&[b"CLIENT", b"LIST", b"TYPE", b"pubsub"]);
        let ids: Vec<String> = String::from_utf8_lossy(&list)
            .split(['\n', ' '])
            .filter_map(|f| f.strip_prefix("id="))
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return false;
        }
        let id = &ids[n % ids.len()];
        home.command(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]) == b":1\r\n"
    }

    /// Kills Redis (SIGKILL): on a cluster, the master of the registry's
    /// slot, which holds every subscription.
    fn stop_redis(&mut self) {
        match self {
            Self::Single(s) => s.kill(),
            Self::Cluster(c) => {
                let home = c.master_of(&format!("{PREFIX}:local:{{{PREFIX}.local}}:instances"));
                c.kill(home);
            }
        }
    }

    /// Starts the killed server again on its port, without its data.
    fn start_redis(&mut self) {
        match self {
            Self::Single(s) => s.restart(),
            Self::Cluster(c) => {
                let down = c.nodes().iter().position(|n| n.pid().is_none());
                c.restart(down.expect("a killed node"));
            }
        }
    }

    /// Whether Redis serves every slot (a restarted cluster master reports
    /// `cluster_state:fail` for about `cluster-node-timeout`).
    fn is_ready(&self) -> bool {
        match self {
            Self::Single(_) => true,
            Self::Cluster(c) => c.is_ok(),
        }
    }

    /// Bumps the version of `tag` (all tenants) behind every instance's
    /// back, on the node that holds it: an invalidation that skips the
    /// channel.
    fn raw_bump(&self, tag: &str) {
        let key = format!("{PREFIX}:{{a}}:v:t:{tag}");
        let reply = self.node_of(&key).command(&[b"INCR", key.as_bytes()]);
        assert_eq!(
            reply.first(),
            Some(&b':'),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }

    /// Puts child 0's connections behind delaying proxies. A single Redis:
    /// one proxy, whose URL child 0 alone is given. A cluster: clients learn
    /// node addresses from `CLUSTER SLOTS`/`CLUSTER NODES`, so a proxy in
    /// front of one port would be bypassed; instead every node announces a
    /// proxy in front of it (`cluster-announce-port`), every instance
    /// connects through them, and they delay only the connections child 0
    /// opens ([`DelayProxy::only_from`]).
    fn delay(&self) -> Delay {
        let ms10 = Duration::from_millis(10);
        match self {
            Self::Single(s) => {
                let proxy = DelayProxy::start(s.port(), ms10);
                Delay {
                    child0: vec![proxy.redis_url()],
                    everyone: None,
                    proxies: vec![proxy],
                }
            }
            Self::Cluster(c) => {
                let proxies: Vec<DelayProxy> = c
                    .nodes()
                    .iter()
                    .map(|n| DelayProxy::start(n.port(), ms10))
                    .collect();
                c.announce_ports(&proxies.iter().map(DelayProxy::port).collect::<Vec<_>>());
                let urls: Vec<String> = proxies.iter().map(DelayProxy::redis_url).collect();
                Delay {
                    child0: urls.clone(),
                    everyone: Some(urls),
                    proxies,
                }
            }
        }
    }
}

/// Child 0's delayed connections.
struct Delay {
    proxies: Vec<DelayProxy>,
    /// The URLs child 0 is given.
    child0: Vec<String>,
    /// The URLs every other instance is given, if not the topology's.
    everyone: Option<Vec<String>>,
}

impl Delay {
    fn set(&self, delay: Duration) {
        for p in &self.proxies {
            p.set_delay(delay);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fault {
    None,
    /// Kills one child's subscription (`CLIENT KILL ID`) three times.
    KillSubscription,
    /// SIGSTOPs child 0 for longer than a lease, then SIGCONT.
    Pause,
    /// Stops Redis for 400 ms and starts it again on the same port (on a
    /// cluster, the registry's master).
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
    fn spawn(mode: &str, urls: &[String], dir: &ScratchDir, own: Option<u32>) -> Self {
        let own = own.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let mut child = Command::new(CHILD)
            .args([mode, &urls.join(",")])
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
pub struct Outcome {
    children: Vec<Report>,
    /// Local hits of each child when the fault was over, and at the end.
    recovered: Vec<(u64, u64)>,
    /// This process's invalidations, each from its first attempt to its
    /// success.
    latencies: Vec<Duration>,
    pub failed_attempts: u64,
    /// Connections the delaying proxies slowed (0 without [`Fault::Delay`]).
    pub delayed_connections: u32,
}

impl Outcome {
    pub fn stale(&self) -> u64 {
        self.children.iter().map(|c| c.stale).sum()
    }

    pub fn max_latency(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// Asserts the guarantee held and the run had something to check: every
    /// child read, hit locally, wrote, and served locally again after the
    /// fault.
    pub fn assert_held(&self) {
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
pub async fn run(topology: &mut Topology, fault: Fault, through_channel: bool) -> Outcome {
    let dir = ScratchDir::new("local-procs");
    for sub in ["db", "floor"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for r in 0..RECORDS {
            write_number(&dir, &format!("{sub}/r{r}"), 1);
        }
    }
    let delay = (fault == Fault::Delay).then(|| topology.delay());
    let urls = delay
        .as_ref()
        .and_then(|d| d.everyone.clone())
        .unwrap_or_else(|| topology.urls());
    let children: Vec<Instance> = (0..CHILDREN)
        .map(|k| {
            let urls = match &delay {
                Some(d) if k == 0 => &d.child0,
                _ => &urls,
            };
            let own = through_channel.then_some(PARENT_RECORDS + k);
            let child = Instance::spawn(topology.child_mode(), urls, &dir, own);
            // Shared proxies learn child 0's pid as soon as it exists, well
            // before it has loaded and connected; `delayed_connections`
            // (asserted by the delay case) shows its connections were seen.
            if let Some(d) = delay.as_ref().filter(|d| k == 0 && d.everyone.is_some()) {
                for p in &d.proxies {
                    p.only_from(child.child.id());
                }
            }
            child
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !children.iter().all(|c| c.line("READY").is_some()) {
        assert!(
            Instant::now() < deadline,
            "a child never hit locally: {:?}",
            {
                let last = |c: &Instance| c.lines.lock().unwrap().last().cloned();
                children.iter().map(last).collect::<Vec<_>>()
            }
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // This process is an instance without a tier: it waits for the
    // children all the same.
    let cache = topology.builder(urls).prefix(PREFIX).build().await.unwrap();
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
    let (mut recovered, mut marked) = (Vec::new(), None);
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
                "slow" => delay.as_ref().unwrap().set(Duration::from_millis(400)),
                "fast" => delay.as_ref().unwrap().set(Duration::from_millis(10)),
                "mark" if !topology.is_ready() => {
                    steps.push((t + Duration::from_millis(10), "mark"));
                    break;
                }
                "mark" => {
                    recovered = children.iter().map(Instance::local_hits).collect();
                    marked = Some(t);
                }
                other => unreachable!("{other}"),
            }
        }
        let end = marked.map(|m| RUN.max(m + RUN - RECOVERED_FROM));
        if end.is_some_and(|end| t >= end) && pending.is_none() {
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
    let delayed_connections = delay.map_or(0, |d| {
        d.proxies.iter().map(DelayProxy::delayed_connections).sum()
    });
    let outcome = Outcome {
        children,
        recovered,
        latencies,
        failed_attempts,
        delayed_connections,
    };
    let mut sorted = outcome.latencies.clone();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q) as usize)
            .copied()
    };
    let on = match topology {
        Topology::Single(_) => "single",
        Topology::Cluster(_) => "cluster",
    };
    eprintln!(
        "{on}, {fault:?} (through the channel: {through_channel}): {} invalidations, p50 {:?}, p99 {:?}, max {:?}, {} failed attempts, {} delayed connections",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        outcome.failed_attempts,
        outcome.delayed_connections
    );
    for (k, c) in outcome.children.iter().enumerate() {
        eprintln!(
            "  child {k}: {} reads, {} local, {} stale, {} writes (max {:?})",
            c.reads, c.local, c.stale, c.writes, c.wmax
        );
    }
    outcome
}
