/*
 * test_corr.c -- the streaming correlation accumulator: against a naive two-pass
 * double computation, the streaming invariants (one update = many small updates =
 * merge of halves = serialise/deserialise mid-way), degenerate and constant cases,
 * ranking ties, the Pearson kind, and malformed serialised bytes.
 */
#include "check.h"
#include "internal.h"

#define N 240
#define D 9

static float z[N * D];
static double y[N], yr[N];

/* naive Pearson r of column j against w over rows [0, n) */
static double naive_r(const float *zz, const double *w, int64_t n, int64_t d, int64_t j)
{
    double mz = 0, mw = 0, szz = 0, sww = 0, szw = 0;
    for (int64_t i = 0; i < n; ++i) { mz += zz[i * d + j]; mw += w[i]; }
    mz /= (double)n; mw /= (double)n;
    for (int64_t i = 0; i < n; ++i) {
        const double a = zz[i * d + j] - mz, b = w[i] - mw;
        szz += a * a; sww += b * b; szw += a * b;
    }
    return (szz == 0 || sww == 0) ? 0.0 : szw / sqrt(szz * sww);
}

static void fill(void)
{
    for (int64_t i = 0; i < N; ++i) {
        y[i] = (rng_next() % 3 == 0) ? 1.0 : 0.0;
        yr[i] = (double)(rng_next() % 1001) / 1000.0;
        for (int64_t j = 0; j < D; ++j) {
            float v = rng_uniform() + (float)y[i] * 0.3f * (float)j / D;
            z[i * D + j] = v > 0.1f ? v : 0.0f;          /* sparse, like pooled SAE features */
        }
        z[i * D + 4] = 2.5f;                               /* constant feature */
        z[i * D + 7] = z[i * D + 6];                       /* tie with feature 6 */
    }
}

static int states_close(const cs_corr *a, const cs_corr *b, double tol)
{
    double ra[D], rb[D], ca[D], cb[D], fa[D], fb[D];
    cs_corr_correlation(a, ra, NULL); cs_corr_correlation(b, rb, NULL);
    cs_corr_coefficient(a, 1, ca); cs_corr_coefficient(b, 1, cb);
    cs_corr_frequency(a, fa); cs_corr_frequency(b, fb);
    if (cs_corr_n(a) != cs_corr_n(b) || fabs(cs_corr_n_pos(a) - cs_corr_n_pos(b)) > 1e-9) return 0;
    for (int j = 0; j < D; ++j)
        if (fabs(ra[j] - rb[j]) > tol || fabs(ca[j] - cb[j]) > tol || fabs(fa[j] - fb[j]) > tol) return 0;
    return 1;
}

static void test_against_naive(cs_corr_kind kind, const double *w)
{
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, D, kind), CS_OK);
    CHECK_ST(cs_corr_update(acc, z, w, N), CS_OK);
    double r[D], c[D], ca[D], f[D];
    int deg = -1;
    CHECK_ST(cs_corr_correlation(acc, r, &deg), CS_OK);
    CHECK(deg == 0);
    CHECK_ST(cs_corr_coefficient(acc, 0, c), CS_OK);
    CHECK_ST(cs_corr_coefficient(acc, 1, ca), CS_OK);
    CHECK_ST(cs_corr_frequency(acc, f), CS_OK);
    for (int64_t j = 0; j < D; ++j) {
        double syz = 0, sy = 0, sya = 0, act = 0;
        for (int64_t i = 0; i < N; ++i) {
            syz += w[i] * z[i * D + j]; sy += w[i];
            sya += z[i * D + j] > 0 ? w[i] : 0; act += z[i * D + j] > 0;
        }
        CHECK(fabs(r[j] - naive_r(z, w, N, D, j)) < 1e-12);
        CHECK(fabs(c[j] - syz / sy) < 1e-12);
        CHECK(fabs(ca[j] - (sya > 0 ? syz / sya : 0.0)) < 1e-12);
        CHECK(fabs(f[j] - act / N) < 1e-15);
    }
    CHECK(r[4] == 0.0);  /* constant */
    CHECK(r[6] == r[7]);
    cs_corr_free(acc);
}

