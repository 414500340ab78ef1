//! Real `nats-server` processes for the shared-log tests: a single node or
//! a 3-node JetStream cluster on free loopback ports, each with its own
//! store directory, stopped (only they) when dropped.
//!
//! The binary is the modern server (≥ 2.10) named by `COORD_NATS_SERVER`,
//! else the one `scripts/test` installs in `coord-nats-venv` under the cache
//! directory. Without one the tests fail and say how to get it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COORD_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let p = cache
        .join("coord-nats-venv")
        .join("bin")
        .join("nats-server");
    assert!(
        p.exists(),
        "no nats-server >= 2.10: run scripts/test (it installs one) or set COORD_NATS_SERVER"
    );
    p
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One nats-server process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub cluster_port: Option<u16>,
    pub routes: Vec<u16>,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let mut c = Command::new(server_bin());
        c.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(&self.dir)
            .args(["--server_name", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cp) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            c.args(["--cluster_name", "coordtest"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cp}")])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(c.spawn().expect("start nats-server"));
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the node with `signal` and reaps it.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with our own child's pid (not yet reaped).
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One server or a cluster, and its store directories.
pub struct Nats {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// A single JetStream node.
    pub fn single() -> Nats {
        Nats::start(1)
    }

    /// A 3-node JetStream cluster (R3 streams possible).
    pub fn cluster() -> Nats {
        Nats::start(3)
    }

    fn start(n: usize) -> Nats {
        let dir = tempfile::Builder::new()
            .prefix("nats")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let cports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                port: free_port(),
                cluster_port: (n > 1).then(|| cports[i]),
                routes: cports.iter().copied().filter(|p| *p != cports[i]).collect(),
                dir: dir.path().join(format!("n{}", i + 1)),
                child: None,
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        Nats { nodes, _dir: dir }
    }

    /// `nats://host:port[,…]/log` for `--store`.
    pub fn url(&self, log: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("nats://{}/{log}", hosts.join(","))
    }
}
