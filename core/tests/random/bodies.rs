//! The task bodies a program's operations become: one async body for futures, one for
//! fibers, both reporting to the shared model at each resume point.

use super::model::{Cur, Seen, Shared, us};
use super::program::{IoSpec, Op, TaskProg};
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::Poll;
use keel_core::sim::{SimDriverN, SimOp};
use keel_core::{
    Cancelled, Executor, Fiber, FiberAttrs, InitiateError, Instant, IoStatus, NextIo, RegionStacks, TaskHandle,
    initiate, io_status::next_completed_io, rt, suspend_until_completed_io,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub type D = SimDriverN<64, 1024>;
pub type Ex = Executor<D, RegionStacks>;
pub type Model = Rc<RefCell<Shared>>;

thread_local! {
    static EX: Cell<*const Ex> = const { Cell::new(core::ptr::null()) };
}

/// Makes `ex` the executor the bodies on this thread report about until the guard drops.
pub fn enter(ex: Pin<&Ex>) -> impl Drop {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            EX.with(|e| e.set(core::ptr::null()));
        }
    }
    EX.with(|e| e.set(ex.get_ref() as *const Ex));
    Leave
}

/// The executor the bodies report about; `None` once the harness has left it (its drop
/// resumes cancelled fibers to wind them down).
fn ex() -> Option<Pin<&'static Ex>> {
    let ptr = EX.with(Cell::get);
    // SAFETY: set by `enter` to a pinned executor that outlives the guard, and the bodies
    // run only inside that executor's `run`/`cancel`/drop, on this thread; the guard
    // clears it before the executor drops.
    (!ptr.is_null()).then(|| unsafe { Pin::new_unchecked(&*ptr) })
}

/// A body reached its next operation: checks priorities if this is a new resume (not
/// the same poll going on after an operation that did not suspend).
fn resumed(m: &Model, t: usize) {
    if let Some(ex) = ex() {
        let stats = ex.stats();
        m.borrow_mut().on_resume(t, stats.resumed, stats.ready);
    }
}

fn now() -> Instant {
    ex().map_or(Instant::ZERO, |ex| ex.now())
}

/// Up to four statuses pinned together.
type Statuses = [IoStatus; 4];

fn status(sts: Pin<&Statuses>, i: usize) -> Pin<&IoStatus> {
    // SAFETY: structural pinning: an element of a pinned array never moves either.
    unsafe { sts.map_unchecked(|a| &a[i]) }
}

/// After initiating: `Some(label)` if submitted, `None` if the driver refused it.
fn initiated<Op: core::fmt::Debug>(m: &Model, t: usize, r: Result<(), InitiateError<Op>>) -> Result<bool, Cancelled> {
    match r {
        Ok(()) => Ok(true),
        Err(InitiateError::Refused(_, _)) => Ok(false),
        Err(InitiateError::Cancelled(_)) => Err(Cancelled),
        Err(other) => {
            m.borrow_mut().fail(format!("task {t}: initiate failed with {other:?}"));
            Ok(false)
        }
    }
}

/// After all of a batch came back: each initiated status has its result, and no
/// completion is left over.
fn check_batch(m: &Model, t: usize, sts: Pin<&Statuses>, specs: &[IoSpec], live: &[bool], taken: usize) {
    let mut m = m.borrow_mut();
    let want = live.iter().filter(|l| **l).count();
    if taken != want {
        m.fail(format!("task {t}: took {taken} completions for {want} operations"));
    }
    for (i, spec) in specs.iter().enumerate() {
        let st = status(sts, i);
        if live[i] && (st.is_in_flight() || !m.result_ok(t, *spec, st.result())) {
            m.fail(format!("task {t}: status {i} of {spec:?} came back as {st:?}"));
        }
    }
}

/// Where `next_completed_io`'s answers stand for one `IoNext` batch.
struct NextBatch<'a> {
    sts: Pin<&'a Statuses>,
    specs: &'a [IoSpec],
    live: [bool; 4],
    timeout_us: u32,
    named: [bool; 4],
    got: usize,
    timeouts: u32,
}

impl<'a> NextBatch<'a> {
    fn new(sts: Pin<&'a Statuses>, specs: &'a [IoSpec], live: [bool; 4], timeout_us: u32) -> Self {
        NextBatch { sts, specs, live, timeout_us, named: [false; 4], got: 0, timeouts: 0 }
    }

