//! The class behind liburing's `bind-listen.c` (bad bind and listen), `accept.c`
//! (`test_accept_multishot_wrong_arg`), `nop-flags.c`, `timeout.c` and others: an SQE with
//! a field its opcode does not use set is refused by the kernel's prep with `EINVAL`
//! before anything is performed. A raw SQE (`RingOp::from_entry`) must get the same
//! result on the epoll engine as on io_uring, whichever field is set: this test runs every
//! opcode the engine performs, plainly and then with each SQE field set in turn, on both
//! backends in one process, and compares the results. Operands are harmless (descriptor
//! -1, relative paths under descriptor -1, a 1 ns timeout), so nothing performed touches
//! the filesystem or another descriptor. Where the engine declines an SQE by design
//! (start rule 4 in `epoll/engine/start.rs`: direct descriptors, buffer selection,
//! multishot forms it lacks) its `EOPNOTSUPP` is accepted. Skipped where io_uring is
//! denied (there is nothing to compare with).

#[path = "net_util/mod.rs"]
mod util;

use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber};
use keel_linux::fs::FiberFs;
use keel_linux::{BackendChoice, RingConfig, RingDriver, RingOp};
use std::cell::RefCell;
use std::rc::Rc;
use util::raw_sqe::{Sqe, entry, raw};

/// The memory the SQEs name, alive for the whole test (leaked).
struct Mem {
    buf: [u8; 64],
    iov: libc::iovec,
    msg: libc::msghdr,
    sin: libc::sockaddr_in,
    ts: types::Timespec,
    how: types::OpenHow,
    statx: [u8; 512],
}

fn mem() -> &'static mut Mem {
    // SAFETY: all-zero is a valid value of each field (plain C structs and byte arrays).
    let m: &'static mut Mem = Box::leak(Box::new(unsafe { core::mem::zeroed::<Mem>() }));
    m.iov = libc::iovec { iov_base: m.buf.as_mut_ptr().cast(), iov_len: 8 };
    m.msg.msg_iov = &raw mut m.iov;
    m.msg.msg_iovlen = 1;
    m.sin.sin_family = libc::AF_INET as u16;
    m.sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    m.ts = types::Timespec::new().nsec(1);
    m
}

const NO_FD: types::Fd = types::Fd(-1);

/// Every opcode the epoll engine performs, with harmless operands.
fn ops(m: &'static mut Mem) -> Vec<(&'static str, Sqe)> {
    let b = m.buf.as_mut_ptr();
    let x = c"keel-prep-x".as_ptr();
    let y = c"keel-prep-y".as_ptr();
    let sin = (&raw const m.sin).cast::<libc::sockaddr>();
    let sin_len = size_of::<libc::sockaddr_in>() as u32;
    let v = vec![
        ("nop", opcode::Nop::new().build()),
        ("read", opcode::Read::new(NO_FD, b, 8).build()),
        ("write", opcode::Write::new(NO_FD, b, 8).build()),
        ("readv", opcode::Readv::new(NO_FD, &raw const m.iov, 1).build()),
        ("writev", opcode::Writev::new(NO_FD, &raw const m.iov, 1).build()),
        ("fsync", opcode::Fsync::new(NO_FD).build()),
        ("sync_file_range", opcode::SyncFileRange::new(NO_FD, 8).build()),
        ("fallocate", opcode::Fallocate::new(NO_FD, 8).build()),
        ("openat", opcode::OpenAt::new(NO_FD, x).build()),
        ("openat2", opcode::OpenAt2::new(NO_FD, x, &raw const m.how).build()),
        ("close", opcode::Close::new(NO_FD).build()),
        ("statx", opcode::Statx::new(NO_FD, x, m.statx.as_mut_ptr().cast()).mask(libc::STATX_BASIC_STATS).build()),
        ("unlinkat", opcode::UnlinkAt::new(NO_FD, x).build()),
        ("renameat", opcode::RenameAt::new(NO_FD, x, NO_FD, y).build()),
        ("mkdirat", opcode::MkDirAt::new(NO_FD, x).build()),
        ("socket", opcode::Socket::new(libc::AF_UNIX, libc::SOCK_STREAM, 0).build()),
        ("bind", opcode::Bind::new(NO_FD, sin, sin_len).build()),
        ("listen", opcode::Listen::new(NO_FD, 1).build()),
        ("connect", opcode::Connect::new(NO_FD, sin, sin_len).build()),
        ("accept", opcode::Accept::new(NO_FD, core::ptr::null_mut(), core::ptr::null_mut()).build()),
        ("send", opcode::Send::new(NO_FD, b, 8).build()),
        ("recv", opcode::Recv::new(NO_FD, b, 8).build()),
        ("sendmsg", opcode::SendMsg::new(NO_FD, &raw const m.msg).build()),
        ("recvmsg", opcode::RecvMsg::new(NO_FD, &raw mut m.msg).build()),
        ("shutdown", opcode::Shutdown::new(NO_FD, libc::SHUT_RDWR).build()),
        ("poll_add", opcode::PollAdd::new(NO_FD, libc::POLLIN as u32).build()),
        ("timeout", opcode::Timeout::new(&raw const m.ts).build()),
        ("async_cancel", opcode::AsyncCancel::new(0x5eed).build()),
        ("link_timeout", opcode::LinkTimeout::new(&raw const m.ts).build()),
    ];
    v.into_iter().map(|(n, e)| (n, raw(e))).collect()
}

