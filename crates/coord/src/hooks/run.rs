//! `coord hook AGENT`: runs as one of a coding agent's hooks. It reads one
//! hook event on stdin ([`super::event`]), tells the daemon (a session
//! registers, reports its state first-hand, ends), checks an edit against
//! the locks before it happens, and hands the session's unread mail to the
//! model as added context.
//!
//! It must never block an agent by accident: every failure that is not a
//! lock refusal the user asked for is a warning on stderr and exit 0; the
//! daemon gets [`DAEMON_BUDGET`] in all, and no daemon is started from
//! here. Exit 2 (with the reason on stderr, which the agent hands to the
//! model) refuses the tool.

use super::event::{parse, Agent, Happened, HookEvent};
use crate::cmd::guard::{blocked, Blocked};
use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use coord_client::{Client, ClientError};
use coord_proto::api::{
    AcquireRequest, DeregRequest, HeartbeatRequest, RegisterRequest, ReleaseRequest, ReportRequest,
};
use coord_proto::{LifeState, OnExpiry, Report, ReportedState};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The most a hook waits for the daemon, in all (a permission request's
/// wait for a decision is its own budget, `--approval-wait`).
pub(crate) const DAEMON_BUDGET: Duration = Duration::from_secs(2);

/// Most bytes of hook input read (a tool input may carry a whole file).
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// A hook session's lease: renewed by every hook; its process is watched
/// by pidfd, so the lease only ends a session whose agent went silent for
/// a whole day.
const LEASE_MS: u64 = 24 * 60 * 60 * 1000;

/// What an edit under another session's lock meets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EditMode {
    /// Never refuses; says what it would have refused on stderr.
    Observe,
    /// Refuses an edit of a path under another session's exclusive lock.
    Enforce,
    /// Refuses as `enforce`, and takes a lock on each path it edits,
    /// released at the end of the turn or the session.
    Claim,
}

impl EditMode {
    /// The mode as on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EditMode::Observe => "observe",
            EditMode::Enforce => "enforce",
            EditMode::Claim => "claim",
        }
    }
}

/// `coord hook AGENT`.
#[derive(Args, Debug)]
pub(crate) struct HookArgs {
    /// Which agent runs this hook.
    #[arg(value_enum)]
    pub(crate) agent: Agent,
    /// What an edit under another session's lock meets.
    #[arg(long, value_enum, default_value_t = EditMode::Enforce)]
    pub(crate) mode: EditMode,
    /// How long a permission request waits for a decision from the
    /// approval queue before the agent's own prompt decides (0: no queue,
    /// the prompt decides at once). Keep it below the agent's hook
    /// timeout (`coord hooks install` sets that 30 s above it).
    #[arg(long, env = "COORD_APPROVAL_WAIT", default_value = "300s", value_parser = crate::args::duration)]
    pub(crate) approval_wait: Duration,
}

/// What a hook keeps between its runs, per session: the session's token
/// (hooks are separate processes) and the locks `claim` took.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Kept {
    token: String,
    #[serde(default)]
    claimed: Vec<String>,
    /// Dispatch orders already handed to the model (each is handed once;
    /// the agent acks it when it takes it).
    #[serde(default)]
    handed_orders: Vec<String>,
    /// The last tool call's name and id, from its PreToolUse hook: its
    /// permission request (whose payload may lack the id) is the same call.
    #[serde(default)]
    pub(crate) last_tool: Option<(String, String)>,
}

/// Runs one hook. Never fails in a way that blocks the agent: errors are
/// printed and answered with exit 0.
pub(crate) async fn hook(socket: &Path, args: HookArgs) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_INPUT_BYTES)
        .read_to_string(&mut input)
    {
        eprintln!("coord hook: cannot read the hook's input: {e}");
        return ExitCode::SUCCESS;
    }
    let event = match serde_json::from_str(&input)
        .map_err(|e| e.to_string())
        .and_then(|v| parse(args.agent, &v))
    {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("coord hook: ignored a hook event coord cannot read: {e}");
            return ExitCode::SUCCESS;
        }
    };
    let fail_closed = std::env::var("COORD_HOOKS").is_ok_and(|v| v == "fail-closed");
    let run = Run {
        client: Client::new(socket),
        socket: socket.to_path_buf(),
        agent: args.agent,
        mode: args.mode,
        id: session_id(args.agent, &event.session_id),
    };
    if let Happened::Permission {
        tool,
        about,
        edits,
        command,
        input,
    } = &event.happened
    {
        if !args.approval_wait.is_zero() {
            let asked = super::approval::Asked {
                tool,
                about,
                edits,
                command: command.as_deref(),
                input,
            };
            if let Some(out) = run.approval(&event, &asked, args.approval_wait).await {
                println!("{out}");
            }
            return ExitCode::SUCCESS;
        }
    }
    match tokio::time::timeout(DAEMON_BUDGET, run.handle(&event)).await {
        Ok(Ok(Verdict::Allow)) => ExitCode::SUCCESS,
        Ok(Ok(Verdict::Deny(why))) => {
            eprintln!("{why}");
            ExitCode::from(2)
        }
        Ok(Err(e)) => unreachable_daemon(&event, fail_closed, &format!("{e:#}")),
        Err(_) => unreachable_daemon(
            &event,
            fail_closed,
            &format!(
                "the daemon did not answer within {} ms",
                DAEMON_BUDGET.as_millis()
            ),
        ),
    }
}

