//! The HTTP contract as OpenAPI 3.1, generated from the handlers'
//! `#[utoipa::path]` annotations and the wire types' schemas, served at
//! `GET /v1/openapi.json` and checked in as `docs/openapi.json` (a test
//! fails when the two differ).
//!
//! Every operation documents every error status with the codes that
//! carry it (PROTOCOL §3): the daemon may answer any of them (a bad body,
//! a full disk, a shutdown) and a client must be able to read each.

use super::*;
use coord_proto::view::{EndedSession, Holder, Lease, Lock, Message, Order, Session, View};
use coord_proto::{ErrorBody, ErrorDetail, LifeState, OnExpiry};
use std::collections::BTreeMap;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coord",
        description = "The coord daemon's API: sessions, leases, locks with fencing tokens, inboxes, dispatch orders and the totally ordered event log (docs/PROTOCOL.md). HTTP/1.1 with JSON bodies over a Unix socket; every answer carries Coord-Protocol, Coord-Version and Coord-Log-Id.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        status::status,
        status::snapshot,
        status::export_legacy,
        status::ui_login,
        status::ui_revoke,
        events::custom_batch,
        status::metrics,
        openapi_json,
        sessions::register,
        sessions::list_sessions,
        sessions::get_session,
        sessions::heartbeat,
        sessions::dereg,
        pods::report,
        pods::delegate,
        locks::list_locks,
        locks::acquire,
        locks::release,
        locks::check_lock,
        inbox::send,
        inbox::inbox_list,
        inbox::inbox_read,
        inbox::inbox_ack,
        dispatch::issue,
        dispatch::list_orders,
        dispatch::dispatch_next,
        dispatch::get_order,
        dispatch::order_ack,
        dispatch::order_complete,
        dispatch::order_cancel,
        dispatch::order_reassign,
        approvals::ask,
        approvals::list,
        approvals::show,
        approvals::wait,
        approvals::decide,
        approvals::withdraw,
        events::custom_event,
        events::events,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Session, Lease, EndedSession, Lock, Holder, Message, Order, View,
        LifeState, OnExpiry, coord_proto::approval::Approval, coord_proto::approval::Decided,
        coord_proto::approval::Decision
    )),
    modifiers(&Contract),
    tags(
        (name = "status", description = "The daemon, its log and its view"),
        (name = "sessions", description = "Sessions and their leases"),
        (name = "pods", description = "Reports to parents and delegated scopes"),
        (name = "locks", description = "Locks, waits and fencing tokens"),
        (name = "inbox", description = "Messages between sessions"),
        (name = "dispatch", description = "Dispatch orders"),
        (name = "approvals", description = "One queue for the fleet's permission prompts"),
        (name = "events", description = "The event log: follow it, publish x.* events"),
    )
)]
struct ApiDoc;

/// Adds what the annotations cannot say once for all: the version, the
/// security schemes, and the error answers of every operation.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.version = VERSION.to_string();
        doc.info.license = Some(
            utoipa::openapi::LicenseBuilder::new()
                .name("MIT OR Apache-2.0")
                .identifier(Some("MIT OR Apache-2.0"))
                .build(),
        );
        doc.servers = Some(vec![utoipa::openapi::ServerBuilder::new()
            .url("http://coord")
            .description(Some(
                "The daemon's Unix socket (curl --unix-socket SOCKET http://coord/…); with --http ADDR the same API over TCP at http://ADDR",
            ))
            .build()]);
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "viewer_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Over TCP (--http) only: a dashboard login's viewer secret (Authorization: Bearer); reads only",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "viewer_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "coord_view",
                "Over TCP (--http) only: the cookie a `coord ui` login link sets; reads only",
            ))),
        );
        components.add_security_scheme(
            "session_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The session's token (Authorization: Bearer)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Coord-Admin-Token",
                "The admin token the daemon writes beside its socket",
            ))),
        );
        let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for code in ErrorCode::ALL {
            by_status
                .entry(code.status())
                .or_default()
                .push(code.as_str());
        }
        for (status, codes) in &by_status {
            components.responses.insert(
                format!("Error{status}"),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(format!("Error: {}", codes.join(", ")))
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                    "ErrorBody",
                                ))))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let path = path.clone();
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for (method, op) in ["get", "post", "put", "delete", "patch"]
                .into_iter()
                .zip(ops)
                .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
            {
                let text = op.summary.as_deref().or(op.description.as_deref());
                op.summary = Some(summary_of(text, method, &path));
                op.security = Some(security_of(method, &path, op.security.as_deref()));
                for status in by_status.keys() {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert(RefOr::Ref(utoipa::openapi::Ref::from_response_name(
                            format!("Error{status}"),
                        )));
                }
            }
        }
    }
}

/// Writes that may act for a session or for nobody: a `session_id` in the
/// body needs that session's token, an anonymous one needs none.
const TOKEN_OPTIONAL: &[(&str, &str)] = &[
    ("post", "/v1/inbox/{id}"),
    ("post", "/v1/dispatch"),
    ("post", "/v1/events"),
    ("post", "/v1/events/batch"),
];

