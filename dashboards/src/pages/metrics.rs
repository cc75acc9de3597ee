//! Metrics: pick a metric and filter its labels, chart it over a range at a step, with the
//! detectors' findings overlaid (their span shaded, their expected band and anomalous
//! points drawn where the finding carries them).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Extension, Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{Nav, layout, query_link};
use crate::UiState;
use crate::api::url;
use crate::auth::Session;
use crate::chart::{Line, TimeChart, time_chart};
use crate::fmt;
use crate::view::Anomaly;

/// Lines drawn at most; more series are listed to narrow down.
const MAX_LINES: usize = 8;

const STEPS: &[&str] = &["", "10s", "30s", "1m", "5m", "15m", "1h"];
const AGGS: &[&str] = &["avg", "min", "max", "sum", "last"];

#[derive(Deserialize)]
struct Names {
    names: Vec<String>,
}

#[derive(Deserialize)]
struct QueryResult {
    result: ResultBody,
}

#[derive(Deserialize)]
struct ResultBody {
    step_ms: i64,
    series: Vec<SeriesData>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct SeriesData {
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    rate: bool,
    values: Vec<(i64, f64)>,
}

#[derive(Deserialize)]
struct Anomalies {
    anomalies: Vec<Anomaly>,
}

fn label_text(labels: &BTreeMap<String, Value>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    if parts.is_empty() {
        "(no labels)".into()
    } else {
        parts.join(", ")
    }
}

/// `k="v", …` → pairs, as the API's label list reads it (quotes optional).
fn parse_filters(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

pub(crate) async fn page(
    State(ui): State<UiState>,
    Extension(session): Extension<Session>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let (range, span) = fmt::range_ms(p.get("range").map(String::as_str), "6h");
    let end = fmt::now_ms();
    let start = end - span;
    let (start_s, end_s) = (start.to_string(), end.to_string());
    let names = ui
        .api
        .get::<Names>(&url("/api/v1/metrics/names", &[("start", &start_s), ("end", &end_s)]))
        .await
        .map(|n| n.names)
        .unwrap_or_default();
    let name = get("name");
    let step = STEPS.iter().find(|s| **s == get("step")).copied().unwrap_or("");
    let agg = AGGS.iter().find(|s| **s == get("agg")).copied().unwrap_or("avg");
    let form = html! {
        form.query #metric-query method="get" action="/ui/metrics" {
            input.mono #metric-name type="text" name="name" value=(name) list="metric-names" placeholder="metric name" required autocomplete="off";
            datalist #metric-names { @for n in &names { option value=(n) {} } }
            input.mono type="text" name="labels" value=(get("labels")) placeholder="label filters: service.name=\"checkout\", host.name=\"a\"";
            select name="range" aria-label="time range" {
                @for (value, label, _) in fmt::RANGES { option value=(value) selected[*value == range] { (label) } }
            }
            select name="step" aria-label="step" { @for s in STEPS { option value=(s) selected[*s == step] { (if s.is_empty() { "auto step" } else { s }) } } }
            select name="agg" aria-label="aggregation" { @for a in AGGS { option value=(a) selected[*a == agg] { (a) } } }
            button.primary type="submit" { "Show" }
        }
    };
    if name.is_empty() {
        let content = html! {
            div.title-row { h1 { "Metrics" } (super::investigations::investigate_button(&session, start, end, None)) }
            (form)
            @if names.is_empty() {
                p.empty #no-metrics { "No metrics stored in this range yet. Point an OpenTelemetry SDK or the Vigil agent at the collector's OTLP port." }
            } @else {
                h2 { "Metrics in range" }
                ul.columns #metric-list {
                    @for n in &names { li { a.mono href=(url("/ui/metrics", &[("name", n), ("range", &range)])) { (n) } } }
                }
            }
        };
        return layout("Metrics", Nav::Metrics, &session, content);
    }
    let query_url = url(
        "/api/v1/metrics/query",
        &[
            ("name", name),
            ("labels", get("labels")),
            ("start", &start_s),
            ("end", &end_s),
            ("step", step),
            ("agg", agg),
        ],
    );
    let result = ui.api.get::<QueryResult>(&query_url).await;
    let anomalies_url = url(
        "/api/v1/anomalies",
        &[("start", &start_s), ("end", &end_s), ("limit", "1000")],
    );
    let filters = parse_filters(get("labels"));
    let findings: Vec<Anomaly> = ui
        .api
        .get::<Anomalies>(&anomalies_url)
        .await
        .map(|a| a.anomalies)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.detector.is_metric() && a.signal.name == name)
        .filter(|a| filters.iter().all(|(k, v)| a.signal.labels.get(k) == Some(v)))
        .collect();
    let body = match &result {
        Err(e) => html! { p.error #query-error role="alert" { (e.message) } },
        Ok(r) if r.result.series.is_empty() => {
            html! { p.empty #no-series { "No points of " (name) " match in this range." } }
        }
        Ok(r) => {
            let series = &r.result.series;
            let unit = series
                .first()
                .map_or("", |s| if s.rate { "/s" } else { s.unit.as_str() });
            let lines: Vec<Line> = series
                .iter()
                .take(MAX_LINES)
                .map(|s| Line {
                    name: label_text(&s.labels),
                    points: s.values.clone(),
                })
                .collect();
            // A band belongs to one series: draw it when one series is shown.
            let single = series.len() == 1;
            let mut band = Vec::new();
            let mut marks = Vec::new();
            for a in &findings {
                if single {
                    band.extend(a.evidence.iter().filter_map(|p| Some((p.t_ms, p.lower?, p.upper?))));
                }
                marks.extend(a.evidence.iter().filter(|p| p.anomalous).map(|p| (p.t_ms, p.value)));
            }
            band.sort_by_key(|b| b.0);
            let title = format!("{name} ({agg} per {})", fmt::duration(r.result.step_ms));
            html! {
                h2 { (title) }
                (time_chart(&TimeChart {
                    label: &title,
                    unit,
                    start_ms: start,
                    end_ms: end,
                    lines,
                    band,
                    marks,
                    regions: findings.iter().map(|a| (a.start_ms, a.end_ms.max(a.start_ms + r.result.step_ms))).collect(),
                    width: 960.0,
                    height: 300.0,
                }))
                @if r.result.truncated { p.warning { "The scan hit its point cap: narrow the range or the labels." } }
                @if series.len() > MAX_LINES {
                    p.warning { (series.len()) " series match; the first " (MAX_LINES) " are drawn. Narrow with a label filter:" }
                }
                table.list #series {
                    thead { tr { th { "Series" } th { "Points" } th { "Last" } } }
                    tbody {
                        @for s in series {
                            // JSON text of a string value is the quoted form the label list reads.
                            @let filter: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            tr {
                                td.mono { a href=(url("/ui/metrics", &[("name", name), ("labels", &filter.join(", ")), ("range", &range)])) { (label_text(&s.labels)) } }
                                td.num { (s.values.len()) }
                                td.num { (s.values.last().map(|v| fmt::value(v.1, unit)).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    };
    let content = html! {
        div.title-row { h1 { "Metrics" } (query_link(&query_url)) (super::investigations::investigate_button(&session, start, end, None)) }
        (form)
        (body)
        h2 { "Findings on " (name) }
        @if findings.is_empty() {
            p.empty #no-findings { "The detectors found nothing unusual on this metric in range." }
        } @else {
            ul.findings {
                @for a in &findings {
                    li { (super::incidents::severity_badge(a.severity)) " " (a.explanation) " " (query_link(&format!("/api/v1/anomalies/{}", a.id))) }
                }
            }
        }
        p.muted { (query_link(&anomalies_url)) }
    };
    layout(&format!("{name} · Metrics"), Nav::Metrics, &session, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_parse_with_or_without_quotes() {
        assert_eq!(
            parse_filters(r#"service.name="checkout", host=a"#),
            vec![("service.name".into(), "checkout".into()), ("host".into(), "a".into())]
        );
        assert!(parse_filters("").is_empty());
    }
}
