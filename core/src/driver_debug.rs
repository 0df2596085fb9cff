//! What a driver tells a debugger about itself: [`DriverDebug`], a `#[repr(C)]` record
//! the executor copies once, when it is first used pinned (sched rule 1), into its
//! scheduler, where the GDB script (`gdb/keel.py`) finds it through the debugger
//! descriptor (`exec/debug.rs`). Nothing on a hot path writes it: the live figures a
//! debugger shows are read through the pointer and the descriptor it holds (a ring's
//! fill comes from the kernel's own account, `/proc/PID/fdinfo/FD`).
//!
//! Its layout is part of the descriptor's `LAYOUT_VERSION`.

/// A driver's self-description for debuggers (see the module doc).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DriverDebug {
    /// The driver's name, NUL-padded ASCII (`"io_uring"`, `"sim"`); all zero: says
    /// nothing.
    pub kind: [u8; 16],
    /// A descriptor whose `/proc/PID/fdinfo` entry the kernel fills with the driver's
    /// queue state (an io_uring instance's head and tail words), or -1.
    pub fd: i32,
    /// Submission queue entries (0: no such queue).
    pub sq_entries: u32,
    /// Completion queue entries (0: no such queue).
    pub cq_entries: u32,
    /// How many operations may be in flight at once (0: unbounded or unknown).
    pub op_slots: u32,
    /// The address of a count the driver keeps of operations holding one of its
    /// `op_slots` (a `usize` at a fixed place while the executor lives), or null.
    pub in_flight: *const usize,
}

impl DriverDebug {
    /// A driver that says nothing about itself.
    pub const NONE: DriverDebug =
        DriverDebug { kind: [0; 16], fd: -1, sq_entries: 0, cq_entries: 0, op_slots: 0, in_flight: core::ptr::null() };

    /// A record naming `kind` (at most 16 bytes; longer names are cut), with nothing
    /// else filled in.
    pub const fn named(kind: &str) -> DriverDebug {
        let mut out = Self::NONE;
        let bytes = kind.as_bytes();
        let mut i = 0;
        while i < bytes.len() && i < out.kind.len() {
            out.kind[i] = bytes[i];
            i += 1;
        }
        out
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_nul_padded_and_cut_at_sixteen_bytes() {
        assert_eq!(&DriverDebug::named("sim").kind[..4], b"sim\0");
        assert_eq!(&DriverDebug::named("a-driver-name-too-long").kind, b"a-driver-name-to");
        assert_eq!(DriverDebug::named("x").fd, -1);
    }
}
