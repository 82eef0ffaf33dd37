/* nn/backend/cpu/cpu_reduce.c: CPU kernels of the ops in nn/ops_reduce.def: max/min, var,
 * softmax, the losses and sorting. Shapes: N rows, C classes, L the length of the reduced dim.
 *
 * Every kernel but the elementwise MSE works on rows: the 1-D slices along one dim. rows_run()
 * walks the other dims (the lanes) and hands a row function contiguous rows: a row that is
 * contiguous in memory is passed in place; a strided one is packed into scratch (inputs) or
 * written to scratch and scattered back (outputs), a block of lanes at a time so that the
 * gathers read memory along the lanes. Each lane is computed by one call of the row function
 * in an order that depends on L only, and lanes are split over threads in fixed chunks: results
 * are bit-identical run to run and whatever the thread count. Sums accumulate in double.
 */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROW_MAX_OPS 6
#define LANE_BLOCK 16  /* lanes packed together: 16 floats fill a cache line */
#define PACK_MAX 65536 /* elements of one operand packed per block (bounds scratch) */

/* ---------------------------------------------------------------- rows */

/* p[k]: operand k's contiguous row of rl[k] elements (NULL for an absent operand). */
typedef void (*row_fn)(char *const *p, const int64_t *rl, void *work, const void *ctx);

typedef struct {
  int n_out, n_ops, ndim; /* lanes: the dims other than the reduced one, merged */
  int64_t shape[NN_MAX_DIMS];
  int64_t stride[ROW_MAX_OPS][NN_MAX_DIMS];
  char *base[ROW_MAX_OPS];
  int esize[ROW_MAX_OPS];
  int64_t rl[ROW_MAX_OPS], rs[ROW_MAX_OPS]; /* row length and stride along the reduced dim */
  bool pack[ROW_MAX_OPS];
  int64_t lb; /* lanes per packed block */
  size_t scratch[ROW_MAX_OPS], work_off;
  row_fn fn;
  const void *ctx;
} rows_geo;

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* All non-NULL operands have one ndim and one shape except along dim. */
static void geo_init(rows_geo *g, int n_out, int n_ops, nn_tensor *const *ops, int dim) {
  memset(g, 0, sizeof *g);
  g->n_out = n_out;
  g->n_ops = n_ops;
  const nn_tensor *t0 = NULL;
  for (int k = 0; k < n_ops; k++) {
    if (!ops[k]) continue;
    if (!t0) t0 = ops[k];
    NN_ASSERT(ops[k]->ndim == t0->ndim);
    g->base[k] = nn_tensor_data(ops[k]);
    g->esize[k] = (int)nn_dtype_size(ops[k]->dtype);
    g->rl[k] = ops[k]->shape[dim];
    g->rs[k] = ops[k]->stride[dim];
    g->pack[k] = g->rl[k] > 1 && g->rs[k] != 1;
  }
  int nd = 0;
  for (int d = 0; d < t0->ndim; d++) {
    if (d == dim) continue;
    for (int k = 0; k < n_ops; k++) NN_ASSERT(!ops[k] || ops[k]->shape[d] == t0->shape[d]);
    if (t0->shape[d] == 1) continue;
    g->shape[nd] = t0->shape[d];
    for (int k = 0; k < n_ops; k++) g->stride[k][nd] = ops[k] ? ops[k]->stride[d] : 0;
    nd++;
  }
  if (nd == 0) {
    g->ndim = 1;
    g->shape[0] = 1;
    return;
  }
  int m = 0; /* merge d into m where every operand is contiguous across them */
  for (int d = 1; d < nd; d++) {
    bool ok = true;
    for (int k = 0; k < n_ops; k++)
      if (g->stride[k][m] != g->stride[k][d] * g->shape[d]) ok = false;
    m += !ok;
    g->shape[m] = ok ? g->shape[m] * g->shape[d] : g->shape[d];
    for (int k = 0; k < n_ops; k++) g->stride[k][m] = g->stride[k][d];
  }
  g->ndim = m + 1;
}

static void gather(char *dst, const char *src, int64_t nb, int64_t rl, int64_t s, int64_t rs,
                   int es) {
  if (es == 4) {
    uint32_t *d = (uint32_t *)dst;
    const uint32_t *a = (const uint32_t *)src;
    for (int64_t j = 0; j < rl; j++)
      for (int64_t i = 0; i < nb; i++) d[i * rl + j] = a[i * s + j * rs];
  } else {
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *a = (const uint64_t *)src;
    for (int64_t j = 0; j < rl; j++)
      for (int64_t i = 0; i < nb; i++) d[i * rl + j] = a[i * s + j * rs];
  }
}

static void scatter(char *dst, const char *src, int64_t nb, int64_t rl, int64_t s, int64_t rs,
                    int es) {
  if (es == 4) {
    uint32_t *d = (uint32_t *)dst;
    const uint32_t *a = (const uint32_t *)src;
    for (int64_t j = 0; j < rl; j++)
      for (int64_t i = 0; i < nb; i++) d[i * s + j * rs] = a[i * rl + j];
  } else {
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *a = (const uint64_t *)src;
    for (int64_t j = 0; j < rl; j++)
      for (int64_t i = 0; i < nb; i++) d[i * s + j * rs] = a[i * rl + j];
  }
}

