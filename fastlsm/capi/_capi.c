/*
 * The C side of libfastlsm.so: the exported ABI of fastlsm.h.
 *
 * This file is the body of the cffi embedding module (ffi.set_source in _build.py), which
 * defines before it: Python.h, cffi's embedding glue (cffi_start_python) and the build-time
 * constants FASTLSM_BUILD_* (paths of the Python that built the library).
 *
 * Life of a call:
 *   1. validate the arguments (NULL, sizes, overflow, targets) without touching Python;
 *   2. start the runtime once (pthread_once): re-open libpython RTLD_GLOBAL, initialize
 *      Python with an explicit PyConfig (home derived with dladdr from the libpython
 *      actually loaded, module search path from the build), then cffi_start_python(), which
 *      runs the init code: it compiles/loads the Numba @cfunc entry points and registers
 *      their addresses here (fastlsm__register, fastlsm__ready);
 *   3. call the serial entry point (one thread configured, or a small problem: no Python
 *      involved) or the parallel one (Numba's pool; takes the GIL briefly per launch).
 */

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlsm.h"

/* ------------------------------------------------------------------ errors */

static __thread char tls_error[1024];

static int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
    return status;
}

#define CLEAR_ERROR() (tls_error[0] = '\0')

FASTLSM_API const char *fastlsm_last_error(void) { return tls_error; }

FASTLSM_API const char *fastlsm_strerror(int status)
{
    switch (status) {
    case FASTLSM_OK: return "success";
    case FASTLSM_ERR_NULL_POINTER: return "a required pointer argument is NULL";
    case FASTLSM_ERR_INVALID_SIZE: return "invalid size (negative, or the array size overflows)";
    case FASTLSM_ERR_INVALID_TARGET: return "a target index is out of range";
    case FASTLSM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case FASTLSM_ERR_RUNTIME: return "the fastlsm runtime could not start or lacks a kernel";
    case FASTLSM_ERR_INTERNAL: return "internal error in fastlsm (please report it)";
    default: return "unknown status";
    }
}

FASTLSM_API const char *fastlsm_version_string(void) { return FASTLSM_VERSION_STRING; }
FASTLSM_API int fastlsm_version_number(void) { return FASTLSM_VERSION_NUMBER; }

/* ------------------------------------------------------------------ entry-point table */

enum {
    E_LOG_SOFTMAX_F32, E_LOG_SOFTMAX_F64, E_SOFTMAX_F32, E_SOFTMAX_F64,
    E_LOGSUMEXP_F32, E_LOGSUMEXP_F64, E_CROSS_ENTROPY_F32, E_CROSS_ENTROPY_F64,
    E_SEQUENCE_LOGPROBS_F32, E_SEQUENCE_LOGPROBS_F64, E_BEAM_STEP_F32, E_BEAM_STEP_F64,
    E_BEAM_LAYOUT, E_BEAM_INIT, E_BEAM_FINALIZE, E_BEAM_ADVANCE_F32, E_BEAM_ADVANCE_F64,
    E_COUNT
};

/* Names as registered by fastlsm/capi/_entries.py (suffixed _par / _ser there). */
static const char *const entry_names[E_COUNT] = {
    "log_softmax_f32", "log_softmax_f64", "softmax_f32", "softmax_f64",
    "logsumexp_f32", "logsumexp_f64", "cross_entropy_f32", "cross_entropy_f64",
    "sequence_logprobs_f32", "sequence_logprobs_f64", "beam_step_f32", "beam_step_f64",
    "beam_layout", "beam_init", "beam_finalize", "beam_advance_f32", "beam_advance_f64",
};

static void *entry_par[E_COUNT];
static void *entry_ser[E_COUNT];

/* Written once by the start routine, read after pthread_once (which orders memory). */
static int g_start_status = FASTLSM_ERR_RUNTIME;
static char g_start_error[2048] = "the runtime was not started";
static int g_ready;            /* fastlsm__ready() was called by the init code */
static int g_max_threads = 1;  /* Numba's pool size */
static int64_t g_serial_work = 32768;
static int g_fault_internal;   /* FASTLSM_CAPI_FAULT=internal */
static atomic_int g_num_threads = 1;
static char g_init_error[2048];
static void (*g_set_threads)(int); /* Numba threading layer's set_num_threads (thread-local) */

/* Called from the embedded init code (declared in the cffi cdef). */
static void fastlsm__register(const char *name, void *fn)
{
    size_t n = strlen(name);
    if (n < 4) return;
    for (int i = 0; i < E_COUNT; i++) {
        size_t m = strlen(entry_names[i]);
        if (n == m + 4 && strncmp(name, entry_names[i], m) == 0) {
            if (strcmp(name + m, "_par") == 0) entry_par[i] = fn;
            else if (strcmp(name + m, "_ser") == 0) entry_ser[i] = fn;
            return;
        }
    }
    /* Unknown names come from a newer Python package: ignored (its kernels are unused). */
}

