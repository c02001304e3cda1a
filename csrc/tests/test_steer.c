/*
 * test_steer.c -- steering vectors and masked row addition against naive loops.
 */
#include "check.h"

int main(void)
{
    rng_seed(3);
    enum { DS = 50, DI = 13, NR = 6 };
    float *W = rand_array(DS * DI, 1.0f);
    int64_t feats[4] = {3, 49, 3, 0};
    double coef[4] = {1.5, -0.25, 2.0, 1e-3};
    float v[DI];
    CHECK_ST(cs_steer_vector(W, DS, DI, feats, coef, 4, v), CS_OK);
    for (int p = 0; p < DI; ++p) {
        double want = 0;
        for (int k = 0; k < 4; ++k) want += coef[k] * (double)W[feats[k] * DI + p];
        CHECK(v[p] == (float)want);
    }
    CHECK_ST(cs_steer_vector(W, DS, DI, feats, coef, 0, v), CS_OK);
    for (int p = 0; p < DI; ++p) CHECK(v[p] == 0.0f);
    feats[1] = DS;
    CHECK_ST(cs_steer_vector(W, DS, DI, feats, coef, 4, v), CS_ERR_INDEX);
    feats[1] = -1;
    CHECK_ST(cs_steer_vector(W, DS, DI, feats, coef, 4, v), CS_ERR_INDEX);
    feats[1] = 1;
    coef[2] = INFINITY;
    CHECK_ST(cs_steer_vector(W, DS, DI, feats, coef, 4, v), CS_ERR_NONFINITE);
    CHECK_ST(cs_steer_vector(W, DS, DI, NULL, coef, 4, v), CS_ERR_NULL);
    CHECK_ST(cs_steer_vector(W, INT64_MAX / 2, 4, feats, coef, 1, v), CS_ERR_OVERFLOW);
    CHECK_ST(cs_steer_vector(W, 0, DI, feats, coef, 1, v), CS_ERR_SIZE);

    float *x = rand_array(NR * DI, 1.0f), *x0 = malloc(sizeof(float) * NR * DI);
    memcpy(x0, x, sizeof(float) * NR * DI);
    uint8_t mask[NR] = {1, 0, 0, 1, 1, 0};
    CHECK_ST(cs_steer_add_rows(x, NR, DI, v, mask), CS_OK);
    for (int i = 0; i < NR; ++i)
        for (int p = 0; p < DI; ++p)
            CHECK(x[i * DI + p] == (mask[i] ? x0[i * DI + p] + v[p] : x0[i * DI + p]));
    memcpy(x, x0, sizeof(float) * NR * DI);
    CHECK_ST(cs_steer_add_rows(x, NR, DI, v, NULL), CS_OK);
    for (int i = 0; i < NR * DI; ++i) CHECK(x[i] == x0[i] + v[i % DI]);
    CHECK_ST(cs_steer_add_rows(x, 0, DI, v, NULL), CS_OK);
    CHECK_ST(cs_steer_add_rows(x, NR, 0, v, NULL), CS_ERR_SIZE);
    CHECK_ST(cs_steer_add_rows(x, INT64_MAX / 2, 4, v, NULL), CS_ERR_OVERFLOW);
    CHECK_ST(cs_steer_add_rows(NULL, NR, DI, v, NULL), CS_ERR_NULL);
    CHECK(strcmp(cs_status_to_string(CS_ERR_FORMAT_CHECKSUM), "unknown status") != 0);
    CHECK(strcmp(cs_status_to_string((cs_status)99), "unknown status") == 0);
    CHECK(cs_blas_name() != NULL && cs_blas_config() != NULL && cs_blas_get_num_threads() >= 1);
    free(W); free(x); free(x0);
    return check_summary("test_steer");
}
