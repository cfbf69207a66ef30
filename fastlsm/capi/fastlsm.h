/*
 * fastlsm.h - C ABI of fastlsm: fused log-softmax, cross-entropy, beam-search and sampling
 * kernels.
 *
 * Install (on the machine that runs the host: this also compiles and caches every kernel):
 *
 *     python -m fastlsm.capi install --prefix P   # P/include, P/lib (+ pkgconfig, cmake)
 *     cc host.c $(PKG_CONFIG_PATH=P/lib/pkgconfig pkg-config --cflags --libs fastlsm)
 *     # CMake: find_package(fastlsm 0.1 REQUIRED) + target_link_libraries(t fastlsm::fastlsm)
 *
 * Conventions (every function):
 * - Arrays are C-contiguous, row-major, caller-allocated. Sizes and indices are int64_t.
 * - Functions returning int return a fastlsm_status. On failure nothing has been written to
 *   any output; fastlsm_last_error() then describes the failure (thread-local).
 * - Results are bitwise identical to the Python API's (fastlsm.log_softmax, ...) on the same
 *   input, and identical for every thread count.
 * - The first call starts an embedded Python runtime (about 0.5 s with a warm cache): the
 *   host needs the shared libpython and the Python environment fastlsm is installed in, at
 *   the paths they had at build time (the library cannot be moved to another machine or
 *   environment: rebuild it there). Nothing is taken from the host's environment but the
 *   FASTLSM_* variables below (PATH, PYTHONHOME, PYTHONPATH, the working directory are
 *   ignored): the module path is fastlsm's package root, the standard library and the
 *   environment's site-packages. Call fastlsm_init() to pay
 *   the start-up cost at a time of your choosing. Each entry point's compiled kernels are
 *   loaded from the cache on its own first call (milliseconds; the GIL is taken then).
 *   After that, calls jump straight to compiled code; with fastlsm_set_num_threads(1) they
 *   never enter the Python runtime.
 * - Thread safety: every function may be called concurrently from any number of threads.
 *
 * ABI policy (soname libfastlsm.so.0; the file is libfastlsm.so.0.<minor>.<patch>):
 * - Within a major version, functions, their signatures, enum values and the meaning of
 *   struct fields already published never change; error codes are never renumbered.
 * - New functions, enum values, status codes and struct fields may be added. Fields are only
 *   ever appended to a struct; every struct starts with struct_size, which its
 *   fastlsm_*_default_*() function fills: always start from it. The library accepts
 *   structs from older headers (smaller struct_size: the missing fields take their
 *   defaults) and rejects ones from newer headers than its own.
 * - Treat unknown non-zero status codes as failures; fastlsm_strerror() handles any value.
 * - FASTLSM_VERSION_NUMBER (compile time) and fastlsm_version_number() (run time) tell the
 *   header and the library apart: the library must not be older than the header.
 * - Entry points come in dtype variants named by suffix: _f32 (float), _f64 (double),
 *   _bf16 and _f16 (16-bit logits as uint16_t bits, see "16-bit data"); _i32_ in a name
 *   means int32_t token ids (llama_token) where the plain name takes int64_t. A variant,
 *   once published, is never removed within a major version.
 * - Structs (fastlsm_cross_entropy_options, fastlsm_beam_search_config,
 *   fastlsm_sample_params) may hold optional pointers: NULL always means "not given".
 *
 * Environment (all optional): FASTLSM_NUM_THREADS (initial thread count),
 * FASTLSM_CACHE_DIR (compiled-kernel cache; default: the one warmed by `build`),
 * FASTLSM_PYTHONPATH (directories searched before the built-in path, ':'-separated),
 * FASTLSM_THREADING_LAYER (omp or tbb), FASTLSM_CAPI_FAULT=internal (fault injection: every
 * kernel call then fails with FASTLSM_ERR_INTERNAL, to test a host's error handling).
 */
#ifndef FASTLSM_H
#define FASTLSM_H

#include <stddef.h>
#include <stdint.h>

#define FASTLSM_VERSION_MAJOR 0
#define FASTLSM_VERSION_MINOR 1
#define FASTLSM_VERSION_PATCH 0
#define FASTLSM_VERSION_NUMBER \
    (FASTLSM_VERSION_MAJOR * 10000 + FASTLSM_VERSION_MINOR * 100 + FASTLSM_VERSION_PATCH)
#define FASTLSM_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define FASTLSM_API __attribute__((visibility("default")))
#else
#define FASTLSM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ status codes */

typedef enum fastlsm_status {
    FASTLSM_OK = 0,
    FASTLSM_ERR_NULL_POINTER = 1,     /* a required pointer argument is NULL */
    FASTLSM_ERR_INVALID_SIZE = 2,     /* a negative size, or a product of sizes overflowing */
    FASTLSM_ERR_INVALID_TARGET = 3,   /* a target/token index outside [0, cols) */
    FASTLSM_ERR_INVALID_ARGUMENT = 4, /* any other bad argument (reduction, thread count...) */
    FASTLSM_ERR_RUNTIME = 5,          /* the runtime could not start, or a kernel is missing */
    FASTLSM_ERR_INTERNAL = 6          /* a bug in fastlsm: please report it */
} fastlsm_status;

typedef enum fastlsm_reduction {
    FASTLSM_REDUCTION_NONE = 0, /* loss holds one value per row */
    FASTLSM_REDUCTION_MEAN = 1, /* loss holds one value: PyTorch's weighted mean */
    FASTLSM_REDUCTION_SUM = 2   /* loss holds one value: the sum */
} fastlsm_reduction;

/* ------------------------------------------------------------------ library */

/* Version of the library actually loaded ("0.1.0", 100); compare with the macros above. */
FASTLSM_API const char *fastlsm_version_string(void);
FASTLSM_API int fastlsm_version_number(void);

/* A static description of any status value; never NULL ("unknown status" for others). */
FASTLSM_API const char *fastlsm_strerror(int status);

