//! `coord mcp`: an MCP server over stdio (rmcp) that is one coord session.
//!
//! The server process is the session: it registers when it starts (or
//! adopts `COORD_SESSION`/`COORD_SESSION_TOKEN` when it runs under `coord
//! session run`), with its own pid so the daemon watches it, renews the
//! lease while it runs, and ends the session when the client closes stdin.
//! Every tool is one call of the typed client; a refusal is a tool error
//! whose text says why and what to do. The inbox and the session's orders
//! are resources (`coord://inbox`, `coord://orders`); a subscribed client
//! gets `notifications/resources/updated` when the log delivers mail or an
//! order, pushed from a follow of the event stream, never polled.

use anyhow::{Context, Result};
use clap::Args;
use coord_client::{Client, ClientError};
use coord_proto::api::*;
use coord_proto::LockMode;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{
    schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `coord mcp`.
#[derive(Args, Debug)]
pub(crate) struct McpArgs {
    /// Session id to register [default: mcp-PID].
    #[arg(long)]
    id: Option<String>,
    /// Role of the session.
    #[arg(long, env = "COORD_ROLE", default_value = "agent")]
    role: String,
    /// Task of the session.
    #[arg(long, env = "COORD_TASK", default_value = "")]
    task: String,
    /// Parent session: this one joins its pod and `report` goes to it.
    #[arg(long)]
    parent: Option<String>,
    /// Lease length; renewed every third of it while the client is connected.
    #[arg(long, default_value = "30s", value_parser = crate::args::duration)]
    ttl: Duration,
}

const INBOX: &str = "coord://inbox";
const ORDERS: &str = "coord://orders";

/// The MCP server: a client acting for one session.
#[derive(Clone)]
pub(super) struct CoordMcp {
    pub(super) client: Client,
    pub(super) session: String,
    subscribed: Arc<Mutex<BTreeSet<String>>>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct LockArgs {
    /// The resource: a path relative to the repository root, a name, or a
    /// pattern such as `src/**`.
    resource: String,
    /// Take it shared (readers) instead of exclusive.
    #[serde(default, deserialize_with = "super::mcp_args::flag")]
    #[schemars(schema_with = "super::mcp_args::flag_schema")]
    shared: bool,
    /// Wait in the queue this many ms for it (0: answer at once).
    #[serde(default, deserialize_with = "super::mcp_args::count")]
    #[schemars(schema_with = "super::mcp_args::count_schema")]
    wait_ms: u64,
    /// Release it automatically this many ms after the grant.
    #[serde(default, deserialize_with = "super::mcp_args::some_count")]
    #[schemars(schema_with = "super::mcp_args::count_schema")]
    ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ResourceArgs {
    /// The resource (or pattern) to release.
    resource: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SendArgs {
    /// The recipient session id.
    to: String,
    /// The message text.
    body: String,
    /// A message kind (default `message`).
    #[serde(default)]
    #[schemars(with = "String")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct InboxArgs {
    /// Also ack (and so delete) every message returned.
    #[serde(default, deserialize_with = "super::mcp_args::flag")]
    #[schemars(schema_with = "super::mcp_args::flag_schema")]
    ack: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct MsgArgs {
    /// The message id (from `inbox`).
    msg_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct OrderArgs {
    /// The dispatch order id.
    order_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CompleteArgs {
    /// The dispatch order id.
    order_id: String,
    /// What came of it (any JSON).
    #[serde(default)]
    #[schemars(with = "Value")]
    result: Option<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct WaitArgs {
    /// How long to wait for an order, ms.
    #[serde(deserialize_with = "super::mcp_args::count")]
    #[schemars(schema_with = "super::mcp_args::count_schema")]
    wait_ms: u64,
}

/// What a report says.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ReportKindArg {
    /// A turn ended; the session waits for its next instruction.
    TurnEnded,
    /// Something went wrong (say what in `message`).
    Errored,
    /// The session is shutting down.
    ShutDown,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ReportArgs {
    /// turn_ended, errored or shut_down.
    kind: ReportKindArg,
    /// What went wrong (required for errored).
    #[serde(default)]
    #[schemars(with = "String")]
    message: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EventsArgs {
    /// Start after this seq (default: the last `limit` events).
    #[serde(default, deserialize_with = "super::mcp_args::some_count")]
    #[schemars(schema_with = "super::mcp_args::count_schema")]
    since: Option<u64>,
    /// Comma-separated kinds or globs, e.g. `lock.*,inbox.deliver`.
    #[serde(default)]
    #[schemars(with = "String")]
    kinds: Option<String>,
    /// Most events returned (default 50, at most 1000).
    #[serde(default, deserialize_with = "super::mcp_args::some_count")]
    #[schemars(schema_with = "super::mcp_args::count_schema")]
    limit: Option<u64>,
}

/// A tool's answer: words for the model and the same facts as JSON.
fn done(words: String, data: Value) -> CallToolResult {
    let mut r = CallToolResult::structured(data);
    r.content = vec![ContentBlock::text(words)];
    r
}

/// The answer to a tool call: `words` about what the daemon answered (and
/// the answer itself as structured content), or the refusal.
pub(super) fn reply<T: serde::Serialize>(
    answer: Result<T, ClientError>,
    words: impl FnOnce(&T) -> String,
) -> Result<CallToolResult, ErrorData> {
    Ok(match answer {
        Ok(v) => done(words(&v), to_value(&v)),
        Err(e) => refused(e),
    })
}

/// A refusal: the daemon's reason and what to do about it.
fn refused(e: ClientError) -> CallToolResult {
    let hint = match e.code() {
        Some(coord_proto::ErrorCode::LockHeld) => {
            " Wait for it with wait_ms, work on something else, or ask the holder with `send`."
        }
        Some(coord_proto::ErrorCode::Timeout) => {
            " It is still held; try again later or wait longer."
        }
        Some(coord_proto::ErrorCode::SessionNotFound) => {
            " The session is not live; list live sessions with `session_list`."
        }
        _ => "",
    };
    let body = match &e {
        ClientError::Api { body, .. } => serde_json::to_value(body).unwrap_or(Value::Null),
        _ => json!({"error": {"code": "unreachable", "message": e.to_string()}}),
    };
    let mut r = CallToolResult::structured_error(body);
    r.content = vec![ContentBlock::text(format!("{e}.{hint}"))];
    r
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[tool_router]
impl CoordMcp {
    #[tool(
        description = "Show this session's id and the coord daemon's state (log head, sessions, locks)."
    )]
    async fn status(&self) -> Result<CallToolResult, ErrorData> {
        Ok(match self.client.status().await {
            Ok(s) => done(
                format!(
                    "You are session {}. coord {}: log head seq {}, {} sessions, {} locks.",
                    self.session, s.version, s.head_seq, s.sessions, s.locks
                ),
                json!({"session_id": self.session, "status": to_value(&s)}),
            ),
            Err(e) => refused(e),
        })
    }

    #[tool(
        description = "List live sessions: id, state, role and task (the structured answer adds leases and what each waits for)."
    )]
    async fn session_list(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.client.sessions().await, |s| {
            let words = s
                .sessions
                .iter()
                .map(|x| {
                    format!(
                        "{} ({}, role {:?}, task {:?})",
                        x.session_id,
                        x.state.as_str(),
                        x.role,
                        x.task
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("{} live sessions: {words}", s.sessions.len())
        })
    }

    #[tool(
        description = "Take a lock on a file, name or pattern (src/**) before editing it; exclusive unless shared. Returns a fencing token."
    )]
    async fn lock_acquire(
        &self,
        Parameters(a): Parameters<LockArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = AcquireRequest {
            session_id: self.session.clone(),
            resource: coord_proto::ids::normalize_resource(&a.resource),
            mode: if a.shared {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            },
            ttl_ms: a.ttl_ms,
            wait_ms: a.wait_ms,
            ..Default::default()
        };
        reply(self.client.acquire(&req).await.map(|a| a.body), |r| {
            format!(
                "You hold {} ({}, fencing token {}).",
                r.resource,
                r.mode.as_str(),
                r.fencing_token
            )
        })
    }

    #[tool(description = "Release a lock you hold.")]
    async fn lock_release(
        &self,
        Parameters(a): Parameters<ResourceArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let resource = coord_proto::ids::normalize_resource(&a.resource);
        let req = ReleaseRequest {
            session_id: self.session.clone(),
            resource: resource.clone(),
            ..Default::default()
        };
        reply(self.client.release(&req).await.map(|a| a.body), |_| {
            format!("Released {resource}.")
        })
    }

    #[tool(
        description = "List held and awaited locks: resource, mode, holders (with since when) and the queue."
    )]
    async fn lock_list(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.client.locks().await, |l| {
            let words = l
                .locks
                .iter()
                .map(|x| {
                    let who: Vec<&str> = x.holders.iter().map(|h| h.session_id.as_str()).collect();
                    format!(
                        "{} ({}) held by {}",
                        x.resource,
                        x.mode.as_str(),
                        who.join(", ")
                    )
                })
                .collect::<Vec<_>>();
            if words.is_empty() {
                "No locks are held.".into()
            } else {
                words.join("; ")
            }
        })
    }

    #[tool(description = "Send a message to another session's inbox.")]
    async fn send(&self, Parameters(a): Parameters<SendArgs>) -> Result<CallToolResult, ErrorData> {
        let req = SendRequest {
            from_session: Some(self.session.clone()),
            kind: a.kind,
            body: a.body,
            ..Default::default()
        };
        reply(
            self.client.send_message(&a.to, &req).await.map(|a| a.body),
            |r| format!("Sent {} to {}.", r.msg_id, a.to),
        )
    }

    #[tool(
        description = "Read your unacked messages (bodies included); with ack=true also acknowledge them."
    )]
    async fn inbox(
        &self,
        Parameters(a): Parameters<InboxArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.read_inbox(a.ack).await {
            Ok((words, v)) => done(words, v),
            Err(e) => refused(e),
        })
    }

    #[tool(description = "Acknowledge (and delete) one message from your inbox.")]
    async fn inbox_ack(
        &self,
        Parameters(a): Parameters<MsgArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.client
                .ack_message(&self.session, &a.msg_id)
                .await
                .map(|a| a.body),
            |_| format!("Acked {}.", a.msg_id),
        )
    }

    #[tool(description = "List the dispatch orders assigned to you that are not complete.")]
    async fn dispatch_list(&self) -> Result<CallToolResult, ErrorData> {
        reply(self.client.orders(Some(&self.session), None).await, |o| {
            format!("{} open orders for you.", o.orders.len())
        })
    }

    #[tool(description = "Take (acknowledge) a dispatch order assigned to you.")]
    async fn dispatch_ack(
        &self,
        Parameters(a): Parameters<OrderArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.client.ack_order(&a.order_id).await.map(|a| a.body),
            |_| format!("You took order {}.", a.order_id),
        )
    }

    #[tool(description = "Complete a dispatch order you took, with an optional result.")]
    async fn dispatch_complete(
        &self,
        Parameters(a): Parameters<CompleteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = coord_proto::api::CompleteRequest {
            result: a.result,
            ..Default::default()
        };
        reply(
            self.client
                .complete_order(&a.order_id, &req)
                .await
                .map(|a| a.body),
            |_| format!("Completed order {}.", a.order_id),
        )
    }

    #[tool(description = "Wait up to wait_ms for the next dispatch order assigned to you.")]
    async fn dispatch_wait(
        &self,
        Parameters(a): Parameters<WaitArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            self.client.next_order(&self.session, a.wait_ms).await,
            |o| format!("Order {} ({}) is yours.", o.order_id, o.ticket),
        )
    }

    #[tool(
        description = "Report to your parent session (the one that started you): turn_ended, errored (with a message) or shut_down."
    )]
    async fn report(
        &self,
        Parameters(a): Parameters<ReportArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let report = match a.kind {
            ReportKindArg::TurnEnded => coord_proto::Report::TurnEnded,
            ReportKindArg::ShutDown => coord_proto::Report::ShutDown,
            ReportKindArg::Errored => coord_proto::Report::Errored {
                message: a.message.unwrap_or_else(|| "unspecified error".into()),
            },
        };
        let kind = report.kind();
        let req = ReportRequest {
            parent_session: None,
            report,
            tx_id: Some(ulid::Ulid::new()),
            ts: None,
        };
        reply(
            self.client
                .report(&self.session, &req)
                .await
                .map(|a| a.body),
            |_| format!("Reported {kind} to your parent."),
        )
    }

    #[tool(
        description = "Read events from the coord log (after seq `since`, filtered by kinds), oldest first."
    )]
    async fn events(
        &self,
        Parameters(a): Parameters<EventsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = usize::try_from(a.limit.unwrap_or(50).clamp(1, 1000)).unwrap_or(50);
        let since = match a.since {
            Some(s) => s,
            None => match self.client.status().await {
                Ok(s) => s.head_seq.saturating_sub(limit as u64),
                Err(e) => return Ok(refused(e)),
            },
        };
        let q = EventsQuery {
            since: Some(since.to_string()),
            kinds: a.kinds,
            follow: Some(false),
            ..Default::default()
        };
        let mut stream = match self.client.events(&q).await {
            Ok(s) => s,
            Err(e) => return Ok(refused(e)),
        };
        let mut events = Vec::new();
        let mut words = Vec::new();
        while events.len() < limit {
            match stream.next().await {
                Ok(Some(line)) => match line.item {
                    Ok(StreamItem::Event(e)) => {
                        words.push(coord_proto::render_event(&e));
                        events.push(to_value(&e));
                    }
                    Ok(_) => {}
                    Err(body) => {
                        return Ok(refused(ClientError::Api { status: 409, body }));
                    }
                },
                Ok(None) => break,
                Err(e) => return Ok(refused(e)),
            }
        }
        Ok(done(
            if words.is_empty() {
                "No events.".into()
            } else {
                words.join("\n")
            },
            json!({"events": events}),
        ))
    }
}

