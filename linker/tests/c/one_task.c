/* The first example of keel's C API: an executor with a ring, one high-priority task
 * whose function suspends for a millisecond and returns, run until it completes; the
 * task is then reused for a second run; everything lives in caller storage, and the
 * executor accounts time per task and for itself. */
#include <string.h>
#include <time.h>
#include "check.h"

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t myfunc(keel_task task, void *user) {
    int *runs = user;
    /* Suspend and resume after one millisecond (the seed's second, scaled down). */
    keel_result r = keel_task_suspend_for(task, 1000000);
    if (KEEL_IS_ERROR(r)) return r;
    r = keel_task_yield(task);
    if (KEEL_IS_ERROR(r)) return r;
    *runs += 1;
    return 42 + *runs;
}

int main(void) {
    CHECK(keel_version() == KEEL_VERSION);
    CHECK(keel_executor_storage_size() <= KEEL_EXECUTOR_STORAGE_SIZE);
    CHECK(keel_task_storage_size() <= KEEL_TASK_STORAGE_SIZE);

    static keel_executor_storage ex_mem;
    static keel_task_storage task_mem;

    /* Expensive: an executor with a 64-entry ring, and a task. */
    keel_executor_attr ex_attr;
    memset(&ex_attr, 0, sizeof ex_attr);
    ex_attr.ring_entries = 64;
    ex_attr.accounting = 1; /* time from the CPU's timestamp counter */
    keel_executor ex;
    keel_result r = keel_executor_init(&ex_mem, sizeof ex_mem, &ex_attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "one_task: io_uring is not available (%s): running without a ring\n", keel_strerror(r));
        ex_attr.ring_entries = 0;
        r = keel_executor_init(&ex_mem, sizeof ex_mem, &ex_attr, &ex);
    }
    CHECK_RESULT(r);

    keel_task_attr t_attr;
    memset(&t_attr, 0, sizeof t_attr);
    t_attr.cpu_priority = KEEL_PRIORITY_HIGH;
    keel_task task;
    CHECK_RESULT(keel_task_init(&task_mem, sizeof task_mem, &t_attr, &task));

    /* Cheap from here on: attach, run, read the result; twice with one task. */
    int runs = 0;
    for (int round = 1; round <= 2; round++) {
        CHECK_RESULT(keel_task_attach(ex, task, myfunc, &runs));
        CHECK_ERROR(keel_task_result(task), -EINPROGRESS);
        uint64_t start = now_ns();
        while (keel_executor_attached(ex) > 0) {
            keel_result r = keel_executor_run(ex, 16, 5000000000u);
            CHECK_RESULT(r);
            CHECK(r > 0);
        }
        CHECK(now_ns() - start >= 1000000);
        CHECK_ERROR(keel_task_result(task), 42 + round);
    }
    CHECK(runs == 2);

    /* Nothing attached: a run with a short timeout does no work. */
    CHECK_ERROR(keel_executor_run(ex, 1, 1000000), -ETIME);

    keel_executor_stats stats;
    CHECK_RESULT(keel_executor_get_stats(ex, &stats));
    CHECK(stats.completed == 2);
    CHECK(stats.timers_fired >= 2);
    CHECK(stats.per_priority[0] >= 2); /* high */

    keel_task_times tt;
    CHECK_RESULT(keel_task_get_times(task, &tt));
    CHECK(tt.resumptions >= 3);            /* start, after the suspension, after the yield */
    CHECK(tt.suspended_ns >= 1000000);     /* the last run's millisecond, at least */
    CHECK(tt.running_ns > 0);
    keel_executor_times et;
    CHECK_RESULT(keel_executor_get_times(ex, &et));
    CHECK(et.task_ns > 0 && et.parked_ns > 0);

    /* Expensive again: tear down. */
    CHECK_RESULT(keel_task_destroy(task));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("one_task: 2 runs of one task, result %d, %llu resumptions, %llu ns in task code, %llu ns parked\n",
           42 + runs, (unsigned long long)stats.resumed, (unsigned long long)et.task_ns,
           (unsigned long long)et.parked_ns);
    return 0;
}
