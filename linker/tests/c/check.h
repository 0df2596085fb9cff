/* Shared by the C tests: CHECK stops the program with a message and exit status 1. */
#ifndef KEEL_TEST_CHECK_H
#define KEEL_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include "keel.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* A keel call that must succeed: prints keel_strerror on failure. */
#define CHECK_RESULT(expr)                                                              \
    do {                                                                                \
        keel_result r_ = (expr);                                                        \
        if (KEEL_IS_ERROR(r_)) {                                                        \
            fprintf(stderr, "%s:%d: %s failed: %lld (%s)\n", __FILE__, __LINE__, #expr, \
                    (long long)r_, keel_strerror(r_));                                  \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* A keel call that must fail with `code` (a negated errno or keel code). */
#define CHECK_ERROR(expr, code)                                                            \
    do {                                                                                   \
        keel_result r_ = (expr);                                                           \
        if (r_ != (code)) {                                                                \
            fprintf(stderr, "%s:%d: %s returned %lld (%s), expected %lld (%s)\n", __FILE__, \
                    __LINE__, #expr, (long long)r_, keel_strerror(r_), (long long)(code),  \
                    keel_strerror(code));                                                  \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#endif
