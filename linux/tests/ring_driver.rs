//! The ring driver under pressure: a tiny SQ, a tiny CQ, failing enters, busy tasks,
//! registered buffers, dropped opens, and the same task code on the simulated driver.

#[path = "net_util/mod.rs"]
mod net_util;

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    Config, Driver, Errno, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, RegionStacks, TaskAttrs,
    TaskHandle, TaskSlot, rt,
};
use keel_linux::fs::{self, BufferError, FiberFs, Mode, OFlags};
use keel_linux::{RingConfig, RingDriver, RingOp};

fn task_with(io: Priority) -> TaskHandle {
    let s: &'static TaskSlot<2048> = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io }, name: "t" }).unwrap()
}

fn task() -> TaskHandle {
    task_with(Priority::Normal)
}

fn stacks(n: usize) -> RegionStacks {
    RegionStacks::new(Vec::leak(vec![0u8; n * 68 * 1024 + 64]), 64 * 1024, 4096).unwrap()
}

macro_rules! run_all {
    ($ex:expr) => {{
        let t0 = std::time::Instant::now();
        while $ex.attached() > 0 {
            $ex.run(1024, Some(Duration::from_secs(5))).expect("run");
            assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
        }
    }};
}

/// A zero-length read of /dev/zero whose SQE `off` field carries `label`.
fn labelled(zero: i32, label: u64) -> RingOp {
    static mut SINK: [u8; 1] = [0];
    let e = io_uring::opcode::Read::new(io_uring::types::Fd(zero), (&raw mut SINK).cast(), 0).offset(label).build();
    // SAFETY: zero-length reads never write; the pointer is a static.
    unsafe { RingOp::from_entry(e) }
}

fn dev_zero() -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    fd
}

#[test]
fn a_hundred_operations_through_a_four_entry_sq_keep_each_tasks_order() {
    let zero = dev_zero();
    let cfg = RingConfig { entries: 4, cq_entries: 8, record_submissions: 256, ..RingConfig::default() };
    let ex = pin!(Executor::with_stacks(RingDriver::new(cfg).unwrap(), stacks(4), Config::default()).unwrap());
    let ex = ex.into_ref();
    assert_eq!(ex.with_driver(|d| d.sq_entries()).unwrap(), 4);
    for t in 0..4u64 {
        ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let sts = pin!([const { IoStatus::new() }; 25]);
            for (k, st) in sts.iter().enumerate() {
                // SAFETY: the array is pinned on this fiber's stack until every op completes.
                let st = unsafe { core::pin::Pin::new_unchecked(st) };
                f.initiate::<RingDriver>(st, labelled(zero, t * 1000 + k as u64)).unwrap();
            }
            let mut done = 0;
            while done < 25 {
                done += f.suspend_until_completed_io(25)?;
            }
            assert!(sts.iter().all(|s| s.result() == Some(Ok(0))));
            Ok(done as u64)
        })
        .unwrap();
    }
    run_all!(ex);
    let rec = ex.with_driver(|d| d.recorded_submissions().to_vec()).unwrap();
    assert_eq!(rec.len(), 100);
    for t in 0..4u64 {
        let mine: Vec<u64> = rec.iter().copied().filter(|l| l / 1000 == t).collect();
        let want: Vec<u64> = (0..25).map(|k| t * 1000 + k).collect();
        assert_eq!(mine, want, "task {t}'s SQEs left initiation order");
    }
    assert!(ex.stats().io_completed >= 100);
}

