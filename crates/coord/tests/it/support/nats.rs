//! Real `nats-server` processes for the shared-log tests: a single node or
//! a 3-node JetStream cluster on free loopback ports, each with its own
//! store directory, stopped (only they) when dropped.
//!
//! The binary is the modern server (≥ 2.10) named by `COORD_NATS_SERVER`,
//! else the one `scripts/test` installs in `coord-nats-venv` under the cache
//! directory. Without one the tests fail and say how to get it.

use std::io::{Read, Write};
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

/// A free loopback port for a server a test starts.
///
/// Not the kernel's pick (bind to port 0): that comes from the ephemeral
/// range, which outgoing connections (route dials, clients) draw from
/// too, so between our pick and the server's bind another socket could
/// take it and the server would not start. These come from below that
/// range (20000–32767 when it starts at 32768, as by default), each
/// handed out once per test process, starting at an offset from the pid
/// so that concurrent test processes seldom meet; one that is bound
/// already is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-32767");
}

/// One nats-server process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub cluster_port: Option<u16>,
    pub routes: Vec<u16>,
    /// The HTTP monitoring port (`/jsz`).
    pub monitor_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let mut c = Command::new(server_bin());
        c.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(&self.dir)
            .args(["--server_name", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file());
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
        // Held by the node from here, so a panic below still ends it (Drop).
        self.child = Some(c.spawn().expect("start nats-server"));
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "nats-server {} exited at start ({status}): {}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the server's stderr goes (appended across restarts), beside
    /// its store directory.
    fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    fn log_file(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    /// The server's log so far (its last 2,000 bytes).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let cut = text.len().saturating_sub(2_000);
        let cut = (cut..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[cut..].to_string()
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
                monitor_port: free_port(),
                dir: dir.path().join(format!("n{}", i + 1)),
                child: None,
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        Nats { nodes, _dir: dir }
    }

    /// The index of the running node that hosts the most consumers of
    /// `log`'s stream (the daemons' log followers: R1, each on one node),
    /// read from every node's `/jsz`.
    pub fn node_with_most_consumers(&self, log: &str) -> usize {
        let stream = format!("COORD_{log}");
        let count = |n: &Node| -> usize {
            if n.child.is_none() {
                return 0;
            }
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", n.monitor_port)) else {
                return 0;
            };
            let _ = c.write_all(b"GET /jsz?consumers=true HTTP/1.0\r\n\r\n");
            let mut text = String::new();
            let _ = c.read_to_string(&mut text);
            let Some((_, body)) = text.split_once("\r\n\r\n") else {
                return 0;
            };
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            v["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .filter(|s| s["name"] == stream.as_str())
                .map(|s| s["consumer_detail"].as_array().map_or(0, |c| c.len()))
                .sum()
        };
        (0..self.nodes.len())
            .max_by_key(|i| count(&self.nodes[*i]))
            .unwrap_or(0)
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
