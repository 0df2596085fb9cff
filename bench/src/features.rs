//! Which impls this build of keel-bench measures: the two builds of monoio.
//!
//! monoio's `legacy` feature (its epoll driver, through mio) is what the `monoio-legacy`
//! echo peer runs on; with it on, monoio's io_uring driver (`monoio::IoUringDriver`)
//! dispatches every operation through a two-variant driver enum and its ops ask which
//! driver they are on: every `monoio` impl (echo, read1, read4k, mem_task, mem_conn, the
//! echo curve) would run in a shape weaker than its best, which flatters keel. So:
//!
//! - the default build leaves monoio's `legacy` off and the `monoio-legacy` impl out;
//! - the build with keel-bench's feature `monoio-legacy`
//!   (`cargo run --release -p keel-bench --features monoio-legacy -- ...`) has it, and
//!   leaves the `monoio` impls out, so that none of its figures is the weaker shape's.
//!
//! `make bench-report` runs the echo cases in the second build first
//! (`--only keel-epoll,monoio-legacy,tokio`), then the full run in the default build with
//! `--merge` of the first's `results.csv` ([`crate::report::merge`]): one report with every
//! peer. Naming a left-out impl in `--only` is a usage error that says which build has it;
//! a run without `--only` leaves it out and says so on stderr.

/// The impls this build leaves out, each with the reason and how to measure it.
pub const LEFT_OUT: &[(&str, &str)] = if cfg!(feature = "monoio-legacy") {
    &[(
        "monoio",
        "this build has keel-bench's feature `monoio-legacy`, which turns on monoio's `legacy` driver and so weakens monoio's io_uring driver: measure `monoio` in the default build (without `--features monoio-legacy`)",
    )]
} else {
    &[(
        "monoio-legacy",
        "monoio's legacy (epoll) driver is built only with keel-bench's feature `monoio-legacy`, since it weakens monoio's io_uring peers: run `cargo run --release -p keel-bench --features monoio-legacy -- echo_msgs --only monoio-legacy,...` (`make bench-report` runs it and merges)",
    )]
};

/// Why this build leaves `imp` out, or `None` if it measures it.
pub fn left_out(imp: &str) -> Option<&'static str> {
    LEFT_OUT.iter().find(|(i, _)| *i == imp).map(|&(_, why)| why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_monoio_shape_per_build() {
        let legacy = cfg!(feature = "monoio-legacy");
        assert_eq!(left_out("monoio").is_some(), legacy);
        assert_eq!(left_out("monoio-legacy").is_some(), !legacy);
        assert!(left_out("keel").is_none() && left_out("tokio").is_none());
    }
}