#[test]
fn a_thousand_completions_through_an_eight_entry_cq_lose_nothing() {
    let cfg = RingConfig { entries: 8, cq_entries: 8, slots: 2048, ..RingConfig::default() };
    let ex = pin!(Executor::new(RingDriver::new(cfg).unwrap(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let done = std::rc::Rc::new(std::cell::Cell::new(0u32));
    for _ in 0..10 {
        let d = done.clone();
        ex.attach(task(), async move {
            for _ in 0..100 {
                if fs::nop().await == Ok(0) {
                    d.set(d.get() + 1);
                }
            }
        })
        .unwrap();
    }
    run_all!(ex);
    assert_eq!(done.get(), 1000);
    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert_eq!(st.completed, 1000, "{st:?}");
    assert_eq!(st.stale, 0);
}

#[test]
fn a_busy_task_does_not_starve_reads_on_its_executor() {
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let ex = pin!(
        Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(2), Config::default()).unwrap()
    );
    let ex = ex.into_ref();
    let reads = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let r2 = reads.clone();
    // The spinner never suspends, so the executor never parks: the reads must complete
    // through the per-pass reap alone. (Bounded: 10 s.)
    let spinner = ex
        .attach(task(), async move {
            let t0 = std::time::Instant::now();
            while r2.get() < 10 && t0.elapsed() < Duration::from_secs(10) {
                rt::yield_now().await?;
            }
            Ok(r2.get() as u64)
        })
        .unwrap();
    let reads3 = reads.clone();
    ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
        // SAFETY: the pipe's read end is ours and wrapped once.
        let file = unsafe { keel_linux::File::from_raw_fd(rd) };
        for i in 0..10u8 {
            // SAFETY: writing one byte from a local to our pipe (the write end).
            assert_eq!(unsafe { libc::write(wr, [i].as_ptr().cast(), 1) }, 1);
            let mut b = [0u8; 1];
            assert_eq!(f.read(&file, &mut b, 0), Ok(1));
            assert_eq!(b[0], i);
            reads3.set(reads3.get() + 1);
        }
        Ok(0)
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(spinner), Ok(Some(Ok(10))), "the reads did not complete while the other task kept yielding");
    assert_eq!(ex.stats().parks, 0, "the executor parked: the busy path did not reap on its own");
    // SAFETY: our descriptor.
    unsafe { libc::close(wr) };
}

#[test]
fn failing_enters_keep_the_operations_and_retry_them() {
    let ex = pin!(Executor::new(RingDriver::new(RingConfig::default()).unwrap(), Config::default()).unwrap());
    let ex = ex.into_ref();
    for errno in [Errno::EAGAIN, Errno::EBUSY, Errno::EINTR] {
        let t = ex
            .attach(task(), async {
                let mut ok = 0;
                for _ in 0..16 {
                    ok += (fs::nop().await == Ok(0)) as u64;
                }
                Ok(ok)
            })
            .unwrap();
        ex.run(1, None).unwrap(); // the first NOP is in the SQ
        ex.with_driver(|d| {
            // SAFETY: sets the fault injection counters; no replacement, no Driver method,
            // no other code runs.
            unsafe { d.get_mut() }.inject_enter_errors(5, errno)
        })
        .unwrap();
        run_all!(ex);
        assert_eq!(ex.result(t), Ok(Some(Ok(16))), "{errno:?}");
    }
    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert!(st.enter_retries >= 15, "{st:?}");
    assert_eq!(st.stale, 0);
}

#[test]
fn registered_buffers_round_trip_and_claims_wait_for_a_release() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let path = std::env::temp_dir().join(format!("keel-{}-regbuf", std::process::id()));
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let cfg = RingConfig { registered_buffers: 2, registered_buffer_size: 4096, ..RingConfig::default() };
    let ex = pin!(Executor::with_stacks(RingDriver::new(cfg).unwrap(), stacks(3), Config::default()).unwrap());
    let ex = ex.into_ref();
    let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let o1 = order.clone();
    ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let mut a = f.claim_buffer().unwrap();
        let mut b = f.claim_buffer().unwrap();
        assert_ne!(a.index(), b.index());
        // The open suspends this fiber: the waiter runs and finds no buffer free.
        let file = f.open(&cpath, OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC, Mode::from_raw_mode(0o600)).unwrap();
        assert_eq!(f.try_claim_buffer().err(), Some(BufferError::AllClaimed));
        a[..5].copy_from_slice(b"fixed");
        assert_eq!(f.write_fixed(&file, &a, 5, 0), Ok(5));
        b.fill(0);
        assert_eq!(b.len(), 4096);
        assert_eq!(f.read_fixed(&file, &mut b, 4096, 0), Ok(5));
        assert_eq!(&b[..5], b"fixed");
        o1.borrow_mut().push("holder yields");
        f.yield_now()?;
        o1.borrow_mut().push("holder releases");
        f.release_buffer(a); // handed straight to the waiter (regbuf rule 3)
        assert_eq!(f.try_claim_buffer().err(), Some(BufferError::AllClaimed), "the waiter has it, not the free list");
        drop(b);
        f.close(file).unwrap();
        Ok(0)
    })
    .unwrap();
    let o2 = order.clone();
    ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
        o2.borrow_mut().push("waiter claims");
        let _b = f.claim_buffer().unwrap();
        o2.borrow_mut().push("waiter got one");
        Ok(0)
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(*order.borrow(), ["waiter claims", "holder yields", "holder releases", "waiter got one"]);
    let _ = std::fs::remove_file(path);
}

