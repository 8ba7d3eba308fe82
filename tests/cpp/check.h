/* The C and C++ tests' checks: CHECK_NOTE(cond, fmt, ...) reports a false condition with a note
 * (a library's last error, the case at hand) and counts it, then the test goes on; check_report
 * ends a test: the count on stderr and status 1, or "NAME: all checks passed" and status 0. */
#ifndef VLMC_TESTS_CHECK_H
#define VLMC_TESTS_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK_NOTE(cond, ...)                                                          \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
            ++failures;                                                                \
        }                                                                              \
    } while (0)

static int check_report(const char *name) {
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