    /// Checks one answer (the wait started at `start`); `false` once the batch is over.
    fn answer(&mut self, m: &Model, t: usize, start: Instant, next: NextIo) -> bool {
        let (sts, specs, live, timeout_us) = (self.sts, self.specs, self.live, self.timeout_us);
        let mut m = m.borrow_mut();
        match next {
            NextIo::Completed(c) => {
                m.count(Seen::NextCompleted);
                match (0..specs.len()).find(|&i| c.is(&status(sts, i))) {
                    Some(i) if live[i] && !self.named[i] => {
                        self.named[i] = true;
                        self.got += 1;
                        if !m.result_ok(t, specs[i], Some(c.result)) {
                            m.fail(format!(
                                "task {t}: next_completed_io named status {i} of {:?} with {:?}",
                                specs[i], c.result
                            ));
                        }
                    }
                    which => m.fail(format!("task {t}: next_completed_io named {which:?}, not a status in flight")),
                }
                true
            }
            NextIo::TimedOut => {
                m.count(Seen::NextTimedOut);
                self.timeouts += 1;
                let want = start.saturating_add(us(timeout_us));
                if timeout_us == 0 || now() != want {
                    m.fail(format!("task {t}: a {timeout_us}us wait from {start:?} timed out at {:?}", now()));
                    return false;
                }
                if (0..specs.len()).any(|i| live[i] && !self.named[i] && !status(sts, i).is_in_flight()) {
                    m.fail(format!("task {t}: next_completed_io timed out with a completion waiting"));
                }
                if self.timeouts > 10_000 {
                    m.fail(format!("task {t}: next_completed_io timed out 10,000 times"));
                    return false;
                }
                true
            }
            NextIo::Idle => {
                let want = live.iter().filter(|l| **l).count();
                if self.got != want {
                    m.fail(format!("task {t}: next_completed_io idle after {} of {want}", self.got));
                }
                false
            }
        }
    }
}

fn timeout_of(timeout_us: u32) -> Option<core::time::Duration> {
    (timeout_us > 0).then(|| us(timeout_us))
}

fn wake(m: &Model, t: usize, target: usize, via_executor: bool) {
    let handle = {
        let mut m = m.borrow_mut();
        m.waking(t, target);
        m.tasks[target].handle.or(Some(m.tasks[target].created))
    };
    if let Some(h) = handle {
        match ex() {
            Some(ex) if via_executor => ex.wake(h),
            _ => h.wake(),
        }
    }
}

/// Counts the drops of a task's body (it lives in the body: an argument of the future,
/// a capture of the fiber's closure).
pub struct DropGuard(pub Rc<Vec<Cell<u32>>>, pub usize);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let count = &self.0[self.1];
        count.set(count.get() + 1);
    }
}

/// Attaches task `t` of the program (`created` is its slot's handle) and records its run.
pub fn attach_task(m: &Model, t: usize, task: &TaskProg, created: TaskHandle) -> Result<TaskHandle, String> {
    let ex = ex().ok_or("attach outside the harness")?;
    let guard = DropGuard(m.borrow().drops.clone(), t);
    let h = if task.fiber {
        let attrs = FiberAttrs { stack_size: super::STACK, ..FiberAttrs::DEFAULT };
        ex.attach_fiber(created, attrs, fiber_body(m.clone(), t, task.ops.clone(), guard))
            .map_err(|e| format!("attach fiber {t}: {e:?}"))?
    } else {
        ex.attach(created, future_body(m.clone(), t, task.ops.clone(), guard))
            .map_err(|e| format!("attach {t}: {e:?}"))?
    };
    let mut m = m.borrow_mut();
    m.tasks[t].handle = Some(h);
    m.tasks[t].attach_resumptions = ex.task_times(h).map_err(|e| format!("{e:?}"))?.resumptions;
    Ok(h)
}

fn spawn(m: &Model, child: usize) {
    let spawner = m.borrow().spawner.clone();
    if let Some(spawn) = spawner {
        spawn(child);
    }
}

fn set_cur(m: &Model, t: usize, cur: Cur) {
    m.borrow_mut().tasks[t].cur = cur;
}

