//! A server's CPU time and memory, read from `/proc`: the user time (`utime` of `stat`,
//! the kernel's tick-sampled accounting, HZ=250 here, printed in 10 ms units) and the time
//! on a CPU, user and system together (`schedstat`'s first field, the scheduler's exact
//! count in ns), of one in-process server thread or of every thread of a child process;
//! the resident set size of the process it runs in.

/// Whose CPU time.
#[derive(Clone, Debug)]
pub enum Whose {
    /// Every thread of a child process.
    Process(u32),
    /// One thread of this process (its kernel thread id).
    Thread(libc::pid_t),
}

impl Whose {
    /// Its user CPU time, ns (clock-tick resolution).
    pub fn user_ns(&self) -> Result<u64, String> {
        match self {
            Whose::Process(pid) => utime_ns(&format!("/proc/{pid}/stat")),
            Whose::Thread(tid) => utime_ns(&format!("/proc/self/task/{tid}/stat")),
        }
    }

    /// The resident set size of the process it runs in (this one for a thread), bytes.
    pub fn rss(&self) -> Result<u64, String> {
        match self {
            Whose::Process(pid) => rss(&format!("/proc/{pid}/statm")),
            Whose::Thread(_) => own_rss(),
        }
    }

    /// Its time on a CPU, user and system, ns (exact): a child's summed over the threads
    /// it has now.
    pub fn on_cpu_ns(&self) -> Result<u64, String> {
        match self {
            Whose::Thread(tid) => schedstat_ns(&format!("/proc/self/task/{tid}/schedstat")),
            Whose::Process(pid) => {
                let dir = format!("/proc/{pid}/task");
                let mut sum = 0;
                for t in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
                    let t = t.map_err(|e| format!("{dir}: {e}"))?;
                    sum += schedstat_ns(&format!("{}/schedstat", t.path().display()))?;
                }
                Ok(sum)
            }
        }
    }
}

/// This process's resident set size, bytes.
pub fn own_rss() -> Result<u64, String> {
    rss("/proc/self/statm")
}

/// The resident set size in a `statm` file, bytes.
fn rss(path: &str) -> Result<u64, String> {
    let statm = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or("bad statm")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(1) as u64)
}

/// Clock ticks per second (the unit of `utime` in `/proc`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// The user CPU time in a `/proc/.../stat` file, in ns (clock-tick resolution).
fn utime_ns(path: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse_utime(&s).map(|ticks| ticks * 1_000_000_000 / clock_ticks()).ok_or_else(|| format!("{path}: no utime field"))
}

/// Field 14 (utime) of a `stat` line; the fields after the command name's closing
/// parenthesis start at field 3.
fn parse_utime(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(14 - 3)?.parse().ok()
}

/// The first field of a `schedstat` file: ns on a CPU.
fn schedstat_ns(path: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    s.split_whitespace().next().and_then(|f| f.parse().ok()).ok_or_else(|| format!("{path}: not a schedstat line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_is_field_14_after_the_name() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 77 88 0 0";
        assert_eq!(parse_utime(line), Some(77));
        assert_eq!(parse_utime("42 (x) S 1"), None);
    }

    #[test]
    fn this_threads_time_on_a_cpu_grows() {
        // SAFETY: gettid has no preconditions.
        let me = Whose::Thread(unsafe { libc::gettid() });
        let a = me.on_cpu_ns().expect("schedstat");
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(5) {
            std::hint::black_box(0);
        }
        let b = me.on_cpu_ns().expect("schedstat");
        assert!(b > a, "5 ms of spinning left the thread's CPU time at {a} -> {b} ns");
        me.user_ns().expect("stat");
        assert!(me.rss().expect("statm") > 0);
    }
}
