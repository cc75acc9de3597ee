//! Words that pick a bucket but vary: Drain's prefix tree would split every value of such a
//! word (a host or program name before every kind of line) into its own pattern. Patterns
//! equal but for one such word are filed together (the sibling index); once two of the
//! words there are proven to vary ([`WordSeen::proven`]), the group is merged into its
//! oldest pattern, the others' ids becoming aliases, and their buckets lead to it.

use std::borrow::Cow;

use super::{PatternMiner, WILDCARD, fnv};

/// What is known of one bucket-picking word at one position.
#[derive(Debug, Default)]
pub(super) struct WordSeen {
    /// Rests of line (sibling keys) it stood before.
    rests: Vec<u64>,
    /// Those of them where another word stood in its place too (same rest).
    shared: Vec<u64>,
    /// The other words it was exchanged for (hashes).
    partners: Vec<u64>,
}

impl WordSeen {
    /// Proven to vary: seen before `needed` rests, and exchanged for another word before two
    /// of them (`key` counted as both when given — the group being settled holds the word and
    /// another). Breadth alone is not proof: "slow query … table=payment" / "table=orders"
    /// puts "slow" before many rests; exchange alone is not either: "GET"/"POST" share paths.
    fn proven(&self, needed: usize, key: Option<u64>) -> bool {
        let count = |list: &Vec<u64>| list.len() + usize::from(key.is_some_and(|k| !list.contains(&k)));
        count(&self.rests) >= needed && count(&self.shared) >= 2 && self.partners.len() >= 2
    }
}

/// Rests remembered per bucket-picking word: enough to wake every group a word is in when
/// it proves to vary.
const SPREAD_KEPT: usize = 16;

