/* C task bodies for keel-bench's `c_yield` and `c_suspend_io` cases: the loops the
 * `keel-c` impls time, written against keel's C API (linker/include/keel.h). */
#include "keel.h"

/* What a body is given: how many operations, and the fd the i/o body reads. */
struct keel_bench_args {
    uint64_t iters;
    int fd;
};

/* Yields `iters` times; returns `iters`, or the first error. */
int64_t keel_bench_c_yield(keel_task task, void *user) {
    const struct keel_bench_args *a = user;
    for (uint64_t i = 0; i < a->iters; i++) {
        keel_result r = keel_task_yield(task);
        if (r < 0) return r;
    }
    return (int64_t)a->iters;
}

/* Yields `iters` times through keel_task_yield_inline (the switch inlined here). */
int64_t keel_bench_c_yield_inline(keel_task task, void *user) {
    const struct keel_bench_args *a = user;
    for (uint64_t i = 0; i < a->iters; i++) {
        keel_result r = keel_task_yield_inline(task);
        if (r < 0) return r;
    }
    return (int64_t)a->iters;
}

/* `iters` times: a 1-byte read of `fd` (/dev/zero) through the ring with a status block,
 * suspended on until it completes; each must read one zero byte. Returns `iters`, or the
 * first error (-EIO for a wrong result). */
int64_t keel_bench_c_suspend_io(keel_task task, void *user) {
    const struct keel_bench_args *a = user;
    keel_io_status st;
    unsigned char byte;
    keel_result r = keel_io_status_init(task, &st);
    if (r < 0) return r;
    for (uint64_t i = 0; i < a->iters; i++) {
        byte = 0xff;
        r = keel_file_read_async(task, &st, a->fd, &byte, 1, 0);
        if (r < 0) return r;
        r = keel_task_suspend_until_completed_io(task, 1);
        if (r != 1) return r < 0 ? r : -5;
        r = keel_io_status_result(task, &st);
        if (r != 1 || byte != 0) return r < 0 ? r : -5;
    }
    return (int64_t)a->iters;
}
