//! Alerting configuration: the routing tree, receivers, inhibition rules and escalation
//! policies, Alertmanager-shaped so an existing configuration translates line by line.
//! Durations are in seconds. Every error names the key that is wrong.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::matcher::{Matcher, parse_matchers};

/// The `[alerting]` section: Alertmanager-shaped routing, receivers, inhibition,
/// escalation and the people on call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// The routing tree's root; it must name a receiver.
    pub route: RouteConfig,
    /// Where notifications go; names must be unique.
    pub receivers: Vec<ReceiverConfig>,
    /// Alerts that mute others while they fire.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Named escalation policies routes may use.
    pub escalation_policies: Vec<EscalationPolicyConfig>,
    /// An alert that stops being re-sent is resolved after this long (Alertmanager's
    /// `resolve_timeout`).
    pub resolve_timeout_secs: u64,
    /// How to reach each person on on-call schedules: their own receiver.
    pub people: Vec<PersonConfig>,
}

/// A person who can be on call, and the receiver that reaches them (their Slack webhook,
/// PagerDuty user service, e-mail gateway…).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonConfig {
    /// The name schedules use.
    pub name: String,
    /// The receiver that reaches them (must exist).
    pub receiver: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            route: RouteConfig {
                receiver: Some("default".into()),
                ..RouteConfig::default()
            },
            receivers: vec![ReceiverConfig {
                name: "default".into(),
                ..ReceiverConfig::default()
            }],
            inhibit_rules: Vec::new(),
            escalation_policies: Vec::new(),
            resolve_timeout_secs: 300,
            people: Vec::new(),
        }
    }
}

/// One node of the routing tree; unset values are inherited from the parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Inherited from the parent when absent.
    pub receiver: Option<String>,
    /// `name="value"`, `name=~"regex"`, … all must match.
    pub matchers: Vec<String>,
    /// Labels alerts are grouped by (one notification per group); `...` groups by all.
    pub group_by: Option<Vec<String>>,
    /// Wait before a new group's first notification, to gather its alerts.
    pub group_wait_secs: Option<u64>,
    /// Wait before notifying about alerts added to a group already notified.
    pub group_interval_secs: Option<u64>,
    /// Wait before re-sending a notification that has not changed.
    pub repeat_interval_secs: Option<u64>,
    /// Keep looking at later siblings after this route matched.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    /// Name of an escalation policy for groups of this route.
    pub escalation: Option<String>,
    /// Child routes, tried in order; the first match wins unless it says `continue`.
    pub routes: Vec<RouteConfig>,
}

/// The kind of endpoint a receiver sends to, which decides the payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Alertmanager v4 webhook payload, extended with Vigil fields.
    #[default]
    Webhook,
    /// Slack-compatible incoming webhook message.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// E-mail over SMTP (`url` is `smtp://host:port`, STARTTLS required, or
    /// `smtps://host:port`, TLS from the start).
    Email,
}

/// A named notification target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Referenced by routes, escalation steps and people.
    pub name: String,
    /// Payload format; a webhook when absent.
    pub kind: ReceiverKind,
    /// Where to POST; a receiver without a URL records notifications but sends nothing.
    pub url: Option<String>,
    /// PagerDuty integration (routing) key.
    pub routing_key: Option<String>,
    /// Per-request timeout in seconds; `None` takes the collector's default.
    pub timeout_secs: Option<u64>,
    /// E-mail: recipients, sender, and the SMTP login (if the server wants one).
    pub to: Vec<String>,
    /// E-mail sender address; required for an e-mail receiver.
    pub from: Option<String>,
    /// SMTP login name; set with `password` or not at all.
    pub username: Option<String>,
    /// SMTP password (never logged).
    pub password: Option<Password>,
}

/// A password from the configuration: never shown by `Debug` (configurations get logged).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// While an alert matching `source_matchers` fires, alerts matching `target_matchers`
/// (with the same values of the `equal` labels) are muted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers an inhibiting alert must satisfy; it inhibits while firing or acknowledged.
    pub source_matchers: Vec<String>,
    /// Matchers an inhibited alert must satisfy.
    pub target_matchers: Vec<String>,
    /// Labels that must be equal in source and target.
    pub equal: Vec<String>,
}

/// Who is notified, and when, while a group stays unacknowledged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationPolicyConfig {
    /// The name routes refer to.
    pub name: String,
    /// Run in order; a policy without steps never escalates.
    pub steps: Vec<EscalationStepConfig>,
    /// Times the whole list of steps is run again while nobody acknowledges (0 = once).
    pub repeat: u32,
}

