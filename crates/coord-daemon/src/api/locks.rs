//! Locks (PROTOCOL §8, Locks; §7.2): acquire (waiting in the queue with
//! its cancel-on-disconnect guard), release, list, and the fencing check.

use super::*;

/// At most this many `covering` paths in one `GET /v1/locks`.
const MAX_COVERING: usize = 64;
/// At most this many bytes in one `covering` path.
const MAX_COVERING_BYTES: usize = 4096;

/// The `covering` paths of a `GET /v1/locks` query (repeated keys, which
/// the typed query extractor does not take), normalised; empty for none.
fn covering(uri: &axum::http::Uri) -> Result<Vec<String>, ApiError> {
    let bad = |why: String| ApiError::new(ErrorCode::InvalidField, why).with("field", "covering");
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if k != "covering" {
            continue;
        }
        if out.len() == MAX_COVERING {
            return Err(bad(format!("at most {MAX_COVERING} covering paths")));
        }
        if v.is_empty() || v.len() > MAX_COVERING_BYTES || v.chars().any(char::is_control) {
            return Err(bad(format!(
                "covering {v:?}: a path of 1-{MAX_COVERING_BYTES} bytes without control characters"
            )));
        }
        out.push(ids::normalize_resource(&v));
    }
    Ok(out)
}

#[utoipa::path(get, path = "/v1/locks", tag = "locks", params(("covering" = Option<Vec<String>>, Query, explode, description = "Only the locks whose resource covers one of these paths (repeatable, at most 64; PROTOCOL §7.1)")), responses((status = 200, description = "Held and awaited locks", body = LocksResponse)))]
pub(crate) async fn list_locks<L: EventLog + Clone>(
    State(app): AppState<L>,
    uri: axum::http::Uri,
) -> ApiResult {
    let paths = covering(&uri)?;
    let r = app
        .writer
        .read(move |s| LocksResponse {
            seq: s.head,
            locks: s
                .view
                .locks
                .values()
                .filter(|l| {
                    paths.is_empty()
                        || paths
                            .iter()
                            .any(|p| coord_proto::pattern::covers(&l.resource, p))
                })
                .cloned()
                .collect(),
        })
        .await?;
    ok(&r)
}

/// Cancels a queued wait if the handler is dropped (client gone) before
/// it learned the outcome.
pub(crate) struct CancelOnDrop {
    writer: WriterHandle,
    resource: String,
    session_id: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let mut w = write(
                Command::CancelWait {
                    resource: self.resource.clone(),
                    session_id: self.session_id.clone(),
                    reason: WaitCancelReason::ClientGone,
                },
                None,
                None,
                &Digest::default(),
            );
            w.extras.must_land = true;
            self.writer.spawn_write(w);
        }
    }
}

#[utoipa::path(post, path = "/v1/locks/acquire", tag = "locks", request_body = AcquireRequest, security(("session_token" = [])), responses((status = 200, description = "Granted, with its fencing token", body = AcquireResponse)))]
pub(crate) async fn acquire<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req, digest): JsonBody<AcquireRequest>,
) -> ApiResult {
    require_session(&app, &headers, &req.session_id).await?;
    req.resource = ids::normalize_resource(&req.resource);
    duration("wait_ms", req.wait_ms)?;
    let started = Instant::now();
    let cmd = Command::Acquire {
        session_id: req.session_id.clone(),
        resource: req.resource.clone(),
        mode: req.mode,
        ttl_ms: req.ttl_ms,
        wait: req.wait_ms > 0,
        extra: Default::default(),
    };
    let (tx, mut rx) = oneshot::channel();
    let mut w = write(cmd.clone(), req.tx_id, req.ts, &digest);
    w.extras.wait = Some(tx);
    let mut c = app.writer.write(w).await?;
    if c.replayed && matches!(c.reply, Reply::Waiting) {
        // The original request waited and is gone; ask afresh so this
        // request is the one told of the grant.
        let (tx, rx2) = oneshot::channel();
        rx = rx2;
        let mut w = write(cmd, None, req.ts, &Digest::default());
        w.extras.wait = Some(tx);
        c = app.writer.write(w).await?;
    }
    let granted = |seq: u64, already: bool| {
        written(
            &c,
            false,
            &AcquireResponse {
                seq,
                fencing_token: seq,
                resource: req.resource.clone(),
                mode: req.mode,
                already_held: already,
                waited_ms: started.elapsed().as_millis() as u64,
                log_id: app.log_id.clone(),
            },
        )
    };
    match c.reply {
        Reply::Granted => return Ok(granted(c.seq.unwrap_or(0), false)),
        Reply::AlreadyHeld { acquired_seq } => return Ok(granted(acquired_seq, true)),
        Reply::Waiting | Reply::AlreadyWaiting => {}
        other => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!("unexpected answer to an acquire: {other:?}"),
            ))
        }
    }
    let mut guard = CancelOnDrop {
        writer: app.writer.clone(),
        resource: req.resource.clone(),
        session_id: req.session_id.clone(),
        armed: true,
    };
    let deadline = started + Duration::from_millis(req.wait_ms);
    let notice = tokio::select! {
        n = &mut rx => Some(n),
        _ = tokio::time::sleep_until(deadline.into()) => None,
        _ = app.shutdown.cancelled() => {
            return Err(ApiError::new(ErrorCode::ShuttingDown, "the daemon is shutting down; the wait is cancelled"));
        }
    };
    guard.armed = false;
    match notice {
        Some(Ok(WaitNotice::Granted(seq))) => {
            app.metrics
                .lock_wait_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(granted(seq, false))
        }
        Some(Ok(WaitNotice::Cancelled(WaitCancelReason::OwnerGone))) => Err(ApiError::new(
            ErrorCode::SessionNotFound,
            format!(
                "session {} ended while waiting for {}",
                req.session_id, req.resource
            ),
        )
        .with("session_id", req.session_id.as_str())),
        Some(Ok(WaitNotice::Cancelled(_))) => Err(timeout(&req.resource, started)),
        Some(Err(_)) => Err(ApiError::new(
            ErrorCode::LockHeld,
            format!(
                "another request of session {} now waits for {}; this one gave up",
                req.session_id, req.resource
            ),
        )),
        None => {
            // Out of time: leave the queue, unless the grant won the race.
            // If the log takes no write now the cancel is kept and lands
            // first once it does: the wait can never be granted later to
            // a caller told it failed (PROTOCOL §12).
            let mut cancel = write(
                Command::CancelWait {
                    resource: req.resource.clone(),
                    session_id: req.session_id.clone(),
                    reason: WaitCancelReason::Timeout,
                },
                None,
                None,
                &Digest::default(),
            );
            cancel.extras.must_land = true;
            let c = match app.writer.write(cancel).await {
                Ok(c) => c,
                Err(coord_engine::writer::WriteError::StoreUnavailable(why)) => {
                    return Err(ApiError::new(
                        ErrorCode::StoreUnavailable,
                        format!(
                            "{} was not granted within {} ms, and the log takes no write now ({why}): \
                             the wait is cancelled as soon as it does, before any other write of \
                             this daemon; it will not be granted to this request",
                            req.resource,
                            started.elapsed().as_millis()
                        ),
                    )
                    .with("resource", req.resource.as_str())
                    .with("wait_cancelled", "pending"))
                }
                Err(e) => return Err(e.into()),
            };
            match c.reply {
                Reply::NotWaiting {
                    held_seq: Some(seq),
                } => Ok(granted(seq, false)),
                _ => Err(timeout(&req.resource, started)),
            }
        }
    }
}