impl CoordMcp {
    async fn read_inbox(&self, ack: bool) -> Result<(String, Value), ClientError> {
        let list = self.client.inbox(&self.session).await?;
        let mut out = Vec::new();
        let mut words = Vec::new();
        for m in &list.messages {
            let full = self.client.read_message(&self.session, &m.msg_id).await?;
            words.push(format!(
                "{} from {}: {}",
                m.msg_id,
                m.from_session.as_deref().unwrap_or("-"),
                full.body.as_deref().unwrap_or("")
            ));
            if ack {
                self.client.ack_message(&self.session, &m.msg_id).await?;
            }
            out.push(to_value(&full));
        }
        let words = if words.is_empty() {
            "Your inbox is empty.".to_string()
        } else {
            words.join("\n")
        };
        Ok((words, json!({"messages": out, "acked": ack})))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CoordMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("coord", env!("CARGO_PKG_VERSION")))
        .with_instructions(format!(
            "coord coordinates agent sessions on this machine. You are session {}. Take a lock \
             (lock_acquire) before editing shared files and release it when done; read your \
             inbox and orders (subscribe to coord://inbox and coord://orders to be told of new ones).",
            self.session
        ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(INBOX, "inbox")
                .with_description("this session's unread messages")
                .with_mime_type("application/json"),
            Resource::new(ORDERS, "orders")
                .with_description("the dispatch orders assigned to this session")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = match request.uri.as_str() {
            INBOX => self
                .read_inbox(false)
                .await
                .map(|(_, v)| v)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
            ORDERS => self
                .client
                .orders(Some(&self.session), None)
                .await
                .map(|o| to_value(&o))
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
            other => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {other}; there are {INBOX} and {ORDERS}"),
                    None,
                ))
            }
        };
        Ok(
            ReadResourceResult::new(vec![ResourceContents::text(text.to_string(), request.uri)
                .with_mime_type("application/json")])
            .into(),
        )
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if request.uri != INBOX && request.uri != ORDERS {
            return Err(ErrorData::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            ));
        }
        if let Ok(mut s) = self.subscribed.lock() {
            s.insert(request.uri);
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut s) = self.subscribed.lock() {
            s.remove(&request.uri);
        }
        Ok(())
    }
}

