/*
 * The exported ABI of fastlsm.h (the entry wrappers). Pasted after _runtime.c by the build.
 *
 * Each wrapper validates its arguments without touching Python, starts the runtime, picks
 * the serial or the parallel kernel (pick) and translates the kernel's result. Wrappers for
 * every dtype share one implementation taking `dt` (a generated DT_* value) and void
 * pointers; the generated KID_<name>(dt) and KCALL_<name>(dt, fn, ...) pick the entry and
 * its function-pointer type, FASTLSM_DTYPES_<name>(X) instantiates the public wrappers.
 */

/* Bytes of one element of dtype `dt`; float results (loss, lse, scores) are double only for
 * DT_F64 (float for the others, 16-bit included). */
static size_t dt_size(int dt) { return dt == DT_F64 ? 8 : dt == DT_F32 ? 4 : 2; }

/* The runtime, fault injection and the kernel `id` for `work` elements in `rows` rows. */
static int begin(const char *fname, int id, int64_t work, int64_t rows, void **fn)
{
    int st = ensure_started();
    if (st) return st;
    if (g_fault_internal) return fault(fname);
    load_entry(id);
    *fn = pick(id, work, rows);
    return *fn ? FASTLSM_OK : missing(id);
}

static int unexpected(const char *fname, int64_t r)
{
    return fail(FASTLSM_ERR_INTERNAL, "%s: the kernel returned the unexpected status %lld",
                fname, (long long)r);
}

static int out_of_memory(const char *fname)
{
    return fail(FASTLSM_ERR_RUNTIME, "%s: out of memory", fname);
}

/* `n` values of the logits' type as float64 in *out: the pointer itself for double data,
 * else a copy in *owned (freed by the caller, also on failure). `checked`: the values must
 * be finite and >= 0 (weights), with Python's messages. NULL stays NULL. */
static int as_f64(const char *fname, const char *what, const void *src, int64_t n, int f64,
                  int checked, const double **out, double **owned)
{
    *out = NULL;
    if (!src) return FASTLSM_OK;
    const double *d = src;
    if (!f64) {
        double *c = malloc((size_t)(n > 0 ? n : 1) * sizeof *c);
        if (!c) return out_of_memory(fname);
        for (int64_t i = 0; i < n; i++) c[i] = ((const float *)src)[i];
        *owned = c;
        d = c;
    }
    for (int64_t i = 0; checked && i < n; i++) {
        if (!isfinite(d[i]))
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: %s must be finite; found %g at "
                        "position %lld", fname, what, d[i], (long long)i);
        if (d[i] < 0)
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: %s must be non-negative; found %g "
                        "at position %lld", fname, what, d[i], (long long)i);
    }
    *out = d;
    return FASTLSM_OK;
}

/* `n` ids as int64 in *out: the pointer itself, or (int32 ids) a widened copy in *owned. */
static int as_i64(const char *fname, const void *ids, int is32, int64_t n, const int64_t **out,
                  int64_t **owned)
{
    *out = ids;
    if (!is32 || !ids) return FASTLSM_OK;
    int64_t *c = malloc((size_t)(n > 0 ? n : 1) * sizeof *c);
    if (!c) return out_of_memory(fname);
    for (int64_t i = 0; i < n; i++) c[i] = ((const int32_t *)ids)[i];
    *owned = c;
    *out = c;
    return FASTLSM_OK;
}

static int64_t id_at(const void *ids, int is32, int64_t i)
{
    return is32 ? ((const int32_t *)ids)[i] : ((const int64_t *)ids)[i];
}

static int bad_sizes(const char *fname, int64_t rows, int64_t cols)
{
    return fail(FASTLSM_ERR_INVALID_SIZE, "%s: rows=%lld, cols=%lld: sizes must be >= 0 and "
                "rows*cols must fit in memory", fname, (long long)rows, (long long)cols);
}

/* ------------------------------------------------------------------ row strides
 * Every entry over rows of V elements takes a row stride (elements between the starts of
 * consecutive rows, >= V: padded rows); the kernels read packed rows, so padded ones are
 * packed into a scratch buffer first (one copy; the padding is never read) and elementwise
 * results copied back into the caller's padded rows (whose padding is never written). */

/* The stride of a call's rows: `given` (0 = packed as well when `zero_ok`), >= cols, every
 * row addressable with elements of `elem` bytes; into *stride. */
static int row_stride(const char *fname, const char *what, int64_t given, int zero_ok,
                      int64_t rows, int64_t cols, size_t elem, int64_t *stride)
{
    const int64_t s = given == 0 && zero_ok ? cols : given;
    int64_t span;
    if (s < cols || (rows > 0 && (checked_size(rows - 1, s, elem, &span) != 0 ||
                                  span > INT64_MAX - cols ||
                                  checked_size(span + cols, 1, elem, &span) != 0)))
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: %s=%lld: it must be %s>= the row length "
                    "%lld, and rows * row_stride must fit in memory", fname, what,
                    (long long)given, zero_ok ? "0 (packed) or " : "", (long long)cols);
    *stride = s;
    return FASTLSM_OK;
}

/* Rows of `cols` elements `stride` apart, to and from a packed buffer. */
static void copy_rows(void *dst, int64_t dst_stride, const void *src, int64_t src_stride,
                      int64_t rows, int64_t cols, size_t elem)
{
    for (int64_t r = 0; r < rows; r++)
        memmove((char *)dst + (size_t)(r * dst_stride) * elem,
                (const char *)src + (size_t)(r * src_stride) * elem, (size_t)cols * elem);
}

/* *x as packed rows: itself when stride == cols (or NULL), else a packed copy in *buf
 * (malloc'd, for the caller to free; NULL otherwise). */
static int pack_rows(const char *fname, const void **x, void **buf, int64_t rows, int64_t cols,
                     int64_t stride, size_t elem)
{
    *buf = NULL;
    if (stride == cols || !*x) return FASTLSM_OK;
    *buf = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * elem);
    if (!*buf) return out_of_memory(fname);
    copy_rows(*buf, cols, *x, stride, rows, cols, elem);
    *x = *buf;
    return FASTLSM_OK;
}

/* ------------------------------------------------------------------ normalizers */

/* Inlined into each row entry: a one-row call is ~0.1 us, of which the wrapper's calls were
 * a measurable part (callgrind, fastlsm_log_softmax_f32 on 1x8, AMD Zen 4: 1045 instructions
 * per call with these out of line, 983 inlined, 988 for the round-4 wrapper). */
#define ROW_INLINE static inline __attribute__((always_inline))

ROW_INLINE int rows_check(const char *fname, const void *x, const void *out, int64_t rows,
                      int64_t cols, int64_t given, size_t elem, int64_t *n, int64_t *stride)
{
    CLEAR_ERROR();
    if (!x) return fail(FASTLSM_ERR_NULL_POINTER, "%s: x is NULL", fname);
    if (!out) return fail(FASTLSM_ERR_NULL_POINTER, "%s: out is NULL", fname);
    if (checked_size(rows, cols, elem, n) != 0) return bad_sizes(fname, rows, cols);
    *stride = cols; /* packed: every row addressable is what checked_size just showed */
    return given == cols ? FASTLSM_OK
                         : row_stride(fname, "row_stride", given, 0, rows, cols, elem, stride);
}

/* The buffers a row entry's kernel works on for rows `stride` apart: *in (x or its packed
 * copy, own[0]) and, for an elementwise result, *o (out, a packed scratch own[1], or own[0]
 * itself in place). */
