//! The web dashboard: the API and one embedded page over HTTP/TCP, only
//! when `coord daemon --http ADDR` asks (PROTOCOL §13).
//!
//! Over TCP the Unix socket's peer check is gone, so every request must
//! carry a credential, and a browser must not be turned against the
//! daemon:
//!
//! * **Host check.** The `Host` header must name the address served (or
//!   `localhost` / `127.0.0.1` / `[::1]` with its port): a page on another
//!   name that resolves to us (DNS rebinding) is refused `403
//!   host_not_allowed`.
//! * **Credentials.** The admin token (`Coord-Admin-Token` header) or the
//!   viewer secret, as the HttpOnly, SameSite=Strict cookie `coord_view`
//!   that `/login?token=…` sets from a one-time login token (`coord ui`
//!   asks for one over the socket), or as `Authorization: Bearer`. None:
//!   `401 token_required`; a wrong one: `403 bad_token`.
//! * **Writes need the admin token in a header.** A cookie (or the viewer
//!   secret) only reads: a cross-site form or a script on another page
//!   cannot write (no CSRF), and a viewer cannot either.
//! * **One exception: an approver decides approvals.** A login made with
//!   `coord ui --approver` may `POST /v1/approvals/{id}/decide` when the
//!   request also carries its CSRF secret in `Coord-Csrf`, which only a
//!   page of this origin can read (`GET /v1/ui/me`; no CORS). The guard
//!   then hands the handler who decided and from where
//!   ([`crate::api::approvals::WebDecider`]), never the client.
//!
//! It owns the TCP listener, the login tokens and the page; it must not
//! change what the API does: requests that pass the guard go to the same
//! router as on the socket.

use crate::api::approvals::WebDecider;
use crate::app::App;
use crate::http::ApiError;
pub use crate::web_auth::{Login, WebAuth, WebRole};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use coord_engine::tokens;
use coord_proto::ErrorCode;
use coord_store::EventLog;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The page, its script and its style, embedded: no build step, no CDN;
/// works offline. Script and style are files of their own so the page's
/// Content-Security-Policy allows no inline script or style at all.
const PAGE: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// The page's policy: its own script, style and API only; no inline code,
/// no frames, no forms, no `<base>`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Who a request is.
#[derive(Debug, Clone)]
enum Who {
    /// The admin token, in a header: may read and write.
    Admin,
    /// A login's secret, in a header or the cookie: reads (an approver
    /// also decides, with its CSRF secret).
    Login(Login),
}

/// The TCP peer of a dashboard connection.
#[derive(Debug, Clone, Copy)]
struct Peer(std::net::SocketAddr);

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn who<L>(app: &App<L>, auth: &WebAuth, headers: &HeaderMap) -> Result<Who, ApiError> {
    let admin = headers
        .get("coord-admin-token")
        .and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let jar = cookie(headers, "coord_view");
    if admin.is_none() && bearer.is_none() && jar.is_none() {
        return Err(ApiError::new(
            ErrorCode::TokenRequired,
            "this dashboard needs a token: open the URL `coord ui` prints, or send Coord-Admin-Token",
        ));
    }
    if let Some(a) = admin {
        return if tokens::same(a, &app.admin_token) {
            Ok(Who::Admin)
        } else {
            Err(ApiError::new(ErrorCode::BadToken, "wrong admin token"))
        };
    }
    if let Some(b) = bearer {
        return if let Some(l) = auth.login(b) {
            Ok(Who::Login(l))
        } else if tokens::same(b, &app.admin_token) {
            Ok(Who::Admin)
        } else {
            Err(ApiError::new(ErrorCode::BadToken, "wrong token"))
        };
    }
    match jar.and_then(|c| auth.login(c)) {
        Some(l) => Ok(Who::Login(l)),
        None => Err(ApiError::new(
            ErrorCode::BadToken,
            "the login cookie is not a live login of this daemon (revoked, or the daemon restarted): open a new `coord ui` URL",
        )),
    }
}

