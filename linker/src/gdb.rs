//! keel's GDB script (`core/gdb/keel.py`) in the `.debug_gdb_scripts` section of every
//! program that links libkeel, so gdb loads it by itself (from its auto-load safe path,
//! `add-auto-load-safe-path`), as it does for Rust binaries through keel-core's
//! `#![debugger_visualizer]`. rustc emits that attribute's section only into Rust
//! executables, not into a staticlib or cdylib, hence this static.
//!
//! An entry of the section is one byte of kind (4: Python text), the script's name up to
//! a newline, the script, and a NUL (gdb's "dotdebug_gdb_scripts section" format).
//! `keel_executor_init` takes the static's address, so the archive member holding it is
//! linked into every C program that makes an executor, and `--gc-sections` keeps it.

const SCRIPT: &[u8] = include_bytes!("../../core/gdb/keel.py");
const NAME: &[u8] = b"keel-gdb\n";
const LEN: usize = 1 + NAME.len() + SCRIPT.len() + 1;

const fn entry() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[0] = 4;
    let mut i = 0;
    while i < NAME.len() {
        out[1 + i] = NAME[i];
        i += 1;
    }
    let mut j = 0;
    while j < SCRIPT.len() {
        out[1 + NAME.len() + j] = SCRIPT[j];
        j += 1;
    }
    out
}

// The script never holds a NUL (that would end the entry early).
const _: () = {
    let mut i = 0;
    while i < SCRIPT.len() {
        assert!(SCRIPT[i] != 0);
        i += 1;
    }
};

#[used]
#[unsafe(link_section = ".debug_gdb_scripts")]
static KEEL_GDB_SCRIPT: [u8; LEN] = entry();

/// Keeps the section in the program (see the module doc).
#[inline(always)]
pub(crate) fn keep() {
    core::hint::black_box(&KEEL_GDB_SCRIPT);
}