/* Lanes [i0, i1) of lane row r (row-major over all lane dims but the last). */
static void run_lanes(const rows_geo *g, int64_t r, int64_t i0, int64_t i1, char *buf) {
  int last = g->ndim - 1;
  char *base[ROW_MAX_OPS], *scr[ROW_MAX_OPS], *p[ROW_MAX_OPS];
  int64_t s[ROW_MAX_OPS], off[ROW_MAX_OPS] = {0};
  for (int d = last - 1; d >= 0; d--) {
    int64_t idx = r % g->shape[d];
    r /= g->shape[d];
    for (int k = 0; k < g->n_ops; k++) off[k] += idx * g->stride[k][d];
  }
  char *w = buf;
  for (int k = 0; k < g->n_ops; k++) {
    s[k] = g->stride[k][last];
    base[k] = g->base[k] ? g->base[k] + off[k] * g->esize[k] : NULL;
    scr[k] = w;
    w += g->scratch[k];
  }
  void *work = buf ? buf + g->work_off : NULL;
  for (int64_t b = i0; b < i1; b += g->lb) {
    int64_t nb = i1 - b < g->lb ? i1 - b : g->lb;
    for (int k = g->n_out; k < g->n_ops; k++)
      if (base[k] && g->pack[k])
        gather(scr[k], base[k] + b * s[k] * g->esize[k], nb, g->rl[k], s[k], g->rs[k], g->esize[k]);
    for (int64_t i = 0; i < nb; i++) {
      for (int k = 0; k < g->n_ops; k++)
        p[k] = !base[k]     ? NULL
               : g->pack[k] ? scr[k] + i * g->rl[k] * g->esize[k]
                            : base[k] + (b + i) * s[k] * g->esize[k];
      g->fn(p, g->rl, work, g->ctx);
    }
    for (int k = 0; k < g->n_out; k++)
      if (base[k] && g->pack[k])
        scatter(base[k] + b * s[k] * g->esize[k], scr[k], nb, g->rl[k], s[k], g->rs[k],
                g->esize[k]);
  }
}

/* Calls fn once per lane. ops[0, n_out) are outputs, the rest inputs; NULL operands are absent.
 * work_bytes: per-thread scratch handed to fn (64-byte aligned). */
static int rows_run(const char *name, int n_out, int n_ops, nn_tensor *const *ops, int dim,
                    row_fn fn, const void *ctx, size_t work_bytes) {
  rows_geo g;
  geo_init(&g, n_out, n_ops, ops, dim);
  g.fn = fn;
  g.ctx = ctx;
  int last = g.ndim - 1;
  int64_t inner = g.shape[last], outer = 1, maxrl = 1;
  for (int d = 0; d < last; d++) outer *= g.shape[d];
  if (inner * outer == 0) return NN_OK;
  for (int k = 0; k < n_ops; k++)
    if (g.rl[k] > maxrl) maxrl = g.rl[k];
  g.lb = PACK_MAX / maxrl;
  g.lb = g.lb < 1 ? 1 : g.lb > LANE_BLOCK ? LANE_BLOCK : g.lb;
  size_t bytes = 0;
  for (int k = 0; k < n_ops; k++) {
    g.scratch[k] = g.pack[k] ? align64((size_t)(g.lb * g.rl[k] * g.esize[k])) : 0;
    bytes += g.scratch[k];
  }
  g.work_off = bytes;
  bytes += align64(work_bytes);
  /* tasks: chunks of about CPU_PAR_MIN elements, whole blocks of lanes */
  int64_t ch = CPU_PAR_MIN / maxrl;
  ch = ch < g.lb ? g.lb : (ch + g.lb - 1) / g.lb * g.lb;
  if (ch > inner) ch = inner;
  int64_t nch = (inner + ch - 1) / ch, ntask = outer * nch;
  bool par = ntask > 1 && inner * outer * maxrl >= CPU_PAR_MIN;
  int failed = 0;
#pragma omp parallel if (par)
  {
    char *buf = bytes ? aligned_alloc(64, bytes) : NULL;
    if (bytes && !buf) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ntask; t++) {
      if (bytes && !buf) continue;
      int64_t r = t / nch, i0 = t % nch * ch, i1 = i0 + ch < inner ? i0 + ch : inner;
      run_lanes(&g, r, i0, i1, buf);
    }
    free(buf);
  }
  return failed ? nn_seterr(NN_ERR_NOMEM, "%s: out of memory for row scratch", name) : NN_OK;
}

/* A view of t (which lacks dim) with a size-1 dim inserted at dim: per-row operands (labels,
 * losses) next to (N, C) tensors. Returns NULL for NULL. */
static nn_tensor *with_dim(nn_tensor *t, int dim, bool *oom) {
  if (!t) return NULL;
  nn_tensor *v = nn_alias(t);
  if (!v) {
    *oom = true;
    return NULL;
  }
  for (int d = t->ndim; d > dim; d--) {
    v->shape[d] = t->shape[d - 1];
    v->stride[d] = t->stride[d - 1];
  }
  v->shape[dim] = 1;
  v->stride[dim] = 0;
  v->ndim = t->ndim + 1;
  return v;
}

/* ---------------------------------------------------------------- vector helpers */

/* expf for vectorized loops: n = round(x / ln2), Cephes' degree-6 polynomial on the remainder
 * (about 1.3 ulp). Meant for softmax arguments (x <= 0): below -87.3 (and -inf) it returns 0,
 * NaN gives NaN; x > 88 overflows. The range test works on the bits, so the loop holds no branch
 * and no trapping float compare, which lets GCC vectorize it at -O2. */
static inline float fast_expf(float x) {
  int32_t xi;
  memcpy(&xi, &x, 4);
  /* x < -87.33654 or -inf (negative floats order backwards as signed ints; NaN excluded) */
  int32_t under = -(int32_t)((xi > (int32_t)0xC2AEAC50) & (xi <= (int32_t)0xFF800000));
  xi = (xi & ~under) | ((int32_t)0xC2AEAC50 & under);
  float xc;
  memcpy(&xc, &xi, 4);
  float kf = xc * 1.44269504088896341f + 12582912.0f; /* + 1.5 * 2^23 rounds to an integer */
  float k = kf - 12582912.0f;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float y =
      ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) *
           r +
       1.6666665459e-1f) *
          r +
      5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  uint32_t ku;
  memcpy(&ku, &kf, 4); /* low mantissa bits of kf hold k */
  uint32_t bits = ((ku - 0x4B400000u + 127u) << 23) & ~(uint32_t)under;
  float sc;
  memcpy(&sc, &bits, 4);
  return y * sc;
}

