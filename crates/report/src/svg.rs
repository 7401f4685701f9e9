//! Inline SVG line charts: no script, no external resource, every label escaped here (the
//! markup is inserted into pages unescaped).

use std::fmt::Write;

/// One line of a chart: (x, y) points and an optional ± band per point (drawn as error bars).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, Option<f64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Ticks at the data's x values, spaced by log2 (for sizes that double).
    pub log_x: bool,
    pub series: Vec<Series>,
    /// A horizontal reference line: its value and label (`1/√D` on the embeddings' std chart).
    pub reference: Option<(f64, String)>,
}

/// Colour-blind-safe palette (Okabe–Ito).
const COLOURS: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick label without trailing zeros: 64, 0.5, 1e-3.
fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Labels of evenly spaced ticks, all to the step's precision: the fewest decimals (or digits of
/// a mantissa, for very small or large values) at which every label reads back as its tick, so
/// that no two ticks read the same (0.0175, 0.0180, 0.0185 rather than 0.018 thrice).
fn tick_labels(values: &[f64]) -> Vec<String> {
    let step = values.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = largest != 0.0 && !(1e-2..1e5).contains(&largest);
    for d in 0..=12 {
        let labels: Vec<String> =
            values.iter().map(|v| if scientific { format!("{v:.d$e}") } else { format!("{v:.d$}") }).collect();
        let exact =
            labels.iter().zip(values).all(|(l, v)| l.parse::<f64>().is_ok_and(|p| (p - v).abs() <= step * 1e-3));
        if exact || !step.is_finite() {
            return if step.is_finite() { labels } else { values.iter().map(|v| tick(*v)).collect() };
        }
    }
    values.iter().map(|v| tick(*v)).collect()
}

/// The most points a series shows as markers (with their values on hover).
const MARKED_POINTS_MAX: usize = 100;

/// About five round ticks covering [lo, hi].
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    (0..=12).map(|i| start + i as f64 * step).take_while(|v| *v <= hi + step * 0.5).collect()
}

