//! A walk through keel on a real clock and a real io_uring: priorities, timers,
//! cancellation, future tasks, fibers on three switchers, and file and socket i/o.
//!
//! `cargo run --release --example tour` (it takes no arguments but `--help`)

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    CancelOutcome, Config, Executor, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot, TaskState, rt,
};
use keel_core::{Fiber, FiberAttrs, SwitcherKind};
use keel_linux::fs::{self, FiberFs, Mode, OFlags};
use keel_linux::net::{AddressFamily, SocketType};
use keel_linux::{MmapStacks, RingConfig, RingDriver, SleepDriver};
use std::cell::RefCell;
use std::io::Write as _;

static SLOTS: [TaskSlot<1024>; 16] = [const { TaskSlot::new() }; 16];

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn say(line: String) {
    println!("  {line}");
    LOG.with(|l| l.borrow_mut().push(line));
}

fn create(i: usize, cpu: Priority, name: &'static str) -> TaskHandle {
    SLOTS[i].create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name }).expect("fresh slot")
}

const USAGE: &str = "\
usage: tour [-h | --help]

A walk through keel on a real clock and a real io_uring: priorities, timers, cancellation,
future tasks, fibers on three switchers, file and socket i/o. Each step prints what it saw
and checks it. It takes no arguments.";

/// Handles the command line: `--help` prints the usage and exits 0; anything else exits 2
/// with one line on stderr.
fn command_line(args: impl IntoIterator<Item = std::ffi::OsString>) {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut help = false;
    let e = loop {
        match p.next() {
            Ok(None) if help => {
                // A closed stdout (`| head -1`) is not an error of the command line.
                let _ = writeln!(std::io::stdout(), "{USAGE}");
                std::process::exit(0);
            }
            Ok(None) => return,
            Ok(Some(Short('h') | Long("help"))) => help = true,
            Ok(Some(arg)) => break arg.unexpected(),
            Err(e) => break e,
        }
    };
    eprintln!("tour: {e}; the tour takes no arguments but --help (see `tour --help`)");
    std::process::exit(2);
}

