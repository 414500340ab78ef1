//! [`DaemonProcess`]: a real `coord daemon` on a store and a socket in a
//! fresh temporary directory, started and waited for, signalled, and
//! stopped when dropped. The one start-up harness of the workspace: the
//! integration tests (`crates/coord/tests/it`) and the benchmarks
//! (`coord-bench`) both start their daemons here.
//!
//! It speaks no protocol beyond asking `GET /v1/status` whether the
//! daemon answers; callers bring their own clients.
#![deny(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a daemon to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A daemon process and its files.
pub struct DaemonProcess {
    /// The temporary directory holding the socket directory, the store
    /// (unless placed elsewhere) and the log.
    pub dir: tempfile::TempDir,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The daemon's store.
    pub store: PathBuf,
    /// Flags after `coord daemon --store … --socket …`.
    pub extra: Vec<String>,
    bin: PathBuf,
    log_level: String,
    child: Option<Child>,
}

impl DaemonProcess {
    /// A daemon of `bin` in a new temporary directory under `/tmp` (short
    /// paths: a socket path holds at most 107 bytes), with its store at
    /// `store` when given; not started yet.
    ///
    /// # Errors
    /// The temporary directory cannot be made.
    pub fn new(bin: &Path, store: Option<PathBuf>, extra: &[&str]) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cd").tempdir_in("/tmp")?;
        Ok(DaemonProcess {
            socket: dir.path().join("s").join("coord.sock"),
            store: store.unwrap_or_else(|| dir.path().join("coord.db")),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bin: bin.to_path_buf(),
            log_level: std::env::var("COORD_TEST_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            child: None,
        })
    }

    /// The `COORD_LOG` filter of the daemon (default `info`).
    pub fn with_log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// Where the daemon's stderr goes (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// (Re)starts the process on the same store and socket and waits until
    /// it answers `GET /v1/status`; returns how long that took.
    ///
    /// # Errors
    /// It could not be spawned, exited during start-up, or did not answer
    /// within a minute; the message carries its log.
    pub fn start(&mut self) -> Result<Duration, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("daemon log: {e}"))?;
        let t0 = Instant::now();
        let child = Command::new(&self.bin)
            .arg("daemon")
            .arg("--store")
            .arg(&self.store)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.extra)
            .env("COORD_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        loop {
            if status_ok(&self.socket) {
                return Ok(t0.elapsed());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "daemon exited at start with {status}: {}",
                        self.log()
                    ));
                }
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!("daemon did not answer: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop(&mut self, signal: i32) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill with our own child's pid (not yet reaped).
        unsafe { libc::kill(c.id() as i32, signal) };
        c.wait().ok()
    }

    /// Forgets the process without signalling it (it was stopped some
    /// other way).
    pub fn forget(&mut self) {
        self.child.take();
    }
}

impl Drop for DaemonProcess {
    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill with our own child's pid (not yet reaped).
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// True when a daemon answers `GET /v1/status` with 200 on `socket`.
pub fn status_ok(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: coord\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}