/// A future task running `ops`.
pub async fn future_body(m: Model, t: usize, ops: Vec<Op>, _drops: DropGuard) -> Result<(), Cancelled> {
    for op in ops {
        resumed(&m, t);
        match op {
            Op::Yield => rt::yield_now().await?,
            Op::Sleep(n) => {
                let (deadline, seq) = (now().saturating_add(us(n)), m.borrow_mut().arm(t));
                let r = rt::sleep(us(n)).await;
                set_cur(&m, t, Cur::Other);
                r?;
                m.borrow_mut().slept(t, deadline, seq, now(), n > 0);
            }
            Op::Wait => {
                set_cur(&m, t, Cur::Wait);
                let r = rt::wait().await;
                set_cur(&m, t, Cur::Other);
                r?;
            }
            Op::Wake(target, via) => wake(&m, t, target, via),
            Op::Spawn(child) => spawn(&m, child),
            Op::Io(specs) => {
                let sts = pin!([IoStatus::new(), IoStatus::new(), IoStatus::new(), IoStatus::new()]);
                let sts = sts.into_ref();
                let mut live = [false; 4];
                for (i, spec) in specs.iter().enumerate() {
                    let label = m.borrow_mut().label(t, *spec);
                    let op = SimOp::new(label).after(spec.latency()).with_result(spec.result);
                    live[i] = initiated(&m, t, initiate::<D>(status(sts, i), op).await)?;
                }
                let mut taken = 0;
                while taken < live.iter().filter(|l| **l).count() {
                    match suspend_until_completed_io(4).await? {
                        0 => break,
                        n => taken += n,
                    }
                }
                check_batch(&m, t, sts, &specs, &live, taken);
                if suspend_until_completed_io(4).await? != 0 {
                    m.borrow_mut().fail(format!("task {t}: a completion came back twice"));
                }
            }
            Op::IoNext(specs, timeout_us) => {
                let sts = pin!([IoStatus::new(), IoStatus::new(), IoStatus::new(), IoStatus::new()]);
                let sts = sts.into_ref();
                let mut live = [false; 4];
                for (i, spec) in specs.iter().enumerate() {
                    let label = m.borrow_mut().label(t, *spec);
                    let op = SimOp::new(label).after(spec.latency()).with_result(spec.result);
                    live[i] = initiated(&m, t, initiate::<D>(status(sts, i), op).await)?;
                }
                let mut batch = NextBatch::new(sts, &specs, live, timeout_us);
                loop {
                    let start = now();
                    let next = next_completed_io(timeout_of(timeout_us)).await?;
                    if !batch.answer(&m, t, start, next) {
                        break;
                    }
                }
                check_batch(&m, t, sts, &specs, &live, batch.got);
            }
            Op::Select(spec, n) => {
                let st = pin!(IoStatus::new());
                let label = m.borrow_mut().label(t, spec);
                let op = SimOp::new(label).after(spec.latency()).with_result(spec.result);
                if !initiated(&m, t, initiate::<D>(st.as_ref(), op).await)? {
                    continue;
                }
                let start = now();
                let (due, deadline) = (start.saturating_add(spec.latency()), start.saturating_add(us(n)));
                let mut io = pin!(suspend_until_completed_io(1));
                let mut sleep = pin!(rt::sleep(us(n)));
                let io_won = poll_fn(|cx| {
                    if let Poll::Ready(r) = io.as_mut().poll(cx) {
                        return Poll::Ready(r.map(|_| true));
                    }
                    sleep.as_mut().poll(cx).map(|r| r.map(|()| false))
                })
                .await?;
                let end = now();
                let mut m = m.borrow_mut();
                m.count(if io_won { Seen::SelectIoWon } else { Seen::SelectSleepWon });
                if end != due.min(deadline) || (io_won && due > deadline) || (!io_won && deadline > due) {
                    m.fail(format!(
                        "task {t}: select of i/o due {due:?} and sleep to {deadline:?} ended at {end:?} (i/o won: {io_won})"
                    ));
                }
                if io_won && !m.result_ok(t, spec, st.result()) {
                    m.fail(format!("task {t}: selected status of {spec:?} came back as {st:?}"));
                }
            }
            Op::JoinSleeps(a, b) => {
                let deadline = now().saturating_add(us(a.max(b)));
                let (mut x, mut y) = (pin!(rt::sleep(us(a))), pin!(rt::sleep(us(b))));
                let (mut dx, mut dy) = (None, None);
                poll_fn(|cx| {
                    if dx.is_none() {
                        dx = x.as_mut().poll(cx).map(Some).into_ready();
                    }
                    if dy.is_none() {
                        dy = y.as_mut().poll(cx).map(Some).into_ready();
                    }
                    if dx.is_some() && dy.is_some() { Poll::Ready(()) } else { Poll::Pending }
                })
                .await;
                dx.unwrap()?;
                dy.unwrap()?;
                m.borrow_mut().count(Seen::Joined);
                if now() != deadline {
                    m.borrow_mut().fail(format!("task {t}: joined sleeps {a}us and {b}us ended at {:?}", now()));
                }
            }
        }
    }
    resumed(&m, t);
    Ok(())
}

