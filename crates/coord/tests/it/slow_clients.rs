//! Connections are bounded in time: idle sockets, headers sent a byte at a
//! time (slowloris) and bodies that never finish are closed or answered
//! `408`, so they cannot hold every connection slot (`--max-connections`)
//! and lock real clients out.

use crate::support::Daemon;
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
