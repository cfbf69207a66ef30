/*
 * losses.c - every option of the C cross-entropy and NLL, int32 and int64 ids, and structs
 * from an older header.
 *
 *     cc losses.c $(python -m fastlsm.capi flags) -o losses && ./losses
 *
 * Prints the inputs and each result as exact hexadecimal floats ("name v0 v1 ..."); the
 * test suite recomputes them with the Python API and compares bit for bit.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define N 6 /* rows */
#define C 5 /* classes */

static uint64_t rng_state = 11;

static double uniform(double lo, double hi)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * ((double)(rng_state >> 11) / 9007199254740992.0);
}

int main(void)
{
    CHECK_VERSION();
    float x[N * C], probs[N * C], w[C], tw[N], go[N], loss[N], lse[N], grad[N * C], lp[N * C];
    double xd[N * C], wd[C], twd[N], god[N], lossd[N], lsed[N], gradd[N * C];
    int32_t t32[N] = {0, 4, -100, 2, 1, 3};
    int64_t t64[N] = {1, 4, 0, -100, 2, 3};

    for (int i = 0; i < N * C; i++) {
        x[i] = (float)uniform(-6, 6), xd[i] = uniform(-6, 6);
        probs[i] = (float)uniform(0, 1);
    }
    for (int j = 0; j < C; j++) w[j] = (float)uniform(0.25, 2), wd[j] = w[j];
    for (int i = 0; i < N; i++) {
        tw[i] = (float)uniform(0, 2), twd[i] = tw[i];
        go[i] = (float)uniform(-1, 1), god[i] = go[i];
    }
    print_f32("x_f32", x, N * C);
    print_f64("x_f64", xd, N * C);
    print_f32("probs", probs, N * C);
    print_f32("weight", w, C);
    print_f32("token_weight", tw, N);
    print_f32("grad_output", go, N);

    /* every option, int32 targets, mean */
    fastlsm_cross_entropy_options o = fastlsm_cross_entropy_default_options();
    o.label_smoothing = 0.125, o.z_loss = 1e-3, o.softcap = 3.0;
    CHECK(fastlsm_cross_entropy_ex_f32(x, t32, FASTLSM_TARGET_INT32, N, C, w, tw, NULL, &o,
                                       loss, lse, grad));
    print_f32("all_mean_loss", loss, 1), print_f32("all_mean_lse", lse, N);
    print_f32("all_mean_grad", grad, N * C);

    /* the same over padded rows (row_stride = C + 3), gradient in place */
    enum { S = C + 3 };
    float padded[N * S], ploss, plse[N];
    for (int i = 0; i < N * S; i++) padded[i] = i % S < C ? x[i / S * C + i % S] : -7.0f;
    o.row_stride = S;
    CHECK(fastlsm_cross_entropy_ex_f32(padded, t32, FASTLSM_TARGET_INT32, N, C, w, tw, NULL, &o,
                                       &ploss, plse, padded));
    int same = memcmp(&ploss, loss, sizeof ploss) == 0 && memcmp(plse, lse, sizeof plse) == 0;
    for (int i = 0; i < N * S; i++)
        same &= i % S < C ? memcmp(&padded[i], &grad[i / S * C + i % S], sizeof(float)) == 0
                          : padded[i] == -7.0f;
    printf("padded_same %d\n", same);
    o.row_stride = C - 1;
    int bad = fastlsm_cross_entropy_ex_f32(x, t32, FASTLSM_TARGET_INT32, N, C, NULL, NULL, NULL,
                                           &o, loss, NULL, NULL);
    printf("short_stride status %d | %s\n", bad, fastlsm_last_error());
    o.row_stride = 0;

    /* float64, int64 targets, reduction none with a per-row grad_output */
    o.reduction = FASTLSM_REDUCTION_NONE;
    CHECK(fastlsm_cross_entropy_ex_f64(xd, t64, FASTLSM_TARGET_INT64, N, C, wd, twd, god, &o,
                                       lossd, lsed, gradd));
    print_f64("none64_loss", lossd, N), print_f64("none64_lse", lsed, N);
    print_f64("none64_grad", gradd, N * C);

    /* probability targets, sum, scalar grad_output, in place */
    fastlsm_cross_entropy_options p = fastlsm_cross_entropy_default_options();
    p.reduction = FASTLSM_REDUCTION_SUM, p.z_loss = 0.01;
    float half = 0.5f, xin[N * C];
    for (int i = 0; i < N * C; i++) xin[i] = x[i];
    CHECK(fastlsm_cross_entropy_ex_f32(xin, probs, FASTLSM_TARGET_PROBS, N, C, NULL, NULL,
                                       &half, &p, loss, NULL, xin));
    print_f32("probs_sum_loss", loss, 1), print_f32("probs_sum_grad", xin, N * C);

    /* nll over log-probabilities, int32 targets, weights, mean, with the gradient */
    CHECK(fastlsm_log_softmax_f32(x, lp, N, C));
    CHECK(fastlsm_nll_loss_f32(lp, t32, FASTLSM_TARGET_INT32, N, C, w, tw, NULL, NULL, loss,
                               grad));
    print_f32("nll_mean_loss", loss, 1), print_f32("nll_mean_grad", grad, N * C);
    o = fastlsm_cross_entropy_default_options();
    o.reduction = FASTLSM_REDUCTION_NONE;
    CHECK(fastlsm_nll_loss_f32(lp, t64, FASTLSM_TARGET_INT64, N, C, NULL, NULL, NULL, &o, loss,
                               NULL));
    print_f32("nll_none_loss", loss, N);

    /* int32 token ids for sequence scoring: the same as int64 */
    int32_t tok32[N] = {1, 0, 4, 2, 2, 3};
    int64_t tok64[N] = {1, 0, 4, 2, 2, 3};
    float tlp[N], slp[2], tlp64[N], slp64[2];
    CHECK(fastlsm_sequence_logprobs_i32_f32(x, tok32, NULL, 2, 3, C, tlp, slp));
    CHECK(fastlsm_sequence_logprobs_f32(x, tok64, NULL, 2, 3, C, tlp64, slp64));
    print_f32("seq32_token", tlp, N), print_f32("seq32_sum", slp, 2);
    print_f32("seq64_token", tlp64, N), print_f32("seq64_sum", slp64, 2);

    /* an options struct from an older header: fields past struct_size take their defaults */
    fastlsm_cross_entropy_options old = fastlsm_cross_entropy_default_options();
    old.z_loss = 5, old.softcap = 1, old.reduction = FASTLSM_REDUCTION_SUM; /* not seen */
    old.struct_size = offsetof(fastlsm_cross_entropy_options, z_loss);
    CHECK(fastlsm_cross_entropy_ex_f32(x, t64, FASTLSM_TARGET_INT64, N, C, NULL, NULL, NULL,
                                       &old, loss, NULL, NULL));
    print_f32("old_struct_loss", loss, 1);
    CHECK(fastlsm_cross_entropy_f32(x, t64, N, C, NULL, -100, 0.0f, FASTLSM_REDUCTION_MEAN,
                                    lse, NULL));
    print_f32("default_loss", lse, 1);
    old.struct_size = sizeof old + 8; /* from a newer header */
    int st = fastlsm_cross_entropy_ex_f32(x, t64, FASTLSM_TARGET_INT64, N, C, NULL, NULL, NULL,
                                          &old, loss, NULL, NULL);
    printf("newer_struct status %d | %s\n", st, fastlsm_last_error());
    old.struct_size = 0;
    st = fastlsm_cross_entropy_ex_f32(x, t64, FASTLSM_TARGET_INT64, N, C, NULL, NULL, NULL, &old,
                                      loss, NULL, NULL);
    printf("unset_struct status %d | %s\n", st, fastlsm_last_error());
    st = fastlsm_cross_entropy_ex_f32(x, t64, 7, N, C, NULL, NULL, NULL, NULL, loss, NULL, NULL);
    printf("bad_target_type status %d | %s\n", st, fastlsm_last_error());
    t32[4] = 5;
    st = fastlsm_cross_entropy_ex_f32(x, t32, FASTLSM_TARGET_INT32, N, C, NULL, NULL, NULL, NULL,
                                      loss, NULL, NULL);
    printf("bad_target32 status %d | %s\n", st, fastlsm_last_error());
    w[1] = -1.0f;
    st = fastlsm_nll_loss_f32(lp, t64, FASTLSM_TARGET_INT64, N, C, w, NULL, NULL, NULL, loss,
                              NULL);
    printf("bad_weight status %d | %s\n", st, fastlsm_last_error());
    return 0;
}
