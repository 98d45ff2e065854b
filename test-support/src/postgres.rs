//! A real PostgreSQL server for one test: `initdb` into a scratch directory,
//! then `postgres` on a free loopback port, stopped by pid on drop. Never
//! touches a server on the default port 5432.
//!
//! Postgres refuses to run as root: under root, `initdb` and `postgres`
//! run with the `postgres` user's uid and gid (`CommandExt::uid`, so the
//! child's pid is the postmaster's own), in a directory owned by that user.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ScratchDir, free_port};

const INSTALL_HINT: &str = "initdb/postgres were not found on PATH nor under \
/usr/lib/postgresql/*/bin. The Postgres tests need a real server: install it with \
`apt-get update && apt-get install -y postgresql` (Debian/Ubuntu)";

/// One `postgres` process owned by a test.
#[derive(Debug)]
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    dir: ScratchDir,
}

/// The directory holding `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    });
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

/// `Some((uid, gid))` of the `postgres` user when running as root.
fn run_as() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    let uid = id(&["-u", "postgres"]).unwrap_or_else(|| {
        panic!("running as root and there is no `postgres` user to run Postgres as. {INSTALL_HINT}")
    });
    Some((
        uid,
        id(&["-g", "postgres"]).expect("the postgres user's group"),
    ))
}

fn command(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

impl PostgresServer {
    /// Creates a cluster (`initdb`, trust authentication, user `postgres`)
    /// and starts it on a free loopback port.
    ///
    /// # Panics
    /// If Postgres is not installed (with an install hint) or does not come up.
    pub fn start() -> Self {
        let bin = bin_dir();
        let user = run_as();
        let dir = ScratchDir::new("postgres");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown scratch dir");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user, dir.path())
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap_or_else(|e| panic!("could not run initdb: {e}. {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(&bin, user, dir.path(), &data, port) {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!(
            "postgres did not start on any free port; see the logs in {}",
            dir.path().display()
        );
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The scratch directory (data directory `data/`, log `postgres-<port>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (immediate shutdown, SIGQUIT by pid; SIGKILL if it
    /// lingers) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn spawn(
    bin: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    data: &Path,
    port: u16,
) -> Option<Child> {
    let log_path = dir.join(format!("postgres-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("create postgres log");
    let mut child = command(&bin.join("postgres"), user, dir)
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=40",
        ])
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run postgres: {e}. {INSTALL_HINT}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return None;
        }
        if std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("database system is ready to accept connections"))
        {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
