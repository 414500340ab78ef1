//! Coding agents seen first-hand (docs/AGENTS.md): the real Claude Code,
//! offline against a scripted model server on loopback
//! (`support/model_server.py`), with coord's hooks installed by
//! `coord hooks install`; and `coord hook` fed hook events directly where
//! the agent is not the point (install round trips, an unreachable
//! daemon, the states a hook reports).
//!
//! Needs Claude Code from npm (scripts/test installs it under the cache
//! directory); `COORD_CLAUDE` names another binary.

use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process's stdout and stderr, for a failure message.
pub(crate) fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `coord hooks install AGENT --project REPO`, keeping the file as it was
/// in `state` (the test's, not the user's state directory).
pub(crate) fn install_in_project(d: &Daemon, agent: &str, repo: &Path, state: &Path) {
    let out = d.coord_env(
        &[
            "hooks",
            "install",
            agent,
            "--project",
            repo.to_str().expect("utf8"),
        ],
        &[("XDG_STATE_HOME", state.to_str().expect("utf8"))],
    );
    assert!(out.status.success(), "{}", said(&out));
}

/// Registers `who` and has it take `resource` (exclusive).
pub(crate) fn hold(d: &Daemon, who: &str, resource: &str) {
    let token = d.register(who);
    let r = post(
        d,
        "/v1/locks/acquire",
        Some(&token),
        &serde_json::json!({"session_id": who, "resource": resource}),
    );
    assert_eq!(r.status, 200, "{}", r.json());
}

/// An agent's binary from npm: `$VAR`, else `coord-agents` under the
/// cache directory (where scripts/test installs it).
pub(crate) fn agent_bin(var: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
            });
        cache.join("coord-agents/node_modules/.bin").join(name)
    });
    assert!(
        p.exists(),
        "{} not found: scripts/test installs the coding agents from npm; {var} names another",
        p.display()
    );
    p
}

pub(crate) fn claude_bin() -> PathBuf {
    agent_bin("COORD_CLAUDE", "claude")
}

