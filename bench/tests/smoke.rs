//! Runs the built keel-bench binary: a `--quick` pass prints exactly one well-formed line
//! per (case, impl), and bad command lines exit with code 2. Timing is never asserted.
//!
//! The default build measures every impl but `monoio-legacy`; the build with the feature
//! `monoio-legacy` (`cargo nextest run -p keel-bench --features monoio-legacy --test
//! smoke`, run by `make bench-smoke`) measures it and leaves `monoio` out: the tests
//! that need one build are gated on the feature.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_keel-bench");

/// Every (case, impl) a full run of the default build measures, with its unit.
#[cfg(not(feature = "monoio-legacy"))]
const EXPECTED: &[(&str, &str, &str)] = &[
    ("spawn", "keel", "ns"),
    ("spawn", "tokio", "ns"),
    ("join", "keel", "ns"),
    ("join", "tokio", "ns"),
    ("yield", "keel", "ns"),
    ("yield", "keel-acct", "ns"),
    ("yield", "tokio", "ns"),
    ("yield", "tokio-wake", "ns"),
    ("switch", "keel", "ns"),
    ("switch", "corosensei", "ns"),
    ("fiber_yield", "keel", "ns"),
    ("fiber_yield", "keel-acct", "ns"),
    ("fiber_yield", "keel-fp-save", "ns"),
    ("fiber_yield", "tokio", "ns"),
    ("fiber_yield", "tokio-wake", "ns"),
    ("fiber_yield", "may", "ns"),
    ("fiber_spawn", "keel", "ns"),
    ("fiber_spawn", "corosensei", "ns"),
    ("fiber_spawn", "corosensei-reused", "ns"),
    ("fiber_spawn", "corosensei-scoped", "ns"),
    ("fiber_spawn", "may", "ns"),
    ("semaphore_handoff", "keel", "ns"),
    ("semaphore_handoff", "keel-shared", "ns"),
    ("semaphore_handoff", "tokio", "ns"),
    ("c_yield", "keel-c", "ns"),
    ("c_yield", "keel-c-inline", "ns"),
    ("c_yield", "keel", "ns"),
    ("c_yield", "keel-outline", "ns"),
    ("switch_mixed", "keel", "ns"),
    ("nop_b1", "keel", "ops/s"),
    ("nop_b1", "io-uring", "ops/s"),
    ("nop_b1", "io-uring-tuned", "ops/s"),
    ("nop_b8", "keel", "ops/s"),
    ("nop_b8", "io-uring", "ops/s"),
    ("nop_b8", "io-uring-tuned", "ops/s"),
    ("nop_b32", "keel", "ops/s"),
    ("nop_b32", "keel-acct", "ops/s"),
    ("nop_b32", "io-uring", "ops/s"),
    ("nop_b32", "io-uring-tuned", "ops/s"),
    ("c_suspend_io", "keel-c", "ns"),
    ("c_suspend_io", "keel", "ns"),
    ("read1_b1", "keel", "ops/s"),
    ("read1_b1", "monoio", "ops/s"),
    ("read1_b1", "io-uring", "ops/s"),
    ("read1_b8", "keel", "ops/s"),
    ("read1_b8", "monoio", "ops/s"),
    ("read1_b8", "io-uring", "ops/s"),
    ("read1_b32", "keel", "ops/s"),
    ("read1_b32", "monoio", "ops/s"),
    ("read1_b32", "io-uring", "ops/s"),
    ("read4k_qd32", "keel", "ops/s"),
    ("read4k_qd32", "io-uring", "ops/s"),
    ("read4k_qd32", "io-uring-fixed", "ops/s"),
    ("read4k_qd32", "monoio", "ops/s"),
    ("remote_attach_p50", "keel", "ns"),
    ("remote_attach_p50", "keel-ring", "ns"),
    ("remote_attach_p50", "tokio", "ns"),
    ("remote_attach_p99", "keel", "ns"),
    ("remote_attach_p99", "keel-ring", "ns"),
    ("remote_attach_p99", "tokio", "ns"),
    ("dispatch_w1", "keel", "ops/s"),
    ("dispatch_w2", "keel", "ops/s"),
    ("echo_msgs", "keel", "ops/s"),
    ("echo_msgs", "keel-future", "ops/s"),
    ("echo_msgs", "monoio", "ops/s"),
    ("echo_msgs", "tokio", "ops/s"),
    ("echo_msgs", "io-uring", "ops/s"),
    ("echo_msgs", "io-uring-mshot", "ops/s"),
    ("echo_msgs", "keel-epoll", "ops/s"),
    ("echo_msgs", "keel-direct", "ops/s"),
    ("echo_p50", "keel", "ns"),
    ("echo_p50", "keel-future", "ns"),
    ("echo_p50", "monoio", "ns"),
    ("echo_p50", "tokio", "ns"),
    ("echo_p50", "io-uring", "ns"),
    ("echo_p50", "io-uring-mshot", "ns"),
    ("echo_p50", "keel-epoll", "ns"),
    ("echo_p50", "keel-direct", "ns"),
    ("echo_p99", "keel", "ns"),
    ("echo_p99", "keel-future", "ns"),
    ("echo_p99", "monoio", "ns"),
    ("echo_p99", "tokio", "ns"),
    ("echo_p99", "io-uring", "ns"),
    ("echo_p99", "io-uring-mshot", "ns"),
    ("echo_p99", "keel-epoll", "ns"),
    ("echo_p99", "keel-direct", "ns"),
    ("echo_cpu", "keel", "ns"),
    ("echo_cpu", "keel-future", "ns"),
    ("echo_cpu", "monoio", "ns"),
    ("echo_cpu", "tokio", "ns"),
    ("echo_cpu", "io-uring", "ns"),
    ("echo_cpu", "io-uring-mshot", "ns"),
    ("echo_cpu", "keel-epoll", "ns"),
    ("echo_cpu", "keel-direct", "ns"),
    ("echo_cpu_c1", "keel", "ns"),
    ("echo_cpu_c1", "monoio", "ns"),
    ("echo_cpu_c1", "tokio", "ns"),
    ("echo_cpu_c1", "io-uring", "ns"),
    ("echo_cpu_c64", "keel", "ns"),
    ("echo_cpu_c64", "monoio", "ns"),
    ("echo_cpu_c64", "tokio", "ns"),
    ("echo_cpu_c64", "io-uring", "ns"),
    ("echo_cpu_c512", "keel", "ns"),
    ("echo_cpu_c512", "monoio", "ns"),
    ("echo_cpu_c512", "tokio", "ns"),
    ("echo_cpu_c512", "io-uring", "ns"),
    ("echo_cpu_c2048", "keel", "ns"),
    ("echo_cpu_c2048", "monoio", "ns"),
    ("echo_cpu_c2048", "tokio", "ns"),
    ("echo_cpu_c2048", "io-uring", "ns"),
    ("echo_cpu_c4096", "keel", "ns"),
    ("echo_cpu_c4096", "monoio", "ns"),
    ("echo_cpu_c4096", "tokio", "ns"),
    ("echo_cpu_c4096", "io-uring", "ns"),
    ("echo_p99_c1", "keel", "ns"),
    ("echo_p99_c1", "monoio", "ns"),
    ("echo_p99_c1", "tokio", "ns"),
    ("echo_p99_c1", "io-uring", "ns"),
    ("echo_p99_c64", "keel", "ns"),
    ("echo_p99_c64", "monoio", "ns"),
    ("echo_p99_c64", "tokio", "ns"),
    ("echo_p99_c64", "io-uring", "ns"),
    ("echo_p99_c512", "keel", "ns"),
    ("echo_p99_c512", "monoio", "ns"),
    ("echo_p99_c512", "tokio", "ns"),
    ("echo_p99_c512", "io-uring", "ns"),
    ("echo_p99_c2048", "keel", "ns"),
    ("echo_p99_c2048", "monoio", "ns"),
    ("echo_p99_c2048", "tokio", "ns"),
    ("echo_p99_c2048", "io-uring", "ns"),
    ("echo_p99_c4096", "keel", "ns"),
    ("echo_p99_c4096", "monoio", "ns"),
    ("echo_p99_c4096", "tokio", "ns"),
    ("echo_p99_c4096", "io-uring", "ns"),
    ("mem_task", "keel", "B"),
    ("mem_task", "keel-fiber", "B"),
    ("mem_task", "tokio", "B"),
    ("mem_task", "monoio", "B"),
    ("mem_conn", "keel", "B"),
    ("mem_conn", "keel-future", "B"),
    ("mem_conn", "monoio", "B"),
    ("mem_conn", "tokio", "B"),
    ("mem_conn", "io-uring", "B"),
    ("mem_conn", "io-uring-mshot", "B"),
    ("yield_n1", "keel", "ns"),
    ("yield_n1", "tokio", "ns"),
    ("yield_n1000", "keel", "ns"),
    ("yield_n1000", "tokio", "ns"),
    ("yield_n100000", "keel", "ns"),
    ("yield_n100000", "tokio", "ns"),
    ("timer_n1", "keel", "ns"),
    ("timer_n1", "tokio", "ns"),
    ("timer_n1000", "keel", "ns"),
    ("timer_n1000", "tokio", "ns"),
    ("timer_n100000", "keel", "ns"),
    ("timer_n100000", "tokio", "ns"),
    ("fiber_yield_n1", "keel", "ns"),
    ("fiber_yield_n1000", "keel", "ns"),
    ("fiber_yield_n10000", "keel", "ns"),
    ("fiber_spawn_n1", "keel", "ns"),
    ("fiber_spawn_n1000", "keel", "ns"),
    ("fiber_spawn_n10000", "keel", "ns"),
    ("nop_q1", "keel", "ops/s"),
    ("nop_q64", "keel", "ops/s"),
    ("nop_q1024", "keel", "ops/s"),
    ("spawn_backend", "keel-ring", "ns"),
    ("spawn_backend", "keel-epoll", "ns"),
    ("yield_backend", "keel-ring", "ns"),
    ("yield_backend", "keel-epoll", "ns"),
    ("timer_backend", "keel-ring", "ns"),
    ("timer_backend", "keel-epoll", "ns"),
    ("echo_pair_backend", "keel-ring", "ns"),
    ("echo_pair_backend", "keel-epoll", "ns"),
];

