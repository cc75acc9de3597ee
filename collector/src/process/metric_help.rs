//! Metric help texts: the `description` each OTLP metric carries (a remote-written one gets
//! the `# HELP` text of the metadata Prometheus sends), learnt as entries pass the processing
//! stage and answered by the Prometheus `metadata` API, where Grafana shows them. Like
//! Prometheus, which keeps metadata in memory and has it sent again every minute, the texts are
//! not stored: they come back with the next export (and with the WAL's replay at start).

use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

/// Metric names whose help is kept; past it, only known names are updated.
const MAX_NAMES: usize = 100_000;
/// Longer help texts are cut (on a character boundary).
const MAX_HELP_BYTES: usize = 1024;

/// Metric name (as stored) -> its latest non-empty help text.
#[derive(Default)]
pub(crate) struct MetricHelp {
    texts: Mutex<HashMap<String, String>>,
}

impl MetricHelp {
    /// Remembers the descriptions of the metrics in `request` (empty ones change nothing).
    pub(crate) fn learn(&self, request: &ExportMetricsServiceRequest) {
        let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for m in metrics.filter(|m| !m.description.is_empty()) {
            let help = truncate(&m.description);
            let room = texts.len() < MAX_NAMES;
            match texts.get_mut(&m.name) {
                Some(known) if known != help => help.clone_into(known),
                Some(_) => {}
                None if room => {
                    texts.insert(m.name.clone(), help.to_string());
                }
                None => {}
            }
        }
    }

    /// The help text of the metric stored as `name`, if one was seen.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.texts.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_HELP_BYTES {
        return text;
    }
    let mut end = MAX_HELP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};

    use super::*;

    fn request(metrics: &[(&str, &str)]) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: metrics
                        .iter()
                        .map(|(name, description)| Metric {
                            name: name.to_string(),
                            description: description.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_latest_help_is_kept_and_an_empty_one_changes_nothing() {
        let help = MetricHelp::default();
        help.learn(&request(&[("load1", "1m load average."), ("up", "")]));
        assert_eq!(help.get("load1").as_deref(), Some("1m load average."));
        assert_eq!(help.get("up"), None);
        help.learn(&request(&[("load1", "")]));
        assert_eq!(help.get("load1").as_deref(), Some("1m load average."));
        help.learn(&request(&[("load1", "Load, 1 minute.")]));
        assert_eq!(help.get("load1").as_deref(), Some("Load, 1 minute."));
        let long = "é".repeat(MAX_HELP_BYTES);
        help.learn(&request(&[("long", &long)]));
        assert!(
            help.get("long")
                .is_some_and(|h| h.len() <= MAX_HELP_BYTES && long.starts_with(&h))
        );
    }
}
