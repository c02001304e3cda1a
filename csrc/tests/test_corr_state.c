/*
 * test_corr_state.c -- the accumulator's consistency check (cs_corr_check) and what
 * depends on it: bytes with a valid checksum but an impossible state are refused by
 * the deserialiser with a reason naming the field; cs_corr_serialize refuses to write
 * a state that the deserialiser would refuse; and no state that updates and merges
 * produce (binary or pearson, constant, tiny or huge activations, constant rewards,
 * many folds) is ever refused.
 */
#include "check.h"
#include "internal.h"

#define N 240
#define D 9

static float z[N * D];
static double yb[N], yp[N];

static void fill(void)
{
    for (int64_t i = 0; i < N; ++i) {
        yb[i] = (rng_next() % 3 == 0) ? 1.0 : 0.0;
        yp[i] = (double)(rng_next() % 1001) / 1000.0;
        for (int64_t j = 0; j < D; ++j) {
            const float v = rng_uniform() + (float)yb[i] * 0.3f * (float)j / D;
            z[i * D + j] = v > 0.1f ? v : 0.0f;
        }
        z[i * D + 4] = 2.5f;   /* constant */
        z[i * D + 5] = -z[i * D + 5] * 1000.0f;  /* negative, wide */
    }
}

static uint64_t fnv(const uint8_t *p, int64_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (int64_t i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

static void reseal(uint8_t *b, int64_t size)
{
    const uint64_t h = fnv(b, size - 8);
    for (int i = 0; i < 8; ++i) b[size - 8 + i] = (uint8_t)(h >> (8 * i));
}

/* byte offsets of the scalars and of feature j of array a */
enum { OFF_N = 24, OFF_N_POS = 32, OFF_MEAN_Y = 40, OFF_M2_Y = 48 };
static int64_t off(int a, int64_t j) { return 56 + 8 * ((int64_t)a * D + j); }
static double get(const uint8_t *b, int64_t o) { double v; memcpy(&v, b + o, 8); return v; }
static void set(uint8_t *b, int64_t o, double v) { memcpy(b + o, &v, 8); }

/* A forged copy of good (one or two fields changed, checksum valid) must be refused
 * with CS_ERR_FORMAT_CORRUPT and a reason that contains `needle`. */
static void expect_refused(const uint8_t *good, int64_t size, int64_t o1, double v1, int64_t o2,
                           double v2, const char *needle)
{
    uint8_t *b = malloc((size_t)size);
    memcpy(b, good, (size_t)size);
    set(b, o1, v1);
    if (o2 >= 0) set(b, o2, v2);
    reseal(b, size);
    cs_corr *back = NULL;
    char why[256] = "unset";
    CHECK_ST(cs_corr_deserialize_reason(&back, b, size, why, sizeof(why)), CS_ERR_FORMAT_CORRUPT);
    CHECK(back == NULL);
    CHECK(strstr(why, needle) != NULL);
    if (strstr(why, needle) == NULL) fprintf(stderr, "  reason '%s' lacks '%s'\n", why, needle);
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_ERR_FORMAT_CORRUPT);
    cs_corr_free(back);
    free(b);
}

static void test_forged(cs_corr_kind kind)
{
    const double *y = kind == CS_CORR_BINARY ? yb : yp;
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, D, kind), CS_OK);
    CHECK_ST(cs_corr_update(acc, z, y, N), CS_OK);
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *good = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(acc, good, size), CS_OK);
    cs_corr *back = NULL;
    char why[256];
    CHECK_ST(cs_corr_deserialize_reason(&back, good, size, why, sizeof(why)), CS_OK);
    CHECK(why[0] == '\0');
    cs_corr_free(back);
    const double n = get(good, OFF_N), n_pos = get(good, OFF_N_POS);
    const int64_t j = 2;   /* a feature active on some but not all samples */
    const double act = get(good, off(CS_ARR_N_ACTIVE, j)), pact = get(good, off(CS_ARR_N_POS_ACTIVE, j));
    CHECK(act > 0 && act < n && pact > 0);

    /* the example: m2_y = 0 made every r +-1 */
    expect_refused(good, size, OFF_M2_Y, 0.0, -1, 0,
                   kind == CS_CORR_BINARY ? "m2_y = 0 but rewards" : "(|r| > 1)");
    expect_refused(good, size, OFF_M2_Y, n, -1, 0, "m2_y");
    expect_refused(good, size, OFF_M2_Y, -1.0, -1, 0, "m2_y = -1");
    expect_refused(good, size, OFF_MEAN_Y, get(good, OFF_MEAN_Y) + 0.01, -1, 0, "mean_y");
    expect_refused(good, size, OFF_N, 1.5, -1, 0, "n = 1.5 is not a sample count");
    expect_refused(good, size, OFF_N, -2.0, -1, 0, "is not a sample count");
    expect_refused(good, size, OFF_N_POS, n + 1, -1, 0, "n_pos");
    expect_refused(good, size, OFF_N_POS, -1.0, -1, 0, "n_pos");
    expect_refused(good, size, OFF_N_POS, NAN, -1, 0, "not all finite");
    if (kind == CS_CORR_BINARY) expect_refused(good, size, OFF_N_POS, n_pos + 0.5, OFF_MEAN_Y, (n_pos + 0.5) / n, "is not a count");
    expect_refused(good, size, OFF_N, 0.0, OFF_N_POS, 0.0, "n = 0 but");
    expect_refused(good, size, off(CS_ARR_MEAN, j), NAN, -1, 0, "mean[2] = nan is not finite");
    expect_refused(good, size, off(CS_ARR_C_ZY, 8), INFINITY, -1, 0, "c_zy[8] = inf is not finite");
    expect_refused(good, size, off(CS_ARR_MEAN, j), 1e39, -1, 0, "float32 range");
    expect_refused(good, size, off(CS_ARR_M2, j), -1.0, -1, 0, "m2[2] = -1 is not in");
    expect_refused(good, size, off(CS_ARR_N_ACTIVE, j), n + 1, -1, 0, "n_active[2]");
    expect_refused(good, size, off(CS_ARR_N_ACTIVE, j), act + 0.5, -1, 0, "n_active[2]");
    expect_refused(good, size, off(CS_ARR_N_POS_ACTIVE, j), act + 1, -1, 0, "n_pos_active[2]");
    expect_refused(good, size, off(CS_ARR_N_POS_ACTIVE, j), -1.0, -1, 0, "n_pos_active[2]");
    expect_refused(good, size, off(CS_ARR_N_ACTIVE, j), n, off(CS_ARR_N_POS_ACTIVE, j), 0.0,
                   "n_active[2] - n_pos_active[2]");
    /* |r| > 1 */
    const double czy = get(good, off(CS_ARR_C_ZY, j));
    const double lim = sqrt(get(good, off(CS_ARR_M2, j)) * get(good, OFF_M2_Y));
    expect_refused(good, size, off(CS_ARR_C_ZY, j), 1.01 * lim, -1, 0, "(|r| > 1)");
    expect_refused(good, size, off(CS_ARR_C_ZY, 4), 1e-3, -1, 0, "(|r| > 1)");  /* constant feature */
    /* a steering coefficient that does not match the co-moment */
    expect_refused(good, size, off(CS_ARR_MEAN_POS, j), get(good, off(CS_ARR_MEAN_POS, j)) + 0.05, -1, 0,
                   "but n_pos (mean_pos - mean)");
    expect_refused(good, size, off(CS_ARR_C_ZY, j), 0.5 * czy, -1, 0, "but n_pos (mean_pos - mean)");
    /* one sample has no spread */
    {
        cs_corr *one = NULL;
        CHECK_ST(cs_corr_init(&one, D, kind), CS_OK);
        CHECK_ST(cs_corr_update(one, z, y, 1), CS_OK);
        uint8_t *b1 = malloc((size_t)size);
        CHECK_ST(cs_corr_serialize(one, b1, size), CS_OK);
        expect_refused(b1, size, off(CS_ARR_M2, 1), 0.25, -1, 0, "one sample has no spread");
        free(b1);
        cs_corr_free(one);
    }
    free(good);
    cs_corr_free(acc);
}