#define EXP_F32(x) fast_expf(x)
#define EXP_F64(x) exp(x)
#define ISNAN_FLT(x) ((x) != (x))
#define ISNAN_INT(x) 0

/* Row helpers per float type: max (NaN may or may not win: callers rely on NaN propagating
 * through exp), sum, dot, sum of exp(x - m) (optionally stored). Fixed lane order, so the
 * vectorized result does not depend on alignment. */
#define ROW_HELPERS(SUF, T, EXP)                                                                   \
  static T rmax_##SUF(const T *x, int64_t L) {                                                     \
    T acc[8];                                                                                      \
    int64_t j = 0;                                                                                 \
    if (L < 8) {                                                                                   \
      T m = (T)-INFINITY;                                                                          \
      for (; j < L; j++) m = x[j] > m ? x[j] : m;                                                  \
      return m;                                                                                    \
    }                                                                                              \
    for (int l = 0; l < 8; l++) acc[l] = x[l];                                                     \
    for (j = 8; j + 8 <= L; j += 8) {                                                              \
      _Pragma("omp simd") for (int l = 0; l < 8; l++) acc[l] =                                     \
          x[j + l] > acc[l] ? x[j + l] : acc[l];                                                   \
    }                                                                                              \
    for (; j < L; j++) acc[0] = x[j] > acc[0] ? x[j] : acc[0];                                     \
    T m = acc[0];                                                                                  \
    for (int l = 1; l < 8; l++) m = acc[l] > m ? acc[l] : m;                                       \
    return m;                                                                                      \
  }                                                                                                \
  static double rsum_##SUF(const T *x, int64_t L) {                                                \
    double acc[8] = {0};                                                                           \
    int64_t j = 0;                                                                                 \
    for (; j + 8 <= L; j += 8) {                                                                   \
      _Pragma("omp simd") for (int l = 0; l < 8; l++) acc[l] += x[j + l];                          \
    }                                                                                              \
    for (; j < L; j++) acc[0] += x[j];                                                             \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }                                                                                                \
  static double rdot_##SUF(const T *x, const T *y, int64_t L) {                                    \
    double acc[8] = {0};                                                                           \
    int64_t j = 0;                                                                                 \
    for (; j + 8 <= L; j += 8) {                                                                   \
      _Pragma("omp simd") for (int l = 0; l < 8; l++) acc[l] += (double)x[j + l] * y[j + l];       \
    }                                                                                              \
    for (; j < L; j++) acc[0] += (double)x[j] * y[j];                                              \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }                                                                                                \
  /* sum of exp(x - m); stores the terms in y unless y is NULL */                                  \
  static double rsumexp_##SUF(T *y, const T *x, int64_t L, T m) {                                  \
    double acc[8] = {0};                                                                           \
    int64_t j = 0;                                                                                 \
    if (y) {                                                                                       \
      for (; j + 8 <= L; j += 8) {                                                                 \
        _Pragma("omp simd") for (int l = 0; l < 8; l++) {                                          \
          T e = EXP(x[j + l] - m);                                                                 \
          y[j + l] = e;                                                                            \
          acc[l] += e;                                                                             \
        }                                                                                          \
      }                                                                                            \
      for (; j < L; j++) acc[0] += (y[j] = EXP(x[j] - m));                                         \
    } else {                                                                                       \
      for (; j + 8 <= L; j += 8) {                                                                 \
        _Pragma("omp simd") for (int l = 0; l < 8; l++) acc[l] += EXP(x[j + l] - m);               \
      }                                                                                            \
      for (; j < L; j++) acc[0] += EXP(x[j] - m);                                                  \
    }                                                                                              \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));      \
  }
ROW_HELPERS(f32, float, EXP_F32)
ROW_HELPERS(f64, double, EXP_F64)

/* ---------------------------------------------------------------- max / min */

