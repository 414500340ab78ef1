//! Codex's hook trust, asked of Codex itself.
//!
//! Codex runs a hook only after it is trusted, keyed to a hash of the
//! hook's definition, and skips an untrusted one without a word. This
//! module speaks Codex's own app-server protocol (`codex app-server`:
//! JSON-RPC, one JSON object per line on stdio; schema from `codex
//! app-server generate-ts`, checked against Codex 0.169): `initialize`,
//! `hooks/list` for a working directory, then `config/batchWrite` of
//! `hooks.state."<key>".trusted_hash` with the `currentHash` Codex itself
//! reported, then `hooks/list` again to verify. coord never computes the
//! hash, so a change in how Codex hashes cannot make it write a wrong one.
//!
//! It trusts coord's own hooks (`coord hook codex …`) and nothing else. It
//! must not write any other key, nor trust a hook it did not install.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one app-server exchange may take.
const BUDGET: Duration = Duration::from_secs(30);

/// One hook as Codex lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodexHook {
    /// Codex's key (`<source file>:<event>:<group>:<index>`).
    pub(crate) key: String,
    /// The command it runs.
    pub(crate) command: String,
    /// Codex's hash of its definition (`sha256:…`).
    pub(crate) hash: String,
    /// `trusted`, `untrusted`, `modified` or `managed`.
    pub(crate) trust: String,
}

impl CodexHook {
    /// Whether Codex will run it.
    pub(crate) fn runs(&self) -> bool {
        matches!(self.trust.as_str(), "trusted" | "managed")
    }
}

/// The Codex binary: `COORD_CODEX`, else `codex` on `PATH`.
pub(crate) fn codex_bin() -> PathBuf {
    std::env::var_os("COORD_CODEX")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("codex"), PathBuf::from)
}

/// A running `codex app-server`, ended when dropped.
struct AppServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: u64,
}

impl Drop for AppServer {
    fn drop(&mut self) {
        // Closing stdin ends it; kill only if it lingers.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AppServer {
    fn start(cwd: &Path) -> Result<AppServer> {
        let bin = codex_bin();
        let mut child = Command::new(&bin)
            .arg("app-server")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting `{} app-server`", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("codex app-server has no stdout"))?;
        let (tx, lines) = mpsc::channel();
        // A reader thread so every wait has a deadline; it ends at EOF.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = AppServer {
            child,
            stdin,
            lines,
            next_id: 1,
        };
        server.call(
            "initialize",
            json!({"clientInfo": {"name": "coord", "title": "coord", "version": env!("CARGO_PKG_VERSION")}, "capabilities": null}),
        )?;
        server.send(&json!({"method": "initialized"}))?;
        Ok(server)
    }

    fn send(&mut self, msg: &Value) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("codex app-server's stdin is closed"))?;
        writeln!(stdin, "{msg}").context("writing to codex app-server")?;
        stdin.flush().context("writing to codex app-server")
    }

    /// One request and its answer; notifications in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + BUDGET;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow!(
                    "codex app-server gave no answer to {method} within {} s",
                    BUDGET.as_secs()
                )
            })?;
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(e) = msg.get("error") {
                bail!("codex app-server refused {method}: {e}");
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    fn list(&mut self, cwd: &Path) -> Result<Vec<CodexHook>> {
        let res = self.call("hooks/list", json!({"cwds": [cwd.to_string_lossy()]}))?;
        parse_list(&res)
    }
}

/// The hooks in a `hooks/list` answer.
fn parse_list(res: &Value) -> Result<Vec<CodexHook>> {
    let entries = res
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("codex app-server's hooks/list answer has no data: {res}"))?;
    let text = |h: &Value, k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(entries
        .iter()
        .filter_map(|e| e.get("hooks").and_then(Value::as_array))
        .flatten()
        .map(|h| CodexHook {
            key: text(h, "key"),
            command: text(h, "command"),
            hash: text(h, "currentHash"),
            trust: text(h, "trustStatus"),
        })
        .collect())
}

/// The `config/batchWrite` edits that trust `hooks` at their current hash.
fn trust_edits(hooks: &[&CodexHook]) -> Value {
    let edits: Vec<Value> = hooks
        .iter()
        .map(|h| {
            json!({
                "keyPath": format!("hooks.state.\"{}\".trusted_hash", h.key.replace('"', "\\\"")),
                "value": h.hash,
                "mergeStrategy": "upsert",
            })
        })
        .collect();
    json!({"edits": edits, "reloadUserConfig": true})
}

/// coord's hooks Codex sees from `cwd` (per `is_ours`).
pub(crate) fn ours(cwd: &Path, is_ours: impl Fn(&str) -> bool) -> Result<Vec<CodexHook>> {
    let mut server = AppServer::start(cwd)?;
    Ok(server
        .list(cwd)?
        .into_iter()
        .filter(|h| is_ours(&h.command))
        .collect())
}

/// Trusts coord's hooks Codex sees from `cwd` that it would not run, and
/// lists them again to verify. Returns coord's hooks as Codex lists them
/// afterwards.
///
/// # Errors
/// Codex is missing, its app-server fails or refuses the write.
pub(crate) fn trust_ours(cwd: &Path, is_ours: impl Fn(&str) -> bool) -> Result<Vec<CodexHook>> {
    let mut server = AppServer::start(cwd)?;
    let before: Vec<CodexHook> = server
        .list(cwd)?
        .into_iter()
        .filter(|h| is_ours(&h.command))
        .collect();
    let pending: Vec<&CodexHook> = before
        .iter()
        .filter(|h| matches!(h.trust.as_str(), "untrusted" | "modified"))
        .collect();
    if !pending.is_empty() {
        server.call("config/batchWrite", trust_edits(&pending))?;
    }
    Ok(server
        .list(cwd)?
        .into_iter()
        .filter(|h| is_ours(&h.command))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hooks_list_answer_is_read_and_trusted_by_its_own_hash() {
        let res = json!({"data": [{"cwd": "/p", "hooks": [
            {"key": "/h/hooks.json:pre_tool_use:0:0", "command": "'/bin/coord' hook codex --mode enforce",
             "currentHash": "sha256:ab", "trustStatus": "untrusted", "handlerType": "command"},
            {"key": "/h/hooks.json:stop:0:0", "command": "./mine.sh", "currentHash": "sha256:cd",
             "trustStatus": "trusted", "handlerType": "command"}
        ], "warnings": [], "errors": []}]});
        let hooks = parse_list(&res).expect("parses");
        assert_eq!(hooks.len(), 2);
        assert!(!hooks[0].runs() && hooks[1].runs());
        let edits = trust_edits(&[&hooks[0]]);
        assert_eq!(
            edits["edits"][0]["keyPath"],
            "hooks.state.\"/h/hooks.json:pre_tool_use:0:0\".trusted_hash"
        );
        assert_eq!(edits["edits"][0]["value"], "sha256:ab");
        assert!(parse_list(&json!({"nope": 1})).is_err());
    }
}
