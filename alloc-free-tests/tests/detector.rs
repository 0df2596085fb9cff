//! The detector itself: a window that allocates, reallocates and frees must count each
//! call, on the test's thread or on one it started, and `assert_alloc_free` must fail on
//! it, so a zero elsewhere means zero.

use keel_alloc_free_tests::{Kind, Window, assert_alloc_free, say};

#[test]
fn a_window_sees_every_allocator_call_and_the_assertion_fails_on_them() {
    let empty = Window::open().close();
    assert!(empty.is_zero(), "an empty window counted {empty}");
    assert_eq!(empty.first, None);

    let w = Window::open();
    let b = std::hint::black_box(Box::new([7u8; 24]));
    let mut v: Vec<u8> = std::hint::black_box(Vec::with_capacity(8));
    v.extend_from_slice(&[1; 64]); // grows: one realloc
    drop(std::hint::black_box(v));
    drop(b);
    let c = w.close();
    say(&format!("alloc-free: detector: a window with Box::new, Vec growth and two drops counted {c}"));
    assert_eq!((c.allocs, c.deallocs, c.reallocs), (2, 2, 1), "{c:?}");
    assert_eq!(c.first.map(|e| (e.kind, e.size)), Some((Kind::Alloc, 24)));

    let failed = std::panic::catch_unwind(|| assert_alloc_free("detector (must fail)", 1, &c));
    let msg = failed.expect_err("assert_alloc_free passed a window that allocated");
    let msg = msg.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("2 allocs, 2 deallocs, 1 reallocs"), "the failure must name the counts: {msg}");
    say("alloc-free: detector: assert_alloc_free failed on it, naming the counts, as it must");

    // An allocation on another thread the test started counts (only the harness's main
    // thread is left out).
    use std::sync::atomic::{AtomicU8, Ordering};
    static STEP: AtomicU8 = AtomicU8::new(0);
    let other = std::thread::spawn(|| {
        while STEP.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        drop(std::hint::black_box(Box::new([3u8; 40])));
        STEP.store(2, Ordering::Release);
        // Its exit frees thread state: only after the window closed.
        while STEP.load(Ordering::Acquire) != 3 {
            std::hint::spin_loop();
        }
    });
    let w = Window::open();
    STEP.store(1, Ordering::Release);
    while STEP.load(Ordering::Acquire) != 2 {
        std::hint::spin_loop();
    }
    let c = w.close();
    STEP.store(3, Ordering::Release);
    other.join().unwrap();
    say(&format!("alloc-free: detector: an allocation on a thread the test started counted {c}"));
    assert_eq!((c.allocs, c.deallocs, c.elsewhere, c.harness), (1, 1, 2, 0), "{c:?}");
}
