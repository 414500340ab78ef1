//! The lifecycle manager with real runtimes: a tmux session (probed) and
//! a process (pidfd), plus a transcript, through the real daemon and CLI.
//! tmux must be installed (`.ci/run` installs it); the test runs its own
//! tmux server on a private socket and kills only that server.

use crate::support::{wait_until, Daemon, Tmux};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// `session.state` transitions of `id` as (from, to, reason).
fn transitions(d: &Daemon, id: &str) -> Vec<(String, String, String)> {
    d.all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "session.state" && e["session_id"] == id)
        .map(|e| {
            let p = &e["payload"];
            (
                p["from"].as_str().unwrap_or("").to_string(),
                p["to"].as_str().unwrap_or("").to_string(),
                p["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn state(d: &Daemon, id: &str) -> Option<String> {
    let v: Value = serde_json::from_str(&d.ok(&["--json", "session", "list"])).expect("json");
    v["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["session_id"] == id)
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
}

fn dereg_reason(d: &Daemon, id: &str) -> Option<String> {
    d.all_events()
        .iter()
        .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == id)
        .map(|e| e["payload"]["reason"].as_str().unwrap_or("").to_string())
}

#[test]
fn a_tmux_session_and_a_transcript_drive_the_state() {
    let tmux = Tmux(format!("coord-it-{}", std::process::id()));
    let d = Daemon::start(&[
        "--idle-after",
        "400ms",
        "--probe-interval",
        "100ms",
        "--tmux-socket",
        &tmux.0,
    ]);
    let out = tmux.run(&["new-session", "-d", "-s", "agent1", "sleep 600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcript = d.dir.path().join("transcript.jsonl");
    std::fs::write(&transcript, "{\"type\":\"user\",\"message\":{}}\n").expect("transcript");
    d.ok(&[
        "session",
        "register",
        "--id",
        "agent1",
        "--tmux",
        "agent1",
        "--transcript",
        transcript.to_str().expect("utf-8 path"),
        "--ttl",
        "60s",
    ]);
    // The transcript was just written: the agent is working.
    wait_until("active", Duration::from_secs(10), || {
        state(&d, "agent1").as_deref() == Some("active")
    });
    // Its turn ends: the transcript's last entry waits for a human.
    std::fs::write(
        &transcript,
        "{\"type\":\"user\",\"message\":{}}\n{\"type\":\"assistant\",\"message\":{\"stop_reason\":\"end_turn\"}}\n",
    )
    .expect("transcript");
    wait_until("needs_input", Duration::from_secs(10), || {
        state(&d, "agent1").as_deref() == Some("needs_input")
    });
    // tmux session ends: probed, the session is dead and ends.
    let out = tmux.run(&["kill-session", "-t", "agent1"]);
    assert!(out.status.success());
    wait_until("the end of agent1", Duration::from_secs(10), || {
        dereg_reason(&d, "agent1").is_some()
    });
    assert_eq!(dereg_reason(&d, "agent1").as_deref(), Some("runtime_gone"));
    let t = transitions(&d, "agent1");
    let last = t.last().expect("transitions");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("needs_input", "dead"));
    assert!(last.2.contains("tmux session agent1 is gone"), "{t:?}");
}

#[test]
fn a_process_goes_idle_and_its_exit_is_its_death() {
    let d = Daemon::start(&["--idle-after", "300ms"]);
    let mut child = Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = child.id().to_string();
    d.ok(&[
        "session", "register", "--id", "proc", "--pid", &pid, "--ttl", "60s",
    ]);
    wait_until("idle", Duration::from_secs(10), || {
        state(&d, "proc").as_deref() == Some("idle")
    });
    child.kill().expect("kill our sleep");
    let _ = child.wait();
    wait_until("the end of proc", Duration::from_secs(10), || {
        dereg_reason(&d, "proc").is_some()
    });
    assert_eq!(dereg_reason(&d, "proc").as_deref(), Some("process_exited"));
    let t = transitions(&d, "proc");
    assert_eq!(
        t.iter()
            .map(|(f, to, _)| format!("{f}->{to}"))
            .collect::<Vec<_>>(),
        ["starting->idle", "idle->dead"]
    );
}