/// A token's hash mixed with its position, for sums over a line (splitmix64's finaliser).
fn positioned(token: &str, at: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    fnv(&mut h, token.as_bytes());
    let mut z = h ^ (at as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PatternMiner {
    /// `tokens` with the words that would pick the bucket but are proven to vary (see
    /// [`PatternMiner::settle`]) made wildcards; `None` when there are none.
    fn pass_over_varying<'a>(&self, tokens: &[Cow<'a, str>]) -> Option<Vec<Cow<'a, str>>> {
        if self.config.merge_spread == 0 {
            return None;
        }
        let proven = |at: usize, word: &str| {
            self.spread
                .get(&positioned(word, at))
                .is_some_and(|seen| seen.proven(self.config.merge_spread, None))
        };
        let mut passed = None::<Vec<Cow<'a, str>>>;
        let mut constants = 0;
        for at in 0..tokens.len() {
            if constants == self.config.prefix_depth {
                break;
            }
            if tokens[at].as_ref() == WILDCARD {
                continue;
            }
            if proven(at, &tokens[at]) {
                passed.get_or_insert_with(|| tokens.to_vec())[at] = Cow::Borrowed(WILDCARD);
            } else {
                constants += 1;
            }
        }
        passed
    }

    /// For a line that matched nothing in its bucket: the line is matched, as usual, in the
    /// bucket its words pick once those proven to vary are passed over — where patterns merged
    /// over such a word, or started after it proved to vary, live. The line's bucket then
    /// leads there.
    pub(super) fn match_without_varying_words(&mut self, tokens: &[Cow<'_, str>], bucket: u64) -> Option<u64> {
        let passed = self.pass_over_varying(tokens)?;
        let other = self.bucket_of(&passed);
        if other == bucket {
            return None;
        }
        let (id, sim) = self.best_in(other, tokens)?;
        if sim < self.config.similarity {
            return None;
        }
        self.lead_to(id, bucket);
        Some(id)
    }

    /// How many leading positions pick a bucket: up to and including the
    /// `prefix_depth`-th constant token (variables before it included). Deliberately wider
    /// than [`picks_bucket`](super::picks_bucket): a value glued to a name (`LOCAL(<*>`) picks no bucket but is
    /// still filed in the sibling index, which is what rejoins it with its event (the same
    /// rule here cost Thunderbird 0.962 → 0.678 at similarity 0.8).
    fn keyed_span<S: AsRef<str>>(&self, tokens: &[S]) -> usize {
        let mut constants = 0;
        for (i, t) in tokens.iter().enumerate() {
            if t.as_ref() != WILDCARD {
                constants += 1;
                if constants == self.config.prefix_depth {
                    return i + 1;
                }
            }
        }
        tokens.len()
    }

    /// The sibling-index key of `tokens` with position `at` left out: equal for two
    /// templates that differ at most there. `sum` is the sum of [`positioned`] over all
    /// tokens, so each key costs one subtraction.
    fn sibling_key(len: usize, at: usize, sum: u64, token_at: &str) -> u64 {
        let rest = sum.wrapping_sub(positioned(token_at, at));
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        fnv(&mut h, &(len as u64).to_le_bytes());
        fnv(&mut h, &(at as u64).to_le_bytes());
        fnv(&mut h, &rest.to_le_bytes());
        h
    }

    fn sum_of<S: AsRef<str>>(tokens: &[S]) -> u64 {
        tokens
            .iter()
            .enumerate()
            .fold(0u64, |s, (i, t)| s.wrapping_add(positioned(t.as_ref(), i)))
    }

    /// Held patterns equal to `tokens` at every position but `at` (`except` left out).
    fn siblings_at<S: AsRef<str>>(&self, tokens: &[S], at: usize, key: u64, except: u64) -> Vec<u64> {
        let Some(ids) = self.siblings.get(&key) else {
            return Vec::new();
        };
        ids.iter()
            .copied()
            .filter(|id| *id != except)
            .filter(|id| {
                self.patterns.get(id).is_some_and(|p| {
                    p.tokens.len() == tokens.len()
                        && p.tokens
                            .iter()
                            .zip(tokens)
                            .enumerate()
                            .all(|(i, (a, b))| i == at || a == b.as_ref())
                })
            })
            .collect()
    }

    /// Files pattern `id` in the sibling index under its current tokens, and notes each of
    /// its bucket-picking words as seen beside this rest (and beside another word there, if a
    /// sibling holds one). Returns the groups (key, position) that may merge now that a word
    /// proved to vary.
    pub(super) fn file_siblings(&mut self, id: u64) -> Vec<(u64, usize)> {
        if self.config.merge_spread == 0 {
            return Vec::new();
        }
        let Some(p) = self.patterns.get(&id) else {
            return Vec::new();
        };
        let tokens = p.tokens.clone();
        let span = self.keyed_span(&tokens);
        let sum = Self::sum_of(&tokens);
        let mut keys = Vec::with_capacity(span);
        let mut woken = Vec::new();
        for (at, word) in tokens.iter().enumerate().take(span) {
            let key = Self::sibling_key(tokens.len(), at, sum, word);
            keys.push(key);
            if word == WILDCARD {
                continue;
            }
            let others: Vec<String> = self
                .siblings_at(&tokens, at, key, id)
                .iter()
                .map(|i| self.patterns[i].tokens[at].clone())
                .filter(|w| w != word)
                .collect();
            let partners: Vec<&str> = others.iter().map(String::as_str).collect();
            self.note_word(word, at, key, &partners, &mut woken);
            for other in others.iter().filter(|w| *w != WILDCARD) {
                self.note_word(other, at, key, &[word.as_str()], &mut woken);
            }
        }
        for key in &keys {
            self.siblings.entry(*key).or_default().push(id);
        }
        if let Some(p) = self.patterns.get_mut(&id) {
            p.sibling_keys = keys;
        }
        // Forgetting is safe (words prove themselves again); growing without bound is not.
        if self.spread.len() > 4 * self.config.max_patterns.max(1) {
            self.spread.clear();
        }
        woken
    }

    /// Notes that `word` stood at `at` before the rest `key` (`shared`: with another word in
    /// its place there too); when the word is proven to vary, the groups that may merge now
    /// are added to `woken` (all of its groups when it has just become proven).
    fn note_word(&mut self, word: &str, at: usize, key: u64, partners: &[&str], woken: &mut Vec<(u64, usize)>) {
        let needed = self.config.merge_spread;
        let seen = self.spread.entry(positioned(word, at)).or_default();
        let was = seen.proven(needed, None);
        if !seen.rests.contains(&key) && seen.rests.len() < SPREAD_KEPT {
            seen.rests.push(key);
        }
        if !partners.is_empty() && !seen.shared.contains(&key) && seen.shared.len() < SPREAD_KEPT {
            seen.shared.push(key);
        }
        for partner in partners {
            let h = positioned(partner, at);
            if !seen.partners.contains(&h) && seen.partners.len() < SPREAD_KEPT {
                seen.partners.push(h);
            }
        }
        if !seen.proven(needed, None) {
            return;
        }
        if was {
            woken.push((key, at));
        } else {
            woken.extend(seen.rests.iter().map(|k| (*k, at)));
        }
    }

    pub(super) fn unfile_siblings(&mut self, id: u64) {
        let Some(p) = self.patterns.get_mut(&id) else { return };
        for key in std::mem::take(&mut p.sibling_keys) {
            if let Some(ids) = self.siblings.get_mut(&key) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.siblings.remove(&key);
                }
            }
        }
    }

    /// Whether `word` at `at` is proven to vary, counting the group of `key` (which holds it
    /// and another word) as one more rest where it was exchanged.
    fn proven_in(&self, word: &str, at: usize, key: u64) -> bool {
        self.spread
            .get(&positioned(word, at))
            .is_some_and(|seen| seen.proven(self.config.merge_spread, Some(key)))
    }

    /// The group filed under `key` (patterns equal to `reference` but at `at`) is merged into
    /// one with a wildcard there when two of its words at `at` (`extra` included, a line's
    /// word not yet in a pattern) are proven to vary ([`WordSeen::proven`]): a host or
    /// program name turns up before every kind of line, in place of the others, while words
    /// that tell events apart ("VM Started" / "VM Paused", "GET" / "POST") stand before a few.
    /// Returns the group's pattern with a wildcard at `at`, if it has one now.
    fn settle<S: AsRef<str>>(&mut self, reference: &[S], at: usize, key: u64, extra: Option<&str>) -> Option<u64> {
        let found = self.siblings_at(reference, at, key, 0);
        let wild = found
            .iter()
            .copied()
            .find(|id| self.patterns[id].tokens[at] == WILDCARD);
        if let Some(wild) = wild {
            return Some(if found.len() > 1 { self.merge(&found, at) } else { wild });
        }
        let words: Vec<String> = found
            .iter()
            .map(|id| self.patterns[id].tokens[at].clone())
            .chain(extra.map(str::to_string))
            .collect();
        if found.is_empty() {
            return None;
        }
        let proven = words.iter().filter(|w| self.proven_in(w, at, key)).count();
        (proven >= 2).then(|| self.merge(&found, at))
    }

    /// Settles the groups a filing woke; returns what `id` goes by afterwards.
    pub(super) fn settle_woken(&mut self, id: u64, woken: Vec<(u64, usize)>) -> u64 {
        for (key, at) in woken {
            let reference = self
                .siblings
                .get(&key)
                .and_then(|ids| ids.iter().find_map(|i| self.patterns.get(i)))
                .map(|p| p.tokens.clone());
            if let Some(reference) = reference {
                self.settle(&reference, at, key, None);
            }
        }
        self.resolve(id)
    }

    /// For a line that matched nothing in its bucket: a pattern it equals but for one of
    /// the positions that picked the bucket, once that position is known to vary (see
    /// [`PatternMiner::settle`]). The line's bucket then leads to it.
    pub(super) fn sibling_for(&mut self, tokens: &[Cow<'_, str>], bucket: u64) -> Option<u64> {
        if self.config.merge_spread == 0 {
            return None;
        }
        let span = self.keyed_span(tokens);
        let sum = Self::sum_of(tokens);
        for at in 0..span {
            if tokens[at].as_ref() == WILDCARD {
                continue;
            }
            let key = Self::sibling_key(tokens.len(), at, sum, &tokens[at]);
            let Some(target) = self.settle(tokens, at, key, Some(tokens[at].as_ref())) else {
                continue;
            };
            self.lead_to(target, bucket);
            // The line's word stood beside this rest too: it may now prove to vary.
            let mut woken = Vec::new();
            let partners: Vec<String> = self
                .siblings_at(tokens, at, key, 0)
                .iter()
                .map(|i| self.patterns[i].tokens[at].clone())
                .collect();
            let partners: Vec<&str> = partners.iter().map(String::as_str).collect();
            self.note_word(&tokens[at], at, key, &partners, &mut woken);
            return Some(self.settle_woken(target, woken));
        }
        None
    }

    /// Re-files pattern `id` after some of its tokens became wildcards, merging it with its
    /// siblings if it now has to; returns the id its lines go by.
    pub(super) fn refiled(&mut self, id: u64) -> u64 {
        if self.config.merge_spread == 0 {
            return id;
        }
        self.unfile_siblings(id);
        let woken = self.file_siblings(id);
        let Some(p) = self.patterns.get(&id) else { return id };
        let tokens = p.tokens.clone();
        let span = self.keyed_span(&tokens);
        let sum = Self::sum_of(&tokens);
        for at in 0..span {
            if tokens[at] != WILDCARD {
                let key = Self::sibling_key(tokens.len(), at, sum, &tokens[at]);
                if self.settle(&tokens, at, key, None).is_some() && self.resolve(id) != id {
                    break;
                }
            }
        }
        self.settle_woken(id, woken)
    }

    /// Merges patterns equal but at position `at` into the oldest (lowest id), which gets a
    /// wildcard there; the others' ids become its aliases and their buckets lead to it.
    fn merge(&mut self, ids: &[u64], at: usize) -> u64 {
        self.merge_into_oldest(ids, Some(at))
    }

    /// Merges patterns of one length into the oldest: every position where they disagree
    /// (and `at`, if given) becomes a wildcard; the others' ids become its aliases and their
    /// buckets lead to it.
    fn merge_into_oldest(&mut self, ids: &[u64], at: Option<usize>) -> u64 {
        let Some(&survivor) = ids.iter().min() else {
            return 0;
        };
        self.merged = true;
        self.unfile_siblings(survivor);
        for &id in ids.iter().filter(|id| **id != survivor) {
            self.unfile_siblings(id);
            let Some(gone) = self.patterns.remove(&id) else {
                continue;
            };
            if let Some(p) = self.patterns.get_mut(&survivor) {
                for (a, b) in p.tokens.iter_mut().zip(&gone.tokens) {
                    if a != b {
                        *a = WILDCARD.to_string();
                    }
                }
            }
            for b in std::iter::once(gone.bucket).chain(gone.also_in.iter().copied()) {
                if let Some(list) = self.buckets.get_mut(&b) {
                    list.retain(|i| *i != id);
                    if list.is_empty() {
                        self.buckets.remove(&b);
                    }
                }
                self.lead_to(survivor, b);
            }
            if let Some(p) = self.patterns.get_mut(&survivor) {
                p.count += gone.count;
                p.first_seen_ns = p.first_seen_ns.min(gone.first_seen_ns);
                p.last_seen_ns = p.last_seen_ns.max(gone.last_seen_ns);
                p.last_used = p.last_used.max(gone.last_used);
            }
            self.aliases.insert(id, survivor);
        }
        // The aliases are bounded like the patterns: the oldest go first.
        while self.aliases.len() > self.config.max_patterns {
            self.aliases.pop_first();
        }
        let old_bucket = match self.patterns.get_mut(&survivor) {
            Some(p) => {
                if let Some(t) = at.and_then(|at| p.tokens.get_mut(at)) {
                    *t = WILDCARD.to_string();
                }
                p.bucket
            }
            None => return survivor,
        };
        let new_bucket = {
            let p = &self.patterns[&survivor];
            let tokens: Vec<Cow<'_, str>> = p.tokens.iter().map(|t| Cow::Borrowed(t.as_str())).collect();
            self.bucket_of(&tokens)
        };
        if new_bucket != old_bucket {
            // Lines with the old value still hash to the old bucket: it keeps leading here.
            if let Some(p) = self.patterns.get_mut(&survivor) {
                p.bucket = new_bucket;
                p.also_in.retain(|b| *b != new_bucket);
                p.also_in.push(old_bucket);
            }
            let list = self.buckets.entry(new_bucket).or_default();
            if !list.contains(&survivor) {
                list.push(survivor);
            }
        }
        self.file_siblings(survivor);
        survivor
    }

    /// After a merge: a pattern whose bucket was picked by words now proven to vary joins the
    /// pattern its other words lead to, when it is as similar to it as a line would have to be
    /// (a host's pattern started before the host proved to vary, whose other words kept it out
    /// of every sibling group, would otherwise stay apart for good). Merges are rare, and so is
    /// this pass over the patterns.
    pub(super) fn rehome(&mut self) {
        let mut ids: Vec<u64> = self.patterns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(p) = self.patterns.get(&id) else { continue };
            let tokens: Vec<Cow<'_, str>> = p.tokens.iter().map(|t| Cow::Owned(t.clone())).collect();
            let bucket = p.bucket;
            let other = match self.pass_over_varying(&tokens) {
                Some(passed) => self.bucket_of(&passed),
                None => bucket,
            };
            let found = [bucket, other]
                .into_iter()
                .filter_map(|b| self.best_in_except(b, &tokens, id))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((target, sim)) = found
                && sim >= self.config.similarity
            {
                let survivor = self.merge_into_oldest(&[target, id], None);
                self.lead_to(survivor, bucket);
            }
        }
    }

    /// Makes bucket `b` lead to pattern `id` too.
    fn lead_to(&mut self, id: u64, b: u64) {
        let Some(p) = self.patterns.get_mut(&id) else { return };
        if p.bucket != b && !p.also_in.contains(&b) {
            p.also_in.push(b);
        }
        let list = self.buckets.entry(b).or_default();
        if !list.contains(&id) {
            list.push(id);
        }
    }
}