static void test_invariants(cs_corr_kind kind, const double *w)
{
    cs_corr *one = NULL, *many = NULL, *h1 = NULL, *h2 = NULL, *ser = NULL, *back = NULL;
    CHECK_ST(cs_corr_init(&one, D, kind), CS_OK);
    CHECK_ST(cs_corr_init(&many, D, kind), CS_OK);
    CHECK_ST(cs_corr_init(&h1, D, kind), CS_OK);
    CHECK_ST(cs_corr_init(&h2, D, kind), CS_OK);
    CHECK_ST(cs_corr_init(&ser, D, kind), CS_OK);
    CHECK_ST(cs_corr_update(one, z, w, N), CS_OK);
    int64_t i = 0, step = 1;
    while (i < N) {
        int64_t m = N - i < step ? N - i : step;
        CHECK_ST(cs_corr_update(many, z + i * D, w + i, m), CS_OK);
        i += m; step = step * 2 + 1;
    }
    CHECK(states_close(one, many, 1e-12));
    CHECK_ST(cs_corr_update(h1, z, w, N / 3), CS_OK);
    CHECK_ST(cs_corr_update(h2, z + (N / 3) * D, w + N / 3, N - N / 3), CS_OK);
    CHECK_ST(cs_corr_merge(h2, h1), CS_OK);   /* order does not matter */
    CHECK(states_close(one, h2, 1e-12));

    /* serialise mid-way, continue on the copy */
    CHECK_ST(cs_corr_update(ser, z, w, N / 2), CS_OK);
    const int64_t size = cs_corr_serialized_size(ser);
    uint8_t *buf = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(ser, buf, size), CS_OK);
    CHECK_ST(cs_corr_serialize(ser, buf, size - 1), CS_ERR_SIZE);
    CHECK_ST(cs_corr_deserialize(&back, buf, size), CS_OK);
    if (back != NULL) {
        CHECK_ST(cs_corr_update(back, z + (N / 2) * D, w + N / 2, N - N / 2), CS_OK);
        CHECK(states_close(one, back, 1e-12));
        cs_corr_free(back);
    }
    /* merge with itself doubles the counts and keeps r */
    CHECK_ST(cs_corr_merge(ser, ser), CS_OK);
    CHECK(cs_corr_n(ser) == (double)N);
    free(buf);
    cs_corr_free(one); cs_corr_free(many); cs_corr_free(h1); cs_corr_free(h2); cs_corr_free(ser);
}

static void test_degenerate_and_top(void)
{
    cs_corr *acc = NULL;
    double ones[N], r[D];
    for (int i = 0; i < N; ++i) ones[i] = 1.0;
    CHECK_ST(cs_corr_init(&acc, D, CS_CORR_BINARY), CS_OK);
    int deg = 0;
    CHECK_ST(cs_corr_correlation(acc, r, &deg), CS_OK);   /* empty */
    CHECK(deg == 1 && r[0] == 0.0);
    CHECK_ST(cs_corr_update(acc, z, ones, N), CS_OK);
    CHECK_ST(cs_corr_correlation(acc, r, &deg), CS_OK);
    CHECK(deg == 1);
    int nz = 0;
    for (int j = 0; j < D; ++j) nz += r[j] != 0.0;
    CHECK(nz == 0);
    int64_t idx[D], n_out = -1;
    double rt[D];
    CHECK_ST(cs_corr_top(acc, 3, CS_SIGN_POSITIVE, idx, rt, &n_out), CS_OK);
    CHECK(n_out == 0);
    cs_corr_reset(acc);
    CHECK(cs_corr_n(acc) == 0.0);

    CHECK_ST(cs_corr_update(acc, z, y, N), CS_OK);
    CHECK_ST(cs_corr_correlation(acc, r, &deg), CS_OK);
    CHECK_ST(cs_corr_top(acc, D, CS_SIGN_POSITIVE, idx, rt, &n_out), CS_OK);
    int64_t n_posr = 0;
    for (int j = 0; j < D; ++j) n_posr += r[j] > 0;
    CHECK(n_out == n_posr);
    for (int64_t t = 1; t < n_out; ++t)
        CHECK(rt[t - 1] > rt[t] || (rt[t - 1] == rt[t] && idx[t - 1] < idx[t]));
    for (int64_t t = 0; t < n_out; ++t) CHECK(rt[t] == r[idx[t]]);
    /* features 6 and 7 are identical: 6 must come first */
    int64_t p6 = -1, p7 = -1;
    for (int64_t t = 0; t < n_out; ++t) { if (idx[t] == 6) p6 = t; if (idx[t] == 7) p7 = t; }
    CHECK(p6 >= 0 && p7 == p6 + 1);
    CHECK_ST(cs_corr_top(acc, 2, CS_SIGN_NEGATIVE, idx, rt, &n_out), CS_OK);
    for (int64_t t = 0; t < n_out; ++t) CHECK(rt[t] < 0);
    CHECK_ST(cs_corr_top(acc, 0, CS_SIGN_POSITIVE, idx, rt, &n_out), CS_ERR_ARG);
    CHECK_ST(cs_corr_top(acc, 1, (cs_sign)3, idx, rt, &n_out), CS_ERR_ARG);
    cs_corr_free(acc);
}