/// Host check, credentials and the write rule, before any route.
async fn guard<L: EventLog + Clone>(
    State((app, auth)): State<(Arc<App<L>>, Arc<WebAuth>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // An absolute-form target names the host itself, and then it is the
    // one that counts (RFC 9112 §3.2.2): both must name this daemon.
    let header_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let target_host = req.uri().authority().map(|a| a.as_str());
    let host = target_host.or(header_host);
    if !auth.host_ok(header_host) || target_host.is_some_and(|t| !auth.host_ok(Some(t))) {
        return ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "Host {:?} is not an address this daemon serves ({})",
                host.unwrap_or(""),
                auth.addr
            ),
        )
        .into_response();
    }
    if req.uri().path() == "/login" {
        return next.run(req).await;
    }
    let who = match who(&app, &auth, req.headers()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or_else(|| "?".to_string(), |p| p.0.to_string());
    let mut req = req;
    match who {
        Who::Admin => {
            req.extensions_mut().insert(WebDecider {
                by: "admin".into(),
                via: format!("web admin from {peer}"),
            });
        }
        Who::Login(_) if reads => {}
        Who::Login(l) => {
            let csrf = req
                .headers()
                .get("coord-csrf")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let deciding = *req.method() == Method::POST && is_decide(req.uri().path());
            if !(deciding
                && l.role == WebRole::Approver
                && !csrf.is_empty()
                && tokens::same(csrf, &l.csrf))
            {
                app.metrics.web_refused.inc();
                return ApiError::new(
                    ErrorCode::AdminRequired,
                    "over HTTP a write needs the admin token in the Coord-Admin-Token header; a login only reads, and an approver login decides approvals only with its Coord-Csrf secret",
                )
                .into_response();
            }
            req.extensions_mut().insert(WebDecider {
                by: l.name.clone(),
                via: format!("web {} from {peer}", l.viewer),
            });
        }
    }
    next.run(req).await
}

/// `/v1/approvals/{id}/decide`.
fn is_decide(path: &str) -> bool {
    path.strip_prefix("/v1/approvals/")
        .and_then(|rest| rest.strip_suffix("/decide"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// `GET /v1/ui/me`: the login the request carries (its role, name and
/// CSRF secret), for the page; the admin token is `admin`.
async fn me(State(auth): State<Arc<WebAuth>>, headers: HeaderMap) -> Response {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| cookie(&headers, "coord_view"));
    match secret.and_then(|s| auth.login(s)) {
        Some(l) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!(l)),
        )
            .into_response(),
        None => axum::Json(serde_json::json!({"role": "admin"})).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    token: String,
}

async fn login(State(auth): State<Arc<WebAuth>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(secret) = auth.redeem(&q.token) else {
        return ApiError::new(
            ErrorCode::BadToken,
            "this login link was used already, expired or was revoked: run `coord ui` again",
        )
        .into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("coord_view={secret}; HttpOnly; SameSite=Strict; Path=/"),
            ),
            (header::LOCATION, "/".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard's router: `/login`, `/` (with `/app.js` and `/app.css`)
/// and the API, behind [`guard`].
pub fn router<L: EventLog + Clone>(app: Arc<App<L>>, auth: Arc<WebAuth>, api: Router) -> Router {
    let own = Router::new()
        .route("/login", get(login))
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/v1/ui/me", get(me))
        .with_state(auth.clone());
    own.merge(api).layer(axum::middleware::from_fn_with_state(
        (app, auth),
        guard::<L>,
    ))
}

/// Serves `router` on `listener` until `stop`, each connection through
/// `http` with the same graceful end as the socket's, and counted in
/// `connections` (`/v1/status`) while open.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    http: Arc<crate::conn::Http>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
) {
    let mut accept_errors = crate::conn::AcceptErrors::default();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    accept_errors.note("http accept failed", &e, std::time::Instant::now());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        let stop = stop.clone();
        let http = http.clone();
        let router = router.clone().layer(axum::Extension(Peer(peer)));
        let open = crate::app::Open::count(&connections);
        tokio::spawn(async move {
            let _open = open;
            http.serve(stream, router, stop.cancelled(), None).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; coord_view=xyz; b=2".parse().expect("hv"),
        );
        assert_eq!(cookie(&h, "coord_view"), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn only_the_decide_path_is_a_decision() {
        assert!(is_decide("/v1/approvals/ap-0123456789abcdef/decide"));
        assert!(!is_decide("/v1/approvals//decide"));
        assert!(!is_decide("/v1/approvals/a/b/decide"));
        assert!(!is_decide("/v1/approvals/ap-1/withdraw"));
        assert!(!is_decide("/v1/sessions/x/dereg"));
    }
}
