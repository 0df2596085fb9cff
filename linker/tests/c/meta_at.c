/* File metadata and names relative to open directories from C: keel_file_mkdir_at,
 * statx_at (a path, and AT_EMPTY_PATH for the directory itself), rename_at between two
 * directories, unlink_at, with AT_FDCWD and an absolute path too; and the arguments keel
 * refuses: a negative descriptor other than AT_FDCWD (-EBADF), a flag unlinkat does not
 * take (-EINVAL), a NULL path (-EFAULT), before anything is submitted; a file given as the
 * directory gets the kernel's -ENOTDIR. Exits 77 (skipped, said on stderr) if io_uring
 * cannot be set up here. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

static char a[64] = "/tmp/keel-c-meta-at-a-XXXXXX", b[64] = "/tmp/keel-c-meta-at-b-XXXXXX";

static int64_t body(keel_task task, void *user) {
    (void)user;
    int da = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC), db = open(b, O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(da >= 0 && db >= 0);
    int fd = openat(da, "f", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, "12345", 5) == 5 && close(fd) == 0);

    struct statx st;
    memset(&st, 0, sizeof st);
    CHECK_RESULT(keel_file_statx_at(task, da, "f", 0, STATX_SIZE, &st));
    CHECK(st.stx_size == 5);
    CHECK_RESULT(keel_file_statx_at(task, db, "", AT_EMPTY_PATH, STATX_MODE, &st));
    CHECK(S_ISDIR(st.stx_mode));
    char abs[96];
    snprintf(abs, sizeof abs, "%s/f", a);
    CHECK_RESULT(keel_file_statx_at(task, AT_FDCWD, abs, 0, STATX_SIZE, &st));
    CHECK(st.stx_size == 5);

    CHECK_RESULT(keel_file_mkdir_at(task, db, "sub", 0700));
    CHECK_ERROR(keel_file_mkdir_at(task, db, "sub", 0700), -EEXIST);
    CHECK_RESULT(keel_file_rename_at(task, da, "f", db, "sub/g", RENAME_NOREPLACE));
    CHECK_ERROR(keel_file_statx_at(task, da, "f", 0, STATX_SIZE, &st), -ENOENT);
    CHECK_RESULT(keel_file_statx_at(task, db, "sub/g", 0, STATX_SIZE, &st));
    CHECK(st.stx_size == 5);
    CHECK_ERROR(keel_file_unlink_at(task, db, "sub", AT_REMOVEDIR), -ENOTEMPTY);
    CHECK_RESULT(keel_file_unlink_at(task, db, "sub/g", 0));
    CHECK_RESULT(keel_file_unlink_at(task, db, "sub", AT_REMOVEDIR));

    /* Refused before anything is submitted. */
    CHECK_ERROR(keel_file_statx_at(task, -5, "f", 0, STATX_SIZE, &st), -EBADF);
    CHECK_ERROR(keel_file_mkdir_at(task, -2, "x", 0700), -EBADF);
    CHECK_ERROR(keel_file_rename_at(task, da, "x", -7, "y", 0), -EBADF);
    CHECK_ERROR(keel_file_unlink_at(task, -3, "x", 0), -EBADF);
    CHECK_ERROR(keel_file_unlink_at(task, da, "x", AT_SYMLINK_NOFOLLOW), -EINVAL);
    CHECK_ERROR(keel_file_mkdir_at(task, da, "x", 010000), -EINVAL);
    CHECK_ERROR(keel_file_unlink_at(task, da, NULL, 0), -EFAULT);
    CHECK_ERROR(keel_file_rename_at(task, da, "x", db, NULL, 0), -EFAULT);
    CHECK_ERROR(keel_file_statx_at(task, da, "x", 0, STATX_SIZE, NULL), -EFAULT);
    /* A file is no directory to resolve against. */
    fd = openat(da, "plain", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK_ERROR(keel_file_mkdir_at(task, fd, "x", 0700), -ENOTDIR);
    CHECK(close(fd) == 0);
    CHECK_RESULT(keel_file_unlink_at(task, da, "plain", 0));
    CHECK(close(da) == 0 && close(db) == 0);
    return 1;
}

int main(void) {
    keel_executor_attr attr = {.ring_entries = 32};
    keel_executor ex;
    keel_result r = keel_executor_create(&attr, &ex);
    if (r == -ENOSYS || r == -EPERM) {
        fprintf(stderr, "meta_at: SKIPPED: no io_uring here (%s)\n", keel_strerror(r));
        return 77;
    }
    CHECK_RESULT(r);
    CHECK(mkdtemp(a) != NULL && mkdtemp(b) != NULL);
    keel_task task;
    keel_task_attr ta = {0};
    CHECK_RESULT(keel_task_create(&ta, &task));
    CHECK_RESULT(keel_task_attach(ex, task, body, NULL));
    while (keel_executor_attached(ex) > 0) CHECK_RESULT(keel_executor_run(ex, 16, 5000000000u));
    CHECK_ERROR(keel_task_result(task), 1);
    CHECK_RESULT(keel_task_destroy(task));
    CHECK_RESULT(keel_executor_destroy(ex));
    CHECK(rmdir(a) == 0 && rmdir(b) == 0); /* both empty: every name went where it should */
    printf("meta_at: mkdir, statx, rename and unlink relative to open directories, bad arguments refused\n");
    return 0;
}
