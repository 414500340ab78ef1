//! The real Codex CLI seen first-hand (docs/AGENTS.md): `codex exec`, and
//! the interactive `codex` under tmux for its permission requests,
//! offline against the scripted model server's Responses API, with
//! coord's hooks installed by `coord hooks install codex` and trusted
//! through Codex's own app-server (no `--dangerously-bypass-hook-trust`).
//!
//! Needs Codex from npm (scripts/test installs it under the cache
//! directory); `COORD_CODEX` names another binary.

use super::agents::{agent_bin, check_agent_session, git_repo, hold, past_the_prompt, said, Model};
use super::agents_tmux::{press_until, screen_of, tmux_running, type_prompt, wait_showing};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn codex_bin() -> PathBuf {
    agent_bin("COORD_CODEX", "codex")
}

/// A private Codex home whose model provider is `model`, with coord's
/// hooks installed (and trusted) in its `hooks.json`.
struct Codex {
    home: PathBuf,
    user_home: PathBuf,
}

impl Codex {
    fn new(d: &Daemon, dir: &Path, model: &Model) -> Codex {
        Codex::with_install(d, dir, model, &[])
    }

    /// As [`Codex::new`], with more arguments for `coord hooks install`.
    fn with_install(d: &Daemon, dir: &Path, model: &Model, install: &[&str]) -> Codex {
        let home = dir.join("codex-home");
        let user_home = dir.join("home");
        std::fs::create_dir_all(&home).expect("codex home");
        std::fs::create_dir_all(&user_home).expect("home");
        std::fs::write(
            home.join("config.toml"),
            format!(
                "model = \"gpt-5.1-codex\"\nmodel_provider = \"scripted\"\n\n[model_providers.scripted]\nname = \"scripted\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nwire_api = \"responses\"\nenv_key = \"SCRIPTED_KEY\"\n",
                model.port
            ),
        )
        .expect("config.toml");
        let codex = Codex { home, user_home };
        let mut args = vec!["hooks", "install", "codex", "--user"];
        args.extend_from_slice(install);
        let out = d.coord_env(&args, &codex.env());
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("Codex trusts coord's 7 hooks (verified"),
            "{said}"
        );
        codex
    }

    /// Trusts `repo` as a project, so the interactive Codex does not ask.
    fn trust_project(&self, repo: &Path) {
        let config = self.home.join("config.toml");
        let mut text = std::fs::read_to_string(&config).expect("config.toml");
        text.push_str(&format!(
            "\n[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            repo.display()
        ));
        std::fs::write(&config, text).expect("config.toml");
    }

    /// The interactive Codex in a tmux session `a` of a server of its
    /// own, in `repo`, asking before a command leaves its sandbox.
    fn in_tmux(&self, d: &Daemon, repo: &Path) -> Tmux {
        let mut env = format!(
            "env -i TERM=xterm-256color SCRIPTED_KEY=test PATH={} COORD_SOCKET={}",
            std::env::var("PATH").unwrap_or_default(),
            d.socket.display()
        );
        for (k, v) in self.env() {
            env.push_str(&format!(" {k}={v}"));
        }
        env.push_str(&format!(
            " {} -c approval_policy=on-request",
            codex_bin().display()
        ));
        tmux_running("codex", repo, &env)
    }

    fn env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("CODEX_HOME", self.home.to_str().expect("utf8")),
            ("HOME", self.user_home.to_str().expect("utf8")),
            ("XDG_STATE_HOME", self.user_home.to_str().expect("utf8")),
            ("COORD_CODEX", codex_bin().to_str().expect("utf8")),
        ]
        .into_iter()
        .map(|(k, v)| (k, leak(v)))
        .collect()
    }

    /// `codex exec PROMPT` in `repo`, offline.
    fn exec(&self, d: &Daemon, repo: &Path, prompt: &str) -> Command {
        let mut c = Command::new(codex_bin());
        c.args([
            "exec",
            "--skip-git-repo-check",
            "-s",
            "workspace-write",
            prompt,
        ])
        .current_dir(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SCRIPTED_KEY", "test")
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Another session holds `src/**`; Codex's `apply_patch` of `src/a.rs` is
/// refused before it happens, the file stays untouched, and the model is
/// told the path, the lock, the holder and its fencing token. Codex's
/// session registered with its own process, went active then idle on its
/// hooks, and ended with it.
#[test]
fn codex_cannot_patch_under_another_sessions_lock() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git_repo(dir.path());
    let patch = "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: src/a.rs\n+fn main() {}\n*** End Patch\nEOF\n";
    let model = Model::start(
        dir.path(),
        serde_json::json!({"shell": patch, "reply": "I could not write it."}),
    );
    let codex = Codex::new(&d, dir.path(), &model);
    let status = d.coord_env(&["hooks", "status"], &codex.env());
    let status = said(&status);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("codex") && l.contains("runs (Codex trusts all 7)")),
        "{status}"
    );
    hold(&d, "holder", "src/**");

    let out = codex
        .exec(&d, &repo, "add src/a.rs")
        .output()
        .expect("codex");
    assert!(out.status.success(), "codex: {}", said(&out));
    let target = repo.join("src/a.rs");
    assert!(!target.exists(), "the refused patch did not happen");
    let refusal = model
        .requests()
        .into_iter()
        .find(|r| r.contains("function_call_output") && r.contains("coord refused this edit"))
        .unwrap_or_else(|| panic!("the model was not told: {}", said(&out)));
    for part in ["src/a.rs", "src/**", "holder", "fencing token"] {
        assert!(refusal.contains(part), "{part} not in {refusal}");
    }

    check_agent_session(&d, "codex", "codex:Stop");
    assert!(d.ok(&["lock", "list"]).contains("src/**"));

    // Uninstall gives back the Codex home as it was: no hooks.json.
    let out = d.coord_env(&["hooks", "uninstall", "codex", "--user"], &codex.env());
    assert!(out.status.success(), "{}", said(&out));
    assert!(!codex.home.join("hooks.json").exists());
}

