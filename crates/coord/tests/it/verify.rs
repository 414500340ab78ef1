//! `coord verify --store PATH` (issue class "a fault campaign the project
//! keeps"): a healthy store passes, a running daemon's store can be
//! checked, and each kind of damage is named with its seq and exit 11.

use crate::support::{post, Daemon};
use serde_json::json;
use std::path::Path;

fn verify(store: &Path) -> std::process::Output {
    crate::support::coord_cmd()
        .args(["verify", "--json", "--store"])
        .arg(store)
        .output()
        .expect("run coord verify")
}

/// A store with sessions, locks, a grant to a waiter, messages and a
/// snapshot in the middle of its log.
fn busy_store() -> Daemon {
    let d = Daemon::start(&["--snapshot-every", "10"]);
    let a = d.register("a");
    let b = d.register("b");
    for r in ["src/**", "docs/a.md", "db"] {
        let resp = post(
            &d,
            "/v1/locks/acquire",
            Some(&a),
            &json!({"session_id":"a","resource":r}),
        );
        assert_eq!(resp.status, 200);
    }
    for i in 0..12 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.tick","payload":{"i":i}}),
        );
    }
    post(&d, "/v1/sessions/a/dereg", Some(&a), &json!({}));
    let resp = post(
        &d,
        "/v1/locks/acquire",
        Some(&b),
        &json!({"session_id":"b","resource":"src/main.rs"}),
    );
    assert_eq!(resp.status, 200);
    d
}

#[test]
fn a_healthy_store_passes_while_its_daemon_runs_and_after() {
    let mut d = busy_store();
    let out = verify(&d.store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["ok"], true);
    assert_eq!(r["head_seq"].as_u64(), Some(d.head()));
    assert_eq!(r["snapshot_checked"], true, "{r}");
    assert_eq!(r["locks"].as_u64(), Some(1), "{r}");
    d.terminate();
    let out = verify(&d.store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let human = crate::support::coord_cmd()
        .args(["verify", "--store"])
        .arg(&d.store)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("ok: "), "{text}");
}

fn damaged(sql: &str) -> (String, i32) {
    let mut d = busy_store();
    d.terminate();
    let db = rusqlite::Connection::open(&d.store).expect("open store");
    db.execute_batch(sql).expect("tamper");
    drop(db);
    let out = verify(&d.store);
    let err: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&out.stderr)}));
    (
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn a_missing_event_is_named() {
    let (msg, code) = damaged("DELETE FROM events WHERE seq = 5;");
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("seq 5 is missing"), "{msg}");
}

#[test]
fn an_undecodable_event_is_named() {
    let (msg, code) = damaged("UPDATE events SET body = '{\"seq\":6,' WHERE seq = 6;");
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("violation at seq 6") && msg.contains("decode"),
        "{msg}"
    );
}

#[test]
fn a_conflicting_grant_breaks_lock_safety() {
    // The first x.tick becomes a grant of docs/** to b while a still
    // holds docs/a.md.
    let (msg, code) = damaged(
        "UPDATE events SET body = replace(replace(body, '\"x.tick\"', '\"lock.acquire\"'), \
         '\"payload\":{\"i\":0}', '\"resource\":\"docs/**\",\"session_id\":\"b\",\"payload\":{\"resource\":\"docs/**\",\"owner_session\":\"b\",\"mode\":\"exclusive\"}') \
         WHERE body LIKE '%\"i\":0}%';",
    );
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("lock safety") && msg.contains("docs/a.md"),
        "{msg}"
    );
}

#[test]
fn a_snapshot_that_is_not_the_fold_is_named() {
    let (msg, code) = damaged(
        "UPDATE snapshots SET state = CAST(replace(CAST(state AS TEXT), '\"task\":\"\"', '\"task\":\"forged\"') AS BLOB);",
    );
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("snapshot differs") && msg.contains("task"),
        "{msg}"
    );
}

/// The issue's reproduction: `coord verify` on a running daemon's store
/// while writers append: every check passes (it reads one snapshot, not
/// bounds and pages at different commits).
#[test]
fn a_store_under_writes_verifies_every_time() {
    if crate::support::on_nats() {
        return;
    }
    let d = Daemon::start(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let socket = d.socket.clone();
        std::thread::spawn(move || {
            let batch: String = (0..200)
                .map(|i| format!("{{\"tx_kind\":\"x.load\",\"payload\":{{\"i\":{i}}}}}\n"))
                .collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = crate::support::raw_http(
                    &socket,
                    "POST",
                    "/v1/events/batch",
                    &[("Content-Type", "application/x-ndjson")],
                    Some(batch.as_bytes()),
                )
                .expect("batch");
                assert_eq!(r.status, 201);
            }
        })
    };
    crate::support::wait_until("writes landed", std::time::Duration::from_secs(20), || {
        d.head() > 2000
    });
    for _ in 0..5 {
        let out = verify(&d.store);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
}

/// On a closed copy of a store verify writes nothing beside it; without
/// `--store` it checks `COORD_STORE`; a missing store is named once.
#[test]
fn verify_is_read_only_defaults_its_store_and_says_each_error_once() {
    if crate::support::on_nats() {
        return;
    }
    let mut d = busy_store();
    d.terminate();
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&d.store, &copy).expect("copy");
    let out = verify(&copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = std::fs::read_dir(copy_dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        vec!["copy.db".to_string()],
        "verify left files beside the copy"
    );

    let by_env = crate::support::coord_cmd()
        .args(["verify", "--json"])
        .env("COORD_STORE", &copy)
        .output()
        .expect("run");
    assert!(
        by_env.status.success(),
        "{}",
        String::from_utf8_lossy(&by_env.stderr)
    );

    let missing = copy_dir.path().join("nope.db");
    let out = crate::support::coord_cmd()
        .args(["verify", "--store"])
        .arg(&missing)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("nope.db").count(), 1, "{err}");
    assert_eq!(err.matches("not found").count(), 1, "{err}");
}

/// `x.tick` number `i` rewritten into an approval event of session b.
fn approval_event(i: u32, kind: &str, payload: &str) -> String {
    format!(
        "UPDATE events SET body = replace(replace(body, '\"x.tick\"', '\"{kind}\"'), \
         '\"payload\":{{\"i\":{i}}}', '\"session_id\":\"b\",\"payload\":{payload}') \
         WHERE body LIKE '%\"payload\":{{\"i\":{i}}}%';"
    )
}

#[test]
fn an_approval_decided_without_its_request_is_named() {
    let (msg, code) = damaged(&approval_event(
        1,
        "approval.decide",
        r#"{"approval_id":"ap-1","decision":"allow","by":"mallory","via":"socket"}"#,
    ));
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("approvals")
            && msg.contains("ap-1")
            && msg.contains("without a pending request"),
        "{msg}"
    );
}

#[test]
fn an_approval_decided_twice_is_named() {
    let sql = [
        approval_event(
            1,
            "approval.request",
            r#"{"approval_id":"ap-2","agent":"claude","tool":"Bash","summary":"Bash ls"}"#,
        ),
        approval_event(
            2,
            "approval.decide",
            r#"{"approval_id":"ap-2","decision":"deny","by":"alice","via":"socket"}"#,
        ),
        approval_event(
            3,
            "approval.decide",
            r#"{"approval_id":"ap-2","decision":"allow","by":"mallory","via":"socket"}"#,
        ),
    ]
    .concat();
    let (msg, code) = damaged(&sql);
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains("ap-2 is decided twice") && msg.contains("mallory"),
        "{msg}"
    );
}
