/*
 * steer.c -- steering deltas.
 *
 *   v = sum_k c_k * W_dec[f_k]      (accumulated in double, rounded once to float)
 *   x[i] += v for every row i with mask[i] != 0
 *
 * Indices and coefficients are validated before anything is written, so a bad
 * feature list leaves the output untouched.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

cs_status cs_steer_vector(const float *W_dec, int64_t d_sae, int64_t d_in,
                          const int64_t *features, const double *coefficients,
                          int64_t n_feat, float *out)
{
    if (W_dec == NULL || out == NULL) return CS_ERR_NULL;
    if (d_sae < 1 || d_in < 1 || n_feat < 0) return CS_ERR_SIZE;
    if (n_feat > 0 && (features == NULL || coefficients == NULL)) return CS_ERR_NULL;
    int64_t elems;
    cs_status st = cs_mul(d_sae, d_in, &elems);
    if (st != CS_OK) return st;
    for (int64_t i = 0; i < n_feat; ++i) {
        if (features[i] < 0 || features[i] >= d_sae) return CS_ERR_INDEX;
        if (!isfinite(coefficients[i])) return CS_ERR_NONFINITE;
    }
    double *acc = NULL;
    if ((st = cs_alloc(d_in, sizeof(double), 1, (void **)&acc)) != CS_OK) return st;
    for (int64_t i = 0; i < n_feat; ++i) {
        /* read once and checked again: the caller's arrays may have changed since the
         * loop above, and an index must never be trusted twice */
        const int64_t f = features[i];
        const double c = coefficients[i];
        if (f < 0 || f >= d_sae || !isfinite(c)) {
            free(acc);
            return f < 0 || f >= d_sae ? CS_ERR_INDEX : CS_ERR_NONFINITE;
        }
        const float *row = W_dec + f * d_in;
        for (int64_t p = 0; p < d_in; ++p) acc[p] += c * (double)row[p];
    }
    for (int64_t p = 0; p < d_in; ++p) out[p] = (float)acc[p];
    free(acc);
    return CS_OK;
}

cs_status cs_steer_add_rows(float *x, int64_t n_rows, int64_t d_in, const float *v,
                            const uint8_t *mask)
{
    if (n_rows < 0 || d_in < 1) return CS_ERR_SIZE;
    if (n_rows == 0) return CS_OK;
    if (x == NULL || v == NULL) return CS_ERR_NULL;
    int64_t elems;
    cs_status st = cs_mul(n_rows, d_in, &elems);
    if (st != CS_OK) return st;
    for (int64_t i = 0; i < n_rows; ++i) {
        if (mask != NULL && mask[i] == 0) continue;
        float *row = x + i * d_in;
        for (int64_t p = 0; p < d_in; ++p) row[p] += v[p];
    }
    return CS_OK;
}