/// Mail sent to a Codex session while it works reaches the model after
/// its next tool call, once, and is acked.
#[test]
fn mail_reaches_codex_after_its_next_tool() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git_repo(dir.path());
    let gate = dir.path().join("gate");
    let model = Model::start(
        dir.path(),
        serde_json::json!({"shell": "echo working", "reply": "ok", "wait_for": gate}),
    );
    let codex = Codex::new(&d, dir.path(), &model);
    let child = codex
        .exec(&d, &repo, "run the tests")
        .spawn()
        .expect("codex");
    // The model holds its answer until the test has sent the mail.
    let sid = past_the_prompt(&d, "codex", "codex:UserPromptSubmit");
    let out = d.coord(&["send", &sid, "the build on main is red, rebase first"]);
    assert!(out.status.success(), "{}", said(&out));
    std::fs::write(&gate, b"go").expect("gate");
    let out = child.wait_with_output().expect("codex");
    assert!(out.status.success(), "codex: {}", said(&out));
    let bodies = model.requests();
    let with_mail: Vec<&String> = bodies
        .iter()
        .filter(|r| r.contains("the build on main is red"))
        .collect();
    assert!(
        !with_mail.is_empty(),
        "the model never saw the mail: {}",
        said(&out)
    );
    assert!(
        with_mail[0].contains("function_call_output"),
        "it came after the tool call"
    );
    let events = d.all_events();
    assert!(
        events
            .iter()
            .any(|e| e["tx_kind"] == "inbox.ack" && e["session_id"] == sid.as_str()),
        "the mail was acked"
    );
}

