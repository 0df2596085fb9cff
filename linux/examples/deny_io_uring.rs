//! Runs a command with io_uring denied, the way a container's seccomp profile denies it:
//! installs a filter (`PR_SET_NO_NEW_PRIVS` and a BPF program built with seccompiler; no
//! root needed) that makes `io_uring_setup`, `io_uring_enter` and `io_uring_register`
//! fail with the given errno, checks that the filter is in force (a raw `io_uring_setup`
//! fails with that errno), then executes the command, which inherits the filter.
//!
//! ```text
//! cargo run -p keel-linux --example deny_io_uring -- EPERM|EACCES|ENOSYS COMMAND [ARG...]
//! ```
//!
//! `make test` runs keel-linux's file, socket, timer, cancellation and cross-thread suites
//! under it (as nextest's target runner), so the same test sources run on the epoll
//! backend that `RingDriver::new` falls back to there.
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: deny_io_uring EPERM|EACCES|ENOSYS COMMAND [ARG...]";

fn deny_io_uring(errno: i32) -> Result<(), String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let rules = [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register]
        .into_iter()
        .map(|nr| (nr, vec![]))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("no seccomp target: {e:?}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
        .map_err(|e| format!("the filter: {e}"))?;
    let program: BpfProgram = filter.try_into().map_err(|e| format!("the BPF program: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("installing the filter: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let errno = match args.first().map(String::as_str) {
        Some("EPERM") => libc::EPERM,
        Some("EACCES") => libc::EACCES,
        Some("ENOSYS") => libc::ENOSYS,
        _ => {
            eprintln!("deny_io_uring: the first argument must be EPERM, EACCES or ENOSYS\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(program) = args.get(1) else {
        eprintln!("deny_io_uring: no command to run\n{USAGE}");
        return ExitCode::from(2);
    };
    if let Err(e) = deny_io_uring(errno) {
        eprintln!("deny_io_uring: {e}");
        return ExitCode::from(1);
    }
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup(entries, params) with a zeroed params block of its size.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    let got = std::io::Error::last_os_error().raw_os_error();
    if r != -1 || got != Some(errno) {
        eprintln!("deny_io_uring: the filter is not in force (io_uring_setup returned {r}, errno {got:?})");
        return ExitCode::from(1);
    }
    let err = Command::new(program).args(&args[2..]).env("KEEL_IO_URING_DENIED", &args[0]).exec();
    eprintln!("deny_io_uring: running {program}: {err}");
    ExitCode::from(1)
}
