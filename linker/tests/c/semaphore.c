/* keel_semaphore_*: two task functions pass one permit back and forth (each hand-over
 * goes to the waiting task); a high-priority waiter is served before an earlier
 * low-priority one; try_acquire, release from another thread, close (-EPIPE), destroy with
 * a waiter (-EBUSY) and a stale handle (-ESTALE). */
#include <pthread.h>
#include <string.h>
#include "check.h"

#define ROUNDS 1000

static keel_semaphore sem;
static int turns[2];
static int order[2];
static int served;

static int64_t ping(keel_task task, void *user) {
    int id = (int)(intptr_t)user;
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_RESULT(keel_semaphore_acquire(task, sem));
        turns[id]++;
        /* Strict alternation: the other task waits, so the permit goes to it. */
        CHECK(turns[id] - turns[1 - id] <= 1);
        CHECK_RESULT(keel_semaphore_release(sem, 1));
    }
    return id + 1;
}

static int64_t waiter(keel_task task, void *user) {
    keel_result r = keel_semaphore_acquire(task, sem);
    if (r < 0) return r;
    order[served++] = (int)(intptr_t)user;
    return 0;
}

static void *release_one(void *arg) {
    (void)arg;
    CHECK_RESULT(keel_semaphore_release(sem, 1));
    return NULL;
}

static void run_all(keel_executor ex) {
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
}

int main(void) {
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    keel_task_storage mem[2];
    keel_task t[2];
    keel_task_attr lo, hi;
    memset(&lo, 0, sizeof lo);
    memset(&hi, 0, sizeof hi);
    lo.cpu_priority = KEEL_PRIORITY_LOW;
    hi.cpu_priority = KEEL_PRIORITY_HIGH;
    CHECK_RESULT(keel_task_init(&mem[0], sizeof mem[0], &lo, &t[0]));
    CHECK_RESULT(keel_task_init(&mem[1], sizeof mem[1], &lo, &t[1]));

    /* Ping-pong: both queue on an empty semaphore, then one permit goes back and forth. */
    CHECK_RESULT(keel_semaphore_create(0, &sem));
    CHECK_ERROR(keel_semaphore_try_acquire(sem), -EAGAIN);
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_attach(ex, t[i], ping, (void *)(intptr_t)i));
    CHECK_RESULT(keel_executor_run(ex, 2, 0));
    CHECK_ERROR(keel_semaphore_destroy(sem), -EBUSY); /* tasks wait on it */
    CHECK_RESULT(keel_semaphore_release(sem, 1));
    run_all(ex);
    CHECK_ERROR(keel_task_result(t[0]), 1);
    CHECK_ERROR(keel_task_result(t[1]), 2);
    CHECK(turns[0] == ROUNDS && turns[1] == ROUNDS);
    CHECK_ERROR(keel_semaphore_available(sem), 1);

    /* Priority: a low-priority waiter queued first, a high one second; a permit released
     * on another thread goes to the high one. */
    CHECK_RESULT(keel_semaphore_try_acquire(sem));
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_destroy(t[i]));
    CHECK_RESULT(keel_task_init(&mem[0], sizeof mem[0], &lo, &t[0]));
    CHECK_RESULT(keel_task_init(&mem[1], sizeof mem[1], &hi, &t[1]));
    CHECK_RESULT(keel_task_attach(ex, t[0], waiter, (void *)(intptr_t)0));
    CHECK_RESULT(keel_executor_run(ex, 1, 0));
    CHECK_RESULT(keel_task_attach(ex, t[1], waiter, (void *)(intptr_t)1));
    CHECK_RESULT(keel_executor_run(ex, 1, 0));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, release_one, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    CHECK(served == 1 && order[0] == 1);
    /* Closing ends the other wait with -EPIPE. */
    CHECK_RESULT(keel_semaphore_close(sem));
    run_all(ex);
    CHECK_ERROR(keel_task_result(t[0]), -EPIPE);
    CHECK_ERROR(keel_task_result(t[1]), 0);
    CHECK_ERROR(keel_semaphore_try_acquire(sem), -EPIPE);

    /* Outside a task function; then destroy, twice. */
    CHECK_ERROR(keel_semaphore_acquire(t[0], sem), -KEEL_ENOTINTASK);
    CHECK_RESULT(keel_semaphore_destroy(sem));
    CHECK_ERROR(keel_semaphore_destroy(sem), -ESTALE);
    CHECK_ERROR(keel_semaphore_release(sem, 1), -ESTALE);
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_destroy(t[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("semaphore: %d hand-overs between two tasks; priority, cross-thread release, close, destroy checked\n",
           2 * ROUNDS);
    return 0;
}
