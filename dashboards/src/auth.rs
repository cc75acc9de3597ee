//! Logins, sessions, roles and CSRF protection.
//!
//! A session is a random id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS)
//! mapped in memory to a role, a display name and a CSRF token. Without configured logins
//! (loopback only) every visitor gets an admin session silently, so forms still carry a
//! CSRF token: a page on another site must not be able to acknowledge alerts through a
//! browser on the on-call laptop. Sessions live in memory, bounded, and end on restart
//! (signing in again is the cost).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use maud::html;
use serde::Deserialize;

use crate::{UiConfig, UiState};

const COOKIE_NAME: &str = "vigil_session";
/// Largest form the UI accepts (a silence with a long comment is far smaller).
const MAX_FORM: usize = 64 * 1024;

/// What a signed-in person may do. Ordered: each role can do what the ones before can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read every page.
    Viewer,
    /// Also acknowledge, resolve, silence, and judge alerts and anomalies.
    Responder,
    /// Also read the audit log.
    Admin,
}

impl Role {
    /// The role as configured and shown (`viewer`, `responder`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}

/// The signed-in person, as the page handlers see them.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) role: Role,
    /// Who the audit log names for this person's actions.
    pub(crate) actor: String,
    pub(crate) csrf: String,
    /// Logins are configured (so a sign-out button makes sense).
    pub(crate) login_enabled: bool,
}

impl Session {
    pub(crate) fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

struct Entry {
    session: Session,
    last_used: Instant,
}

pub(crate) struct Auth {
    logins: Vec<(Vec<u8>, Role)>,
    named_login: Option<crate::NamedLogin>,
    secure_cookie: bool,
    idle: Duration,
    max_sessions: usize,
    sessions: Mutex<HashMap<String, Entry>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something a web page can recover from; an empty
    // id would be shared by everyone, so refuse to go on.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

impl Auth {
    pub(crate) fn new(cfg: &UiConfig) -> Auth {
        Auth {
            logins: cfg.logins.iter().map(|(t, r)| (t.as_bytes().to_vec(), *r)).collect(),
            named_login: cfg.named_login.clone(),
            secure_cookie: cfg.secure_cookie,
            idle: cfg.session_idle,
            max_sessions: cfg.max_sessions.max(1),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.logins.is_empty()
    }

    /// The role a login token grants, and its owner's name for a personal token.
    fn role_of(&self, token: &str) -> Option<(Role, Option<String>)> {
        // Check every configured token, so timing says nothing about which one matched.
        let mut found = None;
        for (t, role) in &self.logins {
            if constant_time_eq(t, token.as_bytes()) {
                found = Some(found.map_or(*role, |r: Role| r.max(*role)));
            }
        }
        if let Some(role) = found {
            return Some((role, None));
        }
        let (name, role) = self.named_login.as_ref()?(token)?;
        Some((role, Some(name)))
    }

    fn lookup(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = sessions.get_mut(id)?;
        if now.duration_since(entry.last_used) > self.idle {
            sessions.remove(id);
            return None;
        }
        entry.last_used = now;
        Some(entry.session.clone())
    }

    fn create(&self, role: Role, actor: String) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            role,
            actor,
            csrf: random_hex(),
            login_enabled: self.enabled(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if sessions.len() >= self.max_sessions {
            sessions.retain(|_, e| now.duration_since(e.last_used) <= self.idle);
        }
        while sessions.len() >= self.max_sessions {
            let Some(oldest) = sessions.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                last_used: now,
            },
        );
        (id, session)
    }

