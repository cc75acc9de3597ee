//! What people do: acknowledge, unacknowledge, resolve, comment, judge, silence — each
//! idempotent (a repeat says it changed nothing) and audited.

use super::*;

impl Alerting {
    /// Acknowledges: stops repeats and escalation for the alert. Idempotent.
    pub fn ack(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        let outcome = match a.state {
            AlertState::Acknowledged => ActionOutcome {
                changed: false,
                state: a.state,
                message: format!(
                    "already acknowledged by {}",
                    a.acknowledged_by.clone().unwrap_or_else(|| "someone".into())
                ),
            },
            AlertState::Resolved => ActionOutcome {
                changed: false,
                state: a.state,
                message: "already resolved".into(),
            },
            AlertState::Firing => {
                a.state = AlertState::Acknowledged;
                a.acknowledged_by = Some(by.to_string());
                a.acknowledged_at_ms = Some(now_ms);
                ActionOutcome {
                    changed: true,
                    state: a.state,
                    message: format!("acknowledged by {by}"),
                }
            }
        };
        if outcome.changed {
            self.dirty_alerts.insert(id.to_string());
            self.audit(now_ms, by, "ack", id, String::new());
            self.stop_settled_escalations(id);
        }
        Ok(outcome)
    }

    /// Takes back an acknowledgement: the alert fires again and escalation resumes.
    pub fn unack(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        if a.state != AlertState::Acknowledged {
            return Ok(ActionOutcome {
                changed: false,
                state: a.state,
                message: "not acknowledged".into(),
            });
        }
        a.state = AlertState::Firing;
        a.acknowledged_by = None;
        a.acknowledged_at_ms = None;
        let state = a.state;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "unack", id, String::new());
        Ok(ActionOutcome {
            changed: true,
            state,
            message: format!("acknowledgement withdrawn by {by}"),
        })
    }

    /// Resolves an alert by hand (it fires again if its sender re-sends it as firing).
    pub fn resolve(&mut self, id: &str, by: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        if a.state == AlertState::Resolved {
            return Ok(ActionOutcome {
                changed: false,
                state: a.state,
                message: "already resolved".into(),
            });
        }
        a.state = AlertState::Resolved;
        a.ends_at_ms = now_ms;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "resolve", id, String::new());
        self.stop_settled_escalations(id);
        Ok(ActionOutcome {
            changed: true,
            state: AlertState::Resolved,
            message: format!("resolved by {by}"),
        })
    }

    /// Adds a comment to an alert's record.
    pub fn comment(&mut self, id: &str, by: &str, text: &str, now_ms: i64) -> Result<ActionOutcome, ActionError> {
        if text.trim().is_empty() {
            return Err(ActionError::Invalid("comment text must not be empty".into()));
        }
        let a = self
            .alerts
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        a.comments.push(Comment {
            at_ms: now_ms,
            by: by.to_string(),
            text: text.to_string(),
        });
        let state = a.state;
        self.dirty_alerts.insert(id.to_string());
        self.audit(now_ms, by, "comment", id, text.to_string());
        Ok(ActionOutcome {
            changed: true,
            state,
            message: "comment added".into(),
        })
    }

    /// Records a usefulness verdict in the audit log (the caller forwards it to detectors).
    pub fn record_feedback(&mut self, id: &str, by: &str, verdict: &str, now_ms: i64) -> Result<Alert, ActionError> {
        let a = self
            .alerts
            .get(id)
            .cloned()
            .ok_or_else(|| ActionError::UnknownAlert(id.to_string()))?;
        self.audit(now_ms, by, "feedback", id, verdict.to_string());
        Ok(a)
    }

    /// Marks a signed-link nonce used; false when it was used before (a replay).
    pub fn use_nonce(&mut self, nonce: &str, expires_ms: i64) -> bool {
        if self.nonces.contains_key(nonce) {
            return false;
        }
        self.nonces.insert(nonce.to_string(), expires_ms);
        self.new_nonces.push((nonce.to_string(), expires_ms));
        true
    }

    pub(super) fn stop_settled_escalations(&mut self, id: &str) {
        let keys: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.alerts.contains(id))
            .map(|g| g.key.clone())
            .collect();
        for key in keys {
            let unacked = self.groups.get(&key).is_some_and(|g| {
                g.alerts
                    .iter()
                    .any(|a| self.alerts.get(a).is_some_and(|a| a.state == AlertState::Firing))
            });
            if let Some(g) = self.groups.get_mut(&key)
                && !unacked
                && g.escalation.is_some()
            {
                g.escalation = None;
                self.dirty_groups.insert(key);
            }
        }
    }

    /// Adds a silence (or replaces one with the same id); returns its id.
    pub fn add_silence(&mut self, mut s: Silence, now_ms: i64) -> Result<String, ActionError> {
        if s.matchers.is_empty() {
            return Err(ActionError::Invalid("a silence needs at least one matcher".into()));
        }
        if s.ends_at_ms <= s.starts_at_ms {
            return Err(ActionError::Invalid("endsAt must be after startsAt".into()));
        }
        if s.created_by.trim().is_empty() {
            return Err(ActionError::Invalid("createdBy must not be empty".into()));
        }
        if s.id.is_empty() {
            s.id = format!("s{:08}", self.next_seq());
        }
        s.created_at_ms = now_ms;
        let detail = format!(
            "{} until {} ({})",
            s.matchers
                .iter()
                .map(|m| format!("{}{}{:?}", m.name(), m.op().as_str(), m.value()))
                .collect::<Vec<_>>()
                .join(","),
            s.ends_at_ms,
            s.comment
        );
        let (id, by) = (s.id.clone(), s.created_by.clone());
        self.silences.insert(id.clone(), s);
        self.dirty_silences.insert(id.clone());
        self.audit(now_ms, &by, "silence_create", &id, detail);
        Ok(id)
    }

    /// Ends a silence now (kept for the record, inactive).
    pub fn expire_silence(&mut self, id: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let s = self
            .silences
            .get_mut(id)
            .ok_or_else(|| ActionError::UnknownSilence(id.to_string()))?;
        if s.ends_at_ms > now_ms {
            s.ends_at_ms = now_ms;
            if s.starts_at_ms > now_ms {
                s.starts_at_ms = now_ms;
            }
        }
        self.dirty_silences.insert(id.to_string());
        self.audit(now_ms, by, "silence_expire", id, String::new());
        Ok(())
    }

    /// Every silence, expired ones included.
    pub fn silences(&self) -> Vec<Silence> {
        self.silences.values().cloned().collect()
    }
}
