//! One writer per log (PROTOCOL §12, docs/DISTRIBUTED.md): the election,
//! writes forwarded to the leader, liveness judged on the cluster's
//! evidence (a node lost, a daemon paused), and outages that tell the
//! truth. Real nats-server processes, real daemons, the real CLI.

use crate::distributed::{daemon_on, events_text};
use crate::support::nats::Nats;
use crate::support::{post, wait_until, Daemon};
use serde_json::{json, Value};
use std::time::Duration;

fn status(d: &Daemon) -> Value {
    d.http("GET", "/v1/status", &[], None).json()
}

/// `leader`, `follower` or `unknown`, and the leader's daemon id.
fn role(d: &Daemon) -> (String, Option<String>) {
    let s = status(d);
    (
        s["store"]["role"].as_str().unwrap_or_default().to_string(),
        s["store"]["leader"].as_str().map(str::to_string),
    )
}

fn daemon_id(d: &Daemon) -> String {
    status(d)["store"]["daemon_id"]
        .as_str()
        .expect("daemon_id")
        .to_string()
}

/// A counter's value from `/v1/metrics` (0 when absent).
fn metric(d: &Daemon, name: &str) -> f64 {
    let text = String::from_utf8_lossy(&d.http("GET", "/v1/metrics", &[], None).body).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Waits until exactly one daemon leads and every other follows it;
/// returns the leader's index.
fn one_leader(ds: &[&Daemon], within: Duration) -> usize {
    let mut leader = 0;
    wait_until("one leader, the others following it", within, || {
        let roles: Vec<_> = ds.iter().map(|d| role(d)).collect();
        let leaders: Vec<usize> = (0..ds.len()).filter(|i| roles[*i].0 == "leader").collect();
        if leaders.len() != 1 {
            return false;
        }
        leader = leaders[0];
        let id = roles[leader].1.clone();
        roles
            .iter()
            .enumerate()
            .all(|(i, r)| i == leader || (r.0 == "follower" && r.1 == id))
    });
    leader
}

fn signal(d: &Daemon, sig: i32) {
    // SAFETY: kill with the pid of our own running child.
    unsafe { libc::kill(d.pid() as i32, sig) };
}

/// Posts a custom event with `tx`, retrying on `503` with the same tx_id
/// until it is acknowledged; returns its seq.
fn post_until_acked(d: &Daemon, body: &Value, within: Duration) -> u64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = post(d, "/v1/events", None, body);
        if r.status == 200 || r.status == 201 {
            return r.json()["seq"].as_u64().expect("seq");
        }
        assert_eq!(r.code(), "store_unavailable", "{:?}", r.json());
        assert!(
            std::time::Instant::now() < deadline,
            "{body} never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn register_long(d: &Daemon, id: &str) -> String {
    let out = d.ok(&["--json", "session", "register", "--id", id, "--ttl", "1h"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["token"].as_str().expect("token").to_string()
}

fn ended(d: &Daemon) -> Vec<String> {
    d.all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "session.dereg")
        .map(|e| {
            format!(
                "{} ({})",
                e["session_id"].as_str().unwrap_or_default(),
                e["payload"]["reason"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn one_daemon_appends_and_the_others_forward_to_it() {
    let nats = Nats::single();
    let url = nats.url("lead");
    let ds = [
        daemon_on(&url, &[]),
        daemon_on(&url, &[]),
        daemon_on(&url, &[]),
    ];
    let refs: Vec<&Daemon> = ds.iter().collect();
    let l = one_leader(&refs, Duration::from_secs(20));
    let f = (l + 1) % 3;
    let said = ds[f].ok(&["status"]);
    let line = format!("role follower  leader {}", daemon_id(&ds[l]));
    assert!(said.contains(&line), "{said}");

    // Writers on every daemon at once: only the leader appends, so no
    // append is refused for another daemon's, whatever the load.
    std::thread::scope(|s| {
        for (w, d) in ds.iter().enumerate() {
            s.spawn(move || {
                for i in 0..60 {
                    let tx = format!("01J{:023}", w * 1000 + i);
                    let body = json!({"tx_kind":"x.load","payload":{"w":w,"i":i},"tx_id":tx});
                    post_until_acked(d, &body, Duration::from_secs(60));
                }
            });
        }
    });
    for (i, d) in ds.iter().enumerate() {
        assert_eq!(
            metric(d, "coord_append_conflicts_total"),
            0.0,
            "daemon {i} raced another for the stream"
        );
        if i != l {
            assert!(
                metric(d, "coord_forwarded_writes_total") >= 60.0,
                "follower {i} forwarded its writes"
            );
        }
    }
    let head = ds[l].head();
    for d in &ds {
        wait_until("every daemon at the head", Duration::from_secs(10), || {
            d.head() >= head
        });
    }
    // A write answered by a follower is in its own view at once (it
    // folded the leader's commit before answering).
    let r = post(
        &ds[f],
        "/v1/events",
        None,
        &json!({"tx_kind":"x.mine","payload":{}}),
    );
    assert_eq!(r.status, 201, "{:?}", r.json());
    let seq = r.json()["seq"].as_u64().expect("seq");
    assert!(
        ds[f].head() >= seq,
        "the follower answered before it folded {seq}"
    );

    // A session registered through a follower belongs to that follower.
    let tok_w = register_long(&ds[f], "waiter");
    let tok_h = register_long(&ds[l], "holder");
    let sessions = ds[l].http("GET", "/v1/sessions", &[], None).json();
    let waiter = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["session_id"] == "waiter")
        .cloned()
        .expect("waiter listed on the leader");
    assert_eq!(waiter["daemon"].as_str(), Some(daemon_id(&ds[f]).as_str()));

    // A wait queued through a follower is granted when the holder, on
    // the leader, lets go; one that times out leaves the queue.
    let env_h = [
        ("COORD_SESSION", "holder"),
        ("COORD_SESSION_TOKEN", tok_h.as_str()),
    ];
    let env_w = [
        ("COORD_SESSION", "waiter"),
        ("COORD_SESSION_TOKEN", tok_w.as_str()),
    ];
    assert!(ds[l]
        .coord_env(&["lock", "acquire", "/db"], &env_h)
        .status
        .success());
    let out = ds[f].coord_env(&["lock", "acquire", "/db", "--wait", "1s"], &env_w);
    assert!(!out.status.success(), "granted while held");
    assert!(
        !ds[l].ok(&["lock", "list"]).contains("waiter"),
        "a timed-out wait stays queued"
    );
    std::thread::scope(|s| {
        let h = s.spawn(|| ds[f].coord_env(&["lock", "acquire", "/db", "--wait", "60s"], &env_w));
        wait_until("the waiter queues", Duration::from_secs(10), || {
            ds[l].ok(&["lock", "list"]).contains("waiter")
        });
        assert!(ds[l]
            .coord_env(&["lock", "release", "/db"], &env_h)
            .status
            .success());
        let out = h.join().expect("waiter");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let events = ds[f].all_events();
    crate::distributed::check_locks(&events);
    let head = ds[l].head();
    for d in &ds {
        wait_until("every daemon at the head", Duration::from_secs(10), || {
            d.head() >= head
        });
    }
    assert_eq!(events_text(&ds[0]), events_text(&ds[1]));
    assert_eq!(events_text(&ds[1]), events_text(&ds[2]));
}

#[test]
fn the_leader_s_death_moves_the_lead_and_loses_no_write() {
    let nats = Nats::single();
    let url = nats.url("failover");
    let lease = ["--daemon-lease", "1s"];
    let mut ds = [
        daemon_on(&url, &lease),
        daemon_on(&url, &lease),
        daemon_on(&url, &lease),
    ];
    let l = {
        let refs: Vec<&Daemon> = ds.iter().collect();
        one_leader(&refs, Duration::from_secs(20))
    };
    let survivors: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    register_long(&ds[l], "on-leader");
    for i in &survivors {
        register_long(&ds[*i], &format!("on-{i}"));
    }
    let acked = std::sync::Mutex::new(Vec::<u64>::new());
    let (left, right) = ds.split_at_mut(l);
    let (leader, rest) = right.split_first_mut().expect("leader");
    let others: Vec<&Daemon> = left.iter().chain(rest.iter()).collect();
    std::thread::scope(|s| {
        for (w, d) in others.iter().enumerate() {
            let acked = &acked;
            s.spawn(move || {
                for i in 0..80 {
                    let tx = format!("01J{:023}", w * 1000 + i);
                    let body = json!({"tx_kind":"x.load","payload":{"w":w,"i":i},"tx_id":tx});
                    let seq = post_until_acked(d, &body, Duration::from_secs(60));
                    acked.lock().expect("acked").push(seq);
                }
            });
        }
        wait_until("the first 40 writes", Duration::from_secs(60), || {
            acked.lock().expect("acked").len() >= 40
        });
        leader.kill9();
    });
    let acked = acked.into_inner().expect("acked");
    assert_eq!(acked.len(), 160);
    let a = others[0];
    let new_leader = one_leader(&others, Duration::from_secs(20));
    assert_eq!(
        role(others[1 - new_leader]).1,
        Some(daemon_id(others[new_leader]))
    );
    // Every acknowledged write once, under its own tx_id.
    let head = others[new_leader].head();
    for d in &others {
        wait_until("survivors at the head", Duration::from_secs(10), || {
            d.head() >= head
        });
    }
    let events = a.all_events();
    for w in 0..2 {
        for i in 0..80 {
            let tx = format!("01J{:023}", w * 1000 + i);
            let n = events.iter().filter(|e| e["tx_id"] == tx.as_str()).count();
            assert_eq!(n, 1, "write {tx} is in the log {n} times");
        }
    }
    // The dead leader's session ends once; the survivors' live on.
    wait_until(
        "the dead leader's session ends",
        Duration::from_secs(20),
        || ended(a).iter().any(|e| e.starts_with("on-leader ")),
    );
    let gone = ended(a);
    assert_eq!(
        gone,
        vec!["on-leader (daemon_lost)".to_string()],
        "{gone:?}"
    );
}

#[test]
fn a_paused_daemon_ends_no_live_session_when_it_wakes() {
    let nats = Nats::single();
    let url = nats.url("pause");
    let lease = ["--daemon-lease", "1s"];
    let ds = [
        daemon_on(&url, &lease),
        daemon_on(&url, &lease),
        daemon_on(&url, &lease),
    ];
    let refs: Vec<&Daemon> = ds.iter().collect();
    let l = one_leader(&refs, Duration::from_secs(20));
    let f = (l + 1) % 3;
    let other = (l + 2) % 3;
    for (i, d) in ds.iter().enumerate() {
        register_long(d, &format!("s{i}"));
    }
    let head = ds[l].head();
    for d in &ds {
        wait_until("every daemon at the head", Duration::from_secs(10), || {
            d.head() >= head
        });
    }

    // A follower sleeps for 3.5 leases. Its peers may end its own
    // session (it was gone); it must end none of theirs when it wakes.
    signal(&ds[f], libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(3_500));
    signal(&ds[f], libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    let gone = ended(&ds[l]);
    assert!(
        gone.iter().all(|e| e.starts_with(&format!("s{f} "))),
        "the sleeper ended a live session: {gone:?}"
    );

    // The leader sleeps: another daemon takes the lead while it does, and
    // the sleeper, waking, ends nobody and follows the new leader.
    signal(&ds[l], libc::SIGSTOP);
    let awake: Vec<&Daemon> = [&ds[f], &ds[other]].into_iter().collect();
    let took = std::time::Instant::now();
    let new_leader = one_leader(&awake, Duration::from_secs(20));
    let failover = took.elapsed();
    // A write through the survivors goes on during the sleep: retried
    // with its tx_id, it lands once.
    let body = json!({"tx_kind":"x.during","payload":{},"tx_id":"01J00000000000000000000777"});
    post_until_acked(awake[1 - new_leader], &body, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(
        3_500u64.saturating_sub(failover.as_millis() as u64),
    ));
    signal(&ds[l], libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    let gone = ended(awake[new_leader]);
    assert!(
        gone.iter()
            .all(|e| e.starts_with(&format!("s{f} ")) || e.starts_with(&format!("s{l} "))),
        "a sleeper ended a live session: {gone:?}"
    );
    assert!(
        !gone.iter().any(|e| e.starts_with(&format!("s{other} "))),
        "{gone:?}"
    );
    let events = awake[new_leader].all_events();
    let n = events
        .iter()
        .filter(|e| e["tx_id"] == "01J00000000000000000000777")
        .count();
    assert_eq!(n, 1);
    let ids: Vec<String> = [&ds[f], &ds[other]].iter().map(|d| daemon_id(d)).collect();
    wait_until("the woken leader follows", Duration::from_secs(20), || {
        let (r, leader) = role(&ds[l]);
        r == "follower" && leader.is_some_and(|id| ids.contains(&id))
    });
    assert!(
        failover < Duration::from_secs(15),
        "the lead moved after {failover:?}"
    );
}

#[test]
fn a_wait_that_failed_in_an_outage_is_never_granted_later() {
    let mut nats = Nats::single();
    let url = nats.url("waitout");
    let d = daemon_on(&url, &[]);
    let th = register_long(&d, "holder");
    let tw = register_long(&d, "waiter");
    let env_h = [
        ("COORD_SESSION", "holder"),
        ("COORD_SESSION_TOKEN", th.as_str()),
    ];
    let env_w = [
        ("COORD_SESSION", "waiter"),
        ("COORD_SESSION_TOKEN", tw.as_str()),
    ];
    assert!(d
        .coord_env(&["lock", "acquire", "R"], &env_h)
        .status
        .success());
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| d.coord_env(&["lock", "acquire", "R", "--wait", "4s"], &env_w));
        wait_until("the waiter queues", Duration::from_secs(10), || {
            d.ok(&["lock", "list"]).contains("waiter")
        });
        nats.nodes[0].stop(libc::SIGKILL);
        h.join().expect("waiter")
    });
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "granted during an outage?");
    assert!(said.contains("not be granted"), "{said}");
    nats.nodes[0].restart();
    // The holder lets go as soon as the log takes writes again.
    wait_until("the release lands", Duration::from_secs(60), || {
        d.coord_env(&["lock", "release", "R"], &env_h)
            .status
            .success()
    });
    let events = d.all_events();
    let seq_of = |kind: &str, session: &str| {
        events
            .iter()
            .find(|e| e["tx_kind"] == kind && e["payload"]["owner_session"] == session)
            .and_then(|e| e["seq"].as_u64())
    };
    let cancel = seq_of("lock.wait_cancel", "waiter").expect("the wait was cancelled");
    let release = seq_of("lock.release", "holder").expect("released");
    assert!(cancel < release, "the cancel landed after the release");
    let granted = events
        .iter()
        .filter(|e| e["tx_kind"] == "lock.acquire" && e["payload"]["owner_session"] == "waiter")
        .count();
    assert_eq!(granted, 0, "the waiter told it failed was granted");
    assert!(!d.ok(&["lock", "list"]).contains("waiter"));
}

/// CPU seconds `pid` used so far (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn a_daemon_that_slept_through_a_compaction_catches_up() {
    let nats = Nats::single();
    let url = nats.url("slept");
    let keep = ["--keep-events", "10", "--snapshot-every", "20"];
    let a = daemon_on(&url, &keep);
    let b = daemon_on(&url, &keep);
    post_until_acked(
        &b,
        &json!({"tx_kind":"x.before","payload":{}}),
        Duration::from_secs(30),
    );
    let before = b.head();
    let paused = std::time::Instant::now();
    signal(&b, libc::SIGSTOP);
    // More than the sockets buffer for b, so the server cannot have
    // delivered it all before the purge; and a pause longer than its
    // consumer survives idle, so b must start reading again from a
    // stream sequence that is gone.
    let pad = "x".repeat(2_000);
    for i in 0..200 {
        let lines: String = (0..10)
            .map(|j| {
                format!(
                    "{}\n",
                    json!({"tx_kind":"x.fill","payload":{"i":i,"j":j,"pad":pad}})
                )
            })
            .collect();
        let r = a.batch(&lines);
        assert!(r.status < 300, "{:?}", r.json());
    }
    wait_until("a compacts past b's head", Duration::from_secs(30), || {
        status(&a)["oldest_seq"].as_u64().unwrap_or(0) > before + 1
    });
    std::thread::sleep(Duration::from_secs(12).saturating_sub(paused.elapsed()));
    signal(&b, libc::SIGCONT);
    let head = a.head();
    wait_until(
        "b catches up past the hole",
        Duration::from_secs(30),
        || {
            b.try_http("GET", "/v1/status", &[], None)
                .ok()
                .and_then(|r| r.json()["head_seq"].as_u64())
                .is_some_and(|h| h >= head)
        },
    );
    assert!(
        b.log().contains("reloaded from the snapshot"),
        "b did not go through the compaction it slept through:\n{}",
        b.log()
    );
    // Caught up, it idles: no writer spinning on a batch it cannot find.
    let cpu = cpu_secs(b.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(b.pid()) - cpu;
    assert!(
        used < 1.0,
        "b used {used:.2} s of CPU in 2 s after catching up"
    );
    // And it writes again, in the same order as a.
    let seq = post_until_acked(
        &b,
        &json!({"tx_kind":"x.after","payload":{}}),
        Duration::from_secs(30),
    );
    assert_eq!(seq, head + 1);
    wait_until("a sees b's write", Duration::from_secs(10), || {
        a.head() >= seq
    });
    assert_eq!(status(&a)["head_seq"], status(&b)["head_seq"], "one head");
}

#[test]
fn losing_any_one_node_of_three_ends_no_session() {
    let _alone = crate::support::exclusive();
    let mut nats = Nats::cluster();
    let url = nats.url("r3live");
    let opts = ["--replicas", "3", "--daemon-lease", "2s"];
    let a = daemon_on(&url, &opts);
    let b = daemon_on(&url, &opts);
    for (i, d) in [&a, &b].iter().enumerate() {
        for j in 0..2 {
            register_long(d, &format!("s{i}{j}"));
        }
    }
    let acked = std::sync::Mutex::new(0usize);
    // Each node in turn — so the stream's leader, the KV bucket's leader
    // and a follower each go once — down for 10 s.
    for victim in 0..3 {
        let killed = std::time::Instant::now();
        nats.nodes[victim].stop(libc::SIGKILL);
        // Writes go on through both daemons while the node is down
        // (retried with their tx_id across a leader election).
        std::thread::scope(|s| {
            for (w, d) in [&a, &b].into_iter().enumerate() {
                let acked = &acked;
                s.spawn(move || {
                    for i in 0..10 {
                        let tx = format!("01J{:023}", victim * 10_000 + w * 1000 + i);
                        let body = json!({"tx_kind":"x.load","payload":{"i":i},"tx_id":tx});
                        post_until_acked(d, &body, Duration::from_secs(90));
                        *acked.lock().expect("acked") += 1;
                        std::thread::sleep(Duration::from_millis(300));
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed()));
        nats.nodes[victim].restart();
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(acked.into_inner().expect("acked"), 60);
    let head = a.head().max(b.head());
    for d in [&a, &b] {
        wait_until("both at the head", Duration::from_secs(30), || {
            d.head() >= head
        });
    }
    let gone = ended(&a);
    assert!(
        gone.is_empty(),
        "a lost node ended sessions: {gone:?}\n--- a ---\n{}\n--- b ---\n{}",
        a.log(),
        b.log()
    );
    let events = a.all_events();
    for victim in 0..3 {
        for w in 0..2 {
            for i in 0..10 {
                let tx = format!("01J{:023}", victim * 10_000 + w * 1000 + i);
                let n = events.iter().filter(|e| e["tx_id"] == tx.as_str()).count();
                assert_eq!(n, 1, "write {tx} is in the log {n} times");
            }
        }
    }
}

/// A daemon paused past its sessions' leases (SIGSTOP) must not end them
/// on waking from its own stale clock: their agents kept renewing, and
/// the renewals wait unread in its socket. Any daemon, SQLite or shared.
#[test]
fn a_daemon_woken_from_a_pause_reads_the_renewals_before_ending_a_session() {
    let d = Daemon::start(&[]);
    let out = d.ok(&[
        "--json", "session", "register", "--id", "live", "--ttl", "2s",
    ]);
    let token = serde_json::from_str::<Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // The agent's heartbeat, every 300 ms; each blocks while the
        // daemon sleeps and goes through when it wakes.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let env = [
                    ("COORD_SESSION", "live"),
                    ("COORD_SESSION_TOKEN", token.as_str()),
                ];
                let _ = d.coord_env(&["--no-autostart", "session", "heartbeat"], &env);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        signal(&d, libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(5));
        signal(&d, libc::SIGCONT);
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let gone = ended(&d);
    assert!(
        gone.is_empty(),
        "a live session ended after the pause: {gone:?}\n{}",
        d.log()
    );
    assert!(
        d.log().contains("woke up late"),
        "the pause was not noticed:\n{}",
        d.log()
    );
}
