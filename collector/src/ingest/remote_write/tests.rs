//! The remote-write mapping and decoding on hand-made requests.

use super::*;

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
        histograms: Vec::new(),
    }
}

fn kind(req: &ExportMetricsServiceRequest, name: &str) -> &'static str {
    let m = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    match &m.data {
        Some(metric::Data::Sum(s)) if s.is_monotonic => "counter",
        Some(metric::Data::Gauge(_)) => "gauge",
        _ => "other",
    }
}

#[test]
fn job_and_instance_become_the_resource_and_other_labels_stay_on_points() {
    let request = WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("__name__", "node_load1"),
                    ("job", "infra/node"),
                    ("instance", "db1:9100"),
                ],
                &[(0.5, 1_000), (0.7, 2_000)],
            ),
            series(
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("job", "infra/node"),
                    ("instance", "db1:9100"),
                    ("cpu", "0"),
                    ("mode", "idle"),
                ],
                &[(10.0, 1_000)],
            ),
        ],
        metadata: Vec::new(),
    };
    let (otlp, stale) = to_otlp(&request, &Families::default());
    assert_eq!(stale, 0);
    assert_eq!(otlp.resource_metrics.len(), 1, "one job and instance, one resource");
    let resource = otlp.resource_metrics[0].resource.as_ref().expect("resource");
    let attr = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| match &a.value {
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                }) => Some(s.as_str()),
                _ => None,
            })
    };
    assert_eq!(attr("service.name"), Some("node"));
    assert_eq!(attr("service.namespace"), Some("infra"));
    assert_eq!(attr("service.instance.id"), Some("db1:9100"));
    assert_eq!(kind(&otlp, "node_load1"), "gauge");
    assert_eq!(kind(&otlp, "node_cpu_seconds_total"), "counter");
    let cpu = &otlp.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "node_cpu_seconds_total")
        .expect("cpu");
    let Some(metric::Data::Sum(sum)) = &cpu.data else {
        panic!("sum")
    };
    let keys: Vec<&str> = sum.data_points[0].attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["cpu", "mode"]);
    assert_eq!(sum.data_points[0].time_unix_nano, 1_000_000_000, "ms become ns");
}

#[test]
fn metadata_decides_the_type_and_is_remembered_for_later_requests() {
    let families = Families::default();
    families.learn(&[
        MetricMetadata {
            r#type: SUMMARY,
            metric_family_name: "rpc_duration_seconds".into(),
            help: "RPC latency.".into(),
            ..Default::default()
        },
        MetricMetadata {
            r#type: GAUGE_HISTOGRAM,
            metric_family_name: "queue_depth".into(),
            ..Default::default()
        },
        MetricMetadata {
            r#type: COUNTER,
            metric_family_name: "weird_name".into(),
            ..Default::default()
        },
    ]);
    let request = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "rpc_duration_seconds"), ("quantile", "0.99")],
                &[(0.2, 1)],
            ),
            series(&[("__name__", "rpc_duration_seconds_count")], &[(5.0, 1)]),
            series(&[("__name__", "rpc_duration_seconds_sum")], &[(1.0, 1)]),
            series(&[("__name__", "queue_depth_bucket"), ("le", "10")], &[(3.0, 1)]),
            series(&[("__name__", "weird_name")], &[(3.0, 1)]),
            // No metadata: names decide.
            series(&[("__name__", "http_requests_total")], &[(1.0, 1)]),
            series(&[("__name__", "latency_bucket"), ("le", "0.5")], &[(1.0, 1)]),
            series(&[("__name__", "temperature_celsius")], &[(21.0, 1)]),
        ],
        metadata: Vec::new(),
    };
    let (otlp, _) = to_otlp(&request, &families);
    assert_eq!(kind(&otlp, "rpc_duration_seconds"), "gauge", "a summary's quantiles");
    assert_eq!(kind(&otlp, "rpc_duration_seconds_count"), "counter");
    assert_eq!(kind(&otlp, "rpc_duration_seconds_sum"), "counter");
    assert_eq!(
        kind(&otlp, "queue_depth_bucket"),
        "gauge",
        "a gauge histogram goes up and down"
    );
    assert_eq!(kind(&otlp, "weird_name"), "counter");
    assert_eq!(kind(&otlp, "http_requests_total"), "counter");
    assert_eq!(kind(&otlp, "latency_bucket"), "counter");
    assert_eq!(kind(&otlp, "temperature_celsius"), "gauge");
    // The family's help travels as the description of each of its series.
    let description = |name: &str| {
        otlp.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .find(|m| m.name == name)
            .map(|m| m.description.clone())
    };
    assert_eq!(description("rpc_duration_seconds").as_deref(), Some("RPC latency."));
    assert_eq!(
        description("rpc_duration_seconds_count").as_deref(),
        Some("RPC latency.")
    );
    assert_eq!(description("weird_name").as_deref(), Some(""));
}

#[test]
fn staleness_markers_become_points_without_a_recorded_value() {
    let stale = f64::from_bits(STALE_NAN);
    let request = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], &[(1.0, 1_000), (stale, 2_000)]),
            series(&[("__name__", "gone"), ("job", "b")], &[(stale, 2_000)]),
        ],
        metadata: Vec::new(),
    };
    let (otlp, markers) = to_otlp(&request, &Families::default());
    assert_eq!(markers, 2);
    assert_eq!(otlp.resource_metrics.len(), 2, "a series that only ends is still sent");
    let points: Vec<&NumberDataPoint> = otlp
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics[0].metrics[0].data)
        .flat_map(|d| match d {
            metric::Data::Gauge(g) => g.data_points.iter(),
            _ => panic!("gauge"),
        })
        .collect();
    assert_eq!(points.len(), 3);
    let flagged: Vec<i64> = points
        .iter()
        .filter(|p| p.flags == NO_RECORDED_VALUE)
        .map(|p| (p.time_unix_nano / 1_000_000) as i64)
        .collect();
    assert_eq!(flagged, [2_000, 2_000]);
}

#[test]
fn bodies_that_are_not_snappy_protobuf_say_what_is_wrong() {
    let err = decode(b"plain protobuf, not snappy", 1 << 20).expect_err("not snappy");
    assert!(
        matches!(&err, IngestError::Invalid(m) if m.contains("snappy")),
        "{err:?}"
    );

    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).expect("compress");
    let err = decode(&garbage, 1 << 20).expect_err("not a WriteRequest");
    assert!(
        matches!(&err, IngestError::Invalid(m) if m.contains("WriteRequest")),
        "{err:?}"
    );

    let big = WriteRequest {
        timeseries: vec![series(&[("__name__", "x")], &[(1.0, 1); 1000])],
        metadata: Vec::new(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&big.encode_to_vec())
        .expect("compress");
    let err = decode(&body, 1024).expect_err("over the limit");
    assert!(
        matches!(&err, IngestError::TooLarge(m) if m.contains("max_decompressed_bytes")),
        "{err:?}"
    );

    let (ok, len, refused) = decode(&body, 1 << 20).expect("fits");
    assert_eq!((ok.timeseries[0].samples.len(), refused), (1000, 0));
    assert_eq!(len, big.encoded_len());
}
