/* Several receivers of one key from C: two tasks of executor B wait in keel_fixed_receive
 * for key 5, executor A (same thread) sends two pipes, and each receiver gets one, the
 * older the first sent. Exits 77 (skipped, said on stderr) without io_uring or without
 * FIXED_FD_INSTALL (6.8). */
#include <string.h>
#include <unistd.h>
#include "check.h"

static keel_mailbox *b_mailbox;
static char got[2][8];
static int waiting;

static int64_t receiver(keel_task task, void *user) {
    int who = (int)(intptr_t)user;
    if (b_mailbox == NULL) CHECK_RESULT(keel_mailbox_get(task, &b_mailbox));
    waiting++;
    keel_result index = keel_fixed_receive(task, 5, KEEL_NO_TIMEOUT);
    CHECK_RESULT(index);
    keel_result fd = keel_fixed_install(task, (int)index, 1);
    if (fd == -ENOSYS) return 77;
    CHECK_RESULT(fd);
    CHECK(read((int)fd, got[who], sizeof got[who] - 1) == 1);
    CHECK(close((int)fd) == 0);
    CHECK_RESULT(keel_fixed_close(task, (int)index));
    return 1;
}

static int64_t sender(keel_task task, void *user) {
    (void)user;
    for (int i = 0; i < 2; i++) {
        int p[2];
        CHECK(pipe(p) == 0);
        char c = (char)('1' + i);
        CHECK(write(p[1], &c, 1) == 1 && close(p[1]) == 0);
        keel_result index = keel_fixed_register(task, p[0]);
        CHECK_RESULT(index);
        CHECK(close(p[0]) == 0);
        CHECK_RESULT(keel_fixed_send(task, (int)index, b_mailbox, 5));
    }
    return 1;
}

static keel_task start(keel_executor ex, keel_task_fn fn, void *user) {
    keel_task_attr ta = {0};
    keel_task t;
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, fn, user));
    return t;
}

static void run_a_little(keel_executor ex) {
    keel_result r = keel_executor_run(ex, 64, 1000000);
    CHECK(r >= 0 || r == -ETIME);
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32, .registered_files = 4};
    keel_executor a, b;
    keel_result r = keel_executor_create(&attr, &a);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "transfer_receivers: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    CHECK_RESULT(keel_executor_create(&attr, &b));
    keel_task r0 = start(b, receiver, (void *)0);
    for (int i = 0; i < 100 && waiting < 1; i++) run_a_little(b);
    keel_task r1 = start(b, receiver, (void *)1);
    for (int i = 0; i < 100 && waiting < 2; i++) run_a_little(b);
    CHECK(waiting == 2 && keel_executor_attached(b) == 2); /* both wait for key 5 */
    keel_task s = start(a, sender, NULL);
    while (keel_executor_attached(a) > 0) CHECK_RESULT(keel_executor_run(a, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(s), 1);
    for (int i = 0; i < 5000 && keel_executor_attached(b) > 0; i++) run_a_little(b);
    if (keel_task_result(r0) == 77) {
        fprintf(stderr, "transfer_receivers: SKIPPED: no FIXED_FD_INSTALL (6.8) here\n");
        return 77;
    }
    CHECK_ERROR(keel_task_result(r0), 1);
    CHECK_ERROR(keel_task_result(r1), 1);
    CHECK(strcmp(got[0], "1") == 0 && strcmp(got[1], "2") == 0); /* oldest receiver first */
    CHECK_RESULT(keel_task_destroy(r0));
    CHECK_RESULT(keel_task_destroy(r1));
    CHECK_RESULT(keel_task_destroy(s));
    keel_mailbox_free(b_mailbox);
    CHECK_RESULT(keel_executor_destroy(b));
    CHECK_RESULT(keel_executor_destroy(a));
    printf("transfer_receivers: two receivers of one key each got one descriptor, oldest first\n");
    return 0;
}