static void fastlsm__ready(const char *version, int max_threads, int num_threads,
                           int64_t serial_work, void *set_num_threads)
{
    if (strcmp(version, FASTLSM_VERSION_STRING) != 0) {
        snprintf(g_init_error, sizeof g_init_error,
                 "libfastlsm %s was built for another version of the Python package (found "
                 "fastlsm %s): rebuild it with `python -m fastlsm.capi build`",
                 FASTLSM_VERSION_STRING, version);
        return;
    }
    g_max_threads = max_threads > 0 ? max_threads : 1;
    if (num_threads < 1) num_threads = 1;
    if (num_threads > g_max_threads) num_threads = g_max_threads;
    atomic_store(&g_num_threads, num_threads);
    g_serial_work = serial_work;
    g_set_threads = (void (*)(int))set_num_threads;
    g_ready = set_num_threads != NULL;
}

static void fastlsm__init_failed(const char *message)
{
    snprintf(g_init_error, sizeof g_init_error, "%s", message);
}

/* ------------------------------------------------------------------ start-up */

static const char *const build_paths[] = {FASTLSM_BUILD_PATHS, NULL};

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f) fclose(f);
    return f != NULL;
}

/* The installation prefix of the libpython loaded in this process (<prefix>/lib/libpython*),
 * if its standard library is there; else the one recorded at build time. */
static void python_home(char *home, size_t size)
{
    Dl_info info;
    snprintf(home, size, "%s", FASTLSM_BUILD_HOME);
    if (dladdr((void *)&Py_InitializeFromConfig, &info) && info.dli_fname) {
        char candidate[PATH_MAX], probe[PATH_MAX + 64];
        snprintf(candidate, sizeof candidate, "%s", info.dli_fname);
        for (int up = 0; up < 2; up++) { /* strip "/libpython3.x.so.1.0", then "/lib" */
            char *slash = strrchr(candidate, '/');
            if (!slash) return;
            *slash = '\0';
        }
        snprintf(probe, sizeof probe, "%s/lib/python%s/os.py", candidate, FASTLSM_BUILD_PYVER);
        if (file_exists(probe)) snprintf(home, size, "%s", candidate);
    }
}

static int set_string(PyConfig *config, wchar_t **field, const char *value, const char *what)
{
    PyStatus st = PyConfig_SetBytesString(config, field, value);
    if (PyStatus_Exception(st)) {
        snprintf(g_start_error, sizeof g_start_error, "cannot set Python's %s to %s: %s", what,
                 value, st.err_msg ? st.err_msg : "unknown error");
        return -1;
    }
    return 0;
}

static int append_path(PyConfig *config, const char *path)
{
    wchar_t *w = Py_DecodeLocale(path, NULL);
    if (!w) {
        snprintf(g_start_error, sizeof g_start_error, "cannot decode path %s", path);
        return -1;
    }
    PyStatus st = PyWideStringList_Append(&config->module_search_paths, w);
    PyMem_RawFree(w);
    if (PyStatus_Exception(st)) {
        snprintf(g_start_error, sizeof g_start_error, "cannot add %s to Python's path", path);
        return -1;
    }
    return 0;
}

/* Initialize Python in isolated mode: nothing is taken from the host's environment
 * (PYTHONHOME, PYTHONPATH, PATH), signal handlers are left alone. */
static int start_python(void)
{
    PyConfig config;
    PyStatus st;
    char home[PATH_MAX];

    python_home(home, sizeof home);
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.site_import = 1;
    config.write_bytecode = 0;
    if (set_string(&config, &config.home, home, "home") != 0 ||
        set_string(&config, &config.program_name, FASTLSM_BUILD_EXECUTABLE, "program name") ||
        set_string(&config, &config.executable, FASTLSM_BUILD_EXECUTABLE, "executable"))
        goto error;

    /* Search path: FASTLSM_PYTHONPATH first (':'-separated), then the builder's sys.path. */
    config.module_search_paths_set = 1;
    const char *extra = getenv("FASTLSM_PYTHONPATH");
    if (extra && *extra) {
        char buf[8192];
        snprintf(buf, sizeof buf, "%s", extra);
        for (char *save = NULL, *p = strtok_r(buf, ":", &save); p; p = strtok_r(NULL, ":", &save))
            if (append_path(&config, p) != 0) goto error;
    }
    for (int i = 0; build_paths[i]; i++)
        if (append_path(&config, build_paths[i]) != 0) goto error;

    st = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(st)) {
        snprintf(g_start_error, sizeof g_start_error,
                 "Python failed to start (home %s): %s%s%s", home,
                 st.func ? st.func : "", st.func ? ": " : "",
                 st.err_msg ? st.err_msg : "unknown error");
        goto error;
    }
    PyConfig_Clear(&config);
    PyEval_SaveThread(); /* release the GIL: kernels run without it */
    return 0;

error:
    PyConfig_Clear(&config);
    return -1;
}

