/* Multishot read from C (keel_read_multi_*): a pipe's bytes arrive in order through
 * 16-byte provided buffers copied out into 5-byte pieces, end of file is 0; a stream
 * closed with data queued returns 0 and leaves the descriptor open and no longer read
 * from; a regular file ends its stream with -EBADFD; and the mistakes keel refuses: a
 * negative descriptor, NULL pointers, a zero length, an executor without provided
 * buffers, a stream used on another thread or by another executor (-EXDEV), a call
 * while another task's call of the stream waits (-EBUSY), bad executor
 * attributes. Exits 77 (skipped, said on stderr) without io_uring or
 * IORING_OP_READ_MULTISHOT (6.7+). */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

static int p[2] = {-1, -1}, q[2] = {-1, -1};
static keel_read_multi *shared_stream;
static keel_result other_thread_result;
static const char msg[] = "hello, multishot world from a pipe";

static int64_t other_body(keel_task task, void *user) {
    (void)user;
    char b[8];
    other_thread_result = keel_read_multi_next(task, shared_stream, b, sizeof b);
    return 0;
}

/* Another thread's task uses the stream: -KEEL_EWRONGTHREAD, nothing done. */
static void *other_thread(void *arg) {
    (void)arg;
    keel_executor_attr attr = {.ring_entries = 8, .provided_buffers = 2};
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(&attr, &ex));
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, other_body, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 1000000000u));
    CHECK_RESULT(keel_task_destroy(t));
    CHECK_RESULT(keel_executor_destroy(ex));
    return NULL;
}

static int64_t body(keel_task task, void *user) {
    (void)user;
    keel_read_multi *s;
    CHECK_RESULT(keel_read_multi_open(task, p[0], &s));
    CHECK(write(p[1], msg, sizeof msg - 1) == (ssize_t)(sizeof msg - 1));
    char got[64] = {0}, piece[5];
    size_t have = 0;
    while (have < sizeof msg - 1) {
        keel_result n = keel_read_multi_next(task, s, piece, sizeof piece);
        if (n == -EINVAL && have == 0) return 77; /* no IORING_OP_READ_MULTISHOT */
        CHECK(n > 0 && n <= (keel_result)sizeof piece);
        memcpy(got + have, piece, (size_t)n);
        have += (size_t)n;
    }
    CHECK(memcmp(got, msg, sizeof msg - 1) == 0);

    /* Misuse on a live stream. */
    CHECK_ERROR(keel_read_multi_next(task, s, piece, 0), -EINVAL);
    CHECK_ERROR(keel_read_multi_next(task, s, NULL, 4), -EFAULT);
    CHECK_ERROR(keel_read_multi_next(task, NULL, piece, 4), -EFAULT);
    shared_stream = s;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_thread, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_ERROR(other_thread_result, -KEEL_EWRONGTHREAD);

    /* End of file, then the same end again. */
    CHECK(close(p[1]) == 0);
    p[1] = -1;
    CHECK_ERROR(keel_read_multi_next(task, s, piece, sizeof piece), 0);
    CHECK_ERROR(keel_read_multi_next(task, s, piece, sizeof piece), 0);
    CHECK_RESULT(keel_read_multi_close(task, s));
    CHECK(fcntl(p[0], F_GETFD) >= 0); /* keel left the descriptor open */

    /* Closed with data queued: afterwards the descriptor is open and nothing reads it. */
    CHECK(pipe2(q, O_CLOEXEC) == 0);
    CHECK_RESULT(keel_read_multi_open(task, q[0], &s));
    CHECK(write(q[1], "abc", 3) == 3);
    CHECK_ERROR(keel_read_multi_next(task, s, piece, 1), 1);
    CHECK(write(q[1], "queued", 6) == 6);
    CHECK_RESULT(keel_read_multi_close(task, s));
    CHECK(write(q[1], "after", 5) == 5);
    char tail[16] = {0};
    ssize_t r = read(q[0], tail, sizeof tail);
    CHECK(r >= 5 && memcmp(tail + r - 5, "after", 5) == 0); /* "queued" may have gone with the stream */

    /* A regular file cannot be polled. */
    char path[] = "/tmp/keel-c-read-multi-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && unlink(path) == 0 && write(fd, "x", 1) == 1);
    CHECK_RESULT(keel_read_multi_open(task, fd, &s));
    CHECK_ERROR(keel_read_multi_next(task, s, piece, sizeof piece), -EBADFD);
    CHECK_ERROR(keel_read_multi_next(task, s, piece, sizeof piece), -EBADFD);
    CHECK_RESULT(keel_read_multi_close(task, s));
    CHECK(close(fd) == 0);

    /* Refused before anything is made. */
    CHECK_ERROR(keel_read_multi_open(task, -1, &s), -EBADF);
    CHECK_ERROR(keel_read_multi_open(task, q[0], NULL), -EFAULT);
    CHECK_ERROR(keel_read_multi_close(task, NULL), -EFAULT);
    return 1;
}

/* Armed by a task of executor A; executor B's task then gets -EXDEV from next and close. */
static keel_read_multi *armed;
static int r2[2] = {-1, -1};