static int rows_pack(const char *fname, const void **in, void **o, void *own[2], int64_t rows,
                     int64_t cols, int64_t stride, size_t elem, int elementwise)
{
    const int inplace = *o == (const void *)*in;
    int st = pack_rows(fname, in, &own[0], rows, cols, stride, elem);
    if (st || stride == cols || !elementwise) return st;
    own[1] = inplace ? NULL : malloc((size_t)(rows * cols) * elem);
    if (!inplace && !own[1]) return out_of_memory(fname);
    *o = inplace ? own[0] : own[1];
    return FASTLSM_OK;
}

/* fastlsm_<name>_<S> (packed rows) and fastlsm_<name>_strided_<S>. Packed rows (the
 * per-token call) go straight to the kernel: no scratch buffers, nothing to free. */
#define ROWS_ENTRY(name, S, X, OUT, ELEMENTWISE)                                              \
    ROW_INLINE int name##_##S##_rows(const char *fname, X x, OUT out, int64_t rows,          \
                                     int64_t cols, int64_t given)                             \
    {                                                                                         \
        int64_t n, stride, r;                                                                 \
        void *fn;                                                                             \
        int st = rows_check(fname, x, out, rows, cols, given, sizeof *x, &n, &stride);        \
        if (!st) st = begin(fname, K_##name##_##S, n, rows, &fn);                             \
        if (st || rows == 0) return st;                                                       \
        if (stride == cols) {                                                                 \
            r = ((name##_##S##_fn)fn)(x, out, rows, cols);                                    \
            return r == -1 ? FASTLSM_OK : unexpected(fname, r);                               \
        }                                                                                     \
        void *own[2] = {NULL, NULL}, *o = out;                                                \
        const void *in = x;                                                                   \
        r = -1;                                                                               \
        st = rows_pack(fname, &in, &o, own, rows, cols, stride, sizeof *x, ELEMENTWISE);      \
        if (!st) r = ((name##_##S##_fn)fn)(in, o, rows, cols);                                \
        if (!st && r != -1) st = unexpected(fname, r);                                        \
        if (!st && ELEMENTWISE)                                                               \
            copy_rows(out, stride, o, cols, rows, cols, sizeof *x);                           \
        free(own[0]), free(own[1]);                                                           \
        return st;                                                                            \
    }                                                                                         \
    FASTLSM_API int fastlsm_##name##_##S(X x, OUT out, int64_t rows, int64_t cols)            \
    {                                                                                         \
        return name##_##S##_rows("fastlsm_" #name "_" #S, x, out, rows, cols, cols);          \
    }                                                                                         \
    FASTLSM_API int fastlsm_##name##_strided_##S(X x, OUT out, int64_t rows, int64_t cols,    \
                                                 int64_t row_stride)                          \
    {                                                                                         \
        return name##_##S##_rows("fastlsm_" #name "_strided_" #S, x, out, rows, cols,         \
                                 row_stride);                                                 \
    }

FASTLSM_ROWS_WRAPPERS /* generated: the ENTRIES rows with wrap="rows" */

/* ------------------------------------------------------------------ cross-entropy, nll */

/* A zeroed ABI struct `v` of type `t` with its struct_size set: how every default starts. */
#define NEW_STRUCT(t, v) \
    t v;                 \
    memset(&v, 0, sizeof v); \
    v.struct_size = sizeof v

FASTLSM_API fastlsm_cross_entropy_options fastlsm_cross_entropy_default_options(void)
{
    NEW_STRUCT(fastlsm_cross_entropy_options, o);
    o.ignore_index = -100;
    o.reduction = FASTLSM_REDUCTION_MEAN;
    return o;
}

static int loss_options(const char *fname, const fastlsm_cross_entropy_options *o, int nll)
{
    if (o->reduction != FASTLSM_REDUCTION_NONE && o->reduction != FASTLSM_REDUCTION_MEAN &&
        o->reduction != FASTLSM_REDUCTION_SUM)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: reduction=%d is not a fastlsm_reduction "
                    "(0 none, 1 mean, 2 sum)", fname, o->reduction);
    if (nll && (o->label_smoothing != 0 || o->z_loss != 0 || o->softcap != 0))
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: nll_loss has no label_smoothing, z_loss "
                    "or softcap: those options must be 0", fname);
    if (!(o->label_smoothing >= 0 && o->label_smoothing <= 1))
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: label_smoothing must be between 0 and "
                    "1, got %g", fname, o->label_smoothing);
    if (!(o->z_loss >= 0 && isfinite(o->z_loss)))
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: z_loss must be a finite number >= 0 "
                    "(0 disables it), got %g", fname, o->z_loss);
    if (!(o->softcap >= 0 && isfinite(o->softcap)))
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: softcap must be a finite number > 0 "
                    "(or 0 to disable it), got %g", fname, o->softcap);
    return FASTLSM_OK;
}

/* Padded rows (options->row_stride > cols): packed copies of the logits, probability
 * targets (elements of `telem` bytes: the float results' type) and gradient buffer that the
 * kernel works on instead. */
typedef struct {
    void *logits, *target, *grad;
} packed;

static int pack(const char *fname, packed *pk, const void **logits, const void **target,
                void **grad, int probs, int64_t rows, int64_t cols, int64_t stride, size_t elem,
                size_t telem)
{
    const int inplace = *grad == (const void *)*logits;
    int st = pack_rows(fname, logits, &pk->logits, rows, cols, stride, elem);
    if (!st && probs) st = pack_rows(fname, target, &pk->target, rows, cols, stride, telem);
    if (st || !*grad) return st;
    pk->grad = inplace ? NULL : malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * elem);
    if (!inplace && !pk->grad) return out_of_memory(fname);
    *grad = inplace ? pk->logits : pk->grad;
    return FASTLSM_OK;
}

