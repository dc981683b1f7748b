//! The report's curves as one PNG (plotters' bitmap backend, encoded with the `png` crate).
//! Text needs a TrueType font: the first of a few common system fonts is used; without one the
//! curves are drawn without titles, tick labels or legends, and a warning says so.

use super::svg::Series;
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::OnceLock;

/// Debian and Ubuntu, Arch, Fedora, then macOS (Supplemental: macOS 10.15 and later).
const FONT_PATHS: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
];

/// Registers a system font once; false when none is found (or `TRM_NO_FONT=1` is set).
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        if crate::util::env::no_font() {
            return false;
        }
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!("warning: no TrueType font found ({}): the PNG charts carry no text", FONT_PATHS[0]);
        false
    })
}

fn rgb(hex: &str) -> RGBColor {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, title: &str, series: &[Series], text: bool) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let Some((x0, x1, y0, y1)) = super::svg::axis_bounds(series) else {
        // As the HTML's chart says it: the title, and that there is nothing to draw yet.
        if text {
            let area = area.titled(title, ("sans-serif", 18)).map_err(|e| anyhow!("{title}: {e}"))?;
            let (w, h) = area.dim_in_pixel();
            let style = ("sans-serif", 16).into_text_style(&area).pos(Pos::new(HPos::Center, VPos::Center));
            area.draw_text("no data yet", &style, ((w / 2) as i32, (h / 2) as i32)).map_err(|e| anyhow!("{title}: {e}"))?;
        }
        return Ok(());
    };
    let mut b = ChartBuilder::on(area);
    b.margin(10);
    if text {
        b.caption(title, ("sans-serif", 18)).x_label_area_size(30).y_label_area_size(55);
    }
    let mut chart = b.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| anyhow!("{title}: {e}"))?;
    let mut mesh = chart.configure_mesh();
    let tick = |v: &f64| super::svg::fmt_tick(*v);
    mesh.x_label_formatter(&tick).y_label_formatter(&tick);
    if !text {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.light_line_style(RGBColor(238, 238, 238)).draw().map_err(|e| anyhow!("{title}: {e}"))?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let c = rgb(s.colour);
        // Points past the axis limit (`svg::axis_bounds`) are drawn at its edge.
        let pts: Vec<(f64, f64)> = (s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x.clamp(x0, x1), y.clamp(y0, y1)))
            .collect();
        let drawn = chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(|e| anyhow!("{title}: {e}"))?;
        if text {
            drawn.label(s.label.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2)));
        }
        if pts.len() <= 40 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|e| anyhow!("{title}: {e}"))?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|e| anyhow!("{title}: {e}"))?;
    }
    Ok(())
}

/// Draws the charts in a grid of 3 columns: the bytes of an RGB PNG.
pub fn charts_png(specs: &[(String, Vec<Series>)]) -> Result<Vec<u8>> {
    let cols = 3usize;
    let rows = specs.len().div_ceil(cols).max(1);
    let (w, h) = (cols as u32 * 480, rows as u32 * 300);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = font_available();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        for (area, (title, series)) in root.split_evenly((rows, cols)).iter().zip(specs) {
            draw_chart(area, title, series, text)?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut bytes, w, h);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        let mut wr = enc.write_header().context("png header")?;
        wr.write_image_data(&buf).context("png data")?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::svg::PALETTE;

    /// A loss of 1e308 beside 2.5 (a diverged run's log) once made the chart's span infinite and
    /// its ticks never ended: `trm report` hung with no output. Charts without a point are drawn
    /// with their title.
    #[test]
    fn charts_of_extreme_or_no_values_are_drawn_and_end() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let series = |points: Vec<(f64, f64)>| vec![Series { label: "lm_loss".into(), colour: PALETTE[0], points }];
            let specs = vec![
                ("loss".to_string(), series(vec![(1.0, f64::MAX), (2.0, 2.5)])),
                ("steps".to_string(), series(vec![(-1.7e308, 1.0), (1.7e308, 2.0)])),
                ("lr".to_string(), series(vec![(0.0, 1e-4), (200000.0, 1e-4)])),
                ("empty".to_string(), series(vec![])),
            ];
            tx.send(charts_png(&specs).map_err(|e| format!("{e:#}"))).unwrap();
        });
        let png = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the charts did not end within 2 minutes").unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 1000);
    }
}
