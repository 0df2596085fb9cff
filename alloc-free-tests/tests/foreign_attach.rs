//! Foreign-thread attach: this thread attaches a future task to an executor running (and
//! parking) on another thread, through an `ExecutorHandle`, 1,000,000 times in the window
//! (a pool of 64 tasks, each re-attached once its executor has released it). Every
//! allocation in the process counts, on either thread.

use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, attach_when_released, task};
use keel_core::{Config, Executor, HandleSlot, RunError, TaskHandle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static RAN: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static SLOT: HandleSlot = HandleSlot::new();

#[test]
fn a_foreign_thread_attach_allocates_nothing() {
    let (tx, rx) = std::sync::mpsc::channel();
    let exec = std::thread::spawn(move || {
        let ex = core::pin::pin!(Executor::new(keel_linux::SleepDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        tx.send(ex.handle(&SLOT).unwrap()).unwrap();
        while !STOP.load(Ordering::SeqCst) || ex.attached() > 0 {
            match ex.run(usize::MAX, Some(core::time::Duration::from_millis(50))) {
                Ok(_) | Err(RunError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    let h = rx.recv().unwrap();
    let mut tasks: Vec<TaskHandle> = (0..64).map(|_| task::<256>("foreign")).collect();
    let mut attach = |i: u64| {
        let k = (i % 64) as usize;
        attach_when_released(&h, &mut tasks[k], async {
            RAN.fetch_add(1, Ordering::Relaxed);
        });
    };
    for i in 0..WARM_UP {
        attach(i);
    }
    while RAN.load(Ordering::SeqCst) < WARM_UP {
        std::hint::spin_loop();
    }
    let w = Window::open();
    for i in 0..CYCLES {
        attach(i);
    }
    while RAN.load(Ordering::SeqCst) < WARM_UP + CYCLES {
        std::hint::spin_loop();
    }
    let counts = w.close();
    STOP.store(true, Ordering::SeqCst);
    exec.join().unwrap();
    assert_alloc_free("foreign-thread attach", CYCLES, &counts);
}
