/*
 * sae.c -- SAE encoding and the fused encode + pool tile kernel.
 *
 *   pre = xc @ W_enc + b_enc,   xc = x - b_dec * [apply_b_dec_to_input]
 *   JumpReLU: f = pre * 1[pre > threshold]     ReLU: f = max(pre, 0)
 *   TopK:     the k largest pre (ties: lower index), ReLU'd, the rest 0
 *
 * The fused kernel (cs_pool_chunk) never materialises (rows, d_sae): it walks d_sae
 * in column blocks sized so that the (rows x cols) tile holds CS_TILE_ELEMS floats
 * (4 MiB), runs one sgemm for all rows of the block, and folds the tile straight into
 * the pooled state (max, or a double sum for mean) in one pass while it is in cache.
 * A few rows (<= CS_SMALL_ROWS, on few BLAS threads) take the streaming
 * cs_sgemm_small instead, which reads W_enc once without packing it, on a tile of at
 * most CS_SMALL_TILE_ELEMS floats that stays in L2; cs_sae_encode does the same.
 * Every f is >= 0 (thresholds are checked >= 0), so a max state starts at 0 and a
 * sequence without rows pools to 0.
 * TopK needs the row's global top-k before pooling: each row keeps a running
 * selection (a k-entry heap whose root is the worst kept entry) across the column
 * blocks; columns arrive in increasing index order, so a candidate equal to the
 * root loses, which is the lower-index tie rule. Only the kept entries are pooled.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

cs_status cs_sae_check(const cs_sae *sae)
{
    if (sae == NULL || sae->W_enc == NULL || sae->b_enc == NULL) return CS_ERR_NULL;
    if (sae->d_in < 1 || sae->d_sae < 1) return CS_ERR_SIZE;
    int64_t elems;
    cs_status st = cs_mul(sae->d_in, sae->d_sae, &elems);
    if (st != CS_OK) return st;
    if (sae->d_in > cs_blas_int_max() || sae->d_sae > cs_blas_int_max()) return CS_ERR_OVERFLOW;
    if (sae->apply_b_dec_to_input && sae->b_dec == NULL) return CS_ERR_NULL;
    switch (sae->architecture) {
    case CS_ARCH_JUMPRELU:
        if (sae->threshold == NULL) return CS_ERR_NULL;
        for (int64_t j = 0; j < sae->d_sae; ++j) {
            const float t = sae->threshold[j];
            if (!(t >= 0.0f) || isinf(t)) return CS_ERR_THRESHOLD;
        }
        return CS_OK;
    case CS_ARCH_RELU:
        return CS_OK;
    case CS_ARCH_TOPK:
        return (sae->k >= 1 && sae->k <= sae->d_sae) ? CS_OK : CS_ERR_ARG;
    }
    return CS_ERR_ARG;
}

/* ------------------------------------------------------------ TopK heap */

/* Entry a is worse than entry b: smaller value, or equal value and higher index. */
static int heap_worse(float va, int64_t ia, float vb, int64_t ib)
{
    return va < vb || (va == vb && ia > ib);
}

static void heap_sift_down(float *v, int64_t *ix, int64_t n, int64_t i)
{
    for (;;) {
        int64_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && heap_worse(v[l], ix[l], v[w], ix[w])) w = l;
        if (r < n && heap_worse(v[r], ix[r], v[w], ix[w])) w = r;
        if (w == i) return;
        float tv = v[i]; v[i] = v[w]; v[w] = tv;
        int64_t ti = ix[i]; ix[i] = ix[w]; ix[w] = ti;
        i = w;
    }
}

/* Offer pre[0..n) (feature indices base..base+n) to a row's running top-k. */
static void heap_offer_block(float *v, int64_t *ix, int64_t *held, int64_t k,
                             const float *pre, const float *bias, int64_t n, int64_t base)
{
    int64_t h = *held;
    for (int64_t j = 0; j < n; ++j) {
        const float val = pre[j] + bias[j];
        if (h < k) {
            int64_t i = h++;
            v[i] = val; ix[i] = base + j;
            while (i > 0) {  /* sift up: the worst entry rises to the root */
                int64_t p = (i - 1) / 2;
                if (!heap_worse(v[i], ix[i], v[p], ix[p])) break;
                float tv = v[i]; v[i] = v[p]; v[p] = tv;
                int64_t ti = ix[i]; ix[i] = ix[p]; ix[p] = ti;
                i = p;
            }
        } else if (val > v[0]) {
            v[0] = val; ix[0] = base + j;
            heap_sift_down(v, ix, h, 0);
        }
    }
    *held = h;
}

/* ------------------------------------------------------------ workspace */

static int64_t tile_cols(int64_t m, int64_t d_sae, int64_t tile_elems)
{
    if (m < 1) m = 1;
    int64_t cols = tile_elems / m;
    if (cols >= d_sae) return d_sae;
    cols = (cols / 16) * 16;
    if (cols < 16) cols = 16;
    return cols < d_sae ? cols : d_sae;
}

