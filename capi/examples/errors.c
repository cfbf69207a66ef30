/*
 * errors.c - how fastlsm reports failures: every call returns a status, writes nothing on
 * failure, and leaves a thread-local explanation in fastlsm_last_error().
 *
 *     cc errors.c $(python -m fastlsm.capi flags) -o errors && ./errors
 *
 * Prints one line per deliberate mistake: "case <name> status <code> <CODE_NAME>
 * untouched <0|1> | <last error>". `untouched` is 1 when the output buffers still hold
 * their sentinel values.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

static const char *code_name(int status)
{
    static const char *const names[] = {
        "FASTLSM_OK", "FASTLSM_ERR_NULL_POINTER", "FASTLSM_ERR_INVALID_SIZE",
        "FASTLSM_ERR_INVALID_TARGET", "FASTLSM_ERR_INVALID_ARGUMENT", "FASTLSM_ERR_RUNTIME",
        "FASTLSM_ERR_INTERNAL"};
    return status >= 0 && status <= 6 ? names[status] : "unknown";
}

#define N 12
static float x[N], out[N], loss[N], grad[N];
static double xd[N], outd[N];
static int64_t target[4], tokens[4], seqs[N * 4];

static int step_zero(void *user_data, const int64_t *sequences, int64_t rows, int64_t cur_len,
                     const int64_t *parent_beams, float *logits)
{
    (void)user_data, (void)sequences, (void)cur_len, (void)parent_beams;
    for (int64_t i = 0; i < rows * 10; i++) logits[i] = 0.0f;
    return 0;
}

static void reset(void)
{
    for (int i = 0; i < N; i++) {
        x[i] = (float)i / 4.0f, xd[i] = i / 3.0;
        out[i] = loss[i] = grad[i] = -7.0f, outd[i] = -7.0;
    }
    for (int i = 0; i < N * 4; i++) seqs[i] = -7;
    for (int i = 0; i < 4; i++) target[i] = i % 3, tokens[i] = i % 3;
}

static int untouched(void)
{
    for (int i = 0; i < N; i++)
        if (out[i] != -7.0f || loss[i] != -7.0f || grad[i] != -7.0f || outd[i] != -7.0)
            return 0;
    for (int i = 0; i < N * 4; i++)
        if (seqs[i] != -7) return 0;
    return 1;
}

static void report(const char *name, int status)
{
    printf("case %s status %d %s untouched %d | %s\n", name, status, code_name(status),
           untouched(), fastlsm_last_error());
    reset();
}

int main(void)
{
    CHECK_VERSION();
    float scores[4] = {0}, cand_scores[4];
    int64_t cand_tokens[4], cand_beams[4];

    for (int s = -1; s <= 7; s++) printf("strerror %d %s\n", s, fastlsm_strerror(s));
    printf("version %s %d\n", fastlsm_version_string(), fastlsm_version_number());
    reset();

    int st = fastlsm_init();
    printf("init status %d %s | %s\n", st, code_name(st), fastlsm_last_error());

    report("ok_log_softmax", fastlsm_log_softmax_f32(x, out, 3, 4));
    report("null_x", fastlsm_log_softmax_f32(NULL, out, 3, 4));
    report("null_out", fastlsm_softmax_f64(xd, NULL, 3, 4));
    report("negative_rows", fastlsm_logsumexp_f32(x, out, -1, 4));
    report("negative_cols", fastlsm_log_softmax_f64(xd, outd, 3, -4));
    report("overflow_int64", fastlsm_log_softmax_f32(x, out, INT64_MAX / 2, 3));
    report("overflow_bytes", fastlsm_softmax_f32(x, out, (int64_t)1 << 62, 1));
    report("zero_rows", fastlsm_log_softmax_f32(x, out, 0, 4));
    report("threads_zero", fastlsm_set_num_threads(0));
    report("threads_too_many", fastlsm_set_num_threads(1 << 20));

    report("ce_ok", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f,
                                              FASTLSM_REDUCTION_NONE, loss, grad));
    report("ce_null_target", fastlsm_cross_entropy_f32(x, NULL, 3, 4, NULL, -100, 0.0f,
                                                       FASTLSM_REDUCTION_MEAN, loss, grad));
    report("ce_null_loss", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f,
                                                     FASTLSM_REDUCTION_MEAN, NULL, grad));
    target[2] = 4;
    report("ce_target_high", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f,
                                                       FASTLSM_REDUCTION_MEAN, loss, grad));
    target[1] = -1;
    report("ce_target_negative", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f,
                                                           FASTLSM_REDUCTION_SUM, loss, grad));
    target[1] = -100;
    report("ce_ignored_ok", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f,
                                                      FASTLSM_REDUCTION_SUM, loss, NULL));
    report("ce_bad_reduction", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 0.0f, 3,
                                                         loss, grad));
    report("ce_bad_smoothing", fastlsm_cross_entropy_f32(x, target, 3, 4, NULL, -100, 1.5f,
                                                         FASTLSM_REDUCTION_MEAN, loss, grad));

    tokens[3] = 3;
    report("seq_token_high", fastlsm_sequence_logprobs_f32(x, tokens, NULL, 1, 4, 3, out, loss));
    report("seq_null_seq", fastlsm_sequence_logprobs_f32(x, tokens, NULL, 1, 4, 3, out, NULL));

    report("beam_zero_candidates", fastlsm_beam_step_f32(x, scores, 1, 4, 3, 0, cand_scores,
                                                         cand_tokens, cand_beams));
    report("beam_too_many", fastlsm_beam_step_f32(x, scores, 1, 4, 3, 13, cand_scores,
                                                  cand_tokens, cand_beams));

    /* beam-search configurations: checked by the same kernel as Python's, same messages */
    const int64_t prompt[2] = {1, 2};
    fastlsm_beam_search_config bc = fastlsm_beam_search_default_config();
    bc.num_return_sequences = 5;
    report("beam_search_returns", fastlsm_beam_search_f32(&bc, prompt, 1, 2, 10, step_zero, NULL,
                                                          seqs, NULL, out, NULL, NULL));
    bc = fastlsm_beam_search_default_config();
    bc.patience = 0.1;
    report("beam_search_patience", fastlsm_beam_search_f32(&bc, prompt, 1, 2, 10, step_zero,
                                                           NULL, seqs, NULL, out, NULL, NULL));
    bc = fastlsm_beam_search_default_config();
    report("beam_search_vocab", fastlsm_beam_search_f32(&bc, prompt, 1, 2, 1, step_zero, NULL,
                                                        seqs, NULL, out, NULL, NULL));
    bc.struct_size = 0;
    report("beam_search_struct", fastlsm_beam_search_f32(&bc, prompt, 1, 2, 10, step_zero, NULL,
                                                         seqs, NULL, out, NULL, NULL));
    bc = fastlsm_beam_search_default_config();
    bc.max_new_tokens = 2, bc.num_beams = 2;
    report("beam_search_ok", fastlsm_beam_search_f32(&bc, prompt, 1, 2, 10, step_zero, NULL,
                                                     seqs, NULL, out, NULL, NULL));
    return 0;
}
