//! The real Claude Code, interactive under tmux, seen first-hand
//! (docs/AGENTS.md): a real permission dialog is `needs_input` (saying
//! what for) while the dialog is on screen, answering it with a key makes
//! the session work on and then idle, mail sent meanwhile reaches the
//! model with the next prompt, and `kill -9` of the agent ends the session
//! as dead through its pidfd.
//!
//! Needs Claude Code from npm and tmux (scripts/test installs both).

use super::agents::{claude_bin, git_repo, install_in_project, Model};
use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn session(d: &Daemon) -> Option<serde_json::Value> {
    let list = d.http("GET", "/v1/sessions", &[], None).json();
    list["sessions"]
        .as_array()?
        .iter()
        .find(|s| {
            s["session_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("claude-"))
        })
        .cloned()
}

fn state(d: &Daemon) -> String {
    session(d)
        .and_then(|s| s["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `HOME` for an interactive Claude Code that asks nothing before work:
/// onboarding done, the test key approved, the project trusted.
pub(crate) fn quiet_home(home: &Path, repo: &Path) {
    std::fs::create_dir_all(home).expect("home");
    let mut projects = serde_json::Map::new();
    projects.insert(
        repo.to_string_lossy().into_owned(),
        serde_json::json!({"hasTrustDialogAccepted": true}),
    );
    std::fs::write(
        home.join(".claude.json"),
        serde_json::json!({
            "hasCompletedOnboarding": true,
            "customApiKeyResponses": {"approved": ["test"], "rejected": []},
            "projects": projects,
        })
        .to_string(),
    )
    .expect(".claude.json");
}

/// Types a prompt once the input box shows it (keys sent while the TUI
/// starts are lost), then Enter.
pub(crate) fn type_prompt(tmux: &Tmux, prompt: &str) {
    let screen = || {
        String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-t", "a"]).stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tmux
            .run(&["send-keys", "-t", "a", "-l", prompt])
            .status
            .success());
        let typed = Instant::now();
        while typed.elapsed() < Duration::from_secs(3) && !screen().contains(prompt) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if screen().contains(prompt) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prompt never showed:\n{}",
            screen()
        );
    }
    assert!(tmux
        .run(&["send-keys", "-t", "a", "Enter"])
        .status
        .success());
}

/// The real Claude Code, interactive in a tmux session `a` of a server of
/// its own (`NAME-PID`), in `repo`, with `home`, talking to the scripted
/// model on `port` and to `d`'s socket, asking before it writes.
pub(crate) fn claude_in_tmux(name: &str, d: &Daemon, repo: &Path, home: &Path, port: u16) -> Tmux {
    let env = format!(
        "env -i PATH={path} HOME={home} TERM=xterm-256color TMUX_PANE=$TMUX_PANE ANTHROPIC_BASE_URL=http://127.0.0.1:{port} \
         ANTHROPIC_API_KEY=test CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 \
         DISABLE_AUTOUPDATER=1 COORD_SOCKET={socket} {claude} --permission-mode default",
        path = std::env::var("PATH").unwrap_or_default(),
        home = home.display(),
        socket = d.socket.display(),
        claude = claude_bin().display(),
    );
    tmux_running(name, repo, &env)
}

/// `command` in a 160×40 tmux session `a` of a server of its own
/// (`NAME-PID`), started in `repo`.
pub(crate) fn tmux_running(name: &str, repo: &Path, command: &str) -> Tmux {
    let tmux = Tmux(format!("{name}-{}", std::process::id()));
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "a",
        "-x",
        "160",
        "-y",
        "40",
        "-c",
        repo.to_str().expect("utf8"),
        command,
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    tmux
}

/// Presses `key` while the screen shows `showing` (again every 2 s: a
/// key the agent's dialog is not ready for yet is lost) until `done`.
pub(crate) fn press_until(tmux: &Tmux, key: &str, showing: &str, done: &mut dyn FnMut() -> bool) {
    let mut sent: Option<Instant> = None;
    let what = format!("{key:?} pressed at {showing:?} to take effect");
    wait_showing(tmux, &what, &mut || {
        if screen_of(tmux).contains(showing)
            && sent.is_none_or(|t| t.elapsed() > Duration::from_secs(2))
        {
            assert!(tmux.run(&["send-keys", "-t", "a", key]).status.success());
            sent = Some(Instant::now());
        }
        done()
    });
}

/// What the agent's pane shows now.
pub(crate) fn screen_of(tmux: &Tmux) -> String {
    String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-t", "a"]).stdout).into_owned()
}

/// Like `wait_until` (60 s), but a timeout shows the agent's screen.
pub(crate) fn wait_showing(tmux: &Tmux, what: &str, f: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the screen:\n{}",
            screen_of(tmux)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interactive_claude_code_waits_works_reads_mail_and_dies() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git_repo(dir.path());
    let home = dir.path().join("home");
    quiet_home(&home, &repo);
    let target = repo.join("src.txt");
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "tool": {"name": "Write", "input": {"file_path": target, "content": "hi\n"}},
            "reply": "written"
        }),
    );
    install_in_project(&d, "claude", &repo, &home);

    let tmux = claude_in_tmux("coord-claude", &d, &repo, &home, model.port);
    let screen = || screen_of(&tmux);
    let wait =
        |what: &str, mut f: Box<dyn FnMut() -> bool + '_>| wait_showing(&tmux, what, &mut *f);
    // SessionStart registered it with the agent's own process.
    wait_until("the session", Duration::from_secs(60), || {
        state(&d) == "active"
    });
    let pane = session(&d).map(|s| s["blob"]["tmux_pane"].clone());
    assert!(
        pane.as_ref()
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.starts_with('%')),
        "the agent's tmux pane: {pane:?}"
    );
    let pid = session(&d).and_then(|s| s["pid"].as_u64()).expect("a pid") as u32;

    type_prompt(&tmux, "write the file");
    let mut dialog_at = None;
    let mut waiting_at = None;
    wait(
        "the permission dialog and needs_input",
        Box::new(|| {
            if dialog_at.is_none() && screen().contains("Do you want to create") {
                dialog_at = Some(Instant::now());
            }
            if waiting_at.is_none() && state(&d) == "needs_input" {
                waiting_at = Some(Instant::now());
            }
            dialog_at.is_some() && waiting_at.is_some()
        }),
    );
    let (dialog_at, waiting_at) = (dialog_at.expect("dialog"), waiting_at.expect("waiting"));
    eprintln!(
        "needs_input {} the dialog showed ({:?} apart)",
        if waiting_at <= dialog_at {
            "before"
        } else {
            "after"
        },
        waiting_at.max(dialog_at) - waiting_at.min(dialog_at)
    );
    let s = session(&d).expect("session");
    assert!(
        s["state_reason"]
            .as_str()
            .unwrap_or("")
            .contains("claude:PermissionRequest"),
        "{s}"
    );
    let list = d.ok(&["session", "list"]);
    assert!(
        list.contains(&format!("a human: permission: Write {}", target.display())),
        "{list}"
    );
    assert!(
        !target.exists(),
        "nothing written before the human said yes"
    );

    // The human says yes: it writes, works on, and ends its turn idle.
    // (A dialog ignores keys for a moment after it opens, so a key that
    // came too early is sent again while the dialog stays.)
    press_until(&tmux, "1", "Do you want to create", &mut || {
        state(&d) == "idle"
    });
    assert!(target.exists(), "the approved Write happened");
    let reasons: Vec<String> = d
        .all_events()
        .iter()
        .filter(|e| e["tx_kind"] == "session.state")
        .map(|e| format!("{} {}", e["payload"]["to"], e["payload"]["reason"]))
        .collect();
    let after = reasons
        .iter()
        .position(|r| r.contains("needs_input"))
        .expect("needs_input logged");
    assert!(
        reasons[after..].iter().any(|r| r.starts_with("\"active\"")),
        "back to active once answered: {reasons:?}"
    );

    // Mail sent now is in the model's next request, with the next prompt.
    let sid = session(&d)
        .and_then(|s| s["session_id"].as_str().map(str::to_string))
        .expect("id");
    d.ok(&["send", &sid, "MAILCHECK: rebase on main first"]);
    type_prompt(&tmux, "next task");
    wait(
        "the mail in a model request",
        Box::new(|| {
            std::fs::read_to_string(&model.log)
                .unwrap_or_default()
                .contains("MAILCHECK: rebase on main first")
        }),
    );

    // kill -9: the pidfd says so at once; the session ends dead.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {pid}");
    wait_until("the session ended", Duration::from_secs(30), || {
        session(&d).is_none()
    });
    let end = d
        .all_events()
        .into_iter()
        .rev()
        .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == sid.as_str())
        .expect("a dereg");
    assert_eq!(end["payload"]["reason"], "process_exited", "{end}");
    assert_eq!(end["payload"]["exit_code"], 137, "{end}");
}
