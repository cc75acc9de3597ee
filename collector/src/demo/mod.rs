//! `vigil-collector demo`: a simulated fleet that sends real OTLP/HTTP (protobuf) to the
//! collector it runs beside, with daily-looking load, noise, and one injected fault.
//!
//! Seven services: frontend → catalogue → cache; frontend → inventory → cache, database;
//! frontend → checkout → payment → database, checkout → inventory. Each step of 10 simulated
//! seconds sends the traces of the requests served (parent/child spans across services), the
//! access and error logs they wrote, and each service's CPU and memory gauges. Simulated time
//! starts in the past and runs `speed` times faster than the wall clock until it catches up
//! with now, so the detectors see hours of history within minutes; the fault starts after the
//! warm-up and stays.

mod fleet;

use fleet::Fleet;
use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;

pub(crate) const SERVICES: [&str; 7] = [
    "frontend",
    "catalogue",
    "checkout",
    "payment",
    "inventory",
    "cache",
    "database",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FaultKind {
    /// The service's CPU saturates and it slows down.
    Cpu,
    /// Every request to the service takes most of a second longer.
    Latency,
    /// The service fails a large share of its requests.
    Errors,
    /// The service's memory grows without bound; GC pauses slow it.
    Memory,
    /// The service stops answering: its callers get connection errors.
    Down,
}

#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    pub speed: f64,
    pub fault: FaultKind,
    pub service: String,
    pub warmup_minutes: u64,
    pub seed: u64,
}

const STEP_MS: i64 = 10_000;
const MIN_MS: i64 = 60_000;

/// Runs the fleet until `shutdown`; sends to the collector's OTLP/HTTP listener.
pub(crate) async fn run_fleet(
    otlp_http: SocketAddr,
    opts: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let now = crate::timeutil::now_ms();
    // Simulated time starts far enough back that warm-up plus 30 minutes of fault fit
    // before it meets the wall clock.
    let history = i64::try_from(opts.warmup_minutes).unwrap_or(120) * MIN_MS + 30 * MIN_MS;
    let sim_start = (now - history) / STEP_MS * STEP_MS;
    let fault_start_ms = sim_start + i64::try_from(opts.warmup_minutes).unwrap_or(120) * MIN_MS;
    let speed = opts.speed.max(1.0);
    tracing::info!(
        fault_start_ms,
        fault = ?opts.fault,
        service = %opts.service,
        "demo: the fault starts at this event time"
    );
    let mut fleet = Fleet::new(opts, fault_start_ms);
    let real_start = std::time::Instant::now();
    let mut t = sim_start;
    loop {
        // Pace: simulated time runs `speed` times the wall clock, never past it.
        let due = Duration::from_secs_f64(((t - sim_start) as f64 / speed / 1000.0).max(0.0));
        let wait = due.saturating_sub(real_start.elapsed()).max(Duration::from_millis(
            u64::try_from((t + STEP_MS) - crate::timeutil::now_ms()).unwrap_or(0),
        ));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let (traces, logs, metrics) = fleet.step(t);
        for (path, body) in [
            ("/v1/traces", traces.encode_to_vec()),
            ("/v1/logs", logs.encode_to_vec()),
            ("/v1/metrics", metrics.encode_to_vec()),
        ] {
            let r = client
                .post(format!("http://{otlp_http}{path}"))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => tracing::warn!(status = %resp.status(), path, "demo fleet: export refused"),
                Err(e) => tracing::warn!(error = %e, path, "demo fleet: export failed"),
            }
        }
        t += STEP_MS;
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::status;

    use super::*;

    fn fleet(fault: FaultKind) -> Fleet {
        let opts = DemoOptions {
            speed: 1.0,
            fault,
            service: "payment".into(),
            warmup_minutes: 1,
            seed: 7,
        };
        Fleet::new(opts, 60_000)
    }

    #[test]
    fn traces_cross_services_with_parents_and_faults_show_where_injected() {
        let mut f = fleet(FaultKind::Down);
        let (traces, _, metrics) = f.step(0);
        let services: Vec<String> = traces
            .resource_spans
            .iter()
            .filter_map(|rs| {
                rs.resource
                    .as_ref()
                    .and_then(|r| r.attributes.first())
                    .and_then(|a| a.value.clone())
            })
            .filter_map(|v| match v.value {
                Some(any_value::Value::StringValue(s)) => Some(s),
                _ => None,
            })
            .collect();
        assert!(
            services.contains(&"frontend".to_string()) && services.contains(&"cache".to_string()),
            "{services:?}"
        );
        let child_spans = traces
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| !s.parent_span_id.is_empty())
            .count();
        assert!(child_spans > 0);
        assert_eq!(metrics.resource_metrics.len(), SERVICES.len());
        // After the fault starts, payment is down: no payment spans, refused-connection errors.
        let mut payment_spans = 0;
        let mut refused = 0;
        let mut failed_calls = 0;
        for step in 6..30 {
            let (traces, logs, _) = f.step(step * STEP_MS);
            // Its callers' client spans still name it, and fail.
            failed_calls += traces
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .filter(|s| {
                    s.kind == 3
                        && s.status
                            .as_ref()
                            .is_some_and(|st| st.code == status::StatusCode::Error as i32)
                        && format!("{:?}", s.attributes).contains("\"payment\"")
                })
                .count();
            payment_spans += traces
                .resource_spans
                .iter()
                .filter(|r| format!("{:?}", r.resource).contains("\"payment\""))
                .count();
            refused += logs
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .filter(|l| format!("{:?}", l.body).contains("connection refused calling payment"))
                .count();
        }
        assert_eq!(payment_spans, 0);
        assert!(refused > 0);
        assert!(failed_calls > 0);
    }
}