/// Goal lines a full `--quick` pass prints (one per goal of the registry).
#[cfg(not(feature = "monoio-legacy"))]
const GOALS: usize = 24;
/// Curve lines a full `--quick` pass prints.
#[cfg(not(feature = "monoio-legacy"))]
const CURVES: usize = 15;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("keel-bench runs")
}

/// The `(case, impl, unit)` of every `bench` line on stdout, checking each is
/// `bench <case> <impl> <value> <unit>` with a plain, finite, positive decimal value, and
/// that every other line is a well-formed `goal` or `curve` line (after the `bench` lines).
fn lines(out: &Output) -> Vec<(String, String, String)> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 output");
    let first_other = stdout.lines().position(|l| !l.starts_with("bench ")).unwrap_or(usize::MAX);
    for line in stdout.lines().skip(first_other) {
        assert!(goal_line(line) || curve_line(line), "not a bench, goal or curve line, or out of order: {line:?}");
    }
    stdout
        .lines()
        .take(first_other)
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert!(f.len() == 5 && f[0] == "bench", "malformed line {line:?}");
            let v = f[3];
            assert!(v.chars().all(|c| c.is_ascii_digit() || c == '.'), "not a plain decimal: {line:?}");
            let x: f64 = v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(x.is_finite() && x > 0.0, "value not finite and positive: {line:?}");
            (f[1].to_owned(), f[2].to_owned(), f[4].to_owned())
        })
        .collect()
}

