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
    CHECK_ERROR(keel_task_yield(task), -KEEL_ENOTINTASK); /* posted: runs to completion */
    atomic_fetch_add(&ran, 1);
    return (int64_t)(intptr_t)user;
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

    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK_ERROR(keel_executor_post(ex, tasks[1], on_executor, NULL), -ESTALE);
    for (int i = 0; i < N; i++) CHECK_RESULT(keel_task_destroy(tasks[i]));
    printf("post: %d tasks posted from another thread ran on the executor's thread\n", N);
    return 0;
}
