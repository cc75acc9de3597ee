//! What each kind of receiver is sent.
//!
//! - webhook: Alertmanager's v4 webhook payload unchanged (existing consumers keep working),
//!   plus a `vigil` object: notification id and reason, escalation step, incident id, root
//!   cause summary, report URL and one-click action URLs.
//! - slack: an incoming-webhook message (`text` plus `blocks`).
//! - pagerduty: Events API v2, with the group key as `dedup_key` so trigger, acknowledge and
//!   resolve land on one PagerDuty incident.
//! - email: a subject and a plain-text body ([`email`]); the collector sends it over SMTP.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::alert::{Alert, AlertState};
use crate::config::{ReceiverConfig, ReceiverKind};
use crate::engine::Notification;
use crate::labels::LabelSet;
use crate::sign::LinkAction;

/// Where humans and links point.
pub struct Context<'a> {
    /// Base URL of the collector's API as users reach it (for links).
    pub external_url: &'a str,
    /// Builds the signed one-click URL for an alert and action.
    pub link: &'a dyn Fn(&Notification, &Alert, LinkAction) -> Option<String>,
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Labels every alert of the notification shares.
fn common(alerts: &[Alert], get: impl Fn(&Alert) -> &LabelSet) -> LabelSet {
    let Some(first) = alerts.first() else {
        return LabelSet::new();
    };
    get(first)
        .iter()
        .filter(|(k, v)| alerts.iter().all(|a| get(a).get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What an alert says about itself: its summary, else its description.
fn summary(a: &Alert) -> String {
    a.annotations
        .get("summary")
        .or_else(|| a.annotations.get("description"))
        .cloned()
        .unwrap_or_default()
}

fn alert_status(a: &Alert) -> &'static str {
    if a.state == AlertState::Resolved {
        "resolved"
    } else {
        "firing"
    }
}

/// The JSON body for an HTTP receiver (an email receiver gets the webhook's, unused).
pub fn body(receiver: &ReceiverConfig, n: &Notification, ctx: &Context<'_>) -> Value {
    match receiver.kind {
        ReceiverKind::Webhook | ReceiverKind::Email => webhook(receiver, n, ctx),
        ReceiverKind::Slack => slack(n, ctx),
        ReceiverKind::Pagerduty => pagerduty(receiver, n, ctx),
    }
}

/// An e-mail's subject and plain-text body: what fires or resolved, each alert's summary
/// and labels, the one-click links, the root cause and the report when there is one.
pub fn email(n: &Notification, ctx: &Context<'_>) -> (String, String) {
    let mut text = String::new();
    let first = n.alerts.first();
    let ann = |k: &str| first.and_then(|a| a.annotations.get(k)).cloned();
    if let Some(cause) = ann("vigil_root_cause") {
        text.push_str(&format!("Likely root cause: {cause}\n\n"));
    }
    for a in &n.alerts {
        let summary = summary(a);
        text.push_str(&format!(
            "[{}] {} {summary}\n",
            alert_status(a).to_uppercase(),
            a.name()
        ));
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(
            "  labels: {}\n  since: {}\n",
            labels.join(", "),
            rfc3339(a.starts_at_ms)
        ));
        if a.state == AlertState::Firing {
            for (action, word) in [(LinkAction::Ack, "Acknowledge"), (LinkAction::Resolve, "Resolve")] {
                if let Some(url) = (ctx.link)(n, a, action) {
                    text.push_str(&format!("  {word}: {url}\n"));
                }
            }
        }
        text.push('\n');
    }
    if let Some(report) = ann("vigil_report_url") {
        text.push_str(&format!("Report: {report}\n"));
    }
    text.push_str(&format!("Vigil: {}\n", ctx.external_url));
    (title(n), text)
}

fn vigil_extra(n: &Notification, ctx: &Context<'_>) -> Value {
    let first = n.alerts.first();
    let ann = |k: &str| first.and_then(|a| a.annotations.get(k)).cloned();
    let actions: serde_json::Map<String, Value> = n
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| {
            (
                a.id.clone(),
                json!({
                    "ack": (ctx.link)(n, a, LinkAction::Ack),
                    "resolve": (ctx.link)(n, a, LinkAction::Resolve),
                }),
            )
        })
        .collect();
    json!({
        "notificationId": n.id,
        "reason": n.reason,
        "escalationStep": n.step,
        "incidentId": ann("vigil_incident_id"),
        "rootCause": ann("vigil_root_cause"),
        "reportURL": ann("vigil_report_url"),
        "actionURLs": actions,
    })
}

fn webhook(receiver: &ReceiverConfig, n: &Notification, ctx: &Context<'_>) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": alert_status(a),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": if a.state == AlertState::Resolved { rfc3339(a.ends_at_ms) } else { "0001-01-01T00:00:00Z".into() },
                "generatorURL": a.generator_url,
                "fingerprint": a.id,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": receiver.name,
        "groupLabels": n.group_labels,
        "commonLabels": common(&n.alerts, |a| &a.labels),
        "commonAnnotations": common(&n.alerts, |a| &a.annotations),
        "externalURL": ctx.external_url,
        "alerts": alerts,
        "vigil": vigil_extra(n, ctx),
    })
}