/* Detail of the calling thread's last call: "" if it succeeded, else what went wrong (which
 * argument, which position). Valid until this thread's next fastlsm call; never NULL. */
FASTLSM_API const char *fastlsm_last_error(void);

/* Start the runtime now (optional: the first call of any kernel does it). Idempotent and
 * thread-safe; returns FASTLSM_ERR_RUNTIME (with details in fastlsm_last_error()) if Python,
 * NumPy, Numba or the compiled kernels cannot be loaded. A failed start is not retried. */
FASTLSM_API int fastlsm_init(void);

/* Threads used by each kernel call, for all host threads (like fastlsm.set_num_threads):
 * 1 <= n <= fastlsm_max_threads(), else FASTLSM_ERR_INVALID_ARGUMENT. With n == 1 calls
 * never enter the Python runtime (no GIL): the way to scale with many host threads. Small
 * problems (under 32768 elements) always run on the calling thread. Starts the runtime. */
FASTLSM_API int fastlsm_set_num_threads(int n);
/* Current thread count, and the largest allowed (Numba's pool size); 0 if the runtime
 * cannot start. */
FASTLSM_API int fastlsm_get_num_threads(void);
FASTLSM_API int fastlsm_max_threads(void);

/* ------------------------------------------------------------------ normalizers
 * x and out: [rows, cols] (logsumexp: out is [rows]). out may equal x (in place), but must
 * not otherwise overlap it. Special values as in the Python API (-inf masks, NaN rows,
 * an empty row's logsumexp is -inf). */

FASTLSM_API int fastlsm_log_softmax_f32(const float *x, float *out, int64_t rows, int64_t cols);
FASTLSM_API int fastlsm_log_softmax_f64(const double *x, double *out, int64_t rows, int64_t cols);
FASTLSM_API int fastlsm_softmax_f32(const float *x, float *out, int64_t rows, int64_t cols);
FASTLSM_API int fastlsm_softmax_f64(const double *x, double *out, int64_t rows, int64_t cols);
FASTLSM_API int fastlsm_logsumexp_f32(const float *x, float *out, int64_t rows, int64_t cols);
FASTLSM_API int fastlsm_logsumexp_f64(const double *x, double *out, int64_t rows, int64_t cols);

/* ------------------------------------------------------------------ cross-entropy
 * logits [rows, cols], target [rows] in [0, cols) or == ignore_index, class_weight [cols] or
 * NULL (all ones), label_smoothing in [0, 1], reduction a fastlsm_reduction.
 * loss: [rows] for FASTLSM_REDUCTION_NONE, else [1]. grad: [rows, cols] d loss / d logits
 * (for NONE: of the sum of the per-row losses), or NULL when not wanted; grad may equal
 * logits (the gradient then overwrites the logits). Semantics: PyTorch F.cross_entropy. */

FASTLSM_API int fastlsm_cross_entropy_f32(const float *logits, const int64_t *target,
                                          int64_t rows, int64_t cols, const float *class_weight,
                                          int64_t ignore_index, float label_smoothing,
                                          int reduction, float *loss, float *grad);
FASTLSM_API int fastlsm_cross_entropy_f64(const double *logits, const int64_t *target,
                                          int64_t rows, int64_t cols,
                                          const double *class_weight, int64_t ignore_index,
                                          double label_smoothing, int reduction, double *loss,
                                          double *grad);

/* Every option of fastlsm.cross_entropy / fastlsm.nll_loss. */
typedef enum fastlsm_target_type {
    FASTLSM_TARGET_INT64 = 0, /* class indices, int64_t [rows] */
    FASTLSM_TARGET_INT32 = 1, /* class indices, int32_t [rows] (e.g. llama_token) */
    FASTLSM_TARGET_PROBS = 2  /* class probabilities, the logits' type (float for 16-bit
                                 logits), [rows, cols] (cross-entropy only; rows need not
                                 sum to 1) */
} fastlsm_target_type;

typedef struct fastlsm_cross_entropy_options {
    size_t struct_size;     /* sizeof(fastlsm_cross_entropy_options) */
    int64_t ignore_index;   /* index targets equal to it are ignored; default -100 */
    double label_smoothing; /* in [0, 1]; default 0 */
    double z_loss;          /* >= 0, adds z_loss * lse**2 per counted row; default 0 */
    double softcap;         /* > 0: logits -> softcap * tanh(logits / softcap); 0 = off */
    int reduction;          /* a fastlsm_reduction; default FASTLSM_REDUCTION_MEAN */
    int64_t row_stride;     /* elements between the starts of consecutive rows of the logits,
                               probability targets and grad: 0 (default) = cols, packed; a
                               larger value for padded rows (they are packed into a scratch
                               buffer first: one extra copy) */
} fastlsm_cross_entropy_options;

FASTLSM_API fastlsm_cross_entropy_options fastlsm_cross_entropy_default_options(void);

/* fastlsm.cross_entropy_with_grad with every option. target: see fastlsm_target_type.
 * class_weight [cols], token_weight [rows] (finite, >= 0) or NULL (ones). grad_output: NULL
 * (1), else d out / d loss: [rows] with FASTLSM_REDUCTION_NONE, [1] otherwise. options: NULL
 * for the defaults. Outputs: loss as above, lse [rows] (log-sum-exp of the softcapped
 * logits) or NULL, grad [rows, cols] or NULL (may equal logits: in place). */
FASTLSM_API int fastlsm_cross_entropy_ex_f32(const float *logits, const void *target,
                                             int target_type, int64_t rows, int64_t cols,
                                             const float *class_weight,
                                             const float *token_weight,
                                             const float *grad_output,
                                             const fastlsm_cross_entropy_options *options,
                                             float *loss, float *lse, float *grad);
