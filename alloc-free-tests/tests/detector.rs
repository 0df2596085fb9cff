//! The detector itself: a window that allocates, reallocates and frees must count each
//! call, and `assert_alloc_free` must fail on it, so a zero elsewhere means zero.

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
}
