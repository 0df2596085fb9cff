/* The work dispatcher from C: 1,024 tasks in caller storage, a quarter of them high CPU
 * priority and a quarter low, submitted before two worker threads start; every task runs
 * once on a worker's fiber (yielding, some sleeping), the high ones earlier on average
 * than the low ones; the tasks are then reused
 * (dispatched again, and attached to an executor). */
#include <stdatomic.h>
#include <string.h>
#include "check.h"

#define N 1024

static keel_task_storage mem[N];
static keel_task tasks[N];
static atomic_int next_seq;
static int seq_of[N];

static int64_t job(keel_task task, void *user) {
    int i = (int)(intptr_t)user;
    seq_of[i] = atomic_fetch_add(&next_seq, 1);
    /* A dispatched function runs on a fiber of the worker that took it: it can suspend. */
    CHECK_RESULT(keel_task_yield(task));
    if (i % 64 == 0) CHECK_RESULT(keel_task_suspend_for(task, 100000));
    return i;
}

static int64_t on_fiber(keel_task task, void *user) {
    CHECK_RESULT(keel_task_yield(task)); /* attached to an executor: a fiber, it can */
    return (int64_t)(intptr_t)user;
}

int main(void) {
    keel_dispatcher d;
    keel_result r = keel_dispatcher_create(&d);
    if (r == -EOPNOTSUPP) {
        fprintf(stderr, "dispatch: SKIPPED: this CPU lacks cmpxchg16b\n");
        return 77;
    }
    CHECK_RESULT(r);
    static void *users[N];
    for (int i = 0; i < N; i++) {
        keel_task_attr a;
        memset(&a, 0, sizeof a);
        a.cpu_priority = i % 4 == 0 ? KEEL_PRIORITY_HIGH : i % 4 == 1 ? KEEL_PRIORITY_LOW : KEEL_PRIORITY_NORMAL;
        CHECK_RESULT(keel_task_init(&mem[i], sizeof mem[i], &a, &tasks[i]));
        users[i] = (void *)(intptr_t)i;
    }
    CHECK_ERROR(keel_dispatcher_submit(d, tasks, N, job, users), N);
    CHECK_ERROR(keel_dispatcher_remaining(d), N);
    /* Queued: a second submit, an attach, a destroy and the dispatcher's destroy wait. */
    CHECK_ERROR(keel_dispatcher_submit(d, tasks, 1, job, users), -EBUSY);
    CHECK_ERROR(keel_task_destroy(tasks[0]), -EBUSY);
    CHECK_ERROR(keel_task_result(tasks[0]), -EINPROGRESS);
    CHECK_ERROR(keel_dispatcher_destroy(d), -EBUSY);

    CHECK_ERROR(keel_dispatcher_start(d, 2, false), 2);
    CHECK_ERROR(keel_dispatcher_start(d, 2, false), -EBUSY);
    CHECK_RESULT(keel_dispatcher_wait(d, 0, 30000000000ull));
    double high = 0, low = 0;
    for (int i = 0; i < N; i++) {
        CHECK_ERROR(keel_task_result(tasks[i]), i);
        if (i % 4 == 0) high += seq_of[i];
        if (i % 4 == 1) low += seq_of[i];
    }
    CHECK(atomic_load(&next_seq) == N);
    high /= N / 4;
    low /= N / 4;
    CHECK(high < low);

    /* Reused: dispatched again, then one attached to an executor on this thread. */
    CHECK_ERROR(keel_dispatcher_submit(d, tasks, 8, job, users), 8);
    CHECK_RESULT(keel_dispatcher_wait(d, 0, 30000000000ull));
    CHECK(atomic_load(&next_seq) == N + 8);
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    CHECK_RESULT(keel_task_attach(ex, tasks[3], on_fiber, (void *)(intptr_t)3));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(tasks[3]), 3);
    CHECK_RESULT(keel_task_destroy(tasks[3]));
    CHECK_RESULT(keel_executor_destroy(ex));

    CHECK_RESULT(keel_dispatcher_destroy(d));
    CHECK_ERROR(keel_dispatcher_destroy(d), -ESTALE);
    for (int i = 0; i < N; i++)
        if (i != 3) CHECK_RESULT(keel_task_destroy(tasks[i]));
    printf("dispatch: %d tasks on 2 workers; mean completion order high %.0f, low %.0f\n", N, high, low);
    return 0;
}
