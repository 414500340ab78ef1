//! The real probes of the lifecycle manager: [`HostRuntime`] (tmux
//! sessions, local processes) and [`FileAgent`] (activity file, JSONL
//! transcript). Each answers for one session and keeps no state; the
//! manager decides what the answers mean.

use coord_proto::view::Session;
use coord_proto::Timestamp;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

/// A boxed future, so the probe traits stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A probe that could not answer (the tmux binary is missing, a
/// transcript is unreadable, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{probe} probe failed: {message}")]
pub struct ProbeError {
    /// Which probe (`tmux`, `process`, `activity_file`, `transcript`).
    pub probe: String,
    /// What went wrong.
    pub message: String,
}

impl ProbeError {
    /// A probe error.
    pub fn new(probe: &str, message: impl Into<String>) -> Self {
        ProbeError {
            probe: probe.to_string(),
            message: message.into(),
        }
    }
}

/// Where a session's agent runs; answers whether it is still there.
pub trait Runtime: Send + Sync + 'static {
    /// `Ok(Some(alive))` when this runtime knows the session, `Ok(None)`
    /// when it has nothing to say about it (no tmux name, no pid).
    fn is_alive<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Option<bool>, ProbeError>>;

    /// Whether the session must be probed on the interval because its
    /// runtime cannot notify.
    fn needs_probe(&self, session: &Session) -> bool;
}

/// What the agent has been doing, as far as a probe can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// When the agent last did something (wall clock, ms).
    pub at: Timestamp,
    /// Its transcript ends waiting for a human.
    pub waiting_for_input: bool,
}

/// Reads an agent's activity (activity file, transcript).
pub trait Agent: Send + Sync + 'static {
    /// The latest activity the probe sees, `Ok(None)` when there is
    /// nothing to read (no file configured, or not written yet).
    fn detect_activity<'a>(
        &'a self,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Activity>, ProbeError>>;

    /// Whether the session has anything for this agent probe to read.
    fn needs_probe(&self, session: &Session) -> bool;
}

/// Longest a `tmux has-session` may take before it counts as a failed
/// probe.
const TMUX_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a transcript's end is read to find its last entry, bytes.
const TRANSCRIPT_TAIL: u64 = 256 << 10;

/// tmux sessions (probed with `tmux has-session`, since tmux cannot
/// notify) and local processes (asked once through a pidfd; their exit is
/// noticed by the writer's pidfd watch without any probe).
#[derive(Debug, Clone, Default)]
pub struct HostRuntime {
    /// tmux server socket name (`tmux -L NAME`); default server if `None`.
    pub tmux_socket: Option<String>,
}

