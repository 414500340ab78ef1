//! HTTP/1.1 conformance on the daemon's socket, byte for byte from a raw
//! socket (PROTOCOL §1): half-closes, pipelining, `Host`, methods,
//! versions, the head limits, and the headers every answer carries —
//! parse-level errors included. Each case is one an outside tool (socat,
//! `nc -N`, a raw-HTTP checker) found.

use crate::support::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Sends `bytes`, then shuts the write side (as `printf … | socat` does),
/// and reads until the daemon closes.
fn half_closed(d: &Daemon, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The answers in `text`: each status line's code with its head.
fn answers(text: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("HTTP/1.") {
        let tail = &rest[at..];
        let head_end = tail.find("\r\n\r\n").unwrap_or(tail.len());
        let head = tail[..head_end].to_ascii_lowercase();
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        out.push((code, head));
        rest = &tail[head_end.min(tail.len())..];
        if rest.len() == tail.len() {
            break;
        }
    }
    out
}

const STATUS: &str = "GET /v1/status HTTP/1.1\r\nHost: coord\r\n\r\n";

#[test]
fn a_half_closed_client_gets_every_answer() {
    let d = Daemon::start(&[]);
    // One request, then EOF: answered (it was not, 0 of 10).
    for _ in 0..10 {
        let a = answers(&half_closed(&d, STATUS.as_bytes()));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].0, 200);
    }
    // N pipelined, then EOF: N answers (it was N−1), in order.
    let n = 5;
    let a = answers(&half_closed(&d, STATUS.repeat(n).as_bytes()));
    assert_eq!(a.len(), n, "{a:?}");
    assert!(a.iter().all(|(c, _)| *c == 200), "{a:?}");
    // An append and a stream, the daemon's own fast paths, too.
    let append = "POST /v1/events HTTP/1.1\r\nHost: coord\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"tx_kind\":\"x.h\"}";
    let a = answers(&half_closed(&d, format!("{append}{append}").as_bytes()));
    assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), [201, 201]);
    let stream =
        "GET /v1/events?since=start&follow=false HTTP/1.1\r\nHost: coord\r\nAccept: application/x-ndjson\r\n\r\n";
    let text = half_closed(&d, stream.as_bytes());
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("\"x.h\"").count(), 2, "{text}");
}

#[test]
fn host_must_be_there_once() {
    let d = Daemon::start(&[]);
    let head = d.head();
    for (what, req) in [
        ("no Host", "GET /v1/status HTTP/1.1\r\n\r\n".to_string()),
        (
            "two Hosts",
            "GET /v1/status HTTP/1.1\r\nHost: coord\r\nHost: other\r\n\r\n".to_string(),
        ),
        (
            "an append without Host",
            "POST /v1/events HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"tx_kind\":\"x.h\"}"
                .to_string(),
        ),
        (
            "a stream without Host",
            "GET /v1/events?follow=false HTTP/1.1\r\nAccept: application/x-ndjson\r\n\r\n"
                .to_string(),
        ),
    ] {
        let text = half_closed(&d, req.as_bytes());
        let a = answers(&text);
        assert_eq!(a.first().map(|x| x.0), Some(400), "{what}: {text}");
        assert!(text.contains("\"bad_request\""), "{what}: {text}");
        assert!(text.contains("Host"), "{what}: {text}");
    }
    assert_eq!(d.head(), head, "nothing refused was appended");
    // HTTP/1.0 may omit Host (RFC 9112 §3.2 binds 1.1), and is answered
    // as 1.0 — hyper's choice, PROTOCOL §1.
    let text = half_closed(&d, b"GET /v1/status HTTP/1.0\r\n\r\n");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
}