FASTLSM_API int fastlsm_cross_entropy_ex_f64(const double *logits, const void *target,
                                             int target_type, int64_t rows, int64_t cols,
                                             const double *class_weight,
                                             const double *token_weight,
                                             const double *grad_output,
                                             const fastlsm_cross_entropy_options *options,
                                             double *loss, double *lse, double *grad);

/* fastlsm.nll_loss over log-probabilities [rows, cols]: index targets only (INT64/INT32);
 * options: ignore_index and reduction are used, the others must be 0. grad: d loss /
 * d log_probs [rows, cols] or NULL. */
FASTLSM_API int fastlsm_nll_loss_f32(const float *log_probs, const void *target,
                                     int target_type, int64_t rows, int64_t cols,
                                     const float *class_weight, const float *token_weight,
                                     const float *grad_output,
                                     const fastlsm_cross_entropy_options *options, float *loss,
                                     float *grad);
FASTLSM_API int fastlsm_nll_loss_f64(const double *log_probs, const void *target,
                                     int target_type, int64_t rows, int64_t cols,
                                     const double *class_weight, const double *token_weight,
                                     const double *grad_output,
                                     const fastlsm_cross_entropy_options *options,
                                     double *loss, double *grad);

/* ------------------------------------------------------------------ sequence scoring
 * logits [batch, steps, vocab], tokens [batch, steps] in [0, vocab), mask [batch, steps]
 * (0 = padding, else counted) or NULL (all counted). token_logprobs [batch, steps] (0 where
 * masked) or NULL; seq_logprobs [batch]: the sums. Masked tokens are not range-checked; an
 * unmasked token out of range is FASTLSM_ERR_INVALID_TARGET. */

FASTLSM_API int fastlsm_sequence_logprobs_f32(const float *logits, const int64_t *tokens,
                                              const uint8_t *mask, int64_t batch, int64_t steps,
                                              int64_t vocab, float *token_logprobs,
                                              float *seq_logprobs);
FASTLSM_API int fastlsm_sequence_logprobs_f64(const double *logits, const int64_t *tokens,
                                              const uint8_t *mask, int64_t batch, int64_t steps,
                                              int64_t vocab, double *token_logprobs,
                                              double *seq_logprobs);
/* The same with int32_t token ids. */
FASTLSM_API int fastlsm_sequence_logprobs_i32_f32(const float *logits, const int32_t *tokens,
                                                  const uint8_t *mask, int64_t batch,
                                                  int64_t steps, int64_t vocab,
                                                  float *token_logprobs, float *seq_logprobs);
FASTLSM_API int fastlsm_sequence_logprobs_i32_f64(const double *logits, const int32_t *tokens,
                                                  const uint8_t *mask, int64_t batch,
                                                  int64_t steps, int64_t vocab,
                                                  double *token_logprobs, double *seq_logprobs);

/* ------------------------------------------------------------------ beam step
 * logits [batch, beams, vocab], beam_scores [batch, beams]; candidate score =
 * beam_scores[b, k] + log_softmax(logits[b, k])[v]. Writes the num_candidates best per batch
 * row (1 <= num_candidates <= beams * vocab; the Python default is 2 * beams), sorted by
 * score descending, ties toward the lower beam, then the lower token, into cand_scores,
 * cand_tokens and cand_beams, each [batch, num_candidates]. */

FASTLSM_API int fastlsm_beam_step_f32(const float *logits, const float *beam_scores,
                                      int64_t batch, int64_t beams, int64_t vocab,
                                      int64_t num_candidates, float *cand_scores,
                                      int64_t *cand_tokens, int64_t *cand_beams);
FASTLSM_API int fastlsm_beam_step_f64(const double *logits, const double *beam_scores,
                                      int64_t batch, int64_t beams, int64_t vocab,
                                      int64_t num_candidates, double *cand_scores,
                                      int64_t *cand_tokens, int64_t *cand_beams);

/* ------------------------------------------------------------------ beam-search decoder
 * Semantics of fastlsm.beam_search (= Hugging Face generate(num_beams=..., do_sample=False)).
 * Get a config with fastlsm_beam_search_default_config() (which sets struct_size), change the
 * fields you need. */

typedef enum fastlsm_early_stopping {
    FASTLSM_EARLY_STOPPING_HEURISTIC = 0, /* early_stopping=False */
    FASTLSM_EARLY_STOPPING_TRUE = 1,      /* early_stopping=True */
    FASTLSM_EARLY_STOPPING_NEVER = 2      /* early_stopping="never" */
} fastlsm_early_stopping;

typedef struct fastlsm_beam_search_config {
    size_t struct_size;             /* sizeof(fastlsm_beam_search_config) */
    int64_t num_beams;              /* K >= 1; default 4 */
    int64_t max_new_tokens;         /* >= 1; default 20 */
    const int64_t *eos_token_ids;   /* num_eos_token_ids ids (>= 0), or NULL; default NULL */
    int64_t num_eos_token_ids;      /* 0: hypotheses end at the maximum length; default 0 */
    int64_t pad_token_id;           /* >= 0, or -1 (Python's None: the first EOS id, else
                                       -1); default -1 */
    double length_penalty;          /* score = sum / generated_len ** length_penalty; 1.0 */
    int early_stopping;             /* a fastlsm_early_stopping; default HEURISTIC */
    int64_t num_return_sequences;   /* 1 <= n <= num_beams; default 1 */
    int64_t min_new_tokens;         /* EOS banned before this many new tokens; default 0 */
    int64_t no_repeat_ngram_size;   /* 0 = off; default 0 */
    double repetition_penalty;      /* > 0, 1.0 = off; default 1.0 */
    double patience;                /* CTranslate2: keep round(K * patience) hypotheses; 1.0 */
    int renormalize;                /* 1: apply bans before normalizing; default 0 */
} fastlsm_beam_search_config;

FASTLSM_API fastlsm_beam_search_config fastlsm_beam_search_default_config(void);