cs_status cs_work_init(cs_work *w, const cs_sae *sae, int64_t rows_cap)
{
    memset(w, 0, sizeof(*w));
    if (rows_cap < 1) return CS_ERR_SIZE;
    int64_t full, heap;
    cs_status st = cs_mul(rows_cap, sae->d_sae, &full);
    if (st != CS_OK) return st;
    int64_t floor16;
    if ((st = cs_mul(rows_cap, 16, &floor16)) != CS_OK) return st;
    int64_t want = CS_TILE_ELEMS > floor16 ? CS_TILE_ELEMS : floor16;
    w->rows_cap = rows_cap;
    w->tile_elems = full < want ? full : want;
    if ((st = cs_alloc(w->tile_elems, sizeof(float), 0, (void **)&w->tile)) != CS_OK) goto fail;
    if (sae->architecture == CS_ARCH_TOPK) {
        if ((st = cs_mul(rows_cap, sae->k, &heap)) != CS_OK) goto fail;
        if ((st = cs_alloc(heap, sizeof(float), 0, (void **)&w->heap_v)) != CS_OK) goto fail;
        if ((st = cs_alloc(heap, sizeof(int64_t), 0, (void **)&w->heap_i)) != CS_OK) goto fail;
        if ((st = cs_alloc(rows_cap, sizeof(int64_t), 1, (void **)&w->heap_n)) != CS_OK) goto fail;
    }
    return CS_OK;
fail:
    cs_work_free(w);
    return st;
}

void cs_work_free(cs_work *w)
{
    if (w == NULL) return;
    free(w->tile);
    free(w->heap_v);
    free(w->heap_i);
    free(w->heap_n);
    memset(w, 0, sizeof(*w));
}

int64_t cs_work_nbytes(const cs_work *w, const cs_sae *sae)
{
    int64_t bytes = w->tile_elems * (int64_t)sizeof(float);
    if (w->heap_v != NULL)
        bytes += w->rows_cap * (sae->k * (int64_t)(sizeof(float) + sizeof(int64_t))
                                + (int64_t)sizeof(int64_t));
    return bytes;
}

/* ------------------------------------------------------------ epilogues */

/* dst = max(dst, act(t + bias)) over one tile row; separate loops per architecture
 * keep each one branch-free and vectorisable. */
static void fold_max(const cs_sae *sae, const float *t, const float *bias, const float *thr,
                     int64_t n, float *dst)
{
    if (sae->architecture == CS_ARCH_JUMPRELU) {
        for (int64_t j = 0; j < n; ++j) {
            const float pre = t[j] + bias[j];
            const float f = pre > thr[j] ? pre : 0.0f;
            dst[j] = f > dst[j] ? f : dst[j];
        }
    } else {
        for (int64_t j = 0; j < n; ++j) {
            const float pre = t[j] + bias[j];
            const float f = pre > 0.0f ? pre : 0.0f;
            dst[j] = f > dst[j] ? f : dst[j];
        }
    }
}

static void fold_sum(const cs_sae *sae, const float *t, const float *bias, const float *thr,
                     int64_t n, double *dst)
{
    if (sae->architecture == CS_ARCH_JUMPRELU) {
        for (int64_t j = 0; j < n; ++j) {
            const float pre = t[j] + bias[j];
            dst[j] += (double)(pre > thr[j] ? pre : 0.0f);
        }
    } else {
        for (int64_t j = 0; j < n; ++j) {
            const float pre = t[j] + bias[j];
            dst[j] += (double)(pre > 0.0f ? pre : 0.0f);
        }
    }
}

cs_status cs_pool_chunk(const cs_sae *sae, cs_work *w, const float *xc, const int64_t *seq,
                        int64_t m, cs_pool_mode mode, float *max_state, double *sum_state,
                        int64_t *counts)
{
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const int topk = sae->architecture == CS_ARCH_TOPK;
    const int64_t k = sae->k;
    if (m == 0) return CS_OK;
    if (m > w->rows_cap) return CS_ERR_SIZE;
    const int small = cs_sgemm_small_wanted(m);
    const int64_t cols = small ? cs_sgemm_small_cols(m, d_sae) : tile_cols(m, d_sae, w->tile_elems);
    if (topk) memset(w->heap_n, 0, (size_t)m * sizeof(int64_t));
    for (int64_t c0 = 0; c0 < d_sae; c0 += cols) {
        const int64_t nc = d_sae - c0 < cols ? d_sae - c0 : cols;
        cs_status st = small
            ? cs_sgemm_small(m, nc, d_in, xc, d_in, sae->W_enc + c0, d_sae, w->tile, nc)
            : cs_sgemm(m, nc, d_in, xc, d_in, sae->W_enc + c0, d_sae, 0.0f, w->tile, nc);
        if (st != CS_OK) return st;
        const float *bias = sae->b_enc + c0;
        const float *thr = sae->threshold != NULL ? sae->threshold + c0 : NULL;
        for (int64_t i = 0; i < m; ++i) {
            const float *t = w->tile + i * nc;
            if (topk) {
                heap_offer_block(w->heap_v + i * k, w->heap_i + i * k, &w->heap_n[i], k,
                                 t, bias, nc, c0);
            } else if (mode == CS_POOL_MAX) {
                fold_max(sae, t, bias, thr, nc, max_state + seq[i] * d_sae + c0);
            } else {
                fold_sum(sae, t, bias, thr, nc, sum_state + seq[i] * d_sae + c0);
            }
        }
    }
    for (int64_t i = 0; i < m; ++i) {
        if (topk) {
            const float *v = w->heap_v + i * k;
            const int64_t *ix = w->heap_i + i * k;
            for (int64_t e = 0; e < w->heap_n[i]; ++e) {
                const float f = v[e] > 0.0f ? v[e] : 0.0f;
                if (mode == CS_POOL_MAX) {
                    float *dst = max_state + seq[i] * d_sae + ix[e];
                    if (f > *dst) *dst = f;
                } else {
                    sum_state[seq[i] * d_sae + ix[e]] += (double)f;
                }
            }
        }
        counts[seq[i]] += 1;
    }
    return CS_OK;
}

