/* nn/backend/cpu/cpu_norm.c: CPU kernels of batch norm and layer norm (ops in nn/ops_nnet.def).
 * Split from cpu_nnet.c. Shapes: N batch, C channels, S spatial positions (H*W); layer norm
 * rows R of D normalised elements. Sums are in double, per channel / row / column block in a
 * fixed order, so results do not depend on the thread count. */
#include "cpu.h"
#include "cpu_sums.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- normalisation */

/* Channels per unit of work when S == 1 ((N, C) input): a block of channels walked row by row. */
#define BN_BLOCK 64

/* x is (N, C, S); channels [c0, c1) (one channel when S > 1, a block when S == 1).
 * bn_stats: batch mean and biased variance; bn_affine: y = x*a[c] + b[c];
 * bn_sums: sum dy and sum dy*(x - mean[c]); bn_dx: dx = dy*k1[c] + x*k2[c] + k3[c]. */
#define DEF_NORM(SUF, T)                                                                           \
  static void bn_stats_##SUF(const T *x, int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1,  \
                             double *mean, double *var) {                                          \
    double M = (double)(N * S);                                                                    \
    if (S > 1) {                                                                                   \
      for (int64_t c = c0; c < c1; c++) {                                                          \
        double s = 0, v = 0;                                                                       \
        for (int64_t n = 0; n < N; n++) s += sum_##SUF(x + (n * C + c) * S, S);                    \
        double m = s / M;                                                                          \
        for (int64_t n = 0; n < N; n++) v += sqdev_##SUF(x + (n * C + c) * S, S, m);               \
        mean[c] = m;                                                                               \
        var[c] = v / M;                                                                            \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    double s[BN_BLOCK] = {0}, v[BN_BLOCK] = {0};                                                   \
    int64_t nb = c1 - c0;                                                                          \
    for (int64_t n = 0; n < N; n++)                                                                \
      for (int64_t j = 0; j < nb; j++) s[j] += x[n * C + c0 + j];                                  \
    for (int64_t j = 0; j < nb; j++) mean[c0 + j] = s[j] / M;                                      \
    for (int64_t n = 0; n < N; n++)                                                                \
      for (int64_t j = 0; j < nb; j++) {                                                           \
        double d = x[n * C + c0 + j] - mean[c0 + j];                                               \
        v[j] += d * d;                                                                             \
      }                                                                                            \
    for (int64_t j = 0; j < nb; j++) var[c0 + j] = v[j] / M;                                       \
  }                                                                                                \
  static void bn_affine_##SUF(T *restrict y, const T *restrict x, int64_t N, int64_t C, int64_t S, \
                              int64_t c0, int64_t c1, const double *a, const double *b) {          \
    for (int64_t n = 0; n < N; n++)                                                                \
      for (int64_t c = c0; c < c1; c++) {                                                          \
        T ac = (T)a[c], bc = (T)b[c];                                                              \
        const T *xr = x + (n * C + c) * S;                                                         \
        T *yr = y + (n * C + c) * S;                                                               \
        FOR8(s, S, yr[s] = xr[s] * ac + bc);                                                       \
      }                                                                                            \
  }                                                                                                \
  static void bn_sums_##SUF(const T *dy, const T *x, int64_t N, int64_t C, int64_t S, int64_t c0,  \
                            int64_t c1, const double *mean, double *sdy, double *sdyx) {           \
    if (S > 1) {                                                                                   \
      for (int64_t c = c0; c < c1; c++) {                                                          \
        double a = 0, b = 0;                                                                       \
        for (int64_t n = 0; n < N; n++) {                                                          \
          double a1, b1;                                                                           \
          dotdev_##SUF(dy + (n * C + c) * S, x + (n * C + c) * S, S, mean[c], &a1, &b1);           \
          a += a1;                                                                                 \
          b += b1;                                                                                 \
        }                                                                                          \
        sdy[c] = a;                                                                                \
        sdyx[c] = b;                                                                               \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    double a[BN_BLOCK] = {0}, b[BN_BLOCK] = {0};                                                   \
    int64_t nb = c1 - c0;                                                                          \
    for (int64_t n = 0; n < N; n++)                                                                \
      for (int64_t j = 0; j < nb; j++) {                                                           \
        double g = dy[n * C + c0 + j];                                                             \
        a[j] += g;                                                                                 \
        b[j] += g * (x[n * C + c0 + j] - mean[c0 + j]);                                            \
      }                                                                                            \
    for (int64_t j = 0; j < nb; j++) sdy[c0 + j] = a[j], sdyx[c0 + j] = b[j];                      \
  }                                                                                                \
  static void bn_dx_##SUF(T *restrict dx, const T *restrict dy, const T *restrict x, int64_t N,    \
                          int64_t C, int64_t S, int64_t c0, int64_t c1, const double *k1,          \
                          const double *k2, const double *k3) {                                    \
    for (int64_t n = 0; n < N; n++)                                                                \
      for (int64_t c = c0; c < c1; c++) {                                                          \
        T a = (T)k1[c], b = (T)k2[c], d = (T)k3[c];                                                \
        int64_t r = (n * C + c) * S;                                                               \
        FOR8(s, S, dx[r + s] = dy[r + s] * a + x[r + s] * b + d);                                  \
      }                                                                                            \
  }                                                                                                \
  /* layer norm of one row of D values: y = (x - m) * is * w + b */                                \
  static void ln_row_##SUF(T *restrict y, const T *restrict x, const T *w, const T *b, int64_t D,  \
                           double eps, double *mean, double *invstd) {                             \
    double m = sum_##SUF(x, D) / (double)D;                                                        \
    double is = 1.0 / sqrt(sqdev_##SUF(x, D, m) / (double)D + eps);                                \
    *mean = m;                                                                                     \
    *invstd = is;                                                                                  \
    T mt = (T)m, it = (T)is;                                                                       \
    if (w && b)                                                                                    \
      FOR8(j, D, y[j] = (x[j] - mt) * it * w[j] + b[j]);                                           \
    else if (w)                                                                                    \
      FOR8(j, D, y[j] = (x[j] - mt) * it * w[j]);                                                  \
    else if (b)                                                                                    \
      FOR8(j, D, y[j] = (x[j] - mt) * it + b[j]);                                                  \
    else                                                                                           \
      FOR8(j, D, y[j] = (x[j] - mt) * it);                                                         \
  }                                                                                                \
  /* dx = is * (g - sum(g)/D - xhat * sum(g*xhat)/D), g = dy * w, xhat = (x - m) * is */           \
  static void ln_row_bwd_##SUF(T *restrict dx, const T *restrict dy, const T *restrict x,          \
                               const T *w, int64_t D, double m, double is) {                       \
    double sg, sgx;                                                                                \
    if (w) {                                                                                       \
      double s1[8] = {0}, s2[8] = {0};                                                             \
      int64_t i = 0;                                                                               \
      for (; i + 8 <= D; i += 8)                                                                   \
        for (int j = 0; j < 8; j++) {                                                              \
          double g = (double)dy[i + j] * w[i + j];                                                 \
          s1[j] += g;                                                                              \
          s2[j] += g * (x[i + j] - m);                                                             \
        }                                                                                          \
      for (; i < D; i++) {                                                                         \
        double g = (double)dy[i] * w[i];                                                           \
        s1[0] += g;                                                                                \
        s2[0] += g * (x[i] - m);                                                                   \
      }                                                                                            \
      sg = ((s1[0] + s1[1]) + (s1[2] + s1[3])) + ((s1[4] + s1[5]) + (s1[6] + s1[7]));              \
      sgx = ((s2[0] + s2[1]) + (s2[2] + s2[3])) + ((s2[4] + s2[5]) + (s2[6] + s2[7]));             \
    } else {                                                                                       \
      dotdev_##SUF(dy, x, D, m, &sg, &sgx);                                                        \
    }                                                                                              \
    /* dx = a*g + b*x + c */                                                                       \
    T a = (T)is, b = (T)(-is * is * is * sgx / (double)D);                                         \
    T c = (T)(-is * sg / (double)D + is * is * is * sgx * m / (double)D);                          \
    if (w)                                                                                         \
      FOR8(j, D, dx[j] = dy[j] * w[j] * a + x[j] * b + c);                                         \
    else                                                                                           \
      FOR8(j, D, dx[j] = dy[j] * a + x[j] * b + c);                                                \
  }                                                                                                \
  /* columns [j0, j1) of the (R, D) sums {dy, dy * xhat} with per-row mean and invstd */           \
  static void ln_cols_##SUF(double *restrict s0, double *restrict s1, const T *dy, const T *x,     \
                            int64_t R, int64_t D, int64_t j0, int64_t j1, const T *mean,           \
                            const T *invstd) {                                                     \
    for (int64_t j = j0; j < j1; j++) s0[j - j0] = s1[j - j0] = 0;                                 \
    for (int64_t r = 0; r < R; r++) {                                                              \
      double m = mean[r], is = invstd[r];                                                          \
      const T *g = dy + r * D, *a = x + r * D;                                                     \
      for (int64_t j = j0; j < j1; j++) {                                                          \
        s0[j - j0] += g[j];                                                                        \
        s1[j - j0] += g[j] * ((a[j] - m) * is);                                                    \
      }                                                                                            \
    }                                                                                              \
  }
