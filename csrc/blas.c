/*
 * blas.c -- the only file that knows which BLAS is linked.
 *
 * cs_sgemm computes C (m, n) = A (m, k) @ B (k, n) + beta * C, row-major with
 * leading dimensions. Build switches (set by setup.py / the Makefile):
 *   CS_BLAS_SCIPY  OpenBLAS from the scipy-openblas32 wheel (symbols prefixed scipy_)
 *   CS_BLAS_NONE   a naive C99 sgemm (i-p-j order so the inner loop vectorises)
 *   (neither)      a system OpenBLAS through <cblas.h>, unprefixed
 * Every dimension is checked against the BLAS integer (32-bit int here) first.
 * Few-row products skip BLAS for the streaming kernel in sgemm_small.c.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#if defined(CS_BLAS_NONE)

#define CS_BLAS_NAME "none"

static void naive_sgemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < m; ++i) {
        float *c = C + i * ldc;
        if (beta == 0.0f) {
            memset(c, 0, (size_t)n * sizeof(float));
        } else if (beta != 1.0f) {
            for (int64_t j = 0; j < n; ++j) c[j] *= beta;
        }
        for (int64_t p = 0; p < k; ++p) {
            const float a = A[i * lda + p];
            const float *b = B + p * ldb;
            for (int64_t j = 0; j < n; ++j) c[j] += a * b[j];
        }
    }
}

const char *cs_blas_config(void) { return "naive C99 sgemm (CORRSTEER_BLAS=none)"; }
int cs_blas_get_num_threads(void) { return 1; }
void cs_blas_set_num_threads(int n) { (void)n; }
int64_t cs_blas_int_max(void) { return INT64_MAX; }

#else /* an OpenBLAS */

#include <cblas.h>

#if defined(CS_BLAS_SCIPY)
#define CS_BLAS_NAME "scipy-openblas"
#define CS_CBLAS_SGEMM scipy_cblas_sgemm
#define CS_OPENBLAS_CONFIG scipy_openblas_get_config
#define CS_OPENBLAS_GET_THREADS scipy_openblas_get_num_threads
#define CS_OPENBLAS_SET_THREADS scipy_openblas_set_num_threads
#else
#define CS_BLAS_NAME "system"
#define CS_CBLAS_SGEMM cblas_sgemm
#define CS_OPENBLAS_CONFIG openblas_get_config
#define CS_OPENBLAS_GET_THREADS openblas_get_num_threads
#define CS_OPENBLAS_SET_THREADS openblas_set_num_threads
#endif

const char *cs_blas_config(void)
{
    const char *cfg = CS_OPENBLAS_CONFIG();
    return cfg != NULL ? cfg : "unknown";
}
int cs_blas_get_num_threads(void) { return CS_OPENBLAS_GET_THREADS(); }
void cs_blas_set_num_threads(int n)
{
    if (n >= 1) CS_OPENBLAS_SET_THREADS(n);
}
int64_t cs_blas_int_max(void) { return (int64_t)INT_MAX; }

#endif

const char *cs_blas_name(void) { return CS_BLAS_NAME; }

cs_status cs_sgemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    const int64_t lim = cs_blas_int_max();
    if (m < 0 || n < 0 || k < 0 || lda < k || ldb < n || ldc < n) return CS_ERR_SIZE;
    if (m > lim || n > lim || k > lim || lda > lim || ldb > lim || ldc > lim)
        return CS_ERR_OVERFLOW;
    if (m == 0 || n == 0) return CS_OK;
#if defined(CS_BLAS_NONE)
    naive_sgemm(m, n, k, A, lda, B, ldb, beta, C, ldc);
#else
    CS_CBLAS_SGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                   A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#endif
    return CS_OK;
}
