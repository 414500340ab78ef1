//! Approvals (PROTOCOL §14): ask, list, show, wait for the decision,
//! decide, withdraw. The policy file is read here, at the edge, and its
//! rules travel on the command; the state machine decides.

use super::*;
use coord_core::policy::Policy;
use coord_engine::writer::approval_key;
use coord_proto::approval::{Approval, ApprovalRequest, Decision, MAX_APPROVAL_INPUT_BYTES};
use coord_proto::{LifeState, ReportedState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Longest wait for a decision one request may ask for, ms (10 minutes).
const MAX_WAIT_MS: u64 = 600_000;

/// Who decided over HTTP/TCP, put on the request by the dashboard's guard
/// after it checked an approver login and its CSRF secret (never taken
/// from the client).
#[derive(Debug, Clone)]
pub(crate) struct WebDecider {
    /// The login's name (or id).
    pub(crate) by: String,
    /// `web v-… from ADDR`.
    pub(crate) via: String,
}

/// The id of an approval: `ap-` and 16 hex digits of the SHA-256 of the
/// session and the agent's call id (or the tool and its input), so a
/// retried hook asks for the same one.
pub(crate) fn approval_id(session_id: &str, ask: &ApprovalAsk) -> String {
    let key = match &ask.tool_use_id {
        Some(t) if !t.is_empty() => format!("{session_id}\n{t}"),
        _ => format!("{session_id}\n{}\n{}", ask.tool, ask.input),
    };
    format!("ap-{}", &tokens::hash(&key)[..16])
}

/// The rules in force: `None` when there is no file, or it does not parse
/// (said in the daemon's log: a broken file decides nothing).
fn policy<L>(app: &App<L>) -> Option<Policy> {
    let path = app.approvals_policy.as_ref()?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the approvals policy; no rule decides");
            return None;
        }
    };
    match Policy::parse(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the approvals policy does not parse; no rule decides");
            None
        }
    }
}

async fn find<L: EventLog + Clone>(app: &App<L>, id: &str) -> Result<Approval, ApiError> {
    let key = id.to_string();
    app.writer
        .read(move |s| coord_core::find_approval(s, &key).cloned())
        .await?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::ApprovalNotFound, format!("no approval {id}"))
                .with("approval_id", id)
        })
}

#[utoipa::path(post, path = "/v1/approvals", tag = "approvals", request_body = ApprovalAsk, security(("session_token" = [])), responses((status = 201, description = "Asked (decided at once when a policy rule matched)", body = Approval), (status = 200, description = "A duplicate: the approval as it stands", body = Approval)))]
pub(crate) async fn ask<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<ApprovalAsk>,
) -> ApiResult {
    require_session(&app, &headers, &req.session_id).await?;
    let input = req.input.to_string();
    if input.len() > MAX_APPROVAL_INPUT_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "the tool input is {} bytes, at most {MAX_APPROVAL_INPUT_BYTES}",
                input.len()
            ),
        )
        .with("limit", MAX_APPROVAL_INPUT_BYTES));
    }
    let id = match &req.approval_id {
        Some(id) => id.clone(),
        None => approval_id(&req.session_id, &req),
    };
    check_id("approval_id", &id)?;
    let mut w = write(
        Command::RequestApproval {
            session_id: req.session_id.clone(),
            request: ApprovalRequest {
                approval_id: id.clone(),
                agent: req.agent,
                tool: req.tool,
                summary: req.summary,
                paths: req.paths,
                command: req.command,
                cwd: req.cwd,
                tool_use_id: req.tool_use_id,
                input_bytes: input.len() as u64,
            },
            policy: policy(&app),
        },
        req.tx_id,
        None,
        &digest,
    );
    w.extras.body = Some(input);
    let c = app.writer.write(w).await?;
    let a = find(&app, &id).await?;
    Ok(written(&c, c.seq.is_some(), &a))
}

/// `GET /v1/approvals` query.
#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    session: Option<String>,
}

#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(("state" = Option<String>, Query, description = "pending (default), decided or all"), ("session" = Option<String>, Query, description = "Only this session's")), responses((status = 200, description = "Approvals", body = ApprovalsResponse)))]
pub(crate) async fn list<L: EventLog + Clone>(
    State(app): AppState<L>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let (pending, decided) = match q.state.as_deref() {
        None | Some("" | "pending") => (true, false),
        Some("decided") => (false, true),
        Some("all") => (true, true),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("state {other:?}: expected pending, decided or all"),
            )
            .with("field", "state"))
        }
    };
    let session = q.session.filter(|s| !s.is_empty());
    let r = app
        .writer
        .read(move |s| {
            let mine = |a: &&Approval| session.as_ref().is_none_or(|x| *x == a.session_id);
            let mut out: Vec<Approval> = Vec::new();
            if pending {
                let mut p: Vec<Approval> =
                    s.view.approvals.values().filter(mine).cloned().collect();
                p.sort_by_key(|a| a.requested_seq);
                out.extend(p);
            }
            if decided {
                out.extend(s.decided.iter().filter(mine).cloned());
            }
            ApprovalsResponse {
                seq: s.head,
                approvals: out,
            }
        })
        .await?;
    ok(&r)
}