/// `goal <case> <impl> vs <peer>: <ratio>x (goal <op> <x>) met|missed by N%`.
fn goal_line(line: &str) -> bool {
    let f: Vec<&str> = line.split(' ').collect();
    f.len() >= 9
        && f[0] == "goal"
        && f[3] == "vs"
        && f[4].ends_with(':')
        && f[5].strip_suffix('x').is_some_and(|r| r.parse::<f64>().is_ok_and(|r| r.is_finite() && r > 0.0))
        && f[6] == "(goal"
        && (f[7] == "<=" || f[7] == ">=")
        && (f[9..] == ["met"] || (f[9] == "missed" && f[10] == "by" && f[11].ends_with('%')))
}

/// `curve <name> <impl> by <size>: ...: <growth>x, flat within 20%|not flat (+N%)`.
fn curve_line(line: &str) -> bool {
    line.starts_with("curve ")
        && line.contains(" by ")
        && (line.ends_with(", flat within 20%")
            || ((line.contains(", not flat (+") || line.contains(", not flat, cheaper at scale (-"))
                && line.ends_with("%)")))
}

/// Builds keel's echo example beside the bench binary (its profile, its target
/// directory): the `echo_*` cases run it as a child process.
fn build_keel_echo() {
    let dir = std::path::Path::new(BIN).parent().expect("the bench binary's directory");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--profile", profile, "-p", "keel-linux", "--example", "echo"])
        .env("CARGO_TARGET_DIR", dir.parent().expect("the target directory"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building keel's echo example failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(not(feature = "monoio-legacy"))]
#[test]
fn quick_prints_every_case_once() {
    build_keel_echo();
    let out = run(&["--quick"]);
    assert!(out.status.success(), "exit {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    for &(case, imp, unit) in EXPECTED {
        let n = got.iter().filter(|(c, i, _)| c == case && i == imp).count();
        assert_eq!(n, 1, "{case} {imp}: {n} lines in {got:?}");
        assert!(got.iter().any(|(c, i, u)| c == case && i == imp && u == unit), "{case} {imp}: unit is not {unit}");
    }
    assert_eq!(got.len(), EXPECTED.len(), "unexpected lines in {got:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("goal ")).count(), GOALS, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("curve ")).count(), CURVES, "{stdout}");
}

#[test]
fn quick_selects_cases_and_impls() {
    let out = run(&["yield", "--quick", "--only", "keel", "--iters", "100"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out), [("yield".to_owned(), "keel".to_owned(), "ns".to_owned())]);
}

#[test]
fn out_writes_csv_and_charts() {
    let dir = std::env::temp_dir().join(format!("keel-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("a UTF-8 temp dir");
    let out = run(&["spawn", "yield_n1", "yield_n1000", "--quick", "--iters", "2000", "--out", d]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("goal spawn keel vs tokio: ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("curve yield keel by live tasks: ")), "{stdout}");
    let results = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    assert_eq!(results.lines().count(), 1 + 6, "{results}");
    assert!(results.starts_with("case,impl,value,unit\nspawn,keel,"), "{results}");
    let goals = std::fs::read_to_string(dir.join("goals.csv")).expect("goals.csv");
    assert_eq!(goals.lines().count(), 2, "{goals}");
    for svg in ["bars-spawn.svg", "curve-yield.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{svg}");
    }
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

/// The echo cases in the build with the feature: `monoio-legacy` beside the epoll peers.
#[cfg(feature = "monoio-legacy")]
#[test]
fn legacy_build_measures_monoio_legacy() {
    build_keel_echo();
    let out = run(&["echo_msgs", "echo_p99", "--quick", "--only", "keel-epoll,monoio-legacy,tokio"]);
    assert!(out.status.success(), "exit {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    let mut want = Vec::new();
    for (case, unit) in [("echo_msgs", "ops/s"), ("echo_p99", "ns")] {
        for imp in ["tokio", "keel-epoll", "monoio-legacy"] {
            want.push((case.to_owned(), imp.to_owned(), unit.to_owned()));
        }
    }
    assert_eq!(got, want);
}

/// Each build refuses the impl it leaves out, saying which build has it, and a run
/// without `--only` says on stderr what it left out.
#[test]
fn left_out_impl_says_which_build_has_it() {
    let (left, hint) = if cfg!(feature = "monoio-legacy") {
        ("monoio", "without `--features monoio-legacy`")
    } else {
        ("monoio-legacy", "--features monoio-legacy")
    };
    for only in [left.to_owned(), format!("tokio,{left}")] {
        let out = run(&["echo_msgs", "--quick", "--only", &only]);
        assert_eq!(out.status.code(), Some(2), "--only {only}");
        assert!(out.stdout.is_empty(), "--only {only} printed to stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("keel-bench: impl `{left}` is not in this build: ")), "{err}");
        assert!(err.contains(hint), "{err}");
    }
    let out = run(&["spawn", "--quick", "--iters", "1000"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not measured"), "spawn has no left-out impl: {err}");
    let out = run(&["read1_b1", "--quick", "--iters", "1000"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let (imps, err) = (lines(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(imps.iter().any(|(_, i, _)| i == "monoio"), left != "monoio", "{imps:?}");
    assert_eq!(err.contains("keel-bench: not measured: monoio:"), left == "monoio", "{err}");
}

/// `--merge DIR` adds the rows of DIR/results.csv this run does not measure, after this
/// run's own lines, and keeps this run's value for a pair it measured; a bad file fails
/// before anything is measured.
#[test]
fn merge_adds_an_earlier_runs_rows() {
    let dir = std::env::temp_dir().join(format!("keel-bench-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let csv = "case,impl,value,unit\nspawn,keel,1.00,ns\necho_msgs,monoio-legacy,123456.7,ops/s\n";
    std::fs::write(dir.join("results.csv"), csv).expect("written");
    let d = dir.to_str().expect("a UTF-8 temp dir");
    let out_dir = dir.join("out");
    let o = out_dir.to_str().expect("a UTF-8 temp dir");
    let out = run(&["spawn", "--quick", "--iters", "2000", "--only", "keel", "--merge", d, "--out", o]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bench: Vec<&str> = stdout.lines().filter(|l| l.starts_with("bench ")).collect();
    assert_eq!(bench.len(), 2, "{stdout}");
    assert!(bench[0].starts_with("bench spawn keel ") && bench[0] != "bench spawn keel 1.00 ns", "{stdout}");
    assert_eq!(bench[1], "bench echo_msgs monoio-legacy 123456.7 ops/s");
    let results = std::fs::read_to_string(out_dir.join("results.csv")).expect("results.csv");
    assert_eq!(results.lines().count(), 3, "{results}");
    assert!(results.ends_with("\necho_msgs,monoio-legacy,123456.7,ops/s\n"), "{results}");
    std::fs::write(dir.join("results.csv"), "case,impl,value,unit\nspawn,keel,-1,ns\n").expect("written");
    let out = run(&["spawn", "--quick", "--only", "keel", "--merge", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "measured before failing: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("results.csv line 2: not a finite, positive value"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        &["--bogus"][..],
        &["nosuchcase"],
        &["--only", "nosuchimpl"],
        &["--iters", "zero"],
        &["--iters"],
        &["--out"],
        &["--merge"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("keel-bench: ") && !err.contains("panicked"), "{args:?}: {err}");
    }
}
