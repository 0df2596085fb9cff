/* keel_task_join: task functions wait for other tasks' results. A child suspends 2 ms
 * and returns 7; three joiners wait for it (one gives up after 1 ms first, then joins
 * again); a joiner of a child that is cancelled gets -ECANCELED; a joiner that is itself
 * cancelled gets -ECANCELED and leaves its child alone; joining oneself is -EDEADLK and
 * joining a task never attached -ENODATA. No ring needed. */
#include <string.h>
#include "check.h"

static keel_task child, victim, waiter_self, never;

static int64_t child_fn(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_suspend_for(task, 2000000);
    if (KEEL_IS_ERROR(r)) return r;
    return 7;
}

static int64_t joiner_fn(keel_task task, void *user) {
    int *joined = user;
    keel_result r = keel_task_join(task, child, KEEL_NO_TIMEOUT);
    if (r == 7) *joined += 1;
    return r;
}

static int64_t impatient_fn(keel_task task, void *user) {
    int *joined = user;
    CHECK_ERROR(keel_task_join(task, child, 0), -ETIME);       /* only looks */
    CHECK_ERROR(keel_task_join(task, child, 1000000), -ETIME); /* 1 ms of 2 */
    keel_result r = keel_task_join(task, child, 5000000000u);
    if (r == 7) *joined += 1;
    return r;
}

static int64_t sleeper_fn(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_suspend_for(task, 60000000000u); /* cancelled long before */
    return KEEL_IS_ERROR(r) ? r : 1;
}

static int64_t victim_joiner_fn(keel_task task, void *user) {
    (void)user;
    return keel_task_join(task, victim, KEEL_NO_TIMEOUT);
}

static int64_t misuse_fn(keel_task task, void *user) {
    (void)user;
    CHECK_ERROR(keel_task_join(task, task, KEEL_NO_TIMEOUT), -EDEADLK);
    CHECK_ERROR(keel_task_join(task, never, KEEL_NO_TIMEOUT), -ENODATA);
    return 3;
}

static int64_t self_cancelled_fn(keel_task task, void *user) {
    (void)user;
    return keel_task_join(task, waiter_self, KEEL_NO_TIMEOUT);
}

static void run_all(keel_executor ex) {
    for (int i = 0; keel_executor_attached(ex) > 0; i++) {
        CHECK(i < 100000);
        keel_result r = keel_executor_run(ex, 64, 5000000000u);
        CHECK_RESULT(r);
    }
}

int main(void) {
    keel_executor_attr ex_attr;
    memset(&ex_attr, 0, sizeof ex_attr);
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(&ex_attr, &ex));
    keel_task_attr attr;
    memset(&attr, 0, sizeof attr);
    keel_task j1, j2, impatient, vj, misuse, sc;
    keel_task *all[] = {&child, &victim, &waiter_self, &never, &j1, &j2, &impatient, &vj, &misuse, &sc};
    for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) CHECK_RESULT(keel_task_create(&attr, all[i]));

    int joined = 0;
    CHECK_RESULT(keel_task_attach(ex, child, child_fn, NULL));
    CHECK_RESULT(keel_task_attach(ex, j1, joiner_fn, &joined));
    CHECK_RESULT(keel_task_attach(ex, j2, joiner_fn, &joined));
    CHECK_RESULT(keel_task_attach(ex, impatient, impatient_fn, &joined));
    CHECK_RESULT(keel_task_attach(ex, misuse, misuse_fn, NULL));
    /* The victim sleeps; its joiner waits; the victim is cancelled under it. */
    CHECK_RESULT(keel_task_attach(ex, victim, sleeper_fn, NULL));
    CHECK_RESULT(keel_task_attach(ex, vj, victim_joiner_fn, NULL));
    /* A joiner cancelled while it waits: the task it waits for runs on. */
    CHECK_RESULT(keel_task_attach(ex, waiter_self, sleeper_fn, NULL));
    CHECK_RESULT(keel_task_attach(ex, sc, self_cancelled_fn, NULL));
    CHECK(keel_executor_run(ex, 64, 0) > 0); /* everyone starts and waits */
    CHECK_RESULT(keel_task_cancel(victim));
    CHECK_RESULT(keel_task_cancel(sc));
    CHECK(keel_executor_run(ex, 64, 0) > 0);
    CHECK_ERROR(keel_task_result(sc), -ECANCELED);
    CHECK_ERROR(keel_task_result(waiter_self), -EINPROGRESS); /* untouched by its joiner's cancel */
    CHECK_RESULT(keel_task_cancel(waiter_self));
    run_all(ex);

    CHECK(joined == 3);
    CHECK_ERROR(keel_task_result(child), 7);
    CHECK_ERROR(keel_task_result(j1), 7);
    CHECK_ERROR(keel_task_result(impatient), 7);
    CHECK_ERROR(keel_task_result(vj), -ECANCELED);
    CHECK_ERROR(keel_task_result(misuse), 3);
    /* Outside a task function: not in a task. */
    CHECK_ERROR(keel_task_join(j1, child, 0), -KEEL_ENOTINTASK);

    for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) CHECK_RESULT(keel_task_destroy(*all[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("join: 3 joins of one run got 7, a cancelled run's joiner got -ECANCELED, misuse refused\n");
    return 0;
}
