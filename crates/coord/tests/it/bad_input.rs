//! Bad input gets a precise 4xx with its code, appends nothing, and the
//! daemon keeps serving (ARCHITECTURE.md, "Bad input").

use crate::support::{post, Daemon};
use serde_json::json;

#[test]
fn every_bad_request_gets_its_code_and_appends_nothing() {
    let d = Daemon::start(&[]);
    let a = d.register("agent-a");
    let b = d.register("agent-b");
    let r = post(
        &d,
        "/v1/locks/acquire",
        Some(&a),
        &json!({"session_id":"agent-a","resource":"src/main.rs"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    let head = d.head();

    // (what, path, token, body, status, code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "/v1/sessions",
            None,
            b"{\"session_id\":".to_vec(),
            400,
            "bad_json",
        ),
        (
            "not an object",
            "/v1/sessions",
            None,
            b"[1,2]".to_vec(),
            400,
            "bad_json",
        ),
        (
            "unknown field",
            "/v1/sessions",
            None,
            br#"{"session_id":"x","rolle":"w"}"#.to_vec(),
            400,
            "unknown_field",
        ),
        (
            "wrong type",
            "/v1/sessions",
            None,
            br#"{"session_id":42}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "ttl out of range",
            "/v1/sessions",
            None,
            br#"{"session_id":"x","ttl_ms":5}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "unknown kind",
            "/v1/events",
            None,
            br#"{"tx_kind":"deploy.started"}"#.to_vec(),
            400,
            "unknown_kind",
        ),
        (
            "core kind posted as custom",
            "/v1/events",
            None,
            br#"{"tx_kind":"lock.acquire"}"#.to_vec(),
            400,
            "unknown_kind",
        ),
        (
            "id with slash",
            "/v1/sessions",
            None,
            br#"{"session_id":"a/b"}"#.to_vec(),
            400,
            "invalid_id",
        ),
        (
            "id dot-dot",
            "/v1/sessions",
            None,
            br#"{"session_id":".."}"#.to_vec(),
            400,
            "invalid_id",
        ),
        (
            "id with NUL",
            "/v1/sessions",
            None,
            b"{\"session_id\":\"a\\u0000b\"}".to_vec(),
            400,
            "invalid_id",
        ),
        (
            "resource escaping",
            "/v1/locks/acquire",
            Some(&a),
            br#"{"session_id":"agent-a","resource":"../etc/passwd"}"#.to_vec(),
            400,
            "invalid_id",
        ),
        (
            "resource with NUL",
            "/v1/locks/acquire",
            Some(&a),
            b"{\"session_id\":\"agent-a\",\"resource\":\"a\\u0000\"}".to_vec(),
            400,
            "invalid_id",
        ),
        (
            "missing token",
            "/v1/locks/acquire",
            None,
            br#"{"session_id":"agent-a","resource":"r"}"#.to_vec(),
            401,
            "token_required",
        ),
        (
            "wrong token",
            "/v1/locks/acquire",
            Some(&b),
            br#"{"session_id":"agent-a","resource":"r"}"#.to_vec(),
            403,
            "bad_token",
        ),
        (
            "release another's lock",
            "/v1/locks/release",
            Some(&b),
            br#"{"session_id":"agent-b","resource":"src/main.rs"}"#.to_vec(),
            403,
            "not_owner",
        ),
        (
            "force without admin",
            "/v1/locks/release",
            Some(&b),
            br#"{"session_id":"agent-a","resource":"src/main.rs","force":true}"#.to_vec(),
            403,
            "admin_required",
        ),
        (
            "lock held",
            "/v1/locks/acquire",
            Some(&b),
            br#"{"session_id":"agent-b","resource":"src/main.rs"}"#.to_vec(),
            409,
            "lock_held",
        ),
        (
            "message to nobody",
            "/v1/inbox/ghost",
            None,
            br#"{"body":"hi"}"#.to_vec(),
            404,
            "session_not_found",
        ),
        (
            "duplicate session",
            "/v1/sessions",
            None,
            br#"{"session_id":"agent-a"}"#.to_vec(),
            409,
            "session_exists",
        ),
        (
            "dead pid",
            "/v1/sessions",
            None,
            br#"{"session_id":"x","pid":2147483646}"#.to_vec(),
            422,
            "no_such_process",
        ),
    ];
    for (what, path, token, body, status, code) in cases {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = d.http("POST", path, &headers, Some(&body));
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{what}: no message"
        );
        assert_eq!(d.head(), head, "{what} appended something");
    }

    // Path ids are checked too: %2F decodes to '/', %00 to NUL.
    for path in [
        "/v1/sessions/a%2Fb",
        "/v1/sessions/..%00",
        "/v1/dispatch/a%2F..%2Fb",
    ] {
        let r = d.http("GET", path, &[], None);
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_id"), "{path}");
    }

    // A 10 MB body is refused without being buffered whole.
    let big = format!(
        "{{\"session_id\":\"x\",\"role\":\"{}\"}}",
        "y".repeat(10 << 20)
    );
    let r = d.http("POST", "/v1/sessions", &[], Some(big.as_bytes()));
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    // A message body over 64 KiB.
    let r = post(
        &d,
        "/v1/inbox/agent-b",
        None,
        &json!({"body": "z".repeat(65_537)}),
    );
    assert_eq!((r.status, r.code().as_str()), (413, "message_too_large"));

    // Unknown endpoint, wrong method, bad cursor, other protocol version.
    assert_eq!(d.http("GET", "/v1/nope", &[], None).code(), "not_found");
    assert_eq!(
        d.http("DELETE", "/v1/status", &[], None).code(),
        "method_not_allowed"
    );
    assert_eq!(
        d.http("GET", "/v1/events?since=yesterday", &[], None)
            .code(),
        "bad_cursor"
    );
    let r = d.http("GET", "/v1/status", &[("Coord-Protocol", "2")], None);
    assert_eq!((r.status, r.code().as_str()), (400, "protocol_mismatch"));

    assert_eq!(d.head(), head, "bad input appended something");
    // Still serving.
    let r = post(
        &d,
        "/v1/locks/release",
        Some(&a),
        &json!({"session_id":"agent-a","resource":"src/main.rs"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(d.head(), head + 1);
}

#[test]
fn the_cli_reports_errors_with_documented_exit_codes() {
    let d = Daemon::start(&[]);
    let a = d.register("cli-a");
    let b = d.register("cli-b");
    let env_a = [
        ("COORD_SESSION", "cli-a"),
        ("COORD_SESSION_TOKEN", a.as_str()),
    ];
    let env_b = [
        ("COORD_SESSION", "cli-b"),
        ("COORD_SESSION_TOKEN", b.as_str()),
    ];
    assert!(d
        .coord_env(&["lock", "acquire", "db"], &env_a)
        .status
        .success());
    let held = d.coord_env(&["lock", "acquire", "db"], &env_b);
    assert_eq!(held.status.code(), Some(4));
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(err.contains("lock_held") && err.contains("cli-a"), "{err}");
    let timeout = d.coord_env(&["lock", "acquire", "db", "--wait", "300ms"], &env_b);
    assert_eq!(
        timeout.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&timeout.stderr)
    );
    let wrong = d.coord_env(
        &["lock", "release", "db"],
        &[("COORD_SESSION", "cli-a"), ("COORD_SESSION_TOKEN", "nope")],
    );
    assert_eq!(wrong.status.code(), Some(7));
    assert_eq!(
        d.coord(&["session", "show", "ghost"]).status.code(),
        Some(6)
    );
    assert_eq!(d.coord(&["session", "show", "a/b"]).status.code(), Some(10));
    let gone = d.coord_env(
        &["status"],
        &[("COORD_SOCKET", "/tmp/definitely-not-a-coord.sock")],
    );
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("coord daemon"));
    // The timed-out waiter left the queue: the lock has no waiters.
    let locks = d.ok(&["--json", "lock", "list"]);
    let v: serde_json::Value = serde_json::from_str(&locks).expect("json");
    assert_eq!(v["locks"][0]["waiters"], serde_json::json!([]));
}

/// Sends `head` (request line and headers, without the blank line), then
/// `body`, on a fresh connection; returns the status and the JSON body.
fn exchange(d: &Daemon, head: &[u8], body: &[u8]) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!(
            "\r\nHost: coord\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    s.write_all(&req).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[test]
fn malformed_headers_are_named_not_ignored() {
    let d = Daemon::start(&[]);
    let body = br#"{"tx_kind":"x.h"}"#;
    let head = d.head();
    // A media type is compared whole: a prefix match is not a match.
    for ct in [
        &b"application/jsonfoo"[..],
        b"application/json-seq",
        b"text/json",
        b"\xffjson",
    ] {
        let mut h = b"POST /v1/events HTTP/1.1\r\nContent-Type: ".to_vec();
        h.extend_from_slice(ct);
        let (status, json) = exchange(&d, &h, body);
        assert_eq!(status, 415, "{}: {json}", String::from_utf8_lossy(ct));
        assert_eq!(json["error"]["code"], "unsupported_media_type", "{json}");
    }
    // Parameters are fine.
    let (status, json) = exchange(
        &d,
        b"POST /v1/events HTTP/1.1\r\nContent-Type: Application/JSON; charset=utf-8",
        body,
    );
    assert_eq!(status, 201, "{json}");
    // A Coord-Protocol header that is there is checked, readable or not.
    for v in [&b"\xff\xfe"[..], b"one", b""] {
        let mut h = b"GET /v1/status HTTP/1.1\r\nCoord-Protocol: ".to_vec();
        h.extend_from_slice(v);
        let (status, json) = exchange(&d, &h, b"");
        assert_eq!(status, 400, "{}: {json}", String::from_utf8_lossy(v));
        assert_eq!(json["error"]["code"], "protocol_mismatch", "{json}");
    }
    // A Last-Event-ID that is not text is a bad cursor, not "from now".
    let (status, json) = exchange(
        &d,
        b"GET /v1/events?follow=false HTTP/1.1\r\nLast-Event-ID: \xc3\x28",
        b"",
    );
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], "bad_cursor", "{json}");
    assert_eq!(d.head(), head + 1, "only the one good write appended");
}

