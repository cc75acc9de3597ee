//! Peer groups: the same metric across the members of a fleet (pods, hosts, instances),
//! each member compared with its peers in the same interval — a member far from the rest
//! is an outlier even when its own history finds nothing odd.

use super::*;

impl Engine {
    /// Files the point under its peer group (same metric and labels but for the member label).
    pub(super) fn note_peer(&mut self, m: &MetricPoint<'_>) {
        if !m.value.is_finite() {
            return;
        }
        let Some((member_label, member)) = MEMBER_LABELS.iter().find_map(|l| m.labels.get(*l).map(|v| (*l, v))) else {
            return;
        };
        // `name{k=v,...}/member_label`, the other labels in order; built in one string
        // because this runs for every metric point.
        let others = || m.labels.iter().filter(|(k, _)| k.as_str() != member_label);
        let mut group_key = String::with_capacity(m.name.len() + member_label.len() + 64);
        group_key.push_str(m.name);
        group_key.push('{');
        for (i, (k, v)) in others().enumerate() {
            if i > 0 {
                group_key.push(',');
            }
            group_key.push_str(k);
            group_key.push('=');
            group_key.push_str(v);
        }
        group_key.push_str("}/");
        group_key.push_str(member_label);
        if !self.peer_groups.contains_key(&group_key) {
            if self.peer_groups.len() >= self.cfg.max_series / 10 {
                return;
            }
            self.peer_groups.insert(
                group_key.clone(),
                PeerGroup {
                    name: m.name.to_string(),
                    service: m.service.map(str::to_string),
                    unit: m.unit.to_string(),
                    labels: others().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    member_label: member_label.to_string(),
                    members: BTreeMap::new(),
                    last_seen_ms: m.ts_ms,
                },
            );
        }
        if let Some(b) = self.bucket_for(super::lanes::Lane::Metrics, m.ts_ms) {
            b.peers.entry(group_key).or_default().insert(member.clone(), m.value);
        }
    }

    /// Compares the members of each group that reported in the closed interval.
    pub(super) fn close_peers(&mut self, end: i64, peers: HashMap<String, HashMap<String, f64>>) {
        for (group_key, values) in peers {
            let Some(g) = self.peer_groups.get_mut(&group_key) else {
                continue;
            };
            g.last_seen_ms = end;
            // A member that skipped an interval starts its window again: windows must align.
            g.members.retain(|m, _| values.contains_key(m));
            for (member, v) in values {
                if !g.members.contains_key(&member) && g.members.len() >= MAX_MEMBERS {
                    continue;
                }
                let w = g.members.entry(member).or_default();
                if w.len() == PEER_WINDOW {
                    w.pop_front();
                }
                w.push_back(v);
            }
            let full: Vec<(&String, Vec<f64>)> = g
                .members
                .iter()
                .filter(|(_, w)| w.len() == PEER_WINDOW)
                .map(|(m, w)| (m, w.iter().copied().collect()))
                .collect();
            if full.len() < 3 {
                continue;
            }
            let windows: Vec<&[f64]> = full.iter().map(|(_, w)| w.as_slice()).collect();
            let outliers = match peer_outliers(&windows) {
                PeerVerdict::Outliers(o) => o,
                PeerVerdict::AllIdentical | PeerVerdict::TooFewMembers => Vec::new(),
            };
            let means: Vec<f64> = full
                .iter()
                .map(|(_, w)| w.iter().sum::<f64>() / w.len() as f64)
                .collect();
            let mut points = Vec::new();
            for (i, (member, _)) in full.iter().enumerate() {
                let key = format!("peer:{group_key}:{member}");
                let is_outlier = outliers.contains(&i);
                let tracked = self.tracked.get(&key).is_some_and(|t| t.open.is_some());
                if !is_outlier && !tracked {
                    continue;
                }
                let others: Vec<f64> = means
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &v)| v)
                    .collect();
                let lower = others.iter().copied().fold(f64::INFINITY, f64::min);
                let upper = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sorted = others.clone();
                sorted.sort_by(f64::total_cmp);
                let mut labels = g.labels.clone();
                labels.insert(g.member_label.clone(), (*member).clone());
                labels.insert("peers".into(), others.len().to_string());
                let signal = SignalRef {
                    key: key.clone(),
                    service: g.service.clone(),
                    name: g.name.clone(),
                    labels,
                };
                let point = PointScore {
                    timestamp_ms: end,
                    value: means[i],
                    expected: sorted[sorted.len() / 2],
                    lower,
                    upper,
                    z: 0.0,
                    score: if is_outlier { PEER_SCORE } else { 0.0 },
                    signal: if is_outlier { Signal::Spike } else { Signal::Normal },
                    seasonal: false,
                    since_ms: None,
                };
                points.push((key, signal, g.unit.clone(), point));
            }
            for (key, signal, unit, point) in points {
                if !self.tracked.contains_key(&key) {
                    self.make_room_for(&key);
                    self.tracked.insert(
                        key.clone(),
                        Tracked {
                            detector: SeriesDetector::new(),
                            kind: DetectorKind::MetricPeer,
                            signal: signal.clone(),
                            unit,
                            last_seen_ms: end,
                            open: None,
                            peak_signal: Signal::Normal,
                            onset_band: None,
                            last_strong_ms: i64::MIN,
                            quiet: 0,
                            interval_series: false,
                            new_patterns: Vec::new(),
                            new_pattern_lines: 0,
                            new_pattern_burst: (0, 0),
                        },
                    );
                }
                if let Some(t) = self.tracked.get_mut(&key) {
                    t.signal = signal;
                    t.last_seen_ms = end;
                }
                let threshold = self.threshold(&key);
                let sentence = self.feedback.get(&key).and_then(SignalFeedback::sentence);
                self.apply_point(&key, point, threshold, sentence, Opens::Any);
            }
        }
        // Groups that stopped reporting go away after the zero-fill horizon.
        let horizon = self.cfg.zero_fill_intervals * self.cfg.interval_ms;
        self.peer_groups.retain(|_, g| end - g.last_seen_ms <= horizon);
    }
}
