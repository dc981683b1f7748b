//! Hand-written SVG for the HTML report: line charts of the training curves and puzzle grids.
//! The browser renders the text, so the page needs no fonts, scripts or network.

use std::fmt::Write;

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// Colours for series, in order.
pub const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" tick step for a span (1, 2 or 5 times a power of ten).
fn tick_step(span: f64, target: usize) -> f64 {
    let raw = (span / target as f64).max(f64::MIN_POSITIVE);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

/// A tick's label: plain where short, else a mantissa of up to three figures ("1.5e5", "2e-5":
/// one figure printed 150000 as "2e5").
pub(super) fn fmt_tick(v: f64) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v }; // no "-0"
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
        format!("{mantissa}e{exponent}")
    } else {
        format!("{}", (v * 1e6).round() / 1e6)
    }
}

/// The largest magnitude an axis shows: a span between two such values, padded, stays finite (a
/// diverged loss of 1e308 beside 2.5 made the span infinite, and the PNG's ticks never ended).
const AXIS_LIMIT: f64 = f64::MAX / 8.0;

/// The axes' ranges for `series` (x0, x1, y0, y1), the y range padded by 5% and a constant series
/// given a range around its value; None where no point is finite.
pub(super) fn axis_bounds(series: &[Series]) -> Option<(f64, f64, f64, f64)> {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return None;
    }
    let limit = |v: f64| v.clamp(-AXIS_LIMIT, AXIS_LIMIT);
    (x0, x1, y0, y1) = (limit(x0), limit(x1), limit(y0), limit(y1));
    if x1 == x0 {
        x1 = if x0 + 1.0 > x0 { x0 + 1.0 } else { x0 + x0.abs() * 0.1 };
    }
    if y1 == y0 {
        // A constant learning rate of 1e-4 on an axis of -0.5..0.5 drew a line at 0.
        let half = if y0.abs() * 0.1 > f64::MIN_POSITIVE { y0.abs() * 0.1 } else { 0.5 };
        (y0, y1) = (y0 - half, y1 + half);
    }
    let pad = (y1 - y0) * 0.05;
    Some((x0, x1, y0 - pad, y1 + pad))
}

