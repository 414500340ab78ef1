//! Dispatch orders (PROTOCOL §8, Dispatch orders): issue, list, show,
//! wait for the next, ack, complete, cancel, reassign.

use super::*;
use coord_proto::view::Order;

#[utoipa::path(post, path = "/v1/dispatch", tag = "dispatch", request_body = IssueRequest, security(("session_token" = [])), responses((status = 201, description = "Issued", body = IssueResponse), (status = 200, description = "A replay", body = IssueResponse)))]
pub(crate) async fn issue<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<IssueRequest>,
) -> ApiResult {
    if let Some(from) = &req.from_session {
        require_session(&app, &headers, from).await?;
    }
    let order_id = req
        .order_id
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let c = app
        .writer
        .write(write(
            Command::Issue {
                order_id: order_id.clone(),
                assignee: req.assignee,
                ticket: req.ticket,
                from_session: req.from_session,
                payload: req.payload,
                extra: Default::default(),
            },
            req.tx_id,
            req.ts,
            &digest,
        ))
        .await?;
    Ok(written(
        &c,
        true,
        &IssueResponse {
            seq: c.seq.unwrap_or(0),
            order_id,
        },
    ))
}

/// `GET /v1/dispatch` query.
#[derive(serde::Deserialize)]
pub(crate) struct OrdersQuery {
    assignee: Option<String>,
    state: Option<String>,
}

#[utoipa::path(get, path = "/v1/dispatch", tag = "dispatch", params(("assignee" = Option<String>, Query, description = "Only this session's orders"), ("state" = Option<String>, Query, description = "issued, acked or orphaned")), responses((status = 200, description = "Open orders", body = OrdersResponse)))]
pub(crate) async fn list_orders<L: EventLog + Clone>(
    State(app): AppState<L>,
    QueryParams(q): QueryParams<OrdersQuery>,
) -> ApiResult {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some("issued") => Some(OrderState::Issued),
        Some("acked") => Some(OrderState::Acked),
        Some("orphaned") => Some(OrderState::Orphaned),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!(
                    "state {other:?}: expected issued, acked or orphaned (completed and cancelled orders leave the view)"
                ),
            )
            .with("field", "state"))
        }
    };
    let assignee = q.assignee.filter(|a| !a.is_empty());
    let r = app
        .writer
        .read(move |s| OrdersResponse {
            seq: s.head,
            orders: s
                .view
                .orders
                .values()
                .filter(|o| assignee.as_ref().is_none_or(|a| &o.assignee == a))
                .filter(|o| state.is_none_or(|st| o.state == st))
                .cloned()
                .collect(),
        })
        .await?;
    ok(&r)
}

#[utoipa::path(get, path = "/v1/dispatch/{id}", tag = "dispatch", params(("id" = String, Path, description = "An order id")), responses((status = 200, description = "The order", body = Order)))]
pub(crate) async fn get_order<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
) -> ApiResult {
    check_id("order_id", &id)?;
    let oid = id.clone();
    match app
        .writer
        .read(move |s| s.view.orders.get(&oid).cloned())
        .await?
    {
        Some(o) => ok(&o),
        None => Err(order_not_found(&id)),
    }
}

pub(crate) fn order_not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::OrderNotFound, format!("no open order {id}")).with("order_id", id)
}

/// `GET /v1/dispatch/next` query.
#[derive(serde::Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    wait_ms: u64,
}

#[utoipa::path(get, path = "/v1/dispatch/next", tag = "dispatch", params(("assignee" = String, Query, description = "The session"), ("wait_ms" = Option<u64>, Query, description = "How long to wait for one, ms (at most 86,400,000)")), responses((status = 200, description = "The oldest issued order of the assignee", body = Order)))]
pub(crate) async fn dispatch_next<L: EventLog + Clone>(
    State(app): AppState<L>,
    QueryParams(q): QueryParams<NextQuery>,
) -> ApiResult {
    let NextQuery { assignee, wait_ms } = q;
    check_id("assignee", &assignee)?;
    duration("wait_ms", wait_ms)?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let who = assignee.clone();
        let (order, head) = app
            .writer
            .read(move |s| {
                let next = s
                    .view
                    .orders
                    .values()
                    .filter(|o| o.assignee == who && o.state == OrderState::Issued)
                    .min_by_key(|o| o.issued_seq)
                    .cloned();
                (next, s.head)
            })
            .await?;
        if let Some(o) = order {
            return ok(&o);
        }
        // Sleep until an order for this assignee is published.
        until_event(
            &app,
            head,
            deadline,
            |p| {
                matches!(p, Payload::DispatchIssue(d) if d.assignee == assignee)
                    || matches!(p, Payload::DispatchReassign(d) if d.assignee == assignee)
            },
            || {
                ApiError::new(
                    ErrorCode::Timeout,
                    format!("no order for {assignee} within {wait_ms} ms"),
                )
            },
        )
        .await?;
    }
}

