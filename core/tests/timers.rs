//! Timers on the virtual clock: order, early wakes, saturation.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::{Config, Executor, Instant, Priority, SuspendReason, TaskState, rt, sim::SimDriver};

#[test]
fn timer_rule_2_timers_fire_by_deadline_then_arming_order_in_virtual_time() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    // (name, sleep ms): b and d share a deadline; b armed first.
    for (name, ms) in [("a", 30u64), ("b", 10), ("c", 20), ("d", 10), ("e", 0)] {
        let log = log.clone();
        ex.attach(task(Priority::Normal, name), async move {
            rt::sleep(Duration::from_millis(ms)).await?;
            let now = rt::clock().await.unwrap();
            log.push(format!("{name}@{}", now.as_nanos() / 1_000_000));
            Ok(0)
        })
        .unwrap();
    }
    run_all!(ex);
    assert_eq!(log.take(), ["e@0", "b@10", "d@10", "c@20", "a@30"]);
    assert_eq!(ex.now(), Instant::from_nanos(30_000_000));
    assert_eq!(ex.stats().timers_fired, 4);
}

#[test]
fn timer_rule_1_a_task_woken_early_has_its_timer_removed() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "early"), async {
            // A wake ends a sleep's suspension; the sleep re-arms if its time is not up,
            // so wake it through `wait` instead to see the timer go.
            rt::sleep(Duration::from_secs(100)).await?;
            Ok(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Timer)));
    assert_eq!(ex.stats().timers_armed, 1);
    ex.wake(t);
    assert_eq!(ex.stats().timers_armed, 0, "the woken task's timer is still armed");
    // Resumed early, the sleep re-arms for the remaining time and completes at 100 s.
    ex.run(1, None).unwrap();
    assert_eq!(ex.stats().timers_armed, 1);
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(ex.now().as_nanos(), 100_000_000_000);
}

#[test]
fn huge_durations_saturate_instead_of_overflowing() {
    assert_eq!(Instant::from_nanos(5).saturating_add(Duration::MAX), Instant::MAX);
    assert_eq!(Instant::from_nanos(u64::MAX - 1).saturating_add(Duration::from_nanos(7)), Instant::MAX);
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let forever = ex
        .attach(task(Priority::Normal, "forever"), async {
            rt::sleep(Duration::MAX).await?;
            Ok(1)
        })
        .unwrap();
    let soon = ex
        .attach(task(Priority::Normal, "soon"), async {
            rt::sleep(Duration::from_secs(u64::MAX)).await?;
            Ok(2)
        })
        .unwrap();
    ex.run(10, None).unwrap();
    assert_eq!(ex.stats().timers_armed, 2);
    // The virtual clock can reach the end of time; both fire there, in arming order.
    run_all!(ex);
    assert_eq!(ex.now(), Instant::MAX);
    assert_eq!(ex.result(forever), Ok(Some(Ok(1))));
    assert_eq!(ex.result(soon), Ok(Some(Ok(2))));
}

#[test]
fn ten_thousand_sleeping_tasks_wake_in_deadline_order() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut x: u64 = 12345;
    for i in 0..10_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let ms = (x >> 33) % 5000;
        let log = log.clone();
        ex.attach(task(Priority::Normal, "s"), async move {
            rt::sleep(Duration::from_millis(ms)).await?;
            log.borrow_mut().push((ms, i));
            Ok(0)
        })
        .unwrap();
    }
    run_all!(ex);
    let got = log.borrow().clone();
    let mut want = got.clone();
    want.sort();
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, want, "not in (deadline, arming order)");
}

fn heap_nodes(n: usize) -> &'static [keel_core::timer::TimerNode] {
    Box::leak((0..n).map(|_| keel_core::timer::TimerNode::new()).collect::<Vec<_>>().into_boxed_slice())
}

/// A node is in the heap exactly while `armed` is set: insert arms it, `pop_expired` and
/// `remove` disarm it, and the heap's length counts the armed nodes.
#[test]
fn timer_rule_1_a_node_is_armed_exactly_while_it_is_in_the_heap() {
    use core::ptr::NonNull;
    let heap = keel_core::timer::TimerHeap::new();
    let ns = heap_nodes(3);
    for (i, n) in ns.iter().enumerate() {
        assert!(!n.is_armed());
        // SAFETY: unarmed, `'static`.
        unsafe { heap.insert(NonNull::from(n), Instant::from_nanos(10 * (i as u64 + 1))) };
        assert!(n.is_armed());
    }
    assert_eq!(heap.len(), 3);
    // SAFETY: armed in `heap`.
    unsafe { heap.remove(NonNull::from(&ns[1])) };
    assert!(!ns[1].is_armed());
    assert_eq!(heap.pop_expired(Instant::from_nanos(5)), None, "nothing is due yet");
    assert_eq!(heap.pop_expired(Instant::from_nanos(100)), Some(NonNull::from(&ns[0])));
    assert!(!ns[0].is_armed());
    assert!(ns[2].is_armed());
    assert_eq!(heap.len(), 1);
    assert_eq!(heap.pop_expired(Instant::from_nanos(100)), Some(NonNull::from(&ns[2])));
    assert!(heap.is_empty() && !ns[2].is_armed());
}

/// The tree links (first child, next sibling, previous sibling or parent) survive
/// inserts and removals from anywhere: a seeded mix of them pops in (deadline, arming
/// order) exactly as a sorted model says.
#[test]
fn timer_rule_3_removals_from_the_middle_keep_the_heap_in_order() {
    use core::ptr::NonNull;
    const N: usize = 64;
    let heap = keel_core::timer::TimerHeap::new();
    let ns = heap_nodes(N);
    // The model: (deadline, arming seq, node index) of each armed node.
    let mut model: Vec<(u64, u64, usize)> = Vec::new();
    let mut seq = 0u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..5_000 {
        let r = next();
        let i = (r % N as u64) as usize;
        if ns[i].is_armed() {
            // SAFETY: armed in `heap`.
            unsafe { heap.remove(NonNull::from(&ns[i])) };
            model.retain(|&(_, _, j)| j != i);
        } else {
            let d = (r >> 8) % 20;
            // SAFETY: unarmed, `'static`.
            unsafe { heap.insert(NonNull::from(&ns[i]), Instant::from_nanos(d)) };
            model.push((d, seq, i));
            seq += 1;
        }
        if r % 7 == 0 {
            let now = (r >> 16) % 20;
            model.sort();
            while let Some(&(d, _, j)) = model.first().filter(|&&(d, _, _)| d <= now) {
                let got = heap.pop_expired(Instant::from_nanos(now)).expect("a due timer was not popped");
                assert_eq!(got, NonNull::from(&ns[j]), "popped out of (deadline, arming) order at {d}");
                model.remove(0);
            }
            assert_eq!(heap.pop_expired(Instant::from_nanos(now)), None, "popped a timer not due");
        }
        assert_eq!(heap.len(), model.len());
    }
}