/* ops: out0 values, out1 indices, in0 x. Ties keep the first index; the first NaN wins. */
#define MAX_ROW(SUF, T, ISNAN)                                                                     \
  static void max_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vctx) {        \
    (void)w;                                                                                       \
    const T *x = (const T *)p[2];                                                                  \
    int64_t L = rl[2], mi = 0;                                                                     \
    T m = x[0];                                                                                    \
    if (!ISNAN(m)) {                                                                               \
      if (!*(const int *)vctx) {                                                                   \
        for (int64_t j = 1; j < L; j++) {                                                          \
          T v = x[j];                                                                              \
          if (v > m)                                                                               \
            m = v, mi = j;                                                                         \
          else if (ISNAN(v)) {                                                                     \
            m = v, mi = j;                                                                         \
            break;                                                                                 \
          }                                                                                        \
        }                                                                                          \
      } else {                                                                                     \
        for (int64_t j = 1; j < L; j++) {                                                          \
          T v = x[j];                                                                              \
          if (v < m)                                                                               \
            m = v, mi = j;                                                                         \
          else if (ISNAN(v)) {                                                                     \
            m = v, mi = j;                                                                         \
            break;                                                                                 \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    *(T *)p[0] = m;                                                                                \
    *(int64_t *)p[1] = mi;                                                                         \
  }
MAX_ROW(f32, float, ISNAN_FLT)
MAX_ROW(f64, double, ISNAN_FLT)
MAX_ROW(i64, int64_t, ISNAN_INT)

static const row_fn max_rows[3] = {max_row_f32, max_row_f64, max_row_i64};

static int cpu_max(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  int is_min = (int)p->i[1];
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  return rows_run("max", 2, 3, ops, (int)p->i[0], max_rows[in[0]->dtype], &is_min, 0);
}

/* ---------------------------------------------------------------- select_backward */

/* ops: out0 dx (L), in0 indices (K), in1 dout (K): dx = 0, dx[idx[j]] += dout[j]. */
#define SELECT_BW_ROW(SUF, T)                                                                      \
  static void selbw_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *c) {         \
    (void)w, (void)c;                                                                              \
    T *dx = (T *)p[0];                                                                             \
    const int64_t *idx = (const int64_t *)p[1];                                                    \
    const T *g = (const T *)p[2];                                                                  \
    memset(dx, 0, (size_t)rl[0] * sizeof(T));                                                      \
    for (int64_t j = 0; j < rl[1]; j++) dx[idx[j]] += g[j];                                        \
  }
SELECT_BW_ROW(f32, float)
SELECT_BW_ROW(f64, double)

static int cpu_select_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  return rows_run("select_backward", 1, 3, ops, (int)p->i[0],
                  out[0]->dtype == NN_DTYPE_F32 ? selbw_row_f32 : selbw_row_f64, NULL, 0);
}

/* ---------------------------------------------------------------- var */

/* ops: out0 var, out1 mean, in0 x; two passes in double (mean, then squared deviations). */
#define VAR_ROW(SUF, T)                                                                            \
  static void var_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vctx) {        \
    (void)w;                                                                                       \
    const T *x = (const T *)p[2];                                                                  \
    int64_t L = rl[2];                                                                             \
    double mean = rsum_##SUF(x, L) / (double)L, acc[4] = {0};                                      \
    int64_t j = 0;                                                                                 \
    for (; j + 4 <= L; j += 4) {                                                                   \
      _Pragma("omp simd") for (int l = 0; l < 4; l++) {                                            \
        double d = x[j + l] - mean;                                                                \
        acc[l] += d * d;                                                                           \
      }                                                                                            \
    }                                                                                              \
    for (; j < L; j++) acc[0] += (x[j] - mean) * (x[j] - mean);                                    \
    double div = (double)L - (double)*(const int64_t *)vctx;                                       \
    *(T *)p[0] = (T)(((acc[0] + acc[1]) + (acc[2] + acc[3])) / (div > 0 ? div : 0));               \
    *(T *)p[1] = (T)mean;                                                                          \
  }
VAR_ROW(f32, float)
VAR_ROW(f64, double)

static int cpu_var(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  return rows_run("var", 2, 3, ops, (int)p->i[0],
                  in[0]->dtype == NN_DTYPE_F32 ? var_row_f32 : var_row_f64, &p->i[1], 0);
}

/* ops: out0 dx, in0 x, in1 mean, in2 dout: dx = (x - mean) * dout * f. */
#define VAR_BW_ROW(SUF, T)                                                                         \
  static void varbw_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vctx) {      \
    (void)w;                                                                                       \
    T *dx = (T *)p[0];                                                                             \
    const T *x = (const T *)p[1], mean = *(const T *)p[2];                                         \
    T gs = (T)(*(const T *)p[3] * *(const double *)vctx);                                          \
    _Pragma("omp simd") for (int64_t j = 0; j < rl[0]; j++) dx[j] = (x[j] - mean) * gs;            \
  }
VAR_BW_ROW(f32, float)
VAR_BW_ROW(f64, double)

static int cpu_var_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[4] = {out[0], in[0], in[1], in[2]};
  return rows_run("var_backward", 1, 4, ops, (int)p->i[0],
                  out[0]->dtype == NN_DTYPE_F32 ? varbw_row_f32 : varbw_row_f64, &p->f[0], 0);
}

/* ---------------------------------------------------------------- softmax */

