/*
 * threads.c - a multi-threaded host: 8 threads call fastlsm concurrently.
 *
 *     cc threads.c $(python -m fastlsm.capi flags) -lpthread -o threads
 *     ./threads [kernel_threads [host_threads [iterations]]]
 *
 * The main thread computes reference results for a small and a large problem (the large one
 * uses Numba's parallel pool unless kernel_threads is 1); then every host thread recomputes
 * both, many times, and compares them bit for bit with the references. Prints one line per
 * host thread and "all ok" when every result matched.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MAX_HOST_THREADS 64

typedef struct {
    int64_t rows, cols;
    float *x, *ref_lsm;
    double *xd, *ref_lse;
} problem;

typedef struct {
    int id, iterations, mismatches, status;
    const problem *problems;
    int nproblems;
} job;

static int setup(problem *p, int64_t rows, int64_t cols, uint64_t seed)
{
    int64_t n = rows * cols;
    p->rows = rows, p->cols = cols;
    p->x = malloc(n * sizeof *p->x), p->ref_lsm = malloc(n * sizeof *p->ref_lsm);
    p->xd = malloc(n * sizeof *p->xd), p->ref_lse = malloc(rows * sizeof *p->ref_lse);
    if (!p->x || !p->ref_lsm || !p->xd || !p->ref_lse) return FASTLSM_ERR_INTERNAL;
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p->x[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 16.0 - 8.0);
        p->xd[i] = (double)p->x[i];
    }
    int st = fastlsm_log_softmax_f32(p->x, p->ref_lsm, rows, cols);
    return st ? st : fastlsm_logsumexp_f64(p->xd, p->ref_lse, rows, cols);
}

static void *worker(void *arg)
{
    job *j = arg;
    for (int it = 0; it < j->iterations && j->status == FASTLSM_OK; it++) {
        const problem *p = &j->problems[(it + j->id) % j->nproblems];
        int64_t n = p->rows * p->cols;
        float *y = malloc(n * sizeof *y);
        double *r = malloc(p->rows * sizeof *r);
        if (!y || !r) {
            j->status = FASTLSM_ERR_INTERNAL;
        } else {
            j->status = fastlsm_log_softmax_f32(p->x, y, p->rows, p->cols);
            if (j->status == FASTLSM_OK) j->status = fastlsm_logsumexp_f64(p->xd, r, p->rows, p->cols);
            if (j->status == FASTLSM_OK) {
                j->mismatches += memcmp(y, p->ref_lsm, n * sizeof *y) != 0;
                j->mismatches += memcmp(r, p->ref_lse, p->rows * sizeof *r) != 0;
            } else {
                fprintf(stderr, "thread %d: %s\n", j->id, fastlsm_last_error());
            }
        }
        free(y), free(r);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK_VERSION();
    int kernel_threads = argc > 1 ? atoi(argv[1]) : 0;
    int host_threads = argc > 2 ? atoi(argv[2]) : 8;
    int iterations = argc > 3 ? atoi(argv[3]) : 50;
    if (host_threads < 1 || host_threads > MAX_HOST_THREADS) return 2;

    int st = fastlsm_init();
    if (st == FASTLSM_OK && kernel_threads > 0) st = fastlsm_set_num_threads(kernel_threads);
    problem problems[2];
    if (st == FASTLSM_OK) st = setup(&problems[0], 3, 37, 1);      /* serial path */
    if (st == FASTLSM_OK) st = setup(&problems[1], 64, 1000, 2);   /* parallel path */
    if (st != FASTLSM_OK) {
        fprintf(stderr, "setup failed: %s (%s)\n", fastlsm_strerror(st), fastlsm_last_error());
        return 1;
    }
    printf("kernel threads %d, host threads %d, iterations %d\n", fastlsm_get_num_threads(),
           host_threads, iterations);

    pthread_t tid[MAX_HOST_THREADS];
    job jobs[MAX_HOST_THREADS];
    for (int i = 0; i < host_threads; i++) {
        jobs[i] = (job){.id = i, .iterations = iterations, .problems = problems, .nproblems = 2};
        if (pthread_create(&tid[i], NULL, worker, &jobs[i]) != 0) return 1;
    }
    int bad = 0;
    for (int i = 0; i < host_threads; i++) {
        pthread_join(tid[i], NULL);
        printf("thread %d: status %d, mismatches %d\n", i, jobs[i].status, jobs[i].mismatches);
        bad += jobs[i].status != FASTLSM_OK || jobs[i].mismatches != 0;
    }
    for (int i = 0; i < 2; i++)
        free(problems[i].x), free(problems[i].ref_lsm), free(problems[i].xd), free(problems[i].ref_lse);
    if (bad) {
        printf("FAILED\n");
        return 1;
    }
    printf("all ok\n");
    return 0;
}
