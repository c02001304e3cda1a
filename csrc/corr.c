/*
 * corr.c -- streaming point-biserial / Pearson correlation between pooled feature
 * activations z (d_sae per sample) and a reward y, in O(d_sae) memory.
 *
 * State, all double: n, n_pos = sum y, mean_y, m2_y, and per feature
 *   mean      mean of z                       m2      sum (z - mean)^2
 *   mean_pos  sum(y z) / sum(y)  (binary: mean of z over y = 1)
 *   n_active  count z > 0                     n_pos_active  sum y * 1[z > 0]
 *   c_zy      sum (z - mean)(y - mean_y)
 * A batch is reduced exactly in double (two passes: its means, then its centred
 * sums), one block of BLOCK features at a time so that the block's sums stay in L1
 * and a private copy of its slice of z in L2 between the passes (the block loop has
 * AVX2 and AVX-512 builds picked at run time, see internal.h); the reduced batch is
 * then combined with the state by Chan et al.'s pairwise formula
 *   delta = mean_b - mean_a, n = n_a + n_b
 *   mean = mean_a + delta n_b / n,  m2 = m2_a + m2_b + delta^2 n_a n_b / n
 *   c_zy = c_a + c_b + delta_z delta_y n_a n_b / n
 * merge is the same formula, so shards reduce exactly in any order.
 * Result, both kinds: r = c_zy / sqrt(m2 m2_y). For binary y this is exactly
 * METHOD.md's (mean_pos - mean_neg)/sd sqrt(p(1-p)); computing it from the centred
 * co-moment instead of mean_pos - mean avoids cancelling two large means, which
 * costs ~1e-8 relative accuracy on weak features whose activations sit near 1e4.
 * r = 0 for a constant feature (m2 <= CS_CORR_CONST_RTOL n mean^2); every r = 0 and
 * *degenerate = 1 when the rewards are all equal (or n < 2). r is clamped to [-1, 1]
 * against rounding.
 * Serialisation is in corr_io.c.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int kind_valid(cs_corr_kind kind)
{
    return kind == CS_CORR_BINARY || kind == CS_CORR_PEARSON;
}

cs_status cs_corr_init(cs_corr **out, int64_t d_sae, cs_corr_kind kind)
{
    if (out == NULL) return CS_ERR_NULL;
    *out = NULL;
    if (d_sae < 1) return CS_ERR_SIZE;
    if (!kind_valid(kind)) return CS_ERR_ARG;
    int64_t bytes;
    cs_status st = cs_mul(d_sae, (int64_t)CS_ARR_COUNT * (int64_t)sizeof(double), &bytes);
    if (st != CS_OK) return st;
    cs_corr *acc = calloc(1, sizeof(*acc));
    if (acc == NULL) return CS_ERR_NOMEM;
    acc->d_sae = d_sae;
    acc->kind = kind;
    acc->n_arrays = CS_ARR_COUNT;
    for (int a = 0; a < acc->n_arrays; ++a) {
        if ((st = cs_alloc(d_sae, sizeof(double), 1, (void **)&acc->arr[a])) != CS_OK) {
            cs_corr_free(acc);
            return st;
        }
    }
    *out = acc;
    return CS_OK;
}

void cs_corr_free(cs_corr *acc)
{
    if (acc == NULL) return;
    for (int a = 0; a < CS_ARR_COUNT; ++a) free(acc->arr[a]);
    free(acc);
}

void cs_corr_reset(cs_corr *acc)
{
    if (acc == NULL) return;
    acc->n = acc->n_pos = acc->mean_y = acc->m2_y = 0.0;
    for (int a = 0; a < acc->n_arrays; ++a)
        memset(acc->arr[a], 0, (size_t)acc->d_sae * sizeof(double));
}

cs_status cs_corr_copy(cs_corr *dst, const cs_corr *src)
{
    if (dst == NULL || src == NULL) return CS_ERR_NULL;
    if (dst->d_sae != src->d_sae || dst->kind != src->kind) return CS_ERR_MISMATCH;
    dst->n = src->n; dst->n_pos = src->n_pos; dst->mean_y = src->mean_y; dst->m2_y = src->m2_y;
    for (int a = 0; a < src->n_arrays; ++a)
        memcpy(dst->arr[a], src->arr[a], (size_t)src->d_sae * sizeof(double));
    return CS_OK;
}

int64_t cs_corr_d_sae(const cs_corr *acc) { return acc != NULL ? acc->d_sae : 0; }
cs_corr_kind cs_corr_get_kind(const cs_corr *acc) { return acc != NULL ? acc->kind : CS_CORR_BINARY; }
double cs_corr_n(const cs_corr *acc) { return acc != NULL ? acc->n : 0.0; }
double cs_corr_n_pos(const cs_corr *acc) { return acc != NULL ? acc->n_pos : 0.0; }

int64_t cs_corr_nbytes(const cs_corr *acc)
{
    if (acc == NULL) return 0;
    return (int64_t)sizeof(*acc) + (int64_t)acc->n_arrays * acc->d_sae * (int64_t)sizeof(double);
}

/* Fold features [j0, j1) of a reduced batch b (its own n, sum y, mean y and
 * per-feature arrays, b[a][j - j0] for feature j) into acc by Chan's formula. Reads
 * acc's scalars, so combine_scalars runs after every block has been folded. */