/// What every agent's session must show in the log after a run of the
/// real agent: registered (by its own process, with its name and version),
/// `active` first, `idle` on the evidence `idle_evidence`, and ended.
/// Returns its id.
pub(crate) fn check_agent_session(d: &Daemon, agent: &str, idle_evidence: &str) -> String {
    let events = d.all_events();
    let prefix = format!("{agent}-");
    let reg = events
        .iter()
        .find(|e| {
            e["tx_kind"] == "session.register"
                && e["session_id"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no {agent} session registered"));
    let sid = reg["session_id"].as_str().expect("id").to_string();
    assert!(reg["payload"]["pid"].as_u64().is_some(), "{reg}");
    assert_eq!(reg["payload"]["blob"]["agent"], agent, "{reg}");
    let version = reg["payload"]["blob"]["agent_version"]
        .as_str()
        .unwrap_or("");
    assert!(
        !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "the agent's version: {reg}"
    );
    let states: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["tx_kind"] == "session.state" && e["session_id"] == sid.as_str())
        .map(|e| {
            (
                e["payload"]["to"].as_str().unwrap_or("").to_string(),
                e["payload"]["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let to: Vec<&str> = states.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to.first(), Some(&"active"), "{states:?}");
    assert!(
        states
            .iter()
            .any(|(to, why)| to == "idle" && why.contains(idle_evidence)),
        "idle on {idle_evidence}: {states:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == sid.as_str()),
        "the session ended with the agent"
    );
    sid
}

/// Waits for an `agent` session to register, then for its prompt hook
/// (`source`, say `codex:UserPromptSubmit`) to have reported: past it,
/// the agent waits for its model. Returns the session's id.
pub(crate) fn past_the_prompt(d: &Daemon, agent: &str, source: &str) -> String {
    let prefix = format!("{agent}-");
    let mut sid = String::new();
    wait_until("the agent's prompt hook", Duration::from_secs(60), || {
        let events = d.all_events();
        sid = events
            .iter()
            .find_map(|e| {
                (e["tx_kind"] == "session.register")
                    .then(|| e["session_id"].as_str().unwrap_or("").to_string())
                    .filter(|s| s.starts_with(&prefix))
            })
            .unwrap_or_default();
        !sid.is_empty()
            && events.iter().any(|e| {
                e["session_id"] == sid.as_str() && e["payload"]["reported"]["source"] == source
            })
    });
    sid
}

/// The scripted model server, and where it logs what the model was given.
pub(crate) struct Model {
    child: std::process::Child,
    pub(crate) port: u16,
    pub(crate) log: PathBuf,
}

impl Drop for Model {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Model {
    pub(crate) fn start(dir: &Path, script: serde_json::Value) -> Model {
        let script_path = dir.join("script.json");
        std::fs::write(&script_path, script.to_string()).expect("script");
        let port_file = dir.join("model.port");
        let log = dir.join("model.jsonl");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/support/model_server.py"
            ))
            .args([&script_path, &port_file, &log])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut port = 0;
        wait_until("the model server", Duration::from_secs(20), || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            port != 0
        });
        Model { child, port, log }
    }

    /// Every request the model was given, one JSON line each.
    pub(crate) fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The tool results the model was given, as text.
    fn tool_results(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            for m in v["body"]["messages"].as_array().into_iter().flatten() {
                for c in m["content"].as_array().into_iter().flatten() {
                    if c["type"] == "tool_result" {
                        out.push(c["content"].to_string());
                    }
                }
            }
        }
        out
    }
}

/// Runs `claude -p PROMPT` in `repo`, offline against `model`.
fn claude_p(
    d: &Daemon,
    repo: &Path,
    home: &Path,
    model: &Model,
    prompt: &str,
) -> std::process::Output {
    Command::new(claude_bin())
        .args(["-p", prompt, "--permission-mode", "acceptEdits"])
        .current_dir(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", model.port),
        )
        .env("ANTHROPIC_API_KEY", "test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .output()
        .expect("claude")
}

pub(crate) fn git_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("repo");
    let ok = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&repo)
        .status()
        .expect("git")
        .success();
    assert!(ok, "git init");
    repo
}

/// A second checkout of `repo` (`git worktree add`), beside it.
pub(crate) fn worktree(repo: &Path, name: &str) -> PathBuf {
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(repo)
            .status()
            .expect("git")
            .success();
        assert!(ok, "git {args:?}");
    };
    std::fs::write(repo.join("src/lib.rs"), "").expect("a file");
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "start"]);
    let wt = repo.parent().expect("parent").join(name);
    git(&["worktree", "add", "-q", wt.to_str().expect("utf8")]);
    wt
}

/// Two agents, two worktrees of one repository: `holder` holds `src/**`
/// (named relative to the work tree, so in every checkout); Claude Code's
/// Write of `src/a.rs` in the other worktree is refused before it
/// happens, the file stays untouched, and what the model receives names
/// the path, the lock, the holder and its fencing token. Its session registered with the agent's
/// own process, went active then idle on its own hooks, and ended with it.
#[test]
fn claude_code_cannot_write_under_another_sessions_lock() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = git_repo(dir.path());
    let repo = worktree(&first, "second");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let target = repo.join("src/a.rs");
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "tool": {"name": "Write", "input": {"file_path": target, "content": "fn main() {}\n"}},
            "reply": "I could not write it."
        }),
    );
    install_in_project(&d, "claude", &repo, &dir.path().join("state"));
    hold(&d, "holder", "src/**");

    let out = claude_p(&d, &repo, &home, &model, "write src/a.rs");
    assert!(
        out.status.success(),
        "claude: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists(), "the refused Write did not happen");
    let results = model.tool_results();
    let refusal = results
        .iter()
        .find(|r| r.contains("coord refused this edit"))
        .unwrap_or_else(|| panic!("the model was not told: {results:?}"));
    for part in ["src/a.rs", "src/**", "holder", "fencing token"] {
        assert!(refusal.contains(part), "{part} not in {refusal}");
    }

    check_agent_session(&d, "claude", "claude:Stop");
    // Nothing of the holder's changed.
    assert!(d.ok(&["lock", "list"]).contains("src/**"));
}

