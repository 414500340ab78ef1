//! Guarantee 6: a retried write with the same `(source, tx_id)` appends
//! once and returns the first answer.

use crate::support::{post, Daemon};
use serde_json::json;

#[test]
fn a_retried_write_appends_once() {
    let d = Daemon::start(&[]);
    let tok = d.register("idem");
    let tx = "01J00000000000000000000001".to_string();
    let body = json!({"tx_kind":"x.build.done","payload":{"n":1},"session_id":"idem","tx_id":tx});
    let first = post(&d, "/v1/events", Some(&tok), &body);
    assert_eq!(first.status, 201, "{:?}", first.json());
    let head = d.head();
    let again = post(&d, "/v1/events", Some(&tok), &body);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("coord-replayed"), Some("true"));
    assert_eq!(again.json()["seq"], first.json()["seq"]);
    assert_eq!(d.head(), head, "the retry appended");

    // The same for a lock grant: the retry answers the first grant.
    let tx2 = tx.replace('1', "2");
    let acq = json!({"session_id":"idem","resource":"r","tx_id":tx2});
    let a1 = post(&d, "/v1/locks/acquire", Some(&tok), &acq);
    let a2 = post(&d, "/v1/locks/acquire", Some(&tok), &acq);
    assert_eq!(a1.json()["seq"], a2.json()["seq"]);
    assert_eq!(a2.header("coord-replayed"), Some("true"));

    // Concurrent retries, all in flight at once: still one event.
    let tx3 = tx.replace('1', "3");
    let body = json!({"tx_kind":"x.concurrent","tx_id":tx3});
    let head = d.head();
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    post(&d, "/v1/events", None, &body).json()["seq"]
                        .as_u64()
                        .unwrap_or(0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    assert!(seqs.iter().all(|s| *s == head + 1), "{seqs:?}");
    assert_eq!(d.head(), head + 1);
    let kinds: Vec<_> = d
        .all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "x.concurrent")
        .count()
        .to_string()
        .into_bytes();
    assert_eq!(kinds, b"1");

    // After a restart the record is still there.
    let mut d = d;
    d.terminate();
    d.restart();
    let replay = post(&d, "/v1/events", None, &body);
    assert_eq!(replay.json()["seq"].as_u64(), Some(head + 1));
    assert_eq!(replay.header("coord-replayed"), Some("true"));
}

/// An over-long ULID (first character above 7 overflows 128 bits) was
/// read as another id, so `8ZZZ…` and `0ZZZ…` collided and the second
/// write was dropped as a replay. Every request body that takes a
/// `tx_id`, and every line of a batch, now refuses it by name.
#[test]
fn an_overflowing_or_malformed_tx_id_is_refused_not_rewritten() {
    let d = Daemon::start(&[]);
    let tok = d.register("ulid");
    let overflow = "8ZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let wrapped = "0ZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let head = d.head();
    for (path, body) in [
        ("/v1/events", json!({"tx_kind":"x.a","tx_id":overflow})),
        (
            "/v1/locks/acquire",
            json!({"session_id":"ulid","resource":"r","tx_id":overflow}),
        ),
        (
            "/v1/sessions/ulid/heartbeat",
            json!({"phase":"work","tx_id":overflow}),
        ),
        (
            "/v1/events",
            json!({"tx_kind":"x.a","tx_id":"01J0000000000000000000000"}),
        ),
        (
            "/v1/events",
            json!({"tx_kind":"x.a","tx_id":"01J000000000000000000000U!"}),
        ),
    ] {
        let r = post(&d, path, Some(&tok), &body);
        assert_eq!(r.status, 400, "{path} {body}: {:?}", r.json());
        assert_eq!(r.code(), "invalid_field", "{path}: {:?}", r.json());
        assert_eq!(
            r.json()["error"]["field"],
            "tx_id",
            "{path}: {:?}",
            r.json()
        );
    }
    let lines =
        format!("{{\"tx_kind\":\"x.ok\"}}\n{{\"tx_kind\":\"x.b\",\"tx_id\":\"{overflow}\"}}\n");
    let r = d.batch(&lines);
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert_eq!(r.json()["error"]["line"], 2, "{:?}", r.json());
    assert_eq!(d.head(), head, "a refused request appended");

    // The id it used to be mistaken for is an ordinary, unused key.
    let r = post(
        &d,
        "/v1/events",
        None,
        &json!({"tx_kind":"x.a","tx_id":wrapped}),
    );
    assert_eq!(r.status, 201, "{:?}", r.json());
}