/* The model: fill logits [rows, vocab] (rows = batch * num_beams, row b * num_beams + k) for
 * the current sequences [rows, cur_len] (prompt included). parent_beams [rows] is NULL on the
 * first step, then the row of the previous step each sequence continues (to reorder a KV
 * cache). Return 0 on success; any other value aborts the search, which then returns
 * FASTLSM_ERR_INVALID_ARGUMENT (the step and the value are in fastlsm_last_error()), as do
 * logits rows holding NaN or +inf (mask tokens with -inf). The callback runs on the calling
 * thread and may call other fastlsm functions. */
typedef int (*fastlsm_step_fn_f32)(void *user_data, const int64_t *sequences, int64_t rows,
                                   int64_t cur_len, const int64_t *parent_beams, float *logits);
typedef int (*fastlsm_step_fn_f64)(void *user_data, const int64_t *sequences, int64_t rows,
                                   int64_t cur_len, const int64_t *parent_beams,
                                   double *logits);

/* input_ids [batch, prompt_len] (ids >= 0). Outputs, R = batch * num_return_sequences rows
 * (row b * num_return_sequences + r is the r-th best of prompt b), G = max_new_tokens,
 * W = prompt_len + G:
 *   sequences [R, W]        prompt + generated tokens, padded with the pad id;
 *   lengths [R]             generated tokens of each sequence (EOS included), or NULL;
 *   sequence_scores [R]     length-penalized scores (transformers' sequences_scores);
 *   token_logprobs [R, G]   per-token log-probs (0 after the end), or NULL;
 *   out_width               if not NULL: prompt_len + the longest generated length, the
 *                           width of the Python result (columns past it are padding).
 * Results equal fastlsm.beam_search's bit for bit for the same logits. Nothing is written
 * to the outputs unless the search completes. */
FASTLSM_API int fastlsm_beam_search_f32(const fastlsm_beam_search_config *config,
                                        const int64_t *input_ids, int64_t batch,
                                        int64_t prompt_len, int64_t vocab,
                                        fastlsm_step_fn_f32 step, void *user_data,
                                        int64_t *sequences, int64_t *lengths,
                                        float *sequence_scores, float *token_logprobs,
                                        int64_t *out_width);
FASTLSM_API int fastlsm_beam_search_f64(const fastlsm_beam_search_config *config,
                                        const int64_t *input_ids, int64_t batch,
                                        int64_t prompt_len, int64_t vocab,
                                        fastlsm_step_fn_f64 step, void *user_data,
                                        int64_t *sequences, int64_t *lengths,
                                        double *sequence_scores, double *token_logprobs,
                                        int64_t *out_width);
/* The same with int32_t prompt ids (sequences stay int64_t). */
FASTLSM_API int fastlsm_beam_search_i32_f32(const fastlsm_beam_search_config *config,
                                            const int32_t *input_ids, int64_t batch,
                                            int64_t prompt_len, int64_t vocab,
                                            fastlsm_step_fn_f32 step, void *user_data,
                                            int64_t *sequences, int64_t *lengths,
                                            float *sequence_scores, float *token_logprobs,
                                            int64_t *out_width);
FASTLSM_API int fastlsm_beam_search_i32_f64(const fastlsm_beam_search_config *config,
                                            const int32_t *input_ids, int64_t batch,
                                            int64_t prompt_len, int64_t vocab,
                                            fastlsm_step_fn_f64 step, void *user_data,
                                            int64_t *sequences, int64_t *lengths,
                                            double *sequence_scores, double *token_logprobs,
                                            int64_t *out_width);

/* ------------------------------------------------------------------ 16-bit data
 * Every entry point above has _bf16 and _f16 variants taking 16-bit logits as
 * `const uint16_t *` (the beam-search decoder: a step callback filling `uint16_t *` logits),
 * each element the bits of one value:
 *   _f16:  IEEE 754 binary16 (sign 1, exponent 5, fraction 10 bits; subnormals, +-inf,
 *          NaN, largest finite 65504), C23 _Float16 / __fp16 / numpy.float16 bits;
 *   _bf16: bfloat16, the top 16 bits of an IEEE binary32 float (sign 1, exponent 8,
 *          fraction 7 bits): (uint16_t)(float_bits >> 16) truncates, the library rounds
 *          to nearest even (ml_dtypes.bfloat16 / torch.bfloat16 / __bf16 bits).
 * The math is float32 (each element widened exactly). Outputs as in the Python API:
 * log_softmax / softmax and the cross-entropy / NLL gradient are 16-bit of the input's kind
 * (each value rounded once, to nearest, ties to even; grad may equal logits: in place);
 * logsumexp, losses, lse, sequence and beam scores are float, and so are the other float
 * arguments (class_weight, token_weight, grad_output, label_smoothing, beam_scores) and
 * probability targets (FASTLSM_TARGET_PROBS: float [rows, cols]). */

FASTLSM_API int fastlsm_log_softmax_bf16(const uint16_t *x, uint16_t *out, int64_t rows,
                                         int64_t cols);
FASTLSM_API int fastlsm_log_softmax_f16(const uint16_t *x, uint16_t *out, int64_t rows,
                                        int64_t cols);
FASTLSM_API int fastlsm_softmax_bf16(const uint16_t *x, uint16_t *out, int64_t rows,
                                     int64_t cols);
FASTLSM_API int fastlsm_softmax_f16(const uint16_t *x, uint16_t *out, int64_t rows,
                                    int64_t cols);
FASTLSM_API int fastlsm_logsumexp_bf16(const uint16_t *x, float *out, int64_t rows,
                                       int64_t cols);
FASTLSM_API int fastlsm_logsumexp_f16(const uint16_t *x, float *out, int64_t rows,
                                      int64_t cols);
FASTLSM_API int fastlsm_cross_entropy_bf16(const uint16_t *logits, const int64_t *target,
                                           int64_t rows, int64_t cols,
                                           const float *class_weight, int64_t ignore_index,
                                           float label_smoothing, int reduction, float *loss,
                                           uint16_t *grad);
