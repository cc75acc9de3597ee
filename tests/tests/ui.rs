//! The web UI in a real headless Chromium, against the real collector holding demo data:
//! the incident list, the report with its root cause ranked first and its charts drawn,
//! acknowledging from the report (and the API agreeing), log queries good and bad, the
//! patterns tab, escaping, and every other page. Screenshots land in
//! `target/ui-screenshots/`. No page may log a JavaScript error.
//!
//! Sign-in, roles and CSRF are checked over plain HTTP below: they are about what the
//! server accepts, whatever the client.

use std::time::Duration;

use anyhow::{Result, ensure};
use prost::Message;
use serde_json::{Value, json};
use vigil_e2e::browser::Browser;
use vigil_e2e::otlp::{log_record, logs_request};
use vigil_e2e::{Collector, Options, eventually, get_json, now_ns, post_alert};

const PROBE: &str = "<script>window.__vigil_xss=1</script> injected by the ui test";

async fn demo_with_incident() -> Result<(Collector, String)> {
    let c = Collector::start_demo("latency", "inventory", 12)?;
    let client = reqwest::Client::new();
    let url = c.api_url("/api/v1/incidents?status=open");
    let id: String = eventually(Duration::from_secs(240), "an incident ranking inventory first", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (_, body) = get_json(&client, &url).await?;
            // The fault's incident, not a small side incident that also ranks inventory
            // first (a couple of log findings nearby): the one with the most findings.
            Ok(body["incidents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["candidates"][0]["service"] == "inventory")
                .filter(|i| i["timeline"].as_array().is_some_and(|t| t.len() >= 5))
                .max_by_key(|i| i["timeline"].as_array().map_or(0, Vec::len))
                .and_then(|i| i["id"].as_str().map(str::to_string)))
        }
    })
    .await?;
    // The alert appears with the incident; wait for it so the report can offer the buttons.
    let alerts_url = c.api_url("/api/v1/alerts");
    let wanted = id.clone();
    eventually(Duration::from_secs(30), "the incident's alert", || {
        let (client, url, wanted) = (client.clone(), alerts_url.clone(), wanted.clone());
        async move {
            let (_, body) = get_json(&client, &url).await?;
            Ok(body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["labels"]["incident"] == wanted.as_str())
                .cloned())
        }
    })
    .await?;
    // A log line that would run script if the UI did not escape it.
    let body = logs_request("xss-probe", vec![log_record(now_ns(), PROBE, &[])]).encode_to_vec();
    let r = client
        .post(c.http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await?;
    ensure!(r.status() == 200, "probe log refused: {}", r.status());
    Ok((c, id))
}

async fn alert_of(c: &Collector, incident: &str) -> Result<Value> {
    let (_, body) = get_json(&reqwest::Client::new(), &c.api_url("/api/v1/alerts")).await?;
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["incident"] == incident)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no alert for {incident}: {body}"))
}

