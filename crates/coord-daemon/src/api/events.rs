//! The events stream (PROTOCOL §9) and custom `x.*` events: a cursor
//! and a filter per subscriber, at most one batch held at a time.

use super::*;
use axum::response::sse::{Event, Sse};
use coord_engine::filter::{Filter, FilterKey};
use coord_engine::hub::LogCursor;
use futures_util::StreamExt;

/// The [`Digest`] of a custom event, from its parsed fields rather than
/// the canonical JSON of its body: the same binding (method, path, every
/// field but `ts`; an absent payload is `{}`), without re-parsing the body,
/// which on the batch path cost a fifth of an idempotent producer's rate.
fn custom_digest(req: &CustomEventRequest) -> Digest {
    use sha2::{Digest as _, Sha256};
    let Some(tx_id) = req.tx_id else {
        return Digest(None);
    };
    let mut h = Sha256::new();
    h.update(b"POST /v1/events\n");
    for part in [
        Some(req.tx_kind.as_str()),
        req.session_id.as_deref(),
        req.resource.as_deref(),
    ] {
        // A tag per field keeps "absent" apart from "empty".
        match part {
            Some(p) => {
                h.update(b"s");
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
            None => h.update(b"-"),
        }
    }
    h.update(u128::from(tx_id).to_le_bytes());
    let empty = serde_json::Value::Object(Default::default());
    // serde_json's maps are ordered by key, so this encoding is canonical.
    if serde_json::to_writer(&mut h, req.payload.as_ref().unwrap_or(&empty)).is_err() {
        return Digest(None);
    }
    Digest(Some(coord_engine::tokens::hex(&h.finalize()[..16])))
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = CustomEventRequest, responses((status = 201, description = "Appended", body = WriteResponse), (status = 200, description = "A replay", body = WriteResponse)))]
pub(crate) async fn custom_event<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    JsonBody(req, _): JsonBody<CustomEventRequest>,
) -> ApiResult {
    append_event(&app, &headers, req).await
}

