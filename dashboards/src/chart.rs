//! Charts drawn as SVG on the server: time on x with clock labels, values on y with their
//! unit, the detectors' expected band shaded and anomalous points marked.
//!
//! No chart library: what a page needs is lines, bands, bars and two axes, and SVG drawn
//! here renders before any script runs, prints, and needs nothing from a CDN.

use maud::{Markup, PreEscaped, html};

use crate::fmt;

const PALETTE: &[&str] = &[
    "#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#78716c",
];

/// Plot area inside the SVG: left margin for y labels, bottom for time labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(i64, f64)>,
}

/// A time-series chart.
pub(crate) struct TimeChart<'a> {
    /// What the chart shows, for screen readers and the hover title.
    pub(crate) label: &'a str,
    pub(crate) unit: &'a str,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) lines: Vec<Line>,
    /// Expected band per point: (t, lower, upper); gaps where the band is unknown.
    pub(crate) band: Vec<(i64, f64, f64)>,
    /// Points the detector judged anomalous.
    pub(crate) marks: Vec<(i64, f64)>,
    /// Time ranges to shade (open anomalies, an incident's span).
    pub(crate) regions: Vec<(i64, i64)>,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

/// "Nice" step for about `target` ticks over `span` (1, 2 or 5 times a power of ten).
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Time tick spacing: a clock-friendly step giving at most ten ticks.
fn time_step(span_ms: i64) -> i64 {
    const STEPS: &[i64] = &[
        1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000,
        43_200_000, 86_400_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span_ms / s <= 10)
        .unwrap_or(86_400_000 * (span_ms / 86_400_000 / 10).max(1))
}

fn time_label(t: i64, step: i64) -> String {
    let full = fmt::time(t);
    if step >= 86_400_000 {
        full[5..10].to_string()
    } else if step >= 60_000 {
        full[11..16].to_string()
    } else {
        full[11..19].to_string()
    }
}

/// Value range over lines, band and marks, padded, including zero for non-negative units.
fn y_range(c: &TimeChart<'_>) -> (f64, f64) {
    let values = c
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(c.band.iter().flat_map(|b| [b.1, b.2]))
        .chain(c.marks.iter().map(|m| m.1))
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if lo >= 0.0 && lo < hi * 0.5 {
        lo = 0.0;
    }
    if (hi - lo).abs() < f64::EPSILON {
        hi = lo + lo.abs().max(1.0);
    }
    let pad = (hi - lo) * 0.08;
    (if lo == 0.0 { 0.0 } else { lo - pad }, hi + pad)
}

/// A horizontal grid line at `yy` across the plot, labelled on the y axis.
fn grid_line(svg: &mut String, yy: f64, plot_width: f64, label: &str) {
    svg.push_str(&format!(
        r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="ylabel" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        LEFT + plot_width,
        LEFT - 6.0,
        yy + 4.0,
        escape_attr(label)
    ));
}

fn escape_attr(s: &str) -> String {
    maud::html! { (s) }.into_string().replace('"', "&quot;")
}

