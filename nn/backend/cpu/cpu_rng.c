/* nn/backend/cpu/cpu_rng.c: CPU kernels of the random-number ops (RNG_* in nn/ops_index.def).
 *
 * Each kernel evaluates the draw rules of nn/rng.h element by element: element i reads Philox
 * block offset + i / 4 (uniform, bernoulli, categorical) or offset + i / 2 (normal), so the
 * output does not depend on how blocks are shared among threads. Transcendentals (log, cos) and
 * scaling are done in double and rounded once into the output dtype. Shapes of categorical:
 * N rows, C classes, S samples per row. */
#include "../../rng.h"
#include "cpu.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
  uint32_t key[2];
  uint64_t stream, offset;
} philox_ctx;

static philox_ctx ctx_of(const nn_op_params *p) {
  philox_ctx c;
  uint64_t seed = (uint64_t)p->i[0];
  c.key[0] = (uint32_t)seed;
  c.key[1] = (uint32_t)(seed >> 32);
  c.stream = (uint64_t)p->i[1];
  c.offset = (uint64_t)p->i[2];
  return c;
}

/* Block offset + b of the draw (the counter layout of nn_rng_word). */
static inline void block(const philox_ctx *c, uint64_t b, uint32_t out[4]) {
  uint64_t blk = c->offset + b;
  uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)c->stream,
                     (uint32_t)(c->stream >> 32)};
  nn_philox4x32(ctr, c->key, out);
}

/* The uniform of rng.h: 24 bits, centred in their cell, so in (0, 1). */
static inline double u01(uint32_t x) { return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0); }

/* ---- uniform: out = lo + (hi - lo) * u, in [lo, hi) after rounding ---- */

#define UNIFORM_KERNEL(NAME, T, NEXTAFTER)                                                         \
  static void NAME(T *o, int64_t n, const philox_ctx *c, double lo, double hi) {                   \
    int64_t nb = (n + 3) / 4;                                                                      \
    /* a value that rounds up to hi is moved one step below it (but not below lo) */               \
    T hit = (T)hi, below = NEXTAFTER(hit, (T)lo), lot = (T)lo;                                     \
    if (below < lot) below = lot;                                                                  \
    double w = hi - lo;                                                                            \
    _Pragma("omp parallel for schedule(static) if (n >= CPU_PAR_MIN)") for (int64_t b = 0; b < nb; \
                                                                            b++) {                 \
      uint32_t x[4];                                                                               \
      block(c, (uint64_t)b, x);                                                                    \
      int64_t i0 = b * 4, m = n - i0 < 4 ? n - i0 : 4;                                             \
      for (int64_t k = 0; k < m; k++) {                                                            \
        T v = (T)(lo + w * u01(x[k]));                                                             \
        o[i0 + k] = v >= hit && lo < hi ? below : v;                                               \
      }                                                                                            \
    }                                                                                              \
  }
UNIFORM_KERNEL(uniform_f32, float, nextafterf)
UNIFORM_KERNEL(uniform_f64, double, nextafter)

static int cpu_uniform(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  philox_ctx c = ctx_of(p);
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  if (o->dtype == NN_DTYPE_F32)
    uniform_f32(F32(o), nn_tensor_numel(o), &c, p->f[0], p->f[1]);
  else
    uniform_f64(F64(o), nn_tensor_numel(o), &c, p->f[0], p->f[1]);
  return NN_OK;
}

/* ---- normal: z = sqrt(-2 ln u1) cos(2 pi u2), u1, u2 words (0, 1) or (2, 3) ---- */

#define NORMAL_KERNEL(NAME, T)                                                                     \
  static void NAME(T *o, int64_t n, const philox_ctx *c, double mean, double sd) {                 \
    int64_t nb = (n + 1) / 2;                                                                      \
    const double two_pi = 6.283185307179586476925286766559;                                        \
    _Pragma("omp parallel for schedule(static) if (n >= CPU_PAR_MIN)") for (int64_t b = 0; b < nb; \
                                                                            b++) {                 \
      uint32_t x[4];                                                                               \
      block(c, (uint64_t)b, x);                                                                    \
      int64_t i0 = b * 2, m = n - i0 < 2 ? n - i0 : 2;                                             \
      for (int64_t k = 0; k < m; k++) {                                                            \
        double z = sqrt(-2.0 * log(u01(x[2 * k]))) * cos(two_pi * u01(x[2 * k + 1]));              \
        o[i0 + k] = (T)(mean + sd * z);                                                            \
      }                                                                                            \
    }                                                                                              \
  }
