/* Every misuse keel detects at its C boundary gets an error code, never a crash: the
 * rows of the misuse table in the README, each checked here. */
#include <pthread.h>
#include <string.h>
#include "check.h"

static keel_executor ex;      /* a pure-compute executor (no ring) */
static keel_task other_task;  /* used by `uses_another_task` */

static int64_t returns_arg(keel_task task, void *user) {
    (void)task;
    return (int64_t)(intptr_t)user;
}

static int64_t returns_bad(keel_task task, void *user) {
    (void)task;
    (void)user;
    return INT64_MIN;
}

/* Calls that must fail from inside a running task. */
static int64_t misbehaves(keel_task task, void *user) {
    (void)user;
    CHECK_ERROR(keel_task_destroy(task), -EBUSY);             /* destroy itself: attached */
    CHECK_ERROR(keel_executor_destroy(ex), -EDEADLK);         /* its executor, from inside run */
    CHECK_ERROR(keel_executor_run(ex, 1, 0), -EBUSY);         /* run re-entered */
    CHECK_ERROR(keel_task_yield(other_task), -KEEL_ENOTINTASK); /* another task's handle */
    CHECK_ERROR(keel_file_open(task, "/dev/null", 0, 0), -EOPNOTSUPP); /* no ring */
    CHECK_RESULT(keel_task_yield(task));
    return 7;
}

/* Suspends for a long time; the executor's destroy cancels it. */
static int64_t sleeps_long(keel_task task, void *user) {
    int *saw = user;
    keel_result r = keel_task_suspend_for(task, 60ull * 1000000000ull);
    *saw = (int)-r;
    return r;
}

struct from_thread {
    keel_task task;
    keel_result run, attach, destroy, destroy_ex, result;
};

static void *other_thread(void *arg) {
    struct from_thread *t = arg;
    t->run = keel_executor_run(ex, 1, 0);
    t->attach = keel_task_attach(ex, t->task, returns_arg, NULL);
    t->destroy = keel_task_destroy(t->task);
    t->destroy_ex = keel_executor_destroy(ex);
    t->result = keel_task_result(t->task);
    return NULL;
}

static void drain(keel_executor e) {
    while (keel_executor_attached(e) > 0) CHECK_RESULT(keel_executor_run(e, 16, 5000000000u));
}

