/*
 * test_sae.c -- encode, fused encode + pooling (whole sequences, tagged rows, the
 * streaming pooler) against the naive references in check.h, plus bad input; and
 * the small-row streaming sgemm (cs_sgemm_small, sgemm_small.c) against a naive double
 * product for every build this CPU runs (plain, AVX2+FMA, AVX-512+FMA) at 1 to 33
 * rows, with the encode and pooling paths around its cut-over (up to CS_SMALL_ROWS
 * rows stream on one BLAS thread; more rows, and any count on four threads, go to
 * BLAS). Small-kernel shapes: k (= d_in) not a multiple of its 8-row groups of B,
 * n (= d_sae) not a multiple of its 256-column strips or the 16-float tile rounding,
 * padded leading dimensions; grid data must match exactly, uniform data with
 * k = 300 within float32 rounding.
 */
#include "check.h"
#include "internal.h"

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

    /* tagged rows + cs_pool_finalize: the same bits as the whole-sequence kernel */
    {
        int64_t *seq = malloc((size_t)n_rows * sizeof(int64_t));
        int64_t *cr = calloc((size_t)n_seq, sizeof(int64_t));
        float *mx = calloc((size_t)(n_seq * d_sae), sizeof(float));
        float *zr = malloc((size_t)(n_seq * d_sae) * sizeof(float));
        double *sm = calloc((size_t)(n_seq * d_sae), sizeof(double));
        for (int64_t r = 0; r < n_rows; ++r) seq[r] = mask[r] ? r / n_tok : -1;
        CHECK_ST(cs_sae_pool_rows(&o.s, x, seq, n_rows, n_seq, mode, mode == CS_POOL_MAX ? mx : NULL,
                                  mode == CS_POOL_MEAN ? sm : NULL, cr), CS_OK);
        CHECK_ST(cs_pool_finalize(mode, mx, sm, cr, n_seq, d_sae, zr), CS_OK);
        CHECK(memcmp(zr, z, (size_t)(n_seq * d_sae) * sizeof(float)) == 0);
        for (int64_t q = 0; q < n_seq; ++q) CHECK(cr[q] == cnt[q]);
        free(seq); free(cr); free(mx); free(zr); free(sm);
    }

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
        CHECK(memcmp(zp, z, (size_t)(n_seq * d_sae) * sizeof(float)) == 0);  /* same bits */
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

    /* finite x and b_dec whose difference overflows: refused on every path, not pooled
     * as inf or dropped as NaN from a max */
    {
        owned_sae ob = make_sae(4, 8, CS_ARCH_RELU, 0, 1);
        float big[2 * 4] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3e38f, 0.0f, 0.0f};
        float out[2 * 8], zz[2 * 8] = {0};
        int64_t sq[2] = {0, 1}, cn[2] = {0, 0};
        ob.bd[1] = -3e38f;
        CHECK_ST(cs_sae_encode(&ob.s, big, 2, out), CS_ERR_NONFINITE);
        CHECK_ST(cs_sae_encode_pooled(&ob.s, big, NULL, 2, 1, CS_POOL_MAX, zz), CS_ERR_NONFINITE);
        CHECK_ST(cs_sae_pool_rows(&ob.s, big, sq, 2, 2, CS_POOL_MAX, zz, NULL, cn), CS_ERR_NONFINITE);
        cs_pooler *pb = NULL;
        CHECK_ST(cs_pooler_init(&pb, &ob.s, 2, CS_POOL_MAX, 4), CS_OK);
        CHECK_ST(cs_pooler_push(pb, &ob.s, big, sq, 2), CS_ERR_NONFINITE);
        CHECK(cs_pooler_buffered(pb) == 0);   /* the row before it is dropped too */
        ob.bd[1] = 0.0f;
        CHECK_ST(cs_pooler_push(pb, &ob.s, big, sq, 2), CS_OK);
        CHECK(cs_pooler_buffered(pb) == 2);
        cs_pooler_free(pb);
        free_sae(&ob);
    }

    /* cs_pool_finalize: arguments, count 0 gives 0, MAX may run in place */
    {
        float st_max[2 * 8], zf[2 * 8];
        double st_sum[2 * 8];
        int64_t cf[2] = {4, 0};
        for (int i = 0; i < 16; ++i) { st_max[i] = (float)i; st_sum[i] = 2.0 * i; zf[i] = NAN; }
        CHECK_ST(cs_pool_finalize(CS_POOL_MEAN, NULL, st_sum, cf, 2, 8, zf), CS_OK);
        for (int j = 0; j < 8; ++j) CHECK(zf[j] == (float)(2.0 * j / 4.0) && zf[8 + j] == 0.0f);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, st_max, NULL, NULL, 2, 8, zf), CS_OK);
        CHECK(memcmp(zf, st_max, sizeof(zf)) == 0);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, st_max, NULL, NULL, 2, 8, st_max), CS_OK);
        CHECK(st_max[15] == 15.0f);
        CHECK_ST(cs_pool_finalize((cs_pool_mode)3, st_max, st_sum, cf, 2, 8, zf), CS_ERR_ARG);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, st_max, NULL, NULL, 0, 8, zf), CS_ERR_SIZE);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, st_max, NULL, NULL, 2, 0, zf), CS_ERR_SIZE);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, st_max, NULL, NULL, INT64_MAX / 2, 8, zf), CS_ERR_OVERFLOW);
        CHECK_ST(cs_pool_finalize(CS_POOL_MAX, NULL, st_sum, cf, 2, 8, zf), CS_ERR_NULL);
        CHECK_ST(cs_pool_finalize(CS_POOL_MEAN, st_max, NULL, cf, 2, 8, zf), CS_ERR_NULL);
        CHECK_ST(cs_pool_finalize(CS_POOL_MEAN, NULL, st_sum, NULL, 2, 8, zf), CS_ERR_NULL);
        CHECK_ST(cs_pool_finalize(CS_POOL_MEAN, NULL, st_sum, cf, 2, 8, NULL), CS_ERR_NULL);
        cf[1] = -1;
        CHECK_ST(cs_pool_finalize(CS_POOL_MEAN, NULL, st_sum, cf, 2, 8, zf), CS_ERR_SIZE);
    }

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