NORMAL_KERNEL(normal_f32, float)
NORMAL_KERNEL(normal_f64, double)

static int cpu_normal(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  philox_ctx c = ctx_of(p);
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  if (o->dtype == NN_DTYPE_F32)
    normal_f32(F32(o), nn_tensor_numel(o), &c, p->f[0], p->f[1]);
  else
    normal_f64(F64(o), nn_tensor_numel(o), &c, p->f[0], p->f[1]);
  return NN_OK;
}

/* ---- bernoulli: out = u < p ---- */

#define BERNOULLI_KERNEL(NAME, T)                                                                  \
  static void NAME(T *o, int64_t n, const philox_ctx *c, double pr) {                              \
    int64_t nb = (n + 3) / 4;                                                                      \
    _Pragma("omp parallel for schedule(static) if (n >= CPU_PAR_MIN)") for (int64_t b = 0; b < nb; \
                                                                            b++) {                 \
      uint32_t x[4];                                                                               \
      block(c, (uint64_t)b, x);                                                                    \
      int64_t i0 = b * 4, m = n - i0 < 4 ? n - i0 : 4;                                             \
      for (int64_t k = 0; k < m; k++) o[i0 + k] = u01(x[k]) < pr ? (T)1 : (T)0;                    \
    }                                                                                              \
  }
BERNOULLI_KERNEL(bernoulli_f32, float)
BERNOULLI_KERNEL(bernoulli_f64, double)

static int cpu_bernoulli(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  philox_ctx c = ctx_of(p);
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  if (o->dtype == NN_DTYPE_F32)
    bernoulli_f32(F32(o), nn_tensor_numel(o), &c, p->f[0]);
  else
    bernoulli_f64(F64(o), nn_tensor_numel(o), &c, p->f[0]);
  return NN_OK;
}

/* ---- categorical: inverse CDF per sample ----
 * Row r's running sums cdf[k] = p[0] + ... + p[k] (double, in class order); sample j of row r
 * uses the uniform of element i = r * S + j and picks the smallest k with cdf[k] > u * cdf[C-1].
 * u > 0, so a class of probability zero (cdf[k] == cdf[k-1]) is never picked; u < 1, so some k
 * always qualifies. */

enum { ROW_OK = 0, ROW_BAD_ENTRY = 1, ROW_NO_MASS = 2 };

static int row_cdf(const nn_tensor *pr, int64_t r, double *cdf) {
  int64_t C = pr->shape[1], rs = pr->stride[0], cs = pr->stride[1];
  double acc = 0;
  if (pr->dtype == NN_DTYPE_F32) {
    const float *a = F32(pr) + r * rs;
    for (int64_t k = 0; k < C; k++) {
      double v = a[k * cs];
      if (!(v >= 0) || isinf(v)) return ROW_BAD_ENTRY;
      cdf[k] = acc += v;
    }
  } else {
    const double *a = F64(pr) + r * rs;
    for (int64_t k = 0; k < C; k++) {
      double v = a[k * cs];
      if (!(v >= 0) || isinf(v)) return ROW_BAD_ENTRY;
      cdf[k] = acc += v;
    }
  }
  if (!(acc > 0)) return ROW_NO_MASS;
  if (isinf(acc)) return ROW_BAD_ENTRY; /* finite entries whose sum overflows */
  return ROW_OK;
}

