/*
 * The C runtime of libfastlsm.so: errors, start-up, entry-point registration, threads.
 *
 * This file and _capi.c are the body of the cffi embedding module (ffi.set_source in
 * _build.py), which defines before them: Python.h, cffi's embedding glue
 * (cffi_start_python), the build-time constants FASTLSM_BUILD_* (paths of the Python that
 * built the library) and the entry-point table generated from _entries.py.
 *
 * Life of a call:
 *   1. validate the arguments (NULL, sizes, overflow, options) without touching Python;
 *   2. start the runtime once (pthread_once): re-open libpython RTLD_GLOBAL, initialize
 *      Python with an explicit PyConfig (home derived with dladdr from the libpython
 *      actually loaded, module search path from the build), then cffi_start_python(), which
 *      runs the init code (fastlsm__ready); each entry point's Numba @cfuncs are then
 *      compiled/loaded from the cache on its first use (load_entry -> fastlsm__load ->
 *      fastlsm__register), so a host pays only for the entry points it calls;
 *   3. call the serial entry point (one thread configured, a small problem or one row: no
 *      Python involved) or the parallel one (Numba's pool; takes the GIL briefly per
 *      launch): pick(), the Python API's rule;
 *   4. translate the kernel's result: the kernels check targets and tokens themselves and
 *      return the first bad index (checked once), which becomes FASTLSM_ERR_INVALID_TARGET
 *      with that position here.
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

/* ------------------------------------------------------------------ entry points
 * K_<name>, E_COUNT, entry_names and the <name>_fn typedefs are generated from
 * fastlsm/capi/_entries.py (ENTRIES) and pasted before this file by the build. */

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

static int fastlsm__load(const char *name); /* Python (cffi extern "Python", init code) */

/* Entry points are compiled/loaded on first use (each once, under g_load_lock). */
static atomic_int g_loaded[E_COUNT];
static char g_load_error[E_COUNT][512]; /* why an entry point failed to load, if it did */
static pthread_mutex_t g_load_lock = PTHREAD_MUTEX_INITIALIZER;

static void load_entry(int id)
{
    if (atomic_load_explicit(&g_loaded[id], memory_order_acquire)) return;
    pthread_mutex_lock(&g_load_lock);
    if (!atomic_load_explicit(&g_loaded[id], memory_order_relaxed)) {
        g_init_error[0] = '\0';
        if (fastlsm__load(entry_names[id]) != 0) /* takes the GIL */
            snprintf(g_load_error[id], sizeof g_load_error[id], ": %s",
                     g_init_error[0] ? g_init_error : "its kernel failed to load");
        atomic_store_explicit(&g_loaded[id], 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_load_lock);
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

/* The entry point for a problem of `work` elements in `rows` rows, by the rule of the Python
 * API (fastlsm._jit._threads_for): the serial one (the kernel's .serial copy) for one
 * thread, a small problem (under g_serial_work elements: on a shared machine a preempted
 * worker stalls the region for longer than the work takes) or fewer than two rows (each
 * row goes to one thread: a second would only wait); else the parallel one, after setting
 * this host thread's team size. */
static void *pick(int id, int64_t work, int64_t rows)
{
    int n = atomic_load_explicit(&g_num_threads, memory_order_relaxed);
    if (n == 1 || work < g_serial_work || rows < 2 || !entry_par[id]) return entry_ser[id];
    g_set_threads(n);
    return entry_par[id];
}

/* A caller's struct of `size` bytes (its struct_size) over the library's defaults `dst` of
 * `full` bytes: older, smaller structs keep the defaults of the fields they lack. */
static int read_struct(const char *fname, const char *what, void *dst, const void *src,
                       size_t full)
{
    size_t size;
    if (!src) return FASTLSM_OK;
    memcpy(&size, src, sizeof size);
    if (size < sizeof(size_t) || size > full)
        return fail(FASTLSM_ERR_INVALID_ARGUMENT,
                    "%s: %s->struct_size = %zu: %s; start from the fastlsm_*_default_*() "
                    "function, which sets it (this library knows %zu bytes)", fname, what,
                    size, size > full ? "it comes from a newer fastlsm.h than this library's: "
                    "upgrade libfastlsm" : "it is not set", full);
    memcpy((char *)dst + sizeof size, (const char *)src + sizeof size, size - sizeof size);
    return FASTLSM_OK;
}

static int missing(int id)
{
    return fail(FASTLSM_ERR_RUNTIME,
                "fastlsm_%s is not available: the installed fastlsm Python package has no "
                "kernel for it (rebuild the library against a complete package)%s",
                entry_names[id], g_load_error[id]);
}

static int fault(const char *fname)
{
    return fail(FASTLSM_ERR_INTERNAL, "%s: failure injected by FASTLSM_CAPI_FAULT=internal",
                fname);
}