/// The handler of `POST /v1/events` past its extractors.
pub(crate) async fn append_event<L: EventLog + Clone>(
    app: &App<L>,
    headers: &HeaderMap,
    req: CustomEventRequest,
) -> ApiResult {
    let digest = custom_digest(&req);
    Auth::MaybeSession(req.session_id.as_deref())
        .check(app, headers)
        .await?;
    let body = match req.payload {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(
                ApiError::new(ErrorCode::InvalidField, "payload must be a JSON object")
                    .with("field", "payload"),
            )
        }
    };
    let w = write(
        Command::Custom {
            kind: req.tx_kind,
            body,
            session_id: req.session_id,
            resource: req.resource,
        },
        req.tx_id,
        req.ts,
        &digest,
    );
    submit_seq(app, headers, Auth::Anyone, w, true).await
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body(content((String = "application/x-ndjson"), (String = "text/plain")), description = "One custom-event request (as POST /v1/events takes) per line"), responses((status = 201, description = "Appended in one commit, all or nothing; every line's seq", body = BatchResponse), (status = 200, description = "Every line was a replay (same tx_id)", body = BatchResponse)))]
/// `POST /v1/events/batch`: many `x.*` events in one request, appended in
/// one commit — all or nothing — with one answer carrying every seq.
/// Each line is idempotent by its own `tx_id`. A bad line refuses the
/// whole batch and names its line number.
pub(crate) async fn custom_batch<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    crate::http::NdjsonBody(bytes): crate::http::NdjsonBody,
) -> ApiResult {
    let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
    let mut writes = Vec::with_capacity(lines.min(coord_proto::MAX_BATCH_EVENTS));
    // Each write's line number, for the error of a line the writer refuses.
    let mut line_of = Vec::with_capacity(writes.capacity());
    let mut sessions = std::collections::BTreeSet::new();
    // tx_id → (line, digest): a tx_id twice in one batch must name the same
    // event, or the batch is refused before anything is queued (§9.2: all
    // or nothing).
    let mut tx_ids: std::collections::HashMap<ulid::Ulid, (usize, Option<String>)> =
        std::collections::HashMap::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let n = i + 1;
        // One line is one event: no larger than POST /v1/events takes.
        if line.len() > coord_proto::MAX_REQUEST_BYTES {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "line {n} is {} bytes; one event is at most {} bytes, as POST /v1/events takes",
                    line.len(),
                    coord_proto::MAX_REQUEST_BYTES
                ),
            )
            .with("limit", coord_proto::MAX_REQUEST_BYTES)
            .with("line", n));
        }
        if writes.len() == coord_proto::MAX_BATCH_EVENTS {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "a batch holds at most {} events",
                    coord_proto::MAX_BATCH_EVENTS
                ),
            )
            .with("limit", coord_proto::MAX_BATCH_EVENTS));
        }
        let req: CustomEventRequest =
            crate::http::parse_json(line).map_err(|e| e.with("line", n))?;
        // A line is bound like the same event sent alone, so a line retried
        // through POST /v1/events (or the reverse) is a true retry.
        let digest = custom_digest(&req);
        let body = match req.payload {
            None => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("line {n}: payload must be a JSON object"),
                )
                .with("field", "payload")
                .with("line", n))
            }
        };
        // Custom events are checked on their own, not against the view:
        // every line is known good before anything is queued.
        if let Err(rej) = coord_core::check_custom(
            &req.tx_kind,
            req.session_id.as_deref(),
            req.resource.as_deref(),
        ) {
            let e: ApiError = coord_engine::writer::WriteError::Rejected(rej).into();
            return Err(e.with("line", n));
        }
        let cmd = Command::Custom {
            kind: req.tx_kind,
            body,
            session_id: req.session_id,
            resource: req.resource,
        };
        if let Command::Custom {
            session_id: Some(s),
            ..
        } = &cmd
        {
            sessions.insert(s.clone());
        }
        if let Some(tx) = req.tx_id {
            match tx_ids.get(&tx) {
                Some((first, d)) if *d != digest.0 => {
                    return Err(ApiError::new(
                        ErrorCode::TxIdReused,
                        format!(
                            "line {n}: tx_id {tx} is used by line {first} for a different event; \
                             nothing was appended"
                        ),
                    )
                    .with("tx_id", tx.to_string())
                    .with("line", n)
                    .with("first_line", *first));
                }
                Some(_) => {}
                None => {
                    tx_ids.insert(tx, (n, digest.0.clone()));
                }
            }
        }
        writes.push(write(cmd, req.tx_id, req.ts, &digest));
        line_of.push(n);
    }
    if writes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "the batch is empty: send one JSON object per line",
        ));
    }
    for s in &sessions {
        Auth::MaybeSession(Some(s)).check(&app, &headers).await?;
    }
    let answers = app.writer.write_group(writes).await?;
    // All or nothing: a refused line refused the whole batch; answer with
    // that line's own error (the others only say they went with it).
    if let Some((line, e)) = line_of.iter().zip(&answers).find_map(|(n, a)| match a {
        Err(e) if !matches!(e, coord_engine::writer::WriteError::GroupRefused) => Some((*n, e)),
        _ => None,
    }) {
        let e: ApiError = e.clone().into();
        return Err(e.with("line", line));
    }
    let mut seqs = Vec::with_capacity(answers.len());
    let mut replayed = 0;
    for a in answers {
        let c = a?;
        replayed += u64::from(c.replayed);
        seqs.push(c.seq.unwrap_or(0));
    }
    let status = if replayed as usize == seqs.len() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::CREATED
    };
    Ok(crate::http::json_response(
        status,
        &BatchResponse { seqs, replayed },
    ))
}

pub(crate) enum Cursor {
    Start,
    Now,
    After(u64),
}

pub(crate) fn parse_cursor(v: &str) -> Result<Cursor, ApiError> {
    match v.trim() {
        "start" => Ok(Cursor::Start),
        "now" | "" => Ok(Cursor::Now),
        n => n.parse::<u64>().map(Cursor::After).map_err(|_| {
            ApiError::new(
                ErrorCode::BadCursor,
                format!("cursor {n:?}: expected a seq number, start or now"),
            )
        }),
    }
}

/// For the `query_headers` fuzz target: the events query (`since`,
/// `kinds`, flags, …) of `query`, and `value` as a `Last-Event-ID`, through
/// the handler's own parsers; whether each parsed.
pub(crate) fn parse_query_and_cursor(query: &str, value: &[u8]) -> (bool, bool) {
    use axum::extract::FromRequestParts;
    let parsed_query = axum::http::Request::builder()
        .uri(format!("/v1/events?{query}"))
        .body(())
        .ok()
        .map(|r| r.into_parts().0)
        .is_some_and(|mut parts| {
            let fut = QueryParams::<EventsQuery>::from_request_parts(&mut parts, &());
            // The extractor never waits: poll it once.
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = std::pin::pin!(fut);
            matches!(
                std::future::Future::poll(fut.as_mut(), &mut cx),
                std::task::Poll::Ready(Ok(_))
            )
        });
    let parsed_cursor = std::str::from_utf8(value)
        .ok()
        .is_some_and(|v| parse_cursor(v).is_ok());
    (parsed_query, parsed_cursor)
}