#[test]
fn an_unknown_method_is_not_implemented_a_known_one_not_allowed() {
    let d = Daemon::start(&[]);
    let text = half_closed(&d, b"BREW /v1/status HTTP/1.1\r\nHost: coord\r\n\r\n");
    let a = answers(&text);
    assert_eq!(a[0].0, 501, "{text}");
    assert!(text.contains("\"not_implemented\""), "{text}");
    for method in ["DELETE", "QUERY"] {
        let text = half_closed(
            &d,
            format!("{method} /v1/status HTTP/1.1\r\nHost: coord\r\n\r\n").as_bytes(),
        );
        let a = answers(&text);
        assert_eq!(a[0].0, 405, "{method}: {text}");
        assert!(a[0].1.contains("\r\nallow: "), "{text}");
    }
}

#[test]
fn every_answer_carries_date_and_the_coord_headers() {
    let d = Daemon::start(&[]);
    let long_target = format!("/v1/{}", "a".repeat(70_000));
    // The head limit is 128 KiB: 130 KiB of headers is refused.
    let big_headers: String = (0..130)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1020)))
        .collect();
    // And at most 100 header lines, whatever their size.
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let acquire = r#"{"session_id":"s1","resource":"db"}"#;
    let cases = [
        ("garbage", b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(), 400),
        (
            "a long target",
            format!("GET {long_target} HTTP/1.1\r\nHost: coord\r\n\r\n").into_bytes(),
            414,
        ),
        (
            "130 KiB of headers",
            format!("GET /v1/status HTTP/1.1\r\nHost: coord\r\n{big_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "101 headers",
            format!("GET /v1/status HTTP/1.1\r\nHost: coord\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "a session call without a token",
            format!(
                "POST /v1/locks/acquire HTTP/1.1\r\nHost: coord\r\nContent-Length: {}\r\n\r\n{acquire}",
                acquire.len()
            )
            .into_bytes(),
            401,
        ),
        ("no such route", b"GET /v2/x HTTP/1.1\r\nHost: coord\r\n\r\n".to_vec(), 404),
    ];
    for (what, req, want) in cases {
        let text = half_closed(&d, &req);
        let a = answers(&text);
        let Some((code, head)) = a.first() else {
            panic!("{what}: no answer: {text:?}");
        };
        assert_eq!(*code, want, "{what}: {text}");
        // A request that is not HTTP is answered by the HTTP library
        // before any handler (PROTOCOL §3): its status and Date only.
        let library = matches!(want, 400 | 414 | 431);
        let expected: &[&str] = if library {
            &["\r\ndate: "]
        } else {
            &[
                "\r\ndate: ",
                "\r\ncoord-protocol: 1",
                "\r\ncoord-version: ",
                "\r\ncoord-log-id: ",
                "\r\ncontent-type: application/json",
            ]
        };
        for h in expected {
            assert!(head.contains(h), "{what}: no {h:?} in {head}");
        }
        if want == 401 {
            assert!(
                head.contains("\r\nwww-authenticate: bearer"),
                "{what}: {head}"
            );
        }
    }
    // 90 headers in 124 KiB are within both limits.
    let fits: String = (0..90)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1400)))
        .collect();
    let text = half_closed(
        &d,
        format!("GET /v1/status HTTP/1.1\r\nHost: coord\r\n{fits}\r\n").as_bytes(),
    );
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..80.min(text.len())]
    );
}

