//! Appends on one connection, byte by byte from a raw socket: requests
//! sent together (pipelined) are answered in order, a bad one among them
//! is refused and loses nothing, and a request that does not arrive whole
//! in one read (split across writes, longer than a read, or cut by the
//! read's end) is served from its first byte.

use crate::support::{connect, read_response, Daemon, Resp};
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// `POST /v1/events` with `body`, as bytes.
fn append(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `x.direct` event with payload `{"i": i}`.
fn event(i: usize) -> String {
    format!(r#"{{"tx_kind":"x.direct","payload":{{"i":{i}}}}}"#)
}

fn expect_append(r: &mut BufReader<UnixStream>, seq: u64) -> Resp {
    let resp = read_response(r).expect("an answer");
    assert_eq!(resp.status, 201, "{:?}", resp.json());
    assert_eq!(resp.json()["seq"], seq, "{:?}", resp.json());
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    assert_eq!(resp.header("coord-protocol"), Some("1"));
    resp
}

/// The `i` of every `x.direct` event in the log, in log order.
fn logged(d: &Daemon) -> Vec<u64> {
    d.all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "x.direct")
        .filter_map(|e| e["payload"]["i"].as_u64())
        .collect()
}

/// One write carries five requests: two appends, one with malformed JSON,
/// one of an unknown kind, another append and a status read. Each is
/// answered in order with what the daemon answers anywhere; the bad ones
/// append nothing and the connection goes on.
#[test]
fn appends_sent_together_are_answered_in_order_and_a_bad_one_loses_nothing() {
    let d = Daemon::start(&[]);
    let (mut s, mut r) = connect(&d);
    let mut all = Vec::new();
    all.extend(append(&event(0)));
    all.extend(append(r#"{"tx_kind":"x.direct","payload":"#));
    all.extend(append(&event(1)));
    all.extend(append(r#"{"tx_kind":"deploy.started"}"#));
    all.extend(append(&event(2)));
    all.extend_from_slice(b"GET /v1/status HTTP/1.1\r\nHost: coord\r\n\r\n");
    s.write_all(&all).expect("send");

    expect_append(&mut r, 1);
    let bad = read_response(&mut r).expect("the malformed one");
    assert_eq!((bad.status, bad.code().as_str()), (400, "bad_json"));
    expect_append(&mut r, 2);
    let unknown = read_response(&mut r).expect("the unknown kind");
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (400, "unknown_kind")
    );
    expect_append(&mut r, 3);
    let status = read_response(&mut r).expect("the status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["head_seq"], 3);

    // Still open, and still served.
    s.write_all(&append(&event(3))).expect("send");
    expect_append(&mut r, 4);
    assert_eq!(logged(&d), vec![0, 1, 2, 3]);
}

/// An append whose head, then body halves, come in three writes with
/// pauses between them: not whole in the first read, so hyper serves it
/// (and the rest of the connection) from its first byte.
#[test]
fn an_append_split_across_writes_is_served_whole() {
    let d = Daemon::start(&[]);
    let (mut s, mut r) = connect(&d);
    let req = append(&event(0));
    let head_end = req
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end")
        + 4;
    let mid = head_end + (req.len() - head_end) / 2;
    for part in [&req[..head_end], &req[head_end..mid], &req[mid..]] {
        s.write_all(part).expect("send");
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_append(&mut r, 1);
    s.write_all(&append(&event(1))).expect("send");
    expect_append(&mut r, 2);
    assert_eq!(logged(&d), vec![0, 1]);
}

/// An append longer than one read (a 20 KB payload), and two appends of
/// which the second is cut by the end of the first read: each is served
/// once, whole, in order.
#[test]
fn appends_longer_than_a_read_or_cut_by_it_are_served_whole() {
    let d = Daemon::start(&[]);
    let (mut s, mut r) = connect(&d);
    let long = format!(
        r#"{{"tx_kind":"x.direct","payload":{{"i":0,"pad":"{}"}}}}"#,
        "p".repeat(20_000)
    );
    s.write_all(&append(&long)).expect("send");
    expect_append(&mut r, 1);

    // On a fresh connection: the first append fills most of a 4 KiB read,
    // so the second starts inside it and ends beyond it.
    let (mut s2, mut r2) = connect(&d);
    let first = format!(
        r#"{{"tx_kind":"x.direct","payload":{{"i":1,"pad":"{}"}}}}"#,
        "q".repeat(3_900)
    );
    let mut both = append(&first);
    assert!(both.len() < 4096, "the first append fits in one read");
    both.extend(append(&event(2)));
    assert!(both.len() > 4096, "the second is cut by the read's end");
    s2.write_all(&both).expect("send");
    expect_append(&mut r2, 2);
    expect_append(&mut r2, 3);
    drop((s, s2));
    assert_eq!(logged(&d), vec![0, 1, 2]);
    let events = d.all_events();
    let pad = events[0]["payload"]["pad"].as_str().expect("pad");
    assert_eq!(pad.len(), 20_000);
}

/// `req` sent in one write (the daemon serves it itself) or as its head
/// and then its body, 100 ms apart (hyper serves it through the router).
fn exchange(d: &Daemon, req: &[u8], whole: bool) -> Resp {
    let (mut s, mut r) = connect(d);
    if whole {
        s.write_all(req).expect("send");
    } else {
        let head_end = req
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end")
            + 4;
        s.write_all(&req[..head_end]).expect("send the head");
        std::thread::sleep(Duration::from_millis(100));
        // Refused on its head alone (another protocol, a media type that
        // is not JSON), a request is answered without its body being
        // read, and hyper closes the connection: the body may not go.
        let _ = s.write_all(&req[head_end..]);
    }
    read_response(&mut r).expect("an answer")
}

/// `POST /v1/events` with `headers` (lines ending in CRLF) and `body`.
fn append_with(headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/events HTTP/1.1\r\nHost: coord\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The header names of an answer, lowercased and sorted, less `date`.
fn names(r: &Resp) -> Vec<String> {
    let mut n: Vec<String> = r
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k != "date")
        .collect();
    n.sort();
    n
}

/// An append the daemon serves itself (`api::Appends`, past the router)
/// is answered exactly as the router answers the same request: the same
/// status, headers and error body for a good append, another protocol, a
/// media type that is not JSON, none, malformed JSON, an unknown field, a
/// payload that is not an object, a session's event without its token, an
/// empty body and an idempotent retry; and both are timed into the same
/// metric series.
#[test]
fn a_direct_append_is_answered_as_the_router_answers_it() {
    let d = Daemon::start(&[]);
    // Every answer's status, to check the metrics against.
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut send = |req: &[u8], whole: bool| {
        let resp = exchange(&d, req, whole);
        *statuses.entry(resp.status).or_default() += 1;
        resp
    };
    let json = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, String, String)> = vec![
        ("good", json.to_string(), event(0)),
        (
            "another protocol",
            format!("{json}Coord-Protocol: 99\r\n"),
            event(1),
        ),
        ("not JSON", "Content-Type: text/plain\r\n".into(), event(2)),
        ("no media type", String::new(), event(3)),
        (
            "malformed",
            json.into(),
            r#"{"tx_kind":"x.direct","payload":"#.into(),
        ),
        (
            "unknown field",
            json.into(),
            r#"{"tx_kind":"x.direct","bogus":1}"#.into(),
        ),
        (
            "payload not an object",
            json.into(),
            r#"{"tx_kind":"x.direct","payload":[1]}"#.into(),
        ),
        (
            "a session's event without its token",
            json.into(),
            r#"{"tx_kind":"x.direct","session_id":"nobody"}"#.into(),
        ),
        ("empty body", json.into(), String::new()),
    ];
    for (what, headers, body) in &cases {
        let req = append_with(headers, body);
        let direct = send(&req, true);
        let routed = send(&req, false);
        assert_eq!(direct.status, routed.status, "{what}: status");
        assert_eq!(names(&direct), names(&routed), "{what}: header names");
        assert_eq!(direct.code(), routed.code(), "{what}: error code");
        if direct.status >= 400 {
            assert_eq!(direct.body, routed.body, "{what}: error body");
        } else {
            assert_eq!(direct.status, 201, "{what}");
            assert_eq!(
                routed.json()["seq"].as_u64(),
                direct.json()["seq"].as_u64().map(|s| s + 1),
                "{what}: seqs"
            );
        }
        for h in [
            "coord-protocol",
            "coord-version",
            "coord-log-id",
            "content-type",
        ] {
            assert_eq!(direct.header(h), routed.header(h), "{what}: {h}");
        }
    }
    assert_eq!(
        logged(&d),
        vec![0, 0, 3, 3],
        "only the good appends appended"
    );

    // An idempotent retry: the first send appends, every later one (by
    // either path) is a replay of it with the same seq.
    let tx = r#"{"tx_kind":"x.direct","tx_id":"01JZZZZZZZZZZZZZZZZZZZZZZZ","payload":{"i":9}}"#;
    let req = append_with(json, tx);
    let first = send(&req, true);
    assert_eq!(first.status, 201, "{:?}", first.json());
    for whole in [true, false] {
        let again = send(&req, whole);
        assert_eq!(again.status, 200, "a replay (whole: {whole})");
        assert_eq!(again.header("coord-replayed"), Some("true"));
        assert_eq!(again.json()["seq"], first.json()["seq"]);
    }
    assert_eq!(logged(&d), vec![0, 0, 3, 3, 9]);

    // Both paths were timed into the one series per status.
    let metrics = String::from_utf8(d.http("GET", "/v1/metrics", &[], None).body).expect("utf-8");
    assert!(statuses.len() >= 4, "{statuses:?}");
    for (status, n) in statuses {
        let line = format!(
            "coord_http_request_duration_seconds_count{{route=\"/v1/events\",method=\"POST\",status=\"{status}\"}} {n}"
        );
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

/// Sends `req` whole, every 50 ms for up to 30 s, until it is answered
/// `status`; meanwhile every answer must be the error `meanwhile`.
fn send_until(d: &Daemon, req: &[u8], status: u16, meanwhile: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = exchange(d, req, true);
        if r.status == status {
            return;
        }
        assert_eq!(r.code(), meanwhile, "before {status}");
        assert!(
            std::time::Instant::now() < deadline,
            "never answered {status}; still {meanwhile}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// While a body in flight holds all but 8 bytes of the daemon's body
/// budget, a direct append is refused `503 overloaded` exactly as a
/// routed one is, and appends nothing; once that body is gone, appends
/// are served again.
#[test]
fn a_direct_append_keeps_to_the_body_budget() {
    let d = Daemon::start(&["--body-memory-mib", "1"]);
    let len = 1 << 20;
    let (mut hog, hog_answers) = connect(&d);
    hog.write_all(
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("the hog's head");
    hog.write_all(&vec![b' '; len - 8])
        .expect("all but 8 bytes of the hog's body");
    // The last of it may still be in the socket: a malformed append is
    // refused `bad_json` while its body fits and `overloaded` once the
    // daemon holds the hog's bytes (it appends nothing either way).
    let probe = append_with("", r#"{"tx_kind":"x.direct""#);
    send_until(&d, &probe, 503, "bad_json");
    let req = append(&event(0));
    let direct = exchange(&d, &req, true);
    let routed = exchange(&d, &req, false);
    for r in [&direct, &routed] {
        assert_eq!((r.status, r.code().as_str()), (503, "overloaded"));
    }
    assert_eq!(direct.body, routed.body);
    assert!(logged(&d).is_empty());

    // Both ends of the hog's connection: the daemon sees its body cut.
    drop((hog, hog_answers));
    send_until(&d, &req, 201, "overloaded");
    assert_eq!(logged(&d), vec![0]);
}

/// The header timeout on a connection the daemon serves itself: each
/// wait for the next request has its own deadline, so appends sent every
/// 300 ms keep a connection open past a 1 s timeout, and the same
/// connection is closed once it stays idle longer than that.
#[test]
fn the_header_timeout_restarts_with_each_direct_append_and_closes_an_idle_connection() {
    let d = Daemon::start(&["--header-timeout", "1s"]);
    let (mut s, mut r) = connect(&d);
    let started = std::time::Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        s.write_all(&append(&event(seq as usize))).expect("send");
        seq += 1;
        expect_append(&mut r, seq);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(seq >= 8, "{seq} appends");
    // Idle now: closed within the timeout and its grain (1.1 s), allowed
    // up to 30 s here for a slow machine.
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = Vec::new();
    let closed = match std::io::Read::read_to_end(&mut r, &mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed && rest.is_empty(), "still open, or sent {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(32));
    assert_eq!(logged(&d).len() as u64, seq);
}
