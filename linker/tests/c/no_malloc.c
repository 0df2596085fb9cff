/* No malloc, counted: linked with -Wl,--wrap= for malloc, calloc, realloc, free,
 * posix_memalign and aligned_alloc (Rust's allocator takes the last two for alignments
 * above 16; linker/tests/run.sh builds it so; built plainly it exits 77). Counts the
 * allocator calls of the process from before the executor exists to after it is gone,
 * around 1,000 task runs in caller storage on a ring-less executor, and separately in
 * the window of the runs themselves. The runs allocate nothing; what the set-up allocates
 * once is printed and bounded (see the README's list). */
#include <string.h>
#include "check.h"

#ifdef KEEL_WRAP_MALLOC
static unsigned long calls;
void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
void __real_free(void *);
int __real_posix_memalign(void **, size_t, size_t);
void *__real_aligned_alloc(size_t, size_t);
void *__wrap_malloc(size_t n) { calls++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { calls++; return __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { calls++; return __real_realloc(p, n); }
void __wrap_free(void *p) { if (p) calls++; __real_free(p); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { calls++; return __real_posix_memalign(p, a, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { calls++; return __real_aligned_alloc(a, n); }
#endif

#define TASKS 8
#define RUNS 1000

static int64_t body(keel_task task, void *user) {
    (void)user;
    keel_result r = keel_task_yield(task);
    return KEEL_IS_ERROR(r) ? r : 1;
}

int main(void) {
#ifndef KEEL_WRAP_MALLOC
    fprintf(stderr, "no_malloc: SKIPPED: build with -DKEEL_WRAP_MALLOC and the --wrap flags\n");
    return 77;
#else
    static keel_executor_storage ex_mem;
    static keel_task_storage task_mem[TASKS];
    keel_task tasks[TASKS];
    keel_executor ex;
    /* Warm the thread's own state (stdio buffers, thread-locals) outside the count. */
    printf("no_malloc: counting\n");
    fflush(stdout);

    unsigned long before_init = calls;
    CHECK_RESULT(keel_executor_init(&ex_mem, sizeof ex_mem, NULL, &ex));
    for (int i = 0; i < TASKS; i++) CHECK_RESULT(keel_task_init(&task_mem[i], sizeof task_mem[i], NULL, &tasks[i]));
    unsigned long setup = calls - before_init;

    /* One warm-up round maps the fiber stacks (mmap, not malloc) into the spare pool. */
    for (int i = 0; i < TASKS; i++) CHECK_RESULT(keel_task_attach(ex, tasks[i], body, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, KEEL_NO_TIMEOUT));
    unsigned long warm = calls - before_init - setup;

    unsigned long before_runs = calls;
    int done = 0;
    while (done < RUNS) {
        for (int i = 0; i < TASKS && done < RUNS; i++, done++) CHECK_RESULT(keel_task_attach(ex, tasks[i], body, NULL));
        while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, KEEL_NO_TIMEOUT));
    }
    unsigned long in_runs = calls - before_runs;
    for (int i = 0; i < TASKS; i++) CHECK_ERROR(keel_task_result(tasks[i]), 1);

    unsigned long before_teardown = calls;
    for (int i = 0; i < TASKS; i++) CHECK_RESULT(keel_task_destroy(tasks[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    unsigned long teardown = calls - before_teardown;

    printf("no_malloc: allocator calls: set-up %lu, warm-up %lu, %d runs %lu, teardown %lu\n", setup, warm, RUNS,
           in_runs, teardown);
    CHECK(in_runs == 0);
    CHECK(setup == 0 && warm == 0 && teardown == 0);

    /* The count sees keel's allocations: the allocating form allocates its storage
     * once, and a ring executor's driver allocates its tables once at set-up. */
    unsigned long before_create = calls;
    keel_executor heap_ex;
    CHECK_RESULT(keel_executor_create(NULL, &heap_ex));
    unsigned long create = calls - before_create;
    CHECK_RESULT(keel_executor_destroy(heap_ex));
    CHECK(create >= 1);
    keel_executor_attr ring = {.ring_entries = 64};
    unsigned long before_ring = calls;
    keel_result r = keel_executor_init(&ex_mem, sizeof ex_mem, &ring, &ex);
    unsigned long ring_setup = calls - before_ring;
    if (r == 0) {
        CHECK(ring_setup >= 1);
        CHECK_RESULT(keel_executor_destroy(ex));
    }
    printf("no_malloc: one-time allocations seen: executor create %lu, ring set-up %lu\n", create, ring_setup);
    return 0;
#endif
}
