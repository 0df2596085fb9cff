/* An echo server in C on loopback: a server task accepts one connection and echoes
 * until the peer shuts down; a client task on the same executor connects, sends
 * MESSAGES messages and checks each echo. Bounded: the run loop gives up after 10 s.
 * Exits 77 (skipped, said on stderr) if io_uring cannot be set up here. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include "check.h"

#define MESSAGES 100

static struct sockaddr_in addr; /* the listener's, once bound */
static int listening;           /* set when the server listens */

static int64_t server(keel_task task, void *user) {
    (void)user;
    keel_result l = keel_socket_open(task, AF_INET, SOCK_STREAM, 0);
    if (KEEL_IS_ERROR(l)) return l;
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = 0};
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_RESULT(keel_socket_bind(task, (int)l, (struct sockaddr *)&any, sizeof any));
    CHECK_RESULT(keel_socket_listen(task, (int)l, 4));
    socklen_t len = sizeof addr;
    CHECK(getsockname((int)l, (struct sockaddr *)&addr, &len) == 0);
    listening = 1;
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    keel_result c = keel_socket_accept(task, (int)l, (struct sockaddr *)&peer, &plen);
    CHECK_RESULT(c);
    CHECK(peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    char buf[64];
    int64_t echoed = 0;
    for (;;) {
        keel_result n = keel_socket_recv(task, (int)c, buf, sizeof buf, 0);
        CHECK_RESULT(n);
        if (n == 0) break;
        CHECK_ERROR(keel_socket_send(task, (int)c, buf, (size_t)n, 0), n);
        echoed += n;
    }
    CHECK_RESULT(keel_socket_close(task, (int)c));
    CHECK_RESULT(keel_socket_close(task, (int)l));
    return echoed;
}

static int64_t client(keel_task task, void *user) {
    (void)user;
    while (!listening) CHECK_RESULT(keel_task_yield(task));
    /* Arguments are checked before anything is submitted: an unknown type, flag bit or
     * how, or a negative protocol, is -EINVAL. */
    CHECK_ERROR(keel_socket_open(task, AF_INET, 9, 0), -EINVAL);
    CHECK_ERROR(keel_socket_open(task, AF_INET, SOCK_STREAM | 0x100, 0), -EINVAL);
    CHECK_ERROR(keel_socket_open(task, AF_INET, SOCK_STREAM, -1), -EINVAL);
    CHECK_ERROR(keel_socket_open(task, -1, SOCK_STREAM, 0), -EINVAL);
    keel_result s = keel_socket_open(task, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP);
    CHECK_RESULT(s);
    CHECK_RESULT(keel_socket_close(task, (int)s));
    s = keel_socket_open(task, AF_INET, SOCK_STREAM, 0);
    CHECK_RESULT(s);
    CHECK_ERROR(keel_socket_shutdown(task, (int)s, 3), -EINVAL);
    CHECK_ERROR(keel_socket_send(task, (int)s, "x", 1, 1 << 28), -EINVAL);
    CHECK_ERROR(keel_socket_recv(task, (int)s, NULL, 0, 1 << 28), -EINVAL);
    CHECK_RESULT(keel_socket_connect(task, (int)s, (struct sockaddr *)&addr, sizeof addr));
    int64_t total = 0;
    for (int i = 0; i < MESSAGES; i++) {
        char msg[32], back[32];
        int len = snprintf(msg, sizeof msg, "message %d", i);
        CHECK_ERROR(keel_socket_send(task, (int)s, msg, (size_t)len, 0), len);
        int got = 0;
        while (got < len) {
            keel_result n = keel_socket_recv(task, (int)s, back + got, (size_t)(len - got), 0);
            CHECK_RESULT(n);
            CHECK(n > 0);
            got += (int)n;
        }
        CHECK(memcmp(msg, back, (size_t)len) == 0);
        total += len;
    }
    CHECK_RESULT(keel_socket_shutdown(task, (int)s, SHUT_WR));
    char end;
    CHECK_ERROR(keel_socket_recv(task, (int)s, &end, 1, 0), 0); /* the server closed */
    CHECK_RESULT(keel_socket_close(task, (int)s));
    return total;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 64};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "echo: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    keel_task s, c;
    CHECK_RESULT(keel_task_create(NULL, &s));
    CHECK_RESULT(keel_task_create(NULL, &c));
    CHECK_RESULT(keel_task_attach(ex, s, server, NULL));
    CHECK_RESULT(keel_task_attach(ex, c, client, NULL));
    time_t start = time(NULL);
    while (keel_executor_attached(ex) > 0) {
        CHECK(time(NULL) - start < 10);
        r = keel_executor_run(ex, 64, 1000000000u);
        CHECK(r > 0 || r == -ETIME);
    }
    keel_result sent = keel_task_result(c);
    CHECK_RESULT(sent);
    CHECK_ERROR(keel_task_result(s), sent);
    CHECK_RESULT(keel_task_destroy(s));
    CHECK_RESULT(keel_task_destroy(c));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("echo: %d messages (%lld bytes) echoed on loopback\n", MESSAGES, (long long)sent);
    return 0;
}