#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path, description = "An approval id")), responses((status = 200, description = "The approval with the tool's full input", body = Approval)))]
pub(crate) async fn show<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
) -> ApiResult {
    check_id("approval_id", &id)?;
    let mut a = find(&app, &id).await?;
    let body = app
        .store
        .attachment(&approval_key(&id))
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    a.input = body.and_then(|b| serde_json::from_slice(&b).ok());
    ok(&a)
}

/// `GET /v1/approvals/{id}/wait` query.
#[derive(serde::Deserialize)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
    /// The requesting session: its wait withdraws the approval if the
    /// client goes away in the middle of it.
    session_id: Option<String>,
}

/// The requester's wait, cut off: the agent killed the hook that would
/// have carried the decision, so the approval is withdrawn rather than
/// left pending with nobody to answer (PROTOCOL §14). Armed while the
/// handler waits; a handler that answers disarms it, one dropped by its
/// closed connection does not. A daemon that stops answers its waits
/// (`shutting_down`, from `until_event`), so stopping withdraws nothing.
///
/// The session then no longer waits on it: if its state is still the
/// `needs_input` that names this approval, it is reported `idle` (an
/// agent that kills a waiting hook has been interrupted: Codex on Esc).
/// The check and the report are two steps through the one writer; a
/// hook's report between them is rare and the next hook corrects it.
struct WithdrawOnDrop {
    writer: WriterHandle,
    waits: Arc<Mutex<HashMap<String, usize>>>,
    approval_id: String,
    session_id: String,
    armed: bool,
}

impl WithdrawOnDrop {
    fn arm<L>(app: &App<L>, approval_id: String, session_id: String) -> Self {
        *lock(&app.requester_waits)
            .entry(approval_id.clone())
            .or_default() += 1;
        WithdrawOnDrop {
            writer: app.writer.clone(),
            waits: app.requester_waits.clone(),
            approval_id,
            session_id,
            armed: true,
        }
    }
}

/// The map, also when a panicking holder poisoned it (a count is still a
/// count).
fn lock(m: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        let others = {
            let mut waits = lock(&self.waits);
            let left = waits
                .get(&self.approval_id)
                .map_or(0, |n| n.saturating_sub(1));
            if left == 0 {
                waits.remove(&self.approval_id);
            } else {
                waits.insert(self.approval_id.clone(), left);
            }
            left
        };
        if !self.armed || others > 0 {
            return;
        }
        tracing::info!(approval = %self.approval_id, session = %self.session_id, "the requester's wait was cut off; withdrawing the approval");
        let mut w = write(
            Command::DecideApproval {
                approval_id: self.approval_id.clone(),
                decision: Decision::Withdrawn,
                reason: "the agent ended its hook while it waited".into(),
                by: self.session_id.clone(),
                via: "hook".into(),
                as_session: None,
                requester: Some(self.session_id.clone()),
            },
            None,
            None,
            &Digest::default(),
        );
        w.extras.must_land = true;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // The runtime is going down: the approval stays pending in
            // the log, and the next daemon's hooks settle it.
            return;
        };
        let (writer, id, sid) = (
            self.writer.clone(),
            self.approval_id.clone(),
            self.session_id.clone(),
        );
        rt.spawn(async move {
            if writer.write(w).await.is_err() {
                return;
            }
            let named = format!("(approval {id})");
            let key = sid.clone();
            let waits = writer
                .read(move |s| {
                    s.view.sessions.get(&key).is_some_and(|s| {
                        s.state == LifeState::NeedsInput && s.state_reason.contains(&named)
                    })
                })
                .await
                .unwrap_or(false);
            if !waits {
                return;
            }
            let at = Timestamp::now();
            let report = write(
                Command::Heartbeat {
                    session_id: sid,
                    phase: None,
                    at,
                    log_always: false,
                    reported: Some(ReportedState {
                        state: LifeState::Idle,
                        reason: format!(
                            "the agent ended its hook while it waited for approval {id}"
                        ),
                        source: "coord:approvals".into(),
                    }),
                },
                None,
                Some(at),
                &Digest::default(),
            );
            let _ = writer.write(report).await;
        });
    }
}

