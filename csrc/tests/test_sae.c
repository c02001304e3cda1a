/*
 * test_sae.c -- encode, fused encode + pooling (whole sequences, tagged rows, the
 * streaming pooler) against the naive references in check.h, plus bad input.
 */
#include "check.h"

typedef struct {
    cs_sae s;
    float *W, *be, *bd, *thr;
} owned_sae;

static owned_sae make_sae(int64_t d_in, int64_t d_sae, cs_arch arch, int64_t k, int apply)
{
    owned_sae o;
    memset(&o, 0, sizeof(o));
    o.W = rand_array(d_in * d_sae, 0.5f);
    o.be = rand_array(d_sae, 0.25f);
    o.bd = rand_array(d_in, 0.25f);
    o.thr = rand_array(d_sae, 0.125f);
    for (int64_t j = 0; j < d_sae; ++j) o.thr[j] = fabsf(o.thr[j]);
    o.s.d_in = d_in; o.s.d_sae = d_sae;
    o.s.W_enc = o.W; o.s.b_enc = o.be; o.s.b_dec = o.bd; o.s.threshold = o.thr;
    o.s.architecture = arch; o.s.k = k; o.s.apply_b_dec_to_input = apply;
    return o;
}

static void free_sae(owned_sae *o)
{
    free(o->W); free(o->be); free(o->bd); free(o->thr);
}

static void test_encode(cs_arch arch, int apply, int64_t n_rows, int64_t d_in, int64_t d_sae)
{
    owned_sae o = make_sae(d_in, d_sae, arch, 3, apply);
    float *x = rand_array(n_rows * d_in, 1.0f);
    float *f = malloc((size_t)(n_rows * d_sae) * sizeof(float));
    float *g = malloc((size_t)d_sae * sizeof(float));
    CHECK_ST(cs_sae_encode(&o.s, x, n_rows, f), CS_OK);
    int bad = 0;
    for (int64_t i = 0; i < n_rows; ++i) {
        naive_encode_row(&o.s, x + i * d_in, g);
        for (int64_t j = 0; j < d_sae; ++j) bad += !close_f(f[i * d_sae + j], g[j], 1e-4, 1e-5);
    }
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "  encode arch=%d apply=%d n_rows=%lld: %d mismatches\n", arch, apply,
                     (long long)n_rows, bad);
    free(x); free(f); free(g); free_sae(&o);
}