static void start_runtime(void)
{
    const char *fault = getenv("FASTLSM_CAPI_FAULT");
    g_fault_internal = fault && strcmp(fault, "internal") == 0;

    /* Extension modules (numpy, _cffi_backend) need libpython's symbols globally visible,
     * which they are not when the host dlopen()ed us with RTLD_LOCAL. */
    if (!dlopen(FASTLSM_BUILD_LIBPYTHON_SONAME, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL) &&
        !dlopen(FASTLSM_BUILD_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(g_start_error, sizeof g_start_error, "cannot load %s: %s",
                 FASTLSM_BUILD_LIBPYTHON, dlerror());
        return;
    }
    if (!Py_IsInitialized() && start_python() != 0) return;

    if (cffi_start_python() != 0) {
        snprintf(g_start_error, sizeof g_start_error,
                 "the fastlsm runtime failed to start%s%s (Python traceback on stderr)",
                 g_init_error[0] ? ": " : "", g_init_error);
        return;
    }
    if (!g_ready) {
        snprintf(g_start_error, sizeof g_start_error, "%s",
                 g_init_error[0] ? g_init_error : "the init code registered no kernels");
        return;
    }
    g_start_error[0] = '\0';
    g_start_status = FASTLSM_OK;
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int ensure_started(void)
{
    pthread_once(&g_once, start_runtime);
    if (g_start_status != FASTLSM_OK)
        return fail(g_start_status, "fastlsm runtime unavailable: %s", g_start_error);
    return FASTLSM_OK;
}

FASTLSM_API int fastlsm_init(void)
{
    CLEAR_ERROR();
    return ensure_started();
}

FASTLSM_API int fastlsm_set_num_threads(int n)
{
    CLEAR_ERROR();
    int st = n < 1 ? FASTLSM_OK : ensure_started();
    if (st) return st;
    if (n < 1 || n > g_max_threads)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT,
                    "fastlsm_set_num_threads(%d): the thread count must be between 1 and %d "
                    "(set NUMBA_NUM_THREADS before the first call to raise the limit)",
                    n, g_max_threads);
    atomic_store(&g_num_threads, n);
    return FASTLSM_OK;
}

FASTLSM_API int fastlsm_get_num_threads(void)
{
    return ensure_started() == FASTLSM_OK ? atomic_load(&g_num_threads) : 0;
}

FASTLSM_API int fastlsm_max_threads(void)
{
    return ensure_started() == FASTLSM_OK ? g_max_threads : 0;
}

/* ------------------------------------------------------------------ helpers */

/* a * b into *out, failing on negative operands or overflow of int64 / addressable bytes. */
static int checked_size(int64_t a, int64_t b, size_t elem, int64_t *out)
{
    if (a < 0 || b < 0) return -1;
    if (b != 0 && a > INT64_MAX / b) return -1;
    int64_t n = a * b;
    if ((uint64_t)n > (uint64_t)PTRDIFF_MAX / elem) return -1;
    *out = n;
    return 0;
}

/* The entry point for a problem of `work` elements: the serial one for one thread or a
 * small problem, else the parallel one, after setting this host thread's team size. */
static void *pick(int id, int64_t work)
{
    int n = atomic_load_explicit(&g_num_threads, memory_order_relaxed);
    if (n == 1 || work < g_serial_work || !entry_par[id]) return entry_ser[id];
    g_set_threads(n);
    return entry_par[id];
}

static int missing(int id)
{
    return fail(FASTLSM_ERR_RUNTIME,
                "fastlsm_%s is not available: the installed fastlsm Python package has no "
                "kernel for it (rebuild the library against a complete package)",
                entry_names[id]);
}

static int fault(const char *fname)
{
    return fail(FASTLSM_ERR_INTERNAL, "%s: failure injected by FASTLSM_CAPI_FAULT=internal",
                fname);
}

/* ------------------------------------------------------------------ normalizers */

typedef int64_t (*rows_fn)(const void *x, void *out, int64_t rows, int64_t cols);

static int call_rows(int id, const char *fname, const void *x, void *out, int64_t rows,
                     int64_t cols, size_t elem)
{
    int64_t n;
    CLEAR_ERROR();
    if (!x) return fail(FASTLSM_ERR_NULL_POINTER, "%s: x is NULL", fname);
    if (!out) return fail(FASTLSM_ERR_NULL_POINTER, "%s: out is NULL", fname);
    if (checked_size(rows, cols, elem, &n) != 0)
        return fail(FASTLSM_ERR_INVALID_SIZE,
                    "%s: rows=%lld, cols=%lld: sizes must be >= 0 and rows*cols must fit in "
                    "memory", fname, (long long)rows, (long long)cols);
    int st = ensure_started();
    if (st) return st;
    if (g_fault_internal) return fault(fname);
    if (rows == 0) return FASTLSM_OK;
    rows_fn fn = (rows_fn)pick(id, n);
    if (!fn) return missing(id);
    int64_t r = fn(x, out, rows, cols);
    if (r != -1)
        return fail(FASTLSM_ERR_INTERNAL, "%s: the kernel returned the unexpected status %lld",
                    fname, (long long)r);
    return FASTLSM_OK;
}

#define ROWS_ENTRY(name, T, id)                                                         \
    FASTLSM_API int fastlsm_##name(const T *x, T *out, int64_t rows, int64_t cols)     \
    {                                                                                   \
        return call_rows(id, "fastlsm_" #name, x, out, rows, cols, sizeof(T));          \
    }

ROWS_ENTRY(log_softmax_f32, float, E_LOG_SOFTMAX_F32)
ROWS_ENTRY(log_softmax_f64, double, E_LOG_SOFTMAX_F64)
ROWS_ENTRY(softmax_f32, float, E_SOFTMAX_F32)
ROWS_ENTRY(softmax_f64, double, E_SOFTMAX_F64)
ROWS_ENTRY(logsumexp_f32, float, E_LOGSUMEXP_F32)
ROWS_ENTRY(logsumexp_f64, double, E_LOGSUMEXP_F64)

/* ------------------------------------------------------------------ cross-entropy */

typedef int64_t (*ce_fn)(const void *logits, const int64_t *target, int64_t rows, int64_t cols,
                         const void *weight, int64_t has_weight, int64_t ignore_index,
                         double label_smoothing, int64_t reduction, void *loss, void *grad,
                         int64_t has_grad);

#define CE_ENTRY(T, suffix, id, ST)                                                           \
    FASTLSM_API int fastlsm_cross_entropy_##suffix(                                           \
        const T *logits, const int64_t *target, int64_t rows, int64_t cols,                  \
        const T *class_weight, int64_t ignore_index, ST label_smoothing, int reduction,      \
        T *loss, T *grad)                                                                     \
    {                                                                                         \
        static const char fname[] = "fastlsm_cross_entropy_" #suffix;                        \
        int64_t n;                                                                            \
        CLEAR_ERROR();                                                                        \
        if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);     \
        if (!target) return fail(FASTLSM_ERR_NULL_POINTER, "%s: target is NULL", fname);     \
        if (!loss) return fail(FASTLSM_ERR_NULL_POINTER, "%s: loss is NULL", fname);         \
        if (checked_size(rows, cols, sizeof(T), &n) != 0)                                     \
            return fail(FASTLSM_ERR_INVALID_SIZE,                                             \
                        "%s: rows=%lld, cols=%lld: sizes must be >= 0 and rows*cols must "    \
                        "fit in memory", fname, (long long)rows, (long long)cols);           \
        if (reduction != FASTLSM_REDUCTION_NONE && reduction != FASTLSM_REDUCTION_MEAN &&    \
            reduction != FASTLSM_REDUCTION_SUM)                                               \
            return fail(FASTLSM_ERR_INVALID_ARGUMENT,                                         \
                        "%s: reduction=%d is not a fastlsm_reduction (0 none, 1 mean, 2 sum)",\
                        fname, reduction);                                                    \
        if (!(label_smoothing >= 0 && label_smoothing <= 1))                                  \
            return fail(FASTLSM_ERR_INVALID_ARGUMENT,                                         \
                        "%s: label_smoothing=%g must be in [0, 1]", fname,                    \
                        (double)label_smoothing);                                             \
        if (class_weight)                                                                     \
            for (int64_t j = 0; j < cols; j++)                                                \
                if (!(class_weight[j] >= 0))                                                  \
                    return fail(FASTLSM_ERR_INVALID_ARGUMENT,                                 \
                                "%s: class_weight[%lld] = %g: weights must be >= 0", fname,   \
                                (long long)j, (double)class_weight[j]);                       \
        for (int64_t i = 0; i < rows; i++)                                                    \
            if (target[i] != ignore_index && (target[i] < 0 || target[i] >= cols))           \
                return fail(FASTLSM_ERR_INVALID_TARGET,                                       \
                            "%s: target[%lld] = %lld is out of range for %lld classes: "      \
                            "class indices must be in [0, %lld] or equal ignore_index=%lld",  \
                            fname, (long long)i, (long long)target[i], (long long)cols,       \
                            (long long)cols - 1, (long long)ignore_index);                    \
        int st = ensure_started();                                                            \
        if (st) return st;                                                                    \
        if (g_fault_internal) return fault(fname);                                            \
        ce_fn fn = (ce_fn)pick(id, n);                                                        \
        if (!fn) return missing(id);                                                          \
        int64_t r = fn(logits, target, rows, cols, class_weight ? (const void *)class_weight \
                       : (const void *)logits, class_weight != NULL, ignore_index,            \
                       (double)label_smoothing, reduction, loss, grad ? (void *)grad          \
                       : (void *)loss, grad != NULL);                                          \
        if (r != -1)                                                                          \
            return fail(FASTLSM_ERR_INTERNAL, "%s: the kernel returned the unexpected "       \
                        "status %lld", fname, (long long)r);                                  \
        return FASTLSM_OK;                                                                    \
    }

