//! The routing tree: which receivers, with which grouping and timers, an alert goes to.
//! Semantics follow Alertmanager: depth first; the first matching child wins unless it says
//! `continue`; a node none of whose children match is itself the match; children inherit
//! what they do not set.

use crate::config::{ConfigError, RouteConfig, parse_matcher_list};
use crate::labels::LabelSet;
use crate::matcher::{Matcher, all_match};

/// Default wait before a new group's first notification (Alertmanager's 30 s).
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
/// Default wait before notifying about alerts added to a group (Alertmanager's 5 m).
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 300_000;
/// Default wait before re-sending an unchanged notification (Alertmanager's 4 h).
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;

/// A routing tree node, built and checked from a [`RouteConfig`](crate::RouteConfig); parents' values filled in.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree ("0", "0.1", …): stable while the config is.
    pub id: String,
    /// The receiver for alerts that stop here.
    pub receiver: String,
    /// All must match for an alert to enter this route.
    pub matchers: Vec<Matcher>,
    /// Labels alerts are grouped by: `alertname` at the root unless configured; `...` groups
    /// by every label.
    pub group_by: Vec<String>,
    /// Wait before a new group's first notification, ms (configured in seconds).
    pub group_wait_ms: i64,
    /// Wait before notifying about alerts added to a group, ms.
    pub group_interval_ms: i64,
    /// Wait before re-sending an unchanged notification while an alert is unacknowledged, ms.
    pub repeat_interval_ms: i64,
    /// Keep trying later siblings after a match.
    pub continue_matching: bool,
    /// Name of the escalation policy for this route's groups, inherited; `None`: no escalation.
    pub escalation: Option<String>,
    /// Child routes, in order.
    pub children: Vec<Route>,
}

fn secs(v: Option<u64>, parent: i64) -> i64 {
    v.map_or(parent, |s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
}

impl Route {
    /// Builds the tree from configuration (validated separately for references).
    pub fn build(cfg: &RouteConfig) -> Result<Route, ConfigError> {
        let root = Route {
            id: "0".into(),
            receiver: cfg.receiver.clone().unwrap_or_default(),
            matchers: Vec::new(),
            group_by: cfg.group_by.clone().unwrap_or_else(|| vec!["alertname".into()]),
            group_wait_ms: secs(cfg.group_wait_secs, DEFAULT_GROUP_WAIT_MS),
            group_interval_ms: secs(cfg.group_interval_secs, DEFAULT_GROUP_INTERVAL_MS),
            repeat_interval_ms: secs(cfg.repeat_interval_secs, DEFAULT_REPEAT_INTERVAL_MS),
            continue_matching: false,
            escalation: cfg.escalation.clone(),
            children: Vec::new(),
        };
        Self::children_of(root, cfg, "route")
    }

    fn children_of(mut node: Route, cfg: &RouteConfig, key: &str) -> Result<Route, ConfigError> {
        for (i, c) in cfg.routes.iter().enumerate() {
            let ckey = format!("{key}.routes[{i}]");
            let child = Route {
                id: format!("{}.{i}", node.id),
                receiver: c.receiver.clone().unwrap_or_else(|| node.receiver.clone()),
                matchers: parse_matcher_list(&c.matchers, &format!("{ckey}.matchers"))?,
                group_by: c.group_by.clone().unwrap_or_else(|| node.group_by.clone()),
                group_wait_ms: secs(c.group_wait_secs, node.group_wait_ms),
                group_interval_ms: secs(c.group_interval_secs, node.group_interval_ms),
                repeat_interval_ms: secs(c.repeat_interval_secs, node.repeat_interval_ms),
                continue_matching: c.continue_matching,
                escalation: c.escalation.clone().or_else(|| node.escalation.clone()),
                children: Vec::new(),
            };
            node.children.push(Self::children_of(child, c, &ckey)?);
        }
        Ok(node)
    }

    /// The routes that take an alert with these labels.
    pub fn matches<'a>(&'a self, labels: &LabelSet) -> Vec<&'a Route> {
        let mut out = Vec::new();
        self.walk(labels, &mut out);
        out
    }

    fn walk<'a>(&'a self, labels: &LabelSet, out: &mut Vec<&'a Route>) -> bool {
        if !all_match(&self.matchers, labels) {
            return false;
        }
        let mut any = false;
        for c in &self.children {
            if c.walk(labels, out) {
                any = true;
                if !c.continue_matching {
                    break;
                }
            }
        }
        if !any {
            out.push(self);
        }
        true
    }

    /// Finds a route by id.
    pub fn find(&self, id: &str) -> Option<&Route> {
        if self.id == id {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn tree() -> Route {
        let cfg: RouteConfig = serde_json::from_value(serde_json::json!({
            "receiver": "default",
            "group_by": ["alertname"],
            "routes": [
                {"matchers": ["team=\"db\""], "receiver": "db-pager", "group_wait_secs": 10},
                {"matchers": ["severity=~\"critical|page\""], "receiver": "oncall", "continue": true,
                 "routes": [{"matchers": ["service=\"checkout\""], "receiver": "payments"}]},
                {"matchers": ["severity=\"critical\""], "receiver": "audit-log"}
            ]
        }))
        .expect("config");
        Route::build(&cfg).expect("builds")
    }

    fn receivers(r: &Route, l: &LabelSet) -> Vec<String> {
        r.matches(l).iter().map(|r| r.receiver.clone()).collect()
    }

    #[test]
    fn first_match_wins_unless_continue_and_leaves_win_over_parents() {
        let t = tree();
        assert_eq!(
            receivers(&t, &labels(&[("team", "db"), ("severity", "critical")])),
            ["db-pager"]
        );
        assert_eq!(
            receivers(&t, &labels(&[("severity", "critical")])),
            ["oncall", "audit-log"]
        );
        assert_eq!(
            receivers(&t, &labels(&[("severity", "page"), ("service", "checkout")])),
            ["payments"],
            "the child matched; continue on the parent does not reach the critical-only sibling"
        );
        assert_eq!(receivers(&t, &labels(&[("severity", "warning")])), ["default"]);
    }

    #[test]
    fn children_inherit_timers_and_grouping() {
        let t = tree();
        let db = t.find("0.0").expect("db route");
        assert_eq!(db.group_wait_ms, 10_000);
        assert_eq!(db.group_interval_ms, DEFAULT_GROUP_INTERVAL_MS);
        assert_eq!(db.group_by, ["alertname"]);
        assert_eq!(t.find("0.1.0").expect("payments").receiver, "payments");
    }
}
