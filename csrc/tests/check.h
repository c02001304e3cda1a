/*
 * check.h -- a minimal harness for the C unit tests: CHECK records a failure with
 * its line and keeps going; each test's main() returns check_summary().
 * Also a deterministic RNG and the naive references the kernels are checked against.
 */
#ifndef CS_TEST_CHECK_H
#define CS_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corrsteer.h"

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond) do { ++check_count; if (!(cond)) { ++check_failures; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_ST(expr, want) do { cs_status got_ = (expr); ++check_count; if (got_ != (want)) { \
    ++check_failures; fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d\n", __FILE__, \
    __LINE__, #expr, (int)got_, cs_status_to_string(got_), (int)(want)); } } while (0)

static int check_summary(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures == 0 ? 0 : 1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static inline void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static inline uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}
/* uniform in [-1, 1) */
static inline float rng_uniform(void) { return (float)((double)(rng_next() >> 11) / 4503599627370496.0 - 1.0); }

/* Values on the grid scale * {-16..16}/16: with scale a power of two and small
 * d_in, every product and sum in an encode is exact in float32, so the kernel and
 * the double-precision reference agree bit for bit (threshold and TopK ties
 * included, which are frequent on a grid: good for the tie rules). */
static inline float *rand_array(int64_t n, float scale)
{
    float *a = malloc((size_t)n * sizeof(float));
    if (a == NULL) { fprintf(stderr, "test allocation failed\n"); exit(2); }
    for (int64_t i = 0; i < n; ++i) a[i] = scale * (float)((int)(rng_next() % 33) - 16) / 16.0f;
    return a;
}

static inline int close_f(double a, double b, double rtol, double atol)
{
    return fabs(a - b) <= atol + rtol * fabs(b);
}

/* Naive encode of one row, all in double: f (d_sae). */
static inline void naive_encode_row(const cs_sae *s, const float *x, float *f)
{
    double *pre = malloc((size_t)s->d_sae * sizeof(double));
    for (int64_t j = 0; j < s->d_sae; ++j) {
        double acc = s->b_enc[j];
        for (int64_t p = 0; p < s->d_in; ++p) {
            double xv = x[p] - (s->apply_b_dec_to_input ? s->b_dec[p] : 0.0f);
            acc += xv * (double)s->W_enc[p * s->d_sae + j];
        }
        pre[j] = acc;
    }
    for (int64_t j = 0; j < s->d_sae; ++j) {
        if (s->architecture == CS_ARCH_JUMPRELU) f[j] = pre[j] > s->threshold[j] ? (float)pre[j] : 0.0f;
        else if (s->architecture == CS_ARCH_RELU) f[j] = pre[j] > 0 ? (float)pre[j] : 0.0f;
        else f[j] = 0.0f;
    }
    if (s->architecture == CS_ARCH_TOPK) {
        /* k rounds of "largest remaining, lowest index on ties" (strict > in index order) */
        char *taken = calloc((size_t)s->d_sae, 1);
        for (int64_t r = 0; r < s->k; ++r) {
            int64_t best = -1;
            for (int64_t j = 0; j < s->d_sae; ++j)
                if (!taken[j] && (best < 0 || pre[j] > pre[best])) best = j;
            taken[best] = 1;
            f[best] = pre[best] > 0 ? (float)pre[best] : 0.0f;
        }
        free(taken);
    }
    free(pre);
}

#endif
