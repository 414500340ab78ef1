//! `coord-bench`: measures a real `coord daemon` process over its socket.
//!
//! Each scenario starts its own daemon (the `coord` binary next to this one,
//! or `--coord PATH`) on a fresh store in a temp dir, drives it over
//! keep-alive HTTP connections, prints one result line, and stops it.
//! Figures go to `docs/BENCHMARKS.md` with the command that produced them.
//! This is a harness, not a test: it asserts nothing and never fails
//! because the machine is slow.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod chaos;
mod compare;
mod legacy;
mod locks;
mod shared;

#[derive(Parser)]
#[command(about = "Benchmarks a coord daemon")]
struct Args {
    /// The coord binary [default: the one next to this binary].
    #[arg(long, global = true)]
    coord: Option<PathBuf>,
    /// Put each daemon's log on this NATS JetStream server
    /// (nats://HOST:PORT[,HOST:PORT…], a fresh log name per run) instead
    /// of a SQLite file.
    #[arg(long, global = true)]
    nats: Option<String>,
    /// Replicas of the NATS log (with --nats).
    #[arg(long, global = true, default_value_t = 1)]
    replicas: usize,
    #[command(subcommand)]
    cmd: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Write-sent to subscriber-received latency at a fixed rate.
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Sustained write throughput with N concurrent writers.
    Throughput {
        #[arg(long, default_value_t = 1)]
        writers: usize,
        #[arg(long, default_value = "normal")]
        sync: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Time to fan one event out to N subscribers.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// How each subscriber reads its stream: `raw` reads the socket and
        /// counts lines (as a lean subscriber would); `hyper` runs a full
        /// HTTP client per subscriber (two tasks each, about 9 µs of the
        /// bench's CPU per subscriber per event).
        #[arg(long, default_value = "raw")]
        client: FanClient,
    },
    /// Daemon CPU while idle with N sessions registered.
    IdleCpu {
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Time from start to first answer with N events in the log.
    ColdStart {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Batch append (`POST /v1/events/batch`): one writer sending batches
    /// of N events back to back.
    Batch {
        #[arg(long, default_value_t = 1000)]
        size: usize,
        #[arg(long, default_value = "normal")]
        sync: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Give every line a tx_id (the idempotent bulk producer).
        #[arg(long)]
        idempotent: bool,
    },
    /// Daemons on one NATS log (needs --nats): throughput with the
    /// writers spread over them (with each write's p99 and the refusals),
    /// write-on-one to subscriber-on-another latency, lock hand-over
    /// between two of them, and the conflicts counted.
    Shared {
        #[arg(long, default_value_t = 16)]
        writers: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Events per second for the cross-daemon latency.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Lock hand-overs measured.
        #[arg(long, default_value_t = 200)]
        handovers: usize,
        /// Daemons on the log (1-3); the writers are spread over them.
        #[arg(long, default_value_t = 2)]
        daemons: usize,
    },
    /// The same workloads against coord, NATS JetStream and Redis Streams
    /// in one run (ack latency, delivery latency, N-writer throughput,
    /// optionally fan-out), then one table and coord's ratios to each.
    /// With --nats, coord's log is on that server and the JetStream run
    /// uses it too: coord's overhead over the raw stream.
    Compare(compare::Opts),
    /// What one heavy lock user costs others: a session with many patterns
    /// ending, acquires against long patterns, thousands of leases lapsing
    /// together; each with a probe writer's latency meanwhile.
    Locks(locks::Opts),
    /// SIGKILLs of a daemon under mixed write load, `coord verify` after
    /// each; then every acknowledged write is in the log once at its seq
    /// and the view equals the fold.
    Chaos(chaos::Opts),
    /// File-change-to-observation latency of a legacy-root reader (a
    /// `coord sentinel` on fs-poll or fs-watch, or a daemon bridging the
    /// root), with simulated peers heartbeating; then its CPU while idle.
    Legacy {
        /// fs-poll, fs-watch or bridge.
        #[arg(long)]
        source: String,
        #[arg(long, default_value_t = 20)]
        peers: usize,
        /// Seconds of activity (one heartbeat every 100 ms).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds with no change, for idle CPU.
        #[arg(long, default_value_t = 60)]
        idle: u64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    raise_nofile();
    let coord = match args.coord {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("binary dir")?
            .join("coord"),
    };
    if let Some(url) = &args.nats {
        // Daemon::start reads these (one place, every scenario).
        STORE
            .set((url.trim_end_matches('/').to_string(), args.replicas))
            .ok();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.cmd {
            Bench::Latency { rate, seconds } => latency(&coord, rate, seconds).await,
            Bench::Throughput {
                writers,
                sync,
                seconds,
            } => throughput(&coord, writers, &sync, seconds).await,
            Bench::Fanout {
                subscribers,
                rounds,
                client,
            } => fanout(&coord, subscribers, rounds, client).await,
            Bench::IdleCpu { sessions, seconds } => idle_cpu(&coord, sessions, seconds).await,
            Bench::ColdStart { events } => cold_start(&coord, events).await,
            Bench::Legacy {
                source,
                peers,
                seconds,
                idle,
            } => legacy::legacy(&coord, &source, peers, seconds, idle).await,
            Bench::Batch {
                size,
                sync,
                seconds,
                idempotent,
            } => batch(&coord, size, &sync, seconds, idempotent).await,
            Bench::Shared {
                writers,
                seconds,
                rate,
                handovers,
                daemons,
            } => shared::shared(&coord, writers, seconds, rate, handovers, daemons).await,
            Bench::Locks(o) => locks::locks(&coord, o).await,
            Bench::Chaos(o) => chaos::chaos(&coord, o).await,
            Bench::Compare(mut o) => {
                o.replicas = args.replicas;
                o.coord_nats = args.nats.clone();
                compare::compare(&coord, o).await
            }
        }
    })
}

/// Lifts the soft open-files limit to the hard one (10k subscribers).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct pointer.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A daemon under measurement: the workspace's harness
/// (`coord_testkit::DaemonProcess`), quiet (warnings only).
struct Daemon(coord_testkit::DaemonProcess);

impl std::ops::Deref for Daemon {
    type Target = coord_testkit::DaemonProcess;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// `--nats` and `--replicas`, when given.
static STORE: std::sync::OnceLock<(String, usize)> = std::sync::OnceLock::new();

/// A fresh log name on the `--nats` server.
fn fresh_nats_log() -> Option<(String, usize)> {
    let (url, replicas) = STORE.get()?;
    Some((format!("{url}/bench_{:x}", now_ns()), *replicas))
}

impl Daemon {
    async fn start(coord: &Path, extra: &[&str]) -> Result<Daemon> {
        Daemon::start_on(coord, fresh_nats_log(), extra).await
    }

    /// A daemon on `log` (a NATS log and its replicas) or on a fresh
    /// SQLite store.
    async fn start_on(
        coord: &Path,
        log: Option<(String, usize)>,
        extra: &[&str],
    ) -> Result<Daemon> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let store = log.map(|(url, replicas)| {
            args.extend(["--replicas".to_string(), replicas.to_string()]);
            PathBuf::from(url)
        });
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = coord_testkit::DaemonProcess::new(coord, store, &args)?.with_log_level("warn");
        p.start().map_err(anyhow::Error::msg)?;
        Ok(Daemon(p))
    }

    /// Starts the process again; returns the time until it first answered.
    async fn spawn(&mut self) -> Result<Duration> {
        let p = &mut self.0;
        tokio::task::block_in_place(|| p.start()).map_err(anyhow::Error::msg)
    }

    fn stop(&mut self, signal: i32) {
        self.0.stop(signal);
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(socket: &Path) -> Result<Conn> {
        let s = connect(socket).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "coord")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        Ok(self.sender.send_request(req).await?)
    }

    async fn post_auth(&mut self, path: &str, token: &str, body: String) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "coord")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))?;
        let r = self.sender.send_request(req).await?;
        let status = r.status().as_u16();
        Ok((status, r.into_body().collect().await?.to_bytes()))
    }

    async fn post(&mut self, path: &str, body: String) -> Result<(u16, Bytes)> {
        let r = self.send("POST", path, Bytes::from(body)).await?;
        let status = r.status().as_u16();
        Ok((status, r.into_body().collect().await?.to_bytes()))
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Bytes)> {
        let r = self.send("GET", path, Bytes::new()).await?;
        let status = r.status().as_u16();
        Ok((status, r.into_body().collect().await?.to_bytes()))
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Subscribes to the `x.lat` events on `socket` from now on and reads
/// them with [`latency_reader`]; the subscription is open when this
/// returns, so no event written after it is missed.
pub(crate) async fn subscribe_latency(
    socket: &Path,
    total: u64,
) -> Result<(Conn, tokio::task::JoinHandle<Vec<f64>>)> {
    let mut sub = Conn::open(socket).await?;
    let resp = sub
        .send("GET", "/v1/events?since=now&kinds=x.lat", Bytes::new())
        .await?;
    Ok((sub, latency_reader(resp.into_body(), total)))
}

/// Reads a subscriber's stream of `x.lat` events until `total` arrived
/// (or the stream ends): each one's latency from its `t_ns` payload to its
/// arrival, in ms.
pub(crate) fn latency_reader(
    mut body: hyper::body::Incoming,
    total: u64,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total as usize);
        let mut buf = Vec::new();
        while samples.len() < total as usize {
            let Some(Ok(frame)) = body.frame().await else {
                break;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let got = now_ns();
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                    if let Some(t) = v["payload"]["t_ns"].as_u64() {
                        samples.push(got.saturating_sub(t) as f64 / 1e6);
                    }
                }
            }
        }
        samples
    })
}