CE_ENTRY(float, f32, E_CROSS_ENTROPY_F32, float)
CE_ENTRY(double, f64, E_CROSS_ENTROPY_F64, double)

/* ------------------------------------------------------------------ sequence scoring */

typedef int64_t (*seq_fn)(const void *logits, const int64_t *tokens, const uint8_t *mask,
                          int64_t has_mask, int64_t batch, int64_t steps, int64_t vocab,
                          void *token_logprobs, int64_t has_token, void *seq_logprobs);

#define SEQ_ENTRY(T, suffix, id)                                                              \
    FASTLSM_API int fastlsm_sequence_logprobs_##suffix(                                       \
        const T *logits, const int64_t *tokens, const uint8_t *mask, int64_t batch,          \
        int64_t steps, int64_t vocab, T *token_logprobs, T *seq_logprobs)                     \
    {                                                                                         \
        static const char fname[] = "fastlsm_sequence_logprobs_" #suffix;                    \
        int64_t bt, n;                                                                        \
        CLEAR_ERROR();                                                                        \
        if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);     \
        if (!tokens) return fail(FASTLSM_ERR_NULL_POINTER, "%s: tokens is NULL", fname);     \
        if (!seq_logprobs)                                                                    \
            return fail(FASTLSM_ERR_NULL_POINTER, "%s: seq_logprobs is NULL", fname);        \
        if (checked_size(batch, steps, sizeof(T), &bt) != 0 ||                                \
            checked_size(bt, vocab, sizeof(T), &n) != 0)                                      \
            return fail(FASTLSM_ERR_INVALID_SIZE,                                             \
                        "%s: batch=%lld, steps=%lld, vocab=%lld: sizes must be >= 0 and "     \
                        "their product must fit in memory", fname, (long long)batch,          \
                        (long long)steps, (long long)vocab);                                  \
        for (int64_t i = 0; i < bt; i++)                                                      \
            if ((!mask || mask[i]) && (tokens[i] < 0 || tokens[i] >= vocab))                 \
                return fail(FASTLSM_ERR_INVALID_TARGET,                                       \
                            "%s: tokens[%lld, %lld] = %lld is outside the vocabulary "        \
                            "[0, %lld)", fname, (long long)(i / steps),                       \
                            (long long)(i % steps), (long long)tokens[i], (long long)vocab);  \
        int st = ensure_started();                                                            \
        if (st) return st;                                                                    \
        if (g_fault_internal) return fault(fname);                                            \
        if (n == 0) { /* nothing to score: every (masked) log-prob and every sum is 0 */     \
            if (token_logprobs) memset(token_logprobs, 0, (size_t)bt * sizeof(T));            \
            for (int64_t b = 0; b < batch; b++) seq_logprobs[b] = 0;                          \
            return FASTLSM_OK;                                                                \
        }                                                                                     \
        seq_fn fn = (seq_fn)pick(id, n);                                                      \
        if (!fn) return missing(id);                                                          \
        int64_t r = fn(logits, tokens, mask ? mask : (const uint8_t *)tokens, mask != NULL,   \
                       batch, steps, vocab,                                                   \
                       token_logprobs ? (void *)token_logprobs : (void *)seq_logprobs,        \
                       token_logprobs != NULL, seq_logprobs);                                 \
        if (r != -1)                                                                          \
            return fail(FASTLSM_ERR_INTERNAL, "%s: the kernel returned the unexpected "       \
                        "status %lld", fname, (long long)r);                                  \
        return FASTLSM_OK;                                                                    \
    }

