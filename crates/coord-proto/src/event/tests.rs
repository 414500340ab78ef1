//! Tests of the envelope's wire form and of every payload's round trip.

use super::*;

fn sample(payload: Payload) -> Event {
    Event {
        seq: 1042,
        tx_id: Ulid::from_string("01JABCDEF0TXIDXXXXXXXXXXXX").unwrap_or_default(),
        ts: Timestamp(1_775_596_425_123),
        ingress_ts: Timestamp(1_775_596_425_125),
        source: "api".into(),
        session_id: Some("claude-pid-91952".into()),
        resource: Some("src/main.rs".into()),
        payload,
    }
}

#[test]
fn envelope_matches_the_design_example() {
    let e = sample(Payload::LockAcquire(LockAcquire {
        resource: "src/main.rs".into(),
        owner_session: "claude-pid-91952".into(),
        mode: LockMode::Exclusive,
        ttl_ms: None,
        extra: Map::new(),
    }));
    let json = e.to_json();
    assert!(json.starts_with(r#"{"seq":1042,"tx_id":"#), "{json}");
    assert!(json.contains(r#""tx_kind":"lock.acquire""#), "{json}");
    assert!(json.contains(r#""payload":{"resource":"src/main.rs","owner_session":"claude-pid-91952","mode":"exclusive"}"#), "{json}");
    assert_eq!(Event::from_json(&json).expect("decode"), e);
}

#[test]
fn custom_kinds_round_trip_and_unknown_kinds_fail() {
    let mut body = Map::new();
    body.insert("n".into(), Value::from(3));
    let e = sample(Payload::Custom {
        kind: "x.deploy.started".into(),
        body,
    });
    assert_eq!(Event::from_json(&e.to_json()).expect("decode"), e);
    let bad = e.to_json().replace("x.deploy.started", "deploy.started");
    assert!(matches!(
        Event::from_json(&bad),
        Err(EventDecodeError::UnknownKind(_))
    ));
}

proptest::proptest! {
    /// `to_json` writes some fields past serde; its bytes must stay
    /// serde's for any strings a client may send (quotes, control
    /// characters, non-ASCII), any seq and ULID, and timestamps in and
    /// out of RFC 3339's range.
    #[test]
    fn to_json_writes_what_serde_writes(
        seq in proptest::prelude::any::<u64>(),
        ulid in proptest::prelude::any::<u128>(),
        ts in proptest::prelude::any::<i64>(),
        ingress in -62_167_219_300_000i64..253_402_300_900_000,
        source in "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,6}",
        session_id in proptest::option::of("\\PC{0,12}"),
        resource in proptest::option::of("[a-z/\"\\\\\u{7f}\u{e9}\u{1f600}]{0,10}"),
        kind in "x\\.[a-z.\"]{1,8}",
        key in "\\PC{0,6}",
        text in "\\PC{0,16}",
        n in proptest::prelude::any::<i64>(),
        typed in proptest::prelude::any::<bool>(),
    ) {
        let payload = if typed {
            Payload::LockAcquire(LockAcquire {
                resource: text.clone(),
                owner_session: key.clone(),
                mode: LockMode::Shared,
                ttl_ms: Some(n.unsigned_abs()),
                extra: Map::new(),
            })
        } else {
            let mut body = Map::new();
            body.insert(key, Value::from(text));
            body.insert("n".into(), Value::from(n));
            body.insert("f".into(), Value::from(n as f64 / 7.0));
            Payload::Custom { kind, body }
        };
        let e = Event {
            seq,
            tx_id: Ulid(ulid),
            ts: Timestamp(ts),
            ingress_ts: Timestamp(ingress),
            source,
            session_id,
            resource,
            payload,
        };
        let by_serde = serde_json::to_string(&e).expect("serde");
        proptest::prop_assert_eq!(e.to_json(), by_serde);
    }
}

#[test]
fn wrong_payload_shape_is_a_payload_error() {
    let e = sample(Payload::SessionDereg(SessionDereg {
        reason: DeregReason::Expired,
        exit_code: None,
        process_alive: false,
        signal: None,
        kill_after_ms: None,
        group_kill_after_ms: None,
    }));
    let bad = e.to_json().replace("expired", "bored");
    assert!(matches!(
        Event::from_json(&bad),
        Err(EventDecodeError::Payload { .. })
    ));
}
