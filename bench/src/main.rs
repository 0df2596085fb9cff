//! keel-bench: keel against its peers, side by side in one process run.
//!
//! `cargo run --release -p keel-bench -- [CASE...] [--iters N] [--quick] [--only IMPL]
//! [--out DIR]`
//!
//! Prints one line per (case, impl) on stdout, `bench <case> <impl> <value> <unit>`, with
//! the median of interleaved rounds (see [`harness`]); then a `goal ...` line for every
//! goal whose two sides were measured and a `curve ...` line for every scaling curve with
//! at least two points (see [`goals`]); with `--out DIR`, CSV files and SVG charts
//! ([`report`]). Exit codes: 0 done, 1 a case failed, 2 a bad command line (the message
//! is on stderr).

mod args;
mod cases;
mod charts;
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
    let (runs, plan, out) = match args::parse(std::env::args().skip(1), cases::ALL) {
        Ok(args::Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(args::Command::Run(runs, plan, out)) => (runs, plan, out),
        Err(e) => {
            eprintln!("keel-bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
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