SEQ_ENTRY(float, f32, E_SEQUENCE_LOGPROBS_F32)
SEQ_ENTRY(double, f64, E_SEQUENCE_LOGPROBS_F64)

/* ------------------------------------------------------------------ beam step */

typedef int64_t (*beam_fn)(const void *logits, const void *beam_scores, int64_t batch,
                           int64_t beams, int64_t vocab, int64_t num_candidates,
                           void *cand_scores, int64_t *cand_tokens, int64_t *cand_beams);

#define BEAM_ENTRY(T, suffix, id)                                                             \
    FASTLSM_API int fastlsm_beam_step_##suffix(                                               \
        const T *logits, const T *beam_scores, int64_t batch, int64_t beams, int64_t vocab,  \
        int64_t num_candidates, T *cand_scores, int64_t *cand_tokens, int64_t *cand_beams)   \
    {                                                                                         \
        static const char fname[] = "fastlsm_beam_step_" #suffix;                            \
        int64_t bk, n, kv, bc;                                                                \
        CLEAR_ERROR();                                                                        \
        if (!logits) return fail(FASTLSM_ERR_NULL_POINTER, "%s: logits is NULL", fname);     \
        if (!beam_scores)                                                                     \
            return fail(FASTLSM_ERR_NULL_POINTER, "%s: beam_scores is NULL", fname);         \
        if (!cand_scores || !cand_tokens || !cand_beams)                                      \
            return fail(FASTLSM_ERR_NULL_POINTER, "%s: cand_%s is NULL", fname,               \
                        !cand_scores ? "scores" : !cand_tokens ? "tokens" : "beams");         \
        if (checked_size(batch, beams, sizeof(T), &bk) != 0 ||                                \
            checked_size(bk, vocab, sizeof(T), &n) != 0 ||                                    \
            checked_size(beams, vocab, 1, &kv) != 0 ||                                        \
            checked_size(batch, num_candidates < 0 ? -1 : num_candidates, sizeof(int64_t),   \
                         &bc) != 0)                                                           \
            return fail(FASTLSM_ERR_INVALID_SIZE,                                             \
                        "%s: batch=%lld, beams=%lld, vocab=%lld, num_candidates=%lld: sizes " \
                        "must be >= 0 and their products must fit in memory", fname,          \
                        (long long)batch, (long long)beams, (long long)vocab,                 \
                        (long long)num_candidates);                                           \
        if (kv == 0)                                                                          \
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: beams=%lld, vocab=%lld: there "    \
                        "are no candidates (beams and vocab must be >= 1)", fname,            \
                        (long long)beams, (long long)vocab);                                  \
        if (num_candidates < 1 || num_candidates > kv)                                        \
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: num_candidates=%lld must be in "   \
                        "[1, beams * vocab = %lld]", fname, (long long)num_candidates,        \
                        (long long)kv);                                                       \
        for (int64_t i = 0; i < bk; i++)                                                      \
            if (beam_scores[i] != beam_scores[i] || beam_scores[i] == (T)INFINITY)           \
                return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: beam_scores[%lld] is NaN or "  \
                            "+inf; use -inf for a dead beam", fname, (long long)i);          \
        int st = ensure_started();                                                            \
        if (st) return st;                                                                    \
        if (g_fault_internal) return fault(fname);                                            \
        if (batch == 0) return FASTLSM_OK;                                                    \
        beam_fn fn = (beam_fn)pick(id, n);                                                    \
        if (!fn) return missing(id);                                                          \
        int64_t r = fn(logits, beam_scores, batch, beams, vocab, num_candidates, cand_scores, \
                       cand_tokens, cand_beams);                                              \
        if (r >= 0 && r < bk)                                                                 \
            return fail(FASTLSM_ERR_INVALID_ARGUMENT, "%s: logits[%lld, %lld] contains NaN "  \
                        "or +inf; mask tokens with -inf instead", fname,                      \
                        (long long)(r / beams), (long long)(r % beams));                      \
        if (r != -1)                                                                          \
            return fail(FASTLSM_ERR_INTERNAL, "%s: the kernel returned the unexpected "       \
                        "status %lld", fname, (long long)r);                                  \
        return FASTLSM_OK;                                                                    \
    }