static void test_bad_input(void)
{
    cs_corr *acc = NULL, *other = NULL;
    CHECK_ST(cs_corr_init(&acc, 0, CS_CORR_BINARY), CS_ERR_SIZE);
    CHECK_ST(cs_corr_init(&acc, 4, (cs_corr_kind)9), CS_ERR_ARG);
    CHECK_ST(cs_corr_init(&acc, INT64_MAX / 8, CS_CORR_BINARY), CS_ERR_OVERFLOW);
    CHECK_ST(cs_corr_init(&acc, (int64_t)1 << 44, CS_CORR_BINARY), CS_ERR_NOMEM);
    CHECK(acc == NULL);
    CHECK_ST(cs_corr_init(&acc, D, CS_CORR_BINARY), CS_OK);
    double bad[2] = {0.0, 0.5};
    CHECK_ST(cs_corr_update(acc, z, bad, 2), CS_ERR_REWARD);
    bad[1] = NAN;
    CHECK_ST(cs_corr_update(acc, z, bad, 2), CS_ERR_NONFINITE);
    bad[1] = 1.0;
    CHECK_ST(cs_corr_update(acc, z, bad, 0), CS_ERR_SIZE);
    CHECK_ST(cs_corr_update(acc, z, bad, INT64_MAX / 4), CS_ERR_OVERFLOW);
    float zn[2 * D];
    memcpy(zn, z, sizeof(zn));
    zn[D + 3] = NAN;
    CHECK_ST(cs_corr_update(acc, zn, bad, 2), CS_ERR_NONFINITE);
    zn[D + 3] = -INFINITY;
    CHECK_ST(cs_corr_update(acc, zn, bad, 2), CS_ERR_NONFINITE);
    CHECK(cs_corr_n(acc) == 0.0);  /* failed updates change nothing */
    CHECK_ST(cs_corr_init(&other, D + 1, CS_CORR_BINARY), CS_OK);
    CHECK_ST(cs_corr_merge(acc, other), CS_ERR_MISMATCH);
    cs_corr_free(other);
    CHECK_ST(cs_corr_init(&other, D, CS_CORR_PEARSON), CS_OK);
    CHECK_ST(cs_corr_merge(acc, other), CS_ERR_MISMATCH);
    bad[1] = 1.5;
    CHECK_ST(cs_corr_update(other, z, bad, 2), CS_ERR_REWARD);
    bad[1] = -0.1;
    CHECK_ST(cs_corr_update(other, z, bad, 2), CS_ERR_REWARD);
    cs_corr_free(other);
    cs_corr_free(acc);
    cs_corr_free(NULL);
}

