/* NT-style status blocks from C: a task initiates four reads, each with its own
 * keel_io_status on its stack, and reaps them all with
 * keel_task_suspend_until_completed_io before it returns (a block on the function's stack
 * must be: its frame goes at the return); a second task returns with a read in flight on
 * a static block and buffer, and its run drains the read before it completes. Exits 77
 * (skipped, said on stderr) if io_uring cannot be set up here. */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "check.h"

#define PARTS 4
static char path[64];

static int64_t reads_in_parallel(keel_task task, void *user) {
    (void)user;
    keel_io_status st[PARTS];
    char bufs[PARTS][8];
    keel_result fd = keel_file_open(task, path, O_RDONLY, 0);
    if (KEEL_IS_ERROR(fd)) return fd;
    for (int i = 0; i < PARTS; i++) {
        CHECK_RESULT(keel_io_status_init(task, &st[i]));
        CHECK_ERROR(keel_io_status_result(task, &st[i]), -ENODATA);
        memset(bufs[i], 0, sizeof bufs[i]);
        CHECK_RESULT(keel_file_read_async(task, &st[i], (int)fd, bufs[i], 4, (uint64_t)i * 4));
    }
    CHECK_ERROR(keel_file_read_async(task, &st[0], (int)fd, bufs[0], 4, 0), -EBUSY);
    int done = 0;
    while (done < PARTS) {
        keel_result n = keel_task_suspend_until_completed_io(task, PARTS);
        CHECK_RESULT(n);
        CHECK(n > 0);
        done += (int)n;
    }
    CHECK_ERROR(keel_task_suspend_until_completed_io(task, PARTS), 0); /* nothing in flight */
    static const char *want[PARTS] = {"abcd", "efgh", "ijkl", "mnop"};
    for (int i = 0; i < PARTS; i++) {
        CHECK_ERROR(keel_io_status_result(task, &st[i]), 4);
        CHECK(memcmp(bufs[i], want[i], 4) == 0);
    }
    /* A taken block starts another operation without init. */
    CHECK_RESULT(keel_file_read_async(task, &st[0], (int)fd, bufs[0], 2, 14));
    CHECK_ERROR(keel_task_suspend_until_completed_io(task, 1), 1);
    CHECK_ERROR(keel_io_status_result(task, &st[0]), 2);
    CHECK(memcmp(bufs[0], "op", 2) == 0);
    CHECK_RESULT(keel_io_status_init(task, &st[1]));
    CHECK_RESULT(keel_file_fsync_async(task, &st[1], (int)fd));
    CHECK_ERROR(keel_task_suspend_until_completed_io(task, 1), 1);
    CHECK_ERROR(keel_io_status_result(task, &st[1]), 0);
    CHECK_RESULT(keel_file_close(task, (int)fd));

    /* A send and a receive in flight at once, on the two ends of a socket pair. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char got[5] = {0};
    CHECK_RESULT(keel_socket_recv_async(task, &st[2], sv[1], got, sizeof got, 0));
    CHECK_RESULT(keel_socket_send_async(task, &st[3], sv[0], "hello", 5, 0));
    for (int taken = 0; taken < 2;) {
        keel_result n = keel_task_suspend_until_completed_io(task, 2);
        CHECK_RESULT(n);
        taken += (int)n;
    }
    CHECK_ERROR(keel_io_status_result(task, &st[2]), 5);
    CHECK_ERROR(keel_io_status_result(task, &st[3]), 5);
    CHECK(memcmp(got, "hello", 5) == 0);

    /* One completed block at a time, by address, with a timeout: a receive with nothing
     * sent times out (and stays in flight); a send then completes both, each named. */
    keel_io_status *which = NULL;
    CHECK_ERROR(keel_task_next_completed_io(task, 1000000, &which), -ENODATA); /* idle */
    memset(got, 0, sizeof got);
    CHECK_RESULT(keel_socket_recv_async(task, &st[2], sv[1], got, 3, 0));
    CHECK_ERROR(keel_task_next_completed_io(task, 0, &which), -ETIME);
    CHECK_ERROR(keel_task_next_completed_io(task, 2000000, &which), -ETIME);
    CHECK(which == NULL);
    CHECK_ERROR(keel_task_next_completed_io(task, 0, NULL), -EFAULT);
    CHECK_RESULT(keel_socket_send_async(task, &st[3], sv[0], "abc", 3, 0));
    int seen2 = 0, seen3 = 0;
    for (int i = 0; i < 2; i++) {
        CHECK_RESULT(keel_task_next_completed_io(task, KEEL_NO_TIMEOUT, &which));
        if (which == &st[2]) seen2++;
        if (which == &st[3]) seen3++;
        CHECK_ERROR(keel_io_status_result(task, which), 3);
    }
    CHECK(seen2 == 1 && seen3 == 1);
    CHECK(memcmp(got, "abc", 3) == 0);
    CHECK_ERROR(keel_task_next_completed_io(task, KEEL_NO_TIMEOUT, &which), -ENODATA);
    close(sv[0]);
    close(sv[1]);
    return done;
}

/* Initiates with a status block in static memory and returns with the read in flight:
 * the run drains it (keel reaps it) before it completes. */
static keel_io_status lasting;
static char lasting_buf[4];

static int64_t returns_in_flight(keel_task task, void *user) {
    int fd = *(int *)user;
    CHECK_RESULT(keel_io_status_init(task, &lasting));
    CHECK_RESULT(keel_file_read_async(task, &lasting, fd, lasting_buf, sizeof lasting_buf, 0));
    return 5;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 16};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "status_io: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    snprintf(path, sizeof path, "/tmp/keel-c-status-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs("abcdefghijklmnop", f) >= 0);
    CHECK(fclose(f) == 0);

    keel_task a, b;
    CHECK_RESULT(keel_task_create(NULL, &a));
    CHECK_RESULT(keel_task_create(NULL, &b));
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_RESULT(keel_task_attach(ex, a, reads_in_parallel, NULL));
    CHECK_RESULT(keel_task_attach(ex, b, returns_in_flight, &fd));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(a), PARTS);
    CHECK_ERROR(keel_task_result(b), 5);
    CHECK(memcmp(lasting_buf, "abcd", 4) == 0);
    keel_executor_stats st;
    CHECK_RESULT(keel_executor_get_stats(ex, &st));
    CHECK(st.io_completed >= PARTS + 1 + 1 + 2); /* reads, the drained read, open and close */
    close(fd);
    unlink(path);
    CHECK_RESULT(keel_task_destroy(a));
    CHECK_RESULT(keel_task_destroy(b));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("status_io: %d reads, an fsync, a send and a recv reaped through status blocks; one read drained at return\n", PARTS + 1);
    return 0;
}
