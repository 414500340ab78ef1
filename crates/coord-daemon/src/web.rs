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
//!
//! It owns the TCP listener, the login tokens and the page; it must not
//! change what the API does: requests that pass the guard go to the same
//! router as on the socket.

use crate::app::App;
use crate::http::ApiError;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use coord_engine::tokens;
use coord_proto::ErrorCode;
use coord_store::EventLog;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// How long a login token from `coord ui` stays usable.
const LOGIN_TTL: Duration = Duration::from_secs(120);

/// Most login tokens outstanding (older ones are dropped first).
const MAX_LOGINS: usize = 64;

/// Most viewer logins live at once (the oldest is dropped first).
const MAX_VIEWERS: usize = 256;

/// The dashboard's secrets, kept as hashes: the one-time login tokens
/// (each naming the viewer it will create) and one secret per redeemed
/// login (the cookie's value), so each login can be revoked alone.
pub struct WebAuth {
    /// Login token hash → when it was made, the viewer id it creates.
    logins: Mutex<HashMap<String, (Instant, String)>>,
    /// Viewer secret hash → its viewer id and when it logged in.
    viewers: Mutex<HashMap<String, (String, Instant)>>,
    /// The address served, as `Host` must name it.
    pub addr: SocketAddr,
}

impl WebAuth {
    /// New secrets for a dashboard on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        WebAuth {
            logins: Mutex::new(HashMap::new()),
            viewers: Mutex::new(HashMap::new()),
            addr,
        }
    }

    /// A one-time login URL (`http://ADDR/login?token=…`), valid for
    /// [`LOGIN_TTL`], and the id of the viewer it will log in (for
    /// [`Self::revoke`]).
    pub fn login_url(&self) -> (String, String) {
        let token = tokens::generate();
        let viewer = format!("v-{}", &tokens::hash(&token)[..12]);
        if let Ok(mut l) = self.logins.lock() {
            let now = Instant::now();
            l.retain(|_, (at, _)| now.duration_since(*at) < LOGIN_TTL);
            while l.len() >= MAX_LOGINS {
                let Some(oldest) = l
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                l.remove(&oldest);
            }
            l.insert(tokens::hash(&token), (now, viewer.clone()));
        }
        (format!("http://{}/login?token={token}", self.addr), viewer)
    }

    /// Consumes a login token: once, within its lifetime, it becomes a
    /// viewer secret of its own (the cookie's value).
    fn redeem(&self, token: &str) -> Option<String> {
        let (at, viewer) = self.logins.lock().ok()?.remove(&tokens::hash(token))?;
        if at.elapsed() >= LOGIN_TTL {
            return None;
        }
        let secret = tokens::generate();
        let mut v = self.viewers.lock().ok()?;
        while v.len() >= MAX_VIEWERS {
            let Some(oldest) = v
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            v.remove(&oldest);
        }
        v.insert(tokens::hash(&secret), (viewer, Instant::now()));
        Some(secret)
    }

    /// Whether `secret` is a live viewer's.
    fn is_viewer(&self, secret: &str) -> bool {
        self.viewers
            .lock()
            .is_ok_and(|v| v.contains_key(&tokens::hash(secret)))
    }

    /// Ends viewer `id`'s login (`*`: every viewer's), and any login URL
    /// for it not yet opened; returns how many logins it ended.
    pub fn revoke(&self, id: &str) -> usize {
        let all = id == "*";
        if let Ok(mut l) = self.logins.lock() {
            l.retain(|_, (_, v)| !(all || v == id));
        }
        let Ok(mut v) = self.viewers.lock() else {
            return 0;
        };
        let before = v.len();
        v.retain(|_, (viewer, _)| !(all || viewer == id));
        before - v.len()
    }

    fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let port = self.addr.port();
        let served = self.addr.to_string();
        host == served
            || host == format!("localhost:{port}")
            || (self.addr.ip().is_loopback()
                && (host == format!("127.0.0.1:{port}") || host == format!("[::1]:{port}")))
    }
}