/// One step of an escalation policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationStepConfig {
    /// Seconds after the previous step (after the first notification for step one).
    pub wait_secs: u64,
    /// Receivers notified at this step (by name; each must exist).
    pub receivers: Vec<String>,
    /// On-call schedules: the person on call in each, when the step runs, is notified
    /// through their own receiver (`people`).
    pub schedules: Vec<String>,
}

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The configuration key that is wrong, e.g. `alerting.receivers[2].url`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

pub(crate) fn parse_matcher_list(list: &[String], key: &str) -> Result<Vec<Matcher>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        out.extend(parse_matchers(m).map_err(|e| err(format!("{key}[{i}]"), e.to_string()))?);
    }
    Ok(out)
}

impl AlertingConfig {
    /// Checks references and syntax; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            if r.name.is_empty() {
                return Err(err(format!("receivers[{i}].name"), "must not be empty"));
            }
            if !names.insert(r.name.as_str()) {
                return Err(err(
                    format!("receivers[{i}].name"),
                    format!("duplicate receiver {:?}", r.name),
                ));
            }
            if r.kind == ReceiverKind::Email {
                let url = r.url.as_deref().unwrap_or("");
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(err(
                        format!("receivers[{i}].url"),
                        "an email receiver needs smtp://host:port (STARTTLS) or smtps://host:port",
                    ));
                }
                if r.to.is_empty() || r.to.iter().any(|a| !a.contains('@')) {
                    return Err(err(format!("receivers[{i}].to"), "needs one or more e-mail addresses"));
                }
                if !r.from.as_deref().is_some_and(|a| a.contains('@')) {
                    return Err(err(format!("receivers[{i}].from"), "needs the sender's e-mail address"));
                }
                if r.username.is_some() != r.password.is_some() {
                    return Err(err(
                        format!("receivers[{i}].password"),
                        "username and password go together",
                    ));
                }
            }
            if r.kind == ReceiverKind::Pagerduty && r.url.is_some() && r.routing_key.is_none() {
                return Err(err(
                    format!("receivers[{i}].routing_key"),
                    "required for a pagerduty receiver",
                ));
            }
        }
        let policies: BTreeSet<&str> = self.escalation_policies.iter().map(|p| p.name.as_str()).collect();
        for (i, p) in self.escalation_policies.iter().enumerate() {
            for (j, s) in p.steps.iter().enumerate() {
                for r in &s.receivers {
                    if !names.contains(r.as_str()) {
                        return Err(err(
                            format!("escalation_policies[{i}].steps[{j}].receivers"),
                            format!("unknown receiver {r:?}"),
                        ));
                    }
                }
                if s.receivers.is_empty() && s.schedules.is_empty() {
                    return Err(err(
                        format!("escalation_policies[{i}].steps[{j}]"),
                        "names no receiver and no schedule: nobody would be told",
                    ));
                }
            }
        }
        let mut people = BTreeSet::new();
        for (i, p) in self.people.iter().enumerate() {
            if p.name.trim().is_empty() || !people.insert(p.name.as_str()) {
                return Err(err(
                    format!("people[{i}].name"),
                    format!("{:?} is empty or named twice", p.name),
                ));
            }
            if !names.contains(p.receiver.as_str()) {
                return Err(err(
                    format!("people[{i}].receiver"),
                    format!("unknown receiver {:?}", p.receiver),
                ));
            }
        }
        for (i, rule) in self.inhibit_rules.iter().enumerate() {
            parse_matcher_list(&rule.source_matchers, &format!("inhibit_rules[{i}].source_matchers"))?;
            parse_matcher_list(&rule.target_matchers, &format!("inhibit_rules[{i}].target_matchers"))?;
        }
        if self.route.receiver.is_none() {
            return Err(err("route.receiver", "the root route needs a receiver"));
        }
        fn walk(
            r: &RouteConfig,
            key: &str,
            names: &BTreeSet<&str>,
            policies: &BTreeSet<&str>,
        ) -> Result<(), ConfigError> {
            if let Some(rc) = &r.receiver
                && !names.contains(rc.as_str())
            {
                return Err(err(format!("{key}.receiver"), format!("unknown receiver {rc:?}")));
            }
            if let Some(p) = &r.escalation
                && !policies.contains(p.as_str())
            {
                return Err(err(
                    format!("{key}.escalation"),
                    format!("unknown escalation policy {p:?}"),
                ));
            }
            parse_matcher_list(&r.matchers, &format!("{key}.matchers"))?;
            for (i, c) in r.routes.iter().enumerate() {
                walk(c, &format!("{key}.routes[{i}]"), names, policies)?;
            }
            Ok(())
        }
        walk(&self.route, "route", &names, &policies)
    }
}