fn main() {
    command_line(std::env::args_os().skip(1));
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).expect("default config is valid"));
    let ex = ex.into_ref();
    let start = ex.now();
    let ms = move |ex: core::pin::Pin<&Executor<SleepDriver>>| ex.now().saturating_since(start).as_millis();

    println!("1. priorities: attached low, normal, high; the run loop takes high first, FIFO within a level");
    for (i, (p, name)) in
        [(Priority::Low, "low"), (Priority::Normal, "normal"), (Priority::High, "high")].into_iter().enumerate()
    {
        ex.attach(create(i, p, name), async move {
            say(format!("{name} runs"));
            rt::yield_now().await?;
            say(format!("{name} runs again after yielding"));
            Ok(0)
        })
        .unwrap();
    }
    while ex.attached() > 0 {
        ex.run(64, None).unwrap();
    }

    println!("2. timers on the monotonic clock: three sleepers, woken in deadline order");
    let mut sleepers = Vec::new();
    for (i, d) in [(3usize, 30u64), (4, 10), (5, 20)] {
        let h = ex
            .attach(create(i, Priority::Normal, "sleeper"), async move {
                rt::sleep(Duration::from_millis(d)).await?;
                say(format!("slept {d} ms"));
                Ok(d)
            })
            .unwrap();
        sleepers.push(h);
    }
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(1))).unwrap();
    }
    println!(
        "  all woke by {} ms; results {:?}",
        ms(ex),
        sleepers.iter().map(|&h| ex.result(h).unwrap()).collect::<Vec<_>>()
    );

    println!("3. cancellation: a task sleeping for an hour is cancelled; its sleep returns Cancelled");
    let long = ex
        .attach(create(6, Priority::Normal, "hour"), async {
            match rt::sleep(Duration::from_secs(3600)).await {
                Ok(()) => say("slept an hour (should not happen)".into()),
                Err(c) => say(format!("sleep ended early: {c}")),
            }
            Ok(0)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    println!("  state before cancel: {:?}", ex.state(long).unwrap());
    assert_eq!(ex.cancel(long), Ok(CancelOutcome::Resumes));
    ex.run(1, None).unwrap();
    println!("  state after: {:?}, result {:?}, {} ms in", ex.state(long).unwrap(), ex.result(long).unwrap(), ms(ex));
    assert_eq!(ex.state(long), Ok(TaskState::Completed));

    println!("4. reuse: one task slot, 1000 runs, each a new future with its own result");
    let mut h = create(7, Priority::Normal, "reused");
    let mut sum = 0;
    for i in 0..1000u64 {
        h = ex.attach(h, async move { i }).unwrap();
        ex.run(1, None).unwrap();
        sum += ex.result(h).unwrap().unwrap().unwrap();
    }
    println!("  sum of results {sum}");
    let s = ex.stats();
    println!(
        "5. executor stats: {} resumptions ({:?} by priority), {} completed, {} timers fired, {} parks",
        s.resumed, s.per_priority, s.completed, s.timers_fired, s.parks
    );
    let lines = LOG.with(|l| l.borrow().len());
    assert!(lines >= 10);
    ring_tour();
}

/// Fibers and file i/o on the io_uring driver.
fn ring_tour() {
    let ring = RingDriver::new(RingConfig::default()).expect("io_uring");
    println!(
        "6. the io_uring driver: flags {:?}, realtime I/O class allowed: {}",
        ring.flags(),
        ring.realtime_ioprio()
    );
    let stacks = MmapStacks::new().expect("mmap stacks");
    let ex = Executor::with_stacks(ring, stacks, keel_linux::panic::config()).expect("config");
    // This executor accounts time from the TSC (the others in the tour do not: no clock
    // reads on their hot path).
    let ex = pin!(ex.with_accounting::<keel_core::TscAccounting>());
    let ex = ex.into_ref();
    let cal = keel_linux::tsc::Calibration::new();
    println!("   time accounting: {:?} at {} Hz", cal.source, cal.hz);
    ex.set_tick_scale(cal.scale());
    let dir = std::env::temp_dir().join(format!("keel-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::ffi::CString::new(dir.join("journal").to_str().unwrap()).unwrap();
    let path2 = dir.join("journal").to_str().unwrap().to_owned();

    println!("7. three switchers on one executor: a future, a fiber on keel's asm switch, a fiber on ucontext");
    let fut = ex
        .attach(create(8, Priority::Normal, "future"), async {
            for i in 0..2 {
                say(format!("future step {i}"));
                rt::yield_now().await?;
            }
            Ok(1)
        })
        .unwrap();
    let asm = ex
        .attach_fiber(create(9, Priority::Normal, "asm fiber"), FiberAttrs::default(), |f: &mut Fiber| {
            for i in 0..2 {
                say(format!("asm fiber step {i}"));
                f.yield_now()?;
            }
            Ok(2)
        })
        .unwrap();
    let uc = ex
        .attach_fiber_with::<keel_linux::ucontext::UcontextSwitch, _, _>(
            create(10, Priority::Normal, "ucontext fiber"),
            FiberAttrs::default(),
            |f: &mut Fiber| {
                for i in 0..2 {
                    say(format!("ucontext fiber step {i}"));
                    f.yield_now()?;
                }
                Ok(3)
            },
        )
        .unwrap();
    for (h, k) in [(fut, SwitcherKind::Stackless), (asm, SwitcherKind::Fiber), (uc, SwitcherKind::Custom)] {
        assert_eq!(ex.switcher(h), Ok(Some(k)));
    }
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(1))).unwrap();
    }

    println!(
        "8. file i/o: a high-I/O-priority fiber writes, syncs durably and reads back; a low-priority timer ticks beside it"
    );
    let writer = SLOTS[11]
        .create(TaskAttrs { priority: Priorities { cpu: Priority::High, io: Priority::High }, name: "writer" })
        .unwrap();
    let w = ex
        .attach_fiber(writer, FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let file = f
                .open(&path, OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC, Mode::from_raw_mode(0o644))
                .map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            let line = b"keel was here\n";
            let n = f.write(&file, line, 0).map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            say(format!("fiber wrote {n} bytes"));
            f.fdatasync(&file).map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            say("fiber: fdatasync done (durable)".into());
            let mut back = [0u8; 64];
            let n = f.read(&file, &mut back, 0).map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            say(format!("fiber read back {:?}", std::str::from_utf8(&back[..n as usize]).unwrap()));
            f.close(file).map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            Ok(n as u64)
        })
        .unwrap();
    let ticker = ex
        .attach(create(12, Priority::Low, "ticker"), async {
            for i in 0..3 {
                rt::sleep(Duration::from_millis(2)).await?;
                say(format!("low-priority timer tick {i}"));
            }
            Ok(0)
        })
        .unwrap();
    let reader = ex
        .attach(create(13, Priority::Normal, "future reader"), async move {
            rt::sleep(Duration::from_millis(10)).await?;
            let file = fs::open(&path2, OFlags::RDONLY, Mode::empty())
                .await
                .map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            let (r, buf) = fs::read(&file, Vec::with_capacity(64), 0).await;
            say(format!("future read {:?} bytes by ownership: {:?}", r, String::from_utf8_lossy(&buf)));
            fs::close(file).await.map_err(|e| keel_core::TaskError::Failed(e.0 as i64))?;
            Ok(buf.len() as u64)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(1))).unwrap();
    }
    assert_eq!(ex.result(w), Ok(Some(Ok(14))));
    assert_eq!(ex.result(reader), Ok(Some(Ok(14))));
    assert_eq!(ex.result(ticker), Ok(Some(Ok(0))));
    let s = ex.stats();
    let st = ex.stack_stats();
    let rs = ex.with_driver(|d| d.stats()).unwrap();
    println!(
        "9. stats: {} i/o submitted, {} completed; stacks created {} reused {}; ring enters {}",
        s.io_submitted, s.io_completed, st.created, st.reused, rs.enters
    );
    let e = ex.exec_times();
    println!(
        "10. accounting: executor {} us in task code, {} us in its run loop, {} us parked; by priority {:?}",
        e.task_ns / 1000,
        e.loop_ns / 1000,
        e.parked_ns / 1000,
        e.per_priority
    );
    let t = ex.task_times(w).unwrap();
    println!(
        "    the writer fiber: {} resumptions, ran {} us (longest {} us), suspended {} us, ready-waiting {} us, {} i/o initiated, {} completed",
        t.resumptions,
        t.running_ns / 1000,
        t.longest_run_ns / 1000,
        t.suspended_ns / 1000,
        t.ready_wait_ns / 1000,
        t.io_initiated,
        t.io_completed
    );
    let _ = std::fs::remove_dir_all(dir);
    net_tour();
}

