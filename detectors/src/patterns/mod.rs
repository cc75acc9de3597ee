//! Log patterns: every log line gets a pattern id and a template, online.
//!
//! ```
//! use vigil_detectors::PatternMiner;
//! let mut miner = PatternMiner::default();
//! let a = miner.add("user 42 logged in", 0);
//! let b = miner.add("user 7 logged in", 1);
//! assert_eq!(a.pattern_id, b.pattern_id);
//! assert_eq!(miner.get(a.pattern_id).map(|p| p.template()).as_deref(), Some("user <*> logged in"));
//! ```

mod mask;
mod miner;

pub use mask::{WILDCARD, is_variable};
pub use miner::{Assignment, MinerConfig, MinerSnapshot, Pattern, PatternMiner};
