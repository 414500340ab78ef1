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
