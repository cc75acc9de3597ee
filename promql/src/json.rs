//! Answers in the Prometheus HTTP API's JSON: `{"status": "success", "data": {"resultType",
//! "result"}}`, values as strings (`"NaN"`, `"+Inf"`), times as float seconds.

use serde_json::{Map, Value as Json, json};

use crate::value::{Error, Labels, STALE_MARKER_BITS, Sample, Series, Value, is_stale};

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

/// Raw series as a cluster's workers send them to the query root, which evaluates PromQL
/// over them: `[{"labels": {..}, "samples": [[unix ms, "value"], ..]}, ..]`. Times are
/// integer milliseconds (float seconds could round), values are written as
/// [`format_value`] writes them (the shortest form that reads back the same), and a
/// staleness marker is `"stale"` (a NaN's payload would not survive the text).
pub fn raw_series(series: &[Series]) -> Json {
    Json::Array(
        series
            .iter()
            .map(|s| {
                let samples: Vec<Json> = s
                    .samples
                    .iter()
                    .map(|p| {
                        let v = if is_stale(p.v) {
                            "stale".into()
                        } else {
                            format_value(p.v)
                        };
                        json!([p.t, v])
                    })
                    .collect();
                json!({"labels": metric(&s.labels), "samples": samples})
            })
            .collect(),
    )
}

/// Reads what [`raw_series`] wrote; the message says what was malformed.
pub fn parse_raw_series(json: &Json) -> Result<Vec<Series>, String> {
    let items = json.as_array().ok_or("raw series: not an array")?;
    items
        .iter()
        .map(|item| {
            let labels = item["labels"]
                .as_object()
                .ok_or("raw series: labels missing")?
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        v.as_str()
                            .ok_or("raw series: a label value is not a string")?
                            .to_string(),
                    ))
                })
                .collect::<Result<Labels, String>>()?;
            let samples = item["samples"]
                .as_array()
                .ok_or("raw series: samples missing")?
                .iter()
                .map(|p| {
                    let t = p[0].as_i64().ok_or("raw series: a sample's time is not an integer")?;
                    let text = p[1].as_str().ok_or("raw series: a sample's value is not a string")?;
                    let v = match text {
                        "stale" => f64::from_bits(STALE_MARKER_BITS),
                        "NaN" => f64::NAN,
                        "+Inf" => f64::INFINITY,
                        "-Inf" => f64::NEG_INFINITY,
                        other => other
                            .parse::<f64>()
                            .map_err(|_| format!("raw series: {other:?} is not a value"))?,
                    };
                    Ok(Sample { t, v })
                })
                .collect::<Result<Vec<Sample>, String>>()?;
            Ok(Series { labels, samples })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_series_read_back_bit_for_bit_staleness_markers_included() {
        let labels: Labels = [("__name__", "up"), ("job", "a\"b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let values = [
            0.1 + 0.2,
            -0.0,
            1e-300,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from_bits(STALE_MARKER_BITS),
            123_456_789.000_001,
        ];
        let series = vec![Series {
            labels,
            samples: values
                .iter()
                .enumerate()
                .map(|(i, &v)| Sample {
                    t: 1_700_000_000_123 + i as i64,
                    v,
                })
                .collect(),
        }];
        let back = parse_raw_series(&raw_series(&series)).expect("reads back");
        assert_eq!(back[0].labels, series[0].labels);
        let bits = |s: &Series| s.samples.iter().map(|p| (p.t, p.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&back[0]), bits(&series[0]));
        let nan = parse_raw_series(&json!([{"labels": {}, "samples": [[1, "NaN"]]}])).expect("NaN");
        assert!(nan[0].samples[0].v.is_nan() && !is_stale(nan[0].samples[0].v));
        assert!(parse_raw_series(&json!([{"labels": {}, "samples": [[1, "x"]]}])).is_err());
        assert!(parse_raw_series(&json!([{"labels": {}, "samples": [["1", "1"]]}])).is_err());
    }
}
