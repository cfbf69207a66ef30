/*
 * half.c - bfloat16 and float16 logits through fastlsm's C ABI.
 *
 *     cc half.c $(python -m fastlsm.capi flags) -o half && ./half
 *
 * 16-bit data travels as uint16_t bit patterns (see "16-bit data" in fastlsm.h). Builds a few
 * rows of logits in both formats (plus a -inf mask), then prints the input bits, the 16-bit
 * log_softmax bits, the float logsumexp, and cross-entropy's float loss and 16-bit
 * gradient bits (exact hexadecimal floats for the float results).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

enum { ROWS = 3, COLS = 7 };

/* The bfloat16 bits of a float, rounded to nearest even (NaN stays NaN). */
static uint16_t bf16_bits(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* The binary16 bits of a float that binary16 represents exactly (zero, +-inf, normals with
 * at most 11 significant bits, as every value below). */
static uint16_t f16_bits(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    int e = (int)((b >> 23) & 0xffu);
    if (e == 255) return (uint16_t)(sign | 0x7c00u);
    if (e == 0) return sign;
    return (uint16_t)(sign | ((e - 127 + 15) << 10) | ((b >> 13) & 0x3ffu));
}

static void print_u16(const char *name, const uint16_t *v, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++) printf(" %u", (unsigned)v[i]);
    printf("\n");
}

static int run(const char *kind, const uint16_t *x, int is_bf16)
{
    uint16_t y[ROWS * COLS], grad[ROWS * COLS];
    float lse[ROWS], loss;
    const int64_t target[ROWS] = {2, 0, 6};
    char name[64];
    snprintf(name, sizeof name, "x_%s", kind);
    print_u16(name, x, ROWS * COLS);
    CHECK(is_bf16 ? fastlsm_log_softmax_bf16(x, y, ROWS, COLS)
                  : fastlsm_log_softmax_f16(x, y, ROWS, COLS));
    snprintf(name, sizeof name, "log_softmax_%s", kind);
    print_u16(name, y, ROWS * COLS);
    CHECK(is_bf16 ? fastlsm_logsumexp_bf16(x, lse, ROWS, COLS)
                  : fastlsm_logsumexp_f16(x, lse, ROWS, COLS));
    snprintf(name, sizeof name, "logsumexp_%s", kind);
    print_f32(name, lse, ROWS);
    CHECK(is_bf16 ? fastlsm_cross_entropy_bf16(x, target, ROWS, COLS, NULL, -100, 0.0f,
                                               FASTLSM_REDUCTION_MEAN, &loss, grad)
                  : fastlsm_cross_entropy_f16(x, target, ROWS, COLS, NULL, -100, 0.0f,
                                              FASTLSM_REDUCTION_MEAN, &loss, grad));
    snprintf(name, sizeof name, "loss_%s", kind);
    print_f32(name, &loss, 1);
    snprintf(name, sizeof name, "grad_%s", kind);
    print_u16(name, grad, ROWS * COLS);
    return 0;
}

int main(void)
{
    CHECK_VERSION();
    uint16_t xb[ROWS * COLS], xh[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) {
        float v = (float)((i * 37) % 61 - 30) / 8.0f; /* exact in both formats */
        xb[i] = bf16_bits(v * 1.1f);                   /* bfloat16 rounds this one */
        xh[i] = f16_bits(v);
    }
    xb[3] = bf16_bits(-INFINITY); /* masked vocabulary entries */
    xh[3] = f16_bits(-INFINITY);
    xh[COLS + 1] = f16_bits(60000.0f); /* near the float16 maximum: no overflow */
    if (run("bf16", xb, 1) || run("f16", xh, 0)) return 1;
    printf("ok\n");
    return 0;
}