/* Cross-entropy (nll = 0) or NLL (nll = 1) with every option; see fastlsm.h. */
static int loss_any(const char *fname, int dt, int nll, const void *logits, const void *target,
                    int ttype, int64_t rows, int64_t cols, const void *class_weight,
                    const void *token_weight, const void *grad_output,
                    const fastlsm_cross_entropy_options *options, void *loss, void *lse,
                    void *grad)
{
    fastlsm_cross_entropy_options o = fastlsm_cross_entropy_default_options();
    const double *w, *tw, *go;
    double *own_w = NULL, *own_tw = NULL, *own_go = NULL;
    const int64_t *ids = NULL;
    int64_t *own_ids = NULL, n, r;
    void *fn;
    int st;
    CLEAR_ERROR();
    if (!logits)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: %s is NULL", fname,
                    nll ? "log_probs" : "logits");
    if (!target) return fail(FASTLSM_ERR_NULL_POINTER, "%s: target is NULL", fname);
    if (!loss) return fail(FASTLSM_ERR_NULL_POINTER, "%s: loss is NULL", fname);
    const size_t elem = dt_size(dt);
    const int f64 = dt == DT_F64;
    if (checked_size(rows, cols, elem, &n) != 0) return bad_sizes(fname, rows, cols);
    if ((st = read_struct(fname, "options", &o, options, sizeof o)) != 0) return st;
    if (ttype < 0 || ttype > (nll ? FASTLSM_TARGET_INT32 : FASTLSM_TARGET_PROBS))
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: target_type=%d is not a "
                    "fastlsm_target_type (0 int64, 1 int32%s)", fname, ttype,
                    nll ? "" : ", 2 probabilities");
    if ((st = loss_options(fname, &o, nll)) != 0) return st;
    const int probs = ttype == FASTLSM_TARGET_PROBS, is32 = ttype == FASTLSM_TARGET_INT32;
    const int per_row = o.reduction == FASTLSM_REDUCTION_NONE;
    int64_t stride;
    if ((st = row_stride(fname, "row_stride", o.row_stride, 1, rows, cols, f64 ? 8 : 4,
                         &stride)) != 0)
        return st;
    packed pk = {NULL, NULL, NULL};
    void *user_grad = grad;
    if ((st = as_f64(fname, "class_weight", class_weight, cols, f64, 1, &w, &own_w)) ||
        (st = as_f64(fname, "token_weight", token_weight, rows, f64, 1, &tw, &own_tw)) ||
        (st = as_f64(fname, "grad_output", grad_output, per_row ? rows : 1, f64, 0, &go,
                     &own_go)) ||
        (!probs && (st = as_i64(fname, target, is32, rows, &ids, &own_ids))) ||
        (stride != cols && (st = pack(fname, &pk, &logits, &target, &grad, probs, rows, cols,
                                      stride, elem, f64 ? 8 : 4))) ||
        (st = begin(fname, nll ? KID_nll_loss(dt) : probs ? KID_cross_entropy_probs(dt)
                    : KID_cross_entropy(dt), n, rows, &fn)))
        goto done;
    const double scale = go && !per_row ? go[0] : 1.0;
    const int64_t n_go = go && per_row ? rows : 0, n_w = w ? cols : 0, n_tw = tw ? rows : 0;
    const int64_t grad_rows = grad ? rows : 0;
    if (nll)
        r = KCALL_nll_loss(dt, fn, logits, ids, rows, cols, w, n_w, tw, n_tw,
                  o.ignore_index, o.reduction, scale, go, n_go, loss, grad, grad_rows);
    else if (probs)
        r = KCALL_cross_entropy_probs(dt, fn, logits, target, rows, cols, w, n_w, tw, n_tw,
                  o.label_smoothing, o.z_loss, o.softcap, o.reduction, scale, go, n_go, loss,
                  lse, lse ? rows : 0, grad, grad_rows);
    else
        r = KCALL_cross_entropy(dt, fn, logits, ids, rows, cols, w, n_w, tw, n_tw,
                  o.ignore_index, o.label_smoothing, o.z_loss, o.softcap, o.reduction, scale,
                  go, n_go, loss, lse, lse ? rows : 0, grad, grad_rows);
    if (r >= 0 && r < rows && !probs)
        st = fail(FASTLSM_ERR_INVALID_TARGET, "%s: target[%lld] = %lld is out of range for "
                  "%lld classes: class indices must be in [0, %lld] or equal "
                  "ignore_index=%lld", fname, (long long)r, (long long)id_at(target, is32, r),
                  (long long)cols, (long long)cols - 1, (long long)o.ignore_index);
    else if (r != -1)
        st = unexpected(fname, r);
    else if (grad && stride != cols)
        copy_rows(user_grad, stride, grad, cols, rows, cols, elem);
done:
    free(own_w), free(own_tw), free(own_go), free(own_ids);
    free(pk.logits), free(pk.target), free(pk.grad);
    return st;
}

#define LOSS_ENTRIES(S, P, R, DT)                                                             \
    FASTLSM_API int fastlsm_cross_entropy_##S(const P *logits, const int64_t *target,        \
                                              int64_t rows, int64_t cols,                     \
                                              const R *class_weight, int64_t ignore_index,    \
                                              R label_smoothing, int reduction, R *loss,      \
                                              P *grad)                                        \
    {                                                                                         \
        fastlsm_cross_entropy_options o = fastlsm_cross_entropy_default_options();           \
        o.ignore_index = ignore_index;                                                        \
        o.label_smoothing = label_smoothing;                                                  \
        o.reduction = reduction;                                                              \
        return loss_any("fastlsm_cross_entropy_" #S, DT, 0, logits, target,                  \
                        FASTLSM_TARGET_INT64, rows, cols, class_weight, NULL, NULL, &o, loss, \
                        NULL, grad);                                                          \
    }                                                                                         \
    FASTLSM_API int fastlsm_cross_entropy_ex_##S(                                             \
        const P *logits, const void *target, int target_type, int64_t rows, int64_t cols,    \
        const R *class_weight, const R *token_weight, const R *grad_output,                  \
        const fastlsm_cross_entropy_options *options, R *loss, R *lse, P *grad)              \
    {                                                                                         \
        return loss_any("fastlsm_cross_entropy_ex_" #S, DT, 0, logits, target, target_type,  \
                        rows, cols, class_weight, token_weight, grad_output, options, loss,   \
                        lse, grad);                                                           \
    }                                                                                         \
    FASTLSM_API int fastlsm_nll_loss_##S(                                                     \
        const P *log_probs, const void *target, int target_type, int64_t rows, int64_t cols, \
        const R *class_weight, const R *token_weight, const R *grad_output,                  \
        const fastlsm_cross_entropy_options *options, R *loss, P *grad)                      \
    {                                                                                         \
        return loss_any("fastlsm_nll_loss_" #S, DT, 1, log_probs, target, target_type, rows, \
                        cols, class_weight, token_weight, grad_output, options, loss, NULL,   \
                        grad);                                                                \
    }

FASTLSM_DTYPES_cross_entropy(LOSS_ENTRIES)

/* ------------------------------------------------------------------ sequence scoring */

static int sequence_any(const char *fname, int dt, const void *logits, const void *tokens,
                        int is32, const uint8_t *mask, int64_t batch, int64_t steps,
                        int64_t vocab, int64_t given, void *token_logprobs, void *seq_logprobs)
{
    int64_t bt, n, r, stride, *own = NULL;
    const int64_t *ids;
    void *fn, *packed = NULL;
    int st;
    CLEAR_ERROR();
    if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);
    if (!tokens) return fail(FASTLSM_ERR_NULL_POINTER, "%s: tokens is NULL", fname);
    if (!seq_logprobs) return fail(FASTLSM_ERR_NULL_POINTER, "%s: seq_logprobs is NULL", fname);
    if (checked_size(batch, steps, 8, &bt) != 0 || checked_size(bt, vocab, dt_size(dt), &n))
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: batch=%lld, steps=%lld, vocab=%lld: sizes "
                    "must be >= 0 and their product must fit in memory", fname,
                    (long long)batch, (long long)steps, (long long)vocab);
    if ((st = row_stride(fname, "row_stride", given, 0, bt, vocab, dt_size(dt), &stride)))
        return st;
    if ((st = as_i64(fname, tokens, is32, bt, &ids, &own)) ||
        (st = begin(fname, KID_sequence_logprobs(dt), n, bt, &fn)) ||
        (st = pack_rows(fname, &logits, &packed, bt, vocab, stride, dt_size(dt))))
        goto done;
    r = KCALL_sequence_logprobs(dt, fn, logits, ids, mask, mask != NULL, batch, steps, vocab,
              token_logprobs, token_logprobs != NULL, seq_logprobs);
    if (r >= 0 && r < bt)
        st = fail(FASTLSM_ERR_INVALID_TARGET, "%s: tokens[%lld, %lld] = %lld is outside the "
                  "vocabulary [0, %lld); fix the token id or set mask[%lld, %lld] = 0 for "
                  "padding", fname, (long long)(r / steps), (long long)(r % steps),
                  (long long)id_at(tokens, is32, r), (long long)vocab, (long long)(r / steps),
                  (long long)(r % steps));
    else if (r != -1)
        st = unexpected(fname, r);
