//! What a run leaves behind with `--out DIR`: CSV files of its values, goals and curves
//! (written by hand: three flat tables of names and numbers, no quoting needed, since case
//! and impl names have no commas, checked), and the SVG charts ([`crate::charts`]).
//!
//! - `results.csv`: `case,impl,value,unit`, one row per measurement.
//! - `goals.csv`: `case,impl,peer_case,peer,ratio,op,bound,met,miss_pct`.
//! - `curves.csv`: `curve,impl,size,cost,unit` (cost per operation: ns, or bytes).
//!
//! `--merge DIR` reads an earlier run's `results.csv` back ([`read_results`]) and adds the
//! rows of the (case, impl) pairs this run did not measure ([`merge`]): the report of the
//! default build gets `monoio-legacy`'s rows from the build with `--features
//! monoio-legacy` (`crate::features`), while every pair this run measured keeps this
//! run's value (its impls were interleaved with each other, not with the other run's).

use crate::goals::{self, Curve, Goal, Row, Verdict};
use crate::harness::{Case, format_value};
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

/// The rows of a `results.csv` ([`results_csv`]'s format) as `registry` names them: every
/// row must name a case of the registry, one of its impls and its unit, with a finite,
/// positive value; `path` is only for the messages.
pub fn read_results(text: &str, path: &Path, registry: &'static [Case]) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().enumerate();
    if lines.next().map(|(_, l)| l) != Some("case,impl,value,unit") {
        return Err(format!("{}: not a results.csv (its first line is not `case,impl,value,unit`)", path.display()));
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let at = || format!("{} line {}", path.display(), n + 1);
        let f: Vec<&str> = line.split(',').collect();
        let [case, imp, value, unit] = f[..] else {
            return Err(format!("{}: not `case,impl,value,unit`: {line:?}", at()));
        };
        let c = registry.iter().find(|c| c.name == case).ok_or_else(|| format!("{}: no case `{case}`", at()))?;
        let i = c
            .impls
            .iter()
            .find(|i| i.name == imp)
            .ok_or_else(|| format!("{}: case {case} has no impl `{imp}`", at()))?;
        if unit != c.unit.label() {
            return Err(format!("{}: {case} is in {}, not {unit}", at(), c.unit.label()));
        }
        let value = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
        let value = value.ok_or_else(|| format!("{}: not a finite, positive value: {line:?}", at()))?;
        rows.push(Row { case: c.name, imp: i.name, value, unit: c.unit });
    }
    Ok(rows)
}

/// Adds to `rows` each row of `earlier` whose (case, impl) `rows` does not hold, after the
/// last row of its case (at the end if `rows` has none); returns the rows added.
pub fn merge(rows: &mut Vec<Row>, earlier: &[Row]) -> Vec<Row> {
    let mut added = Vec::new();
    for r in earlier {
        if rows.iter().any(|m| m.case == r.case && m.imp == r.imp) {
            continue;
        }
        let at = rows.iter().rposition(|m| m.case == r.case).map_or(rows.len(), |i| i + 1);
        rows.insert(at, r.clone());
        added.push(r.clone());
    }
    added
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
    use crate::harness::{Impl, Unit};

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

    static REG: &[Case] = &[
        Case {
            name: "spawn",
            unit: Unit::NsPerOp,
            impls: &[Impl { name: "keel", run: nop }, Impl { name: "tokio", run: nop }],
        },
        Case {
            name: "nop_q1",
            unit: Unit::OpsPerSec,
            impls: &[Impl { name: "keel", run: nop }, Impl { name: "io-uring", run: nop }],
        },
        Case { name: "nop_q64", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: nop }] },
    ];

    fn nop(_: u64) -> crate::harness::Timed {
        Ok(std::time::Duration::ZERO)
    }

    #[test]
    fn results_read_back() {
        let read = read_results(&results_csv(&rows()), Path::new("r.csv"), REG).expect("read back");
        assert_eq!(read.len(), 4);
        for (a, b) in read.iter().zip(rows()) {
            assert_eq!((a.case, a.imp, a.unit), (b.case, b.imp, b.unit));
            assert!((a.value - b.value).abs() / b.value < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn bad_results_files() {
        let bad = |text: &str| read_results(text, Path::new("r.csv"), REG).expect_err(text);
        assert!(bad("").contains("not a results.csv"));
        assert!(bad("case,impl,value\n").contains("not a results.csv"));
        let head = "case,impl,value,unit\n";
        assert_eq!(
            bad(&format!("{head}spawn,keel,1.0\n")),
            "r.csv line 2: not `case,impl,value,unit`: \"spawn,keel,1.0\""
        );
        assert_eq!(bad(&format!("{head}spwan,keel,1.0,ns\n")), "r.csv line 2: no case `spwan`");
        assert_eq!(bad(&format!("{head}spawn,may,1.0,ns\n")), "r.csv line 2: case spawn has no impl `may`");
        assert_eq!(bad(&format!("{head}spawn,keel,1.0,B\n")), "r.csv line 2: spawn is in ns, not B");
        for v in ["0", "-1.0", "inf", "NaN", "x"] {
            assert!(bad(&format!("{head}spawn,keel,{v},ns\n")).contains("not a finite, positive value"), "{v}");
        }
    }

    #[test]
    fn merge_adds_only_pairs_not_measured() {
        let mut measured = rows();
        let earlier = [
            Row { case: "spawn", imp: "keel", value: 1.0, unit: Unit::NsPerOp },
            Row { case: "nop_q1", imp: "io-uring", value: 3e7, unit: Unit::OpsPerSec },
            Row { case: "spawn", imp: "tokio", value: 2.0, unit: Unit::NsPerOp },
        ];
        let added = merge(&mut measured, &earlier);
        assert_eq!(added, [earlier[1].clone()], "a measured pair keeps this run's value");
        let order: Vec<(&str, &str, f64)> = measured.iter().map(|r| (r.case, r.imp, r.value)).collect();
        assert_eq!(
            order,
            [
                ("spawn", "keel", 9.5),
                ("spawn", "tokio", 120.25),
                ("nop_q1", "keel", 1e7),
                ("nop_q1", "io-uring", 3e7),
                ("nop_q64", "keel", 2e7)
            ],
            "an added row goes after its case's rows"
        );
        let mut none = Vec::new();
        assert_eq!(merge(&mut none, &earlier), earlier, "into an empty run: all of them");
        assert_eq!(none, [earlier[0].clone(), earlier[2].clone(), earlier[1].clone()], "grouped by case");
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