/// Descriptors of this process open on `path` (other tests run in parallel, so only
/// these count).
fn open_fds_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[test]
fn completion_rule_3_open_futures_dropped_after_their_first_poll_leak_no_descriptor() {
    let path = std::env::temp_dir().join(format!("keel-{}-opens", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    let p: &'static str = Box::leak(path.to_str().unwrap().to_owned().into_boxed_str());
    let ex = pin!(Executor::new(RingDriver::new(RingConfig::default()).unwrap(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let before = open_fds_on(&path);
    assert_eq!(before, 0);
    let mut runs = Vec::new();
    for _ in 0..128 {
        runs.push(
            ex.attach(task(), async move {
                fs::open(p, OFlags::RDONLY, Mode::empty())
                    .await
                    .map(|f| f.fd() as u64)
                    .map_err(|_| keel_core::TaskError::Failed(1))
            })
            .unwrap(),
        );
    }
    // First poll of each: the opens are submitted...
    ex.run(128, Some(Duration::ZERO)).unwrap();
    // ...then every future is dropped (cancel of a suspended future drops nothing by
    // itself: it resumes, sees the cancel and abandons its op).
    for r in &runs {
        let _ = ex.cancel(*r);
    }
    run_all!(ex);
    for _ in 0..100 {
        if ex.with_driver(|d| d.in_flight()).unwrap() == 0 {
            break;
        }
        let _ = ex.run(1, Some(Duration::from_millis(5)));
    }
    assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
    assert_eq!(open_fds_on(&path), 0, "an abandoned open leaked its descriptor");
    let _ = std::fs::remove_file(path);
}

/// The same fiber body on the simulated driver and on the ring: its trace of results.
fn same_body<D: Driver>(
    f: &mut Fiber,
    make: &dyn Fn(u32) -> D::Op,
    log: &std::cell::RefCell<Vec<String>>,
) -> keel_core::TaskResult {
    for round in 0..3u32 {
        let a = pin!(IoStatus::new());
        let b = pin!(IoStatus::new());
        f.initiate::<D>(a.as_ref(), make(round * 2 + 1)).unwrap();
        f.initiate::<D>(b.as_ref(), make(round * 2 + 2)).unwrap();
        let mut n = 0;
        while n < 2 {
            n += f.suspend_until_completed_io(2)?;
        }
        log.borrow_mut().push(format!("round {round}: {:?} {:?}", a.result(), b.result()));
        f.yield_now()?;
    }
    Ok(0)
}

#[test]
fn the_same_task_code_gives_the_same_trace_on_the_simulator_and_the_ring() {
    let sim_log: &'static std::cell::RefCell<Vec<String>> = Box::leak(Box::default());
    let ring_log: &'static std::cell::RefCell<Vec<String>> = Box::leak(Box::default());
    {
        use keel_core::sim::{SimDriver, SimOp};
        let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks(1), Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            same_body::<SimDriver>(
                f,
                &|n| SimOp::new(n).after(Duration::from_micros(n as u64)).with_result(Ok(n * 100)),
                sim_log,
            )
        })
        .unwrap();
        run_all!(ex);
    }
    {
        let path = std::env::temp_dir().join(format!("keel-{}-same", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
        let data: &'static [u8] = Box::leak(vec![7u8; 1000].into_boxed_slice());
        let ex = pin!(
            Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(1), Config::default())
                .unwrap()
        );
        let ex = ex.into_ref();
        ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            let make = |n: u32| {
                let e = io_uring::opcode::Write::new(io_uring::types::Fd(fd), data.as_ptr(), n * 100)
                    .offset(n as u64 * 1000)
                    .build();
                // SAFETY: `data` is static and large enough.
                unsafe { RingOp::from_entry(e) }
            };
            same_body::<RingDriver>(f, &make, ring_log)
        })
        .unwrap();
        run_all!(ex);
        let _ = std::fs::remove_file(path);
    }
    assert_eq!(sim_log.borrow().len(), 3);
    assert_eq!(*sim_log.borrow(), *ring_log.borrow());
}

#[test]
fn a_fiber_returning_with_a_pipe_read_in_flight_drains_before_its_stack_is_reused() {
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let ex = pin!(
        Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(2), Config::default()).unwrap()
    );
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            // A read into this fiber's own stack, left in flight when the body returns.
            let mut on_stack = [0u8; 16];
            let st = Box::pin(IoStatus::new());
            let e = io_uring::opcode::Read::new(io_uring::types::Fd(rd), on_stack.as_mut_ptr(), 16).build();
            // SAFETY: keel holds this fiber's stack until the read is reaped (fiber rule 4).
            f.initiate::<RingDriver>(st.as_ref(), unsafe { RingOp::from_entry(e) }).unwrap();
            core::hint::black_box(&mut on_stack);
            Ok(9)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(keel_core::TaskState::Draining));
    let st = ex.stack_stats();
    assert_eq!(
        (st.in_use, st.spares),
        (1, 0),
        "the stack was pooled while the kernel could still write into it: {st:?}"
    );
    // Draining cancels the read (pump and dump) and reaps its completion; only then is
    // the stack pooled.
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(9))));
    let st = ex.stack_stats();
    assert_eq!((st.in_use, st.spares), (0, 1), "{st:?}");
    // The cancelled read took nothing from the pipe.
    // SAFETY: our pipe's write end, a static buffer.
    assert_eq!(unsafe { libc::write(wr, b"x".as_ptr().cast(), 1) }, 1);
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a local.
    assert_eq!(unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) }, 1);
    // SAFETY: our descriptors.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}

