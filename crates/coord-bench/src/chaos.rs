//! `coord-bench chaos`: a fault campaign the project keeps. A daemon is
//! SIGKILLed `--kills` times under mixed write load; after every kill
//! `coord verify` checks the store it left, then the daemon is started
//! again on it. Writers retry every write with its `tx_id` until it is
//! answered (exactly-once through idempotency), and record every
//! acknowledged write's seq.
//!
//! At the end it checks what the daemon promised: every acknowledged write
//! is in the log once, at the seq it was acknowledged with; no `tx_id`
//! appears twice; the view the daemon serves equals the fold of its log.
//! Short in CI (`--kills 3`), long by a flag. It drives the public API and
//! the CLI only.

use super::{Conn, Daemon};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `coord-bench chaos`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// SIGKILLs of the daemon.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Time under load between two kills, ms.
    #[arg(long, default_value_t = 700)]
    pub between_ms: u64,
    /// Concurrent writers (each a session with its own lock).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
}

/// Acknowledged writes: tx_id → the seq the daemon answered.
type Acked = Arc<Mutex<HashMap<String, u64>>>;

/// One write with a fresh tx_id, retried (same tx_id) through connection
/// failures and restarts until the daemon answers; the answer's status and
/// body.
async fn until_answered(
    socket: &Path,
    conn: &mut Option<Conn>,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            bail!("no answer to {path} for 120 s");
        }
        if conn.is_none() {
            *conn = Conn::open(socket).await.ok();
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.post_auth(path, token, body.to_string()).await {
            Ok((status, bytes)) if status < 500 => {
                let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                return Ok((status, v));
            }
            // 503 (stopping, store refused) or a cut connection: again.
            _ => {
                *conn = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn writer(
    socket: std::path::PathBuf,
    w: usize,
    token: String,
    stop: Arc<AtomicBool>,
    acked: Acked,
    answers: Arc<AtomicU64>,
) -> Result<()> {
    let sid = format!("chaos-{w}");
    let mut conn = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let tx = ulid::Ulid::new().to_string();
        let (path, body) = match i % 3 {
            0 => (
                "/v1/events",
                serde_json::json!({"tx_kind":"x.chaos","session_id":sid,"payload":{"w":w,"i":i},"tx_id":tx}),
            ),
            1 => (
                "/v1/locks/acquire",
                serde_json::json!({"session_id":sid,"resource":format!("chaos/{w}/**"),"tx_id":tx}),
            ),
            _ => (
                "/v1/locks/release",
                serde_json::json!({"session_id":sid,"resource":format!("chaos/{w}/**"),"tx_id":tx}),
            ),
        };
        let (status, v) = until_answered(&socket, &mut conn, path, &token, &body).await?;
        answers.fetch_add(1, Ordering::Relaxed);
        // An acquire of a lock it already holds answers the old grant's
        // seq and appends nothing.
        let appended = v["already_held"] != serde_json::Value::Bool(true);
        match (status, v["seq"].as_u64()) {
            (200 | 201, Some(seq)) if appended => {
                if let Ok(mut a) = acked.lock() {
                    a.insert(tx, seq);
                }
            }
            // An acquire of a lock it holds, a release of one it lost to a
            // restart race: answered, nothing appended.
            (200 | 201 | 409, _) => {}
            (s, _) => bail!("{path} answered {s}: {v}"),
        }
        i += 1;
    }
    Ok(())
}

/// Runs the campaign.
pub async fn chaos(coord: &Path, o: Opts) -> Result<()> {
    let mut d = Daemon::start(coord, &["--snapshot-every", "300"]).await?;
    let socket = d.socket.clone();
    let store = d.store.clone();
    let mut c = Conn::open(&socket).await?;
    let mut tokens = Vec::new();
    for w in 0..o.writers {
        let token = format!("chaos{w:02}{}", "t".repeat(40));
        let body = format!(r#"{{"session_id":"chaos-{w}","ttl_ms":86400000,"token":"{token}"}}"#);
        let (s, b) = c.post("/v1/sessions", body).await?;
        if s != 201 {
            bail!("register chaos-{w}: {s} {}", String::from_utf8_lossy(&b));
        }
        tokens.push(token);
    }
    drop(c);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let answers = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(w, t)| {
            tokio::spawn(writer(
                socket.clone(),
                w,
                t,
                stop.clone(),
                acked.clone(),
                answers.clone(),
            ))
        })
        .collect();
    let t0 = Instant::now();
    for k in 0..o.kills {
        tokio::time::sleep(Duration::from_millis(o.between_ms)).await;
        d.stop(libc::SIGKILL);
        let out = std::process::Command::new(coord)
            .args(["verify", "--store"])
            .arg(&store)
            .output()
            .context("running coord verify")?;
        if !out.status.success() {
            stop.store(true, Ordering::Relaxed);
            bail!(
                "after kill {}: coord verify failed: {}",
                k + 1,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        d.spawn().await?;
    }
    tokio::time::sleep(Duration::from_millis(o.between_ms)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = t0.elapsed();

    // The log as the daemon serves it, and its view.
    let mut c = Conn::open(&socket).await?;
    let (_, body) = c.get("/v1/events?since=0&follow=false").await?;
    let mut by_tx: HashMap<String, u64> = HashMap::new();
    let mut state = coord_core::State::default();
    let mut events = 0u64;
    for line in String::from_utf8_lossy(&body).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let e = coord_proto::Event::from_json(line).context("an event line")?;
        if by_tx.insert(e.tx_id.to_string(), e.seq).is_some() {
            bail!("tx_id {} appears twice in the log", e.tx_id);
        }
        coord_core::apply(&mut state, &e);
        events += 1;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    for (tx, seq) in &acked {
        match by_tx.get(tx) {
            Some(s) if s == seq => {}
            Some(s) => bail!("write {tx} was acknowledged at seq {seq} but is at {s}"),
            None => bail!("write {tx} was acknowledged at seq {seq} and is not in the log"),
        }
    }
    let (_, snap) = c.get("/v1/snapshot").await?;
    let served: serde_json::Value = serde_json::from_slice(&snap)?;
    let folded = serde_json::to_value(&state.view)?;
    if served["view"] != folded {
        bail!("the daemon's view differs from the fold of its log");
    }
    let out = std::process::Command::new(coord)
        .args(["verify", "--store"])
        .arg(&store)
        .output()?;
    if !out.status.success() {
        bail!(
            "at the end: coord verify failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "chaos: {} SIGKILLs in {:.1} s under {} writers; {} writes answered, {} acknowledged with a seq, {} events in the log; none lost, none twice, coord verify passed after every kill, view == fold",
        o.kills,
        elapsed.as_secs_f64(),
        o.writers,
        answers.load(Ordering::Relaxed),
        acked.len(),
        events
    );
    Ok(())
}