/// The daemon could not be asked: allow (saying so), or with
/// `COORD_HOOKS=fail-closed` refuse edits.
fn unreachable_daemon(event: &HookEvent, fail_closed: bool, why: &str) -> ExitCode {
    let edits = matches!(&event.happened, Happened::ToolBefore { edits, .. } if !edits.is_empty());
    if fail_closed && edits {
        eprintln!("coord: this edit is refused because coord cannot check its locks ({why}); COORD_HOOKS=fail-closed is set");
        return ExitCode::from(2);
    }
    eprintln!("coord hook: {why}; the agent goes on unchecked");
    ExitCode::SUCCESS
}

/// coord's id for an agent's session: `AGENT-ID`, with characters ids do
/// not take made `-`, at most 128 bytes.
pub(crate) fn session_id(agent: Agent, theirs: &str) -> String {
    let clean: String = theirs
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut id = format!("{}-{clean}", agent.name());
    id.truncate(coord_proto::ids::MAX_ID_BYTES);
    id
}

enum Verdict {
    Allow,
    Deny(String),
}

/// One hook run: the daemon, the agent and the session it acts as.
pub(crate) struct Run {
    client: Client,
    socket: PathBuf,
    pub(crate) agent: Agent,
    mode: EditMode,
    pub(crate) id: String,
}

impl Run {
    async fn handle(&self, event: &HookEvent) -> Result<Verdict> {
        let source = format!("{}:{}", self.agent.name(), event.name);
        match &event.happened {
            Happened::Start { source: why } => {
                self.start(event).await?;
                self.report_state(LifeState::Active, &format!("session {why}"), &source, None)
                    .await?;
                self.mail(event).await?;
            }
            Happened::Prompt => {
                let pending = self
                    .report_state(
                        LifeState::Active,
                        "prompt submitted",
                        &source,
                        Some("prompt"),
                    )
                    .await?;
                self.withdraw_answered(pending, None).await?;
                self.mail(event).await?;
            }
            Happened::ToolBefore { tool, edits, about } => {
                self.report_state(LifeState::Active, about, &source, Some(tool))
                    .await?;
                if let Some(call) = &event.tool_use_id {
                    let mut kept = self.kept()?;
                    kept.last_tool = Some((tool.clone(), call.clone()));
                    self.keep(&kept)?;
                }
                if !edits.is_empty() {
                    return self.check_edit(event, edits).await;
                }
            }
            Happened::ToolAfter { tool } => {
                let pending = self
                    .report_state(
                        LifeState::Active,
                        &format!("{tool} done"),
                        &source,
                        Some(tool),
                    )
                    .await?;
                // The tool ran: a prompt for it was answered in the terminal.
                let call = (tool.as_str(), event.tool_use_id.as_deref());
                self.withdraw_answered(pending, Some(call)).await?;
                // Mail reaches an agent in a long turn after its next tool.
                self.mail(event).await?;
            }
            // With the approval queue off (`--approval-wait 0`), a
            // permission request is a question for the terminal only.
            Happened::Permission { about, .. } => {
                self.report_state(
                    LifeState::NeedsInput,
                    &format!("permission: {about}"),
                    &source,
                    Some("waiting"),
                )
                .await?;
            }
            Happened::NeedsInput { about } => {
                self.report_state(LifeState::NeedsInput, about, &source, Some("waiting"))
                    .await?;
            }
            Happened::TurnEnded => {
                let pending = self
                    .report_state(LifeState::Idle, "turn ended", &source, Some("idle"))
                    .await?;
                self.withdraw_answered(pending, None).await?;
                self.release_claimed().await?;
                let me = self.me()?;
                // A child tells its parent; a top-level session has none.
                let parent = me
                    .report(
                        &self.id,
                        &ReportRequest {
                            parent_session: None,
                            report: Report::TurnEnded,
                            tx_id: None,
                            ts: None,
                        },
                    )
                    .await;
                if let Err(e) = parent {
                    if !matches!(
                        api_code(&e),
                        Some("invalid_field" | "not_child" | "session_not_found")
                    ) {
                        return Err(e.into());
                    }
                }
            }
            Happened::End { reason } => {
                self.release_claimed().await?;
                let me = self.me()?;
                me.dereg(&self.id, &DeregRequest::default())
                    .await
                    .with_context(|| format!("ending session {} ({reason})", self.id))?;
                let _ = std::fs::remove_file(self.kept_path());
            }
            Happened::Other => {}
        }
        Ok(Verdict::Allow)
    }