static void row_samples(const double *cdf, int64_t C, const philox_ctx *c, int64_t r, int64_t S,
                        int64_t j0, int64_t j1, int64_t *o) {
  double total = cdf[C - 1];
  for (int64_t j = j0; j < j1; j++) {
    uint64_t i = (uint64_t)(r * S + j);
    uint32_t x[4];
    block(c, i / 4, x);
    double target = u01(x[i % 4]) * total;
    int64_t lo = 0, hi = C - 1;
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      if (cdf[mid] > target)
        hi = mid;
      else
        lo = mid + 1;
    }
    o[j] = lo;
  }
}

static int cpu_categorical(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *pr = in[0];
  philox_ctx c = ctx_of(p);
  int64_t N = pr->shape[0], C = pr->shape[1], S = o->shape[1];
  NN_ASSERT(nn_tensor_is_contiguous(o) && o->shape[0] == N);
  if (N == 0) return NN_OK;
  if (C == 0)
    return nn_seterr(NN_ERR_ARG,
                     "categorical: probs of shape (%lld, 0) have no classes "
                     "(zero total mass)",
                     (long long)N);
  signed char *status = calloc((size_t)N, 1);
  if (!status) return nn_seterr(NN_ERR_NOMEM, "categorical: out of memory");
  int nomem = 0;
  int64_t *ov = I64(o);
  if (N == 1 || (int64_t)nn_get_num_threads() > N) {
    /* few rows: rows in turn, each row's samples shared out */
    double *cdf = malloc((size_t)C * sizeof *cdf);
    if (!cdf) nomem = 1;
    for (int64_t r = 0; !nomem && r < N; r++) {
      status[r] = (signed char)row_cdf(pr, r, cdf);
      if (status[r]) break;
      const int64_t CH = 1024;
      int64_t nch = (S + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (S * 8 >= CPU_PAR_MIN)
      for (int64_t ch = 0; ch < nch; ch++) {
        int64_t j0 = ch * CH, j1 = j0 + CH < S ? j0 + CH : S;
        row_samples(cdf, C, &c, r, S, j0, j1, ov + r * S);
      }
    }
    free(cdf);
  } else {
#pragma omp parallel if (N * (C + S) >= CPU_PAR_MIN)
    {
      double *cdf = malloc((size_t)C * sizeof *cdf);
      if (!cdf) {
#pragma omp atomic write
        nomem = 1;
      }
#pragma omp for schedule(static)
      for (int64_t r = 0; r < N; r++) {
        if (!cdf) continue;
        status[r] = (signed char)row_cdf(pr, r, cdf);
        if (!status[r]) row_samples(cdf, C, &c, r, S, 0, S, ov + r * S);
      }
      free(cdf);
    }
  }
  int rc =
      nomem ? nn_seterr(NN_ERR_NOMEM, "categorical: out of memory for %lld classes", (long long)C)
            : NN_OK;
  for (int64_t r = 0; !rc && r < N; r++) {
    if (status[r] == ROW_NO_MASS) {
      rc =
          nn_seterr(NN_ERR_ARG, "categorical: row %lld of probs has zero total mass", (long long)r);
    } else if (status[r] == ROW_BAD_ENTRY) {
      int64_t k = 0;
      double v = 0;
      for (; k < C; k++) {
        v = pr->dtype == NN_DTYPE_F32 ? F32(pr)[r * pr->stride[0] + k * pr->stride[1]]
                                      : F64(pr)[r * pr->stride[0] + k * pr->stride[1]];
        if (!(v >= 0) || isinf(v)) break;
      }
      if (k < C)
        rc = nn_seterr(NN_ERR_ARG,
                       "categorical: probs[%lld, %lld] is %g; probabilities must be "
                       "finite and >= 0",
                       (long long)r, (long long)k, v);
      else
        rc = nn_seterr(NN_ERR_ARG, "categorical: row %lld of probs sums to infinity", (long long)r);
    }
  }
  free(status);
  return rc;
}

void nn_cpu_register_rng(nn_backend_i *be) {
  be->kernels[NN_OP_RNG_UNIFORM] = cpu_uniform;
  be->kernels[NN_OP_RNG_NORMAL] = cpu_normal;
  be->kernels[NN_OP_RNG_BERNOULLI] = cpu_bernoulli;
  be->kernels[NN_OP_RNG_CATEGORICAL] = cpu_categorical;
}
