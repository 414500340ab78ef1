//! `coord-bench compare`: the same workloads against coord, NATS JetStream
//! and Redis Streams in one run, with the ratios between them.
//!
//! Every system goes through one code path ([`measure`]) over a
//! [`Target`]: an append, and a subscriber from "now" on a connection of
//! its own. So the workloads cannot drift apart:
//! - **ack**: one writer, `n` appends back to back (after 1,000 unmeasured
//!   ones), the time each takes to be acknowledged;
//! - **deliver**: one subscriber, `n / 4` appends about 1 ms apart, each
//!   carrying its send time; append-sent to subscriber-received;
//! - **throughput**: `writers` concurrent writers, each on its own
//!   connection, appending back to back for `seconds`;
//! - **fan-out** (with `--fanout N`): N subscribers, each on its own
//!   connection; one append per round, the time until the last of them
//!   has it.
//!
//! The clients: coord over HTTP/1.1 on its socket (`x.*` events, NDJSON
//! stream) through [`RawHttp`], a keep-alive exchange in the calling task
//! as peerbench does it (hyper's client, with its connection task, costs
//! the shared two cores about a third of coord's 16-writer figure);
//! JetStream with async-nats (file storage, publish with
//! ack, an ordered push consumer per subscriber), Redis with the redis
//! crate (`XADD`, `XREAD BLOCK`). A system that does not answer is left
//! out and said so. Nothing here asserts: it measures.
//!
//! With `--runs N` the whole comparison is run N times, the systems taking
//! turns within each run so the machine's drift falls on all of them
//! alike; each run prints its own table, and a closing summary gives every
//! ratio's median, its range and the runs in which coord was ahead
//! ([`Spread`]). On a shared 2-core VM one run's delivery p99 moves by a
//! third from run to run; the spread says whether a lead is one.

mod report;

use crate::{pct, Conn, Daemon};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use report::{line, print_summary, print_table};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Unmeasured appends before the ack figures.
const WARMUP: usize = 1000;
/// Longest wait for one delivery or one fan-out round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// What `coord-bench compare` was asked for: its options, plus the global
/// `--nats` and `--replicas`.
#[derive(clap::Args)]
pub struct Opts {
    /// Systems, in order: coord, jetstream, redis.
    #[arg(long, value_delimiter = ',', default_value = "coord,jetstream,redis")]
    pub systems: Vec<String>,
    /// Appends measured for ack latency (a quarter of it for delivery).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Concurrent writers for the throughput figure.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Also fan one event out to this many subscribers per round.
    #[arg(long)]
    pub fanout: Option<usize>,
    /// Fan-out rounds measured (after 2 unmeasured).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// coord's --sync (normal or full).
    #[arg(long, default_value = "normal")]
    pub sync: String,
    /// The JetStream server [default: --nats, else nats://127.0.0.1:4222].
    #[arg(long)]
    pub jetstream: Option<String>,
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Runs of the whole comparison (the systems take turns in each); with
    /// more than one, a closing summary of each ratio's median and range.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Replicas of the JetStream stream and of coord's log (`--replicas`).
    #[arg(skip)]
    pub replicas: usize,
    /// coord's log is on this NATS server instead of SQLite (`--nats`).
    #[arg(skip)]
    pub coord_nats: Option<String>,
}

impl Opts {
    /// The JetStream server to measure: `--jetstream`, else the first
    /// server of `--nats` (coord's overhead over its own stream), else the
    /// standard local port.
    fn jetstream_url(&self) -> String {
        self.jetstream
            .clone()
            .or_else(|| {
                self.coord_nats
                    .as_ref()
                    .map(|u| u.split(',').next().unwrap_or(u).to_string())
            })
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
    }
}

/// One system's figures: µs for ack and deliver, ms for fan-out.
#[derive(Default)]
struct Figures {
    ack: Vec<f64>,
    deliver: Vec<f64>,
    throughput: f64,
    fanout: Vec<f64>,
}

/// Where appends go and subscribers read, for one system.
enum Target {
    Coord {
        socket: PathBuf,
    },
    JetStream {
        url: String,
        stream: String,
    },
    Redis {
        client: redis::Client,
        prefix: String,
    },
}

/// A keep-alive HTTP/1.1 connection to coord driven from the calling task:
/// one request written, its answer read (status line, headers,
/// `Content-Length` body). Enough for `POST /v1/events`; not a client.
struct RawHttp {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    line: String,
}

