/*
 * train_step.c - train a linear softmax classifier with fastlsm's fused cross-entropy:
 * one call gives the loss and d loss / d logits, written over the logits (no extra buffer).
 *
 *     cc train_step.c $(python -m fastlsm.capi flags) -o train_step && ./train_step
 *
 * Prints the loss of every SGD step (it goes down), then, as exact hexadecimal floats, the
 * first step's inputs and outputs and a table of option combinations (reductions, class
 * weights, label smoothing, ignore_index, float64), which tests compare with the Python API.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

#define N 16 /* samples */
#define D 8  /* features */
#define C 5  /* classes */

static uint64_t rng_state = 7;

static float uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((double)(rng_state >> 11) / 9007199254740992.0);
}

int main(void)
{
    CHECK_VERSION();
    static float x[N][D], w[D][C], logits[N][C], first[N][C];
    int64_t target[N];
    for (int i = 0; i < N; i++) {
        target[i] = i % C;
        for (int d = 0; d < D; d++) x[i][d] = uniform(-1, 1) + (d == target[i] ? 1.5f : 0.0f);
    }
    memset(w, 0, sizeof w);
    w[0][0] = 0.5f;

    /* ---- SGD: logits = x @ w; loss, grad = cross_entropy(logits); w -= lr * x^T @ grad */
    const float lr = 0.5f;
    for (int step = 0; step < 30; step++) {
        float loss;
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++) {
                float s = 0.0f;
                for (int d = 0; d < D; d++) s += x[i][d] * w[d][c];
                logits[i][c] = s;
            }
        if (step == 0) memcpy(first, logits, sizeof logits);
        /* grad == logits: the gradient overwrites the logits in place */
        CHECK(fastlsm_cross_entropy_f32(&logits[0][0], target, N, C, NULL, -100, 0.0f,
                                        FASTLSM_REDUCTION_MEAN, &loss, &logits[0][0]));
        if (step == 0) {
            print_f32("first_logits", &first[0][0], N * C);
            print_f32("first_loss", &loss, 1);
            print_f32("first_grad", &logits[0][0], N * C);
        }
        printf("step %d loss %.6f\n", step, loss);
        for (int d = 0; d < D; d++)
            for (int c = 0; c < C; c++) {
                float g = 0.0f;
                for (int i = 0; i < N; i++) g += x[i][d] * logits[i][c];
                w[d][c] -= lr * g;
            }
    }

    /* ---- option combinations on the first step's logits (exact values for the tests) */
    int64_t t2[N];
    memcpy(t2, target, sizeof t2);
    t2[3] = 9, t2[7] = 9; /* two rows ignored with a custom ignore_index */
    const float weight[C] = {1.0f, 2.0f, 0.5f, 0.0f, 3.0f};
    double first64[N][C], weight64[C], loss64[N], grad64[N][C];
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) first64[i][c] = (double)first[i][c] * 1.75;
    for (int c = 0; c < C; c++) weight64[c] = weight[c];
    const char *names[3] = {"none", "mean", "sum"};
    const int reductions[3] = {FASTLSM_REDUCTION_NONE, FASTLSM_REDUCTION_MEAN,
                               FASTLSM_REDUCTION_SUM};
    for (int r = 0; r < 3; r++)
        for (int use_w = 0; use_w < 2; use_w++)
            for (int smooth = 0; smooth < 2; smooth++) {
                float loss[N], grad[N][C];
                const float eps = smooth ? 0.25f : 0.0f;
                const int nloss = reductions[r] == FASTLSM_REDUCTION_NONE ? N : 1;
                char name[96];
                CHECK(fastlsm_cross_entropy_f32(&first[0][0], t2, N, C, use_w ? weight : NULL,
                                                9, eps, reductions[r], loss, &grad[0][0]));
                snprintf(name, sizeof name, "ce_f32_%s_w%d_s%d_loss", names[r], use_w, smooth);
                print_f32(name, loss, nloss);
                snprintf(name, sizeof name, "ce_f32_%s_w%d_s%d_grad", names[r], use_w, smooth);
                print_f32(name, &grad[0][0], N * C);
                CHECK(fastlsm_cross_entropy_f64(&first64[0][0], t2, N, C,
                                                use_w ? weight64 : NULL, 9, eps, reductions[r],
                                                loss64, &grad64[0][0]));
                snprintf(name, sizeof name, "ce_f64_%s_w%d_s%d_loss", names[r], use_w, smooth);
                print_f64(name, loss64, nloss);
                snprintf(name, sizeof name, "ce_f64_%s_w%d_s%d_grad", names[r], use_w, smooth);
                print_f64(name, &grad64[0][0], N * C);
            }
    float loss_only;
    CHECK(fastlsm_cross_entropy_f32(&first[0][0], target, N, C, NULL, -100, 0.0f,
                                    FASTLSM_REDUCTION_SUM, &loss_only, NULL)); /* no grad */
    print_f32("ce_f32_sum_nograd_loss", &loss_only, 1);
    return 0;
}