async fn latency(coord: &Path, rate: u64, seconds: u64) -> Result<()> {
    let d = Daemon::start(coord, &[]).await?;
    let total = rate * seconds;
    let (_sub, reader) = subscribe_latency(&d.socket, total).await?;
    let mut w = Conn::open(&d.socket).await?;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    for _ in 0..total {
        tick.tick().await;
        let body = format!(r#"{{"tx_kind":"x.lat","payload":{{"t_ns":{}}}}}"#, now_ns());
        w.post("/v1/events", body).await?;
    }
    let mut samples = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency write-sent→subscriber-received at {rate}/s for {seconds}s: n={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn throughput(coord: &Path, writers: usize, sync: &str, seconds: u64) -> Result<()> {
    let d = Daemon::start(coord, &["--sync", sync]).await?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = Conn::open(&d.socket).await?;
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = format!(r#"{{"tx_kind":"x.tp","payload":{{"w":{w},"i":{i}}}}}"#);
                match c.post("/v1/events", body).await {
                    Ok((201, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, b)) => eprintln!("write refused {s}: {}", String::from_utf8_lossy(&b)),
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        break;
                    }
                }
                i += 1;
            }
        }));
    }
    let t0 = Instant::now();
    let cpu_before = cpu_ticks(d.pid())?;
    let own_before = cpu_ticks(std::process::id())?;
    for t in tasks {
        t.await?;
    }
    let n = count.load(Ordering::Relaxed);
    let hz = ticks_per_second();
    let per_event = |ticks: u64| ticks as f64 / hz * 1e6 / n.max(1) as f64;
    let cpu_us = per_event(cpu_ticks(d.pid())? - cpu_before);
    // The writers share the machine with the daemon: what they cost bounds
    // the figure as much as the daemon does.
    let own_us = per_event(cpu_ticks(std::process::id())? - own_before);
    println!(
        "throughput writers={writers} sync={sync}: {n} events in {:.1}s = {:.0} events/s; CPU per event: daemon {cpu_us:.1} µs, bench (the writers) {own_us:.1} µs",
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How `coord-bench fanout`'s subscribers read.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FanClient {
    /// A raw socket read loop per subscriber, counting event lines.
    Raw,
    /// A hyper HTTP/1 client connection per subscriber.
    Hyper,
}

