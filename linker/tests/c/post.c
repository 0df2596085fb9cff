/* keel_executor_post from another thread: a poster thread hands 64 tasks to an executor
 * that runs on the main thread (parked when idle, woken by each post); each function runs
 * on the executor's thread. Also: posting an owned task, and to a destroyed executor. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include "check.h"

#define N 64
static keel_task_storage mem[N];
static keel_task tasks[N];
static keel_executor ex;
static pthread_t main_thread;
static atomic_int ran;

static int64_t on_executor(keel_task task, void *user) {
    CHECK(pthread_equal(pthread_self(), main_thread));
    /* A posted function runs on a fiber: it suspends like an attached one. */
    CHECK_RESULT(keel_task_yield(task));
    CHECK_RESULT(keel_task_suspend_for(task, 1000));
    CHECK(pthread_equal(pthread_self(), main_thread));
    atomic_fetch_add(&ran, 1);
    return (int64_t)(intptr_t)user;
}

static atomic_int never_ran;

static int64_t never(keel_task task, void *user) {
    (void)task;
    (void)user;
    atomic_fetch_add(&never_ran, 1);
    return 0;
}

static int64_t on_fiber(keel_task task, void *user) {
    CHECK_RESULT(keel_task_yield(task)); /* attached on this thread: a fiber */
    return (int64_t)(intptr_t)user;
}

static void *poster(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) CHECK_RESULT(keel_executor_post(ex, tasks[i], on_executor, (void *)(intptr_t)i));
    return NULL;
}

int main(void) {
    main_thread = pthread_self();
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    for (int i = 0; i < N; i++) CHECK_RESULT(keel_task_init(&mem[i], sizeof mem[i], NULL, &tasks[i]));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, poster, NULL) == 0);
    for (int rounds = 0; atomic_load(&ran) < N; rounds++) {
        CHECK(rounds < 10000);
        keel_result r = keel_executor_run(ex, 64, 10000000); /* parks up to 10 ms */
        CHECK(r >= 0 || r == -ETIME);
    }
    CHECK(pthread_join(th, NULL) == 0);
    for (int i = 0; i < N; i++) CHECK_ERROR(keel_task_result(tasks[i]), i);

    /* Owned by an executor (attached here), then posted: busy until it is unowned. */
    CHECK_RESULT(keel_task_attach(ex, tasks[0], on_fiber, (void *)7));
    CHECK_ERROR(keel_executor_post(ex, tasks[0], on_executor, NULL), -EBUSY);
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(tasks[0]), 7);
    CHECK_ERROR(keel_executor_post(ex, tasks[1], NULL, NULL), -EINVAL);

    /* Posted, never run (the executor is destroyed first): the run ends as cancelled,
     * the task can be posted again elsewhere. */
    CHECK_RESULT(keel_executor_post(ex, tasks[2], never, NULL));
    CHECK_ERROR(keel_task_result(tasks[2]), -EINPROGRESS);
    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK(atomic_load(&never_ran) == 0);
    CHECK_ERROR(keel_task_result(tasks[2]), -ECANCELED);
    CHECK_ERROR(keel_executor_post(ex, tasks[1], on_executor, NULL), -ESTALE);
    /* A stack too big to map: refused before it runs, reported as cancelled, nothing
     * stranded. */
    keel_executor ex2;
    CHECK_RESULT(keel_executor_create(NULL, &ex2));
    keel_task_storage huge_mem;
    keel_task huge;
    keel_task_attr huge_attr;
    memset(&huge_attr, 0, sizeof huge_attr);
    huge_attr.stack_size = (size_t)1 << 60; /* beyond the address space */
    CHECK_RESULT(keel_task_init(&huge_mem, sizeof huge_mem, &huge_attr, &huge));
    CHECK_RESULT(keel_executor_post(ex2, huge, never, NULL));
    for (int rounds = 0; keel_task_result(huge) == -EINPROGRESS; rounds++) {
        CHECK(rounds < 1000);
        keel_result r = keel_executor_run(ex2, 16, 1000000);
        CHECK(r >= 0 || r == -ETIME);
    }
    CHECK_ERROR(keel_task_result(huge), -ECANCELED);
    CHECK(atomic_load(&never_ran) == 0);
    CHECK_RESULT(keel_executor_destroy(ex2));
    CHECK_RESULT(keel_task_destroy(huge));
    for (int i = 0; i < N; i++) CHECK_RESULT(keel_task_destroy(tasks[i]));
    printf("post: %d tasks posted from another thread ran on the executor's thread\n", N);
    return 0;
}