#[tokio::test]
async fn the_on_call_walkthrough_in_a_real_browser() -> Result<()> {
    let (c, incident) = demo_with_incident().await?;
    let b = Browser::start().await?;
    let base = c.api_url("");

    // The incident list, from `/`.
    b.goto(&format!("{base}/")).await?;
    let row = b.find(&format!("#incidents tr.incident[data-id='{incident}']")).await?;
    ensure!(
        b.url().await.ends_with("/ui/incidents"),
        "/ redirects to the list: {}",
        b.url().await
    );
    b.screenshot("01-incidents").await?;
    b.assert_no_js_errors("incident list").await?;

    // The report: root cause first, charts drawn, graph highlighting it.
    b.click_and_load(row.find(fantoccini::Locator::Css("td.summary a")).await?)
        .await?;
    let first = b.find("#root-causes li.candidate.first").await?;
    ensure!(first.attr("data-service").await?.as_deref() == Some("inventory"));
    // Log findings draw bars; series findings draw lines with `data-points`.
    b.find("#evidence svg.chart[data-points]").await?;
    let mut most = 0u32;
    for chart in b.find_all("#evidence svg.chart[data-points]").await? {
        let n = chart
            .attr("data-points")
            .await?
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        most = most.max(n);
    }
    ensure!(most > 5, "an evidence chart draws the series ({most} points at most)");
    ensure!(
        !b.find_all("#evidence svg.chart .band").await?.is_empty(),
        "expected band drawn"
    );
    ensure!(
        !b.find_all("#evidence svg.chart .mark").await?.is_empty(),
        "anomalous points marked"
    );
    ensure!(
        !b.find_all("#service-graph .node.root[data-service='inventory']")
            .await?
            .is_empty()
    );
    ensure!(!b.find_all("#timeline .tl-bar").await?.is_empty(), "timeline drawn");
    b.screenshot("02-incident-report").await?;
    b.assert_no_js_errors("incident report").await?;

    // Acknowledge from the report; the page and the API agree.
    b.click_css_and_load("#incident-alert button[data-action='ack']")
        .await?;
    b.find("p.notice").await?;
    let state = b.text("#incident-alert .state").await?;
    ensure!(state == "acknowledged", "state after ack: {state:?}");
    let alert = alert_of(&c, &incident).await?;
    ensure!(alert["state"] == "acknowledged", "{alert}");
    ensure!(alert["acknowledged_by"] == "local user", "{alert}");
    b.screenshot("03-acknowledged").await?;
    b.assert_no_js_errors("acknowledged report").await?;

    // A verdict on one finding reaches the detectors (the API accepted it, or no notice).
    b.click_css_and_load("#evidence article.evidence button[data-verdict='noise']")
        .await?;
    let notice = b.text("p.notice").await?;
    ensure!(notice.contains("marked noise"), "{notice:?}");
    b.assert_no_js_errors("finding feedback").await?;

    // An exemplar trace from the report opens as a waterfall.
    if let Some(link) = b.find_all("#evidence p.traces a.mono").await?.into_iter().next() {
        b.click_and_load(link).await?;
        b.find("#waterfall tr.span").await?;
        b.screenshot("04-trace").await?;
        b.assert_no_js_errors("trace").await?;
    }

    // A log query typed into the box; the probe line shows as text and runs nothing.
    b.goto(&format!("{base}/ui/logs")).await?;
    let q = b.find("#q").await?;
    q.send_keys("body:injected").await?;
    b.click_css_and_load("#log-query button[type='submit']").await?;
    let body = b.text("#log-results tr.log td.body summary").await?;
    ensure!(
        body.contains("<script>window.__vigil_xss=1</script>"),
        "rendered as text: {body:?}"
    );
    ensure!(
        b.js("return typeof window.__vigil_xss").await? == json!("undefined"),
        "script ran"
    );
    ensure!(b.find_all("#volume svg.bars").await?.len() == 1, "volume histogram");
    b.screenshot("05-logs").await?;
    b.assert_no_js_errors("log search").await?;

    // A bad query: the parser's error inline, the page still usable.
    let q = b.find("#q").await?;
    q.clear().await?;
    q.send_keys("body:(").await?;
    b.click_css_and_load("#log-query button[type='submit']").await?;
    let err = b.text("#query-error").await?;
    ensure!(err.starts_with("Query error: "), "{err:?}");
    ensure!(
        b.find("#q").await?.prop("value").await?.as_deref() == Some("body:("),
        "query kept in the box"
    );
    b.screenshot("06-logs-bad-query").await?;
    b.assert_no_js_errors("bad log query").await?;

    // The patterns tab, then one pattern's records.
    b.goto(&format!("{base}/ui/logs")).await?;
    b.click_css_and_load("#tab-patterns").await?;
    b.find("#patterns tr.pattern").await?;
    let patterns = b.find_all("#patterns tr.pattern").await?;
    ensure!(!b.find_all("#patterns svg.spark").await?.is_empty(), "sparklines drawn");
    b.screenshot("07-patterns").await?;
    b.assert_no_js_errors("patterns").await?;
    let pattern_id = patterns[0].attr("data-pattern").await?.unwrap_or_default();
    b.click_and_load(patterns[0].find(fantoccini::Locator::Css("td a.mono")).await?)
        .await?;
    b.find("#log-results tr.log").await?;
    ensure!(b.text(".filter-note").await?.contains(&pattern_id));
    b.assert_no_js_errors("pattern filter").await?;

    // Alerts: the acknowledged tab, then a silence prefilled from the alert.
    b.goto(&format!("{base}/ui/alerts?state=acknowledged")).await?;
    b.find("#alerts tr.alert").await?;
    b.screenshot("08-alerts").await?;
    b.assert_no_js_errors("alerts").await?;
    b.click_css_and_load("#alerts tr.alert a.button").await?;
    let matchers = b
        .find("input[name='matchers']")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    ensure!(
        matchers.contains(&format!("incident=\"{incident}\"")),
        "prefilled: {matchers}"
    );
    // Before it is created, the silence shows what it would mute: the incident's alert.
    let preview = b.text("#silence-preview").await?;
    ensure!(preview.contains(&format!("incident={incident}")), "preview: {preview}");
    b.click_css_and_load("form.stack button[formaction='/ui/silences/preview']")
        .await?;
    let preview = b.text("#silence-preview").await?;
    ensure!(
        preview.contains(&format!("incident={incident}")),
        "preview again: {preview}"
    );
    b.click_css_and_load("form.stack button.primary").await?;
    b.find("p.notice").await?;
    b.goto(&format!("{base}/ui/silences")).await?;
    b.find("#silences tr.silence").await?;
    b.screenshot("09-silences").await?;
    b.assert_no_js_errors("silences").await?;

    // On call: no schedule in the demo, and the page says how to make one.
    b.goto(&format!("{base}/ui/oncall")).await?;
    b.find("#no-schedules").await?;
    b.assert_no_js_errors("on call").await?;

    // Metrics: pick the first metric, a chart with axes.
    b.goto(&format!("{base}/ui/metrics")).await?;
    b.click_css_and_load("#metric-list a").await?;
    b.find("svg.chart").await?;
    ensure!(!b.find_all("svg.chart text.xlabel").await?.is_empty(), "time labels");
    b.screenshot("10-metrics").await?;
    b.assert_no_js_errors("metrics").await?;

    // Services and the audit log.
    b.goto(&format!("{base}/ui/services")).await?;
    b.find("#service-graph svg.graph .node").await?;
    b.find("#edges tbody tr").await?;
    b.screenshot("11-services").await?;
    b.assert_no_js_errors("services").await?;
    b.goto(&format!("{base}/ui/audit")).await?;
    let audit = b.text("#audit").await?;
    ensure!(audit.contains("ack") && audit.contains("local user"), "{audit}");
    b.screenshot("12-audit").await?;
    b.assert_no_js_errors("audit").await?;

    // Investigate the incident from its report: the comparison ranks the same service.
    b.goto(&format!("{base}/ui/incidents/{incident}")).await?;
    b.click_css_and_load("form.investigate button").await?;
    ensure!(
        b.url().await.contains("/ui/investigations/"),
        "the button leads to the report: {}",
        b.url().await
    );
    let first = b.find("#root-causes li.candidate.first").await?;
    ensure!(
        first.attr("data-service").await?.as_deref() == Some("inventory"),
        "investigation ranks {:?} first",
        first.attr("data-service").await?
    );
    b.find("#root-causes li.evidence").await?;
    b.screenshot("13-investigation").await?;
    b.assert_no_js_errors("investigation").await?;
    b.goto(&format!("{base}/ui/investigations")).await?;
    b.find("#investigations tbody tr").await?;
    b.assert_no_js_errors("investigations").await?;

    b.close().await?;
    Ok(())
}