static void combine_features(cs_corr *acc, int64_t j0, int64_t j1, double nb, double wb,
                             double mean_yb, const double *const b[CS_ARR_COUNT])
{
    const double na = acc->n, n = na + nb, w = acc->n_pos + wb;
    const double f = nb / n, g = na * nb / n;
    const double dy = mean_yb - acc->mean_y;
    const double wfrac = w > 0.0 ? wb / w : 0.0;
    double *restrict mean = acc->arr[CS_ARR_MEAN] + j0, *restrict m2 = acc->arr[CS_ARR_M2] + j0;
    double *restrict mp = acc->arr[CS_ARR_MEAN_POS] + j0, *restrict act = acc->arr[CS_ARR_N_ACTIVE] + j0;
    double *restrict pact = acc->arr[CS_ARR_N_POS_ACTIVE] + j0, *restrict czy = acc->arr[CS_ARR_C_ZY] + j0;
    const double *restrict bmean = b[CS_ARR_MEAN], *restrict bm2 = b[CS_ARR_M2];
    const double *restrict bmp = b[CS_ARR_MEAN_POS], *restrict bact = b[CS_ARR_N_ACTIVE];
    const double *restrict bpact = b[CS_ARR_N_POS_ACTIVE], *restrict bczy = b[CS_ARR_C_ZY];
    const int64_t len = j1 - j0;
    for (int64_t j = 0; j < len; ++j) {
        const double d = bmean[j] - mean[j];
        czy[j] += bczy[j] + d * dy * g;
        mean[j] += d * f;
        m2[j] += bm2[j] + d * d * g;
        mp[j] += (bmp[j] - mp[j]) * wfrac;
        act[j] += bact[j];
        pact[j] += bpact[j];
    }
}

static void combine_scalars(cs_corr *acc, double nb, double wb, double mean_yb, double m2_yb)
{
    const double na = acc->n, n = na + nb;
    const double dy = mean_yb - acc->mean_y;
    acc->m2_y += m2_yb + dy * dy * (na * nb / n);
    acc->mean_y += dy * (nb / n);
    acc->n = n;
    acc->n_pos += wb;
}

/* Fold all of b (laid out like the state) into acc. */
static void combine(cs_corr *acc, double nb, double wb, double mean_yb, double m2_yb,
                    double *const b[CS_ARR_COUNT])
{
    if (nb <= 0.0) return;
    combine_features(acc, 0, acc->d_sae, nb, wb, mean_yb, (const double *const *)b);
    combine_scalars(acc, nb, wb, mean_yb, m2_yb);
}

static cs_status check_rewards(cs_corr_kind kind, const double *y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) {
        if (!isfinite(y[i])) return CS_ERR_NONFINITE;
        if (kind == CS_CORR_BINARY ? (y[i] != 0.0 && y[i] != 1.0) : (y[i] < 0.0 || y[i] > 1.0))
            return CS_ERR_REWARD;
    }
    return CS_OK;
}

/* Features per block of an update: the block's six double arrays (6 x 4 KiB) stay in
 * L1 while every row of z passes over them, and its (n x BLOCK) copy of z stays in
 * L2 for the second pass. A tall batch takes narrower blocks, so that the copy stays
 * under ZBUF_ELEMS floats (at least 16 columns); the width changes no result. */
#define BLOCK 512
#define ZBUF_ELEMS (512 * 512)

