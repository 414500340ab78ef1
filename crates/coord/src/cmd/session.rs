//! `coord session ...`: register, heartbeat, report, end, list and show
//! sessions (`session run` lives in `crate::run`).

use crate::args::*;
use crate::output::{self, code, print_write, Exit};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use coord_client::Client;
use coord_proto::api::*;
use coord_proto::Report;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum SessionCmd {
    /// Register a session; prints its token.
    Register {
        /// Session id (A-Z a-z 0-9 . _ - : @, at most 128 bytes).
        #[arg(long = "id")]
        id: String,
        #[command(flatten)]
        about: SessionAbout,
        /// Process to watch: its exit ends the session, and it is signalled
        /// if it outlives the lease (see --on-expiry).
        #[arg(long)]
        pid: Option<u32>,
        /// Lease, e.g. 30s: the session ends unless renewed within it.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Print only `export COORD_SESSION=… COORD_SESSION_TOKEN=…`, for
        /// `eval "$(coord session register --id ID --env)"`.
        #[arg(long, conflicts_with = "json")]
        env: bool,
    },
    /// Report to the parent session: turn_ended, errored, shut_down or
    /// scope_sub_delegated.
    Report {
        /// What happened.
        #[arg(value_enum)]
        kind: ReportKind,
        /// For errored: what went wrong.
        #[arg(long)]
        message: Option<String>,
        /// For scope_sub_delegated: the grandchild.
        #[arg(long)]
        sub_session: Option<String>,
        /// For scope_sub_delegated: a pattern it was given (repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// The parent (default: the registered parent).
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// Renew the lease (and change the phase).
    Heartbeat {
        /// The new phase (a logged heartbeat); without it the lease is
        /// only renewed.
        #[arg(long)]
        phase: Option<String>,
        #[command(flatten)]
        acting: Acting,
    },
    /// End the session.
    Dereg {
        /// Record this exit status.
        #[arg(long)]
        exit_code: Option<i32>,
        /// End another session with the admin token.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// List live sessions with their lease and what they wait for.
    List {
        /// Also list recently ended sessions and how each ended.
        #[arg(long, visible_alias = "all")]
        ended: bool,
    },
    /// Show one session, its lease, its locks and what it waits for.
    Show {
        /// Session id.
        id: String,
    },
    /// Run a command as a session: registers with its pid, exports
    /// COORD_SESSION and COORD_SESSION_TOKEN to it, heartbeats while it
    /// runs, deregisters with its exit status and exits with its code.
    Run(crate::run::RunArgs),
}

pub(crate) async fn session(
    base: &Client,
    cmd: SessionCmd,
    json: bool,
    socket: &std::path::Path,
) -> Result<ExitCode> {
    match cmd {
        SessionCmd::Register {
            id,
            about,
            pid,
            ttl,
            env,
        } => {
            let mut req = RegisterRequest {
                session_id: id,
                pid,
                ttl_ms: ttl.map(ms),
                token: Some(new_token()),
                ..Default::default()
            };
            about.fill(&mut req)?;
            let a = base.register(&req).await?;
            if env {
                // Ids and tokens are drawn from shell-safe characters.
                output::line(&format!(
                    "export COORD_SESSION={} COORD_SESSION_TOKEN={}",
                    a.body.session_id, a.body.token
                ))?;
            } else if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!(
                    "registered {} (seq {}, lease {} ms)\nexport COORD_SESSION={} COORD_SESSION_TOKEN={}",
                    a.body.session_id, a.body.seq, a.body.ttl_ms, a.body.session_id, a.body.token
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Report {
            kind,
            message,
            sub_session,
            scope,
            parent,
            acting,
        } => {
            let id = acting.id()?;
            let need = |what: &str| {
                anyhow!(Exit(
                    code::USAGE,
                    format!("{} needs {what}", report_name(kind))
                ))
            };
            let report = match kind {
                ReportKind::TurnEnded => Report::TurnEnded,
                ReportKind::ShutDown => Report::ShutDown,
                ReportKind::Errored => Report::Errored {
                    message: message.ok_or_else(|| need("--message"))?,
                },
                ReportKind::ScopeSubDelegated => {
                    if scope.is_empty() {
                        return Err(need("--scope PATTERN"));
                    }
                    Report::ScopeSubDelegated {
                        sub_session: sub_session.ok_or_else(|| need("--sub-session"))?,
                        scope,
                    }
                }
            };
            let a = base
                .clone()
                .with_token(acting.token)
                .report(
                    &id,
                    &ReportRequest {
                        parent_session: parent,
                        report,
                        tx_id: Some(ulid::Ulid::new()),
                        ts: None,
                    },
                )
                .await?;
            print_write(
                json,
                &a.body,
                &format!("{id} reported {}", report_name(kind)),
            )
        }
        SessionCmd::Heartbeat { phase, acting } => {
            let id = acting.id()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .heartbeat(
                    &id,
                    &HeartbeatRequest {
                        phase,
                        ..Default::default()
                    },
                )
                .await?;
            if json {
                output::json(&a.body)?;
            } else {
                output::line(&format!("lease of {id} renewed for {} ms", a.body.ttl_ms))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Dereg {
            exit_code,
            force,
            acting,
        } => {
            let id = acting.id()?;
            let mut c = base.clone().with_token(acting.token);
            if force {
                c = c.with_admin_token(Some(admin_token(socket)?));
            }
            let a = c
                .dereg(
                    &id,
                    &DeregRequest {
                        exit_code,
                        force,
                        ..Default::default()
                    },
                )
                .await?;
            print_write(json, &a.body, &format!("deregistered {id}"))
        }
        SessionCmd::List { ended } => {
            let r = if ended {
                base.sessions_with_ended().await?
            } else {
                base.sessions().await?
            };
            if json {
                output::json(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            let now = coord_proto::Timestamp::now();
            output::table(
                &[
                    "SESSION",
                    "STATE",
                    "ROLE",
                    "TASK",
                    "PHASE",
                    "PID",
                    "PARENT",
                    "RENEWED",
                    "EXPIRES",
                    "WAITING ON",
                ],
                &r.sessions
                    .iter()
                    .map(|s| {
                        let (renewed, expires) = match &s.lease {
                            Some(l) => (
                                format!("{} ago", output::span(now, l.renewed_at)),
                                format!("in {}", output::span(l.expires_at, now)),
                            ),
                            None => ("-".into(), "-".into()),
                        };
                        let waiting = if let Some(what) = s.waits_for() {
                            format!("a human: {}", coord_proto::ids::terminal_safe(what, false))
                        } else if s.waiting_on.is_empty() {
                            "-".to_string()
                        } else {
                            s.waiting_on
                                .iter()
                                .map(|w| {
                                    format!(
                                        "{}, {} (#{} in queue)",
                                        w.resource,
                                        output::span(now, w.since),
                                        w.position
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        vec![
                            s.session_id.clone(),
                            if s.waiting_on.is_empty() {
                                s.state.as_str().to_string()
                            } else {
                                format!("{} (waiting)", s.state.as_str())
                            },
                            s.role.clone(),
                            s.task.clone(),
                            s.phase.clone(),
                            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            s.parent_session.clone().unwrap_or_else(|| "-".into()),
                            renewed,
                            expires,
                            waiting,
                        ]
                    })
                    .collect::<Vec<_>>(),
            )?;
            if ended {
                output::line("")?;
                output::table(
                    &["ENDED SESSION", "ROLE", "TASK", "PID", "ENDED", "HOW"],
                    &r.ended
                        .iter()
                        .rev()
                        .map(|e| {
                            vec![
                                e.session_id.clone(),
                                e.role.clone(),
                                e.task.clone(),
                                e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                                format!("{} ago", output::span(now, e.ended_at)),
                                output::how_ended(e),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Show { id } => {
            let s = base.session(&id).await?;
            if json {
                output::json(&s)?;
            } else {
                output::line(&serde_json::to_string_pretty(&s)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCmd::Run(args) => crate::run::run(base, args).await,
    }
}

fn report_name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::TurnEnded => "turn_ended",
        ReportKind::Errored => "errored",
        ReportKind::ShutDown => "shut_down",
        ReportKind::ScopeSubDelegated => "scope_sub_delegated",
    }
}
