//! The bridge from incidents to alerts: one alert per incident, labelled by its id alone.

use super::*;

impl AlertService {
    /// Turns incident updates into alerts: one alert per incident (never one per anomaly),
    /// only once it holds a warning or critical anomaly. The labels are the incident id
    /// alone, so the alert keeps its identity while ranking and severity evolve.
    pub(crate) fn on_incidents(&self, incidents: &[Incident]) {
        let now = now_ms();
        let external = self.external_url();
        // An incident's alert keeps the labels it was first raised with: its identity (the
        // fingerprint of its labels) must not change when the ranking or severity does, or
        // one incident would page twice. What changes goes into the annotations.
        let raised: std::collections::HashMap<String, BTreeMap<String, String>> = self
            .alerts(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.labels.get("incident").cloned().map(|id| (id, a.labels.clone())))
            .collect();
        let inputs: Vec<AlertInput> = incidents
            .iter()
            .filter_map(|inc| {
                // Graded by corroboration: one signal, however strong, is a warning.
                let severity = inc.severity();
                if severity < Severity::Warning {
                    return None;
                }
                let top = inc.candidates.first();
                // The likely root cause and the severity as labels, so silences, routes and
                // inhibition rules can match them (`service="catalogue"`).
                let labels = raised.get(&inc.id).cloned().unwrap_or_else(|| {
                    let mut labels = BTreeMap::from([
                        ("alertname".to_string(), "VigilIncident".to_string()),
                        ("incident".to_string(), inc.id.clone()),
                        ("severity".to_string(), format!("{severity:?}").to_lowercase()),
                    ]);
                    if let Some(t) = top {
                        labels.insert("service".to_string(), t.service.clone());
                    }
                    labels
                });
                let mut annotations = BTreeMap::from([
                    ("summary".to_string(), inc.summary.clone()),
                    ("severity".to_string(), format!("{severity:?}").to_lowercase()),
                    ("vigil_incident_id".to_string(), inc.id.clone()),
                    (
                        "vigil_report_url".to_string(),
                        format!("{external}/ui/incidents/{}", inc.id),
                    ),
                    (
                        "vigil_anomaly_ids".to_string(),
                        inc.timeline
                            .iter()
                            .map(|m| m.anomaly_id.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    ("services".to_string(), inc.services.join(",")),
                ]);
                if let Some(t) = top {
                    annotations.insert("service".into(), t.service.clone());
                    annotations.insert(
                        "vigil_root_cause".into(),
                        format!("{}: {}", t.service, t.reasons.join("; ")),
                    );
                }
                let open = inc.status == IncidentStatus::Open;
                Some(AlertInput {
                    labels,
                    annotations,
                    starts_at_ms: Some(inc.start_ms),
                    // Open: firing until the incident resolves (refreshed with every update);
                    // resolved: resolves the alert now.
                    ends_at_ms: Some(if open { now + INCIDENT_ALERT_TTL_MS } else { now }),
                    generator_url: format!("{external}/ui/incidents/{}", inc.id),
                })
            })
            .collect();
        if inputs.is_empty() {
            return;
        }
        if let Err(e) = self.upsert(inputs) {
            tracing::error!(error = %e, "could not record incident alerts");
        }
    }
}
