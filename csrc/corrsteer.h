/*
 * corrsteer.h -- the C99 core of corrsteer (the one public header).
 *
 * Three computations, all on caller-owned float arrays:
 *   1. SAE encoding (JumpReLU, ReLU, TopK), optionally fused with masked pooling
 *      over tokens (max, or sum + count for mean), blocked over d_sae so that only
 *      a (rows x block) tile of activations exists at any time;
 *   2. a streaming point-biserial (or Pearson) correlation accumulator whose
 *      memory is O(d_sae), mergeable exactly (Chan et al.), serialisable;
 *   3. steering deltas: v = sum_k c_k * W_dec[f_k], and x[rows where mask] += v.
 *
 * Dimension names, fixed everywhere: n_seq, n_tok, d_in (= d_model), d_sae, n_feat.
 * All matrices are row-major and C-contiguous. Sizes are int64_t and checked.
 * Nothing here calls exit, abort or printf: every fallible call returns a
 * cs_status (CS_OK == 0) and constructors return CS_ERR_NOMEM on allocation
 * failure. The core keeps no pointer to a caller array after a call returns.
 *
 * Worked example: pool a JumpReLU SAE over two sequences, then correlate.
 *
 *     cs_sae sae = {0};
 *     sae.d_in = 2304; sae.d_sae = 16384;
 *     sae.W_enc = W_enc;            // (d_in, d_sae)
 *     sae.b_enc = b_enc;            // (d_sae)
 *     sae.threshold = threshold;    // (d_sae), >= 0
 *     sae.architecture = CS_ARCH_JUMPRELU;
 *
 *     float z[2 * 16384];           // (n_seq, d_sae)
 *     cs_status st = cs_sae_encode_pooled(&sae, x, mask, 2, n_tok, CS_POOL_MAX, z);
 *     if (st != CS_OK) { report(cs_status_to_string(st)); return; }
 *
 *     cs_corr *acc = NULL;
 *     st = cs_corr_init(&acc, 16384, CS_CORR_BINARY);
 *     double y[2] = {1.0, 0.0};     // rewards: 1 = correct
 *     if (st == CS_OK) st = cs_corr_update(acc, z, y, 2);
 *     double r[16384];
 *     int degenerate = 0;           // set when every reward is equal
 *     if (st == CS_OK) st = cs_corr_correlation(acc, r, &degenerate);
 *     cs_corr_free(acc);
 *
 * Streaming during generation: cs_pooler buffers residual rows (one per active
 * sequence per step) and flushes them through the fused kernel in blocks of
 * buffer_rows, so a GEMM runs on up to buffer_rows rows instead of one; its
 * memory is n_seq * d_sae + buffer_rows * d_in floats, independent of n_tok.
 */
#ifndef CORRSTEER_H
#define CORRSTEER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CS_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- status */

typedef enum cs_status {
    CS_OK = 0,
    CS_ERR_NULL = 1,             /* a required pointer argument is NULL */
    CS_ERR_SIZE = 2,             /* a size is <= 0 where it must be positive, or sizes disagree */
    CS_ERR_OVERFLOW = 3,         /* a size product overflows, or exceeds the BLAS integer range */
    CS_ERR_NOMEM = 4,            /* an allocation failed */
    CS_ERR_ARG = 5,              /* an option is invalid (architecture, mode, k, kind, sign) */
    CS_ERR_INDEX = 6,            /* an index is out of range (feature, sequence) */
    CS_ERR_NONFINITE = 7,        /* NaN or Inf in an input that must be finite */
    CS_ERR_REWARD = 8,           /* reward not in {0, 1} (binary) or [0, 1] (pearson) */
    CS_ERR_THRESHOLD = 9,        /* a JumpReLU threshold is negative or not finite */
    CS_ERR_MISMATCH = 10,        /* two objects disagree (d_sae, kind, SAE shape) */
    CS_ERR_FORMAT_SIZE = 11,     /* serialised bytes are truncated or have trailing data */
    CS_ERR_FORMAT_MAGIC = 12,    /* serialised bytes do not start with the corrsteer magic */
    CS_ERR_FORMAT_VERSION = 13,  /* serialised by an unknown format version */
    CS_ERR_FORMAT_CHECKSUM = 14, /* checksum mismatch: the bytes were altered */
    CS_ERR_FORMAT_CORRUPT = 15,  /* checksum passes but the content is inconsistent */
    CS_ERR_STATE = 16            /* an accumulator's state is inconsistent (cs_corr_check) */
} cs_status;

