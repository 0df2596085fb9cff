//! keel-bench: keel against its peers, side by side in one process run.
//!
//! `cargo run --release -p keel-bench [--features monoio-legacy] -- [CASE...] [--iters N]
//! [--quick] [--only IMPL] [--out DIR] [--merge DIR]`
//!
//! Prints one line per (case, impl) on stdout, `bench <case> <impl> <value> <unit>`, with
//! the median of interleaved rounds (see [`harness`]); then a `goal ...` line for every
//! goal whose two sides were measured and a `curve ...` line for every scaling curve with
//! at least two points (see [`goals`]); with `--out DIR`, CSV files and SVG charts
//! ([`report`]); with `--merge DIR`, the rows of an earlier run's `DIR/results.csv` for the
//! (case, impl) pairs this run does not measure, printed after this run's `bench` lines:
//! how the default build's report gets `monoio-legacy`, which only the build with the
//! feature `monoio-legacy` measures ([`features`]). Exit codes: 0 done, 1 a case failed, 2 a bad command line (the message
//! is on stderr).

mod args;
mod cases;
mod charts;
mod features;
mod goals;
mod harness;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(r) = cases::memory_child() {
        return match r {
            Ok(bytes) => {
                println!("bytes {bytes}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keel-bench memory child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (runs, plan, out, merge) = match args::parse(std::env::args().skip(1), cases::ALL) {
        Ok(args::Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(args::Command::Run(runs, plan, out, merge)) => (runs, plan, out, merge),
        Err(e) => {
            eprintln!("keel-bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // The earlier run's rows, read before measuring: a bad file fails at once.
    let earlier = match merge.map(|d| d.join("results.csv")) {
        Some(path) => match std::fs::read_to_string(&path)
            .map_err(|e| format!("--merge: {}: {e}", path.display()))
            .and_then(|text| report::read_results(&text, &path, cases::ALL))
        {
            Ok(rows) => Some((path, rows)),
            Err(e) => {
                eprintln!("keel-bench: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut left: Vec<&str> = Vec::new();
    for imp in runs.iter().flat_map(|(c, _)| c.impls) {
        if features::left_out(imp.name).is_some() && !left.contains(&imp.name) {
            left.push(imp.name);
        }
    }
    for imp in left {
        eprintln!("keel-bench: not measured: {imp}: {}", features::left_out(imp).unwrap_or_default());
    }
    let mut rows = Vec::new();
    for (case, impls) in runs {
        match harness::measure(case, &impls, plan) {
            Ok(values) => {
                for (imp, v) in impls.iter().zip(values) {
                    println!("bench {} {} {} {}", case.name, imp.name, harness::format_value(v), case.unit.label());
                    rows.push(goals::Row { case: case.name, imp: imp.name, value: v, unit: case.unit });
                }
            }
            Err(e) => {
                eprintln!("keel-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some((path, earlier)) = earlier {
        let added = report::merge(&mut rows, &earlier);
        for r in &added {
            println!("bench {} {} {} {}", r.case, r.imp, harness::format_value(r.value), r.unit.label());
        }
        eprintln!("keel-bench: merged {} rows not measured in this run from {}", added.len(), path.display());
    }
    let judged = goals::judge_all(&cases::goals(), &rows);
    for (g, v) in &judged {
        println!("{}", goals::line(g, v));
    }
    let curves = cases::curves();
    for c in &curves {
        let unit = report::curve_unit(c, &rows);
        if let Some(line) = goals::curve_line(c, &goals::curve_points(c, &rows), unit) {
            println!("{line}");
        }
    }
    if let Some(dir) = out {
        match report::write_all(&dir, &rows, &judged, &curves) {
            Ok(files) => eprintln!("keel-bench: wrote {}", files.join(", ")),
            Err(e) => {
                eprintln!("keel-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
