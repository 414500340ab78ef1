//! The sentinel hands each event to its sink once across crashes: SIGKILL
//! it at many moments while the daemon takes a steady stream of
//! registrations, restart it each time, and compare the sink with the log.

use crate::support::{coord_cmd, post, Daemon, Reaped};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAITING: usize = 1500;
const STREAMED: usize = 1500;

fn register(d: &Daemon, i: usize) {
    let r = post(
        d,
        "/v1/sessions",
        None,
        &json!({"session_id": format!("r-{i:05}"), "ttl_ms": 3_600_000, "role": "w"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

fn sentinel(d: &Daemon, sink: &str, state: &Path) -> Reaped {
    coord_cmd()
        .args([
            "sentinel",
            "--source",
            "event-manager",
            "--kind",
            "session.register",
            "--max-batch",
            "40",
            "--sink",
            sink,
            "--state-file",
        ])
        .arg(state)
        .env("COORD_SOCKET", &d.socket)
        .env("COORD_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .expect("sentinel")
}

/// The registrations in the log, in order, as the sentinel observes them
/// (its JSON line) with their keys.
fn expected(d: &Daemon) -> Vec<(String, String)> {
    d.all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "session.register")
        .map(|e| {
            let ev = coord_proto::Event::from_json(&e.to_string()).expect("event");
            (
                serde_json::to_string(&coord_sentinel::observe(&ev)).expect("json"),
                format!("{}:{}", ev.source, ev.tx_id),
            )
        })
        .collect()
}

/// Registers WAITING sessions, then streams STREAMED more while the
/// sentinel is killed and restarted `kills` times at pseudo-random
/// moments; returns the daemon once the final sentinel caught up (as far
/// as `done` says).
fn crash_run(sink: &str, state: &Path, kills: usize, done: impl Fn(usize) -> bool) -> Daemon {
    let _alone = crate::support::exclusive();
    let d = Daemon::start(&[]);
    for i in 0..WAITING {
        register(&d, i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let socket = d.socket.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            for i in WAITING..WAITING + STREAMED {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body =
                    json!({"session_id": format!("r-{i:05}"), "ttl_ms": 3_600_000, "role": "w"})
                        .to_string();
                let r = crate::support::raw_http(
                    &socket,
                    "POST",
                    "/v1/sessions",
                    &[("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                assert!(r.is_ok_and(|r| r.status == 201));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // A fixed xorshift sequence: the kill moments differ from kill to kill
    // but every run is the same.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..kills {
        let mut s = sentinel(&d, sink, state);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(40 + x % 260));
        s.kill().expect("SIGKILL the sentinel");
        s.wait().expect("reap");
    }
    writer.join().expect("writer");
    let mut last = sentinel(&d, sink, state);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(expected(&d).len()) {
        assert!(Instant::now() < deadline, "the sentinel did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(last.id() as i32, libc::SIGTERM) };
    let _ = last.wait();
    stop.store(true, Ordering::Relaxed);
    d
}

#[test]
fn a_jsonl_sink_gets_every_event_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("obs.jsonl");
    let state = dir.path().join("sentinel.state");
    let sink = format!("jsonl:{}", out.display());
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let d = crash_run(&sink, &state, 10, |n| {
        lines() >= n && n == WAITING + STREAMED
    });
    let want: Vec<String> = expected(&d).into_iter().map(|(l, _)| l).collect();
    let got: Vec<String> = std::fs::read_to_string(&out)
        .expect("sink")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "lines in the sink vs registrations in the log"
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "observation {i} differs (a repeat or a gap)");
    }
}

#[test]
fn an_exec_sink_sees_each_event_once_or_flagged_as_a_redelivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("keys.txt");
    let state = dir.path().join("sentinel.state");
    let sink = format!(
        "exec:echo \"$COORD_EVENT_KEY $COORD_REDELIVERY\" >> '{}'",
        out.display()
    );
    let kills = 6;
    let seen = || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let d = crash_run(&sink, &state, kills, |n| {
        seen() >= n && n == WAITING + STREAMED
    });
    let want: Vec<String> = expected(&d).into_iter().map(|(_, k)| k).collect();
    let text = std::fs::read_to_string(&out).expect("sink");
    let mut count: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    let mut order = Vec::new();
    for l in text.lines() {
        let (key, flag) = l.split_once(' ').expect("key and flag");
        if !count.contains_key(key) {
            order.push(key);
        }
        count.entry(key).or_default().push(flag);
    }
    assert_eq!(order, want, "every event once, in order");
    let repeats: Vec<_> = count.iter().filter(|(_, f)| f.len() > 1).collect();
    assert!(
        repeats.len() <= kills,
        "at most one repeat per crash: {repeats:?}"
    );
    for (key, flags) in repeats {
        assert!(
            flags[1..].iter().all(|f| *f == "1"),
            "{key} was handed again without the redelivery flag: {flags:?}"
        );
    }
}
