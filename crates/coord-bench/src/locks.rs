//! `coord-bench locks`: what one heavy lock user costs everybody else.
//!
//! Three measurements, each against a fresh daemon, each with a probe
//! writer appending small `x.*` events back to back and recording every
//! write's latency, so the figure that matters — how long an unrelated
//! write waited — is read directly:
//!
//! 1. a session holding `--patterns` lock patterns ends (dereg);
//! 2. `--long` patterns of 250 bytes are held, then another session
//!    acquires and releases long patterns (acquire latency);
//! 3. `--expire` sessions registered together with a 10 s lease lapse
//!    together.
//!
//! It owns nothing the daemon uses; it only drives the public API.

use super::{pct, register, Conn, Daemon};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `coord-bench locks`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Patterns held by the session that ends.
    #[arg(long, default_value_t = 5000)]
    pub patterns: usize,
    /// Long (250-byte) patterns held while another session acquires.
    #[arg(long, default_value_t = 150)]
    pub long: usize,
    /// Sessions whose leases lapse at once.
    #[arg(long, default_value_t = 20_000)]
    pub expire: usize,
}

/// Appends `x.probe` events back to back until stopped; every write's
/// latency in µs, in order.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<f64>>>,
}

impl Probe {
    async fn start(socket: &Path) -> Result<Probe> {
        let mut c = Conn::open(socket).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (s, b) = c
                    .post("/v1/events", r#"{"tx_kind":"x.probe"}"#.to_string())
                    .await?;
                if s != 201 {
                    bail!("probe write: {s} {}", String::from_utf8_lossy(&b));
                }
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(lat)
        });
        Ok(Probe { stop, task })
    }

    /// Stops it; the latencies, sorted.
    async fn finish(self) -> Result<Vec<f64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut lat = self.task.await??;
        lat.sort_by(f64::total_cmp);
        Ok(lat)
    }
}

fn summary(lat: &[f64]) -> String {
    format!(
        "probe writes {}: p50 {:.0} µs, p99 {:.0} µs, max {:.1} ms",
        lat.len(),
        pct(lat, 0.50),
        pct(lat, 0.99),
        lat.last().copied().unwrap_or(0.0) / 1000.0
    )
}

async fn acquire(c: &mut Conn, token: &str, sid: &str, resource: &str) -> Result<()> {
    let body = serde_json::json!({"session_id": sid, "resource": resource}).to_string();
    let (s, b) = c.post_auth("/v1/locks/acquire", token, body).await?;
    if s != 200 {
        bail!("acquire {resource}: {s} {}", String::from_utf8_lossy(&b));
    }
    Ok(())
}

/// Runs the three measurements.
pub async fn locks(coord: &Path, o: Opts) -> Result<()> {
    session_end(coord, o.patterns).await?;
    long_patterns(coord, o.long).await?;
    mass_expiry(coord, o.expire).await?;
    Ok(())
}

async fn session_end(coord: &Path, n: usize) -> Result<()> {
    let d = Daemon::start(coord, &[]).await?;
    let mut c = Conn::open(&d.socket).await?;
    let token = register(&mut c, "big").await?;
    let t = Instant::now();
    for i in 0..n {
        acquire(&mut c, &token, "big", &format!("src/m{i}/**")).await?;
    }
    let took = t.elapsed();
    println!(
        "locks: {n} patterns acquired by one session in {:.2} s ({:.0} µs each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64
    );
    let probe = Probe::start(&d.socket).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let (s, b) = c
        .post_auth("/v1/sessions/big/dereg", &token, "{}".into())
        .await?;
    let took = t.elapsed();
    if s != 200 {
        bail!("dereg: {s} {}", String::from_utf8_lossy(&b));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lat = probe.finish().await?;
    println!(
        "locks: session with {n} patterns ended in {:.1} ms; meanwhile {}",
        took.as_secs_f64() * 1e3,
        summary(&lat)
    );
    Ok(())
}

async fn long_patterns(coord: &Path, n: usize) -> Result<()> {
    let d = Daemon::start(coord, &[]).await?;
    let mut c = Conn::open(&d.socket).await?;
    let holder = register(&mut c, "holder").await?;
    let other = register(&mut c, "other").await?;
    // 250 bytes each, wildcards inside, all sharing their literal ends:
    // the worst case for the index, so every check is a full comparison.
    let long = |tag: &str, i: usize| format!("{}*{tag}{i:05}*{}", "a".repeat(120), "z".repeat(120));
    for i in 0..n {
        acquire(&mut c, &holder, "holder", &long("h", i)).await?;
    }
    let mut lat = Vec::new();
    for i in 0..200 {
        let r = long("o", i);
        let t = Instant::now();
        let body = serde_json::json!({"session_id": "other", "resource": r}).to_string();
        let (s, _) = c.post_auth("/v1/locks/acquire", &other, body).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        // Every such pattern overlaps the held ones (`a…*…z` meets
        // `a…*…z`): a refusal after the full check is the expected answer.
        if s != 409 && s != 200 {
            bail!("long acquire answered {s}");
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "locks: {n} 250-byte patterns held; a conflicting 250-byte acquire: p50 {:.0} µs, p99 {:.0} µs",
        pct(&lat, 0.50),
        pct(&lat, 0.99)
    );
    Ok(())
}

/// Lease of the sessions that lapse together, ms: long enough that 16
/// parallel registrants finish well before the first one lapses.
const EXPIRY_TTL_MS: u64 = 10_000;

async fn mass_expiry(coord: &Path, n: usize) -> Result<()> {
    let d = Daemon::start(coord, &["--max-connections", "100"]).await?;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut c = Conn::open(&d.socket).await?;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let body = format!(r#"{{"session_id":"e{i}","ttl_ms":{EXPIRY_TTL_MS}}}"#);
                let (s, b) = c.post("/v1/sessions", body).await?;
                if s != 201 {
                    bail!("register e{i}: {s} {}", String::from_utf8_lossy(&b));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let registered = t.elapsed();
    let probe = Probe::start(&d.socket).await?;
    let mut c = Conn::open(&d.socket).await?;
    loop {
        let (_, b) = c.get("/v1/status").await?;
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        let live = v["sessions"].as_u64().context("status.sessions")?;
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = t.elapsed();
    let lat = probe.finish().await?;
    println!(
        "locks: {n} leases of {} s (registered within {:.1} s) lapsed; all gone {:.1} s after the first registration; meanwhile {}",
        EXPIRY_TTL_MS / 1000,
        registered.as_secs_f64(),
        gone.as_secs_f64(),
        summary(&lat)
    );
    Ok(())
}