fn title(n: &Notification) -> String {
    let name = n
        .group_labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| "alert".into());
    let firing = n.alerts.iter().filter(|a| a.state != AlertState::Resolved).count();
    let escalation = n.step.map(|s| format!(" (escalation step {s})")).unwrap_or_default();
    if n.status == "resolved" {
        format!("[RESOLVED] {name}{escalation}")
    } else {
        format!("[FIRING:{firing}] {name}{escalation}")
    }
}

fn slack(n: &Notification, ctx: &Context<'_>) -> Value {
    let mut lines = vec![format!("*{}*", title(n))];
    for a in &n.alerts {
        let summary = summary(a);
        let mut line = format!("• {} {}", alert_status(a), summary);
        if let Some(url) = (a.state == AlertState::Firing)
            .then(|| (ctx.link)(n, a, LinkAction::Ack))
            .flatten()
        {
            line.push_str(&format!(" <{url}|Acknowledge>"));
        }
        lines.push(line);
    }
    let text = lines.join("\n");
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

fn pagerduty(receiver: &ReceiverConfig, n: &Notification, ctx: &Context<'_>) -> Value {
    let action = if n.status == "resolved" {
        "resolve"
    } else if n.alerts.iter().all(|a| a.state == AlertState::Acknowledged) {
        "acknowledge"
    } else {
        "trigger"
    };
    let severity = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("severity"))
        .map(|s| match s.as_str() {
            "critical" | "page" => "critical",
            "error" => "error",
            "warning" => "warning",
            _ => "info",
        })
        .next()
        .unwrap_or("error");
    let mut event = json!({
        "routing_key": receiver.routing_key.clone().unwrap_or_default(),
        "event_action": action,
        "dedup_key": n.group_key,
    });
    if action == "trigger" {
        event["payload"] = json!({
            "summary": title(n),
            "source": n.alerts.first().and_then(|a| a.labels.get("service").or_else(|| a.labels.get("instance"))).cloned().unwrap_or_else(|| "vigil".into()),
            "severity": severity,
            "custom_details": {"alerts": n.alerts.iter().map(|a| json!({"labels": a.labels, "annotations": a.annotations})).collect::<Vec<_>>()},
        });
        event["links"] = json!([{"href": ctx.external_url, "text": "Vigil"}]);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertInput;
    use crate::config::AlertingConfig;
    use crate::engine::Alerting;

    fn notification(state_ack: bool) -> Notification {
        let mut a = Alerting::new(AlertingConfig::default()).expect("config");
        let id = a.upsert(
            AlertInput {
                labels: [
                    ("alertname", "HighLatency"),
                    ("service", "checkout"),
                    ("severity", "critical"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                annotations: [("summary".to_string(), "p99 over 2 s".to_string())].into(),
                ..AlertInput::default()
            },
            0,
        );
        if state_ack {
            a.tick(30_000);
            a.ack(&id, "ana", 31_000).expect("ack");
            a.tick(400_000);
        } else {
            a.tick(30_000);
        }
        a.due(i64::MAX).pop().expect("notification")
    }

    fn ctx_link(_: &Notification, a: &Alert, action: LinkAction) -> Option<String> {
        Some(format!("http://vigil/a/{}/{}", a.id, action.as_str()))
    }

    #[test]
    fn webhook_is_alertmanager_v4_plus_vigil_fields() {
        let n = notification(false);
        let ctx = Context {
            external_url: "http://vigil",
            link: &ctx_link,
        };
        let r = ReceiverConfig {
            name: "hook".into(),
            ..ReceiverConfig::default()
        };
        let v = body(&r, &n, &ctx);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "hook");
        assert_eq!(v["groupLabels"]["alertname"], "HighLatency");
        assert_eq!(v["commonLabels"]["service"], "checkout");
        assert_eq!(v["alerts"][0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        let id = n.alerts[0].id.clone();
        assert_eq!(v["vigil"]["actionURLs"][&id]["ack"], format!("http://vigil/a/{id}/ack"));
        assert_eq!(v["vigil"]["reason"], "initial");
    }

    #[test]
    fn pagerduty_uses_the_group_key_and_the_right_action() {
        let ctx = Context {
            external_url: "http://vigil",
            link: &ctx_link,
        };
        let r = ReceiverConfig {
            name: "pd".into(),
            kind: ReceiverKind::Pagerduty,
            routing_key: Some("R123".into()),
            ..ReceiverConfig::default()
        };
        let n = notification(false);
        let v = body(&r, &n, &ctx);
        assert_eq!(
            (v["event_action"].as_str(), v["dedup_key"].as_str()),
            (Some("trigger"), Some(n.group_key.as_str()))
        );
        assert_eq!(v["payload"]["severity"], "critical");
        assert_eq!(v["payload"]["summary"], "[FIRING:1] HighLatency");
        let slack = body(
            &ReceiverConfig {
                kind: ReceiverKind::Slack,
                ..r
            },
            &n,
            &ctx,
        );
        assert!(
            slack["text"].as_str().unwrap_or_default().contains("|Acknowledge>"),
            "{slack}"
        );
        let (subject, text) = email(&n, &ctx);
        assert_eq!(subject, "[FIRING:1] HighLatency");
        let id = &n.alerts[0].id;
        assert!(text.contains("[FIRING] HighLatency p99 over 2 s"), "{text}");
        assert!(
            text.contains(&format!("Acknowledge: http://vigil/a/{id}/ack")),
            "{text}"
        );
        assert!(
            text.contains("labels: alertname=HighLatency, service=checkout, severity=critical"),
            "{text}"
        );
    }
}
