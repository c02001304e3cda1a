/*
 * pool.c -- fused encode + masked pooling over whole sequences, tagged rows, and a
 * streaming pooler for generation.
 *
 *   max:  z[s] = max(0, max_{rows r of s} f(x_r))
 *   mean: z[s] = sum_{rows r of s} f(x_r) / count[s], 0 when count[s] == 0
 *
 * The mean is finalised in one place, cs_pool_finalize, for every path (whole
 * sequences, tagged rows, the pooler): (float)(sum * (1.0 / count)), the double
 * sum times the double reciprocal, rounded once to float. Every path therefore
 * gives the same bits for the same rows.
 *
 * Rows to pool are gathered (and centred by b_dec if the SAE asks) into chunks and
 * handed to cs_pool_chunk (sae.c), which runs one sgemm per column block for the
 * whole chunk. Sums are kept in double so a mean over thousands of tokens loses
 * nothing to float32 rounding. The pooler buffers up to buffer_rows rows between
 * flushes: GEMM on 8 rows is bound by reading W_enc, on 256 rows by arithmetic, and
 * max/sum are associative, so deferring the fold changes no result. Its memory is
 * the pooled state plus the buffer, independent of how many tokens are generated.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Row r's sequence: seq[r] if seq is given, else r / n_tok where mask allows. */
static int64_t row_seq(int64_t r, const int64_t *seq, const uint8_t *mask, int64_t n_tok)
{
    if (seq != NULL) return seq[r];
    if (mask != NULL && mask[r] == 0) return -1;
    return r / n_tok;
}

/* Copy (and centre) one row; 1 if the copy, which alone is encoded, is finite. The
 * callers checked x before, but another thread may write into it meanwhile, and
 * x - b_dec can overflow: a NaN row would vanish from a max silently. */
static int copy_row(const cs_sae *sae, const float *src, float *dst)
{
    if (sae->apply_b_dec_to_input) {
        for (int64_t p = 0; p < sae->d_in; ++p) dst[p] = src[p] - sae->b_dec[p];
    } else {
        memcpy(dst, src, (size_t)sae->d_in * sizeof(float));
    }
    return cs_all_finite(dst, sae->d_in);
}

/* Fold rows [0, n_rows) of x into the state. Each row's sequence and values are read
 * once, and what is read is what is checked (the callers checked before, but the
 * caller's arrays may change meanwhile: an index must never be trusted twice). */
static cs_status gather_and_pool(const cs_sae *sae, const float *x, int64_t n_rows,
                                 const int64_t *seq, const uint8_t *mask, int64_t n_tok,
                                 int64_t n_seq, cs_pool_mode mode, float *max_state,
                                 double *sum_state, int64_t *counts)
{
    int64_t n_valid = 0;
    for (int64_t r = 0; r < n_rows; ++r) n_valid += row_seq(r, seq, mask, n_tok) >= 0;
    if (n_valid == 0) return CS_OK;
    const int64_t cap = n_valid < CS_ROW_BLOCK ? n_valid : CS_ROW_BLOCK;
    cs_work w;
    float *xc = NULL;
    int64_t *sc = NULL, n_x;
    cs_status st = cs_work_init(&w, sae, cap);
    if (st != CS_OK) return st;
    if ((st = cs_mul(cap, sae->d_in, &n_x)) != CS_OK) goto fail;
    if ((st = cs_alloc(n_x, sizeof(float), 0, (void **)&xc)) != CS_OK) goto fail;
    if ((st = cs_alloc(cap, sizeof(int64_t), 0, (void **)&sc)) != CS_OK) goto fail;
    int64_t m = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t s = row_seq(r, seq, mask, n_tok);
        if (s < -1 || s >= n_seq) { st = CS_ERR_INDEX; goto fail; }
        if (s < 0) continue;
        if (!copy_row(sae, x + r * sae->d_in, xc + m * sae->d_in)) { st = CS_ERR_NONFINITE; goto fail; }
        sc[m++] = s;
        if (m == cap) {
            if ((st = cs_pool_chunk(sae, &w, xc, sc, m, mode, max_state, sum_state, counts)) != CS_OK)
                goto fail;
            m = 0;
        }
    }
    st = cs_pool_chunk(sae, &w, xc, sc, m, mode, max_state, sum_state, counts);