/// The chart as an inline SVG.
pub(crate) fn time_chart(c: &TimeChart<'_>) -> Markup {
    let (w, h) = (c.width, c.height);
    let (pw, ph) = (w - LEFT - RIGHT, h - TOP - BOTTOM);
    let span = (c.end_ms - c.start_ms).max(1) as f64;
    let x = |t: i64| LEFT + (t - c.start_ms) as f64 / span * pw;
    let (ylo, yhi) = y_range(c);
    let y = |v: f64| TOP + ph - (v - ylo) / (yhi - ylo) * ph;
    let mut svg = String::with_capacity(8192);
    let points: usize = c.lines.iter().map(|l| l.points.len()).sum();
    svg.push_str(&format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{}" data-points="{points}" data-marks="{}">"#,
        escape_attr(c.label),
        c.marks.len()
    ));
    // Shaded regions first, under everything.
    for &(a, b) in &c.regions {
        let (xa, xb) = (x(a.max(c.start_ms)), x(b.min(c.end_ms)));
        if xb > xa {
            svg.push_str(&format!(
                r#"<rect class="region" x="{xa:.1}" y="{TOP}" width="{:.1}" height="{ph}"/>"#,
                (xb - xa).max(1.5)
            ));
        }
    }
    // Grid and y labels.
    let ystep = nice_step(yhi - ylo, 4.0);
    let mut v = (ylo / ystep).ceil() * ystep;
    while v <= yhi + ystep * 1e-9 {
        let label = fmt::value(if v.abs() < ystep * 1e-6 { 0.0 } else { v }, c.unit);
        grid_line(&mut svg, y(v), pw, &label);
        v += ystep;
    }
    // Time axis.
    let tstep = time_step(c.end_ms - c.start_ms);
    let mut t = c.start_ms.div_euclid(tstep) * tstep;
    if t < c.start_ms {
        t += tstep;
    }
    svg.push_str(&format!(
        r#"<line class="axis" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"#,
        LEFT + pw,
        TOP + ph,
        TOP + ph
    ));
    while t <= c.end_ms {
        let xx = x(t);
        svg.push_str(&format!(
            r#"<line class="tick" x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{:.1}"/><text class="xlabel" x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 17.0,
            time_label(t, tstep)
        ));
        t += tstep;
    }
    // The expected band: one polygon per run of consecutive known points.
    for run in band_runs(&c.band) {
        let mut d = String::new();
        for (i, &(t, _, hi)) in run.iter().enumerate() {
            d.push_str(&format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(t), y(hi)));
        }
        for &(t, lo, _) in run.iter().rev() {
            d.push_str(&format!("L{:.1},{:.1}", x(t), y(lo)));
        }
        svg.push_str(&format!(
            r#"<path class="band" d="{d}Z"><title>expected band</title></path>"#
        ));
    }
    for (i, line) in c.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        let mut prev: Option<i64> = None;
        // Break the line over gaps longer than five typical steps.
        let typical = typical_step(&line.points);
        for &(t, v) in &line.points {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let jump = prev.is_none_or(|p| typical > 0 && t - p > typical * 5);
            d.push_str(&format!("{}{:.1},{:.1}", if jump { "M" } else { "L" }, x(t), y(v)));
            prev = Some(t);
        }
        svg.push_str(&format!(
            r#"<path class="line" stroke="{color}" d="{d}"><title>{}</title></path>"#,
            escape_attr(&line.name)
        ));
        if line.points.len() == 1 {
            let (t, v) = line.points[0];
            svg.push_str(&format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(t),
                y(v)
            ));
        }
    }
    for &(t, v) in &c.marks {
        svg.push_str(&format!(
            r#"<circle class="mark" cx="{:.1}" cy="{:.1}" r="3.5"><title>{} at {}</title></circle>"#,
            x(t),
            y(v),
            escape_attr(&fmt::value(v, c.unit)),
            fmt::clock(t)
        ));
    }
    svg.push_str("</svg>");
    let legend = c.lines.len() > 1;
    html! {
        figure.chart-box {
            (PreEscaped(svg))
            @if legend {
                figcaption.legend {
                    @for (i, l) in c.lines.iter().enumerate() {
                        span { i.swatch style={"background:" (PALETTE[i % PALETTE.len()])} {} (l.name) }
                    }
                }
            }
        }
    }
}

fn typical_step(points: &[(i64, f64)]) -> i64 {
    let mut steps: Vec<i64> = points.windows(2).map(|w| w[1].0 - w[0].0).filter(|d| *d > 0).collect();
    if steps.is_empty() {
        return 0;
    }
    steps.sort_unstable();
    steps[steps.len() / 2]
}

fn band_runs(band: &[(i64, f64, f64)]) -> Vec<&[(i64, f64, f64)]> {
    let typical = typical_step(&band.iter().map(|b| (b.0, 0.0)).collect::<Vec<_>>());
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=band.len() {
        let split = i == band.len() || (typical > 0 && band[i].0 - band[i - 1].0 > typical * 5);
        if split {
            if i - start >= 1 {
                runs.push(&band[start..i]);
            }
            start = i;
        }
    }
    runs
}

