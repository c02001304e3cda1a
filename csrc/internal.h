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

/* Rows per GEMM for the whole-sequence kernels; the pooler uses its buffer_rows. */
#define CS_ROW_BLOCK 256
/* Floats in one activation tile (rows x columns): 256 rows x 4096 columns, 4 MiB.
 * Narrower column blocks make each sgemm call too small (measured at 2304 -> 16384,
 * 512 rows: 1024 columns ran ~3x slower than one full-width sgemm, 4096 ~1.3x). The
 * C tests build with a tiny tile so that their small shapes cross many blocks. */
#ifndef CS_TILE_ELEMS
#define CS_TILE_ELEMS (256 * 4096)
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

/* 1 if all n values are finite. */
int cs_all_finite(const float *x, int64_t n);

#endif /* CORRSTEER_INTERNAL_H */
