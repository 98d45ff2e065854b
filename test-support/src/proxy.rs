//! A TCP proxy on loopback that holds every byte for a set delay in each
//! direction: a slow network between a client and a server, for the tests
//! of "a network delay on the channel". Order and throughput are kept; only
//! latency is added. Stops (closing every connection) on drop.
//!
//! [`DelayProxy::only_from`] delays only the connections one process opens
//! (found through `/proc`, Linux only) and forwards the others at once: on
//! a Redis Cluster every client reaches a node at the address the node
//! announces, so a proxy announced in front of a node carries every
//! client's connections, and this is how one client alone is slowed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A delaying proxy to `127.0.0.1:<target port>`.
#[derive(Debug)]
pub struct DelayProxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    /// The process whose connections are delayed; 0: every connection.
    only: Arc<AtomicU32>,
    /// Connections accepted with the delay.
    delayed: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `target_port`, holding bytes for `delay` each way.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start(target_port: u16, delay: Duration) -> Self {
        let listener =
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Self {
            port: listener.local_addr().expect("addr").port(),
            delay_ms: Arc::new(AtomicU64::new(
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            )),
            only: Arc::new(AtomicU32::new(0)),
            delayed: Arc::new(AtomicU32::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
        };
        let (delay_ms, stop, streams) = (
            Arc::clone(&proxy.delay_ms),
            Arc::clone(&proxy.stop),
            Arc::clone(&proxy.streams),
        );
        let (only, delayed, own_port) = (
            Arc::clone(&proxy.only),
            Arc::clone(&proxy.delayed),
            proxy.port,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let pid = only.load(Ordering::SeqCst);
                let slow = Arc::new(AtomicBool::new(pid == 0));
                if pid == 0 {
                    delayed.fetch_add(1, Ordering::SeqCst);
                } else if let Ok(peer) = client.peer_addr() {
                    // Beside the forwarding: finding the connection's process
                    // reads `/proc/net/tcp`, tens of ms on a busy host, and no
                    // connection may wait for it (clients time their connects
                    // out and reconnect). A connection of `pid` is therefore
                    // undelayed for its first few ms.
                    let (slow, delayed) = (Arc::clone(&slow), Arc::clone(&delayed));
                    std::thread::spawn(move || {
                        if opened_by(pid, peer.port(), own_port) {
                            slow.store(true, Ordering::SeqCst);
                            delayed.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut s = streams.lock().unwrap_or_else(PoisonError::into_inner);
                    s.extend(client.try_clone().ok());
                    s.extend(server.try_clone().ok());
                }
                pump(&client, &server, &delay_ms, &slow);
                pump(&server, &client, &delay_ms, &slow);
            }
        });
        proxy
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for a Redis behind the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// From now on, delays only the connections that process `pid` opens
    /// (the socket is looked up in `/proc/net/tcp` and `/proc/<pid>/fd`, so
    /// Linux only; beside the forwarding, so such a connection is undelayed
    /// until it is found, tens of ms); the others are forwarded without a
    /// delay.
    pub fn only_from(&self, pid: u32) {
        self.only.store(pid, Ordering::SeqCst);
    }

    /// How many connections were accepted with the delay.
    pub fn delayed_connections(&self) -> u32 {
        self.delayed.load(Ordering::SeqCst)
    }

    /// Changes the delay of bytes read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

/// Whether the loopback connection from `peer_port` to `proxy_port` is a
/// socket of process `pid`: its inode in `/proc/net/tcp` (the row whose
/// local port is `peer_port` and remote port `proxy_port`) among the
/// sockets in `/proc/<pid>/fd`.
fn opened_by(pid: u32, peer_port: u16, proxy_port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let inode = table.lines().skip(1).find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        (f.len() > 9 && port_of(f[1]) == Some(peer_port) && port_of(f[2]) == Some(proxy_port))
            .then(|| f[9].to_owned())
    });
    let Some(inode) = inode else {
        return false;
    };
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str()))
    })
}

/// Copies `from` to `to`: a reader stamps each chunk, a writer sends it
/// once its delay has passed.
fn pump(from: &TcpStream, to: &TcpStream, delay_ms: &Arc<AtomicU64>, slow: &Arc<AtomicBool>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let (delay_ms, slow) = (Arc::clone(delay_ms), Arc::clone(slow));
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let ms = if slow.load(Ordering::SeqCst) {
                        delay_ms.load(Ordering::SeqCst)
                    } else {
                        0
                    };
                    let due = Instant::now() + Duration::from_millis(ms);
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