    fn end(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    fn cookie(&self, id: &str) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let value = format!("{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_static("vigil_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A request from a page of another site: its `Origin` names another host, or the browser
/// says so in `Sec-Fetch-Site`.
fn cross_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(
            html! {
                (maud::DOCTYPE)
                html { head { title { "Vigil" } link rel="stylesheet" href="/ui/assets/vigil.css"; }
                body { main.narrow { h1 { "Refused" } p.error { (message) } p { a href="/ui/incidents" { "Back to Vigil" } } } } }
            }
            .into_string(),
        ),
    )
        .into_response()
}

/// Finds (or, without logins, makes) the session; sends strangers to the login page; checks
/// the CSRF token and the origin of every POST, and that the role may do it.
pub(crate) async fn session(State(ui): State<UiState>, request: Request, next: Next) -> Response {
    let auth = &ui.auth;
    let found = session_id(request.headers()).and_then(|id| auth.lookup(&id).map(|s| (id, s)));
    let (mut new_cookie, session) = match found {
        Some((_, s)) => (None, s),
        None if !auth.enabled() => {
            let (id, s) = auth.create(Role::Admin, "local user".into());
            (Some(auth.cookie(&id)), s)
        }
        None => {
            if request.method() == Method::GET {
                let next_url = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
                return Redirect::to(&crate::api::url("/ui/login", &[("next", next_url)])).into_response();
            }
            return refuse(StatusCode::UNAUTHORIZED, "Sign in first.");
        }
    };
    let request = if request.method() == Method::POST {
        if cross_origin(request.headers()) {
            return refuse(StatusCode::FORBIDDEN, "This form was sent from another site.");
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
        };
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !constant_time_eq(token.as_bytes(), session.csrf.as_bytes()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or stale; reload the page and try again.",
            );
        }
        let logout = parts.uri.path() == "/ui/logout";
        if !logout && !session.can(Role::Responder) {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("Your role ({}) may look but not act.", session.role.as_str()),
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie.take() {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Only our own pages are places to return to after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("/ui//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/incidents".into(),
    }
}

pub(crate) async fn login_page(State(ui): State<UiState>, Query(q): Query<LoginQuery>) -> Response {
    if !ui.auth.enabled() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let next = safe_next(q.next.as_deref());
    Html(
        html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Sign in · Vigil" }
                    link rel="stylesheet" href="/ui/assets/vigil.css";
                }
                body {
                    main.narrow {
                        h1 { "Vigil" }
                        @if let Some(e) = &q.error { p.error #login-error { (e) } }
                        form.stack method="post" action="/ui/login" {
                            input type="hidden" name="next" value=(next);
                            label { "Token" input type="password" name="token" required autocomplete="current-password"; }
                            label { "Your name (for the audit log; a personal token names you itself)" input type="text" name="name" maxlength="64"; }
                            button.primary type="submit" { "Sign in" }
                        }
                        p.muted { "Ask your Vigil admin for a viewer, responder or admin token." }
                    }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

pub(crate) async fn login(State(ui): State<UiState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if cross_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "This form was sent from another site.");
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let next = safe_next(form.get("next").map(String::as_str));
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let Some((role, owner)) = ui.auth.role_of(token) else {
        tracing::warn!("UI sign-in with an unknown token");
        // Slows guessing down; the token space is what really protects.
        tokio::time::sleep(Duration::from_millis(250)).await;
        return Redirect::to(&crate::api::url(
            "/ui/login",
            &[("next", &next), ("error", "That token is not valid.")],
        ))
        .into_response();
    };
    // A personal token names its owner; a shared one takes the name typed in.
    let name: String = owner.unwrap_or_else(|| {
        form.get("name")
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .unwrap_or(role.as_str())
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect()
    });
    let (id, _) = ui.auth.create(role, name);
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().append(SET_COOKIE, ui.auth.cookie(&id));
    r
}

pub(crate) async fn logout(State(ui): State<UiState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        ui.auth.end(&id);
    }
    let mut r = (StatusCode::SEE_OTHER, "").into_response();
    let target = if ui.auth.enabled() {
        "/ui/login"
    } else {
        "/ui/incidents"
    };
    r.headers_mut().insert(LOCATION, HeaderValue::from_static(target));
    r.headers_mut().append(SET_COOKIE, ui.auth.clear_cookie());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                *k,
                HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn other_origins_are_recognised() {
        assert!(!cross_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(cross_origin(&headers(&[
            ("host", "a"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn only_our_pages_are_returned_to() {
        assert_eq!(safe_next(Some("/ui/alerts?state=firing")), "/ui/alerts?state=firing");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/incidents");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/incidents");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/incidents");
        assert_eq!(safe_next(None), "/ui/incidents");
    }

    #[test]
    fn tokens_map_to_roles_and_sessions_are_bounded() {
        let auth = Auth::new(&UiConfig {
            logins: vec![("view-token".into(), Role::Viewer), ("admin-token".into(), Role::Admin)],
            max_sessions: 2,
            ..UiConfig::default()
        });
        assert_eq!(auth.role_of("view-token"), Some((Role::Viewer, None)));
        assert_eq!(auth.role_of("admin-token"), Some((Role::Admin, None)));
        assert_eq!(auth.role_of("admin-toke"), None);
        assert_eq!(auth.role_of(""), None);
        let (a, _) = auth.create(Role::Viewer, "a".into());
        let (b, _) = auth.create(Role::Viewer, "b".into());
        assert!(auth.lookup(&a).is_some(), "a used last now, b is the oldest");
        let (c, _) = auth.create(Role::Viewer, "c".into());
        assert!(auth.lookup(&b).is_none(), "least recently used session evicted");
        assert!(auth.lookup(&a).is_some() && auth.lookup(&c).is_some());
        assert_ne!(a, c);
        let cookie = auth.cookie(&a);
        let cookie = cookie.to_str().unwrap_or("");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert_eq!(
            session_id(&headers(&[("cookie", &format!("x=1; vigil_session={a}"))])),
            Some(a)
        );
    }
}
