//! Goals and scaling curves as data, and the arithmetic that judges a run against them.
//!
//! A [`Goal`] compares one measured (case, impl) with another, usually a peer in the same
//! case (`spawn keel` vs `spawn tokio`), sometimes another case (`dispatch_w2 keel` vs
//! `dispatch_w1 keel`). Its ratio is `value / peer value` in the case's own unit, so a
//! cost (ns, bytes) has an "at most" goal and a rate (ops/s) an "at least" goal. Each case
//! module keeps its goals beside its impls (`GOALS`); `cases::GOALS` gathers them.
//!
//! A [`Curve`] is one impl measured by a family of cases that differ only in the size of
//! the work (live tasks, tasks in flight); it is flat when its per-operation cost at the
//! largest size is within [`FLAT`] of the cost at the smallest (a rate is turned into a
//! cost, `1 / rate`, first).

use crate::harness::Unit;

/// One measured value of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The case's name.
    pub case: &'static str,
    /// The impl's name.
    pub imp: &'static str,
    /// The median, in `unit`.
    pub value: f64,
    /// The case's unit.
    pub unit: Unit,
}

/// Which way a goal bounds its ratio.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The ratio must be at most the bound (costs).
    AtMost,
    /// The ratio must be at least the bound (rates).
    AtLeast,
}

impl Op {
    /// As printed.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::AtMost => "<=",
            Op::AtLeast => ">=",
        }
    }
}

/// A goal: `case imp` against `peer_case peer`, ratio `op` `x`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Goal {
    /// The measured side's case.
    pub case: &'static str,
    /// The measured side's impl (usually keel).
    pub imp: &'static str,
    /// The reference side's case (usually the same case).
    pub peer_case: &'static str,
    /// The reference side's impl.
    pub peer: &'static str,
    /// Which way the bound goes.
    pub op: Op,
    /// The bound on `value / peer value`.
    pub x: f64,
}

impl Goal {
    /// A goal against a peer in the same case.
    pub const fn vs(case: &'static str, imp: &'static str, peer: &'static str, op: Op, x: f64) -> Goal {
        Goal { case, imp, peer_case: case, peer, op, x }
    }
}

/// How a run fared against a goal.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Verdict {
    /// `value / peer value`.
    pub ratio: f64,
    /// The goal holds.
    pub met: bool,
    /// How far the ratio is past the bound, in percent of the bound (0 when met).
    pub miss_pct: f64,
}

/// Judges `value` against `peer` under `goal`.
pub fn judge(goal: &Goal, value: f64, peer: f64) -> Verdict {
    let ratio = value / peer;
    let (met, miss) = match goal.op {
        Op::AtMost => (ratio <= goal.x, ratio / goal.x - 1.0),
        Op::AtLeast => (ratio >= goal.x, 1.0 - ratio / goal.x),
    };
    Verdict { ratio, met, miss_pct: if met { 0.0 } else { miss * 100.0 } }
}

/// The peer as printed: its impl name, or `case:impl` when it is another case's.
fn peer_name(goal: &Goal) -> String {
    if goal.peer_case == goal.case { goal.peer.to_owned() } else { format!("{}:{}", goal.peer_case, goal.peer) }
}

/// The goal line: `goal <case> <impl> vs <peer>: <ratio>x (goal <op> <x>) met|missed by N%`.
pub fn line(goal: &Goal, v: &Verdict) -> String {
    let verdict = if v.met { "met".to_owned() } else { format!("missed by {:.1}%", v.miss_pct) };
    format!(
        "goal {} {} vs {}: {:.3}x (goal {} {}) {verdict}",
        goal.case,
        goal.imp,
        peer_name(goal),
        v.ratio,
        goal.op.symbol(),
        goal.x
    )
}

/// The value of `case imp` in `rows`, if it was measured.
pub fn find(rows: &[Row], case: &str, imp: &str) -> Option<f64> {
    rows.iter().find(|r| r.case == case && r.imp == imp).map(|r| r.value)
}

/// Every goal both of whose sides `rows` holds, with its verdict, in `goals`' order.
pub fn judge_all(goals: &[Goal], rows: &[Row]) -> Vec<(Goal, Verdict)> {
    goals
        .iter()
        .filter_map(|g| {
            let a = find(rows, g.case, g.imp)?;
            let b = find(rows, g.peer_case, g.peer)?;
            Some((*g, judge(g, a, b)))
        })
        .collect()
}

/// Largest growth of per-operation cost, smallest to largest size, for a flat curve.
pub const FLAT: f64 = 0.20;

/// A scaling curve: one impl across cases that differ in size.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Curve {
    /// Its name (the case family: `yield`, `timer`, `fiber_yield`...).
    pub name: &'static str,
    /// What the size counts (`live tasks`, `in flight`...).
    pub size: &'static str,
    /// The impl it follows.
    pub imp: &'static str,
    /// (size, case name), smallest size first.
    pub points: &'static [(u64, &'static str)],
}

/// A curve's measured points: (size, per-operation cost in the case's cost unit).
pub fn curve_points(curve: &Curve, rows: &[Row]) -> Vec<(u64, f64)> {
    curve
        .points
        .iter()
        .filter_map(|&(n, case)| {
            let r = rows.iter().find(|r| r.case == case && r.imp == curve.imp)?;
            Some((n, cost(r.value, r.unit)))
        })
        .collect()
}

/// A value as a cost (lower is better): ns and bytes as they are, a rate as ns per op.
pub fn cost(value: f64, unit: Unit) -> f64 {
    match unit {
        Unit::OpsPerSec => 1e9 / value,
        _ => value,
    }
}

