//! SVG charts of a run, drawn with `plotters` (its SVG backend only; without a font
//! feature plotters estimates text widths itself and the SVG names the font family, so
//! nothing is read from the system).
//!
//! - `bars-<family>.svg`: one bar chart per case family (the case name up to its first
//!   `_`: `nop_b1`, `nop_b8`, `nop_b32` are `nop`), a group of bars per case, one bar per
//!   impl: its cost relative to keel's in that case (a rate is turned into a cost first),
//!   so keel's bar is 1 and a lower bar is a cheaper impl; the axis stops at 10 (a taller
//!   bar is cut there). Cases that are points of a
//!   scaling curve are drawn in its line chart instead.
//! - `curve-<name>.svg`: one line chart per scaling curve, per-operation cost against the
//!   size (log scale), a line per impl that has the curve.

use crate::goals::{self, Curve, Row};
use plotters::prelude::*;
use std::path::Path;

/// A case's family: its name up to the first `_`.
pub fn family(case: &str) -> &str {
    case.split('_').next().unwrap_or(case)
}

/// One family's bars: (case, [(impl, cost relative to the case's keel or first impl)]).
pub type Bars = Vec<(&'static str, Vec<(&'static str, f64)>)>;

/// The bar-chart families of `rows`, in the order first seen, leaving out curve cases.
pub fn bar_families(rows: &[Row], curves: &[Curve]) -> Vec<(&'static str, Bars)> {
    let in_curve = |case: &str| curves.iter().any(|c| c.points.iter().any(|p| p.1 == case));
    let mut fams: Vec<(&'static str, Bars)> = Vec::new();
    for r in rows.iter().filter(|r| !in_curve(r.case)) {
        let fam = family(r.case);
        let i = match fams.iter().position(|f| f.0 == fam) {
            Some(i) => i,
            None => {
                fams.push((fam, Vec::new()));
                fams.len() - 1
            }
        };
        let bars = &mut fams[i].1;
        if !bars.iter().any(|b| b.0 == r.case) {
            let case_rows = rows.iter().filter(|o| o.case == r.case);
            let base = case_rows.clone().find(|o| o.imp == "keel").unwrap_or(r);
            let base = goals::cost(base.value, base.unit);
            bars.push((r.case, case_rows.map(|o| (o.imp, goals::cost(o.value, o.unit) / base)).collect()));
        }
    }
    fams
}

/// The bar charts' y axis ends here (a peer 200 times dearer than keel would flatten
/// every other bar): a taller bar is cut at the top, its value is in `results.csv`.
const Y_CAP: f64 = 10.0;

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Draws one family's bar chart into `path`.
fn bar_chart(path: &Path, fam: &str, bars: &Bars) -> Drawn {
    let mut imps: Vec<&str> = Vec::new();
    for (_, b) in bars {
        for (i, _) in b {
            if !imps.contains(i) {
                imps.push(i);
            }
        }
    }
    let ymax = (bars.iter().flat_map(|b| b.1.iter().map(|v| v.1)).fold(1.0f64, f64::max) * 1.15).min(Y_CAP);
    let n = bars.len();
    let width = (160 + 40 * (n * (imps.len() + 1)) as u32).clamp(480, 1600);
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    // Each case takes one segment per impl plus a gap; its name labels its middle segment.
    let per = imps.len() + 1;
    let total = (n * per) as i32;
    let names: Vec<&str> = bars.iter().map(|b| b.0).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{fam}: cost relative to keel (lower is better)"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((0..total).into_segmented(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(total as usize)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(s) if (*s as usize) % per == (per - 1) / 2 => {
                names.get(*s as usize / per).copied().unwrap_or("").to_owned()
            }
            _ => String::new(),
        })
        .y_desc("cost / keel's")
        .draw()?;
    for (k, imp) in imps.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let rects = bars.iter().enumerate().filter_map(move |(i, (_, b))| {
            let v = b.iter().find(|x| x.0 == *imp)?.1;
            let s = (i * per + k) as i32;
            let top = v.min(ymax);
            Some(Rectangle::new([(SegmentValue::Exact(s), 0.0), (SegmentValue::Exact(s + 1), top)], color.filled()))
        });
        chart
            .draw_series(rects)?
            .label(*imp)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Draws the line chart of the curves named `name` (one per impl) into `path`.
fn line_chart(path: &Path, name: &str, curves: &[(&Curve, Vec<(u64, f64)>)], unit: &str) -> Drawn {
    let xs = curves.iter().flat_map(|c| c.1.iter().map(|p| p.0 as f64));
    let (xmin, xmax) = xs.fold((f64::MAX, 1.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let xmin = xmin.clamp(1.0, xmax);
    let ymax = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(0.0f64, f64::max) * 1.15;
    let size = curves.first().map(|c| c.0.size).unwrap_or("size");
    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{name}: {unit} per operation by {size}"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((xmin..xmax * 1.5).log_scale(), 0f64..ymax.max(1e-9))?;
    chart.configure_mesh().x_desc(size).y_desc(format!("{unit} per op")).draw()?;
    for (k, (c, pts)) in curves.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let line: Vec<(f64, f64)> = pts.iter().map(|&(n, v)| (n as f64, v)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(c.imp)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Writes every chart `rows` has data for into `dir`; returns the paths written.
pub fn write(dir: &Path, rows: &[Row], curves: &[Curve]) -> Result<Vec<String>, String> {
    let mut written = Vec::new();
    for (fam, bars) in bar_families(rows, curves) {
        let path = dir.join(format!("bars-{fam}.svg"));
        bar_chart(&path, fam, &bars).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    let mut names: Vec<&str> = curves.iter().map(|c| c.name).collect();
    names.dedup();
    for name in names {
        let family: Vec<(&Curve, Vec<(u64, f64)>)> = curves
            .iter()
            .filter(|c| c.name == name)
            .map(|c| (c, goals::curve_points(c, rows)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let Some(first) = family.first() else { continue };
        let unit = crate::report::curve_unit(first.0, rows);
        let path = dir.join(format!("curve-{name}.svg"));
        line_chart(&path, name, &family, unit).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Unit;

    #[test]
    fn families_are_name_prefixes() {
        assert_eq!(family("nop_b32"), "nop");
        assert_eq!(family("spawn"), "spawn");
        assert_eq!(family("remote_attach_p99"), "remote");
    }

    #[test]
    fn bars_are_relative_to_keel_and_skip_curve_points() {
        let rows = [
            Row { case: "nop_b1", imp: "io-uring", value: 2e7, unit: Unit::OpsPerSec },
            Row { case: "nop_b1", imp: "keel", value: 1e7, unit: Unit::OpsPerSec },
            Row { case: "spawn", imp: "keel", value: 10.0, unit: Unit::NsPerOp },
            Row { case: "spawn", imp: "tokio", value: 100.0, unit: Unit::NsPerOp },
            Row { case: "nop_q1", imp: "keel", value: 1e7, unit: Unit::OpsPerSec },
        ];
        let c = Curve { name: "nop_q", size: "in flight", imp: "keel", points: &[(1, "nop_q1")] };
        let f = bar_families(&rows, &[c]);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], ("nop", vec![("nop_b1", vec![("io-uring", 0.5), ("keel", 1.0)])]));
        assert_eq!(f[1], ("spawn", vec![("spawn", vec![("keel", 1.0), ("tokio", 10.0)])]));
    }
}