/* cs_corr_serialize writes nothing for a state the deserialiser would refuse. */
static void test_serialize_refuses_bad_state(void)
{
    cs_corr *acc = NULL;
    CHECK_ST(cs_corr_init(&acc, D, CS_CORR_BINARY), CS_OK);
    CHECK_ST(cs_corr_update(acc, z, yb, N), CS_OK);
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *buf = malloc((size_t)size), *zero = calloc((size_t)size, 1);
    memset(buf, 0, (size_t)size);
    char why[256];
    const double saved = acc->arr[CS_ARR_M2][3];
    acc->arr[CS_ARR_M2][3] = NAN;   /* what a NaN slipped into an update would leave */
    CHECK_ST(cs_corr_check(acc, why, sizeof(why)), CS_ERR_STATE);
    CHECK(strstr(why, "m2[3] = nan") != NULL);
    CHECK_ST(cs_corr_serialize(acc, buf, size), CS_ERR_STATE);
    CHECK(memcmp(buf, zero, (size_t)size) == 0);
    acc->arr[CS_ARR_M2][3] = saved;
    acc->m2_y = 0.0;
    CHECK_ST(cs_corr_serialize(acc, buf, size), CS_ERR_STATE);
    CHECK_ST(cs_corr_check(acc, NULL, 0), CS_ERR_STATE);
    CHECK_ST(cs_corr_check(acc, why, 8), CS_ERR_STATE);   /* a short buffer is truncated, terminated */
    CHECK(strlen(why) == 7);
    CHECK_ST(cs_corr_check(NULL, why, sizeof(why)), CS_ERR_NULL);
    free(buf); free(zero);
    cs_corr_free(acc);
}

