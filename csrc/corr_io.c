/*
 * corr_io.c -- the accumulator's state out and in: a copy into caller arrays, and
 * bytes that are versioned, checksummed, and checked on the way back in.
 *
 * Layout, little-endian (CS_CORR_FORMAT_VERSION 1):
 *   0  magic "CSCORR\r\n" (8)   8  u32 version   12  u32 kind   16  i64 d_sae
 *   24 f64 n, n_pos, mean_y, m2_y
 *   56 6 x d_sae f64: mean, m2, mean_pos, n_active, n_pos_active, c_zy
 *   end-8  u64 FNV-1a 64 of every byte before it
 * cs_corr_moments copies the same state into caller arrays instead of bytes.
 * Doubles travel as their IEEE-754 bits, so a round trip is exact. Deserialising
 * checks, in order: size >= 8, magic, size >= header, version, kind and d_sae, exact
 * size, checksum, then that the content is consistent.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

cs_status cs_corr_moments(const cs_corr *acc, cs_corr_state *out)
{
    if (acc == NULL || out == NULL) return CS_ERR_NULL;
    out->n = acc->n;
    out->n_pos = acc->n_pos;
    out->mean_y = acc->mean_y;
    out->m2_y = acc->m2_y;
    double *const dst[CS_ARR_COUNT] = {out->mean, out->m2, out->mean_pos, out->n_active,
                                       out->n_pos_active, out->c_zy};
    for (int a = 0; a < CS_ARR_COUNT; ++a)
        if (dst[a] != NULL) memcpy(dst[a], acc->arr[a], (size_t)acc->d_sae * sizeof(double));
    return CS_OK;
}

/* --------------------------------------------------------- serialisation */

#define HEADER_BYTES 56

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static void put_f64(uint8_t *p, double x)
{
    uint64_t v;
    memcpy(&v, &x, sizeof(v));
    put_u64(p, v);
}
static double get_f64(const uint8_t *p)
{
    uint64_t v = get_u64(p);
    double x;
    memcpy(&x, &v, sizeof(x));
    return x;
}