#[test]
fn dropping_an_executor_with_tasks_suspended_on_io_cancels_and_drains_them() {
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file: &'static keel_linux::File = Box::leak(Box::new(unsafe { keel_linux::File::from_raw_fd(rd) }));
    let t0 = std::time::Instant::now();
    {
        let ex = pin!(
            Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(2), Config::default())
                .unwrap()
        );
        let ex = ex.into_ref();
        ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            let mut b = [0u8; 8];
            f.read(file, &mut b, 0).map(u64::from).map_err(|_| keel_core::TaskError::Failed(1))
        })
        .unwrap();
        ex.attach(task(), async move {
            fs::read(file, vec![0; 8], 0).await.0.map(u64::from).map_err(|_| keel_core::TaskError::Failed(1))
        })
        .unwrap();
        ex.run(2, None).unwrap();
        assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 2);
    } // dropped here: both reads are cancelled and reaped before the ring goes
    assert!(t0.elapsed() < Duration::from_secs(5), "drop hung");
    // SAFETY: our descriptor.
    unsafe { libc::close(wr) };
}

/// Status blocks dropped with their read in flight, one after another at the same stack
/// address, on a driver allowed 4 operations in flight: each orphan's completion reaches
/// its task (never the memory, nor the next status at that address), the in-flight limit
/// holds for direct operations (the fifth initiate waits for room), and a last read at the
/// same address gets its own result.
#[test]
fn direct_rule_4_orphaned_status_blocks_at_one_address_never_see_each_others_completions() {
    static mut SINK: [u8; 1] = [0];
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let cfg = RingConfig { slots: 4, ..RingConfig::default() };
    let ex = pin!(Executor::with_stacks(RingDriver::new(cfg).unwrap(), stacks(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let mut most = 0;
            let mut addrs = std::collections::HashSet::new();
            for _ in 0..40 {
                let st = pin!(IoStatus::new());
                addrs.insert(&*st as *const IoStatus as usize);
                // A read of the empty pipe into a static: it stays in flight until cancelled.
                let e = io_uring::opcode::Read::new(io_uring::types::Fd(rd), (&raw mut SINK).cast(), 1).build();
                // SAFETY: the buffer is a static; the read never outlives the process.
                f.initiate::<RingDriver>(st.as_ref(), unsafe { RingOp::from_entry(e) }).unwrap();
                most = most.max(f.with_driver(|d: &mut keel_core::DriverMut<RingDriver>| d.in_flight()).unwrap());
                // `st` goes away here with its read in flight: orphaned and cancelled.
            }
            assert!(most <= 4, "{most} operations in flight on a driver allowed 4");
            assert_eq!(addrs.len(), 1, "the test wants every status at one address");
            // Let the last orphans' cancels land before writing, or one of them reads it.
            for _ in 0..10_000 {
                if f.with_driver(|d: &mut keel_core::DriverMut<RingDriver>| d.in_flight()) == Some(0) {
                    break;
                }
                f.yield_now().unwrap();
            }
            assert_eq!(
                f.with_driver(|d: &mut keel_core::DriverMut<RingDriver>| d.in_flight()),
                Some(0),
                "orphans still in flight"
            );
            let mut b = [0u8; 1];
            let st = pin!(IoStatus::new());
            // SAFETY: our pipe's write end, a static byte.
            assert_eq!(unsafe { libc::write(wr, b"k".as_ptr().cast(), 1) }, 1);
            let e = io_uring::opcode::Read::new(io_uring::types::Fd(rd), b.as_mut_ptr(), 1).build();
            // SAFETY: `b` outlives the read: the fiber waits for it below.
            f.initiate::<RingDriver>(st.as_ref(), unsafe { RingOp::from_entry(e) }).unwrap();
            assert_eq!(f.suspend_until_completed_io(1), Ok(1));
            assert_eq!(st.result(), Some(Ok(1)));
            assert_eq!(&b, b"k");
            Ok(most as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(4))), "the limit of 4 was reached and held");
    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert_eq!(st.stale, 0, "{st:?}");
    assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
    // SAFETY: our descriptors.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}

/// Opens initiated with a status block that is dropped before the ring even sees them:
/// the kernel opens the file anyway (the cancel comes after), and nobody will read the
/// descriptor, so the driver closes it (completion rule 3 for orphans).
#[test]
fn direct_rule_1_opens_whose_status_block_is_dropped_in_flight_leak_no_descriptor() {
    let path = std::env::temp_dir().join(format!("keel-{}-orphan-opens", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    let cpath: &'static std::ffi::CStr =
        Box::leak(std::ffi::CString::new(path.to_str().unwrap()).unwrap().into_boxed_c_str());
    let ex = pin!(
        Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(1), Config::default()).unwrap()
    );
    let ex = ex.into_ref();
    assert_eq!(open_fds_on(&path), 0);
    ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
        for _ in 0..64 {
            let st = pin!(IoStatus::new());
            let e = io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), cpath.as_ptr())
                .flags(libc::O_RDONLY | libc::O_CLOEXEC)
                .build();
            // SAFETY: the path is leaked: valid for the process's life.
            f.initiate::<RingDriver>(st.as_ref(), unsafe { RingOp::from_entry(e) }).unwrap();
        }
        Ok(0)
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
    assert_eq!(open_fds_on(&path), 0, "an orphaned open leaked its descriptor");
    let _ = std::fs::remove_file(path);
}

/// A task leaves a linked read at the SQ's tail (its chain still open) and drops another
/// status with its read in flight: the driver's cancel for that orphan must not join the
/// open chain (it would wait for the linked read, forever here), so the orphan is
/// cancelled and reaped while the linked read still waits.
#[test]
fn cancel_rule_1_the_drivers_own_sqes_never_join_a_tasks_open_link_chain() {
    let mut p1 = [0; 2];
    let mut p2 = [0; 2];
    // SAFETY: room for two descriptors each.
    assert_eq!(unsafe { libc::pipe(p1.as_mut_ptr()) + libc::pipe(p2.as_mut_ptr()) }, 0);
    let ex = pin!(
        Executor::with_stacks(RingDriver::new(RingConfig::default()).unwrap(), stacks(1), Config::default()).unwrap()
    );
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            static mut A: [u8; 1] = [0];
            static mut B: [u8; 1] = [0];
            let sl = pin!(IoStatus::new());
            {
                let sx = pin!(IoStatus::new());
                let x = io_uring::opcode::Read::new(io_uring::types::Fd(p2[0]), (&raw mut B).cast(), 1).build();
                let l = io_uring::opcode::Read::new(io_uring::types::Fd(p1[0]), (&raw mut A).cast(), 1).build();
                // SAFETY: both buffers are statics.
                f.initiate::<RingDriver>(sx.as_ref(), unsafe { RingOp::from_entry(x) }).unwrap();
                // SAFETY: as above.
                f.initiate::<RingDriver>(sl.as_ref(), unsafe { RingOp::from_entry(l) }.linked()).unwrap();
                // `sx` goes away here, its read in flight: orphaned, its cancel queued.
            }
            for _ in 0..10_000 {
                if f.with_driver(|d: &mut keel_core::DriverMut<RingDriver>| d.in_flight()) == Some(1) {
                    break;
                }
                f.yield_now().unwrap();
            }
            assert_eq!(
                f.with_driver(|d: &mut keel_core::DriverMut<RingDriver>| d.in_flight()),
                Some(1),
                "the orphan's cancel joined the open chain and never ran"
            );
            // SAFETY: our pipe's write end, a static byte.
            assert_eq!(unsafe { libc::write(p1[1], b"l".as_ptr().cast(), 1) }, 1);
            assert_eq!(f.suspend_until_completed_io(1), Ok(1));
            assert_eq!(sl.result(), Some(Ok(1)));
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    // SAFETY: our descriptors.
    unsafe {
        for fd in [p1[0], p1[1], p2[0], p2[1]] {
            libc::close(fd);
        }
    }
}

/// A burst of 64 receives that become ready at once is reaped in one pass, so the task
/// waiting on all of them is resumed once, with all 64. From kernel 6.13 one
/// `io_uring_enter` on a DEFER_TASKRUN ring posts at most 20 such completions (without
/// the reap's follow-up enters the task was resumed with 20); the reap enters again
/// while the kernel flags work as pending (`IORING_SQ_TASKRUN`).
#[test]
fn a_burst_of_64_ready_receives_is_reaped_in_one_pass() {
    const N: usize = 64;
    let pairs: Vec<[i32; 2]> = (0..N)
        .map(|_| {
            let mut fds = [0i32; 2];
            // SAFETY: `fds` has room for the two descriptors.
            let r =
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
            assert_eq!(r, 0);
            fds
        })
        .collect();
    let bufs: &'static mut [[u8; 8]; N] = Box::leak(Box::new([[0u8; 8]; N]));
    let cfg = RingConfig { entries: 128, cq_entries: 256, slots: 256, ..RingConfig::default() };
    let ex = pin!(
        Executor::with_stacks(
            RingDriver::new(cfg).unwrap(),
            stacks(1),
            Config { reap_batch: 256, ..Config::default() }
        )
        .unwrap()
    );
    let ex = ex.into_ref();
    let fds = pairs.clone();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let sts = pin!([const { IoStatus::new() }; N]);
            for (i, (st, buf)) in sts.iter().zip(bufs.iter_mut()).enumerate() {
                // SAFETY: the array is pinned on this fiber's stack until every op completes.
                let st = unsafe { core::pin::Pin::new_unchecked(st) };
                let e = io_uring::opcode::Recv::new(io_uring::types::Fd(fds[i][0]), buf.as_mut_ptr(), 8).build();
                // SAFETY: `buf` is leaked, so it outlives the receive.
                f.initiate::<RingDriver>(st, unsafe { RingOp::from_entry(e) }).unwrap();
            }
            // Two passes: the receives are submitted (nothing to read: they wait).
            f.yield_now()?;
            f.yield_now()?;
            assert!(sts.iter().all(|s| s.is_in_flight()), "nothing was written yet");
            for p in &fds {
                // SAFETY: writes one byte from a live buffer to an open socket.
                assert_eq!(unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) }, 1);
            }
            let first = f.suspend_until_completed_io(N)?;
            let mut rest = 0;
            while first + rest < N {
                rest += f.suspend_until_completed_io(N)?;
            }
            assert!(sts.iter().all(|s| s.result() == Some(Ok(1))));
            Ok(first as u64)
        })
        .unwrap();
    run_all!(ex);
    let (flags, stats) = ex.with_driver(|d| (d.flags(), d.stats())).unwrap();
    eprintln!("ring flags {flags:?}; reap follow-up enters: {}", stats.reap_follow_ups);
    assert_eq!(ex.result(t), Ok(Some(Ok(N as u64))), "the task was resumed with all 64 completions at once");
    for p in pairs {
        // SAFETY: closing descriptors this test opened.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
}

/// Kernel rule 4: each driver registers its ring's descriptor with its thread and gives the
/// registration back when it goes: a thread has 16 registration slots, and 40 drivers made
/// and dropped one after another each get one (a registration left behind would use them
/// up, and keep each dropped ring alive until the thread exits).
#[test]
fn each_driver_registers_its_ring_descriptor_and_gives_the_registration_back() {
    if net_util::ring_only("registering the ring's descriptor (IORING_REGISTER_RING_FDS)") {
        return;
    }
    for i in 0..40 {
        let d = RingDriver::new(RingConfig { backend: keel_linux::BackendChoice::Ring, ..RingConfig::default() })
            .expect("io_uring is available");
        assert!(d.ring_fd_registered(), "driver {i} got no registration slot");
    }
    // Seventeen alive at once: the sixteen slots go, and the next enters by descriptor.
    let alive: Vec<_> = (0..17)
        .map(|_| {
            RingDriver::new(RingConfig { backend: keel_linux::BackendChoice::Ring, ..RingConfig::default() }).unwrap()
        })
        .collect();
    assert_eq!(alive.iter().filter(|d| d.ring_fd_registered()).count(), 16);
}
