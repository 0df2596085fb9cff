/* The rest of the server surface from C: statx, mkdir, rename and unlink through the
 * ring; a descriptor passed with SCM_RIGHTS over a Unix socket pair (and a short control
 * buffer that truncates without leaking); a UDP datagram sent to an address on loopback; a thread-directed signal read from a signalfd;
 * the worker-pool cap; and the arguments keel refuses. Exits 77 (skipped, said on stderr)
 * if io_uring cannot be set up here. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

static char dir[64], file[96], moved[96];
static int pair[2] = {-1, -1};
static int sfd = -1;

static int64_t metadata(keel_task task) {
    CHECK_RESULT(keel_file_mkdir(task, dir, 0700));
    CHECK_ERROR(keel_file_mkdir(task, dir, 0700), -EEXIST);
    CHECK_ERROR(keel_file_mkdir(task, dir, 010000), -EINVAL); /* not a mode */
    int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, "12345", 5) == 5 && close(fd) == 0);
    struct statx st;
    memset(&st, 0, sizeof st);
    CHECK_RESULT(keel_file_statx(task, file, 0, STATX_SIZE, &st));
    CHECK(st.stx_size == 5);
    CHECK_RESULT(keel_file_rename(task, file, moved, RENAME_NOREPLACE));
    CHECK_ERROR(keel_file_statx(task, file, 0, STATX_SIZE, &st), -ENOENT);
    CHECK_ERROR(keel_file_unlink(task, moved, AT_SYMLINK_NOFOLLOW), -EINVAL); /* not unlinkat's */
    CHECK_ERROR(keel_file_unlink(task, NULL, 0), -EFAULT);
    CHECK_RESULT(keel_file_unlink(task, moved, 0));
    CHECK_RESULT(keel_file_unlink(task, dir, AT_REMOVEDIR));
    return 1;
}

/* Sends `n` descriptors (dups of a pipe's write end) with one byte. */
static void send_fds(keel_task task, int w, int n) {
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } c;
    memset(&c, 0, sizeof c);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = c.b;
    m.msg_controllen = CMSG_SPACE(n * sizeof(int));
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(n * sizeof(int));
    for (int i = 0; i < n; i++) ((int *)CMSG_DATA(h))[i] = w;
    CHECK_ERROR(keel_socket_sendmsg(task, pair[0], &m, 0), 1);
}

/* Receives one byte with room for `room` descriptors; returns the count, fills `fds`. */
static int recv_fds(keel_task task, int room, int *fds, int *ctrunc) {
    char byte = 0;
    struct iovec iov = {&byte, 1};
    union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } c;
    memset(&c, 0, sizeof c);
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = c.b;
    m.msg_controllen = CMSG_LEN(room * sizeof(int));
    CHECK_ERROR(keel_socket_recvmsg(task, pair[1], &m, 0), 1);
    CHECK(byte == 'x');
    *ctrunc = (m.msg_flags & MSG_CTRUNC) != 0;
    int n = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) fds[n++] = ((int *)CMSG_DATA(h))[i];
    return n;
}

