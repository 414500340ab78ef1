//! The command line: the top-level [`Cli`], the subcommand list, and the
//! dispatch to `crate::cmd`. The simplest subcommands (status, send,
//! export, publish) run here; the others live one family per module.

use crate::args::*;
use crate::cmd::daemon::{daemon, DaemonArgs};
use crate::cmd::dispatch::{dispatch, DispatchCmd};
use crate::cmd::events::{events, EventsArgs};
use crate::cmd::guard::{guard, GuardCmd};
use crate::cmd::inbox::{inbox, InboxCmd};
use crate::cmd::lock::{lock, LockCmd};
use crate::cmd::mcp::{mcp, McpArgs};
use crate::cmd::sentinel::{sentinel, SentinelArgs};
use crate::cmd::service::{service, ServiceCmd};
use crate::cmd::session::{session, SessionCmd};
use crate::output::{self, print_write};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use coord_client::Client;
use coord_proto::api::*;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// coord: a durable, ordered event log for coordinating agent sessions.
#[derive(Parser, Debug)]
#[command(name = "coord", version, about, long_about = None)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/coord/coord.sock].
    #[arg(long, global = true, env = "COORD_SOCKET")]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables and prose (every subcommand); errors
    /// go to stderr as {"error":{"code","message"}}.
    #[arg(long, global = true)]
    json: bool,
    /// Do not start a daemon when none answers on the socket (by default
    /// every command but `daemon`, `guard`, `service`, `completions`, `man`
    /// and a file-source `sentinel` starts
    /// one in the background).
    #[arg(
        long,
        global = true,
        env = "COORD_NO_AUTOSTART",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    no_autostart: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (`coord daemon stop` stops a
    /// running one).
    #[command(args_conflicts_with_subcommands = true)]
    Daemon(DaemonArgs),
    /// Show the daemon's status and counters.
    Status {
        /// Also the writer, the streams, the leases and locks, and the
        /// store's snapshot, grouped.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Register, renew, end and list sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Take, release and list locks.
    #[command(subcommand)]
    Lock(LockCmd),
    /// Send a message to a session's inbox.
    Send {
        /// Recipient session (a live session).
        to: String,
        /// The body ("-" reads standard input).
        body: String,
        /// Message kind.
        #[arg(long, default_value = "message")]
        kind: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// List, read and ack your inbox.
    #[command(subcommand)]
    Inbox(InboxCmd),
    /// Issue, take and complete dispatch orders.
    #[command(subcommand)]
    Dispatch(DispatchCmd),
    /// Follow the event log.
    Events(EventsArgs),
    /// Git hooks that refuse commits touching paths another session has
    /// locked.
    #[command(subcommand)]
    Guard(GuardCmd),
    /// Watch coordination through a source and write one observation per event.
    Sentinel(SentinelArgs),
    /// Serve MCP over stdio as one coord session (for Claude Code, Codex,
    /// any MCP client): `claude mcp add coord -- coord mcp`.
    Mcp(McpArgs),
    /// A live full-screen view of the fleet: sessions, locks, orders,
    /// inboxes and the events tail (q quits, ? shows the keys).
    Top(crate::top::TopArgs),
    /// Print (with --open, open) a one-time login URL for the web
    /// dashboard of a daemon started with --http.
    Ui {
        /// Open it in the browser (xdg-open).
        #[arg(long)]
        open: bool,
        /// Instead, end the login of this viewer (the id `coord ui`
        /// printed), or of every viewer with `all`.
        #[arg(long, value_name = "VIEWER", conflicts_with = "open")]
        revoke: Option<String>,
        /// A login that may also decide approvals (allow/deny buttons),
        /// not only read.
        #[arg(long, conflicts_with = "revoke")]
        approver: bool,
        /// Who the login is, as its decisions record it (default: its
        /// viewer id).
        #[arg(long, requires = "approver")]
        name: Option<String>,
    },
    /// The fleet's permission prompts in one queue: list, show, allow,
    /// deny, the decisions' log, and what the policy would do.
    #[command(subcommand)]
    Approvals(crate::cmd::approvals::ApprovalsCmd),
    /// Run as a coding agent's hook: read one hook event on stdin, tell
    /// the daemon, refuse an edit under another session's lock
    /// (docs/AGENTS.md). Never starts a daemon.
    Hook(crate::hooks::run::HookArgs),
    /// Why a session is in its state: the evidence of the change that set
    /// it (which hook or probe, when, about what), its liveness and lease.
    Explain {
        /// The session id.
        session: String,
    },
    /// Install, uninstall or show coord's hooks in a coding agent's
    /// settings (Claude Code, Codex, Gemini CLI).
    #[command(subcommand)]
    Hooks(crate::hooks::install::HooksCmd),
    /// Install systemd user units that start the daemon on demand.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Check a store offline: seqs gap-free, every event decodes,
    /// (source, tx_id) unique, lock safety throughout, the snapshot equal
    /// to the fold. Names the first violation and exits 11.
    Verify(crate::cmd::verify::VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per subcommand into
    /// --out DIR.
    Man {
        /// Write coord.1 and coord-SUBCOMMAND.1 pages into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write the current view into a legacy coord root (once).
    Export {
        /// The root to write (created if missing).
        #[arg(long)]
        legacy_root: PathBuf,
    },
    /// Publish a custom x.* event, or with --batch many in one commit.
    Publish {
        /// The kind, x.something (not with --batch).
        #[arg(required_unless_present = "batch")]
        kind: Option<String>,
        /// Publish every line of FILE ("-": standard input), each a JSON
        /// object as POST /v1/events takes ({"tx_kind":"x.…","payload":{…}}),
        /// in one commit: all or none; prints every seq.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["payload", "resource"])]
        batch: Option<PathBuf>,
        /// A JSON object.
        #[arg(long)]
        payload: Option<String>,
        /// A resource the event is about.
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
}

impl Cli {
    /// True for `coord daemon`.
    pub fn is_daemon(&self) -> bool {
        matches!(self.cmd, Cmd::Daemon(_))
    }

    /// The worker threads of the daemon's runtime, when the command runs
    /// the daemon.
    pub fn daemon_threads(&self) -> Option<usize> {
        match &self.cmd {
            Cmd::Daemon(a) => Some(crate::cmd::daemon::runtime_threads(a)),
            _ => None,
        }
    }

    /// Whether the command talks to a daemon, so one is started when none
    /// answers. The guard has its own rule for a silent daemon (an empty
    /// new one would answer "no locks").
    fn needs_daemon(&self) -> bool {
        if let Cmd::Sentinel(args) = &self.cmd {
            return args.needs_daemon();
        }
        !matches!(
            self.cmd,
            Cmd::Daemon(_)
                | Cmd::Guard(_)
                | Cmd::Hook(_)
                | Cmd::Hooks(_)
                | Cmd::Service(_)
                | Cmd::Verify(_)
                | Cmd::Completions { .. }
                | Cmd::Man { .. }
        )
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(coord_daemon::default_socket_path);
    let json = cli.json;
    if cli.needs_daemon() && !cli.no_autostart {
        let s = socket.clone();
        let started = tokio::task::spawn_blocking(move || crate::autostart::ensure(&s))
            .await
            .context("the auto-start task failed")?;
        if let Err(e) = started {
            // Whatever stopped the start, the command has no daemon.
            let e = match e.downcast::<crate::output::Exit>() {
                Ok(exit) => anyhow::anyhow!(exit),
                Err(e) => anyhow::anyhow!(crate::output::Exit(
                    crate::output::code::UNREACHABLE,
                    format!(
                        "no daemon answers on {} and starting one failed: {e:#}",
                        socket.display()
                    )
                )),
            };
            return Err(e);
        }
    }
    let base = Client::new(socket.clone());
    let client = |a: &Acting| base.clone().with_token(a.token.clone());
    match cli.cmd {
        Cmd::Daemon(args) => daemon(&base, socket, args, json).await,
        Cmd::Status { verbose } => {
            let s = base.status().await?;
            if json {
                output::json(&s)?;
            } else {
                output::line(&format!(
                    "coord {} (protocol {}) pid {} up {}\nsocket  {}\nstore   {} ({} bytes, sync {})\nlog     seq {}..={}  sessions {}  locks {}  subscribers {}",
                    s.version,
                    s.protocol,
                    s.pid,
                    humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000)),
                    s.socket,
                    s.store.path,
                    s.store.bytes,
                    s.store.sync,
                    s.oldest_seq,
                    s.head_seq,
                    s.sessions,
                    s.locks,
                    s.subscribers
                ))?;
                if let Some(id) = &s.store.daemon_id {
                    output::line(&format!(
                        "cluster daemon {id}  role {}  leader {}  term {}  connected {}",
                        s.store.role.as_deref().unwrap_or("-"),
                        s.store.leader.as_deref().unwrap_or("-"),
                        s.store.term.map_or("-".to_string(), |t| t.to_string()),
                        s.store
                            .connected
                            .map_or("-", |c| if c { "yes" } else { "no" }),
                    ))?;
                }
                for (k, n) in &s.events_by_kind {
                    output::line(&format!("  {k:<18} {n}"))?;
                }
                if verbose {
                    output::verbose_status(&s)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Session(cmd) => session(&base, cmd, json, &socket).await,
        Cmd::Lock(cmd) => lock(&base, cmd, json).await,
        Cmd::Send {
            to,
            body,
            kind,
            acting,
        } => {
            let body = if body == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading the body from standard input")?;
                s
            } else {
                body
            };
            let a = client(&acting)
                .send_message(
                    &to,
                    &SendRequest {
                        from_session: acting.session.clone(),
                        kind: Some(kind),
                        body,
                        ..Default::default()
                    },
                )
                .await?;
            output::json_or_line(json, &a.body, || {
                format!("sent {} to {} (seq {})", a.body.msg_id, to, a.body.seq)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inbox(cmd) => inbox(&base, cmd, json).await,
        Cmd::Dispatch(cmd) => dispatch(&base, cmd, json).await,
        Cmd::Events(args) => events(&base, args, json).await,
        Cmd::Guard(cmd) => guard(&base, cmd, json).await,
        Cmd::Service(cmd) => service(cmd, cli.socket.as_deref()),
        Cmd::Hook(args) => Ok(crate::hooks::run::hook(&socket, args).await),
        Cmd::Explain { session } => crate::cmd::explain::explain(&base, &session, json).await,
        Cmd::Hooks(cmd) => crate::hooks::install::hooks(cmd, cli.socket.as_deref(), json),
        Cmd::Verify(args) => crate::cmd::verify::verify(args, json),
        Cmd::Mcp(args) => mcp(&base, args).await,
        Cmd::Top(args) => crate::top::run(base.clone(), args).await,
        Cmd::Ui {
            open,
            revoke,
            approver,
            name,
        } => {
            let login = approver.then_some(name);
            crate::top::ui(&base, open, revoke, login, json).await
        }
        Cmd::Approvals(cmd) => crate::cmd::approvals::approvals(&base, cmd, json).await,
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer first: the generator panics on a closed pipe.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "coord", &mut buf);
            output::raw(&buf)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("writing man pages into {}", dir.display()))?;
                    output::line(&format!("wrote man pages into {}", dir.display()))?;
                }
                None => {
                    let mut buf = Vec::new();
                    clap_mangen::Man::new(cmd)
                        .render(&mut buf)
                        .context("rendering the man page")?;
                    output::raw(&buf)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sentinel(args) => sentinel(base, args).await,
        Cmd::Export { legacy_root } => {
            let root = std::path::absolute(&legacy_root)
                .with_context(|| format!("resolving {}", legacy_root.display()))?;
            let r = base
                .clone()
                .with_admin_token(Some(admin_token(&socket)?))
                .export_legacy(&root)
                .await?;
            if json {
                output::json(&r)?;
            } else {
                output::line(&format!(
                    "exported to {}: {} written, {} removed, {} unchanged",
                    root.display(),
                    r.written,
                    r.removed,
                    r.unchanged
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Publish {
            batch: Some(file),
            acting,
            ..
        } => {
            let body = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                    .context("reading the batch from standard input")?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let a = client(&acting).publish_batch(body).await?;
            if json {
                println!("{}", serde_json::to_string(&a.body)?);
            } else {
                let n = a.body.seqs.len();
                match (a.body.seqs.first(), a.body.seqs.last()) {
                    (Some(first), Some(last)) => println!(
                        "published {n} events (seq {first}..={last}{})",
                        if a.body.replayed > 0 {
                            format!(", {} replayed", a.body.replayed)
                        } else {
                            String::new()
                        }
                    ),
                    _ => println!("published nothing"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Publish {
            kind,
            payload,
            resource,
            acting,
            ..
        } => {
            let Some(kind) = kind else {
                return Err(anyhow::anyhow!(crate::output::Exit(
                    crate::output::code::USAGE,
                    "publish needs a KIND (or --batch FILE)".into()
                )));
            };
            let a = client(&acting)
                .publish(&CustomEventRequest {
                    tx_kind: kind,
                    payload: parse_json_arg("payload", payload)?,
                    session_id: acting.session.clone(),
                    resource,
                    ..Default::default()
                })
                .await?;
            print_write(json, &a.body, "published")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and flag of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "coord", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
