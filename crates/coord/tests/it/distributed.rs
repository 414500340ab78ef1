//! Many daemons, one log (PROTOCOL §12): real nats-server processes (a
//! single node and a 3-node JetStream cluster), real daemons on the
//! `nats://` store, the real CLI.

use crate::support::nats::Nats;
use crate::support::{coord_cmd, dereg_of, json_of, post, running, wait_until, Daemon, Follower};
use coord_proto::{LockMode, Payload};
use serde_json::json;
use std::time::Duration;

pub(crate) fn daemon_on(url: &str, extra: &[&str]) -> Daemon {
    Daemon::start_with_store(Some(url.into()), extra)
}

pub(crate) fn events_text(d: &Daemon) -> String {
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
pub(crate) fn check_locks(events: &[serde_json::Value]) {
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
    // A cursor saved against A (seq and log id) resumes exactly on B.
    let log_id = sa["log_id"].as_str().expect("log id").to_string();
    let r = b.http(
        "GET",
        &format!("/v1/events?since=10&follow=false&log_id={log_id}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).starts_with("{\"seq\":11,"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
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
    let follower = Follower::start(&d, &["--since", "start"]);
    follower.wait_for_seq(head, Duration::from_secs(10));
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
    // A subscriber that stayed connected through the outage saw every
    // event once, in order.
    let new_head = d.head();
    let lines = follower.wait_for_seq(new_head, Duration::from_secs(10));
    let seen: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    crate::support::assert_gap_free(&seen, 1);
    follower.stop();
}

#[test]
fn a_server_older_than_2_10_is_refused_by_name() {
    // A NATS protocol peer that says it is 2.9.10: enough for the client's
    // handshake (INFO, then PONG to its PING), so the daemon's version
    // check is what refuses it.
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let info = r#"INFO {"server_id":"OLD","server_name":"old","version":"2.9.10","proto":1,"host":"127.0.0.1","port":0,"headers":true,"max_payload":1048576,"jetstream":true}"#;
        let _ = s.write_all(format!("{info}\r\n").as_bytes());
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line.starts_with("PING") {
                let _ = s.write_all(b"PONG\r\n");
            }
            line.clear();
        }
    });
    let dir = tempfile::Builder::new()
        .prefix("cd")
        .tempdir_in("/tmp")
        .expect("tmp");
    let out = coord_cmd()
        .args(["daemon", "--store", &format!("nats://127.0.0.1:{port}/old")])
        .arg("--socket")
        .arg(dir.path().join("s").join("coord.sock"))
        .output()
        .expect("run coord daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version 2.9.10") && err.contains("2.10.0 or newer"),
        "{err}"
    );
    let _ = server.join();
}

#[test]
fn a_cluster_keeps_every_acknowledged_write_when_a_node_dies() {
    // The heads must meet within 30 s of a node's death: not while the
    // heavy tests load both cores (seen: A 67 events behind at 30 s).
    let _alone = crate::support::exclusive();
    let mut nats = Nats::cluster();
    let url = nats.url("r3");
    let a = daemon_on(&url, &["--replicas", "3"]);
    let b = daemon_on(&url, &["--replicas", "3"]);
    let follower = Follower::start(&b, &["--since", "start"]);
    // Each write has its own tx_id and is retried (same tx_id) while the
    // cluster answers 503 (a leader election after the kill): every write
    // must end acknowledged, exactly once in the log.
    let acked = std::sync::Mutex::new(Vec::<(u64, usize, usize)>::new());
    let head_at_kill = std::sync::atomic::AtomicU64::new(0);
    let victim = nats.node_with_most_consumers("r3");
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let d = if w % 2 == 0 { &a } else { &b };
                let acked = &acked;
                s.spawn(move || {
                    for i in 0..60 {
                        let tx = format!("01J{:023}", w * 1000 + i);
                        let body = json!({"tx_kind":"x.load","payload":{"w":w,"i":i},"tx_id":tx});
                        let deadline = std::time::Instant::now() + Duration::from_secs(120);
                        loop {
                            let r = post(d, "/v1/events", None, &body);
                            if r.status == 201 || r.status == 200 {
                                let seq = r.json()["seq"].as_u64().expect("seq");
                                acked.lock().expect("lock").push((seq, w, i));
                                break;
                            }
                            assert_eq!(r.code(), "store_unavailable", "{:?}", r.json());
                            assert!(
                                std::time::Instant::now() < deadline,
                                "write w{w} i{i} never acknowledged"
                            );
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
            })
            .collect();
        // Kill a node once the load runs, with most writes still to come:
        // the one holding the daemons' log followers (R1 consumers), so
        // that they must notice and re-create them.
        wait_until("the first 40 writes", Duration::from_secs(60), || {
            acked.lock().expect("lock").len() >= 40
        });
        head_at_kill.store(a.head(), std::sync::atomic::Ordering::SeqCst);
        nats.nodes[victim].stop(libc::SIGKILL);
        for w in writers {
            w.join().expect("writer");
        }
    });
    let acked = acked.into_inner().expect("acked");
    assert_eq!(acked.len(), 240);
    let killed_at = head_at_kill.into_inner();
    assert!(
        acked.iter().any(|(seq, _, _)| *seq > killed_at + 8),
        "no write was acknowledged after the node died (head then {killed_at})"
    );
    // Each daemon learns the other's writes from its log follower, whose
    // consumer may have lived on the killed node: it must be re-created
    // well within this.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ha, hb) = (a.head(), b.head());
        if ha == hb {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the heads did not meet in 30 s: A at {ha}, B at {hb}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let events = a.all_events();
    crate::support::assert_gap_free(&events, 1);
    for (seq, w, i) in &acked {
        let e = &events[(*seq - 1) as usize];
        assert_eq!(e["tx_kind"], "x.load", "acked seq {seq} is not the write");
        assert_eq!(e["payload"]["w"], *w);
        assert_eq!(e["payload"]["i"], *i);
    }
    let loads = events.iter().filter(|e| e["tx_kind"] == "x.load").count();
    assert_eq!(loads, 240, "every write is in the log exactly once");
    assert_eq!(events_text(&a), events_text(&b));
    // B's subscriber, connected throughout, saw the same log: no gap, no
    // duplicate.
    let head = b.head();
    let seen: Vec<serde_json::Value> = follower
        .wait_for_seq(head, Duration::from_secs(20))
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    crate::support::assert_gap_free(&seen, 1);

    // Every node stopped: writes refused, reads served; all restarted:
    // writes resume at the next seq.
    nats.nodes[victim].restart();
    for n in &mut nats.nodes {
        n.stop(libc::SIGTERM);
    }
    let refused = post(&a, "/v1/events", None, &json!({"tx_kind":"x.down"}));
    assert_eq!(refused.code(), "store_unavailable", "{:?}", refused.json());
    assert!(b
        .ok(&["events", "--since", "start", "--no-follow"])
        .contains("x.load"));
    for n in &mut nats.nodes {
        n.restart();
    }
    let tx = "01J00000000000000000000999";
    wait_until(
        "writes resume on the restarted cluster",
        Duration::from_secs(90),
        || {
            let r = post(
                &a,
                "/v1/events",
                None,
                &json!({"tx_kind":"x.up","tx_id":tx}),
            );
            r.status == 201 || r.status == 200
        },
    );
    let up = a
        .all_events()
        .into_iter()
        .filter(|e| e["tx_kind"] == "x.up")
        .collect::<Vec<_>>();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["seq"], head + 1, "the next write takes the next seq");
    follower.stop();
}