/* A static, human-readable description of a status (never NULL). */
const char *cs_status_to_string(cs_status status);

/* ------------------------------------------------------------------ BLAS */

/* "scipy-openblas", "system" or "none" (naive C99 sgemm). */
const char *cs_blas_name(void);
/* The BLAS build configuration (openblas_get_config) or a fixed string. */
const char *cs_blas_config(void);
/* Threads BLAS uses (1 for the naive fallback). */
int cs_blas_get_num_threads(void);
/* Set BLAS threads (n >= 1); no-op for the naive fallback. */
void cs_blas_set_num_threads(int n);
/* Products with at most cs_blas_small_rows_max() rows, while BLAS runs on at most two
 * threads, skip BLAS for a streaming kernel that reads W_enc once without packing it;
 * cs_blas_small_rows_isa() names the build this CPU runs: "avx512f+fma", "avx2+fma"
 * or "plain". */
int64_t cs_blas_small_rows_max(void);
const char *cs_blas_small_rows_isa(void);

/* ------------------------------------------------------------------- SAE */

typedef enum cs_arch {
    CS_ARCH_JUMPRELU = 0,  /* f = pre * 1[pre > threshold] */
    CS_ARCH_RELU = 1,      /* f = max(pre, 0) */
    CS_ARCH_TOPK = 2       /* k largest pre (ties: lower index), ReLU, rest 0 */
} cs_arch;

typedef enum cs_pool_mode {
    CS_POOL_MAX = 0,       /* z = max_t f(x_t), 0 for a sequence with no row */
    CS_POOL_MEAN = 1       /* z = sum_t f(x_t) / count, 0 when count == 0 */
} cs_pool_mode;

/* A view of SAE weights (not owned). pre = (x - b_dec*[apply]) @ W_enc + b_enc. */
typedef struct cs_sae {
    int64_t d_in;              /* residual width */
    int64_t d_sae;             /* number of features */
    const float *W_enc;        /* (d_in, d_sae) */
    const float *b_enc;        /* (d_sae) */
    const float *b_dec;        /* (d_in); required iff apply_b_dec_to_input */
    const float *threshold;    /* (d_sae), >= 0; required iff architecture == JUMPRELU */
    cs_arch architecture;
    int64_t k;                 /* TopK only: 1 <= k <= d_sae */
    int apply_b_dec_to_input;  /* subtract b_dec from x before encoding (any architecture) */
} cs_sae;

/* Validate a view: pointers, sizes (BLAS int range), k, thresholds (finite, >= 0). */
cs_status cs_sae_check(const cs_sae *sae);

/* f = encode(x). x (n_rows, d_in) finite, and x - b_dec too; f (n_rows, d_sae).
 * n_rows may be 0. */
cs_status cs_sae_encode(const cs_sae *sae, const float *x, int64_t n_rows, float *f);

/*
 * Whole sequences, fused encode + masked pooling.
 * x (n_seq, n_tok, d_in); mask (n_seq, n_tok), nonzero = pool this token, or NULL
 * for all tokens; z (n_seq, d_sae) output.
 */
cs_status cs_sae_encode_pooled(const cs_sae *sae, const float *x, const uint8_t *mask,
                               int64_t n_seq, int64_t n_tok, cs_pool_mode mode, float *z);

/*
 * Generic fused kernel: fold rows into a running pooled state.
 * x (n_rows, d_in); seq (n_rows) sequence index in [0, n_seq) or -1 to skip.
 * mode MAX: max_state (n_seq, d_sae) in/out (start it at 0), sum_state NULL.
 * mode MEAN: sum_state (n_seq, d_sae) in/out, max_state NULL.
 * counts (n_seq) in/out: rows folded per sequence.
 */
cs_status cs_sae_pool_rows(const cs_sae *sae, const float *x, const int64_t *seq,
                           int64_t n_rows, int64_t n_seq, cs_pool_mode mode,
                           float *max_state, double *sum_state, int64_t *counts);

/*
 * The final z (n_seq, d_sae) from a pooled state (of cs_sae_pool_rows):
 * MAX copies max_state (z may be max_state itself); MEAN gives
 * z = (float)(sum_state * (1.0 / counts)), 0 where counts == 0, the formula
 * cs_sae_encode_pooled and cs_pooler_result use. counts (n_seq) >= 0.
 */