/// Runs `coord mcp` until the client closes stdin.
pub(crate) async fn mcp(base: &Client, args: McpArgs) -> Result<ExitCode> {
    let adopted = match (
        std::env::var("COORD_SESSION")
            .ok()
            .filter(|s| !s.is_empty()),
        std::env::var("COORD_SESSION_TOKEN")
            .ok()
            .filter(|s| !s.is_empty()),
    ) {
        (Some(id), Some(token)) => Some((id, token)),
        _ => None,
    };
    let owned = adopted.is_none();
    let (session, token) = match adopted {
        Some(x) => x,
        None => {
            let id = args
                .id
                .unwrap_or_else(|| format!("mcp-{}", std::process::id()));
            let r = base
                .register(&RegisterRequest {
                    session_id: id.clone(),
                    role: args.role,
                    task: args.task,
                    pid: Some(std::process::id()),
                    parent_session: args.parent,
                    ttl_ms: Some(args.ttl.as_millis() as u64),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("registering session {id}"))?;
            (id, r.body.token)
        }
    };
    let client = base.clone().with_token(Some(token));
    let server = CoordMcp {
        client: client.clone(),
        session: session.clone(),
        subscribed: Arc::new(Mutex::new(BTreeSet::new())),
        tool_router: CoordMcp::tool_router() + CoordMcp::approvals_router(),
    };
    let subscribed = server.subscribed.clone();
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP server on stdio")?;
    let peer = running.peer().clone();

    // Keep the lease while the client is connected.
    let renew = {
        let (c, id) = (client.clone(), session.clone());
        let every = (args.ttl / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = c.heartbeat(&id, &HeartbeatRequest::default()).await;
            }
        })
    };
    // Push: follow the log for this session's mail and orders.
    let push = {
        let (c, id) = (client.clone(), session.clone());
        tokio::spawn(async move {
            let mut backoff =
                coord_client::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            let mut since = c.status().await.map(|s| s.head_seq).unwrap_or(0);
            loop {
                let q = EventsQuery {
                    since: Some(since.to_string()),
                    kinds: Some(
                        "inbox.deliver,dispatch.issue,dispatch.reassign,dispatch.cancel".into(),
                    ),
                    // The daemon sends only events naming this session;
                    // the payload check below tells recipient from sender.
                    session: Some(id.clone()),
                    follow: Some(true),
                    ..Default::default()
                };
                if let Ok(mut stream) = c.events(&q).await {
                    backoff.reset();
                    while let Ok(Some(line)) = stream.next().await {
                        let Ok(StreamItem::Event(e)) = line.item else {
                            continue;
                        };
                        since = e.seq;
                        let v = to_value(&e);
                        let p = &v["payload"];
                        let uri = if p["to_session"] == id.as_str() {
                            INBOX
                        } else if p["assignee"] == id.as_str() || p["from_assignee"] == id.as_str()
                        {
                            // An order came, went (reassigned away) or was
                            // withdrawn.
                            ORDERS
                        } else {
                            continue;
                        };
                        let wanted = subscribed.lock().map(|s| s.contains(uri)).unwrap_or(false);
                        if wanted {
                            let _ = peer
                                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                                .await;
                        }
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        })
    };

    let _ = running.waiting().await;
    renew.abort();
    push.abort();
    if owned {
        let _ = client.dereg(&session, &DeregRequest::default()).await;
    }
    Ok(ExitCode::SUCCESS)
}
