//! The transfer operations as plain descriptions, and the one function that encodes each
//! as an SQE for the ring driver (transfer rules 1, 2 and 4).

use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

/// `IORING_FILE_INDEX_ALLOC`: "any free index" (include/uapi/linux/io_uring.h).
const FILE_INDEX_ALLOC: i32 = -1;
/// `IORING_FIXED_FD_NO_CLOEXEC`.
const FIXED_FD_NO_CLOEXEC: u32 = 1;
/// Bit 61 under the driver's internal tag marks a descriptor arriving from another ring
/// (transfer rule 5); the low 32 bits carry the key. No other `user_data` has it: slot
/// and direct ones keep bit 63 clear, the driver's other tags are small integers.
pub(crate) const ARRIVAL: u64 = crate::ring::slots::INTERNAL | 1 << 61;

/// One transfer operation, independent of the driver that performs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TransferOp {
    /// Put descriptor `fd` at a free index of this ring's table; the index is written to
    /// `*out` (which must stay valid until the completion).
    Register {
        /// The descriptor (still the caller's afterwards).
        fd: RawFd,
        /// Where the kernel writes the index: on entry it holds `fd`.
        out: *mut i32,
    },
    /// A process descriptor for the file at `index`.
    Install {
        /// The index.
        index: u32,
        /// Set `O_CLOEXEC` on it.
        cloexec: bool,
    },
    /// Send the file at `index` to the ring `ring_fd`, at a free index there, announced by
    /// `key`.
    SendFd {
        /// The target ring's descriptor.
        ring_fd: RawFd,
        /// The sender's index.
        index: u32,
        /// The key the target's receiver waits for.
        key: u32,
    },
}

impl TransferOp {
    /// The SQE that performs it on an io_uring.
    pub fn sqe(self) -> squeue::Entry {
        match self {
            TransferOp::Register { out, .. } => {
                opcode::FilesUpdate::new(out as *const RawFd, 1).offset(FILE_INDEX_ALLOC).build()
            }
            TransferOp::Install { index, cloexec } => {
                opcode::FixedFdInstall::new(types::Fixed(index), if cloexec { 0 } else { FIXED_FD_NO_CLOEXEC }).build()
            }
            TransferOp::SendFd { ring_fd, index, key } => opcode::MsgRingSendFd::new(
                types::Fd(ring_fd),
                types::Fixed(index),
                types::DestinationSlot::auto_target(),
                ARRIVAL | key as u64,
            )
            .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_rule_5_arrival_user_data_is_internal_never_direct_and_keeps_the_key() {
        let ud = ARRIVAL | 0xdead_beef;
        assert_ne!(ud & crate::ring::slots::INTERNAL, 0, "internal: no slot can have it (slot rule 2)");
        assert_eq!(ud & (1 << 62), 0, "not a direct operation's tag");
        assert!(crate::transfer::is_arrival(ud));
        for tag in 1..=16u64 {
            assert!(!crate::transfer::is_arrival(crate::ring::slots::INTERNAL | tag), "the driver's own tag {tag}");
        }
        assert_eq!(ud as u32, 0xdead_beef);
    }
}