/* ------------------------------------------------ small-row streaming sgemm */

/* C (m, n) = A @ B in double, then rounded. */
static void naive_gemm(int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
                       const float *B, int64_t ldb, double *C)
{
    for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0.0;
            for (int64_t p = 0; p < k; ++p) acc += (double)A[r * lda + p] * (double)B[p * ldb + j];
            C[r * n + j] = acc;
        }
}

static float *uniform_array(int64_t n)
{
    float *a = malloc((size_t)n * sizeof(float));
    if (a == NULL) { fprintf(stderr, "test allocation failed\n"); exit(2); }
    for (int64_t i = 0; i < n; ++i) a[i] = rng_uniform();
    return a;
}

/* One product through build b with lda = k + pad, ldb = ldc = n + pad; grid data
 * must match exactly, uniform data within 1e-5 relative + 1e-6 k absolute (float32 rounding). */
static void check_shape(int b, int64_t m, int64_t n, int64_t k, int64_t pad, int grid)
{
    const int64_t lda = k + pad, ldb = n + pad, ldc = n + pad;
    float *A = grid ? rand_array(m * lda, 1.0f) : uniform_array(m * lda);
    float *B = grid ? rand_array(k * ldb, 0.5f) : uniform_array(k * ldb);
    float *C = malloc((size_t)(m * ldc + 1) * sizeof(float));
    double *want = malloc((size_t)(m * n + 1) * sizeof(double));
    for (int64_t i = 0; i < m * ldc; ++i) C[i] = NAN;  /* every element must be written */
    naive_gemm(m, n, k, A, lda, B, ldb, want);
    CHECK_ST(cs_sgemm_small_build(b, m, n, k, A, lda, B, ldb, C, ldc), CS_OK);
    int bad = 0;
    for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < n; ++j) {
            const double got = C[r * ldc + j], w = want[r * n + j];
            bad += grid ? got != (double)(float)w : !close_f(got, w, 1e-5, 1e-6 * (double)k);
        }
    /* padding columns are the caller's and must be left alone */
    for (int64_t r = 0; r < m; ++r)
        for (int64_t j = n; j < ldc; ++j) bad += !isnan(C[r * ldc + j]);
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "  small sgemm build=%d m=%lld n=%lld k=%lld pad=%lld grid=%d: %d mismatches\n",
                     b, (long long)m, (long long)n, (long long)k, (long long)pad, grid, bad);
    free(A); free(B); free(C); free(want);
}

