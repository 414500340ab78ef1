//! `coord-bench shared`: several daemons writing to one NATS JetStream
//! log at once.

use super::*;

pub(crate) async fn shared(
    coord: &Path,
    writers: usize,
    seconds: u64,
    rate: u64,
    handovers: usize,
    daemons: usize,
) -> Result<()> {
    let Some(log) = fresh_nats_log() else {
        bail!("shared needs --nats nats://HOST:PORT (a NATS server >= 2.10 with JetStream)");
    };
    if !(1..=3).contains(&daemons) {
        bail!("--daemons {daemons}: 1 to 3");
    }
    let mut ds = Vec::with_capacity(daemons);
    for _ in 0..daemons {
        ds.push(Daemon::start_on(coord, Some(log.clone()), &[]).await?);
    }
    let sockets: Vec<PathBuf> = ds.iter().map(|d| d.socket.clone()).collect();
    // The election settles within a tick of the last start.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 1. Throughput, writers spread over the daemons; every write's
    // latency and every refusal kept.
    let count = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = Conn::open(&sockets[w % daemons]).await?;
        let (count, refused) = (count.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let body = format!(r#"{{"tx_kind":"x.tp","payload":{{"w":{w},"i":{i}}}}}"#);
                let sent = Instant::now();
                match c.post("/v1/events", body).await {
                    Ok((201, _)) => {
                        lat.push(sent.elapsed().as_secs_f64() * 1e3);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, b)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        eprintln!("write refused {s}: {}", String::from_utf8_lossy(&b));
                    }
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        break;
                    }
                }
                i += 1;
            }
            lat
        }));
    }
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let n = count.load(Ordering::Relaxed);
    let (mut conflicts, mut commits, mut forwarded) = (0.0, 0.0, 0.0);
    for s in &sockets {
        conflicts += metric(s, "coord_append_conflicts_total").await?;
        commits += metric(s, "coord_commits_total").await?;
        forwarded += metric(s, "coord_forwarded_writes_total").await?;
    }
    println!(
        "shared log, {daemons} daemon(s), writers={writers}: {n} events in {:.1}s = {:.0} events/s; write p50={:.3} ms p99={:.3} ms; {commits:.0} commits, {conflicts:.0} conflicts, {forwarded:.0} forwarded, {} refused",
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        refused.load(Ordering::Relaxed)
    );
    let other = 1 % daemons;

    // 2. Written on A, received by a subscriber of B.
    let total = rate * seconds;
    let (_sub, reader) = subscribe_latency(&sockets[other], total).await?;
    let mut w = Conn::open(&sockets[0]).await?;
    let mut ack = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    for _ in 0..total {
        tick.tick().await;
        let sent = Instant::now();
        let body = format!(r#"{{"tx_kind":"x.lat","payload":{{"t_ns":{}}}}}"#, now_ns());
        w.post("/v1/events", body).await?;
        ack.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let mut samples = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    samples.sort_by(|a, b| a.total_cmp(b));
    ack.sort_by(|a, b| a.total_cmp(b));
    println!(
        "shared log, write on A at {rate}/s: ack p50={:.3} ms p99={:.3} ms; received on B p50={:.3} ms p99={:.3} ms (n={})",
        pct(&ack, 0.5),
        pct(&ack, 0.99),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        samples.len()
    );

    // 3. Lock hand-over: A's session releases, B's queued session is
    // granted; timed from the release request to the grant's answer.
    let mut ca = Conn::open(&sockets[0]).await?;
    let mut cb = Conn::open(&sockets[other]).await?;
    let ta = register(&mut ca, "hold-a").await?;
    let tb = register(&mut cb, "hold-b").await?;
    let mut times = Vec::with_capacity(handovers);
    for i in 0..handovers {
        let res = format!("/bench/lock{i}");
        let (s, body) = ca
            .post_auth(
                "/v1/locks/acquire",
                &ta,
                format!(r#"{{"session_id":"hold-a","resource":"{res}"}}"#),
            )
            .await?;
        if s != 200 && s != 201 {
            bail!("acquire: {s} {}", String::from_utf8_lossy(&body));
        }
        let (tb2, res2, sock) = (tb.clone(), res.clone(), sockets[other].clone());
        let waiter = tokio::spawn(async move {
            let mut c = Conn::open(&sock).await?;
            let r = c
                .post_auth(
                    "/v1/locks/acquire",
                    &tb2,
                    format!(r#"{{"session_id":"hold-b","resource":"{res2}","wait_ms":30000}}"#),
                )
                .await?;
            Ok::<_, anyhow::Error>((r, Instant::now()))
        });
        // Queued once B's view shows the waiter.
        loop {
            let (_, l) = cb.get("/v1/locks").await?;
            if String::from_utf8_lossy(&l).contains("\"hold-b\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t0 = Instant::now();
        ca.post_auth(
            "/v1/locks/release",
            &ta,
            format!(r#"{{"session_id":"hold-a","resource":"{res}"}}"#),
        )
        .await?;
        let ((s, body), at) = waiter.await??;
        if s != 200 && s != 201 {
            bail!("queued acquire: {s} {}", String::from_utf8_lossy(&body));
        }
        times.push(at.duration_since(t0).as_secs_f64() * 1e3);
        cb.post_auth(
            "/v1/locks/release",
            &tb,
            format!(r#"{{"session_id":"hold-b","resource":"{res}"}}"#),
        )
        .await?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "shared log, lock hand-over A→B ({handovers}): p50={:.3} ms p99={:.3} ms",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
    Ok(())
}