/// PROTOCOL §7: a record is bound to the endpoint and the request. A true
/// retry (only `ts` may differ) gets the first answer; another request
/// with the same `tx_id` gets `409 tx_id_reused` and changes nothing.
#[test]
fn a_tx_id_is_bound_to_its_endpoint_and_request() {
    let d = Daemon::start(&[]);
    let tx = "01J0000000000000000000B0ND";

    // A registration replayed with another session id.
    let reg = json!({"session_id":"first","tx_id":tx,"token":"t".repeat(40)});
    let r1 = post(&d, "/v1/sessions", None, &reg);
    assert_eq!(r1.status, 201, "{}", r1.json());
    let head = d.head();
    let other = json!({"session_id":"second","tx_id":tx,"token":"t".repeat(40)});
    let r = post(&d, "/v1/sessions", None, &other);
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "tx_id_reused"),
        "{}",
        r.json()
    );
    assert_eq!(r.json()["error"]["tx_id"], tx);
    assert_eq!(d.head(), head, "the reused tx_id appended");
    let sessions = d.http("GET", "/v1/sessions", &[], None).json();
    assert!(sessions["sessions"]["second"].is_null(), "{sessions}");
    // The true retry: the first answer, byte for byte.
    let r2 = post(&d, "/v1/sessions", None, &reg);
    assert_eq!(r2.status, 200);
    assert_eq!(r2.header("coord-replayed"), Some("true"));
    assert_eq!(r2.body, r1.body);

    // The same tx_id on another endpoint is refused, not dropped.
    let tok = "t".repeat(40);
    let r = post(
        &d,
        "/v1/locks/acquire",
        Some(&tok),
        &json!({"session_id":"first","resource":"a.rs","tx_id":tx}),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "tx_id_reused"),
        "{}",
        r.json()
    );
    assert_eq!(d.head(), head);

    // Only `ts` may differ in a retry; key order and spacing never matter.
    let tx2 = "01J0000000000000000000B0N2";
    let ev = format!(
        r#"{{"tx_kind":"x.a","tx_id":"{tx2}","payload":{{"b":1,"a":2}},"ts":"2026-01-01T00:00:00Z"}}"#
    );
    let e1 = d.http(
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        Some(ev.as_bytes()),
    );
    assert_eq!(e1.status, 201, "{}", e1.json());
    let retry = format!(
        r#"{{ "payload": {{"a":2, "b":1}}, "tx_id":"{tx2}", "tx_kind":"x.a", "ts":"2026-01-01T00:00:09Z" }}"#
    );
    let e2 = d.http(
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        Some(retry.as_bytes()),
    );
    assert_eq!(e2.status, 200, "{}", e2.json());
    assert_eq!(e2.body, e1.body);
    let changed = json!({"tx_kind":"x.a","tx_id":tx2,"payload":{"a":2,"b":2}});
    let e3 = post(&d, "/v1/events", None, &changed);
    assert_eq!(e3.code(), "tx_id_reused");

    // A batch line and the same event sent alone are one request.
    let tx3 = "01J0000000000000000000B0N3";
    let line = json!({"tx_kind":"x.line","tx_id":tx3,"payload":{"n":1}});
    let b = d.http(
        "POST",
        "/v1/events/batch",
        &[("Content-Type", "application/x-ndjson")],
        Some(format!("{line}\n").as_bytes()),
    );
    assert_eq!(b.status, 201, "{}", b.json());
    let alone = post(&d, "/v1/events", None, &line);
    assert_eq!(alone.status, 200, "{}", alone.json());
    assert_eq!(alone.header("coord-replayed"), Some("true"));
    assert_eq!(alone.json()["seq"], b.json()["seqs"][0]);

    // Per-path parameters count: a heartbeat's tx_id on another session.
    let tok_b = d.register("b");
    let tx4 = "01J0000000000000000000B0N4";
    let hb = json!({"tx_id":tx4,"phase":"x"});
    let h1 = post(&d, "/v1/sessions/b/heartbeat", Some(&tok_b), &hb);
    assert_eq!(h1.status, 200, "{}", h1.json());
    let r = post(&d, "/v1/sessions/first/heartbeat", Some(&tok), &hb);
    assert_eq!(r.code(), "tx_id_reused", "{}", r.json());
}

/// An id the daemon made (here for an event sent without a `tx_id`) that a
/// client sends back as its own is refused like a reused one, naming the
/// event that carries it; the log keeps each `(source, tx_id)` once.
#[test]
fn a_tx_id_copied_from_the_stream_is_refused() {
    let d = Daemon::start(&[]);
    let first = post(&d, "/v1/events", None, &json!({"tx_kind":"x.original"}));
    assert_eq!(first.status, 201, "{}", first.json());
    let events = d.all_events();
    let original = events
        .iter()
        .find(|e| e["tx_kind"] == "x.original")
        .expect("the event");
    let copied = original["tx_id"].as_str().expect("tx_id").to_string();
    let head = d.head();

    let echo = post(
        &d,
        "/v1/events",
        None,
        &json!({"tx_kind":"x.echo","tx_id":copied}),
    );
    assert_eq!(echo.status, 409, "{}", echo.json());
    assert_eq!(echo.code(), "tx_id_reused", "{}", echo.json());
    assert_eq!(echo.json()["error"]["seq"], original["seq"]);
    assert_eq!(d.head(), head, "the copy appended");

    // A fresh id still goes in, and no id is in the log twice.
    let fresh = post(
        &d,
        "/v1/events",
        None,
        &json!({"tx_kind":"x.fresh","tx_id":"01J0000000000000000000FRE5"}),
    );
    assert_eq!(fresh.status, 201, "{}", fresh.json());
    let mut ids: Vec<(String, String)> = d
        .all_events()
        .iter()
        .map(|e| (e["source"].to_string(), e["tx_id"].to_string()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id twice in the log");
}
