/*
 * sgemm_small.c -- the small-row streaming sgemm that replaces BLAS for a few rows.
 *
 * cs_sgemm_small computes C = A @ B without packing B, for m <= CS_SMALL_ROWS rows.
 * A BLAS sgemm with m = 8 copies B (W_enc, 151 MB at 2304 -> 16384) into its own
 * panel layout before it multiplies, so it reads B twice and writes it once; with so
 * few rows the work is bound by moving B through memory, and that copy made OpenBLAS
 * ~2.5x slower than this kernel. Here B is read exactly once, in its own row-major
 * order: for each group of 8 rows of B (8 sequential streams, which the hardware
 * prefetchers follow) every row of C takes c[j] += sum_u a[u] * b_u[j] over a
 * 256-column strip, four rows of C at a time so that each loaded b_u[j] serves four
 * FMAs. C (m x n) is the caller's tile, sized to stay in L2. The sum over p runs in
 * index order (c += a_p b_p for p = 0, 1, ...), like a naive dot product. Three
 * builds of the loop are chosen at run time (cpu.c): AVX-512 and AVX2 with explicit
 * fmaf (one rounding per term), and plain C (two roundings per term) for everything
 * else, so the default build stays portable; like BLAS, the builds agree within
 * float32 rounding, not bit for bit. Measured at 8 x 2304 -> 16384 against a
 * sequential sum over B, the FMA builds run at ~0.8-0.9x of that read rate, the
 * plain SSE2 one at ~0.6x. Groups of 4 or 16 rows of B, 2 or 8 rows of C per pass,
 * and software prefetching of the next strip were all slower.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Columns per strip: 8 rows of B x 256 floats (8 KiB) stay in L1 while all the
 * rows of C pass over them. */
#define STRIP 256

/* c += a0 w0 + ... + a7 w7 in that order; fused: one rounding per term (FMA). */
#define MADD(a, b, c) (fused ? fmaf((a), (b), (c)) : (c) + (a) * (b))
#define ROW_STEP(c, a) { \
        float s_ = MADD(a[0], w0[j], c[j]); s_ = MADD(a[1], w1[j], s_); \
        s_ = MADD(a[2], w2[j], s_); s_ = MADD(a[3], w3[j], s_); s_ = MADD(a[4], w4[j], s_); \
        s_ = MADD(a[5], w5[j], s_); s_ = MADD(a[6], w6[j], s_); c[j] = MADD(a[7], w7[j], s_); }

/* C (m, n) += A[:, p:p+8] @ B[p:p+8, :] for one strip of columns [j0, j1). */
static CS_ALWAYS_INLINE void stream_block8(int64_t m, int64_t j0, int64_t j1,
                                           const float *restrict A, int64_t lda,
                                           const float *restrict B, int64_t ldb,
                                           float *restrict C, int64_t ldc, const int fused)
{
    const float *restrict w0 = B, *restrict w1 = w0 + ldb, *restrict w2 = w1 + ldb;
    const float *restrict w3 = w2 + ldb, *restrict w4 = w3 + ldb, *restrict w5 = w4 + ldb;
    const float *restrict w6 = w5 + ldb, *restrict w7 = w6 + ldb;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {
        const float *restrict x0 = A + r * lda, *restrict x1 = x0 + lda;
        const float *restrict x2 = x1 + lda, *restrict x3 = x2 + lda;
        float *restrict c0 = C + r * ldc, *restrict c1 = c0 + ldc;
        float *restrict c2 = c1 + ldc, *restrict c3 = c2 + ldc;
        for (int64_t j = j0; j < j1; ++j) {
            ROW_STEP(c0, x0) ROW_STEP(c1, x1) ROW_STEP(c2, x2) ROW_STEP(c3, x3)
        }
    }
    for (; r < m; ++r) {
        const float *restrict x0 = A + r * lda;
        float *restrict c0 = C + r * ldc;
        for (int64_t j = j0; j < j1; ++j) ROW_STEP(c0, x0)
    }
}

