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
    let incident: Value = eventually(
        Duration::from_secs(240),
        &format!("an incident naming {service}"),
        || {
            let (client, url, wanted) = (client.clone(), url.clone(), wanted.clone());
            async move {
                let (_, body) = get_json(&client, &url).await?;
                Ok(body["incidents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| {
                        i["services"]
                            .as_array()
                            .is_some_and(|s| s.iter().any(|x| x == wanted.as_str()))
                            && i["candidates"][0]["service"] == wanted.as_str()
                    })
                    .cloned())
            }
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}",
            c.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        )
    })?;
    let id = incident["id"].as_str().unwrap_or_default();
    assert!(
        incident["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{service} likely root cause: ")),
        "{incident}"
    );
    // One incident, one alert: the alert appears with the incident (same detection step).
    let (_, alerts) = get_json(&client, &c.api_url("/api/v1/alerts")).await?;
    let for_incident: Vec<&Value> = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["incident"] == id)
        .collect();
    assert_eq!(for_incident.len(), 1, "{alerts}");
    assert_eq!(for_incident[0]["annotations"]["service"], service);
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
