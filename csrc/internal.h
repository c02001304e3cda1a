/*
 * internal.h -- helpers shared by the core's .c files (not installed, not public).
 *
 * Size arithmetic is checked here once: every public entry point turns its int64_t
 * dimensions into element and byte counts through cs_mul/cs_alloc, which refuse
 * negative sizes and products that overflow int64_t or size_t.
 */
#ifndef CORRSTEER_INTERNAL_H
#define CORRSTEER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "corrsteer.h"

/* No contraction of a*b+c into an FMA anywhere in the core: the SIMD builds of a loop
 * (internal.h's dispatch below) must round alike, and a target("avx512f") function
 * has FMA available where the plain one has not. The build passes -ffp-contract=off;
 * the C99 pragma keeps a build without that flag honest too. Clang honours it (and
 * contracts by default without it); GCC ignores it (warning under -Wall) but never
 * contracts in ISO C mode (-std=c99), so it is given to Clang alone. Deliberate
 * fusion is written as fmaf(). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Rows per GEMM for the whole-sequence kernels; the pooler uses its buffer_rows.
 * OpenBLAS packs W_enc once per call, so fewer, taller calls pack it less often:
 * measured at 512 x 2304 -> 16384, two 256-row chunks ran ~8% slower than one sgemm
 * over all 512 rows, one 512-row chunk in 2048-column blocks within 2%. */
#define CS_ROW_BLOCK 512
/* Floats in one activation tile (rows x columns): 4 MiB, 512 rows x 2048 columns.
 * Far narrower column blocks make each sgemm call too small. The C tests build with
 * a tiny tile so that their small shapes cross many blocks. */
#ifndef CS_TILE_ELEMS
#define CS_TILE_ELEMS (512 * 2048)
#endif

/* At most this many rows go through the streaming sgemm (cs_sgemm_small) instead of
 * BLAS: measured on one thread at 640 and 2304 -> 16384, it beats OpenBLAS by ~2-3x
 * at 8 rows and ~1.3x at 16-24 rows (packing W_enc dominates BLAS there), and loses
 * ~10-20% at 32 rows, where the work turns compute-bound. */
#define CS_SMALL_ROWS 24
/* ... and only while BLAS runs on at most this many threads: the streaming kernel
 * is single-threaded, and OpenBLAS's three passes over W_enc (read, pack, read) on
 * T cores can beat one pass on one core once T >= 3 (an argument, not a measurement:
 * the 2-core development machine cannot show it). */
#define CS_SMALL_MAX_THREADS 2
/* Floats in the streaming kernel's (rows x cols) tile: 512 KiB stays in L2. */
#if CS_TILE_ELEMS < 131072
#define CS_SMALL_TILE_ELEMS CS_TILE_ELEMS
#else
#define CS_SMALL_TILE_ELEMS 131072
#endif

/* *out = a * b; CS_ERR_SIZE for a negative factor, CS_ERR_OVERFLOW on overflow. */
cs_status cs_mul(int64_t a, int64_t b, int64_t *out);
/* Allocate n elements of elem_size bytes (zeroed if zero != 0); n == 0 gives a
 * 1-byte block so that NULL always means failure. */
cs_status cs_alloc(int64_t n, size_t elem_size, int zero, void **out);

/* Row-major sgemm: C (m, n) = A (m, k) @ B (k, n) + beta * C, with leading dims.
 * Checks that every size fits the BLAS integer. */
cs_status cs_sgemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* C (m, n) = A (m, k) @ B (k, n), reading B once in row order (no packing); right
 * for any m but faster than BLAS only for a few rows (CS_SMALL_ROWS). C should be a
 * tile of cs_sgemm_small_cols(m, n) columns so that it stays in cache. The SIMD
 * build is chosen at run time. */
cs_status cs_sgemm_small(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc);
/* 1 if an m-row product should take cs_sgemm_small (m <= CS_SMALL_ROWS and BLAS
 * threads <= CS_SMALL_MAX_THREADS). */
int cs_sgemm_small_wanted(int64_t m);
/* Tile width for cs_sgemm_small: CS_SMALL_TILE_ELEMS / m, a multiple of 16, <= n. */
int64_t cs_sgemm_small_cols(int64_t m, int64_t n);
/* Run-time SIMD dispatch for the hot loops (streaming sgemm, accumulator update):
 * on x86 with GCC or Clang each loop is also compiled for AVX2+FMA and AVX-512F
 * through __attribute__((target)), and the widest build the CPU runs is called; the
 * default build stays portable (no -march). Elsewhere only CS_SIMD_PLAIN exists. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CS_X86_DISPATCH 1
#endif
#if defined(__GNUC__)
#define CS_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define CS_ALWAYS_INLINE inline
#endif
enum { CS_SIMD_PLAIN = 0, CS_SIMD_AVX2 = 1, CS_SIMD_AVX512 = 2 };
/* 1 if this CPU and OS run SIMD level `level` (PLAIN always). */
int cs_simd_supported(int level);
/* The widest level supported here. */
int cs_simd_best(void);
/* cs_sgemm_small with a chosen build (for tests); CS_ERR_ARG if this CPU lacks it. */
cs_status cs_sgemm_small_build(int build, int64_t m, int64_t n, int64_t k, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc);
/* cs_corr_update with a chosen SIMD level (for tests); CS_ERR_ARG if this CPU lacks it. */
cs_status cs_corr_update_simd(int level, cs_corr *acc, const float *z, const double *y,
                              int64_t n);
/* Largest dimension the linked BLAS accepts. */
int64_t cs_blas_int_max(void);

/* Workspace of the fused kernel, sized for chunks of up to rows_cap rows. */
typedef struct cs_work {
    int64_t rows_cap;    /* most rows per chunk */
    int64_t tile_elems;  /* floats in tile */
    float *tile;         /* (rows, cols) GEMM output for one column block */
    float *heap_v;       /* TopK: (rows_cap, k) running selection values */
    int64_t *heap_i;     /* TopK: (rows_cap, k) their feature indices */
    int64_t *heap_n;     /* TopK: (rows_cap) entries held per row */
} cs_work;

cs_status cs_work_init(cs_work *w, const cs_sae *sae, int64_t rows_cap);
void cs_work_free(cs_work *w);
int64_t cs_work_nbytes(const cs_work *w, const cs_sae *sae);

/* Fold m prepared rows (already centred by b_dec if the SAE asks) into the state.
 * xc (m, d_in), seq (m) in [0, n_seq), m <= w->rows_cap. */
cs_status cs_pool_chunk(const cs_sae *sae, cs_work *w, const float *xc, const int64_t *seq,
                        int64_t m, cs_pool_mode mode, float *max_state, double *sum_state,
                        int64_t *counts);

/* ------------------------------------------------------------ accumulator */

/* The accumulator's state: corr.c computes on it, corr_io.c copies it in and out.
 * See corr.c for what each field holds. */
enum { CS_ARR_MEAN, CS_ARR_M2, CS_ARR_MEAN_POS, CS_ARR_N_ACTIVE, CS_ARR_N_POS_ACTIVE,
       CS_ARR_C_ZY, CS_ARR_COUNT };

struct cs_corr {
    int64_t d_sae;
    cs_corr_kind kind;
    int n_arrays;                  /* CS_ARR_COUNT */
    double n, n_pos, mean_y, m2_y;
    double *arr[CS_ARR_COUNT];     /* each (d_sae) */
};

/* 1 if all n values are finite. */
int cs_all_finite(const float *x, int64_t n);

#endif /* CORRSTEER_INTERNAL_H */
