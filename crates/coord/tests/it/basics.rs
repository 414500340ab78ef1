//! Sessions, leases, pidfd, inbox, dispatch, SSE and the daemon's life
//! cycle, each through the real CLI or raw HTTP.

use crate::support::{bin, coord_cmd, post, wait_until, Daemon, Follower};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kinds of a session's events, lifecycle transitions left out (their
/// timing is the lifecycle tests' subject).
fn kinds_of(d: &Daemon, session: &str) -> Vec<String> {
    d.all_events()
        .iter()
        .filter(|e| e["session_id"] == session && e["tx_kind"] != "session.state")
        .map(|e| e["tx_kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn an_expired_lease_deregisters_and_releases_and_heartbeats_keep_it() {
    let d = Daemon::start(&[]);
    let out = d.ok(&[
        "--json", "session", "register", "--id", "lazy", "--ttl", "1s",
    ]);
    let tok: serde_json::Value = serde_json::from_str(&out).expect("json");
    let tok = tok["token"].as_str().expect("token").to_string();
    let env = [
        ("COORD_SESSION", "lazy"),
        ("COORD_SESSION_TOKEN", tok.as_str()),
    ];
    assert!(d
        .coord_env(&["lock", "acquire", "db"], &env)
        .status
        .success());
    let busy = d.register("busy");
    let benv = [
        ("COORD_SESSION", "busy"),
        ("COORD_SESSION_TOKEN", busy.as_str()),
    ];
    let out = d.ok(&[
        "--json", "session", "register", "--id", "alive", "--ttl", "3s",
    ]);
    let alive: serde_json::Value = serde_json::from_str(&out).expect("json");
    let alive = alive["token"].as_str().expect("token").to_string();
    let aenv = [
        ("COORD_SESSION", "alive"),
        ("COORD_SESSION_TOKEN", alive.as_str()),
    ];
    // busy queues for the lock; the lease timer frees it, no polling.
    let waiter = std::thread::scope(|s| {
        let h = s.spawn(|| d.coord_env(&["lock", "acquire", "db", "--wait", "20s"], &benv));
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1800) {
            assert!(d
                .coord_env(&["session", "heartbeat"], &aenv)
                .status
                .success());
            std::thread::sleep(Duration::from_millis(200));
        }
        h.join().expect("join")
    });
    assert!(
        waiter.status.success(),
        "{}",
        String::from_utf8_lossy(&waiter.stderr)
    );
    assert_eq!(d.coord(&["session", "show", "lazy"]).status.code(), Some(6));
    assert!(
        d.coord(&["session", "show", "alive"]).status.success(),
        "heartbeats did not keep the lease"
    );
    let events = d.all_events();
    let dereg = events
        .iter()
        .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == "lazy")
        .expect("dereg");
    assert_eq!(dereg["payload"]["reason"], "expired");
    assert_eq!(dereg["source"], "lifecycle");
    let release = events
        .iter()
        .find(|e| e["tx_kind"] == "lock.release")
        .expect("release");
    assert_eq!(release["payload"]["reason"], "owner_gone");
}

#[test]
fn a_watched_process_exit_deregisters_at_once_through_the_pidfd() {
    let d = Daemon::start(&[]);
    let mut child = Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = child.id().to_string();
    d.ok(&[
        "session", "register", "--id", "proc", "--pid", &pid, "--ttl", "1h",
    ]);
    child.kill().expect("kill");
    wait_until("process_exited dereg", Duration::from_secs(10), || {
        d.coord(&["session", "show", "proc"]).status.code() == Some(6)
    });
    let _ = child.wait();
    let dereg = d
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "session.dereg")
        .expect("dereg");
    assert_eq!(dereg["payload"]["reason"], "process_exited");
}

