/*
 * log_softmax.c - normalize rows of logits with fastlsm's C ABI.
 *
 *     cc log_softmax.c $(python -m fastlsm.capi flags) -o log_softmax
 *     ./log_softmax [rows cols [threads]]
 *
 * Fills a [rows, cols] matrix with pseudo-random logits (plus a masked -inf entry and a huge
 * value), then prints, as exact hexadecimal floats, the input and the results of
 * log_softmax, softmax and logsumexp in float32 and float64, and of an in-place log_softmax.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

int main(int argc, char **argv)
{
    CHECK_VERSION();
    int64_t rows = argc > 2 ? strtoll(argv[1], NULL, 10) : 4;
    int64_t cols = argc > 2 ? strtoll(argv[2], NULL, 10) : 10;
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    int64_t n = rows * cols;

    printf("fastlsm %s (header %s)\n", fastlsm_version_string(), FASTLSM_VERSION_STRING);
    CHECK(fastlsm_init());
    if (threads > 0) CHECK(fastlsm_set_num_threads(threads));
    printf("shape %" PRId64 " %" PRId64 " threads %d\n", rows, cols, fastlsm_get_num_threads());

    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *r = malloc(rows * sizeof *r);
    double *xd = malloc(n * sizeof *xd), *yd = malloc(n * sizeof *yd);
    double *rd = malloc(rows * sizeof *rd);
    if (!x || !y || !r || !xd || !yd || !rd) return 1;

    uint64_t state = 42;
    for (int64_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(state >> 11) / 9007199254740992.0 * 20.0 - 10.0);
        xd[i] = (double)x[i] * 1.25;
    }
    if (n > 1) {
        x[1] = -INFINITY; /* a masked vocabulary entry */
        xd[n - 1] = 1e300;
    }

    print_f32("x_f32", x, n);
    CHECK(fastlsm_log_softmax_f32(x, y, rows, cols));
    print_f32("log_softmax_f32", y, n);
    CHECK(fastlsm_softmax_f32(x, y, rows, cols));
    print_f32("softmax_f32", y, n);
    CHECK(fastlsm_logsumexp_f32(x, r, rows, cols));
    print_f32("logsumexp_f32", r, rows);

    print_f64("x_f64", xd, n);
    CHECK(fastlsm_log_softmax_f64(xd, yd, rows, cols));
    print_f64("log_softmax_f64", yd, n);
    CHECK(fastlsm_softmax_f64(xd, yd, rows, cols));
    print_f64("softmax_f64", yd, n);
    CHECK(fastlsm_logsumexp_f64(xd, rd, rows, cols));
    print_f64("logsumexp_f64", rd, rows);

    CHECK(fastlsm_log_softmax_f32(x, x, rows, cols)); /* in place: out == x */
    print_f32("inplace_log_softmax_f32", x, n);

    free(x), free(y), free(r), free(xd), free(yd), free(rd);
    return 0;
}
