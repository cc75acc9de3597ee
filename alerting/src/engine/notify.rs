//! Notifications: group timers (wait, interval, repeat), escalation steps, the outbox and
//! what became of each delivery attempt.

use super::*;

impl Alerting {
    /// Advances time: resolves timed-out alerts, flushes due groups, runs escalations.
    pub fn tick(&mut self, now_ms: i64) {
        for a in self.alerts.values_mut() {
            if a.is_active() && a.ends_at_ms <= now_ms {
                a.state = AlertState::Resolved;
                self.dirty_alerts.insert(a.id.clone());
            }
        }
        let in_groups: BTreeSet<&String> = self.groups.values().flat_map(|g| g.alerts.iter()).collect();
        let forget: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Resolved && now_ms - a.ends_at_ms >= RESOLVED_RETENTION_MS)
            .filter(|a| !in_groups.contains(&a.id))
            .map(|a| a.id.clone())
            .collect();
        for id in forget {
            self.alerts.remove(&id);
            self.dirty_alerts.remove(&id);
            self.deleted_alerts.insert(id);
        }
        let due: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.next_flush_ms <= now_ms)
            .map(|g| g.key.clone())
            .collect();
        for key in due {
            self.flush(&key, now_ms);
        }
        let escalating: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.escalation.as_ref().is_some_and(|e| e.next_at_ms <= now_ms))
            .map(|g| g.key.clone())
            .collect();
        for key in escalating {
            self.escalate(&key, now_ms);
        }
    }

    /// The earliest time anything is due (for the caller's timer).
    pub fn next_due_ms(&self) -> Option<i64> {
        let groups = self.groups.values().map(|g| g.next_flush_ms);
        let esc = self
            .groups
            .values()
            .filter_map(|g| g.escalation.as_ref().map(|e| e.next_at_ms));
        let outbox = self.outbox.values().map(|n| n.next_attempt_ms);
        let ends = self.alerts.values().filter(|a| a.is_active()).map(|a| a.ends_at_ms);
        groups.chain(esc).chain(outbox).chain(ends).min()
    }

    pub(super) fn flush(&mut self, key: &str, now_ms: i64) {
        let Some(g) = self.groups.get(key).cloned() else { return };
        let Some(route) = self.routes.find(&g.route_id).cloned() else {
            // The route is gone (config changed): drop the group.
            self.groups.remove(key);
            self.deleted_groups.insert(key.to_string());
            return;
        };
        let mut firing = Vec::new();
        let mut unacked = 0;
        let mut resolved: Vec<Alert> = Vec::new();
        for id in &g.alerts {
            let Some(a) = self.alerts.get(id) else { continue };
            let a = self.decorate(a, now_ms);
            if !a.silenced_by.is_empty() || !a.inhibited_by.is_empty() {
                continue;
            }
            match a.state {
                AlertState::Firing => {
                    unacked += 1;
                    firing.push(a);
                }
                AlertState::Acknowledged => firing.push(a),
                AlertState::Resolved => resolved.push(a),
            }
        }
        // Every resolved alert leaves the group at this flush; only those the receiver was
        // told were firing are news.
        let resolved_ids: Vec<String> = resolved.iter().map(|a| a.id.clone()).collect();
        // (A group saved before `announced` existed announced all it held.)
        let legacy = g.announced.is_empty() && g.announced_firing;
        resolved.retain(|a| legacy || g.announced.contains(&a.id));
        // What the group holds once the resolved alerts have left: the next flush compares
        // with this, so a partial resolve is announced once, not again without them.
        let remaining: Vec<&str> = firing
            .iter()
            .map(|a| a.id.as_str())
            .chain(std::iter::once("|"))
            .collect();
        let remaining_hash = hash_of(&remaining);
        let ids: Vec<&str> = remaining
            .iter()
            .copied()
            .chain(resolved.iter().map(|a| a.id.as_str()))
            .collect();
        let hash = hash_of(&ids);
        let changed = g.last_sent_hash.as_deref() != Some(hash.as_str());
        let repeat_due = unacked > 0 && g.last_sent_ms.is_some_and(|t| now_ms - t >= route.repeat_interval_ms);
        let reason = if !firing.is_empty() && changed {
            Some(if g.last_sent_ms.is_none() || !g.announced_firing {
                NotifyReason::Initial
            } else {
                NotifyReason::Update
            })
        } else if firing.is_empty() && !resolved.is_empty() && changed {
            Some(NotifyReason::Resolved)
        } else if repeat_due {
            Some(NotifyReason::Repeat)
        } else {
            None
        };
        let firing_ids: Vec<String> = firing.iter().map(|a| a.id.clone()).collect();
        if let Some(reason) = reason {
            let status = if firing.is_empty() { "resolved" } else { "firing" };
            let mut alerts = firing.clone();
            alerts.extend(resolved);
            self.enqueue(&g, g.receiver.clone(), reason, None, status, alerts, now_ms);
        }
        let Some(gm) = self.groups.get_mut(key) else { return };
        if reason.is_some() {
            gm.last_sent_hash = Some(remaining_hash);
            gm.last_sent_ms = Some(now_ms);
            if !firing.is_empty() {
                gm.announced_firing = true;
            }
            gm.announced.extend(firing_ids);
            if reason == Some(NotifyReason::Initial)
                && gm.escalation.is_none()
                && let Some(p) = route.escalation.as_ref().and_then(|p| self.policies.get(p))
                && let Some(first) = p.steps.first()
            {
                gm.escalation = Some(Escalation {
                    policy: p.name.clone(),
                    step: 0,
                    round: 0,
                    next_at_ms: now_ms.saturating_add(i64::try_from(first.wait_secs * 1000).unwrap_or(i64::MAX)),
                });
            }
        }
        // Resolved alerts leave the group once flushed; an empty group ends.
        for id in resolved_ids {
            gm.alerts.remove(&id);
            gm.announced.remove(&id);
        }
        if gm.alerts.is_empty() {
            self.groups.remove(key);
            self.deleted_groups.insert(key.to_string());
            self.dirty_groups.remove(key);
        } else {
            gm.next_flush_ms = now_ms.saturating_add(route.group_interval_ms);
            if gm
                .alerts
                .iter()
                .all(|a| self.alerts.get(a).is_none_or(|a| a.state != AlertState::Firing))
            {
                gm.escalation = None;
            }
            self.dirty_groups.insert(key.to_string());
        }
    }

    pub(super) fn escalate(&mut self, key: &str, now_ms: i64) {
        let Some(g) = self.groups.get(key).cloned() else { return };
        let Some(esc) = g.escalation.clone() else { return };
        let Some(policy) = self.policies.get(&esc.policy).cloned() else {
            return;
        };
        let firing: Vec<Alert> = g
            .alerts
            .iter()
            .filter_map(|id| self.alerts.get(id))
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| self.decorate(a, now_ms))
            .filter(|a| a.silenced_by.is_empty() && a.inhibited_by.is_empty())
            .collect();
        if firing.is_empty() {
            if let Some(gm) = self.groups.get_mut(key) {
                gm.escalation = None;
                self.dirty_groups.insert(key.to_string());
            }
            return;
        }
        let Some(step) = policy.steps.get(esc.step) else { return };
        let mut receivers = step.receivers.clone();
        for schedule in &step.schedules {
            // The person on call now, through their own receiver; a step that finds nobody
            // says so in the audit log rather than failing silently.
            match self.on_call_receiver(schedule, now_ms) {
                Ok(r) if !receivers.contains(&r) => receivers.push(r),
                Ok(_) => {}
                Err(why) => self.audit(now_ms, "vigil", "escalation_unrouted", &g.key, why),
            }
        }
        for r in receivers {
            self.enqueue(
                &g,
                r,
                NotifyReason::Escalation,
                Some(esc.step + 1),
                "firing",
                firing.clone(),
                now_ms,
            );
        }
        let (mut next, mut round) = (esc.step + 1, esc.round);
        if next >= policy.steps.len() {
            next = 0;
            round += 1;
        }
        let more = round <= policy.repeat;
        if let Some(gm) = self.groups.get_mut(key) {
            gm.escalation = more.then(|| Escalation {
                policy: esc.policy.clone(),
                step: next,
                round,
                next_at_ms: now_ms
                    .saturating_add(i64::try_from(policy.steps[next].wait_secs * 1000).unwrap_or(i64::MAX)),
            });
            self.dirty_groups.insert(key.to_string());
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn enqueue(
        &mut self,
        g: &Group,
        receiver: String,
        reason: NotifyReason,
        step: Option<usize>,
        status: &str,
        alerts: Vec<Alert>,
        now_ms: i64,
    ) {
        let seq = self.next_seq();
        let n = Notification {
            id: format!("{}/{receiver}/{seq}", g.key),
            group_key: alertmanager::group_key(&self.routes, &g.route_id, &g.labels),
            receiver,
            reason,
            step,
            status: status.to_string(),
            group_labels: g.labels.clone(),
            alerts,
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        };
        self.dirty_outbox.insert(n.id.clone());
        self.outbox.insert(n.id.clone(), n);
    }

    /// Notifications due for a delivery attempt.
    pub fn due(&self, now_ms: i64) -> Vec<Notification> {
        self.outbox
            .values()
            .filter(|n| n.next_attempt_ms <= now_ms)
            .cloned()
            .collect()
    }

    /// Every notification waiting for delivery.
    pub fn pending(&self) -> Vec<Notification> {
        self.outbox.values().cloned().collect()
    }

    /// The receiver took notification `id`; `answer` is what it said.
    pub fn delivered(&mut self, id: &str, answer: &str, now_ms: i64) {
        if let Some(n) = self.outbox.remove(id) {
            self.record_delivery(&n, now_ms, DeliveryOutcome::Delivered, answer);
            self.dirty_outbox.remove(id);
            self.deleted_outbox.insert(id.to_string());
        }
    }

    pub(super) fn record_delivery(&mut self, n: &Notification, now_ms: i64, outcome: DeliveryOutcome, answer: &str) {
        let seq = self.next_seq();
        self.new_deliveries.push(Delivery::of(n, seq, now_ms, outcome, answer));
    }

    /// Schedules a retry with exponential backoff, or gives up after [`MAX_ATTEMPTS`].
    pub fn failed(&mut self, id: &str, error: &str, now_ms: i64) {
        let Some(n) = self.outbox.get(id).cloned() else { return };
        let last = n.attempts + 1 >= MAX_ATTEMPTS;
        let outcome = if last {
            DeliveryOutcome::Abandoned
        } else {
            DeliveryOutcome::Failed
        };
        self.record_delivery(&n, now_ms, outcome, error);
        let Some(n) = self.outbox.get_mut(id) else { return };
        n.attempts += 1;
        n.last_error = Some(error.to_string());
        if last {
            let receiver = n.receiver.clone();
            self.outbox.remove(id);
            self.dirty_outbox.remove(id);
            self.deleted_outbox.insert(id.to_string());
            self.audit(
                now_ms,
                "vigil",
                "delivery_abandoned",
                id,
                format!("{receiver}: {error}"),
            );
            return;
        }
        let backoff = (1000i64 << n.attempts.min(20)).min(MAX_BACKOFF_MS);
        n.next_attempt_ms = now_ms.saturating_add(backoff);
        self.dirty_outbox.insert(id.to_string());
    }
}

fn hash_of(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain([0u8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
