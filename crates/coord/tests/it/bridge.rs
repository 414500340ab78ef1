//! The legacy bridge: a daemon turns a legacy coord root into events, keeps
//! following it, and registers nothing twice across a restart.

use crate::support::Daemon;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

fn fixture_copy(d: &Daemon) -> std::path::PathBuf {
    let root = d.dir.path().join("legacy");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/legacy/coord-root"),
        &root,
    );
    root
}

fn wait_for(d: &Daemon, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = d.all_events();
        if f(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {events:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["tx_kind"] == kind).count()
}

fn start_bridged(mode: &str) -> (Daemon, std::path::PathBuf) {
    // The root must exist before the daemon starts: make the daemon's temp
    // dir first, then restart it with the bridge.
    let mut d = Daemon::start(&[]);
    let root = fixture_copy(&d);
    d.terminate();
    std::fs::remove_file(&d.store).ok();
    for suffix in ["-wal", "-shm"] {
        let mut p = d.store.as_os_str().to_owned();
        p.push(suffix);
        std::fs::remove_file(p).ok();
    }
    let d = Daemon::start_in(
        d,
        &[
            "--legacy-root",
            root.to_str().unwrap_or(""),
            "--legacy-mode",
            mode,
            "--legacy-interval",
            "100ms",
        ],
    );
    (d, root)
}

#[test]
fn the_bridge_imports_a_root_follows_it_and_survives_a_restart() {
    let (mut d, root) = start_bridged("poll");
    let events = wait_for(&d, "the fixture", |e| count(e, "dispatch.issue") == 1);
    assert_eq!(count(&events, "session.register"), 3);
    assert_eq!(count(&events, "lock.acquire"), 2);
    assert_eq!(count(&events, "inbox.deliver"), 2);
    assert!(
        events
            .iter()
            .all(|e| e["source"] == "fs-poll" || e["tx_kind"] == "session.state"),
        "{events:?}"
    );
    let snap = d.http("GET", "/v1/snapshot", &[], None).json();
    assert_eq!(
        snap["view"]["sessions"]["claude-pid-1"]["source"],
        "fs-poll"
    );
    assert_eq!(
        snap["view"]["sessions"]["claude-pid-1"]["role"],
        "coordinator"
    );
    assert_eq!(
        snap["view"]["locks"]["src/main.rs"]["holders"][0]["session_id"],
        "claude-pid-91952"
    );
    assert_eq!(snap["view"]["orders"]["ord-17"]["ticket"], "TOD-482");

    // A heartbeat with a new phase, a consumed message.
    let s1 = root.join("sessions/claude-pid-1.json");
    let body = std::fs::read_to_string(&s1)
        .expect("read")
        .replace("\"planning\"", "\"reviewing\"");
    std::fs::write(&s1, body).expect("write");
    std::fs::remove_file(
        root.join("messages/inbox-claude-pid-91952/01JABC0000000000000000MSG1.json"),
    )
    .expect("rm");
    let events = wait_for(&d, "heartbeat and ack", |e| {
        count(e, "session.heartbeat") == 1 && count(e, "inbox.ack") == 1
    });
    let hb = events
        .iter()
        .find(|e| e["tx_kind"] == "session.heartbeat")
        .expect("hb");
    assert_eq!(hb["payload"]["phase"], "reviewing");

    // Restart; meanwhile a session (holding db/schema.sql) goes away.
    d.terminate();
    std::fs::remove_file(root.join("sessions/claude-pid-2277.json")).expect("rm");
    d.restart();
    let events = wait_for(&d, "the removed session", |e| {
        count(e, "session.dereg") == 1
    });
    assert_eq!(
        count(&events, "session.register"),
        3,
        "a restart registered sessions again"
    );
    assert_eq!(
        count(&events, "inbox.deliver"),
        2,
        "a restart delivered mail again"
    );
    assert_eq!(count(&events, "dispatch.issue"), 1);
    let dereg = events
        .iter()
        .find(|e| e["tx_kind"] == "session.dereg")
        .expect("dereg");
    assert_eq!(dereg["session_id"], "claude-pid-2277");
    assert_eq!(dereg["payload"]["reason"], "removed");
    let release = events
        .iter()
        .find(|e| e["tx_kind"] == "lock.release")
        .expect("release");
    assert_eq!(release["resource"], "db/schema.sql");
}

#[test]
fn the_watching_bridge_sees_a_new_session_file() {
    let (d, root) = start_bridged("watch");
    wait_for(&d, "the fixture", |e| count(e, "dispatch.issue") == 1);
    std::fs::write(
        root.join("sessions/.new.json.tmp"),
        r#"{"session_id":"claude-pid-7","role":"worker","task":"TOD-7","phase":"planning","pid":7}"#,
    )
    .expect("write");
    std::fs::rename(
        root.join("sessions/.new.json.tmp"),
        root.join("sessions/claude-pid-7.json"),
    )
    .expect("rename");
    let events = wait_for(&d, "the new session", |e| count(e, "session.register") == 4);
    let reg = events
        .iter()
        .rfind(|e| e["tx_kind"] == "session.register")
        .expect("reg");
    assert_eq!(reg["session_id"], "claude-pid-7");
    assert_eq!(reg["source"], "fs-watch");
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

fn wait_file(p: &Path, gone: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.exists() == gone {
        assert!(
            Instant::now() < deadline,
            "{} {}",
            p.display(),
            if gone { "still there" } else { "never came" }
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn coord_export_writes_the_view_in_the_legacy_layout() {
    let d = Daemon::start(&[]);
    let a = d.register("api-1");
    d.register("api-2");
    let env = [
        ("COORD_SESSION", "api-1"),
        ("COORD_SESSION_TOKEN", a.as_str()),
    ];
    assert!(d
        .coord_env(&["lock", "acquire", "docs/api v2.md"], &env)
        .status
        .success());
    assert!(d
        .coord_env(&["send", "api-2", "hello there", "--kind", "note"], &env)
        .status
        .success());
    d.ok(&["dispatch", "issue", "api-2", "TOD-9", "--id", "ord-9"]);
    let root = d.dir.path().join("export");
    let out = d.ok(&["export", "--legacy-root", root.to_str().unwrap_or("")]);
    assert!(out.contains("5 written"), "{out}");
    assert_eq!(
        read_json(&root.join("sessions/api-1.json"))["session_id"],
        "api-1"
    );
    let lock = read_json(&root.join("locks/docs%2Fapi%20v2.md/record.json"));
    assert_eq!(
        (lock["resource"].as_str(), lock["owner_session"].as_str()),
        (Some("docs/api v2.md"), Some("api-1"))
    );
    let inbox = root.join("messages/inbox-api-2");
    let msg = std::fs::read_dir(&inbox)
        .expect("inbox")
        .flatten()
        .next()
        .expect("a message");
    let m = read_json(&msg.path());
    assert_eq!(
        (m["body"].as_str(), m["from_session"].as_str()),
        (Some("hello there"), Some("api-1"))
    );
    assert_eq!(
        read_json(&root.join("dispatch-orders/ord-9.json"))["ticket"],
        "TOD-9"
    );
    // Exporting needs the admin token: without it, a clear error.
    let r = d.http(
        "POST",
        "/v1/admin/export",
        &[],
        Some(br#"{"legacy_root":"/tmp/x"}"#),
    );
    assert_eq!(r.code(), "admin_required");
}

#[test]
fn import_and_export_on_one_root_do_not_feed_back() {
    let (d, root) = {
        let mut d = Daemon::start(&[]);
        let root = fixture_copy(&d);
        d.terminate();
        let r = root.to_str().unwrap_or("").to_string();
        let d = Daemon::start_in(
            d,
            &[
                "--legacy-root",
                &r,
                "--legacy-mode",
                "watch",
                "--export-legacy",
                &r,
            ],
        );
        (d, root)
    };
    wait_for(&d, "the fixture", |e| count(e, "dispatch.issue") == 1);
    let tok = d.register("api-1");
    let env = [
        ("COORD_SESSION", "api-1"),
        ("COORD_SESSION_TOKEN", tok.as_str()),
    ];
    assert!(d
        .coord_env(&["lock", "acquire", "README.md"], &env)
        .status
        .success());
    assert!(d
        .coord_env(&["session", "heartbeat", "--phase", "testing"], &env)
        .status
        .success());
    // The API session, its lock and a message to a legacy peer are exported.
    wait_file(&root.join("sessions/api-1.json"), false);
    wait_file(&root.join("locks/README.md/record.json"), false);
    assert!(d
        .coord_env(&["send", "claude-pid-1", "from the API"], &env)
        .status
        .success());
    let inbox = root.join("messages/inbox-claude-pid-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let files: Vec<_> = std::fs::read_dir(&inbox)
            .expect("inbox")
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with("01JABC0000000000000000MSG2.json"))
            .collect();
        if let Some(f) = files
            .into_iter()
            .find(|p| p.extension().is_some_and(|x| x == "json"))
        {
            break f;
        }
        assert!(Instant::now() < deadline, "message not exported");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(read_json(&exported)["body"], "from the API");
    // Give the watcher time to see the exported files, then check nothing
    // came back in through the bridge.
    std::thread::sleep(Duration::from_millis(500));
    let events = d.all_events();
    let echoed: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["source"] == "fs-watch"
                && (e["session_id"] == "api-1"
                    || e["tx_kind"] == "inbox.deliver" && e["payload"]["from_session"] == "api-1")
        })
        .collect();
    assert!(echoed.is_empty(), "exported files fed back: {echoed:?}");
    assert_eq!(count(&events, "inbox.deliver"), 3);
    // The legacy peer consumes the message: the bridge records the ack.
    std::fs::remove_file(&exported).expect("consume");
    wait_for(&d, "the ack", |e| count(e, "inbox.ack") == 1);
    // The API session ends: its exported files go.
    assert!(d.coord_env(&["session", "dereg"], &env).status.success());
    wait_file(&root.join("sessions/api-1.json"), true);
    wait_file(&root.join("locks/README.md/record.json"), true);
    // The legacy files were never touched.
    assert!(root.join("sessions/claude-pid-1.json").exists());
    assert!(root.join("locks/src%2Fmain.rs/record.json").exists());
}
