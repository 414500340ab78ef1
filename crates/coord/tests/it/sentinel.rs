//! The sentinel and its sources against a real daemon and real files.

use crate::support::{coord_cmd, post, Daemon, Reaped};
use coord_sentinel::{EventManagerSource, FsPollSource, SentinelEventSource};
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_lines(p: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = lines(p);
        if l.len() >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, wanted {n}",
            p.display(),
            l.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sentinel(d: &Daemon, args: &[&str]) -> Reaped {
    coord_cmd()
        .arg("sentinel")
        .args(args)
        .env("COORD_SOCKET", &d.socket)
        // State files go beside the daemon's, not into the home directory.
        .env("XDG_STATE_HOME", d.dir.path())
        .env_remove("SENTINEL_SOURCE")
        .stdin(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("spawn sentinel")
}

fn stop(mut c: Reaped) {
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let st = c.wait().expect("wait");
    assert!(st.success(), "sentinel exited with {st}");
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/legacy/coord-root")
}

#[test]
fn event_manager_sentinel_resumes_from_its_state_file() {
    let d = Daemon::start(&[]);
    for i in 0..5 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.n","payload":{"i":i}}),
        );
    }
    let out = d.dir.path().join("obs.jsonl");
    let state = d.dir.path().join("sentinel.cursor");
    let sink = format!("jsonl:{}", out.display());
    let args = [
        "--source",
        "event-manager",
        "--sink",
        &sink,
        "--state-file",
        state.to_str().unwrap_or(""),
        "--interval",
        "50ms",
    ];
    let s = sentinel(&d, &args);
    let got = wait_lines(&out, 5);
    let first: serde_json::Value = serde_json::from_str(&got[0]).expect("json");
    assert_eq!(first["kind"], "x.n");
    assert!(
        first["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("x.n")),
        "{first}"
    );
    stop(s);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    let log_id = d.http("GET", "/v1/status", &[], None).json()["log_id"].clone();
    assert_eq!(saved, json!({"cursor": 5, "log_id": log_id}));
    for i in 5..8 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.n","payload":{"i":i}}),
        );
    }
    // SENTINEL_SOURCE picks the source too; the default is event-manager.
    let s = sentinel(
        &d,
        &[
            "--sink",
            &sink,
            "--state-file",
            state.to_str().unwrap_or(""),
            "--interval",
            "50ms",
        ],
    );
    let got = wait_lines(&out, 8);
    stop(s);
    assert_eq!(
        lines(&out).len(),
        8,
        "a restarted sentinel re-emitted old events: {got:?}"
    );
}

