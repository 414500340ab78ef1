//! Event streams the daemon writes to the socket itself (crate
//! `coord_daemon::direct`): the same answers as any other request, one
//! connection carrying a stream and then other requests, a request that
//! follows a stream's head in the same write left for the next answer, and
//! a subscriber that hangs up let go without waiting for an event.

use crate::support::{connect, read_response, wait_until, Daemon};
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Opens a following stream of `query` on its own connection and reads
/// its status line (the head comes at once; the body waits for events).
fn open_stream(d: &Daemon, query: &str) -> (UnixStream, BufReader<UnixStream>) {
    let (mut s, mut r) = connect(d);
    write!(s, "GET /v1/events?{query} HTTP/1.1\r\nHost: coord\r\n\r\n").expect("send");
    let mut status = String::new();
    std::io::BufRead::read_line(&mut r, &mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    (s, r)
}

/// Reads a raw stream up to its next `x.direct` line (past the head and
/// the chunk sizes); panics if the daemon closes the connection first.
fn next_event_line(r: &mut BufReader<UnixStream>) -> String {
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(r, &mut line).expect("a line");
        assert!(n > 0, "the daemon closed the stream");
        if line.contains("x.direct") {
            return line;
        }
    }
}

fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// One write carries three requests: a finite stream, a stream with a bad
/// cursor, and a status read. They are answered in order on the one
/// connection, each as the daemon answers it anywhere: the stream chunked
/// with the protocol headers, the error as its JSON with a length.
#[test]
fn one_connection_carries_streams_and_other_requests_in_order() {
    let d = Daemon::start(&[]);
    for i in 0..3 {
        d.ok(&[
            "publish",
            "x.direct",
            "--payload",
            &format!("{{\"i\":{i}}}"),
        ]);
    }
    let (mut s, mut r) = connect(&d);
    s.write_all(
        b"GET /v1/events?since=start&follow=false&kinds=x.direct HTTP/1.1\r\nHost: coord\r\nAccept: application/x-ndjson\r\n\r\n\
          GET /v1/events?since=nonsense HTTP/1.1\r\nHost: coord\r\n\r\n\
          GET /v1/status HTTP/1.1\r\nHost: coord\r\n\r\n",
    )
    .expect("send");

    let stream = read_response(&mut r).expect("the stream");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert_eq!(stream.header("coord-protocol"), Some("1"));
    assert!(stream.header("coord-log-id").is_some_and(|v| !v.is_empty()));
    assert!(stream.header("date").is_some());
    let events = lines(&stream.body);
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, vec![1, 2, 3], "{events:?}");
    assert_eq!(events[2]["payload"]["i"], 2);

    let bad = read_response(&mut r).expect("the error");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["error"]["code"],
        "bad_cursor",
        "{:?}",
        bad.json()
    );
    assert_eq!(
        bad.header("content-length"),
        Some(bad.body.len().to_string().as_str())
    );

    let status = read_response(&mut r).expect("the status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["head_seq"], 3);

    // The connection is still open: a write on it is answered.
    let body = br#"{"tx_kind":"x.direct","payload":{"i":3}}"#;
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send");
    s.write_all(body).expect("send");
    let posted = read_response(&mut r).expect("the write");
    assert_eq!(posted.status, 201, "{:?}", posted.json());
    assert_eq!(posted.json()["seq"], 4);
}