/// A daemon whose NATS server is gone still stops promptly on SIGTERM: it
/// skips the shutdown snapshot, which could only wait out the client's
/// timeouts, and exits cleanly.
#[test]
fn a_daemon_cut_off_from_nats_stops_without_its_snapshot() {
    let mut nats = Nats::single();
    let url = nats.url("cutoff");
    let mut d = daemon_on(&url, &[]);
    d.register("s1");
    nats.nodes[0].stop(libc::SIGKILL);
    wait_until(
        "the daemon sees the outage",
        Duration::from_secs(30),
        || d.http("GET", "/v1/status", &[], None).json()["store"]["connected"] == false,
    );
    let status = d.terminate();
    assert!(status.success(), "{status}: {}", d.log());
    let log = d.log();
    assert!(
        log.contains("no snapshot at shutdown") && !log.contains("snapshot failed"),
        "{log}"
    );
}

/// The issue's reproduction on a shared log: daemon A is SIGKILLed with a
/// `session run` agent on it. A survivor ends the session (`daemon_lost`)
/// after the daemon lease and hands its locks on; the agent's wrapper,
/// which cannot renew for a whole TTL, stops the agent, so no agent goes
/// on working for a session nobody holds (PROTOCOL §6.3).
#[test]
fn a_lost_daemons_agents_are_stopped_by_their_wrappers() {
    let nats = Nats::single();
    let url = nats.url("lost");
    let lease = ["--daemon-lease", "1s"];
    let mut a = daemon_on(&url, &lease);
    let b = daemon_on(&url, &lease);
    let err = a.dir.path().join("wrapper.err");
    let mut wrapper = coord_cmd()
        .args([
            "session", "run", "--id", "far", "--ttl", "2s", "--", "sleep", "600",
        ])
        .env("COORD_SOCKET", &a.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("session run");
    wait_until("far is seen by b", Duration::from_secs(20), || {
        b.coord(&["session", "show", "far"]).status.success()
    });
    let agent = json_of(&b.coord(&["--json", "session", "show", "far"]))["pid"]
        .as_u64()
        .expect("pid") as u32;
    a.kill9();
    let t0 = std::time::Instant::now();
    let mut status = None;
    wait_until(
        "the wrapper stops its agent",
        Duration::from_secs(30),
        || {
            status = wrapper.try_wait().expect("try_wait");
            status.is_some()
        },
    );
    let took = t0.elapsed();
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(said.contains("is lost"), "{said}");
    assert!(!running(agent), "the agent of a lost daemon still runs");
    let dereg = dereg_of(&b, "far");
    assert_eq!(dereg["payload"]["reason"], "daemon_lost", "{dereg}");
    // The wrapper's TTL (2 s) plus a heartbeat period and the grace of a
    // SIGTERM'd sleep: generous for a loaded machine.
    assert!(
        took < Duration::from_secs(20),
        "the agent was stopped after {took:?}"
    );
}