/// The fields set in turn (none first), each to 1; then I/O priorities: a best-effort
/// level, the idle class, a class past idle, and a hint without a class.
const FIELDS: [&str; 29] = [
    "none",
    "ioprio",
    "off",
    "addr",
    "len",
    "op_flags",
    "buf_index",
    "file_index",
    "addr3",
    "ioprio_be_3",
    "ioprio_idle",
    "ioprio_class_4",
    "ioprio_hint",
    "ioprio_bit_0",
    "ioprio_bit_1",
    "ioprio_bit_2",
    "ioprio_bit_3",
    "ioprio_bit_4",
    "ioprio_bit_5",
    "ioprio_bit_6",
    "ioprio_bit_7",
    "ioprio_bit_8",
    "ioprio_bit_9",
    "ioprio_bit_10",
    "ioprio_bit_11",
    "ioprio_bit_12",
    "ioprio_bit_13",
    "ioprio_bit_14",
    "ioprio_bit_15",
];

fn with_field(mut s: Sqe, field: &str) -> Sqe {
    match field {
        "none" => {}
        "ioprio" => s.ioprio = 1,
        "off" => s.off = 1,
        "addr" => s.addr = 1,
        "len" => s.len = 1,
        "op_flags" => s.op_flags = 1,
        "buf_index" => s.buf_index = 1,
        "file_index" => s.file_index = 1,
        "addr3" => s.addr3 = 1,
        "ioprio_be_3" => s.ioprio = (2 << 13) | 3,
        "ioprio_idle" => s.ioprio = 3 << 13,
        "ioprio_class_4" => s.ioprio = 4 << 13,
        "ioprio_hint" => s.ioprio = 1 << 3,
        bit if bit.starts_with("ioprio_bit_") => s.ioprio = 1 << bit["ioprio_bit_".len()..].parse::<u16>().unwrap(),
        _ => unreachable!(),
    }
    s
}

type Results = Vec<(&'static str, &'static str, Result<u32, Errno>)>;

