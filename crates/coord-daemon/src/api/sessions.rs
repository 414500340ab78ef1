//! Sessions and leases (PROTOCOL §8, Sessions): register, list, show,
//! heartbeat, end. The answers add what only the daemon knows (the
//! lease, renewals included) and what the queues say (what it waits for).

use super::*;

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = RegisterRequest, responses((status = 201, description = "Registered", body = RegisterResponse), (status = 200, description = "A replay of an earlier identical register (same tx_id)", body = RegisterResponse)))]
pub(crate) async fn register<L: EventLog + Clone>(
    State(app): AppState<L>,
    JsonBody(req, digest): JsonBody<RegisterRequest>,
) -> ApiResult {
    check_id("session_id", &req.session_id)?;
    let token = match req.token.clone() {
        Some(t) if tokens::acceptable(&t) => t,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "token must be 32-128 characters of A-Za-z0-9_-",
            )
            .with("field", "token"))
        }
        None => tokens::generate(),
    };
    let pidfd = match req.pid {
        Some(pid) if pid > 0 => match pidfd::open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(ApiError::new(
                    ErrorCode::NoSuchProcess,
                    format!("no process with pid {pid} is running"),
                )
                .with("pid", pid))
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "pidfd_open failed; the session will not be watched");
                None
            }
        },
        _ => None,
    };
    if let (true, Some(pid)) = (req.process_group, req.pid) {
        // The daemon signals the group by its id later: it must be this
        // process's own group, not its parent shell's or anyone's.
        // SAFETY: getpgid only reads the process table.
        let pgid = unsafe { libc::getpgid(pid as libc::pid_t) };
        if pgid != pid as libc::pid_t {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("process_group: pid {pid} does not lead a process group of its own (its group is {pgid})"),
            )
            .with("field", "process_group"));
        }
    }
    let ttl_ms = req.ttl_ms.unwrap_or(DEFAULT_SESSION_TTL_MS);
    let mut w = write(
        Command::Register {
            session_id: req.session_id.clone(),
            role: req.role,
            task: req.task,
            blob: req.blob.unwrap_or_else(|| serde_json::json!({})),
            phase: req.phase.unwrap_or_else(|| "starting".into()),
            pid: req.pid,
            parent_session: req.parent_session,
            ttl_ms,
            probes: coord_core::Probes {
                tmux: req.tmux,
                activity_file: req.activity_file,
                transcript: req.transcript,
            },
            expiry: coord_core::ExpiryPolicy {
                on_expiry: req.on_expiry,
                kill_grace_ms: req.kill_grace_ms,
                process_group: req.process_group,
            },
            extra: Default::default(),
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    w.extras.token_hash = Some(tokens::hash(&token));
    w.extras.pidfd = pidfd;
    let c = app.writer.write(w).await?;
    // A replay cannot return a daemon-made token (only its hash is kept);
    // a client-chosen one is echoed.
    let token = if c.replayed {
        req.token.unwrap_or_default()
    } else {
        token
    };
    Ok(written(
        &c,
        true,
        &RegisterResponse {
            session_id: req.session_id,
            token,
            seq: c.seq.unwrap_or(0),
            ttl_ms,
        },
    ))
}

/// `GET /v1/sessions` query.
#[derive(serde::Deserialize)]
pub(crate) struct SessionsQuery {
    ended: Option<Flag>,
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(("ended" = Option<bool>, Query, description = "Also list recently ended sessions")), responses((status = 200, description = "Live sessions with their lease and waits", body = SessionsResponse)))]
pub(crate) async fn list_sessions<L: EventLog + Clone>(
    State(app): AppState<L>,
    QueryParams(q): QueryParams<SessionsQuery>,
) -> ApiResult {
    let ended = q.ended.is_some_and(|f| f.0);
    let leases = app.leases.clone();
    let r = app
        .writer
        .read(move |s| SessionsResponse {
            seq: s.head,
            sessions: s
                .view
                .sessions
                .values()
                .map(|x| with_live_facts(s, &leases, x))
                .collect(),
            ended: if ended {
                s.ended.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
        .await?;
    ok(&r)
}

/// A session as the API shows it: the folded session plus what only the
/// daemon knows (its lease, renewals included) and what the locks' queues
/// say about it (what it waits for).
pub(crate) fn with_live_facts(
    s: &coord_core::State,
    leases: &Leases,
    session: &coord_proto::view::Session,
) -> coord_proto::view::Session {
    let mut out = session.clone();
    out.lease = leases.get(&session.session_id);
    let mut waiting: Vec<coord_proto::view::WaitingOn> = s
        .view
        .locks
        .values()
        .filter_map(|l| {
            l.waiters
                .iter()
                .position(|w| w.session_id == session.session_id)
                .map(|i| coord_proto::view::WaitingOn {
                    resource: l.resource.clone(),
                    mode: l.waiters[i].mode,
                    since: l.waiters[i].since_at,
                    position: i + 1,
                })
        })
        .collect();
    waiting.sort_by_key(|w| w.since);
    out.waiting_on = waiting;
    out
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "A session id (PROTOCOL §2)")), responses((status = 200, description = "The session and the locks it holds", body = SessionDetail)))]
pub(crate) async fn get_session<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
) -> ApiResult {
    check_id("session_id", &id)?;
    let sid = id.clone();
    let leases = app.leases.clone();
    let detail = app
        .writer
        .read(move |s| {
            s.view.sessions.get(&sid).map(|session| SessionDetail {
                session: with_live_facts(s, &leases, session),
                locks: s
                    .view
                    .locks
                    .values()
                    .filter(|l| l.holders.iter().any(|h| h.session_id == sid))
                    .map(|l| l.resource.clone())
                    .collect(),
            })
        })
        .await?;
    match detail {
        Some(d) => ok(&d),
        None => Err(crate::http::session_gone(&app, &id).await),
    }
}

