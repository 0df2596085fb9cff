/* Readiness waits from C (keel_poll) on descriptors keel does not own: an eventfd written
 * by another task, a timeout that passes first, a pipe whose writer closes (POLLHUP),
 * and the arguments keel refuses. Exits 77 (skipped, said on stderr) if io_uring cannot
 * be set up here. */
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "check.h"

static int efd = -1;
static int pipefd[2] = {-1, -1};
static int waiting; /* the waiter is about to poll the eventfd */

static int64_t waiter(keel_task task, void *user) {
    (void)user;
    /* Refused before anything is submitted. */
    CHECK_ERROR(keel_poll(task, efd, 1 << 20, -1), -EINVAL); /* no such POLL* bit */
    CHECK_ERROR(keel_poll(task, -1, POLLIN, -1), -EBADF);
    /* Nothing to read: the timeout passes first; a zero timeout asks "ready now?". */
    CHECK_ERROR(keel_poll(task, efd, POLLIN, 10 * 1000 * 1000), -ETIME);
    CHECK_ERROR(keel_poll(task, efd, POLLIN, 0), -ETIME);
    /* Written by the other task while this one waits. */
    waiting = 1;
    keel_result r = keel_poll(task, efd, POLLIN, -1);
    CHECK_RESULT(r);
    CHECK(r & POLLIN);
    uint64_t v;
    CHECK(read(efd, &v, sizeof v) == sizeof v && v == 7);
    /* The pipe's writer closes: POLLHUP, reported though not asked for. */
    CHECK(close(pipefd[1]) == 0);
    r = keel_poll(task, pipefd[0], POLLIN, 5 * 1000 * 1000 * 1000LL);
    CHECK_RESULT(r);
    CHECK(r & POLLHUP);
    return 1;
}

static int64_t writer(keel_task task, void *user) {
    (void)user;
    while (!waiting) CHECK_RESULT(keel_task_yield(task));
    CHECK_RESULT(keel_task_suspend_for(task, 1000000)); /* let the waiter suspend */
    uint64_t v = 7;
    CHECK(write(efd, &v, sizeof v) == sizeof v);
    return 2;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "poll: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    CHECK(efd >= 0);
    CHECK(pipe(pipefd) == 0);
    keel_task tasks[2];
    keel_task_fn fns[2] = {waiter, writer};
    for (int i = 0; i < 2; i++) {
        keel_task_attr ta = {0};
        CHECK_RESULT(keel_task_create(&ta, &tasks[i]));
        CHECK_RESULT(keel_task_attach(ex, tasks[i], fns[i], NULL));
    }
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(tasks[0]), 1);
    CHECK_ERROR(keel_task_result(tasks[1]), 2);
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_destroy(tasks[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    close(efd);
    close(pipefd[0]);
    printf("poll: an eventfd woke a waiting task, a timeout passed first, a closed writer gave POLLHUP\n");
    return 0;
}