#[test]
fn session_run_exports_the_session_and_exits_with_the_command_code() {
    let d = Daemon::start(&[]);
    let script = format!(
        "{bin} lock acquire build && {bin} send $COORD_SESSION hello-self && exit 3",
        bin = bin()
    );
    let out = d.coord(&[
        "session", "run", "--id", "runner", "--", "sh", "-c", &script,
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = d.all_events();
    let kinds = kinds_of(&d, "runner");
    assert_eq!(
        kinds,
        [
            "session.register",
            "lock.acquire",
            "inbox.deliver",
            "lock.release",
            "session.dereg"
        ],
        "{events:?}"
    );
    let reg = &events[0];
    assert!(reg["payload"]["pid"].as_u64().is_some());
    let dereg = events.last().expect("dereg");
    assert_eq!(dereg["payload"]["exit_code"], 3, "{dereg}");
}

#[test]
fn inbox_and_dispatch_round_trip() {
    let d = Daemon::start(&[]);
    let boss = d.register("boss");
    let w = d.register("worker");
    let wenv = [
        ("COORD_SESSION", "worker"),
        ("COORD_SESSION_TOKEN", w.as_str()),
    ];
    let benv = [
        ("COORD_SESSION", "boss"),
        ("COORD_SESSION_TOKEN", boss.as_str()),
    ];
    assert!(d
        .coord_env(
            &[
                "send",
                "worker",
                "please review",
                "--kind",
                "review-request"
            ],
            &benv
        )
        .status
        .success());
    let listed = d.coord_env(&["--json", "inbox", "list"], &wenv);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let msg = v["messages"][0]["msg_id"]
        .as_str()
        .expect("msg")
        .to_string();
    assert_eq!(v["messages"][0]["from_session"], "boss");
    let read = d.coord_env(&["inbox", "read", &msg, "--ack"], &wenv);
    assert!(String::from_utf8_lossy(&read.stdout).contains("please review"));
    assert_eq!(
        d.coord_env(&["inbox", "ack", &msg], &wenv).status.code(),
        Some(6)
    );

    // The worker waits; the order arrives; ack and complete.
    let waiter = std::thread::scope(|s| {
        let h = s.spawn(|| {
            d.coord_env(
                &["--json", "dispatch", "wait", "--timeout", "20s", "--ack"],
                &wenv,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(d
            .coord_env(
                &["dispatch", "issue", "worker", "TOD-9", "--id", "ord-9"],
                &benv
            )
            .status
            .success());
        h.join().expect("join")
    });
    assert!(
        waiter.status.success(),
        "{}",
        String::from_utf8_lossy(&waiter.stderr)
    );
    let o: serde_json::Value = serde_json::from_slice(&waiter.stdout).expect("order");
    assert_eq!(o["order_id"], "ord-9");
    // Only the assignee may complete it.
    assert_eq!(
        d.coord_env(&["dispatch", "complete", "ord-9"], &benv)
            .status
            .code(),
        Some(4)
    );
    assert!(d
        .coord_env(
            &["dispatch", "complete", "ord-9", "--result", "{\"ok\":true}"],
            &wenv
        )
        .status
        .success());
    let timeout = d.coord_env(&["dispatch", "wait", "--timeout", "200ms"], &wenv);
    assert_eq!(timeout.status.code(), Some(5));
    let kinds: Vec<String> = d
        .all_events()
        .iter()
        .map(|e| e["tx_kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        kinds.ends_with(&[
            "dispatch.issue".into(),
            "dispatch.ack".into(),
            "dispatch.complete".into()
        ]),
        "{kinds:?}"
    );
}

#[test]
fn sse_carries_seq_as_id_and_resumes_from_last_event_id() {
    let d = Daemon::start(&[]);
    for i in 0..3 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.n","payload":{"i":i}}),
        );
    }
    let r = d.http(
        "GET",
        "/v1/events?since=0&follow=false",
        &[("Accept", "text/event-stream")],
        None,
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        body.starts_with("id: 1\nevent: x.n\ndata: {\"seq\":1,"),
        "{body}"
    );
    assert_eq!(body.matches("\n\n").count(), 3);
    let r = d.http(
        "GET",
        "/v1/events?follow=false",
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "2")],
        None,
    );
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.starts_with("id: 3\n"), "{body}");
    // Filters: kinds globs, session, resource.
    let tok = d.register("f");
    post(
        &d,
        "/v1/locks/acquire",
        Some(&tok),
        &json!({"session_id":"f","resource":"a/b"}),
    );
    let r = d.http(
        "GET",
        "/v1/events?since=0&follow=false&kinds=lock.*,session.*&resource=a/b",
        &[],
        None,
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tx_kind"], "lock.acquire");
}

#[test]
fn sigterm_ends_streams_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start(&[]);
    let mut f = Follower::start(&d, &["--since", "start"]);
    post(&d, "/v1/events", None, &json!({"tx_kind":"x.one"}));
    f.wait_for_seq(1, Duration::from_secs(10));
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}: {}", d.log());
    // The follower notices: it says the daemon closed the stream (a clean
    // end, not a broken one) and, not reconnecting, exits 3.
    let (st, err) = f.finish();
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(
        err.contains("the daemon closed the stream") && err.contains("after seq 1"),
        "the stream did not end cleanly: {err}"
    );
    assert!(!d.socket.exists(), "socket left behind");
    // A stale socket file (from a SIGKILLed daemon) does not stop a restart.
    d.restart();
    d.kill9();
    assert!(d.socket.exists());
    d.restart();
    assert_eq!(d.head(), 1);
}

#[test]
fn a_second_daemon_is_refused_on_the_socket_and_on_the_store() {
    let d = Daemon::start(&[]);
    let out = coord_cmd()
        .args(["daemon", "--store"])
        .arg(d.dir.path().join("other.db"))
        .arg("--socket")
        .arg(&d.socket)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = coord_cmd()
        .args(["daemon", "--store"])
        .arg(&d.store)
        .arg("--socket")
        .arg(d.dir.path().join("s").join("other.sock"))
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another coord daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first one still serves.
    assert!(d.coord(&["status"]).status.success());
}