static uint64_t fnv(const uint8_t *p, int64_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (int64_t i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

static void reseal(uint8_t *b, int64_t size)
{
    uint64_t h = fnv(b, size - 8);
    for (int i = 0; i < 8; ++i) b[size - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void test_malformed(void)
{
    cs_corr *acc = NULL, *back = NULL;
    CHECK_ST(cs_corr_init(&acc, D, CS_CORR_BINARY), CS_OK);
    CHECK_ST(cs_corr_update(acc, z, y, N), CS_OK);
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *good = malloc((size_t)size + 1), *b = malloc((size_t)size + 1);
    CHECK_ST(cs_corr_serialize(acc, good, size), CS_OK);
    good[size] = 0;
    CHECK_ST(cs_corr_deserialize(&back, good, 4), CS_ERR_FORMAT_SIZE);
    CHECK_ST(cs_corr_deserialize(&back, good, size - 1), CS_ERR_FORMAT_SIZE);
    CHECK_ST(cs_corr_deserialize(&back, good, size + 1), CS_ERR_FORMAT_SIZE);
    CHECK_ST(cs_corr_deserialize(&back, good, 20), CS_ERR_FORMAT_SIZE);
    CHECK_ST(cs_corr_deserialize(&back, NULL, size), CS_ERR_NULL);
    memcpy(b, good, (size_t)size); b[0] ^= 1;
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_MAGIC);
    memcpy(b, good, (size_t)size); b[8] = 2;
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_VERSION);
    memcpy(b, good, (size_t)size); b[12] = 7;
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    memcpy(b, good, (size_t)size); b[16] = D + 1;
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_SIZE);
    memcpy(b, good, (size_t)size); b[23] = 0x80;   /* negative d_sae */
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    for (int64_t pos = 24; pos < size; pos += 37) {   /* any flipped bit in the payload */
        memcpy(b, good, (size_t)size); b[pos] ^= 0x10;
        CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CHECKSUM);
    }
    /* valid checksum, impossible content: n_pos > n, then a NaN mean, then m2 < 0 */
    memcpy(b, good, (size_t)size);
    double big = 1e9; memcpy(b + 32, &big, 8); reseal(b, size);
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    memcpy(b, good, (size_t)size);
    double nan_v = NAN; memcpy(b + 56, &nan_v, 8); reseal(b, size);
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    memcpy(b, good, (size_t)size);
    double neg = -1.0; memcpy(b + 56 + 8 * D, &neg, 8); reseal(b, size);
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    CHECK(back == NULL);
    CHECK_ST(cs_corr_deserialize(&back, good, size), CS_OK);
    uint8_t *again = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(back, again, size), CS_OK);
    CHECK(memcmp(again, good, (size_t)size) == 0);
    free(again); free(good); free(b);
    cs_corr_free(back); cs_corr_free(acc);
}

/* cs_corr_moments: the state against naive two-pass sums, the same bits as the
 * serialised bytes, NULL arrays skipped, an empty accumulator all zero. */