FASTLSM_API int fastlsm_cross_entropy_f16(const uint16_t *logits, const int64_t *target,
                                          int64_t rows, int64_t cols, const float *class_weight,
                                          int64_t ignore_index, float label_smoothing,
                                          int reduction, float *loss, uint16_t *grad);
FASTLSM_API int fastlsm_cross_entropy_ex_bf16(const uint16_t *logits, const void *target,
                                              int target_type, int64_t rows, int64_t cols,
                                              const float *class_weight,
                                              const float *token_weight,
                                              const float *grad_output,
                                              const fastlsm_cross_entropy_options *options,
                                              float *loss, float *lse, uint16_t *grad);
FASTLSM_API int fastlsm_cross_entropy_ex_f16(const uint16_t *logits, const void *target,
                                             int target_type, int64_t rows, int64_t cols,
                                             const float *class_weight,
                                             const float *token_weight,
                                             const float *grad_output,
                                             const fastlsm_cross_entropy_options *options,
                                             float *loss, float *lse, uint16_t *grad);
FASTLSM_API int fastlsm_nll_loss_bf16(const uint16_t *log_probs, const void *target,
                                      int target_type, int64_t rows, int64_t cols,
                                      const float *class_weight, const float *token_weight,
                                      const float *grad_output,
                                      const fastlsm_cross_entropy_options *options, float *loss,
                                      uint16_t *grad);
FASTLSM_API int fastlsm_nll_loss_f16(const uint16_t *log_probs, const void *target,
                                     int target_type, int64_t rows, int64_t cols,
                                     const float *class_weight, const float *token_weight,
                                     const float *grad_output,
                                     const fastlsm_cross_entropy_options *options, float *loss,
                                     uint16_t *grad);
FASTLSM_API int fastlsm_sequence_logprobs_bf16(const uint16_t *logits, const int64_t *tokens,
                                               const uint8_t *mask, int64_t batch,
                                               int64_t steps, int64_t vocab,
                                               float *token_logprobs, float *seq_logprobs);
FASTLSM_API int fastlsm_sequence_logprobs_f16(const uint16_t *logits, const int64_t *tokens,
                                              const uint8_t *mask, int64_t batch, int64_t steps,
                                              int64_t vocab, float *token_logprobs,
                                              float *seq_logprobs);
FASTLSM_API int fastlsm_sequence_logprobs_i32_bf16(const uint16_t *logits,
                                                   const int32_t *tokens, const uint8_t *mask,
                                                   int64_t batch, int64_t steps, int64_t vocab,
                                                   float *token_logprobs, float *seq_logprobs);
FASTLSM_API int fastlsm_sequence_logprobs_i32_f16(const uint16_t *logits, const int32_t *tokens,
                                                  const uint8_t *mask, int64_t batch,
                                                  int64_t steps, int64_t vocab,
                                                  float *token_logprobs, float *seq_logprobs);
FASTLSM_API int fastlsm_beam_step_bf16(const uint16_t *logits, const float *beam_scores,
                                       int64_t batch, int64_t beams, int64_t vocab,
                                       int64_t num_candidates, float *cand_scores,
                                       int64_t *cand_tokens, int64_t *cand_beams);
FASTLSM_API int fastlsm_beam_step_f16(const uint16_t *logits, const float *beam_scores,
                                      int64_t batch, int64_t beams, int64_t vocab,
                                      int64_t num_candidates, float *cand_scores,
                                      int64_t *cand_tokens, int64_t *cand_beams);

/* The beam-search decoder with 16-bit logits: the callback fills logits [rows, vocab] with the
 * bits of bfloat16 / float16 values (searched as their exact float32 values, bit for bit as
 * fastlsm.beam_search with a step function returning ml_dtypes.bfloat16 / numpy.float16
 * logits); the scores are float. */
typedef int (*fastlsm_step_fn_bf16)(void *user_data, const int64_t *sequences, int64_t rows,
                                    int64_t cur_len, const int64_t *parent_beams,
                                    uint16_t *logits);
typedef int (*fastlsm_step_fn_f16)(void *user_data, const int64_t *sequences, int64_t rows,
                                   int64_t cur_len, const int64_t *parent_beams,
                                   uint16_t *logits);
FASTLSM_API int fastlsm_beam_search_bf16(const fastlsm_beam_search_config *config,
                                         const int64_t *input_ids, int64_t batch,
                                         int64_t prompt_len, int64_t vocab,
                                         fastlsm_step_fn_bf16 step, void *user_data,
                                         int64_t *sequences, int64_t *lengths,
                                         float *sequence_scores, float *token_logprobs,
                                         int64_t *out_width);
FASTLSM_API int fastlsm_beam_search_f16(const fastlsm_beam_search_config *config,
                                        const int64_t *input_ids, int64_t batch,
                                        int64_t prompt_len, int64_t vocab,
                                        fastlsm_step_fn_f16 step, void *user_data,
                                        int64_t *sequences, int64_t *lengths,
                                        float *sequence_scores, float *token_logprobs,
                                        int64_t *out_width);
FASTLSM_API int fastlsm_beam_search_i32_bf16(const fastlsm_beam_search_config *config,
                                             const int32_t *input_ids, int64_t batch,
                                             int64_t prompt_len, int64_t vocab,
                                             fastlsm_step_fn_bf16 step, void *user_data,
                                             int64_t *sequences, int64_t *lengths,
                                             float *sequence_scores, float *token_logprobs,
                                             int64_t *out_width);
FASTLSM_API int fastlsm_beam_search_i32_f16(const fastlsm_beam_search_config *config,
                                            const int32_t *input_ids, int64_t batch,
                                            int64_t prompt_len, int64_t vocab,
                                            fastlsm_step_fn_f16 step, void *user_data,
                                            int64_t *sequences, int64_t *lengths,
                                            float *sequence_scores, float *token_logprobs,
                                            int64_t *out_width);