static void test_topk_ties(void)
{
    /* identity encoder: pre = x, so ties are set directly */
    float W[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    float b[4] = {0, 0, 0, 0};
    cs_sae s = {4, 4, W, b, NULL, NULL, CS_ARCH_TOPK, 2, 0};
    float x[4] = {2.0f, 5.0f, 2.0f, 2.0f}, f[4];
    CHECK_ST(cs_sae_encode(&s, x, 1, f), CS_OK);
    CHECK(f[0] == 2.0f && f[1] == 5.0f && f[2] == 0.0f && f[3] == 0.0f);
    float x2[4] = {-1.0f, -3.0f, -1.0f, 0.5f};
    CHECK_ST(cs_sae_encode(&s, x2, 1, f), CS_OK);  /* kept: 0.5 and -1 (index 0), ReLU'd */
    CHECK(f[0] == 0.0f && f[1] == 0.0f && f[2] == 0.0f && f[3] == 0.5f);
}

/* pooled vs naive: encode each row naively, pool in double */
static void test_pooled(cs_arch arch, cs_pool_mode mode, int apply, int64_t n_seq, int64_t n_tok,
                        int64_t d_in, int64_t d_sae)
{
    owned_sae o = make_sae(d_in, d_sae, arch, 4, apply);
    const int64_t n_rows = n_seq * n_tok;
    float *x = rand_array(n_rows * d_in, 1.0f);
    uint8_t *mask = malloc((size_t)n_rows);
    for (int64_t r = 0; r < n_rows; ++r) mask[r] = (rng_next() % 3) != 0;
    for (int64_t t = 0; t < n_tok; ++t) mask[t] = 0;  /* sequence 0 has no token */
    float *z = malloc((size_t)(n_seq * d_sae) * sizeof(float));
    float *want = calloc((size_t)(n_seq * d_sae), sizeof(float));
    double *sum = calloc((size_t)(n_seq * d_sae), sizeof(double));
    int64_t *cnt = calloc((size_t)n_seq, sizeof(int64_t));
    float *g = malloc((size_t)d_sae * sizeof(float));
    for (int64_t r = 0; r < n_rows; ++r) {
        if (!mask[r]) continue;
        const int64_t s = r / n_tok;
        naive_encode_row(&o.s, x + r * d_in, g);
        cnt[s]++;
        for (int64_t j = 0; j < d_sae; ++j) {
            sum[s * d_sae + j] += g[j];
            if (g[j] > want[s * d_sae + j]) want[s * d_sae + j] = g[j];
        }
    }
    if (mode == CS_POOL_MEAN)
        for (int64_t s = 0; s < n_seq; ++s)
            for (int64_t j = 0; j < d_sae; ++j)
                want[s * d_sae + j] = cnt[s] ? (float)(sum[s * d_sae + j] / (double)cnt[s]) : 0.0f;
    CHECK_ST(cs_sae_encode_pooled(&o.s, x, mask, n_seq, n_tok, mode, z), CS_OK);
    int bad = 0;
    for (int64_t i = 0; i < n_seq * d_sae; ++i) bad += !close_f(z[i], want[i], 1e-4, 1e-5);
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "  pooled arch=%d mode=%d apply=%d n_seq=%lld n_tok=%lld d_sae=%lld: %d mismatches\n",
                     arch, mode, apply, (long long)n_seq, (long long)n_tok, (long long)d_sae, bad);
    for (int64_t j = 0; j < d_sae; ++j) CHECK(z[j] == 0.0f);

    /* the streaming pooler, one row per sequence per step, several buffer sizes */
    const int64_t bufs[3] = {1, 3, 256};
    for (int b = 0; b < 3; ++b) {
        cs_pooler *p = NULL;
        CHECK_ST(cs_pooler_init(&p, &o.s, n_seq, mode, bufs[b]), CS_OK);
        if (p == NULL) break;
        float *step = malloc((size_t)(n_seq * d_in) * sizeof(float));
        int64_t *seq = malloc((size_t)n_seq * sizeof(int64_t));
        for (int64_t t = 0; t < n_tok; ++t) {
            for (int64_t s = 0; s < n_seq; ++s) {
                memcpy(step + s * d_in, x + (s * n_tok + t) * d_in, (size_t)d_in * sizeof(float));
                seq[s] = mask[s * n_tok + t] ? s : -1;
            }
            CHECK_ST(cs_pooler_push(p, &o.s, step, seq, n_seq), CS_OK);
        }
        float *zp = malloc((size_t)(n_seq * d_sae) * sizeof(float));
        int64_t *cp = malloc((size_t)n_seq * sizeof(int64_t));
        CHECK_ST(cs_pooler_result(p, &o.s, zp, cp), CS_OK);
        int badp = 0;
        for (int64_t i = 0; i < n_seq * d_sae; ++i) badp += !close_f(zp[i], want[i], 1e-4, 1e-5);
        for (int64_t s = 0; s < n_seq; ++s) badp += cp[s] != cnt[s];
        CHECK(badp == 0);
        CHECK(cs_pooler_buffered(p) == 0);
        CHECK(cs_pooler_nbytes(p) > 0);
        cs_pooler_reset(p);
        CHECK_ST(cs_pooler_result(p, &o.s, zp, cp), CS_OK);
        int nonzero = 0;
        for (int64_t i = 0; i < n_seq * d_sae; ++i) nonzero += zp[i] != 0.0f;
        CHECK(nonzero == 0 && cp[n_seq - 1] == 0);
        free(step); free(seq); free(zp); free(cp);
        cs_pooler_free(p);
    }
    free(x); free(mask); free(z); free(want); free(sum); free(cnt); free(g); free_sae(&o);
}