static CS_ALWAYS_INLINE void stream_body(int64_t m, int64_t n, int64_t k,
                                         const float *restrict A, int64_t lda,
                                         const float *restrict B, int64_t ldb,
                                         float *restrict C, int64_t ldc, const int fused)
{
    for (int64_t r = 0; r < m; ++r) memset(C + r * ldc, 0, (size_t)n * sizeof(float));
    int64_t p = 0;
    for (; p + 8 <= k; p += 8)
        for (int64_t j0 = 0; j0 < n; j0 += STRIP)
            stream_block8(m, j0, n - j0 < STRIP ? n : j0 + STRIP, A + p, lda, B + p * ldb, ldb,
                          C, ldc, fused);
    for (; p < k; ++p) {
        const float *restrict b = B + p * ldb;
        for (int64_t r = 0; r < m; ++r) {
            const float a = A[r * lda + p];
            float *restrict c = C + r * ldc;
            for (int64_t j = 0; j < n; ++j) c[j] = MADD(a, b[j], c[j]);
        }
    }
}

typedef void stream_fn(int64_t, int64_t, int64_t, const float *, int64_t, const float *,
                       int64_t, float *, int64_t);

static void stream_plain(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc)
{
    stream_body(m, n, k, A, lda, B, ldb, C, ldc, 0);
}

#if defined(CS_X86_DISPATCH)
__attribute__((target("avx2,fma")))
static void stream_avx2(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float *C, int64_t ldc)
{
    stream_body(m, n, k, A, lda, B, ldb, C, ldc, 1);
}

__attribute__((target("avx512f,avx2,fma")))
static void stream_avx512(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                          const float *B, int64_t ldb, float *C, int64_t ldc)
{
    stream_body(m, n, k, A, lda, B, ldb, C, ldc, 1);
}
#endif

/* The streaming kernel's build for a level, or NULL where the CPU lacks it. */
static stream_fn *stream_build(int level)
{
    if (!cs_simd_supported(level)) return NULL;
#if defined(CS_X86_DISPATCH)
    if (level == CS_SIMD_AVX2) return stream_avx2;
    if (level == CS_SIMD_AVX512) return stream_avx512;
#endif
    return level == CS_SIMD_PLAIN ? stream_plain : NULL;
}

const char *cs_blas_small_rows_isa(void)
{
    static const char *const names[] = {"plain", "avx2+fma", "avx512f+fma"};
    return names[cs_simd_best()];
}

int64_t cs_blas_small_rows_max(void) { return CS_SMALL_ROWS; }

int cs_sgemm_small_wanted(int64_t m)
{
    return m <= CS_SMALL_ROWS && cs_blas_get_num_threads() <= CS_SMALL_MAX_THREADS;
}

int64_t cs_sgemm_small_cols(int64_t m, int64_t n)
{
    if (m < 1) m = 1;
    int64_t cols = CS_SMALL_TILE_ELEMS / m;
    if (cols >= n) return n;
    cols = (cols / 16) * 16;
    return cols < 16 ? 16 : cols;
}

cs_status cs_sgemm_small_build(int build, int64_t m, int64_t n, int64_t k, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc)
{
    if (m < 0 || n < 0 || k < 0 || lda < k || ldb < n || ldc < n) return CS_ERR_SIZE;
    stream_fn *f = stream_build(build);
    if (f == NULL) return CS_ERR_ARG;
    if (m == 0 || n == 0) return CS_OK;
    if (A == NULL || B == NULL || C == NULL) return CS_ERR_NULL;
    f(m, n, k, A, lda, B, ldb, C, ldc);
    return CS_OK;
}

cs_status cs_sgemm_small(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc)
{
    return cs_sgemm_small_build(cs_simd_best(), m, n, k, A, lda, B, ldb, C, ldc);
}
