//! The demo end to end, once per fault type: the simulated fleet sends real OTLP to the real
//! collector at 600x simulated speed; after the warm-up the injected fault must show up as an
//! incident that ranks the broken service first and raises exactly one alert.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use vigil_e2e::{Collector, eventually, get_json};

async fn fault_is_found(fault: &str, service: &str, seed: u64) -> Result<()> {
    let c = Collector::start_demo(fault, service, seed)?;
    let client = reqwest::Client::new();
    let url = c.api_url("/api/v1/incidents?status=open");
    let wanted = service.to_string();
    let incident: Result<Value> = eventually(
        Duration::from_secs(240),
        &format!("an incident naming {service}"),
        || {
            let (client, url, wanted) = (client.clone(), url.clone(), wanted.clone());
            async move {
                let (_, body) = get_json(&client, &url).await?;
                let incidents = body["incidents"].as_array().cloned().unwrap_or_default();
                let found = incidents.iter().find(|i| {
                    i["services"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x == wanted.as_str()))
                        && i["candidates"][0]["service"] == wanted.as_str()
                });
                match found {
                    Some(i) => Ok(Some(i.clone())),
                    // Say what there is, so a timeout shows how the incidents went wrong.
                    None if !incidents.is_empty() => Err(anyhow::anyhow!(
                        "open incidents, none led by {wanted}: {:?}",
                        incidents
                            .iter()
                            .map(|i| (
                                i["start_ms"].clone(),
                                i["services"].clone(),
                                i["candidates"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .take(3)
                                    .map(|c| c["service"].clone())
                                    .collect::<Vec<_>>()
                            ))
                            .collect::<Vec<_>>()
                    )),
                    None => Ok(None),
                }
            }
        },
    )
    .await;
    let incident = match incident {
        Ok(i) => i,
        Err(e) => {
            // What the detectors saw, so a timeout says whether the fault's data was late,
            // found and not grouped, or not found at all.
            let detect = match client.get(c.api_url("/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            let detect: Vec<&str> = detect
                .lines()
                .filter(|l| l.starts_with("vigil_detect_") || l.starts_with("vigil_anomaly"))
                .collect();
            let (_, findings) = get_json(&client, &c.api_url("/api/v1/anomalies?limit=20"))
                .await
                .unwrap_or_default();
            anyhow::bail!(
                "{e}\n{}\nfindings: {findings}\n{}",
                detect.join("\n"),
                c.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
            );
        }
    };
    let id = incident["id"].as_str().unwrap_or_default();
    // The investigations say how far they have got, for whoever waits on them (the Nezha
    // harness): a pass finished past the incident's start, nothing left to investigate.
    let start_s = incident["start_ms"].as_f64().unwrap_or(f64::MAX) / 1000.0;
    eventually(
        Duration::from_secs(60),
        "the investigations' pass past the incident",
        || {
            let (client, url) = (client.clone(), c.api_url("/metrics"));
            async move {
                let text = client.get(url).send().await?.text().await?;
                let value = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                };
                let at = value("vigil_investigations_settled_time_seconds").unwrap_or(0.0);
                Ok((at > start_s && value("vigil_investigations_due") == Some(0.0)).then_some(()))
            }
        },
    )
    .await?;
    assert!(
        incident["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{service} likely root cause: ")),
        "{incident}"
    );
    // One incident, one alert. The alert is raised once the incident holds a warning-level
    // finding, which may be a detection step after the investigation ranked it.
    let alerts = eventually(Duration::from_secs(60), "the incident's alert", || {
        let (client, url) = (client.clone(), c.api_url("/api/v1/alerts"));
        let id = id.to_string();
        async move {
            let (_, alerts) = get_json(&client, &url).await?;
            let raised = alerts["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["labels"]["incident"] == id.as_str());
            Ok(raised.then_some(alerts))
        }
    })
    .await?;
    let for_incident: Vec<&Value> = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["incident"] == id)
        .collect();
    assert_eq!(for_incident.len(), 1, "{alerts}");
    assert_eq!(for_incident[0]["annotations"]["service"], service);
    // The alert carries the likely root cause and the severity as labels, so a silence on the
    // service matches it.
    let alert = for_incident[0].clone();
    let labelled = alert["labels"]["service"].as_str().unwrap_or_default().to_string();
    assert!(
        incident["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == labelled.as_str())),
        "{alert}"
    );
    assert!(
        matches!(alert["labels"]["severity"].as_str(), Some("warning" | "critical")),
        "{alert}"
    );
    let silence = client
        .post(c.api_url("/api/v1/silences"))
        .json(&serde_json::json!({
            "matchers": format!("{{service=\"{labelled}\"}}"),
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test",
        }))
        .send()
        .await?;
    assert_eq!(silence.status().as_u16(), 200);
    let (_, silenced) = get_json(&client, &c.api_url("/api/v1/alerts?state=silenced")).await?;
    assert!(
        silenced["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["id"] == alert["id"]),
        "{silenced}"
    );
    Ok(())
}

#[tokio::test]
async fn cpu_saturation() -> Result<()> {
    fault_is_found("cpu", "payment", 11).await
}

#[tokio::test]
async fn added_latency() -> Result<()> {
    fault_is_found("latency", "inventory", 12).await
}

#[tokio::test]
async fn error_burst() -> Result<()> {
    fault_is_found("errors", "checkout", 13).await
}

#[tokio::test]
async fn memory_leak() -> Result<()> {
    fault_is_found("memory", "catalogue", 14).await
}

#[tokio::test]
async fn dependency_down() -> Result<()> {
    fault_is_found("down", "payment", 15).await
}

/// A service that is down sends nothing; its callers' client spans still name it, so the
/// service graph keeps the edge to it, drawn failing.
#[tokio::test]
async fn a_dead_dependency_is_a_failing_edge() -> Result<()> {
    let c = Collector::start_demo("down", "payment", 16)?;
    let client = reqwest::Client::new();
    let url = c.api_url("/api/v1/services/graph");
    let edge: Value = eventually(Duration::from_secs(240), "a failing edge to payment", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (_, graph) = get_json(&client, &url).await?;
            Ok(graph["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["to"] == "payment" && e["error_ratio"].as_f64().unwrap_or(0.0) > 0.5)
                .cloned())
        }
    })
    .await?;
    assert_eq!(edge["from"], "checkout", "{edge}");
    Ok(())
}

/// The demo's `errors` fault on a fleet whose services log a few errors all along: no
/// incident may open before the fault (that background used to page "critical" during the
/// warm-up), and the fault itself is found.
#[tokio::test]
async fn no_incident_before_an_error_burst() -> Result<()> {
    let c = Collector::start_demo("errors", "payment", 11)?;
    let client = reqwest::Client::new();
    let fault_start_ms: i64 = eventually(Duration::from_secs(30), "the demo's fault time in its log", || {
        let logs = c.logs();
        async move {
            Ok(logs
                .lines()
                .find(|l| l.contains("demo: the fault starts"))
                .and_then(|l| l.split("fault_start_ms=").nth(1))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok()))
        }
    })
    .await?;
    let url = c.api_url("/api/v1/incidents?start=0&limit=1000");
    let incidents: Vec<Value> = eventually(Duration::from_secs(240), "an incident naming payment", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (_, body) = get_json(&client, &url).await?;
            let all: Vec<Value> = body["incidents"].as_array().cloned().unwrap_or_default();
            let found = all.iter().any(|i| i["candidates"][0]["service"] == "payment");
            Ok(found.then_some(all))
        }
    })
    .await?;
    // Findings carry their interval's start: the fault's own minute may begin up to a
    // minute before the fault.
    let early: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["start_ms"].as_i64().unwrap_or(0) < fault_start_ms - 60_000)
        .collect();
    assert!(
        early.is_empty(),
        "incidents before the fault at {fault_start_ms}: {early:#?}"
    );
    Ok(())
}
