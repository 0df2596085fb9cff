//! The host's side of the echo measurement: which CPUs this process may use, pinning a
//! thread to one, and the descriptor limit the connections need.

/// The CPUs this process may run on: the server's and the load generator's.
pub fn cpus() -> Result<(usize, usize), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(format!("sched_getaffinity: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET reads the set within its size (`i` < CPU_SETSIZE).
    let mut allowed = (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) });
    let first = allowed.next().ok_or("no CPU allowed")?;
    match allowed.next() {
        Some(second) => Ok((first, second)),
        None => {
            eprintln!("echo: only CPU {first} is allowed: server and load generator share it");
            Ok((first, first))
        }
    }
}

/// Raises this process's descriptor limit to at least `need`, or says why it cannot.
pub fn raise_descriptor_limit(need: usize) -> Result<(), String> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `l` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if l.rlim_cur as usize >= need {
        return Ok(());
    }
    let hard = l.rlim_max;
    // Past the hard limit only with CAP_SYS_RESOURCE (root).
    (l.rlim_cur, l.rlim_max) = (need as libc::rlim_t, l.rlim_max.max(need as libc::rlim_t));
    // SAFETY: `l` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Err(format!(
            "{need} descriptors needed; the hard limit is {hard} and setrlimit says {}: raise it (ulimit -Hn)",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (it came from `cpus`), so CPU_SET stays in the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity(CPU {cpu}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
