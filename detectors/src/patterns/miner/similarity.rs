//! The similarity a line joins a pattern by: Drain's share of the line's constant tokens
//! that the pattern has, with two refinements for structured and glued tokens.

use std::borrow::Cow;

use super::PatternMiner;
use crate::patterns::mask::{WILDCARD, glued_name, has_message_field, is_assignment, message_value};

impl PatternMiner {
    /// The pattern of `bucket` most similar to `tokens`, with its similarity: the fraction of
    /// the line's constant tokens it has (ties go to the more general pattern).
    pub(super) fn best_in(&self, bucket: u64, tokens: &[Cow<'_, str>]) -> Option<(u64, f64)> {
        self.best_in_except(bucket, tokens, 0)
    }

    /// [`PatternMiner::best_in`], pattern `except` left out.
    pub(super) fn best_in_except(&self, bucket: u64, tokens: &[Cow<'_, str>], except: u64) -> Option<(u64, f64)> {
        // A structured line's envelope does not count (`has_message_field`).
        let structured = has_message_field(tokens);
        let envelope = |t: &str| is_assignment(t) || message_value(t) == Some(WILDCARD);
        let counts = |t: &str| t != WILDCARD && !(structured && envelope(t));
        let constants = tokens.iter().filter(|t| counts(t)).count();
        let mut best: Option<(u64, f64, usize)> = None;
        for id in self.buckets.get(&bucket)? {
            if *id == except {
                continue;
            }
            let Some(p) = self.patterns.get(id) else { continue };
            if p.tokens.len() != tokens.len() {
                continue;
            }
            let (mut equal, mut wild) = (0usize, 0usize);
            let mut named_apart = false;
            for (a, b) in p.tokens.iter().zip(tokens) {
                if a == WILDCARD {
                    wild += 1;
                } else if a == b.as_ref() {
                    equal += usize::from(counts(b));
                } else if let (Some(x), Some(y)) = (glued_name(a), glued_name(b))
                    && x != y
                {
                    // A glued token's name is what the bucket would have held (`"GET(<*>`
                    // beside `"POST(<*>`): where two name different things, they are two
                    // events, however much else they share.
                    named_apart = true;
                    break;
                }
            }
            if named_apart {
                continue;
            }
            // Over the line's constant tokens only: a line that is mostly
            // parameters (an access log) must still match its pattern.
            let sim = if constants == 0 {
                1.0
            } else {
                equal as f64 / constants as f64
            };
            let better = match best {
                None => true,
                Some((_, s, w)) => sim > s || (sim == s && wild > w),
            };
            if better {
                best = Some((*id, sim, wild));
            }
        }
        best.map(|(id, sim, _)| (id, sim))
    }
}
