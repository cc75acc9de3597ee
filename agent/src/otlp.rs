//! Small helpers for building OTLP messages, and the host's resource attributes.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

pub fn kv_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(value)),
        }),
        ..KeyValue::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "vigil-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
}

/// `host.name`, `host.id`, `os.type`: what the OpenTelemetry resource detectors set.
#[derive(Debug, Clone)]
pub struct HostResource {
    pub attributes: Vec<KeyValue>,
}

impl HostResource {
    pub fn detect(extra: &BTreeMap<String, String>) -> HostResource {
        let host_name = rustix::system::uname().nodename().to_string_lossy().into_owned();
        let mut attributes = vec![kv("host.name", host_name), kv("os.type", "linux")];
        for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
            if let Ok(id) = std::fs::read_to_string(path)
                && !id.trim().is_empty()
            {
                attributes.push(kv("host.id", id.trim()));
                break;
            }
        }
        for (k, v) in extra {
            attributes.push(kv(k, v.clone()));
        }
        HostResource { attributes }
    }

    /// The host attributes plus `more`, where `more` wins on conflicts.
    pub fn resource(&self, more: &[KeyValue]) -> Resource {
        let mut attributes: Vec<KeyValue> = self
            .attributes
            .iter()
            .filter(|a| !more.iter().any(|m| m.key == a.key))
            .cloned()
            .collect();
        attributes.extend(more.iter().cloned());
        Resource {
            attributes,
            ..Resource::default()
        }
    }

    /// Adds the host attributes a resource does not already carry (for forwarded OTLP:
    /// the application's own values win).
    pub fn enrich(&self, resource: &mut Resource) {
        for a in &self.attributes {
            if !resource.attributes.iter().any(|r| r.key == a.key) {
                resource.attributes.push(a.clone());
            }
        }
    }
}
