//! A raw SQE (`RingOp::from_entry`) that carries `IOSQE_CQE_SKIP_SUCCESS`: keel completes
//! each operation from its CQE, so an operation whose success posted none would leave its
//! status block in flight for ever (its task never woken). The driver must still complete
//! it, with its result, on both backends.

#[path = "net_util/mod.rs"]
mod util;

use keel_core::Fiber;
use keel_linux::fs::FiberFs;
use keel_linux::{RingConfig, RingOp};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use util::*;

#[test]
fn a_raw_sqe_with_cqe_skip_success_still_completes_with_its_result() {
    let owned = executor(RingConfig::default());
    let ex = owned.as_ref();
    let out = Rc::new(Cell::new(None));
    let o = out.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let nop = io_uring::opcode::Nop::new().build().flags(io_uring::squeue::Flags::SKIP_SUCCESS);
            // SAFETY: a NOP names no memory.
            let a = f.run_op(unsafe { RingOp::from_entry(nop) });
            let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
            let msg = *b"12345";
            let send =
                io_uring::opcode::Send::new(io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&w)), msg.as_ptr(), 5)
                    .build()
                    .flags(io_uring::squeue::Flags::SKIP_SUCCESS);
            // SAFETY: `msg` outlives `run_op`, which returns after the completion.
            let b = f.run_op(unsafe { RingOp::from_entry(send) });
            drop((r, w));
            o.set(Some((a, b)));
            0u64
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(64, Some(Duration::from_millis(20)));
    }
    if ex.attached() > 0 {
        // Stranded: dropping the executor would wait on the operation; fail instead.
        std::mem::forget(owned);
        panic!("an operation with CQE_SKIP_SUCCESS never completed its status block");
    }
    assert_eq!(out.get(), Some((Ok(0), Ok(5))), "both operations completed with their results");
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
}