static uint64_t fnv1a64(const uint8_t *p, int64_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (int64_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Total bytes for d_sae features of a kind, or -1 on overflow. */
static int64_t serial_size(int64_t d_sae, int n_arrays)
{
    int64_t body;
    if (cs_mul(d_sae, (int64_t)n_arrays * 8, &body) != CS_OK) return -1;
    if (body > INT64_MAX - HEADER_BYTES - 8) return -1;
    return HEADER_BYTES + body + 8;
}

int64_t cs_corr_serialized_size(const cs_corr *acc)
{
    return acc != NULL ? serial_size(acc->d_sae, acc->n_arrays) : -1;
}

cs_status cs_corr_serialize(const cs_corr *acc, uint8_t *buf, int64_t size)
{
    if (acc == NULL || buf == NULL) return CS_ERR_NULL;
    const int64_t need = cs_corr_serialized_size(acc);
    if (need < 0) return CS_ERR_OVERFLOW;
    if (size != need) return CS_ERR_SIZE;
    /* never write bytes that cs_corr_deserialize would refuse */
    cs_status st = cs_corr_check(acc, NULL, 0);
    if (st != CS_OK) return st;
    memcpy(buf, CS_CORR_MAGIC, 8);
    put_u32(buf + 8, CS_CORR_FORMAT_VERSION);
    put_u32(buf + 12, (uint32_t)acc->kind);
    put_u64(buf + 16, (uint64_t)acc->d_sae);
    put_f64(buf + 24, acc->n);
    put_f64(buf + 32, acc->n_pos);
    put_f64(buf + 40, acc->mean_y);
    put_f64(buf + 48, acc->m2_y);
    uint8_t *p = buf + HEADER_BYTES;
    for (int a = 0; a < acc->n_arrays; ++a)
        for (int64_t j = 0; j < acc->d_sae; ++j, p += 8) put_f64(p, acc->arr[a][j]);
    put_u64(p, fnv1a64(buf, need - 8));
    return CS_OK;
}

/* ------------------------------------------------------------ consistency */

/* Relations that rounding bends hold within STATE_RTOL(n) relative to their scale.
 * Each fold (an update or a merge) adds a few roundings of at most the magnitudes it
 * combines, and a state of n samples has had at most n folds, so its error is below
 * ~16 eps n of the scale; the 1e-6 floor is a wide margin over that at any realistic
 * n (1e9 samples: 3.5e-6 in all), and still catches every hand-made inconsistency. */
#define STATE_RTOL(n) (1e-6 + 16.0 * DBL_EPSILON * (n))

static const char *const ARR_NAMES[CS_ARR_COUNT] = {"mean", "m2", "mean_pos", "n_active",
                                                    "n_pos_active", "c_zy"};

/* Write a reason (if wanted) and return CS_ERR_STATE. */
static cs_status bad(char *reason, int64_t size, const char *fmt, ...)
{
    if (reason != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, size > 4096 ? 4096 : (size_t)size, fmt, ap);
        va_end(ap);
    }
    return CS_ERR_STATE;
}

static int is_count(double v, double max)
{
    return isfinite(v) && v >= 0.0 && v <= max && v == floor(v);
}

static cs_status check_scalars(const cs_corr *acc, char *why, int64_t size)
{
    const double n = acc->n, n_pos = acc->n_pos, tol = STATE_RTOL(n);
    const int binary = acc->kind == CS_CORR_BINARY;
    if (!is_count(n, 9007199254740992.0))
        return bad(why, size, "n = %.12g is not a sample count", n);
    if (!isfinite(n_pos) || !isfinite(acc->mean_y) || !isfinite(acc->m2_y))
        return bad(why, size, "n_pos = %.12g, mean_y = %.12g, m2_y = %.12g: not all finite",
                   n_pos, acc->mean_y, acc->m2_y);
    if (binary ? !is_count(n_pos, n) : (n_pos < 0.0 || n_pos > n * (1.0 + tol)))
        return bad(why, size, "n_pos = %.12g is not %s in [0, n = %.12g]", n_pos,
                   binary ? "a count" : "a reward sum", n);
    if (n == 0.0) {
        if (n_pos != 0.0 || acc->mean_y != 0.0 || acc->m2_y != 0.0)
            return bad(why, size, "n = 0 but n_pos = %.12g, mean_y = %.12g, m2_y = %.12g "
                       "(an empty accumulator is all zeros)", n_pos, acc->mean_y, acc->m2_y);
        return CS_OK;
    }
    /* y in [0, 1]: mean_y = n_pos / n, and m2_y = sum y^2 - n mean_y^2 is at most
     * n_pos (n - n_pos) / n, with equality for binary y */
    const double want_mean = n_pos / n, top = n_pos * (n - n_pos) / n;
    if (fabs(acc->mean_y - want_mean) > tol)
        return bad(why, size, "mean_y = %.12g but n_pos / n = %.12g", acc->mean_y, want_mean);
    if (acc->m2_y < 0.0 || (binary ? fabs(acc->m2_y - top) > tol * top
                                   : acc->m2_y > top + tol * (acc->m2_y + n_pos)))
        return bad(why, size, "m2_y = %.12g but rewards with n_pos = %.12g of n = %.12g %s %.12g",
                   acc->m2_y, n_pos, n, binary ? "give" : "give at most", top);
    return CS_OK;
}

/* Feature j's seven numbers against each other and the scalars. */
static cs_status check_feature(const cs_corr *acc, int64_t j, char *why, int64_t size)
{
    const double n = acc->n, n_pos = acc->n_pos, tol = STATE_RTOL(n);
    const int binary = acc->kind == CS_CORR_BINARY;
    double v[CS_ARR_COUNT];
    for (int a = 0; a < CS_ARR_COUNT; ++a) {
        v[a] = acc->arr[a][j];
        if (!isfinite(v[a])) return bad(why, size, "%s[%lld] = %.12g is not finite", ARR_NAMES[a], (long long)j, v[a]);
        if (n == 0.0 && v[a] != 0.0)
            return bad(why, size, "n = 0 but %s[%lld] = %.12g (an empty accumulator is all zeros)",
                       ARR_NAMES[a], (long long)j, v[a]);
    }
    const double mean = v[CS_ARR_MEAN], m2 = v[CS_ARR_M2], mp = v[CS_ARR_MEAN_POS];
    const double act = v[CS_ARR_N_ACTIVE], pact = v[CS_ARR_N_POS_ACTIVE], czy = v[CS_ARR_C_ZY];
    /* z is float32: its means lie in the float range and a squared deviation is at
     * most (2 FLT_MAX)^2, which also keeps the products below from overflowing */
    const double zmax = (double)FLT_MAX * (1.0 + tol);
    if (fabs(mean) > zmax || fabs(mp) > zmax)
        return bad(why, size, "mean[%lld] = %.12g, mean_pos[%lld] = %.12g: outside the float32 range of z",
                   (long long)j, mean, (long long)j, mp);
    if (m2 < 0.0 || m2 > n * 4.0 * zmax * zmax)
        return bad(why, size, "m2[%lld] = %.12g is not in [0, n (2 FLT_MAX)^2]", (long long)j, m2);
    if (n == 1.0 && m2 != 0.0)
        return bad(why, size, "n = 1 but m2[%lld] = %.12g (one sample has no spread)", (long long)j, m2);
    if (!is_count(act, n))
        return bad(why, size, "n_active[%lld] = %.12g is not a count in [0, n = %.12g]", (long long)j, act, n);
    /* sum y 1[z > 0] is at most sum 1[z > 0] and at most sum y, and the active
     * negatives, sum (1 - y) 1[z > 0], are at most sum (1 - y) */
    const double lim = act < n_pos ? act : n_pos;
    if (binary ? !is_count(pact, lim) : (pact < 0.0 || pact > lim * (1.0 + tol)))
        return bad(why, size, "n_pos_active[%lld] = %.12g is not in [0, min(n_active = %.12g, n_pos = %.12g)]",
                   (long long)j, pact, act, n_pos);
    if (act - pact > (n - n_pos) + (binary ? 0.0 : tol * n))
        return bad(why, size, "n_active[%lld] - n_pos_active[%lld] = %.12g exceeds n - n_pos = %.12g",
                   (long long)j, (long long)j, act - pact, n - n_pos);
    if (n_pos == 0.0 && (mp != 0.0 || czy != 0.0))
        return bad(why, size, "n_pos = 0 but mean_pos[%lld] = %.12g, c_zy[%lld] = %.12g", (long long)j, mp,
                   (long long)j, czy);
    /* Cauchy-Schwarz: |c_zy| <= sqrt(m2 m2_y), i.e. |r| <= 1 */
    const double cs = sqrt(m2) * sqrt(acc->m2_y);
    if (fabs(czy) > cs * (1.0 + tol))
        return bad(why, size, "c_zy[%lld] = %.12g exceeds sqrt(m2[%lld] m2_y) = %.12g (|r| > 1)",
                   (long long)j, czy, (long long)j, cs);
    /* c_zy = sum y z - n mean mean_y = n_pos (mean_pos - mean) */
    const double want = n_pos * (mp - mean), scale = n * (fabs(mean) + fabs(mp) + sqrt(m2));
    if (fabs(czy - want) > tol * scale)
        return bad(why, size, "c_zy[%lld] = %.12g but n_pos (mean_pos - mean) = %.12g", (long long)j, czy, want);
    return CS_OK;
}

cs_status cs_corr_check(const cs_corr *acc, char *reason, int64_t reason_size)
{
    if (acc == NULL) return CS_ERR_NULL;
    if (reason != NULL && reason_size > 0) reason[0] = '\0';
    cs_status st = check_scalars(acc, reason, reason_size);
    for (int64_t j = 0; j < acc->d_sae && st == CS_OK; ++j) st = check_feature(acc, j, reason, reason_size);
    return st;
}

/* ---------------------------------------------------------- deserialise */

/* Return st, with a reason (if wanted; "" when the status says it all). */
static cs_status format_error(cs_status st, char *reason, int64_t size, const char *fmt, ...)
{
    if (reason != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, size > 4096 ? 4096 : (size_t)size, fmt, ap);
        va_end(ap);
    }
    return st;
}