/// Every op with every field on `backend`; a created descriptor is closed and reported
/// as `Ok(u32::MAX)` (its number differs between runs).
fn run_all_cases(backend: BackendChoice) -> Option<Results> {
    let d = match RingDriver::new(RingConfig { backend, ..RingConfig::default() }) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED: no {backend:?} driver here ({e}): nothing to compare with");
            return None;
        }
    };
    let owned = util::executor_with(d);
    let ex = owned.as_ref();
    let out: Rc<RefCell<Results>> = Rc::default();
    let at: Rc<RefCell<(&str, &str)>> = Rc::default();
    let (o, a) = (out.clone(), at.clone());
    ex.attach_fiber(util::task(), util::fattrs(), move |f: &mut Fiber| {
        for (name, s) in ops(mem()) {
            for field in FIELDS {
                if read_in_user_space(name, field) {
                    continue;
                }
                *a.borrow_mut() = (name, field);
                // SAFETY: every pointer the SQE names is in the leaked `Mem` or a static
                // string, or is a field set to 1 that only a system call reads (and
                // refuses with `EFAULT`): `read_in_user_space` skips the others.
                let r = f.run_op(unsafe { RingOp::from_entry(entry(with_field(s, field))) });
                let r = match r {
                    Ok(n) if name == "socket" || (name.starts_with("open") && n > 0) => {
                        // SAFETY: a descriptor this operation just created, closed once.
                        unsafe { libc::close(n as i32) };
                        Ok(u32::MAX)
                    }
                    r => r,
                };
                o.borrow_mut().push((name, field, r));
            }
        }
        0u64
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 {
        let _ = ex.run(1024, Some(core::time::Duration::from_millis(20)));
        if t0.elapsed() > core::time::Duration::from_secs(30) {
            let stuck = *at.borrow();
            // Dropping the executor would wait on the operation; fail instead.
            std::mem::forget(owned);
            panic!("{backend:?}: the SQE {stuck:?} never completed");
        }
    }
    Some(out.take())
}

/// Pointer fields the epoll engine reads itself (a msghdr, a timespec) rather than
/// passing them to a system call: 1 there is an invalid pointer, which
/// `RingOp::from_entry`'s contract excludes (io_uring's `EFAULT` cannot be had from a
/// read in user space), so they are not set.
fn read_in_user_space(name: &str, field: &str) -> bool {
    matches!((name, field), ("sendmsg" | "recvmsg" | "timeout" | "link_timeout", "addr"))
}

/// An invalid pointer (a field set to 1 that the opcode reads as an address) is outside
/// `RingOp::from_entry`'s contract too: io_uring copies some at prep (`EFAULT` before it
/// looks at the descriptor), the engine hands them to the system call, which looks at
/// the descriptor -1 first (`EBADF`). Either refusal is accepted.
fn bad_pointer(ring: &Result<u32, Errno>, engine: &Result<u32, Errno>) -> bool {
    *ring == Err(Errno(libc::EFAULT)) && matches!(engine, Err(Errno(libc::EFAULT | libc::EBADF)))
}

/// The engine declines these by design (start rule 4): `EOPNOTSUPP` where io_uring
/// performs them.
fn declined_by_design(name: &str, field: &str) -> bool {
    matches!(
        (name, field),
        // Direct descriptors (file_index): accept, open, socket, close into or of the table.
        ("accept" | "openat" | "openat2" | "socket" | "close", "file_index")
            | ("poll_add", "len")
            // A counting timeout (off: the count).
            | ("timeout", "off")
            // Fixed buffers, bundles and vectorized sends in a send's or receive's op flags.
            | ("send" | "recv" | "sendmsg" | "recvmsg", "ioprio_bit_2" | "ioprio_bit_4" | "ioprio_bit_5")
    )
}

#[test]
fn every_opcode_with_each_unused_field_set_gives_the_kernels_result_on_the_engine() {
    if util::on_epoll()
        && RingDriver::new(RingConfig { backend: BackendChoice::Ring, ..RingConfig::default() }).is_err()
    {
        println!("SKIPPED: io_uring is denied here: nothing to compare the engine with");
        return;
    }
    let Some(ring) = run_all_cases(BackendChoice::Ring) else { return };
    let engine = run_all_cases(BackendChoice::Epoll).expect("the epoll engine is always there");
    assert_eq!(ring.len(), engine.len());
    let mut differ = Vec::new();
    for ((name, field, k), (_, _, e)) in ring.iter().zip(&engine) {
        if k != e && !(declined_by_design(name, field) && *e == Err(Errno(libc::EOPNOTSUPP))) && !bad_pointer(k, e) {
            differ.push(format!("{name} {field}: io_uring {k:?}, engine {e:?}"));
        }
    }
    assert!(differ.is_empty(), "{} of {} differ:\n{}", differ.len(), ring.len(), differ.join("\n"));
}

/// liburing's `link.c` (a chain whose member fails at submission) with a member the
/// prep refuses: the kernel performs none of the chain. A write linked to a bind with
/// `rw_flags` set, the bind linked to a write, and a hard link (the kernel fails even hard
/// links it does not submit): the refused member is `EINVAL`, the other `ECANCELED`, and
/// the pipe the writes name stays empty.
#[test]
fn a_chain_with_a_member_the_prep_refuses_is_performed_not_at_all() {
    use core::pin::pin;
    use keel_core::IoStatus;
    let mut backends = vec![BackendChoice::Epoll];
    if RingDriver::new(RingConfig { backend: BackendChoice::Ring, ..RingConfig::default() }).is_ok() {
        backends.push(BackendChoice::Ring);
    }
    for backend in backends {
        for case in ["write, then bad bind", "bad bind, then write", "write hard-linked to bad bind"] {
            let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).unwrap();
            let ex = util::executor_with(d);
            let ex = ex.as_ref();
            let (r, w) = std::io::pipe().unwrap();
            let wfd = std::os::fd::AsRawFd::as_raw_fd(&w);
            let out: Rc<RefCell<Option<(i32, i32)>>> = Rc::default();
            let o = out.clone();
            ex.attach_fiber(util::task(), util::fattrs(), move |f: &mut Fiber| {
                let m = mem();
                let write = opcode::Write::new(types::Fd(wfd), b"abc".as_ptr(), 3).build();
                let mut bind = raw(opcode::Bind::new(NO_FD, (&raw const m.sin).cast(), 16).build());
                bind.op_flags = 1;
                let bind = entry(bind);
                let (first, second) = match case {
                    "write, then bad bind" => (write.flags(squeue::Flags::IO_LINK), bind),
                    "bad bind, then write" => (bind.flags(squeue::Flags::IO_LINK), write),
                    _ => (write.flags(squeue::Flags::IO_HARDLINK), bind),
                };
                let (s1, s2) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
                // SAFETY: the write's bytes are static; the bind's address is in the leaked `Mem`.
                let ops = unsafe { (RingOp::from_entry(first), RingOp::from_entry(second)) };
                assert!(f.initiate_pair::<RingDriver>((s1.as_ref(), ops.0), (s2.as_ref(), ops.1)).is_ok());
                while s1.is_in_flight() || s2.is_in_flight() {
                    f.wait_io();
                }
                let code = |s: &IoStatus| match s.result() {
                    Some(Err(e)) => -e.raw(),
                    Some(Ok(n)) => n as i32,
                    None => i32::MIN,
                };
                *o.borrow_mut() = Some((code(&s1), code(&s2)));
                0u64
            })
            .unwrap();
            util::run_all(ex);
            let got = out.borrow_mut().take().expect("the fiber finished");
            let want = match case {
                "bad bind, then write" => (-libc::EINVAL, -libc::ECANCELED),
                _ => (-libc::ECANCELED, -libc::EINVAL),
            };
            assert_eq!(got, want, "{backend:?}: {case}");
            drop(w);
            let mut left = Vec::new();
            std::io::Read::read_to_end(&mut &r, &mut left).unwrap();
            assert_eq!(left, b"", "{backend:?}: {case}: nothing of the chain was performed");
        }
    }
}
