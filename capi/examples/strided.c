/*
 * strided.c - padded rows (a row stride) and 16-bit sampling through fastlsm's C ABI.
 *
 *     cc strided.c $(python -m fastlsm.capi flags) -o strided && ./strided
 *
 * A host's logits often sit in a wider buffer (rows padded to a multiple of 64, a vocabulary
 * rounded up by the model). Every entry point over rows takes the distance between row
 * starts: the _strided variants (last argument row_stride) and the row_stride fields of
 * fastlsm_cross_entropy_options and fastlsm_sample_params. This program fills the padding
 * with NaN (it must never be read) and checks, for every dtype, that each padded call gives
 * the bits of the packed call and leaves the output padding as it was; then that the 16-bit
 * samplers give the tokens and logprobs of the float32 ones on the widened logits (the same
 * kernel), and that a stride shorter than a row is refused. Prints "<check> ok" lines, then
 * "all ok" (or "<check> FAIL" and exits 1).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { ROWS = 6, V = 37, STRIDE = V + 5, K = 2, BEAMS = 2, CAND = 4 };

static int failures;

static void report(const char *name, int ok)
{
    printf("%s %s\n", name, ok ? "ok" : "FAIL");
    failures += !ok;
}

/* [rows, V] packed elements of `elem` bytes into rows STRIDE apart, the padding NaN. */
static void pad(void *dst, const void *src, int64_t rows, size_t elem, int bf16)
{
    const float fnan = NAN;
    const double dnan = NAN;
    const uint16_t hnan = bf16 ? 0x7fc0 : 0x7e00;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < STRIDE; j++) {
            char *d = (char *)dst + (size_t)(r * STRIDE + j) * elem;
            if (j < V) memcpy(d, (const char *)src + (size_t)(r * V + j) * elem, elem);
            else memcpy(d, elem == 8 ? (const void *)&dnan : elem == 4 ? (const void *)&fnan
                                                                       : (const void *)&hnan,
                        elem);
        }
}

/* Whether padded rows hold the packed rows' bits, their padding still `fill` bytes. */
static int same_rows(const void *padded, const void *packed, int64_t rows, size_t elem,
                     unsigned char fill)
{
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *p = (const unsigned char *)padded + (size_t)(r * STRIDE) * elem;
        if (memcmp(p, (const char *)packed + (size_t)(r * V) * elem, V * elem) != 0) return 0;
        for (size_t b = V * elem; b < STRIDE * elem; b++)
            if (p[b] != fill) return 0;
    }
    return 1;
}