/// Counts events that arrived at the subscribers and wakes the round loop
/// once the round's target is reached (not on every arrival: waking it
/// 10,000 times a round would cost more than the reads).
struct Arrivals {
    received: AtomicUsize,
    target: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Arrivals {
    fn add(&self, lines: usize) {
        if lines == 0 {
            return;
        }
        let now = self.received.fetch_add(lines, Ordering::AcqRel) + lines;
        if now >= self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }
}

/// Opens one subscriber of `x.fan` events that reports to `arrivals`.
/// Connects to the daemon's socket, waiting out a full listen backlog:
/// a Unix socket refuses a connect with `EAGAIN` (not a wait) while the
/// daemon has more connections queued than the backlog holds, which
/// thousands of subscribers connecting back to back reach. Other errors,
/// and a backlog still full after 10 s, are returned.
pub(crate) async fn connect(socket: &Path) -> std::io::Result<tokio::net::UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            r => return r,
        }
    }
}

async fn fan_subscriber(socket: &Path, client: FanClient, arrivals: Arc<Arrivals>) -> Result<()> {
    const PATH: &str = "/v1/events?since=now&kinds=x.fan";
    match client {
        FanClient::Hyper => {
            let mut c = Conn::open(socket).await?;
            let resp = c.send("GET", PATH, Bytes::new()).await?;
            let mut body = resp.into_body();
            tokio::spawn(async move {
                let _keep = c;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        arrivals.add(data.iter().filter(|b| **b == b'\n').count());
                    }
                }
            });
        }
        FanClient::Raw => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = connect(socket).await?;
            s.write_all(format!("GET {PATH} HTTP/1.1\r\nHost: coord\r\n\r\n").as_bytes())
                .await?;
            tokio::spawn(async move {
                // Chunked NDJSON: every event line ends in "}\n", which
                // neither the response head nor a chunk frame contains. A
                // line split across two reads is counted by the second.
                let mut buf = vec![0u8; 4096];
                let mut last = 0u8;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut lines = usize::from(last == b'}' && buf[0] == b'\n');
                    lines += buf[..n].windows(2).filter(|w| *w == b"}\n").count();
                    last = buf[n - 1];
                    arrivals.add(lines);
                }
            });
        }
    }
    Ok(())
}

