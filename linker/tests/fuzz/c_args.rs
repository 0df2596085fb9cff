//! Fuzz harness: the C API's argument handling. A byte string is read as calls on
//! keel's C functions with fuzzed arguments from the safe subset, the values a C caller
//! can pass without undefined behaviour: NULL or valid pointers, the handles keel gave
//! out (current, stale by generation, or the null handle), any lengths, flags,
//! priorities, stack sizes, timeouts and result codes, and descriptors no file uses
//! (negative, or far above any open one), never a pointer keel did not make. Executors
//! with and without a ring; task functions that yield, sleep, make i/o calls with bad
//! arguments, call on another task's behalf, and return any 64-bit value.
//!
//! Checked: nothing panics (`-KEEL_EPANICKED` from a call is a failure); every result is
//! `>= 0` or a code in `-KEEL_ERRNO_MAX..=-1` with a non-empty `keel_strerror`; NULL or
//! stale arguments get the documented code; a run's result is what its function
//! returned, mapped by body rule 3, or `-ECANCELED` only if it was cancelled; a task's
//! result survives its executor (task rule 4); at the end every task and executor
//! destroys once, then is stale.
//!
//! Used by the cargo-fuzz target `c_args` (fuzz/) and its proptest twin
//! (linker/tests/fuzz_c_args.rs).

use super::bytes::Bytes;
use core::ffi::{CStr, c_void};
use core::ptr::{null, null_mut};
use keel::*;
use std::cell::Cell;

/// A descriptor no file uses (far above any the process opens).
const NO_FD: i32 = 1 << 29;
/// Tasks a program makes at most.
const TASKS: usize = 4;
/// Calls a program makes at most.
pub const MAX_CALLS: usize = 128;

/// What a task function does, and what it saw.
struct Script {
    steps: Vec<u8>,
    ret: i64,
    /// The task handle of another task (calls on its behalf get `-KEEL_ENOTINTASK`).
    other: keel_task,
    returned: Cell<Option<i64>>,
    fail: Cell<Option<&'static str>>,
    cancelled_seen: Cell<bool>,
}

fn code_ok(r: i64) -> bool {
    if r >= 0 {
        return true;
    }
    if r == -KEEL_EPANICKED || r < -KEEL_ERRNO_MAX {
        return false;
    }
    // SAFETY: keel_strerror returns a static NUL-terminated string for any code.
    let s = unsafe { CStr::from_ptr(keel_strerror(r)) };
    !s.to_bytes().is_empty()
}

/// One i/o call with arguments from the safe subset; every result must be a typed code.
fn bad_io(task: keel_task, which: u8, len: usize) -> i64 {
    let fd = if which & 0x80 != 0 { -1 } else { NO_FD };
    // SAFETY: every pointer is NULL or a valid local; `fd` names no open file.
    unsafe {
        match which % 12 {
            0 => keel_file_read(task, fd, null_mut(), len, 0),
            1 => keel_file_write(task, fd, null(), len, 0),
            2 => keel_file_open(task, null(), 0, 0),
            3 => keel_file_readv(task, fd, null(), (len % 4) as i32 - 1, 0),
            4 => keel_file_fsync(task, fd),
            5 => keel_socket_bind(task, fd, null(), len as u32),
            6 => keel_socket_recv(task, fd, null_mut(), len, 0),
            7 => keel_socket_send(task, fd, null(), len, 0),
            8 => keel_io_status_init(task, null_mut()),
            9 => keel_task_suspend_until_completed_io(task, len),
            10 => keel_buffer_claim(task, null_mut()),
            _ => {
                let mut buf = [0u8; 16];
                keel_file_read(task, fd, buf.as_mut_ptr().cast(), buf.len(), 0)
            }
        }
    }
}

