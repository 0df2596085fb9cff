//! Command-line parsing: `keel-bench [CASE...] [--iters N] [--quick] [--only IMPL[,IMPL...]]
//! [--out DIR] [--merge DIR]`.
//!
//! Parsing is checked against a case registry, so an unknown case or impl is a usage
//! error (the binary prints it and exits with code 2) before anything is measured; so is
//! an impl this build leaves out (`crate::features`) named in `--only`, with the reason
//! and the build that has it. Without `--only`, such impls are dropped from the runs.

use crate::harness::{Case, Impl, Plan};
use std::fmt;
use std::path::PathBuf;

/// The usage text.
pub const USAGE: &str = "\
usage: keel-bench [CASE...] [--iters N] [--quick] [--only IMPL[,IMPL...]] [--out DIR] [--merge DIR]

  CASE         cases to run (default: all)
  --iters N    iterations per trial for every case (default: calibrated)
  --quick      a brief smoke run
  --only IMPL  run only this implementation (e.g. keel, tokio; or a list: keel,tokio)
  --out DIR    also write results.csv, goals.csv, curves.csv and SVG charts into DIR
               (created if missing)
  --merge DIR  also report the rows of DIR/results.csv (an earlier run's `--out`) whose
               (case, impl) this run does not measure: how a report gets `monoio-legacy`,
               which only the build with `--features monoio-legacy` measures
  -h, --help   this text

output: one line per measurement, `bench <case> <impl> <value> <unit>`, then one line
per goal whose sides were measured, `goal <case> <impl> vs <peer>: <ratio>x (goal <op>
<x>) met|missed by N%`, and one per scaling curve, `curve <name> <impl> by <size>: ...`";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print the usage text.
    Help,
    /// Measure these (case, impls) pairs under this plan, writing files into the
    /// directory if one is given (`--out`), adding the rows of the results file in the
    /// last directory if one is given (`--merge`).
    Run(Vec<(&'static Case, Vec<Impl>)>, Plan, Option<PathBuf>, Option<PathBuf>),
}

/// A bad command line.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    /// An argument starting with `-` that is not a flag.
    UnknownFlag(String),
    /// A flag without its value.
    MissingValue(&'static str),
    /// `--iters` with something other than a positive integer.
    BadIters(String),
    /// A flag given twice.
    Repeated(&'static str),
    /// A case name no case has.
    UnknownCase(String, Vec<&'static str>),
    /// An impl name no case has.
    UnknownImpl(String, Vec<&'static str>),
    /// `--only IMPL` leaves none of the chosen cases with an impl to run.
    NothingToRun(String),
    /// `--only` names an impl this build leaves out: the impl and why (which build has it).
    LeftOut(String, &'static str),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::UnknownFlag(a) => write!(f, "unknown flag `{a}`"),
            ArgError::MissingValue(flag) => write!(f, "`{flag}` needs a value"),
            ArgError::BadIters(v) => write!(f, "`--iters` takes a positive integer, not `{v}`"),
            ArgError::Repeated(flag) => write!(f, "`{flag}` given twice"),
            ArgError::UnknownCase(c, known) => write!(f, "unknown case `{c}` (cases: {})", known.join(", ")),
            ArgError::UnknownImpl(i, known) => write!(f, "unknown impl `{i}` (impls: {})", known.join(", ")),
            ArgError::NothingToRun(i) => write!(f, "none of the chosen cases has impl `{i}`"),
            ArgError::LeftOut(i, why) => write!(f, "impl `{i}` is not in this build: {why}"),
        }
    }
}

/// Parses `args` (without the program name) against `registry`, for this build
/// ([`crate::features::LEFT_OUT`]).
pub fn parse<I>(args: I, registry: &'static [Case]) -> Result<Command, ArgError>
where
    I: IntoIterator<Item = String>,
{
    parse_for(args, registry, crate::features::LEFT_OUT)
}

/// [`parse`] for a build that leaves out the impls of `left_out` (name, why).
fn parse_for<I>(args: I, registry: &'static [Case], left_out: &[(&str, &'static str)]) -> Result<Command, ArgError>
where
    I: IntoIterator<Item = String>,
{
    let mut names: Vec<String> = Vec::new();
    let mut iters: Option<u64> = None;
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut out: Option<PathBuf> = None;
    let mut merge: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" if inline.is_none() => return Ok(Command::Help),
            "--quick" if inline.is_none() => quick = true,
            "--iters" => {
                let v = inline.or_else(|| args.next()).ok_or(ArgError::MissingValue("--iters"))?;
                let n = v.parse::<u64>().ok().filter(|&n| n > 0).ok_or(ArgError::BadIters(v))?;
                if iters.replace(n).is_some() {
                    return Err(ArgError::Repeated("--iters"));
                }
            }
            "--only" => {
                let v = inline.or_else(|| args.next()).ok_or(ArgError::MissingValue("--only"))?;
                if only.replace(v).is_some() {
                    return Err(ArgError::Repeated("--only"));
                }
            }
            "--out" => {
                let v = inline.or_else(|| args.next()).ok_or(ArgError::MissingValue("--out"))?;
                if v.is_empty() {
                    return Err(ArgError::MissingValue("--out"));
                }
                if out.replace(PathBuf::from(v)).is_some() {
                    return Err(ArgError::Repeated("--out"));
                }
            }
            "--merge" => {
                let v = inline.or_else(|| args.next()).ok_or(ArgError::MissingValue("--merge"))?;
                if v.is_empty() {
                    return Err(ArgError::MissingValue("--merge"));
                }
                if merge.replace(PathBuf::from(v)).is_some() {
                    return Err(ArgError::Repeated("--merge"));
                }
            }
            _ if arg.starts_with('-') => return Err(ArgError::UnknownFlag(arg)),
            _ => names.push(arg),
        }
    }

    let mut cases: Vec<&'static Case> = Vec::new();
    for name in names {
        let case = registry
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ArgError::UnknownCase(name, registry.iter().map(|c| c.name).collect()))?;
        // A case named twice is measured once: one line per (case, impl).
        if !cases.iter().any(|c| c.name == case.name) {
            cases.push(case);
        }
    }
    if cases.is_empty() {
        cases = registry.iter().collect();
    }
    if let Some(i) = &only {
        let mut known: Vec<&'static str> = Vec::new();
        for imp in registry.iter().flat_map(|c| c.impls) {
            if !known.contains(&imp.name) {
                known.push(imp.name);
            }
        }
        if let Some(unknown) = i.split(',').find(|i| !known.contains(i)) {
            return Err(ArgError::UnknownImpl(unknown.to_owned(), known));
        }
        if let Some(&(left, why)) = left_out.iter().find(|(l, _)| i.split(',').any(|i| i == *l)) {
            return Err(ArgError::LeftOut(left.to_owned(), why));
        }
    }

    let runs: Vec<(&'static Case, Vec<Impl>)> = cases
        .into_iter()
        .map(|c| {
            (
                c,
                c.impls
                    .iter()
                    .filter(|imp| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == imp.name)))
                    .filter(|imp| !left_out.iter().any(|(l, _)| *l == imp.name))
                    .copied()
                    .collect(),
            )
        })
        .filter(|(_, impls): &(_, Vec<Impl>)| !impls.is_empty())
        .collect();
    if runs.is_empty() {
        return Err(ArgError::NothingToRun(only.unwrap_or_default()));
    }
    let base = if quick { Plan::QUICK } else { Plan::FULL };
    Ok(Command::Run(runs, Plan { iters, ..base }, out, merge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Timed, Unit};
    use std::time::Duration;

    fn nop(_: u64) -> Timed {
        Ok(Duration::ZERO)
    }

    static REG: &[Case] = &[
        Case {
            name: "spawn",
            unit: Unit::NsPerOp,
            impls: &[Impl { name: "keel", run: nop }, Impl { name: "tokio", run: nop }],
        },
        Case { name: "switch", unit: Unit::NsPerOp, impls: &[Impl { name: "keel", run: nop }] },
    ];

    fn p(args: &[&str]) -> Result<Command, ArgError> {
        parse(args.iter().map(|s| s.to_string()), REG)
    }

    fn err(args: &[&str]) -> ArgError {
        p(args).expect_err("a bad command line")
    }

    /// The (case, impl) names and the plan of a successful parse.
    fn runs(args: &[&str]) -> (Vec<(&'static str, Vec<&'static str>)>, Plan) {
        match p(args) {
            Ok(Command::Run(r, plan, _, _)) => {
                (r.iter().map(|(c, i)| (c.name, i.iter().map(|i| i.name).collect())).collect(), plan)
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_to_every_case_and_impl() {
        let (r, plan) = runs(&[]);
        assert_eq!(r, [("spawn", vec!["keel", "tokio"]), ("switch", vec!["keel"])]);
        assert_eq!(plan, Plan::FULL);
    }

    #[test]
    fn flags_and_cases() {
        let (r, plan) = runs(&["switch", "--quick", "--iters", "500", "spawn", "switch"]);
        assert_eq!(r, [("switch", vec!["keel"]), ("spawn", vec!["keel", "tokio"])]);
        assert_eq!(plan, Plan { iters: Some(500), ..Plan::QUICK });
        let (r, plan) = runs(&["--only=tokio", "--iters=7"]);
        assert_eq!(r, [("spawn", vec!["tokio"])]);
        assert_eq!(plan.iters, Some(7));
        let (r, _) = runs(&["--only", "tokio,keel"]);
        assert_eq!(r, [("spawn", vec!["keel", "tokio"]), ("switch", vec!["keel"])], "a list keeps every impl it names");
        assert!(matches!(p(&["spawn", "--help"]), Ok(Command::Help)));
    }

    #[test]
    fn out_dir() {
        match p(&["--out", "/tmp/x", "spawn"]) {
            Ok(Command::Run(_, _, Some(d), None)) => assert_eq!(d, PathBuf::from("/tmp/x")),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(p(&["--out=rel/dir"]), Ok(Command::Run(_, _, Some(d), _)) if d == std::path::Path::new("rel/dir"))
        );
        assert!(matches!(p(&[]), Ok(Command::Run(_, _, None, None))));
        assert_eq!(err(&["--out"]), ArgError::MissingValue("--out"));
        assert_eq!(err(&["--out="]), ArgError::MissingValue("--out"));
        assert_eq!(err(&["--out", "a", "--out", "b"]), ArgError::Repeated("--out"));
    }

    #[test]
    fn merge_dir() {
        match p(&["--merge", "/tmp/m", "--out=o"]) {
            Ok(Command::Run(_, _, Some(o), Some(m))) => {
                assert_eq!((o, m), (PathBuf::from("o"), PathBuf::from("/tmp/m")))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(p(&["--merge=m"]), Ok(Command::Run(_, _, None, Some(m))) if m == std::path::Path::new("m")));
        assert_eq!(err(&["--merge"]), ArgError::MissingValue("--merge"));
        assert_eq!(err(&["--merge="]), ArgError::MissingValue("--merge"));
        assert_eq!(err(&["--merge", "a", "--merge", "b"]), ArgError::Repeated("--merge"));
    }

    /// A build that leaves out `tokio`.
    fn without_tokio(args: &[&str]) -> Result<Command, ArgError> {
        parse_for(args.iter().map(|s| s.to_string()), REG, &[("tokio", "only in the other build")])
    }

    #[test]
    fn left_out_impls() {
        match without_tokio(&[]) {
            Ok(Command::Run(r, ..)) => {
                let names: Vec<_> =
                    r.iter().map(|(c, i)| (c.name, i.iter().map(|i| i.name).collect::<Vec<_>>())).collect();
                assert_eq!(names, [("spawn", vec!["keel"]), ("switch", vec!["keel"])], "dropped without --only");
            }
            other => panic!("{other:?}"),
        }
        for only in ["tokio", "keel,tokio"] {
            let e = without_tokio(&["--only", only]).expect_err("names a left-out impl");
            assert_eq!(e, ArgError::LeftOut("tokio".into(), "only in the other build"));
            assert_eq!(e.to_string(), "impl `tokio` is not in this build: only in the other build");
        }
        assert_eq!(
            without_tokio(&["--only", "nosuch,tokio"]).expect_err("unknown first"),
            ArgError::UnknownImpl("nosuch".into(), vec!["keel", "tokio"])
        );
    }

    #[test]
    fn bad_flags() {
        assert_eq!(err(&["--fast"]), ArgError::UnknownFlag("--fast".into()));
        assert_eq!(err(&["-q"]), ArgError::UnknownFlag("-q".into()));
        assert_eq!(err(&["--quick=1"]), ArgError::UnknownFlag("--quick=1".into()));
        assert_eq!(err(&["--iters"]), ArgError::MissingValue("--iters"));
        assert_eq!(err(&["--only"]), ArgError::MissingValue("--only"));
        assert_eq!(err(&["--iters", "0"]), ArgError::BadIters("0".into()));
        assert_eq!(err(&["--iters", "-5"]), ArgError::BadIters("-5".into()));
        assert_eq!(err(&["--iters", "1e6"]), ArgError::BadIters("1e6".into()));
        assert_eq!(err(&["--iters=", "spawn"]), ArgError::BadIters("".into()));
        assert_eq!(err(&["--iters", "3", "--iters", "4"]), ArgError::Repeated("--iters"));
        assert_eq!(err(&["--only", "keel", "--only", "keel"]), ArgError::Repeated("--only"));
    }

    #[test]
    fn unknown_names() {
        assert_eq!(err(&["spwan"]), ArgError::UnknownCase("spwan".into(), vec!["spawn", "switch"]));
        assert_eq!(err(&["--only", "monoio"]), ArgError::UnknownImpl("monoio".into(), vec!["keel", "tokio"]));
        assert_eq!(err(&["switch", "--only", "tokio"]), ArgError::NothingToRun("tokio".into()));
        assert_eq!(
            err(&["--only", "keel,monoio"]),
            ArgError::UnknownImpl("monoio".into(), vec!["keel", "tokio"]),
            "names the unknown one in a list"
        );
    }

    #[test]
    fn errors_read_well() {
        let e = p(&["spwan"]).unwrap_err().to_string();
        assert_eq!(e, "unknown case `spwan` (cases: spawn, switch)");
        assert_eq!(p(&["--iters", "x"]).unwrap_err().to_string(), "`--iters` takes a positive integer, not `x`");
    }
}
