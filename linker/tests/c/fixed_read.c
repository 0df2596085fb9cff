/* The seed's third example in keel's C API: a file read into a registered buffer. An
 * executor registers one buffer; two tasks each claim it (the second waits until the
 * first releases it), read the file with READ_FIXED, check the bytes, write them back
 * out with WRITE_FIXED, and release it. Exits 77 (skipped, said on stderr) if io_uring
 * or buffer registration is not available here. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

static char path[64];
static const char text[] = "registered buffers are read into by the kernel directly";
static int order[2], turns;

static int64_t reader(keel_task task, void *user) {
    int me = (int)(intptr_t)user;
    keel_result fd = keel_file_open(task, path, O_RDWR, 0);
    if (KEEL_IS_ERROR(fd)) return fd;
    keel_buffer buf;
    keel_result index = keel_buffer_claim(task, &buf);
    CHECK_ERROR(index, 0); /* the only buffer */
    order[turns++] = me;
    void *data;
    keel_result len = keel_buffer_data(&buf, &data);
    CHECK(len == 4096);
    memset(data, 0, (size_t)len);
    keel_result n = keel_file_read_fixed(task, (int)fd, &buf, 128, 0);
    CHECK_RESULT(n);
    CHECK(n >= (keel_result)strlen(text)); /* the other task may have extended the file */
    CHECK(memcmp(data, text, strlen(text)) == 0);
    CHECK_ERROR(keel_file_read_fixed(task, (int)fd, &buf, 8192, 0), -EINVAL); /* past the buffer */
    CHECK_ERROR(keel_file_write_fixed(task, (int)fd, &buf, 4, 1000 + (uint64_t)me * 4), 4);
    CHECK_RESULT(keel_task_yield(task)); /* hold it: the other task waits for it */
    CHECK_RESULT(keel_buffer_release(task, &buf));
    CHECK_ERROR(keel_buffer_release(task, &buf), -EINVAL); /* released already */
    CHECK_RESULT(keel_file_close(task, (int)fd));
    return me;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 16, .registered_buffers = 1, .registered_buffer_size = 4096};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM || r == -ENOMEM) {
        fprintf(stderr, "fixed_read: SKIPPED: io_uring with a registered buffer is not available here (%s)\n",
                keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    snprintf(path, sizeof path, "/tmp/keel-c-fixed-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0);
    keel_task a, b;
    CHECK_RESULT(keel_task_create(NULL, &a));
    CHECK_RESULT(keel_task_create(NULL, &b));
    CHECK_RESULT(keel_task_attach(ex, a, reader, (void *)0));
    CHECK_RESULT(keel_task_attach(ex, b, reader, (void *)1));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(a), 0);
    CHECK_ERROR(keel_task_result(b), 1);
    CHECK(turns == 2 && order[0] == 0 && order[1] == 1);
    char back[8];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && pread(fd, back, 8, 1000) == 8);
    CHECK(memcmp(back, "regiregi", 8) == 0);
    close(fd);
    unlink(path);
    CHECK_RESULT(keel_task_destroy(a));
    CHECK_RESULT(keel_task_destroy(b));
    CHECK_RESULT(keel_executor_destroy(ex));
    printf("fixed_read: two tasks took turns on one registered buffer (read_fixed, write_fixed)\n");
    return 0;
}
