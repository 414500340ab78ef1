//! `coord-bench shared`: several daemons writing to one NATS JetStream
//! log at once.

use super::*;

pub(crate) async fn shared(
    coord: &Path,
    writers: usize,
    seconds: u64,
    rate: u64,
    handovers: usize,
) -> Result<()> {
    let Some(log) = fresh_nats_log() else {
        bail!("shared needs --nats nats://HOST:PORT (a NATS server >= 2.10 with JetStream)");
    };
    let a = Daemon::start_on(coord, Some(log.clone()), &[]).await?;
    let b = Daemon::start_on(coord, Some(log), &[]).await?;
    let sockets = [a.socket.clone(), b.socket.clone()];

    // 1. Throughput, writers split across the two daemons.
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = Conn::open(&sockets[w % 2]).await?;
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
    for t in tasks {
        t.await?;
    }
    let n = count.load(Ordering::Relaxed);
    let conflicts = metric(&sockets[0], "coord_append_conflicts_total").await?
        + metric(&sockets[1], "coord_append_conflicts_total").await?;
    let commits = metric(&sockets[0], "coord_commits_total").await?
        + metric(&sockets[1], "coord_commits_total").await?;
    println!(
        "shared log, 2 daemons, writers={writers}: {n} events in {:.1}s = {:.0} events/s; {commits:.0} commits, {conflicts:.0} conflicts (retried)",
        t0.elapsed().as_secs_f64(),
        n as f64 / t0.elapsed().as_secs_f64()
    );

    // 2. Written on A, received by a subscriber of B.
    let mut sub = Conn::open(&sockets[1]).await?;
    let resp = sub
        .send("GET", "/v1/events?since=now&kinds=x.lat", Bytes::new())
        .await?;
    let body = resp.into_body();
    let total = rate * seconds;
    let reader = latency_reader(body, total);
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
    let mut cb = Conn::open(&sockets[1]).await?;
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
        let (tb2, res2, sock) = (tb.clone(), res.clone(), sockets[1].clone());
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