trait IntoReady<T> {
    fn into_ready(self) -> Option<T>;
}

impl<T> IntoReady<T> for Poll<Option<T>> {
    fn into_ready(self) -> Option<T> {
        match self {
            Poll::Ready(v) => v,
            Poll::Pending => None,
        }
    }
}

/// A fiber task running `ops` (futures-only operations are not drawn for fibers).
pub fn fiber_body(
    m: Model,
    t: usize,
    ops: Vec<Op>,
    drops: DropGuard,
) -> impl FnOnce(&mut Fiber) -> Result<(), Cancelled> {
    move |f: &mut Fiber| {
        let _drops = drops;
        for op in ops {
            resumed(&m, t);
            match op {
                Op::Yield => f.yield_now()?,
                Op::Sleep(n) => {
                    let (deadline, seq) = (f.now().saturating_add(us(n)), m.borrow_mut().arm(t));
                    let r = f.sleep(us(n));
                    set_cur(&m, t, Cur::Other);
                    r?;
                    m.borrow_mut().slept(t, deadline, seq, f.now(), n > 0);
                }
                Op::Wait => {
                    set_cur(&m, t, Cur::Wait);
                    let r = f.wait();
                    set_cur(&m, t, Cur::Other);
                    r?;
                }
                Op::Wake(target, via) => wake(&m, t, target, via),
                Op::Spawn(child) => spawn(&m, child),
                Op::Io(specs) => {
                    let sts = pin!([IoStatus::new(), IoStatus::new(), IoStatus::new(), IoStatus::new()]);
                    let sts = sts.into_ref();
                    let mut live = [false; 4];
                    for (i, spec) in specs.iter().enumerate() {
                        let label = m.borrow_mut().label(t, *spec);
                        let op = SimOp::new(label).after(spec.latency()).with_result(spec.result);
                        live[i] = initiated(&m, t, f.initiate::<D>(status(sts, i), op))?;
                    }
                    let mut taken = 0;
                    while taken < live.iter().filter(|l| **l).count() {
                        match f.suspend_until_completed_io(4)? {
                            0 => break,
                            n => taken += n,
                        }
                    }
                    check_batch(&m, t, sts, &specs, &live, taken);
                    if f.suspend_until_completed_io(4)? != 0 {
                        m.borrow_mut().fail(format!("task {t}: a completion came back twice"));
                    }
                }
                Op::IoNext(specs, timeout_us) => {
                    let sts = pin!([IoStatus::new(), IoStatus::new(), IoStatus::new(), IoStatus::new()]);
                    let sts = sts.into_ref();
                    let mut live = [false; 4];
                    for (i, spec) in specs.iter().enumerate() {
                        let label = m.borrow_mut().label(t, *spec);
                        let op = SimOp::new(label).after(spec.latency()).with_result(spec.result);
                        live[i] = initiated(&m, t, f.initiate::<D>(status(sts, i), op))?;
                    }
                    let mut batch = NextBatch::new(sts, &specs, live, timeout_us);
                    loop {
                        let start = f.now();
                        let next = f.next_completed_io(timeout_of(timeout_us))?;
                        if !batch.answer(&m, t, start, next) {
                            break;
                        }
                    }
                    check_batch(&m, t, sts, &specs, &live, batch.got);
                }
                Op::Select(..) | Op::JoinSleeps(..) => {}
            }
        }
        resumed(&m, t);
        Ok(())
    }
}