DEF_NORM(f, float)
DEF_NORM(d, double)

/* Work units of a (N, C, S) per-channel kernel: one channel each when S > 1, else blocks. */
static int64_t bn_units(int64_t C, int64_t S) { return S > 1 ? C : (C + BN_BLOCK - 1) / BN_BLOCK; }
static void bn_unit(int64_t u, int64_t C, int64_t S, int64_t *c0, int64_t *c1) {
  int64_t w = S > 1 ? 1 : BN_BLOCK;
  *c0 = u * w;
  *c1 = *c0 + w < C ? *c0 + w : C;
}

static void bn_shape(const nn_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
  *N = x->shape[0];
  *C = x->shape[1];
  *S = 1;
  for (int d = 2; d < x->ndim; d++) *S *= x->shape[d];
}

/* Value i of an optional (C) tensor of any stride, or dflt. */
static double opt_at(const nn_tensor *t, int64_t i, double dflt) {
  if (!t) return dflt;
  return t->dtype == NN_DTYPE_F32 ? F32(t)[i * t->stride[0]] : F64(t)[i * t->stride[0]];
}

static void set_at(nn_tensor *t, int64_t i, double v) {
  if (t->dtype == NN_DTYPE_F32)
    F32(t)[i * t->stride[0]] = (float)v;
  else
    F64(t)[i * t->stride[0]] = v;
}