#[utoipa::path(post, path = "/v1/sessions/{id}/heartbeat", tag = "sessions", params(("id" = String, Path, description = "A session id (PROTOCOL §2)")), request_body = HeartbeatRequest, security(("session_token" = [])), responses((status = 200, description = "The lease is renewed", body = HeartbeatResponse)))]
pub(crate) async fn heartbeat<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<HeartbeatRequest>,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    let at = req.ts.unwrap_or_else(Timestamp::now);
    let c = app
        .writer
        .write(write(
            Command::Heartbeat {
                session_id: id.clone(),
                phase: req.phase,
                at,
                log_always: app.log_heartbeats,
                reported: req.reported,
            },
            req.tx_id,
            Some(at),
            &digest,
        ))
        .await?;
    let (ttl_ms, pending_approvals) = app
        .writer
        .read(move |s| {
            let ttl = s.view.sessions.get(&id).map_or(0, |s| s.ttl_ms);
            let mut pending: Vec<_> = s
                .view
                .approvals
                .values()
                .filter(|a| a.session_id == id)
                .cloned()
                .collect();
            pending.sort_by_key(|a| a.requested_seq);
            (ttl, pending)
        })
        .await?;
    Ok(written(
        &c,
        false,
        &HeartbeatResponse {
            seq: c.seq,
            ttl_ms,
            pending_approvals,
        },
    ))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/dereg", tag = "sessions", params(("id" = String, Path, description = "A session id (PROTOCOL §2)")), request_body = DeregRequest, security(("session_token" = []), ("admin_token" = [])), responses((status = 200, description = "The session ended", body = WriteResponse)))]
pub(crate) async fn dereg<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<DeregRequest>,
) -> ApiResult {
    let (auth, reason) = if req.force {
        (Auth::Admin, DeregReason::Forced)
    } else {
        (Auth::Session(&id), DeregReason::Explicit)
    };
    let w = write(
        Command::Dereg {
            session_id: id.clone(),
            reason,
            exit_code: req.exit_code,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, auth, w, false).await
}
