//! Answers in the Prometheus HTTP API's JSON: `{"status": "success", "data": {"resultType",
//! "result"}}`, values as strings (`"NaN"`, `"+Inf"`), times as float seconds.

use serde_json::{Map, Value as Json, json};

use crate::value::{Error, Labels, Series, Value};

/// A value as Prometheus writes it: Go's `strconv.FormatFloat(v, 'f', -1, 64)` — the
/// shortest digits that read back the same, never an exponent.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's `Display` for floats is the shortest round-trip form without exponent.
        format!("{v}")
    }
}

/// Unix milliseconds as the API's float seconds.
pub fn seconds(t_ms: i64) -> Json {
    serde_json::Number::from_f64(t_ms as f64 / 1000.0).map_or(Json::Null, Json::Number)
}

fn metric(labels: &Labels) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn point(t_ms: i64, v: f64) -> Json {
    json!([seconds(t_ms), format_value(v)])
}

fn matrix(series: &[Series]) -> Json {
    Json::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "values": s.samples.iter().map(|p| point(p.t, p.v)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The `data` of an instant query's answer at `t_ms`.
pub fn instant_data(value: &Value, t_ms: i64) -> Json {
    match value {
        Value::Scalar(v) => json!({"resultType": "scalar", "result": point(t_ms, *v)}),
        Value::String(s) => json!({"resultType": "string", "result": [seconds(t_ms), s]}),
        Value::Vector(v) => json!({
            "resultType": "vector",
            "result": v.iter().map(|el| json!({
                "metric": metric(&el.labels),
                "value": point(t_ms, el.v),
            })).collect::<Vec<_>>(),
        }),
        Value::Matrix(m) => json!({"resultType": "matrix", "result": matrix(m)}),
    }
}

/// The `data` of a range query's answer.
pub fn range_data(series: &[Series]) -> Json {
    json!({"resultType": "matrix", "result": matrix(series)})
}

/// A successful answer around `data`.
pub fn success(data: Json) -> Json {
    json!({"status": "success", "data": data})
}

/// A failed answer, as Prometheus writes it.
pub fn failure(error: &Error) -> Json {
    json!({"status": "error", "errorType": error.error_type(), "error": error.message()})
}
