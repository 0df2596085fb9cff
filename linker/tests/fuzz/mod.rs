//! Fuzz harnesses over keel's C API (see `c_args.rs`): any byte string is a valid
//! program, `Err` names the failed check. The cargo-fuzz target `c_args` in `fuzz/`
//! includes this directory by path; the proptest twin (`linker/tests/fuzz_c_args.rs`)
//! runs it on stable in `make test`.
#![allow(dead_code)]

#[path = "../../../core/tests/fuzz/bytes.rs"]
pub mod bytes;
pub mod c_args;
