//! Alerts in: receiving (dedup by fingerprint), routing into groups, and the computed
//! views — silenced, inhibited — that go with every read.

use super::*;

impl Alerting {
    /// Receives one alert (new or re-sent). Returns its id.
    pub fn upsert(&mut self, input: AlertInput, now_ms: i64) -> String {
        let id = fingerprint(&input.labels);
        let ends = input.ends_at_ms;
        let resolved_now = ends.is_some_and(|e| e <= now_ms);
        let timeout = i64::try_from(self.cfg.resolve_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut reroute = false;
        match self.alerts.get_mut(&id) {
            Some(a) => {
                a.received += 1;
                a.updated_at_ms = now_ms;
                a.annotations = input.annotations;
                if !input.generator_url.is_empty() {
                    a.generator_url = input.generator_url;
                }
                if a.state == AlertState::Resolved {
                    if !resolved_now {
                        // It came back: a new occurrence, nobody has acknowledged this one.
                        a.state = AlertState::Firing;
                        a.starts_at_ms = input.starts_at_ms.unwrap_or(now_ms);
                        a.acknowledged_by = None;
                        a.acknowledged_at_ms = None;
                        reroute = true;
                    }
                } else if resolved_now {
                    a.state = AlertState::Resolved;
                    reroute = true;
                }
                a.explicit_end = ends.is_some();
                a.ends_at_ms = ends.unwrap_or(now_ms.saturating_add(timeout));
            }
            None => {
                let a = Alert {
                    id: id.clone(),
                    labels: input.labels,
                    annotations: input.annotations,
                    state: if resolved_now {
                        AlertState::Resolved
                    } else {
                        AlertState::Firing
                    },
                    starts_at_ms: input.starts_at_ms.unwrap_or(now_ms),
                    ends_at_ms: ends.unwrap_or(now_ms.saturating_add(timeout)),
                    explicit_end: ends.is_some(),
                    updated_at_ms: now_ms,
                    generator_url: input.generator_url,
                    acknowledged_by: None,
                    acknowledged_at_ms: None,
                    comments: Vec::new(),
                    silenced_by: Vec::new(),
                    inhibited_by: Vec::new(),
                    received: 1,
                };
                reroute = a.state == AlertState::Firing;
                self.alerts.insert(id.clone(), a);
            }
        }
        self.dirty_alerts.insert(id.clone());
        self.deleted_alerts.remove(&id);
        if reroute {
            self.route_alert(&id, now_ms);
        }
        id
    }

    pub(super) fn route_alert(&mut self, id: &str, now_ms: i64) {
        let Some(alert) = self.alerts.get(id) else { return };
        let labels = alert.labels.clone();
        let targets: Vec<(String, String, LabelSet, i64)> = self
            .routes
            .matches(&labels)
            .into_iter()
            .map(|r| {
                let group_labels = project(&labels, &r.group_by);
                (r.id.clone(), r.receiver.clone(), group_labels, r.group_wait_ms)
            })
            .collect();
        for (route_id, receiver, group_labels, wait) in targets {
            let key = format!("{route_id}/{}", fingerprint(&group_labels));
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                route_id,
                receiver,
                labels: group_labels,
                alerts: BTreeSet::new(),
                next_flush_ms: now_ms.saturating_add(wait),
                last_sent_hash: None,
                last_sent_ms: None,
                announced_firing: false,
                announced: BTreeSet::new(),
                escalation: None,
            });
            g.alerts.insert(id.to_string());
            self.deleted_groups.remove(&key);
            self.dirty_groups.insert(key);
        }
    }

    /// Silences that mute these labels now.
    pub(super) fn silenced_by(&self, labels: &LabelSet, now_ms: i64) -> Vec<String> {
        self.silences
            .values()
            .filter(|s| s.mutes(labels, now_ms))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Active alerts that inhibit `target`.
    pub(super) fn inhibited_by(&self, target: &Alert) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.inhibit {
            if !all_match(&rule.target, &target.labels) {
                continue;
            }
            for s in self.alerts.values() {
                if s.id == target.id || !s.is_active() || !all_match(&rule.source, &s.labels) {
                    continue;
                }
                if rule.equal.iter().all(|k| s.labels.get(k) == target.labels.get(k)) && !out.contains(&s.id) {
                    out.push(s.id.clone());
                }
            }
        }
        out
    }

    /// The alert as the API shows it (with current silences and inhibitions).
    pub fn alert(&self, id: &str, now_ms: i64) -> Option<Alert> {
        self.alerts.get(id).map(|a| self.decorate(a, now_ms))
    }

    pub(super) fn decorate(&self, a: &Alert, now_ms: i64) -> Alert {
        let mut a = a.clone();
        if a.is_active() {
            a.silenced_by = self.silenced_by(&a.labels, now_ms);
            a.inhibited_by = self.inhibited_by(&a);
        }
        a
    }

    /// Alerts, optionally in one state ("silenced" and "inhibited" are views on active ones).
    pub fn alerts(&self, state: Option<&str>, now_ms: i64) -> Result<Vec<Alert>, ActionError> {
        let all = self.alerts.values().map(|a| self.decorate(a, now_ms));
        let list: Vec<Alert> = match state {
            None => all.collect(),
            Some("firing") => all.filter(|a| a.state == AlertState::Firing).collect(),
            Some("acknowledged") => all.filter(|a| a.state == AlertState::Acknowledged).collect(),
            Some("resolved") => all.filter(|a| a.state == AlertState::Resolved).collect(),
            Some("silenced") => all.filter(|a| !a.silenced_by.is_empty()).collect(),
            Some("inhibited") => all.filter(|a| !a.inhibited_by.is_empty()).collect(),
            Some(other) => {
                return Err(ActionError::Invalid(format!(
                    "unknown state {other:?}: use firing, acknowledged, resolved, silenced or inhibited"
                )));
            }
        };
        Ok(list)
    }
}