/// An operation's summary, one line: the first sentence of its doc text
/// (`summary`, else `description`) without a leading "`METHOD path`:",
/// else its method and path.
fn summary_of(text: Option<&str>, method: &str, path: &str) -> String {
    let plain = format!("{} {path}", method.to_ascii_uppercase());
    let Some(text) = text else { return plain };
    let joined = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('`', "");
    let rest = joined
        .strip_prefix(&plain)
        .map(|r| r.trim_start_matches([':', ' ']))
        .unwrap_or(&joined);
    let first = rest
        .split(". ")
        .next()
        .unwrap_or(rest)
        .trim_end_matches('.');
    let mut chars = first.chars();
    match chars.next() {
        Some(c) if first.len() <= 100 => c.to_uppercase().chain(chars).collect(),
        _ => plain,
    }
}

/// Who may call an operation, on the socket (the peer's uid is the
/// credential: no scheme, `{}`) and over TCP (PROTOCOL §13: reads with a
/// viewer login or the admin token, writes with the admin token), with
/// the session token where the call acts for a session.
fn security_of(
    method: &str,
    path: &str,
    annotated: Option<&[SecurityRequirement]>,
) -> Vec<SecurityRequirement> {
    let annotated = |name: &str| {
        annotated.is_some_and(|a| {
            serde_json::to_value(a).is_ok_and(|v| v.to_string().contains(&format!("\"{name}\"")))
        })
    };
    let none = SecurityRequirement::default;
    let one = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
    let session_over_tcp = || one("session_token").add("admin_token", Vec::<String>::new());
    if annotated("admin_token") {
        vec![one("admin_token")]
    } else if TOKEN_OPTIONAL.contains(&(method, path)) {
        vec![
            none(),
            one("session_token"),
            one("admin_token"),
            session_over_tcp(),
        ]
    } else if annotated("session_token") {
        vec![one("session_token"), session_over_tcp()]
    } else if method == "get" {
        vec![
            none(),
            one("viewer_cookie"),
            one("viewer_token"),
            one("admin_token"),
        ]
    } else {
        vec![none(), one("admin_token")]
    }
}

/// The document: built once per router ([`super::router`]), which serves
/// it from then on.
pub(crate) fn document() -> String {
    let mut doc = match serde_json::to_value(ApiDoc::openapi()) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\":\"{e}\"}}\n"),
    };
    flatten_report_request(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
}

/// `ReportRequest` as the one flat object it is on the wire: the report's
/// fields (`kind` and what each kind carries) beside the request's own.
/// The derived form, an `allOf` of the `Report` `oneOf` and an object, is
/// the same set of bodies, but typed clients (openapi-python-client)
/// cannot take an `allOf` of a `oneOf`.
fn flatten_report_request(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    let Some(variants) = schemas["Report"]["oneOf"].as_array().cloned() else {
        return;
    };
    let mut props = serde_json::Map::new();
    let mut kinds = Vec::new();
    for v in &variants {
        let Some(p) = v["properties"].as_object() else {
            continue;
        };
        for (name, schema) in p {
            if name == "kind" {
                kinds.extend(schema["enum"].as_array().cloned().unwrap_or_default());
            } else {
                props.entry(name.clone()).or_insert_with(|| schema.clone());
            }
        }
    }
    props.insert(
        "kind".into(),
        serde_json::json!({"type": "string", "enum": kinds, "description": "What happened; the fields each kind carries are in PROTOCOL §6.2."}),
    );
    let request = &mut schemas["ReportRequest"];
    let own = request["allOf"]
        .as_array()
        .and_then(|parts| {
            parts
                .iter()
                .find_map(|p| p["properties"].as_object().cloned())
        })
        .unwrap_or_default();
    props.extend(own);
    let description = request["description"].clone();
    // Nothing else names the report's own schema.
    if let Some(all) = schemas.as_object_mut() {
        all.remove("Report");
    }
    let request = &mut doc["components"]["schemas"]["ReportRequest"];
    *request = serde_json::json!({
        "type": "object",
        "description": description,
        "required": ["kind"],
        "properties": props,
    });
}

/// The document as the router built it, handed to [`openapi_json`].
#[derive(Clone)]
pub(crate) struct Document(pub(crate) bytes::Bytes);

/// `GET /v1/openapi.json`: this contract.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "status", responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json(axum::Extension(doc): axum::Extension<Document>) -> Response {
    let mut resp = Response::new(Body::from(doc.0));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is this document. After changing the API,
    /// regenerate it with `COORD_WRITE_OPENAPI=1 cargo test -p
    /// coord-daemon openapi`.
    #[test]
    fn the_checked_in_openapi_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var("COORD_WRITE_OPENAPI").as_deref() == Ok("1") {
            std::fs::write(&path, document()).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == document(),
            "docs/openapi.json differs from the generated contract; regenerate it with COORD_WRITE_OPENAPI=1 cargo test -p coord-daemon openapi"
        );
    }

    #[test]
    fn every_error_code_is_a_documented_response_of_every_operation() {
        let doc: serde_json::Value = serde_json::from_str(&document()).expect("json");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 23, "{} paths", paths.len());
        let responses = &doc["components"]["responses"];
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("item") {
                for code in ErrorCode::ALL {
                    let status = code.status().to_string();
                    let r = &op["responses"][&status];
                    let r = match r["$ref"].as_str() {
                        Some(at) => &responses[at.rsplit('/').next().unwrap_or_default()],
                        None => r,
                    };
                    assert!(
                        r["description"]
                            .as_str()
                            .is_some_and(|d| d.contains(code.as_str())),
                        "{method} {path} does not document {code}"
                    );
                }
            }
        }
    }
}
