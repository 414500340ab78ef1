//! `coord lock ...`: acquire (printing the fencing token), release,
//! delegate, list and check locks.

use crate::args::*;
use crate::output::{self, code, print_write, Exit};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use coord_client::Client;
use coord_proto::api::*;
use coord_proto::LockMode;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum LockCmd {
    /// Take a lock (exit 4 if held, 5 if --wait ran out); prints its
    /// fencing token.
    Acquire {
        #[command(flatten)]
        target: Target,
        /// Wait in the FIFO queue this long, e.g. 10s.
        #[arg(long, value_parser = duration)]
        wait: Option<Duration>,
        /// Release automatically this long after the grant.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Shared instead of exclusive.
        #[arg(long)]
        shared: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Release a lock.
    Release {
        #[command(flatten)]
        target: Target,
        /// Release with the admin token: the --session's hold, or without
        /// --session every hold of the resource.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Hand part of your scope (a pattern within one of your exclusive
    /// locks) to a child session; it returns when the child ends.
    Delegate {
        #[command(flatten)]
        target: Target,
        /// The child receiving it.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// List held and awaited locks with their fencing tokens.
    List,
    /// Ask whether a fencing token is still the current grant of a lock
    /// (exit 0 if it is, 4 if not): refuse a holder whose lock has moved on.
    Check {
        #[command(flatten)]
        target: Target,
        /// The fencing token the holder presented (from `lock acquire`).
        #[arg(long)]
        token: u64,
        /// The log that issued the token (`log_id` of `lock acquire
        /// --json`): a token of another log is stale whatever its number,
        /// e.g. after the daemon came back on a replaced store.
        #[arg(long, value_name = "LOG_ID")]
        log_id: Option<String>,
    },
}

pub(crate) async fn lock(base: &Client, cmd: LockCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        LockCmd::Acquire {
            target,
            wait,
            ttl,
            shared,
            acting,
        } => {
            let id = acting.id()?;
            let resource = target.resource()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .acquire(&AcquireRequest {
                    session_id: id.clone(),
                    resource,
                    mode: if shared {
                        LockMode::Shared
                    } else {
                        LockMode::Exclusive
                    },
                    ttl_ms: ttl.map(ms),
                    wait_ms: wait.map(ms).unwrap_or(0),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let hint = match e.code() {
                        Some(coord_proto::ErrorCode::LockHeld) if wait.is_none() => {
                            Some("queue for it with --wait DURATION (e.g. --wait 30s)")
                        }
                        Some(coord_proto::ErrorCode::Timeout) => {
                            Some("the lock is still held; wait longer, or see who holds it with `coord lock list`")
                        }
                        _ => None,
                    };
                    match hint {
                        Some(h) => anyhow!(output::Hinted(e, h)),
                        None => anyhow!(e),
                    }
                })?;
            if json {
                output::json(&a.body)?;
            } else {
                let b = &a.body;
                output::line(&if b.already_held {
                    format!(
                        "{id} already holds {} ({}, fencing token {})",
                        b.resource,
                        b.mode.as_str(),
                        b.fencing_token
                    )
                } else {
                    format!(
                        "{id} holds {} ({}, fencing token {}, waited {} ms)",
                        b.resource,
                        b.mode.as_str(),
                        b.fencing_token,
                        b.waited_ms
                    )
                })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LockCmd::Check {
            target,
            token,
            log_id,
        } => {
            let resource = target.resource()?;
            let r = base.check_lock(&resource, token, log_id.as_deref()).await?;
            if json {
                output::json(&r)?;
            } else if r.reason.as_deref() == Some("other_log") {
                output::line(&format!(
                    "fencing token {token} is stale: it was issued by the log {}, and this daemon serves the log {}",
                    log_id.as_deref().unwrap_or("?"),
                    r.log_id
                ))?;
            } else if r.current {
                output::line(&format!(
                    "fencing token {token} is current for {}",
                    r.resource
                ))?;
            } else if r.holders.is_empty() {
                output::line(&format!(
                    "fencing token {token} is stale: nobody holds {} now",
                    r.resource
                ))?;
            } else {
                output::line(&format!(
                    "fencing token {token} is stale: {} is held by {}",
                    r.resource,
                    r.holders
                        .iter()
                        .map(|h| format!("{} (token {})", h.session_id, h.fencing_token))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
            }
            Ok(if r.current {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(code::CONFLICT)
            })
        }
        LockCmd::Delegate { target, to, acting } => {
            let id = acting.id()?;
            let resource = target.resource()?;
            let a = base
                .clone()
                .with_token(acting.token)
                .delegate(&DelegateRequest {
                    session_id: id.clone(),
                    resource: resource.clone(),
                    to_session: to.clone(),
                    tx_id: Some(ulid::Ulid::new()),
                    ts: None,
                })
                .await?;
            print_write(json, &a.body, &format!("{id} delegated {resource} to {to}"))
        }
        LockCmd::Release {
            target,
            force,
            acting,
        } => {
            let resource = target.resource()?;
            if force && acting.session.is_none() {
                return force_release_all(base, &resource, json).await;
            }
            let id = acting.id()?;
            let mut c = base.clone().with_token(acting.token);
            if force {
                c = c.with_admin_token(Some(admin_token(base.socket())?));
            }
            let a = c
                .release(&ReleaseRequest {
                    session_id: id.clone(),
                    resource: resource.clone(),
                    force,
                    ..Default::default()
                })
                .await?;
            print_write(json, &a.body, &format!("{id} released {resource}"))
        }
        LockCmd::List => {
            let r = base.locks().await?;
            let now = coord_proto::Timestamp::now();
            output::json_or_table(
                json,
                &r,
                &["RESOURCE", "MODE", "HOLDERS (FENCING TOKEN)", "WAITERS"],
                || {
                    r.locks
                        .iter()
                        .map(|l| {
                            let holders = l
                                .holders
                                .iter()
                                .map(|h| match &h.delegated_from {
                                    Some(p) => {
                                        format!("{} ({}, from {p})", h.session_id, h.acquired_seq)
                                    }
                                    None => format!("{} ({})", h.session_id, h.acquired_seq),
                                })
                                .collect::<Vec<_>>();
                            let waiters = l
                                .waiters
                                .iter()
                                .map(|w| {
                                    format!("{} ({})", w.session_id, output::span(now, w.since_at))
                                })
                                .collect::<Vec<_>>();
                            vec![
                                l.resource.clone(),
                                l.mode.as_str().to_string(),
                                if holders.is_empty() {
                                    "-".into()
                                } else {
                                    holders.join(", ")
                                },
                                if waiters.is_empty() {
                                    "-".into()
                                } else {
                                    waiters.join(", ")
                                },
                            ]
                        })
                        .collect()
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lock release --force RESOURCE` without `--session`: every hold of the
/// resource is released with the admin token.
pub(crate) async fn force_release_all(
    base: &Client,
    resource: &str,
    json: bool,
) -> Result<ExitCode> {
    let admin = base
        .clone()
        .with_admin_token(Some(admin_token(base.socket())?));
    let locks = base.locks().await?;
    let holders: Vec<String> = locks
        .locks
        .iter()
        .filter(|l| l.resource == resource)
        .flat_map(|l| l.holders.iter().map(|h| h.session_id.clone()))
        .collect();
    if holders.is_empty() {
        return Err(anyhow!(Exit(
            code::CONFLICT,
            format!("lock_not_held: nobody holds {resource}")
        )));
    }
    let mut answers = Vec::new();
    for h in &holders {
        let a = admin
            .release(&ReleaseRequest {
                session_id: h.clone(),
                resource: resource.to_string(),
                force: true,
                ..Default::default()
            })
            .await?;
        if !json {
            print_write(false, &a.body, &format!("released {resource} held by {h}"))?;
        }
        answers.push(serde_json::json!({"session_id": h, "seq": a.body.seq}));
    }
    if json {
        output::json(&serde_json::json!({ "resource": resource, "released": answers }))?;
    }
    Ok(ExitCode::SUCCESS)
}
