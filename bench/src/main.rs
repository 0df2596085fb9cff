//! keel-bench: keel against its peers, side by side in one process run.
//!
//! `cargo run --release -p keel-bench -- [CASE...] [--iters N] [--quick] [--only IMPL]`
//!
//! Prints one line per (case, impl) on stdout, `bench <case> <impl> <value> <unit>`, with
//! the median of interleaved rounds (see [`harness`]). Exit codes: 0 done, 1 a case
//! failed, 2 a bad command line (the message is on stderr).

mod args;
mod cases;
mod harness;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (runs, plan) = match args::parse(std::env::args().skip(1), cases::ALL) {
        Ok(args::Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(args::Command::Run(runs, plan)) => (runs, plan),
        Err(e) => {
            eprintln!("keel-bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    for (case, impls) in runs {
        match harness::measure(case, &impls, plan) {
            Ok(values) => {
                for (imp, v) in impls.iter().zip(values) {
                    println!("bench {} {} {} {}", case.name, imp.name, harness::format_value(v), case.unit.label());
                }
            }
            Err(e) => {
                eprintln!("keel-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
