/* keel_channel_*: a producer task sends 1..N through 4 slots to a consumer task, which
 * sums what it receives until the closed channel is drained (-EPIPE); try_send on a full
 * channel and try_recv on an empty one say -EAGAIN; destroy refuses while a task waits;
 * a channel made again in the same storage (larger) works; stale handles say -ESTALE. */
#include <string.h>
#include "check.h"

#define N 1000

static keel_channel ch;
static uint64_t sum;
static int received;

static int64_t producer(keel_task task, void *user) {
    (void)user;
    for (uint64_t i = 1; i <= N; i++) CHECK_RESULT(keel_channel_send(task, ch, i));
    CHECK_RESULT(keel_channel_close(ch));
    CHECK_ERROR(keel_channel_send(task, ch, 0), -EPIPE);
    return 1;
}

static int64_t consumer(keel_task task, void *user) {
    (void)user;
    uint64_t v, last = 0;
    keel_result r;
    while ((r = keel_channel_recv(task, ch, &v)) == 0) {
        CHECK(v == last + 1); /* in order, each once */
        last = v;
        sum += v;
        received++;
    }
    return r;
}

static void run_all(keel_executor ex) {
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 64, 5000000000u));
}

int main(void) {
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(NULL, &ex));
    keel_task_storage mem[2];
    keel_task t[2];
    keel_task_attr a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_init(&mem[i], sizeof mem[i], &a, &t[i]));
    keel_channel bad;
    CHECK_ERROR(keel_channel_create(0, &bad), -EINVAL);

    CHECK_RESULT(keel_channel_create(4, &ch));
    uint64_t v;
    CHECK_ERROR(keel_channel_try_recv(ch, &v), -EAGAIN);
    CHECK_RESULT(keel_task_attach(ex, t[1], consumer, NULL));
    CHECK_RESULT(keel_executor_run(ex, 1, 0));
    CHECK_ERROR(keel_channel_destroy(ch), -EBUSY); /* the consumer waits */
    CHECK_RESULT(keel_task_attach(ex, t[0], producer, NULL));
    run_all(ex);
    CHECK_ERROR(keel_task_result(t[0]), 1);
    CHECK_ERROR(keel_task_result(t[1]), -EPIPE);
    CHECK(received == N && sum == (uint64_t)N * (N + 1) / 2);
    CHECK_RESULT(keel_channel_destroy(ch));
    CHECK_ERROR(keel_channel_len(ch), -ESTALE);

    /* Made again (the storage is reused, with a larger buffer): full, then drained. */
    CHECK_RESULT(keel_channel_create(8, &ch));
    for (uint64_t i = 0; i < 8; i++) CHECK_RESULT(keel_channel_try_send(ch, i));
    CHECK_ERROR(keel_channel_try_send(ch, 8), -EAGAIN);
    CHECK_ERROR(keel_channel_len(ch), 8);
    for (uint64_t i = 0; i < 8; i++) {
        CHECK_RESULT(keel_channel_try_recv(ch, &v));
        CHECK(v == i);
    }
    CHECK_ERROR(keel_channel_recv(t[0], ch, &v), -KEEL_ENOTINTASK);
    CHECK_RESULT(keel_channel_close(ch));
    CHECK_ERROR(keel_channel_try_recv(ch, &v), -EPIPE);
    CHECK_RESULT(keel_channel_destroy(ch));
    CHECK_ERROR(keel_channel_destroy(ch), -ESTALE);
    for (int i = 0; i < 2; i++) CHECK_RESULT(keel_task_destroy(t[i]));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("channel: %d values through 4 slots in order, drained after close; reuse, misuse checked\n", N);
    return 0;
}