/* The header's own failures come with a reason too. */
static void test_header_reasons(void)
{
    cs_corr *acc = NULL, *back = NULL;
    CHECK_ST(cs_corr_init(&acc, D, CS_CORR_PEARSON), CS_OK);
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *b = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(acc, b, size), CS_OK);   /* the empty state is consistent */
    char why[256];
    CHECK_ST(cs_corr_deserialize_reason(&back, b, size - 8, why, sizeof(why)), CS_ERR_FORMAT_SIZE);
    CHECK(strstr(why, "takes") != NULL);
    b[12] = 9;
    CHECK_ST(cs_corr_deserialize_reason(&back, b, size, why, sizeof(why)), CS_ERR_FORMAT_CORRUPT);
    CHECK(strstr(why, "kind = 9") != NULL);
    b[12] = 1; b[8] = 3;
    CHECK_ST(cs_corr_deserialize_reason(&back, b, size, why, sizeof(why)), CS_ERR_FORMAT_VERSION);
    CHECK(strstr(why, "version 3") != NULL);
    b[8] = 1; b[0] = 'X';
    CHECK_ST(cs_corr_deserialize_reason(&back, b, size, why, sizeof(why)), CS_ERR_FORMAT_MAGIC);
    CHECK(why[0] == '\0');
    CHECK(back == NULL);
    free(b);
    cs_corr_free(acc);
}

/* Fold batches of random heights, merges and self-merges; every state on the way
 * must pass cs_corr_check and round-trip through bytes. */
static void check_passes(const cs_corr *acc, const char *what, int step)
{
    char why[256] = "";
    const cs_status st = cs_corr_check(acc, why, sizeof(why));
    CHECK(st == CS_OK);
    if (st != CS_OK) fprintf(stderr, "  %s step %d refused: %s\n", what, step, why);
}

static void grow(cs_corr_kind kind, int y_mode, float scale, float offset, const char *what)
{
    enum { M = 600, DG = 6 };
    static float zz[M * DG];
    static double w[M];
    for (int64_t i = 0; i < M; ++i) {
        switch (y_mode) {
        case 0: w[i] = kind == CS_CORR_BINARY ? (double)(rng_next() % 2) : (double)(rng_next() % 1000) / 999.0; break;
        case 1: w[i] = kind == CS_CORR_BINARY ? 1.0 : 0.3; break;   /* constant rewards */
        default: w[i] = 0.0; break;
        }
        for (int64_t j = 0; j < DG; ++j) {
            float v = offset + scale * (rng_uniform() + (float)(w[i] * (double)j / DG));
            if (j == 0) v = offset + scale * 0.1f;     /* constant */
            if (j == 1) v = v > offset ? v : 0.0f;     /* sparse */
            if (j == 2) v = (float)w[i] * scale;       /* |r| = 1 */
            zz[i * DG + j] = v;
        }
    }
    cs_corr *acc = NULL, *other = NULL;
    CHECK_ST(cs_corr_init(&acc, DG, kind), CS_OK);
    CHECK_ST(cs_corr_init(&other, DG, kind), CS_OK);
    check_passes(acc, what, -1);
    int64_t i = 0, step = 0;
    while (i < M) {
        const int64_t m = 1 + (int64_t)(rng_next() % 40);
        const int64_t take = M - i < m ? M - i : m;
        CHECK_ST(cs_corr_update(step % 3 ? acc : other, zz + i * DG, w + i, take), CS_OK);
        i += take;
        check_passes(acc, what, (int)step);
        if (step % 7 == 6) { CHECK_ST(cs_corr_merge(acc, other), CS_OK); check_passes(acc, what, (int)step); }
        ++step;
    }
    for (int k = 0; k < 40; ++k) CHECK_ST(cs_corr_merge(acc, acc), CS_OK);   /* n ~ 2^49 */
    check_passes(acc, what, 1000);
    const int64_t size = cs_corr_serialized_size(acc);
    uint8_t *b = malloc((size_t)size);
    CHECK_ST(cs_corr_serialize(acc, b, size), CS_OK);
    cs_corr *back = NULL;
    CHECK_ST(cs_corr_deserialize(&back, b, size), CS_OK);
    free(b);
    cs_corr_free(back); cs_corr_free(acc); cs_corr_free(other);
}

int main(void)
{
    rng_seed(11);
    fill();
    test_forged(CS_CORR_BINARY);
    test_forged(CS_CORR_PEARSON);
    test_serialize_refuses_bad_state();
    test_header_reasons();
    const float scales[] = {1.0f, 1e-30f, 1e30f, 3e38f};
    const float offsets[] = {0.0f, 1e4f, -5.0f};
    for (int kind = 0; kind < 2; ++kind)
        for (int y_mode = 0; y_mode < 3; ++y_mode)
            for (int s = 0; s < 4; ++s)
                for (int o = 0; o < 3; ++o) {
                    if (s == 3 && o != 0) continue;   /* 3e38 + offset overflows float */
                    char what[96];
                    snprintf(what, sizeof(what), "kind=%d y_mode=%d scale=%g offset=%g", kind, y_mode,
                             (double)scales[s], (double)offsets[o]);
                    grow((cs_corr_kind)kind, y_mode, scales[s] / (s == 3 ? 4.0f : 1.0f), offsets[o], what);
                }
    return check_summary("test_corr_state");
}