unsafe extern "C-unwind" fn body(task: keel_task, user: *mut c_void) -> i64 {
    // SAFETY: `user` is the harness's `Script`, alive until the harness ends (after every
    // executor is destroyed).
    let s = unsafe { &*(user as *const Script) };
    for (i, &step) in s.steps.iter().enumerate() {
        let r = match step % 5 {
            0 => keel_task_yield(task),
            1 => keel_task_suspend_for(task, (step as u64) << 10),
            2 => bad_io(task, step.rotate_left(3) ^ i as u8, (step as usize) << (i % 40)),
            3 => match keel_task_yield(s.other) {
                r if r == -KEEL_ENOTINTASK || r == -(libc::ESTALE as i64) => 0,
                _ => {
                    s.fail.set(Some("a call on another task's behalf was not refused"));
                    0
                }
            },
            _ => keel_task_suspend_for(task, 0),
        };
        if !code_ok(r) {
            s.fail.set(Some("a task-side call gave an untyped result or panicked"));
        }
        if r == -(libc::ECANCELED as i64) {
            s.cancelled_seen.set(true);
            if step & 0x40 == 0 {
                s.returned.set(Some(r));
                return r;
            }
        }
    }
    s.returned.set(Some(s.ret));
    s.ret
}

/// Body rule 3.
fn mapped(ret: i64) -> i64 {
    if ret >= 0 || (-KEEL_ERRNO_MAX..=-1).contains(&ret) { ret } else { -KEEL_EBADRESULT }
}

struct TaskView {
    handle: keel_task,
    stale: keel_task,
    /// The run's script and whether it was cancelled.
    run: Option<(usize, bool)>,
}

/// What a program did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub calls: usize,
    pub runs: u64,
    pub errors: u64,
    pub ring: bool,
}

struct Harness {
    ex: keel_executor,
    tasks: Vec<TaskView>,
    /// Boxed: each run's function holds its script's address while the vector grows.
    #[allow(clippy::vec_box)]
    scripts: Vec<Box<Script>>,
    out: Outcome,
}

fn null_task() -> keel_task {
    keel_task { storage: null_mut(), generation: 0 }
}

impl Harness {
    fn expect(&mut self, what: &str, r: i64, allowed: &[i64]) -> Result<i64, String> {
        if !code_ok(r) || (r < 0 && !allowed.is_empty() && !allowed.contains(&r)) {
            return Err(format!("{what} gave {r}, allowed {allowed:?}"));
        }
        if r < 0 {
            self.out.errors += 1;
        }
        Ok(r)
    }

    fn pick(&self, b: &mut Bytes) -> (usize, keel_task) {
        let i = b.below(TASKS);
        let t = &self.tasks[i];
        (
            i,
            match b.u8() % 8 {
                0 => t.stale,
                1 => null_task(),
                2 => keel_task {
                    storage: t.handle.storage,
                    generation: t.handle.generation.wrapping_add(1 + b.u8() as u64),
                },
                _ => t.handle,
            },
        )
    }

    fn attach(&mut self, b: &mut Bytes) -> Result<(), String> {
        let (i, t) = self.pick(b);
        let steps: Vec<u8> = (0..b.below(6)).map(|_| b.u8()).collect();
        let ret = match b.u8() % 4 {
            0 => b.u8() as i64,
            1 => -(1 + b.below(200) as i64),
            2 => b.u64() as i64,
            _ => -KEEL_ERRNO_MAX - 1 - b.u8() as i64,
        };
        let other = self.tasks[(i + 1) % TASKS].handle;
        let s = Box::new(Script {
            steps,
            ret,
            other,
            returned: Cell::new(None),
            fail: Cell::new(None),
            cancelled_seen: Cell::new(false),
        });
        let user = &*s as *const Script as *mut c_void;
        let f: keel_task_fn = if b.u8().is_multiple_of(16) { None } else { Some(body) };
        self.scripts.push(s);
        let current = t.storage == self.tasks[i].handle.storage && t.generation == self.tasks[i].handle.generation;
        if current {
            // Read before an attach replaces the result.
            self.check_last(i)?;
        }
        let r = keel_task_attach(self.ex, t, f, user);
        let r = self.expect(
            "keel_task_attach",
            r,
            &[-(libc::ESTALE as i64), -(libc::EINVAL as i64), -(libc::EBUSY as i64)],
        )?;
        if r == 0 {
            if !current || f.is_none() {
                return Err("keel_task_attach accepted a stale, null or function-less call".into());
            }
            self.tasks[i].run = Some((self.scripts.len() - 1, false));
            self.out.runs += 1;
        }
        Ok(())
    }

