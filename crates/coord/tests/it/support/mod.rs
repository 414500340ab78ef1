//! Test support: a real `coord daemon` process on a socket in a temp dir,
//! the real CLI, and a raw HTTP/1.1 client for requests the typed client
//! would never send. Everything is torn down on `Drop`.
#![allow(dead_code)]

pub mod nats;
pub use nats::free_port;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `coord` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_coord")
}

/// A `coord` command that never auto-starts a daemon: a test that wants
/// no daemon gets none (the auto-start tests clear the variable).
pub fn coord_cmd() -> Command {
    let mut c = Command::new(bin());
    c.env("COORD_NO_AUTOSTART", "1");
    c
}

/// A daemon process and its files: the workspace's one harness
/// (`coord_testkit::DaemonProcess`), with panics instead of errors. Its
/// fields (`dir`, `socket`, `store`) are the process's.
pub struct Daemon {
    p: coord_testkit::DaemonProcess,
}

impl std::ops::Deref for Daemon {
    type Target = coord_testkit::DaemonProcess;
    fn deref(&self) -> &Self::Target {
        &self.p
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.p
    }
}

impl Daemon {
    /// Starts a daemon in a fresh temp dir and waits until it answers.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_with_store(None, extra)
    }

    /// Like [`Daemon::start`], with the store at `store` (elsewhere than
    /// the temp dir) when given.
    ///
    /// With `COORD_TEST_NATS_URL=nats://host:port` set (the backend matrix
    /// of scripts/test), a daemon without an explicit store gets a fresh
    /// JetStream log of its own on that server instead of a SQLite file.
    pub fn start_with_store(store: Option<PathBuf>, extra: &[&str]) -> Daemon {
        let store = store.or_else(matrix_store);
        let p = coord_testkit::DaemonProcess::new(Path::new(bin()), store, extra).expect("tempdir");
        let mut d = Daemon { p };
        d.restart();
        d
    }

    /// (Re)starts the daemon process on the same store and socket.
    pub fn restart(&mut self) {
        if let Err(e) = self.p.start() {
            panic!("{e}");
        }
    }

    /// SIGKILLs the daemon (no shutdown at all) and reaps it.
    pub fn kill9(&mut self) {
        self.p.stop(libc::SIGKILL);
    }

    /// SIGTERMs the daemon and waits for it to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.p.stop(libc::SIGTERM).expect("daemon running")
    }

    /// Runs the CLI against this daemon.
    pub fn coord(&self, args: &[&str]) -> Output {
        self.coord_env(args, &[])
    }

    /// Runs the CLI with extra environment.
    pub fn coord_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = coord_cmd();
        c.args(args)
            .env("COORD_SOCKET", &self.socket)
            .env_remove("COORD_SESSION")
            .env_remove("COORD_SESSION_TOKEN")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run coord")
    }

    /// Runs the CLI and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.coord(args);
        assert!(
            out.status.success(),
            "coord {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a session through the CLI; returns its token.
    pub fn register(&self, id: &str) -> String {
        let out = self.ok(&["--json", "session", "register", "--id", id]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["token"].as_str().expect("token").to_string()
    }

    /// `POST /v1/events/batch` with an NDJSON `body`.
    pub fn batch(&self, body: &str) -> Resp {
        self.http(
            "POST",
            "/v1/events/batch",
            &[("Content-Type", "application/x-ndjson")],
            Some(body.as_bytes()),
        )
    }

    /// A raw HTTP request; panics if the daemon cannot be reached.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.try_http(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// A raw HTTP request.
    pub fn try_http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        raw_http(&self.socket, method, path, headers, body)
    }

    /// The head seq from `/v1/status`.
    pub fn head(&self) -> u64 {
        self.http("GET", "/v1/status", &[], None).json()["head_seq"]
            .as_u64()
            .expect("head_seq")
    }

    /// Every event in the log, as JSON lines, via the CLI.
    pub fn all_events(&self) -> Vec<serde_json::Value> {
        self.ok(&[
            "events",
            "--since",
            "start",
            "--no-follow",
            "--format",
            "json",
        ])
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test shows what its daemon said last.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- daemon log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // The process itself is stopped by coord_testkit (SIGTERM, then
        // SIGKILL after a grace).
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    /// The error code of a JSON error body ("" for any other body).
    pub fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
pub fn raw_http(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or(b"");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: coord\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // A body the daemon refuses part-way may be cut off: that is fine.
    let _ = s.write_all(body);
    let mut r = BufReader::new(s);
    read_response(&mut r)
}

/// A raw connection to the daemon's socket (reads time out after 30 s,
/// a ceiling for a loaded machine) and a buffered reader of it, for tests
/// that write HTTP themselves.
pub fn connect(d: &Daemon) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

/// Reads one HTTP/1.1 answer from `r`: its body by `Content-Length`, by
/// chunks, or (neither) to the end of the connection.
pub fn read_response(r: &mut BufReader<UnixStream>) -> std::io::Result<Resp> {
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut hdrs = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            hdrs.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = hdrs
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let length = hdrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                // The last chunk's CRLF (no trailers are sent).
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body = vec![0; n];
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers: hdrs,
        body,
    })
}

/// A JSON POST with an optional bearer token.
pub fn post(d: &Daemon, path: &str, token: Option<&str>, body: &serde_json::Value) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    d.http("POST", path, &headers, Some(body.to_string().as_bytes()))
}