BEAM_ENTRY(float, f32, E_BEAM_STEP_F32)
BEAM_ENTRY(double, f64, E_BEAM_STEP_F64)

/* ------------------------------------------------------------------ beam-search decoder */

FASTLSM_API fastlsm_beam_search_config fastlsm_beam_search_default_config(void)
{
    fastlsm_beam_search_config c;
    memset(&c, 0, sizeof c);
    c.num_beams = 4;
    c.max_new_tokens = 20;
    c.eos_token_ids = NULL;
    c.num_eos_token_ids = 0;
    c.pad_token_id = -1;
    c.length_penalty = 1.0;
    c.early_stopping = FASTLSM_EARLY_STOPPING_HEURISTIC;
    c.num_return_sequences = 1;
    c.min_new_tokens = 0;
    c.no_repeat_ngram_size = 0;
    c.repetition_penalty = 1.0;
    c.patience = 1.0;
    c.renormalize = 0;
    return c;
}

typedef int64_t (*layout_fn)(const int64_t *cfg, int64_t cfg_len, int64_t *layout);
typedef int64_t (*init_fn)(const int64_t *cfg, int64_t cfg_len, const double *fcfg,
                           const int64_t *input_ids, int64_t batch, int64_t prompt_len,
                           double *fstate, int64_t fsize, int64_t *istate, int64_t isize);
typedef int64_t (*advance_fn)(const int64_t *cfg, int64_t cfg_len, const double *fcfg,
                              double *fstate, int64_t fsize, int64_t *istate, int64_t isize,
                              void *logits, int64_t rows, int64_t vocab);
typedef int64_t (*finalize_fn)(const int64_t *cfg, int64_t cfg_len, const double *fcfg,
                               double *fstate, int64_t fsize, int64_t *istate, int64_t isize,
                               int64_t *out_seqs, double *out_scores, double *out_logp,
                               int64_t *out_len, int64_t nout, int64_t max_len,
                               int64_t max_new);

/* Validate, run and finish a search; is_f64 selects the logits type. Every buffer the state
 * machine needs is allocated here and freed before returning. */
