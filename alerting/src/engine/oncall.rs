//! On-call schedules in the engine: kept with the alert state, changed with an audit entry,
//! and asked "whose receiver?" when an escalation step names a schedule.

use super::*;

impl Alerting {
    /// The receiver of whoever is on call in `schedule` at `now_ms`, or why there is none.
    pub(super) fn on_call_receiver(&self, schedule: &str, now_ms: i64) -> Result<String, String> {
        let s = self
            .schedules
            .get(schedule)
            .ok_or_else(|| format!("schedule {schedule:?} does not exist"))?;
        let compiled = s.compile().map_err(|e| format!("schedule {schedule:?}: {e}"))?;
        let who = compiled
            .on_call_at(now_ms)
            .ok_or_else(|| format!("nobody is on call in {schedule:?}"))?;
        self.people.get(&who.user).cloned().ok_or_else(|| {
            format!(
                "{} is on call in {schedule:?} but has no receiver (alerting.people)",
                who.user
            )
        })
    }

    /// Every on-call schedule.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.schedules.values().cloned().collect()
    }

    /// The schedule named `name`.
    pub fn schedule(&self, name: &str) -> Option<Schedule> {
        self.schedules.get(name).cloned()
    }

    /// Creates or replaces a schedule's rotations (its overrides stay).
    pub fn put_schedule(&mut self, mut s: Schedule, by: &str, now_ms: i64) -> Result<(), ActionError> {
        if let Some(old) = self.schedules.get(&s.name) {
            s.overrides = old.overrides.clone();
        } else {
            s.overrides.clear();
        }
        s.compile().map_err(ActionError::Invalid)?;
        s.updated_ms = now_ms;
        s.updated_by = by.to_string();
        let detail = format!(
            "{} layer(s) in {}: {}",
            s.layers.len(),
            s.time_zone,
            s.layers
                .iter()
                .map(|l| format!("{:?} at {} of {}", l.rotation, l.handoff, l.users.join(", ")).to_lowercase())
                .collect::<Vec<_>>()
                .join("; ")
        );
        let name = s.name.clone();
        self.schedules.insert(name.clone(), s);
        self.dirty_schedules.insert(name.clone());
        self.deleted_schedules.remove(&name);
        self.audit(now_ms, by, "schedule_update", &name, detail);
        Ok(())
    }

    /// Deletes a schedule; audited under `by`.
    pub fn delete_schedule(&mut self, name: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        if self.schedules.remove(name).is_none() {
            return Err(ActionError::UnknownSchedule(name.to_string()));
        }
        self.dirty_schedules.remove(name);
        self.deleted_schedules.insert(name.to_string());
        self.audit(now_ms, by, "schedule_delete", name, String::new());
        Ok(())
    }

    /// Puts `user` on call in `schedule` from `start_ms` to `end_ms`, over every layer.
    pub fn add_override(
        &mut self,
        schedule: &str,
        user: &str,
        (start_ms, end_ms): (i64, i64),
        by: &str,
        now_ms: i64,
    ) -> Result<String, ActionError> {
        if end_ms <= start_ms {
            return Err(ActionError::Invalid("end must be after start".into()));
        }
        if user.trim().is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
            return Err(ActionError::Invalid("user: 1 to 64 printable characters".into()));
        }
        let id = format!("o{:08}", self.next_seq());
        let s = self
            .schedules
            .get_mut(schedule)
            .ok_or_else(|| ActionError::UnknownSchedule(schedule.to_string()))?;
        s.overrides.push(Override {
            id: id.clone(),
            user: user.to_string(),
            start_ms,
            end_ms,
            created_by: by.to_string(),
        });
        // Past overrides are dropped a week after they end: the audit log keeps them.
        s.overrides.retain(|o| o.end_ms + 7 * 86_400_000 > now_ms);
        self.dirty_schedules.insert(schedule.to_string());
        self.audit(
            now_ms,
            by,
            "override_create",
            schedule,
            format!("{user} from {start_ms} to {end_ms} ({id})"),
        );
        Ok(id)
    }

    /// Removes override `id` from a schedule; audited under `by`.
    pub fn delete_override(&mut self, schedule: &str, id: &str, by: &str, now_ms: i64) -> Result<(), ActionError> {
        let s = self
            .schedules
            .get_mut(schedule)
            .ok_or_else(|| ActionError::UnknownSchedule(schedule.to_string()))?;
        let before = s.overrides.len();
        s.overrides.retain(|o| o.id != id);
        if s.overrides.len() == before {
            return Err(ActionError::Invalid(format!("no override {id:?} in {schedule:?}")));
        }
        self.dirty_schedules.insert(schedule.to_string());
        self.audit(now_ms, by, "override_delete", schedule, id.to_string());
        Ok(())
    }
}
