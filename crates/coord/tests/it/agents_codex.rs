//! The real Codex CLI seen first-hand (docs/AGENTS.md): `codex exec`
//! offline against the scripted model server's Responses API, with
//! coord's hooks installed by `coord hooks install codex` and trusted
//! through Codex's own app-server (no `--dangerously-bypass-hook-trust`).
//!
//! Needs Codex from npm (scripts/test installs it under the cache
//! directory); `COORD_CODEX` names another binary.

use super::agents::{agent_bin, check_agent_session, git_repo, hold, past_the_prompt, said, Model};
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
        let out = d.coord_env(&["hooks", "install", "codex", "--user"], &codex.env());
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
