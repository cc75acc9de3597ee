//! On-call schedules end to end: a schedule and an override set through the API, "who is on
//! call" answered from them, an escalation step paging whoever is on call through their own
//! receiver (a real HTTP server per person), the iCalendar feed behind its signed link, bad
//! input refused with the field named, the audit trail, the UI page, and all of it still
//! there after a kill -9.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use vigil_e2e::receiver::Receiver;
use vigil_e2e::{Collector, Options, eventually, get_json};

fn config(hook: &Receiver, ana: &Receiver, bo: &Receiver) -> String {
    format!(
        r#"
[alerting.route]
receiver = "hook"
group_by = ["alertname"]
group_wait_secs = 1
group_interval_secs = 1
repeat_interval_secs = 3600
escalation = "page"

[[alerting.escalation_policies]]
name = "page"
steps = [{{ wait_secs = 1, schedules = ["primary"] }}]

[[alerting.receivers]]
name = "hook"
url = "{}"

[[alerting.receivers]]
name = "ana-phone"
url = "{}"

[[alerting.receivers]]
name = "bo-phone"
url = "{}"

[[alerting.people]]
name = "ana"
receiver = "ana-phone"

[[alerting.people]]
name = "bo"
receiver = "bo-phone"
"#,
        hook.url("/hook"),
        ana.url("/ana"),
        bo.url("/bo")
    )
}

fn start(data: &std::path::Path, cfg: &str) -> Result<Collector> {
    let path = data.with_extension("toml");
    std::fs::write(&path, cfg)?;
    Collector::start_with(Options {
        data_dir: Some(data.to_path_buf()),
        args: vec!["--config".into(), path.display().to_string()],
        ..Options::default()
    })
}

/// Waits until `receiver` took an escalation about `alertname`.
async fn escalated(receiver: &Receiver, alertname: &str) -> Result<()> {
    let (r, name) = (receiver.clone(), alertname.to_string());
    eventually(
        Duration::from_secs(30),
        &format!("an escalation about {alertname}"),
        move || {
            let (r, name) = (r.clone(), name.clone());
            async move {
                Ok(r.delivered_for(&name)
                    .iter()
                    .any(|c| c.json["vigil"]["reason"] == "escalation")
                    .then_some(()))
            }
        },
    )
    .await
}

