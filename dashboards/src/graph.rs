//! The service dependency graph as SVG: callers left, callees right, each edge labelled
//! with its rate, error ratio and p99; the suspected root cause and the affected services
//! coloured.

use std::collections::BTreeMap;

use maud::{Markup, PreEscaped};
use serde::Deserialize;

use crate::api::url;
use crate::fmt;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Edge {
    pub(crate) from: String,
    pub(crate) to: String,
    #[serde(default)]
    pub(crate) calls_per_s: f64,
    #[serde(default)]
    pub(crate) error_ratio: f64,
    #[serde(default)]
    pub(crate) p50_s: f64,
    #[serde(default)]
    pub(crate) p99_s: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Graph {
    #[serde(default)]
    pub(crate) services: Vec<String>,
    #[serde(default)]
    pub(crate) edges: Vec<Edge>,
}

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 34.0;
const COL_GAP: f64 = 110.0;
const ROW_GAP: f64 = 30.0;
const PAD: f64 = 16.0;

/// Column of each service: the longest call chain leading to it (cycles cut after as many
/// rounds as there are services).
fn layers(g: &Graph) -> BTreeMap<&str, usize> {
    let mut layer: BTreeMap<&str, usize> = g.services.iter().map(|s| (s.as_str(), 0)).collect();
    for e in &g.edges {
        layer.entry(e.from.as_str()).or_insert(0);
        layer.entry(e.to.as_str()).or_insert(0);
    }
    for _ in 0..layer.len() {
        let mut changed = false;
        for e in &g.edges {
            if e.from == e.to {
                continue;
            }
            let want = layer[e.from.as_str()] + 1;
            if want < layer.len() && layer[e.to.as_str()] < want {
                layer.insert(e.to.as_str(), want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

fn escape(s: &str) -> String {
    maud::html! { (s) }.into_string().replace('"', "&quot;")
}

/// The graph; `root` is drawn red, `affected` amber. Nodes link to the service's logs.
pub(crate) fn render(g: &Graph, root: Option<&str>, affected: &[String]) -> Markup {
    let layer = layers(g);
    if layer.is_empty() {
        return PreEscaped(
            r#"<p class="empty">No calls between services seen yet (the graph is built from spans).</p>"#.into(),
        );
    }
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (s, l) in &layer {
        columns.entry(*l).or_default().push(s);
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1) as f64;
    let cols = columns.len() as f64;
    let width = PAD * 2.0 + cols * NODE_W + (cols - 1.0).max(0.0) * COL_GAP;
    let height = PAD * 2.0 + rows * NODE_H + (rows - 1.0).max(0.0) * ROW_GAP;
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (ci, (_, names)) in columns.iter().enumerate() {
        // Centre short columns vertically.
        let offset = (rows - names.len() as f64) * (NODE_H + ROW_GAP) / 2.0;
        for (ri, name) in names.iter().enumerate() {
            pos.insert(
                name,
                (
                    PAD + ci as f64 * (NODE_W + COL_GAP),
                    PAD + offset + ri as f64 * (NODE_H + ROW_GAP),
                ),
            );
        }
    }
    let mut svg = format!(
        r##"<svg class="graph" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" role="img" aria-label="service dependency graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#64748b"/></marker></defs>"##
    );
    for e in &g.edges {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str())) else {
            continue;
        };
        let (x1, y1) = (fx + NODE_W, fy + NODE_H / 2.0);
        let (x2, y2) = if tx > fx {
            (tx, ty + NODE_H / 2.0)
        } else {
            (tx + NODE_W / 2.0, ty + NODE_H)
        };
        let mid = (x1 + x2) / 2.0;
        let class = if e.error_ratio >= 0.05 { "edge bad" } else { "edge" };
        let title = format!(
            "{} → {}: {:.1}/s, {:.1} % errors, p50 {}, p99 {}",
            e.from,
            e.to,
            e.calls_per_s,
            e.error_ratio * 100.0,
            fmt::value(e.p50_s, "s"),
            fmt::value(e.p99_s, "s")
        );
        svg.push_str(&format!(
            r#"<g class="{class}"><path d="M{x1:.1},{y1:.1}C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}" marker-end="url(#arrow)"/><text x="{mid:.1}" y="{:.1}" text-anchor="middle">{:.1}/s · {:.0} % · p99 {}</text><title>{}</title></g>"#,
            (y1 + y2) / 2.0 - 4.0,
            e.calls_per_s,
            e.error_ratio * 100.0,
            escape(&fmt::value(e.p99_s, "s")),
            escape(&title)
        ));
    }
    for (name, (x, y)) in &pos {
        let class = if Some(*name) == root {
            "node root"
        } else if affected.iter().any(|a| a == name) {
            "node affected"
        } else {
            "node"
        };
        let href = url("/ui/logs", &[("service", name)]);
        svg.push_str(&format!(
            r#"<a href="{}"><g class="{class}" data-service="{}"><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g></a>"#,
            escape(&href),
            escape(name),
            x + NODE_W / 2.0,
            y + NODE_H / 2.0 + 5.0,
            escape(name)
        ));
    }
    svg.push_str("</svg>");
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            calls_per_s: 1.0,
            error_ratio: 0.0,
            p50_s: 0.01,
            p99_s: 0.1,
        }
    }

    #[test]
    fn callers_come_before_callees_and_cycles_end() {
        let g = Graph {
            services: vec!["front".into(), "orders".into(), "db".into()],
            edges: vec![
                edge("front", "orders"),
                edge("orders", "db"),
                edge("front", "db"),
                edge("db", "orders"),
            ],
        };
        let l = layers(&g);
        assert_eq!(l["front"], 0);
        assert!(l["orders"] >= 1 && l["db"] >= 1);
        let svg = render(&g, Some("db"), &["orders".into()]).into_string();
        assert!(svg.contains(r#"class="node root" data-service="db""#), "{svg}");
        assert!(svg.contains(r#"class="node affected" data-service="orders""#));
    }

    #[test]
    fn names_are_escaped() {
        let g = Graph {
            services: vec!["<script>x</script>".into()],
            edges: vec![],
        };
        let svg = render(&g, None, &[]).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
    }
}