static int cpu_batchnorm(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *y = out[0], *om = out[1], *oi = out[2], *rm = out[3], *rv = out[4];
  nn_tensor *x = in[0], *w = in[1], *b = in[2], *scr = NULL;
  bool training = p->i[0];
  double momentum = p->f[0], eps = p->f[1];
  int64_t N, C, S;
  bn_shape(x, &N, &C, &S);
  int rc = nn_tensor_empty(&scr, 1, (int64_t[]){4 * C}, NN_DTYPE_F64, nn_cpu);
  if (rc) return rc;
  double *mean = F64(scr), *var = mean + C, *ka = var + C, *kb = ka + C;
  bool f32 = x->dtype == NN_DTYPE_F32, par = N * C * S >= CPU_PAR_MIN;
  int64_t U = bn_units(C, S);
  if (training) {
#pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < U; u++) {
      int64_t c0, c1;
      bn_unit(u, C, S, &c0, &c1);
      if (f32)
        bn_stats_f(F32(x), N, C, S, c0, c1, mean, var);
      else
        bn_stats_d(F64(x), N, C, S, c0, c1, mean, var);
    }
  } else {
    for (int64_t c = 0; c < C; c++) mean[c] = opt_at(in[3], c, 0), var[c] = opt_at(in[4], c, 1);
  }
  double M = (double)(N * S);
  for (int64_t c = 0; c < C; c++) {
    double is = 1.0 / sqrt(var[c] + eps), wc = opt_at(w, c, 1.0);
    set_at(om, c, mean[c]);
    set_at(oi, c, is);
    ka[c] = is * wc;
    kb[c] = opt_at(b, c, 0.0) - mean[c] * ka[c];
    if (training && rm) set_at(rm, c, (1 - momentum) * opt_at(rm, c, 0) + momentum * mean[c]);
    if (training && rv)
      set_at(rv, c, (1 - momentum) * opt_at(rv, c, 0) + momentum * var[c] * M / (M - 1));
  }