/* Reduce one block of the batch exactly in double (two passes over zb: sums, then
 * centred sums around the batch means) into out[a][0 .. len), laid out like the
 * state. zb (n, len) is the caller's private copy of the block, already checked
 * finite; rows with y = 0 touch only the sum and the active count. Every feature's
 * sums run over the rows in order whatever the vector width, and nothing is
 * contracted into FMAs (-ffp-contract=off and the pragma in internal.h: the AVX-512
 * target has FMA, the others not), so all builds give the same bits. */
static CS_ALWAYS_INLINE void update_block_body(const float *zb, const double *y, int64_t n,
                                               int64_t len, double sy, double mean_yb,
                                               double *const out[CS_ARR_COUNT])
{
    double *restrict mean = out[CS_ARR_MEAN], *restrict m2 = out[CS_ARR_M2];
    double *restrict syz = out[CS_ARR_MEAN_POS], *restrict act = out[CS_ARR_N_ACTIVE];
    double *restrict pact = out[CS_ARR_N_POS_ACTIVE], *restrict czy = out[CS_ARR_C_ZY];
    for (int a = 0; a < CS_ARR_COUNT; ++a) memset(out[a], 0, (size_t)len * sizeof(double));
    for (int64_t i = 0; i < n; ++i) {
        const float *restrict zi = zb + i * len;
        const double yi = y[i];
        /* compares in double so that the selects vectorise (same lane width) */
        for (int64_t j = 0; j < len; ++j) {
            const double zz = (double)zi[j];
            mean[j] += zz;
            act[j] += zz > 0.0 ? 1.0 : 0.0;
        }
        if (yi == 0.0) continue;
        for (int64_t j = 0; j < len; ++j) {
            const double zz = (double)zi[j];
            syz[j] += yi * zz;
            pact[j] += zz > 0.0 ? yi : 0.0;
        }
    }
    const double nb = (double)n;
    for (int64_t j = 0; j < len; ++j) {
        mean[j] /= nb;                           /* now the batch mean */
        syz[j] = sy > 0.0 ? syz[j] / sy : 0.0;   /* now the batch mean_pos */
    }
    for (int64_t i = 0; i < n; ++i) {
        const float *restrict zi = zb + i * len;
        const double dy = y[i] - mean_yb;
        for (int64_t j = 0; j < len; ++j) {
            const double dz = (double)zi[j] - mean[j];
            m2[j] += dz * dz;
            czy[j] += dz * dy;
        }
    }
}

typedef void update_fn(const float *, const double *, int64_t, int64_t, double, double,
                       double *const[CS_ARR_COUNT]);

static void update_block_plain(const float *zb, const double *y, int64_t n, int64_t len,
                               double sy, double mean_yb, double *const out[CS_ARR_COUNT])
{
    update_block_body(zb, y, n, len, sy, mean_yb, out);
}

#if defined(CS_X86_DISPATCH)
/* measured at 64 x 16384: 1.3x (AVX2) and 1.4x (AVX-512) faster than SSE2 */
__attribute__((target("avx2")))
static void update_block_avx2(const float *zb, const double *y, int64_t n, int64_t len,
                              double sy, double mean_yb, double *const out[CS_ARR_COUNT])
{
    update_block_body(zb, y, n, len, sy, mean_yb, out);
}

__attribute__((target("avx512f,avx2")))
static void update_block_avx512(const float *zb, const double *y, int64_t n, int64_t len,
                                double sy, double mean_yb, double *const out[CS_ARR_COUNT])
{
    update_block_body(zb, y, n, len, sy, mean_yb, out);
}
#endif

/* The build for a SIMD level, or NULL where this CPU lacks it. */
static update_fn *update_block_build(int level)
{
    if (!cs_simd_supported(level)) return NULL;
#if defined(CS_X86_DISPATCH)
    if (level == CS_SIMD_AVX512) return update_block_avx512;
    if (level == CS_SIMD_AVX2) return update_block_avx2;
#endif
    return level == CS_SIMD_PLAIN ? update_block_plain : NULL;
}

cs_status cs_corr_update(cs_corr *acc, const float *z, const double *y, int64_t n)
{
    return cs_corr_update_simd(cs_simd_best(), acc, z, y, n);
}