/// `GET /v1/events` query (PROTOCOL §9).
#[derive(serde::Deserialize)]
pub(crate) struct EventsQuery {
    since: Option<String>,
    kinds: Option<String>,
    session: Option<String>,
    resource: Option<String>,
    snapshot: Option<Flag>,
    follow: Option<Flag>,
    log_id: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(("since" = Option<String>, Query, description = "A seq, start or now (default)"), ("kinds" = Option<String>, Query, description = "Comma-separated kind globs"), ("session" = Option<String>, Query, description = "Only events about this session"), ("resource" = Option<String>, Query, description = "Only events about this resource"), ("snapshot" = Option<bool>, Query, description = "First a snapshot of the view"), ("follow" = Option<bool>, Query, description = "false: stop at the head"), ("log_id" = Option<String>, Query, description = "The log the cursor belongs to"), ("Last-Event-ID" = Option<String>, Header, description = "Server-Sent Events: the seq of the last event read, as `since` (a reconnecting EventSource sends it)")), responses((status = 200, description = "The events, one JSON object per line (NDJSON), or Server-Sent Events with Accept: text/event-stream", content((String = "application/x-ndjson"), (String = "text/event-stream")))))]
pub(crate) async fn events<L: EventLog + Clone>(
    State(app): AppState<L>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult {
    let sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::BadCursor,
                        "Last-Event-ID is not visible ASCII: send the seq of the last event read",
                    )
                })?
                .to_string(),
        ),
    };
    let cursor = match last_event_id.or(q.since) {
        Some(v) => parse_cursor(&v)?,
        None => Cursor::Now,
    };
    if let Some(theirs) = q.log_id.as_ref().filter(|v| !v.is_empty()) {
        if *theirs != app.log_id {
            return Err(ApiError::new(
                ErrorCode::LogMismatch,
                format!(
                    "the cursor belongs to log {theirs}, this daemon serves log {}: its seqs mean nothing here; re-sync with since=start (or snapshot=true) and save the new log_id",
                    app.log_id
                ),
            )
            .with("log_id", app.log_id.as_str()));
        }
    }
    let want_snapshot = q.snapshot.is_some_and(|f| f.0);
    let follow = q.follow.is_none_or(|f| f.0);
    let kinds: Vec<String> = q
        .kinds
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // Every event is matched against every glob of every subscriber: the
    // list is bounded so one subscriber cannot make fan-out slow for all.
    if kinds.len() > coord_proto::MAX_KINDS || kinds.iter().any(|k| k.len() > 128) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!(
                "kinds holds {} globs; at most {} of at most 128 bytes each",
                kinds.len(),
                coord_proto::MAX_KINDS
            ),
        )
        .with("field", "kinds")
        .with("limit", coord_proto::MAX_KINDS));
    }
    let filter = app.filters.get(FilterKey {
        kinds,
        session: q.session.filter(|s| !s.is_empty()),
        resource: q
            .resource
            .filter(|s| !s.is_empty())
            .map(|r| ids::normalize_resource(&r)),
    });

    let mut first: Option<String> = None;
    let start = if want_snapshot {
        let snap = take_snapshot(&app).await?;
        first = Some(
            serde_json::to_string(&serde_json::json!({ "snapshot": &snap })).unwrap_or_default(),
        );
        snap.seq
    } else {
        let (oldest, _) = app
            .store
            .bounds()
            .await
            .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?;
        match cursor {
            Cursor::Start => oldest.saturating_sub(1),
            Cursor::Now => app.hub.head(),
            Cursor::After(n) => {
                // Checked before compaction: a cursor past the head (from
                // another log, or u64::MAX) must not read as "compacted".
                let head = app.hub.head();
                if n > head {
                    return Err(ApiError::new(
                        ErrorCode::CursorAhead,
                        format!(
                            "since={n} is past the head of this log (seq {head}, log {}): a mistyped seq, or a cursor saved from another log or before this one was replaced; resume at most from {head}, or re-sync from the start (CLI --since start) or with a snapshot (CLI --snapshot)",
                            app.log_id
                        ),
                    )
                    .with("head_seq", head)
                    .with("log_id", app.log_id.as_str()));
                }
                if n.saturating_add(1) < oldest {
                    return Err(ApiError::new(
                        ErrorCode::Compacted,
                        format!(
                            "events after {n} were compacted; the oldest retained is {oldest}: re-sync with snapshot=true"
                        ),
                    )
                    .with("oldest_seq", oldest));
                }
                n
            }
        }
    };
    let mut log = LogCursor::new(&app.hub, app.store.clone(), start);
    if !follow {
        log = log.until(app.hub.head());
    }
    let sub = Subscription {
        guard: app.hub.subscriber(start),
        shutdown: app.shutdown.watch(),
        log,
        filter,
        done: false,
    };
    let items = |sub: Subscription<L>| {
        futures_util::stream::unfold(sub, |mut sub| async move {
            sub.next_item().await.map(|item| (item, sub))
        })
    };
    if sse {
        // axum frames Server-Sent Events; no keep-alive lines (PROTOCOL §9:
        // the stream sends nothing while there are no events).
        let snapshot = first.map(|json| Event::default().event("snapshot").data(json));
        let events = items(sub).flat_map(|item| {
            let frames: Vec<Event> = match item {
                Item::Events(batch) => batch
                    .iter()
                    .map(|p| {
                        Event::default()
                            .id(p.event.seq.to_string())
                            .event(p.event.kind())
                            .data(String::from_utf8_lossy(&p.json()))
                    })
                    .collect(),
                Item::Error(json) => vec![Event::default().event("error").data(json)],
            };
            futures_util::stream::iter(frames)
        });
        let stream = futures_util::stream::iter(snapshot)
            .chain(events)
            .map(Ok::<_, std::convert::Infallible>);
        return Ok(Sse::new(stream).into_response());
    }
    let first = first.map(|json| Bytes::from(json + "\n"));
    let chunks = items(sub).map(|item| Ok::<_, std::convert::Infallible>(item.into_bytes()));
    let first = first.map(Ok::<_, std::convert::Infallible>);
    let mut resp = Response::new(Body::from_stream(
        futures_util::stream::iter(first).chain(chunks),
    ));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Ok(resp)
}

