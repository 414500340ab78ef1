//! The main job (issue: "coord core"): 20 agent processes under
//! `coord session run` contend for 5 locks, mail each other and take
//! dispatch orders; one is SIGKILLed and its locks go to the next waiter in
//! FIFO order through its pidfd. Two subscribers, one live from the start
//! and one replaying afterwards, see the identical gap-free stream, and no
//! exclusive lock ever has two holders.

use crate::support::{bin, coord_cmd, fold, wait_until, Daemon, Follower};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::process::{Child, Stdio};
use std::time::Duration;

const AGENTS: usize = 20;

const SCRIPT: &str = r#"
set -e
n=$1
C="$COORD_BIN"
if [ "$n" = "00" ]; then
  $C lock acquire res-0
  # The victim holds res-0 until it is killed.
  exec sleep 600
fi
while [ ! -e "$GO" ]; do sleep 0.02; done
for i in 1 2 3; do
  r=res-$(( (10#$n + i) % 5 ))
  $C lock acquire "$r" --wait 60s > /dev/null
  to=agent-$(printf %02d $(( (10#$n % 19) + 1 )))
  $C send "$to" "round $i from $COORD_SESSION" --kind note > /dev/null
  sleep 0.0$(( RANDOM % 5 ))
  $C lock release "$r" > /dev/null
done
# Two orders: the work, then the word to leave (so every inbox stays alive
# while others may still write to it).
for step in work leave; do
  order=$($C --json dispatch wait --timeout 60s --ack)
  id=$(printf '%s' "$order" | grep -o '"order_id":"[^"]*"' | cut -d'"' -f4)
  $C dispatch complete "$id" --result "{\"step\":\"$step\"}" > /dev/null
done
"#;

fn spawn_agent(d: &Daemon, script: &std::path::Path, n: usize) -> Child {
    let id = format!("agent-{n:02}");
    coord_cmd()
        .args(["session", "run", "--id", &id, "--ttl", "60s", "--", "bash"])
        .arg(script)
        .arg(format!("{n:02}"))
        .env("COORD_SOCKET", &d.socket)
        .env("COORD_BIN", bin())
        .env("GO", d.dir.path().join("go"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agent")
}

#[test]
fn twenty_agents_coordinate_and_a_killed_one_hands_its_locks_on() {
    let _alone = crate::support::exclusive();
    let d = Daemon::start(&[]);
    let script = d.dir.path().join("agent.sh");
    std::fs::write(&script, SCRIPT).expect("script");
    // Subscriber one: live from the very first event.
    let live = Follower::start(&d, &["--since", "0"]);

    let mut victim = spawn_agent(&d, &script, 0);
    wait_until("the victim's lock", Duration::from_secs(20), || {
        d.ok(&["--json", "lock", "list"]).contains("agent-00")
    });
    let mut agents: Vec<Child> = (1..AGENTS).map(|n| spawn_agent(&d, &script, n)).collect();
    wait_until("all sessions", Duration::from_secs(30), || {
        let v: Value = serde_json::from_str(&d.ok(&["--json", "session", "list"])).expect("json");
        v["sessions"].as_array().map_or(0, Vec::len) == AGENTS
    });
    for n in 1..AGENTS {
        d.ok(&[
            "dispatch",
            "issue",
            &format!("agent-{n:02}"),
            &format!("TOD-{n}"),
            "--id",
            &format!("ord-{n:02}"),
        ]);
    }
    std::fs::write(d.dir.path().join("go"), "").expect("go");
    // Let agents queue behind the victim on res-0, then kill it.
    wait_until("waiters on res-0", Duration::from_secs(30), || {
        let v: Value = serde_json::from_str(&d.ok(&["--json", "lock", "list"])).expect("json");
        v["locks"].as_array().into_iter().flatten().any(|l| {
            l["resource"] == "res-0" && l["waiters"].as_array().is_some_and(|w| !w.is_empty())
        })
    });
    let show: Value =
        serde_json::from_str(&d.ok(&["--json", "session", "show", "agent-00"])).expect("json");
    let pid = show["pid"].as_i64().expect("victim pid") as i32;
    // SAFETY: the pid is the victim's command, a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    wait_until("all work orders completed", Duration::from_secs(60), || {
        d.all_events()
            .iter()
            .filter(|e| e["tx_kind"] == "dispatch.complete")
            .count()
            == AGENTS - 1
    });
    for n in 1..AGENTS {
        d.ok(&[
            "dispatch",
            "issue",
            &format!("agent-{n:02}"),
            "leave",
            "--id",
            &format!("leave-{n:02}"),
        ]);
    }
    for (i, a) in agents.iter_mut().enumerate() {
        let st = a.wait().expect("agent");
        assert!(st.success(), "agent-{:02} failed: {st}\n{}", i + 1, d.log());
    }
    let st = victim.wait().expect("victim");
    assert_eq!(
        st.code(),
        Some(137),
        "the victim's session run passes SIGKILL on as 128+9"
    );

    let head = d.head();
    let live_lines = live.wait_for_seq(head, Duration::from_secs(30));
    live.stop();
    let replay = d.ok(&[
        "events",
        "--since",
        "start",
        "--no-follow",
        "--format",
        "json",
    ]);
    let replay_lines: Vec<String> = replay.lines().map(str::to_string).collect();
    assert_eq!(live_lines, replay_lines, "live and replayed streams differ");
    let events: Vec<Value> = replay_lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    crate::support::assert_gap_free(&events, 1);
    assert_eq!(events.len() as u64, head);

    check_locks_over_the_log(&events);

    // The victim: ended by its pidfd, its lock released and granted on.
    let dereg = events
        .iter()
        .position(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == "agent-00")
        .expect("victim dereg");
    // Its pidfd (source lifecycle) and its wrapper's dereg with the exit
    // status (source api) race; on a loaded machine either may land first,
    // and both record the SIGKILL.
    let how = (
        events[dereg]["payload"]["reason"].as_str(),
        events[dereg]["source"].as_str(),
    );
    assert!(
        matches!(
            how,
            (Some("process_exited"), Some("lifecycle")) | (Some("explicit"), Some("api"))
        ),
        "{}",
        events[dereg]
    );
    assert_eq!(
        events[dereg]["payload"]["exit_code"], 137,
        "{}",
        events[dereg]
    );
    let rel = events[..dereg]
        .iter()
        .rposition(|e| {
            e["tx_kind"] == "lock.release" && e["payload"]["owner_session"] == "agent-00"
        })
        .expect("victim release");
    assert_eq!(events[rel]["payload"]["reason"], "owner_gone");
    assert_eq!(
        events[rel + 1]["tx_kind"],
        "lock.acquire",
        "no grant followed the release"
    );
    assert_eq!(events[rel + 1]["resource"], "res-0");

    let count = |k: &str| events.iter().filter(|e| e["tx_kind"] == k).count();
    assert_eq!(count("session.register"), AGENTS);
    assert_eq!(count("session.dereg"), AGENTS);
    assert_eq!(count("inbox.deliver"), (AGENTS - 1) * 3);
    assert_eq!(count("dispatch.issue"), 2 * (AGENTS - 1));
    assert_eq!(count("dispatch.complete"), 2 * (AGENTS - 1));

    // The view is the fold of the log.
    let snap = d.http("GET", "/v1/snapshot", &[], None).json();
    let folded = fold(&events);
    assert_eq!(
        serde_json::to_value(&folded.view).expect("view"),
        snap["view"]
    );
    assert_eq!(snap["seq"].as_u64(), Some(head));
}

/// Replays the log: no exclusive lock has two holders at any seq, and every
/// grant to a waiter goes to the head of that lock's FIFO queue.
fn check_locks_over_the_log(events: &[Value]) {
    let mut holder: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
    for e in events {
        let p = &e["payload"];
        let (r, who) = (
            p["resource"].as_str().unwrap_or("").to_string(),
            p["owner_session"].as_str().unwrap_or("").to_string(),
        );
        match e["tx_kind"].as_str().unwrap_or("") {
            "lock.wait" => queue.entry(r).or_default().push_back(who),
            "lock.wait_cancel" => queue.entry(r).or_default().retain(|s| *s != who),
            "lock.acquire" => {
                if let Some(other) = holder.get(&r) {
                    panic!("seq {}: {who} took {r} while {other} held it", e["seq"]);
                }
                let q = queue.entry(r.clone()).or_default();
                if q.contains(&who) {
                    assert_eq!(
                        q.front(),
                        Some(&who),
                        "seq {}: grant of {r} skipped the queue {q:?}",
                        e["seq"]
                    );
                    q.pop_front();
                }
                holder.insert(r, who);
            }
            "lock.release" => {
                assert_eq!(
                    holder.remove(&r).as_deref(),
                    Some(who.as_str()),
                    "seq {}: release by a non-holder",
                    e["seq"]
                );
            }
            _ => {}
        }
    }
    assert!(holder.is_empty(), "locks still held at the end: {holder:?}");
}