cs_status cs_pool_finalize(cs_pool_mode mode, const float *max_state, const double *sum_state,
                           const int64_t *counts, int64_t n_seq, int64_t d_sae, float *z);

/* ---------------------------------------------------------------- pooler */

typedef struct cs_pooler cs_pooler;

/*
 * Streaming pooled state for n_seq sequences of the SAE's shape. The SAE view is
 * read for its shape here and must be passed (same shape, architecture, k) to
 * every push/flush/result: the pooler keeps no pointer to the weights.
 * buffer_rows >= 1 (256 is a good default).
 */
cs_status cs_pooler_init(cs_pooler **out, const cs_sae *sae, int64_t n_seq,
                         cs_pool_mode mode, int64_t buffer_rows);
/* x (n_rows, d_in), seq (n_rows) in [-1, n_seq). Validated before anything is buffered;
 * each row is checked again as it is copied into the buffer (x - b_dec may overflow,
 * another thread may write into x): CS_ERR_NONFINITE then, with this push's rows
 * dropped unless the buffer filled and was folded on the way. */
cs_status cs_pooler_push(cs_pooler *p, const cs_sae *sae, const float *x,
                         const int64_t *seq, int64_t n_rows);
/* Encode and fold the buffered rows. */
cs_status cs_pooler_flush(cs_pooler *p, const cs_sae *sae);
/* Flush, then z (n_seq, d_sae) and counts (n_seq) (counts may be NULL). */
cs_status cs_pooler_result(cs_pooler *p, const cs_sae *sae, float *z, int64_t *counts);
/* Drop buffered rows and zero the state. */
void cs_pooler_reset(cs_pooler *p);
void cs_pooler_free(cs_pooler *p);
int64_t cs_pooler_n_seq(const cs_pooler *p);
int64_t cs_pooler_buffered(const cs_pooler *p);
/* Bytes the pooler owns (state + buffer + workspace). */
int64_t cs_pooler_nbytes(const cs_pooler *p);

/* ----------------------------------------------------------- correlation */

typedef enum cs_corr_kind {
    CS_CORR_BINARY = 0,    /* y in {0, 1}: point-biserial r */
    CS_CORR_PEARSON = 1    /* y in [0, 1]: Pearson r */
} cs_corr_kind;

typedef enum cs_sign {
    CS_SIGN_POSITIVE = 0,  /* largest r over r > 0 */
    CS_SIGN_NEGATIVE = 1   /* smallest r over r < 0 */
} cs_sign;

/* A feature counts as constant when m2 <= CS_CORR_CONST_RTOL * n * mean^2 (or m2 <= 0). */
#define CS_CORR_CONST_RTOL 1e-20

typedef struct cs_corr cs_corr;

cs_status cs_corr_init(cs_corr **out, int64_t d_sae, cs_corr_kind kind);
void cs_corr_free(cs_corr *acc);
/* z (n, d_sae) finite; y (n). n >= 1. On error the state is unchanged. Each value of
 * z and y is read once, into private copies that are checked and alone computed on
 * (O(n + d_sae) temporary memory), so another thread writing into z meanwhile can
 * make the call fail but cannot poison the state. */
cs_status cs_corr_update(cs_corr *acc, const float *z, const double *y, int64_t n);
/* acc += other (same d_sae and kind). */
cs_status cs_corr_merge(cs_corr *acc, const cs_corr *other);
void cs_corr_reset(cs_corr *acc);
/* dst takes a copy of src's state (same d_sae and kind). */
cs_status cs_corr_copy(cs_corr *dst, const cs_corr *src);

int64_t cs_corr_d_sae(const cs_corr *acc);
cs_corr_kind cs_corr_get_kind(const cs_corr *acc);
double cs_corr_n(const cs_corr *acc);
double cs_corr_n_pos(const cs_corr *acc);      /* sum of y */
int64_t cs_corr_nbytes(const cs_corr *acc);    /* bytes of state */

/* A copy of the raw state, for statistics the accumulator does not compute itself
 * (class means, variances, 2x2 activity counts). The caller owns every array, each
 * (d_sae) doubles; a NULL array is skipped. All kinds keep every field. */
