//! Which partition of the stream a batch's records go to: hash(service.name) mod P, so one
//! service's records stay in one partition, in order, and one worker sees all of them (its
//! detectors need a service's whole traffic, its topology the service's spans).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::storage::convert::{fnv1a, resource_attrs, string_attr};

/// The partition of a service: FNV-1a of its name. The mapping is part of the stream's
/// format (every ingest node, of every version, must agree on it), which std's hasher does
/// not promise.
pub(crate) fn partition_of(service: &str, partitions: u32) -> u32 {
    (fnv1a(service.bytes()) % u64::from(partitions.max(1))) as u32
}

fn service(resource: &Option<Resource>) -> &str {
    string_attr(resource_attrs(resource), "service.name").unwrap_or("unknown_service")
}

/// Splits `items` into one group per partition, keeping their order within each group;
/// groups come out by partition number, so the same request always splits the same way
/// (a retry must produce the same messages for the stream to recognise them).
fn split<T>(items: Vec<T>, partitions: u32, resource: impl Fn(&T) -> &Option<Resource>) -> Vec<(u32, Vec<T>)> {
    let mut groups: Vec<(u32, Vec<T>)> = Vec::new();
    for item in items {
        let p = partition_of(service(resource(&item)), partitions);
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, group)) => group.push(item),
            None => groups.push((p, vec![item])),
        }
    }
    groups.sort_by_key(|(p, _)| *p);
    groups
}

pub(crate) fn split_logs(r: ExportLogsServiceRequest, partitions: u32) -> Vec<(u32, ExportLogsServiceRequest)> {
    split(r.resource_logs, partitions, |x| &x.resource)
        .into_iter()
        .map(|(p, resource_logs)| (p, ExportLogsServiceRequest { resource_logs }))
        .collect()
}

pub(crate) fn split_traces(r: ExportTraceServiceRequest, partitions: u32) -> Vec<(u32, ExportTraceServiceRequest)> {
    split(r.resource_spans, partitions, |x| &x.resource)
        .into_iter()
        .map(|(p, resource_spans)| (p, ExportTraceServiceRequest { resource_spans }))
        .collect()
}

pub(crate) fn split_metrics(
    r: ExportMetricsServiceRequest,
    partitions: u32,
) -> Vec<(u32, ExportMetricsServiceRequest)> {
    split(r.resource_metrics, partitions, |x| &x.resource)
        .into_iter()
        .map(|(p, resource_metrics)| (p, ExportMetricsServiceRequest { resource_metrics }))
        .collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::ResourceLogs;

    use super::*;
    use crate::storage::convert::service_resource;

    fn resource_logs(service: &str) -> ResourceLogs {
        ResourceLogs {
            resource: Some(service_resource(service)),
            ..ResourceLogs::default()
        }
    }

    #[test]
    fn the_mapping_is_fixed() {
        // The stream's format: a change here moves services between partitions of a live
        // stream, so it must be a deliberate one.
        assert_eq!(partition_of("checkout", 16), (0x42fb_b229_c28a_2459_u64 % 16) as u32);
        assert_eq!(partition_of("", 7), (0xcbf2_9ce4_8422_2325_u64 % 7) as u32);
        assert!((0..1000).all(|i| partition_of(&format!("svc-{i}"), 5) < 5));
    }

    #[test]
    fn a_request_splits_by_service_and_the_same_way_every_time() {
        let names = ["cart", "payment", "cart", "shipping", "payment", "cart"];
        let request = ExportLogsServiceRequest {
            resource_logs: names.iter().map(|n| resource_logs(n)).collect(),
        };
        let parts = split_logs(request.clone(), 4);
        let total: usize = parts.iter().map(|(_, r)| r.resource_logs.len()).sum();
        assert_eq!(total, names.len());
        for (p, r) in &parts {
            for rl in &r.resource_logs {
                assert_eq!(partition_of(service(&rl.resource), 4), *p);
            }
        }
        // One service's resources keep their order within its part.
        assert!(parts.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(split_logs(request, 4), parts);
    }
}