done:
    free(own), free(packed);
    return st;
}

#define SEQ_ENTRY(S, P, R, DT, I, ID, is32)                                                   \
    FASTLSM_API int fastlsm_sequence_logprobs_##I##S(const P *logits, const ID *tokens,      \
                                                     const uint8_t *mask, int64_t batch,      \
                                                     int64_t steps, int64_t vocab,            \
                                                     R *token_logprobs, R *seq_logprobs)      \
    {                                                                                         \
        return sequence_any("fastlsm_sequence_logprobs_" #I #S, DT, logits, tokens, is32,    \
                            mask, batch, steps, vocab, vocab, token_logprobs, seq_logprobs);  \
    }                                                                                         \
    FASTLSM_API int fastlsm_sequence_logprobs_##I##strided_##S(                               \
        const P *logits, const ID *tokens, const uint8_t *mask, int64_t batch, int64_t steps, \
        int64_t vocab, R *token_logprobs, R *seq_logprobs, int64_t row_stride)               \
    {                                                                                         \
        return sequence_any("fastlsm_sequence_logprobs_" #I "strided_" #S, DT, logits,       \
                            tokens, is32, mask, batch, steps, vocab, row_stride,              \
                            token_logprobs, seq_logprobs);                                    \
    }
#define SEQ_ENTRIES(S, P, R, DT) \
    SEQ_ENTRY(S, P, R, DT, , int64_t, 0) SEQ_ENTRY(S, P, R, DT, i32_, int32_t, 1)

FASTLSM_DTYPES_sequence_logprobs(SEQ_ENTRIES)

/* ------------------------------------------------------------------ beam step */

static int beam_step_any(const char *fname, int dt, const void *logits, const void *beam_scores,
                         int64_t batch, int64_t beams, int64_t vocab, int64_t given,
                         int64_t num_candidates, void *cand_scores, int64_t *cand_tokens,
                         int64_t *cand_beams)
{
    int64_t bk, n, kv, bc, r, stride;
    void *fn, *packed = NULL;
    CLEAR_ERROR();
    if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);
    if (!beam_scores) return fail(FASTLSM_ERR_NULL_POINTER, "%s: beam_scores is NULL", fname);
    if (!cand_scores || !cand_tokens || !cand_beams)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: cand_%s is NULL", fname,
                    !cand_scores ? "scores" : !cand_tokens ? "tokens" : "beams");
    const int f64 = dt == DT_F64;
    if (checked_size(batch, beams, f64 ? 8 : 4, &bk) != 0 ||
        checked_size(bk, vocab, dt_size(dt), &n) != 0 || checked_size(beams, vocab, 1, &kv) ||
        checked_size(batch, num_candidates < 0 ? -1 : num_candidates, 8, &bc) != 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: batch=%lld, beams=%lld, vocab=%lld, "
                    "num_candidates=%lld: sizes must be >= 0 and their products must fit in "
                    "memory", fname, (long long)batch, (long long)beams, (long long)vocab,
                    (long long)num_candidates);
    int st = row_stride(fname, "row_stride", given, 0, bk, vocab, dt_size(dt), &stride);
    if (st) return st;
    if (kv == 0)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: beams=%lld, vocab=%lld: there are no "
                    "candidates (beams and vocab must be >= 1)", fname, (long long)beams,
                    (long long)vocab);
    if (num_candidates < 1 || num_candidates > kv)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: num_candidates=%lld must be in [1, "
                    "beams * vocab = %lld]", fname, (long long)num_candidates, (long long)kv);
    for (int64_t i = 0; i < bk; i++) {
        double s = f64 ? ((const double *)beam_scores)[i] : ((const float *)beam_scores)[i];
        if (s != s || s == INFINITY)
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: beam_scores[%lld] is NaN or +inf; "
                        "use -inf for a dead beam", fname, (long long)i);
    }
    if ((st = begin(fname, KID_beam_step(dt), n, bk, &fn)) || batch == 0 ||
        (st = pack_rows(fname, &logits, &packed, bk, vocab, stride, dt_size(dt))))
        return st;
    r = KCALL_beam_step(dt, fn, logits, beam_scores, batch, beams, vocab, num_candidates,
              cand_scores, cand_tokens, cand_beams);
    free(packed);
    if (r >= 0 && r < bk)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: logits[%lld, %lld] contains NaN or "
                    "+inf; mask tokens with -inf instead", fname, (long long)(r / beams),
                    (long long)(r % beams));
    return r == -1 ? FASTLSM_OK : unexpected(fname, r);
}

#define BEAM_STEP_ENTRY(S, P, R, DT)                                                          \
    FASTLSM_API int fastlsm_beam_step_##S(const P *logits, const R *beam_scores,             \
                                          int64_t batch, int64_t beams, int64_t vocab,        \
                                          int64_t num_candidates, R *cand_scores,             \
                                          int64_t *cand_tokens, int64_t *cand_beams)          \
    {                                                                                         \
        return beam_step_any("fastlsm_beam_step_" #S, DT, logits, beam_scores, batch, beams, \
                             vocab, vocab, num_candidates, cand_scores, cand_tokens,          \
                             cand_beams);                                                     \
    }                                                                                         \
    FASTLSM_API int fastlsm_beam_step_strided_##S(                                            \
        const P *logits, const R *beam_scores, int64_t batch, int64_t beams, int64_t vocab,  \
        int64_t num_candidates, R *cand_scores, int64_t *cand_tokens, int64_t *cand_beams,   \
        int64_t row_stride)                                                                   \
    {                                                                                         \
        return beam_step_any("fastlsm_beam_step_strided_" #S, DT, logits, beam_scores,       \
                             batch, beams, vocab, row_stride, num_candidates, cand_scores,    \
                             cand_tokens, cand_beams);                                        \
    }

FASTLSM_DTYPES_beam_step(BEAM_STEP_ENTRY)

/* ------------------------------------------------------------------ sampling */

FASTLSM_API fastlsm_sample_params fastlsm_sample_default_params(void)
{
    NEW_STRUCT(fastlsm_sample_params, p);
    p.temperature = 1.0;
    p.top_p = 1.0;
    p.typical_p = 1.0;
    p.repetition_penalty = 1.0;
    p.logprobs_mode = FASTLSM_LOGPROBS_RAW;
    p.logit_bias_rows = 1;
    return p;
}

/* What both samplers hand their kernel, checked and converted from the caller's. */
typedef struct {
    fastlsm_sample_params p;
    double *table;                 /* [rows, SAMPLE_NPARAM] */
    uint64_t *seeds, *steps, *ctr; /* [rows] each */
    const int64_t *hist;           /* [rows, history_len] */
    int64_t *own_hist;
    int64_t bias_rows, mask_words;
} sampler;

static void sampler_free(sampler *s)
{
    free(s->table), free(s->seeds), free(s->steps), free(s->ctr), free(s->own_hist);
}

/* `n` ids in [lo, vocab) (lo = -1: -1 is padding), else FASTLSM_ERR_INVALID_TARGET naming
 * the first bad one as [i, j] of a [*, cols] array. */