static void test_small_builds(void)
{
    const int64_t rows[] = {1, 2, 3, 4, 5, 7, 8, 9, CS_SMALL_ROWS, 31, 32, 33};
    const int64_t ks[] = {1, 7, 8, 9, 17, 40};
    const int64_t ns[] = {1, 15, 16, 17, 255, 256, 257, 600};
    int n_builds = 0;
    for (int b = CS_SIMD_PLAIN; b <= CS_SIMD_AVX512; ++b) {
        float one = 1.0f, out = 0.0f;
        if (cs_sgemm_small_build(b, 1, 1, 1, &one, 1, &one, 1, &out, 1) == CS_ERR_ARG) continue;
        ++n_builds;
        CHECK(out == 1.0f);
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ++ri)
            for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ++ki)
                for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ++ni)
                    check_shape(b, rows[ri], ns[ni], ks[ki], (int64_t)(ni % 3), 1);
        check_shape(b, 8, 1031, 300, 5, 0);
        check_shape(b, 32, 300, 300, 0, 0);
        check_shape(b, 1, 2048, 300, 1, 0);
    }
    CHECK(n_builds >= 1);
    CHECK(cs_simd_supported(CS_SIMD_PLAIN) && cs_simd_supported(cs_simd_best()));
    CHECK(cs_blas_small_rows_isa() != NULL);
    CHECK(cs_blas_small_rows_max() == CS_SMALL_ROWS);
    fprintf(stderr, "test_sae: small-row sgemm: %d builds run here, best %s\n", n_builds, cs_blas_small_rows_isa());
}

static void test_small_cols_and_bad_input(void)
{
    float a[4] = {0}, c[4];
    CHECK_ST(cs_sgemm_small(-1, 1, 1, a, 1, a, 1, c, 1), CS_ERR_SIZE);
    CHECK_ST(cs_sgemm_small(1, 2, 2, a, 1, a, 2, c, 2), CS_ERR_SIZE);   /* lda < k */
    CHECK_ST(cs_sgemm_small(1, 2, 1, a, 1, a, 2, c, 1), CS_ERR_SIZE);   /* ldc < n */
    CHECK_ST(cs_sgemm_small(1, 1, 1, NULL, 1, a, 1, c, 1), CS_ERR_NULL);
    CHECK_ST(cs_sgemm_small(0, 1, 1, NULL, 1, NULL, 1, NULL, 1), CS_OK);
    CHECK_ST(cs_sgemm_small_build(7, 1, 1, 1, a, 1, a, 1, c, 1), CS_ERR_ARG);
    for (int64_t m = 1; m <= 40; ++m) {
        const int64_t n = 100003, cols = cs_sgemm_small_cols(m, n);
        CHECK(cols >= 16 && cols <= n && (cols == n || cols % 16 == 0));
        CHECK(cols * m <= (CS_SMALL_TILE_ELEMS > 16 * m ? CS_SMALL_TILE_ELEMS : 16 * m));
        CHECK(cs_sgemm_small_cols(m, 5) == 5);
    }
}

/* encode and fused max/mean pooling at row counts around CS_SMALL_ROWS, against a
 * naive encode, on grid data (exact) and with d_sae crossing several small tiles */