/// Who a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// The admin token, in a header: may read and write.
    Admin,
    /// The viewer secret, in a header: reads.
    Viewer,
    /// The viewer secret, from the cookie only: reads.
    Cookie,
}

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
        return if auth.is_viewer(b) {
            Ok(Who::Viewer)
        } else if tokens::same(b, &app.admin_token) {
            Ok(Who::Admin)
        } else {
            Err(ApiError::new(ErrorCode::BadToken, "wrong token"))
        };
    }
    match jar {
        Some(c) if auth.is_viewer(c) => Ok(Who::Cookie),
        _ => Err(ApiError::new(
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
    if !reads && who != Who::Admin {
        return ApiError::new(
            ErrorCode::AdminRequired,
            "over HTTP a write needs the admin token in the Coord-Admin-Token header; the login cookie only reads",
        )
        .into_response();
    }
    next.run(req).await
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
        .with_state(auth.clone());
    own.merge(api).layer(axum::middleware::from_fn_with_state(
        (app, auth),
        guard::<L>,
    ))
}

/// Serves `router` on `listener` until `stop`, each connection through
/// `http` with the same graceful end as the socket's.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    http: Arc<crate::conn::Http>,
    stop: CancellationToken,
) {
    let mut accept_errors = crate::server::AcceptErrors::default();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    accept_errors.note("http accept failed", &e, std::time::Instant::now());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let stop = stop.clone();
        let http = http.clone();
        let router = router.clone();
        tokio::spawn(async move {
            http.serve(stream, router, stop.cancelled(), None).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_tokens_work_once() {
        let auth = WebAuth::new("127.0.0.1:8765".parse().expect("addr"));
        let (url, viewer) = auth.login_url();
        let token = url.rsplit('=').next().expect("token");
        assert!(url.starts_with("http://127.0.0.1:8765/login?token="));
        assert!(viewer.starts_with("v-"), "{viewer}");
        let secret = auth.redeem(token).expect("redeemed");
        assert!(auth.is_viewer(&secret));
        assert!(auth.redeem(token).is_none(), "a login token is one-time");
        assert!(auth.redeem("forged").is_none());
    }

    /// Issue 34 item 10: each login has its own cookie, and one can be
    /// revoked without the others.
    #[test]
    fn each_login_is_its_own_viewer_and_revoked_alone() {
        let auth = WebAuth::new("127.0.0.1:8765".parse().expect("addr"));
        let login = |auth: &WebAuth| {
            let (url, viewer) = auth.login_url();
            let token = url.rsplit('=').next().expect("token").to_string();
            (auth.redeem(&token).expect("redeemed"), viewer)
        };
        let (a, va) = login(&auth);
        let (b, _) = login(&auth);
        assert_ne!(a, b, "two logins, two cookies");
        assert_eq!(auth.revoke(&va), 1);
        assert!(!auth.is_viewer(&a), "revoked");
        assert!(auth.is_viewer(&b), "the other login reads on");
        // A login URL not yet opened is revoked too.
        let (url, vc) = auth.login_url();
        assert_eq!(auth.revoke(&vc), 0);
        let token = url.rsplit('=').next().expect("token");
        assert!(auth.redeem(token).is_none());
        assert_eq!(auth.revoke("*"), 1);
        assert!(!auth.is_viewer(&b));
    }

    #[test]
    fn hosts() {
        let auth = WebAuth::new("127.0.0.1:8765".parse().expect("addr"));
        assert!(auth.host_ok(Some("127.0.0.1:8765")));
        assert!(auth.host_ok(Some("localhost:8765")));
        assert!(!auth.host_ok(Some("evil.example:8765")));
        assert!(!auth.host_ok(Some("127.0.0.1:9999")));
        assert!(!auth.host_ok(None));
    }

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
}
