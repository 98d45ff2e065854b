//! Test support: real `redis-server` processes on free loopback ports, a
//! real PostgreSQL ([`PostgresServer`], in `postgres.rs`) and a delaying
//! TCP proxy ([`DelayProxy`], in `proxy.rs`).
//!
//! Every test that needs Redis starts its own server with [`RedisServer::start`]
//! and the server is stopped (by pid) when the handle drops. Nothing here touches
//! the Redis that may run on the default port 6379.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] panics with an
//! install hint: a test that needs Redis never skips silently.

mod postgres;
mod proxy;

pub use postgres::PostgresServer;
pub use proxy::DelayProxy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "redis-server was not found on PATH. The tests need a real Redis: \
install it with `apt-get update && apt-get install -y redis-server` (Debian/Ubuntu) or \
`brew install redis` (macOS), or set CACHEABLE_REDIS_SERVER to the binary's path";

/// The `redis-server` binary to run: `$CACHEABLE_REDIS_SERVER`, else `redis-server` on PATH.
fn server_binary() -> PathBuf {
    std::env::var_os("CACHEABLE_REDIS_SERVER")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// A free TCP port on 127.0.0.1, as the kernel hands it out.
///
/// # Panics
/// If no loopback port can be bound.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh, uniquely named directory.
    ///
    /// # Panics
    /// If the directory cannot be created.
    pub fn new(label: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "cacheable-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    dir: ScratchDir,
    tls: bool,
}

/// Certificates of a TLS test server, all PEM.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA that signed the server and client certificates.
    pub ca_cert: Vec<u8>,
    /// A client certificate signed by the CA (for mutual TLS).
    pub client_cert: Vec<u8>,
    /// The client certificate's key.
    pub client_key: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = match Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "openssl not found: the TLS tests make their certificates with it; install it with `apt-get install -y openssl`"
            )
        }
        Err(e) => panic!("could not run openssl: {e}"),
    };
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, written into `dir` (EC P-256 keys, valid one day).
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=cacheable-test-ca",
    ]);
    openssl(dir, &ca);
    // Extensions make both certificates X.509 v3, which rustls requires.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    for name in ["server", "client"] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let ext = format!("{name}.ext");
        let subj = format!("/CN=cacheable-test-{name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
        ];
        sign.extend(["-extfile", &ext]);
        openssl(dir, &sign);
    }
}

impl RedisServer {
    /// Starts a server with no persistence on a free loopback port.
    ///
    /// # Panics
    /// If `redis-server` is missing (with an install hint) or does not come up.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments (`["--requirepass", "pw"]`).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Self {
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::start_inner(extra, ScratchDir::new("redis"), false)
    }

    /// Starts a TLS-only server (no plain port) with fresh certificates.
    /// With `client_auth`, clients must present a certificate signed by the CA.
    ///
    /// # Panics
    /// As [`RedisServer::start`], or when `openssl` is missing (with a hint).
    pub fn start_tls(client_auth: bool) -> (Self, TlsMaterial) {
        let dir = ScratchDir::new("redis-tls");
        make_certificates(dir.path());
        let file = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let extra = vec![
            "--tls-cert-file".to_owned(),
            file("server.crt"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.crt"),
            "--tls-auth-clients".to_owned(),
            (if client_auth { "yes" } else { "no" }).to_owned(),
        ];
        let read = |n: &str| std::fs::read(dir.path().join(n)).expect("read certificate");
        let material = TlsMaterial {
            ca_cert: read("ca.crt"),
            client_cert: read("client.crt"),
            client_key: read("client.key"),
        };
        (Self::start_inner(extra, dir, true), material)
    }

    fn start_inner(extra: Vec<String>, dir: ScratchDir, tls: bool) -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            extra,
            dir,
            tls,
        };
        // The port can be taken between `free_port` and the bind: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start on any free port; see the logs in {}",
            server.dir.path().display()
        );
    }

    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join(format!("redis-{}.log", self.port));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(server_binary());
        if self.tls {
            cmd.args(["--port", "0", "--tls-port"]);
        } else {
            cmd.arg("--port");
        }
        cmd.arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some()
            {
                self.child = None;
                return false;
            }
            let ready = if self.tls {
                std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Ready to accept connections"))
            } else {
                ping(self.port)
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL by pid) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP by pid): connections stay open, nothing
    /// is answered until [`RedisServer::resume`].
    ///
    /// # Panics
    /// If the server does not run or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT by pid).
    ///
    /// # Panics
    /// If the server does not run or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("the server runs").to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Starts the server again on the same port after [`RedisServer::kill`].
    ///
    /// # Panics
    /// If it does not come up within a few seconds.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command over a fresh connection and returns the raw RESP reply.
    /// For tests that poke the server behind the cache's back.
    ///
    /// # Panics
    /// If the server cannot be reached.
    pub fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut stream =
            TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect to test redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        stream.write_all(&req).expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1 << 16];
        while reply_len(&buf).is_none() {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed before a whole reply");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf
    }
}