static void test_small_paths(int64_t n_rows, int64_t d_in, int64_t d_sae, cs_arch arch)
{
    owned_sae o = make_sae(d_in, d_sae, arch, 5, 1);
    const cs_sae s = o.s;
    float *x = rand_array(n_rows * d_in, 1.0f);
    float *f = malloc((size_t)(n_rows * d_sae) * sizeof(float));
    float *g = malloc((size_t)d_sae * sizeof(float));
    float *zmax = malloc((size_t)d_sae * sizeof(float)), *zmean = malloc((size_t)d_sae * sizeof(float));
    float *want_max = calloc((size_t)d_sae, sizeof(float));
    double *want_sum = calloc((size_t)d_sae, sizeof(double));
    CHECK_ST(cs_sae_encode(&s, x, n_rows, f), CS_OK);
    int bad = 0;
    for (int64_t r = 0; r < n_rows; ++r) {
        naive_encode_row(&s, x + r * d_in, g);
        for (int64_t j = 0; j < d_sae; ++j) {
            bad += f[r * d_sae + j] != g[j];
            want_sum[j] += g[j];
            if (g[j] > want_max[j]) want_max[j] = g[j];
        }
    }
    /* all rows in one sequence: the pooled chunk has n_rows rows */
    CHECK_ST(cs_sae_encode_pooled(&s, x, NULL, 1, n_rows, CS_POOL_MAX, zmax), CS_OK);
    CHECK_ST(cs_sae_encode_pooled(&s, x, NULL, 1, n_rows, CS_POOL_MEAN, zmean), CS_OK);
    for (int64_t j = 0; j < d_sae; ++j) {
        bad += zmax[j] != want_max[j];
        bad += !close_f(zmean[j], want_sum[j] / (double)n_rows, 1e-6, 1e-7);
    }
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "  small paths arch=%d n_rows=%lld d_in=%lld d_sae=%lld: %d mismatches\n",
                     arch, (long long)n_rows, (long long)d_in, (long long)d_sae, bad);
    free_sae(&o); free(x); free(f); free(g);
    free(zmax); free(zmean); free(want_max); free(want_sum);
}

int main(void)
{
    rng_seed(1);
    const cs_arch archs[3] = {CS_ARCH_JUMPRELU, CS_ARCH_RELU, CS_ARCH_TOPK};
    for (int a = 0; a < 3; ++a)
        for (int apply = 0; apply < 2; ++apply) {
            test_encode(archs[a], apply, 5, 7, 33);
            test_encode(archs[a], apply, 600, 16, 40);   /* more than one row block (CS_ROW_BLOCK) */
            for (int mode = 0; mode < 2; ++mode) {
                test_pooled(archs[a], (cs_pool_mode)mode, apply, 3, 9, 6, 20);
                test_pooled(archs[a], (cs_pool_mode)mode, apply, 2, 300, 8, 1100); /* > 1 row chunk, > 1 column block */
            }
        }
    test_topk_ties();
    test_bad_input();
    /* the small-row streaming sgemm and the paths around its cut-over */
    test_small_builds();
    test_small_cols_and_bad_input();
    const int64_t rows[] = {1, 7, 8, CS_SMALL_ROWS - 1, CS_SMALL_ROWS, CS_SMALL_ROWS + 1, 31, 32, 33};
    /* one BLAS thread: <= CS_SMALL_ROWS rows stream; then four threads (an OpenBLAS
     * build only): every row count goes through BLAS, with the same results */
    const int threads_before = cs_blas_get_num_threads();
    const int threads[2] = {1, 4};
    for (int t = 0; t < 2; ++t) {
        cs_blas_set_num_threads(threads[t]);
        CHECK(cs_sgemm_small_wanted(8) == (cs_blas_get_num_threads() <= CS_SMALL_MAX_THREADS));
        CHECK(!cs_sgemm_small_wanted(CS_SMALL_ROWS + 1));
        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); ++r)
            for (int a = 0; a < 3; ++a) {
                test_small_paths(rows[r], 13, 1100, archs[a]);   /* d_sae not a multiple of any tile */
                test_small_paths(rows[r], 8, 37, archs[a]);
            }
    }
    cs_blas_set_num_threads(threads_before);
    return check_summary("test_sae");
}
