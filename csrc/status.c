/*
 * status.c -- status strings and the checked size arithmetic every entry point uses.
 *
 * cs_mul refuses negative factors and int64 overflow; cs_alloc additionally refuses
 * byte counts beyond SIZE_MAX / PTRDIFF_MAX, so no later pointer arithmetic on an
 * allocation can overflow.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

const char *cs_status_to_string(cs_status status)
{
    switch (status) {
    case CS_OK: return "ok";
    case CS_ERR_NULL: return "a required pointer argument is NULL";
    case CS_ERR_SIZE: return "a size is invalid (non-positive or inconsistent)";
    case CS_ERR_OVERFLOW: return "sizes are too large (overflow or beyond the BLAS integer range)";
    case CS_ERR_NOMEM: return "out of memory";
    case CS_ERR_ARG: return "an option is invalid (architecture, mode, k, kind or sign)";
    case CS_ERR_INDEX: return "an index is out of range";
    case CS_ERR_NONFINITE: return "input contains NaN or Inf";
    case CS_ERR_REWARD: return "a reward is outside {0, 1} (binary) or [0, 1] (pearson)";
    case CS_ERR_THRESHOLD: return "a JumpReLU threshold is negative or not finite";
    case CS_ERR_MISMATCH: return "objects disagree (d_sae, kind or SAE shape)";
    case CS_ERR_FORMAT_SIZE: return "serialised data has the wrong size (truncated or trailing bytes)";
    case CS_ERR_FORMAT_MAGIC: return "serialised data is not a corrsteer accumulator (bad magic)";
    case CS_ERR_FORMAT_VERSION: return "serialised data has an unsupported format version";
    case CS_ERR_FORMAT_CHECKSUM: return "serialised data failed its checksum (corrupted)";
    case CS_ERR_FORMAT_CORRUPT: return "serialised data is internally inconsistent";
    case CS_ERR_STATE: return "the accumulator's state is inconsistent";
    }
    return "unknown status";
}

cs_status cs_mul(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return CS_ERR_SIZE;
    if (a != 0 && b > INT64_MAX / a) return CS_ERR_OVERFLOW;
    *out = a * b;
    return CS_OK;
}

cs_status cs_alloc(int64_t n, size_t elem_size, int zero, void **out)
{
    *out = NULL;
    if (n < 0 || elem_size == 0) return CS_ERR_SIZE;
    if (n == 0) n = 1;
    if ((uint64_t)n > (uint64_t)PTRDIFF_MAX / elem_size) return CS_ERR_OVERFLOW;
    size_t bytes = (size_t)n * elem_size;
    void *p = zero ? calloc((size_t)n, elem_size) : malloc(bytes);
    if (p == NULL) return CS_ERR_NOMEM;
    *out = p;
    return CS_OK;
}

int cs_all_finite(const float *x, int64_t n)
{
    /* Accumulate x*0 in 8 independent lanes: finite values give 0, NaN/Inf give NaN;
     * no branch in the loop, so it vectorises. */
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * 0.0f;
    float tail = 0.0f;
    for (; i < n; ++i) tail += x[i] * 0.0f;
    for (int j = 0; j < 8; ++j) tail += acc[j];
    return tail == 0.0f;
}
