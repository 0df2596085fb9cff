/* The executor's backend (keel_executor_attr::backend): the epoll engine forced performs
 * the same file and socket calls as io_uring; the backend is reported; a ring-only
 * setting on the epoll engine and an unknown backend value are refused. */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "check.h"

struct job {
    char path[256];
    char back[16];
    int sv[2];
};

static int64_t file_and_socket(keel_task task, void *user) {
    struct job *j = user;
    keel_result fd = keel_file_open(task, j->path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (KEEL_IS_ERROR(fd)) return fd;
    CHECK_ERROR(keel_file_write(task, (int)fd, "engine", 6, 0), 6);
    CHECK_RESULT(keel_file_fsync(task, (int)fd));
    CHECK_ERROR(keel_file_read(task, (int)fd, j->back, 6, 0), 6);
    CHECK_RESULT(keel_file_close(task, (int)fd));
    CHECK(memcmp(j->back, "engine", 6) == 0);
    /* A receive that must wait for readiness: the peer's bytes arrive from the send. */
    CHECK_ERROR(keel_socket_send(task, j->sv[0], "ping", 4, 0), 4);
    char got[8] = {0};
    CHECK_ERROR(keel_socket_recv(task, j->sv[1], got, sizeof got, 0), 4);
    CHECK(memcmp(got, "ping", 4) == 0);
    return 1;
}

static int run_on(uint8_t backend, const char *dir) {
    keel_executor_attr attr = {.ring_entries = 32, .backend = backend};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (backend == KEEL_BACKEND_RING && (r == -ENOSYS || r == -EPERM)) {
        fprintf(stderr, "backend: io_uring is not available here (%s): the ring half skipped\n", keel_strerror(r));
        return 0;
    }
    CHECK_RESULT(r);
    keel_result b = keel_executor_backend(ex);
    CHECK(backend == KEEL_BACKEND_AUTO ? (b == KEEL_BACKEND_RING || b == KEEL_BACKEND_EPOLL) : b == backend);
    struct job j;
    memset(&j, 0, sizeof j);
    snprintf(j.path, sizeof j.path, "%s/f%d", dir, backend);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, j.sv) == 0);
    keel_task t;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &t));
    CHECK_RESULT(keel_task_attach(ex, t, file_and_socket, &j));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(t), 1);
    CHECK_RESULT(keel_task_destroy(t));
    CHECK_RESULT(keel_executor_destroy(ex));
    close(j.sv[0]);
    close(j.sv[1]);
    unlink(j.path);
    return 0;
}

int main(void) {
    char dir[] = "/tmp/keel-c-backend-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK(run_on(KEEL_BACKEND_EPOLL, dir) == 0);
    CHECK(run_on(KEEL_BACKEND_RING, dir) == 0);
    CHECK(run_on(KEEL_BACKEND_AUTO, dir) == 0);
    keel_executor ex;
    keel_executor_attr bad = {.ring_entries = 32, .backend = 3};
    CHECK_ERROR(keel_executor_create(&bad, &ex), -EINVAL);
    keel_executor_attr ring_only = {.ring_entries = 32, .backend = KEEL_BACKEND_EPOLL, .registered_buffers = 2};
    CHECK_ERROR(keel_executor_create(&ring_only, &ex), -EOPNOTSUPP);
    keel_executor_attr none = {0};
    CHECK_RESULT(keel_executor_create(&none, &ex));
    CHECK_ERROR(keel_executor_backend(ex), 0);
    CHECK_RESULT(keel_executor_destroy(ex));
    rmdir(dir);
    puts("backend: ok");
    return 0;
}