static void test_moments(cs_corr_kind kind, const double *w)
{
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, D, kind), CS_OK);
    if (acc == NULL) return;
    double mean[D], m2[D], mp[D], act[D], pact[D], czy[D];
    cs_corr_state st = {0};
    st.mean = mean; st.m2 = m2; st.mean_pos = mp; st.n_active = act; st.n_pos_active = pact; st.c_zy = czy;
    st.n = -1.0;
    CHECK_ST(cs_corr_moments(acc, &st), CS_OK);
    CHECK(st.n == 0.0 && st.n_pos == 0.0 && st.mean_y == 0.0 && st.m2_y == 0.0);
    for (int j = 0; j < D; ++j) CHECK(mean[j] == 0.0 && m2[j] == 0.0 && czy[j] == 0.0 && pact[j] == 0.0);
    CHECK_ST(cs_corr_update(acc, z, w, N / 2), CS_OK);
    CHECK_ST(cs_corr_update(acc, z + (N / 2) * D, w + N / 2, N - N / 2), CS_OK);
    CHECK_ST(cs_corr_moments(acc, &st), CS_OK);
    double sy = 0, my = 0, m2y = 0;
    for (int64_t i = 0; i < N; ++i) sy += w[i];
    my = sy / N;
    for (int64_t i = 0; i < N; ++i) m2y += (w[i] - my) * (w[i] - my);
    CHECK(st.n == (double)N && fabs(st.n_pos - sy) < 1e-12 && fabs(st.mean_y - my) < 1e-15);
    CHECK(fabs(st.m2_y - m2y) < 1e-10);
    for (int64_t j = 0; j < D; ++j) {
        double mz = 0, s2 = 0, syz = 0, a = 0, pa = 0, c = 0;
        for (int64_t i = 0; i < N; ++i) {
            const double v = z[i * D + j];
            mz += v; syz += w[i] * v; a += v > 0; pa += v > 0 ? w[i] : 0.0;
        }
        mz /= N;
        for (int64_t i = 0; i < N; ++i) {
            const double dz = z[i * D + j] - mz;
            s2 += dz * dz; c += dz * (w[i] - my);
        }
        CHECK(fabs(mean[j] - mz) < 1e-14 && fabs(m2[j] - s2) < 1e-10 && fabs(czy[j] - c) < 1e-10);
        CHECK(fabs(mp[j] - syz / sy) < 1e-14 && act[j] == a && fabs(pact[j] - pa) < 1e-12);
    }
    /* the same bits as the bytes */
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *buf = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(acc, buf, size), CS_OK);
    const double *const arrs[6] = {mean, m2, mp, act, pact, czy};
    CHECK(memcmp(buf + 24, &st.n, 8) == 0 && memcmp(buf + 32, &st.n_pos, 8) == 0);
    CHECK(memcmp(buf + 40, &st.mean_y, 8) == 0 && memcmp(buf + 48, &st.m2_y, 8) == 0);
    for (int a = 0; a < 6; ++a) CHECK(memcmp(buf + 56 + 8 * D * a, arrs[a], 8 * D) == 0);
    free(buf);
    /* NULL arrays are skipped */
    cs_corr_state only = {0};
    double m2b[D];
    only.m2 = m2b;
    CHECK_ST(cs_corr_moments(acc, &only), CS_OK);
    CHECK(only.n == (double)N && memcmp(m2b, m2, sizeof(m2)) == 0);
    CHECK_ST(cs_corr_moments(NULL, &only), CS_ERR_NULL);
    CHECK_ST(cs_corr_moments(acc, NULL), CS_ERR_NULL);
    cs_corr_free(acc);
}

/* activations around 1e4 with a small spread: centred moments keep r exact */
static void test_large_offset(void)
{
    enum { M = 20000, DD = 3 };
    float *zz = malloc(sizeof(float) * M * DD);
    double *w = malloc(sizeof(double) * M);
    for (int64_t i = 0; i < M; ++i) {
        w[i] = (double)(rng_next() & 1);
        for (int64_t j = 0; j < DD; ++j)
            zz[i * DD + j] = 10000.0f + rng_uniform() + (float)(w[i] * 0.25 * (double)j);
    }
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, DD, CS_CORR_BINARY), CS_OK);
    for (int64_t i = 0; i < M; i += 1000) CHECK_ST(cs_corr_update(acc, zz + i * DD, w + i, 1000), CS_OK);
    double r[DD];
    CHECK_ST(cs_corr_correlation(acc, r, NULL), CS_OK);
    for (int64_t j = 0; j < DD; ++j) {
        const double want = naive_r(zz, w, M, DD, j);
        CHECK(fabs(r[j] - want) <= 1e-9 * fabs(want) + 1e-12);
        if (!(fabs(r[j] - want) <= 1e-9 * fabs(want) + 1e-12)) fprintf(stderr, "  r=%.17g want=%.17g\n", r[j], want);
    }
    cs_corr_free(acc); free(zz); free(w);
}

/* d_sae wider than the update's 512-feature blocks and not a multiple of them: every
 * feature against the naive two-pass r, coefficient and frequency, in two batches;
 * every SIMD build gives the same bytes; a NaN in the last block is refused with the
 * state unchanged (no block folded). */
