//! Alertmanager's own spellings of things, so its tools read ours unchanged: a matcher as
//! `name="value"`, a label set as `{a="1", b="2"}`, a route's key (`{}/{team="db"}`), a
//! group key (`{}:{alertname="X"}`), and the routing configuration as the YAML that
//! `amtool config show` prints and `amtool config routes` parses.

use std::fmt::Write;

use crate::labels::LabelSet;
use crate::matcher::Matcher;
use crate::route::Route;

/// A string quoted as Go's `%q` does for the text labels hold (`"`, `\` and control
/// characters escaped).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.
pub(crate) fn matcher(m: &Matcher) -> String {
    format!("{}{}{}", m.name(), m.op().as_str(), quote(m.value()))
}

/// `{a="1",b="2"}`: a route's matchers as Alertmanager's `Matchers.String()` writes them.
fn matchers(ms: &[Matcher]) -> String {
    format!("{{{}}}", ms.iter().map(matcher).collect::<Vec<_>>().join(","))
}

/// `{a="1", b="2"}`: a label set as Alertmanager's `LabelSet.String()` writes it.
pub(crate) fn label_set(labels: &LabelSet) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The key of the route with this id: each route's matchers from the root down, joined by
/// `/` (`{}` for the root). None for an id not in the tree.
pub(crate) fn route_key(root: &Route, id: &str) -> Option<String> {
    let mut key = matchers(&root.matchers);
    let mut node = root;
    // Ids are positions: "0", "0.2", "0.2.1".
    for part in id.split('.').skip(1) {
        node = node.children.get(part.parse::<usize>().ok()?)?;
        key.push('/');
        key.push_str(&matchers(&node.matchers));
    }
    (node.id == id).then_some(key)
}

/// A group's key as Alertmanager writes it in webhooks (`groupKey`): the route's key and
/// the group's labels.
pub(crate) fn group_key(root: &Route, route_id: &str, group_labels: &LabelSet) -> String {
    let route = route_key(root, route_id).unwrap_or_else(|| "{}".into());
    format!("{route}:{}", label_set(group_labels))
}

/// The routing tree and receivers as Alertmanager configuration YAML (receivers by name
/// only: their URLs and keys are secrets). Every value written is a quoted string, a
/// duration or a flow list, so no YAML library is needed to write it.
pub(crate) fn config_yaml(
    root: &Route,
    receivers: &[String],
    inhibit: &[(Vec<Matcher>, Vec<Matcher>, Vec<String>)],
) -> String {
    let mut out = String::from("route:\n");
    route_yaml(&mut out, root, "  ", None);
    out.push_str("receivers:\n");
    for r in receivers {
        let _ = writeln!(out, "  - name: {}", quote(r));
    }
    if !inhibit.is_empty() {
        out.push_str("inhibit_rules:\n");
        for (source, target, equal) in inhibit {
            let _ = writeln!(out, "  - source_matchers: {}", flow(source.iter().map(matcher)));
            let _ = writeln!(out, "    target_matchers: {}", flow(target.iter().map(matcher)));
            if !equal.is_empty() {
                let _ = writeln!(out, "    equal: {}", flow(equal.iter().cloned()));
            }
        }
    }
    out
}

/// `["a", "b"]`, each item quoted.
fn flow(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.map(|i| quote(&i)).collect::<Vec<_>>().join(", "))
}

/// `30s`, `5m`, `4h`: the largest unit that divides the duration.
fn duration(ms: i64) -> String {
    let s = ms / 1000;
    if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// One route: the fields a child sets differently from its parent (the root sets all).
fn route_yaml(out: &mut String, r: &Route, indent: &str, parent: Option<&Route>) {
    let differs = |f: fn(&Route) -> String| parent.is_none_or(|p| f(p) != f(r));
    let mut first = true;
    let mut line = |text: String| {
        let lead = match (parent, first) {
            (Some(_), true) => format!("{}- ", &indent[..indent.len() - 2]),
            _ => indent.to_string(),
        };
        first = false;
        let _ = writeln!(out, "{lead}{text}");
    };
    line(format!("receiver: {}", quote(&r.receiver)));
    if !r.matchers.is_empty() {
        line(format!("matchers: {}", flow(r.matchers.iter().map(matcher))));
    }
    if differs(|r| r.group_by.join(",")) {
        line(format!("group_by: {}", flow(r.group_by.iter().cloned())));
    }
    if differs(|r| duration(r.group_wait_ms)) {
        line(format!("group_wait: {}", duration(r.group_wait_ms)));
    }
    if differs(|r| duration(r.group_interval_ms)) {
        line(format!("group_interval: {}", duration(r.group_interval_ms)));
    }
    if differs(|r| duration(r.repeat_interval_ms)) {
        line(format!("repeat_interval: {}", duration(r.repeat_interval_ms)));
    }
    if r.continue_matching {
        line("continue: true".into());
    }
    if !r.children.is_empty() {
        line("routes:".into());
        let child_indent = format!("{indent}    ");
        for c in &r.children {
            route_yaml(out, c, &child_indent, Some(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn tree() -> Route {
        Route::build(&RouteConfig {
            receiver: Some("default".into()),
            routes: vec![
                RouteConfig {
                    matchers: vec!["team=\"db\"".into()],
                    receiver: Some("dba".into()),
                    routes: vec![RouteConfig {
                        matchers: vec!["severity=~\"critical|page\"".into()],
                        receiver: Some("pager".into()),
                        group_wait_secs: Some(10),
                        ..RouteConfig::default()
                    }],
                    ..RouteConfig::default()
                },
                RouteConfig {
                    matchers: vec!["env!=\"dev\"".into()],
                    continue_matching: true,
                    ..RouteConfig::default()
                },
            ],
            ..RouteConfig::default()
        })
        .expect("valid tree")
    }

    #[test]
    fn keys_are_spelled_as_alertmanager_spells_them() {
        let root = tree();
        assert_eq!(route_key(&root, "0").as_deref(), Some("{}"));
        assert_eq!(route_key(&root, "0.0").as_deref(), Some("{}/{team=\"db\"}"));
        assert_eq!(
            route_key(&root, "0.0.0").as_deref(),
            Some("{}/{team=\"db\"}/{severity=~\"critical|page\"}")
        );
        assert_eq!(route_key(&root, "0.7"), None);
        let labels = LabelSet::from([
            ("alertname".into(), "Disk \"full\"".into()),
            ("job".into(), "node".into()),
        ]);
        // The form of Alertmanager's webhook documentation: {}:{alertname="Test", job="prometheus24"}.
        assert_eq!(
            group_key(&root, "0", &labels),
            "{}:{alertname=\"Disk \\\"full\\\"\", job=\"node\"}"
        );
    }

    #[test]
    fn the_configuration_reads_as_alertmanager_yaml() {
        let yaml = config_yaml(&tree(), &["default".into(), "dba".into(), "pager".into()], &[]);
        let expected = r#"route:
  receiver: "default"
  group_by: ["alertname"]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - receiver: "dba"
      matchers: ["team=\"db\""]
      routes:
        - receiver: "pager"
          matchers: ["severity=~\"critical|page\""]
          group_wait: 10s
    - receiver: "default"
      matchers: ["env!=\"dev\""]
      continue: true
receivers:
  - name: "default"
  - name: "dba"
  - name: "pager"
"#;
        assert_eq!(yaml, expected);
    }
}