#pragma omp parallel for schedule(static) if (par)
  for (int64_t u = 0; u < U; u++) {
    int64_t c0, c1;
    bn_unit(u, C, S, &c0, &c1);
    if (f32)
      bn_affine_f(F32(y), F32(x), N, C, S, c0, c1, ka, kb);
    else
      bn_affine_d(F64(y), F64(x), N, C, S, c0, c1, ka, kb);
  }
  nn_tensor_free(scr);
  return NN_OK;
}

static int cpu_batchnorm_backward_reduce(nn_tensor *const *out, nn_tensor *const *in,
                                         const nn_op_params *p) {
  (void)p;
  nn_tensor *o = out[0], *dy = in[0], *x = in[1], *scr = NULL;
  int64_t N, C, S;
  bn_shape(x, &N, &C, &S);
  int rc = nn_tensor_empty(&scr, 1, (int64_t[]){3 * C}, NN_DTYPE_F64, nn_cpu);
  if (rc) return rc;
  double *mean = F64(scr), *sdy = mean + C, *sdyx = sdy + C;
  for (int64_t c = 0; c < C; c++) mean[c] = opt_at(in[2], c, 0);
  bool f32 = x->dtype == NN_DTYPE_F32;
  int64_t U = bn_units(C, S);
#pragma omp parallel for schedule(static) if (N * C * S >= CPU_PAR_MIN)
  for (int64_t u = 0; u < U; u++) {
    int64_t c0, c1;
    bn_unit(u, C, S, &c0, &c1);
    if (f32)
      bn_sums_f(F32(dy), F32(x), N, C, S, c0, c1, mean, sdy, sdyx);
    else
      bn_sums_d(F64(dy), F64(x), N, C, S, c0, c1, mean, sdy, sdyx);
  }
  for (int64_t c = 0; c < C; c++) {
    nn_tensor_set_flat(o, c, sdy[c]);
    nn_tensor_set_flat(o, C + c, sdyx[c] * opt_at(in[3], c, 1));
  }
  nn_tensor_free(scr);
  return NN_OK;
}

static int cpu_batchnorm_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  nn_tensor *dx = out[0], *dy = in[0], *x = in[1], *w = in[2], *sums = in[5], *scr = NULL;
  int64_t N, C, S;
  bn_shape(x, &N, &C, &S);
  int rc = nn_tensor_empty(&scr, 1, (int64_t[]){3 * C}, NN_DTYPE_F64, nn_cpu);
  if (rc) return rc;
  double *k1 = F64(scr), *k2 = k1 + C, *k3 = k2 + C, M = (double)(N * S);
  for (int64_t c = 0; c < C; c++) {
    /* training: dx = w*is*(dy - sdy/M - xhat*sdyxhat/M), xhat = (x - m)*is (Ioffe & Szegedy) */
    double is = opt_at(in[4], c, 1), m = opt_at(in[3], c, 0), a = opt_at(w, c, 1) * is;
    k1[c] = a;
    k2[c] = k3[c] = 0;
    if (p->i[0]) {
      double sdy = nn_tensor_get_flat(sums, c), sdyxh = nn_tensor_get_flat(sums, C + c);
      k2[c] = -a * is * sdyxh / M;
      k3[c] = -a * sdy / M - k2[c] * m;
    }
  }
  bool f32 = x->dtype == NN_DTYPE_F32;
  int64_t U = bn_units(C, S);
#pragma omp parallel for schedule(static) if (N * C * S >= CPU_PAR_MIN)
  for (int64_t u = 0; u < U; u++) {
    int64_t c0, c1;
    bn_unit(u, C, S, &c0, &c1);
    if (f32)
      bn_dx_f(F32(dx), F32(dy), F32(x), N, C, S, c0, c1, k1, k2, k3);
    else
      bn_dx_d(F64(dx), F64(dy), F64(x), N, C, S, c0, c1, k1, k2, k3);
  }
  nn_tensor_free(scr);
  return NN_OK;
}

