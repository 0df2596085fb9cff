/* keel_task_spawn: a task function attaches another task to its own executor, without
 * naming the executor, and joins it. A parent spawns a child (which yields once and
 * returns 7) 100 times and joins each run; spawning itself, a task attached already, or
 * with a NULL function is refused; a call outside the running task is -KEEL_ENOTINTASK;
 * a parent cancelled while it joins leaves its spawned child running; a task unwinding
 * a cancel while its executor is destroyed cannot spawn (-ESHUTDOWN). No ring needed. */
#include <string.h>
#include "check.h"

static keel_task child, busy, late_child;
static keel_result late_spawn = 1;

static int64_t child_fn(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_yield(task);
    if (KEEL_IS_ERROR(r)) return r;
    return 7;
}

static int64_t sleeper_fn(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_suspend_for(task, 60000000000u); /* cancelled long before */
    return KEEL_IS_ERROR(r) ? r : 1;
}

static int64_t parent_fn(keel_task task, void *user) {
    int64_t *sum = user;
    for (int i = 0; i < 100; i++) {
        CHECK_RESULT(keel_task_spawn(task, child, child_fn, NULL));
        keel_result r = keel_task_join(task, child, KEEL_NO_TIMEOUT);
        CHECK(r == 7);
        *sum += r;
    }
    CHECK_ERROR(keel_task_spawn(task, task, child_fn, NULL), -EBUSY);  /* itself: attached */
    CHECK_ERROR(keel_task_spawn(task, busy, child_fn, NULL), -EBUSY);  /* attached already */
    CHECK_ERROR(keel_task_spawn(task, child, NULL, NULL), -EINVAL);    /* no function */
    CHECK_ERROR(keel_task_spawn(busy, child, child_fn, NULL), -KEEL_ENOTINTASK); /* not me */
    return 3;
}

static int64_t cancelled_parent_fn(keel_task task, void *user) {
    (void)user;
    CHECK_RESULT(keel_task_spawn(task, child, child_fn, NULL));
    return keel_task_join(task, child, KEEL_NO_TIMEOUT); /* cancelled while it waits */
}

static int64_t unwinding_fn(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_suspend_for(task, 60000000000u); /* the executor's destroy cancels */
    late_spawn = keel_task_spawn(task, late_child, child_fn, NULL);
    return r;
}

int main(void) {
    keel_executor_attr ex_attr;
    memset(&ex_attr, 0, sizeof ex_attr);
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(&ex_attr, &ex));
    keel_task_attr attr;
    memset(&attr, 0, sizeof attr);
    keel_task parent, cp, unwinding;
    keel_task *all[] = {&child, &busy, &late_child, &parent, &cp, &unwinding};
    for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) CHECK_RESULT(keel_task_create(&attr, all[i]));

    /* Outside any task function. */
    CHECK_ERROR(keel_task_spawn(parent, child, child_fn, NULL), -KEEL_ENOTINTASK);

    int64_t sum = 0;
    CHECK_RESULT(keel_task_attach(ex, busy, sleeper_fn, NULL));
    CHECK_RESULT(keel_task_attach(ex, parent, parent_fn, &sum));
    for (int i = 0; keel_task_result(parent) == -EINPROGRESS; i++) {
        CHECK(i < 100000);
        CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    }
    CHECK_ERROR(keel_task_result(parent), 3);
    CHECK(sum == 700);
    CHECK_ERROR(keel_task_result(child), 7);

    /* The parent cancelled while it joins: the spawned child runs on to its result. */
    CHECK_RESULT(keel_task_attach(ex, cp, cancelled_parent_fn, NULL));
    CHECK(keel_executor_run(ex, 1, 0) == 1); /* cp spawns and waits in its join */
    CHECK_RESULT(keel_task_cancel(cp));
    CHECK_RESULT(keel_task_cancel(busy));
    for (int i = 0; keel_executor_attached(ex) > 0; i++) {
        CHECK(i < 100000);
        CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    }
    CHECK_ERROR(keel_task_result(cp), -ECANCELED);
    CHECK_ERROR(keel_task_result(child), 7);

    /* Destroyed under a waiting task: it unwinds through -ECANCELED and cannot spawn. */
    CHECK_RESULT(keel_task_attach(ex, unwinding, unwinding_fn, NULL));
    CHECK(keel_executor_run(ex, 1, 0) == 1);
    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK_ERROR(late_spawn, -ESHUTDOWN);
    CHECK_ERROR(keel_task_result(late_child), -ENODATA); /* never attached */

    for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) CHECK_RESULT(keel_task_destroy(*all[i]));
    printf("spawn: 100 spawned runs joined (sum 700), misuse refused, no spawn while destroyed\n");
    return 0;
}