int main(void) {
    keel_executor null_ex;
    keel_task null_task;
    memset(&null_ex, 0, sizeof null_ex);
    memset(&null_task, 0, sizeof null_task);

    /* Null handles. */
    CHECK_ERROR(keel_executor_run(null_ex, 1, 0), -ESTALE);
    CHECK_ERROR(keel_executor_destroy(null_ex), -ESTALE);
    CHECK_ERROR(keel_task_destroy(null_task), -ESTALE);
    CHECK_ERROR(keel_task_result(null_task), -ESTALE);
    CHECK_ERROR(keel_task_attach(null_ex, null_task, returns_arg, NULL), -ESTALE);

    /* Bad storage and attributes. */
    static keel_executor_storage ex_mem;
    static keel_task_storage task_mem[3];
    keel_executor_attr bad_ring = {.ring_entries = 3};
    CHECK_ERROR(keel_executor_init(&ex_mem, sizeof ex_mem - 1, NULL, &ex), -EINVAL);
    CHECK_ERROR(keel_executor_init(ex_mem.bytes + 8, sizeof ex_mem - 8, NULL, &ex), -EINVAL);
    CHECK_ERROR(keel_executor_init(&ex_mem, sizeof ex_mem, &bad_ring, &ex), -EINVAL);
    keel_task_attr bad_prio = {.cpu_priority = 7};
    keel_task_attr tiny_stack = {.stack_size = 100};
    keel_task t;
    CHECK_ERROR(keel_task_init(&task_mem[0], sizeof task_mem[0], &bad_prio, &t), -EINVAL);
    CHECK_ERROR(keel_task_init(&task_mem[0], sizeof task_mem[0], &tiny_stack, &t), -EINVAL);
    CHECK_ERROR(keel_task_init(NULL, 0, NULL, &t), -EINVAL);

    CHECK_RESULT(keel_executor_init(&ex_mem, sizeof ex_mem, NULL, &ex));
    keel_task task;
    CHECK_RESULT(keel_task_init(&task_mem[0], sizeof task_mem[0], NULL, &task));
    CHECK_RESULT(keel_task_init(&task_mem[1], sizeof task_mem[1], NULL, &other_task));

    /* Never attached: no result; task-side calls outside the task's function. */
    CHECK_ERROR(keel_task_result(task), -ENODATA);
    CHECK_ERROR(keel_task_yield(task), -KEEL_ENOTINTASK);
    CHECK_ERROR(keel_task_suspend_for(task, 1), -KEEL_ENOTINTASK);
    CHECK_ERROR(keel_task_cancel(task), -EINVAL);

    /* A NULL function; attached twice; destroyed while attached. */
    CHECK_ERROR(keel_task_attach(ex, task, NULL, NULL), -EINVAL);
    CHECK_RESULT(keel_task_attach(ex, task, returns_arg, (void *)(intptr_t)5));
    CHECK_ERROR(keel_task_attach(ex, task, returns_arg, NULL), -EBUSY);
    CHECK_ERROR(keel_task_destroy(task), -EBUSY);
    drain(ex);
    CHECK_ERROR(keel_task_result(task), 5);
    CHECK_ERROR(keel_task_cancel(task), -EALREADY); /* completed already */

    /* A function's error, a bad return value, calls it must not make. */
    CHECK_RESULT(keel_task_attach(ex, task, returns_arg, (void *)(intptr_t)-ENOENT));
    drain(ex);
    CHECK_ERROR(keel_task_result(task), -ENOENT);
    CHECK_RESULT(keel_task_attach(ex, task, returns_bad, NULL));
    drain(ex);
    CHECK_ERROR(keel_task_result(task), -KEEL_EBADRESULT);
    CHECK_RESULT(keel_task_attach(ex, task, misbehaves, NULL));
    drain(ex);
    CHECK_ERROR(keel_task_result(task), 7);

    /* keel's fiber switch or glibc's ucontext, chosen per task. */
    keel_task uctx;
    keel_task_attr uctx_attr = {.switcher = KEEL_SWITCHER_UCONTEXT, .stack_size = 64 * 1024};
    CHECK_RESULT(keel_task_create(&uctx_attr, &uctx));
    CHECK_RESULT(keel_task_attach(ex, uctx, misbehaves, NULL));
    drain(ex);
    CHECK_ERROR(keel_task_result(uctx), 7);
    CHECK_RESULT(keel_task_destroy(uctx));
    keel_task_attr bad_switcher = {.switcher = 9};
    CHECK_ERROR(keel_task_create(&bad_switcher, &uctx), -EINVAL);

    /* Cancelled before it ran: completes as cancelled, its function never called. */
    CHECK_RESULT(keel_task_attach(ex, task, returns_bad, NULL));
    CHECK_RESULT(keel_task_cancel(task));
    drain(ex);
    CHECK_ERROR(keel_task_result(task), -ECANCELED);

    /* The wrong thread: every call on the executor or its tasks. */
    struct from_thread ft = {.task = task};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_thread, &ft) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_ERROR(ft.run, -KEEL_EWRONGTHREAD);
    CHECK_ERROR(ft.attach, -KEEL_EWRONGTHREAD);
    CHECK_ERROR(ft.destroy, -KEEL_EWRONGTHREAD);
    CHECK_ERROR(ft.destroy_ex, -KEEL_EWRONGTHREAD);
    CHECK_ERROR(ft.result, -KEEL_EWRONGTHREAD);

    /* Destroyed twice, and a stale handle after the storage is reused. */
    CHECK_RESULT(keel_task_destroy(task));
    CHECK_ERROR(keel_task_destroy(task), -ESTALE);
    CHECK_ERROR(keel_task_result(task), -ESTALE);
    keel_task again;
    CHECK_RESULT(keel_task_init(&task_mem[0], sizeof task_mem[0], NULL, &again));
    CHECK_ERROR(keel_task_attach(ex, task, returns_arg, NULL), -ESTALE);
    CHECK_RESULT(keel_task_destroy(again));

    /* The same with the allocating forms (storage kept type-stable, so still detected). */
    keel_task heap_task;
    CHECK_RESULT(keel_task_create(NULL, &heap_task));
    CHECK_RESULT(keel_task_destroy(heap_task));
    CHECK_ERROR(keel_task_destroy(heap_task), -ESTALE);
    keel_executor heap_ex;
    CHECK_RESULT(keel_executor_create(NULL, &heap_ex));
    CHECK_RESULT(keel_executor_destroy(heap_ex));
    CHECK_ERROR(keel_executor_destroy(heap_ex), -ESTALE);
    CHECK_ERROR(keel_executor_run(heap_ex, 1, 0), -ESTALE);

    /* An executor destroyed under a suspended task: the task sees -ECANCELED, keeps its
     * result, and can be attached to another executor. */
    keel_task sleeper;
    CHECK_RESULT(keel_task_init(&task_mem[2], sizeof task_mem[2], NULL, &sleeper));
    int saw = 0;
    CHECK_RESULT(keel_task_attach(ex, sleeper, sleeps_long, &saw));
    CHECK_RESULT(keel_executor_run(ex, 1, 0));
    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK(saw == ECANCELED);
    CHECK_ERROR(keel_task_result(sleeper), -ECANCELED);
    CHECK_ERROR(keel_executor_destroy(ex), -ESTALE);
    keel_executor ex2;
    CHECK_RESULT(keel_executor_create(NULL, &ex2));
    CHECK_RESULT(keel_task_attach(ex2, sleeper, returns_arg, (void *)(intptr_t)9));
    drain(ex2);
    CHECK_ERROR(keel_task_result(sleeper), 9);
    CHECK_RESULT(keel_task_destroy(sleeper));
    CHECK_RESULT(keel_task_destroy(other_task));
    CHECK_RESULT(keel_executor_destroy(ex2));
    printf("misuse: every detected misuse got its error code\n");
    return 0;
}