    /// Registers the session (or finds it registered, after a resume).
    async fn start(&self, event: &HookEvent) -> Result<()> {
        if let Ok(kept) = self.kept() {
            let me = self.client.clone().with_token(Some(kept.token));
            if me.session(&self.id).await.is_ok() {
                return Ok(());
            }
        }
        let cwd = event.cwd.clone().unwrap_or_default();
        let git = git_info(&cwd);
        let token = crate::args::new_token();
        let pid = agent_pid();
        let blob = serde_json::json!({
            "agent": self.agent.name(),
            "agent_version": super::version::agent_version(self.agent, pid),
            "agent_session": event.session_id,
            "cwd": cwd,
            "git_root": git.as_ref().map(|g| &g.0),
            "branch": git.as_ref().and_then(|g| g.1.clone()),
            "tmux_pane": std::env::var("TMUX_PANE").ok(),
            "hooks": true,
        });
        let req = RegisterRequest {
            session_id: self.id.clone(),
            role: self.agent.name().into(),
            task: String::new(),
            blob: Some(blob),
            phase: Some("starting".into()),
            pid,
            parent_session: std::env::var("COORD_SESSION")
                .ok()
                .filter(|s| !s.is_empty()),
            ttl_ms: Some(LEASE_MS),
            transcript: event.transcript.clone().filter(|t| t.starts_with('/')),
            on_expiry: Some(OnExpiry::Never),
            token: Some(token.clone()),
            ..Default::default()
        };
        match self.client.register(&req).await {
            Ok(_) => {}
            // A live session of that id whose token this hook lost: its
            // reports cannot be made; say so once.
            Err(e) if api_code(&e) == Some("session_exists") => {
                return Err(anyhow!("session {} is registered by someone else", self.id));
            }
            Err(e) => return Err(e).context("registering the session"),
        }
        self.keep(&Kept {
            token,
            ..Kept::default()
        })
    }