pub(crate) fn timeout(resource: &str, started: Instant) -> ApiError {
    ApiError::new(
        ErrorCode::Timeout,
        format!(
            "{resource} was not granted within {} ms; left the queue",
            started.elapsed().as_millis()
        ),
    )
    .with("resource", resource)
}

#[utoipa::path(post, path = "/v1/locks/release", tag = "locks", request_body = ReleaseRequest, security(("session_token" = []), ("admin_token" = [])), responses((status = 200, description = "Released", body = WriteResponse)))]
pub(crate) async fn release<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req, digest): JsonBody<ReleaseRequest>,
) -> ApiResult {
    req.resource = ids::normalize_resource(&req.resource);
    let auth = if req.force {
        Auth::Admin
    } else {
        Auth::Session(&req.session_id)
    };
    let w = write(
        Command::Release {
            session_id: req.session_id.clone(),
            resource: req.resource,
            force: req.force,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, auth, w, false).await
}

/// `GET /v1/locks/check` query.
#[derive(serde::Deserialize)]
pub(crate) struct CheckQuery {
    resource: Option<String>,
    token: Option<u64>,
    log_id: Option<String>,
}

/// `GET /v1/locks/check?resource=R&token=T[&log_id=L]`: whether fencing
/// token T (issued by log L) is still a current grant of R (PROTOCOL §7.2).
#[utoipa::path(get, path = "/v1/locks/check", tag = "locks", params(("resource" = String, Query, description = "The lock (normalised)"), ("token" = u64, Query, description = "A fencing token"), ("log_id" = Option<String>, Query, description = "The log that issued the token (the acquire answer's log_id); another log's token is never current")), responses((status = 200, description = "Whether the token is a current grant", body = LockCheckResponse)))]
pub(crate) async fn check_lock<L: EventLog + Clone>(
    State(app): AppState<L>,
    QueryParams(q): QueryParams<CheckQuery>,
) -> ApiResult {
    let resource = q.resource.ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidField, "resource is required").with("field", "resource")
    })?;
    let resource = ids::normalize_resource(&resource);
    ids::check_resource(&resource).map_err(|why| {
        ApiError::new(ErrorCode::InvalidId, format!("resource {resource:?} {why}"))
            .with("field", "resource")
    })?;
    let token = q.token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidField,
            "token is required: a fencing token (the seq of a grant)",
        )
        .with("field", "token")
    })?;
    let other_log = q.log_id.filter(|l| !l.is_empty() && *l != app.log_id);
    let log_id = app.log_id.clone();
    let r = app
        .writer
        .read(move |s| {
            let holders: Vec<LockCheckHolder> = s
                .view
                .locks
                .get(&resource)
                .map(|l| {
                    l.holders
                        .iter()
                        .map(|h| LockCheckHolder {
                            session_id: h.session_id.clone(),
                            fencing_token: h.acquired_seq,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let current = other_log.is_none() && holders.iter().any(|h| h.fencing_token == token);
            let reason = if current {
                None
            } else if other_log.is_some() {
                Some("other_log")
            } else if holders.is_empty() {
                Some("not_held")
            } else {
                Some("moved_on")
            };
            LockCheckResponse {
                seq: s.head,
                current,
                resource,
                token,
                holders,
                log_id,
                reason: reason.map(str::to_string),
            }
        })
        .await?;
    ok(&r)
}
