//! Pod hierarchies through the real CLI: every report kind, delegation
//! and its return, repeated delivery, and a three-level hierarchy across
//! two daemons joined by `--parent-socket`, including a parent daemon
//! that is down.

use crate::support::{wait_until, Daemon};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Registers `id` (with `parent`) and returns its token.
fn register(d: &Daemon, id: &str, parent: Option<&str>) -> String {
    let mut args = vec!["--json", "session", "register", "--id", id];
    if let Some(p) = parent {
        args.extend(["--parent", p]);
    }
    let v: Value = serde_json::from_str(&d.ok(&args)).expect("json");
    v["token"].as_str().expect("token").to_string()
}

/// Runs the CLI acting for `id`.
fn act(d: &Daemon, id: &str, token: &str, args: &[&str]) -> std::process::Output {
    d.coord_env(
        args,
        &[("COORD_SESSION", id), ("COORD_SESSION_TOKEN", token)],
    )
}

fn act_ok(d: &Daemon, id: &str, token: &str, args: &[&str]) -> String {
    let out = act(d, id, token, args);
    assert!(
        out.status.success(),
        "coord {args:?} as {id} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kinds of the messages in `id`'s inbox.
fn inbox(d: &Daemon, id: &str, token: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&act_ok(d, id, token, &["--json", "inbox", "list"])).expect("json");
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

fn session(d: &Daemon, id: &str) -> Value {
    serde_json::from_str(&d.ok(&["--json", "session", "show", id])).expect("json")
}

#[test]
fn every_report_kind_reaches_the_parent_once() {
    let d = Daemon::start(&[]);
    let pt = register(&d, "parent", None);
    let ct = register(&d, "child", Some("parent"));
    assert!(session(&d, "parent")["children"]
        .as_object()
        .is_some_and(|c| c.contains_key("child")));

    act_ok(&d, "child", &ct, &["session", "report", "turn_ended"]);
    act_ok(
        &d,
        "child",
        &ct,
        &[
            "session",
            "report",
            "errored",
            "--message",
            "cargo test failed",
        ],
    );
    act_ok(
        &d,
        "child",
        &ct,
        &[
            "session",
            "report",
            "scope_sub_delegated",
            "--sub-session",
            "grandchild",
            "--scope",
            "src/db/**",
        ],
    );
    // A report needs the child's own token.
    let out = act(&d, "child", &pt, &["session", "report", "turn_ended"]);
    assert!(!out.status.success());
    assert_eq!(
        inbox(&d, "parent", &pt),
        [
            "report.turn_ended",
            "report.errored",
            "report.scope_sub_delegated"
        ]
    );
    let children = &session(&d, "parent")["children"];
    assert_eq!(children["grandchild"]["via"], "child");
    assert_eq!(children["grandchild"]["scope"][0], "src/db/**");

    // The notification's body says what happened.
    let bodies = act_ok(&d, "parent", &pt, &["--json", "inbox", "read"]);
    assert!(bodies.contains("cargo test failed"), "{bodies}");

    // shut_down: the child leaves the registry; repeats and a late
    // turn_ended change nothing and are no error.
    act_ok(&d, "child", &ct, &["session", "report", "shut_down"]);
    act_ok(&d, "child", &ct, &["session", "report", "shut_down"]);
    act_ok(&d, "child", &ct, &["session", "report", "turn_ended"]);
    let children = &session(&d, "parent")["children"];
    assert!(children.get("child").is_none() && children.get("grandchild").is_none());
    assert_eq!(
        inbox(&d, "parent", &pt)
            .iter()
            .filter(|k| k.as_str() == "report.shut_down")
            .count(),
        1
    );
    // The human line of every report kind.
    let text = d.ok(&[
        "events",
        "--since",
        "start",
        "--no-follow",
        "--kind",
        "session.report",
    ]);
    for want in [
        "child -> parent: turn ended",
        "child -> parent: errored: cargo test failed",
        "child -> parent: delegated src/db/** to grandchild",
        "child -> parent: shut down",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn a_delegated_scope_returns_when_the_child_ends() {
    let d = Daemon::start(&[]);
    let pt = register(&d, "lead", None);
    let ct = register(&d, "helper", Some("lead"));
    let st = register(&d, "stranger", None);
    act_ok(&d, "lead", &pt, &["lock", "acquire", "src/**"]);
    // The conflict rule: a path under a held pattern is taken.
    let out = act(&d, "stranger", &st, &["lock", "acquire", "src/main.rs"]);
    assert_eq!(out.status.code(), Some(4), "lock_held exits 4");
    act_ok(
        &d,
        "lead",
        &pt,
        &["lock", "delegate", "src/db/**", "--to", "helper"],
    );
    act_ok(&d, "helper", &ct, &["lock", "acquire", "src/db/schema.sql"]);
    let out = act(&d, "lead", &pt, &["lock", "acquire", "src/db/other.sql"]);
    assert_eq!(out.status.code(), Some(4), "the lead gave src/db/** away");
    act_ok(&d, "helper", &ct, &["session", "dereg"]);
    let events = d.all_events();
    let returned = events.iter().any(|e| {
        e["tx_kind"] == "lock.release"
            && e["payload"]["resource"] == "src/db/**"
            && e["payload"]["reason"] == "returned"
    });
    assert!(returned, "the delegated scope went back to the lead");
    act_ok(&d, "lead", &pt, &["lock", "acquire", "src/db/other.sql"]);
    assert!(inbox(&d, "lead", &pt).contains(&"report.shut_down".to_string()));
}

#[test]
fn three_levels_across_two_daemons() {
    let mut top = Daemon::start(&[]);
    let top_socket = top.socket.to_string_lossy().into_owned();
    let mut mid = Daemon::start(&["--parent-socket", &top_socket]);
    let gt = register(&top, "gp", None);
    // p lives on the second daemon; its parent gp on the first.
    let pt = register(&mid, "p", Some("gp"));
    let ct = register(&mid, "c", Some("p"));

    // Level 3 -> 2, inside one daemon.
    act_ok(&mid, "c", &ct, &["session", "report", "turn_ended"]);
    assert_eq!(inbox(&mid, "p", &pt), ["report.turn_ended"]);

    // Level 2 -> 1, across daemons: a delegation is reported up.
    act_ok(&mid, "p", &pt, &["lock", "acquire", "src/**"]);
    act_ok(
        &mid,
        "p",
        &pt,
        &["lock", "delegate", "src/db/**", "--to", "c"],
    );
    wait_until("the forwarded delegation", Duration::from_secs(10), || {
        inbox(&top, "gp", &gt).contains(&"report.scope_sub_delegated".to_string())
    });
    let children = &session(&top, "gp")["children"];
    assert_eq!(children["c"]["via"], "p", "gp knows its grandchild");
    act_ok(&mid, "p", &pt, &["session", "report", "turn_ended"]);
    wait_until("the forwarded turn", Duration::from_secs(10), || {
        inbox(&top, "gp", &gt).contains(&"report.turn_ended".to_string())
    });
    let forwarded: Vec<Value> = top
        .all_events()
        .into_iter()
        .filter(|e| e["tx_kind"] == "session.report")
        .collect();
    assert!(
        forwarded.iter().all(|e| e["source"] == "peer"),
        "{forwarded:?}"
    );

    // A repeated delivery (same tx_id) appends nothing.
    let mid_report = mid
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "session.report" && e["session_id"] == "p")
        .expect("p's report");
    let admin = std::fs::read_to_string(format!("{top_socket}.admin-token")).expect("admin");
    let body = serde_json::json!({
        "parent_session": "gp",
        "kind": mid_report["payload"]["kind"],
        "sub_session": mid_report["payload"]["sub_session"],
        "scope": mid_report["payload"]["scope"],
        "tx_id": mid_report["tx_id"],
    })
    .to_string();
    let before = top.head();
    let r = top.http(
        "POST",
        "/v1/sessions/p/report",
        &[("coord-admin-token", admin.trim())],
        Some(body.as_bytes()),
    );
    assert_eq!(r.header("coord-replayed"), Some("true"));
    assert_eq!(top.head(), before);

    // Level 3 ends: its scope returns to p, p hears of it.
    act_ok(&mid, "c", &ct, &["session", "dereg"]);
    assert!(inbox(&mid, "p", &pt).contains(&"report.shut_down".to_string()));

    // The top daemon goes down: p's report is committed at once, the
    // forwarder only warns.
    top.terminate();
    let started = Instant::now();
    act_ok(&mid, "p", &pt, &["session", "report", "turn_ended"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("the forwarder's warning", Duration::from_secs(10), || {
        mid.log().contains("cannot forward a report")
    });
    act_ok(&mid, "p", &pt, &["session", "heartbeat"]);
    mid.terminate();
}