/* Every value of z and y is read from the caller's arrays exactly once, into private
 * copies that are validated and then alone computed on: another thread writing into
 * z or y meanwhile cannot slip a NaN or a bad reward past the checks, nor give the
 * two passes different values. The whole batch is reduced into `stage` before any of
 * it is folded into the state, so an error leaves the state unchanged. */
cs_status cs_corr_update_simd(int level, cs_corr *acc, const float *z, const double *y,
                              int64_t n)
{
    update_fn *update_block = update_block_build(level);
    if (update_block == NULL) return CS_ERR_ARG;
    if (acc == NULL || z == NULL || y == NULL) return CS_ERR_NULL;
    if (n < 1) return CS_ERR_SIZE;
    const int64_t d = acc->d_sae;
    int64_t elems, n_stage;
    cs_status st = cs_mul(n, d, &elems);
    if (st != CS_OK) return st;
    if ((st = cs_mul(d, CS_ARR_COUNT, &n_stage)) != CS_OK) return st;
    int64_t width = ZBUF_ELEMS / n;
    width = width >= BLOCK ? BLOCK : (width < 16 ? 16 : width - width % 16);
    if (width > d) width = d;
    int64_t n_zbuf;
    if ((st = cs_mul(n, width, &n_zbuf)) != CS_OK) return st;
    double *ycopy = NULL, *stage = NULL;
    float *zbuf = NULL;
    if ((st = cs_alloc(n, sizeof(double), 0, (void **)&ycopy)) != CS_OK) goto done;
    if ((st = cs_alloc(n_stage, sizeof(double), 0, (void **)&stage)) != CS_OK) goto done;
    if ((st = cs_alloc(n_zbuf, sizeof(float), 0, (void **)&zbuf)) != CS_OK) goto done;
    memcpy(ycopy, y, (size_t)n * sizeof(double));
    if ((st = check_rewards(acc->kind, ycopy, n)) != CS_OK) goto done;

    double sy = 0.0;
    for (int64_t i = 0; i < n; ++i) sy += ycopy[i];
    const double nb = (double)n, mean_yb = sy / nb;
    double m2_yb = 0.0;
    for (int64_t i = 0; i < n; ++i) m2_yb += (ycopy[i] - mean_yb) * (ycopy[i] - mean_yb);
    double *b[CS_ARR_COUNT];
    for (int a = 0; a < CS_ARR_COUNT; ++a) b[a] = stage + a * d;
    for (int64_t j0 = 0; j0 < d; j0 += width) {
        const int64_t len = d - j0 < width ? d - j0 : width;
        for (int64_t i = 0; i < n; ++i)
            memcpy(zbuf + i * len, z + i * d + j0, (size_t)len * sizeof(float));
        /* finite float32 values cannot overflow a double sum */
        if (!cs_all_finite(zbuf, n * len)) { st = CS_ERR_NONFINITE; goto done; }
        double *const out[CS_ARR_COUNT] = {b[0] + j0, b[1] + j0, b[2] + j0, b[3] + j0, b[4] + j0, b[5] + j0};
        update_block(zbuf, ycopy, n, len, sy, mean_yb, out);
    }
    combine_features(acc, 0, d, nb, sy, mean_yb, (const double *const *)b);
    combine_scalars(acc, nb, sy, mean_yb, m2_yb);
    st = CS_OK;
done:
    free(ycopy);
    free(stage);
    free(zbuf);
    return st;
}

cs_status cs_corr_merge(cs_corr *acc, const cs_corr *other)
{
    if (acc == NULL || other == NULL) return CS_ERR_NULL;
    if (acc->d_sae != other->d_sae || acc->kind != other->kind) return CS_ERR_MISMATCH;
    if (acc == other) {
        /* merging with itself: combine reads other while writing acc, so copy first */
        cs_corr *tmp = NULL;
        cs_status st = cs_corr_init(&tmp, acc->d_sae, acc->kind);
        if (st != CS_OK) return st;
        cs_corr_copy(tmp, other);
        combine(acc, tmp->n, tmp->n_pos, tmp->mean_y, tmp->m2_y, tmp->arr);
        cs_corr_free(tmp);
        return CS_OK;
    }
    combine(acc, other->n, other->n_pos, other->mean_y, other->m2_y, other->arr);
    return CS_OK;
}

/* ------------------------------------------------------------- results */