static int cpu_layernorm(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *y = out[0], *om = out[1], *oi = out[2], *x = in[0], *w = in[1], *b = in[2];
  int64_t R = x->shape[0], D = x->shape[1];
  double eps = p->f[1];
  bool f32 = x->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) if (R * D >= CPU_PAR_MIN)
  for (int64_t r = 0; r < R; r++) {
    double m, is;
    if (f32) {
      ln_row_f(F32(y) + r * D, F32(x) + r * D, w ? F32(w) : NULL, b ? F32(b) : NULL, D, eps, &m,
               &is);
      F32(om)[r] = (float)m, F32(oi)[r] = (float)is;
    } else {
      ln_row_d(F64(y) + r * D, F64(x) + r * D, w ? F64(w) : NULL, b ? F64(b) : NULL, D, eps, &m,
               &is);
      F64(om)[r] = m, F64(oi)[r] = is;
    }
  }
  return NN_OK;
}

static int cpu_layernorm_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  (void)p;
  nn_tensor *dx = out[0], *dy = in[0], *x = in[1], *w = in[2], *mean = in[3], *inv = in[4];
  int64_t R = x->shape[0], D = x->shape[1];
  bool f32 = x->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) if (R * D >= CPU_PAR_MIN)
  for (int64_t r = 0; r < R; r++) {
    if (f32)
      ln_row_bwd_f(F32(dx) + r * D, F32(dy) + r * D, F32(x) + r * D, w ? F32(w) : NULL, D,
                   F32(mean)[r], F32(inv)[r]);
    else
      ln_row_bwd_d(F64(dx) + r * D, F64(dy) + r * D, F64(x) + r * D, w ? F64(w) : NULL, D,
                   F64(mean)[r], F64(inv)[r]);
  }
  return NN_OK;
}

/* Columns per unit of the (R, D) -> (D) reductions: whole cache lines, rows walked in order. */
#define LN_BLOCK 256

static int cpu_layernorm_backward_weight(nn_tensor *const *out, nn_tensor *const *in,
                                         const nn_op_params *p) {
  (void)p;
  nn_tensor *o = out[0], *dy = in[0], *x = in[1], *mean = in[2], *inv = in[3];
  int64_t R = x->shape[0], D = x->shape[1], U = (D + LN_BLOCK - 1) / LN_BLOCK;
  bool f32 = x->dtype == NN_DTYPE_F32;
#pragma omp parallel for schedule(static) if (R * D >= CPU_PAR_MIN)
  for (int64_t u = 0; u < U; u++) {
    double s0[LN_BLOCK], s1[LN_BLOCK];
    int64_t j0 = u * LN_BLOCK, j1 = j0 + LN_BLOCK < D ? j0 + LN_BLOCK : D;
    if (f32) {
      ln_cols_f(s0, s1, F32(dy), F32(x), R, D, j0, j1, F32(mean), F32(inv));
      for (int64_t j = j0; j < j1; j++)
        F32(o)[j] = (float)s0[j - j0], F32(o)[D + j] = (float)s1[j - j0];
    } else {
      ln_cols_d(s0, s1, F64(dy), F64(x), R, D, j0, j1, F64(mean), F64(inv));
      for (int64_t j = j0; j < j1; j++) F64(o)[j] = s0[j - j0], F64(o)[D + j] = s1[j - j0];
    }
  }
  return NN_OK;
}

void nn_cpu_register_norm(nn_backend_i *be) {
  be->kernels[NN_OP_BATCHNORM] = cpu_batchnorm;
  be->kernels[NN_OP_BATCHNORM_BACKWARD_REDUCE] = cpu_batchnorm_backward_reduce;
  be->kernels[NN_OP_BATCHNORM_BACKWARD] = cpu_batchnorm_backward;
  be->kernels[NN_OP_LAYERNORM] = cpu_layernorm;
  be->kernels[NN_OP_LAYERNORM_BACKWARD] = cpu_layernorm_backward;
  be->kernels[NN_OP_LAYERNORM_BACKWARD_WEIGHT] = cpu_layernorm_backward_weight;
}
