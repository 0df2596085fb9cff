/* Descriptor transfer from C: a pipe's read end is registered into executor A's fixed-file
 * table (its descriptor closed at once), sent to executor B's ring on another thread, and
 * received there by key, installed back as a descriptor and read; plus the arguments keel
 * refuses. Descriptors are back at baseline afterwards. Exits 77 (skipped, said on
 * stderr) if io_uring cannot be set up here. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "check.h"

static const char TEXT[] = "hand-off from C";
static _Atomic(keel_mailbox *) b_mailbox;

static int64_t receiver(keel_task task, void *user) {
    (void)user;
    keel_mailbox *mb = NULL;
    CHECK_RESULT(keel_mailbox_get(task, &mb));
    CHECK_ERROR(keel_fixed_install(task, 3, 1), -EBADF); /* an index holding nothing */
    CHECK_ERROR(keel_fixed_register(task, -1), -EBADF);
    CHECK_ERROR(keel_fixed_receive(task, 42, 0), -ETIME);               /* nothing yet: only looks */
    CHECK_ERROR(keel_fixed_receive(task, 42, 2 * 1000 * 1000), -ETIME); /* 2 ms pass first */
    atomic_store(&b_mailbox, mb);
    keel_result index = keel_fixed_receive(task, 42, KEEL_NO_TIMEOUT); /* parks until A's message */
    CHECK_RESULT(index);
    keel_result fd = keel_fixed_install(task, (int)index, 1);
    CHECK_RESULT(fd);
    char buf[64] = {0};
    CHECK(read((int)fd, buf, sizeof buf) == (ssize_t)strlen(TEXT));
    CHECK(strcmp(buf, TEXT) == 0);
    CHECK(close((int)fd) == 0);
    CHECK_RESULT(keel_fixed_close(task, (int)index));
    return 1;
}

static int64_t sender(keel_task task, void *user) {
    (void)user;
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], TEXT, strlen(TEXT)) == (ssize_t)strlen(TEXT));
    CHECK(close(p[1]) == 0);
    keel_result index = keel_fixed_register(task, p[0]);
    CHECK_RESULT(index);
    CHECK(close(p[0]) == 0); /* the index holds the pipe now */
    keel_mailbox *own = NULL;
    CHECK_RESULT(keel_mailbox_get(task, &own));
    CHECK_ERROR(keel_fixed_send(task, (int)index, own, 1), -EINVAL); /* its own ring */
    CHECK_ERROR(keel_fixed_send(task, (int)index, NULL, 1), -EINVAL);
    keel_mailbox_free(own);
    keel_mailbox *mb;
    for (int i = 0; (mb = atomic_load(&b_mailbox)) == NULL; i++) {
        CHECK(i < 5000); /* bounded: 5 s */
        CHECK_RESULT(keel_task_suspend_for(task, 1000000));
    }
    CHECK_RESULT(keel_fixed_send(task, (int)index, mb, 42)); /* quiesce, send, close ours */
    CHECK_ERROR(keel_fixed_close(task, (int)index), -EBADF); /* closed by the send */
    return 2;
}

static keel_result make(keel_executor *ex) {
    keel_executor_attr attr = {.ring_entries = 32, .registered_files = 4};
    return keel_executor_create(&attr, ex);
}

static void run_one(keel_executor ex, keel_task_fn fn, int64_t want) {
    keel_task_attr ta = {0};
    keel_task t;
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, fn, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(t), want);
    CHECK_RESULT(keel_task_destroy(t));
}

static void *thread_b(void *arg) {
    keel_executor ex;
    CHECK_RESULT(make(&ex));
    run_one(ex, receiver, 1);
    CHECK_RESULT(keel_executor_destroy(ex));
    (void)arg;
    return NULL;
}

int main(void) {
    int baseline = dup(0);
    CHECK(baseline >= 0 && close(baseline) == 0);
    keel_executor ex;
    keel_result r = make(&ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "transfer: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    pthread_t b;
    CHECK(pthread_create(&b, NULL, thread_b, NULL) == 0);
    run_one(ex, sender, 2);
    CHECK(pthread_join(b, NULL) == 0);
    keel_mailbox_free(atomic_load(&b_mailbox));
    CHECK_RESULT(keel_executor_destroy(ex));
    int after = dup(0);
    CHECK(after == baseline); /* the lowest free descriptor: none leaked */
    close(after);
    printf("transfer: a pipe registered on one executor was sent to another's ring, received and read there\n");
    return 0;
}
