//! [`WebAuth`]: the web dashboard's secrets — one-time login tokens and
//! one viewer secret per login, kept only as hashes, with each login's
//! role (viewer or approver) and CSRF secret — and the check of the `Host`
//! a browser sent (PROTOCOL §13).
//!
//! It must not see a request: the dashboard's guard ([`crate::web`]) asks
//! it about the values it took out of one.

use coord_engine::tokens;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login token from `coord ui` stays usable.
const LOGIN_TTL: Duration = Duration::from_secs(120);

/// Most login tokens outstanding (older ones are dropped first).
const MAX_LOGINS: usize = 64;

/// Most viewer logins live at once (the oldest is dropped first).
const MAX_VIEWERS: usize = 256;

/// What a login may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebRole {
    /// Reads.
    Viewer,
    /// Reads, and decides approvals (PROTOCOL §14) with its CSRF secret.
    Approver,
}

/// One redeemed login.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Login {
    /// `v-` and 12 hex digits.
    pub viewer: String,
    /// What it may do.
    pub role: WebRole,
    /// Who it is, as decisions record it (default: the viewer id).
    pub name: String,
    /// The secret a decision must carry in `Coord-Csrf` besides the cookie:
    /// only a page of this origin can read it (`GET /v1/ui/me`).
    pub csrf: String,
}

/// The dashboard's secrets, kept as hashes: the one-time login tokens
/// (each naming the viewer it will create) and one secret per redeemed
/// login (the cookie's value), so each login can be revoked alone.
pub struct WebAuth {
    /// Login token hash → when it was made, the viewer id it creates, its
    /// role and name.
    logins: Mutex<HashMap<String, (Instant, String, WebRole, String)>>,
    /// Viewer secret hash → its login and when it logged in.
    viewers: Mutex<HashMap<String, (Login, Instant)>>,
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

    /// A one-time viewer login URL (`http://ADDR/login?token=…`), valid
    /// for [`LOGIN_TTL`], and the id of the viewer it will log in (for
    /// [`Self::revoke`]).
    pub fn login_url(&self) -> (String, String) {
        self.login_url_as(WebRole::Viewer, None)
    }

    /// [`Self::login_url`] for a login of `role`, recorded as `name`.
    pub fn login_url_as(&self, role: WebRole, name: Option<&str>) -> (String, String) {
        let token = tokens::generate();
        let viewer = format!("v-{}", &tokens::hash(&token)[..12]);
        if let Ok(mut l) = self.logins.lock() {
            let now = Instant::now();
            l.retain(|_, (at, ..)| now.duration_since(*at) < LOGIN_TTL);
            while l.len() >= MAX_LOGINS {
                let Some(oldest) = l
                    .iter()
                    .min_by_key(|(_, (at, ..))| *at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                l.remove(&oldest);
            }
            let name = name.map_or_else(|| viewer.clone(), str::to_string);
            l.insert(tokens::hash(&token), (now, viewer.clone(), role, name));
        }
        (format!("http://{}/login?token={token}", self.addr), viewer)
    }

    /// Consumes a login token: once, within its lifetime, it becomes a
    /// viewer secret of its own (the cookie's value).
    pub(crate) fn redeem(&self, token: &str) -> Option<String> {
        let (at, viewer, role, name) = self.logins.lock().ok()?.remove(&tokens::hash(token))?;
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
        let login = Login {
            viewer,
            role,
            name,
            csrf: tokens::generate(),
        };
        v.insert(tokens::hash(&secret), (login, Instant::now()));
        Some(secret)
    }

    /// Whether `secret` is a live viewer's.
    #[cfg(test)]
    pub(crate) fn is_viewer(&self, secret: &str) -> bool {
        self.login(secret).is_some()
    }

    /// The live login `secret` belongs to.
    pub(crate) fn login(&self, secret: &str) -> Option<Login> {
        self.viewers
            .lock()
            .ok()?
            .get(&tokens::hash(secret))
            .map(|(l, _)| l.clone())
    }

    /// Ends viewer `id`'s login (`*`: every viewer's), and any login URL
    /// for it not yet opened; returns how many logins it ended.
    pub fn revoke(&self, id: &str) -> usize {
        let all = id == "*";
        if let Ok(mut l) = self.logins.lock() {
            l.retain(|_, (_, v, ..)| !(all || v == id));
        }
        let Ok(mut v) = self.viewers.lock() else {
            return 0;
        };
        let before = v.len();
        v.retain(|_, (login, _)| !(all || login.viewer == id));
        before - v.len()
    }

    pub(crate) fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let port = self.addr.port();
        let served = self.addr.to_string();
        host == served
            || host == format!("localhost:{port}")
            || (self.addr.ip().is_loopback()
                && (host == format!("127.0.0.1:{port}") || host == format!("[::1]:{port}")))
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
    fn an_approver_login_has_a_csrf_secret_of_its_own() {
        let auth = WebAuth::new("127.0.0.1:8765".parse().expect("addr"));
        let (url, viewer) = auth.login_url_as(WebRole::Approver, Some("alice"));
        let token = url.rsplit('=').next().expect("token");
        let secret = auth.redeem(token).expect("redeemed");
        let login = auth.login(&secret).expect("live");
        assert_eq!(
            (login.role, login.name.as_str()),
            (WebRole::Approver, "alice")
        );
        assert_eq!(login.viewer, viewer);
        assert!(login.csrf.len() >= 32 && login.csrf != secret);
        let (url, _) = auth.login_url();
        let plain = auth
            .redeem(url.rsplit('=').next().expect("token"))
            .expect("redeemed");
        assert_eq!(auth.login(&plain).expect("live").role, WebRole::Viewer);
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
}
