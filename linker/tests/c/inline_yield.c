/* keel_task_yield_inline: the yield whose switch is inlined into the task function.
 * Three tasks on each switcher interleave round-robin through it, keeping callee-saved
 * state (locals live in registers across the switch, floating point included) intact; a
 * cancelled task gets -ECANCELED from it; the two halves refuse a caller that is not the
 * running task's function. */
#include <string.h>
#include "check.h"

#define TASKS 3
#define ROUNDS 1000

static int order[TASKS * ROUNDS];
static int next;

/* Mixes integer and floating-point state that must survive every switch. */
static int64_t worker(keel_task task, void *user) {
    int id = (int)(intptr_t)user;
    uint64_t acc = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    double f = 1.0 + id;
    for (int i = 0; i < ROUNDS; i++) {
        order[next++] = id;
        acc = acc * 6364136223846793005ull + (uint64_t)i;
        f = f * 1.0000001 + 0.5;
        keel_result r = keel_task_yield_inline(task);
        if (r < 0) return r;
    }
    /* The same computation, no switches: the values must agree. */
    uint64_t want = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    double g = 1.0 + id;
    for (int i = 0; i < ROUNDS; i++) {
        want = want * 6364136223846793005ull + (uint64_t)i;
        g = g * 1.0000001 + 0.5;
    }
    CHECK(acc == want);
    CHECK(f == g);
    return id + 10;
}

static keel_task victim_task;

static int64_t spins_until_cancelled(keel_task task, void *user) {
    (void)user;
    for (int i = 0; i < 100000; i++) {
        keel_result r = keel_task_yield_inline(task);
        if (r == -ECANCELED) return 7; /* noticed the cancel */
        CHECK_RESULT(r);
    }
    return -ETIME;
}

static int64_t canceller(keel_task task, void *user) {
    (void)user;
    CHECK_RESULT(keel_task_yield_inline(task));
    CHECK_RESULT(keel_task_cancel(victim_task));
    /* The halves refuse a caller that is not the named task running on its own stack. */
    CHECK_ERROR(keel_task_yield_end(victim_task), -KEEL_ENOTINTASK);
    void *regs = NULL;
    CHECK_ERROR(keel_task_yield_begin(victim_task, &regs), -KEEL_ENOTINTASK);
    CHECK(regs == NULL);
    CHECK_ERROR(keel_task_yield_begin(task, NULL), -EINVAL);
    return 1;
}

static void run_switcher(uint8_t switcher) {
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    keel_task_storage mem[TASKS + 2];
    keel_task t[TASKS + 2];
    keel_task_attr a;
    memset(&a, 0, sizeof a);
    a.switcher = switcher;
    for (int i = 0; i < TASKS + 2; i++) CHECK_RESULT(keel_task_init(&mem[i], sizeof mem[i], &a, &t[i]));
    next = 0;
    for (int i = 0; i < TASKS; i++) CHECK_RESULT(keel_task_attach(ex, t[i], worker, (void *)(intptr_t)i));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    for (int i = 0; i < TASKS; i++) CHECK_ERROR(keel_task_result(t[i]), i + 10);
    CHECK(next == TASKS * ROUNDS);
    for (int i = 0; i < TASKS * ROUNDS; i++) CHECK(order[i] == i % TASKS); /* round-robin */

    victim_task = t[TASKS];
    CHECK_RESULT(keel_task_attach(ex, t[TASKS], spins_until_cancelled, NULL));
    CHECK_RESULT(keel_task_attach(ex, t[TASKS + 1], canceller, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
    CHECK_ERROR(keel_task_result(t[TASKS]), 7);
    CHECK_ERROR(keel_task_result(t[TASKS + 1]), 1);
    /* Outside any task function. */
    CHECK_ERROR(keel_task_yield_end(t[0]), -KEEL_ENOTINTASK);
    CHECK_ERROR(keel_task_yield_inline(t[0]), -KEEL_ENOTINTASK);
    for (int i = 0; i < TASKS + 2; i++) CHECK_RESULT(keel_task_destroy(t[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
}

int main(void) {
    run_switcher(KEEL_SWITCHER_FIBER);
    run_switcher(KEEL_SWITCHER_UCONTEXT);
    printf("inline_yield: %d tasks x %d inline yields round-robin on both switchers; cancel seen\n", TASKS, ROUNDS);
    return 0;
}