/* ops: out0 y, in0 x. softmax: y = exp(x - m) / s; log_softmax: y = (x - m) - log s. */
#define SOFTMAX_ROW(SUF, T)                                                                        \
  static void softmax_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vc) {      \
    (void)w;                                                                                       \
    T *y = (T *)p[0];                                                                              \
    const T *x = (const T *)p[1];                                                                  \
    int64_t L = rl[1];                                                                             \
    T m = rmax_##SUF(x, L);                                                                        \
    if (!*(const int64_t *)vc) {                                                                   \
      T inv = (T)(1.0 / rsumexp_##SUF(y, x, L, m));                                                \
      _Pragma("omp simd") for (int64_t j = 0; j < L; j++) y[j] *= inv;                             \
    } else {                                                                                       \
      T ls = (T)log(rsumexp_##SUF(NULL, x, L, m));                                                 \
      _Pragma("omp simd") for (int64_t j = 0; j < L; j++) y[j] = (x[j] - m) - ls;                  \
    }                                                                                              \
  }
SOFTMAX_ROW(f32, float)
SOFTMAX_ROW(f64, double)

static int cpu_softmax(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[2] = {out[0], in[0]};
  return rows_run("softmax", 1, 2, ops, (int)p->i[0],
                  in[0]->dtype == NN_DTYPE_F32 ? softmax_row_f32 : softmax_row_f64, &p->i[1], 0);
}

/* ops: out0 dx, in0 y, in1 dy. softmax: dx = y (dy - <dy, y>); log: dx = dy - exp(y) sum(dy). */
#define SOFTMAX_BW_ROW(SUF, T, EXP)                                                                \
  static void smbw_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vc) {         \
    (void)w;                                                                                       \
    T *dx = (T *)p[0];                                                                             \
    const T *y = (const T *)p[1], *dy = (const T *)p[2];                                           \
    int64_t L = rl[0];                                                                             \
    if (!*(const int64_t *)vc) {                                                                   \
      T d = (T)rdot_##SUF(dy, y, L);                                                               \
      _Pragma("omp simd") for (int64_t j = 0; j < L; j++) dx[j] = y[j] * (dy[j] - d);              \
    } else {                                                                                       \
      T d = (T)rsum_##SUF(dy, L);                                                                  \
      _Pragma("omp simd") for (int64_t j = 0; j < L; j++) dx[j] = dy[j] - EXP(y[j]) * d;           \
    }                                                                                              \
  }
SOFTMAX_BW_ROW(f32, float, EXP_F32)
SOFTMAX_BW_ROW(f64, double, EXP_F64)

static int cpu_softmax_backward(nn_tensor *const *out, nn_tensor *const *in,
                                const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  return rows_run("softmax_backward", 1, 3, ops, (int)p->i[0],
                  out[0]->dtype == NN_DTYPE_F32 ? smbw_row_f32 : smbw_row_f64, &p->i[1], 0);
}

/* ---------------------------------------------------------------- losses */

/* Labels must lie in [0, C): checked here, where the labels live, before any row runs. */
static int check_labels(const char *name, const nn_tensor *labels, int64_t C) {
  const int64_t *l = I64(labels);
  int64_t N = labels->shape[0], s = labels->stride[0];
  for (int64_t n = 0; n < N; n++)
    if (l[n * s] < 0 || l[n * s] >= C)
      return nn_seterr(NN_ERR_INDEX, "%s: label %lld at row %lld is out of range [0, %lld)", name,
                       (long long)l[n * s], (long long)n, (long long)C);
  return NN_OK;
}

/* out2 (0-dim) = sum of the per-row losses (N,) in row order, in double; / N for MEAN. */
static void reduce_rows(nn_tensor *r, const nn_tensor *rows, int red) {
  int64_t N = rows->shape[0];
  double s = 0;
  if (rows->dtype == NN_DTYPE_F32)
    for (int64_t n = 0; n < N; n++) s += F32(rows)[n];
  else
    for (int64_t n = 0; n < N; n++) s += F64(rows)[n];
  if (red == 0) s /= (double)N; /* NN_REDUCTION_MEAN; 0/0 = NaN for an empty batch */
  if (r->dtype == NN_DTYPE_F32)
    *F32(r) = (float)s;
  else
    *F64(r) = s;
}

/* ops: out0 loss, out1 lse (double), in0 x (C), in1 label. loss = lse - x[label]. */
#define CE_ROW(SUF, T)                                                                             \
  static void ce_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *c) {            \
    (void)w, (void)c;                                                                              \
    const T *x = (const T *)p[2];                                                                  \
    int64_t C = rl[2];                                                                             \
    T m = rmax_##SUF(x, C);                                                                        \
    double lse = (double)m + log(rsumexp_##SUF(NULL, x, C, m));                                    \
    *(double *)p[1] = lse;                                                                         \
    *(T *)p[0] = (T)(lse - (double)x[*(const int64_t *)p[3]]);                                     \
  }
CE_ROW(f32, float)
CE_ROW(f64, double)

static int cpu_cross_entropy(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  int rc = check_labels("cross_entropy", in[1], in[0]->shape[1]);
  if (rc) return rc;
  bool oom = false;
  nn_tensor *ops[4] = {with_dim(out[0], 1, &oom), with_dim(out[1], 1, &oom), in[0],
                       with_dim(in[1], 1, &oom)};
  if (oom)
    rc = nn_seterr(NN_ERR_NOMEM, "cross_entropy: out of memory");
  else
    rc = rows_run("cross_entropy", 2, 4, ops, 1,
                  in[0]->dtype == NN_DTYPE_F32 ? ce_row_f32 : ce_row_f64, NULL, 0);
  nn_tensor_free(ops[0]);
  nn_tensor_free(ops[1]);
  nn_tensor_free(ops[3]);
  if (!rc && p->i[0] != 2) reduce_rows(out[2], out[0], (int)p->i[0]);
  return rc;
}

/* ops: out0 dx (C), in0 x (C), in1 label, in2 lse (double), in3 dout:
 * dx = (exp(x - lse) - onehot(label)) * dout * f. lse (double) is split into hi + lo in T, so
 * x - hi - lo keeps the loop in T with the accuracy of forming x - lse in double. */
#define CE_BW_ROW(SUF, T, EXP)                                                                     \
  static void cebw_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vc) {         \
    (void)w;                                                                                       \
    T *dx = (T *)p[0];                                                                             \
    const T *x = (const T *)p[1];                                                                  \
    int64_t C = rl[0];                                                                             \
    double lse = *(const double *)p[3];                                                            \
    T hi = (T)lse, lo = (T)(lse - hi);                                                             \
    T gs = (T)(*(const T *)p[4] * *(const double *)vc);                                            \
    _Pragma("omp simd") for (int64_t j = 0; j < C; j++) dx[j] = EXP((x[j] - hi) - lo) * gs;        \
    dx[*(const int64_t *)p[2]] -= gs;                                                              \
  }
CE_BW_ROW(f32, float, EXP_F32)
CE_BW_ROW(f64, double, EXP_F64)

static int cpu_cross_entropy_backward(nn_tensor *const *out, nn_tensor *const *in,
                                      const nn_op_params *p) {
  bool oom = false;
  nn_tensor *ops[5] = {out[0], in[0], with_dim(in[1], 1, &oom), with_dim(in[2], 1, &oom),
                       with_dim(in[3], 1, &oom)};
  int rc = oom ? nn_seterr(NN_ERR_NOMEM, "cross_entropy_backward: out of memory")
               : rows_run("cross_entropy_backward", 1, 5, ops, 1,
                          out[0]->dtype == NN_DTYPE_F32 ? cebw_row_f32 : cebw_row_f64, &p->f[0], 0);
  for (int k = 2; k < 5; k++) nn_tensor_free(ops[k]);
  return rc;
}

