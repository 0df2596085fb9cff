//! Foreign-thread attach to a ring executor: as `foreign_attach`, but the executor runs on
//! a `RingDriver` and parks in `io_uring_enter`, so the unparks in the window go through
//! `IORING_REGISTER_SEND_MSG_RING` (or the eventfd where the kernel lacks it: said in
//! the window's name). Every 64th attach waits until its task has run, so the executor
//! runs dry and parks again and again inside the window. Every allocation in the process
//! counts, on either thread.

use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, attach_when_released, ring_or_skip, task};
use keel_core::{Config, Executor, HandleSlot, RunError, TaskHandle};
use keel_linux::RingConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static RAN: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static SLOT: HandleSlot = HandleSlot::new();

#[test]
fn a_foreign_thread_attach_to_a_ring_executor_allocates_nothing() {
    let what = "foreign-thread attach, ring executor";
    let (tx, rx) = std::sync::mpsc::channel();
    let exec = std::thread::spawn(move || {
        let Some(ring) = ring_or_skip(what, RingConfig::default()) else {
            tx.send(None).unwrap();
            return 0;
        };
        let kind = ring.unpark_kind();
        let ex = core::pin::pin!(Executor::new(ring, Config::default()).unwrap());
        let ex = ex.into_ref();
        tx.send(Some((ex.handle(&SLOT).unwrap(), kind))).unwrap();
        while !STOP.load(Ordering::SeqCst) || ex.attached() > 0 {
            match ex.run(usize::MAX, Some(core::time::Duration::from_millis(50))) {
                Ok(_) | Err(RunError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        ex.stats().parks
    });
    let Some((h, kind)) = rx.recv().unwrap() else {
        exec.join().unwrap();
        return;
    };
    let mut tasks: Vec<TaskHandle> = (0..64).map(|_| task::<256>("foreign")).collect();
    let mut attach = |i: u64| {
        let k = (i % 64) as usize;
        attach_when_released(&h, &mut tasks[k], async {
            RAN.fetch_add(1, Ordering::Relaxed);
        });
        if k == 63 {
            // Let the executor run dry and park: the next attach unparks it.
            while RAN.load(Ordering::SeqCst) < i + 1 {
                std::hint::spin_loop();
            }
        }
    };
    for i in 0..WARM_UP {
        attach(i);
    }
    while RAN.load(Ordering::SeqCst) < WARM_UP {
        std::hint::spin_loop();
    }
    let w = Window::open();
    for i in WARM_UP..WARM_UP + CYCLES {
        attach(i);
    }
    while RAN.load(Ordering::SeqCst) < WARM_UP + CYCLES {
        std::hint::spin_loop();
    }
    let counts = w.close();
    STOP.store(true, Ordering::SeqCst);
    let parks = exec.join().unwrap();
    eprintln!("{what}: unparked through {kind:?}; the executor parked {parks} times");
    assert_alloc_free(&format!("{what} ({kind:?} unpark)"), CYCLES, &counts);
}