/// The approval queue with the real Codex, interactive under tmux
/// (PROTOCOL §14). Codex runs its `PermissionRequest` hook before it
/// draws its own dialog: a command that asks to leave the sandbox is a
/// pending approval at once; `coord approvals allow` runs it; `deny
/// --reason` does not, and the model reads the reason; a wait that runs
/// out (8 s) is `expired`, and Codex's own dialog then asks, a key
/// answers it; Esc while the hook waits (Codex kills the hook, and fires
/// no other) withdraws the request and leaves the session idle.
#[test]
fn codex_asks_the_approval_queue() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = git_repo(dir.path());
    let escalate = |file: &str| {
        serde_json::json!({"shell": format!("touch {file}"), "shell_args": {
            "sandbox_permissions": "require_escalated", "justification": format!("to make {file}")}})
    };
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "by_prompt": [
                ["ALLOW", escalate("allowed.txt")],
                ["DENY", escalate("denied.txt")],
                ["EXPIRE", escalate("late.txt")],
                ["INTERRUPT", escalate("stopped.txt")],
            ],
            "reply": "done"
        }),
    );
    let codex = Codex::with_install(&d, dir.path(), &model, &["--approval-wait", "8s"]);
    codex.trust_project(&repo);
    let tmux = codex.in_tmux(&d, &repo);
    let screen = || screen_of(&tmux);
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| wait_showing(&tmux, what, f);
    let pending = |cmd: &str| -> Option<serde_json::Value> {
        d.http("GET", "/v1/approvals?state=pending", &[], None)
            .json()["approvals"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["command"] == cmd).cloned())
    };
    let decided = |cmd: &str| -> Option<serde_json::Value> {
        d.http("GET", "/v1/approvals?state=decided", &[], None)
            .json()["approvals"]
            .as_array()
            .and_then(|a| a.iter().rev().find(|a| a["command"] == cmd).cloned())
    };
    // Codex takes keys that come fast as a paste, Enter included: the
    // prompt is submitted once the model has it, Enter pressed again
    // after a pause until then.
    let submit = |prompt: &str| {
        type_prompt(&tmux, prompt);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut pressed = std::time::Instant::now();
        while !model.requests().iter().any(|r| r.contains(prompt)) {
            assert!(
                std::time::Instant::now() < deadline,
                "never submitted:\n{}",
                screen()
            );
            if pressed.elapsed() > std::time::Duration::from_secs(1) {
                assert!(tmux
                    .run(&["send-keys", "-t", "a", "Enter"])
                    .status
                    .success());
                pressed = std::time::Instant::now();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let state = || {
        d.http("GET", "/v1/sessions", &[], None).json()["sessions"]
            .as_array()
            .and_then(|s| {
                s.iter()
                    .find(|s| {
                        s["session_id"]
                            .as_str()
                            .is_some_and(|i| i.starts_with("codex-"))
                    })
                    .and_then(|s| s["state"].as_str().map(str::to_string))
            })
            .unwrap_or_default()
    };

    // 1. Allowed from the queue: Codex runs the command, no key pressed.
    submit("ALLOW this");
    wait("a pending approval", &mut || {
        pending("touch allowed.txt").is_some()
    });
    let a = pending("touch allowed.txt").expect("pending");
    assert_eq!(a["agent"], "codex", "{a}");
    assert_eq!(a["tool"], "Bash", "{a}");
    // The hook reports the state right after it asked.
    wait("the session waiting", &mut || state() == "needs_input");
    let id = a["approval_id"].as_str().expect("id").to_string();
    d.ok(&["approvals", "allow", &id, "--by", "alice"]);
    wait("the allowed command's file", &mut || {
        repo.join("allowed.txt").exists()
    });
    wait("idle after the allowed turn", &mut || state() == "idle");
    assert_eq!(
        decided("touch allowed.txt").expect("decided")["decision"]["by"],
        "alice"
    );

    // 2. Denied with a reason: not run, and the model reads why.
    submit("DENY this");
    wait("a pending approval to deny", &mut || {
        pending("touch denied.txt").is_some()
    });
    let id = pending("touch denied.txt").expect("pending")["approval_id"]
        .as_str()
        .expect("id")
        .to_string();
    d.ok(&["approvals", "deny", &id, "--reason", "use src2/"]);
    wait("the reason in the model's input", &mut || {
        model
            .requests()
            .iter()
            .any(|r| r.contains("function_call_output") && r.contains("use src2/"))
    });
    wait("idle after the denied turn", &mut || state() == "idle");
    assert!(
        !repo.join("denied.txt").exists(),
        "a denied command never runs"
    );

    // 3. Nobody decides: after 8 s the approval expired and Codex's own
    // dialog asks; a key there runs it.
    submit("EXPIRE this");
    wait("a pending approval nobody answers", &mut || {
        pending("touch late.txt").is_some()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while decided("touch late.txt").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "never expired:\n{}",
            screen()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        decided("touch late.txt").expect("decided")["decision"]["decision"],
        "expired"
    );
    assert!(!repo.join("late.txt").exists(), "nothing decided it yet");
    wait("Codex's own dialog", &mut || {
        screen().contains("Would you like to run")
    });
    assert_eq!(state(), "needs_input", "the dialog waits for a person");
    press_until(&tmux, "y", "Would you like to run", &mut || {
        repo.join("late.txt").exists()
    });
    wait("idle after the terminal's turn", &mut || state() == "idle");

    // 4. Esc in the terminal while the hook waits: the turn stops, and
    // the request is withdrawn, not left pending.
    submit("INTERRUPT this");
    wait("a pending approval to interrupt", &mut || {
        pending("touch stopped.txt").is_some()
    });
    assert!(tmux
        .run(&["send-keys", "-t", "a", "Escape"])
        .status
        .success());
    wait("the interrupted request withdrawn", &mut || {
        decided("touch stopped.txt").is_some()
    });
    let a = decided("touch stopped.txt").expect("decided");
    assert_eq!(a["decision"]["decision"], "withdrawn", "{a}");
    assert_eq!(
        a["decision"]["reason"], "the agent ended its hook while it waited",
        "{a}"
    );
    wait("the interrupted session idle", &mut || state() == "idle");
    assert!(!repo.join("stopped.txt").exists(), "interrupted");

    let log = d.ok(&["approvals", "log"]);
    for part in ["alice", "deny", "use src2/", "expired", "codex-"] {
        assert!(log.contains(part), "{part} not in {log}");
    }
}
