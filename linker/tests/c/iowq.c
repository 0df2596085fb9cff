/* The kernel's worker pool from executor attributes: a cap given at creation is
 * registered (keel_executor_set_iowq_max_workers reports it as the limits before), an
 * executor names another's ring with attach_wq on its thread and from another thread, and
 * the attributes keel refuses: a cap or attach_wq without a ring (-EINVAL), attach_wq
 * naming an executor without a ring (-EINVAL), a destroyed one or a made-up handle
 * (-ESTALE). Exits 77 (skipped, said on stderr) if io_uring cannot be set up here. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "check.h"

static keel_executor first;

static int64_t nothing(keel_task task, void *user) {
    (void)task;
    (void)user;
    return 7;
}

/* Runs one task on `ex` to show the executor works. */
static void run_one(keel_executor ex) {
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, nothing, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 1000000000u));
    CHECK_ERROR(keel_task_result(t), 7);
    CHECK_RESULT(keel_task_destroy(t));
}

/* Another thread makes an executor attached to `first`'s ring and runs a task on it. */
static void *other_thread(void *arg) {
    (void)arg;
    keel_executor_attr attr = {.ring_entries = 8, .attach_wq = first, .iowq_unbounded_workers = 1};
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(&attr, &ex));
    run_one(ex);
    uint32_t old[2] = {99, 99};
    CHECK_RESULT(keel_executor_set_iowq_max_workers(ex, 0, 0, old));
    CHECK(old[1] == 1); /* this thread's own pool, capped at creation */
    CHECK_RESULT(keel_executor_destroy(ex));
    return NULL;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32, .iowq_bounded_workers = 3, .iowq_unbounded_workers = 2};
    keel_result r = keel_executor_create(&attr, &first);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "iowq: SKIPPED: no io_uring here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    uint32_t old[2] = {0, 0};
    CHECK_RESULT(keel_executor_set_iowq_max_workers(first, 0, 0, old));
    CHECK(old[0] == 3 && old[1] == 2); /* the cap the attributes asked for */

    /* attach_wq to a ring of this thread, then from another thread. */
    keel_executor_attr attached = {.ring_entries = 8, .attach_wq = first};
    keel_executor second;
    CHECK_RESULT(keel_executor_create(&attached, &second));
    run_one(second);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_thread, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);

    /* Misuse: a cap or attach_wq without a ring. */
    keel_executor bad;
    keel_executor_attr no_ring_cap = {.iowq_bounded_workers = 1};
    CHECK_ERROR(keel_executor_create(&no_ring_cap, &bad), -EINVAL);
    keel_executor_attr no_ring_attach = {.attach_wq = first};
    CHECK_ERROR(keel_executor_create(&no_ring_attach, &bad), -EINVAL);
    /* attach_wq naming an executor without a ring. */
    keel_executor ringless;
    keel_executor_attr none = {0};
    CHECK_RESULT(keel_executor_create(&none, &ringless));
    keel_executor_attr to_ringless = {.ring_entries = 8, .attach_wq = ringless};
    CHECK_ERROR(keel_executor_create(&to_ringless, &bad), -EINVAL);
    CHECK_RESULT(keel_executor_destroy(ringless));
    /* attach_wq naming a destroyed executor, or a made-up generation. */
    keel_executor_attr to_gone = {.ring_entries = 8, .attach_wq = second};
    CHECK_RESULT(keel_executor_destroy(second));
    CHECK_ERROR(keel_executor_create(&to_gone, &bad), -ESTALE);
    keel_executor made_up = first;
    made_up.generation += 1000;
    keel_executor_attr to_made_up = {.ring_entries = 8, .attach_wq = made_up};
    CHECK_ERROR(keel_executor_create(&to_made_up, &bad), -ESTALE);
    /* In caller storage too: the refused init leaves nothing behind. */
    _Alignas(KEEL_EXECUTOR_STORAGE_ALIGN) static unsigned char mem[KEEL_EXECUTOR_STORAGE_SIZE];
    CHECK_ERROR(keel_executor_init(mem, sizeof mem, &to_made_up, &bad), -ESTALE);
    keel_executor_attr ok_in_mem = {.ring_entries = 8, .attach_wq = first, .iowq_bounded_workers = 1};
    CHECK_RESULT(keel_executor_init(mem, sizeof mem, &ok_in_mem, &bad));
    run_one(bad);
    CHECK_RESULT(keel_executor_destroy(bad));

    CHECK_RESULT(keel_executor_destroy(first));
    printf("iowq: a cap set at creation is in force, attach_wq works on this thread and another, "
           "and bad attributes get -EINVAL / -ESTALE\n");
    return 0;
}