static int check_ids(const char *fname, const char *what, const void *ids, int is32, int64_t n,
                     int64_t cols, int64_t lo, int64_t vocab)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t v = id_at(ids, is32, i);
        if (v < lo || v >= vocab)
            return fail(FASTLSM_ERR_INVALID_TARGET, "%s: %s[%lld, %lld] = %lld must be %s "
                        "[0, %lld)", fname, what, (long long)(i / cols), (long long)(i % cols),
                        (long long)v, lo < 0 ? "-1 (padding) or a token id in" :
                        "a token id in", (long long)vocab);
    }
    return FASTLSM_OK;
}

static int sampler_setup(const char *fname, sampler *s, const fastlsm_sample_params *params,
                         const void *history, int is32, int64_t history_len, int64_t rows,
                         int64_t vocab)
{
    memset(s, 0, sizeof *s);
    s->p = fastlsm_sample_default_params();
    const fastlsm_sample_params *p = &s->p;
    int64_t tmp;
    int st;
    if ((st = read_struct(fname, "params", &s->p, params, sizeof s->p)) != 0) return st;
    if (history_len < 0 || checked_size(rows, history_len, 8, &tmp) != 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: history_len=%lld must be >= 0 (0: no "
                    "history) and rows * history_len must fit in memory", fname,
                    (long long)history_len);
    if (history_len > 0 && !history)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: history is NULL but history_len = %lld",
                    fname, (long long)history_len);
    if (p->logprobs_mode != FASTLSM_LOGPROBS_RAW && p->logprobs_mode != FASTLSM_LOGPROBS_PROCESSED)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: params->logprobs_mode=%d is not a "
                    "fastlsm_logprobs_mode (0 raw, 1 processed)", fname, p->logprobs_mode);
    if (p->num_logprobs < 0 || p->num_logprobs > vocab)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: params->num_logprobs must be in [0, "
                    "V=%lld], got %lld", fname, (long long)vocab, (long long)p->num_logprobs);
    s->bias_rows = p->logit_bias ? p->logit_bias_rows : 0;
    if (p->logit_bias && p->logit_bias_rows != 1 && p->logit_bias_rows != rows)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: params->logit_bias_rows=%lld must be 1 "
                    "(one bias for every row) or rows=%lld", fname,
                    (long long)p->logit_bias_rows, (long long)rows);
    for (int64_t i = 0; i < s->bias_rows * vocab; i++) {
        double b = p->logit_bias[i];
        if (b != b || b == HUGE_VAL)
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: params->logit_bias[%lld, %lld] is "
                        "%g: logit_bias must hold finite values or -inf (never NaN or +inf)",
                        fname, (long long)(i / vocab), (long long)(i % vocab), b);
    }
    s->mask_words = p->token_bitmask ? (vocab + 31) / 32 : 0;
    const int64_t trows = rows > 0 ? rows : 1; /* no rows: the scalars are still checked */
    const size_t n = (size_t)trows;
    s->table = malloc(n * SAMPLE_NPARAM * sizeof *s->table);
    s->seeds = malloc(n * sizeof *s->seeds);
    s->steps = malloc(n * sizeof *s->steps);
    s->ctr = malloc(n * sizeof *s->ctr);
    if (!s->table || !s->seeds || !s->steps || !s->ctr) return out_of_memory(fname);
    double scalar[SAMPLE_NPARAM];
    const double *array[SAMPLE_NPARAM];
#define PARAM(col, value, values) (scalar[col] = (value), array[col] = (values))
    PARAM(SAMPLE_P_T, p->temperature, p->temperatures);
    PARAM(SAMPLE_P_K, (double)p->top_k, NULL);
    PARAM(SAMPLE_P_P, p->top_p, p->top_ps);
    PARAM(SAMPLE_P_MINP, p->min_p, p->min_ps);
    PARAM(SAMPLE_P_TYP, p->typical_p, p->typical_ps);
    PARAM(SAMPLE_P_REP, p->repetition_penalty, p->repetition_penalties);
    PARAM(SAMPLE_P_FREQ, p->frequency_penalty, p->frequency_penalties);
    PARAM(SAMPLE_P_PRES, p->presence_penalty, p->presence_penalties);
#undef PARAM
    for (int64_t i = 0; i < trows; i++)
        for (int c = 0; c < SAMPLE_NPARAM; c++) {
            const int per_row = c == SAMPLE_P_K ? p->top_ks != NULL : array[c] != NULL;
            s->table[i * SAMPLE_NPARAM + c] =
                !per_row ? scalar[c] : rows == 0 ? SAMPLE_NEUTRAL
                : c == SAMPLE_P_K ? (double)p->top_ks[i] : array[c][i];
        }
    /* The ranges are checked by the kernel fastlsm.sample uses (sampling_params). */
    void *check;
    if ((st = begin(fname, K_sample_params, 0, 0, &check)) != 0) return st;
    const int64_t bad = ((sample_params_fn)check)(s->table, trows);
    if (bad >= 0) {
        const int c = (int)(bad % SAMPLE_NPARAM);
        const int per_row = c == SAMPLE_P_K ? p->top_ks != NULL : array[c] != NULL;
        if (per_row)
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: params->%s must be %s, got %g "
                        "(row %lld)", fname, sample_param_names[c].array,
                        sample_param_names[c].what, s->table[bad],
                        (long long)(bad / SAMPLE_NPARAM));
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: params->%s must be %s, got %g", fname,
                    sample_param_names[c].name, sample_param_names[c].what, s->table[bad]);
    }
    /* Philox key and counter: (seed[row], step[row]) with per-row seeds, (seed, step, row
     * index) with one seed, as fastlsm.sample. */
    for (int64_t i = 0; i < rows; i++) {
        s->seeds[i] = p->seeds ? p->seeds[i] : p->seed;
        s->steps[i] = p->steps ? p->steps[i] : p->step;
        s->ctr[i] = p->seeds ? 0 : (uint64_t)i;
    }
    if ((st = check_ids(fname, "history", history, is32, rows * history_len,
                        history_len ? history_len : 1, -1, vocab)) != 0)
        return st;
    return as_i64(fname, history, is32, rows * history_len, &s->hist, &s->own_hist);
}

static int sample_failed(const char *fname, const char *what, int64_t r, const int64_t *status,
                         int64_t rows)
{
    if (r < 0 || r >= rows) return unexpected(fname, r);
    if (status[r] == SAMPLE_NO_TOKEN)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: row %lld of %s has no allowed token: "
                    "its token_bitmask allows none of the vocabulary, or every allowed logit "
                    "is -inf", fname, (long long)r, what);
    return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: row %lld of %s holds NaN or +inf logits "
                "(after bias and penalties)", fname, (long long)r, what);
}

static void narrow_ids(void *dst, const int64_t *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) ((int32_t *)dst)[i] = (int32_t)src[i];
}