impl HostRuntime {
    async fn tmux_alive(&self, name: &str) -> Result<bool, ProbeError> {
        let mut cmd = tokio::process::Command::new("tmux");
        if let Some(sock) = &self.tmux_socket {
            cmd.arg("-L").arg(sock);
        }
        // `=name`: exact match, not a prefix of another session.
        cmd.arg("has-session")
            .arg("-t")
            .arg(format!("={name}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(TMUX_TIMEOUT, cmd.output())
            .await
            .map_err(|_| ProbeError::new("tmux", "tmux has-session did not answer within 5 s"))?
            .map_err(|e| ProbeError::new("tmux", format!("cannot run tmux: {e}")))?;
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        // Both mean the session does not exist: the server has no such
        // session, or no server runs at all.
        if err.contains("can't find session")
            || err.contains("no server running")
            || err.contains("error connecting to")
        {
            return Ok(false);
        }
        Err(ProbeError::new(
            "tmux",
            format!("tmux has-session failed ({}): {}", out.status, err.trim()),
        ))
    }
}

fn process_alive(pid: u32) -> Result<bool, ProbeError> {
    match coord_engine::pidfd::open(pid) {
        Ok(fd) => Ok(coord_engine::pidfd::is_running(&fd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(ProbeError::new(
            "process",
            format!("pidfd_open({pid}): {e}"),
        )),
    }
}

impl Runtime for HostRuntime {
    fn is_alive<'a>(&'a self, s: &'a Session) -> BoxFuture<'a, Result<Option<bool>, ProbeError>> {
        Box::pin(async move {
            if let Some(name) = &s.tmux {
                return self.tmux_alive(name).await.map(Some);
            }
            match s.watched_pid() {
                Some(pid) => process_alive(pid).map(Some),
                None => Ok(None),
            }
        })
    }

    fn needs_probe(&self, s: &Session) -> bool {
        s.tmux.is_some()
    }
}

/// Activity from the files an agent writes: the mtime of an activity
/// file, and a JSONL transcript whose last entry tells working from
/// waiting for input (PROTOCOL §6.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileAgent;

fn mtime(path: &Path, probe: &str) -> Result<Option<Timestamp>, ProbeError> {
    match std::fs::metadata(path) {
        Ok(m) => {
            let t = m
                .modified()
                .map_err(|e| ProbeError::new(probe, format!("{}: {e}", path.display())))?;
            let ms = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as i64;
            Ok(Some(Timestamp(ms)))
        }
        // Not written yet: nothing to say, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProbeError::new(probe, format!("{}: {e}", path.display()))),
    }
}

/// Whether a transcript entry means the agent waits for a human.
///
/// `user`, `tool_result` and `progress` entries, and `assistant` entries
/// that stop for a tool call, mean it is working; an `assistant` entry
/// that ends its turn, and entries of type `waiting_for_input`,
/// `needs_input`, `input_required` or `result`, mean it waits. Other types
/// (`system`, `summary`, …) say nothing, and the entry before them
/// decides.
pub fn entry_waits(entry: &serde_json::Value) -> Option<bool> {
    let ty = entry.get("type").and_then(|t| t.as_str())?;
    match ty {
        "user" | "tool_result" | "tool_use" | "progress" => Some(false),
        "waiting_for_input" | "needs_input" | "input_required" | "result" => Some(true),
        "assistant" => {
            let msg = entry.get("message").unwrap_or(entry);
            let stop = msg.get("stop_reason").and_then(|s| s.as_str());
            let calls_tool = msg
                .get("content")
                .and_then(|c| c.as_array())
                .is_some_and(|c| {
                    c.iter()
                        .any(|i| i.get("type").and_then(|t| t.as_str()) == Some("tool_use"))
                });
            Some(!(stop == Some("tool_use") || calls_tool))
        }
        _ => None,
    }
}

/// Reads the transcript's tail: its last decisive entry, if any. A last
/// line without its newline is being written and is skipped.
fn transcript_waits(path: &Path) -> Result<Option<bool>, ProbeError> {
    let err = |e: std::io::Error| ProbeError::new("transcript", format!("{}: {e}", path.display()));
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let len = f.metadata().map_err(err)?.len();
    let start = len.saturating_sub(TRANSCRIPT_TAIL);
    f.seek(SeekFrom::Start(start)).map_err(err)?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).map_err(err)?;
    let complete = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => &buf[..i],
        None => return Ok(None),
    };
    // A tail that starts mid-file starts mid-line: drop that piece.
    let complete = match (start > 0, complete.iter().position(|&b| b == b'\n')) {
        (false, _) => complete,
        (true, Some(i)) => &complete[i + 1..],
        (true, None) => return Ok(None),
    };
    let mut undecided = 0;
    for line in complete.split(|&b| b == b'\n').rev() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            ProbeError::new(
                "transcript",
                format!("{}: last entry is not JSON: {e}", path.display()),
            )
        })?;
        if let Some(w) = entry_waits(&v) {
            return Ok(Some(w));
        }
        undecided += 1;
        if undecided > 64 {
            break;
        }
    }
    Ok(None)
}

impl Agent for FileAgent {
    fn detect_activity<'a>(
        &'a self,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<Option<Activity>, ProbeError>> {
        Box::pin(async move {
            let s = s.clone();
            tokio::task::spawn_blocking(move || {
                let mut at: Option<Timestamp> = None;
                let mut waiting = false;
                if let Some(f) = &s.activity_file {
                    at = mtime(Path::new(f), "activity_file")?;
                }
                if let Some(t) = &s.transcript {
                    let path = Path::new(t);
                    if let Some(m) = mtime(path, "transcript")? {
                        at = Some(at.map_or(m, |a| a.max(m)));
                        waiting = transcript_waits(path)?.unwrap_or(false);
                    }
                }
                Ok(at.map(|at| Activity {
                    at,
                    waiting_for_input: waiting,
                }))
            })
            .await
            .map_err(|e| ProbeError::new("agent", format!("probe task failed: {e}")))?
        })
    }

    fn needs_probe(&self, s: &Session) -> bool {
        s.activity_file.is_some() || s.transcript.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transcript_entries() {
        assert_eq!(entry_waits(&json!({"type":"user"})), Some(false));
        assert_eq!(
            entry_waits(&json!({"type":"assistant","message":{"stop_reason":"end_turn"}})),
            Some(true)
        );
        assert_eq!(
            entry_waits(&json!({"type":"assistant","message":{"stop_reason":"tool_use"}})),
            Some(false)
        );
        assert_eq!(
            entry_waits(&json!({"type":"assistant","message":{"content":[{"type":"tool_use"}]}})),
            Some(false)
        );
        assert_eq!(entry_waits(&json!({"type":"system"})), None);
        assert_eq!(entry_waits(&json!({"no":"type"})), None);
    }

    #[test]
    fn transcript_tail_skips_a_half_written_line_and_undecided_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"type\":\"user\"}\n{\"type\":\"assistant\",\"message\":{\"stop_reason\":\"end_turn\"}}\n{\"type\":\"system\"}\n{\"type\":\"us",
        )
        .expect("write");
        assert_eq!(transcript_waits(&p), Ok(Some(true)));
        std::fs::write(&p, "{\"type\":\"user\"}\n").expect("write");
        assert_eq!(transcript_waits(&p), Ok(Some(false)));
        std::fs::write(&p, "not json\n").expect("write");
        assert!(transcript_waits(&p).is_err());
        assert_eq!(transcript_waits(&dir.path().join("missing")), Ok(None));
    }
}