/// What a subscription yields: matching events (never an empty batch), or
/// the error line that ends the stream.
pub(crate) enum Item {
    Events(Vec<Arc<Published>>),
    Error(String),
}

impl Item {
    /// Its NDJSON lines, as sent.
    fn into_bytes(self) -> Bytes {
        match self {
            // The common live case, one event: the shared line itself, no
            // copy.
            Item::Events(batch) if batch.len() == 1 => batch[0].line.clone(),
            Item::Events(batch) => {
                let mut buf = BytesMut::new();
                for p in &batch {
                    buf.put_slice(&p.line);
                }
                buf.freeze()
            }
            Item::Error(json) => Bytes::from(json + "\n"),
        }
    }
}

/// One open events stream: a cursor and a filter; it holds at most one
/// batch at a time and reads only when the client has taken the last.
pub(crate) struct Subscription<L> {
    guard: coord_engine::hub::SubscriberGuard,
    /// Polled on every wake-up, so a [`crate::stop::StopWatch`], not the
    /// token's own future.
    shutdown: crate::stop::StopWatch,
    log: LogCursor<L>,
    filter: Arc<Filter>,
    done: bool,
}

impl<L: EventLog + Clone> Subscription<L> {
    async fn next_item(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        loop {
            let next = tokio::select! {
                r = self.log.next() => r,
                _ = &mut self.shutdown => return None,
            };
            match next {
                Ok(None) => return None,
                Ok(Some(mut batch)) => {
                    self.guard.read_up_to(self.log.position());
                    batch.retain(|p| self.filter.matches(p));
                    if !batch.is_empty() {
                        return Some(Item::Events(batch));
                    }
                }
                Err(e) => {
                    self.done = true;
                    let msg = match &e {
                        HubError::Compacted { oldest } => format!(
                            "the subscriber fell behind retention at seq {}; the oldest retained is {oldest}: re-sync with snapshot=true",
                            self.log.position()
                        ),
                        HubError::Store(s) => s.clone(),
                    };
                    let mut body = coord_proto::ErrorBody::new(e.code(), msg);
                    if let HubError::Compacted { oldest } = e {
                        body = body.with("oldest_seq", oldest);
                    }
                    return Some(Item::Error(
                        serde_json::to_string(&body).unwrap_or_default(),
                    ));
                }
            }
        }
    }
}
