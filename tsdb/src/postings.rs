//! The inverted index of a block: for each label name and value, the series that carry
//! it (ascending references, as series are numbered in the order they came). A selection
//! starts from the postings of its narrowest matcher that cannot match an absent label,
//! then checks every matcher on each candidate's labels.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Labels, Matcher};

#[derive(Default)]
pub(crate) struct Postings {
    by_label: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    count: u32,
}

impl Postings {
    /// Indexes series `id`, the next one: ids are handed out in order.
    pub(crate) fn add(&mut self, id: u32, labels: &Labels) {
        for (name, value) in labels.iter() {
            self.by_label
                .entry(name.to_string())
                .or_default()
                .entry(value.to_string())
                .or_default()
                .push(id);
        }
        self.count = self.count.max(id + 1);
    }

    /// The series whose labels can satisfy `matchers`: a superset, to be checked on each
    /// series' labels.
    pub(crate) fn candidates(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut best: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| !m.matches("")) {
            let Some(values) = self.by_label.get(m.name()) else {
                return Vec::new();
            };
            let mut ids: Vec<u32> = values
                .iter()
                .filter(|(v, _)| m.matches(v))
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            ids.sort_unstable();
            if best.as_ref().is_none_or(|b| ids.len() < b.len()) {
                best = Some(ids);
            }
        }
        best.unwrap_or_else(|| (0..self.count).collect())
    }

    /// Label names some series for which `live` holds carries.
    pub(crate) fn names(&self, live: impl Fn(u32) -> bool) -> impl Iterator<Item = &str> {
        self.by_label
            .iter()
            .filter(move |(_, values)| values.values().flatten().any(|&id| live(id)))
            .map(|(name, _)| name.as_str())
    }

    /// Values of label `name` that some series for which `live` holds carries.
    pub(crate) fn values(&self, name: &str, live: impl Fn(u32) -> bool) -> BTreeSet<&str> {
        self.by_label
            .get(name)
            .map(|values| {
                values
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|&id| live(id)))
                    .map(|(value, _)| value.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Postings {
        let mut p = Postings::default();
        for (id, (host, mode)) in [("a", "idle"), ("b", "user"), ("a", "user")].into_iter().enumerate() {
            let labels = Labels::new([("__name__", "cpu"), ("host", host), ("mode", mode)]);
            p.add(id as u32, &labels);
        }
        p.add(3, &Labels::new([("__name__", "up")]));
        p
    }

    #[test]
    fn the_narrowest_positive_matcher_picks_the_candidates() {
        let p = index();
        let eq = |n: &str, v: &str| Matcher::Equal(n.into(), v.into());
        assert_eq!(p.candidates(&[eq("__name__", "cpu"), eq("mode", "user")]), vec![1, 2]);
        assert_eq!(p.candidates(&[eq("host", "b")]), vec![1]);
        assert_eq!(p.candidates(&[eq("nope", "x")]), Vec::<u32>::new());
        let re = Matcher::regex("host", "a|b").expect("regex");
        assert_eq!(p.candidates(&[re]), vec![0, 1, 2]);
        // Matchers that an absent label satisfies cannot narrow: every series is a candidate.
        assert_eq!(
            p.candidates(&[Matcher::NotEqual("host".into(), "a".into())]),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn names_and_values_list_what_was_indexed() {
        let p = index();
        let all = |_| true;
        assert_eq!(p.names(all).collect::<Vec<_>>(), vec!["__name__", "host", "mode"]);
        assert_eq!(
            p.values("mode", all).into_iter().collect::<Vec<_>>(),
            vec!["idle", "user"]
        );
        assert!(p.values("nope", all).is_empty());
    }
}