static int is_degenerate(const cs_corr *acc)
{
    if (acc->n < 2.0) return 1;
    if (acc->kind == CS_CORR_BINARY) return acc->n_pos <= 0.0 || acc->n_pos >= acc->n;
    return !(acc->m2_y > CS_CORR_CONST_RTOL * acc->n * acc->mean_y * acc->mean_y);
}

cs_status cs_corr_correlation(const cs_corr *acc, double *r, int *degenerate)
{
    if (acc == NULL || r == NULL) return CS_ERR_NULL;
    const int64_t d = acc->d_sae;
    const int deg = is_degenerate(acc);
    if (degenerate != NULL) *degenerate = deg;
    if (deg) {
        memset(r, 0, (size_t)d * sizeof(double));
        return CS_OK;
    }
    const double n = acc->n;
    const double *mean = acc->arr[CS_ARR_MEAN], *m2 = acc->arr[CS_ARR_M2], *czy = acc->arr[CS_ARR_C_ZY];
    for (int64_t j = 0; j < d; ++j) {
        double v = 0.0;
        if (m2[j] > 0.0 && m2[j] > CS_CORR_CONST_RTOL * n * mean[j] * mean[j]) {
            /* a product of two subnormal-sized moments can underflow to 0 (0/0 = NaN): such a
             * feature has no measurable variance, so r = 0 as for a constant one */
            const double den = sqrt(m2[j] * acc->m2_y);
            if (den > 0.0) {
                v = czy[j] / den;
                v = v > 1.0 ? 1.0 : (v < -1.0 ? -1.0 : v);
            }
        }
        r[j] = v;
    }
    return CS_OK;
}

cs_status cs_corr_coefficient(const cs_corr *acc, int active_only, double *c)
{
    if (acc == NULL || c == NULL) return CS_ERR_NULL;
    const double *mp = acc->arr[CS_ARR_MEAN_POS], *pact = acc->arr[CS_ARR_N_POS_ACTIVE];
    for (int64_t j = 0; j < acc->d_sae; ++j) {
        if (!active_only)
            c[j] = acc->n_pos > 0.0 ? mp[j] : 0.0;
        else
            c[j] = pact[j] > 0.0 ? acc->n_pos * mp[j] / pact[j] : 0.0;
    }
    return CS_OK;
}

cs_status cs_corr_frequency(const cs_corr *acc, double *freq)
{
    if (acc == NULL || freq == NULL) return CS_ERR_NULL;
    const double *act = acc->arr[CS_ARR_N_ACTIVE];
    for (int64_t j = 0; j < acc->d_sae; ++j) freq[j] = acc->n > 0.0 ? act[j] / acc->n : 0.0;
    return CS_OK;
}

typedef struct { double key; int64_t index; } ranked;

static int ranked_cmp(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;   /* larger key first */
    return (a->index > b->index) - (a->index < b->index);     /* then lower index */
}

cs_status cs_corr_top(const cs_corr *acc, int64_t k, cs_sign sign,
                      int64_t *index, double *r_out, int64_t *n_out)
{
    if (acc == NULL || index == NULL || r_out == NULL || n_out == NULL) return CS_ERR_NULL;
    *n_out = 0;
    if (k < 1) return CS_ERR_ARG;
    if (sign != CS_SIGN_POSITIVE && sign != CS_SIGN_NEGATIVE) return CS_ERR_ARG;
    const int64_t d = acc->d_sae;
    double *r = NULL;
    ranked *cand = NULL;
    cs_status st;
    if ((st = cs_alloc(d, sizeof(double), 0, (void **)&r)) != CS_OK) goto fail;
    if ((st = cs_alloc(d, sizeof(ranked), 0, (void **)&cand)) != CS_OK) goto fail;
    cs_corr_correlation(acc, r, NULL);
    int64_t m = 0;
    for (int64_t j = 0; j < d; ++j) {
        const double key = sign == CS_SIGN_POSITIVE ? r[j] : -r[j];
        if (key > 0.0) { cand[m].key = key; cand[m].index = j; ++m; }
    }
    qsort(cand, (size_t)m, sizeof(ranked), ranked_cmp);
    const int64_t take = m < k ? m : k;
    for (int64_t i = 0; i < take; ++i) {
        index[i] = cand[i].index;
        r_out[i] = r[cand[i].index];
    }
    *n_out = take;
    st = CS_OK;
fail:
    free(r);
    free(cand);
    return st;
}