#[test]
fn fs_poll_sentinel_observes_the_fixture_and_exec_sinks_survive_failures() {
    let d = Daemon::start(&[]);
    let out = d.dir.path().join("exec.jsonl");
    // The command appends its input and then fails every time.
    let sink = format!("exec:cat >> '{}'; exit 3", out.display());
    let root = fixture();
    let s = sentinel(
        &d,
        &[
            "--source",
            "fs-poll",
            "--coord-root",
            root.to_str().unwrap_or(""),
            "--sink",
            &sink,
            "--interval",
            "100ms",
        ],
    );
    let got = wait_lines(&out, 8);
    stop(s);
    let kinds: Vec<String> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["kind"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(&kinds[..3], ["session.register"; 3]);
    assert_eq!(kinds.last().map(String::as_str), Some("dispatch.issue"));
    let lock: serde_json::Value = serde_json::from_str(&got[3]).expect("json");
    assert_eq!(lock["resource"], "db/schema.sql");
    assert_eq!(
        lock["summary"],
        "claude-pid-2277 took db/schema.sql (exclusive)"
    );
}

/// Polls a future once and drops it: its output if it finished at once
/// (then nothing was cancelled), `None` if it was dropped mid-flight.
fn poll_once_and_drop<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn seqs(v: &[coord_proto::Event]) -> Vec<u64> {
    v.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_loses_nothing_when_a_poll_is_dropped() {
    let d = Daemon::start(&[]);
    for i in 0..3 {
        post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.n","payload":{"i":i}}),
        );
    }
    let client = coord_client::Client::new(d.socket.clone());
    let mut em = EventManagerSource::new(client, d.dir.path().join("c"))
        .expect("source")
        .with_idle_wait(Duration::from_millis(200));
    assert!(
        poll_once_and_drop(em.poll()).is_none(),
        "the first poll must wait for the socket"
    );
    // Dropped at later and later points of the read.
    let mut delivered = Vec::new();
    for micros in [1, 50, 200, 1000] {
        if let Ok(r) = tokio::time::timeout(Duration::from_micros(micros), em.poll()).await {
            // It finished: what it returned counts as delivered.
            delivered = r.expect("poll");
            break;
        }
    }
    if delivered.is_empty() {
        delivered = em.poll().await.expect("poll");
    }
    assert_eq!(seqs(&delivered), [1, 2, 3]);
    assert!(em.poll().await.expect("poll").is_empty());

    let mut fs = FsPollSource::new(fixture());
    assert!(poll_once_and_drop(fs.poll()).is_none());
    assert_eq!(fs.poll().await.expect("poll").len(), 8);

    let (mut mem, handle) = coord_sentinel::InMemorySource::new("mem");
    let events = coord_sentinel::EventManagerSource::new(
        coord_client::Client::new(d.socket.clone()),
        d.dir.path().join("c2"),
    )
    .expect("source")
    .poll()
    .await
    .expect("poll");
    handle.push(events);
    // The in-memory source never waits: a poll either has not started or
    // has returned, so there is nothing to cancel.
    let first = poll_once_and_drop(mem.poll())
        .expect("ready at once")
        .expect("poll");
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert!(mem.poll().await.expect("poll").is_empty());
    assert_eq!(mem.name(), "mem");
}

/// A file sentinel keeps its last handed scan: killed and restarted, it
/// reports only what changed meanwhile — a removal made while it was down
/// included — instead of the whole root again.
#[test]
fn a_file_sentinel_restart_emits_only_what_changed_removals_included() {
    for source in ["fs-poll", "fs-watch"] {
        let d = Daemon::start(&[]);
        let root = d.dir.path().join("root");
        std::fs::create_dir_all(root.join("sessions")).expect("root");
        let session = |id: &str| {
            std::fs::write(
                root.join("sessions").join(format!("{id}.json")),
                format!(
                    r#"{{"session_id":"{id}","role":"w","task":"T","blob":{{}},"phase":"p","last_heartbeat":"2026-04-07T21:13:44.000Z"}}"#
                ),
            )
            .expect("session file")
        };
        session("a");
        session("b");
        let out = d.dir.path().join(format!("{source}.jsonl"));
        let sink = format!("jsonl:{}", out.display());
        let root_s = root.to_string_lossy().into_owned();
        let args = [
            "--source",
            source,
            "--coord-root",
            &root_s,
            "--sink",
            &sink,
            "--interval",
            "50ms",
        ];
        let mut s = sentinel(&d, &args);
        wait_lines(&out, 2);
        s.kill().expect("SIGKILL");
        s.wait().expect("reap");
        std::fs::remove_file(root.join("sessions").join("b.json")).expect("remove b");
        session("c");
        let s = sentinel(&d, &args);
        let got = wait_lines(&out, 4);
        std::thread::sleep(Duration::from_millis(300));
        stop(s);
        let got_after = lines(&out);
        assert_eq!(
            got_after.len(),
            4,
            "{source}: the whole root again? {got_after:#?}"
        );
        let tail: Vec<serde_json::Value> = got[2..]
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let mut seen: Vec<(String, String)> = tail
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap_or_default().to_string(),
                    o["session"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("session.dereg".to_string(), "b".to_string()),
                ("session.register".to_string(), "c".to_string())
            ],
            "{source}"
        );
    }
}