typedef struct cs_corr_state {
    double n;              /* samples folded in */
    double n_pos;          /* sum of y (binary: samples with y = 1) */
    double mean_y;         /* mean of y */
    double m2_y;           /* sum (y - mean_y)^2 */
    double *mean;          /* mean of z */
    double *m2;            /* sum (z - mean)^2 */
    double *mean_pos;      /* sum(y z) / sum(y); 0 while n_pos == 0 */
    double *n_active;      /* count of z > 0 */
    double *n_pos_active;  /* sum y * 1[z > 0] */
    double *c_zy;          /* sum (z - mean)(y - mean_y) */
} cs_corr_state;

/* Fill out's scalars and copy the state into its non-NULL arrays. */
cs_status cs_corr_moments(const cs_corr *acc, cs_corr_state *out);

/* r (d_sae). *degenerate = 1 (and r = 0) when all rewards are equal or n < 2. */
cs_status cs_corr_correlation(const cs_corr *acc, double *r, int *degenerate);
/* c (d_sae): sum(y z) / sum(y); active_only divides by sum(y * 1[z > 0]). 0 where undefined. */
cs_status cs_corr_coefficient(const cs_corr *acc, int active_only, double *c);
/* freq (d_sae): fraction of samples with z > 0. */
cs_status cs_corr_frequency(const cs_corr *acc, double *freq);
/* The k best features by sign: index (k), r (k); *n_out <= k rows filled. Ties: lower index. */
cs_status cs_corr_top(const cs_corr *acc, int64_t k, cs_sign sign,
                      int64_t *index, double *r, int64_t *n_out);

/*
 * CS_OK if the state is one that updates and merges could have produced, else
 * CS_ERR_STATE and, if reason is not NULL, the first violation as a NUL-terminated
 * string (reason_size bytes; 256 is plenty), e.g. "c_zy[3] = 5 exceeds sqrt(m2[3]
 * m2_y) = 2 (|r| > 1)". Checked: finite values; n a count, zero state when n = 0;
 * 0 <= n_pos <= n (a count for binary); mean_y = n_pos / n; m2_y = n_pos (n - n_pos)
 * / n for binary, at most that for pearson; per feature m2 >= 0 (0 when n = 1),
 * means in the float32 range, n_active a count <= n, 0 <= n_pos_active <=
 * min(n_active, n_pos), n_active - n_pos_active <= n - n_pos, mean_pos = c_zy = 0
 * when n_pos = 0, |c_zy| <= sqrt(m2 m2_y), c_zy = n_pos (mean_pos - mean). Relations
 * that rounding bends hold within 1e-6 + 16 eps n relative to their scale.
 */
cs_status cs_corr_check(const cs_corr *acc, char *reason, int64_t reason_size);

/* Versioned bytes: magic, version, kind, d_sae, counts, 6 arrays, FNV-1a 64 checksum. */
#define CS_CORR_MAGIC "CSCORR\r\n"
#define CS_CORR_FORMAT_VERSION 1u
int64_t cs_corr_serialized_size(const cs_corr *acc);
/* CS_ERR_STATE (nothing written) if cs_corr_check refuses the state: every byte
 * string this writes, cs_corr_deserialize accepts. */
cs_status cs_corr_serialize(const cs_corr *acc, uint8_t *buf, int64_t size);
/* CS_ERR_FORMAT_* for bytes that are malformed, altered (checksum) or whose content
 * fails cs_corr_check (CS_ERR_FORMAT_CORRUPT). */
cs_status cs_corr_deserialize(cs_corr **out, const uint8_t *buf, int64_t size);
/* As cs_corr_deserialize; on failure also a NUL-terminated reason, as cs_corr_check. */
cs_status cs_corr_deserialize_reason(cs_corr **out, const uint8_t *buf, int64_t size,
                                     char *reason, int64_t reason_size);

/* -------------------------------------------------------------- steering */

/* out (d_in) = sum_k coefficients[k] * W_dec[features[k]] (double accumulation).
 * W_dec (d_sae, d_in); features (n_feat) in [0, d_sae); coefficients finite. n_feat may be 0. */
cs_status cs_steer_vector(const float *W_dec, int64_t d_sae, int64_t d_in,
                          const int64_t *features, const double *coefficients,
                          int64_t n_feat, float *out);

/* x (n_rows, d_in) in place: x[i] += v for rows with mask[i] != 0 (mask NULL = all). */
cs_status cs_steer_add_rows(float *x, int64_t n_rows, int64_t d_in, const float *v,
                            const uint8_t *mask);

#ifdef __cplusplus
}
#endif

#endif /* CORRSTEER_H */