    /// The task's last run, if it completed: its result is what its function returned
    /// (mapped), or `-ECANCELED` if it was cancelled.
    fn check_last(&self, i: usize) -> Result<(), String> {
        let Some((si, cancelled)) = self.tasks[i].run else { return Ok(()) };
        let s = &self.scripts[si];
        if let Some(why) = s.fail.get() {
            return Err(why.into());
        }
        let r = keel_task_result(self.tasks[i].handle);
        if r == -(libc::EINPROGRESS as i64) {
            return Ok(());
        }
        match s.returned.get() {
            Some(ret) if r == mapped(ret) => Ok(()),
            None if r == -(libc::ECANCELED as i64) && cancelled => Ok(()),
            other => {
                Err(format!("task {i}'s function returned {other:?} (cancelled: {cancelled}) but its result is {r}"))
            }
        }
    }

    fn step(&mut self, b: &mut Bytes) -> Result<(), String> {
        match b.u8() % 10 {
            0..=2 => self.attach(b)?,
            3 => {
                let (i, t) = self.pick(b);
                let r = keel_task_cancel(t);
                let allowed = [-(libc::ESTALE as i64), -(libc::EINVAL as i64), -(libc::EALREADY as i64)];
                if self.expect("keel_task_cancel", r, &allowed)? == 0
                    && let Some(run) = self.tasks[i].run.as_mut()
                {
                    run.1 = true;
                }
            }
            4 => {
                let (i, t) = self.pick(b);
                let r = keel_task_result(t);
                self.expect("keel_task_result", r, &[])?;
                if t.generation == self.tasks[i].handle.generation && t.storage == self.tasks[i].handle.storage {
                    self.check_last(i)?;
                }
            }
            5 | 6 => {
                let max = if b.u8().is_multiple_of(8) { 0 } else { 1 + b.below(16) };
                // Never `KEEL_NO_TIMEOUT`: with a ring, an executor with nothing to do
                // waits for other threads' posts for as long as it is told to.
                let timeout = [0, 1000, 1_000_000, 20_000_000][b.below(4)];
                // Ringless, with every task waiting on nothing: `-KEEL_ESTALLED`.
                let r = keel_executor_run(self.ex, max, timeout);
                let allowed = [-(libc::EINVAL as i64), -(libc::ETIME as i64), -KEEL_ESTALLED];
                self.expect("keel_executor_run", r, &allowed)?;
                if max == 0 && r != -(libc::EINVAL as i64) {
                    return Err(format!("keel_executor_run with max_items 0 gave {r}"));
                }
            }
            7 => {
                // Output pointers NULL: EINVAL, nothing written.
                // SAFETY: NULL out-pointers, which keel checks.
                let rs = unsafe {
                    [
                        keel_executor_get_stats(self.ex, null_mut()),
                        keel_executor_get_times(self.ex, null_mut()),
                        keel_task_create(null(), null_mut()),
                        keel_task_init(null_mut(), b.u64() as usize, null(), null_mut()),
                        keel_executor_create(null(), null_mut()),
                    ]
                };
                for r in rs {
                    self.expect("a NULL out-pointer", r, &[-(libc::EINVAL as i64)])?;
                }
            }
            8 => {
                let (_, t) = self.pick(b);
                // Refused, whichever check comes first (a NULL buffer's -EFAULT, a stale
                // handle's -ESTALE, -KEEL_ENOTINTASK): never submitted.
                let r = bad_io(t, b.u8(), b.u64() as usize);
                if self.expect("an i/o call outside its task", r, &[])? >= 0 {
                    return Err(format!("an i/o call outside its task gave {r}"));
                }
            }
            _ => {
                let code = b.u64() as i64;
                // SAFETY: keel_strerror returns a static NUL-terminated string.
                if keel_strerror(code).is_null() || unsafe { CStr::from_ptr(keel_strerror(code)) }.is_empty() {
                    return Err(format!("keel_strerror({code}) is empty"));
                }
            }
        }
        Ok(())
    }

