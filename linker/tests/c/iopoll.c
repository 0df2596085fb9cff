/* A polled executor (keel_executor_attr.iopoll): a buffered read completes with
 * -EOPNOTSUPP (only O_DIRECT files on devices with poll queues are polled), a deadline
 * (keel_within) is refused with -EOPNOTSUPP, and a sleep still ends while the executor
 * busy-polls. Exits 77 (skipped, said on stderr) without io_uring, IOPOLL or MSG_RING. */
#include <stdint.h>
#include <unistd.h>
#include "check.h"

static int fd = -1;

static int64_t read_it(keel_task task, void *user) {
    char *buf = user;
    return keel_file_read(task, fd, buf, 8, 0);
}

static int64_t body(keel_task task, void *user) {
    (void)user;
    char buf[8];
    CHECK_ERROR(keel_file_read(task, fd, buf, sizeof buf, 0), -EOPNOTSUPP);
    CHECK_ERROR(keel_within(task, 1000ull * 1000 * 1000, read_it, buf), -EOPNOTSUPP);
    CHECK_RESULT(keel_task_suspend_for(task, 2 * 1000 * 1000));
    return 1;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32, .iopoll = 1};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM || r == -EOPNOTSUPP || r == -EINVAL) {
        fprintf(stderr, "iopoll: SKIPPED: no polled io_uring here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    char path[] = "/tmp/keel-c-iopoll-XXXXXX";
    fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(write(fd, "buffered", 8) == 8);
    keel_task task;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &task));
    CHECK_RESULT(keel_task_attach(ex, task, body, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(task), 1);
    CHECK_RESULT(keel_task_destroy(task));
    CHECK_RESULT(keel_executor_destroy(ex));
    close(fd);
    printf("iopoll: a buffered read and a deadline got -EOPNOTSUPP on a polled executor, a sleep ended\n");
    return 0;
}
