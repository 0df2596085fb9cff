# `make test` runs every test in the workspace: unit, simulated-driver, real-clock,
# doctests (nextest does not run them), lints, the API docs and package lists of the two
# published crates, the tour, the examples' command lines, and a smoke pass of the bench.
CARGO ?= cargo

.PHONY: denied test lint unit doc rustdoc package tour example-args bench-smoke bench bench-report alloc-free nostd loom c-api gdb install fuzz-sim soak test-asan test-valgrind test-tsan fuzz fuzz-planted

test: lint unit doc rustdoc package tour example-args bench-smoke alloc-free nostd loom c-api gdb denied

lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path nostd-consumer/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p keel-bench --all-targets --features monoio-legacy -- -D warnings
	CARGO_TARGET_DIR=nostd-consumer/target $(CARGO) clippy --manifest-path nostd-consumer/Cargo.toml --all-targets -- -D warnings
	# rustix's libc backend (its PollFlags bits are i16, not u16; callgrind-per-op.sh builds so)
	CARGO_TARGET_DIR=target/libc-backend RUSTFLAGS="--cfg=rustix_use_libc" $(CARGO) check -q -p keel-linux -p keel-ffi

unit:
	$(CARGO) nextest run --workspace --no-fail-fast

doc:
	$(CARGO) test --workspace --doc

# The API docs of the published crates build without a rustdoc warning (a broken or
# ambiguous intra-doc link, an unclosed HTML tag, a bad code block), with the default
# features (what docs.rs shows) and with every feature.
rustdoc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p keel-core -p keel-linux
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p keel-core -p keel-linux --all-features

# What `cargo publish` would upload for keel-core and keel-linux, listed without building:
# each packages, with a versioned keel-core dependency, the README and both licences.
package:
	CARGO="$(CARGO)" .ci/package-list.sh

tour:
	$(CARGO) run --release --example tour

# echo and tour on good and bad command lines: --help exits 0; bad input exits 2 with one
# line on stderr and no panic; echo serves a message on loopback and stops on SIGINT.
example-args:
	CARGO="$(CARGO)" .ci/example-args.sh

# Every hot path, 1,000,000 cycles each with zero allocations: release build, one test
# per process and one at a time; prints each window's counts and a summary line.
alloc-free:
	CARGO="$(CARGO)" alloc-free-tests/run.sh

# The loom models (loom-tests/): keel-core's own source under --cfg keel_loom, release for
# speed with debug assertions on, in a target dir of their own so the main build is kept.
loom:
	RUSTFLAGS="--cfg keel_loom -C debug-assertions=on" CARGO_TARGET_DIR=target/loom $(CARGO) test --release -p keel-loom-tests

# keel-core as the dependency of a #![no_std] #![no_main] binary: it builds, links,
# runs its checks, and the builds that would link alloc or std fail.
nostd:
	CARGO="$(CARGO)" nostd-consumer/check.sh

# keel's C API (linker/): the header is current and compiles as C11 and C++17, libkeel.so
# exports only keel_*, and the C programs in linker/tests/c run against libkeel.a (one
# linked -static). Needs gcc and g++ (.ci/run installs them).
c-api:
	CARGO="$(CARGO)" linker/tests/run.sh

# keel-linux's file, socket, timer, cancellation, misuse, rules and cross-thread suites
# again with io_uring denied by a seccomp filter, once with EPERM and once with ENOSYS: the
# deny_io_uring example is nextest's target runner, and every `RingDriver::new` with the
# default `Auto` backend falls back to the epoll engine there (the same test sources, the
# other backend). Built with the `log` feature so backend_choice checks the fallback's log
# line. A test of what only io_uring has (direct descriptors, multishot receives and reads,
# provided and registered buffers, zero-copy sends, io-wq settings, the kernel ring's
# fdinfo; the README's backend table) says SKIPPED and why there (`net_util::ring_only`);
# the suites made only of such tests (fixed_bufs, net_direct, read_multishot*, ring_iowq,
# iopoll*, transfer, transfer_receivers, transfer_threads, suspension_pairs_ring) are left
# out.
DENIED_SUITES = binary(backend_choice) | binary(ring_fs) | binary(future_parity_fs) | binary(fs_meta) \
	| binary(fs_meta_at) | binary(net_echo) | binary(net_lifecycle) | binary(net_msg) | binary(future_parity_net) \
	| binary(ready) | binary(ready_stream) | binary(deadline) | binary(cancel_races) | binary(cancel_soak) \
	| binary(cross_thread) | binary(ring_unpark) | binary(executor_drop) | binary(signal_events) | binary(rw_flags) \
	| binary(sleep_driver) | binary(lifetimes) | binary(future_parity_drops) | binary(rules) | binary(rules_alloc) \
	| binary(rules_not_send) | binary(misuse_table) | binary(transfer_misuse) | binary(pair_in_open_chain) \
	| binary(link_chain_dispose) | binary(ring_driver) | binary(net_multishot) | binary(msg_waitall) \
	| binary(timespec_copy) | binary(hostile_peers) | binary(flags) | binary(mixed_switchers) \
	| binary(remote_fibers_ring) | binary(stale_handle) | binary(accept_wake) | binary(closed_behind) \
	| binary(net_skip_pair) | binary(skip_pair_edges) | binary(raw_sqe_skip) | binary(skip_pair_audit) | binary(forgotten_futures) \
	| binary(/^liburing_/)
denied:
	$(CARGO) build -q -p keel-linux --example deny_io_uring
	for errno in EPERM ENOSYS; do \
		CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(CURDIR)/target/debug/examples/deny_io_uring $$errno" \
			$(CARGO) nextest run -p keel-linux --features log --no-fail-fast -E '$(DENIED_SUITES)' || exit 1; \
	done

