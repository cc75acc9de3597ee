//! On-call schedules as `GET /api/v1/schedules` answers them: the alerting crate's `Layer`,
//! `Override` and `Shift`, serialized as they are, inside the collector's schedule view.

use serde::Deserialize;

/// One rotation of people.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Layer {
    /// May be empty: the page says "layer" then.
    #[serde(default)]
    pub(crate) name: String,
    /// `daily` or `weekly`. Kept as the API's word, which is what the page shows.
    pub(crate) rotation: String,
    /// Local time of the hand-off, `HH:MM`.
    pub(crate) handoff: String,
    /// Weekly rotations' hand-off day; left out otherwise.
    #[serde(default)]
    pub(crate) handoff_day: Option<String>,
    /// In turn order.
    pub(crate) users: Vec<String>,
}

/// One person on call for a stretch, over every layer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Override {
    /// Who.
    pub(crate) user: String,
    /// Unix milliseconds.
    pub(crate) start_ms: i64,
    /// Unix milliseconds.
    pub(crate) end_ms: i64,
    /// Who set it; the alerting crate reads it as optional, so it may be missing.
    #[serde(default)]
    pub(crate) created_by: String,
}

/// Who is on call for a stretch, and why.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Shift {
    /// Who.
    pub(crate) user: String,
    /// Unix milliseconds.
    pub(crate) start_ms: i64,
    /// Unix milliseconds.
    pub(crate) end_ms: i64,
    /// The layer's name, or "override".
    pub(crate) source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_read_with_and_without_a_hand_off_day() {
        let layers: Vec<Layer> = serde_json::from_value(serde_json::json!([
            {"name": "", "rotation": "daily", "handoff": "09:00", "start": "2026-01-01", "users": ["a", "b"]},
            {"name": "w", "rotation": "weekly", "handoff": "09:00", "handoff_day": "monday",
             "start": "2026-01-01", "users": ["c"]}
        ]))
        .expect("layers");
        assert_eq!(layers[0].handoff_day, None);
        assert_eq!(layers[1].handoff_day.as_deref(), Some("monday"));
        assert_eq!(layers[1].rotation, "weekly");
    }
}