static int beam_search(const char *fname, const fastlsm_beam_search_config *c,
                       const int64_t *input_ids, int64_t batch, int64_t prompt_len,
                       int64_t vocab, int is_f64, void *step, void *user_data,
                       int64_t *sequences, int64_t *lengths, void *sequence_scores,
                       void *token_logprobs, int64_t *out_width)
{
    const size_t elem = is_f64 ? sizeof(double) : sizeof(float);
    int64_t rows, max_len, tmp, nh, nc;
    CLEAR_ERROR();
    if (!c) return fail(FASTLSM_ERR_NULL_POINTER, "%s: config is NULL", fname);
    if (!input_ids) return fail(FASTLSM_ERR_NULL_POINTER, "%s: input_ids is NULL", fname);
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
#define BAD_CONFIG(cond, ...) \
    if (cond) return fail(FASTLSM_ERR_INVALID_ARGUMENT, __VA_ARGS__)
    BAD_CONFIG(batch == 0, "%s: batch must be >= 1 (at least one prompt)", fname);
    BAD_CONFIG(vocab == 0, "%s: vocab must be >= 1", fname);
    BAD_CONFIG(c->num_beams < 1, "%s: num_beams=%lld must be >= 1", fname,
               (long long)c->num_beams);
    BAD_CONFIG(c->max_new_tokens < 1, "%s: max_new_tokens=%lld must be >= 1", fname,
               (long long)c->max_new_tokens);
    BAD_CONFIG(c->num_return_sequences < 1 || c->num_return_sequences > c->num_beams,
               "%s: num_return_sequences=%lld must be in [1, num_beams=%lld]", fname,
               (long long)c->num_return_sequences, (long long)c->num_beams);
    BAD_CONFIG(c->min_new_tokens < 0, "%s: min_new_tokens=%lld must be >= 0", fname,
               (long long)c->min_new_tokens);
    BAD_CONFIG(c->no_repeat_ngram_size < 0, "%s: no_repeat_ngram_size=%lld must be >= 0",
               fname, (long long)c->no_repeat_ngram_size);
    BAD_CONFIG(!isfinite(c->length_penalty), "%s: length_penalty must be finite", fname);
    BAD_CONFIG(!(c->repetition_penalty > 0) || !isfinite(c->repetition_penalty),
               "%s: repetition_penalty=%g must be > 0", fname, c->repetition_penalty);
    BAD_CONFIG(c->early_stopping < 0 || c->early_stopping > 2,
               "%s: early_stopping=%d is not a fastlsm_early_stopping", fname,
               c->early_stopping);
    BAD_CONFIG(!(c->patience > 0) || !(c->patience * (double)c->num_beams < 9e15),
               "%s: patience=%g must be > 0", fname, c->patience);
    nh = (int64_t)nearbyint(c->patience * (double)c->num_beams); /* Python's round() */
    BAD_CONFIG(nh < 1 || c->num_return_sequences > nh,
               "%s: round(num_beams * patience) = %lld hypotheses are kept: it must be >= 1 "
               "and >= num_return_sequences=%lld", fname, (long long)nh,
               (long long)c->num_return_sequences);
    for (int64_t i = 0; i < c->num_eos_token_ids; i++)
        BAD_CONFIG(c->eos_token_ids[i] < 0, "%s: eos_token_ids[%lld] = %lld must be >= 0",
                   fname, (long long)i, (long long)c->eos_token_ids[i]);
    if (checked_size(batch, c->num_beams, 1, &rows) != 0 ||
        c->max_new_tokens > INT64_MAX / 4 - prompt_len ||
        checked_size(rows, (max_len = prompt_len + c->max_new_tokens), 64, &tmp) != 0 ||
        checked_size(rows, vocab, elem, &tmp) != 0 ||
        checked_size(batch * nh, c->max_new_tokens, 16, &tmp) != 0 ||
        checked_size(rows, 2 * max_len + c->num_eos_token_ids, 16, &tmp) != 0 ||
        checked_size(rows, 2 * (c->num_eos_token_ids + 2), 16, &tmp) != 0)
        return fail(FASTLSM_ERR_INVALID_SIZE, "%s: the search state for batch=%lld, "
                    "num_beams=%lld, prompt_len=%lld, max_new_tokens=%lld, vocab=%lld does "
                    "not fit in memory", fname, (long long)batch, (long long)c->num_beams,
                    (long long)prompt_len, (long long)c->max_new_tokens, (long long)vocab);
    nc = (c->num_eos_token_ids + 1 > 2 ? c->num_eos_token_ids + 1 : 2) * c->num_beams;
    BAD_CONFIG(nc > c->num_beams * vocab, "%s: vocab=%lld is too small for num_beams=%lld "
               "with %lld EOS id(s): beam search needs %lld candidates out of beams * vocab",
               fname, (long long)vocab, (long long)c->num_beams,
               (long long)c->num_eos_token_ids, (long long)nc);
    for (int64_t i = 0; i < batch * prompt_len; i++)
        BAD_CONFIG(input_ids[i] < 0, "%s: input_ids[%lld, %lld] = %lld must be >= 0", fname,
                   (long long)(i / prompt_len), (long long)(i % prompt_len),
                   (long long)input_ids[i]);
#undef BAD_CONFIG
    int st = ensure_started();
    if (st) return st;
    if (g_fault_internal) return fault(fname);
    int adv_id = is_f64 ? E_BEAM_ADVANCE_F64 : E_BEAM_ADVANCE_F32;
    if (!entry_ser[E_BEAM_LAYOUT]) return missing(E_BEAM_LAYOUT);
    if (!entry_ser[E_BEAM_INIT]) return missing(E_BEAM_INIT);
    if (!entry_ser[E_BEAM_FINALIZE]) return missing(E_BEAM_FINALIZE);
    if (!entry_ser[adv_id]) return missing(adv_id);

    const int64_t n_eos = c->num_eos_token_ids, nret = c->num_return_sequences;
    const int64_t nout = batch * nret, g = c->max_new_tokens, cfg_len = BEAM_CFG_SIZE + n_eos;
    int64_t layout[BEAM_LAYOUT_SIZE];
    double fcfg[BEAM_FCFG_SIZE] = {0};
    int64_t *cfg = calloc((size_t)cfg_len, sizeof *cfg);
    int64_t *istate = NULL, *seqbuf = NULL, *parents = NULL, *out_len = NULL;
    double *fstate = NULL, *out_scores = NULL, *out_logp = NULL;
    void *logits = NULL;
    int result = FASTLSM_OK;
    if (!cfg) return fail(FASTLSM_ERR_RUNTIME, "%s: out of memory", fname);
    cfg[BEAM_CFG_BATCH] = batch;
    cfg[BEAM_CFG_BEAMS] = c->num_beams;
    cfg[BEAM_CFG_PROMPT_LEN] = prompt_len;
    cfg[BEAM_CFG_MAX_LEN] = max_len;
    cfg[BEAM_CFG_CANDIDATES] = nc;
    cfg[BEAM_CFG_MAX_HYPS] = nh;
    cfg[BEAM_CFG_EARLY_STOPPING] = c->early_stopping;
    cfg[BEAM_CFG_MIN_NEW_TOKENS] = c->min_new_tokens;
    cfg[BEAM_CFG_NO_REPEAT_NGRAM] = c->no_repeat_ngram_size;
    cfg[BEAM_CFG_RENORMALIZE] = c->renormalize != 0;
    cfg[BEAM_CFG_PAD] = c->pad_token_id >= 0 ? c->pad_token_id
                        : n_eos > 0 ? c->eos_token_ids[0] : -1;
    cfg[BEAM_CFG_NUM_EOS] = n_eos;
    for (int64_t i = 0; i < n_eos; i++) cfg[BEAM_CFG_EOS + i] = c->eos_token_ids[i];
    fcfg[BEAM_FCFG_LENGTH_PENALTY] = c->length_penalty;
    fcfg[BEAM_FCFG_REPETITION_PENALTY] = c->repetition_penalty;

#define CLEANUP(status, ...) do { result = fail(status, __VA_ARGS__); goto done; } while (0)
    if (((layout_fn)entry_ser[E_BEAM_LAYOUT])(cfg, cfg_len, layout) != 0)
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
    if (((init_fn)entry_ser[E_BEAM_INIT])(cfg, cfg_len, fcfg, input_ids, batch, prompt_len,
                                          fstate, fsize, istate, isize) != BEAM_RUNNING)
        CLEANUP(FASTLSM_ERR_INTERNAL, "%s: the decoder failed to start", fname);

    for (int64_t s = 0;; s++) {
        const int64_t cur = istate[BEAM_ST_CUR_LEN];
        const int64_t *running = istate + layout[BEAM_L_SEQS];
        for (int64_t r = 0; r < rows; r++)
            memcpy(seqbuf + r * cur, running + r * max_len, (size_t)cur * sizeof *seqbuf);
        if (s > 0)
            memcpy(parents, istate + layout[BEAM_L_PARENTS], (size_t)rows * sizeof *parents);
        int rc = is_f64
            ? ((fastlsm_step_fn_f64)step)(user_data, seqbuf, rows, cur, s ? parents : NULL,
                                           logits)
            : ((fastlsm_step_fn_f32)step)(user_data, seqbuf, rows, cur, s ? parents : NULL,
                                           logits);
        if (rc != 0)
            CLEANUP(FASTLSM_ERR_INVALID_ARGUMENT, "%s: step %lld: the step callback returned "
                    "%d", fname, (long long)s, rc);
        advance_fn adv = (advance_fn)pick(adv_id, rows * vocab);
        int64_t status = adv(cfg, cfg_len, fcfg, fstate, fsize, istate, isize, logits, rows,
                             vocab);
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
    int64_t width = ((finalize_fn)entry_ser[E_BEAM_FINALIZE])(
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
    free(out_len), free(out_scores), free(out_logp);
    return result;
}

FASTLSM_API int fastlsm_beam_search_f32(const fastlsm_beam_search_config *config,
                                        const int64_t *input_ids, int64_t batch,
                                        int64_t prompt_len, int64_t vocab,
                                        fastlsm_step_fn_f32 step, void *user_data,
                                        int64_t *sequences, int64_t *lengths,
                                        float *sequence_scores, float *token_logprobs,
                                        int64_t *out_width)
{
    return beam_search("fastlsm_beam_search_f32", config, input_ids, batch, prompt_len, vocab,
                       0, (void *)step, user_data, sequences, lengths, sequence_scores,
                       token_logprobs, out_width);
}

FASTLSM_API int fastlsm_beam_search_f64(const fastlsm_beam_search_config *config,
                                        const int64_t *input_ids, int64_t batch,
                                        int64_t prompt_len, int64_t vocab,
                                        fastlsm_step_fn_f64 step, void *user_data,
                                        int64_t *sequences, int64_t *lengths,
                                        double *sequence_scores, double *token_logprobs,
                                        int64_t *out_width)
{
    return beam_search("fastlsm_beam_search_f64", config, input_ids, batch, prompt_len, vocab,
                       1, (void *)step, user_data, sequences, lengths, sequence_scores,
                       token_logprobs, out_width);
}
