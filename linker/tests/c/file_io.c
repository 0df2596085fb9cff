/* File i/o from a task's function on the ring: open, write, fdatasync, fsync, read back,
 * close; two tasks with different I/O priorities. Exits 77 (skipped, said on stderr) if
 * io_uring cannot be set up on this machine. */
#include <fcntl.h>
#include <sys/uio.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

struct job {
    char path[256];
    const char *text;
    char back[64];
};

static int64_t write_then_read(keel_task task, void *user) {
    struct job *j = user;
    size_t len = strlen(j->text);
    keel_result fd = keel_file_open(task, j->path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (KEEL_IS_ERROR(fd)) return fd;
    keel_result n = keel_file_write(task, (int)fd, j->text, len, 0);
    if (KEEL_IS_ERROR(n)) return n;
    if ((size_t)n != len) return -EIO;
    CHECK_RESULT(keel_file_fdatasync(task, (int)fd));
    CHECK_RESULT(keel_file_fsync(task, (int)fd));
    memset(j->back, 0, sizeof j->back);
    n = keel_file_read(task, (int)fd, j->back, sizeof j->back - 1, 0);
    if (KEEL_IS_ERROR(n)) return n;
    CHECK_ERROR(keel_file_read(task, (int)fd, NULL, 5, 0), -EFAULT);
    /* Vectored: "dur" + "able" written at 100, read back split the other way. */
    struct iovec wv[2] = {{(void *)"dur", 3}, {(void *)"able", 4}};
    CHECK_ERROR(keel_file_writev(task, (int)fd, wv, 2, 100), 7);
    char a[4] = {0}, b[4] = {0};
    struct iovec rv[2] = {{a, 4}, {b, 3}};
    CHECK_ERROR(keel_file_readv(task, (int)fd, rv, 2, 100), 7);
    CHECK(memcmp(a, "dura", 4) == 0 && memcmp(b, "ble", 3) == 0);
    CHECK_ERROR(keel_file_readv(task, (int)fd, rv, -1, 100), -EINVAL);
    CHECK_ERROR(keel_file_writev(task, (int)fd, NULL, 2, 100), -EFAULT);
    CHECK_RESULT(keel_file_fallocate(task, (int)fd, 0, 0, 4096));
    CHECK_RESULT(keel_file_sync_range(task, (int)fd, 0, 4096, SYNC_FILE_RANGE_WRITE));
    /* Flags are checked before anything is submitted: a bit no flag has is -EINVAL. */
    CHECK_ERROR(keel_file_open(task, j->path, O_RDONLY | (1 << 30), 0), -EINVAL);
    CHECK_ERROR(keel_file_open(task, j->path, O_RDONLY, 010644), -EINVAL); /* S_IFREG is no mode */
    CHECK_ERROR(keel_file_fallocate(task, (int)fd, 1 << 30, 0, 4096), -EINVAL);
    CHECK_ERROR(keel_file_sync_range(task, (int)fd, 0, 4096, 8), -EINVAL);
    CHECK_RESULT(keel_file_close(task, (int)fd));
    CHECK_ERROR(keel_file_read(task, (int)fd, j->back, 1, 0), -EBADF); /* closed */
    CHECK_ERROR(keel_file_open(task, "/nonexistent-keel-dir/x", O_RDONLY, 0), -ENOENT);
    return n;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "file_io: SKIPPED: io_uring is not available here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    char dir[] = "/tmp/keel-c-fileio-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct job jobs[2] = {{.text = "durable"}, {.text = "urgent bytes"}};
    keel_task tasks[2];
    for (int i = 0; i < 2; i++) {
        snprintf(jobs[i].path, sizeof jobs[i].path, "%s/f%d", dir, i);
        keel_task_attr ta = {.io_priority = i == 0 ? KEEL_PRIORITY_LOW : KEEL_PRIORITY_HIGH};
        CHECK_RESULT(keel_task_create(&ta, &tasks[i]));
        CHECK_RESULT(keel_task_attach(ex, tasks[i], write_then_read, &jobs[i]));
    }
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    for (int i = 0; i < 2; i++) {
        CHECK_ERROR(keel_task_result(tasks[i]), (keel_result)strlen(jobs[i].text));
        CHECK(strcmp(jobs[i].back, jobs[i].text) == 0);
        CHECK_RESULT(keel_task_destroy(tasks[i]));
        unlink(jobs[i].path);
    }
    keel_executor_stats st;
    CHECK_RESULT(keel_executor_get_stats(ex, &st));
    CHECK(st.io_completed >= 2 * 8);
    CHECK_RESULT(keel_executor_destroy(ex));
    rmdir(dir);
    printf("file_io: 2 tasks wrote, synced and read back through the ring (%llu completions)\n",
           (unsigned long long)st.io_completed);
    return 0;
}
