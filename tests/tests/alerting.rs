//! Alerting end to end: Alertmanager-style alerts posted to the real collector reach real
//! HTTP receivers deduplicated, grouped, signed and routed; responders act through the API
//! and through signed one-click links; state survives a restart; bad input is refused with
//! a reason. Timer logic (group_wait, repeat, escalation) is covered against a fake clock
//! in the alerting crate; here timers are one second.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use vigil_alerting::{ActionLink, LinkAction, sign_link, verify_body};
use vigil_e2e::receiver::Receiver;
use vigil_e2e::{Collector, Options, eventually, now_ns};

const LINK_SECRET: &str = "link-secret-for-tests-0123456789";
const SIGNING_SECRET: &str = "signing-secret-for-tests-0123456789";
const API_TOKEN: &str = "api-token-for-tests-0123456789";
const RESPONDER_TOKEN: &str = "responder-token-for-tests-0123456789";

fn config(receivers: &[(&str, String, Option<u64>)], extra_routes: &str) -> String {
    let mut s = String::from(
        "[alerting.route]\nreceiver = \"hook\"\ngroup_by = [\"alertname\"]\ngroup_wait_secs = 1\n\
         group_interval_secs = 1\nrepeat_interval_secs = 3600\n",
    );
    s.push_str(extra_routes);
    for (name, url, timeout) in receivers {
        s.push_str(&format!(
            "\n[[alerting.receivers]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
        if let Some(t) = timeout {
            s.push_str(&format!("timeout_secs = {t}\n"));
        }
    }
    s
}

fn start(data: &std::path::Path, cfg: &str, tokens: bool) -> Result<Collector> {
    let path = data.with_extension("toml");
    std::fs::write(&path, cfg)?;
    let mut env = vec![
        ("VIGIL_LINK_SECRET".to_string(), LINK_SECRET.to_string()),
        ("VIGIL_WEBHOOK_SECRET".to_string(), SIGNING_SECRET.to_string()),
    ];
    if tokens {
        env.push(("VIGIL_API_TOKEN".into(), API_TOKEN.into()));
        env.push(("VIGIL_RESPONDER_TOKEN".into(), RESPONDER_TOKEN.into()));
    }
    Collector::start_with(Options {
        data_dir: Some(data.to_path_buf()),
        env,
        args: vec!["--config".into(), path.display().to_string()],
        ..Options::default()
    })
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Result<(u16, Value)> {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> Result<(u16, Value)> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn alert(name: &str, host: &str) -> Value {
    json!([{ "labels": {"alertname": name, "host": host, "severity": "critical"},
             "annotations": {"summary": format!("{name} on {host}")} }])
}

/// Waits until `receiver` has a successful delivery for group `name`.
async fn delivered(receiver: &Receiver, name: &str) -> Result<Vec<vigil_e2e::receiver::Captured>> {
    let (r, n) = (receiver.clone(), name.to_string());
    eventually(
        Duration::from_secs(30),
        &format!("a notification for {name}"),
        move || {
            let (r, n) = (r.clone(), n.clone());
            async move {
                let got = r.delivered_for(&n);
                Ok((!got.is_empty()).then_some(got))
            }
        },
    )
    .await
}

#[tokio::test]
async fn repeats_notify_once_signed_and_a_link_acknowledges_exactly_once() -> Result<()> {
    let hook = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let c = start(
        &dir.path().join("data"),
        &config(&[("hook", hook.url("/hook"), None)], ""),
        false,
    )?;
    let client = reqwest::Client::new();

    // Twenty re-sends of one alert, as Prometheus does every evaluation.
    for _ in 0..20 {
        let (status, body) = post(&client, c.api_url("/api/v2/alerts"), None, alert("DiskFull", "db1")).await?;
        assert_eq!(status, 200, "{body}");
    }
    let first = delivered(&hook, "DiskFull").await?;
    // A later, different alert is a sentinel: once it arrived, the first group's timers
    // have long run again, so any duplicate would have been sent by now.
    post(&client, c.api_url("/api/v2/alerts"), None, alert("Sentinel", "x")).await?;
    delivered(&hook, "Sentinel").await?;
    let all = hook.delivered_for("DiskFull");
    assert_eq!(all.len(), 1, "one notification for twenty re-sends");
    let n = &first[0];
    assert_eq!(n.json["version"], "4");
    assert_eq!(n.json["status"], "firing");
    assert_eq!(n.json["alerts"][0]["labels"]["host"], "db1");

    // Signed: the receiver can verify the body with the shared secret.
    let ts: i64 = n.headers["x-vigil-timestamp"].to_str()?.parse()?;
    let sig = n.headers["x-vigil-signature"].to_str()?;
    let now = (now_ns() / 1_000_000_000) as i64;
    assert!(verify_body(SIGNING_SECRET.as_bytes(), ts, &n.body, sig, now, 300));
    assert!(!verify_body(b"wrong", ts, &n.body, sig, now, 300));
    assert!(n.headers.contains_key("x-vigil-idempotency-key"));

    let id = n.json["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, stored) = get(&client, c.api_url(&format!("/api/v1/alerts/{id}")), None).await?;
    assert_eq!(stored["received"], 20);
    assert_eq!(stored["state"], "firing");

    // The one-click link: a GET shows a button (link previews must not acknowledge)…
    let ack_url = n.json["vigil"]["actionURLs"][&id]["ack"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ack_url.starts_with(&c.api_url("/api/v1/actions/")), "{ack_url}");
    let page = client.get(&ack_url).send().await?.text().await?;
    assert!(page.contains("method=post"), "{page}");
    assert_eq!(
        get(&client, c.api_url(&format!("/api/v1/alerts/{id}")), None).await?.1["state"],
        "firing"
    );
    // …a POST acknowledges, once.
    let (status, body) = post(&client, ack_url.clone(), None, json!({})).await?;
    assert_eq!((status, body["changed"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = post(&client, ack_url.clone(), None, json!({})).await?;
    assert_eq!(status, 409, "replayed link: {body}");
    // Tampered (another alert id) and expired links are refused.
    let tampered = ack_url.replacen(&id, "0000000000000000", 1);
    assert_eq!(post(&client, tampered, None, json!({})).await?.0, 403);
    let expired = sign_link(
        LINK_SECRET.as_bytes(),
        &ActionLink {
            alert_id: id.clone(),
            action: LinkAction::Resolve,
            expires_ms: 1000,
            nonce: "n".into(),
        },
    );
    assert_eq!(
        post(
            &client,
            c.api_url(&format!("/api/v1/actions/{expired}")),
            None,
            json!({})
        )
        .await?
        .0,
        410
    );

    let (_, acked) = get(&client, c.api_url("/api/v1/alerts?state=acknowledged"), None).await?;
    assert_eq!(acked["alerts"][0]["id"], id.as_str());
    assert_eq!(acked["alerts"][0]["acknowledged_by"], "one-click link");
    // A second ack through the API changes nothing and says so.
    let (status, body) = post(
        &client,
        c.api_url(&format!("/api/v1/alerts/{id}/ack")),
        None,
        json!({"by": "bob"}),
    )
    .await?;
    assert_eq!((status, body["changed"].as_bool()), (200, Some(false)));
    assert_eq!(body["message"], "already acknowledged by one-click link");
    let (_, audit) = get(&client, c.api_url("/api/v1/audit"), None).await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["ack"]);
    Ok(())
}

#[tokio::test]
async fn silences_routing_bad_input_and_receiver_failures() -> Result<()> {
    let hook = Receiver::start().await?;
    let slow = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let routes = "[[alerting.route.routes]]\nmatchers = ['team=\"db\"']\nreceiver = \"slow\"\ncontinue = true\n\
                  [[alerting.route.routes]]\nmatchers = ['team=\"db\"']\nreceiver = \"hook\"\n";
    let cfg = config(
        &[("hook", hook.url("/hook"), None), ("slow", slow.url("/slow"), Some(1))],
        routes,
    );
    let c = start(&dir.path().join("data"), &cfg, false)?;
    let client = reqwest::Client::new();
    let api = |p: &str| c.api_url(p);

    // Bad input says what was wrong.
    let r = client.post(api("/api/v2/alerts")).body("{not json").send().await?;
    assert_eq!(r.status().as_u16(), 400);
    let (status, body) = post(&client, api("/api/v2/alerts"), None, json!([{"labels": {}}])).await?;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("alerts[0].labels"),
        "{body}"
    );
    let (status, body) = post(
        &client,
        api("/api/v2/alerts"),
        None,
        json!([{"labels": {"a": "b"}, "endsAt": "soon"}]),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("alerts[0].endsAt"),
        "{body}"
    );
    assert_eq!(
        post(&client, api("/api/v1/alerts/ffffffffffffffff/ack"), None, json!({}))
            .await?
            .0,
        404
    );
    let far = "2099-01-01T00:00:00Z";
    let (status, body) = post(
        &client,
        api("/api/v1/silences"),
        None,
        json!({"matchers": "{host=~\"web-(\"}", "endsAt": far, "createdBy": "ana"}),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("bad regular expression \"web-(\""),
        "{body}"
    );

    // A silence mutes; other alerts still flow.
    let (status, body) = post(
        &client,
        api("/api/v1/silences"),
        None,
        json!({"matchers": [{"name": "alertname", "value": "Muted"}], "endsAt": far, "createdBy": "ana", "comment": "maintenance"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    post(&client, api("/api/v2/alerts"), None, alert("Muted", "h")).await?;
    post(&client, api("/api/v2/alerts"), None, alert("Sentinel", "h")).await?;
    delivered(&hook, "Sentinel").await?;
    assert!(hook.delivered_for("Muted").is_empty());
    let (_, silenced) = get(&client, api("/api/v1/alerts?state=silenced"), None).await?;
    assert_eq!(silenced["alerts"][0]["labels"]["alertname"], "Muted");

    // Routing with continue: a team=db alert goes to both receivers. The slow one times out
    // (and is retried) without holding up the other; a receiver that answers 503 is retried
    // with the same idempotency key until it takes the notification.
    slow.stall_next(1, Duration::from_secs(3));
    hook.fail_next(2);
    let db = json!([{ "labels": {"alertname": "ReplicaLag", "team": "db"} }]);
    post(&client, api("/api/v2/alerts"), None, db).await?;
    let got = delivered(&hook, "ReplicaLag").await?;
    let attempts: Vec<_> = hook
        .captured()
        .into_iter()
        .filter(|c| c.json["groupLabels"]["alertname"] == "ReplicaLag")
        .collect();
    assert_eq!(attempts.len(), 3, "two 503s, then success");
    let keys: std::collections::BTreeSet<_> = attempts
        .iter()
        .map(|c| c.headers["x-vigil-idempotency-key"].to_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(keys.len(), 1, "retries carry the same idempotency key");
    assert_eq!(got.len(), 1);
    // The first attempt to the slow receiver timed out on our side (and the receiver dropped
    // it when we hung up); the retry delivered it.
    delivered(&slow, "ReplicaLag").await?;
    assert_eq!(slow.delivered_for("ReplicaLag").len(), 1);
    assert!(
        slow.arrivals() >= 2,
        "the timed-out attempt was retried: {} arrivals",
        slow.arrivals()
    );

    // The notification history shows every attempt, to whom, and what each receiver said.
    let (_, all) = get(&client, api("/api/v1/alerts"), None).await?;
    let id = all["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == "ReplicaLag")
        .and_then(|a| a["id"].as_str())
        .unwrap_or_default()
        .to_string();
    let history = eventually(Duration::from_secs(20), "both deliveries on record", || {
        let (client, url) = (client.clone(), api(&format!("/api/v1/alerts/{id}/notifications")));
        async move {
            let (status, body) = get(&client, url, None).await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            let rows: Vec<(String, String, String)> = body["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                    (s("receiver"), s("outcome"), s("answer"))
                })
                .collect();
            let delivered = rows.iter().filter(|r| r.1 == "delivered").count();
            Ok((delivered == 2).then_some(rows))
        }
    })
    .await?;
    let hook_rows: Vec<(&str, &str)> = history
        .iter()
        .filter(|r| r.0 == "hook")
        .map(|r| (r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        hook_rows,
        [
            ("delivered", "200 OK"),
            ("failed", "receiver answered 503 Service Unavailable"),
            ("failed", "receiver answered 503 Service Unavailable"),
        ],
        "newest first: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|r| r.0 == "slow" && r.1 == "failed" && r.2.contains("timed out")),
        "the timed-out attempt says so: {history:?}"
    );
    let (status, _) = get(&client, api("/api/v1/alerts/0000000000000000/notifications"), None).await?;
    assert_eq!(status, 404);
    let (_, by_receiver) = get(&client, api("/api/v1/notifications?receiver=slow"), None).await?;
    assert!(
        by_receiver["deliveries"]
            .as_array()
            .is_some_and(|d| !d.is_empty() && d.iter().all(|x| x["receiver"] == "slow"))
    );
    Ok(())
}

#[tokio::test]
async fn responders_can_only_act_and_state_survives_a_restart() -> Result<()> {
    let hook = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let cfg = config(&[("hook", hook.url("/hook"), None)], "");
    let c = start(&data, &cfg, true)?;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, c.api_url("/api/v2/alerts"), None, alert("Oom", "a"))
            .await?
            .0,
        401
    );
    assert_eq!(
        post(
            &client,
            c.api_url("/api/v2/alerts"),
            Some(RESPONDER_TOKEN),
            alert("Oom", "a")
        )
        .await?
        .0,
        401
    );
    let (status, body) = post(&client, c.api_url("/api/v2/alerts"), Some(API_TOKEN), alert("Oom", "a")).await?;
    assert_eq!(status, 200, "{body}");
    let id = body["ids"][0].as_str().unwrap_or_default().to_string();
    delivered(&hook, "Oom").await?;
    assert_eq!(
        get(&client, c.api_url("/api/v1/alerts"), Some(RESPONDER_TOKEN))
            .await?
            .0,
        401
    );
    let ack = c.api_url(&format!("/api/v1/alerts/{id}/ack"));
    assert_eq!(post(&client, ack.clone(), None, json!({})).await?.0, 401);
    let (status, body) = post(&client, ack, Some(RESPONDER_TOKEN), json!({"by": "ana"})).await?;
    assert_eq!((status, body["state"].as_str()), (200, Some("acknowledged")), "{body}");
    let comment = c.api_url(&format!("/api/v1/alerts/{id}/comment"));
    assert_eq!(
        post(
            &client,
            comment,
            Some(RESPONDER_TOKEN),
            json!({"by": "ana", "text": "on it"})
        )
        .await?
        .0,
        200
    );

    assert!(c.terminate()?, "clean shutdown");
    let c = start(&data, &cfg, true)?;
    let (status, a) = get(&client, c.api_url(&format!("/api/v1/alerts/{id}")), Some(API_TOKEN)).await?;
    assert_eq!(status, 200);
    assert_eq!(
        (a["state"].as_str(), a["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("ana"))
    );
    assert_eq!(a["comments"][0]["text"], "on it");
    // Nothing already delivered is sent again after the restart.
    post(
        &client,
        c.api_url("/api/v2/alerts"),
        Some(API_TOKEN),
        alert("Sentinel", "z"),
    )
    .await?;
    delivered(&hook, "Sentinel").await?;
    assert_eq!(hook.delivered_for("Oom").len(), 1);
    let (_, audit) = get(&client, c.api_url("/api/v1/audit"), Some(API_TOKEN)).await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["ack", "comment"]);
    Ok(())
}
