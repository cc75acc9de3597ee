//! Alertmanager label matchers: `name="value"`, `!=`, `=~` and `!~` (regular expressions
//! anchored at both ends, as Alertmanager does), parsed from `{a="b", c=~"x|y"}` lists.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`: equal to the value.
    #[serde(rename = "=")]
    Equal,
    /// `!=`: not equal to the value.
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~`: matches the regular expression, anchored at both ends.
    #[serde(rename = "=~")]
    Regex,
    /// `!~`: does not match the regular expression.
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    /// As written in a matcher: `=`, `!=`, `=~`, `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One matcher. A missing label matches as the empty string (Alertmanager semantics).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "MatcherSpec", into = "MatcherSpec")]
pub struct Matcher {
    // Private, so the compiled `regex` always agrees with `op` and `value`: a field changed
    // after construction would have matched by the old expression.
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

/// The serialized form (also the API's JSON form).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSpec {
    /// The label's name.
    pub name: String,
    /// The value or regular expression.
    pub value: String,
    /// `value` is a regular expression.
    #[serde(rename = "isRegex", default)]
    pub is_regex: bool,
    /// Matches when equal (or matching); `false` negates.
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// Why a matcher could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// The regular expression does not compile.
    #[error("bad regular expression {regex:?} for label {name:?}: {reason}")]
    BadRegex {
        /// The label it was for.
        name: String,
        /// The expression as written.
        regex: String,
        /// The regex engine's message.
        reason: String,
    },
    /// Not of the form `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.
    #[error("bad matcher {0:?}: expected name=\"value\", name!=\"value\", name=~\"regex\" or name!~\"regex\"")]
    Syntax(String),
    /// The label name is not a valid name.
    #[error("bad label name {0:?}: use letters, digits and underscores (dots allowed), not starting with a digit")]
    BadName(String),
}

impl TryFrom<MatcherSpec> for Matcher {
    type Error = MatcherError;
    fn try_from(s: MatcherSpec) -> Result<Self, Self::Error> {
        let op = match (s.is_regex, s.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&s.name, op, &s.value)
    }
}

impl From<Matcher> for MatcherSpec {
    fn from(m: Matcher) -> Self {
        MatcherSpec {
            name: m.name,
            value: m.value,
            is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl Matcher {
    /// A matcher, its regular expression (anchored, as in Alertmanager) compiled once.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if !valid_name(name) {
            return Err(MatcherError::BadName(name.to_string()));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(
                    Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError::BadRegex {
                        name: name.to_string(),
                        regex: value.to_string(),
                        reason: e.to_string(),
                    })?,
                )
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// The label's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The comparison.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value or regular expression, as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether `labels` satisfy the matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(v),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(v),
            (_, None) => false,
        }
    }

    /// Parses one `name<op>"value"` (quotes optional for plain values).
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let t = text.trim();
        let (pos, op, len) = ["=~", "!~", "!=", "="]
            .iter()
            .filter_map(|o| t.find(o).map(|p| (p, *o)))
            .min_by_key(|(p, o)| (*p, std::cmp::Reverse(o.len())))
            .map(|(p, o)| {
                let op = match o {
                    "=~" => MatchOp::Regex,
                    "!~" => MatchOp::NotRegex,
                    "!=" => MatchOp::NotEqual,
                    _ => MatchOp::Equal,
                };
                (p, op, o.len())
            })
            .ok_or_else(|| MatcherError::Syntax(t.to_string()))?;
        let name = t[..pos].trim();
        let raw = t[pos + len..].trim();
        let value = if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
            unescape(&raw[1..raw.len() - 1])
        } else if raw.contains('"') {
            return Err(MatcherError::Syntax(t.to_string()));
        } else {
            raw.to_string()
        };
        Matcher::new(name, op, &value)
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `{a="b", c=~"x|y"}` (braces optional). Commas inside quotes are kept.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    let t = text.trim();
    let t = t.strip_prefix('{').and_then(|r| r.strip_suffix('}')).unwrap_or(t);
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in t.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                cur.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| Matcher::parse(&p))
        .collect()
}

/// All matchers match.
pub fn all_match(matchers: &[Matcher], labels: &LabelSet) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_four_operators_match_like_alertmanager() {
        let l = labels(&[("service", "checkout"), ("severity", "critical")]);
        let m = parse_matchers(r#"{service="checkout", severity=~"crit.*", env!="prod", team!~"db|infra"}"#)
            .expect("valid");
        assert_eq!(m.len(), 4);
        assert!(all_match(&m, &l));
        // Anchored: a regex must match the whole value.
        assert!(!Matcher::parse(r#"service=~"check""#).expect("valid").matches(&l));
        // A missing label is the empty string.
        assert!(Matcher::parse(r#"env="""#).expect("valid").matches(&l));
        assert!(Matcher::parse("service=checkout").expect("valid").matches(&l));
    }

    #[test]
    fn commas_and_escapes_inside_quotes_are_values() {
        let m = parse_matchers(r#"{msg="a, \"b\"", x=~"1|2"}"#).expect("valid");
        assert_eq!(m[0].value(), r#"a, "b""#);
        assert_eq!(m[1].op(), MatchOp::Regex);
    }

    #[test]
    fn bad_input_says_what_was_wrong() {
        let e = Matcher::parse(r#"host=~"web-(""#).expect_err("bad regex");
        assert!(
            e.to_string()
                .contains("bad regular expression \"web-(\" for label \"host\""),
            "{e}"
        );
        assert!(matches!(Matcher::parse("justtext"), Err(MatcherError::Syntax(_))));
        assert!(matches!(Matcher::parse(r#"1abc="x""#), Err(MatcherError::BadName(_))));
    }

    #[test]
    fn json_form_round_trips() {
        let m = Matcher::parse(r#"host!~"web-.*""#).expect("valid");
        let json = serde_json::to_string(&m).expect("serializes");
        assert_eq!(
            json,
            r#"{"name":"host","value":"web-.*","isRegex":true,"isEqual":false}"#
        );
        let back: Matcher = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.op(), MatchOp::NotRegex);
        let bad: Result<Matcher, _> = serde_json::from_str(r#"{"name":"h","value":"(","isRegex":true}"#);
        assert!(
            bad.expect_err("bad regex")
                .to_string()
                .contains("bad regular expression")
        );
    }
}