/// The growth of a curve's cost from its first to its last point (`last / first`), and
/// whether that is flat (within [`FLAT`] either way); `None` with fewer than two points.
pub fn flatness(points: &[(u64, f64)]) -> Option<(f64, bool)> {
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 2 {
        return None;
    }
    let growth = last.1 / first.1;
    Some((growth, (1.0 / (1.0 + FLAT)..=1.0 + FLAT).contains(&growth)))
}

/// The curve line: `curve <name> <impl> by <size>: <n> -> <cost> <unit>, ...: <growth>x,
/// flat within 20%|not flat (+N%)|not flat, cheaper at scale (-N%)`.
pub fn curve_line(curve: &Curve, points: &[(u64, f64)], unit: &str) -> Option<String> {
    let (growth, flat) = flatness(points)?;
    let sizes: Vec<String> =
        points.iter().map(|(n, c)| format!("{n} -> {} {unit}", crate::harness::format_value(*c))).collect();
    let verdict = if flat {
        format!("flat within {:.0}%", FLAT * 100.0)
    } else if growth > 1.0 {
        format!("not flat (+{:.0}%)", (growth - 1.0) * 100.0)
    } else {
        format!("not flat, cheaper at scale (-{:.0}%)", (1.0 - growth) * 100.0)
    };
    Some(format!("curve {} {} by {}: {}: {growth:.3}x, {verdict}", curve.name, curve.imp, curve.size, sizes.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_MOST: Goal = Goal::vs("spawn", "keel", "tokio", Op::AtMost, 0.08);
    const AT_LEAST: Goal = Goal::vs("nop_b32", "keel", "io-uring-tuned", Op::AtLeast, 0.92);

    #[test]
    fn at_most_goals() {
        let v = judge(&AT_MOST, 8.0, 100.0);
        assert!(v.met && (v.ratio - 0.08).abs() < 1e-12 && v.miss_pct == 0.0);
        let v = judge(&AT_MOST, 10.0, 100.0);
        assert!(!v.met);
        assert!((v.miss_pct - 25.0).abs() < 1e-9, "0.10 is 25% over 0.08: {v:?}");
        assert_eq!(line(&AT_MOST, &v), "goal spawn keel vs tokio: 0.100x (goal <= 0.08) missed by 25.0%");
    }

    #[test]
    fn at_least_goals() {
        let v = judge(&AT_LEAST, 95.0, 100.0);
        assert!(v.met);
        assert_eq!(line(&AT_LEAST, &v), "goal nop_b32 keel vs io-uring-tuned: 0.950x (goal >= 0.92) met");
        let v = judge(&AT_LEAST, 46.0, 100.0);
        assert!(!v.met && (v.miss_pct - 50.0).abs() < 1e-9, "0.46 is half of 0.92: {v:?}");
    }

    #[test]
    fn cross_case_goals_name_the_peer_case() {
        let g =
            Goal { case: "dispatch_w2", imp: "keel", peer_case: "dispatch_w1", peer: "keel", op: Op::AtLeast, x: 1.85 };
        let rows = [
            Row { case: "dispatch_w1", imp: "keel", value: 100.0, unit: Unit::OpsPerSec },
            Row { case: "dispatch_w2", imp: "keel", value: 190.0, unit: Unit::OpsPerSec },
        ];
        let got = judge_all(&[g, AT_MOST], &rows);
        assert_eq!(got.len(), 1, "spawn was not measured, so its goal is left out");
        assert_eq!(line(&got[0].0, &got[0].1), "goal dispatch_w2 keel vs dispatch_w1:keel: 1.900x (goal >= 1.85) met");
    }

    const CURVE: Curve = Curve {
        name: "nop",
        size: "in flight",
        imp: "keel",
        points: &[(1, "nop_q1"), (64, "nop_q64"), (1024, "nop_q1024")],
    };

    #[test]
    fn curves_turn_rates_into_costs() {
        let rows = [
            Row { case: "nop_q1", imp: "keel", value: 1e7, unit: Unit::OpsPerSec },
            Row { case: "nop_q1024", imp: "keel", value: 5e6, unit: Unit::OpsPerSec },
            Row { case: "nop_q1024", imp: "tokio", value: 1.0, unit: Unit::OpsPerSec },
        ];
        let p = curve_points(&CURVE, &rows);
        assert_eq!(p, vec![(1, 100.0), (1024, 200.0)]);
        let (g, flat) = flatness(&p).unwrap();
        assert!(!flat && (g - 2.0).abs() < 1e-12);
        assert_eq!(
            curve_line(&CURVE, &p, "ns").unwrap(),
            "curve nop keel by in flight: 1 -> 100.0 ns, 1024 -> 200.0 ns: 2.000x, not flat (+100%)"
        );
    }

    #[test]
    fn flatness_bounds() {
        assert_eq!(flatness(&[(1, 10.0)]), None);
        assert_eq!(flatness(&[]), None);
        assert_eq!(flatness(&[(1, 10.0), (10, 12.0)]).map(|f| f.1), Some(true));
        assert_eq!(flatness(&[(1, 10.0), (10, 12.1)]).map(|f| f.1), Some(false));
        assert_eq!(flatness(&[(1, 10.0), (10, 9.0)]).map(|f| f.1), Some(true));
        assert_eq!(flatness(&[(1, 10.0), (10, 5.0)]).map(|f| f.1), Some(false), "much cheaper at scale is not flat");
        let c = Curve { name: "t", size: "n", imp: "k", points: &[] };
        assert_eq!(
            curve_line(&c, &[(1, 10.0), (10, 5.0)], "ns").unwrap(),
            "curve t k by n: 1 -> 10.00 ns, 10 -> 5.00 ns: 0.500x, not flat, cheaper at scale (-50%)"
        );
    }
}
