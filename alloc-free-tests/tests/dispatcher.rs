//! Dispatcher submit and take: this thread submits a future task to a `Dispatcher`; one
//! worker thread (a ring-less executor serving it) takes and runs it; 1,000,000 times in
//! the window (a pool of 64 tasks, each re-submitted once its worker has released it).
//! Every allocation in the process counts, on either thread.

use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, task};
use keel_core::{AttachError, Dispatcher, TaskHandle};
use keel_linux::pool::ThreadPool;
use std::sync::atomic::{AtomicU64, Ordering};

static WORK: Dispatcher = Dispatcher::new();
static RAN: AtomicU64 = AtomicU64::new(0);

#[test]
fn a_dispatcher_submit_and_take_allocate_nothing() {
    let pool = ThreadPool::start(&WORK, 1, false).unwrap();
    let mut tasks: Vec<TaskHandle> = (0..64).map(|_| task::<256>("dispatched")).collect();
    let mut submit = |i: u64| {
        let k = (i % 64) as usize;
        loop {
            match WORK.submit(tasks[k], async {
                RAN.fetch_add(1, Ordering::Relaxed);
            }) {
                Ok(run) => {
                    tasks[k] = run;
                    return;
                }
                Err(AttachError::OwnedElsewhere(_)) => std::hint::spin_loop(),
                Err(e) => panic!("submit: {e}"),
            }
        }
    };
    for i in 0..WARM_UP {
        submit(i);
    }
    while WORK.remaining() > 0 {
        std::hint::spin_loop();
    }
    let w = Window::open();
    for i in 0..CYCLES {
        submit(i);
    }
    while WORK.remaining() > 0 {
        std::hint::spin_loop();
    }
    let counts = w.close();
    assert_eq!(RAN.load(Ordering::SeqCst), WARM_UP + CYCLES);
    pool.quit_and_join().unwrap();
    assert_alloc_free("dispatcher submit and take", CYCLES, &counts);
}
