/* Deadlines (keel_within) and per-operation flags (keel_file_read_flags,
 * keel_file_write_flags) from C: a read of an empty pipe times out with -ETIME, data
 * already there is returned, nested scopes take the earliest deadline, RWF_NOWAIT is
 * -EAGAIN at once, RWF_APPEND writes at the end, RWF_HIPRI and unknown bits are -EINVAL.
 * Exits 77 (skipped, said on stderr) if io_uring cannot be set up here. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "check.h"

static int pipefd[2] = {-1, -1};

static int64_t read_pipe(keel_task task, void *user) {
    char *buf = user;
    return keel_file_read(task, pipefd[0], buf, 8, 0);
}

static int64_t nested(keel_task task, void *user) {
    /* The outer scope's 10 ms deadline bounds the inner 60 s one. */
    return keel_within(task, 60ull * 1000 * 1000 * 1000, read_pipe, user);
}

static int64_t body(keel_task task, void *user) {
    (void)user;
    char buf[8];
    /* The deadline wins: nothing to read. */
    CHECK_ERROR(keel_within(task, 10 * 1000 * 1000, read_pipe, buf), -ETIME);
    CHECK_ERROR(keel_within(task, 10 * 1000 * 1000, nested, buf), -ETIME);
    CHECK_ERROR(keel_within(task, 1000, NULL, buf), -EFAULT);
    /* The read wins: data is there. */
    CHECK(write(pipefd[1], "hi", 2) == 2);
    CHECK_ERROR(keel_within(task, 5ull * 1000 * 1000 * 1000, read_pipe, buf), 2);
    CHECK(memcmp(buf, "hi", 2) == 0);
    /* Outside every scope: a plain operation has no deadline (a NOWAIT read says EAGAIN). */
    CHECK_ERROR(keel_file_read_flags(task, pipefd[0], buf, sizeof buf, 0, RWF_NOWAIT), -EAGAIN);
    CHECK_ERROR(keel_file_read_flags(task, pipefd[0], buf, sizeof buf, 0, RWF_HIPRI), -EINVAL);
    CHECK_ERROR(keel_file_read_flags(task, pipefd[0], buf, sizeof buf, 0, 1 << 20), -EINVAL);
    /* RWF_APPEND: at the end whatever the offset. */
    char path[] = "/tmp/keel-c-deadline-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK_ERROR(keel_file_write_flags(task, fd, "abc", 3, 0, RWF_DSYNC), 3);
    CHECK_ERROR(keel_file_write_flags(task, fd, "XY", 2, 0, RWF_APPEND), 2);
    char back[8] = {0};
    CHECK_ERROR(keel_file_read_flags(task, fd, back, sizeof back, 0, 0), 5);
    CHECK(memcmp(back, "abcXY", 5) == 0);
    close(fd);
    return 1;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "deadline: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    CHECK(pipe(pipefd) == 0);
    keel_task task;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &task));
    CHECK_RESULT(keel_task_attach(ex, task, body, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(task), 1);
    CHECK_RESULT(keel_task_destroy(task));
    CHECK_RESULT(keel_executor_destroy(ex));
    close(pipefd[0]);
    close(pipefd[1]);
    printf("deadline: a deadline timed a pipe read out, nested scopes kept the earliest, RWF flags worked\n");
    return 0;
}
