//! A real HTTP receiver for notification tests: listens on 127.0.0.1:0, records every
//! request (headers and JSON body), and can be told to fail or stall the first requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub json: serde_json::Value,
    /// The status this receiver answered.
    pub status: u16,
    pub received_at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    captured: Mutex<Vec<Captured>>,
    arrivals: AtomicUsize,
    fail_first: AtomicUsize,
    stall_first: AtomicUsize,
    stall: Mutex<Duration>,
    /// Sent as `retry-after` (seconds) with the 503s of `fail_next`.
    retry_after: Mutex<Option<u64>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    // Counted on arrival: a stalled request whose client gave up is dropped by the server
    // before it is recorded below.
    inner.arrivals.fetch_add(1, Ordering::SeqCst);
    if inner.stall_first.load(Ordering::SeqCst) > 0 {
        inner.stall_first.fetch_sub(1, Ordering::SeqCst);
        let d = *inner.stall.lock().unwrap_or_else(|e| e.into_inner());
        tokio::time::sleep(d).await;
    }
    let mut reply = HeaderMap::new();
    let status = if inner.fail_first.load(Ordering::SeqCst) > 0 {
        inner.fail_first.fetch_sub(1, Ordering::SeqCst);
        if let Some(secs) = *inner.retry_after.lock().unwrap_or_else(|e| e.into_inner()) {
            reply.insert("retry-after", secs.into());
        }
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        // An OTLP/HTTP export is answered as an OTLP receiver does: an (empty) protobuf
        // Export*ServiceResponse, which the agent checks before it lets a batch go.
        if uri.path().starts_with("/v1/") {
            reply.insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/x-protobuf"),
            );
        }
        StatusCode::OK
    };
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    inner.captured.lock().unwrap_or_else(|e| e.into_inner()).push(Captured {
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
        json,
        status: status.as_u16(),
        received_at: std::time::Instant::now(),
    });
    (status, reply)
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { addr, inner })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer 503 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_first.store(n, Ordering::SeqCst);
    }

    /// Answer 503 with `retry-after: secs` to the next `n` requests.
    pub fn fail_next_with_retry_after(&self, n: usize, secs: u64) {
        *self.inner.retry_after.lock().unwrap_or_else(|e| e.into_inner()) = Some(secs);
        self.inner.fail_first.store(n, Ordering::SeqCst);
    }

    /// Hold the next `n` requests for `d` before answering.
    pub fn stall_next(&self, n: usize, d: Duration) {
        *self.inner.stall.lock().unwrap_or_else(|e| e.into_inner()) = d;
        self.inner.stall_first.store(n, Ordering::SeqCst);
    }

    /// Requests that arrived, including ones abandoned by the client mid-way.
    pub fn arrivals(&self) -> usize {
        self.inner.arrivals.load(Ordering::SeqCst)
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.inner.captured.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Successful deliveries whose webhook group label `alertname` is `name`.
    pub fn delivered_for(&self, name: &str) -> Vec<Captured> {
        self.delivered_where("alertname", name)
    }

    /// Successful deliveries saying the group whose label `label` is `value` fires.
    pub fn firing(&self, label: &str, value: &str) -> Vec<Captured> {
        self.delivered_where(label, value)
            .into_iter()
            .filter(|c| c.json["status"] == "firing")
            .collect()
    }

    fn delivered_where(&self, label: &str, value: &str) -> Vec<Captured> {
        self.captured()
            .into_iter()
            .filter(|c| c.status == 200 && c.json["groupLabels"][label] == value)
            .collect()
    }
}