impl RawHttp {
    async fn open(socket: &Path) -> Result<RawHttp> {
        let (r, w) = crate::connect(socket).await?.into_split();
        Ok(RawHttp {
            r: BufReader::new(r),
            w,
            line: String::new(),
        })
    }

    /// Sends one request; returns the status and the body.
    async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).await?;
        let (status, len) = self.head().await?;
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf).await?;
        Ok((status, buf))
    }

    /// Reads a status line and headers: the status and `Content-Length`.
    async fn head(&mut self) -> Result<(u16, usize)> {
        self.line.clear();
        if self.r.read_line(&mut self.line).await? == 0 {
            return Err(anyhow!("coord closed the connection"));
        }
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP status line: {:?}", self.line))?;
        let mut len = 0;
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 || self.line == "\r\n" {
                return Ok((status, len));
            }
            if let Some((name, value)) = self.line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse()?;
                }
            }
        }
    }
}

/// One writer's connection.
enum Appender {
    Coord(RawHttp, String),
    JetStream(async_nats::jetstream::Context, String),
    Redis(redis::aio::MultiplexedConnection, String),
}

impl Appender {
    /// Appends one event carrying `v`; returns once it is acknowledged.
    async fn append(&mut self, v: u64) -> Result<()> {
        match self {
            Appender::Coord(c, kind) => {
                let body = format!(r#"{{"tx_kind":"{kind}","payload":{{"v":{v}}}}}"#);
                let (status, b) = c.request("POST", "/v1/events", &body).await?;
                if status != 201 {
                    return Err(anyhow!(
                        "coord answered {status}: {}",
                        String::from_utf8_lossy(&b)
                    ));
                }
            }
            Appender::JetStream(js, subject) => {
                js.publish(subject.clone(), Bytes::from(v.to_string()))
                    .await?
                    .await?;
            }
            Appender::Redis(c, key) => {
                let _: String = redis::cmd("XADD")
                    .arg(&*key)
                    .arg("*")
                    .arg("v")
                    .arg(v)
                    .query_async(c)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Target {
    /// A writer on a connection of its own, appending to `channel`.
    async fn appender(&self, channel: &str) -> Result<Appender> {
        Ok(match self {
            Target::Coord { socket } => {
                Appender::Coord(RawHttp::open(socket).await?, format!("x.cmp.{channel}"))
            }
            Target::JetStream { url, stream } => {
                let nc = async_nats::connect(url.as_str()).await?;
                Appender::JetStream(
                    async_nats::jetstream::new(nc),
                    format!("{stream}.{channel}"),
                )
            }
            Target::Redis { client, prefix } => Appender::Redis(
                client.get_multiplexed_async_connection().await?,
                format!("{prefix}:{channel}"),
            ),
        })
    }

    /// Subscribes from "now" to `channel` on a connection of its own; every
    /// value received goes to `tx` with the instant it arrived. The reader
    /// ends when `tx`'s receiver is dropped.
    async fn subscribe(&self, channel: &str, tx: UnboundedSender<(u64, Instant)>) -> Result<()> {
        match self {
            Target::Coord { socket } => {
                let mut c = RawHttp::open(socket).await?;
                let path = format!("/v1/events?since=now&kinds=x.cmp.{channel}");
                let req = format!("GET {path} HTTP/1.1\r\nHost: coord\r\n\r\n");
                c.w.write_all(req.as_bytes()).await?;
                let (status, _) = c.head().await?;
                if status != 200 {
                    return Err(anyhow!("coord answered {status} to {path}"));
                }
                // Dropping the write half would shut the socket for
                // writing, which ends the stream: the reader keeps it.
                let RawHttp { mut r, w, .. } = c;
                tokio::spawn(async move {
                    let _keep = w;
                    // Chunked NDJSON: chunk sizes and their CRLFs are lines
                    // of their own, every event is one line.
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match r.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if !line.starts_with('{') {
                            continue;
                        }
                        let at = Instant::now();
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                            continue;
                        };
                        if let Some(v) = v["payload"]["v"].as_u64() {
                            if tx.send((v, at)).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            Target::JetStream { url, stream } => {
                use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy};
                let nc = async_nats::connect(url.as_str()).await?;
                let js = async_nats::jetstream::new(nc.clone());
                let s = js.get_stream(stream).await?;
                let consumer = s
                    .create_consumer(OrderedConfig {
                        deliver_subject: nc.new_inbox(),
                        filter_subject: format!("{stream}.{channel}"),
                        deliver_policy: DeliverPolicy::New,
                        ..Default::default()
                    })
                    .await?;
                let mut msgs = consumer.messages().await?;
                tokio::spawn(async move {
                    let _keep = nc;
                    while let Some(Ok(m)) = msgs.next().await {
                        let at = Instant::now();
                        let v = std::str::from_utf8(&m.payload)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok());
                        if let Some(v) = v {
                            if tx.send((v, at)).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            Target::Redis { client, prefix } => {
                let mut c = client.get_multiplexed_async_connection().await?;
                let key = format!("{prefix}:{channel}");
                tokio::spawn(async move {
                    let mut last = "$".to_string();
                    let opts = redis::streams::StreamReadOptions::default()
                        .block(1000)
                        .count(100);
                    loop {
                        let r: redis::RedisResult<redis::streams::StreamReadReply> =
                            redis::AsyncCommands::xread_options(&mut c, &[&key], &[&last], &opts)
                                .await;
                        let Ok(r) = r else { return };
                        let at = Instant::now();
                        for k in r.keys {
                            for id in k.ids {
                                last = id.id.clone();
                                let v: u64 = id.get("v").unwrap_or(0);
                                if tx.send((v, at)).is_err() {
                                    return;
                                }
                            }
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                });
            }
        }
        Ok(())
    }

    /// Waits until `n` subscribers are reading: coord counts them; the
    /// others are given time (their subscriptions are registered when the
    /// call returns, their first read a little later).
    async fn settle(&self, n: usize) -> Result<()> {
        match self {
            Target::Coord { socket } => {
                let mut c = Conn::open(socket).await?;
                let deadline = Instant::now() + ROUND_TIMEOUT;
                loop {
                    let (_, b) = c.get("/v1/status").await?;
                    let v: serde_json::Value = serde_json::from_slice(&b)?;
                    if v["subscribers"].as_u64().unwrap_or(0) >= n as u64 {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(anyhow!("coord never counted {n} subscribers (status: {v})"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(300 + n as u64 / 4)).await;
                Ok(())
            }
        }
    }
}

/// Runs the workloads on one system.
async fn measure(t: &Target, o: &Opts) -> Result<Figures> {
    let mut f = Figures::default();
    let mut w = t.appender("ack").await?;
    for i in 0..o.n + WARMUP {
        let t0 = Instant::now();
        w.append(0).await?;
        if i >= WARMUP {
            f.ack.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }

    let (tx, mut rx) = unbounded_channel();
    t.subscribe("deliver", tx).await?;
    t.settle(1).await?;
    let mut w = t.appender("deliver").await?;
    let base = Instant::now();
    let dn = (o.n / 4).max(1);
    for _ in 0..dn {
        w.append(base.elapsed().as_nanos() as u64 + 1).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while f.deliver.len() < dn {
        let (v, at) = tokio::time::timeout(ROUND_TIMEOUT, rx.recv())
            .await
            .context("a delivery never came")?
            .context("the subscriber ended")?;
        let sent = Duration::from_nanos(v - 1);
        f.deliver
            .push(at.duration_since(base).saturating_sub(sent).as_secs_f64() * 1e6);
    }
    drop(rx);

    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.writers {
        let mut w = t.appender("tput").await?;
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                w.append(0).await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let t0 = Instant::now();
    for task in tasks {
        task.await??;
    }
    f.throughput = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();

    if let Some(n) = o.fanout {
        let (tx, mut rx) = unbounded_channel();
        for _ in 0..n {
            t.subscribe("fan", tx.clone()).await?;
        }
        drop(tx);
        t.settle(n).await?;
        let mut w = t.appender("fan").await?;
        for r in 0..o.rounds + 2 {
            let t0 = Instant::now();
            w.append(r as u64 + 1).await?;
            let mut last = t0;
            let mut got = 0;
            while got < n {
                let (v, at) = tokio::time::timeout(ROUND_TIMEOUT, rx.recv())
                    .await
                    .context("a fan-out round never completed")?
                    .context("every subscriber ended")?;
                if v == r as u64 + 1 {
                    got += 1;
                    last = last.max(at);
                }
            }
            if r >= 2 {
                f.fanout.push(last.duration_since(t0).as_secs_f64() * 1e3);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for v in [&mut f.ack, &mut f.deliver, &mut f.fanout] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    Ok(f)
}

/// `coord-bench compare`: each system in turn, then one table and the
/// ratios of coord to each peer; `--runs` times, then the summary.
pub async fn compare(coord: &Path, o: Opts) -> Result<()> {
    // What a reader of the table needs to re-run it and to weigh it: the
    // command as given (the program by its name: a path says nothing
    // about the run) and the machine it ran on.
    let command: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| match Path::new(&a).file_name() {
            Some(name) if i == 0 => name.to_string_lossy().into_owned(),
            _ => a,
        })
        .collect();
    println!(
        "== {} | {} | {}",
        command.join(" "),
        machine(),
        coord_version(coord)
    );
    let mut runs = Vec::new();
    for i in 0..o.runs {
        if o.runs > 1 {
            println!("== run {} of {}", i + 1, o.runs);
        }
        let results = one_run(coord, &o).await?;
        print_table(&results, &o);
        runs.push(results);
    }
    if o.runs > 1 {
        print_summary(&runs, &o);
    }
    Ok(())
}

/// The machine in one phrase, read from `/proc`:
/// `2 CPUs (AMD EPYC), 23.4 GiB, Linux 6.18.0`. A part that cannot be read
/// is left out, never guessed.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / (1024.0 * 1024.0));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let mut parts = vec![match model {
        Some(m) => format!("{cpus} CPUs ({m})"),
        None => format!("{cpus} CPUs"),
    }];
    if let Some(g) = mem_gib {
        parts.push(format!("{g:.1} GiB"));
    }
    if !kernel.is_empty() {
        parts.push(format!("Linux {kernel}"));
    }
    parts.join(", ")
}

/// `coord 0.1.0`, as the daemon binary under test says it, with the
/// `COORD_THREADS` it inherits when one is set.
fn coord_version(coord: &Path) -> String {
    let version = std::process::Command::new(coord)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "coord (version unknown)".into());
    match std::env::var("COORD_THREADS") {
        Ok(t) => format!("{version}, COORD_THREADS={t}"),
        Err(_) => version,
    }
}

/// Every system once: its figures under its label, in `--systems` order.
async fn one_run(coord: &Path, o: &Opts) -> Result<Vec<(String, Figures)>> {
    let run = crate::now_ns();
    let mut results: Vec<(String, Figures)> = Vec::new();
    for system in &o.systems {
        let r = match system.as_str() {
            "coord" => {
                let sync = ["--sync", o.sync.as_str()];
                let mut extra = vec!["--max-connections", "20000"];
                extra.extend(sync);
                let d = Daemon::start(coord, &extra).await?;
                let label = match &o.coord_nats {
                    Some(_) => format!("coord (JetStream log, R{})", o.replicas),
                    None => format!("coord (SQLite, sync {})", o.sync),
                };
                let t = Target::Coord {
                    socket: d.socket.clone(),
                };
                measure(&t, o).await.map(|f| (label, f))
            }
            "jetstream" => jetstream(o, run).await,
            "redis" => redis_streams(o, run).await,
            other => Err(anyhow!(
                "unknown system {other:?} (coord, jetstream, redis)"
            )),
        };
        match r {
            Ok((label, f)) => {
                println!("{}", line(&label, &f, o));
                results.push((label, f));
            }
            Err(e) => println!("{system}: left out: {e:#}"),
        }
    }
    Ok(results)
}

async fn jetstream(o: &Opts, run: u64) -> Result<(String, Figures)> {
    use async_nats::jetstream::stream::{Config, StorageType};
    let url = o.jetstream_url();
    let nc = async_nats::connect(url.as_str())
        .await
        .with_context(|| format!("no NATS server answers at {url}"))?;
    let version = nc.server_info().version;
    let js = async_nats::jetstream::new(nc);
    let stream = format!("CBENCH_{run:x}");
    js.create_stream(Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        storage: StorageType::File,
        num_replicas: o.replicas,
        ..Default::default()
    })
    .await
    .context("cannot create a JetStream stream")?;
    let t = Target::JetStream {
        url,
        stream: stream.clone(),
    };
    let f = measure(&t, o).await;
    let _ = js.delete_stream(&stream).await;
    Ok((
        format!("NATS {version} JetStream (file, R{})", o.replicas),
        f?,
    ))
}

async fn redis_streams(o: &Opts, run: u64) -> Result<(String, Figures)> {
    let client = redis::Client::open(o.redis.as_str())?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("no Redis server answers at {}", o.redis))?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut c).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let prefix = format!("coord-bench:{run:x}");
    let t = Target::Redis {
        client: client.clone(),
        prefix: prefix.clone(),
    };
    let f = measure(&t, o).await;
    for ch in ["ack", "deliver", "tput", "fan"] {
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(format!("{prefix}:{ch}"))
            .query_async(&mut c)
            .await;
    }
    Ok((format!("Redis {version} Streams (in memory)"), f?))
}