#[utoipa::path(post, path = "/v1/dispatch/{id}/ack", tag = "dispatch", params(("id" = String, Path, description = "An order id")), request_body = AckRequest, security(("session_token" = [])), responses((status = 200, description = "Taken", body = WriteResponse)))]
pub(crate) async fn order_ack<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<AckRequest>,
) -> ApiResult {
    // assignee_of authenticated the assignee.
    let assignee = assignee_of(&app, &headers, &id).await?;
    let w = write(
        Command::AckOrder {
            order_id: id,
            session_id: assignee,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, Auth::Anyone, w, false).await
}

#[utoipa::path(post, path = "/v1/dispatch/{id}/complete", tag = "dispatch", params(("id" = String, Path, description = "An order id")), request_body = CompleteRequest, security(("session_token" = [])), responses((status = 200, description = "Completed", body = WriteResponse)))]
pub(crate) async fn order_complete<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<CompleteRequest>,
) -> ApiResult {
    // assignee_of authenticated the assignee.
    let assignee = assignee_of(&app, &headers, &id).await?;
    let w = write(
        Command::Complete {
            order_id: id,
            session_id: assignee,
            result: req.result,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, Auth::Anyone, w, false).await
}

#[utoipa::path(post, path = "/v1/dispatch/{id}/cancel", tag = "dispatch", summary = "Withdraw an open order (its issuer, or the admin)", params(("id" = String, Path, description = "An order id")), request_body = CancelOrderRequest, security(("session_token" = []), ("admin_token" = [])), responses((status = 200, description = "Cancelled: the order left the view", body = WriteResponse)))]
pub(crate) async fn order_cancel<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<CancelOrderRequest>,
) -> ApiResult {
    check_id("order_id", &id)?;
    let auth = issuer_auth(req.session_id.as_deref());
    let w = write(
        Command::CancelOrder {
            order_id: id,
            by: req.session_id.clone(),
            reason: req.reason,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, auth, w, false).await
}

#[utoipa::path(post, path = "/v1/dispatch/{id}/reassign", tag = "dispatch", summary = "Give an open or orphaned order to another session (its issuer, or the admin)", params(("id" = String, Path, description = "An order id")), request_body = ReassignOrderRequest, security(("session_token" = []), ("admin_token" = [])), responses((status = 200, description = "Reassigned: issued to the new assignee", body = WriteResponse)))]
pub(crate) async fn order_reassign<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<ReassignOrderRequest>,
) -> ApiResult {
    check_id("order_id", &id)?;
    let auth = issuer_auth(req.session_id.as_deref());
    let w = write(
        Command::ReassignOrder {
            order_id: id,
            by: req.session_id.clone(),
            assignee: req.assignee,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, auth, w, false).await
}

/// Who may cancel or reassign: the named session (its token; the state
/// machine checks it issued the order), else the admin.
fn issuer_auth(session_id: Option<&str>) -> Auth<'_> {
    match session_id {
        Some(s) => Auth::Session(s),
        None => Auth::Admin,
    }
}

/// The order's assignee, after checking the request carries its token.
pub(crate) async fn assignee_of<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    order_id: &str,
) -> Result<String, ApiError> {
    check_id("order_id", order_id)?;
    let oid = order_id.to_string();
    let assignee = app
        .writer
        .read(move |s| s.view.orders.get(&oid).map(|o| o.assignee.clone()))
        .await?
        .ok_or_else(|| order_not_found(order_id))?;
    require_session(app, headers, &assignee)
        .await
        .map_err(|e| {
            if e.0.code() == Some(ErrorCode::BadToken) {
                ApiError::new(
                    ErrorCode::NotAssignee,
                    format!("order {order_id} is assigned to {assignee}; the token is not its"),
                )
                .with("assignee", assignee.as_str())
            } else {
                e
            }
        })?;
    Ok(assignee)
}