static int64_t passing(keel_task task) {
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    int fds[4], ctrunc;
    send_fds(task, p[1], 1);
    CHECK(recv_fds(task, 4, fds, &ctrunc) == 1 && !ctrunc);
    CHECK(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    CHECK(write(fds[0], "ok", 2) == 2);
    char back[2];
    CHECK(read(p[0], back, 2) == 2 && memcmp(back, "ok", 2) == 0);
    CHECK(close(fds[0]) == 0);
    /* Three sent, room for one: one arrives, MSG_CTRUNC, the rest discarded. */
    send_fds(task, p[1], 3);
    CHECK(recv_fds(task, 1, fds, &ctrunc) == 1 && ctrunc);
    CHECK(close(fds[0]) == 0);
    CHECK(close(p[1]) == 0);
    CHECK(read(p[0], back, 1) == 0); /* no writer left anywhere: nothing leaked */
    CHECK(close(p[0]) == 0);
    CHECK_ERROR(keel_socket_sendmsg(task, pair[0], NULL, 0), -EFAULT);
    return 2;
}

/* A UDP datagram to an address, and its sender's address back from recvmsg. */
static int64_t datagrams(keel_task task) {
    int a = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(a >= 0 && b >= 0);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(a, (struct sockaddr *)&any, sizeof any) == 0 && bind(b, (struct sockaddr *)&any, sizeof any) == 0);
    struct sockaddr_in aa, ba;
    socklen_t len = sizeof aa;
    CHECK(getsockname(a, (struct sockaddr *)&aa, &len) == 0);
    len = sizeof ba;
    CHECK(getsockname(b, (struct sockaddr *)&ba, &len) == 0);
    char out[] = "datagram", in[16] = {0};
    struct iovec oi = {out, 8}, ii = {in, sizeof in};
    struct msghdr m = {.msg_name = &ba, .msg_namelen = sizeof ba, .msg_iov = &oi, .msg_iovlen = 1};
    CHECK_ERROR(keel_socket_sendmsg(task, a, &m, 0), 8);
    struct sockaddr_in from;
    memset(&from, 0, sizeof from);
    struct msghdr r = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &ii, .msg_iovlen = 1};
    CHECK_ERROR(keel_socket_recvmsg(task, b, &r, 0), 8);
    CHECK(memcmp(in, "datagram", 8) == 0);
    CHECK(r.msg_namelen == sizeof from && from.sin_port == aa.sin_port);
    CHECK_ERROR(keel_socket_recvmsg(task, b, &r, 1 << 28), -EINVAL); /* no such MSG_* bit */
    CHECK(close(a) == 0 && close(b) == 0);
    return 3;
}

static int64_t signals(keel_task task) {
    CHECK(raise(SIGUSR1) == 0); /* to this thread, which blocks it */
    struct signalfd_siginfo info;
    CHECK_ERROR(keel_signal_wait(task, sfd, &info), (keel_result)sizeof info);
    CHECK(info.ssi_signo == SIGUSR1 && (pid_t)info.ssi_pid == getpid());
    CHECK_ERROR(keel_signal_wait(task, sfd, NULL), -EFAULT);
    return 4;
}

static int64_t body(keel_task task, void *user) {
    switch ((int)(intptr_t)user) {
    case 0: return metadata(task);
    case 1: return passing(task);
    case 2: return datagrams(task);
    default: return signals(task);
    }
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0); /* before any thread starts */
    sfd = signalfd(-1, &set, SFD_CLOEXEC);
    CHECK(sfd >= 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    snprintf(dir, sizeof dir, "/tmp/keel-c-server-%d", (int)getpid());
    snprintf(file, sizeof file, "%s/a", dir);
    snprintf(moved, sizeof moved, "%s/b", dir);

    keel_executor_attr attr = {.ring_entries = 32};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "server: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    uint32_t old[2] = {0, 0};
    CHECK_RESULT(keel_executor_set_iowq_max_workers(ex, 0, 4, NULL));
    CHECK_RESULT(keel_executor_set_iowq_max_workers(ex, 0, 0, old));
    CHECK(old[1] == 4);
    keel_executor_attr none = {0};
    keel_executor plain;
    CHECK_RESULT(keel_executor_create(&none, &plain));
    CHECK_ERROR(keel_executor_set_iowq_max_workers(plain, 1, 1, NULL), -EOPNOTSUPP);
    CHECK_RESULT(keel_executor_destroy(plain));

    keel_task tasks[4];
    for (int i = 0; i < 4; i++) {
        keel_task_attr ta = {0};
        CHECK_RESULT(keel_task_create(&ta, &tasks[i]));
        CHECK_RESULT(keel_task_attach(ex, tasks[i], body, (void *)(intptr_t)i));
        while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
        CHECK_ERROR(keel_task_result(tasks[i]), i + 1);
        CHECK_RESULT(keel_task_destroy(tasks[i]));
    }
    CHECK_RESULT(keel_executor_destroy(ex));
    close(pair[0]);
    close(pair[1]);
    close(sfd);
    printf("server: statx/mkdir/rename/unlink, SCM_RIGHTS with a short control buffer, a UDP datagram with addresses, a signal, the worker cap\n");
    return 0;
}
