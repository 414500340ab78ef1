//! `coord approvals …`: the fleet's permission prompts in one queue
//! (PROTOCOL §14): list what waits, show one with its full input, allow,
//! deny or hand it back to the terminal, list the decisions, and test what
//! the policy would do with a request.
//!
//! It decides nothing itself: a decision is the daemon's write, the
//! policy's verdict `coord_core::policy`'s.

use crate::args::admin_token;
use crate::output::{self, span, Exit};
use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use coord_client::Client;
use coord_core::policy::Policy;
use coord_proto::api::{DecideRequest, Verdict};
use coord_proto::approval::{Approval, ApprovalRequest};
use coord_proto::Timestamp;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalsCmd {
    /// What waits for a decision, oldest first.
    List {
        /// Only this session's.
        #[arg(long)]
        session: Option<String>,
    },
    /// One approval with the tool's full input.
    Show {
        /// The approval id (`ap-…`).
        id: String,
    },
    /// Let the agent run the tool.
    Allow(Decide),
    /// Refuse the tool; the model reads the reason.
    Deny(Decide),
    /// Leave it to the agent's own terminal prompt.
    Ask(Decide),
    /// The last decisions: who, from where, by which rule, how long the
    /// agent waited.
    Log {
        /// Only this session's.
        #[arg(long)]
        session: Option<String>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// What the policy would do with a request like this one.
    Test {
        /// The tool (`Write`, `Bash`).
        #[arg(long)]
        tool: String,
        /// A path it would write, relative to the work tree (repeatable).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// The command it would run.
        #[arg(long)]
        command: Option<String>,
        /// The agent.
        #[arg(long, default_value = "claude")]
        agent: String,
        /// The session's role.
        #[arg(long, default_value = "claude")]
        role: String,
        /// The rules file [default: approvals.toml beside the socket, or
        /// COORD_APPROVALS].
        #[arg(long, env = "COORD_APPROVALS")]
        policy: Option<PathBuf>,
    },
}

/// How a decision is made.
#[derive(clap::Args, Debug)]
pub(crate) struct Decide {
    /// The approval id (`ap-…`).
    id: String,
    /// Why (a deny's reason reaches the model).
    #[arg(long, default_value = "")]
    reason: String,
    /// Who decides, as the log records it [default: $USER].
    #[arg(long)]
    by: Option<String>,
    /// Decide as this coordinating session, for one of its children (its
    /// token in COORD_SESSION_TOKEN) instead of with the admin token.
    #[arg(long = "as", value_name = "SESSION")]
    as_session: Option<String>,
    /// That session's token.
    #[arg(long, env = "COORD_SESSION_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) async fn approvals(base: &Client, cmd: ApprovalsCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        ApprovalsCmd::List { session } => {
            let r = base.approvals("pending", session.as_deref()).await?;
            let now = Timestamp::now();
            output::json_or_table(
                json,
                &r,
                &["APPROVAL", "SESSION", "TOOL", "WHAT", "WAITING"],
                || {
                    r.approvals
                        .iter()
                        .map(|a| {
                            vec![
                                a.approval_id.clone(),
                                a.session_id.clone(),
                                a.tool.clone(),
                                a.summary.clone(),
                                span(now, a.requested_at),
                            ]
                        })
                        .collect()
                },
            )?;
        }
        ApprovalsCmd::Show { id } => {
            let a = base.approval(&id).await?;
            if json {
                output::json(&a)?;
            } else {
                show(&a)?;
            }
        }
        ApprovalsCmd::Allow(d) => return decide(base, d, Verdict::Allow, json).await,
        ApprovalsCmd::Deny(d) => return decide(base, d, Verdict::Deny, json).await,
        ApprovalsCmd::Ask(d) => return decide(base, d, Verdict::Ask, json).await,
        ApprovalsCmd::Log { session, limit } => {
            let mut r = base.approvals("decided", session.as_deref()).await?;
            let skip = r.approvals.len().saturating_sub(limit);
            r.approvals.drain(..skip);
            output::json_or_table(
                json,
                &r,
                &[
                    "DECIDED", "APPROVAL", "SESSION", "WHAT", "DECISION", "BY", "VIA", "WAITED",
                    "RULE", "REASON",
                ],
                || r.approvals.iter().map(log_row).collect(),
            )?;
        }
        ApprovalsCmd::Test {
            tool,
            paths,
            command,
            agent,
            role,
            policy,
        } => {
            let file = policy.unwrap_or_else(|| {
                base.socket().parent().map_or_else(
                    || PathBuf::from("approvals.toml"),
                    |d| d.join("approvals.toml"),
                )
            });
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            let rules = Policy::parse(&text).map_err(|e| {
                anyhow!(Exit(
                    output::code::USAGE,
                    format!("{} does not parse, so no rule decides: {e}", file.display())
                ))
            })?;
            let request = ApprovalRequest {
                approval_id: "ap-test".into(),
                agent,
                tool,
                summary: String::new(),
                paths,
                command,
                cwd: None,
                tool_use_id: None,
                input_bytes: 0,
            };
            let verdict = rules.decide(&request, &role);
            let answer = serde_json::json!({
                "policy": file,
                "rules": rules.rule.len(),
                "verdict": verdict,
            });
            output::json_or_line(json, &answer, || match &verdict {
                Some(v) => format!(
                    "{}: rule {:?} in {}{}",
                    v.decision.as_str(),
                    v.rule,
                    file.display(),
                    if v.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", v.reason)
                    }
                ),
                None => format!(
                    "no rule of {} decides ({} rules): the request waits for a person",
                    file.display(),
                    rules.rule.len()
                ),
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn decide(base: &Client, d: Decide, verdict: Verdict, json: bool) -> Result<ExitCode> {
    let by =
        d.by.or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()));
    let client = match &d.as_session {
        Some(_) => base.clone().with_token(d.token.clone()),
        None => base
            .clone()
            .with_admin_token(Some(admin_token(base.socket())?)),
    };
    let a = client
        .decide_approval(
            &d.id,
            &DecideRequest {
                decision: verdict,
                reason: d.reason,
                by,
                session_id: d.as_session,
                tx_id: None,
            },
        )
        .await?;
    output::json_or_line(json, &a, || {
        let how = a.decision.as_ref();
        format!(
            "{} {} ({} of {}) by {}",
            how.map_or("?", |x| x.decision.as_str()),
            a.approval_id,
            a.summary,
            a.session_id,
            how.map_or("?", |x| x.by.as_str()),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn show(a: &Approval) -> Result<()> {
    let mut out = vec![
        format!("approval   {}", a.approval_id),
        format!("session    {} ({})", a.session_id, a.agent),
        format!("tool       {}", a.tool),
        format!("what       {}", a.summary),
    ];
    if !a.paths.is_empty() {
        out.push(format!("paths      {}", a.paths.join(", ")));
    }
    if let Some(c) = &a.cwd {
        out.push(format!("cwd        {c}"));
    }
    out.push(format!(
        "asked      {} (seq {})",
        a.requested_at, a.requested_seq
    ));
    match &a.decision {
        Some(d) => out.push(format!(
            "decided    {} by {} via {}{} after {} ms{}",
            d.decision.as_str(),
            d.by,
            d.via,
            d.rule
                .as_deref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default(),
            d.waited_ms,
            if d.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", d.reason)
            }
        )),
        None => out.push("decided    not yet".into()),
    }
    if let Some(input) = &a.input {
        out.push(format!(
            "input\n{}",
            serde_json::to_string_pretty(input).unwrap_or_default()
        ));
    }
    output::line(&out.join("\n"))
}

fn log_row(a: &Approval) -> Vec<String> {
    let d = a.decision.as_ref();
    vec![
        d.map_or_else(String::new, |d| d.decided_at.to_string()),
        a.approval_id.clone(),
        a.session_id.clone(),
        a.summary.clone(),
        d.map_or("-", |d| d.decision.as_str()).to_string(),
        d.map_or_else(String::new, |d| d.by.clone()),
        d.map_or_else(String::new, |d| d.via.clone()),
        d.map_or_else(String::new, |d| {
            format!("{:.1}s", d.waited_ms as f64 / 1000.0)
        }),
        d.and_then(|d| d.rule.clone()).unwrap_or_default(),
        // Another session (or a rule file) wrote the reason: its escape
        // sequences are shown, not run by the terminal.
        d.map_or_else(String::new, |d| {
            coord_proto::ids::terminal_safe(&d.reason, false).into_owned()
        }),
    ]
}
