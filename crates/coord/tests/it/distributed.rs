//! Many daemons, one log (PROTOCOL §12): real nats-server processes (a
//! single node and a 3-node JetStream cluster), real daemons on the
//! `nats://` store, the real CLI.

use crate::support::nats::Nats;
use crate::support::{post, wait_until, Daemon};
use coord_proto::{LockMode, Payload};
use serde_json::json;
use std::time::Duration;

fn daemon_on(url: &str, extra: &[&str]) -> Daemon {
    Daemon::start_with_store(Some(url.into()), extra)
}

fn events_text(d: &Daemon) -> String {
    d.ok(&[
        "events",
        "--since",
        "start",
        "--no-follow",
        "--format",
        "json",
    ])
}

/// Replays the log through the real fold and checks, at every seq, that no
/// exclusive lock has two holders and every grant to a waiter went to the
/// head of its queue.
fn check_locks(events: &[serde_json::Value]) {
    let mut s = coord_core::State::default();
    for v in events {
        let e = coord_proto::Event::from_json(&v.to_string()).expect("decode event");
        if let Payload::LockAcquire(p) = &e.payload {
            if let Some(l) = s.view.locks.get(&p.resource) {
                if let Some(pos) = l
                    .waiters
                    .iter()
                    .position(|w| w.session_id == p.owner_session)
                {
                    assert_eq!(pos, 0, "seq {}: grant to waiter #{pos}", e.seq);
                }
            }
        }
        coord_core::apply(&mut s, &e);
        for l in s.view.locks.values() {
            if l.mode == LockMode::Exclusive {
                assert!(
                    l.holders.len() <= 1,
                    "seq {}: {} has holders {:?}",
                    e.seq,
                    l.resource,
                    l.holders
                );
            }
        }
    }
}