/* ops: out0 loss, out1 lse, in0 x (C), in1 t (C): loss = sum_j t_j (lse - x_j). */
#define CES_ROW(SUF, T)                                                                            \
  static void ces_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *c) {           \
    (void)w, (void)c;                                                                              \
    const T *x = (const T *)p[2], *t = (const T *)p[3];                                            \
    int64_t C = rl[2];                                                                             \
    T m = rmax_##SUF(x, C);                                                                        \
    double lse = (double)m + log(rsumexp_##SUF(NULL, x, C, m)), acc[4] = {0};                      \
    int64_t j = 0;                                                                                 \
    for (; j + 4 <= C; j += 4) {                                                                   \
      _Pragma("omp simd") for (int l = 0; l < 4; l++) acc[l] += t[j + l] * (lse - x[j + l]);       \
    }                                                                                              \
    for (; j < C; j++) acc[0] += t[j] * (lse - x[j]);                                              \
    *(double *)p[1] = lse;                                                                         \
    *(T *)p[0] = (T)((acc[0] + acc[1]) + (acc[2] + acc[3]));                                       \
  }
CES_ROW(f32, float)
CES_ROW(f64, double)

static int cpu_cross_entropy_soft(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  bool oom = false;
  nn_tensor *ops[4] = {with_dim(out[0], 1, &oom), with_dim(out[1], 1, &oom), in[0], in[1]};
  int rc = oom ? nn_seterr(NN_ERR_NOMEM, "cross_entropy_soft: out of memory")
               : rows_run("cross_entropy_soft", 2, 4, ops, 1,
                          in[0]->dtype == NN_DTYPE_F32 ? ces_row_f32 : ces_row_f64, NULL, 0);
  nn_tensor_free(ops[0]);
  nn_tensor_free(ops[1]);
  if (!rc && p->i[0] != 2) reduce_rows(out[2], out[0], (int)p->i[0]);
  return rc;
}

/* ops: out0 dx or NULL, out1 dt or NULL, in0 x, in1 t, in2 lse, in3 dout:
 * dx = (softmax(x) sum(t) - t) * dout * f;  dt = (lse - x) * dout * f. */
#define CES_BW_ROW(SUF, T, EXP)                                                                    \
  static void cesbw_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vc) {        \
    (void)w;                                                                                       \
    T *dx = (T *)p[0], *dt = (T *)p[1];                                                            \
    const T *x = (const T *)p[2], *t = (const T *)p[3];                                            \
    int64_t C = rl[2];                                                                             \
    double lse = *(const double *)p[4];                                                            \
    T gs = (T)(*(const T *)p[5] * *(const double *)vc);                                            \
    if (dx) {                                                                                      \
      T ts = (T)rsum_##SUF(t, C) * gs;                                                             \
      T hi = (T)lse, lo = (T)(lse - hi);                                                           \
      _Pragma("omp simd") for (int64_t j = 0; j < C; j++) dx[j] =                                  \
          EXP((x[j] - hi) - lo) * ts - t[j] * gs;                                                  \
    }                                                                                              \
    if (dt) _Pragma("omp simd") for (int64_t j = 0; j < C; j++) dt[j] = (T)(lse - x[j]) * gs;      \
  }
CES_BW_ROW(f32, float, EXP_F32)
CES_BW_ROW(f64, double, EXP_F64)

static int cpu_cross_entropy_soft_backward(nn_tensor *const *out, nn_tensor *const *in,
                                           const nn_op_params *p) {
  int mask = (int)p->i[1];
  nn_tensor *dx = mask & 1 ? out[0] : NULL, *dt = mask & 2 ? out[mask & 1] : NULL;
  bool oom = false;
  nn_tensor *ops[6] = {dx, dt, in[0], in[1], with_dim(in[2], 1, &oom), with_dim(in[3], 1, &oom)};
  int rc =
      oom ? nn_seterr(NN_ERR_NOMEM, "cross_entropy_soft_backward: out of memory")
          : rows_run("cross_entropy_soft_backward", 2, 6, ops, 1,
                     in[0]->dtype == NN_DTYPE_F32 ? cesbw_row_f32 : cesbw_row_f64, &p->f[0], 0);
  nn_tensor_free(ops[4]);
  nn_tensor_free(ops[5]);
  return rc;
}

/* nll: out0 loss (N,) = -logp[n, label[n]]; a gather, no rows needed. */
static int cpu_nll_loss(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *lp = in[0], *lab = in[1];
  int rc = check_labels("nll_loss", lab, lp->shape[1]);
  if (rc) return rc;
  int64_t N = lp->shape[0], s0 = lp->stride[0], s1 = lp->stride[1], ls = lab->stride[0];
  const int64_t *l = I64(lab);
  if (lp->dtype == NN_DTYPE_F32)
    for (int64_t n = 0; n < N; n++) F32(out[0])[n] = -F32(lp)[n * s0 + l[n * ls] * s1];
  else
    for (int64_t n = 0; n < N; n++) F64(out[0])[n] = -F64(lp)[n * s0 + l[n * ls] * s1];
  if (p->i[0] != 2) reduce_rows(out[2], out[0], (int)p->i[0]);
  return NN_OK;
}

/* nll backward: out0 (N, C) contiguous = 0 except -dout[n] * f at (n, label[n]). */
static int cpu_nll_loss_backward(nn_tensor *const *out, nn_tensor *const *in,
                                 const nn_op_params *p) {
  nn_tensor *d = out[0], *lab = in[0], *g = in[1];
  int64_t N = d->shape[0], C = d->shape[1], ls = lab->stride[0], gs = g->stride[0];
  const int64_t *l = I64(lab);
  double f = p->f[0];
  memset(nn_tensor_data(d), 0, (size_t)(N * C) * nn_dtype_size(d->dtype));
  if (d->dtype == NN_DTYPE_F32)
    for (int64_t n = 0; n < N; n++) F32(d)[n * C + l[n * ls]] = (float)(-F32(g)[n * gs] * f);
  else
    for (int64_t n = 0; n < N; n++) F64(d)[n * C + l[n * ls]] = -F64(g)[n * gs] * f;
  return NN_OK;
}

/* ---------------------------------------------------------------- mse */