impl Chart {
    /// The chart as an `<svg>` element (width 100 % of its container, fixed aspect), or none when
    /// it has no point to draw.
    pub fn render(&self) -> Option<String> {
        let pts: Vec<(f64, f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0))
            .map(|&(x, y, e)| (x, y, e.unwrap_or(0.0)))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let fx = |x: f64| if self.log_x { x.log2() } else { x };
        let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
        let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1 - p.2), b.max(p.1 + p.2)));
        if let Some((r, _)) = self.reference.as_ref().filter(|(r, _)| r.is_finite()) {
            (y0, y1) = (y0.min(*r), y1.max(*r));
        }
        if x1 - x0 < 1e-12 {
            x0 -= 1.0;
            x1 += 1.0;
        }
        if y1 <= y0 {
            let pad = if y0 != 0.0 { y0.abs() * 0.1 } else { 1.0 };
            y0 -= pad;
            y1 += pad;
        }
        let pad = (y1 - y0) * 0.08;
        let yticks = nice_ticks(y0 - pad, y1 + pad);
        let (y0, y1) = (yticks[0].min(y0 - pad), yticks.last().copied().unwrap_or(y1).max(y1 + pad));
        let (w, h, left, right, top, bottom) = (640.0, 360.0, 64.0, 150.0, 34.0, 48.0);
        let px = |x: f64| left + (fx(x) - x0) / (x1 - x0) * (w - left - right);
        let py = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{t}" font-family="system-ui, sans-serif" font-size="12">"#,
            t = escape(&self.title)
        );
        let _ = write!(s, r#"<text x="{left}" y="18" font-weight="600">{}</text>"#, escape(&self.title));
        for (&t, label) in yticks.iter().zip(tick_labels(&yticks)) {
            let y = py(t);
            let _ = write!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d7de"/><text x="{}" y="{:.1}" text-anchor="end" fill="#57606a">{}</text>"##,
                w - right,
                left - 6.0,
                y + 4.0,
                label
            );
        }
        let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        // A few values: a tick at each (every n-th); a dense axis (steps): round ticks.
        let xticks: Vec<f64> = if xs.len() > 24 && !self.log_x {
            nice_ticks(x0, x1).into_iter().filter(|x| (x0..=x1).contains(x)).collect()
        } else {
            xs.iter().copied().step_by(xs.len().div_ceil(12).max(1)).collect()
        };
        let xlabels: Vec<String> =
            if xs.len() > 24 && !self.log_x { tick_labels(&xticks) } else { xticks.iter().map(|x| tick(*x)).collect() };
        for (&x, label) in xticks.iter().zip(xlabels) {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#57606a">{label}</text>"##,
                px(x),
                h - bottom + 16.0,
            );
        }
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{b}" stroke="#57606a"/><line x1="{left}" x2="{r}" y1="{b}" y2="{b}" stroke="#57606a"/>"##,
            b = h - bottom,
            r = w - right
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#1b1f23">{}</text>"##,
            left + (w - left - right) / 2.0,
            h - 8.0,
            escape(&self.x_label)
        );
        let _ = write!(
            s,
            r##"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" fill="#1b1f23">{}</text>"##,
            top + (h - top - bottom) / 2.0,
            escape(&self.y_label)
        );
        if let Some((r, label)) = self.reference.as_ref().filter(|(r, _)| r.is_finite()) {
            let y = py(*r);
            let _ = write!(
                s,
                r##"<line x1="{left}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#8250df" stroke-dasharray="6 4"/><text x="{x2}" y="{:.1}" text-anchor="end" fill="#8250df">{}</text>"##,
                y - 4.0,
                escape(label),
                x2 = w - right,
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut points: Vec<&(f64, f64, Option<f64>)> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
            // A dense series (per step) is a line alone; its points would hide it.
            let marked = points.len() <= MARKED_POINTS_MAX;
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
                path.join(" "),
                escape(&series.name)
            );
            for p in points.iter().filter(|_| marked) {
                if let Some(e) = p.2.filter(|e| *e > 0.0) {
                    let _ = write!(
                        s,
                        r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}"/>"#,
                        py(p.1 - e),
                        py(p.1 + e),
                        x = px(p.0)
                    );
                }
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{}: {} → {}</title></circle>"#,
                    px(p.0),
                    py(p.1),
                    escape(&series.name),
                    tick(p.0),
                    tick((p.1 * 100.0).round() / 100.0)
                );
            }
            if self.series.len() < 2 {
                continue;
            }
            let ly = top + 14.0 + i as f64 * 18.0;
            let _ = write!(
                s,
                r#"<line x1="{}" x2="{}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
                w - right + 12.0,
                w - right + 32.0,
                w - right + 38.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        s.push_str("</svg>");
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_points_and_escaped_labels() {
        let chart = Chart {
            title: "a <b> & c".into(),
            x_label: "dim".into(),
            y_label: "%".into(),
            log_x: true,
            series: vec![
                Series { name: "<script>".into(), points: vec![(64.0, 30.0, Some(1.0)), (256.0, 35.0, None)] },
                Series { name: "vicreg".into(), points: vec![(64.0, 31.0, None)] },
            ],
            reference: None,
        };
        let svg = chart.render().unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("&lt;script&gt;"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains(">64<") && svg.contains(">256<"), "ticks at the data's x values");
        assert!(!svg.contains("stroke-dasharray"), "no reference line unless asked");
        let with_line = Chart { reference: Some((50.0, "1/√D".into())), ..chart.clone() };
        let svg = with_line.render().unwrap();
        assert!(svg.contains("stroke-dasharray") && svg.contains(">1/√D<"), "the reference line and its label");
        let empty = Chart { series: vec![], ..chart };
        assert_eq!(empty.render(), None);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_ticks(0.0, 100.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(4096.0), "4096");
        assert_eq!(tick(0.0001), "1.0e-4");
    }

    #[test]
    fn tick_labels_follow_the_step_and_never_repeat() {
        let labels = |lo: f64, hi: f64| tick_labels(&nice_ticks(lo, hi));
        assert_eq!(labels(0.0, 100.0), ["0", "20", "40", "60", "80", "100"]);
        let std = labels(0.0172, 0.0188);
        assert!(std.windows(2).all(|w| w[0] != w[1]), "{std:?}");
        assert_eq!(std[..3], ["0.0170", "0.0175", "0.0180"]);
        assert_eq!(labels(0.0, 1.0), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let tiny = labels(1e-4, 2e-4);
        assert!(tiny.windows(2).all(|w| w[0] != w[1]) && tiny[0].contains('e'), "{tiny:?}");
        assert_eq!(tick_labels(&[3.0]), ["3"], "a single tick keeps the plain label");
    }
}
