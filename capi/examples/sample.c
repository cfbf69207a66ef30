/*
 * sample.c - sample tokens with logprobs, and verify a speculative draft, through fastlsm's
 * C ABI.
 *
 *     cc sample.c $(python -m fastlsm.capi flags) -o sample && ./sample
 *
 * Prints (exact hexadecimal floats) the logits, then for each call the sampled tokens, their
 * logprobs, the top alternatives and the logprobs of named tokens; a verify_draft result; a
 * rejected parameter with its message (the outputs stay untouched); an older, smaller
 * parameters struct accepted.
 */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

enum { ROWS = 3, VOCAB = 50, TOP = 3, NIDS = 2, HIST = 4, K = 2 };

static void print_i32(const char *name, const int32_t *v, int64_t n)
{
    printf("%s", name);
    for (int64_t i = 0; i < n; i++) printf(" %" PRId32, v[i]);
    printf("\n");
}

int main(void)
{
    CHECK_VERSION();
    static float x[ROWS * VOCAB], tl[ROWS * (K + 1) * VOCAB], dl[ROWS * K * VOCAB];
    uint64_t state = 7;
    for (int i = 0; i < ROWS * (K + 1) * VOCAB; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        float v = (float)((double)(state >> 11) / 9007199254740992.0 * 8.0 - 4.0);
        if (i < ROWS * VOCAB) x[i] = v;
        tl[i] = v * 0.5f;
        if (i < ROWS * K * VOCAB) dl[i] = v * 0.4f + 0.1f;
    }
    x[5] = -INFINITY; /* a masked token */
    print_f32("x", x, ROWS * VOCAB);

    /* 1. One set of parameters for every row, int64 ids, raw logprobs. */
    const int64_t history[ROWS * HIST] = {1, 2, -1, -1, 3, 3, 3, 9, 0, -1, -1, -1};
    const int64_t ids[NIDS] = {4, 5};
    int64_t tokens[ROWS], top[ROWS * TOP];
    float lp[ROWS], top_lp[ROWS * TOP], id_lp[ROWS * NIDS];
    fastlsm_sample_params p = fastlsm_sample_default_params();
    p.temperature = 0.8;
    p.top_p = 0.9;
    p.repetition_penalty = 1.2;
    p.seed = 7;
    p.step = 2;
    p.num_logprobs = TOP;
    CHECK(fastlsm_sample_f32(x, ROWS, VOCAB, &p, history, HIST, ids, 1, NIDS, tokens, lp, top,
                             top_lp, id_lp));
    print_i64("a_tokens", tokens, ROWS);
    print_f32("a_logprobs", lp, ROWS);
    print_i64("a_top_tokens", top, ROWS * TOP);
    print_f32("a_top_logprobs", top_lp, ROWS * TOP);
    print_f32("a_token_id_logprobs", id_lp, ROWS * NIDS);

    /* 2. Per-request settings (greedy, top_k, min_p), per-request seeds, int32 ids
     *    (llama_token), processed logprobs, a logit bias and a token bitmask. */
    const double temps[ROWS] = {0.0, 0.7, 1.3};
    const int64_t top_ks[ROWS] = {0, 5, 0};
    const double min_ps[ROWS] = {0.0, 0.0, 0.05};
    const uint64_t seeds[ROWS] = {11, 12, 13};
    static double bias[VOCAB];
    bias[7] = 2.5;
    bias[8] = -INFINITY;
    int32_t mask[ROWS * ((VOCAB + 31) / 32)];
    for (int i = 0; i < ROWS * ((VOCAB + 31) / 32); i++) mask[i] = -1;
    mask[2 * 2] = 0x0000ff00; /* row 2 allows tokens 8..15 only */
    mask[2 * 2 + 1] = 0;
    const int32_t history32[ROWS * HIST] = {7, 7, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1};
    int32_t tokens32[ROWS], top32[ROWS * TOP];
    fastlsm_sample_params q = fastlsm_sample_default_params();
    q.temperatures = temps;
    q.top_ks = top_ks;
    q.min_ps = min_ps;
    q.seeds = seeds;
    q.step = 5;
    q.frequency_penalty = 0.5;
    q.presence_penalty = 0.25;
    q.logit_bias = bias;
    q.token_bitmask = mask;
    q.num_logprobs = TOP;
    q.logprobs_mode = FASTLSM_LOGPROBS_PROCESSED;
    CHECK(fastlsm_sample_i32_f32(x, ROWS, VOCAB, &q, history32, HIST, NULL, 0, 0, tokens32, lp,
                                 top32, top_lp, NULL));
    print_i32("b_tokens", tokens32, ROWS);
    print_f32("b_logprobs", lp, ROWS);
    print_i32("b_top_tokens", top32, ROWS * TOP);
    print_f32("b_top_logprobs", top_lp, ROWS * TOP);

    /* 3. Speculative decoding: verify K draft tokens against the target's K + 1 positions. */
    print_f32("target_logits", tl, ROWS * (K + 1) * VOCAB);
    print_f32("draft_logits", dl, ROWS * K * VOCAB);
    const int64_t draft[ROWS * K] = {3, 4, 10, 11, 20, 21};
    int64_t accepted[ROWS], emitted[ROWS * (K + 1)];
    fastlsm_sample_params v = fastlsm_sample_default_params();
    v.seed = 3;
    v.top_k = 20;
    CHECK(fastlsm_verify_draft_f32(tl, dl, draft, ROWS, K, VOCAB, &v, NULL, 0, accepted,
                                   emitted));
    print_i64("v_num_accepted", accepted, ROWS);
    print_i64("v_tokens", emitted, ROWS * (K + 1));

    /* 4. A bad parameter: a status and a message; the outputs are untouched. */
    int64_t untouched[ROWS] = {-7, -7, -7};
    fastlsm_sample_params bad = fastlsm_sample_default_params();
    bad.temperature = -1.0;
    int st = fastlsm_sample_f32(x, ROWS, VOCAB, &bad, NULL, 0, NULL, 0, 0, untouched, NULL, NULL,
                                NULL, NULL);
    printf("error %d %s\n", st, fastlsm_last_error());
    print_i64("untouched", untouched, ROWS);

    /* 5. A struct from an older header (only the scalar fields): accepted, the rest defaults. */
    fastlsm_sample_params old = p; /* the settings of call 1, then cut to the old size */
    old.struct_size = offsetof(fastlsm_sample_params, temperatures);
    CHECK(fastlsm_sample_f32(x, ROWS, VOCAB, &old, history, HIST, ids, 1, NIDS, tokens, lp, top,
                             top_lp, id_lp));
    print_i64("old_tokens", tokens, ROWS);
    printf("ok\n");
    return 0;
}