typedef struct {
  double f;
  double *acc; /* serial accumulation (strided inputs) */
} mse_ctx;

#define MSE_ROWS(SUF, T)                                                                           \
  static void mse_sq_##SUF(int64_t n, char *const *p, const int64_t *s, const void *vc) {          \
    (void)vc;                                                                                      \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1], *b = (const T *)p[2];                                            \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T d = a[i * s[1]] - b[i * s[2]];                                                             \
      o[i * s[0]] = d * d;                                                                         \
    }                                                                                              \
  }                                                                                                \
  static double mse_sum_##SUF(const T *a, const T *b, int64_t sa, int64_t sb, int64_t n) {         \
    double acc[4] = {0};                                                                           \
    int64_t i = 0;                                                                                 \
    if (sa == 1 && sb == 1)                                                                        \
      for (; i + 4 <= n; i += 4) {                                                                 \
        _Pragma("omp simd") for (int l = 0; l < 4; l++) {                                          \
          double d = (double)a[i + l] - b[i + l];                                                  \
          acc[l] += d * d;                                                                         \
        }                                                                                          \
      }                                                                                            \
    for (; i < n; i++) {                                                                           \
      double d = (double)a[i * sa] - b[i * sb];                                                    \
      acc[0] += d * d;                                                                             \
    }                                                                                              \
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);                                                  \
  }                                                                                                \
  static void mse_acc_##SUF(int64_t n, char *const *p, const int64_t *s, const void *vc) {         \
    *((const mse_ctx *)vc)->acc += mse_sum_##SUF((const T *)p[0], (const T *)p[1], s[0], s[1], n); \
  }                                                                                                \
  static void mse_bw_##SUF(int64_t n, char *const *p, const int64_t *s, const void *vc) {          \
    T f = (T)((const mse_ctx *)vc)->f;                                                             \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1], *b = (const T *)p[2], *g = (const T *)p[3];                      \
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = (a[i * s[1]] - b[i * s[2]]) * g[i * s[3]] * f;   \
  }
MSE_ROWS(f32, float)
MSE_ROWS(f64, double)

static int cpu_mse_loss(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *a = in[0], *b = in[1];
  bool f32 = a->dtype == NN_DTYPE_F32;
  if (p->i[0] == 2) {
    nn_tensor *ops[3] = {out[0], a, b};
    cpu_iter it;
    cpu_iter_init(&it, 3, ops);
    cpu_iter_run(&it, f32 ? mse_sq_f32 : mse_sq_f64, NULL, true);
    return NN_OK;
  }
  int64_t n = nn_tensor_numel(a);
  double s = 0;
  if (nn_tensor_is_contiguous(a) && nn_tensor_is_contiguous(b)) {
    /* fixed chunks summed in chunk order: the same bits for any thread count */
    const int64_t CH = 16384;
    int64_t nch = (n + CH - 1) / CH;
    double part[64], *parts = nch <= 64 ? part : malloc((size_t)nch * sizeof *parts);
    if (!parts) return nn_seterr(NN_ERR_NOMEM, "mse_loss: out of memory");
#pragma omp parallel for schedule(static) if (nch > 1)
    for (int64_t c = 0; c < nch; c++) {
      int64_t i0 = c * CH, m = n - i0 < CH ? n - i0 : CH;
      parts[c] = f32 ? mse_sum_f32(F32(a) + i0, F32(b) + i0, 1, 1, m)
                     : mse_sum_f64(F64(a) + i0, F64(b) + i0, 1, 1, m);
    }
    for (int64_t c = 0; c < nch; c++) s += parts[c];
    if (parts != part) free(parts);
  } else {
    mse_ctx c = {0, &s};
    nn_tensor *ops[2] = {a, b};
    cpu_iter it;
    cpu_iter_init(&it, 2, ops);
    cpu_iter_run(&it, f32 ? mse_acc_f32 : mse_acc_f64, &c, false);
  }
  if (p->i[0] == 0) s /= (double)n;
  if (f32)
    *F32(out[0]) = (float)s;
  else
    *F64(out[0]) = s;
  return NN_OK;
}

