//! keel's C ABI: `libkeel.a` and `libkeel.so`, over keel-core and keel-linux. The header
//! is `include/keel.h`, generated from this crate by cbindgen (`tests/header.rs` fails
//! when the checked-in copy differs).
//!
//! | module | what |
//! |---|---|
//! | `net` | socket i/o from a task body on the ring |
//! | `regbuf` | registered buffers: claim, fixed reads and writes, release (buffer rules) |
//! | `result` | `keel_result`, error codes, `keel_strerror`, the boundary guard (boundary rules) |
//! | `executor` | executor storage, `init`/`create`, `run`, `destroy`; `attr`: how one is made; `stats`: counters and time accounting; `remote`: `post` from any thread (executor rules) |
//! | `task` | task storage, `init`/`create`; `run`: `attach`, `cancel`, `result`, `destroy` (task rules); `settle`: reuse after a remote run (settle rules) |
//! | `body` | a C function as a fiber body; `yield`, `suspend_for` (body rules) |
//! | `dispatch` | the work dispatcher and its thread pool (dispatch rules) |
//! | `fs` | file i/o from a task body on the ring |
//! | `status` | NT-style status blocks: initiate, `suspend_until_completed_io`, results (status rules) |
//! | `stable` | type-stable storage for the `create` forms (stable rules) |
//! | `thread` | thread tokens and generations |
//! | `channel` | bounded channels of 64-bit values: `send`/`recv` from a task body, `try_*` and `close` from any thread (channel rules) |
//! | `event` | manual-reset events: `create`, `wait` from a task body, `set`/`reset` from any thread (event rules) |
//! | `wait` | counting semaphores: `create`, `acquire` from a task body, `release` from any thread (semaphore rules) |
//! | `server` | statx, unlink, rename, mkdir, sendmsg/recvmsg, a signalfd wait, the worker-pool cap |
//! | `read_multi` | multishot read into the executor's provided buffers, copied out (stream rules) |
//! | `transfer` | descriptor transfer: register into the fixed-file table, install back, send to another executor's ring, receive (transfer rules) |
//! | `closed` | descriptors closed behind keel's back: `keel_fd_closed`, `keel_fd_close` (close-log rule 4) |
//! | `gdb` | keel's GDB script in `.debug_gdb_scripts` |
//!
//! Every exported symbol is named `keel_*` and every exported function that can reach a
//! panic runs its body under `result::guard` (boundary rule 1).
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)]

mod body;
mod channel;
mod closed;
mod deadline;
mod dispatch;
mod event;
mod executor;
mod fs;
mod gdb;
mod join;
mod net;
mod read_multi;
mod ready;
mod regbuf;
mod result;
mod server;
mod stable;
mod status;
mod task;
mod thread;
mod transfer;
mod wait;