/// Counts per time bucket as bars (log volume, a pattern's rate).
pub(crate) fn bar_chart(label: &str, buckets: &[(i64, u64)], bucket_ms: i64, start_ms: i64, end_ms: i64) -> Markup {
    let (w, h) = (900.0, 120.0);
    let (pw, ph) = (w - LEFT - RIGHT, h - TOP - BOTTOM);
    let span = (end_ms - start_ms).max(1) as f64;
    let x = |t: i64| LEFT + (t - start_ms) as f64 / span * pw;
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let ystep = nice_step(max, 3.0).max(1.0);
    let top = (max / ystep).ceil() * ystep;
    let y = |v: f64| TOP + ph - v / top * ph;
    let mut svg = format!(
        r#"<svg class="chart bars" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{}" data-buckets="{}">"#,
        escape_attr(label),
        buckets.len()
    );
    let mut v = 0.0;
    while v <= top + 1e-9 {
        grid_line(&mut svg, y(v), pw, &fmt::count(v as u64));
        v += ystep;
    }
    let bw = (bucket_ms as f64 / span * pw - 1.0).max(1.0);
    for &(t, n) in buckets {
        if n == 0 {
            continue;
        }
        svg.push_str(&format!(
            r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}"><title>{n} at {}</title></rect>"#,
            x(t),
            y(n as f64),
            (TOP + ph - y(n as f64)).max(0.5),
            fmt::time(t)
        ));
    }
    let tstep = time_step(end_ms - start_ms);
    let mut t = start_ms.div_euclid(tstep) * tstep + tstep;
    while t <= end_ms {
        let xx = x(t);
        svg.push_str(&format!(
            r#"<text class="xlabel" x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 17.0,
            time_label(t, tstep)
        ));
        t += tstep;
    }
    svg.push_str("</svg>");
    PreEscaped(svg)
}

/// A tiny trend line without axes, for tables.
pub(crate) fn sparkline(values: &[u64]) -> Markup {
    let (w, h) = (120.0, 24.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(2) as f64 - 1.0;
    let mut d = String::new();
    for (i, v) in values.iter().enumerate() {
        d.push_str(&format!(
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { "L" },
            i as f64 / n * w,
            h - 2.0 - *v as f64 / max * (h - 4.0)
        ));
    }
    PreEscaped(format!(
        r#"<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-hidden="true"><path d="{d}"/></svg>"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0, 4.0), 2.0);
        assert_eq!(nice_step(0.9, 4.0), 0.2);
        assert_eq!(nice_step(1000.0, 4.0), 200.0);
        assert_eq!(time_step(3_600_000), 600_000);
        assert_eq!(time_step(60_000), 10_000);
        assert_eq!(time_step(7 * 86_400_000), 86_400_000);
    }

    #[test]
    fn a_chart_has_axes_band_marks_and_escaped_labels() {
        let c = TimeChart {
            label: "p99 <latency>",
            unit: "s",
            start_ms: 0,
            end_ms: 600_000,
            lines: vec![Line {
                name: "checkout \"POST\" <b>".into(),
                points: (0..10)
                    .map(|i| (i * 60_000, 0.2 + if i == 7 { 2.0 } else { 0.0 }))
                    .collect(),
            }],
            band: (5..10).map(|i| (i * 60_000, 0.1, 0.4)).collect(),
            marks: vec![(420_000, 2.2)],
            regions: vec![(420_000, 480_000)],
            width: 720.0,
            height: 220.0,
        };
        let svg = time_chart(&c).into_string();
        assert!(svg.contains(r#"data-points="10""#) && svg.contains(r#"data-marks="1""#));
        assert!(svg.contains(r#"class="band""#) && svg.contains(r#"class="mark""#));
        assert!(
            svg.contains(">00:07<") || svg.contains(">00:07:00<"),
            "time labels: {svg}"
        );
        assert!(svg.contains("ms<") || svg.contains(" s<"), "unit on the y axis");
        assert!(!svg.contains("<latency>") && !svg.contains("<b>"), "escaped: {svg}");
    }

    #[test]
    fn empty_and_constant_series_draw_without_nan() {
        let c = TimeChart {
            label: "flat",
            unit: "",
            start_ms: 0,
            end_ms: 1000,
            lines: vec![Line {
                name: "x".into(),
                points: vec![(0, 5.0), (500, 5.0), (1000, f64::NAN)],
            }],
            band: vec![],
            marks: vec![],
            regions: vec![],
            width: 300.0,
            height: 100.0,
        };
        let svg = time_chart(&c).into_string();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let empty = bar_chart("none", &[], 1000, 0, 60_000).into_string();
        assert!(!empty.contains("NaN"));
        assert!(!sparkline(&[]).into_string().contains("NaN"));
    }
}