#[utoipa::path(get, path = "/v1/approvals/{id}/wait", tag = "approvals", params(("id" = String, Path, description = "An approval id"), ("wait_ms" = Option<u64>, Query, description = "Longest wait, ms (default 0, at most 600000)"), ("session_id" = Option<String>, Query, description = "The requesting session (its token): a wait cut off by a closed connection withdraws the approval")), security((), ("session_token" = [])), responses((status = 200, description = "The decided approval", body = Approval)))]
pub(crate) async fn wait<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<WaitQuery>,
) -> ApiResult {
    check_id("approval_id", &id)?;
    if q.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("wait_ms is at most {MAX_WAIT_MS}"),
        )
        .with("field", "wait_ms"));
    }
    let mut guard = match q.session_id {
        Some(sid) => {
            require_session(&app, &headers, &sid).await?;
            let a = find(&app, &id).await?;
            if a.session_id != sid {
                return Err(ApiError::new(
                    ErrorCode::NotOwner,
                    format!("approval {id} was asked by {}, not {sid}", a.session_id),
                )
                .with("approval_id", id.as_str()));
            }
            Some(WithdrawOnDrop::arm(&app, id.clone(), sid))
        }
        None => None,
    };
    let answer = until_decided(&app, &id, q.wait_ms).await;
    if let Some(g) = guard.as_mut() {
        g.armed = false;
    }
    answer
}

/// The approval once decided, or `timeout` after `wait_ms`.
async fn until_decided<L: EventLog + Clone>(app: &App<L>, id: &str, wait_ms: u64) -> ApiResult {
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let key = id.to_string();
        let (found, head) = app
            .writer
            .read(move |s| (coord_core::find_approval(s, &key).cloned(), s.head))
            .await?;
        let Some(a) = found else {
            return Err(
                ApiError::new(ErrorCode::ApprovalNotFound, format!("no approval {id}"))
                    .with("approval_id", id),
            );
        };
        if a.decision.is_some() {
            return ok(&a);
        }
        // Sleep until a decision of this approval is published.
        until_event(
            app,
            head,
            deadline,
            |p| matches!(p, Payload::ApprovalDecide(d) if d.approval_id == id),
            || {
                ApiError::new(
                    ErrorCode::Timeout,
                    format!("approval {id} is still pending after {wait_ms} ms"),
                )
                .with("approval_id", id)
            },
        )
        .await?;
    }
}

#[utoipa::path(post, path = "/v1/approvals/{id}/decide", tag = "approvals", params(("id" = String, Path, description = "An approval id")), request_body = DecideRequest, security(("admin_token" = []), ("session_token" = [])), responses((status = 200, description = "Decided", body = Approval)))]
pub(crate) async fn decide<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    web: Option<axum::Extension<WebDecider>>,
    JsonBody(req, digest): JsonBody<DecideRequest>,
) -> ApiResult {
    check_id("approval_id", &id)?;
    let given = req.by.filter(|b| !b.trim().is_empty());
    let (by, via) = match (&req.session_id, web) {
        (Some(s), _) => {
            require_session(&app, &headers, s).await?;
            (
                given.unwrap_or_else(|| format!("session:{s}")),
                "mcp".to_string(),
            )
        }
        (None, Some(axum::Extension(w))) => (w.by, w.via),
        (None, None) => {
            require_admin(&app, &headers)?;
            (
                given.unwrap_or_else(|| "admin".into()),
                "socket".to_string(),
            )
        }
    };
    let w = write(
        Command::DecideApproval {
            approval_id: id.clone(),
            decision: req.decision.into(),
            reason: req.reason,
            by,
            via,
            as_session: req.session_id,
            requester: None,
        },
        req.tx_id,
        None,
        &digest,
    );
    app.writer.write(w).await?;
    ok(&find(&app, &id).await?)
}

#[utoipa::path(post, path = "/v1/approvals/{id}/withdraw", tag = "approvals", params(("id" = String, Path, description = "An approval id")), request_body = WithdrawRequest, security(("session_token" = [])), responses((status = 200, description = "Withdrawn", body = Approval)))]
pub(crate) async fn withdraw<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<WithdrawRequest>,
) -> ApiResult {
    check_id("approval_id", &id)?;
    require_session(&app, &headers, &req.session_id).await?;
    let decision = match req.decision {
        Withdrawal::Expired => Decision::Expired,
        Withdrawal::Withdrawn => Decision::Withdrawn,
    };
    let w = write(
        Command::DecideApproval {
            approval_id: id.clone(),
            decision,
            reason: req.reason,
            by: req.session_id.clone(),
            via: "hook".into(),
            as_session: None,
            requester: Some(req.session_id),
        },
        None,
        None,
        &digest,
    );
    app.writer.write(w).await?;
    ok(&find(&app, &id).await?)
}
