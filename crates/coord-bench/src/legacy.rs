//! `coord-bench legacy`: how fast the legacy bridge turns a directory of
//! session files into events.

use super::*;

pub(crate) fn write_session(root: &Path, i: usize, phase: &str) -> Result<()> {
    let id = format!("claude-pid-{}", 10_000 + i);
    let now = now_ns() / 1_000_000;
    let body = format!(
        r#"{{"session_id":"{id}","role":"worker","task":"TOD-{i}","blob":{{}},"phase":"{phase}","pid":{},"started_at":"2026-01-01T00:00:00.000Z","last_heartbeat":"{}"}}"#,
        10_000 + i,
        ms_to_rfc3339(now)
    );
    let dir = root.join("sessions");
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))?;
    Ok(())
}

pub(crate) fn ms_to_rfc3339(ms: u64) -> String {
    // Seconds and millis are enough to make every heartbeat distinct.
    let (s, m) = (ms / 1000, ms % 1000);
    format!("2026-01-01T00:{:02}:{:02}.{m:03}Z", (s / 60) % 60, s % 60)
}

/// Watches a jsonl sink (or the daemon's stream) for "is now pN" and
/// reports when each N arrived.
pub(crate) async fn legacy(
    coord: &Path,
    source: &str,
    peers: usize,
    seconds: u64,
    idle: u64,
) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("cl").tempdir_in("/tmp")?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sessions"))?;
    for i in 0..peers {
        write_session(&root, i, "start")?;
    }
    let sink = dir.path().join("obs.jsonl");
    let arrivals: Arc<std::sync::Mutex<std::collections::HashMap<u64, u64>>> = Arc::default();
    let (pid, _guard): (u32, Box<dyn std::any::Any>) = match source {
        "fs-poll" | "fs-watch" => {
            let child = Command::new(coord)
                .args(["sentinel", "--source", source, "--coord-root"])
                .arg(&root)
                .arg("--sink")
                .arg(format!("jsonl:{}", sink.display()))
                .env("COORD_LOG", "error")
                .spawn()?;
            let pid = child.id();
            struct Kill(Child);
            impl Drop for Kill {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            // Tail the sink every millisecond.
            let (arrivals, sink) = (arrivals.clone(), sink.clone());
            std::thread::spawn(move || {
                let mut seen = 0usize;
                loop {
                    if let Ok(text) = std::fs::read_to_string(&sink) {
                        let now = now_ns();
                        for line in text[seen.min(text.len())..].lines() {
                            if let Some(n) = line
                                .split("is now p")
                                .nth(1)
                                .and_then(|r| r.split('"').next())
                                .and_then(|n| n.parse().ok())
                            {
                                arrivals.lock().map(|mut a| a.insert(n, now)).ok();
                            }
                        }
                        seen = text.len();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            (pid, Box::new(Kill(child)))
        }
        "bridge" => {
            let root_s = root.to_str().unwrap_or("").to_string();
            let d =
                Daemon::start(coord, &["--legacy-root", &root_s, "--legacy-mode", "watch"]).await?;
            let mut c = Conn::open(&d.socket).await?;
            let resp = c
                .send(
                    "GET",
                    "/v1/events?since=0&kinds=session.heartbeat",
                    Bytes::new(),
                )
                .await?;
            let mut body = resp.into_body();
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let _keep = c;
                let mut buf = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let now = now_ns();
                    buf.extend_from_slice(&data);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                            if let Some(n) = v["payload"]["phase"]
                                .as_str()
                                .and_then(|p| p.strip_prefix('p'))
                                .and_then(|n| n.parse().ok())
                            {
                                arrivals.lock().map(|mut a| a.insert(n, now)).ok();
                            }
                        }
                    }
                }
            });
            (d.pid(), Box::new(d))
        }
        other => bail!("source {other}: expected fs-poll, fs-watch or bridge"),
    };
    // Let the reader take in the initial state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hz = ticks_per_second();
    let cpu0 = cpu_ticks(pid)?;
    let mut sent = Vec::new();
    let total = seconds * 10;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for n in 0..total {
        tick.tick().await;
        let t = now_ns();
        write_session(&root, (n as usize) % peers, &format!("p{n}"))?;
        sent.push((n, t));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu1 = cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let cpu2 = cpu_ticks(pid)?;
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(n, t)| arrivals.get(n).map(|a| a.saturating_sub(*t) as f64 / 1e6))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "legacy {source}, {peers} peers, {seconds}s at 10 changes/s: seen {}/{} p50={:.1} ms p99={:.1} ms; CPU {:.2} s active, {:.3} s over {idle}s idle",
        lat.len(),
        sent.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        (cpu1 - cpu0) as f64 / hz,
        (cpu2 - cpu1) as f64 / hz
    );
    Ok(())
}
