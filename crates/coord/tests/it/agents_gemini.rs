//! The real Gemini CLI seen first-hand (docs/AGENTS.md): `gemini -p`
//! offline against the scripted model server's Gemini API, with coord's
//! hooks installed in the project by `coord hooks install gemini`.
//!
//! Needs Gemini CLI from npm (scripts/test installs it under the cache
//! directory); `COORD_GEMINI` names another binary.

use super::agents::{
    agent_bin, check_agent_session, git_repo, hold, install_in_project, past_the_prompt, said,
    Model,
};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn gemini_bin() -> PathBuf {
    agent_bin("COORD_GEMINI", "gemini")
}

/// A repository with coord's hooks in its `.gemini/settings.json`, and a
/// private home whose Gemini CLI uses an API key.
fn setup(d: &Daemon, dir: &Path) -> (PathBuf, PathBuf) {
    let repo = git_repo(dir);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".gemini")).expect("home");
    std::fs::write(
        home.join(".gemini/settings.json"),
        r#"{"security":{"auth":{"selectedType":"gemini-api-key"}}}"#,
    )
    .expect("settings");
    install_in_project(d, "gemini", &repo, &home);
    (repo, home)
}

/// `gemini --approval-mode yolo -p PROMPT` in `repo`, offline.
fn gemini(d: &Daemon, repo: &Path, home: &Path, model: &Model, prompt: &str) -> Command {
    let mut c = Command::new(gemini_bin());
    c.args(["--approval-mode", "yolo", "-p", prompt])
        .current_dir(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GEMINI_API_KEY", "test")
        .env(
            "GOOGLE_GEMINI_BASE_URL",
            format!("http://127.0.0.1:{}", model.port),
        )
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Another session holds `src/**`; Gemini CLI's `write_file` of
/// `src/a.rs` is refused before it happens and the model is told who
/// holds it; the session registered, went idle on `AfterAgent` and ended
/// with the agent.
#[test]
fn gemini_cannot_write_under_another_sessions_lock() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, home) = setup(&d, dir.path());
    let target = repo.join("src/a.rs");
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "call": {"name": "write_file", "args": {"file_path": target, "content": "fn main() {}\n"}},
            "reply": "I could not write it."
        }),
    );
    hold(&d, "holder", "src/**");

    let out = gemini(&d, &repo, &home, &model, "write src/a.rs")
        .output()
        .expect("gemini");
    assert!(out.status.success(), "gemini: {}", said(&out));
    assert!(!target.exists(), "the refused write did not happen");
    let refusal = model
        .requests()
        .into_iter()
        .find(|r| r.contains("functionResponse") && r.contains("coord refused this edit"))
        .unwrap_or_else(|| panic!("the model was not told: {}", said(&out)));
    for part in ["src/a.rs", "src/**", "holder", "fencing token"] {
        assert!(refusal.contains(part), "{part} not in {refusal}");
    }
    check_agent_session(&d, "gemini", "gemini:AfterAgent");
}

/// Mail sent to a Gemini CLI session while it works reaches the model
/// after its next tool, once.
#[test]
fn mail_reaches_gemini_after_its_next_tool() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, home) = setup(&d, dir.path());
    let gate = dir.path().join("gate");
    let notes = repo.join("notes.md");
    let model = Model::start(
        dir.path(),
        serde_json::json!({
            "call": {"name": "write_file", "args": {"file_path": notes, "content": "notes\n"}},
            "reply": "ok",
            "wait_for": gate
        }),
    );
    let child = gemini(&d, &repo, &home, &model, "take notes")
        .spawn()
        .expect("gemini");
    let sid = past_the_prompt(&d, "gemini", "gemini:BeforeAgent");
    let out = d.coord(&["send", &sid, "the build on main is red, rebase first"]);
    assert!(out.status.success(), "{}", said(&out));
    std::fs::write(&gate, b"go").expect("gate");
    let out = child.wait_with_output().expect("gemini");
    assert!(out.status.success(), "gemini: {}", said(&out));
    assert!(notes.exists(), "the unlocked write happened");
    let bodies = model.requests();
    let first = bodies
        .iter()
        .find(|r| r.contains("the build on main is red"))
        .unwrap_or_else(|| panic!("the model never saw the mail: {}", said(&out)));
    assert!(
        first.contains("functionResponse"),
        "after the tool call: {first}"
    );
}
