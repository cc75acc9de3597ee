//! Label sets and the fingerprint that gives an alert its identity.

use std::collections::BTreeMap;

/// Labels of an alert: sorted, so the fingerprint does not depend on the order sent.
pub type LabelSet = BTreeMap<String, String>;

/// Identity of an alert: Alertmanager's fingerprint (Prometheus' `LabelSet.Fingerprint`):
/// FNV-1a over the sorted names and values, each followed by the byte 0xff (which UTF-8
/// never contains, so `ab=c` and `a=bc` differ), as 16 hex digits. The same labels give
/// the same id here and in Alertmanager, so `amtool` and Grafana can name alerts by it.
pub fn fingerprint(labels: &LabelSet) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k
            .as_bytes()
            .iter()
            .chain([0xffu8].iter())
            .chain(v.as_bytes())
            .chain([0xffu8].iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The labels named in `keys` (all labels when `keys` holds "..."), for grouping.
pub fn project(labels: &LabelSet, keys: &[String]) -> LabelSet {
    if keys.iter().any(|k| k == "...") {
        return labels.clone();
    }
    keys.iter()
        .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fingerprint_is_order_independent_and_unambiguous() {
        assert_eq!(
            fingerprint(&set(&[("a", "1"), ("b", "2")])),
            fingerprint(&set(&[("b", "2"), ("a", "1")]))
        );
        // Separators keep "ab=c" and "a=bc" apart.
        assert_ne!(fingerprint(&set(&[("ab", "c")])), fingerprint(&set(&[("a", "bc")])));
        assert_eq!(fingerprint(&set(&[])).len(), 16);
    }

    #[test]
    fn fingerprints_are_prometheus_own() {
        // The vectors of prometheus/common's signature tests (decimal there).
        assert_eq!(
            fingerprint(&set(&[])),
            format!("{:016x}", 14_695_981_039_346_656_037u64)
        );
        assert_eq!(
            fingerprint(&set(&[("name", "garland, briggs"), ("fear", "love is not enough")])),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
    }

    #[test]
    fn projection_keeps_named_labels_or_all() {
        let l = set(&[("alertname", "HighCPU"), ("host", "a"), ("env", "prod")]);
        assert_eq!(
            project(&l, &["alertname".into(), "missing".into()]),
            set(&[("alertname", "HighCPU")])
        );
        assert_eq!(project(&l, &["...".into()]), l);
    }
}
