//! Vigil's web UI: the pages the person on call opens from a notification.
//!
//! Server-rendered HTML over the collector's own JSON API. Every page handler asks the API
//! router in-process (a `tower` call, no socket) for exactly what a script would ask it over
//! HTTP, so the UI shows nothing the API cannot show, and each piece can link to the query
//! behind it. Pages render in Rust with `maud` (escaping by construction), charts are SVG
//! drawn on the server with axes, units and time labels, and a few lines of JavaScript add
//! conveniences a page works without. Assets are compiled into the binary: no CDN, no build
//! step, the UI works offline.
//!
//! Access: with no login tokens configured (a loopback deployment) everyone is admin; with
//! tokens, a login page trades a token for a session cookie (`HttpOnly`, `SameSite=Strict`)
//! carrying the token's role. Every state-changing form carries a per-session CSRF token and
//! is refused from another origin, logged in or not.

#![warn(missing_docs)]

mod api;
mod assets;
mod auth;
mod chart;
mod fmt;
mod graph;
mod pages;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

pub use auth::Role;

/// Looks a personal token up: its owner's name and role.
pub type NamedLogin = std::sync::Arc<dyn Fn(&str) -> Option<(String, Role)> + Send + Sync>;

/// How the UI reaches the API and who may log in.
#[derive(Clone)]
pub struct UiConfig {
    /// The bearer token the UI presents to the API on a logged-in user's behalf (the API
    /// token), when the API requires one.
    pub api_token: Option<String>,
    /// Login tokens and the role each grants. Empty: no login (everyone is admin), which the
    /// collector allows only when the API listens on loopback.
    pub logins: Vec<(String, Role)>,
    /// Personal tokens: the name and role a token belongs to, if it is one (the collector
    /// keeps them hashed). A person signed in with one is named by it in the audit log.
    pub named_login: Option<NamedLogin>,
    /// Mark the session cookie `Secure` (the API is served over TLS).
    pub secure_cookie: bool,
    /// How long a session lasts without use.
    pub session_idle: Duration,
    /// Sessions held at most; the least recently used go first.
    pub max_sessions: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            api_token: None,
            logins: Vec::new(),
            named_login: None,
            secure_cookie: false,
            session_idle: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// Shared state of the page handlers.
pub(crate) struct Ui {
    pub(crate) api: api::ApiClient,
    pub(crate) auth: auth::Auth,
}

pub(crate) type UiState = Arc<Ui>;

/// The UI's routes: `/` redirects to `/ui/incidents`; pages and assets live under `/ui/`.
/// `api` is the collector's API router, called in-process for every piece of data.
pub fn router(api: Router, cfg: UiConfig) -> Router {
    let state: UiState = Arc::new(Ui {
        api: api::ApiClient::new(api, cfg.api_token.clone()),
        auth: auth::Auth::new(&cfg),
    });
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/incidents") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/incidents") }))
        .route("/ui/incidents", get(pages::incidents::list))
        .route("/ui/incidents/{id}", get(pages::incidents::report))
        .route(
            "/ui/investigations",
            get(pages::investigations::list).post(pages::investigations::create),
        )
        .route("/ui/investigations/{id}", get(pages::investigations::report))
        .route("/ui/alerts", get(pages::alerts::list))
        .route("/ui/alerts/{id}", get(pages::alerts::detail))
        .route("/ui/alerts/{id}/{action}", post(pages::alerts::act))
        .route("/ui/anomalies/{id}/feedback", post(pages::alerts::anomaly_feedback))
        .route("/ui/silences", get(pages::silences::list).post(pages::silences::create))
        .route("/ui/silences/new", get(pages::silences::new_form))
        .route("/ui/oncall", get(pages::oncall::page))
        .route("/ui/silences/preview", post(pages::silences::preview))
        .route("/ui/silences/{id}/expire", post(pages::silences::expire))
        .route("/ui/audit", get(pages::silences::audit))
        .route("/ui/logs", get(pages::logs::page))
        .route("/ui/metrics", get(pages::metrics::page))
        .route("/ui/services", get(pages::services::page))
        .route("/ui/traces", get(pages::services::trace_lookup))
        .route("/ui/traces/{id}", get(pages::services::trace))
        .route("/ui/logout", post(auth::logout))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::session));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/incidents") }))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(pages)
        .with_state(state)
}
