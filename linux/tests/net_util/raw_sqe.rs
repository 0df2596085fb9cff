//! A raw SQE's every field, for tests that set what the `io-uring` crate's builders leave
//! at 0 (the kernel's prep checks, liburing's raw-SQE cases).

use io_uring::squeue;

/// `struct io_uring_sqe` field by field (include/uapi/linux/io_uring.h).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    pub op_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    pub file_index: u32,
    pub addr3: u64,
    pub pad: u64,
}

const _: () = assert!(size_of::<Sqe>() == size_of::<squeue::Entry>());

/// `e`'s fields.
pub fn raw(e: squeue::Entry) -> Sqe {
    // SAFETY: `Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`, which
    // `Sqe` mirrors field by field (every bit pattern valid for both).
    unsafe { core::mem::transmute(e) }
}

/// The entry with fields `s`.
pub fn entry(s: Sqe) -> squeue::Entry {
    // SAFETY: as in `raw`.
    unsafe { core::mem::transmute(s) }
}

/// `e` with `f` applied to its fields.
pub fn edit(e: squeue::Entry, f: impl FnOnce(&mut Sqe)) -> squeue::Entry {
    let mut s = raw(e);
    f(&mut s);
    entry(s)
}
