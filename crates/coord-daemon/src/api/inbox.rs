//! Inboxes (PROTOCOL §8, Inbox): send, list, read by id, ack.

use super::*;

#[utoipa::path(post, path = "/v1/inbox/{id}", tag = "inbox", params(("id" = String, Path, description = "The recipient session")), request_body = SendRequest, security(("session_token" = [])), responses((status = 201, description = "Delivered", body = SendResponse), (status = 200, description = "A replay", body = SendResponse)))]
pub(crate) async fn send<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(to): Path<String>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<SendRequest>,
) -> ApiResult {
    check_id("to_session", &to)?;
    if req.body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message body is {} bytes, at most {MAX_MESSAGE_BYTES}",
                req.body.len()
            ),
        )
        .with("limit", MAX_MESSAGE_BYTES));
    }
    Auth::MaybeSession(req.from_session.as_deref())
        .check(&app, &headers)
        .await?;
    let msg_id = req.msg_id.unwrap_or_else(|| ulid::Ulid::new().to_string());
    let mut w = write(
        Command::Deliver {
            to_session: to,
            msg_id: msg_id.clone(),
            kind: req.kind.unwrap_or_else(|| "message".into()),
            from_session: req.from_session,
            size: req.body.len() as u64,
            extra: Default::default(),
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    w.extras.body = Some(req.body);
    let c = app.writer.write(w).await?;
    Ok(written(
        &c,
        true,
        &SendResponse {
            seq: c.seq.unwrap_or(0),
            msg_id,
        },
    ))
}

#[utoipa::path(get, path = "/v1/inbox/{id}", tag = "inbox", params(("id" = String, Path, description = "A session id (PROTOCOL §2)")), security(("session_token" = [])), responses((status = 200, description = "Unacked messages, without bodies", body = InboxResponse)))]
pub(crate) async fn inbox_list<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    let r = app
        .writer
        .read(move |s| InboxResponse {
            seq: s.head,
            messages: s.view.inboxes.get(&id).cloned().unwrap_or_default(),
        })
        .await?;
    ok(&r)
}

#[utoipa::path(get, path = "/v1/inbox/{id}/{msg}", tag = "inbox", params(("id" = String, Path, description = "A session id (PROTOCOL §2)"), ("msg" = String, Path, description = "A message id")), security(("session_token" = [])), responses((status = 200, description = "The message with its body", body = Message)))]
pub(crate) async fn inbox_read<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path((id, msg)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    require_session(&app, &headers, &id).await?;
    check_id("msg_id", &msg)?;
    let (sid, mid) = (id.clone(), msg.clone());
    let found: Option<Message> = app
        .writer
        .read(move |s| {
            s.view
                .inboxes
                .get(&sid)
                .and_then(|inbox| inbox.iter().find(|m| m.msg_id == mid).cloned())
        })
        .await?;
    let Some(mut m) = found else {
        return Err(ApiError::new(
            ErrorCode::MessageNotFound,
            format!("no unacked message {msg} in the inbox of {id}"),
        )
        .with("msg_id", msg));
    };
    let body = app
        .store
        .attachment(&body_key(&id, &msg))
        .await
        .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
    m.body = Some(String::from_utf8_lossy(&body.unwrap_or_default()).into_owned());
    ok(&m)
}

#[utoipa::path(post, path = "/v1/inbox/{id}/{msg}/ack", tag = "inbox", params(("id" = String, Path, description = "A session id (PROTOCOL §2)"), ("msg" = String, Path, description = "A message id")), request_body = AckRequest, security(("session_token" = [])), responses((status = 200, description = "Acked", body = WriteResponse)))]
pub(crate) async fn inbox_ack<L: EventLog + Clone>(
    State(app): AppState<L>,
    Path((id, msg)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(req, digest): JsonBody<AckRequest>,
) -> ApiResult {
    let w = write(
        Command::AckMessage {
            session_id: id.clone(),
            msg_id: msg,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(&app, &headers, Auth::Session(&id), w, false).await
}