/// A line chart `w`×`h` pixels with axes, ticks, grid lines and a legend. Points with a
/// non-finite value are skipped.
pub fn line_chart(title: &str, x_label: &str, series: &[Series], w: f64, h: f64) -> String {
    let (l, r, t, b) = (56.0, 12.0, 28.0, 40.0);
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" class="chart">"#);
    let _ = write!(s, r#"<text x="{}" y="18" text-anchor="middle" class="title">{}</text>"#, w / 2.0, esc(title));
    let Some((x0, x1, y0, y1)) = axis_bounds(series) else {
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">no data yet</text></svg>"#, w / 2.0, h / 2.0);
        return s;
    };
    // Points past the axis limit are drawn at its edge.
    let px = |x: f64| l + (x.clamp(x0, x1) - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - (y.clamp(y0, y1) - y0) / (y1 - y0) * (h - t - b);
    let ys = tick_step(y1 - y0, 5);
    // Ticks by integer index: a float accumulator can stall when |y| >> step (diverged losses).
    let y_first = (y0 / ys).ceil();
    for y in (0..=((y1 / ys).floor() - y_first).clamp(0.0, 50.0) as usize).map(|i| (y_first + i as f64) * ys) {
        let _ = write!(s, r#"<line x1="{l}" x2="{}" y1="{:.1}" y2="{:.1}" class="grid"/>"#, w - r, py(y), py(y));
        let _ = write!(s, r#"<text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#, l - 4.0, py(y) + 4.0, fmt_tick(y));
    }
    let xs = tick_step(x1 - x0, 6);
    let x_first = (x0 / xs).ceil();
    for x in (0..=((x1 / xs).floor() - x_first).clamp(0.0, 50.0) as usize).map(|i| (x_first + i as f64) * xs) {
        let _ = write!(s, r#"<line x1="{:.1}" x2="{:.1}" y1="{t}" y2="{}" class="grid"/>"#, px(x), px(x), h - b);
        let _ = write!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"#, px(x), h - b + 14.0, fmt_tick(x));
    }
    let _ = write!(s, r#"<rect x="{l}" y="{t}" width="{}" height="{}" class="frame"/>"#, w - l - r, h - t - b);
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>"#, (l + w - r) / 2.0, h - 6.0, esc(x_label));
    for (i, se) in series.iter().enumerate() {
        let path: Vec<String> =
            se.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        if path.len() == 1 {
            let (cx, cy) = path[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#, se.colour);
        } else if path.len() <= 40 {
            let _ = write!(s, r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#, path.join(" "), se.colour);
            for p in &path {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{}"/>"#, se.colour);
            }
        } else {
            let _ = write!(s, r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.2"/>"#, path.join(" "), se.colour);
        }
        let ly = t + 14.0 + 14.0 * i as f64;
        let _ = write!(s, r#"<rect x="{}" y="{}" width="10" height="3" fill="{}"/>"#, l + 8.0, ly - 4.0, se.colour);
        let _ = write!(s, r#"<text x="{}" y="{ly}" class="legend">{}</text>"#, l + 22.0, esc(&se.label));
    }
    s.push_str("</svg>");
    s
}

/// How to draw one cell of a puzzle.
pub struct Cell {
    pub fill: &'static str,
    pub text: Option<char>,
    /// Outline: this cell changed since the previous step.
    pub changed: bool,
    /// Red text / cross: differs from the target.
    pub wrong: bool,
}

/// A `side`×`side` grid of cells; `thick_every` draws box lines (3 for Sudoku).
pub fn grid(cells: &[Cell], side: usize, cell_px: f64, thick_every: Option<usize>) -> String {
    let size = side as f64 * cell_px;
    let mut s = String::new();
    let _ =
        write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}" class="grid">"#);
    for (i, c) in cells.iter().enumerate() {
        let (x, y) = ((i % side) as f64 * cell_px, (i / side) as f64 * cell_px);
        let _ = write!(
            s,
            r##"<rect x="{x}" y="{y}" width="{cell_px}" height="{cell_px}" fill="{}" stroke="#999" stroke-width="0.5"/>"##,
            c.fill
        );
        if let Some(ch) = c.text {
            let colour = if c.wrong { "#d00" } else { "#111" };
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="{:.0}" text-anchor="middle" fill="{colour}">{}</text>"#,
                x + cell_px / 2.0,
                y + cell_px * 0.75,
                cell_px * 0.7,
                esc(&ch.to_string())
            );
        } else if c.wrong {
            let _ = write!(s, r##"<path d="M{x} {y}l{cell_px} {cell_px}" stroke="#d00" stroke-width="1"/>"##);
        }
        if c.changed {
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#f5a300" stroke-width="2"/>"##,
                x + 1.0,
                y + 1.0,
                cell_px - 2.0,
                cell_px - 2.0
            );
        }
    }
    if let Some(k) = thick_every {
        for j in (0..=side).step_by(k) {
            let p = j as f64 * cell_px;
            let _ = write!(s, r##"<path d="M{p} 0V{size}M0 {p}H{size}" stroke="#222" stroke-width="2"/>"##);
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(1.0, 5), 0.2);
        assert_eq!(tick_step(730.0, 6), 200.0);
        assert_eq!(tick_step(0.03, 5), 0.01);
        // Labels keep the figures that tell ticks apart (150000 was "2e5", as 200000 was).
        let labels: Vec<String> = [150000.0, 200000.0, 1.5e-5, 2e-5, 0.25, -0.0, 1e-13].map(fmt_tick).into();
        assert_eq!(labels, ["1.5e5", "2e5", "1.5e-5", "2e-5", "0.25", "0", "0"]);
        assert_eq!(fmt_tick(123456.0), "1.23e5");
    }

    #[test]
    fn axes_stay_finite_and_show_a_constant_series_around_its_value() {
        let one = |points: Vec<(f64, f64)>| vec![Series { label: "x".into(), colour: PALETTE[0], points }];
        // A constant learning rate of 1e-4: an axis around it, not -0.5..0.5.
        let (_, _, y0, y1) = axis_bounds(&one(vec![(0.0, 1e-4), (5.0, 1e-4)])).unwrap();
        assert!(y0 > 0.0 && y0 < 1e-4 && y1 > 1e-4 && y1 < 2e-4, "{y0} {y1}");
        // A diverged loss beside an ordinary one, at both ends of the doubles: finite spans.
        for (a, b) in [(f64::MAX, 2.5), (-f64::MAX, f64::MAX)] {
            let (x0, x1, y0, y1) = axis_bounds(&one(vec![(a, a), (b, b)])).unwrap();
            assert!((x1 - x0).is_finite() && (y1 - y0).is_finite() && x1 > x0 && y1 > y0, "{a} {b}");
        }
        // One point far out: a range of its own.
        let (x0, x1, ..) = axis_bounds(&one(vec![(1e300, 1.0)])).unwrap();
        assert!(x1 > x0);
        assert!(axis_bounds(&one(vec![(f64::NAN, 1.0)])).is_none());
        let huge = one(vec![(1.0, f64::MAX), (2.0, 2.5)]);
        assert!(line_chart("huge", "step", &huge, 100.0, 100.0).ends_with("</svg>"));
    }

    #[test]
    fn a_chart_has_one_polyline_per_series_and_escapes_labels() {
        let s = vec![
            Series {
                label: "train <loss>".into(),
                colour: PALETTE[0],
                points: (0..50).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect(),
            },
            Series { label: "eval".into(), colour: PALETTE[1], points: vec![(10.0, 0.5), (40.0, f64::NAN)] },
        ];
        let svg = line_chart("loss", "step", &s, 400.0, 250.0);
        assert_eq!(svg.matches("<polyline").count(), 1, "the two-point series has one finite point: a dot");
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("train &lt;loss&gt;") && !svg.contains("<loss>"));
        assert!(line_chart("empty", "step", &[], 100.0, 100.0).contains("no data yet"));
        // A diverged loss (huge values, tiny span) must not stall the tick loop.
        let big = vec![Series { label: "x".into(), colour: PALETTE[0], points: vec![(0.0, 1e16), (1.0, 1e16 + 4.0)] }];
        assert!(line_chart("big", "step", &big, 100.0, 100.0).ends_with("</svg>"));
    }
}