async fn send(client: &reqwest::Client, method: reqwest::Method, url: String, body: Value) -> Result<(u16, Value)> {
    let r = client.request(method, url).json(&body).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn schedules_overrides_escalation_to_whoever_is_on_call_and_the_calendar_feed() -> Result<()> {
    let (hook, ana, bo) = (
        Receiver::start().await?,
        Receiver::start().await?,
        Receiver::start().await?,
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let cfg = config(&hook, &ana, &bo);
    let c = start(&data, &cfg)?;
    let client = reqwest::Client::new();
    let api = |p: &str| c.api_url(p);

    // A weekly rotation of one person in Berlin, started two days ago: ana is on call.
    let two_days_ago = time_of(-2)?;
    let (status, body) = send(
        &client,
        reqwest::Method::PUT,
        api("/api/v1/schedules/primary"),
        json!({"time_zone": "Europe/Berlin", "layers": [
            {"name": "day", "rotation": "daily", "handoff": "09:00", "start": two_days_ago, "users": ["ana"]}
        ]}),
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    ensure!(body["on_call"]["user"] == "ana", "{body}");
    let (_, now) = get_json(&client, &api("/api/v1/oncall")).await?;
    ensure!(now["on_call"]["primary"]["user"] == "ana", "{now}");

    // Bad schedules and overrides are refused, naming the field.
    for (body, field) in [
        (json!({"time_zone": "Mars/Olympus", "layers": []}), "time_zone"),
        (
            json!({"time_zone": "UTC", "layers": [{"rotation": "weekly", "handoff": "09:00", "start": two_days_ago, "users": ["ana"]}]}),
            "layers[0].handoff_day",
        ),
        (
            json!({"time_zone": "UTC", "layers": [{"rotation": "daily", "handoff": "9 o'clock", "start": two_days_ago, "users": ["ana"]}]}),
            "layers[0].handoff",
        ),
    ] {
        let (status, answer) = send(&client, reqwest::Method::PUT, api("/api/v1/schedules/broken"), body).await?;
        ensure!(status == 400, "{field}: {status}");
        ensure!(
            answer["error"].as_str().unwrap_or("").contains(field),
            "{field}: {answer}"
        );
    }
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        api("/api/v1/schedules/primary/overrides"),
        json!({"user": "bo", "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}),
    )
    .await?;
    ensure!(status == 400, "an override that ends before it starts: {status}");

    // An alert pages the route's receiver, then the escalation step pages ana, on call.
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        api("/api/v2/alerts"),
        json!([{ "labels": {"alertname": "CheckoutDown"} }]),
    )
    .await?;
    ensure!(status == 200);
    escalated(&ana, "CheckoutDown").await?;
    ensure!(bo.captured().is_empty(), "bo is not on call");

    // bo takes over for an hour: he is on call, and the next escalation pages him.
    let (status, body) = send(
        &client,
        reqwest::Method::POST,
        api("/api/v1/schedules/primary/overrides"),
        json!({"user": "bo", "start": iso(-60_000)?, "end": iso(3_600_000)?}),
    )
    .await?;
    ensure!(status == 201, "{status} {body}");
    let (_, now) = get_json(&client, &api("/api/v1/oncall")).await?;
    ensure!(
        now["on_call"]["primary"]["user"] == "bo" && now["on_call"]["primary"]["source"] == "override",
        "{now}"
    );
    send(
        &client,
        reqwest::Method::POST,
        api("/api/v2/alerts"),
        json!([{ "labels": {"alertname": "CartDown"} }]),
    )
    .await?;
    escalated(&bo, "CartDown").await?;
    ensure!(
        ana.delivered_for("CartDown").is_empty(),
        "ana is covered by the override"
    );

    // The calendar feed: its signed link opens it, nothing else does.
    let (_, schedule) = get_json(&client, &api("/api/v1/schedules/primary")).await?;
    let feed = schedule["calendar"].as_str().context("calendar link")?.to_string();
    let r = client.get(&feed).send().await?;
    ensure!(r.status() == 200, "{}", r.status());
    ensure!(
        r.headers()["content-type"].to_str()?.starts_with("text/calendar"),
        "content type"
    );
    let ics = r.text().await?;
    ensure!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
    ensure!(
        ics.contains("SUMMARY:On call: bo (primary)") && ics.contains("SUMMARY:On call: ana (primary)"),
        "{ics}"
    );
    let forged = feed.replace("token=", "token=0");
    ensure!(client.get(&forged).send().await?.status() == 403, "a forged link");
    let other = feed.replace("/primary/", "/secondary/");
    ensure!(
        client.get(&other).send().await?.status() == 403,
        "a link opens its own feed only"
    );

    // The UI shows who is on call.
    let page = client.get(api("/ui/oncall")).send().await?.text().await?;
    ensure!(page.contains("On call now: <strong>bo</strong>"), "{page}");

    // Every change is in the audit log; all of it survives a restart.
    let (_, audit) = get_json(&client, &api("/api/v1/audit")).await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("schedule") || a.starts_with("override"))
        .collect();
    ensure!(actions == ["schedule_update", "override_create"], "{audit}");
    // kill -9: what was answered was committed.
    c.kill()?;
    let c = start(&data, &cfg)?;
    let (_, now) = get_json(&client, &c.api_url("/api/v1/oncall")).await?;
    ensure!(now["on_call"]["primary"]["user"] == "bo", "after a restart: {now}");
    Ok(())
}

/// The UTC date `days` from today, as `YYYY-MM-DD`.
fn time_of(days: i64) -> Result<String> {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    Ok(format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
}

/// RFC 3339 for now plus `offset_ms`.
fn iso(offset_ms: i64) -> Result<String> {
    let t = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(offset_ms);
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}