/// Sends `bytes` as they are and reads the answer to the end: its status
/// (the daemon closes the connection after such an answer, so reading to
/// the end returns).
fn send_raw(socket: &std::path::Path, bytes: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // The daemon may answer and close before it read everything.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// PROTOCOL §3: a request that is not HTTP at all is answered by the HTTP
/// library with its status (400 / 414 / 431) and the connection closed,
/// and the daemon keeps serving.
#[test]
fn requests_that_are_not_http_get_their_status() {
    let d = Daemon::start(&[]);
    let long_path = format!("/v1/{}", "a".repeat(70_000));
    let many_headers: String = (0..600)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1000)))
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"\x16\x03\x01garbage\r\n\r\n".to_vec(), 400),
        (
            "Content-Length not a number",
            b"POST /v1/events HTTP/1.1\r\nHost: c\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Content-Lengths that disagree",
            b"POST /v1/events HTTP/1.1\r\nHost: c\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            400,
        ),
        (
            "NUL in the path",
            b"GET /v1/st\x00atus HTTP/1.1\r\nHost: c\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a 70 KB request target",
            format!("GET {long_path} HTTP/1.1\r\nHost: c\r\n\r\n").into_bytes(),
            414,
        ),
        (
            "600 KB of headers",
            format!("GET /v1/status HTTP/1.1\r\nHost: c\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        assert_eq!(send_raw(&d.socket, &bytes), status, "{what}");
        let ok = d.http("GET", "/v1/status", &[], None);
        assert_eq!(ok.status, 200, "status after {what}");
    }
    // Too many kind globs for one subscription.
    let kinds: Vec<String> = (0..65).map(|i| format!("x.k{i}")).collect();
    let r = d.http(
        "GET",
        &format!("/v1/events?follow=false&kinds={}", kinds.join(",")),
        &[],
        None,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_field"));
    assert_eq!(r.json()["error"]["field"], "kinds");
    let r = d.http(
        "GET",
        &format!("/v1/events?follow=false&kinds={}", kinds[..64].join(",")),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
}
