//! Pods (PROTOCOL §6.2): a child's report to its parent, and a parent's
//! delegation of part of its scope.

use super::*;

/// A child's report to its parent. A child of this daemon acts with its
/// token; a child of another daemon is reported by that daemon's
/// forwarder with this daemon's admin token (source `peer`).
#[utoipa::path(post, path = "/v1/sessions/{id}/report", tag = "pods", params(("id" = String, Path, description = "A session id (PROTOCOL §2)")), request_body = ReportRequest, security(("session_token" = []), ("admin_token" = [])), responses((status = 201, description = "Reported", body = WriteResponse), (status = 200, description = "A replay", body = WriteResponse)))]
pub(crate) async fn report<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<ReportRequest>,
) -> ApiResult {
    check_id("session_id", &id)?;
    let sid = id.clone();
    let local = app
        .writer
        .read(move |s| s.view.sessions.contains_key(&sid))
        .await?;
    let admin = require_admin(&app, &headers).is_ok();
    if local && !admin {
        require_session(&app, &headers, &id).await?;
    } else if !local && !admin {
        return Err(ApiError::new(
            ErrorCode::AdminRequired,
            format!(
                "{id} is not a session of this daemon; a report forwarded for it needs the admin token (Coord-Admin-Token)"
            ),
        ));
    }
    let mut w = write(
        Command::Report {
            session_id: id,
            parent_session: req.parent_session,
            report: req.report,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    if !local {
        w.source = coord_engine::writer::PEER.to_string();
    }
    // Authenticated above: the admin token or the child's own.
    submit_seq(&app, &headers, Auth::Anyone, w, true).await
}

/// `lock.delegate`: the parent (`session_id`, its token) hands part of its
/// scope to a child.
#[utoipa::path(post, path = "/v1/locks/delegate", tag = "pods", request_body = DelegateRequest, security(("session_token" = [])), responses((status = 201, description = "Delegated", body = WriteResponse), (status = 200, description = "A replay", body = WriteResponse)))]
pub(crate) async fn delegate<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(mut req, digest): JsonBody<DelegateRequest>,
) -> ApiResult {
    req.resource = ids::normalize_resource(&req.resource);
    let auth = Auth::Session(&req.session_id);
    let w = write(
        Command::Delegate {
            session_id: req.session_id.clone(),
            resource: req.resource,
            to_session: req.to_session,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, auth, w, true).await
}