static int sample_any(const char *fname, int dt, int is32, const void *logits, int64_t rows,
                      int64_t vocab, const fastlsm_sample_params *params, const void *history,
                      int64_t history_len, const void *lp_ids, int64_t lp_rows, int64_t lp_cols,
                      void *tokens, void *logprobs, void *top_tokens, void *top_logprobs,
                      void *id_logprobs)
{
    sampler s;
    int64_t n, r, stride, *status = NULL, *own_lp_ids = NULL, *tok64 = NULL, *top64 = NULL;
    const int64_t *ids = NULL;
    void *fn, *own_lp = NULL, *packed = NULL;
    int st;
    CLEAR_ERROR();
    memset(&s, 0, sizeof s);
    if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);
    if (!tokens) return fail(FASTLSM_ERR_NULL_POINTER, "%s: tokens is NULL", fname);
    if (checked_size(rows, vocab, dt_size(dt), &n) != 0) return bad_sizes(fname, rows, vocab);
    if (vocab == 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: vocab = 0: there is no token to sample",
                    fname);
    if (lp_cols < 0 || (lp_cols > 0 && lp_rows != 1 && lp_rows != rows))
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: token_ids_rows=%lld, num_token_ids=%lld: "
                    "logprob_token_ids is [1 or rows, num_token_ids], num_token_ids >= 0",
                    fname, (long long)lp_rows, (long long)lp_cols);
    if (lp_cols > 0 && !lp_ids)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: logprob_token_ids is NULL but "
                    "num_token_ids = %lld", fname, (long long)lp_cols);
    if (lp_cols > 0 && !id_logprobs)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: token_id_logprobs is NULL but "
                    "num_token_ids = %lld", fname, (long long)lp_cols);
    if (lp_cols == 0) lp_rows = 1;
    if ((st = sampler_setup(fname, &s, params, history, is32, history_len, rows, vocab)) ||
        (st = row_stride(fname, "params->row_stride", s.p.row_stride, 1, rows, vocab,
                         dt_size(dt), &stride)))
        goto done;
    const int64_t nt = s.p.num_logprobs;
    if (nt > 0 && (!top_tokens || !top_logprobs)) {
        st = fail(FASTLSM_ERR_NULL_POINTER, "%s: %s is NULL but params->num_logprobs = %lld",
                  fname, !top_tokens ? "top_tokens" : "top_logprobs", (long long)nt);
        goto done;
    }
    if ((st = check_ids(fname, "logprob_token_ids", lp_ids, is32, lp_rows * lp_cols,
                        lp_cols ? lp_cols : 1, 0, vocab)) ||
        (st = as_i64(fname, lp_ids, is32, lp_rows * lp_cols, &ids, &own_lp_ids)) ||
        (st = begin(fname, KID_sample(dt), n, rows, &fn)) ||
        (st = pack_rows(fname, &logits, &packed, rows, vocab, stride, dt_size(dt))))
        goto done;
    const size_t rn = (size_t)(rows > 0 ? rows : 1);
    status = malloc(rn * sizeof *status);
    own_lp = logprobs ? NULL : malloc(rn * 8);
    tok64 = is32 ? malloc(rn * sizeof *tok64) : NULL;
    top64 = is32 && nt ? malloc(rn * (size_t)nt * sizeof *top64) : NULL;
    if (!status || (!logprobs && !own_lp) || (is32 && !tok64) || (is32 && nt && !top64)) {
        st = out_of_memory(fname);
        goto done;
    }
    if (rows == 0) goto done;
    r = KCALL_sample(dt, fn, logits, rows, vocab, s.p.logit_bias, s.bias_rows,
                     s.p.token_bitmask, s.mask_words, s.hist, history_len, s.table, s.seeds,
                     s.steps, s.ctr, s.p.logprobs_mode == FASTLSM_LOGPROBS_RAW, ids, lp_rows,
                     lp_cols, is32 ? tok64 : tokens, logprobs ? logprobs : own_lp,
                     is32 ? (void *)top64 : top_tokens, top_logprobs, nt, id_logprobs, status);
    if (r != -1) {
        st = sample_failed(fname, "logits", r, status, rows);
        goto done;
    }
    if (is32) {
        narrow_ids(tokens, tok64, rows);
        narrow_ids(top_tokens, top64, rows * nt);
    }
done:
    sampler_free(&s);
    free(status), free(own_lp_ids), free(tok64), free(top64), free(own_lp), free(packed);
    return st;
}

#define SAMPLE_ENTRY(S, P, R, DT, I, ID, is32)                                                \
    FASTLSM_API int fastlsm_sample_##I##S(                                                    \
        const P *logits, int64_t rows, int64_t vocab, const fastlsm_sample_params *params,   \
        const ID *history, int64_t history_len, const ID *logprob_token_ids,                 \
        int64_t token_ids_rows, int64_t num_token_ids, ID *tokens, R *logprobs,              \
        ID *top_tokens, R *top_logprobs, R *token_id_logprobs)                               \
    {                                                                                         \
        return sample_any("fastlsm_sample_" #I #S, DT, is32, logits, rows, vocab, params,    \
                          history, history_len, logprob_token_ids, token_ids_rows,            \
                          num_token_ids, tokens, logprobs, top_tokens, top_logprobs,          \
                          token_id_logprobs);                                                 \
    }
#define SAMPLE_ENTRIES(S, P, R, DT) \
    SAMPLE_ENTRY(S, P, R, DT, , int64_t, 0) SAMPLE_ENTRY(S, P, R, DT, i32_, int32_t, 1)

FASTLSM_DTYPES_sample(SAMPLE_ENTRIES)

static int verify_any(const char *fname, int dt, int is32, const void *target_logits,
                      const void *draft_logits, const void *draft_tokens, int64_t rows,
                      int64_t k, int64_t vocab, const fastlsm_sample_params *params,
                      const void *history, int64_t history_len, int64_t *num_accepted,
                      void *tokens)
{
    sampler s;
    int64_t n, k1, r, stride, *status = NULL, *own_draft = NULL, *out64 = NULL;
    const int64_t *draft = NULL;
    void *fn, *packed[2] = {NULL, NULL};
    int st;
    CLEAR_ERROR();
    memset(&s, 0, sizeof s);
    if (!target_logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: target_logits is NULL", fname);
    if (!draft_tokens && k > 0)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: draft_tokens is NULL", fname);
    if (!num_accepted) return fail(FASTLSM_ERR_NULL_POINTER, "%s: num_accepted is NULL", fname);
    if (!tokens) return fail(FASTLSM_ERR_NULL_POINTER, "%s: tokens is NULL", fname);
    if (k < 0 || k == INT64_MAX || checked_size(rows, k + 1, 8, &k1) != 0 ||
        checked_size(k1, vocab, dt_size(dt), &n) != 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: rows=%lld, k=%lld, vocab=%lld: sizes must "
                    "be >= 0 and rows * (k + 1) * vocab must fit in memory", fname,
                    (long long)rows, (long long)k, (long long)vocab);
    if (vocab == 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: vocab = 0: there is no token to sample",
                    fname);
    if ((st = sampler_setup(fname, &s, params, history, is32, history_len, rows, vocab)) ||
        (st = row_stride(fname, "params->row_stride", s.p.row_stride, 1, k1, vocab,
                         dt_size(dt), &stride)) ||
        (st = check_ids(fname, "draft_tokens", draft_tokens, is32, rows * k, k ? k : 1, 0,
                        vocab)) ||
        (st = as_i64(fname, draft_tokens, is32, rows * k, &draft, &own_draft)) ||
        (st = begin(fname, KID_verify_draft(dt), n, rows, &fn)) ||
        (st = pack_rows(fname, &target_logits, &packed[0], k1, vocab, stride, dt_size(dt))) ||
        (st = pack_rows(fname, &draft_logits, &packed[1], rows * k, vocab, stride,
                        dt_size(dt))))
        goto done;
    const size_t rn = (size_t)(rows > 0 ? rows : 1);
    status = malloc(rn * sizeof *status);
    out64 = is32 ? malloc(rn * (size_t)(k + 1) * sizeof *out64) : NULL;
    if (!status || (is32 && !out64)) {
        st = out_of_memory(fname);
        goto done;
    }
    if (rows == 0) goto done;
    r = KCALL_verify_draft(dt, fn, target_logits, draft_logits, draft_logits != NULL, draft,
                           rows, k, vocab, s.p.logit_bias, s.bias_rows, s.p.token_bitmask,
                           s.mask_words, s.hist, history_len, s.table, s.seeds, s.steps,
                           s.ctr, num_accepted, is32 ? out64 : tokens, status);
    if (r != -1) {
        st = sample_failed(fname, "target_logits or draft_logits", r, status, rows);
        goto done;
    }
    if (is32) narrow_ids(tokens, out64, rows * (k + 1));
done:
    sampler_free(&s);
    free(status), free(own_draft), free(out64), free(packed[0]), free(packed[1]);
    return st;
}

#define VERIFY_ENTRY(S, P, R, DT, I, ID, is32)                                                \
    FASTLSM_API int fastlsm_verify_draft_##I##S(                                              \
        const P *target_logits, const P *draft_logits, const ID *draft_tokens, int64_t rows, \
        int64_t k, int64_t vocab, const fastlsm_sample_params *params, const ID *history,    \
        int64_t history_len, int64_t *num_accepted, ID *tokens)                              \
    {                                                                                         \
        return verify_any("fastlsm_verify_draft_" #I #S, DT, is32, target_logits,            \
                          draft_logits, draft_tokens, rows, k, vocab, params, history,        \
                          history_len, num_accepted, tokens);                                 \
    }