/* ------------------------------------------------------------------ sampling
 * fastlsm.sample and fastlsm.verify_draft (see their docstrings and the README's processor
 * table): token bitmask, logit bias, repetition / frequency / presence penalties over the
 * history, temperature, top-k, top-p, min-p, typical-p, in Hugging Face generate's order,
 * then one Philox4x32-10 draw per row. Results equal the Python API's bit for bit for the
 * same parameters, seed and step. Get the parameters from fastlsm_sample_default_params()
 * (which sets struct_size) and change the fields you need. */

typedef enum fastlsm_logprobs_mode {
    FASTLSM_LOGPROBS_RAW = 0,      /* logprobs under log_softmax(logits) (the model's) */
    FASTLSM_LOGPROBS_PROCESSED = 1 /* under the distribution sampled from (-inf: filtered) */
} fastlsm_logprobs_mode;

typedef struct fastlsm_sample_params {
    size_t struct_size;        /* sizeof(fastlsm_sample_params) */
    /* One value for every row (each overridden by its per-row array below, if not NULL). */
    double temperature;        /* finite, >= 0; 0 = greedy (argmax, lowest id); default 1 */
    int64_t top_k;             /* >= 0, 0 = off; default 0 */
    double top_p;              /* in (0, 1], 1 = off; default 1 */
    double min_p;              /* in [0, 1], 0 = off; default 0 */
    double typical_p;          /* in (0, 1], 1 = off; default 1 */
    double repetition_penalty; /* finite, > 0, 1 = off; default 1 */
    double frequency_penalty;  /* finite, 0 = off; default 0 */
    double presence_penalty;   /* finite, 0 = off; default 0 */
    uint64_t seed;             /* Philox key; with one seed the counter holds the row index */
    uint64_t step;             /* Philox counter (the decoding position); default 0 */
    int64_t num_logprobs;      /* top alternatives per row, in [0, vocab]; default 0 */
    int logprobs_mode;         /* a fastlsm_logprobs_mode; default FASTLSM_LOGPROBS_RAW */
    /* Per-row values [rows], or NULL (the scalar above for every row). */
    const double *temperatures;
    const int64_t *top_ks;
    const double *top_ps;
    const double *min_ps;
    const double *typical_ps;
    const double *repetition_penalties;
    const double *frequency_penalties;
    const double *presence_penalties;
    const uint64_t *seeds;     /* per-request seeds: the key is (seeds[row], step[row]), the
                                  row index is not used, so a request samples the same
                                  token wherever it sits in the batch */
    const uint64_t *steps;
    /* Optional inputs (NULL: none). */
    const double *logit_bias;     /* [logit_bias_rows, vocab], finite or -inf: added to the
                                     logits */
    int64_t logit_bias_rows;      /* 1 (one bias for every row, the default) or rows */
    const int32_t *token_bitmask; /* [rows, ceil(vocab / 32)] (verify_draft: [rows, k + 1,
                                     ceil(vocab / 32)]): bit j % 32 of word j / 32 set = token
                                     j allowed (xgrammar / llguidance layout) */
    /* (Structs from older headers end before this field: it is then 0.) */
    int64_t row_stride;           /* elements between the starts of consecutive logits rows
                                     (of vocab elements; verify_draft: of target_logits and
                                     draft_logits alike): 0 (default) = vocab, packed; larger
                                     for padded rows (packed into a scratch buffer first) */
} fastlsm_sample_params;

FASTLSM_API fastlsm_sample_params fastlsm_sample_default_params(void);

/* One token per row of logits [rows, vocab] (vocab >= 1). history [rows, history_len]: the
 * previous tokens of each row (-1 = padding; ids in [0, vocab)), the penalties' counts, or
 * NULL with history_len 0. logprob_token_ids [token_ids_rows (1 or rows), num_token_ids]:
 * tokens whose logprobs to report, or NULL with num_token_ids 0. Outputs: tokens [rows];
 * logprobs [rows] (the chosen tokens') or NULL; top_tokens / top_logprobs
 * [rows, num_logprobs], best first, ties to the lower id (NULL when num_logprobs is 0);
 * token_id_logprobs [rows, num_token_ids]. A row with no allowed token or with NaN / +inf
 * logits is FASTLSM_ERR_INVALID_ARGUMENT naming the row; bad ids FASTLSM_ERR_INVALID_TARGET. */
FASTLSM_API int fastlsm_sample_f32(const float *logits, int64_t rows, int64_t vocab,
                                   const fastlsm_sample_params *params, const int64_t *history,
                                   int64_t history_len, const int64_t *logprob_token_ids,
                                   int64_t token_ids_rows, int64_t num_token_ids,
                                   int64_t *tokens, float *logprobs, int64_t *top_tokens,
                                   float *top_logprobs, float *token_id_logprobs);
FASTLSM_API int fastlsm_sample_f64(const double *logits, int64_t rows, int64_t vocab,
                                   const fastlsm_sample_params *params, const int64_t *history,
                                   int64_t history_len, const int64_t *logprob_token_ids,
                                   int64_t token_ids_rows, int64_t num_token_ids,
                                   int64_t *tokens, double *logprobs, int64_t *top_tokens,
                                   double *top_logprobs, double *token_id_logprobs);
/* The same with int32_t ids (llama.cpp's llama_token) for history and the outputs. */
FASTLSM_API int fastlsm_sample_i32_f32(const float *logits, int64_t rows, int64_t vocab,
                                       const fastlsm_sample_params *params,
                                       const int32_t *history, int64_t history_len,
                                       const int32_t *logprob_token_ids, int64_t token_ids_rows,
                                       int64_t num_token_ids, int32_t *tokens, float *logprobs,
                                       int32_t *top_tokens, float *top_logprobs,
                                       float *token_id_logprobs);