fail:
    cs_work_free(&w);
    free(xc);
    free(sc);
    return st;
}

static cs_status check_rows(const cs_sae *sae, const float *x, int64_t n_rows)
{
    int64_t n_x;
    cs_status st = cs_mul(n_rows, sae->d_in, &n_x);
    if (st != CS_OK) return st;
    if (n_rows > 0 && x == NULL) return CS_ERR_NULL;
    return cs_all_finite(x, n_x) ? CS_OK : CS_ERR_NONFINITE;
}

cs_status cs_sae_pool_rows(const cs_sae *sae, const float *x, const int64_t *seq,
                           int64_t n_rows, int64_t n_seq, cs_pool_mode mode,
                           float *max_state, double *sum_state, int64_t *counts)
{
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (n_rows < 0 || n_seq < 1) return CS_ERR_SIZE;
    if (mode != CS_POOL_MAX && mode != CS_POOL_MEAN) return CS_ERR_ARG;
    if (counts == NULL || (n_rows > 0 && seq == NULL)) return CS_ERR_NULL;
    if (mode == CS_POOL_MAX ? max_state == NULL : sum_state == NULL) return CS_ERR_NULL;
    int64_t n_state;
    if ((st = cs_mul(n_seq, sae->d_sae, &n_state)) != CS_OK) return st;
    if ((st = check_rows(sae, x, n_rows)) != CS_OK) return st;
    for (int64_t r = 0; r < n_rows; ++r)
        if (seq[r] < -1 || seq[r] >= n_seq) return CS_ERR_INDEX;
    return gather_and_pool(sae, x, n_rows, seq, NULL, 1, n_seq, mode, max_state, sum_state, counts);
}

cs_status cs_sae_encode_pooled(const cs_sae *sae, const float *x, const uint8_t *mask,
                               int64_t n_seq, int64_t n_tok, cs_pool_mode mode, float *z)
{
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (n_seq < 1 || n_tok < 0) return CS_ERR_SIZE;
    if (mode != CS_POOL_MAX && mode != CS_POOL_MEAN) return CS_ERR_ARG;
    if (z == NULL) return CS_ERR_NULL;
    int64_t n_rows, n_state;
    if ((st = cs_mul(n_seq, n_tok, &n_rows)) != CS_OK) return st;
    if ((st = cs_mul(n_seq, sae->d_sae, &n_state)) != CS_OK) return st;
    if ((st = check_rows(sae, x, n_rows)) != CS_OK) return st;

    double *sum = NULL;
    int64_t *counts = NULL;
    memset(z, 0, (size_t)n_state * sizeof(float));
    if ((st = cs_alloc(n_seq, sizeof(int64_t), 1, (void **)&counts)) != CS_OK) goto fail;
    if (mode == CS_POOL_MEAN &&
        (st = cs_alloc(n_state, sizeof(double), 1, (void **)&sum)) != CS_OK) goto fail;
    st = gather_and_pool(sae, x, n_rows, NULL, mask, n_tok > 0 ? n_tok : 1, n_seq, mode,
                         mode == CS_POOL_MAX ? z : NULL, sum, counts);
    if (st == CS_OK && mode == CS_POOL_MEAN)
        st = cs_pool_finalize(mode, NULL, sum, counts, n_seq, sae->d_sae, z);
fail:
    free(sum);
    free(counts);
    return st;
}