# keel's GDB script (core/gdb/keel.py) end to end, dev and release builds: gdb -batch on
# linux/examples/gdb_demo stopped inside a running fiber checks auto-loading, `keel
# tasks`, `keel bt`, `keel stats`, `bt` through the fiber into the executor's run, and
# that the process then finishes normally. Needs gdb with Python (.ci/run installs it).
gdb:
	CARGO="$(CARGO)" core/gdb/test.sh

# libkeel.a, libkeel.so, keel.h, keel.hpp and lib/pkgconfig/keel.pc under PREFIX
# (KEEL_PROFILE=debug installs the debug build).
PREFIX ?= /usr/local
KEEL_PROFILE ?= release
install:
	CARGO="$(CARGO)" linker/install.sh "$(PREFIX)" "$(KEEL_PROFILE)"

# The echo case runs keel's echo example as its server: build it first.
# keel-bench's default build leaves monoio's legacy (epoll) driver out, since it weakens
# monoio's io_uring peers; the build with the feature monoio-legacy measures the
# `monoio-legacy` echo peer beside the epoll peers (bench/src/features.rs): each target
# runs both. The smoke pass runs the feature build's smoke tests in a debug build.
LEGACY_ECHO = echo_msgs echo_p50 echo_p99 echo_cpu --only keel-epoll,monoio-legacy,tokio
bench-smoke:
	$(CARGO) build --release -p keel-linux --example echo
	$(CARGO) run --release -p keel-bench -- --quick
	$(CARGO) nextest run -p keel-bench --features monoio-legacy --test smoke

bench:
	$(CARGO) build --release -p keel-linux --example echo
	$(CARGO) run --release -p keel-bench
	$(CARGO) run --release -p keel-bench --features monoio-legacy -- $(LEGACY_ECHO)

# The full run with its CSV files and SVG charts in bench/report/ (the README's performance
# section shows them): the feature build's echo run first (its lines in
# target/bench-legacy/run.txt), then the default build's full run, which merges the
# first's rows it does not measure (monoio-legacy's) into its lines and files; its lines
# are printed and, when it succeeds, kept as bench/report/run.txt.
bench-report:
	$(CARGO) build --release -p keel-linux --example echo
	mkdir -p target/bench-legacy
	$(CARGO) run --release -p keel-bench --features monoio-legacy -- $(LEGACY_ECHO) --out target/bench-legacy > target/bench-legacy/run.txt
	$(CARGO) run --release -p keel-bench -- --out bench/report --merge target/bench-legacy > target/bench-report-run.txt; \
	  status=$$?; cat target/bench-report-run.txt; \
	  if [ $$status -eq 0 ]; then cp target/bench-report-run.txt bench/report/run.txt; fi; exit $$status

# Random task programs on the simulated driver (core/tests/random_programs.rs): 1,000,000
# steps in a release build, every invariant checked after each; prints steps/s and what
# the programs covered. KEEL_SEED=<seed> fixes the first program, KEEL_FUZZ_STEPS the count.
fuzz-sim:
	KEEL_FUZZ_STEPS=$${KEEL_FUZZ_STEPS:-1000000} $(CARGO) test --release -p keel-core --test random_programs -- --ignored --nocapture fuzz_sim

# The long soak (linux/tests/soak_long.rs): echo traffic, file i/o, timers, cross-thread
# attaches and cancels at once for KEEL_SOAK_LONG_SECS seconds (default 60) in a release
# build, a line of counts every second, then its checks (exact echoes and read-backs, no
# early timer, expected errors only, descriptors at baseline, flat resident memory).
soak:
	KEEL_SOAK_LONG_SECS=$${KEEL_SOAK_LONG_SECS:-60} $(CARGO) test --release -p keel-linux --test soak_long -- --ignored --nocapture soak_long

# Not part of `make test`. keel-core's and keel-linux's tests under AddressSanitizer
# (nightly; fails saying so when nightly is missing), built in target/asan;
# .ci/test-asan.sh says which options and why. ARGS go to nextest.
test-asan:
	CARGO="$(CARGO)" .ci/test-asan.sh $(ARGS)

# Not part of `make test`. The release test binaries of keel-core and keel-linux under
# valgrind's memcheck (--error-exitcode=1, fiber stacks registered), built in
# target/valgrind; see .ci/test-valgrind.sh.
test-valgrind:
	CARGO="$(CARGO)" .ci/test-valgrind.sh $(ARGS)

# Not part of `make test`. The cross-thread tests of keel-core and keel-linux under
# ThreadSanitizer (nightly; fails saying so when nightly is missing), built in
# target/tsan; .ci/test-tsan.sh says what TSan can and cannot see here. ARGS go to nextest.
test-tsan:
	CARGO="$(CARGO)" .ci/test-tsan.sh $(ARGS)

# Not part of `make test` (the proptest twins of these harnesses are). Every cargo-fuzz
# target in fuzz/ for FUZZ_SECS seconds (default 60) on the kept corpus (nightly);
# prints executions and libFuzzer's coverage per target. FUZZ_TARGETS picks some.
FUZZ_SECS ?= 60
fuzz:
	CARGO="$(CARGO)" FUZZ_SECS=$(FUZZ_SECS) .ci/fuzz.sh $(FUZZ_TARGETS)

# Not part of `make test`. Each fuzz target built with the bug planted for it (`--cfg
# keel_planted="<target>"`) must find it from an empty corpus within PLANTED_SECS seconds
# (default 60): proof that the target reaches the structure it drives (nightly).
PLANTED_SECS ?= 60
fuzz-planted:
	CARGO="$(CARGO)" PLANTED_SECS=$(PLANTED_SECS) .ci/fuzz-planted.sh $(FUZZ_TARGETS)