static int64_t arm(keel_task task, void *user) {
    (void)user;
    char c;
    CHECK_RESULT(keel_read_multi_open(task, r2[0], &armed));
    CHECK(write(r2[1], "z", 1) == 1);
    CHECK_ERROR(keel_read_multi_next(task, armed, &c, 1), 1);
    return 1;
}

static int64_t elsewhere(keel_task task, void *user) {
    (void)user;
    char c;
    CHECK_ERROR(keel_read_multi_next(task, armed, &c, 1), -EXDEV);
    CHECK_ERROR(keel_read_multi_close(task, armed), -EXDEV); /* freed; A ends the read */
    return 1;
}

/* One call at a time: while one task waits in next, another's next and close get -EBUSY. */
static keel_read_multi *contended;
static int r3[2] = {-1, -1};

static int64_t waits_in_next(keel_task task, void *user) {
    (void)user;
    char c = 0;
    CHECK_ERROR(keel_read_multi_next(task, contended, &c, 1), 1);
    CHECK(c == 'w');
    return 1;
}

static int64_t contends(keel_task task, void *user) {
    (void)user;
    char c;
    CHECK_ERROR(keel_read_multi_next(task, contended, &c, 1), -EBUSY);
    CHECK_ERROR(keel_read_multi_close(task, contended), -EBUSY); /* not freed under the waiter */
    CHECK(write(r3[1], "w", 1) == 1);
    return 1;
}

static int64_t closes(keel_task task, void *user) {
    (void)user;
    CHECK_RESULT(keel_read_multi_close(task, contended));
    return 1;
}

static int64_t opens(keel_task task, void *user) {
    (void)user;
    CHECK_RESULT(keel_read_multi_open(task, r3[0], &contended));
    return 1;
}

static int64_t no_buffers(keel_task task, void *user) {
    (void)user;
    keel_read_multi *s;
    CHECK_ERROR(keel_read_multi_open(task, q[0], &s), -ENOBUFS);
    return 1;
}

static keel_task start_task(keel_executor ex, keel_task_fn fn) {
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, fn, NULL));
    return t;
}

static void run_task(keel_executor ex, keel_task_fn fn, int64_t want) {
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, fn, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    keel_result r = keel_task_result(t);
    if (r == 77) {
        fprintf(stderr, "read_multi: SKIPPED: no IORING_OP_READ_MULTISHOT (6.7+) here\n");
        exit(77);
    }
    CHECK_ERROR(r, want);
    CHECK_RESULT(keel_task_destroy(t));
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32, .provided_buffers = 8, .provided_buffer_size = 16};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "read_multi: SKIPPED: no io_uring here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    run_task(ex, body, 1);
    CHECK_RESULT(keel_executor_destroy(ex));

    keel_executor_attr plain = {.ring_entries = 8};
    CHECK_RESULT(keel_executor_create(&plain, &ex));
    run_task(ex, no_buffers, 1);
    CHECK_RESULT(keel_executor_destroy(ex));

    CHECK_RESULT(keel_executor_create(&attr, &ex));
    CHECK(pipe2(r3, O_CLOEXEC) == 0);
    run_task(ex, opens, 1);
    keel_task waiter = start_task(ex, waits_in_next);
    for (int i = 0; i < 10; i++) {
        r = keel_executor_run(ex, 16, 1000000);
        CHECK(r >= 0 || r == -ETIME);
    }
    run_task(ex, contends, 1); /* also runs the waiter to its end */
    CHECK_ERROR(keel_task_result(waiter), 1);
    CHECK_RESULT(keel_task_destroy(waiter));
    run_task(ex, closes, 1);
    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK(close(r3[0]) == 0 && close(r3[1]) == 0);

    keel_executor a, b;
    CHECK_RESULT(keel_executor_create(&attr, &a));
    CHECK_RESULT(keel_executor_create(&attr, &b));
    CHECK(pipe2(r2, O_CLOEXEC) == 0);
    run_task(a, arm, 1);
    run_task(b, elsewhere, 1);
    r = keel_executor_run(a, 16, 1000000); /* A ends the dropped read */
    CHECK(r >= 0 || r == -ETIME);
    CHECK_RESULT(keel_executor_destroy(b));
    CHECK_RESULT(keel_executor_destroy(a));
    CHECK(fcntl(r2[0], F_GETFD) >= 0 && close(r2[0]) == 0 && close(r2[1]) == 0);

    keel_executor bad;
    keel_executor_attr not_pow2 = {.ring_entries = 8, .provided_buffers = 3};
    CHECK_ERROR(keel_executor_create(&not_pow2, &bad), -EINVAL);
    keel_executor_attr no_ring = {.provided_buffers = 4};
    CHECK_ERROR(keel_executor_create(&no_ring, &bad), -EINVAL);
    CHECK(close(p[0]) == 0 && close(q[0]) == 0 && close(q[1]) == 0);
    printf("read_multi: a pipe's bytes in order through provided buffers, end of file, close with data "
           "queued, a regular file refused, misuse refused\n");
    return 0;
}
