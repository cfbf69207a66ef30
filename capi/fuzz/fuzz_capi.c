/*
 * fuzz_capi.c - a fuzz target over fastlsm's C ABI.
 *
 * Each input picks an entry point and derives its arguments from the bytes: sizes (small
 * and honest, or negative / overflowing), row strides (padded, too short, overflowing), NULL
 * pointers, enum values out of range, struct sizes from older and newer headers, float and
 * 16-bit data with NaN and infinities, ids out of range, sampling parameters out of range
 * (scalars and per-row arrays), logit biases with NaN, bitmasks allowing nothing.
 * Every call must either succeed with an empty fastlsm_last_error(), or fail with a known
 * status, a message, and its outputs untouched; anything else aborts (a finding).
 *
 * libFuzzer:   clang -g -O1 -fsanitize=fuzzer fuzz_capi.c $(flags) -o fuzz
 *              ./fuzz -max_total_time=30
 * without it:  cc -DFASTLSM_FUZZ_MAIN -g -O1 -fsanitize=address fuzz_capi.c $(flags) -o fuzz
 *              ./fuzz SECONDS [SEED]    (random inputs; or ./fuzz FILE... to replay inputs)
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlsm.h"

#define MAXN 16                 /* rows, cols, batch... of honest sizes */
#define CELLS (MAXN * MAXN * 4) /* elements of every buffer */
#define SENTINEL 0xA5

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t byte(input *in)
{
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

static uint32_t u32(input *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | byte(in);
    return v;
}

/* A size: mostly small and honest (the buffers hold it), sometimes invalid. */
static int64_t size_arg(input *in, int64_t max)
{
    uint8_t b = byte(in);
    switch (b >> 5) {
    case 0: return -(int64_t)(b & 31) - 1;
    case 1: return b & 1 ? INT64_MAX : INT64_MAX / 3;
    default: return (b & 31) % (max + 1);
    }
}

static float float_arg(input *in)
{
    uint8_t kind = byte(in);
    switch (kind & 7) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: {
        uint32_t bits = u32(in);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    default: return (float)((int8_t)byte(in)) / 8.0f;
    }
}

static int64_t id_arg(input *in, int64_t range)
{
    uint8_t b = byte(in);
    if (b < 16) return (int64_t)(int8_t)byte(in) * 1000003;
    if (b < 24) return -100;
    return range > 0 ? b % range : b;
}

/* A row stride for rows of `cols`: mostly cols plus a little padding, sometimes invalid. */
static int64_t stride_arg(input *in, int64_t cols)
{
    uint8_t b = byte(in);
    if (b < 16) return b < 8 ? cols - 1 - (b & 3) : b < 12 ? INT64_MAX / 2 : -(int64_t)b;
    return cols + (b & 3);
}

static float xf[CELLS], pf[CELLS], wf[CELLS], of[CELLS], gf[CELLS], lf[CELLS];
static double xd[CELLS], od[CELLS], gd[CELLS];
static int64_t ids[CELLS], o64[CELLS], o64b[CELLS], o64c[CELLS];
static int32_t ids32[CELLS], o32[CELLS];
static uint16_t xh[CELLS], oh[CELLS];
static uint8_t mask[CELLS];
static input g_step_input;

static void *outs[] = {of, gf, lf, od, gd, o64, o64b, o64c, o32, oh};
static const size_t out_sizes[] = {sizeof of, sizeof gf, sizeof lf, sizeof od, sizeof gd,
                                   sizeof o64, sizeof o64b, sizeof o64c, sizeof o32,
                                   sizeof oh};
#define NOUT (sizeof outs / sizeof *outs)

static int untouched(void)
{
    for (size_t k = 0; k < NOUT; k++)
        for (size_t i = 0; i < out_sizes[k]; i++)
            if (((const uint8_t *)outs[k])[i] != SENTINEL) return 0;
    return 1;
}

static void *maybe_null(input *in, void *p) { return byte(in) < 12 ? NULL : p; }

static int step_f32(void *user, const int64_t *seqs, int64_t rows, int64_t cur,
                    const int64_t *parents, float *logits)
{
    (void)user, (void)seqs, (void)cur, (void)parents;
    int64_t vocab = (int64_t)(intptr_t)user;
    for (int64_t i = 0; i < rows * vocab; i++) logits[i] = float_arg(&g_step_input);
    return byte(&g_step_input) == 255 ? 3 : 0; /* sometimes the model fails */
}

/* Sampling parameters from the bytes: defaults, or values in and out of range, per-row
 * arrays (of xd / ids: NaN, negative, huge), a logit bias, a bitmask, struct sizes. */
static fastlsm_sample_params sample_params(input *in, int64_t rows, int64_t cols)
{
    fastlsm_sample_params p = fastlsm_sample_default_params();
    static const size_t sizes[] = {0, sizeof(size_t),
                                   offsetof(fastlsm_sample_params, temperatures),
                                   offsetof(fastlsm_sample_params, row_stride),
                                   sizeof(fastlsm_sample_params),
                                   sizeof(fastlsm_sample_params) + 8};
    uint8_t how = byte(in);
    if (how & 1) p.struct_size = sizes[(how >> 1) % 6];
    if (byte(in) < 64) p.temperature = float_arg(in);
    if (byte(in) < 64) p.top_k = size_arg(in, cols);
    if (byte(in) < 64) p.top_p = float_arg(in);
    if (byte(in) < 64) p.min_p = float_arg(in);
    if (byte(in) < 64) p.typical_p = float_arg(in);
    if (byte(in) < 64) p.repetition_penalty = float_arg(in);
    if (byte(in) < 64) p.frequency_penalty = float_arg(in);
    if (byte(in) < 64) p.presence_penalty = float_arg(in);
    p.seed = u32(in);
    p.step = byte(in);
    p.num_logprobs = byte(in) < 128 ? 0 : size_arg(in, cols);
    p.logprobs_mode = (int)(byte(in) % 4) - 1;
    uint8_t arrays = byte(in);
    if (arrays & 1) p.temperatures = xd;
    if (arrays & 2) p.top_ks = ids;
    if (arrays & 4) p.top_ps = xd + 1;
    if (arrays & 8) p.min_ps = xd + 2;
    if (arrays & 16) p.repetition_penalties = xd + 3;
    if (arrays & 32) p.seeds = (const uint64_t *)ids;
    if (arrays & 64) p.logit_bias = xd + 4, p.logit_bias_rows = byte(in) & 1 ? 1 : rows;
    if (arrays & 128) p.token_bitmask = ids32;
    p.row_stride = byte(in) < 128 ? 0 : stride_arg(in, cols);
    return p;
}

static int run(input *in)
{
    const int op = byte(in) % 19;
    int64_t rows = size_arg(in, MAXN), cols = size_arg(in, MAXN);
    for (int i = 0; i < CELLS; i++) {
        xf[i] = float_arg(in), xd[i] = xf[i], pf[i] = float_arg(in);
        uint32_t bits;
        memcpy(&bits, &xf[i], sizeof bits);
        xh[i] = byte(in) & 1 ? (uint16_t)(bits >> 16) : (uint16_t)u32(in);
        wf[i] = byte(in) < 8 ? float_arg(in) : 1.0f;
        ids[i] = id_arg(in, cols), ids32[i] = (int32_t)ids[i], mask[i] = byte(in) & 1;
        if (!in->n) break;
    }
    for (size_t k = 0; k < NOUT; k++) memset(outs[k], SENTINEL, out_sizes[k]);
    fastlsm_cross_entropy_options o = fastlsm_cross_entropy_default_options();
    static const size_t struct_sizes[] = {0, sizeof(size_t),
                                          offsetof(fastlsm_cross_entropy_options, z_loss),
                                          sizeof(fastlsm_cross_entropy_options),
                                          sizeof(fastlsm_cross_entropy_options) + 8};
    uint8_t how = byte(in);
    if (how & 1) o.struct_size = struct_sizes[(how >> 1) % 5];
    o.ignore_index = byte(in) & 1 ? -100 : id_arg(in, cols);
    o.label_smoothing = byte(in) & 1 ? 0 : float_arg(in);
    o.z_loss = byte(in) & 1 ? 0 : float_arg(in);
    o.softcap = byte(in) & 1 ? 0 : float_arg(in);
    o.reduction = (int)(byte(in) % 5) - 1;
    int ttype = (int)(byte(in) % 5) - 1;
    const fastlsm_cross_entropy_options *opt = byte(in) < 32 ? NULL : &o;
    int st;
    switch (op) {
    case 0: st = fastlsm_log_softmax_f32(maybe_null(in, xf), maybe_null(in, of), rows, cols); break;
    case 1: st = fastlsm_softmax_f64(maybe_null(in, xd), maybe_null(in, od), rows, cols); break;
    case 2: st = fastlsm_logsumexp_f32(maybe_null(in, xf), maybe_null(in, of), rows, cols); break;
    case 3:
        st = fastlsm_cross_entropy_f32(maybe_null(in, xf), maybe_null(in, ids), rows, cols,
                                       byte(in) & 1 ? wf : NULL, o.ignore_index,
                                       (float)o.label_smoothing, o.reduction,
                                       maybe_null(in, of), maybe_null(in, gf));
        break;
    case 4: case 5: {
        const void *t = ttype == FASTLSM_TARGET_PROBS ? (const void *)pf
                        : ttype == FASTLSM_TARGET_INT32 ? (const void *)ids32 : (const void *)ids;
        st = fastlsm_cross_entropy_ex_f32(maybe_null(in, xf), maybe_null(in, (void *)t), ttype,
                                          rows, cols, byte(in) & 1 ? wf : NULL,
                                          byte(in) & 1 ? wf + 7 : NULL,
                                          byte(in) & 1 ? pf + 3 : NULL, opt,
                                          maybe_null(in, of), byte(in) & 1 ? lf : NULL,
                                          byte(in) & 1 ? gf : NULL);
        break;
    }
    case 6:
        st = fastlsm_nll_loss_f32(maybe_null(in, xf), ttype == 1 ? (void *)ids32 : (void *)ids,
                                  ttype, rows, cols, byte(in) & 1 ? wf : NULL,
                                  byte(in) & 1 ? wf + 5 : NULL, byte(in) & 1 ? pf : NULL, opt,
                                  maybe_null(in, of), byte(in) & 1 ? gf : NULL);
        break;
    case 7: {
        int64_t steps = size_arg(in, 3);
        st = byte(in) & 1
            ? fastlsm_sequence_logprobs_i32_f32(maybe_null(in, xf), ids32, byte(in) & 1 ? mask
                                                : NULL, rows % 4, steps, cols,
                                                byte(in) & 1 ? of : NULL, maybe_null(in, lf))
            : fastlsm_sequence_logprobs_f32(maybe_null(in, xf), ids, byte(in) & 1 ? mask : NULL,
                                            rows % 4, steps, cols, byte(in) & 1 ? of : NULL,
                                            maybe_null(in, lf));
        break;
    }
    case 8: {
        int64_t beams = size_arg(in, 4), ncand = size_arg(in, 24) - 1;
        st = fastlsm_beam_step_f32(maybe_null(in, xf), maybe_null(in, pf), rows % 4, beams,
                                   cols, ncand, maybe_null(in, of), maybe_null(in, o64),
                                   maybe_null(in, o64b));
        break;
    }
    case 9: case 10: {
        fastlsm_beam_search_config c = fastlsm_beam_search_default_config();
        int64_t eos[2] = {id_arg(in, cols), id_arg(in, cols)};
        static const size_t beam_sizes[] = {0, sizeof(size_t),
                                            offsetof(fastlsm_beam_search_config, patience),
                                            sizeof(fastlsm_beam_search_config),
                                            sizeof(fastlsm_beam_search_config) + 16};
        if (how & 1) c.struct_size = beam_sizes[(how >> 1) % 5];
        c.num_beams = size_arg(in, 3);
        c.max_new_tokens = size_arg(in, 3);
        c.num_return_sequences = size_arg(in, 3);
        c.num_eos_token_ids = byte(in) % 3;
        c.eos_token_ids = byte(in) < 16 ? NULL : eos;
        c.length_penalty = byte(in) < 16 ? float_arg(in) : 1.0;
        c.early_stopping = (int)(byte(in) % 5) - 1;
        c.min_new_tokens = size_arg(in, 3);
        c.no_repeat_ngram_size = size_arg(in, 3);
        c.repetition_penalty = byte(in) < 16 ? float_arg(in) : 1.0;
        c.patience = byte(in) < 16 ? float_arg(in) : 1.0;
        int64_t batch = rows % 3, plen = size_arg(in, 3), vocab = cols;
        g_step_input = *in;
        /* outputs sized for the largest valid problem: 2 * 3 rows of 3 + 3 tokens */
        st = (op == 9 ? fastlsm_beam_search_f32(byte(in) < 8 ? NULL : &c, ids, batch, plen,
                                                vocab, byte(in) < 4 ? NULL : step_f32,
                                                (void *)(intptr_t)vocab, o64, o64b, of, gf,
                                                byte(in) & 1 ? o64c : NULL)
                      : fastlsm_beam_search_i32_f32(&c, ids32, batch, plen, vocab, step_f32,
                                                    (void *)(intptr_t)vocab, o64, NULL, of,
                                                    NULL, o64c));
        break;
    }
    case 12:
        st = fastlsm_log_softmax_strided_bf16(maybe_null(in, xh), maybe_null(in, oh), rows, cols,
                                              stride_arg(in, cols));
        break;
    case 13:
        st = byte(in) & 1
            ? fastlsm_softmax_strided_f16(maybe_null(in, xh), maybe_null(in, oh), rows, cols,
                                          stride_arg(in, cols))
            : fastlsm_logsumexp_strided_f64(maybe_null(in, xd), maybe_null(in, od), rows, cols,
                                            stride_arg(in, cols));
        break;
    case 14: {
        int64_t steps = size_arg(in, 3), beams = size_arg(in, 4), ncand = size_arg(in, 24) - 1;
        st = byte(in) & 1
            ? fastlsm_sequence_logprobs_i32_strided_bf16(
                  maybe_null(in, xh), ids32, byte(in) & 1 ? mask : NULL, rows % 4, steps, cols,
                  byte(in) & 1 ? of : NULL, maybe_null(in, lf), stride_arg(in, cols))
            : fastlsm_beam_step_strided_f16(maybe_null(in, xh), maybe_null(in, pf), rows % 4,
                                            beams, cols, ncand, maybe_null(in, of),
                                            maybe_null(in, o64), maybe_null(in, o64b),
                                            stride_arg(in, cols));
        break;
    }
    case 15: case 16: {
        fastlsm_sample_params p = sample_params(in, rows, cols);
        const fastlsm_sample_params *pp = byte(in) < 16 ? NULL : &p;
        int64_t hlen = size_arg(in, 4), nid = size_arg(in, 4), idrows = byte(in) & 1 ? 1 : rows;
        if (op == 15)
            st = byte(in) & 1
                ? fastlsm_sample_f32(maybe_null(in, xf), rows, cols, pp, maybe_null(in, ids),
                                     hlen, maybe_null(in, ids), idrows, nid,
                                     maybe_null(in, o64), byte(in) & 1 ? of : NULL,
                                     maybe_null(in, o64b), maybe_null(in, gf),
                                     maybe_null(in, lf))
                : fastlsm_sample_bf16(maybe_null(in, xh), rows, cols, pp, maybe_null(in, ids),
                                      hlen, maybe_null(in, ids), idrows, nid,
                                      maybe_null(in, o64), byte(in) & 1 ? of : NULL,
                                      maybe_null(in, o64b), maybe_null(in, gf),
                                      maybe_null(in, lf));
        else
            st = fastlsm_sample_i32_f16(maybe_null(in, xh), rows, cols, pp,
                                        maybe_null(in, ids32), hlen, maybe_null(in, ids32),
                                        idrows, nid, maybe_null(in, o32),
                                        byte(in) & 1 ? of : NULL, maybe_null(in, o32 + 64),
                                        maybe_null(in, gf), maybe_null(in, lf));
        break;
    }
    case 17: {
        fastlsm_sample_params p = sample_params(in, rows % 4, cols);
        int64_t k = size_arg(in, 3), hlen = size_arg(in, 4);
        uint8_t kind = byte(in);
        st = kind % 3 == 0
            ? fastlsm_verify_draft_f32(maybe_null(in, xf), byte(in) & 1 ? pf : NULL,
                                       maybe_null(in, ids), rows % 4, k, cols, &p,
                                       maybe_null(in, ids), hlen, maybe_null(in, o64c),
                                       maybe_null(in, o64))
            : kind % 3 == 1
            ? fastlsm_verify_draft_bf16(maybe_null(in, xh), byte(in) & 1 ? xh + 7 : NULL,
                                        maybe_null(in, ids), rows % 4, k, cols, &p,
                                        maybe_null(in, ids), hlen, maybe_null(in, o64c),
                                        maybe_null(in, o64))
            : fastlsm_verify_draft_i32_f16(maybe_null(in, xh), byte(in) & 1 ? xh + 3 : NULL,
                                           maybe_null(in, ids32), rows % 4, k, cols, &p,
                                           maybe_null(in, ids32), hlen, maybe_null(in, o64c),
                                           maybe_null(in, o32));
        break;
    }
    default: st = fastlsm_set_num_threads((int)size_arg(in, 3)); break;
    }
    const char *msg = fastlsm_last_error();
    if (st < 0 || st > FASTLSM_ERR_INTERNAL || st == FASTLSM_ERR_RUNTIME ||
        st == FASTLSM_ERR_INTERNAL) {
        fprintf(stderr, "op %d: unexpected status %d: %s\n", op, st, msg);
        abort();
    }
    if (st != FASTLSM_OK && (!msg[0] || !untouched())) {
        fprintf(stderr, "op %d: status %d with %s\n", op, st,
                msg[0] ? "outputs written" : "no message");
        abort();
    }
    if (st == FASTLSM_OK && msg[0]) {
        fprintf(stderr, "op %d: success with a message: %s\n", op, msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (fastlsm_init() != FASTLSM_OK) {
        fprintf(stderr, "fastlsm_init: %s\n", fastlsm_last_error());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    run(&in);
    fastlsm_set_num_threads(1 + (size & 1)); /* alternate serial and parallel kernels */
    return 0;
}

#ifdef FASTLSM_FUZZ_MAIN
#include <time.h>

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1 && atof(argv[1]) <= 0) { /* replay files */
        for (int a = 1; a < argc; a++) {
            FILE *f = fopen(argv[a], "rb");
            static uint8_t buf[1 << 16];
            size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
            if (f) fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
        }
        return 0;
    }
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    uint64_t state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    time_t end = time(NULL) + (time_t)seconds;
    long runs = 0;
    static uint8_t buf[4096];
    while (time(NULL) < end) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t n = (size_t)(state >> 33) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (uint8_t)(state >> 56);
        }
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    printf("fuzz ok: %ld inputs\n", runs);
    return 0;
}
#endif
