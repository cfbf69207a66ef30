/*
 * beam_search.c - beam-search decoding with a small model written in C as the step callback,
 * plus the building blocks: one fused beam step and sequence scoring.
 *
 *     cc beam_search.c $(python -m fastlsm.capi flags) -o beam_search && ./beam_search
 *
 * The "model" is a lookup table: the next-token logits depend on the last token and on the
 * current length modulo 3 (table[cur_len % 3][last][v]). The step callback also checks the
 * parent_beams contract (NULL on the first step only). Everything is printed as exact
 * hexadecimal floats so that tests can compare it with fastlsm.beam_search in Python.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

#define V 12      /* vocabulary */
#define PHASES 3  /* the table depends on cur_len % PHASES */
#define B 2       /* prompts */
#define L 2       /* prompt length */
#define K 3       /* beams */
#define G 6       /* max new tokens */
#define R 2       /* returned sequences per prompt */

typedef struct {
    float table[PHASES][V][V];
    int calls;
    int bad_parents; /* contract violations seen by the callback */
} model;

static int step_f32(void *user_data, const int64_t *sequences, int64_t rows, int64_t cur_len,
                    const int64_t *parent_beams, float *logits)
{
    model *m = user_data;
    if ((m->calls == 0) != (parent_beams == NULL)) m->bad_parents++;
    for (int64_t r = 0; r < rows; r++) {
        int64_t last = sequences[r * cur_len + cur_len - 1];
        if (last < 0 || last >= V) return -1; /* cannot happen: a model may fail, though */
        if (parent_beams && (parent_beams[r] < 0 || parent_beams[r] >= rows)) m->bad_parents++;
        for (int v = 0; v < V; v++) logits[r * V + v] = m->table[cur_len % PHASES][last][v];
    }
    m->calls++;
    return 0;
}

static int step_f64(void *user_data, const int64_t *sequences, int64_t rows, int64_t cur_len,
                    const int64_t *parent_beams, double *logits)
{
    model *m = user_data;
    (void)parent_beams;
    for (int64_t r = 0; r < rows; r++) {
        int64_t last = sequences[r * cur_len + cur_len - 1];
        for (int v = 0; v < V; v++) logits[r * V + v] = m->table[cur_len % PHASES][last][v];
    }
    m->calls++;
    return 0;
}

/* bfloat16 bits of a float, rounded to nearest even (the table holds no NaN). */
static uint16_t to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* The same model with bfloat16 logits (a 16-bit model's output, handed over as it is). */
static int step_bf16(void *user_data, const int64_t *sequences, int64_t rows, int64_t cur_len,
                     const int64_t *parent_beams, uint16_t *logits)
{
    model *m = user_data;
    (void)parent_beams;
    for (int64_t r = 0; r < rows; r++) {
        int64_t last = sequences[r * cur_len + cur_len - 1];
        for (int v = 0; v < V; v++)
            logits[r * V + v] = to_bf16(m->table[cur_len % PHASES][last][v]);
    }
    m->calls++;
    return 0;
}

int main(void)
{
    CHECK_VERSION();
    static model m;
    uint64_t state = 3;
    for (int p = 0; p < PHASES; p++)
        for (int a = 0; a < V; a++)
            for (int v = 0; v < V; v++) {
                state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                m.table[p][a][v] = (float)((double)(state >> 11) / 9007199254740992.0 * 6.0 - 3.0);
            }
    m.table[1][4][7] = -INFINITY; /* a banned token */
    print_f32("table", &m.table[0][0][0], PHASES * V * V);

    /* ---- the decoder */
    const int64_t prompts[B * L] = {2, 5, 0, 11};
    const int64_t eos[1] = {1};
    fastlsm_beam_search_config cfg = fastlsm_beam_search_default_config();
    cfg.num_beams = K;
    cfg.max_new_tokens = G;
    cfg.eos_token_ids = eos;
    cfg.num_eos_token_ids = 1;
    cfg.pad_token_id = 0;
    cfg.num_return_sequences = R;
    cfg.length_penalty = 1.0;
    int64_t seqs[B * R * (L + G)], lengths[B * R], width = 0;
    float scores[B * R], logp[B * R * G];
    CHECK(fastlsm_beam_search_f32(&cfg, prompts, B, L, V, step_f32, &m, seqs, lengths, scores,
                                  logp, &width));
    printf("search_calls %d bad_parents %d width %" PRId64 "\n", m.calls, m.bad_parents, width);
    print_i64("search_f32_sequences", seqs, B * R * (L + G));
    print_i64("search_f32_lengths", lengths, B * R);
    print_f32("search_f32_scores", scores, B * R);
    print_f32("search_f32_logprobs", logp, B * R * G);
    for (int i = 0; i < B * R; i++) {
        printf("  prompt %d, rank %d, score %+.4f:", i / R, i % R, scores[i]);
        for (int64_t t = 0; t < L + lengths[i]; t++) printf(" %" PRId64, seqs[i * (L + G) + t]);
        printf("\n");
    }

    m.calls = 0;
    CHECK(fastlsm_beam_search_bf16(&cfg, prompts, B, L, V, step_bf16, &m, seqs, lengths, scores,
                                   NULL, &width));
    printf("search_bf16_width %" PRId64 "\n", width);
    print_i64("search_bf16_sequences", seqs, B * R * (L + G));
    print_i64("search_bf16_lengths", lengths, B * R);
    print_f32("search_bf16_scores", scores, B * R);

    double scores64[B * R];
    m.calls = 0;
    cfg.early_stopping = FASTLSM_EARLY_STOPPING_NEVER;
    cfg.length_penalty = 0.5;
    cfg.no_repeat_ngram_size = 2;
    cfg.repetition_penalty = 1.3;
    CHECK(fastlsm_beam_search_f64(&cfg, prompts, B, L, V, step_f64, &m, seqs, NULL, scores64,
                                  NULL, &width));
    printf("search_f64_width %" PRId64 "\n", width);
    print_i64("search_f64_sequences", seqs, B * R * (L + G));
    print_f64("search_f64_scores", scores64, B * R);

    /* ---- one fused beam step: rows of the table as [batch 2, beams 3, vocab V] logits */
    const float *x = &m.table[1][0][0];
    const float beam_scores[6] = {0.0f, -0.5f, -INFINITY, -1.0f, -1.25f, -2.0f};
    float cand_scores[2 * 6];
    int64_t cand_tokens[2 * 6], cand_beams[2 * 6];
    CHECK(fastlsm_beam_step_f32(x, beam_scores, 2, 3, V, 6, cand_scores, cand_tokens,
                                cand_beams));
    print_f32("step_scores", cand_scores, 12);
    print_i64("step_tokens", cand_tokens, 12);
    print_i64("step_beams", cand_beams, 12);

    /* ---- sequence scoring: the same logits as [batch 2, steps 3, vocab V] */
    const int64_t tokens[6] = {3, 7, 1, 0, 11, 5};
    const uint8_t mask[6] = {1, 1, 1, 1, 0, 1};
    float token_lp[6], seq_lp[2];
    CHECK(fastlsm_sequence_logprobs_f32(x, tokens, mask, 2, 3, V, token_lp, seq_lp));
    print_f32("seq_token_logprobs", token_lp, 6);
    print_f32("seq_logprobs", seq_lp, 2);
    return 0;
}
