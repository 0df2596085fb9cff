//! The epoll driver (`keel_linux::epoll`) under keel's executor: readiness waits from
//! futures and fibers, a wake from another thread (the unpark eventfd), two waiters on one
//! descriptor for different events (epoll rule 1), regular files (epoll rule 2), cancels
//! that leave nothing behind, timers, a full table, and an executor dropped mid-wait.

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    CancelOutcome, Config, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, RegionStacks, TaskAttrs,
    TaskError, TaskHandle, TaskSlot, initiate, rt, suspend_until_completed_io,
};
use keel_linux::flags::PollFlags;
use keel_linux::{EpollConfig, EpollDriver, EpollOp};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot<1024> = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name }).unwrap()
}

fn driver(slots: u32) -> EpollDriver {
    EpollDriver::new(EpollConfig { slots }).expect("epoll")
}

fn bits(f: PollFlags) -> u32 {
    u32::from(keel_linux::ready::poll_bits(f))
}

/// Waits on `fd` for `events` from a future: the ready mask, or the errno.
async fn ready(fd: BorrowedFd<'_>, events: PollFlags) -> Result<u32, TaskError> {
    let st = pin!(IoStatus::new());
    // SAFETY: `fd` is borrowed for this whole function, which returns only after the
    // operation completed (or its status block was dropped, which cancels it).
    let op = unsafe { EpollOp::poll(fd, events) };
    initiate::<EpollDriver>(st.as_ref(), op).await.map_err(|_| TaskError::Failed(-16))?;
    while st.result().is_none() {
        suspend_until_completed_io(1).await.map_err(|_| TaskError::Cancelled)?;
    }
    st.result().unwrap().map_err(|e| TaskError::Failed(e.raw().into()))
}

fn run_all<D: keel_core::Driver, S: keel_core::StackProvider>(ex: core::pin::Pin<&Executor<D, S>>) {
    for _ in 0..1000 {
        if ex.attached() == 0 {
            return;
        }
        ex.run(64, Some(Duration::from_secs(5))).expect("run");
    }
    panic!("tasks still attached after 1000 passes");
}

#[test]
fn a_future_waits_for_a_peer_thread_and_the_unpark_wakes_the_parked_executor() {
    let ex = pin!(Executor::new(driver(16), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, mut b) = UnixStream::pair().unwrap();
    let t = ex.attach(task("reader"), async move { ready(a.as_fd(), PollFlags::IN).await.map(u64::from) }).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.write_all(b"x").unwrap();
        b
    });
    run_all(ex);
    let got = ex.result(t).unwrap().unwrap().unwrap() as u32;
    assert_ne!(got & bits(PollFlags::IN), 0, "mask {got:#x}");
    drop(writer.join().unwrap());
    assert_eq!(ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 0);
}

