//! Guarantees 4 and 5: a cursor below retained history gets `compacted`
//! with the oldest seq; snapshot + watch re-syncs atomically.

use crate::support::{post, Daemon, Follower};
use serde_json::json;
use std::time::Duration;

#[test]
fn an_old_cursor_is_compacted_and_snapshot_plus_watch_resyncs() {
    let d = Daemon::start(&["--keep-events", "10", "--snapshot-every", "50"]);
    let tok = d.register("c1");
    for i in 0..120 {
        let r = post(
            &d,
            "/v1/events",
            Some(&tok),
            &json!({"tx_kind":"x.tick","payload":{"i":i},"session_id":"c1"}),
        );
        assert_eq!(r.status, 201);
    }
    let status = d.http("GET", "/v1/status", &[], None).json();
    let oldest = status["oldest_seq"].as_u64().expect("oldest");
    assert!(oldest > 1, "nothing was compacted: {status}");
    // The status says when and how much.
    let last = &status["store"]["last_compaction"];
    assert!(last["deleted"].as_u64().is_some_and(|n| n > 0), "{status}");
    assert_eq!(last["oldest_seq"].as_u64(), Some(oldest), "{status}");
    assert!(
        status["store"]["snapshot_seq"].as_u64().is_some(),
        "{status}"
    );

    let r = d.http("GET", "/v1/events?since=1", &[], None);
    assert_eq!((r.status, r.code().as_str()), (410, "compacted"));
    assert_eq!(r.json()["error"]["oldest_seq"].as_u64(), Some(oldest));
    let cli = d.coord(&["events", "--since", "1", "--no-follow"]);
    assert_eq!(
        cli.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    // A cursor at the edge is fine: events after oldest-1 are all retained.
    let r = d.http(
        "GET",
        &format!("/v1/events?since={}&follow=false", oldest - 1),
        &[],
        None,
    );
    assert_eq!(r.status, 200);

    // Snapshot + watch: the snapshot's seq, then exactly the events after it.
    let f = Follower::start(&d, &["--snapshot", "--since", "now"]);
    let first = f.wait_for_snapshot();
    let snap: serde_json::Value = serde_json::from_str(&first).expect("snapshot line");
    let s = snap["snapshot"]["seq"].as_u64().expect("seq");
    assert!(
        snap["snapshot"]["view"]["sessions"]["c1"].is_object(),
        "{snap}"
    );
    let r = post(
        &d,
        "/v1/events",
        Some(&tok),
        &json!({"tx_kind":"x.after","session_id":"c1"}),
    );
    let after = r.json()["seq"].as_u64().expect("seq");
    let lines = f.wait_for_seq(after, Duration::from_secs(10));
    let seqs: Vec<u64> = lines[1..]
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(seqs, (s + 1..=after).collect::<Vec<_>>());
    f.stop();

    // A restart folds the snapshot plus the tail into the same view.
    let before = d.http("GET", "/v1/snapshot", &[], None).json();
    let mut d = d;
    d.terminate();
    d.restart();
    let after_restart = d.http("GET", "/v1/snapshot", &[], None).json();
    assert_eq!(before["view"], after_restart["view"]);
    assert_eq!(before["seq"], after_restart["seq"]);
}

/// Issue: the snapshot counter restarted at zero on every start, so a
/// daemon killed more often than every `--snapshot-every` events never
/// snapshotted and its restarts folded an ever longer tail. The distance
/// is now counted from the log's latest snapshot.
#[test]
fn a_daemon_killed_between_snapshots_still_snapshots_by_distance() {
    let mut d = Daemon::start(&["--snapshot-every", "100"]);
    let snapshot_seq = |d: &Daemon| {
        d.http("GET", "/v1/status", &[], None).json()["store"]["snapshot_seq"].as_u64()
    };
    let mut written = 0u64;
    // Three lives of 60 events each, every one ended by SIGKILL (no
    // shutdown snapshot): none reaches 100 events by itself.
    for life in 0..3 {
        for i in 0..60 {
            let r = post(
                &d,
                "/v1/events",
                None,
                &json!({"tx_kind":"x.crash","payload":{"life":life,"i":i}}),
            );
            assert_eq!(r.status, 201);
            written += 1;
        }
        d.kill9();
        d.restart();
    }
    let head = d.head();
    assert!(head >= written, "head {head} < {written} written");
    let seq = snapshot_seq(&d).expect("a snapshot by distance, none taken");
    assert!(
        head - seq < 100,
        "the tail past the snapshot ({seq}) is {} events: at least one snapshot was skipped",
        head - seq
    );
}