cs_status cs_pool_finalize(cs_pool_mode mode, const float *max_state, const double *sum_state,
                           const int64_t *counts, int64_t n_seq, int64_t d_sae, float *z)
{
    if (mode != CS_POOL_MAX && mode != CS_POOL_MEAN) return CS_ERR_ARG;
    if (n_seq < 1 || d_sae < 1) return CS_ERR_SIZE;
    int64_t n_state;
    cs_status st = cs_mul(n_seq, d_sae, &n_state);
    if (st != CS_OK) return st;
    if (z == NULL) return CS_ERR_NULL;
    if (mode == CS_POOL_MAX) {
        if (max_state == NULL) return CS_ERR_NULL;
        if (z != max_state) memcpy(z, max_state, (size_t)n_state * sizeof(float));
        return CS_OK;
    }
    if (sum_state == NULL || counts == NULL) return CS_ERR_NULL;
    for (int64_t s = 0; s < n_seq; ++s)
        if (counts[s] < 0) return CS_ERR_SIZE;
    for (int64_t s = 0; s < n_seq; ++s) {
        float *zs = z + s * d_sae;
        const double *sum = sum_state + s * d_sae;
        if (counts[s] == 0) {
            memset(zs, 0, (size_t)d_sae * sizeof(float));
            continue;
        }
        const double inv = 1.0 / (double)counts[s];
        for (int64_t j = 0; j < d_sae; ++j) zs[j] = (float)(sum[j] * inv);
    }
    return CS_OK;
}

/* ---------------------------------------------------------------- pooler */

struct cs_pooler {
    int64_t n_seq, d_in, d_sae, k, buffer_rows, n_buf;
    cs_arch architecture;
    int apply_b_dec_to_input;
    cs_pool_mode mode;
    float *buf;          /* (buffer_rows, d_in) rows waiting, already centred */
    int64_t *buf_seq;    /* (buffer_rows) */
    float *max_state;    /* (n_seq, d_sae), mode MAX */
    double *sum_state;   /* (n_seq, d_sae), mode MEAN */
    int64_t *counts;     /* (n_seq) */
    cs_work work;
};

static int pooler_matches(const cs_pooler *p, const cs_sae *sae)
{
    return sae->d_in == p->d_in && sae->d_sae == p->d_sae && sae->architecture == p->architecture
        && (sae->architecture != CS_ARCH_TOPK || sae->k == p->k)
        && (sae->apply_b_dec_to_input != 0) == (p->apply_b_dec_to_input != 0);
}

cs_status cs_pooler_init(cs_pooler **out, const cs_sae *sae, int64_t n_seq,
                         cs_pool_mode mode, int64_t buffer_rows)
{
    if (out == NULL) return CS_ERR_NULL;
    *out = NULL;
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (n_seq < 1 || buffer_rows < 1) return CS_ERR_SIZE;
    if (mode != CS_POOL_MAX && mode != CS_POOL_MEAN) return CS_ERR_ARG;
    int64_t n_state, n_buf;
    if ((st = cs_mul(n_seq, sae->d_sae, &n_state)) != CS_OK) return st;
    if ((st = cs_mul(buffer_rows, sae->d_in, &n_buf)) != CS_OK) return st;
    cs_pooler *p = calloc(1, sizeof(*p));
    if (p == NULL) return CS_ERR_NOMEM;
    p->n_seq = n_seq; p->d_in = sae->d_in; p->d_sae = sae->d_sae; p->k = sae->k;
    p->buffer_rows = buffer_rows; p->architecture = sae->architecture;
    p->apply_b_dec_to_input = sae->apply_b_dec_to_input != 0; p->mode = mode;
    if ((st = cs_work_init(&p->work, sae, buffer_rows)) != CS_OK) goto fail;
    if ((st = cs_alloc(n_buf, sizeof(float), 0, (void **)&p->buf)) != CS_OK) goto fail;
    if ((st = cs_alloc(buffer_rows, sizeof(int64_t), 0, (void **)&p->buf_seq)) != CS_OK) goto fail;
    if ((st = cs_alloc(n_seq, sizeof(int64_t), 1, (void **)&p->counts)) != CS_OK) goto fail;
    if (mode == CS_POOL_MAX)
        st = cs_alloc(n_state, sizeof(float), 1, (void **)&p->max_state);
    else
        st = cs_alloc(n_state, sizeof(double), 1, (void **)&p->sum_state);
    if (st != CS_OK) goto fail;
    *out = p;
    return CS_OK;
fail:
    cs_pooler_free(p);
    return st;
}

void cs_pooler_free(cs_pooler *p)
{
    if (p == NULL) return;
    cs_work_free(&p->work);
    free(p->buf);
    free(p->buf_seq);
    free(p->max_state);
    free(p->sum_state);
    free(p->counts);
    free(p);
}