static void test_bad_input(void)
{
    owned_sae o = make_sae(4, 8, CS_ARCH_JUMPRELU, 0, 0);
    float x[8] = {0}, f[16], z[16];
    CHECK_ST(cs_sae_encode(NULL, x, 1, f), CS_ERR_NULL);
    CHECK_ST(cs_sae_encode(&o.s, NULL, 1, f), CS_ERR_NULL);
    CHECK_ST(cs_sae_encode(&o.s, x, -1, f), CS_ERR_SIZE);
    CHECK_ST(cs_sae_encode(&o.s, x, INT64_MAX / 2, f), CS_ERR_OVERFLOW);
    x[3] = NAN;
    CHECK_ST(cs_sae_encode(&o.s, x, 1, f), CS_ERR_NONFINITE);
    x[3] = INFINITY;
    CHECK_ST(cs_sae_encode_pooled(&o.s, x, NULL, 1, 1, CS_POOL_MAX, z), CS_ERR_NONFINITE);
    x[3] = 0.0f;
    o.thr[2] = -0.1f;
    CHECK_ST(cs_sae_encode(&o.s, x, 1, f), CS_ERR_THRESHOLD);
    o.thr[2] = NAN;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_THRESHOLD);
    o.thr[2] = 0.0f;
    o.s.threshold = NULL;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_NULL);
    o.s.threshold = o.thr;
    o.s.architecture = (cs_arch)7;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_ARG);
    o.s.architecture = CS_ARCH_TOPK;
    o.s.k = 0;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_ARG);
    o.s.k = 9;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_ARG);
    o.s.k = 2;
    o.s.d_in = INT64_MAX / 4;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_OVERFLOW);
    o.s.d_in = 4;
    o.s.apply_b_dec_to_input = 1; o.s.b_dec = NULL;
    CHECK_ST(cs_sae_check(&o.s), CS_ERR_NULL);
    o.s.apply_b_dec_to_input = 0;
    CHECK_ST(cs_sae_encode_pooled(&o.s, x, NULL, 0, 1, CS_POOL_MAX, z), CS_ERR_SIZE);
    CHECK_ST(cs_sae_encode_pooled(&o.s, x, NULL, 1, 1, (cs_pool_mode)5, z), CS_ERR_ARG);
    CHECK_ST(cs_sae_encode_pooled(&o.s, x, NULL, INT64_MAX / 2, 4, CS_POOL_MAX, z), CS_ERR_OVERFLOW);

    int64_t seq[2] = {0, 2}, counts[2] = {0, 0};
    CHECK_ST(cs_sae_pool_rows(&o.s, x, seq, 2, 2, CS_POOL_MAX, z, NULL, counts), CS_ERR_INDEX);
    seq[1] = -2;
    CHECK_ST(cs_sae_pool_rows(&o.s, x, seq, 2, 2, CS_POOL_MAX, z, NULL, counts), CS_ERR_INDEX);
    seq[1] = -1;
    CHECK_ST(cs_sae_pool_rows(&o.s, x, seq, 2, 2, CS_POOL_MEAN, z, NULL, counts), CS_ERR_NULL);
    memset(z, 0, sizeof(z));
    CHECK_ST(cs_sae_pool_rows(&o.s, x, seq, 2, 2, CS_POOL_MAX, z, NULL, counts), CS_OK);
    CHECK(counts[0] == 1 && counts[1] == 0);

    cs_pooler *p = NULL;
    CHECK_ST(cs_pooler_init(&p, &o.s, 0, CS_POOL_MAX, 4), CS_ERR_SIZE);
    CHECK(p == NULL);
    CHECK_ST(cs_pooler_init(&p, &o.s, 2, CS_POOL_MAX, 0), CS_ERR_SIZE);
    CHECK_ST(cs_pooler_init(&p, &o.s, INT64_MAX / 4, CS_POOL_MAX, 4), CS_ERR_OVERFLOW);
    CHECK_ST(cs_pooler_init(&p, &o.s, 2, CS_POOL_MAX, 4), CS_OK);
    seq[1] = 5;
    CHECK_ST(cs_pooler_push(p, &o.s, x, seq, 2), CS_ERR_INDEX);
    CHECK(cs_pooler_buffered(p) == 0);  /* validated before buffering */
    seq[1] = 1;
    cs_sae other = o.s;
    other.d_sae = 4;
    CHECK_ST(cs_pooler_push(p, &other, x, seq, 2), CS_ERR_MISMATCH);
    other = o.s;
    other.architecture = CS_ARCH_RELU;
    CHECK_ST(cs_pooler_flush(p, &other), CS_ERR_MISMATCH);
    CHECK_ST(cs_pooler_push(p, &o.s, x, seq, 2), CS_OK);
    CHECK(cs_pooler_buffered(p) == 2);
    CHECK_ST(cs_pooler_result(p, &o.s, NULL, NULL), CS_ERR_NULL);
    cs_pooler_free(p);
    cs_pooler_free(NULL);
    free_sae(&o);
}

int main(void)
{
    rng_seed(1);
    const cs_arch archs[3] = {CS_ARCH_JUMPRELU, CS_ARCH_RELU, CS_ARCH_TOPK};
    for (int a = 0; a < 3; ++a)
        for (int apply = 0; apply < 2; ++apply) {
            test_encode(archs[a], apply, 5, 7, 33);
            test_encode(archs[a], apply, 300, 16, 40);   /* more than one row block */
            for (int mode = 0; mode < 2; ++mode) {
                test_pooled(archs[a], (cs_pool_mode)mode, apply, 3, 9, 6, 20);
                test_pooled(archs[a], (cs_pool_mode)mode, apply, 2, 150, 8, 1100); /* > 1 row chunk, > 1 column block */
            }
        }
    test_topk_ties();
    test_bad_input();
    return check_summary("test_sae");
}