static void test_wide(cs_corr_kind kind)
{
    enum { M = 40, DW = 1100 };
    float *zz = malloc(sizeof(float) * M * DW);
    double *w = malloc(sizeof(double) * M);
    for (int64_t i = 0; i < M; ++i) {
        w[i] = kind == CS_CORR_BINARY ? (double)(i % 3 == 0) : (double)(rng_next() % 1001) / 1000.0;
        for (int64_t j = 0; j < DW; ++j) {
            const float v = rng_uniform() + (float)(w[i] * (double)(j % 7) / 7.0);
            zz[i * DW + j] = v > 0.2f ? v : 0.0f;
        }
    }
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, DW, kind), CS_OK);
    if (acc == NULL) { free(zz); free(w); return; }
    CHECK_ST(cs_corr_update(acc, zz, w, 15), CS_OK);
    CHECK_ST(cs_corr_update(acc, zz + 15 * DW, w + 15, M - 15), CS_OK);
    double *r = malloc(sizeof(double) * DW), *c = malloc(sizeof(double) * DW);
    double *f = malloc(sizeof(double) * DW), *r2 = malloc(sizeof(double) * DW);
    CHECK_ST(cs_corr_correlation(acc, r, NULL), CS_OK);
    CHECK_ST(cs_corr_coefficient(acc, 0, c), CS_OK);
    CHECK_ST(cs_corr_frequency(acc, f), CS_OK);
    int bad = 0;
    for (int64_t j = 0; j < DW; ++j) {
        double syz = 0, sy = 0, act = 0;
        for (int64_t i = 0; i < M; ++i) {
            syz += w[i] * zz[i * DW + j]; sy += w[i]; act += zz[i * DW + j] > 0;
        }
        bad += !(fabs(r[j] - naive_r(zz, w, M, DW, j)) < 1e-12);
        bad += !(fabs(c[j] - syz / sy) < 1e-12);
        bad += !(fabs(f[j] - act / M) < 1e-15);
    }
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "  wide kind=%d: %d mismatches\n", kind, bad);
    /* every SIMD build of the update this CPU runs gives the same bytes */
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *want = malloc((size_t)size), *got = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(acc, want, size), CS_OK);
    for (int level = CS_SIMD_PLAIN; level <= CS_SIMD_AVX512; ++level) {
        cs_corr *other = NULL;
        CHECK_ST(cs_corr_init(&other, DW, kind), CS_OK);
        if (other == NULL) break;
        const cs_status st = cs_corr_update_simd(level, other, zz, w, 15);
        CHECK(st == (cs_simd_supported(level) ? CS_OK : CS_ERR_ARG));
        if (st == CS_OK) {
            CHECK_ST(cs_corr_update_simd(level, other, zz + 15 * DW, w + 15, M - 15), CS_OK);
            CHECK_ST(cs_corr_serialize(other, got, size), CS_OK);
            CHECK(memcmp(want, got, (size_t)size) == 0);
        }
        cs_corr_free(other);
    }
    CHECK_ST(cs_corr_update_simd(7, acc, zz, w, M), CS_ERR_ARG);
    free(want); free(got);
    zz[3 * DW + DW - 2] = NAN;
    CHECK_ST(cs_corr_update(acc, zz, w, M), CS_ERR_NONFINITE);
    CHECK(cs_corr_n(acc) == (double)M);
    CHECK_ST(cs_corr_correlation(acc, r2, NULL), CS_OK);
    CHECK(memcmp(r, r2, sizeof(double) * DW) == 0);
    cs_corr_free(acc); free(zz); free(w); free(r); free(c); free(f); free(r2);
}

int main(void)
{
    rng_seed(7);
    fill();
    test_against_naive(CS_CORR_BINARY, y);
    test_against_naive(CS_CORR_PEARSON, y);
    test_against_naive(CS_CORR_PEARSON, yr);
    test_invariants(CS_CORR_BINARY, y);
    test_invariants(CS_CORR_PEARSON, yr);
    test_degenerate_and_top();
    test_bad_input();
    test_malformed();
    test_moments(CS_CORR_BINARY, y);
    test_moments(CS_CORR_PEARSON, yr);
    test_large_offset();
    test_wide(CS_CORR_BINARY);
    test_wide(CS_CORR_PEARSON);
    return check_summary("test_corr");
}