static int cpu_mse_loss_backward(nn_tensor *const *out, nn_tensor *const *in,
                                 const nn_op_params *p) {
  int mask = (int)p->i[1], k = 0;
  for (int side = 0; side < 2; side++) {
    if (!(mask & (1 << side))) continue;
    mse_ctx c = {side ? -p->f[0] : p->f[0], NULL};
    nn_tensor *ops[4] = {out[k++], in[0], in[1], in[2]};
    cpu_iter it;
    cpu_iter_init(&it, 4, ops);
    cpu_iter_run(&it, ops[0]->dtype == NN_DTYPE_F32 ? mse_bw_f32 : mse_bw_f64, &c, true);
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- sort / topk */

typedef struct {
  int64_t k;
  int desc;
} sort_ctx;

/* Strict total order on (value, index): by value (NaN largest), then by index, which makes any
 * sort stable. Topk with k small against L keeps a heap of the k best (O(L log k)); otherwise a
 * bottom-up merge sort (insertion-sorted runs of 16). */
#define SORT_ROW(SUF, T, ISNAN)                                                                    \
  typedef struct {                                                                                 \
    T v;                                                                                           \
    int64_t i;                                                                                     \
  } pair_##SUF;                                                                                    \
  static inline bool before_##SUF(pair_##SUF a, pair_##SUF b, int desc) {                          \
    bool an = ISNAN(a.v), bn = ISNAN(b.v);                                                         \
    if (an != bn) return desc ? an : bn;                                                           \
    if (!an) {                                                                                     \
      if (a.v < b.v) return !desc;                                                                 \
      if (b.v < a.v) return desc;                                                                  \
    }                                                                                              \
    return a.i < b.i;                                                                              \
  }                                                                                                \
  static pair_##SUF *msort_##SUF(pair_##SUF *a, pair_##SUF *tmp, int64_t n, int desc) {            \
    for (int64_t r = 0; r < n; r += 16) {                                                          \
      int64_t e = r + 16 < n ? r + 16 : n;                                                         \
      for (int64_t i = r + 1; i < e; i++) {                                                        \
        pair_##SUF x = a[i];                                                                       \
        int64_t j = i;                                                                             \
        for (; j > r && before_##SUF(x, a[j - 1], desc); j--) a[j] = a[j - 1];                     \
        a[j] = x;                                                                                  \
      }                                                                                            \
    }                                                                                              \
    for (int64_t w = 16; w < n; w *= 2) {                                                          \
      for (int64_t lo = 0; lo < n; lo += 2 * w) {                                                  \
        int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;               \
        int64_t i = lo, j = mid, o = lo;                                                           \
        while (i < mid && j < hi) tmp[o++] = before_##SUF(a[j], a[i], desc) ? a[j++] : a[i++];     \
        while (i < mid) tmp[o++] = a[i++];                                                         \
        while (j < hi) tmp[o++] = a[j++];                                                          \
      }                                                                                            \
      pair_##SUF *t = a;                                                                           \
      a = tmp;                                                                                     \
      tmp = t;                                                                                     \
    }                                                                                              \
    return a;                                                                                      \
  }                                                                                                \
  /* heap of the k best with the worst at the root */                                              \
  static void sift_##SUF(pair_##SUF *h, int64_t k, int64_t i, int desc) {                          \
    for (;;) {                                                                                     \
      int64_t c = 2 * i + 1;                                                                       \
      if (c >= k) return;                                                                          \
      if (c + 1 < k && before_##SUF(h[c], h[c + 1], desc)) c++;                                    \
      if (!before_##SUF(h[i], h[c], desc)) return;                                                 \
      pair_##SUF t = h[i];                                                                         \
      h[i] = h[c];                                                                                 \
      h[c] = t;                                                                                    \
      i = c;                                                                                       \
    }                                                                                              \
  }                                                                                                \
  static void sort_row_##SUF(char *const *p, const int64_t *rl, void *w, const void *vc) {         \
    const sort_ctx *c = vc;                                                                        \
    const T *x = (const T *)p[2];                                                                  \
    int64_t L = rl[2], K = c->k;                                                                   \
    pair_##SUF *a = w, *tmp = a + L, *r;                                                           \
    if (K * 4 < L) {                                                                               \
      for (int64_t j = 0; j < K; j++) a[j] = (pair_##SUF){x[j], j};                                \
      for (int64_t i = K / 2 - 1; i >= 0; i--) sift_##SUF(a, K, i, c->desc);                       \
      for (int64_t j = K; j < L; j++) {                                                            \
        pair_##SUF e = {x[j], j};                                                                  \
        if (K && before_##SUF(e, a[0], c->desc)) {                                                 \
          a[0] = e;                                                                                \
          sift_##SUF(a, K, 0, c->desc);                                                            \
        }                                                                                          \
      }                                                                                            \
      r = msort_##SUF(a, tmp, K, c->desc);                                                         \
    } else {                                                                                       \
      for (int64_t j = 0; j < L; j++) a[j] = (pair_##SUF){x[j], j};                                \
      r = msort_##SUF(a, tmp, L, c->desc);                                                         \
    }                                                                                              \
    T *v = (T *)p[0];                                                                              \
    int64_t *ix = (int64_t *)p[1];                                                                 \
    for (int64_t j = 0; j < K; j++) {                                                              \
      v[j] = r[j].v;                                                                               \
      ix[j] = r[j].i;                                                                              \
    }                                                                                              \
  }
SORT_ROW(f32, float, ISNAN_FLT)
SORT_ROW(f64, double, ISNAN_FLT)
SORT_ROW(i64, int64_t, ISNAN_INT)

static int cpu_sort(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  static const row_fn fns[3] = {sort_row_f32, sort_row_f64, sort_row_i64};
  static const size_t psize[3] = {sizeof(pair_f32), sizeof(pair_f64), sizeof(pair_i64)};
  int dim = (int)p->i[0];
  sort_ctx c = {p->i[1], (int)p->i[2]};
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  size_t work = 2 * (size_t)in[0]->shape[dim] * psize[in[0]->dtype];
  return rows_run("sort", 2, 3, ops, dim, fns[in[0]->dtype], &c, work);
}

void nn_cpu_register_reduce(nn_backend_i *be) {
  be->kernels[NN_OP_MAX] = cpu_max;
  be->kernels[NN_OP_SELECT_BACKWARD] = cpu_select_backward;
  be->kernels[NN_OP_VAR] = cpu_var;
  be->kernels[NN_OP_VAR_BACKWARD] = cpu_var_backward;
  be->kernels[NN_OP_SOFTMAX] = cpu_softmax;
  be->kernels[NN_OP_SOFTMAX_BACKWARD] = cpu_softmax_backward;
  be->kernels[NN_OP_CROSS_ENTROPY] = cpu_cross_entropy;
  be->kernels[NN_OP_CROSS_ENTROPY_BACKWARD] = cpu_cross_entropy_backward;
  be->kernels[NN_OP_CROSS_ENTROPY_SOFT] = cpu_cross_entropy_soft;
  be->kernels[NN_OP_CROSS_ENTROPY_SOFT_BACKWARD] = cpu_cross_entropy_soft_backward;
  be->kernels[NN_OP_NLL_LOSS] = cpu_nll_loss;
  be->kernels[NN_OP_NLL_LOSS_BACKWARD] = cpu_nll_loss_backward;
  be->kernels[NN_OP_MSE_LOSS] = cpu_mse_loss;
  be->kernels[NN_OP_MSE_LOSS_BACKWARD] = cpu_mse_loss_backward;
  be->kernels[NN_OP_SORT] = cpu_sort;
}