/// A process that follows the events stream (`coord events … --format json`)
/// and collects its lines on a thread.
pub struct Follower {
    pub child: Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// What it wrote on stderr (also echoed to the test's stderr).
    pub errors: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    err_reader: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    pub fn start(d: &Daemon, args: &[&str]) -> Follower {
        let mut child = coord_cmd()
            .arg("events")
            .args(["--format", "json"])
            .args(args)
            .env("COORD_SOCKET", &d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn follower");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let e2 = errors.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                match line {
                    Ok(l) => {
                        eprintln!("[follower] {l}");
                        let mut e = e2.lock().expect("lock");
                        e.push_str(&l);
                        e.push('\n');
                    }
                    Err(_) => break,
                }
            }
        });
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => l2.lock().expect("lock").push(l),
                    Err(_) => break,
                }
            }
        });
        Follower {
            child,
            lines,
            errors,
            reader: Some(reader),
            err_reader: Some(err_reader),
        }
    }

    /// Waits for the follower to exit on its own; its status and stderr.
    pub fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let st = self.child.wait().expect("follower");
        if let Some(r) = self.err_reader.take() {
            let _ = r.join();
        }
        (st, self.errors.lock().expect("lock").clone())
    }

    /// Waits until stderr contains `text` (or panics after `within`).
    pub fn wait_for_stderr(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let e = self.errors.lock().expect("lock").clone();
            if e.contains(text) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {text:?} on stderr: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a line with `seq >= head` arrived (or panics after `within`).
    pub fn wait_for_seq(&self, head: u64, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines.lock().expect("lock").clone();
            let last = lines
                .last()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| v["seq"].as_u64())
                .unwrap_or(0);
            if last >= head {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "follower reached seq {last}, wanted {head}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines.lock().expect("lock").clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Folds events (as JSON) with the real state machine.
pub fn fold(events: &[serde_json::Value]) -> coord_core::State {
    let mut s = coord_core::State::default();
    for e in events {
        let e = coord_proto::Event::from_json(&e.to_string()).expect("decode event");
        coord_core::apply(&mut s, &e);
    }
    s
}

/// Asserts seqs are exactly `from..=to` in order.
pub fn assert_gap_free(events: &[serde_json::Value], from: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(from + i as u64),
            "gap or disorder at index {i}: {e}"
        );
    }
}

impl Follower {
    /// Waits for the first line (the snapshot of a `--snapshot` stream).
    pub fn wait_for_snapshot(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.lines.lock().expect("lock").first() {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no snapshot line");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A `coord events` process whose stdout nobody reads until asked.
pub struct Unread {
    child: Child,
}

impl Follower {
    /// Starts `coord events --format json ARGS` and leaves its pipe unread.
    pub fn start_unread(d: &Daemon, args: &[&str]) -> Unread {
        let child = coord_cmd()
            .arg("events")
            .args(["--format", "json"])
            .args(args)
            .env("COORD_SOCKET", &d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn subscriber");
        Unread { child }
    }
}

impl Unread {
    /// Reads lines until one has `seq >= head`; returns them all.
    pub fn drain_until(mut self, head: u64, within: Duration) -> Vec<String> {
        let out = self.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                let seq = serde_json::from_str::<serde_json::Value>(&l)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(0);
                lines.push(l);
                if seq >= head {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let lines = rx
            .recv_timeout(within)
            .expect("subscriber caught up in time");
        let _ = self.child.kill();
        let _ = self.child.wait();
        lines
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts a daemon in the temp dir of a stopped one, with other flags.
    pub fn start_in(mut old: Daemon, extra: &[&str]) -> Daemon {
        old.p.forget();
        old.p.extra = extra.iter().map(|s| s.to_string()).collect();
        old.restart();
        old
    }
}

/// A fresh log on the matrix's NATS server, when the matrix asks.
fn matrix_store() -> Option<PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let url = std::env::var("COORD_TEST_NATS_URL").ok()?;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(PathBuf::from(format!(
        "{}/t{}_{}_{n}",
        url.trim_end_matches('/'),
        std::process::id(),
        ulid_like()
    )))
}

/// A short unique suffix (time in µs), so logs of reruns never meet.
fn ulid_like() -> String {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{us:x}")
}

/// True when the tests run against the NATS backend (the matrix).
pub fn on_nats() -> bool {
    std::env::var_os("COORD_TEST_NATS_URL").is_some()
}

/// A process's resident set, KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `f` every 25 ms until it holds; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Tests that load both cores for long (100k events) and tests that depend
/// on scheduling keeping up with a writer's tick (the parity soak) do not
/// run at the same time: held for their whole run.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Our own tmux server: killed (only it) when dropped.
pub struct Tmux(pub String);

impl Tmux {
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux must be installed (.ci/run installs it)")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A test that cannot run here: fails, naming why, unless
/// `COORD_SKIP_ROOT_TESTS=1` allows skipping; a skip is recorded in
/// `<target>/tmp/skipped-tests.txt`, which `.ci/run` counts and lists, so a
/// skip is never silent.
pub fn skip(test: &str, why: &str) {
    if std::env::var("COORD_SKIP_ROOT_TESTS").as_deref() != Ok("1") {
        panic!("{test}: {why}; run as root, or set COORD_SKIP_ROOT_TESTS=1 to skip it knowingly");
    }
    let list = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = writeln!(f, "{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// A child process that is SIGKILLed and reaped when dropped, so a test
/// that fails half-way leaves nothing running behind it.
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// True while `pid` exists and is not a zombie (an orphan's zombie may
/// linger when nothing reaps it; it no longer acts).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A command's stdout as JSON; panics with both streams when it is not.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The `session.dereg` of `id`, once it is in the log (waits up to 20 s).
pub fn dereg_of(d: &Daemon, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("{id} ended"), Duration::from_secs(20), || {
        found = d
            .all_events()
            .into_iter()
            .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == id);
        found.is_some()
    });
    found.expect("dereg")
}