static float widen_bf16(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static float widen_f16(uint16_t h) /* normal numbers, zeros and infinities (all used here) */
{
    const int e = (h >> 10) & 0x1f;
    const float m = e == 31 ? INFINITY : e ? ldexpf((float)((h & 0x3ff) | 0x400), e - 25) : 0;
    return h & 0x8000 ? -m : m;
}

static float xf[ROWS * V], pf[ROWS * STRIDE], yf[ROWS * V], qf[ROWS * STRIDE];
static double xd[ROWS * V], pd[ROWS * STRIDE], yd[ROWS * V], qd[ROWS * STRIDE];
static uint16_t xb[ROWS * V], pb[ROWS * STRIDE], yb[ROWS * V], qb[ROWS * STRIDE];
static uint16_t xh[ROWS * V], ph[ROWS * STRIDE], yh[ROWS * V], qh[ROWS * STRIDE];
static float wb[ROWS * V], wh[ROWS * V]; /* the 16-bit logits widened */

/* log_softmax, softmax (x != out and in place) and logsumexp of one dtype, padded vs packed. */
#define NORMALIZERS(S, T, R, X, P, Y, Q, BF16)                                                \
    do {                                                                                      \
        R lse[ROWS], lse_p[ROWS];                                                             \
        pad(P, X, ROWS, sizeof *X, BF16);                                                     \
        CHECK(fastlsm_log_softmax_##S(X, Y, ROWS, V));                                        \
        memset(Q, 0xA5, sizeof Q);                                                            \
        CHECK(fastlsm_log_softmax_strided_##S(P, Q, ROWS, V, STRIDE));                        \
        report("log_softmax_" #S, same_rows(Q, Y, ROWS, sizeof *X, 0xA5));                    \
        CHECK(fastlsm_softmax_##S(X, Y, ROWS, V));                                            \
        memset(Q, 0xA5, sizeof Q);                                                            \
        CHECK(fastlsm_softmax_strided_##S(P, Q, ROWS, V, STRIDE));                            \
        report("softmax_" #S, same_rows(Q, Y, ROWS, sizeof *X, 0xA5));                        \
        CHECK(fastlsm_logsumexp_##S(X, lse, ROWS, V));                                        \
        CHECK(fastlsm_logsumexp_strided_##S(P, lse_p, ROWS, V, STRIDE));                      \
        report("logsumexp_" #S, memcmp(lse, lse_p, sizeof lse) == 0);                         \
        memset(Q, 0xA5, sizeof Q);                                                            \
        for (int64_t r = 0; r < ROWS; r++) memcpy(Q + r * STRIDE, X + r * V, V * sizeof *X); \
        CHECK(fastlsm_log_softmax_##S(X, Y, ROWS, V));                                        \
        CHECK(fastlsm_log_softmax_strided_##S(Q, Q, ROWS, V, STRIDE)); /* in place */         \
        report("inplace_log_softmax_" #S, same_rows(Q, Y, ROWS, sizeof *X, 0xA5));            \
    } while (0)

/* sequence_logprobs (int64 and int32 ids) and beam_step of one dtype, padded vs packed. */
#define SCORING(S, R, X, P)                                                                   \
    do {                                                                                      \
        R tok_a[ROWS], tok_b[ROWS], seq_a[2], seq_b[2], bs[ROWS];                 \
        R cs_a[CAND * 3], cs_b[CAND * 3];                                                     \
        int64_t ct_a[CAND * 3], ct_b[CAND * 3], cb_a[CAND * 3], cb_b[CAND * 3];               \
        const int64_t ids[ROWS] = {0, 5, 36, 7, 7, 1};                                        \
        const int32_t ids32[ROWS] = {0, 5, 36, 7, 7, 1};                                      \
        const uint8_t mask[ROWS] = {1, 1, 0, 1, 1, 1};                                        \
        CHECK(fastlsm_sequence_logprobs_##S(X, ids, mask, 2, 3, V, tok_a, seq_a));            \
        CHECK(fastlsm_sequence_logprobs_strided_##S(P, ids, mask, 2, 3, V, tok_b, seq_b,      \
                                                    STRIDE));                                 \
        report("sequence_logprobs_" #S,                                                       \
               !memcmp(tok_a, tok_b, sizeof tok_a) && !memcmp(seq_a, seq_b, sizeof seq_a));   \
        CHECK(fastlsm_sequence_logprobs_i32_strided_##S(P, ids32, NULL, 2, 3, V, NULL, seq_b, \
                                                        STRIDE));                             \
        CHECK(fastlsm_sequence_logprobs_i32_##S(X, ids32, NULL, 2, 3, V, NULL, seq_a));       \
        report("sequence_logprobs_i32_" #S, !memcmp(seq_a, seq_b, sizeof seq_a));             \
        for (int i = 0; i < ROWS; i++) bs[i] = (R)(-0.5 * i);                     \
        CHECK(fastlsm_beam_step_##S(X, bs, 3, BEAMS, V, CAND, cs_a, ct_a, cb_a));             \
        CHECK(fastlsm_beam_step_strided_##S(P, bs, 3, BEAMS, V, CAND, cs_b, ct_b, cb_b,       \
                                            STRIDE));                                         \
        report("beam_step_" #S, !memcmp(cs_a, cs_b, sizeof cs_a) &&                           \
                                    !memcmp(ct_a, ct_b, sizeof ct_a) &&                       \
                                    !memcmp(cb_a, cb_b, sizeof cb_a));                        \
    } while (0)

/* sample and verify_draft of one dtype on padded logits (params.row_stride) vs `ref_*`. */
#define SAMPLING(S, X, P, REF_TOK, REF_LP, REF_NA, REF_OUT)                                   \
    do {                                                                                      \
        int64_t tok[ROWS], na[ROWS / 3], out[ROWS / 3 * (K + 1)];                             \
        float lp[ROWS];                                                                       \
        fastlsm_sample_params sp = fastlsm_sample_default_params();                           \
        sp.temperature = 0.9, sp.top_p = 0.95, sp.seed = 3, sp.row_stride = STRIDE;           \
        CHECK(fastlsm_sample_##S(P, ROWS, V, &sp, NULL, 0, NULL, 0, 0, tok, lp, NULL, NULL,   \
                                 NULL));                                                      \
        report("sample_" #S, !memcmp(tok, REF_TOK, sizeof tok) &&                             \
                                 !memcmp(lp, REF_LP, sizeof lp));                             \
        const int64_t draft[ROWS / 3 * K] = {3, 4, 30, 31};                                   \
        CHECK(fastlsm_verify_draft_##S(P, P + STRIDE, draft, ROWS / 3, K, V, &sp, NULL, 0,    \
                                       na, out));                                             \
        report("verify_draft_" #S, !memcmp(na, REF_NA, sizeof na) &&                          \
                                       !memcmp(out, REF_OUT, sizeof out));                    \
    } while (0)

int main(void)
{
    CHECK_VERSION();
    uint64_t state = 11;
    for (int i = 0; i < ROWS * V; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const uint16_t r = (uint16_t)(state >> 40), sign = (uint16_t)(r & 0x8000);
        xf[i] = (float)((double)(state >> 11) / 9007199254740992.0 * 12.0 - 6.0);
        xd[i] = (double)xf[i] * 1.5;
        xb[i] = (uint16_t)(sign | (0x3f00 + r % 0x0180)); /* |x| in [0.5, 6) */
        xh[i] = (uint16_t)(sign | (0x3800 + r % 0x0c00));
    }
    xf[3] = xd[3] = -INFINITY; /* a masked token */
    xb[3] = 0xff80, xh[3] = 0xfc00;
    for (int i = 0; i < ROWS * V; i++) wb[i] = widen_bf16(xb[i]), wh[i] = widen_f16(xh[i]);

    NORMALIZERS(f32, float, float, xf, pf, yf, qf, 0);
    NORMALIZERS(f64, double, double, xd, pd, yd, qd, 0);
    NORMALIZERS(bf16, uint16_t, float, xb, pb, yb, qb, 1);
    NORMALIZERS(f16, uint16_t, float, xh, ph, yh, qh, 0);
    SCORING(f32, float, xf, pf);
    SCORING(f64, double, xd, pd);
    SCORING(bf16, float, xb, pb);
    SCORING(f16, float, xh, ph);

    /* The references of the 16-bit samplers: the float32 ones on the widened logits. */
    int64_t tok_b[ROWS], tok_h[ROWS], na_b[ROWS / 3], na_h[ROWS / 3];
    int64_t out_b[ROWS / 3 * (K + 1)], out_h[ROWS / 3 * (K + 1)];
    float lp_b[ROWS], lp_h[ROWS];
    fastlsm_sample_params sp = fastlsm_sample_default_params();
    sp.temperature = 0.9, sp.top_p = 0.95, sp.seed = 3;
    const int64_t draft[ROWS / 3 * K] = {3, 4, 30, 31};
    CHECK(fastlsm_sample_f32(wb, ROWS, V, &sp, NULL, 0, NULL, 0, 0, tok_b, lp_b, NULL, NULL,
                             NULL));
    CHECK(fastlsm_sample_f32(wh, ROWS, V, &sp, NULL, 0, NULL, 0, 0, tok_h, lp_h, NULL, NULL,
                             NULL));
    CHECK(fastlsm_verify_draft_f32(wb, wb + V, draft, ROWS / 3, K, V, &sp, NULL, 0, na_b,
                                   out_b));
    CHECK(fastlsm_verify_draft_f32(wh, wh + V, draft, ROWS / 3, K, V, &sp, NULL, 0, na_h,
                                   out_h));
    SAMPLING(bf16, xb, pb, tok_b, lp_b, na_b, out_b);
    SAMPLING(f16, xh, ph, tok_h, lp_h, na_h, out_h);
    pad(pf, wb, ROWS, sizeof *pf, 0);
    SAMPLING(f32, wb, pf, tok_b, lp_b, na_b, out_b);
    printf("x_bf16");
    for (int i = 0; i < ROWS * V; i++) printf(" %u", (unsigned)xb[i]);
    printf("\n");
    print_i64("sample_bf16_tokens", tok_b, ROWS);
    print_f32("sample_bf16_logprobs", lp_b, ROWS);

    /* A stride shorter than a row: refused, the outputs untouched. */
    memset(qf, 0xA5, sizeof qf);
    int st = fastlsm_log_softmax_strided_f32(pf, qf, ROWS, V, V - 1);
    int untouched = 1;
    for (size_t b = 0; b < sizeof qf; b++) untouched &= ((unsigned char *)qf)[b] == 0xA5;
    printf("short_stride status %d | %s\n", st, fastlsm_last_error());
    report("short_stride", st == FASTLSM_ERR_INVALID_SIZE && untouched);
    sp.row_stride = V - 1;
    int64_t tok[ROWS] = {-7, -7, -7, -7, -7, -7};
    st = fastlsm_sample_bf16(pb, ROWS, V, &sp, NULL, 0, NULL, 0, 0, tok, NULL, NULL, NULL,
                             NULL);
    printf("short_sample_stride status %d | %s\n", st, fastlsm_last_error());
    report("short_sample_stride", st == FASTLSM_ERR_INVALID_SIZE && tok[0] == -7);

    if (failures) return 1;
    printf("all ok\n");
    return 0;
}