#[test]
fn two_daemons_share_one_log() {
    let nats = Nats::single();
    let url = nats.url("fleet");
    let a = daemon_on(&url, &[]);
    let b = daemon_on(&url, &[]);
    let sa = a.http("GET", "/v1/status", &[], None).json();
    let sb = b.http("GET", "/v1/status", &[], None).json();
    assert_eq!(sa["log_id"], sb["log_id"], "one log, one identity");
    assert_eq!(sa["store"]["backend"], "nats");
    assert_ne!(sa["store"]["daemon_id"], sb["store"]["daemon_id"]);

    // 20 agents, half on each daemon, contend for 5 locks with --wait.
    let agents: Vec<(String, String, &Daemon)> = (0..20)
        .map(|i| {
            let d = if i % 2 == 0 { &a } else { &b };
            let id = format!("ag{i}");
            let tok = d.register(&id);
            (id, tok, d)
        })
        .collect();
    std::thread::scope(|s| {
        for (i, (id, tok, d)) in agents.iter().enumerate() {
            s.spawn(move || {
                for round in 0..3 {
                    let res = format!("/repo/file{}", (i + round) % 5);
                    let env = [
                        ("COORD_SESSION", id.as_str()),
                        ("COORD_SESSION_TOKEN", tok.as_str()),
                    ];
                    let out = d.coord_env(&["lock", "acquire", &res, "--wait", "60s"], &env);
                    assert!(
                        out.status.success(),
                        "{id} acquire {res}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let out = d.coord_env(&["lock", "release", &res], &env);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });

    // Mail across daemons: ag0 (on a) writes to ag1 (on b) and back.
    let (id0, tok0, _) = &agents[0];
    let (id1, tok1, _) = &agents[1];
    let env0 = [
        ("COORD_SESSION", id0.as_str()),
        ("COORD_SESSION_TOKEN", tok0.as_str()),
    ];
    let env1 = [
        ("COORD_SESSION", id1.as_str()),
        ("COORD_SESSION_TOKEN", tok1.as_str()),
    ];
    let sent = a.coord_env(&["send", id1, "hello from a"], &env0);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let inbox = b.coord_env(&["--json", "inbox", "list"], &env1);
    let list: serde_json::Value = serde_json::from_slice(&inbox.stdout).expect("inbox json");
    let msg_id = list["messages"][0]["msg_id"]
        .as_str()
        .expect("a message")
        .to_string();
    let read = b.coord_env(&["inbox", "read", &msg_id], &env1);
    assert!(
        String::from_utf8_lossy(&read.stdout).contains("hello from a"),
        "body read on the other daemon: {}",
        String::from_utf8_lossy(&read.stdout)
    );
    let acked = b.coord_env(&["inbox", "ack", &msg_id], &env1);
    assert!(
        acked.status.success(),
        "{}",
        String::from_utf8_lossy(&acked.stderr)
    );

    // A dispatch order issued on b to an agent of a, taken on a.
    let issued = b.ok(&["--json", "dispatch", "issue", id0, "T-1"]);
    let order: serde_json::Value = serde_json::from_str(&issued).expect("order json");
    let order_id = order["order_id"].as_str().expect("order id").to_string();
    let took = a.coord_env(&["dispatch", "ack", &order_id], &env0);
    assert!(
        took.status.success(),
        "{}",
        String::from_utf8_lossy(&took.stderr)
    );

    // Both daemons serve the same log, byte for byte.
    let head = a.head().max(b.head());
    wait_until("both daemons at one head", Duration::from_secs(10), || {
        a.head() == head && b.head() == head
    });
    let ea = events_text(&a);
    let eb = events_text(&b);
    assert_eq!(ea, eb, "the two daemons disagree on the log");
    let events: Vec<serde_json::Value> = ea
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    crate::support::assert_gap_free(&events, 1);
    check_locks(&events);
    let grants = events
        .iter()
        .filter(|e| e["tx_kind"] == "lock.acquire")
        .count();
    assert_eq!(grants, 60, "every one of 20×3 acquires was granted once");
}

#[test]
fn a_retry_through_another_daemon_appends_once() {
    let nats = Nats::single();
    let url = nats.url("retry");
    let a = daemon_on(&url, &[]);
    let b = daemon_on(&url, &[]);
    let tx = "01J00000000000000000000077";
    let body = json!({"tx_kind":"x.once","payload":{"n":1},"tx_id":tx});
    let first = post(&a, "/v1/events", None, &body);
    assert_eq!(first.status, 201, "{:?}", first.json());
    let again = post(&b, "/v1/events", None, &body);
    assert_eq!(again.status, 200, "{:?}", again.json());
    assert_eq!(again.header("coord-replayed"), Some("true"));
    assert_eq!(again.json()["seq"], first.json()["seq"]);

    // Concurrent: the same new tx_id through both daemons at once.
    let tx2 = "01J00000000000000000000078";
    let body = json!({"tx_kind":"x.twice","tx_id":tx2});
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let d = if i % 2 == 0 { &a } else { &b };
                let body = &body;
                s.spawn(move || post(d, "/v1/events", None, body).json()["seq"].as_u64())
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().ok().flatten().unwrap_or(0))
            .collect()
    });
    assert!(seqs.iter().all(|s| *s == seqs[0] && *s > 0), "{seqs:?}");
    wait_until("b catches up", Duration::from_secs(10), || {
        b.head() == a.head()
    });
    let n = b
        .all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "x.twice")
        .count();
    assert_eq!(n, 1);
}

#[test]
fn a_killed_daemon_s_lock_passes_to_the_next_waiter_elsewhere() {
    let nats = Nats::single();
    let url = nats.url("handover");
    // Snapshots every few events, so the restart below rebuilds from a
    // snapshot (in the object store) plus the stream's tail.
    let lease = ["--daemon-lease", "1s", "--snapshot-every", "4"];
    let mut a = daemon_on(&url, &lease);
    let b = daemon_on(&url, &lease);
    let ta = a.register("holder");
    let tb = b.register("waiter");
    let env_a = [
        ("COORD_SESSION", "holder"),
        ("COORD_SESSION_TOKEN", ta.as_str()),
    ];
    let out = a.coord_env(&["lock", "acquire", "/shared/db"], &env_a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let waiting = std::thread::scope(|s| {
        let h = s.spawn(|| {
            b.coord_env(
                &["lock", "acquire", "/shared/db", "--wait", "60s"],
                &[
                    ("COORD_SESSION", "waiter"),
                    ("COORD_SESSION_TOKEN", tb.as_str()),
                ],
            )
        });
        wait_until("the waiter queues", Duration::from_secs(10), || {
            b.ok(&["lock", "list"]).contains("waiter")
        });
        let t0 = std::time::Instant::now();
        a.kill9();
        let out = h.join().expect("waiter thread");
        (out, t0.elapsed())
    });
    let (out, took) = waiting;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.ok(&["events", "--since", "start", "--no-follow"])
    );
    // Documented bound: the daemon lease (1 s here) plus one renewal
    // period and a commit; generous for a loaded machine.
    assert!(took < Duration::from_secs(30), "hand-over took {took:?}");
    let events = b.all_events();
    let dereg = events
        .iter()
        .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == "holder")
        .expect("holder ended");
    assert_eq!(dereg["payload"]["reason"], "daemon_lost");
    let ended = events
        .iter()
        .filter(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == "holder")
        .count();
    assert_eq!(ended, 1, "exactly one daemon ended it");

    // The dead daemon, restarted, rebuilds the same view as its peer.
    a.restart();
    wait_until("a catches up", Duration::from_secs(10), || {
        a.head() == b.head()
    });
    assert_eq!(events_text(&a), events_text(&b));
    let view = |d: &Daemon| {
        let mut v = d.http("GET", "/v1/snapshot", &[], None).json();
        if let Some(m) = v["view"]["sessions"].as_object_mut() {
            // The lease is this daemon's clock's (renewals are not events).
            for s in m.values_mut() {
                if let Some(o) = s.as_object_mut() {
                    o.remove("lease");
                }
            }
        }
        v["view"].clone()
    };
    assert_eq!(view(&a), view(&b));
}

#[test]
fn without_nats_writes_are_refused_and_reads_go_on() {
    let mut nats = Nats::single();
    let url = nats.url("outage");
    let d = daemon_on(&url, &[]);
    d.register("s1");
    let head = d.head();
    nats.nodes[0].stop(libc::SIGKILL);
    let refused = post(&d, "/v1/events", None, &json!({"tx_kind":"x.lost"}));
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.code(), "store_unavailable");
    // Reads serve the last known view and say how stale it is.
    assert!(d.ok(&["session", "list"]).contains("s1"));
    let st = d.http("GET", "/v1/status", &[], None).json();
    assert_eq!(st["store"]["connected"], false, "{st}");
    assert_eq!(st["store"]["backend"], "nats", "{st}");
    assert!(st["store"]["stale_ms"].as_u64().is_some(), "{st}");
    assert_eq!(st["head_seq"], head);

    nats.nodes[0].restart();
    wait_until("writes resume", Duration::from_secs(30), || {
        post(&d, "/v1/events", None, &json!({"tx_kind":"x.back"})).status == 201
    });
    let events = d.all_events();
    crate::support::assert_gap_free(&events, 1);
    assert!(events.iter().all(|e| e["tx_kind"] != "x.lost"));
    assert_eq!(
        events
            .iter()
            .find(|e| e["tx_kind"] == "x.back")
            .expect("x.back")["seq"],
        head + 1,
        "the next write takes the next seq"
    );
}

#[test]
fn a_cluster_keeps_every_acknowledged_write_when_a_node_dies() {
    let mut nats = Nats::cluster();
    let url = nats.url("r3");
    let a = daemon_on(&url, &["--replicas", "3"]);
    let b = daemon_on(&url, &["--replicas", "3"]);
    let acked = std::sync::Mutex::new(Vec::<u64>::new());
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let d = if w % 2 == 0 { &a } else { &b };
                let acked = &acked;
                s.spawn(move || {
                    for i in 0..60 {
                        let r = post(
                            d,
                            "/v1/events",
                            None,
                            &json!({"tx_kind":"x.load","payload":{"w":w,"i":i}}),
                        );
                        if r.status == 201 {
                            if let Some(seq) = r.json()["seq"].as_u64() {
                                acked.lock().expect("lock").push(seq);
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        nats.nodes[1].stop(libc::SIGKILL);
        for w in writers {
            w.join().expect("writer");
        }
    });
    let acked = acked.into_inner().expect("acked");
    assert!(
        acked.len() >= 200,
        "writes continued: {} of 240 acked",
        acked.len()
    );
    wait_until("both heads meet", Duration::from_secs(20), || {
        a.head() == b.head()
    });
    let events = a.all_events();
    crate::support::assert_gap_free(&events, 1);
    for seq in &acked {
        let e = &events[(*seq - 1) as usize];
        assert_eq!(e["tx_kind"], "x.load", "acked seq {seq} is not the write");
    }
    let mut seen = std::collections::HashSet::new();
    for e in events.iter().filter(|e| e["tx_kind"] == "x.load") {
        let key = (
            e["payload"]["w"].clone().to_string(),
            e["payload"]["i"].to_string(),
        );
        assert!(seen.insert(key), "a write is in the log twice: {e}");
    }
    assert_eq!(events_text(&a), events_text(&b));
}
