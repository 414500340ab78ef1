//! Dispatch orders to the dead: an order whose assignee ends becomes
//! `orphaned` for its issuer to see; the issuer (or the admin) reassigns or
//! cancels it; nobody else may. Real daemon, real CLI, real processes.

use crate::support::*;
use std::time::Duration;

fn order(d: &Daemon, id: &str) -> serde_json::Value {
    json_of(&d.coord(&["--json", "dispatch", "list"]))["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .find(|o| o["order_id"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// The reproduction and the way out of it: `w1`, run by `coord
/// session run`, dies with an order open; the order is orphaned in the
/// commit that ends it, its issuer (following its own events) is told,
/// reassigns it to `w2` (whose `dispatch wait` wakes), and cancels
/// another; a third session may do neither.
#[test]
fn an_order_to_the_dead_is_orphaned_then_reassigned_or_cancelled() {
    let d = Daemon::start(&[]);
    let lead = d.register("lead");
    let w2 = d.register("w2");
    let other = d.register("other");
    let lead_env = [
        ("COORD_SESSION", "lead"),
        ("COORD_SESSION_TOKEN", lead.as_str()),
    ];
    let w2_env = [
        ("COORD_SESSION", "w2"),
        ("COORD_SESSION_TOKEN", w2.as_str()),
    ];
    let other_env = [
        ("COORD_SESSION", "other"),
        ("COORD_SESSION_TOKEN", other.as_str()),
    ];
    let run = |args: &[&str], env: &[(&str, &str)]| d.coord_env(args, env);

    // The lead follows what concerns it.
    let follower = Follower::start(&d, &["--session", "lead", "--since", "now"]);
    let mut w1 = coord_cmd()
        .args(["session", "run", "--id", "w1", "--", "sleep", "600"])
        .env("COORD_SOCKET", &d.socket)
        .spawn()
        .expect("session run");
    wait_until("w1 registered", Duration::from_secs(20), || {
        d.coord(&["session", "show", "w1"]).status.success()
    });
    for id in ["ord-a", "ord-b"] {
        let out = run(&["dispatch", "issue", "w1", "TOD-1", "--id", id], &lead_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    w1.kill().expect("kill -9 w1's wrapper");
    w1.wait().expect("reap");
    wait_until("ord-a orphaned", Duration::from_secs(20), || {
        order(&d, "ord-a")["state"] == "orphaned"
    });
    let orphaned = json_of(&d.coord(&["--json", "dispatch", "list", "--state", "orphaned"]));
    assert_eq!(
        orphaned["orders"].as_array().map(Vec::len),
        Some(2),
        "{orphaned}"
    );
    // The orphaning is in the ending commit, before the dereg, and reaches
    // the issuer's own stream.
    let events = d.all_events();
    let at = |kind: &str, id: &str| {
        events
            .iter()
            .position(|e| {
                e["tx_kind"] == kind && (e["payload"]["order_id"] == id || e["session_id"] == id)
            })
            .unwrap_or_else(|| panic!("no {kind} for {id}"))
    };
    assert!(at("dispatch.orphan", "ord-a") < at("session.dereg", "w1"));
    let told = follower.wait_for_seq(
        events[at("dispatch.orphan", "ord-b")]["seq"]
            .as_u64()
            .expect("seq"),
        Duration::from_secs(20),
    );
    assert!(
        told.iter()
            .any(|l| l.contains("dispatch.orphan") && l.contains("ord-a")),
        "{told:?}"
    );

    // A session that did not issue it may not touch it.
    let refused = run(&["dispatch", "reassign", "ord-a", "--to", "w2"], &other_env);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("issued by lead"));

    // w2 waits; the issuer hands it the order; the wait wakes with it.
    let got = std::thread::scope(|s| {
        let h = s.spawn(|| run(&["--json", "dispatch", "wait", "--timeout", "20s"], &w2_env));
        std::thread::sleep(Duration::from_millis(300));
        let out = run(&["dispatch", "reassign", "ord-a", "--to", "w2"], &lead_env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        h.join().expect("join")
    });
    let got = json_of(&got);
    assert_eq!(got["order_id"], "ord-a");
    assert_eq!(got["assignee"], "w2");
    assert_eq!(got["state"], "issued");

    // The issuer cancels the other; it leaves the view, with its reason in
    // the log.
    let out = run(
        &["dispatch", "cancel", "ord-b", "--reason", "w1 is gone"],
        &lead_env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(order(&d, "ord-b").is_null());
    let cancel = d
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "dispatch.cancel")
        .expect("dispatch.cancel");
    assert_eq!(cancel["payload"]["by_session"], "lead");
    assert_eq!(cancel["payload"]["reason"], "w1 is gone");
    follower.stop();
}

/// An order issued by no session is the admin's to cancel: the CLI outside
/// a session uses the admin token beside the socket.
#[test]
fn the_admin_cancels_an_order_nobody_issued() {
    let d = Daemon::start(&[]);
    d.register("w");
    assert!(d
        .coord(&["dispatch", "issue", "w", "TOD-2", "--id", "ord-c"])
        .status
        .success());
    let out = d.coord(&["--json", "dispatch", "cancel", "ord-c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(order(&d, "ord-c").is_null());
    let again = d.coord(&["dispatch", "cancel", "ord-c"]);
    assert_eq!(
        again.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