FASTLSM_API int fastlsm_sample_i32_f64(const double *logits, int64_t rows, int64_t vocab,
                                       const fastlsm_sample_params *params,
                                       const int32_t *history, int64_t history_len,
                                       const int32_t *logprob_token_ids, int64_t token_ids_rows,
                                       int64_t num_token_ids, int32_t *tokens, double *logprobs,
                                       int32_t *top_tokens, double *top_logprobs,
                                       double *token_id_logprobs);

/* Speculative rejection sampling (Leviathan et al. 2023, Chen et al. 2023) of k draft
 * tokens [rows, k] against target_logits [rows, k + 1, vocab]; draft_logits [rows, k, vocab]
 * or NULL (a deterministic draft). params as for fastlsm_sample_* (num_logprobs and
 * logprobs_mode unused); the penalties at position i count history and draft_tokens[:, :i].
 * Outputs: num_accepted [rows] (0..k), tokens [rows, k + 1]: the accepted draft tokens, then
 * one corrected or bonus token, then -1. */
FASTLSM_API int fastlsm_verify_draft_f32(const float *target_logits, const float *draft_logits,
                                         const int64_t *draft_tokens, int64_t rows, int64_t k,
                                         int64_t vocab, const fastlsm_sample_params *params,
                                         const int64_t *history, int64_t history_len,
                                         int64_t *num_accepted, int64_t *tokens);
FASTLSM_API int fastlsm_verify_draft_f64(const double *target_logits,
                                         const double *draft_logits,
                                         const int64_t *draft_tokens, int64_t rows, int64_t k,
                                         int64_t vocab, const fastlsm_sample_params *params,
                                         const int64_t *history, int64_t history_len,
                                         int64_t *num_accepted, int64_t *tokens);
/* The same with int32_t ids for draft_tokens, history and tokens. */
FASTLSM_API int fastlsm_verify_draft_i32_f32(const float *target_logits,
                                             const float *draft_logits,
                                             const int32_t *draft_tokens, int64_t rows,
                                             int64_t k, int64_t vocab,
                                             const fastlsm_sample_params *params,
                                             const int32_t *history, int64_t history_len,
                                             int64_t *num_accepted, int32_t *tokens);
FASTLSM_API int fastlsm_verify_draft_i32_f64(const double *target_logits,
                                             const double *draft_logits,
                                             const int32_t *draft_tokens, int64_t rows,
                                             int64_t k, int64_t vocab,
                                             const fastlsm_sample_params *params,
                                             const int32_t *history, int64_t history_len,
                                             int64_t *num_accepted, int32_t *tokens);

/* The same over 16-bit logits (see "16-bit data"): logprobs are float. */
FASTLSM_API int fastlsm_sample_bf16(const uint16_t *logits, int64_t rows, int64_t vocab,
                                    const fastlsm_sample_params *params,
                                    const int64_t *history, int64_t history_len,
                                    const int64_t *logprob_token_ids, int64_t token_ids_rows,
                                    int64_t num_token_ids, int64_t *tokens, float *logprobs,
                                    int64_t *top_tokens, float *top_logprobs,
                                    float *token_id_logprobs);
FASTLSM_API int fastlsm_sample_f16(const uint16_t *logits, int64_t rows, int64_t vocab,
                                   const fastlsm_sample_params *params, const int64_t *history,
                                   int64_t history_len, const int64_t *logprob_token_ids,
                                   int64_t token_ids_rows, int64_t num_token_ids,
                                   int64_t *tokens, float *logprobs, int64_t *top_tokens,
                                   float *top_logprobs, float *token_id_logprobs);
FASTLSM_API int fastlsm_sample_i32_bf16(const uint16_t *logits, int64_t rows, int64_t vocab,
                                        const fastlsm_sample_params *params,
                                        const int32_t *history, int64_t history_len,
                                        const int32_t *logprob_token_ids,
                                        int64_t token_ids_rows, int64_t num_token_ids,
                                        int32_t *tokens, float *logprobs, int32_t *top_tokens,
                                        float *top_logprobs, float *token_id_logprobs);
FASTLSM_API int fastlsm_sample_i32_f16(const uint16_t *logits, int64_t rows, int64_t vocab,
                                       const fastlsm_sample_params *params,
                                       const int32_t *history, int64_t history_len,
                                       const int32_t *logprob_token_ids, int64_t token_ids_rows,
                                       int64_t num_token_ids, int32_t *tokens, float *logprobs,
                                       int32_t *top_tokens, float *top_logprobs,
                                       float *token_id_logprobs);
FASTLSM_API int fastlsm_verify_draft_bf16(const uint16_t *target_logits,
                                          const uint16_t *draft_logits,
                                          const int64_t *draft_tokens, int64_t rows, int64_t k,
                                          int64_t vocab, const fastlsm_sample_params *params,
                                          const int64_t *history, int64_t history_len,
                                          int64_t *num_accepted, int64_t *tokens);
FASTLSM_API int fastlsm_verify_draft_f16(const uint16_t *target_logits,
                                         const uint16_t *draft_logits,
                                         const int64_t *draft_tokens, int64_t rows, int64_t k,
                                         int64_t vocab, const fastlsm_sample_params *params,
                                         const int64_t *history, int64_t history_len,
                                         int64_t *num_accepted, int64_t *tokens);
FASTLSM_API int fastlsm_verify_draft_i32_bf16(const uint16_t *target_logits,
                                              const uint16_t *draft_logits,
                                              const int32_t *draft_tokens, int64_t rows,
                                              int64_t k, int64_t vocab,
                                              const fastlsm_sample_params *params,
                                              const int32_t *history, int64_t history_len,
                                              int64_t *num_accepted, int32_t *tokens);
FASTLSM_API int fastlsm_verify_draft_i32_f16(const uint16_t *target_logits,
                                             const uint16_t *draft_logits,
                                             const int32_t *draft_tokens, int64_t rows,
                                             int64_t k, int64_t vocab,
                                             const fastlsm_sample_params *params,
                                             const int32_t *history, int64_t history_len,
                                             int64_t *num_accepted, int32_t *tokens);

