/* A descriptor closed behind keel's back on the epoll backend: a receive waits on a
 * socket, the program closes the number with close(2) and a new socket takes it. Told
 * with keel_fd_closed (or closed through keel_fd_close), the engine renews the number at
 * its next run and reads the new socket in runs that never wait (untold, it would find
 * the reuse only by revalidation, up to 2 s later). */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "check.h"

struct job {
    int fd;
    int done;
    keel_result n;
    char got[8];
};

static int64_t receiver(keel_task task, void *user) {
    struct job *j = user;
    j->n = keel_socket_recv(task, j->fd, j->got, sizeof j->got, 0);
    j->done = 1;
    return 0;
}

/* `via`: 0 close(2) then keel_fd_closed, 1 keel_fd_closed then close(2), 2 keel_fd_close. */
static void closed_and_reused(int via) {
    keel_executor_attr attr = {.ring_entries = 32, .backend = KEEL_BACKEND_EPOLL};
    keel_executor ex;
    CHECK_RESULT(keel_executor_create(&attr, &ex));
    int old[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, old) == 0);
    struct job j = {.fd = old[0]};
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, receiver, &j));
    keel_executor_run(ex, 16, 0); /* the receive starts and waits: nothing to read */
    CHECK(!j.done);

    int n = old[0];
    if (via == 0) {
        CHECK(close(n) == 0);
        CHECK_ERROR(keel_fd_closed(n), 0);
    } else if (via == 1) {
        CHECK_ERROR(keel_fd_closed(n), 0);
        CHECK(close(n) == 0);
    } else {
        CHECK_ERROR(keel_fd_close(n), 0);
    }
    int new_[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, new_) == 0);
    if (new_[0] != n) { /* put the new socket under the closed number */
        CHECK(dup3(new_[0], n, O_CLOEXEC) == n);
        close(new_[0]);
        new_[0] = n;
    }
    CHECK(write(new_[1], "new", 3) == 3); /* there already: no edge will come */
    for (int i = 0; i < 8 && !j.done; i++) keel_executor_run(ex, 16, 0);
    CHECK(j.done);
    CHECK_ERROR(j.n, 3);
    CHECK(memcmp(j.got, "new", 3) == 0);
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_RESULT(keel_task_destroy(t));
    CHECK_RESULT(keel_executor_destroy(ex));
    close(new_[0]);
    close(new_[1]);
    close(old[1]);
}

int main(void) {
    for (int via = 0; via < 3; via++) closed_and_reused(via);
    CHECK_ERROR(keel_fd_closed(-1), 0);
    CHECK_ERROR(keel_fd_close(-1), -EBADF);
    puts("closed_behind: ok");
    return 0;
}
