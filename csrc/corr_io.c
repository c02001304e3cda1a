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
#include <math.h>
#include <stdint.h>
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

static int is_count(double v, double max)
{
    return isfinite(v) && v >= 0.0 && v <= max && v == floor(v);
}

/* The state must be one that updates could have produced. */
static cs_status check_content(const cs_corr *acc)
{
    const double n = acc->n, slack = 1e-9 * (n > 1.0 ? n : 1.0);
    if (!is_count(n, 9007199254740992.0)) return CS_ERR_FORMAT_CORRUPT;
    if (!isfinite(acc->n_pos) || acc->n_pos < 0.0 || acc->n_pos > n + slack) return CS_ERR_FORMAT_CORRUPT;
    if (acc->kind == CS_CORR_BINARY && !is_count(acc->n_pos, n)) return CS_ERR_FORMAT_CORRUPT;
    if (!isfinite(acc->mean_y) || !isfinite(acc->m2_y) || acc->m2_y < 0.0) return CS_ERR_FORMAT_CORRUPT;
    for (int a = 0; a < acc->n_arrays; ++a) {
        const double *v = acc->arr[a];
        for (int64_t j = 0; j < acc->d_sae; ++j) {
            if (!isfinite(v[j])) return CS_ERR_FORMAT_CORRUPT;
            if (a == CS_ARR_M2 && v[j] < 0.0) return CS_ERR_FORMAT_CORRUPT;
            if (a == CS_ARR_N_ACTIVE && !is_count(v[j], n)) return CS_ERR_FORMAT_CORRUPT;
            if (a == CS_ARR_N_POS_ACTIVE && (v[j] < 0.0 || v[j] > acc->n_pos + slack))
                return CS_ERR_FORMAT_CORRUPT;
        }
    }
    return CS_OK;
}

cs_status cs_corr_deserialize(cs_corr **out, const uint8_t *buf, int64_t size)
{
    if (out == NULL) return CS_ERR_NULL;
    *out = NULL;
    if (buf == NULL) return CS_ERR_NULL;
    if (size < 8) return CS_ERR_FORMAT_SIZE;
    if (memcmp(buf, CS_CORR_MAGIC, 8) != 0) return CS_ERR_FORMAT_MAGIC;
    if (size < HEADER_BYTES + 8) return CS_ERR_FORMAT_SIZE;
    if (get_u32(buf + 8) != CS_CORR_FORMAT_VERSION) return CS_ERR_FORMAT_VERSION;
    const uint32_t kind = get_u32(buf + 12);
    const uint64_t d_raw = get_u64(buf + 16);
    if (kind > (uint32_t)CS_CORR_PEARSON || d_raw < 1 || d_raw > (uint64_t)INT64_MAX)
        return CS_ERR_FORMAT_CORRUPT;
    const int64_t d_sae = (int64_t)d_raw;
    const int n_arrays = CS_ARR_COUNT;
    const int64_t need = serial_size(d_sae, n_arrays);
    if (need < 0 || size != need) return CS_ERR_FORMAT_SIZE;
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
    if ((st = check_content(acc)) != CS_OK) {
        cs_corr_free(acc);
        return st;
    }
    *out = acc;
    return CS_OK;
}