void cs_pooler_reset(cs_pooler *p)
{
    if (p == NULL) return;
    p->n_buf = 0;
    const size_t n = (size_t)(p->n_seq * p->d_sae);
    if (p->max_state != NULL) memset(p->max_state, 0, n * sizeof(float));
    if (p->sum_state != NULL) memset(p->sum_state, 0, n * sizeof(double));
    memset(p->counts, 0, (size_t)p->n_seq * sizeof(int64_t));
}

cs_status cs_pooler_flush(cs_pooler *p, const cs_sae *sae)
{
    if (p == NULL) return CS_ERR_NULL;
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (!pooler_matches(p, sae)) return CS_ERR_MISMATCH;
    st = cs_pool_chunk(sae, &p->work, p->buf, p->buf_seq, p->n_buf, p->mode,
                       p->max_state, p->sum_state, p->counts);
    p->n_buf = 0;
    return st;
}

cs_status cs_pooler_push(cs_pooler *p, const cs_sae *sae, const float *x,
                         const int64_t *seq, int64_t n_rows)
{
    if (p == NULL) return CS_ERR_NULL;
    cs_status st = cs_sae_check(sae);
    if (st != CS_OK) return st;
    if (!pooler_matches(p, sae)) return CS_ERR_MISMATCH;
    if (n_rows < 0) return CS_ERR_SIZE;
    if (n_rows > 0 && seq == NULL) return CS_ERR_NULL;
    if ((st = check_rows(sae, x, n_rows)) != CS_OK) return st;
    for (int64_t r = 0; r < n_rows; ++r)
        if (seq[r] < -1 || seq[r] >= p->n_seq) return CS_ERR_INDEX;
    const int64_t n_buf0 = p->n_buf;
    int flushed = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t s = seq[r];   /* read once: checked above, but the array may have changed */
        cs_status bad = s < -1 || s >= p->n_seq ? CS_ERR_INDEX : CS_OK;
        if (bad == CS_OK && s < 0) continue;
        if (bad == CS_OK && !copy_row(sae, x + r * p->d_in, p->buf + p->n_buf * p->d_in))
            bad = CS_ERR_NONFINITE;
        if (bad != CS_OK) {
            if (!flushed) p->n_buf = n_buf0;   /* drop this push's rows if none was folded yet */
            return bad;
        }
        p->buf_seq[p->n_buf++] = s;
        flushed |= p->n_buf == p->buffer_rows;
        if (p->n_buf == p->buffer_rows && (st = cs_pooler_flush(p, sae)) != CS_OK) return st;
    }
    return CS_OK;
}

cs_status cs_pooler_result(cs_pooler *p, const cs_sae *sae, float *z, int64_t *counts)
{
    if (p == NULL || z == NULL) return CS_ERR_NULL;
    cs_status st = cs_pooler_flush(p, sae);
    if (st != CS_OK) return st;
    st = cs_pool_finalize(p->mode, p->max_state, p->sum_state, p->counts, p->n_seq, p->d_sae, z);
    if (st != CS_OK) return st;
    if (counts != NULL) memcpy(counts, p->counts, (size_t)p->n_seq * sizeof(int64_t));
    return CS_OK;
}

int64_t cs_pooler_n_seq(const cs_pooler *p) { return p != NULL ? p->n_seq : 0; }
int64_t cs_pooler_buffered(const cs_pooler *p) { return p != NULL ? p->n_buf : 0; }

int64_t cs_pooler_nbytes(const cs_pooler *p)
{
    if (p == NULL) return 0;
    const int64_t state = p->n_seq * p->d_sae * (p->mode == CS_POOL_MAX ? 4 : 8);
    const int64_t buf = p->buffer_rows * (p->d_in * 4 + 8);
    int64_t work = p->work.tile_elems * 4;
    if (p->work.heap_v != NULL) work += p->buffer_rows * (p->k * 12 + 8);
    return (int64_t)sizeof(*p) + state + buf + p->n_seq * 8 + work;
}