#define VERIFY_ENTRIES(S, P, R, DT) \
    VERIFY_ENTRY(S, P, R, DT, , int64_t, 0) VERIFY_ENTRY(S, P, R, DT, i32_, int32_t, 1)

FASTLSM_DTYPES_verify_draft(VERIFY_ENTRIES)

/* ------------------------------------------------------------------ beam-search decoder */

FASTLSM_API fastlsm_beam_search_config fastlsm_beam_search_default_config(void)
{
    NEW_STRUCT(fastlsm_beam_search_config, c);
    c.num_beams = 4;
    c.max_new_tokens = 20;
    c.pad_token_id = -1;
    c.length_penalty = 1.0;
    c.early_stopping = FASTLSM_EARLY_STOPPING_HEURISTIC;
    c.num_return_sequences = 1;
    c.repetition_penalty = 1.0;
    c.patience = 1.0;
    return c;
}

/* Validate, run and finish a search; dt (DT_*) is the logits type: the step callback fills
 * logits of it (16-bit: their bits, handed to the decoder as they are), the scores are double
 * for DT_F64, else float. Every buffer the state machine needs is allocated here and freed
 * before returning. */
static int beam_search(const char *fname, const fastlsm_beam_search_config *config,
                       const void *ids, int is32, int64_t batch, int64_t prompt_len,
                       int64_t vocab, int dt, void *step, void *user_data,
                       int64_t *sequences, int64_t *lengths, void *sequence_scores,
                       void *token_logprobs, int64_t *out_width)
{
    const size_t elem = dt_size(dt);
    const int is_f64 = dt == DT_F64;
    int64_t rows, max_len, tmp, nh;
    fastlsm_beam_search_config cfg_copy = fastlsm_beam_search_default_config();
    const fastlsm_beam_search_config *c = &cfg_copy;
    CLEAR_ERROR();
    if (!config) return fail(FASTLSM_ERR_NULL_POINTER, "%s: config is NULL", fname);
    if (!ids) return fail(FASTLSM_ERR_NULL_POINTER, "%s: input_ids is NULL", fname);
    int st = read_struct(fname, "config", &cfg_copy, config, sizeof cfg_copy);
    if (st) return st;
    if (!step) return fail(FASTLSM_ERR_NULL_POINTER, "%s: step is NULL", fname);
    if (!sequences) return fail(FASTLSM_ERR_NULL_POINTER, "%s: sequences is NULL", fname);
    if (!sequence_scores)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: sequence_scores is NULL", fname);
    if (c->num_eos_token_ids > 0 && !c->eos_token_ids)
        return fail(FASTLSM_ERR_NULL_POINTER, "%s: config->eos_token_ids is NULL but "
                    "num_eos_token_ids = %lld", fname, (long long)c->num_eos_token_ids);
    if (batch < 0 || prompt_len < 0 || vocab < 0 || c->num_eos_token_ids < 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: batch=%lld, prompt_len=%lld, vocab=%lld, "
                    "num_eos_token_ids=%lld must be >= 0", fname, (long long)batch,
                    (long long)prompt_len, (long long)vocab, (long long)c->num_eos_token_ids);
    if (checked_size(batch, prompt_len, 8, &tmp) != 0 ||
        c->max_new_tokens > INT64_MAX / 4 - prompt_len)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: batch=%lld, prompt_len=%lld, "
                    "max_new_tokens=%lld: the sequences do not fit in memory", fname,
                    (long long)batch, (long long)prompt_len, (long long)c->max_new_tokens);
    for (int64_t i = 0; i < batch * prompt_len; i++)
        if (id_at(ids, is32, i) < 0)
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: input_ids[%lld, %lld] = %lld must "
                        "be >= 0", fname, (long long)(i / prompt_len), (long long)(i % prompt_len),
                        (long long)id_at(ids, is32, i));
    void *pack_k, *layout_k, *init_k, *finalize_k, *ignored;
    const int adv_id = KID_beam_advance(dt);
    if ((st = begin(fname, K_beam_pack_config, 0, 0, &pack_k)) ||
        (st = begin(fname, K_beam_layout, 0, 0, &layout_k)) ||
        (st = begin(fname, K_beam_init, 0, 0, &init_k)) ||
        (st = begin(fname, K_beam_finalize, 0, 0, &finalize_k)) ||
        (st = begin(fname, adv_id, 0, 0, &ignored)))
        return st;

    /* The configuration is checked and packed by the kernel Python uses (one place). */
    const int64_t n_eos = c->num_eos_token_ids, cfg_len = BEAM_CFG_SIZE + n_eos;
    double fcfg[BEAM_FCFG_SIZE] = {0};
    int64_t *cfg = n_eos < INT64_MAX / 16 ? calloc((size_t)cfg_len, sizeof *cfg) : NULL;
    if (!cfg) return out_of_memory(fname);
    int64_t code = ((beam_pack_config_fn)pack_k)(
        cfg, cfg_len, fcfg, batch, prompt_len, vocab, c->num_beams, c->max_new_tokens,
        c->eos_token_ids, n_eos, c->pad_token_id, c->length_penalty, c->early_stopping,
        c->num_return_sequences, c->min_new_tokens, c->no_repeat_ngram_size,
        c->repetition_penalty, c->patience, c->renormalize);
    if (code != 0) {
        free(cfg);
        return beam_config_error(fname, code, c, batch, prompt_len, vocab);
    }
    max_len = cfg[BEAM_CFG_MAX_LEN];
    nh = cfg[BEAM_CFG_MAX_HYPS];
    if (checked_size(batch, c->num_beams, 1, &rows) != 0 ||
        checked_size(rows, max_len, 64, &tmp) != 0 || checked_size(rows, vocab, elem, &tmp) ||
        checked_size(batch * nh, c->max_new_tokens, 16, &tmp) != 0 ||
        checked_size(rows, 2 * max_len + n_eos, 16, &tmp) != 0 ||
        checked_size(rows, 2 * (n_eos + 2), 16, &tmp) != 0) {
        free(cfg);
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: the search state for batch=%lld, "
                    "num_beams=%lld, prompt_len=%lld, max_new_tokens=%lld, vocab=%lld does "
                    "not fit in memory", fname, (long long)batch, (long long)c->num_beams,
                    (long long)prompt_len, (long long)c->max_new_tokens, (long long)vocab);
    }
    const int64_t nret = c->num_return_sequences;
    const int64_t nout = batch * nret, g = c->max_new_tokens;
    int64_t layout[BEAM_LAYOUT_SIZE];
    int64_t *istate = NULL, *seqbuf = NULL, *parents = NULL, *out_len = NULL, *own_ids = NULL;
    const int64_t *input_ids;
    double *fstate = NULL, *out_scores = NULL, *out_logp = NULL;
    void *logits = NULL;
    int result = FASTLSM_OK;

