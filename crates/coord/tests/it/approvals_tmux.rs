//! The approval queue with the real Claude Code, interactive under tmux,
//! offline against the scripted model server (PROTOCOL §14): a permission
//! dialog is a pending approval at once; `coord approvals allow` makes it
//! write without a key pressed in its terminal; `deny --reason` leaves the
//! file unwritten and the model reads the reason; a policy rule decides
//! writes under `tmp/**` with nothing pending; answering in the terminal,
//! yes or no, withdraws the request; a wait that runs out falls back to the
//! terminal's own prompt.
//!
//! Needs Claude Code from npm and tmux (scripts/test installs both).

use super::agents::{git_repo, said, Model};
use super::agents_tmux::{
    claude_in_tmux, press_until, quiet_home, screen_of, type_prompt, wait_showing,
};
use crate::support::*;
use std::time::{Duration, Instant};

/// The approvals of one state (`pending`, `decided`).
fn approvals(d: &Daemon, state: &str) -> Vec<serde_json::Value> {
    d.http("GET", &format!("/v1/approvals?state={state}"), &[], None)
        .json()["approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pending_for(d: &Daemon, file: &str) -> Option<serde_json::Value> {
    approvals(d, "pending")
        .into_iter()
        .find(|a| a["summary"].as_str().is_some_and(|s| s.ends_with(file)))
}

fn decided_for(d: &Daemon, file: &str) -> Option<serde_json::Value> {
    approvals(d, "decided")
        .into_iter()
        .rev()
        .find(|a| a["summary"].as_str().is_some_and(|s| s.ends_with(file)))
}

fn session_state(d: &Daemon) -> String {
    let list = d.http("GET", "/v1/sessions", &[], None).json();
    list["sessions"]
        .as_array()
        .and_then(|s| {
            s.iter().find(|s| {
                s["session_id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("claude-"))
            })
        })
        .and_then(|s| s["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn one_queue_decides_a_real_claude_codes_permission_prompts() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git_repo(dir.path());
    let home = dir.path().join("home");
    quiet_home(&home, &repo);
    let write = |name: &str| serde_json::json!({"name": "Write", "input": {"file_path": repo.join(name), "content": "hi\n"}});
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "by_prompt": [
                ["ALLOW", write("src/allowed.txt")],
                ["DENY", write("src/denied.txt")],
                ["SCRATCH", write("tmp/scratch.txt")],
                ["TERMINAL", write("src/terminal.txt")],
                ["REFUSE", write("src/refused.txt")],
                ["EXPIRE", write("src/late.txt")],
            ],
            "reply": "done"
        }),
    );
    // A policy beside the socket: writes under tmp/ need nobody.
    std::fs::write(
        d.socket.parent().expect("dir").join("approvals.toml"),
        "[[rule]]\nname = \"scratch is free\"\ndecision = \"allow\"\ntool = [\"Write\", \"Edit\"]\npath = \"tmp/**\"\n",
    )
    .expect("policy");
    let out = d.coord_env(
        &[
            "hooks",
            "install",
            "claude",
            "--project",
            repo.to_str().expect("utf8"),
            "--approval-wait",
            "8s",
        ],
        &[("XDG_STATE_HOME", home.to_str().expect("utf8"))],
    );
    assert!(out.status.success(), "{}", said(&out));
    let settings = std::fs::read_to_string(repo.join(".claude/settings.json")).expect("settings");
    assert!(settings.contains("\"timeout\": 38"), "{settings}");

    let tmux = claude_in_tmux("coord-approvals", &d, &repo, &home, model.port);
    let screen = || screen_of(&tmux);
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| wait_showing(&tmux, what, f);
    wait("the session", &mut || session_state(&d) == "active");
    // Each scenario starts from an idle agent.
    let turn = |prompt: &str| {
        type_prompt(&tmux, prompt);
    };

    // 1. Allowed from the queue: no key pressed in the agent's terminal.
    turn("ALLOW this");
    let mut dialog_at = None;
    let mut pending_at = None;
    wait("a pending approval and the dialog", &mut || {
        if pending_at.is_none() && pending_for(&d, "src/allowed.txt").is_some() {
            pending_at = Some(Instant::now());
        }
        if dialog_at.is_none() && screen().contains("Do you want to create") {
            dialog_at = Some(Instant::now());
        }
        pending_at.is_some() && dialog_at.is_some()
    });
    let (p, s) = (pending_at.expect("pending"), dialog_at.expect("dialog"));
    eprintln!(
        "the approval was pending {} the dialog showed ({:?} apart)",
        if p <= s { "before" } else { "after" },
        p.max(s) - p.min(s)
    );
    let a = pending_for(&d, "src/allowed.txt").expect("pending");
    let id = a["approval_id"].as_str().expect("id").to_string();
    let list = d.ok(&["session", "list"]);
    assert!(
        list.contains(&format!("(approval {id})")),
        "needs_input names it: {list}"
    );
    assert!(!repo.join("src/allowed.txt").exists());
    let said_ok = d.ok(&["approvals", "allow", &id, "--by", "alice"]);
    assert!(
        said_ok.contains("allow") && said_ok.contains("alice"),
        "{said_ok}"
    );
    wait("the allowed write", &mut || {
        repo.join("src/allowed.txt").exists()
    });
    wait("idle after the allowed turn", &mut || {
        session_state(&d) == "idle"
    });
    let a = decided_for(&d, "src/allowed.txt").expect("decided");
    assert_eq!(a["decision"]["decision"], "allow", "{a}");
    assert_eq!(a["decision"]["by"], "alice", "{a}");
    assert_eq!(a["decision"]["via"], "socket", "{a}");

    // 2. Denied with a reason: nothing written, the model reads why.
    turn("DENY this");
    wait("a pending approval to deny", &mut || {
        pending_for(&d, "src/denied.txt").is_some()
    });
    let id = pending_for(&d, "src/denied.txt").expect("pending")["approval_id"]
        .as_str()
        .expect("id")
        .to_string();
    d.ok(&["approvals", "deny", &id, "--reason", "use src2/"]);
    wait("the reason in the model's input", &mut || {
        model.requests().iter().any(|r| r.contains("use src2/"))
    });
    wait("idle after the denied turn", &mut || {
        session_state(&d) == "idle"
    });
    assert!(
        !repo.join("src/denied.txt").exists(),
        "a denied write never happens"
    );

    // 3. A policy rule decides at once: nothing is ever pending.
    turn("SCRATCH this");
    wait("the write the rule allowed", &mut || {
        repo.join("tmp/scratch.txt").exists()
    });
    let a = decided_for(&d, "tmp/scratch.txt").expect("decided");
    assert_eq!(a["decision"]["rule"], "scratch is free", "{a}");
    assert_eq!(a["decision"]["by"], "policy", "{a}");
    assert_eq!(
        a["decision"]["decided_seq"].as_u64(),
        a["requested_seq"].as_u64().map(|s| s + 1),
        "decided in the commit that asked: {a}"
    );
    wait("idle after the scratch turn", &mut || {
        session_state(&d) == "idle"
    });

    // 4. Answered in the terminal: the request is withdrawn everywhere.
    turn("TERMINAL this");
    wait("a pending approval for the terminal", &mut || {
        pending_for(&d, "src/terminal.txt").is_some() && screen().contains("Do you want to create")
    });
    press_until(&tmux, "1", "Do you want to create", &mut || {
        repo.join("src/terminal.txt").exists()
    });
    wait("the request withdrawn", &mut || {
        decided_for(&d, "src/terminal.txt").is_some()
    });
    let a = decided_for(&d, "src/terminal.txt").expect("decided");
    assert_eq!(a["decision"]["decision"], "withdrawn", "{a}");
    assert!(pending_for(&d, "src/terminal.txt").is_none());
    wait("idle after the terminal turn", &mut || {
        session_state(&d) == "idle"
    });

    // 4b. Refused in the terminal: Claude Code fires no further hook
    // (no `PostToolUse`, no `Stop`), but it ends the waiting hook, which
    // withdraws the request and stops saying the session waits.
    turn("REFUSE this");
    wait("a pending approval to refuse in the terminal", &mut || {
        pending_for(&d, "src/refused.txt").is_some() && screen().contains("Do you want to create")
    });
    wait("the session waiting", &mut || {
        session_state(&d) == "needs_input"
    });
    press_until(&tmux, "3", "Do you want to create", &mut || {
        decided_for(&d, "src/refused.txt").is_some()
    });
    let a = decided_for(&d, "src/refused.txt").expect("decided");
    assert_eq!(a["decision"]["decision"], "withdrawn", "{a}");
    assert_eq!(
        a["decision"]["reason"], "answered in the agent's terminal",
        "{a}"
    );
    wait("the session no longer waiting", &mut || {
        session_state(&d) != "needs_input"
    });
    assert!(!repo.join("src/refused.txt").exists(), "refused");

    // 5. Nobody decides: after the hook's wait (8 s) the agent's own
    // prompt decides, and the approval says it expired.
    turn("EXPIRE this");
    wait("a pending approval nobody answers", &mut || {
        pending_for(&d, "src/late.txt").is_some()
    });
    let asked = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    while decided_for(&d, "src/late.txt").is_none() {
        assert!(Instant::now() < deadline, "never expired:\n{}", screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("expired after {:?}", asked.elapsed());
    let a = decided_for(&d, "src/late.txt").expect("decided");
    assert_eq!(a["decision"]["decision"], "expired", "{a}");
    assert!(
        !repo.join("src/late.txt").exists(),
        "nothing decided it yet"
    );
    wait("the terminal's own prompt", &mut || {
        screen().contains("Do you want to create")
    });
    press_until(&tmux, "1", "Do you want to create", &mut || {
        repo.join("src/late.txt").exists()
    });

    // The audit: every decision has its request, none is decided twice.
    let log = d.ok(&["approvals", "log"]);
    for part in ["alice", "deny", "scratch is free", "withdrawn", "expired"] {
        assert!(log.contains(part), "{part} not in {log}");
    }
}
