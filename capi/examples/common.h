/*
 * common.h - the helpers every example shares: status checks, exact printing, and the
 * check that the library loaded is the one this program was compiled against.
 */
#ifndef FASTLSM_EXAMPLES_COMMON_H
#define FASTLSM_EXAMPLES_COMMON_H

#include <inttypes.h>
#include <stdio.h>

#include "fastlsm.h"

/* Return 1 from the calling function, with the status and fastlsm_last_error(), on failure. */
#define CHECK(call)                                                                   \
    do {                                                                              \
        int status_ = (call);                                                         \
        if (status_ != FASTLSM_OK) {                                                  \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, fastlsm_strerror(status_), \
                    fastlsm_last_error());                                             \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

/* The header's version macros against the library actually loaded (same major version,
 * library not older than the header); returns 1 from main on a mismatch. */
#define CHECK_VERSION()                                                                     \
    do {                                                                                    \
        int v_ = fastlsm_version_number();                                                  \
        if (v_ / 10000 != FASTLSM_VERSION_MAJOR || v_ < FASTLSM_VERSION_NUMBER) {           \
            fprintf(stderr, "libfastlsm %s (%d) does not match fastlsm.h %s (%d)\n",        \
                    fastlsm_version_string(), v_, FASTLSM_VERSION_STRING,                   \
                    FASTLSM_VERSION_NUMBER);                                                \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

/* "name v0 v1 ..." with exact hexadecimal floats (or integers), one line. */
static inline void print_f32(const char *name, const float *v, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++) printf(" %a", (double)v[i]);
    printf("\n");
}

static inline void print_f64(const char *name, const double *v, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++) printf(" %a", v[i]);
    printf("\n");
}

static inline void print_i64(const char *name, const int64_t *v, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++) printf(" %" PRId64, v[i]);
    printf("\n");
}

#endif