#define CLEANUP(status, ...) do { result = fail(status, __VA_ARGS__); goto done; } while (0)
    if (as_i64(fname, ids, is32, batch * prompt_len, &input_ids, &own_ids) != 0) {
        result = FASTLSM_ERR_RUNTIME;
        goto done;
    }
    if (((beam_layout_fn)layout_k)(cfg, cfg_len, layout) != 0)
        CLEANUP(FASTLSM_ERR_INTERNAL, "%s: the decoder rejected a validated configuration",
                fname);
    const int64_t isize = layout[BEAM_L_INT_SIZE], fsize = layout[BEAM_L_FLOAT_SIZE];
    istate = malloc((size_t)isize * sizeof *istate);
    fstate = malloc((size_t)(fsize > 0 ? fsize : 1) * sizeof *fstate);
    seqbuf = malloc((size_t)(rows * max_len) * sizeof *seqbuf);
    parents = malloc((size_t)rows * sizeof *parents);
    logits = malloc((size_t)(rows * vocab) * elem);
    out_len = malloc((size_t)nout * sizeof *out_len);
    out_scores = malloc((size_t)nout * sizeof *out_scores);
    out_logp = malloc((size_t)(nout * g) * sizeof *out_logp);
    if (!istate || !fstate || !seqbuf || !parents || !logits || !out_len || !out_scores ||
        !out_logp)
        CLEANUP(FASTLSM_ERR_RUNTIME, "%s: out of memory for the search state", fname);
    if (((beam_init_fn)init_k)(cfg, cfg_len, fcfg, input_ids, batch, prompt_len, fstate,
                               fsize, istate, isize) != BEAM_RUNNING)
        CLEANUP(FASTLSM_ERR_INTERNAL, "%s: the decoder failed to start", fname);

    for (int64_t s = 0;; s++) {
        const int64_t cur = istate[BEAM_ST_CUR_LEN];
        const int64_t *running = istate + layout[BEAM_L_SEQS];
        for (int64_t r = 0; r < rows; r++)
            memcpy(seqbuf + r * cur, running + r * max_len, (size_t)cur * sizeof *seqbuf);
        if (s > 0)
            memcpy(parents, istate + layout[BEAM_L_PARENTS], (size_t)rows * sizeof *parents);
        const int64_t *par = s ? parents : NULL;
        int rc = dt == DT_F64   ? ((fastlsm_step_fn_f64)step)(user_data, seqbuf, rows, cur, par,
                                                              logits)
                 : dt == DT_F32 ? ((fastlsm_step_fn_f32)step)(user_data, seqbuf, rows, cur, par,
                                                              logits)
                 : dt == DT_BF16 ? ((fastlsm_step_fn_bf16)step)(user_data, seqbuf, rows, cur,
                                                                par, logits)
                                 : ((fastlsm_step_fn_f16)step)(user_data, seqbuf, rows, cur,
                                                               par, logits);
        if (rc != 0)
            CLEANUP(FASTLSM_ERR_INVALID_ARGUMENT, "%s: step %lld: the step callback returned "
                    "%d", fname, (long long)s, rc);
        int64_t status = KCALL_beam_advance(dt, pick(adv_id, rows * vocab, rows), cfg,
                                            cfg_len, fcfg, fstate, fsize, istate, isize,
                                            logits, rows, vocab);
        if (status == BEAM_DONE) break;
        if (status == BEAM_BAD_LOGITS) {
            int64_t r = istate[BEAM_ST_BAD_ROW];
            CLEANUP(FASTLSM_ERR_INVALID_ARGUMENT, "%s: step %lld: the step callback returned "
                    "logits with NaN or +inf in row %lld (batch %lld, beam %lld); mask "
                    "tokens with -inf instead", fname, (long long)s, (long long)r,
                    (long long)(r / c->num_beams), (long long)(r % c->num_beams));
        }
        if (status != BEAM_RUNNING)
            CLEANUP(FASTLSM_ERR_INTERNAL, "%s: step %lld: the decoder returned status %lld",
                    fname, (long long)s, (long long)status);
    }
    int64_t width = ((beam_finalize_fn)finalize_k)(
        cfg, cfg_len, fcfg, fstate, fsize, istate, isize, sequences, out_scores, out_logp,
        out_len, nout, max_len, g);
    if (width < 0)
        CLEANUP(FASTLSM_ERR_INTERNAL, "%s: the decoder could not write its results (status "
                "%lld)", fname, (long long)-width);
    for (int64_t i = 0; i < nout; i++) {
        if (is_f64) ((double *)sequence_scores)[i] = out_scores[i];
        else ((float *)sequence_scores)[i] = (float)out_scores[i];
        if (lengths) lengths[i] = out_len[i];
    }
    if (token_logprobs)
        for (int64_t i = 0; i < nout * g; i++) {
            if (is_f64) ((double *)token_logprobs)[i] = out_logp[i];
            else ((float *)token_logprobs)[i] = (float)out_logp[i];
        }
    if (out_width) *out_width = width;
#undef CLEANUP
done:
    free(cfg), free(istate), free(fstate), free(seqbuf), free(parents), free(logits);
    free(out_len), free(out_scores), free(out_logp), free(own_ids);
    return result;
}

#define BEAM_SEARCH_ENTRY_IDS(S, R, DT, I, ID, is32)                                         \
    FASTLSM_API int fastlsm_beam_search_##I##S(                                               \
        const fastlsm_beam_search_config *config, const ID *input_ids, int64_t batch,        \
        int64_t prompt_len, int64_t vocab, fastlsm_step_fn_##S step, void *user_data,        \
        int64_t *sequences, int64_t *lengths, R *sequence_scores, R *token_logprobs,         \
        int64_t *out_width)                                                                   \
    {                                                                                         \
        return beam_search("fastlsm_beam_search_" #I #S, config, input_ids, is32, batch,     \
                           prompt_len, vocab, DT, (void *)step, user_data, sequences,         \
                           lengths, sequence_scores, token_logprobs, out_width);              \
    }
#define BEAM_SEARCH_ENTRY(S, P, R, DT)                                                        \
    BEAM_SEARCH_ENTRY_IDS(S, R, DT, , int64_t, 0)                                             \
    BEAM_SEARCH_ENTRY_IDS(S, R, DT, i32_, int32_t, 1)

FASTLSM_DTYPES_beam_advance(BEAM_SEARCH_ENTRY)
