//! What a run leaves behind with `--out DIR`: CSV files of its values, goals and curves
//! (written by hand: three flat tables of names and numbers, no quoting needed, since case
//! and impl names have no commas, checked), and the SVG charts ([`crate::charts`]).
//!
//! - `results.csv`: `case,impl,value,unit`, one row per measurement.
//! - `goals.csv`: `case,impl,peer_case,peer,ratio,op,bound,met,miss_pct`.
//! - `curves.csv`: `curve,impl,size,cost,unit` (cost per operation: ns, or bytes).

use crate::goals::{self, Curve, Goal, Row, Verdict};
use crate::harness::format_value;
use std::fmt::Write as _;
use std::path::Path;

/// `results.csv`.
pub fn results_csv(rows: &[Row]) -> String {
    let mut s = String::from("case,impl,value,unit\n");
    for r in rows {
        let _ = writeln!(s, "{},{},{},{}", field(r.case), field(r.imp), format_value(r.value), r.unit.label());
    }
    s
}

/// `goals.csv`.
pub fn goals_csv(judged: &[(Goal, Verdict)]) -> String {
    let mut s = String::from("case,impl,peer_case,peer,ratio,op,bound,met,miss_pct\n");
    for (g, v) in judged {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.4},{},{},{},{:.1}",
            field(g.case),
            field(g.imp),
            field(g.peer_case),
            field(g.peer),
            v.ratio,
            g.op.symbol(),
            g.x,
            v.met,
            v.miss_pct
        );
    }
    s
}

/// `curves.csv`: every point of every curve that `rows` holds.
pub fn curves_csv(curves: &[Curve], rows: &[Row]) -> String {
    let mut s = String::from("curve,impl,size,cost,unit\n");
    for c in curves {
        let unit = curve_unit(c, rows);
        for (n, cost) in goals::curve_points(c, rows) {
            let _ = writeln!(s, "{},{},{n},{},{unit}", field(c.name), field(c.imp), format_value(cost));
        }
    }
    s
}

/// The cost unit of a curve's points: bytes for a memory case, ns otherwise.
pub fn curve_unit(c: &Curve, rows: &[Row]) -> &'static str {
    let bytes = c.points.iter().any(|(_, case)| rows.iter().any(|r| r.case == *case && r.unit.label() == "B"));
    if bytes { "B" } else { "ns" }
}

/// A name as a CSV field: names never hold a comma, quote or newline (the case registry
/// test checks it), so it goes in as it is.
fn field(name: &str) -> &str {
    debug_assert!(!name.contains([',', '"', '\n']), "a name with CSV syntax: {name}");
    name
}

/// Writes the CSV files and the charts into `dir` (created if missing). Returns the
/// paths written.
pub fn write_all(
    dir: &Path,
    rows: &[Row],
    judged: &[(Goal, Verdict)],
    curves: &[Curve],
) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in
        [("results.csv", results_csv(rows)), ("goals.csv", goals_csv(judged)), ("curves.csv", curves_csv(curves, rows))]
    {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    written.extend(crate::charts::write(dir, rows, curves)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::Op;
    use crate::harness::Unit;

    fn rows() -> Vec<Row> {
        vec![
            Row { case: "spawn", imp: "keel", value: 9.5, unit: Unit::NsPerOp },
            Row { case: "spawn", imp: "tokio", value: 120.25, unit: Unit::NsPerOp },
            Row { case: "nop_q1", imp: "keel", value: 1e7, unit: Unit::OpsPerSec },
            Row { case: "nop_q64", imp: "keel", value: 2e7, unit: Unit::OpsPerSec },
        ]
    }

    #[test]
    fn results_rows() {
        assert_eq!(
            results_csv(&rows()),
            "case,impl,value,unit\nspawn,keel,9.50,ns\nspawn,tokio,120.2,ns\nnop_q1,keel,10000000.0,ops/s\nnop_q64,keel,20000000.0,ops/s\n"
        );
    }

    #[test]
    fn goal_rows() {
        let g = Goal::vs("spawn", "keel", "tokio", Op::AtMost, 0.08);
        let judged = goals::judge_all(&[g], &rows());
        assert_eq!(
            goals_csv(&judged),
            "case,impl,peer_case,peer,ratio,op,bound,met,miss_pct\nspawn,keel,spawn,tokio,0.0790,<=,0.08,true,0.0\n"
        );
    }

    #[test]
    fn curve_rows() {
        let c = Curve { name: "nop", size: "in flight", imp: "keel", points: &[(1, "nop_q1"), (64, "nop_q64")] };
        assert_eq!(curves_csv(&[c], &rows()), "curve,impl,size,cost,unit\nnop,keel,1,100.0,ns\nnop,keel,64,50.00,ns\n");
    }

    #[test]
    fn writes_files_into_a_new_dir() {
        let dir = std::env::temp_dir().join(format!("keel-bench-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Curve { name: "nop", size: "in flight", imp: "keel", points: &[(1, "nop_q1"), (64, "nop_q64")] };
        let written = write_all(&dir.join("sub"), &rows(), &[], &[c]).expect("written");
        assert!(written.len() >= 5, "three CSVs and at least a bar and a line chart: {written:?}");
        for w in &written {
            let text = std::fs::read_to_string(w).expect("readable");
            assert!(!text.is_empty(), "{w} is empty");
            if w.ends_with(".svg") {
                assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{w} is not an SVG");
            }
        }
        assert!(written.iter().any(|w| w.ends_with("bars-spawn.svg")), "{written:?}");
        assert!(written.iter().any(|w| w.ends_with("curve-nop.svg")), "{written:?}");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