/// Feeds one hook event to `coord hook claude`; returns its output.
fn hook(
    d: &Daemon,
    socket: &Path,
    event: serde_json::Value,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = coord_cmd();
    c.args(["--socket", socket.to_str().expect("utf8"), "hook", "claude"])
        .env_remove("COORD_SESSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let _ = d;
    let mut child = c.spawn().expect("coord hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(event.to_string().as_bytes())
        .expect("write");
    child.wait_with_output().expect("coord hook")
}

/// A permission dialog is `needs_input` at once, naming what it waits
/// for, and stays so past the idle threshold (no guess overrides a hook);
/// the next hook moves it on. Mail reaches the model on the next prompt.
#[test]
fn a_permission_request_is_needs_input_until_the_agent_moves_on() {
    let mut d = Daemon::start(&["--idle-after", "1s"]);
    let base = |name: &str| serde_json::json!({"hook_event_name": name, "session_id": "p-1", "cwd": "/tmp", "transcript_path": "/tmp/p-1.jsonl"});
    assert!(hook(&d, &d.socket, base("SessionStart"), &[])
        .status
        .success());
    let mut perm = base("PermissionRequest");
    perm["tool_name"] = "Write".into();
    perm["tool_input"] = serde_json::json!({"file_path": "/tmp/src.txt"});
    let asked = Instant::now();
    // The terminal alone decides here (the approval queue has its own
    // tests, approvals.rs and approvals_tmux.rs).
    assert!(hook(&d, &d.socket, perm, &[("COORD_APPROVAL_WAIT", "0s")])
        .status
        .success());
    let state_of = |d: &Daemon| {
        d.http("GET", "/v1/sessions/claude-p-1", &[], None).json()["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until("needs_input", Duration::from_secs(10), || {
        state_of(&d) == "needs_input"
    });
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    let why = d
        .all_events()
        .iter()
        .rev()
        .find(|e| e["tx_kind"] == "session.state" && e["payload"]["to"] == "needs_input")
        .map(|e| e["payload"]["reason"].to_string())
        .expect("a state event");
    assert!(
        why.contains("PermissionRequest") && why.contains("/tmp/src.txt"),
        "{why}"
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        state_of(&d),
        "needs_input",
        "still waiting past the idle threshold"
    );
    // A daemon restart forgets nothing the hook said.
    d.kill9();
    d.restart();
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(state_of(&d), "needs_input", "still waiting after a restart");
    // The session list says what it waits for.
    let list = d.ok(&["session", "list"]);
    assert!(
        list.contains("a human: permission: Write /tmp/src.txt"),
        "{list}"
    );
    // `coord explain` says why, from the evidence.
    let why = d.ok(&["explain", "claude-p-1"]);
    for part in [
        "needs_input since",
        "claude:PermissionRequest",
        "/tmp/src.txt",
        "first-hand",
        "pidfd",
    ] {
        assert!(why.contains(part), "{part} not in {why}");
    }

    // Mail for the session is handed to the model with the next prompt.
    let out = d.coord(&["send", "claude-p-1", "please look at the failing test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hook(&d, &d.socket, base("UserPromptSubmit"), &[]);
    assert!(out.status.success());
    let context = String::from_utf8_lossy(&out.stdout);
    assert!(
        context.contains("please look at the failing test"),
        "{context}"
    );
    wait_until("active", Duration::from_secs(10), || {
        state_of(&d) == "active"
    });
    let again = hook(&d, &d.socket, base("UserPromptSubmit"), &[]);
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("failing test"),
        "handed once"
    );

    assert!(hook(&d, &d.socket, base("Stop"), &[]).status.success());
    wait_until("idle", Duration::from_secs(10), || state_of(&d) == "idle");
    assert!(hook(&d, &d.socket, base("SessionEnd"), &[])
        .status
        .success());
    wait_until("ended", Duration::from_secs(10), || {
        d.http("GET", "/v1/sessions/claude-p-1", &[], None).status == 404
    });
}

/// No daemon: the hook answers at once, allows, and says so; with
/// `COORD_HOOKS=fail-closed` an edit is refused instead. Input it cannot
/// read is a warning and exit 0, never a blocked agent.
#[test]
fn an_unreachable_daemon_never_blocks_the_agent() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("no-daemon.sock");
    let edit = serde_json::json!({"hook_event_name": "PreToolUse", "session_id": "u-1", "cwd": "/tmp",
        "tool_name": "Write", "tool_input": {"file_path": "/tmp/x.rs"}});
    let started = Instant::now();
    let out = hook(&d, &gone, edit.clone(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unchecked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!gone.exists(), "no daemon was started from a hook");
    let out = hook(&d, &gone, edit, &[("COORD_HOOKS", "fail-closed")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fail-closed"));
    for bad in [
        serde_json::json!("not an object"),
        serde_json::json!({"hook_event_name": "Stop"}),
    ] {
        let out = hook(&d, &d.socket, bad, &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stderr).contains("coord hook: ignored"));
    }
}

/// Install merges into settings that hold the user's own hooks, keeps
/// them and the key order, is idempotent; uninstall gives back the file
/// byte for byte; `--dry-run` changes nothing; `status` says what runs.
#[test]
fn install_and_uninstall_round_trip_settings_with_user_hooks() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("p");
    std::fs::create_dir_all(project.join(".claude")).expect("dir");
    let settings = project.join(".claude/settings.json");
    let original = "{\n    \"permissions\": {\"allow\": [\"Bash(ls)\"]},\n    \"hooks\": {\"PreToolUse\": [{\"matcher\": \"Bash\", \"hooks\": [{\"type\": \"command\", \"command\": \"./mine.sh\"}]}]},\n    \"model\": \"x\"\n}\n";
    std::fs::write(&settings, original).expect("write");
    let run = |args: &[&str]| {
        let out = coord_cmd()
            .args(["--socket", d.socket.to_str().expect("utf8")])
            .args(args)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .output()
            .expect("coord");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let p = project.to_str().expect("utf8");
    let dry = run(&["hooks", "install", "claude", "--project", p, "--dry-run"]);
    assert!(dry.contains("hook claude"), "{dry}");
    assert_eq!(
        std::fs::read_to_string(&settings).expect("read"),
        original,
        "dry run wrote nothing"
    );
    run(&["hooks", "install", "claude", "--project", p]);
    let once = std::fs::read_to_string(&settings).expect("read");
    assert!(
        once.contains("./mine.sh") && once.contains("hook claude"),
        "{once}"
    );
    let order: Vec<usize> = ["\"permissions\"", "\"hooks\"", "\"model\""]
        .iter()
        .map(|k| once.find(k).expect("key"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "key order kept: {once}"
    );
    run(&["hooks", "install", "claude", "--project", p]);
    assert_eq!(
        std::fs::read_to_string(&settings).expect("read"),
        once,
        "twice is once"
    );
    let status = run(&["hooks", "status", "--project", p]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("claude") && l.contains("8/8") && l.contains(p)),
        "{status}"
    );
    run(&["hooks", "uninstall", "claude", "--project", p]);
    assert_eq!(
        std::fs::read_to_string(&settings).expect("read"),
        original,
        "given back byte for byte"
    );
    // A file coord created is removed again.
    run(&["hooks", "install", "gemini", "--project", p]);
    assert!(project.join(".gemini/settings.json").exists());
    run(&["hooks", "uninstall", "gemini", "--project", p]);
    assert!(!project.join(".gemini/settings.json").exists());
}

/// An agent started under another coord session (`COORD_SESSION` in its
/// environment) registers as that session's child, and its turn's end is
/// reported to the parent (PROTOCOL §6.2).
#[test]
fn an_agent_started_under_a_coord_session_is_its_child() {
    let d = Daemon::start(&[]);
    d.register("lead");
    let env = [("COORD_SESSION", "lead")];
    let base = |name: &str| serde_json::json!({"hook_event_name": name, "session_id": "c-1", "cwd": "/tmp"});
    let out = hook(&d, &d.socket, base("SessionStart"), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = d.http("GET", "/v1/sessions/claude-c-1", &[], None).json();
    assert_eq!(child["parent_session"], "lead", "{child}");
    assert!(hook(&d, &d.socket, base("Stop"), &env).status.success());
    wait_until("the parent heard", Duration::from_secs(10), || {
        d.http("GET", "/v1/sessions/lead", &[], None).json()["children"]["claude-c-1"]
            ["last_report"]
            == "turn_ended"
    });
}
