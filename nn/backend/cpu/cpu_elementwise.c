/* nn/backend/cpu/cpu_elementwise.c: elementwise CPU kernels (binary with broadcasting, scalar). */
#include "cpu.h"

#include <math.h>

/* ---- binary: out = in0 op in1, or out = in0 + f[0] * in1 (axpy, p->i[2]) ---- */

typedef struct {
  int code;
  int axpy;
  double alpha;
} bin_ctx;

#define BIN_LOOP(T, EXPR)                                                                      \
  do {                                                                                         \
    T *o = (T *)p[0];                                                                          \
    const T *a = (const T *)p[1], *b = (const T *)p[2];                                        \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                 \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T x = a[i], y = b[i];                                                                  \
        o[i] = (EXPR);                                                                         \
      }                                                                                        \
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                          \
      T y = b[0];                                                                              \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T x = a[i];                                                                            \
        o[i] = (EXPR);                                                                         \
      }                                                                                        \
    } else {                                                                                   \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T x = a[i * s[1]], y = b[i * s[2]];                                                    \
        o[i * s[0]] = (EXPR);                                                                  \
      }                                                                                        \
    }                                                                                          \
  } while (0)

#define BIN_ROW(NAME, T, POW)                                                                  \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {            \
    const bin_ctx *c = vctx;                                                                   \
    if (c->axpy) {                                                                             \
      T al = (T)c->alpha;                                                                      \
      BIN_LOOP(T, x + al * y);                                                                 \
      return;                                                                                  \
    }                                                                                          \
    switch (c->code) {                                                                         \
    case NN_BIN_ADD: BIN_LOOP(T, x + y); break;                                                \
    case NN_BIN_SUB: BIN_LOOP(T, x - y); break;                                                \
    case NN_BIN_MUL: BIN_LOOP(T, x * y); break;                                                \
    case NN_BIN_DIV: BIN_LOOP(T, x / y); break;                                                \
    case NN_BIN_POW: BIN_LOOP(T, POW(x, y)); break;                                            \
    case NN_BIN_MAX: BIN_LOOP(T, x > y || y != y ? x : y); break;                              \
    case NN_BIN_MIN: BIN_LOOP(T, x < y || y != y ? x : y); break;                              \
    }                                                                                          \
  }
BIN_ROW(bin_f32, float, powf)
BIN_ROW(bin_f64, double, pow)

static int cpu_binary(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  bin_ctx c = {(int)p->i[0], (int)p->i[2], p->f[0]};
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? bin_f32 : bin_f64, &c, true);
  return NN_OK;
}

/* ---- scalar: out = in0 op f[0] (or f[0] op in0 when i[1]) ---- */

typedef struct {
  int code, rev;
  double v;
} sc_ctx;

#define SC_LOOP(T, EXPR)                                                                       \
  do {                                                                                         \
    T *o = (T *)p[0];                                                                          \
    const T *a = (const T *)p[1];                                                              \
    if (s[0] == 1 && s[1] == 1)                                                                \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T x = a[i];                                                                            \
        o[i] = (EXPR);                                                                         \
      }                                                                                        \
    else                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                        \
        T x = a[i * s[1]];                                                                     \
        o[i * s[0]] = (EXPR);                                                                  \
      }                                                                                        \
  } while (0)

#define SC_ROW(NAME, T, POW)                                                                   \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {            \
    const sc_ctx *c = vctx;                                                                    \
    T y = (T)c->v;                                                                             \
    if (!c->rev) switch (c->code) {                                                            \
      case NN_BIN_ADD: SC_LOOP(T, x + y); break;                                               \
      case NN_BIN_SUB: SC_LOOP(T, x - y); break;                                               \
      case NN_BIN_MUL: SC_LOOP(T, x * y); break;                                               \
      case NN_BIN_DIV: SC_LOOP(T, x / y); break;                                               \
      case NN_BIN_POW: SC_LOOP(T, POW(x, y)); break;                                           \
      case NN_BIN_MAX: SC_LOOP(T, x > y || x != x ? x : y); break;                             \
      case NN_BIN_MIN: SC_LOOP(T, x < y || x != x ? x : y); break;                             \
      }                                                                                        \
    else switch (c->code) {                                                                    \
      case NN_BIN_ADD: SC_LOOP(T, y + x); break;                                               \
      case NN_BIN_SUB: SC_LOOP(T, y - x); break;                                               \
      case NN_BIN_MUL: SC_LOOP(T, y * x); break;                                               \
      case NN_BIN_DIV: SC_LOOP(T, y / x); break;                                               \
      case NN_BIN_POW: SC_LOOP(T, POW(y, x)); break;                                           \
      case NN_BIN_MAX: SC_LOOP(T, x > y || x != x ? x : y); break;                             \
      case NN_BIN_MIN: SC_LOOP(T, x < y || x != x ? x : y); break;                             \
      }                                                                                        \
  }
SC_ROW(sc_f32, float, powf)
SC_ROW(sc_f64, double, pow)

static int cpu_scalar(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  sc_ctx c = {(int)p->i[0], (int)p->i[1], p->f[0]};
  nn_tensor *ops[2] = {out[0], in[0]};
  cpu_iter it;
  cpu_iter_init(&it, 2, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? sc_f32 : sc_f64, &c, true);
  return NN_OK;
}

void nn_cpu_register_elementwise(nn_backend_i *be) {
  be->kernels[NN_OP_BINARY] = cpu_binary;
  be->kernels[NN_OP_SCALAR] = cpu_scalar;
}
