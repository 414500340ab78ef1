//! Cursors cannot silently lose events: a cursor past the head is an
//! error naming the head, every log has an identity and a cursor from
//! another log is refused, and followers notice a daemon that went away
//! and resume where they were. Each at the level the problem was found: a
//! real daemon, the real CLI.

use crate::support::*;
use crate::truth::stderr;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_cursor_past_the_head_is_an_error_naming_the_head() {
    let d = Daemon::start(&[]);
    post(&d, "/v1/events", None, &json!({"tx_kind":"x.one"}));
    for since in ["999999", "18446744073709551615"] {
        let r = d.http("GET", &format!("/v1/events?since={since}"), &[], None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "cursor_ahead"),
            "{since}"
        );
        assert_eq!(r.json()["error"]["head_seq"], 1);
    }
    let out = d.coord(&["events", "--since", "999999"]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("past the head of this log (seq 1"),
        "{}",
        stderr(&out)
    );
    // The head itself is a valid cursor.
    let out = d.coord(&["events", "--since", "1", "--no-follow"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn every_log_has_an_identity_and_cursors_from_another_log_are_refused() {
    let a = Daemon::start(&[]);
    let b = Daemon::start(&[]);
    let status = a.http("GET", "/v1/status", &[], None);
    let id_a = status.json()["log_id"]
        .as_str()
        .expect("log_id")
        .to_string();
    assert_eq!(id_a.len(), 26);
    assert_eq!(status.header("coord-log-id"), Some(id_a.as_str()));
    let id_b = b.http("GET", "/v1/status", &[], None).json()["log_id"]
        .as_str()
        .expect("log_id")
        .to_string();
    assert_ne!(id_a, id_b);
    let r = b.http(
        "GET",
        &format!("/v1/events?since=0&log_id={id_a}"),
        &[],
        None,
    );
    assert_eq!((r.status, r.code().as_str()), (409, "log_mismatch"));
    assert_eq!(r.json()["error"]["log_id"], id_b.as_str());
    let r = b.http(
        "GET",
        &format!("/v1/events?since=0&follow=false&log_id={id_b}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);

    // Sentinels: the default cursor file is per log, so a sentinel that
    // followed A does not skip B's first events.
    let state_home = tempfile::tempdir().expect("state home");
    let sentinel = |d: &Daemon, out: &std::path::Path, extra: &[&str]| {
        let sink = format!("jsonl:{}", out.display());
        let mut args = vec!["sentinel", "--source", "event-manager", "--sink", &sink];
        args.extend(extra);
        coord_cmd()
            .args(&args)
            .env("COORD_SOCKET", &d.socket)
            .env("XDG_STATE_HOME", state_home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sentinel")
    };
    let stop = |c: std::process::Child| {
        // SAFETY: kill with our child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait_with_output().expect("sentinel exit")
    };
    for i in 0..3 {
        post(
            &a,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.a","payload":{"i":i}}),
        );
    }
    let out_a = a.dir.path().join("a.jsonl");
    let s = sentinel(&a, &out_a, &[]);
    wait_until("sentinel on A", Duration::from_secs(10), || {
        std::fs::read_to_string(&out_a).is_ok_and(|t| t.lines().count() == 3)
    });
    let done = stop(s);
    assert!(
        stderr(&done).contains(&format!("sentinel-{id_a}.cursor")),
        "the sentinel says where its cursor is: {}",
        stderr(&done)
    );
    post(&b, "/v1/events", None, &json!({"tx_kind":"x.b"}));
    let out_b = b.dir.path().join("b.jsonl");
    let s = sentinel(&b, &out_b, &[]);
    wait_until("sentinel on B", Duration::from_secs(10), || {
        std::fs::read_to_string(&out_b).is_ok_and(|t| t.lines().count() == 1)
    });
    stop(s);
    // An explicit cursor file of A used against B is refused.
    let cursor_a = state_home
        .path()
        .join("coord")
        .join(format!("sentinel-{id_a}.cursor"));
    let state_arg = format!("{}", cursor_a.display());
    let s = sentinel(&b, &out_b, &["--state-file", &state_arg]);
    let out = s.wait_with_output().expect("sentinel");
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("saved from log {id_a}")),
        "{}",
        stderr(&out)
    );
}

/// `coord events --reconnect` and `coord inbox read --follow --reconnect`
/// notice a daemon that went away, say so, and resume after their last seq
/// when it is back: nothing lost, nothing twice.
#[test]
fn followers_notice_a_daemon_that_went_away_and_resume() {
    let mut d = Daemon::start(&[]);
    let tok = d.register("reader");
    let f = Follower::start(&d, &["--since", "start", "--reconnect"]);
    let inbox = coord_cmd()
        .args([
            "inbox",
            "read",
            "--follow",
            "--reconnect",
            "--ack",
            "--session",
            "reader",
            "--token",
            &tok,
        ])
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("inbox follower");
    d.ok(&["send", "reader", "first"]);
    post(&d, "/v1/events", None, &json!({"tx_kind":"x.before"}));
    let head = d.head();
    f.wait_for_seq(head, Duration::from_secs(10));
    // Both followers are on their streams before the daemon goes: on a
    // loaded machine the inbox follower can still be starting, and one
    // that first connects after the restart has nothing to notice.
    wait_until("both followers streaming", Duration::from_secs(20), || {
        d.http("GET", "/v1/status", &[], None).json()["subscribers"].as_u64() == Some(2)
    });

    d.kill9();
    f.wait_for_stderr("lost the daemon", Duration::from_secs(10));
    d.restart();
    f.wait_for_stderr("reconnected", Duration::from_secs(20));
    d.ok(&["send", "reader", "second"]);
    post(&d, "/v1/events", None, &json!({"tx_kind":"x.after"}));
    let head = d.head();
    let lines = f.wait_for_seq(head, Duration::from_secs(20));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_gap_free(&events, 1);

    // The inbox follower printed each message once, across the restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let acked = loop {
        let listed = d.coord(&["inbox", "list", "--session", "reader", "--token", &tok]);
        let unacked = listed
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            - 1;
        if unacked == 0 {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(inbox.id() as i32, libc::SIGTERM) };
    let out = inbox.wait_with_output().expect("inbox");
    assert!(
        acked,
        "the inbox follower did not ack both messages: {} / {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": first").count(), 1, "{text}");
    assert_eq!(text.matches(": second").count(), 1, "{text}");
    // It said so: as a lost stream, or (if the daemon went while it was
    // still opening its stream) as a daemon it keeps trying to reach.
    let said = stderr(&out);
    assert!(
        said.contains("lost the daemon") || said.contains("retrying"),
        "{said}"
    );
}
