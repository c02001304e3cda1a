/*
 * fuzz_kernels.c -- libFuzzer target: the C core's array entry points on shapes, options and
 * float bit patterns taken from the input.
 *
 * cs_sae_check, cs_sae_encode, cs_sae_encode_pooled, cs_sae_pool_rows (sequence indices
 * anywhere in int64, -1 = skip), the streaming cs_pooler, cs_corr_update with rewards
 * that may be outside {0, 1}, and cs_steer_vector with any feature index. Each call either
 * succeeds or returns a status; ASan and UBSan catch out-of-bounds accesses, overflows and
 * undefined arithmetic. Built by fuzz/Makefile with -fsanitize=fuzzer,address,undefined.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "corrsteer.h"

typedef struct {
    const uint8_t *p;
    size_t n, at;
} bytes_in;

static uint32_t take32(bytes_in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= (uint32_t)(in->at < in->n ? in->p[in->at++] : 0) << (8 * i);
    return v;
}
static int64_t take_int(bytes_in *in, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(take32(in) % (uint32_t)(hi - lo + 1));
}
static float take_float(bytes_in *in, int wild)
{
    uint32_t v = take32(in);
    if (wild) {
        float f;
        memcpy(&f, &v, sizeof f);
        return f;
    }
    return ((float)(v % 257u) - 128.0f) / 32.0f;
}
static float *floats(bytes_in *in, int64_t n, int wild)
{
    float *a = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (a != NULL)
        for (int64_t i = 0; i < n; ++i) a[i] = take_float(in, wild);
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bytes_in in = {data, size, 0};
    int wild = take_int(&in, 0, 3) == 0;
    cs_sae sae = {0};
    sae.d_in = take_int(&in, 0, 6);      /* 0 is invalid: cs_sae_check must refuse it */
    sae.d_sae = take_int(&in, 0, 9);
    sae.architecture = (cs_arch)take_int(&in, 0, 3);  /* 3 is invalid */
    sae.k = take_int(&in, -1, 10);
    sae.apply_b_dec_to_input = (int)take_int(&in, 0, 1);
    int64_t n_rows = take_int(&in, 0, 5), n_seq = take_int(&in, 0, 3), n_tok = take_int(&in, 0, 3);
    int64_t d_in = sae.d_in > 0 ? sae.d_in : 1, d_sae = sae.d_sae > 0 ? sae.d_sae : 1;
    float *W_enc = floats(&in, d_in * d_sae, wild), *b_enc = floats(&in, d_sae, wild);
    float *b_dec = floats(&in, d_in, wild), *thr = floats(&in, d_sae, wild);
    float *x = floats(&in, (n_rows > n_seq * n_tok ? n_rows : n_seq * n_tok) * d_in, wild);
    float *f = malloc((size_t)(n_rows + 1) * (size_t)d_sae * sizeof(float));
    float *z = calloc((size_t)(n_seq + 1) * (size_t)d_sae, sizeof(float));
    double *sum = calloc((size_t)(n_seq + 1) * (size_t)d_sae, sizeof(double));
    int64_t *counts = calloc((size_t)(n_seq + 1), sizeof(int64_t));
    int64_t *seq = malloc((size_t)(n_rows + 1) * sizeof(int64_t));
    uint8_t *mask = malloc((size_t)(n_seq * n_tok + 1));
    double *y = malloc((size_t)(n_rows + 1) * sizeof(double));
    int64_t feats[3];
    double coefs[3];
    if (!W_enc || !b_enc || !b_dec || !thr || !x || !f || !z || !sum || !counts || !seq || !mask || !y) goto done;
    sae.W_enc = W_enc;
    sae.b_enc = b_enc;
    sae.b_dec = b_dec;
    sae.threshold = take_int(&in, 0, 7) ? thr : NULL;
    for (int64_t i = 0; i < n_rows; ++i) {
        int64_t pick = take_int(&in, 0, 7);
        seq[i] = pick == 0 ? INT64_MAX : pick == 1 ? INT64_MIN : take_int(&in, -2, n_seq);
        y[i] = (double)take_int(&in, 0, 2) / (take_int(&in, 0, 3) ? 1.0 : 2.0);
    }
    for (int64_t i = 0; i < n_seq * n_tok; ++i) mask[i] = (uint8_t)take_int(&in, 0, 1);
    cs_pool_mode mode = (cs_pool_mode)take_int(&in, 0, 1);

    if (cs_sae_check(&sae) == CS_OK) {
        (void)cs_sae_encode(&sae, x, n_rows, f);
        (void)cs_sae_encode_pooled(&sae, x, mask, n_seq, n_tok, mode, z);
        memset(z, 0, (size_t)(n_seq + 1) * (size_t)d_sae * sizeof(float));
        (void)cs_sae_pool_rows(&sae, x, seq, n_rows, n_seq, mode, mode == CS_POOL_MAX ? z : NULL,
                               mode == CS_POOL_MEAN ? sum : NULL, counts);
        cs_pooler *p = NULL;
        if (cs_pooler_init(&p, &sae, n_seq, mode, take_int(&in, 0, 4)) == CS_OK) {
            (void)cs_pooler_push(p, &sae, x, seq, n_rows);
            (void)cs_pooler_result(p, &sae, z, counts);
            cs_pooler_free(p);
        }
    } else {
        (void)cs_sae_encode(&sae, x, n_rows, f);  /* must refuse, not read */
    }
    cs_corr *acc = NULL;
    if (cs_corr_init(&acc, d_sae, (cs_corr_kind)take_int(&in, 0, 1)) == CS_OK) {
        for (int64_t i = 0; i < n_rows * d_sae; ++i) f[i] = take_float(&in, wild);
        (void)cs_corr_update(acc, f, y, n_rows);
        if (cs_corr_check(acc, NULL, 0) != CS_OK) abort();  /* an update never leaves a bad state */
        cs_corr_free(acc);
    }
    int64_t n_feat = take_int(&in, 0, 3);
    for (int64_t i = 0; i < n_feat; ++i) {
        feats[i] = take_int(&in, -1, d_sae);
        coefs[i] = (double)take_float(&in, wild);
    }
    (void)cs_steer_vector(W_enc, d_sae, d_in, feats, coefs, n_feat, b_dec);
done:
    free(W_enc), free(b_enc), free(b_dec), free(thr), free(x), free(f), free(z), free(sum), free(counts);
    free(seq), free(mask), free(y);
    return 0;
}