/// Issue 34 item 3: a head that declares a large body holds its declared
/// length of the body budget from the start — so stalled bodies fill the
/// budget (and further bodies are refused `503 overloaded`) instead of
/// growing the daemon beside it. Each stalled body is answered when its
/// time is up. BENCHMARKS.md, "Memory under attack", has the RSS.
#[test]
fn a_declared_body_is_charged_before_it_arrives() {
    let d = Daemon::start(&["--body-memory-mib", "8", "--body-timeout", "3s"]);
    let declared = 4 << 20;
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        let head = format!(
            "POST /v1/events/batch HTTP/1.1\r\nHost: coord\r\nContent-Type: application/x-ndjson\r\nContent-Length: {declared}\r\n\r\n{{\"tx_kind\":"
        );
        s.write_all(head.as_bytes()).expect("head");
        stalled.push(s);
    }
    // Two 4 MiB bodies hold the whole 8 MiB: a small whole batch finds
    // no room (before, each stalled body held the 12 bytes it sent).
    let mut refused = None;
    wait_until(
        "the stalled bodies to hold the budget",
        Duration::from_secs(10),
        || {
            let r = d.batch("{\"tx_kind\":\"x.small\"}\n");
            let full = r.status == 503 && r.code() == "overloaded";
            refused = Some(r.status);
            full
        },
    );
    assert_eq!(refused, Some(503));
    let r = d.http("GET", "/v1/status", &[], None);
    assert_eq!(r.status, 200, "the daemon serves on");
    let mut codes = Vec::new();
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        codes.push(answers(&out).first().map_or(0, |a| a.0));
    }
    // Held or refused, each is answered (408 when its time ran out
    // first, else 503) rather than reset.
    assert!(codes.iter().all(|c| *c == 408 || *c == 503), "{codes:?}");
    assert!(
        d.batch("{\"tx_kind\":\"x.small\"}\n").status < 300,
        "room again"
    );
}

/// The same socket speaks HTTP/2 with prior knowledge (PROTOCOL §1): curl
/// (nghttp2) reads the status, appends, reads a stream to the head, and
/// sends several requests over one connection, multiplexed.
#[test]
fn http2_with_prior_knowledge_is_served_on_the_socket() {
    let d = Daemon::start(&[]);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--unix-socket"])
            .arg(&d.socket)
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = curl(&["-w", "\n%{http_version}", "http://coord/v1/status"]);
    let (body, version) = status.rsplit_once('\n').expect("version line");
    assert_eq!(version, "2", "{status}");
    let v: serde_json::Value = serde_json::from_str(body).expect("status json");
    assert_eq!(v["protocol"], 1, "{v}");

    let h0 = d.head();
    let appended = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"tx_kind":"x.h2","payload":{"n":1}}"#,
        "-w",
        "\n%{http_code}",
        "http://coord/v1/events",
    ]);
    let (body, code) = appended.rsplit_once('\n').expect("code line");
    assert_eq!(code, "201", "{appended}");
    let v: serde_json::Value = serde_json::from_str(body).expect("append json");
    assert_eq!(v["seq"].as_u64(), Some(h0 + 1), "{v}");

    // Many requests in flight on one connection, multiplexed as HTTP/2
    // streams: 50 appends and a stream read to the head, at once.
    let socket = d.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (seqs, streamed) = rt.block_on(async move {
        use http_body_util::{BodyExt, Full};
        let io = tokio::net::UnixStream::connect(&socket)
            .await
            .expect("connect");
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let request = |method: &str, uri: &str, body: String| {
            let mut send = send.clone();
            let req = hyper::Request::builder()
                .method(method)
                .uri(format!("http://coord{uri}"))
                .header("content-type", "application/json")
                .body(Full::new(bytes_of(body)))
                .expect("request");
            async move {
                let resp = send.send_request(req).await.expect("answer");
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let appends: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(request(
                    "POST",
                    "/v1/events",
                    format!(r#"{{"tx_kind":"x.h2","payload":{{"i":{i}}}}}"#),
                ))
            })
            .collect();
        let mut seqs = Vec::new();
        for append in appends {
            let (status, body) = append.await.expect("append task");
            assert_eq!(status, 201, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            seqs.push(v["seq"].as_u64().expect("seq"));
        }
        let (status, streamed) = request(
            "GET",
            &format!("/v1/events?since={h0}&follow=false"),
            String::new(),
        )
        .await;
        assert_eq!(status, 200);
        (seqs, streamed)
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (h0 + 2..h0 + 52).collect::<Vec<_>>(),
        "one seq each"
    );
    assert_eq!(streamed.lines().count(), 51, "{streamed}");
}

fn bytes_of(s: String) -> hyper::body::Bytes {
    hyper::body::Bytes::from(s)
}