    /// Tells the daemon the state the agent is in, renewing the lease;
    /// answers the session's pending approvals.
    pub(crate) async fn report_state(
        &self,
        state: LifeState,
        reason: &str,
        source: &str,
        phase: Option<&str>,
    ) -> Result<Vec<coord_proto::approval::Approval>> {
        let me = self.me()?;
        let answer = me
            .heartbeat(
                &self.id,
                &HeartbeatRequest {
                    phase: phase.map(str::to_string),
                    reported: Some(ReportedState {
                        state,
                        reason: coord_proto::ids::terminal_safe(reason, false).into_owned(),
                        source: source.to_string(),
                    }),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("reporting {} for {}", state.as_str(), self.id))?;
        Ok(answer.body.pending_approvals)
    }

    /// Refuses (or, observing, warns about) an edit of a path under
    /// another session's exclusive lock; claims the paths in `claim` mode.
    async fn check_edit(&self, event: &HookEvent, edits: &[String]) -> Result<Verdict> {
        let cwd = event.cwd.clone().unwrap_or_else(|| "/".into());
        // Each path as a lock may name it: relative to its work tree, or
        // absolute. The daemon answers with the locks covering them only,
        // so the check costs the same beside ten locks or ten thousand.
        let places: Vec<(String, String, String)> = edits
            .iter()
            .map(|path| {
                let abs = absolute(&cwd, path);
                let (root, rel) = split_root(&abs);
                (abs, root, rel)
            })
            .collect();
        let asked: Vec<String> = places
            .iter()
            .flat_map(|(abs, _, rel)| [rel.clone(), abs.clone()])
            .collect();
        let mut locks = Vec::new();
        for chunk in asked.chunks(64) {
            locks.extend(
                self.client
                    .locks_covering(chunk)
                    .await
                    .context("reading the locks")?
                    .locks,
            );
        }
        let mut refusals = Vec::new();
        let mut claims = Vec::new();
        for (_, root, rel) in places {
            let hits = blocked(std::slice::from_ref(&rel), &root, &locks, Some(&self.id));
            if hits.is_empty() {
                claims.push(rel);
            } else {
                refusals.extend(hits);
            }
        }
        if !refusals.is_empty() {
            let why = refusal(&refusals, &locks);
            if self.mode == EditMode::Observe {
                eprintln!("coord (observe): {why}");
                return Ok(Verdict::Allow);
            }
            return Ok(Verdict::Deny(why));
        }
        if self.mode == EditMode::Claim {
            let me = self.me()?;
            let mut kept = self.kept()?;
            for rel in claims {
                if kept.claimed.contains(&rel) {
                    continue;
                }
                let r = me
                    .acquire(&AcquireRequest {
                        session_id: self.id.clone(),
                        resource: rel.clone(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => kept.claimed.push(rel),
                    Err(e) if api_code(&e) == Some("lock_held") => {
                        self.keep(&kept)?;
                        return Ok(Verdict::Deny(format!(
                            "coord refused this edit: {rel} was just taken by another session ({e}); wait for it (coord lock acquire '{rel}' --wait 10m) or work elsewhere"
                        )));
                    }
                    Err(e) => return Err(e).context("claiming the path"),
                }
            }
            self.keep(&kept)?;
        }
        Ok(Verdict::Allow)
    }

    async fn release_claimed(&self) -> Result<()> {
        let Ok(mut kept) = self.kept() else {
            return Ok(());
        };
        if kept.claimed.is_empty() {
            return Ok(());
        }
        let me = self.me()?;
        for r in std::mem::take(&mut kept.claimed) {
            let released = me
                .release(&ReleaseRequest {
                    session_id: self.id.clone(),
                    resource: r.clone(),
                    ..Default::default()
                })
                .await;
            if let Err(e) = released {
                if api_code(&e) != Some("lock_not_held") {
                    return Err(e).context("releasing a claimed path");
                }
            }
        }
        self.keep(&kept)
    }

    /// Hands the session's unread mail and open dispatch orders to the
    /// model once, as added context at session start, prompt or after a
    /// tool (Claude Code adds a start or prompt hook's plain stdout;
    /// otherwise the agents read `hookSpecificOutput.additionalContext`),
    /// then acks the mail.
    async fn mail(&self, event: &HookEvent) -> Result<()> {
        let me = self.me()?;
        let mut kept = self.kept()?;
        let inbox = me.inbox(&self.id).await.context("reading the inbox")?;
        let orders = me
            .orders(Some(&self.id), None)
            .await
            .context("reading the orders")?
            .orders;
        let open: Vec<_> = orders
            .iter()
            .filter(|o| o.state == coord_proto::view::OrderState::Issued)
            .filter(|o| !kept.handed_orders.contains(&o.order_id))
            .collect();
        if inbox.messages.is_empty() && open.is_empty() {
            return Ok(());
        }
        let mut out = String::from("coord: while you worked, this came for you.\n");
        for m in &inbox.messages {
            let full = me.read_message(&self.id, &m.msg_id).await?;
            out.push_str(&format!(
                "- message from {} ({}): {}\n",
                m.from_session.as_deref().unwrap_or("someone"),
                m.kind,
                full.body.unwrap_or_default()
            ));
        }
        for o in &open {
            out.push_str(&format!(
                "- dispatch order {} ({}): {} (ack it: coord dispatch ack {})\n",
                o.order_id,
                o.ticket,
                o.payload
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                o.order_id
            ));
        }
        // Claude Code adds plain stdout at session start and prompt; after
        // a tool, and for Codex and Gemini CLI always, the JSON form.
        let plain =
            self.agent == Agent::Claude && !matches!(event.happened, Happened::ToolAfter { .. });
        match plain {
            true => print!("{out}"),
            false => println!(
                "{}",
                serde_json::json!({"hookSpecificOutput": {
                    "hookEventName": event.name,
                    "additionalContext": out,
                }})
            ),
        }
        for m in &inbox.messages {
            me.ack_message(&self.id, &m.msg_id).await?;
        }
        kept.handed_orders
            .extend(open.iter().map(|o| o.order_id.clone()));
        self.keep(&kept)
    }

    /// A client acting as the session.
    pub(crate) fn me(&self) -> Result<Client> {
        let kept = self.kept()?;
        Ok(self.client.clone().with_token(Some(kept.token)))
    }

    fn kept_path(&self) -> PathBuf {
        let dir = self
            .socket
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        dir.join("hooks").join(format!("{}.json", self.id))
    }

    pub(crate) fn kept(&self) -> Result<Kept> {
        let p = self.kept_path();
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "session {} has no hook state (did its SessionStart hook run?)",
                self.id
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
    }

    fn keep(&self, kept: &Kept) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let p = self.kept_path();
        if let Some(dir) = p.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = p.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, serde_json::to_string(kept)?.as_bytes())?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
    }
}

/// The code of an error the daemon answered, if it answered one.
fn api_code(e: &ClientError) -> Option<&str> {
    match e {
        ClientError::Api { body, .. } => Some(body.error.code.as_str()),
        _ => None,
    }
}

/// What the model reads when its edit is refused: the path, the lock, the
/// holder, since when, the fencing token and what to do.
fn refusal(hits: &[Blocked], locks: &[coord_proto::view::Lock]) -> String {
    let mut out = String::from("coord refused this edit: ");
    for (i, b) in hits.iter().enumerate() {
        let token = locks
            .iter()
            .find(|l| l.resource == b.resource)
            .and_then(|l| l.holders.iter().find(|h| h.session_id == b.session_id))
            .map_or(0, |h| h.acquired_seq);
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&format!(
            "{} is under the lock {} held by session {} since {} (fencing token {})",
            b.path, b.resource, b.session_id, b.since, token
        ));
    }
    let first = &hits[0];
    out.push_str(&format!(
        ". Do not write it now: work on something else, wait for the lock (coord lock acquire '{}' --wait 10m), or ask its holder (coord send {} \"…\").",
        first.resource, first.session_id
    ));
    out
}

