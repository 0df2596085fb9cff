//! Fuzz harnesses over keel-core's public API, each `run(&[u8]) -> Result<Outcome,
//! String>`: any byte string is a valid program, `Err` names the failed check. The
//! cargo-fuzz targets in `fuzz/` include this directory by path; the proptest twins
//! (`core/tests/fuzz_*.rs`) run the same harnesses on stable in `make test`.
#![allow(dead_code)]

pub mod bytes;
pub mod sim_ops;
pub mod sim_program;
pub mod slot_lifecycle;
pub mod timer_heap;