#[test]
fn two_waiters_on_one_descriptor_each_get_their_own_event() {
    let ex = pin!(Executor::new(driver(16), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = std::rc::Rc::new(a);
    let (a1, a2) = (a.clone(), a.clone());
    let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let reader = ex
        .attach(task("in"), async move {
            let m = ready(a1.as_fd(), PollFlags::IN).await?;
            o1.borrow_mut().push("in");
            Ok(u64::from(m))
        })
        .unwrap();
    let writer = ex
        .attach(task("out"), async move {
            let m = ready(a2.as_fd(), PollFlags::OUT).await?;
            o2.borrow_mut().push("out");
            Ok(u64::from(m))
        })
        .unwrap();
    // The socket is writable at once; nothing is readable yet.
    for _ in 0..4 {
        ex.run(64, Some(Duration::from_millis(5))).ok();
    }
    assert_eq!(*order.borrow(), ["out"], "the OUT waiter completes, the IN waiter still waits");
    b.write_all(b"x").unwrap();
    run_all(ex);
    assert_eq!(*order.borrow(), ["out", "in"]);
    assert_ne!(ex.result(reader).unwrap().unwrap().unwrap() as u32 & bits(PollFlags::IN), 0);
    assert_ne!(ex.result(writer).unwrap().unwrap().unwrap() as u32 & bits(PollFlags::OUT), 0);
}

#[test]
fn a_regular_file_is_ready_at_once_as_poll_says() {
    let ex = pin!(Executor::new(driver(4), Config::default()).unwrap());
    let ex = ex.into_ref();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let t = ex.attach(task("file"), async move { ready(file.as_fd(), PollFlags::IN).await.map(u64::from) }).unwrap();
    run_all(ex);
    assert_ne!(ex.result(t).unwrap().unwrap().unwrap() as u32 & bits(PollFlags::IN), 0);
}

#[test]
fn cancelled_waits_free_their_slots_and_a_full_table_queues_instead_of_failing() {
    // Two slots, three waiters at a time, 200 rounds of wait-then-cancel: a leaked slot
    // would leave the third waiter queued forever.
    let ex = pin!(Executor::new(driver(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, _b) = UnixStream::pair().unwrap();
    let a = std::rc::Rc::new(a);
    let mut handles: Vec<TaskHandle> = (0..3).map(|_| task("waiter")).collect();
    for _round in 0..200 {
        for h in handles.iter_mut() {
            let a = a.clone();
            *h = ex.attach(*h, async move { ready(a.as_fd(), PollFlags::IN).await.map(u64::from) }).unwrap();
        }
        ex.run(64, Some(Duration::from_millis(1))).ok();
        for h in &handles {
            assert!(
                matches!(
                    ex.cancel(*h),
                    Ok(CancelOutcome::Resumes | CancelOutcome::CancellingIo | CancelOutcome::Completed)
                ),
                "{:?}",
                ex.state(*h)
            );
        }
        run_all(ex);
        for h in &handles {
            assert!(matches!(ex.result(*h), Ok(Some(Err(_)))), "a cancelled waiter ended with {:?}", ex.result(*h));
        }
    }
    assert_eq!(ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 0);
}

#[test]
fn timers_and_a_fiber_wait_run_on_the_epoll_driver() {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; 2 * (64 * 1024 + 4096) + 64]);
    let stacks = RegionStacks::new(mem, 64 * 1024, 4096).unwrap();
    let ex = pin!(Executor::with_stacks(driver(8), stacks, Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, mut b) = UnixStream::pair().unwrap();
    let sleeper = ex
        .attach(task("sleeper"), async {
            let start = std::time::Instant::now();
            rt::sleep(Duration::from_millis(15)).await?;
            Ok(start.elapsed().as_millis() as u64)
        })
        .unwrap();
    let fiber = ex
        .attach_fiber(
            task("fiber"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            move |f: &mut Fiber| {
                let st = pin!(IoStatus::new());
                // SAFETY: `a` lives in this closure until after the wait below.
                let op = unsafe { EpollOp::poll(a.as_fd(), PollFlags::IN) };
                f.initiate::<EpollDriver>(st.as_ref(), op).map_err(|_| TaskError::Failed(-16))?;
                f.wait_io();
                Ok::<u64, TaskError>(u64::from(st.result().unwrap().unwrap()))
            },
        )
        .unwrap();
    ex.run(64, Some(Duration::from_millis(1))).ok();
    b.write_all(b"x").unwrap();
    run_all(ex);
    assert!(ex.result(sleeper).unwrap().unwrap().unwrap() >= 15, "the sleep ended early");
    assert_ne!(ex.result(fiber).unwrap().unwrap().unwrap() as u32 & bits(PollFlags::IN), 0);
}

#[test]
fn dropping_the_executor_mid_wait_ends_the_wait_and_returns() {
    let (a, _b) = UnixStream::pair().unwrap();
    let a: &'static UnixStream = Box::leak(Box::new(a));
    {
        let ex = pin!(Executor::new(driver(4), Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.attach(task("forever"), async move { ready(a.as_fd(), PollFlags::IN).await.map(u64::from) }).unwrap();
        ex.run(64, Some(Duration::from_millis(1))).ok();
        assert_eq!(ex.attached(), 1);
    } // the drop cancels the wait (epoll rule 5) and returns
}

#[test]
fn bad_configuration_is_a_typed_error() {
    assert_eq!(EpollDriver::new(EpollConfig { slots: 0 }).err(), Some(keel_core::Errno::EINVAL));
    assert_eq!(EpollDriver::new(EpollConfig { slots: u32::MAX }).err(), Some(keel_core::Errno::EINVAL));
}
