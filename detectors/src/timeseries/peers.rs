//! Peer-group outliers: the one host or pod whose copy of a metric behaves unlike its peers
//! (one replica at 95 % CPU while the others idle), which no per-series baseline sees when
//! the replica was always a little hotter.
//!
//! Members' recent windows (aligned buckets) go to augurs' MAD detector. MAD is zero when
//! most members report the same constant (idle queues, zero error counts), and the MAD
//! detector then cannot scale anything; in that case, DBSCAN with a small radius around the
//! shared value decides, so the one member that left the constant is still found.

use augurs_outlier::{DbscanDetector, MADDetector, OutlierDetector};

/// MAD threshold (in scaled MADs) for a point to be outlying.
const MAD_THRESHOLD: f64 = 3.5;
/// Fraction of a window's points that must be outlying for a member to be reported.
pub(crate) const MIN_OUTLYING_FRACTION: f64 = 0.5;

/// Why the group was judged the way it was.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PeerVerdict {
    /// Fewer than three members or empty windows: nothing to compare.
    TooFewMembers,
    /// Every member reported the same value throughout.
    AllIdentical,
    /// Members (by index) that behave unlike the rest.
    Outliers(Vec<usize>),
}

/// Compares members' aligned windows (each the same length, finite values).
pub(crate) fn peer_outliers(windows: &[&[f64]]) -> PeerVerdict {
    let len = windows.first().map_or(0, |w| w.len());
    if windows.len() < 3
        || len == 0
        || windows
            .iter()
            .any(|w| w.len() != len || w.iter().any(|v| !v.is_finite()))
    {
        return PeerVerdict::TooFewMembers;
    }
    let first = windows[0][0];
    if windows.iter().all(|w| w.iter().all(|&v| v == first)) {
        return PeerVerdict::AllIdentical;
    }
    let mad = MADDetector::with_threshold(MAD_THRESHOLD);
    let by_mad = mad.preprocess(windows).and_then(|p| mad.detect(&p));
    if let Ok(out) = by_mad {
        // augurs flags a series with any outlying point; we ask for most of the window.
        let members = out
            .series_results
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let outlying = s.scores.iter().filter(|&&z| z.abs() > MAD_THRESHOLD).count();
                outlying as f64 >= MIN_OUTLYING_FRACTION * len as f64
            })
            .map(|(i, _)| i)
            .collect();
        return PeerVerdict::Outliers(members);
    }
    // MAD is degenerate (a shared constant): cluster with a radius relative to that value.
    let mut all: Vec<f64> = windows.iter().flat_map(|w| w.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let shared = all[all.len() / 2];
    let epsilon = (shared.abs() * 0.01).max(1e-9);
    let dbscan = DbscanDetector::with_epsilon(epsilon);
    match dbscan.preprocess(windows).and_then(|p| dbscan.detect(&p)) {
        Ok(out) => PeerVerdict::Outliers(
            out.series_results
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    let outlying = s.scores.iter().filter(|&&v| v > 0.0).count();
                    outlying as f64 >= MIN_OUTLYING_FRACTION * len as f64
                })
                .map(|(i, _)| i)
                .collect(),
        ),
        Err(_) => PeerVerdict::Outliers(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_replica_is_found_among_noisy_peers() {
        let members: Vec<Vec<f64>> = (0..6)
            .map(|m| {
                (0..30)
                    .map(|t| 20.0 + ((m * 7 + t * 3) % 5) as f64 + if m == 4 { 60.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let refs: Vec<&[f64]> = members.iter().map(|v| v.as_slice()).collect();
        assert_eq!(peer_outliers(&refs), PeerVerdict::Outliers(vec![4]));
    }

    #[test]
    fn constant_peers_do_not_break_mad_and_the_one_that_moved_is_found() {
        let mut members = vec![vec![0.0; 20]; 5];
        members[2] = vec![7.0; 20];
        let refs: Vec<&[f64]> = members.iter().map(|v| v.as_slice()).collect();
        assert_eq!(peer_outliers(&refs), PeerVerdict::Outliers(vec![2]));
        let same = vec![vec![3.0; 20]; 5];
        let refs: Vec<&[f64]> = same.iter().map(|v| v.as_slice()).collect();
        assert_eq!(peer_outliers(&refs), PeerVerdict::AllIdentical);
    }

    #[test]
    fn too_few_or_ragged_members_are_not_judged() {
        let a = [1.0, 2.0];
        let b = [1.0];
        assert_eq!(peer_outliers(&[&a, &a]), PeerVerdict::TooFewMembers);
        assert_eq!(peer_outliers(&[&a, &a, &b]), PeerVerdict::TooFewMembers);
        assert_eq!(peer_outliers(&[&a, &a, &[f64::NAN, 1.0]]), PeerVerdict::TooFewMembers);
    }
}
