//! Vigil's time-series store for metric samples.
//!
//! Samples are kept per series in Gorilla-compressed chunks (`chunk`, Prometheus' XOR
//! layout), 120 to a chunk, in one block per UTC day (`block`): an append-only file of
//! series labels, an append-only file of chunks, and in memory an inverted index on labels
//! (`postings`) and each series' open head (`head`). Durability follows the collector's
//! write-ahead log: every sample comes with the WAL sequence number (LSN) of the entry that
//! carried it, a head is sealed into a chunk between entries, the open heads are written
//! to a snapshot every so often (`snapshot`), and [`Tsdb::wal_floor`] says from which entry
//! the WAL must still be kept. After a crash, replaying the WAL from there puts back exactly
//! the samples neither in chunks nor in the snapshot ([`Tsdb::append`] skips the others), so
//! a sample is stored once.
//!
//! It does no background work of its own: the caller syncs ([`Tsdb::sync`]), snapshots
//! ([`Tsdb::snapshot_heads`]), seals the heads of series gone quiet
//! ([`Tsdb::seal_idle_heads`]) and drops old days ([`Tsdb::drop_day`]) on its own
//! schedule, as the collector's indexer does for the tantivy indexes.

mod bits;
mod block;
pub mod chunk;
mod head;
mod layout;
mod postings;
mod read;
mod record;
mod snapshot;
mod store;

use std::path::{Path, PathBuf};

pub use chunk::Sample;
pub use head::CHUNK_SAMPLES;
pub use read::{Planned, PlannedSeries};
pub use store::{Downsampled, Selection, SeriesSamples, Stats, Tsdb};

/// A series' labels, sorted by name, names unique; the metric name is `__name__`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Sorts the pairs by name; of two pairs with one name the last is kept. Empty values
    /// are dropped: in Prometheus' model an empty label is an absent one.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Labels {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|b, a| a.0 == b.0);
        Labels(v)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A label matcher with Prometheus' meaning: an absent label has the value "", and a
/// regular expression must match the whole value.
#[derive(Clone, Debug)]
pub enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    Regex(String, regex::Regex),
    NotRegex(String, regex::Regex),
}

impl Matcher {
    /// `name =~ pattern`, anchored at both ends.
    pub fn regex(name: &str, pattern: &str) -> Result<Matcher, regex::Error> {
        Ok(Matcher::Regex(name.into(), anchored(pattern)?))
    }

    /// `name !~ pattern`, anchored at both ends.
    pub fn not_regex(name: &str, pattern: &str) -> Result<Matcher, regex::Error> {
        Ok(Matcher::NotRegex(name.into(), anchored(pattern)?))
    }

    pub fn name(&self) -> &str {
        match self {
            Matcher::Equal(n, _) | Matcher::NotEqual(n, _) | Matcher::Regex(n, _) | Matcher::NotRegex(n, _) => n,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equal(_, v) => value == v,
            Matcher::NotEqual(_, v) => value != v,
            Matcher::Regex(_, re) => re.is_match(value),
            Matcher::NotRegex(_, re) => !re.is_match(value),
        }
    }
}

fn anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: &'static str },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn corrupt(path: &Path, what: &'static str) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_keep_the_last_of_a_name_and_drop_empty_values() {
        let l = Labels::new([("job", "a"), ("__name__", "up"), ("job", "b"), ("zone", "")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("__name__", "up"), ("job", "b")]);
        assert_eq!(l.get("job"), Some("b"));
        assert_eq!(l.get("zone"), None);
    }

    #[test]
    fn matchers_mean_what_they_mean_in_promql() {
        let re = Matcher::regex("job", "api|web").expect("regex");
        assert!(re.matches("api") && !re.matches("api2") && !re.matches(""));
        let nre = Matcher::not_regex("job", "api.*").expect("regex");
        assert!(nre.matches("") && !nre.matches("api-1"));
        assert!(Matcher::NotEqual("job".into(), "x".into()).matches(""));
        assert!(Matcher::Equal("job".into(), String::new()).matches(""));
        assert!(Matcher::regex("job", "(").is_err());
    }
}
