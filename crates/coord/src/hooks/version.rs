//! Which version of a coding agent runs a hook, for the session's blob
//! (`agent_version`). No agent puts it in its hook payload, so it is read
//! from what the agent does give: Claude Code's `AI_AGENT` environment
//! variable (`claude-code_2-1-328_harness`), Codex's
//! `CODEX_MANAGED_PACKAGE_ROOT`, else the npm package the agent's process
//! runs from (its executable or script, up to the `package.json` of the
//! agent's package).
//!
//! It reads the environment and files only; a version it cannot find is
//! `None`, never an error.

use super::event::Agent;
use std::path::Path;

/// The agent's npm package name.
fn package(agent: Agent) -> &'static str {
    match agent {
        Agent::Claude => "@anthropic-ai/claude-code",
        Agent::Codex => "@openai/codex",
        Agent::Gemini => "@google/gemini-cli",
    }
}

/// The version of `agent`, running as `pid`, as far as it can be told.
pub(crate) fn agent_version(agent: Agent, pid: Option<u32>) -> Option<String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if agent == Agent::Claude {
        if let Some(v) = env("AI_AGENT").as_deref().and_then(from_ai_agent) {
            return Some(v);
        }
    }
    if agent == Agent::Codex {
        if let Some(v) = env("CODEX_MANAGED_PACKAGE_ROOT")
            .and_then(|root| version_in(&Path::new(&root).join("package.json"), package(agent)))
        {
            return Some(v);
        }
    }
    let pid = pid?;
    let mut places: Vec<std::path::PathBuf> = crate::procfs::exe(pid).into_iter().collect();
    places.extend(
        crate::procfs::cmdline(pid)
            .into_iter()
            .filter(|a| a.starts_with('/'))
            .map(std::path::PathBuf::from),
    );
    // `node_modules/.bin/gemini` is a link into the package: follow it.
    places.iter().find_map(|p| {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        p.ancestors()
            .take(12)
            .find_map(|dir| version_in(&dir.join("package.json"), package(agent)))
    })
}

/// `2.1.328` of `claude-code_2-1-328_harness`.
fn from_ai_agent(v: &str) -> Option<String> {
    let rest = v.strip_prefix("claude-code_")?;
    let ver = rest.split('_').next()?.replace('-', ".");
    (!ver.is_empty() && ver.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(ver)
}

/// The `version` of the `package.json` at `path` when its `name` is `name`.
fn version_in(path: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v["name"] == name)
        .then(|| v["version"].as_str().map(str::to_string))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_the_agents_give() {
        assert_eq!(
            from_ai_agent("claude-code_2-1-328_harness").as_deref(),
            Some("2.1.328")
        );
        assert_eq!(from_ai_agent("cursor_1"), None);
        assert_eq!(from_ai_agent("claude-code_x-y"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let pkg = dir.path().join("package.json");
        std::fs::write(&pkg, r#"{"name":"@openai/codex","version":"0.169.0"}"#).expect("write");
        assert_eq!(
            version_in(&pkg, "@openai/codex").as_deref(),
            Some("0.169.0")
        );
        assert_eq!(version_in(&pkg, "@google/gemini-cli"), None);
    }
}