cs_status cs_corr_deserialize(cs_corr **out, const uint8_t *buf, int64_t size)
{
    return cs_corr_deserialize_reason(out, buf, size, NULL, 0);
}

cs_status cs_corr_deserialize_reason(cs_corr **out, const uint8_t *buf, int64_t size,
                                     char *reason, int64_t reason_size)
{
    if (out == NULL) return CS_ERR_NULL;
    *out = NULL;
    if (buf == NULL) return CS_ERR_NULL;
    if (reason != NULL && reason_size > 0) reason[0] = '\0';
    if (size < 8) return format_error(CS_ERR_FORMAT_SIZE, reason, reason_size, "%lld bytes", (long long)size);
    if (memcmp(buf, CS_CORR_MAGIC, 8) != 0) return CS_ERR_FORMAT_MAGIC;
    if (size < HEADER_BYTES + 8)
        return format_error(CS_ERR_FORMAT_SIZE, reason, reason_size, "%lld bytes, shorter than the header",
                            (long long)size);
    const uint32_t version = get_u32(buf + 8);
    if (version != CS_CORR_FORMAT_VERSION)
        return format_error(CS_ERR_FORMAT_VERSION, reason, reason_size, "version %lu, this build reads %lu",
                            (unsigned long)version, (unsigned long)CS_CORR_FORMAT_VERSION);
    const uint32_t kind = get_u32(buf + 12);
    const uint64_t d_raw = get_u64(buf + 16);
    if (kind > (uint32_t)CS_CORR_PEARSON)
        return format_error(CS_ERR_FORMAT_CORRUPT, reason, reason_size, "kind = %lu is neither 0 (binary) "
                            "nor 1 (pearson)", (unsigned long)kind);
    if (d_raw < 1 || d_raw > (uint64_t)INT64_MAX)
        return format_error(CS_ERR_FORMAT_CORRUPT, reason, reason_size, "d_sae = %llu is not in [1, 2^63)",
                            (unsigned long long)d_raw);
    const int64_t d_sae = (int64_t)d_raw;
    const int n_arrays = CS_ARR_COUNT;
    const int64_t need = serial_size(d_sae, n_arrays);
    if (need < 0 || size != need)
        return format_error(CS_ERR_FORMAT_SIZE, reason, reason_size, "%lld bytes, but an accumulator with "
                            "d_sae = %lld takes %lld", (long long)size, (long long)d_sae, (long long)need);
    if (fnv1a64(buf, size - 8) != get_u64(buf + size - 8)) return CS_ERR_FORMAT_CHECKSUM;

    cs_corr *acc = NULL;
    cs_status st = cs_corr_init(&acc, d_sae, (cs_corr_kind)kind);
    if (st != CS_OK) return st;
    acc->n = get_f64(buf + 24);
    acc->n_pos = get_f64(buf + 32);
    acc->mean_y = get_f64(buf + 40);
    acc->m2_y = get_f64(buf + 48);
    const uint8_t *p = buf + HEADER_BYTES;
    for (int a = 0; a < n_arrays; ++a)
        for (int64_t j = 0; j < d_sae; ++j, p += 8) acc->arr[a][j] = get_f64(p);
    if (cs_corr_check(acc, reason, reason_size) != CS_OK) {
        cs_corr_free(acc);
        return CS_ERR_FORMAT_CORRUPT;
    }
    *out = acc;
    return CS_OK;
}
