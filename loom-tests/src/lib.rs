//! loom models of keel's cross-thread protocols: the inbox (`loom_inbox`), the wake
//! protocol (`loom_wake`), park/unpark (`loom_park`), the work dispatcher
//! (`loom_dispatcher`), the cross-thread wait primitives' hand-over (`loom_wait`) and
//! joins from other threads (`loom_join`). Each runs keel-core's production source,
//! whose `sync` facade switches to loom's atomics under `--cfg keel_loom`, and each has a
//! *weakened twin*: the same model over one ordering or fence weakened through
//! `keel_core::loom_api::Weaken` (or, for the wait primitives' lock,
//! `keel_core::wait::loom_weaken_lock`; both exist only under the cfg), which must fail
//! with the bug it names.
//!
//! Run them with `make loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom -C debug-assertions=on" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p keel-loom-tests
//! ```
//!
//! Without the cfg every model compiles to nothing and each test file keeps one test
//! that says so.
//!
//! This library holds what the models share: the preemption bound, `'static` storage
//! freed at the end of each execution, and a driver whose `park` is loom's.

#[cfg(keel_loom)]
mod model;

#[cfg(keel_loom)]
pub use model::*;

/// What the stand-in tests print when the models are compiled out.
pub const SKIPPED: &str = "SKIPPED: loom models run with `make loom` (--cfg keel_loom); this build has none";
