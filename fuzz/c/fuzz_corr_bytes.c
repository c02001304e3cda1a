/*
 * fuzz_corr_bytes.c -- libFuzzer target: cs_corr_deserialize_reason on arbitrary bytes.
 *
 * Byte 0, if odd, makes the harness rewrite the trailing FNV-1a 64 checksum so that the
 * mutations reach the content checks (cs_corr_check) instead of stopping at the checksum.
 * A blob that loads must serialise back to the same bytes, pass cs_corr_check, and give
 * finite correlations in [-1, 1]; every failure must come with a non-empty reason.
 * Built by fuzz/Makefile with -fsanitize=fuzzer,address,undefined.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "corrsteer.h"

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t n = size - 1;
    uint8_t *blob = malloc(n ? n : 1);
    if (blob == NULL) return 0;
    memcpy(blob, data + 1, n);
    if ((data[0] & 1) && n >= 8) {
        uint64_t h = fnv1a64(blob, n - 8);
        for (int i = 0; i < 8; ++i) blob[n - 8 + i] = (uint8_t)(h >> (8 * i));
    }
    cs_corr *acc = NULL;
    char reason[256] = {0};
    cs_status st = cs_corr_deserialize_reason(&acc, blob, (int64_t)n, reason, sizeof reason);
    if (st != CS_OK) {
        if (acc != NULL) abort();                      /* nothing is returned on failure */
        if (cs_status_to_string(st)[0] == '\0') abort();
    } else {
        if (cs_corr_check(acc, NULL, 0) != CS_OK) abort();
        int64_t need = cs_corr_serialized_size(acc);
        if (need != (int64_t)n) abort();
        uint8_t *again = malloc((size_t)need);
        if (again != NULL) {
            if (cs_corr_serialize(acc, again, need) != CS_OK || memcmp(again, blob, n) != 0) abort();
            free(again);
        }
        int64_t d = cs_corr_d_sae(acc);
        double *r = malloc((size_t)d * sizeof(double));
        int64_t *idx = malloc(3 * sizeof(int64_t));
        double *top = malloc(3 * sizeof(double));
        if (r != NULL && idx != NULL && top != NULL) {
            int degenerate = 0;
            if (cs_corr_correlation(acc, r, &degenerate) != CS_OK) abort();
            for (int64_t j = 0; j < d; ++j)
                if (!isfinite(r[j]) || fabs(r[j]) > 1.0 + 1e-9) abort();
            int64_t got = 0;
            if (cs_corr_top(acc, d < 3 ? d : 3, CS_SIGN_POSITIVE, idx, top, &got) != CS_OK) abort();
            if (cs_corr_coefficient(acc, 1, r) != CS_OK || cs_corr_frequency(acc, r) != CS_OK) abort();
        }
        free(r);
        free(idx);
        free(top);
        cs_corr_free(acc);
    }
    free(blob);
    return 0;
}