/// The length of the first complete RESP reply in `buf`, if it is complete.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&buf[1..line_end]).ok()?;
    match buf.first()? {
        b'+' | b'-' | b':' => Some(line_end + 2),
        b'$' => {
            let len: i64 = head.parse().ok()?;
            if len < 0 {
                return Some(line_end + 2);
            }
            let total = line_end + 2 + usize::try_from(len).ok()? + 2;
            (buf.len() >= total).then_some(total)
        }
        b'*' => {
            let count: i64 = head.parse().ok()?;
            let mut at = line_end + 2;
            for _ in 0..count.max(0) {
                at += reply_len(&buf[at..])?;
            }
            Some(at)
        }
        _ => Some(buf.len()),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    // A server that requires AUTH answers `-NOAUTH`: it is up all the same.
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// A Redis Cluster of real `redis-server` processes on loopback, created with
/// `redis-cli --cluster create`. Nodes stop when the handle drops.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing (with an install hint) or the
    /// cluster does not form.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let bus = free_port().to_string();
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                &bus,
                // Tests kill masters right after the cluster forms: let a
                // replica take over whatever its replication offset.
                "--cluster-replica-validity-factor",
                "0",
            ]));
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port()));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = match cmd.stdin(Stdio::null()).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli not found. {INSTALL_HINT}")
            }
            Err(e) => panic!("could not run redis-cli: {e}"),
        };
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster.wait_replicas_synced(Duration::from_secs(20));
        cluster
    }

    fn wait_replicas_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for n in &self.nodes {
            loop {
                let info =
                    String::from_utf8_lossy(&n.command(&[b"INFO", b"replication"])).into_owned();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica on port {} did not sync",
                    n.port()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every live node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether every live node reports `cluster_state:ok` now (a master
    /// restarted within `cluster-node-timeout` reports `fail` for about that
    /// long before it serves again).
    ///
    /// # Panics
    /// If a live node cannot be reached.
    pub fn is_ok(&self) -> bool {
        self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
            String::from_utf8_lossy(&n.command(&[b"CLUSTER", b"INFO"])).contains("cluster_state:ok")
        })
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The index of the node that is master for `key`'s slot.
    ///
    /// # Panics
    /// If no node answers.
    pub fn master_of(&self, key: &str) -> usize {
        // Any live node answers both (node 0 may be the one killed).
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        let reply = live.command(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()]);
        let slot: u16 = String::from_utf8_lossy(&reply[1..])
            .trim()
            .parse()
            .expect("KEYSLOT reply");
        let nodes = String::from_utf8_lossy(&live.command(&[b"CLUSTER", b"NODES"])).into_owned();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if owns {
                let port: u16 = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("node address");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("a node of this cluster");
            }
        }
        panic!("no master owns slot {slot}");
    }

    /// Kills node `index` (SIGKILL by pid).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Kills node `index` if it runs and starts it again on the same port,
    /// with its `nodes.conf` (same id and slots) and no data.
    ///
    /// # Panics
    /// As [`RedisServer::restart`].
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
    }

    /// Makes node `i` announce `ports[i]` as its client port (`CONFIG SET
    /// cluster-announce-port`; its bus port is kept), so that clients, which
    /// learn addresses from `CLUSTER SLOTS` and `CLUSTER NODES`, reach it
    /// there (a proxy in front of it), and waits until every node lists
    /// every announced port.
    ///
    /// # Panics
    /// If a node refuses, or the ports are not all listed within 10 s.
    pub fn announce_ports(&self, ports: &[u16]) {
        for (n, port) in self.nodes.iter().zip(ports) {
            let port = port.to_string();
            let reply = n.command(&[b"CONFIG", b"SET", b"cluster-announce-port", port.as_bytes()]);
            assert_eq!(reply, b"+OK\r\n", "{}", String::from_utf8_lossy(&reply));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &self.nodes {
            loop {
                let nodes =
                    String::from_utf8_lossy(&n.command(&[b"CLUSTER", b"NODES"])).into_owned();
                if ports.iter().all(|p| nodes.contains(&format!(":{p}@"))) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node on port {} does not list the announced ports: {nodes}",
                    n.port()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedisCluster;

    /// `master_of` answers with node 0 killed (it asked node 0 for the
    /// slot, and panicked on its dead reply).
    #[test]
    fn master_of_answers_with_node_0_killed() {
        let mut cluster = RedisCluster::start(3, 0);
        let owner = |c: &RedisCluster| (0..200).map(|i| c.master_of(&format!("k{i}"))).collect();
        let before: Vec<usize> = owner(&cluster);
        cluster.kill(0);
        let after: Vec<usize> = owner(&cluster);
        assert_eq!(before, after, "the slots did not move (no replica)");
        assert!(after.iter().any(|&n| n != 0) && after.contains(&0));
    }
}
