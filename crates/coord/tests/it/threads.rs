//! `coord daemon --threads N`: a daemon on a runtime of N worker threads
//! keeps every promise of the one-thread daemon — one total order seen by
//! every stream, every acknowledged write in the log once, lock state
//! correct whichever thread serves a connection, and a clean SIGTERM —
//! and an idle one uses no CPU.

use crate::support::{assert_gap_free, coord_cmd, Daemon, Follower};
use std::time::Duration;

#[test]
fn connections_on_several_threads_see_one_order_and_stop_cleanly() {
    let mut d = Daemon::start(&["--threads", "3"]);
    let h0 = d.head();
    let since = h0.to_string();
    let followers: Vec<Follower> = (0..10)
        .map(|_| Follower::start(&d, &["--since", &since]))
        .collect();
    // Each follower has its stream open once it sees the first event.
    d.ok(&["publish", "x.ready"]);
    for f in &followers {
        f.wait_for_seq(h0 + 1, Duration::from_secs(30));
    }
    // Every stream is an open connection (the status request itself is
    // one more).
    let status = d.http("GET", "/v1/status", &[], None).json();
    let open = status["connections"].as_u64().expect("connections");
    assert!(open >= 11, "{status}");

    // Six writers at once, each its own process and connections, so
    // writes arrive on several threads together and join
    // the same commits.
    let mut acked: Vec<u64> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let d = &d;
                s.spawn(move || {
                    (0..15)
                        .map(|i| {
                            let payload = format!("{{\"w\":{w},\"i\":{i}}}");
                            let out = d.ok(&["--json", "publish", "x.load", "--payload", &payload]);
                            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
                            v["seq"].as_u64().expect("seq")
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    });
    acked.sort_unstable();
    let last = h0 + 1 + 90;
    assert_eq!(
        acked,
        (h0 + 2..=last).collect::<Vec<_>>(),
        "every acknowledged write has its own seq"
    );

    // A lock handed between sessions whose connections are on different
    // threads.
    let a = d.register("io-a");
    let b = d.register("io-b");
    let acquire = |sid: &str, tok: &str| {
        d.coord(&[
            "--json",
            "lock",
            "acquire",
            "res/one",
            "--session",
            sid,
            "--token",
            tok,
        ])
    };
    assert!(acquire("io-a", &a).status.success());
    let refused = acquire("io-b", &b);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "a held lock was granted twice"
    );
    d.ok(&[
        "lock",
        "release",
        "res/one",
        "--session",
        "io-a",
        "--token",
        &a,
    ]);
    assert!(acquire("io-b", &b).status.success());
    let head = d.head();

    // Every stream saw the same events in the log's order, gap-free.
    let log: Vec<serde_json::Value> = d
        .all_events()
        .into_iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > h0))
        .collect();
    for f in &followers {
        f.wait_for_seq(head, Duration::from_secs(30));
    }
    for f in followers {
        let seen: Vec<serde_json::Value> = f
            .stop()
            .iter()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .filter(|e: &serde_json::Value| e["seq"].as_u64().is_some_and(|s| s > h0))
            .collect();
        assert_gap_free(&seen, h0 + 1);
        assert_eq!(seen, log, "a stream differs from the log");
    }

    // Streams end cleanly on SIGTERM from the pool too.
    let since = head.to_string();
    let mut f = Follower::start(&d, &["--since", &since]);
    let mut g = Follower::start(&d, &["--since", &since]);
    d.ok(&["publish", "x.last"]);
    f.wait_for_seq(head + 1, Duration::from_secs(30));
    g.wait_for_seq(head + 1, Duration::from_secs(30));
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}: {}", d.log());
    for x in [&mut f, &mut g] {
        let (st, err) = x.finish();
        assert_eq!(st.code(), Some(3), "{err}");
        assert!(err.contains("the daemon closed the stream"), "{err}");
    }
}

#[test]
fn threads_out_of_range_is_a_usage_error() {
    for bad in ["0", "65", "two"] {
        let out = coord_cmd()
            .args(["daemon", "--threads", bad])
            .output()
            .expect("coord daemon");
        assert_eq!(out.status.code(), Some(2), "--threads {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--threads"), "{err}");
    }
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat shape");
    // After the name: state is field 3, utime 14 and stime 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A daemon that served writes from several clients, then nothing, uses
/// no CPU: no thread of its runtime polls while there is nothing to do,
/// with or without a stream open.
#[test]
fn an_idle_daemon_sleeps_once_the_clients_are_gone() {
    let d = Daemon::start(&["--threads", "2"]);
    std::thread::scope(|s| {
        for w in 0..3 {
            let d = &d;
            s.spawn(move || {
                for i in 0..20 {
                    d.ok(&[
                        "publish",
                        "x.idle",
                        "--payload",
                        &format!("{{\"w\":{w},\"i\":{i}}}"),
                    ]);
                }
            });
        }
    });
    assert_idle(&d, "after the writers");
    // A follower on the stream keeps a connection open and gets writes.
    // From an explicit seq, not `now`: the stream may open after the
    // publish (a NATS log answers the first request later).
    let since = d.head().to_string();
    let f = Follower::start(&d, &["--since", &since]);
    d.ok(&["publish", "x.idle"]);
    f.wait_for_seq(d.head(), Duration::from_secs(30));
    assert_idle(&d, "with a follower open");
    drop(f);
}

/// The daemon spends (almost) no CPU over 2 s, 300 ms after its last
/// request.
fn assert_idle(d: &Daemon, when: &str) {
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(d.pid()) - before;
    assert!(
        spent <= 5,
        "{when}: an idle daemon used {spent} ticks of CPU in 2 s: a thread kept polling"
    );
}