#[test]
fn lock_ttls_expire_on_a_timer_and_shared_holders_coexist() {
    let d = Daemon::start(&[]);
    let a = d.register("ttl-a");
    let b = d.register("ttl-b");
    let c = d.register("ttl-c");
    let env = |id: &'static str, tok: &str| -> Vec<(&'static str, String)> {
        vec![
            ("COORD_SESSION", id.to_string()),
            ("COORD_SESSION_TOKEN", tok.to_string()),
        ]
    };
    let run = |args: &[&str], e: &[(&'static str, String)]| {
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.coord_env(args, &e)
    };
    assert!(run(
        &["lock", "acquire", "cache", "--ttl", "300ms"],
        &env("ttl-a", &a)
    )
    .status
    .success());
    // b waits; the TTL timer releases a's hold and b gets it.
    let got = run(
        &["lock", "acquire", "cache", "--wait", "20s"],
        &env("ttl-b", &b),
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let release = d
        .all_events()
        .into_iter()
        .find(|e| e["tx_kind"] == "lock.release")
        .expect("release");
    assert_eq!(release["payload"]["reason"], "expired");
    assert_eq!(release["payload"]["owner_session"], "ttl-a");

    // Shared holders coexist; an exclusive request is refused meanwhile.
    assert!(
        run(&["lock", "acquire", "docs", "--shared"], &env("ttl-a", &a))
            .status
            .success()
    );
    assert!(
        run(&["lock", "acquire", "docs", "--shared"], &env("ttl-c", &c))
            .status
            .success()
    );
    assert_eq!(
        run(&["lock", "acquire", "docs"], &env("ttl-b", &b))
            .status
            .code(),
        Some(4)
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "lock", "list"])).expect("json");
    let docs = v["locks"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["resource"] == "docs"))
        .expect("docs lock");
    assert_eq!(docs["mode"], "shared");
    assert_eq!(docs["holders"].as_array().map(Vec::len), Some(2));
}

#[test]
fn inbox_read_follow_prints_old_and_new_mail_once() {
    use std::io::{BufRead, BufReader};
    let d = Daemon::start(&[]);
    let tok = d.register("reader");
    d.register("writer");
    assert!(d.ok(&["send", "reader", "before"]).contains("sent"));
    let mut child = coord_cmd()
        .args(["inbox", "read", "--follow", "--ack"])
        .env("COORD_SOCKET", &d.socket)
        .env("COORD_SESSION", "reader")
        .env("COORD_SESSION_TOKEN", &tok)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reader");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("old mail");
    assert!(first.ends_with(": before"), "{first}");
    d.ok(&["send", "reader", "after", "--kind", "note"]);
    let second = rx.recv_timeout(Duration::from_secs(10)).expect("new mail");
    assert!(second.contains("note from -: after"), "{second}");
    // Both are acked right after they are printed.
    let env = [
        ("COORD_SESSION", "reader"),
        ("COORD_SESSION_TOKEN", tok.as_str()),
    ];
    wait_until("both acks", Duration::from_secs(10), || {
        let out = d.coord_env(&["--json", "inbox", "list"], &env);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["messages"] == json!([]))
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A lock TTL counts from the grant by the daemon's clock, also after a
/// restart: a client `ts` far in the past must not make the restarted
/// daemon expire the lock at once (it did: restore used the client's ts).
#[test]
fn a_lock_ttl_counts_from_the_grant_across_a_restart() {
    let mut d = Daemon::start(&[]);
    let tok = d.register("ttl");
    let an_hour_ago = coord_proto::Timestamp(coord_proto::Timestamp::now().as_millis() - 3_600_000);
    let r = post(
        &d,
        "/v1/locks/acquire",
        Some(&tok),
        &json!({"session_id":"ttl","resource":"t/r","ttl_ms":60_000,"ts":an_hour_ago.to_string()}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let status = d.terminate();
    assert!(status.success());
    d.restart();
    // Give an (erroneous) immediate expiry time to commit.
    std::thread::sleep(Duration::from_millis(300));
    let locks = d.http("GET", "/v1/locks", &[], None).json();
    assert_eq!(
        locks["locks"][0]["holders"][0]["session_id"], "ttl",
        "the lock expired at restart: {locks}"
    );
}

/// Issue 34 item 11: `coord daemon -h` leads with the common flags; the
/// tuning knobs come last, each in one line.
#[test]
fn daemon_help_leads_with_the_common_flags() {
    let out = crate::support::coord_cmd()
        .args(["daemon", "-h"])
        .output()
        .expect("coord");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let at = |flag: &str| {
        text.find(flag)
            .unwrap_or_else(|| panic!("no {flag} in {text}"))
    };
    assert!(at("--store") < at("--http <"), "{text}");
    assert!(at("--http <") < at("Limits and tuning:"), "{text}");
    assert!(at("Limits and tuning:") < at("--threads"), "{text}");
    let threads = text
        .lines()
        .find(|l| l.contains("--threads"))
        .expect("threads");
    assert!(threads.len() < 160, "a short line under -h: {threads}");
}
