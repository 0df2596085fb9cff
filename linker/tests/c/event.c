/* keel_event_*: three task functions wait on an event; one set from another thread
 * wakes them all; while set, a wait returns at once; after reset it waits again; destroy
 * refuses while a task waits, and a destroyed handle is stale. */
#include <pthread.h>
#include <string.h>
#include "check.h"

#define WAITERS 3

static keel_event ev;
static int woke;

static int64_t waiter(keel_task task, void *user) {
    (void)user;
    CHECK_RESULT(keel_event_wait(task, ev));
    woke++;
    CHECK_RESULT(keel_event_wait(task, ev)); /* still set: at once */
    return 5;
}

static void *set_it(void *arg) {
    (void)arg;
    CHECK_RESULT(keel_event_set(ev));
    return NULL;
}

int main(void) {
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    keel_task_storage mem[WAITERS];
    keel_task t[WAITERS];
    keel_task_attr a;
    memset(&a, 0, sizeof a);
    CHECK_RESULT(keel_event_create(false, &ev));
    CHECK_ERROR(keel_event_is_set(ev), 0);
    for (int i = 0; i < WAITERS; i++) {
        CHECK_RESULT(keel_task_init(&mem[i], sizeof mem[i], &a, &t[i]));
        CHECK_RESULT(keel_task_attach(ex, t[i], waiter, NULL));
    }
    CHECK_RESULT(keel_executor_run(ex, WAITERS, 0));
    CHECK(woke == 0);
    CHECK_ERROR(keel_event_destroy(ev), -EBUSY);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, set_it, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    CHECK(woke == WAITERS);
    for (int i = 0; i < WAITERS; i++) CHECK_ERROR(keel_task_result(t[i]), 5);
    CHECK_ERROR(keel_event_is_set(ev), 1);
    CHECK_RESULT(keel_event_reset(ev));
    CHECK_ERROR(keel_event_is_set(ev), 0);
    CHECK_ERROR(keel_event_wait(t[0], ev), -KEEL_ENOTINTASK);
    CHECK_RESULT(keel_event_destroy(ev));
    CHECK_ERROR(keel_event_set(ev), -ESTALE);
    CHECK_ERROR(keel_event_destroy(ev), -ESTALE);
    for (int i = 0; i < WAITERS; i++) CHECK_RESULT(keel_task_destroy(t[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("event: %d waiters woken by one set from another thread; reset, destroy checked\n", WAITERS);
    return 0;
}
