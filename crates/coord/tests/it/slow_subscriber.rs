//! Guarantee 3: a subscriber that reads nothing while 100k events are
//! written then receives all of them in order, and the daemon's memory
//! stays bounded meanwhile (the subscriber holds no queue of its own).

use crate::support::{rss_kib, Daemon, Follower};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

const EVENTS: u64 = 100_000;
const WRITERS: u64 = 4;

/// Posts `n` custom events of ~1 KiB on one keep-alive connection.
fn post_many(socket: &std::path::Path, w: u64, n: u64) {
    use std::io::{BufRead, BufReader, Read};
    let s = UnixStream::connect(socket).expect("connect");
    let mut out = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let pad = "p".repeat(1000);
    for i in 0..n {
        let body = format!(r#"{{"tx_kind":"x.bulk","payload":{{"w":{w},"i":{i},"pad":"{pad}"}}}}"#);
        write!(
            out,
            "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut line = String::new();
        r.read_line(&mut line).expect("status");
        assert!(line.contains(" 201 "), "{line}");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).expect("header");
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut b = vec![0; len];
        r.read_exact(&mut b).expect("body");
    }
}

#[test]
fn a_subscriber_that_reads_nothing_loses_nothing_and_costs_bounded_memory() {
    let _alone = crate::support::exclusive();
    // A small ring, so what the daemon may legitimately hold in memory is
    // small next to what a per-subscriber queue would hold.
    let d = Daemon::start(&["--ring-events", "1024"]);
    let start = d.head();
    // `coord events` with a pipe nobody reads: it stops reading the socket
    // once the pipe is full, so the daemon sees a stalled subscriber.
    let slow = Follower::start_unread(&d, &["--since", &start.to_string()]);
    let base = rss_kib(d.pid());
    let socket = d.socket.clone();
    let mut peak = base;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..WRITERS)
            .map(|w| {
                let socket = socket.clone();
                s.spawn(move || post_many(&socket, w, EVENTS / WRITERS))
            })
            .collect();
        while hs.iter().any(|h| !h.is_finished()) {
            peak = peak.max(rss_kib(d.pid()));
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in hs {
            h.join().expect("writer");
        }
    });
    peak = peak.max(rss_kib(d.pid()));
    assert_eq!(d.head(), start + EVENTS);
    // 100k events of ~1.1 KiB are ~110 MiB: a daemon that queued them for
    // the stalled subscriber would grow by at least that much. What may grow
    // is the ring (1,024 events, ~3 MiB), SQLite's caches, per-thread malloc
    // arenas and in-flight requests.
    let grown_mib = peak.saturating_sub(base) / 1024;
    eprintln!("daemon RSS grew by {grown_mib} MiB while the subscriber stalled");
    assert!(
        grown_mib < 32,
        "daemon RSS grew by {grown_mib} MiB (from {} MiB)",
        base / 1024
    );

    let lines = slow.drain_until(start + EVENTS, Duration::from_secs(120));
    assert_eq!(lines.len() as u64, EVENTS);
    for (i, l) in lines.iter().enumerate() {
        let seq = serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"].as_u64();
        assert_eq!(seq, Some(start + 1 + i as u64), "order broken at {i}");
    }
}
