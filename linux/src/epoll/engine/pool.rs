//! The blocking pool: a few threads that perform the engine's file operations (regular
//! files, block devices, directories, open/close/statx/...), which epoll cannot wait for.
//!
//! Pool rules (cited as "pool rule N"):
//! 1. At most `threads` threads, started on demand (a job finding no idle thread starts
//!    one), so an engine that never touches a file starts none.
//! 2. Queued jobs run in I/O priority order: the realtime class first, then best-effort
//!    levels 0 to 7, then idle; a job whose opcode's `ioprio` is not an I/O priority, or
//!    is 0 (`IOPRIO_CLASS_NONE`), counts as best-effort 4, the kernel's default. FIFO
//!    within one priority (a sequence number breaks ties).
//! 3. A queued job can be cancelled (it never runs); a running one cannot: it finishes and
//!    its result is reported.
//! 4. Results go to a list under the pool's lock, then one write to an eventfd the
//!    engine watches in its epoll instance (level-triggered): the engine reads the
//!    eventfd, then takes the list, so no result waits behind an unreported write.
//! 5. Dropping the pool discards queued jobs, waits for the running ones (their memory is
//!    the caller's until their CQE, which will now never come, but no thread touches it
//!    after the drop) and joins every thread.
//!
//! The state sits behind one `Mutex` with a `Condvar`: this engine is the fallback where
//! io_uring is switched off, and each job is a blocking system call, against which one
//! uncontended lock is small (std's, since no crate offers a priority-ordered blocking
//! queue with removal by key).

use super::sqe::RawSqe;
use std::collections::BinaryHeap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A job's identity: the op's slab index and serial (op rule 1).
pub(crate) type Key = (u32, u64);

#[derive(Debug)]
struct Job {
    /// Pool rule 2: (class rank, level, sequence), smallest first.
    order: (u8, u8, u64),
    key: Key,
    sqe: RawSqe,
}

impl PartialEq for Job {
    fn eq(&self, o: &Self) -> bool {
        self.order == o.order
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Job {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        o.order.cmp(&self.order) // BinaryHeap is a max-heap: the smallest order on top
    }
}

#[derive(Debug, Default)]
struct State {
    queue: BinaryHeap<Job>,
    running: Vec<Key>,
    done: Vec<(Key, i32)>,
    idle: u32,
    threads: u32,
    seq: u64,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    eventfd: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job never panics with the lock held (perform_fs runs outside it), so a
        // poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool (module doc).
#[derive(Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
    max: u32,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Pool rule 2: the order of an `ioprio` value (class in bits 13-15, level below).
pub(crate) fn rank(ioprio: u16, is_priority: bool) -> (u8, u8) {
    let (class, level) = if is_priority { (ioprio >> 13, (ioprio & 7) as u8) } else { (0, 0) };
    match class {
        1 => (0, level),
        2 => (1, level),
        3 => (2, 0),
        _ => (1, 4),
    }
}

impl Pool {
    /// A pool of at most `max` threads (none started yet) reporting through a new eventfd.
    pub(crate) fn new(max: u32) -> std::io::Result<Pool> {
        use rustix::event::{EventfdFlags, eventfd};
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new(), eventfd });
        Ok(Pool { shared, max, handles: Vec::new() })
    }

    /// The eventfd that becomes readable when results wait (pool rule 4).
    pub(crate) fn eventfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.shared.eventfd.as_fd()
    }

    /// Queues `sqe` as job `key` at priority `rank` (pool rules 1-2). An error: no thread
    /// could be started and none exists (the caller performs the job itself).
    pub(crate) fn push(&mut self, key: Key, sqe: RawSqe, rank: (u8, u8)) -> std::io::Result<()> {
        let mut st = self.shared.lock();
        st.seq += 1;
        let order = (rank.0, rank.1, st.seq);
        st.queue.push(Job { order, key, sqe });
        let start = st.idle == 0 && st.threads < self.max;
        if start {
            st.threads += 1;
        }
        drop(st);
        self.shared.work.notify_one();
        if start {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new().name("keel-epoll-file".into()).spawn(move || worker(&shared));
            match spawned {
                Ok(h) => self.handles.push(h),
                Err(e) => {
                    let mut st = self.shared.lock();
                    st.threads -= 1;
                    if st.threads == 0 {
                        st.queue.retain(|j| j.key != key);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Pool rule 3: removes queued job `key`; `false` if it is running (or done).
    pub(crate) fn cancel(&self, key: Key) -> bool {
        let mut st = self.shared.lock();
        let before = st.queue.len();
        st.queue.retain(|j| j.key != key);
        st.queue.len() != before
    }

    /// Pool rule 4: the results reported since the last call, oldest first.
    pub(crate) fn take_done(&self, out: &mut Vec<(Key, i32)>) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.shared.eventfd, &mut buf);
        out.append(&mut self.shared.lock().done);
    }

    /// Threads started so far (tests).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> u32 {
        self.shared.lock().threads
    }

    /// Jobs running now (tests).
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.shared.lock().running.len()
    }
}

fn worker(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.stop {
            break;
        }
        let Some(job) = st.queue.pop() else {
            st.idle += 1;
            st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
            continue;
        };
        st.running.push(job.key);
        drop(st);
        let res = super::perform_fs::blocking(&job.sqe);
        st = shared.lock();
        st.running.retain(|&k| k != job.key);
        st.done.push((job.key, res));
        // Pool rule 4: the write comes after the result is in the list.
        let _ = rustix::io::write(&shared.eventfd, &1u64.to_ne_bytes());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stop = true; // pool rule 5: queued jobs never run
            st.queue.clear();
        }
        self.shared.work.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join(); // waits for a running job
        }
    }
}
