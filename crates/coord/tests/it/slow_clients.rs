//! Connections are bounded in time: idle sockets, headers sent a byte at a
//! time (slowloris) and bodies that never finish are closed or answered
//! `408`, so they cannot hold every connection slot (`--max-connections`)
//! and lock real clients out.

use crate::support::{rss_kib, Daemon};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// True once the daemon has closed `s` (EOF or reset) within `within`.
fn closed_by_daemon(s: &mut UnixStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

#[test]
fn idle_and_slow_connections_cannot_lock_clients_out() {
    let d = Daemon::start(&[
        "--max-connections",
        "20",
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
    ]);
    // Every slot taken by a socket that sends nothing.
    let mut idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&d.socket).expect("connect"))
        .collect();
    // A real client still gets its answer: the idle ones are closed.
    let out = d.coord(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &mut idle {
        assert!(
            closed_by_daemon(s, Duration::from_secs(30)),
            "an idle socket stayed open"
        );
    }

    // Slowloris: a header line a byte at a time never completes in time.
    let mut slow = UnixStream::connect(&d.socket).expect("connect");
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /v1/status HTTP/1.1\r\nHost: coord\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if slow.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(closed, "a slowloris connection was kept for 30 s");

    // A body that stops arriving is answered 408 with the JSON error.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"tx_kind\":",
    )
    .expect("send");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");

    // And a keep-alive connection that answered is closed once idle.
    let mut k = UnixStream::connect(&d.socket).expect("connect");
    k.write_all(b"GET /v1/health HTTP/1.1\r\nHost: coord\r\n\r\n")
        .expect("send");
    assert!(
        closed_by_daemon(&mut k, Duration::from_secs(30)),
        "an idle keep-alive connection stayed open"
    );
    let out = d.coord(&["status", "--json"]);
    assert!(out.status.success());
}

/// Opens `n` connections that each send half of a 1 MiB body and stall;
/// returns them (open) and how much the daemon's RSS grew, KiB.
fn stalled_bodies(d: &Daemon, n: usize) -> (Vec<UnixStream>, u64) {
    let before = rss_kib(d.pid());
    let half = vec![b'a'; 512 << 10];
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"tx_kind\":\"x.big\",\"payload\":{{\"p\":\"",
            1_000_000
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&half).expect("half a body");
        conns.push(s);
    }
    // What was sent has been read (the writes above completed); give the
    // daemon's tasks a moment to take it in.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(d.pid());
    (conns, after.saturating_sub(before))
}

/// PROTOCOL §1, memory over all connections: 120 connections stalled half
/// way through 1 MiB bodies (60 MiB sent) make a daemon with an 8 MiB body
/// budget grow far less than one without (the same flood against a daemon
/// whose budget is larger than what is sent); it keeps answering, and
/// each stalled body is answered when it times out.
#[test]
fn bodies_in_flight_hold_bounded_memory() {
    let flood = |budget_mib: &str| {
        let d = Daemon::start(&[
            "--body-memory-mib",
            budget_mib,
            "--body-timeout",
            "4s",
            "--max-connections",
            "1000",
        ]);
        // Warm the daemon up so its baseline includes its own buffers.
        for _ in 0..20 {
            d.http("GET", "/v1/status", &[], None);
        }
        let (conns, grew_kib) = stalled_bodies(&d, 120);
        let r = d.http("GET", "/v1/status", &[], None);
        assert_eq!(r.status, 200, "status during the flood");
        (d, conns, grew_kib)
    };
    let (_unbounded, _, unbounded_kib) = flood("1024");
    let (_d, conns, bounded_kib) = flood("8");
    // Measured: about 63 MiB against 178 MiB (debug build). What is left
    // when bounded is the budget's 8 MiB with the allocator's slack, and
    // each connection's own buffers.
    assert!(
        bounded_kib * 2 < unbounded_kib,
        "an 8 MiB body budget grew the daemon {} MiB, without it {} MiB",
        bounded_kib >> 10,
        unbounded_kib >> 10
    );
    for mut s in conns {
        let mut out = String::new();
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(
            status == "408" || status == "503",
            "a stalled body was answered {out:?}"
        );
        assert!(out.contains("\"code\""), "{out}");
    }
}

/// The value of one sample of `/v1/metrics` (text format).
fn metric(d: &Daemon, name: &str) -> u64 {
    let r = d.http("GET", "/v1/metrics", &[], None);
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}")) as u64
}

/// Issue 34 item 5: large events are bounded by the ring's bytes (it held
/// 1,500 events of 400 KB before, 2 GiB); one batch line is one event, at
/// most 1 MiB like POST /v1/events; a subscriber from the start still gets
/// every event, from the store.
#[test]
fn large_events_are_bounded_by_the_rings_bytes() {
    let d = Daemon::start(&["--ring-mib", "2"]);
    let pad = "p".repeat(400_000);
    let line = format!("{{\"tx_kind\":\"x.big\",\"payload\":{{\"pad\":\"{pad}\"}}}}\n");
    for _ in 0..3 {
        let r = d.batch(&line.repeat(10));
        assert_eq!(r.status, 201, "{}", r.json());
    }
    let bytes = metric(&d, "coord_ring_bytes");
    let events = metric(&d, "coord_ring_events");
    assert!(bytes <= 2 << 20, "the ring holds {bytes} bytes");
    assert!((1..=5).contains(&events), "the ring holds {events} events");
    // A line over 1 MiB refuses its batch, naming the line.
    let huge = format!(
        "{{\"tx_kind\":\"x.ok\"}}\n{{\"tx_kind\":\"x.big\",\"payload\":{{\"pad\":\"{}\"}}}}\n",
        "p".repeat(1_100_000)
    );
    let head = d.head();
    let r = d.batch(&huge);
    assert_eq!(r.status, 413, "{}", r.json());
    assert_eq!(r.json()["error"]["line"], 2);
    assert_eq!(d.head(), head, "nothing of it appended");
    // Every event is still there for a reader from the start.
    let all = d.all_events();
    assert_eq!(all.iter().filter(|e| e["tx_kind"] == "x.big").count(), 30);
}
