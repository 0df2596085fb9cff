//! The measurement harness: the case registry types, iteration calibration, and
//! interleaved rounds.
//!
//! A [`Case`] is a name, a [`Unit`] and a table of [`Impl`]s (keel and its peers). An
//! impl's function builds whatever it needs (executor, runtime, task), then times only
//! its hot loop of `iters` operations and returns that time. The harness calls the
//! impls of a case in rounds, alternating their order from round to round, and
//! reports each impl's median, so that every peer sees the same machine conditions.

use std::time::Duration;

/// What an impl returns: the time its `iters` operations took, or why it failed.
pub type Timed = Result<Duration, String>;

/// The unit a case reports in (one per case).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds per operation (lower is better).
    NsPerOp,
    /// Operations per second (higher is better).
    OpsPerSec,
    /// Bytes per item (lower is better): an impl reports `bytes * iters` as nanoseconds.
    Bytes,
}

impl Unit {
    /// The unit as printed.
    pub fn label(self) -> &'static str {
        match self {
            Unit::NsPerOp => "ns",
            Unit::OpsPerSec => "ops/s",
            Unit::Bytes => "B",
        }
    }

    /// The value of one trial of `iters` operations that took `elapsed`.
    pub fn value(self, elapsed: Duration, iters: u64) -> f64 {
        match self {
            // A trial below the clock's resolution counts as 1 ns, not as free.
            Unit::NsPerOp | Unit::Bytes => elapsed.as_nanos().max(1) as f64 / iters.max(1) as f64,
            // Likewise: never an infinite rate.
            Unit::OpsPerSec => iters as f64 * 1e9 / elapsed.as_nanos().max(1) as f64,
        }
    }
}

/// One implementation of a case.
#[derive(Copy, Clone, Debug)]
pub struct Impl {
    /// Its name on the command line and in the output (`keel`, `tokio`, ...).
    pub name: &'static str,
    /// Runs `iters` operations and returns the time the hot loop took.
    pub run: fn(iters: u64) -> Timed,
}

/// One benchmark case: its name, unit and implementations.
#[derive(Copy, Clone, Debug)]
pub struct Case {
    /// Its name on the command line and in the output.
    pub name: &'static str,
    /// The unit every impl of this case reports in.
    pub unit: Unit,
    /// keel first, then its peers.
    pub impls: &'static [Impl],
}

/// How long and how often to measure.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Iterations per trial; `None`: calibrate each impl to `target` per trial.
    pub iters: Option<u64>,
    /// Trials per impl (odd, so the median is one of them).
    pub rounds: usize,
    /// Time one trial should take when calibrating.
    pub target: Duration,
}

impl Plan {
    /// The full run: 11 rounds of about 30 ms per impl.
    pub const FULL: Plan = Plan { iters: None, rounds: 11, target: Duration::from_millis(30) };
    /// The smoke run: 3 rounds of about 1 ms per impl.
    pub const QUICK: Plan = Plan { iters: None, rounds: 3, target: Duration::from_millis(1) };
}

/// The largest iteration count calibration picks.
const MAX_ITERS: u64 = 1 << 32;

/// An iteration count whose trial takes about `target` (and warms the impl up).
fn calibrate(imp: &Impl, target: Duration) -> Result<u64, String> {
    let mut iters: u64 = 16;
    loop {
        let elapsed = (imp.run)(iters)?;
        if elapsed >= target / 4 || iters >= MAX_ITERS {
            let scaled = iters as u128 * target.as_nanos() / elapsed.as_nanos().max(1);
            return Ok(scaled.clamp(1, MAX_ITERS as u128) as u64);
        }
        iters = iters.saturating_mul(4);
    }
}

/// The median of `v` (upper median for an even count); `v` must not be empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `impls` (a subset of `case.impls`, in order) under `plan`. Returns each
/// impl's median value, in the order given.
pub fn measure(case: &Case, impls: &[Impl], plan: Plan) -> Result<Vec<f64>, String> {
    let fail = |imp: &Impl, e: String| format!("case {} impl {}: {e}", case.name, imp.name);
    let mut iters = Vec::with_capacity(impls.len());
    for imp in impls {
        let n = match plan.iters {
            Some(n) => {
                // Warm up (caches, lazily initialised runtimes) with a short trial.
                (imp.run)(n.min(1000)).map_err(|e| fail(imp, e))?;
                n
            }
            None => calibrate(imp, plan.target).map_err(|e| fail(imp, e))?,
        };
        iters.push(n);
    }
    let mut samples = vec![Vec::with_capacity(plan.rounds); impls.len()];
    for round in 0..plan.rounds.max(1) {
        // Alternate the order so that no impl always runs right after another.
        let order: Vec<usize> =
            if round % 2 == 0 { (0..impls.len()).collect() } else { (0..impls.len()).rev().collect() };
        for i in order {
            let elapsed = (impls[i].run)(iters[i]).map_err(|e| fail(&impls[i], e))?;
            samples[i].push(case.unit.value(elapsed, iters[i]));
        }
    }
    Ok(samples.iter_mut().map(|s| median(s)).collect())
}

/// A value as printed: a plain decimal (never an exponent) with at least three
/// significant digits.
pub fn format_value(v: f64) -> String {
    let decimals = if v >= 100.0 {
        1
    } else if v >= 1.0 {
        2
    } else if v >= 0.01 {
        4
    } else {
        9
    };
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_plain_decimals() {
        assert_eq!(format_value(9.123), "9.12");
        assert_eq!(format_value(230.04), "230.0");
        assert_eq!(format_value(0.5), "0.5000");
        assert_eq!(format_value(1e-5), "0.000010000");
        assert_eq!(format_value(1e12), "1000000000000.0");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }

    #[test]
    fn ns_per_op_never_zero() {
        assert_eq!(Unit::NsPerOp.value(Duration::ZERO, 10), 0.1);
        assert_eq!(Unit::NsPerOp.value(Duration::from_nanos(500), 100), 5.0);
    }

    #[test]
    fn ops_per_sec_never_infinite() {
        assert_eq!(Unit::OpsPerSec.value(Duration::ZERO, 10), 1e10);
        assert_eq!(Unit::OpsPerSec.value(Duration::from_millis(2), 1000), 500_000.0);
        assert_eq!(Unit::OpsPerSec.label(), "ops/s");
    }

    fn fake(iters: u64) -> Timed {
        Ok(Duration::from_nanos(iters * 3))
    }

    #[test]
    fn measures_in_rounds() {
        const CASE: Case = Case { name: "fake", unit: Unit::NsPerOp, impls: &[Impl { name: "a", run: fake }] };
        let plan = Plan { iters: Some(100), rounds: 3, target: Duration::ZERO };
        assert_eq!(measure(&CASE, CASE.impls, plan), Ok(vec![3.0]));
        let v = measure(&CASE, CASE.impls, Plan::QUICK).unwrap();
        assert_eq!(v, vec![3.0]);
    }

    fn broken(_: u64) -> Timed {
        Err("no".into())
    }

    #[test]
    fn reports_failures_by_name() {
        const CASE: Case = Case { name: "fake", unit: Unit::NsPerOp, impls: &[Impl { name: "b", run: broken }] };
        assert_eq!(measure(&CASE, CASE.impls, Plan::QUICK), Err("case fake impl b: no".into()));
    }
}