/// `path` made absolute against `cwd`, with `.` and `..` taken out.
pub(crate) fn absolute(cwd: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(cwd).join(path)
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.to_str().unwrap_or(path).split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The git work tree `abs` lies in and the path relative to it; outside
/// any work tree, `/` and the path without its leading `/`.
pub(crate) fn split_root(abs: &str) -> (String, String) {
    let dir = Path::new(abs).parent().unwrap_or(Path::new("/"));
    let mut probe = Some(dir);
    while let Some(d) = probe {
        if d.join(".git").exists() {
            let root = d.to_string_lossy().to_string();
            let rel = abs
                .strip_prefix(&root)
                .unwrap_or(abs)
                .trim_start_matches('/')
                .to_string();
            return (root, rel);
        }
        probe = d.parent();
    }
    ("/".into(), abs.trim_start_matches('/').to_string())
}

/// The git work tree of `cwd` and its branch, read from the files (no git
/// process: a hook runs on every tool call).
fn git_info(cwd: &str) -> Option<(String, Option<String>)> {
    let mut d = Some(Path::new(cwd));
    while let Some(dir) = d {
        let git = dir.join(".git");
        if git.exists() {
            // A worktree's `.git` is a file naming its git dir.
            let git_dir = if git.is_file() {
                std::fs::read_to_string(&git)
                    .ok()
                    .and_then(|t| t.strip_prefix("gitdir:").map(|p| PathBuf::from(p.trim())))
                    .unwrap_or(git)
            } else {
                git
            };
            let branch = std::fs::read_to_string(git_dir.join("HEAD"))
                .ok()
                .and_then(|h| {
                    h.trim()
                        .strip_prefix("ref: refs/heads/")
                        .map(str::to_string)
                });
            return Some((dir.to_string_lossy().to_string(), branch));
        }
        d = dir.parent();
    }
    None
}

/// The agent's process: the first ancestor of this hook that is not a
/// shell (agents start hooks through `sh -c`).
fn agent_pid() -> Option<u32> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..8 {
        let comm = crate::procfs::comm(pid)?;
        if !matches!(
            comm.as_str(),
            "sh" | "bash" | "dash" | "zsh" | "fish" | "env" | "timeout" | "coord"
        ) {
            return Some(pid);
        }
        pid = crate::procfs::parent_of(pid)?;
    }
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths() {
        assert_eq!(session_id(Agent::Claude, "ab12-cd"), "claude-ab12-cd");
        assert_eq!(session_id(Agent::Codex, "a/b c"), "codex-a-b-c");
        assert!(session_id(Agent::Gemini, &"x".repeat(300)).len() <= 128);
        assert_eq!(absolute("/w/sub", "../src/./a.rs"), "/w/src/a.rs");
        assert_eq!(absolute("/w", "/etc/x"), "/etc/x");
        let (root, rel) = split_root("/definitely/not/a/repo/file.rs");
        assert_eq!(
            (root.as_str(), rel.as_str()),
            ("/", "definitely/not/a/repo/file.rs")
        );
    }
}