    /// Cancels every run and runs the executor down (or destroys it with tasks attached),
    /// checks every result, then destroys each task and the executor once.
    fn finish(&mut self, teardown: bool) -> Result<(), String> {
        if !teardown {
            for i in 0..TASKS {
                if keel_task_cancel(self.tasks[i].handle) == 0
                    && let Some(run) = self.tasks[i].run.as_mut()
                {
                    run.1 = true;
                }
            }
            for _ in 0..1000 {
                if keel_executor_attached(self.ex) == 0 {
                    break;
                }
                let r = keel_executor_run(self.ex, 64, 10_000_000);
                self.expect("keel_executor_run after cancelling all", r, &[-(libc::ETIME as i64)])?;
            }
            if keel_executor_attached(self.ex) != 0 {
                return Err("tasks still attached after cancelling all".into());
            }
        } else {
            // Task rule 4: what a run returned, or -ECANCELED, survives the executor.
            for t in &mut self.tasks {
                if let Some(run) = t.run.as_mut() {
                    run.1 = true;
                }
            }
        }
        let r = keel_executor_destroy(self.ex);
        self.expect("keel_executor_destroy", r, &[])?;
        if keel_executor_destroy(self.ex) != -(libc::ESTALE as i64) || keel_executor_attached(self.ex) >= 0 {
            return Err("a destroyed executor's handle is not stale".into());
        }
        for i in 0..TASKS {
            self.check_last(i)?;
            let h = self.tasks[i].handle;
            self.expect("keel_task_destroy", keel_task_destroy(h), &[])?;
            if keel_task_destroy(h) != -(libc::ESTALE as i64) || keel_task_result(h) != -(libc::ESTALE as i64) {
                return Err("a destroyed task's handle is not stale".into());
            }
        }
        Ok(())
    }
}

/// Plays `data` as calls on the C API; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let mut b = Bytes::new(data);
    let ring = b.u8().is_multiple_of(2);
    let teardown = b.u8().is_multiple_of(4);
    let attr = keel_executor_attr { ring_entries: if ring { 8 } else { 0 }, ..Default::default() };
    let mut ex = keel_executor { storage: null_mut(), generation: 0 };
    // SAFETY: valid attributes and out-pointer.
    let r = unsafe { keel_executor_create(&attr, &mut ex) };
    if r != 0 {
        return Err(format!("keel_executor_create: {r}"));
    }
    let mut h = Harness { ex, tasks: Vec::new(), scripts: Vec::new(), out: Outcome { ring, ..Outcome::default() } };
    for _ in 0..TASKS {
        let mut a = keel_task_attr {
            cpu_priority: b.u8() % 4,
            io_priority: b.u8() % 4,
            switcher: b.u8() % 3,
            stack_size: [0, 1, 32 * 1024, 16 * 1024 + 1, 65536 + 123][b.below(5)],
        };
        let mut t = null_task();
        // SAFETY: valid attributes and out-pointer.
        let r = unsafe { keel_task_create(&a, &mut t) };
        let bad = a.cpu_priority > 2 || a.io_priority > 2 || a.switcher > 1 || a.stack_size == 1;
        if (r != 0) != bad || (r != 0 && r != -(libc::EINVAL as i64)) {
            return Err(format!("keel_task_create({a:?}) gave {r}"));
        }
        if r != 0 {
            a = keel_task_attr::default();
            // SAFETY: as above.
            if unsafe { keel_task_create(&a, &mut t) } != 0 {
                return Err("keel_task_create with default attributes failed".into());
            }
        }
        // A handle made stale by a destroy: its storage is reused by the next create.
        let stale = t;
        let r = keel_task_destroy(t);
        // SAFETY: as above.
        if r != 0 || unsafe { keel_task_create(&a, &mut t) } != 0 {
            return Err(format!("destroy then create again: {r}"));
        }
        h.tasks.push(TaskView { handle: t, stale, run: None });
    }
    let mut calls = 0;
    while !b.is_empty() && calls < MAX_CALLS {
        calls += 1;
        h.step(&mut b).map_err(|why| format!("call {calls}: {why}"))?;
    }
    h.out.calls = calls;
    h.finish(teardown)
        .map_err(|why| format!("at the end ({}): {why}", if teardown { "teardown" } else { "wind-down" }))?;
    Ok(h.out)
}