async fn fanout(coord: &Path, subscribers: usize, rounds: usize, client: FanClient) -> Result<()> {
    let d = Daemon::start(coord, &["--max-connections", "20000"]).await?;
    let arrivals = Arc::new(Arrivals {
        received: AtomicUsize::new(0),
        target: AtomicUsize::new(usize::MAX),
        done: tokio::sync::Notify::new(),
    });
    for _ in 0..subscribers {
        fan_subscriber(&d.socket, client, arrivals.clone()).await?;
    }
    // Every stream is open once the daemon counts it.
    let mut c = Conn::open(&d.socket).await?;
    loop {
        let (_, b) = c.get("/v1/status").await?;
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        if v["subscribers"].as_u64() == Some(subscribers as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::new();
    let cpu_before = cpu_ticks(d.pid())?;
    let own_before = cpu_ticks(std::process::id())?;
    for r in 0..rounds {
        let target = subscribers * (r + 1);
        arrivals.target.store(target, Ordering::Release);
        let t0 = Instant::now();
        c.post("/v1/events", r#"{"tx_kind":"x.fan"}"#.to_string())
            .await?;
        while arrivals.received.load(Ordering::Acquire) < target {
            let _ = tokio::time::timeout(Duration::from_millis(50), arrivals.done.notified()).await;
        }
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let hz = ticks_per_second();
    let per_event = |ticks: u64| ticks as f64 / hz * 1e3 / rounds as f64;
    let daemon_ms = per_event(cpu_ticks(d.pid())? - cpu_before);
    let own_ms = per_event(cpu_ticks(std::process::id())? - own_before);
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "fan-out to {subscribers} subscribers ({rounds} rounds, {client:?} client): p50={:.2} ms p99={:.2} ms max={:.2} ms; CPU per event: daemon {daemon_ms:.1} ms, bench (the subscribers) {own_ms:.1} ms",
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Resident set size of `pid`, KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn idle_cpu(coord: &Path, sessions: usize, seconds: u64) -> Result<()> {
    let d = Daemon::start(coord, &[]).await?;
    // Registered over 8 connections at once, each waiting for its answer:
    // how fast a fleet's sessions come up, and what they cost held.
    const CONNS: usize = 8;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..CONNS {
        let socket = d.socket.clone();
        tasks.spawn(async move {
            let mut c = Conn::open(&socket).await?;
            for i in (k..sessions).step_by(CONNS) {
                let (s, b) = c
                    .post(
                        "/v1/sessions",
                        format!(r#"{{"session_id":"idle-{i}","ttl_ms":86400000}}"#),
                    )
                    .await?;
                if s != 201 {
                    bail!("register: {s} {}", String::from_utf8_lossy(&b));
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "registered {sessions} sessions over {CONNS} connections in {took:.2} s: {:.0} registrations/s; daemon RSS {} KiB",
        sessions as f64 / took,
        rss_kib(d.pid()).unwrap_or(0)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hz = ticks_per_second();
    let before = cpu_ticks(d.pid())?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = (cpu_ticks(d.pid())? - before) as f64 / hz;
    println!(
        "idle CPU with {sessions} sessions over {seconds}s: {used:.3} s CPU = {:.4} % of one core",
        used / seconds as f64 * 100.0
    );
    Ok(())
}

async fn cold_start(coord: &Path, events: u64) -> Result<()> {
    let mut d = Daemon::start(coord, &[]).await?;
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for w in 0..16u64 {
        let mut c = Conn::open(&d.socket).await?;
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = written.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    break;
                }
                let body = format!(r#"{{"tx_kind":"x.fill","payload":{{"w":{w},"i":{i}}}}}"#);
                if c.post("/v1/events", body).await.is_err() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    eprintln!(
        "filled {events} events in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let size = std::fs::metadata(&d.store).map(|m| m.len()).unwrap_or(0);
    d.stop(libc::SIGTERM);
    let graceful = d.spawn().await?;
    d.stop(libc::SIGKILL);
    let after_kill = d.spawn().await?;
    println!(
        "cold start with {events} events ({} MiB store): after SIGTERM {:.0} ms, after SIGKILL {:.0} ms",
        size >> 20,
        graceful.as_secs_f64() * 1e3,
        after_kill.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Registers `id` on the daemon behind `c`; returns its token.
async fn register(c: &mut Conn, id: &str) -> Result<String> {
    let (s, b) = c
        .post(
            "/v1/sessions",
            format!(r#"{{"session_id":"{id}","ttl_ms":3600000}}"#),
        )
        .await?;
    if s != 201 {
        bail!("register {id}: {s} {}", String::from_utf8_lossy(&b));
    }
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    Ok(v["token"].as_str().context("token")?.to_string())
}

/// A counter from a daemon's `/v1/metrics` (0 when absent).
async fn metric(socket: &Path, name: &str) -> Result<f64> {
    let mut c = Conn::open(socket).await?;
    let (_, b) = c.get("/v1/metrics").await?;
    Ok(String::from_utf8_lossy(&b)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn batch(
    coord: &Path,
    size: usize,
    sync: &str,
    seconds: u64,
    idempotent: bool,
) -> Result<()> {
    let d = Daemon::start(coord, &["--sync", sync]).await?;
    let mut c = Conn::open(&d.socket).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let t0 = Instant::now();
    let (mut n, mut requests) = (0u64, 0u64);
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let mut body = String::with_capacity(size * 48);
        for i in 0..size {
            let tx = if idempotent {
                format!("\"tx_id\":\"{}\",", ulid::Ulid::new())
            } else {
                String::new()
            };
            body.push_str(&format!(
                "{{{tx}\"tx_kind\":\"x.bulk\",\"payload\":{{\"r\":{requests},\"i\":{i}}}}}\n"
            ));
        }
        let sent = Instant::now();
        let (s, b) = c.post("/v1/events/batch", body).await?;
        if s != 201 {
            bail!("batch refused {s}: {}", String::from_utf8_lossy(&b));
        }
        lat.push(sent.elapsed().as_secs_f64() * 1e3);
        n += size as u64;
        requests += 1;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "batch append size={size} sync={sync}{}: {n} events in {requests} requests, {:.1}s = {:.0} events/s; per request p50={:.2} ms p99={:.2} ms",
        if idempotent { " idempotent" } else { "" },
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    Ok(())
}