/// `Connection: close` on a stream's request: the stream ends with its last
/// chunk and the daemon closes the connection.
#[test]
fn a_stream_asked_to_close_closes_after_its_last_chunk() {
    let d = Daemon::start(&[]);
    d.ok(&["publish", "x.direct"]);
    let (mut s, mut r) = connect(&d);
    s.write_all(
        b"GET /v1/events?since=start&follow=false HTTP/1.1\r\nHost: coord\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let stream = read_response(&mut r).expect("the stream");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("connection"), Some("close"));
    assert_eq!(lines(&stream.body).len(), 1);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).expect("read to the end");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// A following subscriber that goes away is let go at once — the
/// daemon watches its socket while no event comes — not at the next
/// event's failed write.
#[test]
fn a_subscriber_that_hangs_up_is_let_go_without_an_event() {
    let d = Daemon::start(&[]);
    let subscribers = || {
        d.http("GET", "/v1/status", &[], None).json()["subscribers"]
            .as_u64()
            .expect("subscribers")
    };
    let (s, mut r) = open_stream(&d, "since=now");
    wait_until("the subscriber counted", Duration::from_secs(10), || {
        subscribers() == 1
    });
    d.ok(&["publish", "x.direct"]);
    // Past the head to the first chunk's line.
    next_event_line(&mut r);
    drop(r);
    drop(s);
    wait_until("the subscriber let go", Duration::from_secs(10), || {
        subscribers() == 0
    });
    assert_eq!(d.head(), 1, "no event was needed to notice");
}

/// A client that closes only its sending side after the request (as
/// some one-shot tools do) still reads the stream: that is not a hang-up.
#[test]
fn a_subscriber_that_half_closes_still_gets_events() {
    let d = Daemon::start(&[]);
    let (mut s, mut r) = connect(&d);
    s.write_all(b"GET /v1/events?since=now HTTP/1.1\r\nHost: coord\r\n\r\n")
        .expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut status = String::new();
    std::io::BufRead::read_line(&mut r, &mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for i in 0..2 {
        d.ok(&[
            "publish",
            "x.direct",
            "--payload",
            &format!("{{\"i\":{i}}}"),
        ]);
        let line = next_event_line(&mut r);
        assert!(line.contains(&format!("\"i\":{i}")), "{line}");
    }
}

/// A burst the fan-out lane does not carry (one commit of 1,000 events,
/// more than one lane write takes) hands its parked streams back to catch
/// up on their own; they then park again for the single events after it.
/// Each stream sees every event once, in order.
#[test]
fn parked_streams_catch_up_after_a_burst_and_miss_nothing() {
    let d = Daemon::start(&[]);
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(open_stream(&d, "since=now&kinds=x.*"));
    }
    // One event first, so every stream has been through the lane.
    d.ok(&["publish", "x.direct"]);
    let batch: String = (0..1000)
        .map(|i| format!("{{\"tx_kind\":\"x.burst\",\"payload\":{{\"i\":{i}}}}}\n"))
        .collect();
    let answer = d.batch(&batch);
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    for _ in 0..10 {
        d.ok(&["publish", "x.after"]);
    }
    let head = d.head();
    assert_eq!(head, 1011);
    for (_s, r) in &mut readers {
        assert_eq!(seqs_up_to(r, head), (1..=head).collect::<Vec<_>>());
    }
}

/// The issue's reproduction: six followers from `since=0`, caught up by
/// the fan-out lane; a graceful stop (SIGTERM) ends their streams, and
/// none of them is sent an event it already had.
#[test]
fn a_graceful_stop_sends_no_follower_an_event_twice() {
    let mut d = Daemon::start(&[]);
    // Half follow from before the first event (the lane sends them
    // everything), half start when the log holds events already.
    let mut readers: Vec<_> = (0..6).map(|_| open_stream(&d, "since=0")).collect();
    d.ok(&["publish", "x.first"]);
    // Small batches, each one write of the lane to every parked stream
    // (a batch over 256 events would hand them back to catch up on their
    // own, and they would park again at the head).
    for round in 0..20 {
        let batch: String = (0..53)
            .map(|i| format!("{{\"tx_kind\":\"x.burst\",\"payload\":{{\"i\":{i}}}}}\n"))
            .collect();
        assert_eq!(d.batch(&batch).status, 201);
        if round == 10 {
            readers.extend((0..6).map(|_| open_stream(&d, "since=0")));
        }
    }
    let head = d.head();
    let mut seen: Vec<Vec<u64>> = readers
        .iter_mut()
        .map(|(_s, r)| seqs_up_to(r, head))
        .collect();
    // And followers through the CLI, as a user runs them.
    let followers: Vec<_> = (0..6)
        .map(|_| crate::support::Follower::start(&d, &["--since", "0"]))
        .collect();
    for f in &followers {
        f.wait_for_seq(head, Duration::from_secs(20));
    }
    d.terminate();
    for mut f in followers {
        let _ = f.finish();
        let lines = f.stop();
        let seqs: Vec<u64> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "a CLI follower got events again after the stop ({} lines for {head} events)",
            seqs.len()
        );
    }
    for ((_s, r), seqs) in readers.iter_mut().zip(&mut seen) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(r, &mut rest);
        for line in rest.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line.trim()).expect("an event");
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
        assert_eq!(
            *seqs,
            (1..=head).collect::<Vec<_>>(),
            "a follower got events again after the stop ({} lines for {head} events)",
            seqs.len()
        );
    }
}

/// Reads a raw stream's events until the one at `head`; their seqs.
fn seqs_up_to(r: &mut BufReader<UnixStream>, head: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&head) {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(r, &mut line).expect("a line");
        assert!(n > 0, "the daemon closed the stream at {:?}", seqs.last());
        // Chunk-size lines and the CRLF after each chunk are not events.
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line.trim()).expect("an event");
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
    }
    seqs
}
