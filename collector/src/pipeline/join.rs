//! Joins signals that lack `service.name` to a service: a log line through its trace id or
//! its host/pod, a metric through its `host.name`/`k8s.pod.name` labels. The mapping is
//! learned from spans (and from metrics that carry both), bounded, most recent first.

use std::collections::{HashMap, VecDeque};

/// Trace ids remembered (one entry per trace, for log lines that carry a trace id).
const MAX_TRACES: usize = 100_000;
/// Hosts and pods remembered.
const MAX_PLACES: usize = 50_000;

#[derive(Debug, Default)]
pub(crate) struct Joiner {
    by_trace: HashMap<String, String>,
    trace_order: VecDeque<String>,
    by_host: HashMap<String, String>,
    by_pod: HashMap<String, String>,
}

impl Joiner {
    /// Records that `service` runs on `host`/`pod` and served `trace`.
    pub(crate) fn learn(&mut self, service: &str, host: Option<&str>, pod: Option<&str>, trace: Option<&str>) {
        if service.is_empty() || service == "unknown_service" {
            return;
        }
        // Every metric point comes through here: a place already known costs no copy.
        for (map, key) in [(&mut self.by_host, host), (&mut self.by_pod, pod)] {
            let Some(k) = key.filter(|k| !k.is_empty()) else {
                continue;
            };
            let room = map.len() < MAX_PLACES;
            match map.get_mut(k) {
                Some(known) if known == service => {}
                Some(known) => *known = service.to_string(),
                None if room => {
                    map.insert(k.to_string(), service.to_string());
                }
                None => {}
            }
        }
        if let Some(t) = trace.filter(|t| !t.is_empty())
            && !self.by_trace.contains_key(t)
        {
            self.by_trace.insert(t.to_string(), service.to_string());
            self.trace_order.push_back(t.to_string());
            if self.trace_order.len() > MAX_TRACES
                && let Some(old) = self.trace_order.pop_front()
            {
                self.by_trace.remove(&old);
            }
        }
    }

    /// The service behind a signal: by trace first (most specific), then pod, then host.
    pub(crate) fn resolve(&self, host: Option<&str>, pod: Option<&str>, trace: Option<&str>) -> Option<String> {
        trace
            .and_then(|t| self.by_trace.get(t))
            .or_else(|| pod.and_then(|p| self.by_pod.get(p)))
            .or_else(|| host.and_then(|h| self.by_host.get(h)))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_without_a_service_join_through_trace_pod_or_host() {
        let mut j = Joiner::default();
        j.learn("checkout", Some("node-1"), Some("checkout-7d9"), Some("t1"));
        j.learn("payment", Some("node-1"), Some("payment-5f2"), Some("t2"));
        assert_eq!(j.resolve(None, None, Some("t1")).as_deref(), Some("checkout"));
        assert_eq!(
            j.resolve(Some("node-1"), Some("payment-5f2"), None).as_deref(),
            Some("payment")
        );
        // A host runs several services; the latest one seen is the guess.
        assert_eq!(j.resolve(Some("node-1"), None, None).as_deref(), Some("payment"));
        assert_eq!(j.resolve(Some("node-9"), None, Some("t9")), None);
        j.learn("unknown_service", Some("node-9"), None, None);
        assert_eq!(
            j.resolve(Some("node-9"), None, None),
            None,
            "nothing is learned from unknown services"
        );
    }
}
