//! Unit tests of the dispatcher: its levels (rule 1), claims (rule 2) and quit tokens
//! (rule 5).

use super::levels::*;
use super::*;
use crate::Priority;
use crate::exec::sched::Sched;
use crate::{Config, TaskAttrs, TaskSlot};
extern crate std;

/// Rule 1: each level is LIFO, higher priorities first, and the packed addresses
/// round-trip.
#[test]
fn dispatch_rule_1_levels_pop_highest_first_newest_first() {
    static T: [TaskSlot; 3] = [TaskSlot::new(), TaskSlot::new(), TaskSlot::new()];
    let dispatcher: &'static Dispatcher = std::boxed::Box::leak(std::boxed::Box::new(Dispatcher::new()));
    let tasks: std::vec::Vec<_> = T.iter().map(|t| t.create(TaskAttrs::default()).unwrap().header()).collect();
    dispatcher.push(Priority::Low, tasks[0]);
    dispatcher.push(Priority::Normal, tasks[1]);
    dispatcher.push(Priority::Normal, tasks[2]);
    assert!(dispatcher.has_work());
    assert_eq!(dispatcher.pop(), Some(tasks[2]));
    assert_eq!(dispatcher.pop(), Some(tasks[1]));
    assert_eq!(dispatcher.pop(), Some(tasks[0]));
    assert_eq!(dispatcher.pop(), None);
    assert!(!dispatcher.has_work());
}

/// Rule 2 and `Sched::take_dispatched`: a popped task whose claim fails (the stack
/// handed it out twice; here forced by pushing a task the dispatcher never claimed)
/// is reported (`double_takes`; debug builds panic), not pushed back, not attached.
#[test]
fn dispatch_rule_2_a_failed_claim_after_a_pop_is_reported_not_requeued() {
    static T: TaskSlot = TaskSlot::new();
    let dispatcher: &'static Dispatcher = std::boxed::Box::leak(std::boxed::Box::new(Dispatcher::new()));
    let worker = Sched::new(Config::default());
    worker.dispatcher.set(Some((dispatcher, 0)));
    let task = T.create(TaskAttrs::default()).unwrap().header();
    // Owned by nobody, not by the sentinel: as if another worker had claimed it.
    dispatcher.push(Priority::Normal, task);
    let took = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| worker.take_dispatched()));
    match took {
        #[cfg(debug_assertions)]
        Ok(_) => panic!("debug builds must panic on a double take"),
        #[cfg(not(debug_assertions))]
        Ok(taken) => assert!(!taken, "a task whose claim failed was taken"),
        Err(payload) => {
            let msg = payload.downcast_ref::<&str>().copied().unwrap_or("");
            assert!(msg.contains("taken twice"), "unexpected panic: {msg}");
        }
    }
    assert_eq!(dispatcher.double_takes(), 1, "the double take was not reported");
    assert_eq!(dispatcher.pop(), None, "the task was pushed back: it would run twice");
    assert_eq!(worker.attached.get(), 0);
    // SAFETY: `'static` slot.
    assert!(unsafe { task.as_ref() }.owner.load(Ordering::Relaxed).is_null(), "its owner changed");
}

/// Rule 1: a popper's view of a level (top, tag) goes stale as soon as the level has
/// moved on, however far: a view exactly 2^22 or 2^32 operations old with the same
/// task on top again (where a 22-bit tag, as the narrow head under loom has, or a
/// 32-bit one would wrap and let the stale CAS install the link it read long ago) fails
/// its CAS; and the 64-bit tag wraps at 2^64 without harm.
#[test]
fn dispatch_rule_1_a_stale_pop_fails_at_every_narrow_tag_wrap() {
    if !Dispatcher::supported() {
        std::println!("SKIPPED: this CPU lacks cmpxchg16b (dispatch rule 1)");
        return;
    }
    static T: [TaskSlot; 2] = [TaskSlot::new(), TaskSlot::new()];
    let task = T[0].create(TaskAttrs::default()).unwrap().header();
    let other = T[1].create(TaskAttrs::default()).unwrap().header();
    for edge in [1u64 << 22, 1 << 32, 3 << 40] {
        let head = Head::with_tag(5);
        head.cas(head.load(), Top { task: Some(task), tag: 6 }).unwrap();
        // A popper loads the view, reads the top's link (`other`, say), and stalls.
        let stale = head.load();
        assert_eq!(stale, Top { task: Some(task), tag: 6 });
        // `edge` operations later the same task is on top again.
        head.cas(stale, Top { task: Some(task), tag: 6 + edge }).unwrap();
        let now = head.load();
        assert_eq!(
            head.cas(stale, Top { task: Some(other), tag: 7 }),
            Err(now),
            "a view {edge} operations old passed the CAS"
        );
        assert_eq!(head.load(), now);
    }
    // The tag wraps at 2^64 (unreachable in practice: every push and pop adds one).
    let head = Head::with_tag(u64::MAX);
    let top = head.load();
    head.cas(top, Top { task: Some(task), tag: top.tag.wrapping_add(1) }).unwrap();
    assert_eq!(head.load(), Top { task: Some(task), tag: 0 });
    assert!(head.has_task());
}
