//! An idle daemon does not wake up (README: leases, lock TTLs and process
//! exits are driven by timers and pidfds; the performance issue: "idle CPU
//! stays at zero wake-ups"). Counted, not timed: the context switches of
//! the daemon's threads over a quiet spell, read from `/proc`, so a slow
//! machine cannot fail it and a periodic tick cannot pass it.
//!
//! Always on a SQLite store: a NATS log keeps a daemon lease in its KV
//! bucket and its client pings the server, which are wake-ups by design.

use crate::support::{Daemon, Follower};
use std::collections::HashMap;
use std::time::Duration;

/// Voluntary plus involuntary context switches of each thread of `pid`,
/// by thread id.
fn switches(pid: u32) -> HashMap<String, u64> {
    let mut by_thread = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_thread;
    };
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        by_thread.insert(t.file_name().to_string_lossy().into_owned(), n);
    }
    by_thread
}

#[test]
fn an_idle_daemon_with_sessions_locks_and_a_live_stream_does_not_wake_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_store(Some(dir.path().join("coord.db")), &[]);
    // What an idle fleet leaves behind: sessions whose leases run for an
    // hour, a lock held by one of them, mail waiting, and a watcher
    // following the log live.
    let mut tokens = Vec::new();
    for i in 0..5 {
        let id = format!("idle-{i}");
        let out = d.ok(&["--json", "session", "register", "--id", &id, "--ttl", "1h"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        tokens.push((id, v["token"].as_str().expect("token").to_string()));
    }
    let (holder, token) = &tokens[0];
    d.ok(&[
        "lock",
        "acquire",
        "src/idle.rs",
        "--session",
        holder,
        "--token",
        token,
    ]);
    d.ok(&[
        "send",
        "idle-1",
        "nothing to do",
        "--session",
        holder,
        "--token",
        token,
    ]);
    let head = d.head();
    let follower = Follower::start(&d, &["--since", "0"]);
    follower.wait_for_seq(head, Duration::from_secs(30));

    // Let what the last requests started finish: the serving threads'
    // spin after an answer (50 µs), the lifecycle manager's pass over the
    // new sessions, a checkpoint nudge.
    std::thread::sleep(Duration::from_millis(1500));
    let before = switches(d.pid());
    assert!(!before.is_empty(), "no threads read for pid {}", d.pid());
    std::thread::sleep(Duration::from_secs(3));
    let after = switches(d.pid());

    // Threads present at both readings; one that ended in between (a
    // blocking-pool thread idling out) woke once to do so, which is not
    // the daemon polling.
    let mut woke: Vec<(String, u64)> = before
        .iter()
        .filter_map(|(tid, n)| Some((tid.clone(), after.get(tid)?.saturating_sub(*n))))
        .filter(|(_, delta)| *delta > 0)
        .collect();
    woke.sort();
    let total: u64 = woke.iter().map(|(_, n)| n).sum();
    // Zero is the promise; one stray switch (a page-cache writeback the
    // kernel charges to the thread, a signal) is not a periodic wake-up,
    // which would show as several over three seconds.
    assert!(
        total <= 1,
        "an idle daemon woke {total} times in 3 s (thread id, switches): {woke:?}"
    );
    // Still serving: the quiet spell was not a stall.
    assert_eq!(d.head(), head);
    drop(follower);
}