const API_TOKEN: &str = "admin-token-0123456789";
const RESPONDER_TOKEN: &str = "responder-token-0123456789";
const VIEWER_TOKEN: &str = "viewer-token-0123456789";

fn no_redirects() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Signs in with `token` and returns the session cookie and the page's CSRF token.
async fn sign_in(c: &Collector, token: &str) -> Result<(String, String)> {
    let http = no_redirects()?;
    let r = http
        .post(c.api_url("/ui/login"))
        .form(&[("token", token), ("name", "Ada"), ("next", "/ui/alerts")])
        .send()
        .await?;
    ensure!(r.status() == 303, "sign-in answered {}", r.status());
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let page = http
        .get(c.api_url("/ui/alerts"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    ensure!(csrf.len() == 64, "a CSRF token on the page");
    Ok((cookie, csrf))
}

#[tokio::test]
async fn sign_in_roles_and_csrf() -> Result<()> {
    let c = Collector::start_with(Options {
        env: vec![
            ("VIGIL_API_TOKEN".into(), API_TOKEN.into()),
            ("VIGIL_RESPONDER_TOKEN".into(), RESPONDER_TOKEN.into()),
            ("VIGIL_VIEWER_TOKEN".into(), VIEWER_TOKEN.into()),
        ],
        ..Options::default()
    })?;
    let http = no_redirects()?;
    // An alert to act on.
    let alert = json!([{ "labels": { "alertname": "DiskFull", "host": "db-1" } }]);
    let id = post_alert(&http, &c, Some(API_TOKEN), alert).await?;

    // Strangers are sent to sign in; a wrong token is refused.
    let r = http.get(c.api_url("/ui/incidents")).send().await?;
    ensure!(r.status() == 303);
    let to = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure!(to.starts_with("/ui/login?next="), "{to}");
    let r = http
        .post(c.api_url("/ui/login"))
        .form(&[("token", "wrong-token-000000000")])
        .send()
        .await?;
    let to = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure!(to.contains("error="), "{to}");
    ensure!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(c.api_url(&format!("/ui/alerts/{id}/ack")))
        .form(&[("csrf", "x")])
        .send()
        .await?;
    ensure!(r.status() == 401, "no session, no action: {}", r.status());

    // A viewer reads but may not act.
    let (cookie, csrf) = sign_in(&c, VIEWER_TOKEN).await?;
    let page = http
        .get(c.api_url("/ui/alerts"))
        .header("cookie", &cookie)
        .send()
        .await?;
    ensure!(page.status() == 200);
    ensure!(
        !page.text().await?.contains("data-action=\"ack\""),
        "no buttons for a viewer"
    );
    let r = http
        .post(c.api_url(&format!("/ui/alerts/{id}/ack")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    ensure!(r.status() == 403, "viewer ack: {}", r.status());
    let audit = http
        .get(c.api_url("/ui/audit"))
        .header("cookie", &cookie)
        .send()
        .await?;
    ensure!(audit.status() == 403, "the audit log is for admins");

    // A responder acts, but only with the session's CSRF token and from our own origin.
    let (cookie, csrf) = sign_in(&c, RESPONDER_TOKEN).await?;
    let ack = |csrf: String, origin: Option<&'static str>| {
        let mut req = http
            .post(c.api_url(&format!("/ui/alerts/{id}/ack")))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf)]);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    ensure!(ack(String::new(), None).await?.status() == 403, "missing CSRF token");
    ensure!(ack("0".repeat(64), None).await?.status() == 403, "wrong CSRF token");
    ensure!(
        ack(csrf.clone(), Some("https://evil.example")).await?.status() == 403,
        "another site's form"
    );
    let (_, alert) = get_json_auth(&c, &format!("/api/v1/alerts/{id}")).await?;
    ensure!(alert["state"] == "firing", "nothing refused took effect: {alert}");
    let r = ack(csrf.clone(), None).await?;
    ensure!(r.status() == 303, "responder ack: {}", r.status());
    let (_, alert) = get_json_auth(&c, &format!("/api/v1/alerts/{id}")).await?;
    ensure!(
        alert["state"] == "acknowledged" && alert["acknowledged_by"] == "Ada",
        "{alert}"
    );

    // Signing out ends the session.
    let r = http
        .post(c.api_url("/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    ensure!(r.status() == 303);
    let r = http
        .get(c.api_url("/ui/alerts"))
        .header("cookie", &cookie)
        .send()
        .await?;
    ensure!(r.status() == 303, "signed out: {}", r.status());
    Ok(())
}

/// Personal tokens (`auth.users`, kept as SHA-256): what their owners do is recorded under
/// their names, whatever a request body or the sign-in form claims, and their roles hold.
#[tokio::test]
async fn personal_tokens_name_their_owner_in_the_api_and_the_ui() -> Result<()> {
    const ANA: &str = "ana-personal-token-0123456789";
    const BO: &str = "bo-personal-token-0123456789";
    let dir = tempfile::tempdir()?;
    let sha = |t: &str| {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().map(|mut i| i.write_all(t.as_bytes())).transpose()?;
                child.wait_with_output()
            });
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
    };
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.users]]\nname = \"ana\"\nrole = \"responder\"\ntoken_sha256 = \"{}\"\n\n\
             [[auth.users]]\nname = \"bo\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
            sha(ANA)?,
            sha(BO)?
        ),
    )?;
    let c = Collector::start_with(Options {
        env: vec![("VIGIL_API_TOKEN".into(), API_TOKEN.into())],
        args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    })?;
    let http = no_redirects()?;
    let alert = json!([{ "labels": {"alertname": "DiskFull", "host": "a"} }]);
    let id = post_alert(&http, &c, Some(API_TOKEN), alert).await?;

    // bo reads, and is refused anything more, with the reason.
    let r = http.get(c.api_url("/api/v1/alerts")).bearer_auth(BO).send().await?;
    ensure!(r.status() == 200, "viewer reads: {}", r.status());
    let r = http
        .post(c.api_url(&format!("/api/v1/alerts/{id}/ack")))
        .bearer_auth(BO)
        .send()
        .await?;
    ensure!(r.status() == 403, "viewer ack: {}", r.status());
    ensure!(r.text().await?.contains("bo is a viewer and this needs a responder"));
    let r = http
        .post(c.api_url("/api/v2/alerts"))
        .bearer_auth(BO)
        .json(&json!([{ "labels": {"alertname": "X"} }]))
        .send()
        .await?;
    ensure!(r.status() == 403, "viewer posting alerts: {}", r.status());

    // ana acknowledges and silences; the record names her, not whom the body claims.
    let r = http
        .post(c.api_url(&format!("/api/v1/alerts/{id}/ack")))
        .bearer_auth(ANA)
        .json(&json!({"by": "mallory"}))
        .send()
        .await?;
    ensure!(r.status() == 200, "responder ack: {}", r.status());
    let (_, alert) = get_json_auth(&c, &format!("/api/v1/alerts/{id}")).await?;
    ensure!(alert["acknowledged_by"] == "ana", "{alert}");
    let r = http
        .post(c.api_url("/api/v2/silences"))
        .bearer_auth(ANA)
        .json(&json!({"matchers": [{"name": "host", "value": "a", "isRegex": false}],
                      "endsAt": "2099-01-01T00:00:00Z", "createdBy": "mallory", "comment": "disk swap"}))
        .send()
        .await?;
    ensure!(r.status() == 200, "responder silences: {}", r.status());
    let (_, silences) = get_json_auth(&c, "/api/v2/silences").await?;
    ensure!(silences[0]["createdBy"] == "ana", "{silences}");
    let r = http
        .delete(c.api_url(&format!(
            "/api/v2/silence/{}",
            silences[0]["id"].as_str().unwrap_or_default()
        )))
        .bearer_auth(BO)
        .send()
        .await?;
    ensure!(r.status() == 403, "viewer expiring a silence: {}", r.status());
    let (_, audit) = get_json_auth(&c, "/api/v1/audit").await?;
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    ensure!(actors == ["ana", "ana"], "{audit}");

    // In the UI, ana's token signs her in as ana, whatever name is typed ("Ada").
    let r = http
        .post(c.api_url(&format!("/api/v1/alerts/{id}/unack")))
        .bearer_auth(API_TOKEN)
        .send()
        .await?;
    ensure!(r.status() == 200);
    let (cookie, csrf) = sign_in(&c, ANA).await?;
    let r = http
        .post(c.api_url(&format!("/ui/alerts/{id}/ack")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    ensure!(r.status() == 303, "ui ack: {}", r.status());
    let (_, alert) = get_json_auth(&c, &format!("/api/v1/alerts/{id}")).await?;
    ensure!(alert["acknowledged_by"] == "ana", "{alert}");
    Ok(())
}

async fn get_json_auth(c: &Collector, path: &str) -> Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .get(c.api_url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

/// Without sign-in (loopback), forms still need the page's CSRF token: a page on another
/// site must not acknowledge through the on-call laptop's browser.
#[tokio::test]
async fn without_sign_in_forms_still_need_the_csrf_token() -> Result<()> {
    let c = Collector::start()?;
    let http = no_redirects()?;
    let r = http
        .post(c.api_url("/api/v2/alerts"))
        .json(&json!([{ "labels": { "alertname": "DiskFull" } }]))
        .send()
        .await?;
    let id = r.json::<Value>().await?["ids"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = http
        .post(c.api_url(&format!("/ui/alerts/{id}/ack")))
        .form(&[("csrf", "")])
        .send()
        .await?;
    ensure!(r.status() == 403, "forged form: {}", r.status());
    let (_, alert) = get_json(&reqwest::Client::new(), &c.api_url(&format!("/api/v1/alerts/{id}"))).await?;
    ensure!(alert["state"] == "firing", "{alert}");
    let page = http.get(c.api_url("/ui/alerts")).send().await?;
    ensure!(
        page.headers().get("set-cookie").is_some(),
        "a session is issued silently"
    );
    Ok(())
}