pub use body::{keel_task_fn, keel_task_suspend_for, keel_task_yield};
pub use closed::{keel_fd_close, keel_fd_closed};
pub use deadline::{keel_file_read_flags, keel_file_write_flags, keel_within};
pub use dispatch::{
    keel_dispatcher, keel_dispatcher_create, keel_dispatcher_destroy, keel_dispatcher_quit, keel_dispatcher_remaining,
    keel_dispatcher_start, keel_dispatcher_submit, keel_dispatcher_wait, keel_executor_serve,
};
pub use executor::{
    KEEL_BACKEND_AUTO, KEEL_BACKEND_EPOLL, KEEL_BACKEND_RING, KEEL_EXECUTOR_STORAGE_ALIGN, KEEL_EXECUTOR_STORAGE_SIZE,
    KEEL_NO_TIMEOUT, keel_executor, keel_executor_attached, keel_executor_attr, keel_executor_backend,
    keel_executor_create, keel_executor_destroy, keel_executor_get_stats, keel_executor_get_times, keel_executor_init,
    keel_executor_post, keel_executor_run, keel_executor_stats, keel_executor_storage_size, keel_executor_times,
    keel_task_get_times, keel_task_times,
};
pub use fs::{
    keel_file_close, keel_file_fallocate, keel_file_fdatasync, keel_file_fsync, keel_file_open, keel_file_read,
    keel_file_readv, keel_file_sync_range, keel_file_write, keel_file_writev,
};
pub use join::keel_task_join;
pub use net::{
    keel_socket_accept, keel_socket_bind, keel_socket_close, keel_socket_connect, keel_socket_listen, keel_socket_open,
    keel_socket_recv, keel_socket_send, keel_socket_shutdown,
};
pub use read_multi::{keel_read_multi, keel_read_multi_close, keel_read_multi_next, keel_read_multi_open};
pub use ready::keel_poll;
pub use regbuf::{
    keel_buffer, keel_buffer_claim, keel_buffer_data, keel_buffer_release, keel_file_read_fixed, keel_file_write_fixed,
};
pub use result::{
    KEEL_EBADRESULT, KEEL_EFPCONTROL, KEEL_ENOTINTASK, KEEL_EPANICKED, KEEL_ERRNO_FIRST, KEEL_ERRNO_MAX, KEEL_ESTALLED,
    KEEL_EWRONGTHREAD, keel_result, keel_strerror,
};
pub use server::{
    keel_executor_set_iowq_max_workers, keel_file_mkdir, keel_file_mkdir_at, keel_file_rename, keel_file_rename_at,
    keel_file_statx, keel_file_statx_at, keel_file_unlink, keel_file_unlink_at, keel_signal_wait, keel_socket_recvmsg,
    keel_socket_sendmsg,
};
pub use status::{
    KEEL_IO_STATUS_ALIGN, KEEL_IO_STATUS_SIZE, keel_file_fsync_async, keel_file_read_async, keel_file_write_async,
    keel_io_status, keel_io_status_init, keel_io_status_result, keel_socket_recv_async, keel_socket_send_async,
    keel_task_suspend_until_completed_io,
};
pub use task::{
    KEEL_PRIORITY_HIGH, KEEL_PRIORITY_LOW, KEEL_PRIORITY_NORMAL, KEEL_SWITCHER_FIBER, KEEL_SWITCHER_UCONTEXT,
    KEEL_TASK_MIN_STACK, KEEL_TASK_STORAGE_ALIGN, KEEL_TASK_STORAGE_SIZE, keel_task, keel_task_attach, keel_task_attr,
    keel_task_cancel, keel_task_create, keel_task_destroy, keel_task_init, keel_task_result, keel_task_spawn,
    keel_task_storage_size,
};
pub use transfer::{
    keel_fixed_close, keel_fixed_install, keel_fixed_receive, keel_fixed_register, keel_fixed_send, keel_mailbox,
    keel_mailbox_free, keel_mailbox_get,
};

/// The major version (`KEEL_VERSION_MAJOR` in the header).
pub const KEEL_VERSION_MAJOR: u32 = 0;
/// The minor version.
pub const KEEL_VERSION_MINOR: u32 = 1;
/// The patch version.
pub const KEEL_VERSION_PATCH: u32 = 0;

static_assertions::const_assert_eq!(KEEL_VERSION_MAJOR, parse(env!("CARGO_PKG_VERSION_MAJOR")));
static_assertions::const_assert_eq!(KEEL_VERSION_MINOR, parse(env!("CARGO_PKG_VERSION_MINOR")));
static_assertions::const_assert_eq!(KEEL_VERSION_PATCH, parse(env!("CARGO_PKG_VERSION_PATCH")));

const fn parse(s: &str) -> u32 {
    let (b, mut i, mut v) = (s.as_bytes(), 0, 0);
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

/// The library's version as `major << 16 | minor << 8 | patch` (compare with
/// `KEEL_VERSION` from the header to catch a header from another release).
///
/// Thread safety: any thread. Errors: none.
#[unsafe(no_mangle)]
pub extern "C" fn keel_version() -> u32 {
    (KEEL_VERSION_MAJOR << 16) | (KEEL_VERSION_MINOR << 8) | KEEL_VERSION_PATCH
}