/// Step 11, a loopback exchange on the ring: a fiber server (socket, bind, listen, accept,
/// recv, send) and a future client (socket, connect, send, shutdown(write), recv to the end).
fn net_tour() {
    use keel_linux::net::{self, FiberNet, SockAddr, Socket};
    use std::cell::Cell;
    use std::rc::Rc;
    let ex = pin!(
        Executor::with_stacks(
            RingDriver::new(RingConfig::default()).unwrap(),
            MmapStacks::new().unwrap(),
            keel_linux::panic::config()
        )
        .unwrap()
    );
    let ex = ex.into_ref();
    let slot = || Box::leak(Box::new(TaskSlot::<4096>::new())).create(TaskAttrs::default()).unwrap();
    let addr = Rc::new(Cell::new(None));
    let a = addr.clone();
    let server = ex
        .attach_fiber(slot(), FiberAttrs::default(), move |f: &mut Fiber| {
            let l = f.socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            f.bind(&l, &SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())).unwrap();
            f.listen(&l, 16).unwrap();
            a.set(net::local_addr(&l).ok());
            let c = f.accept(&l).unwrap();
            let mut buf = [0u8; 64];
            let mut got = 0;
            while let Ok(n @ 1..) = f.recv(&c, &mut buf[got..]) {
                got += n as usize;
            }
            f.send_all(&c, &buf[..got]).unwrap();
            f.close_socket(c).unwrap();
            f.close_socket(l).unwrap();
            got as u64
        })
        .unwrap();
    while addr.get().is_none() {
        ex.run(16, Some(Duration::from_secs(1))).unwrap();
    }
    let to = addr.get().unwrap();
    let client = ex
        .attach(slot(), async move {
            let s: Socket = net::future::socket(AddressFamily::INET, SocketType::STREAM, None).await.unwrap();
            net::future::connect(&s, &to).await.unwrap();
            let (r, _) = net::future::send_all(&s, b"ping over loopback".to_vec()).await;
            r.unwrap();
            net::future::shutdown(&s, net::Shutdown::Write).await.unwrap();
            let (r, buf) = net::future::recv(&s, Vec::with_capacity(64)).await;
            say(format!(
                "11. net: the future client got {:?} back from the fiber server ({r:?})",
                String::from_utf8_lossy(&buf)
            ));
            net::future::close_socket(s).await.unwrap();
            buf.len() as u64
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(1))).unwrap();
    }
    assert_eq!(ex.result(server), Ok(Some(Ok(18))));
    assert_eq!(ex.result(client), Ok(Some(Ok(18))));
}