/* ------------------------------------------------------------------ padded rows
 * Every entry point over rows of V elements (V = cols or vocab) reads them row_stride
 * elements apart (>= V; the elements in between are never read, nor written in outputs):
 * - cross-entropy and NLL: fastlsm_cross_entropy_options.row_stride (logits, probability
 *   targets and grad); sampling and draft verification: fastlsm_sample_params.row_stride
 *   (0 = packed, the default);
 * - the others: the fastlsm_<name>_strided_<dtype> variants below, each the entry point
 *   without _strided plus a last argument row_stride (the published prototypes never
 *   change: ABI policy). For log_softmax / softmax, x and out have the same stride (out may
 *   equal x); logsumexp's out and the other outputs stay packed. sequence_logprobs: rows
 *   are the [batch, steps] positions; beam_step: the [batch, beams] beams.
 * Padded rows are packed into a scratch buffer first (one copy), so results are those of
 * the packed call, bit for bit. */

/* BEGIN generated by `python -m fastlsm.capi header --update`: do not edit */
FASTLSM_API int fastlsm_log_softmax_strided_f32(const float *x, float *out, int64_t rows,
                                                int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_log_softmax_strided_f64(const double *x, double *out, int64_t rows,
                                                int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_log_softmax_strided_bf16(const uint16_t *x, uint16_t *out, int64_t rows,
                                                 int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_log_softmax_strided_f16(const uint16_t *x, uint16_t *out, int64_t rows,
                                                int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_softmax_strided_f32(const float *x, float *out, int64_t rows, int64_t cols,
                                            int64_t row_stride);
FASTLSM_API int fastlsm_softmax_strided_f64(const double *x, double *out, int64_t rows,
                                            int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_softmax_strided_bf16(const uint16_t *x, uint16_t *out, int64_t rows,
                                             int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_softmax_strided_f16(const uint16_t *x, uint16_t *out, int64_t rows,
                                            int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_logsumexp_strided_f32(const float *x, float *out, int64_t rows,
                                              int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_logsumexp_strided_f64(const double *x, double *out, int64_t rows,
                                              int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_logsumexp_strided_bf16(const uint16_t *x, float *out, int64_t rows,
                                               int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_logsumexp_strided_f16(const uint16_t *x, float *out, int64_t rows,
                                              int64_t cols, int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_strided_f32(const float *logits, const int64_t *tokens,
                                                      const uint8_t *mask, int64_t batch,
                                                      int64_t steps, int64_t vocab,
                                                      float *token_logprobs, float *seq_logprobs,
                                                      int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_strided_f64(const double *logits, const int64_t *tokens,
                                                      const uint8_t *mask, int64_t batch,
                                                      int64_t steps, int64_t vocab,
                                                      double *token_logprobs, double *seq_logprobs,
                                                      int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_strided_bf16(const uint16_t *logits,
                                                       const int64_t *tokens, const uint8_t *mask,
                                                       int64_t batch, int64_t steps, int64_t vocab,
                                                       float *token_logprobs, float *seq_logprobs,
                                                       int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_strided_f16(const uint16_t *logits, const int64_t *tokens,
                                                      const uint8_t *mask, int64_t batch,
                                                      int64_t steps, int64_t vocab,
                                                      float *token_logprobs, float *seq_logprobs,
                                                      int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_i32_strided_f32(const float *logits,
                                                          const int32_t *tokens,
                                                          const uint8_t *mask, int64_t batch,
                                                          int64_t steps, int64_t vocab,
                                                          float *token_logprobs,
                                                          float *seq_logprobs, int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_i32_strided_f64(const double *logits,
                                                          const int32_t *tokens,
                                                          const uint8_t *mask, int64_t batch,
                                                          int64_t steps, int64_t vocab,
                                                          double *token_logprobs,
                                                          double *seq_logprobs, int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_i32_strided_bf16(const uint16_t *logits,
                                                           const int32_t *tokens,
                                                           const uint8_t *mask, int64_t batch,
                                                           int64_t steps, int64_t vocab,
                                                           float *token_logprobs,
                                                           float *seq_logprobs, int64_t row_stride);
FASTLSM_API int fastlsm_sequence_logprobs_i32_strided_f16(const uint16_t *logits,
                                                          const int32_t *tokens,
                                                          const uint8_t *mask, int64_t batch,
                                                          int64_t steps, int64_t vocab,
                                                          float *token_logprobs,
                                                          float *seq_logprobs, int64_t row_stride);
FASTLSM_API int fastlsm_beam_step_strided_f32(const float *logits, const float *beam_scores,
                                              int64_t batch, int64_t beams, int64_t vocab,
                                              int64_t num_candidates, float *cand_scores,
                                              int64_t *cand_tokens, int64_t *cand_beams,
                                              int64_t row_stride);
FASTLSM_API int fastlsm_beam_step_strided_f64(const double *logits, const double *beam_scores,
                                              int64_t batch, int64_t beams, int64_t vocab,
                                              int64_t num_candidates, double *cand_scores,
                                              int64_t *cand_tokens, int64_t *cand_beams,
                                              int64_t row_stride);
FASTLSM_API int fastlsm_beam_step_strided_bf16(const uint16_t *logits, const float *beam_scores,
                                               int64_t batch, int64_t beams, int64_t vocab,
                                               int64_t num_candidates, float *cand_scores,
                                               int64_t *cand_tokens, int64_t *cand_beams,
                                               int64_t row_stride);
FASTLSM_API int fastlsm_beam_step_strided_f16(const uint16_t *logits, const float *beam_scores,
                                              int64_t batch, int64_t beams, int64_t vocab,
                                              int64_t num_candidates, float *cand_scores,
                                              int64_t *cand_tokens, int64_t *cand_beams,
                                              int64_t row_stride);
/* END generated */

#ifdef __cplusplus
}
#endif

#endif /* FASTLSM_H */