/* ------------------------------------------------------------ encode */

static void activate_row(const cs_sae *sae, float *row, float *heap_v, int64_t *heap_i)
{
    const int64_t d_sae = sae->d_sae;
    if (sae->architecture == CS_ARCH_TOPK) {
        int64_t held = 0;
        heap_offer_block(heap_v, heap_i, &held, sae->k, row, sae->b_enc, d_sae, 0);
        memset(row, 0, (size_t)d_sae * sizeof(float));
        for (int64_t e = 0; e < held; ++e) row[heap_i[e]] = heap_v[e] > 0.0f ? heap_v[e] : 0.0f;
    } else if (sae->architecture == CS_ARCH_JUMPRELU) {
        const float *b = sae->b_enc, *thr = sae->threshold;
        for (int64_t j = 0; j < d_sae; ++j) {
            const float pre = row[j] + b[j];
            row[j] = pre > thr[j] ? pre : 0.0f;
        }
    } else {
        const float *b = sae->b_enc;
        for (int64_t j = 0; j < d_sae; ++j) {
            const float pre = row[j] + b[j];
            row[j] = pre > 0.0f ? pre : 0.0f;
        }
    }
}

cs_status cs_sae_encode(const cs_sae *sae, const float *x, int64_t n_rows, float *f)
{
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (n_rows < 0) return CS_ERR_SIZE;
    if (n_rows == 0) return CS_OK;
    if (x == NULL || f == NULL) return CS_ERR_NULL;
    int64_t x_elems, f_elems;
    if ((st = cs_mul(n_rows, sae->d_in, &x_elems)) != CS_OK) return st;
    if ((st = cs_mul(n_rows, sae->d_sae, &f_elems)) != CS_OK) return st;
    if (!cs_all_finite(x, x_elems)) return CS_ERR_NONFINITE;

    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const int64_t block = n_rows < CS_ROW_BLOCK ? n_rows : CS_ROW_BLOCK;
    float *xc = NULL, *heap_v = NULL;
    int64_t *heap_i = NULL;
    if (sae->apply_b_dec_to_input) {
        int64_t n;
        if ((st = cs_mul(block, d_in, &n)) != CS_OK) goto fail;
        if ((st = cs_alloc(n, sizeof(float), 0, (void **)&xc)) != CS_OK) goto fail;
    }
    if (sae->architecture == CS_ARCH_TOPK) {
        if ((st = cs_alloc(sae->k, sizeof(float), 0, (void **)&heap_v)) != CS_OK) goto fail;
        if ((st = cs_alloc(sae->k, sizeof(int64_t), 0, (void **)&heap_i)) != CS_OK) goto fail;
    }
    for (int64_t r0 = 0; r0 < n_rows; r0 += block) {
        const int64_t m = n_rows - r0 < block ? n_rows - r0 : block;
        const float *a = x + r0 * d_in;
        if (xc != NULL) {
            for (int64_t i = 0; i < m; ++i)
                for (int64_t p = 0; p < d_in; ++p) xc[i * d_in + p] = a[i * d_in + p] - sae->b_dec[p];
            /* finite x and b_dec can still overflow (3e38 - -3e38) */
            if (!cs_all_finite(xc, m * d_in)) { st = CS_ERR_NONFINITE; goto fail; }
            a = xc;
        }
        float *out = f + r0 * d_sae;
        if (cs_sgemm_small_wanted(m)) {
            const int64_t cols = cs_sgemm_small_cols(m, d_sae);
            for (int64_t c0 = 0; c0 < d_sae && st == CS_OK; c0 += cols)
                st = cs_sgemm_small(m, d_sae - c0 < cols ? d_sae - c0 : cols, d_in, a, d_in,
                                    sae->W_enc + c0, d_sae, out + c0, d_sae);
        } else {
            st = cs_sgemm(m, d_sae, d_in, a, d_in, sae->W_enc, d_sae, 0.0f, out, d_sae);
        }
        if (st != CS_OK) goto fail;
        for (int64_t i = 0; i < m; ++i) activate_row(sae, out + i * d_sae, heap_v, heap_i);
    }
    st = CS_OK;
fail:
    free(xc);
    free(heap_v);
    free(heap_i);
    return st;
}
