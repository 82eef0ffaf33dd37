/* nn/backend/cpu/cpu_elementwise.c: elementwise CPU kernels: binary with broadcasting, scalar,
 * unary math and activations with their fused backward kernels, comparisons, where/masked_fill
 * and the scaled product of dropout.
 *
 * Every kernel has a contiguous fast path (a tight loop the compiler vectorizes where the math
 * allows) and a strided path; cpu_iter merges dims and splits rows over OpenMP threads. Each
 * element is computed independently, so results do not depend on the thread count. Inputs arrive
 * expanded to the output's shape (stride 0 on broadcast dims). */
#include "../../ops_elementwise.h"
#include "cpu.h"

#include <tgmath.h> /* exp, log, erf, ... pick the float or double function from the argument */

/* GCC's -O2 cost model vectorizes almost nothing; "omp simd" asks for it on the contiguous loops
 * (elements are independent, so it changes no result). Loops that call libm stay scalar. With
 * -ftrapping-math (the default) GCC will not if-convert the selects of the float32 math below,
 * which keeps those loops scalar; wb never reads floating-point exception flags, and the values
 * computed do not change, so this file drops it. */
#define SIMD _Pragma("omp simd")
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "no-math-errno")
#endif

/* Row functions are compiled twice, for baseline x86-64 (SSE2) and for x86-64-v3 (AVX2, FMA),
 * and the loader picks one for the running CPU (GCC function multiversioning), so the default
 * portable build still runs 8 floats per instruction where the CPU allows. Results may differ
 * in the last bits between the two (FMA contraction) but never from run to run. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define ROW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ROW_CLONES
#endif

/* ---- binary: out = in0 op in1, or out = in0 + f[0] * in1 (axpy, p->i[2]) ---- */

typedef struct {
  int code;
  int axpy;
  double alpha;
} bin_ctx;

#define BIN_LOOP(T, EXPR)                                                                          \
  do {                                                                                             \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1], *b = (const T *)p[2];                                            \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                     \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T x = a[i], y = b[i];                                                                      \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                              \
      T y = b[0];                                                                                  \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T x = a[i];                                                                                \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x = a[i * s[1]], y = b[i * s[2]];                                                        \
        o[i * s[0]] = (EXPR);                                                                      \
      }                                                                                            \
    }                                                                                              \
  } while (0)

#define BIN_ROW(NAME, T, POW)                                                                      \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const bin_ctx *c = vctx;                                                                       \
    if (c->axpy) {                                                                                 \
      T al = (T)c->alpha;                                                                          \
      BIN_LOOP(T, x + al * y);                                                                     \
      return;                                                                                      \
    }                                                                                              \
    switch (c->code) {                                                                             \
    case NN_BIN_ADD:                                                                               \
      BIN_LOOP(T, x + y);                                                                          \
      break;                                                                                       \
    case NN_BIN_SUB:                                                                               \
      BIN_LOOP(T, x - y);                                                                          \
      break;                                                                                       \
    case NN_BIN_MUL:                                                                               \
      BIN_LOOP(T, x *y);                                                                           \
      break;                                                                                       \
    case NN_BIN_DIV:                                                                               \
      BIN_LOOP(T, x / y);                                                                          \
      break;                                                                                       \
    case NN_BIN_POW:                                                                               \
      BIN_LOOP(T, POW(x, y));                                                                      \
      break;                                                                                       \
    case NN_BIN_MAX:                                                                               \
      BIN_LOOP(T, x > y || x != x ? x : y);                                                        \
      break; /* NaN in x or y wins */                                                              \
    case NN_BIN_MIN:                                                                               \
      BIN_LOOP(T, x < y || x != x ? x : y);                                                        \
      break;                                                                                       \
    }                                                                                              \
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

#define SC_LOOP(T, EXPR)                                                                           \
  do {                                                                                             \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1];                                                                  \
    if (s[0] == 1 && s[1] == 1) {                                                                  \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T x = a[i];                                                                                \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else                                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x = a[i * s[1]];                                                                         \
        o[i * s[0]] = (EXPR);                                                                      \
      }                                                                                            \
  } while (0)

#define SC_ROW(NAME, T, POW)                                                                       \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const sc_ctx *c = vctx;                                                                        \
    T y = (T)c->v;                                                                                 \
    if (!c->rev) switch (c->code) {                                                                \
      case NN_BIN_ADD:                                                                             \
        SC_LOOP(T, x + y);                                                                         \
        break;                                                                                     \
      case NN_BIN_SUB:                                                                             \
        SC_LOOP(T, x - y);                                                                         \
        break;                                                                                     \
      case NN_BIN_MUL:                                                                             \
        SC_LOOP(T, x *y);                                                                          \
        break;                                                                                     \
      case NN_BIN_DIV:                                                                             \
        SC_LOOP(T, x / y);                                                                         \
        break;                                                                                     \
      case NN_BIN_POW:                                                                             \
        SC_LOOP(T, POW(x, y));                                                                     \
        break;                                                                                     \
      case NN_BIN_MAX:                                                                             \
        SC_LOOP(T, x > y || x != x ? x : y);                                                       \
        break;                                                                                     \
      case NN_BIN_MIN:                                                                             \
        SC_LOOP(T, x < y || x != x ? x : y);                                                       \
        break;                                                                                     \
      }                                                                                            \
    else                                                                                           \
      switch (c->code) {                                                                           \
      case NN_BIN_ADD:                                                                             \
        SC_LOOP(T, y + x);                                                                         \
        break;                                                                                     \
      case NN_BIN_SUB:                                                                             \
        SC_LOOP(T, y - x);                                                                         \
        break;                                                                                     \
      case NN_BIN_MUL:                                                                             \
        SC_LOOP(T, y *x);                                                                          \
        break;                                                                                     \
      case NN_BIN_DIV:                                                                             \
        SC_LOOP(T, y / x);                                                                         \
        break;                                                                                     \
      case NN_BIN_POW:                                                                             \
        SC_LOOP(T, POW(y, x));                                                                     \
        break;                                                                                     \
      case NN_BIN_MAX:                                                                             \
        SC_LOOP(T, x > y || x != x ? x : y);                                                       \
        break;                                                                                     \
      case NN_BIN_MIN:                                                                             \
        SC_LOOP(T, x < y || x != x ? x : y);                                                       \
        break;                                                                                     \
      }                                                                                            \
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

/* ---- unary: out = f(in0), code p->i[0] (NN_UN_*), parameters f[0], f[1] ---- */

typedef struct {
  int code;
  double f0, f1;
} un_ctx;

/* Loop over one row; x is the element of in0. The contiguous case is a separate loop so the
 * compiler can vectorize it. */
#define UN_LOOP(T, EXPR)                                                                           \
  do {                                                                                             \
    T *restrict o = (T *)p[0];                                                                     \
    const T *restrict a = (const T *)p[1];                                                         \
    if (s[0] == 1 && s[1] == 1) {                                                                  \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T x = a[i];                                                                                \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x = a[i * s[1]];                                                                         \
        o[i * s[0]] = (EXPR);                                                                      \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* sqrt(2/pi) and the cubic coefficient of the tanh form of GELU; 1/sqrt(2 pi) for its exact
 * derivative. */
#define GELU_K 0.7978845608028654
#define GELU_C 0.044715
#define INV_SQRT_2PI 0.3989422804014327

/* ---- float32 exp, log, tanh and the normal CDF in plain arithmetic, so that loops using them
 * vectorize (libm's expf/tanhf/erff are opaque calls that keep a loop scalar, 5-10x slower).
 * float64 uses libm. Accuracy, checked densely in test_elementwise.c against double libm: within
 * 4 ulp (exp 1, log 1, tanh 2, sigmoid and softplus 3 measured).
 *
 * exp (Cephes expf): x = n ln2 + r with |r| <= ln2/2, ln2 split in two parts so that n*C1 is
 * exact; e^r by a degree-7 polynomial; 2^n applied as 2^(n/2) 2^(n - n/2) so that the results
 * between 2^-149 (subnormal) and 2^128 need no special case. Overflow gives inf, underflow 0,
 * NaN stays NaN. */
#define MATH_INLINE static inline __attribute__((always_inline)) /* into vectorized loops */

MATH_INLINE float pow2i_f32(int n) { /* 2^n for -126 <= n <= 127 */
  union {
    uint32_t i;
    float f;
  } u = {.i = (uint32_t)(n + 127) << 23};
  return u.f;
}

MATH_INLINE float exp_f32(float x) {
  x = x > 88.8f ? 88.8f : x;     /* e^88.8 > FLT_MAX: still overflows to inf below */
  x = x < -104.0f ? -104.0f : x; /* e^-104 < 2^-150: still underflows to 0 */
  float t = x * 1.44269504088896341f;
  t = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer (|t| < 2^22) */
  float r = x - t * 0.693359375f - t * -2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  float y = q * r * r + r + 1.0f;
  int n = (int)(t == t ? t : 0.0f), na = n / 2; /* NaN x: y is NaN already */
  return y * pow2i_f32(na) * pow2i_f32(n - na);
}

/* tanh (Cephes tanhf): odd polynomial below |x| = 0.625, 1 - 2 / (e^2|x| + 1) above. */
MATH_INLINE float tanh_f32(float x) {
  float ax = x < 0 ? -x : x, z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float big = 1.0f - 2.0f / (exp_f32(ax + ax) + 1.0f);
  big = x < 0 ? -big : big;
  return ax > 0.625f ? big : small;
}

/* Normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, erfc(a) (a >= 0) by Numerical Recipes' erfcc
 * Chebyshev fit (fractional error < 1.2e-7 for all a), erfc(-a) = 2 - erfc(a). */
MATH_INLINE float phi_f32(float x) {
  float a = (x < 0 ? -x : x) * 0.70710678118654752f;
  float t = 1.0f / (1.0f + 0.5f * a);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  float h = 0.5f * t * exp_f32(p - a * a); /* erfc(a) / 2 */
  return x < 0 ? h : 1.0f - h;
}

MATH_INLINE double phi_f64(double x) { return 0.5 * erfc(-x * M_SQRT1_2); }

/* log (Cephes logf): x = 2^e m with sqrt(1/2) <= m < sqrt 2, log m by a degree-9 polynomial in
 * m - 1, e ln2 added in two parts. Subnormal x is scaled by 2^23 first; 0 gives -inf, negative
 * x NaN, inf inf, NaN NaN. */
MATH_INLINE float log_f32(float x) {
  const float tiny = 1.17549435e-38f; /* FLT_MIN */
  float xs = x < tiny ? x * 8388608.0f : x;
  union {
    float f;
    int32_t i;
  } u = {.f = xs}, m;
  int e = ((u.i >> 23) & 0xff) - 126 - (x < tiny ? 23 : 0);
  m.i = (u.i & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
  int lo = m.f < 0.70710678118654752f;
  e = lo ? e - 1 : e;
  float f = lo ? m.f + m.f - 1.0f : m.f - 1.0f, z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float fe = (float)e, y = p * f * z - 2.12194440e-4f * fe - 0.5f * z;
  float r = (f + y) + 0.693359375f * fe;
  r = x == 0 ? -INFINITY : r;
  r = x < 0 ? NAN : r;
  r = x == INFINITY ? x : r;
  return x != x ? x : r;
}

/* log(1 + u) for u > -1 without cancellation: log(w) u / (w - 1) with w = 1 + u rounded. */
MATH_INLINE float log1p_f32(float u) {
  float w = 1.0f + u, r = log_f32(w) * (u / (w - 1.0f));
  r = w == 1.0f ? u : r;
  return w == INFINITY ? w : r;
}

/* softplus log(1 + e^z) as max(z, 0) + log(1 + e^-|z|): no overflow for large z. */
#define SOFTPLUS_FNS(T, SFX, EXP, LOG1P)                                                           \
  MATH_INLINE T softplus_##SFX(T z) { return (z > 0 ? z : (T)0) + LOG1P(EXP(z > 0 ? -z : z)); }
SOFTPLUS_FNS(float, f32, exp_f32, log1p_f32)
SOFTPLUS_FNS(double, f64, exp, log1p)

/* Type-generic entry points for the kernels below. */
#define EXP_(x) _Generic((x), float : exp_f32, double : exp)(x)
#define TANH_(x) _Generic((x), float : tanh_f32, double : tanh)(x)
#define PHI_(x) _Generic((x), float : phi_f32, double : phi_f64)(x)
#define LOG_(x) _Generic((x), float : log_f32, double : log)(x)
#define SOFTPLUS_(x) _Generic((x), float : softplus_f32, double : softplus_f64)(x)

#define UN_ROW(NAME, T)                                                                            \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const un_ctx *c = vctx;                                                                        \
    const T f0 = (T)c->f0, f1 = (T)c->f1, one = 1;                                                 \
    switch (c->code) {                                                                             \
    case NN_UN_NEG:                                                                                \
      UN_LOOP(T, -x);                                                                              \
      break;                                                                                       \
    case NN_UN_EXP:                                                                                \
      UN_LOOP(T, EXP_(x));                                                                         \
      break;                                                                                       \
    case NN_UN_LOG:                                                                                \
      UN_LOOP(T, LOG_(x));                                                                         \
      break;                                                                                       \
    case NN_UN_SQRT:                                                                               \
      UN_LOOP(T, sqrt(x));                                                                         \
      break;                                                                                       \
    case NN_UN_RSQRT:                                                                              \
      UN_LOOP(T, one / sqrt(x));                                                                   \
      break;                                                                                       \
    case NN_UN_ABS:                                                                                \
      UN_LOOP(T, fabs(x));                                                                         \
      break;                                                                                       \
    case NN_UN_POW:                                                                                \
      if (c->f0 == 2.0)                                                                            \
        UN_LOOP(T, x *x);                                                                          \
      else if (c->f0 == 1.0)                                                                       \
        UN_LOOP(T, x);                                                                             \
      else                                                                                         \
        UN_LOOP(T, pow(x, f0));                                                                    \
      break;                                                                                       \
    case NN_UN_CLAMP: /* min(max(x, lo), hi); NaN fails both tests and passes through */           \
      UN_LOOP(T, x < f0 ? (f0 > f1 ? f1 : f0) : (x > f1 ? f1 : x));                                \
      break;                                                                                       \
    case NN_UN_RELU:                                                                               \
      UN_LOOP(T, x < 0 ? (T)0 : x);                                                                \
      break; /* NaN passes through */                                                              \
    case NN_UN_LEAKY_RELU:                                                                         \
      UN_LOOP(T, x > 0 ? x : x * f0);                                                              \
      break;                                                                                       \
    case NN_UN_TANH:                                                                               \
      UN_LOOP(T, TANH_(x));                                                                        \
      break;                                                                                       \
    case NN_UN_SIGMOID:                                                                            \
      UN_LOOP(T, one / (one + EXP_(-x)));                                                          \
      break;                                                                                       \
    case NN_UN_GELU:                                                                               \
      UN_LOOP(T, x *PHI_(x));                                                                      \
      break;                                                                                       \
    case NN_UN_GELU_TANH: /* x/2 (1 + tanh u) = x sigmoid(2u), without the cancellation */         \
      UN_LOOP(T, x / (one + EXP_((T)(-2 * GELU_K) * (x + (T)GELU_C * x * x * x))));                \
      break;                                                                                       \
    case NN_UN_SOFTPLUS:                                                                           \
      UN_LOOP(T, x *f0 > f1 ? x : SOFTPLUS_(x * f0) / f0);                                         \
      break;                                                                                       \
    }                                                                                              \
  }
UN_ROW(un_f32, float)
UN_ROW(un_f64, double)

static int cpu_unary(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  un_ctx c = {(int)p->i[0], p->f[0], p->f[1]};
  nn_tensor *ops[2] = {out[0], in[0]};
  cpu_iter it;
  cpu_iter_init(&it, 2, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? un_f32 : un_f64, &c, true);
  return NN_OK;
}

/* ---- unary backward: out = in0 (dout) * f'(v), v = in1 (the op's input x or output y) ---- */

#define UNB_LOOP(T, EXPR)                                                                          \
  do {                                                                                             \
    T *restrict o = (T *)p[0];                                                                     \
    const T *restrict ga = (const T *)p[1], *restrict va = (const T *)p[2];                        \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                     \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T g = ga[i], v = va[i];                                                                    \
        (void)v;                                                                                   \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = ga[i * s[1]], v = va[i * s[2]];                                                      \
        (void)v;                                                                                   \
        o[i * s[0]] = (EXPR);                                                                      \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* d/dx of GELU: Phi(x) + x phi(x) for the exact form; for the tanh form, written as
 * x sigmoid(2u) with u = k (x + c x^3): s + x s (1 - s) 2k (1 + 3c x^2), s = sigmoid(2u). */
#define GELU_GRAD_FNS(T, SFX)                                                                      \
  MATH_INLINE T gelu_grad_##SFX(T x) {                                                             \
    return PHI_(x) + x * (T)INV_SQRT_2PI * EXP_((T)-0.5 * x * x);                                  \
  }                                                                                                \
  MATH_INLINE T gelu_tanh_grad_##SFX(T x) {                                                        \
    T e = EXP_((T)(-2 * GELU_K) * (x + (T)GELU_C * x * x * x)), sg = (T)1 / ((T)1 + e);            \
    T oms = e * sg;                /* 1 - s = e s, without cancellation where s is near 1 */       \
    oms = oms != oms ? (T)1 : oms; /* e = inf */                                                   \
    return sg + (T)(2 * GELU_K) * x * (oms * sg) * ((T)1 + (T)(3 * GELU_C) * x * x);               \
  }
GELU_GRAD_FNS(float, f32)
GELU_GRAD_FNS(double, f64)
#define GELU_GRAD_(x) _Generic((x), float : gelu_grad_f32, double : gelu_grad_f64)(x)
#define GELU_TANH_GRAD_(x) _Generic((x), float : gelu_tanh_grad_f32, double : gelu_tanh_grad_f64)(x)

#define UNB_ROW(NAME, T)                                                                           \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const un_ctx *c = vctx;                                                                        \
    const T f0 = (T)c->f0, f1 = (T)c->f1, one = 1;                                                 \
    switch (c->code) {                                                                             \
    case NN_UN_NEG:                                                                                \
      UNB_LOOP(T, -g);                                                                             \
      break;                                                                                       \
    case NN_UN_EXP:                                                                                \
      UNB_LOOP(T, g *v);                                                                           \
      break;                                                                                       \
    case NN_UN_LOG:                                                                                \
      UNB_LOOP(T, g / v);                                                                          \
      break;                                                                                       \
    case NN_UN_SQRT:                                                                               \
      UNB_LOOP(T, g / (v + v));                                                                    \
      break;                                                                                       \
    case NN_UN_RSQRT:                                                                              \
      UNB_LOOP(T, (T)-0.5 * g * v * v * v);                                                        \
      break;                                                                                       \
    case NN_UN_ABS:                                                                                \
      UNB_LOOP(T, v > 0 ? g : v < 0 ? -g : (T)0);                                                  \
      break;                                                                                       \
    case NN_UN_POW:                                                                                \
      if (c->f0 == 0.0)                                                                            \
        UNB_LOOP(T, (T)0 * g);                                                                     \
      else if (c->f0 == 1.0)                                                                       \
        UNB_LOOP(T, g);                                                                            \
      else if (c->f0 == 2.0)                                                                       \
        UNB_LOOP(T, g *(v + v));                                                                   \
      else                                                                                         \
        UNB_LOOP(T, g *f0 *pow(v, f0 - one));                                                      \
      break;                                                                                       \
    case NN_UN_CLAMP:                                                                              \
      UNB_LOOP(T, v >= f0 && v <= f1 ? g : (T)0);                                                  \
      break;                                                                                       \
    case NN_UN_RELU:                                                                               \
      UNB_LOOP(T, v > 0 ? g : (T)0);                                                               \
      break;                                                                                       \
    case NN_UN_LEAKY_RELU:                                                                         \
      UNB_LOOP(T, v > 0 ? g : g * f0);                                                             \
      break;                                                                                       \
    case NN_UN_TANH:                                                                               \
      UNB_LOOP(T, g *(one - v * v));                                                               \
      break;                                                                                       \
    case NN_UN_SIGMOID:                                                                            \
      UNB_LOOP(T, g *v *(one - v));                                                                \
      break;                                                                                       \
    case NN_UN_GELU:                                                                               \
      UNB_LOOP(T, g *GELU_GRAD_(v));                                                               \
      break;                                                                                       \
    case NN_UN_GELU_TANH:                                                                          \
      UNB_LOOP(T, g *GELU_TANH_GRAD_(v));                                                          \
      break;                                                                                       \
    case NN_UN_SOFTPLUS:                                                                           \
      UNB_LOOP(T, v *f0 > f1 ? g : g / (one + EXP_(-v * f0)));                                     \
      break;                                                                                       \
    }                                                                                              \
  }
UNB_ROW(unb_f32, float)
UNB_ROW(unb_f64, double)

static int cpu_unary_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  un_ctx c = {(int)p->i[0], p->f[0], p->f[1]};
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? unb_f32 : unb_f64, &c, true);
  return NN_OK;
}

/* ---- binary backward: out = in0 (dout) * d(a op b)/d(a or b), a = in1, b = in2 ---- */

typedef struct {
  int code, which;
} binb_ctx;

#define BINB_LOOP(T, EXPR)                                                                         \
  do {                                                                                             \
    T *restrict o = (T *)p[0];                                                                     \
    const T *restrict ga = (const T *)p[1], *restrict aa = (const T *)p[2],                        \
                      *restrict ba = (const T *)p[3];                                              \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {                                        \
      SIMD for (int64_t i = 0; i < n; i++) {                                                       \
        T g = ga[i], x = aa[i], y = ba[i];                                                         \
        (void)x;                                                                                   \
        o[i] = (EXPR);                                                                             \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T g = ga[i * s[1]], x = aa[i * s[2]], y = ba[i * s[3]];                                    \
        (void)x;                                                                                   \
        o[i * s[0]] = (EXPR);                                                                      \
      }                                                                                            \
    }                                                                                              \
  } while (0)

/* max/min: the selected operand gets g, ties split it evenly (PyTorch's rule). */
#define BINB_ROW(NAME, T)                                                                          \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const binb_ctx *c = vctx;                                                                      \
    const T half = (T)0.5, one = 1;                                                                \
    switch (c->code * 2 + c->which) {                                                              \
    case NN_BIN_DIV * 2:                                                                           \
      BINB_LOOP(T, g / y);                                                                         \
      break;                                                                                       \
    case NN_BIN_DIV * 2 + 1:                                                                       \
      BINB_LOOP(T, -(g * (x / y)) / y);                                                            \
      break;                                                                                       \
    case NN_BIN_POW * 2:                                                                           \
      BINB_LOOP(T, y == 0 ? (T)0 : g * y * pow(x, y - one));                                       \
      break;                                                                                       \
    case NN_BIN_POW * 2 + 1:                                                                       \
      BINB_LOOP(T, x == 0 && y >= 0 ? (T)0 : g * pow(x, y) * log(x));                              \
      break;                                                                                       \
    case NN_BIN_MAX * 2:                                                                           \
      BINB_LOOP(T, x == y ? g * half : x < y ? (T)0 : g);                                          \
      break;                                                                                       \
    case NN_BIN_MAX * 2 + 1:                                                                       \
      BINB_LOOP(T, x == y ? g * half : x > y ? (T)0 : g);                                          \
      break;                                                                                       \
    case NN_BIN_MIN * 2:                                                                           \
      BINB_LOOP(T, x == y ? g * half : x > y ? (T)0 : g);                                          \
      break;                                                                                       \
    case NN_BIN_MIN * 2 + 1:                                                                       \
      BINB_LOOP(T, x == y ? g * half : x < y ? (T)0 : g);                                          \
      break;                                                                                       \
    }                                                                                              \
  }
BINB_ROW(binb_f32, float)
BINB_ROW(binb_f64, double)

static int cpu_binary_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  binb_ctx c = {(int)p->i[0], (int)p->i[1]};
  nn_tensor *ops[4] = {out[0], in[0], in[1], in[2]};
  cpu_iter it;
  cpu_iter_init(&it, 4, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? binb_f32 : binb_f64, &c, true);
  return NN_OK;
}

/* ---- compare: out (float 0/1) = in0 cmp in1, or in0 cmp f[0] (p->i[1]) ----
 * TO output type, TI input type, TS the type a scalar compares in (TI for floats, double for
 * int64). */

typedef struct {
  int code, scalar;
  double v;
} cmp_ctx;

#define CMP_LOOP(TO, TI, TS, OP)                                                                   \
  do {                                                                                             \
    TO *restrict o = (TO *)p[0];                                                                   \
    const TI *restrict a = (const TI *)p[1];                                                       \
    if (c->scalar) {                                                                               \
      const TS y = (TS)c->v;                                                                       \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = (TO)((TS)a[i * s[1]] OP y);                    \
    } else {                                                                                       \
      const TI *restrict b = (const TI *)p[2];                                                     \
      if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                   \
        SIMD for (int64_t i = 0; i < n; i++) o[i] = (TO)(a[i] OP b[i]);                            \
      } else                                                                                       \
        for (int64_t i = 0; i < n; i++) o[i * s[0]] = (TO)(a[i * s[1]] OP b[i * s[2]]);            \
    }                                                                                              \
  } while (0)

#define CMP_ROW(NAME, TO, TI, TS)                                                                  \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const cmp_ctx *c = vctx;                                                                       \
    switch (c->code) {                                                                             \
    case NN_CMP_EQ:                                                                                \
      CMP_LOOP(TO, TI, TS, ==);                                                                    \
      break;                                                                                       \
    case NN_CMP_NE:                                                                                \
      CMP_LOOP(TO, TI, TS, !=);                                                                    \
      break;                                                                                       \
    case NN_CMP_GT:                                                                                \
      CMP_LOOP(TO, TI, TS, >);                                                                     \
      break;                                                                                       \
    case NN_CMP_GE:                                                                                \
      CMP_LOOP(TO, TI, TS, >=);                                                                    \
      break;                                                                                       \
    case NN_CMP_LT:                                                                                \
      CMP_LOOP(TO, TI, TS, <);                                                                     \
      break;                                                                                       \
    case NN_CMP_LE:                                                                                \
      CMP_LOOP(TO, TI, TS, <=);                                                                    \
      break;                                                                                       \
    }                                                                                              \
  }
CMP_ROW(cmp_ff, float, float, float)
CMP_ROW(cmp_fd, float, double, double)
CMP_ROW(cmp_fl, float, int64_t, double)
CMP_ROW(cmp_df, double, float, float)
CMP_ROW(cmp_dd, double, double, double)
CMP_ROW(cmp_dl, double, int64_t, double)

static int cpu_compare(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  static const cpu_row_fn fns[2][3] = {{cmp_ff, cmp_fd, cmp_fl}, {cmp_df, cmp_dd, cmp_dl}};
  cmp_ctx c = {(int)p->i[0], (int)p->i[1], p->f[0]};
  nn_tensor *ops[3] = {out[0], in[0], c.scalar ? NULL : in[1]};
  cpu_iter it;
  cpu_iter_init(&it, c.scalar ? 2 : 3, ops);
  cpu_iter_run(&it, fns[out[0]->dtype == NN_DTYPE_F64][in[0]->dtype], &c, true);
  return NN_OK;
}

/* ---- where: out = in0 != 0 ? in1 : in2; masked_fill: out = (in1 != 0) != i[1] ? f[0] : in0 ----
 * T the value type, TC the condition's type (any dtype). */

typedef struct {
  int invert;
  double v;
} mf_ctx;

#define WHERE_ROW(NAME, T, TC)                                                                     \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    (void)vctx;                                                                                    \
    T *restrict o = (T *)p[0];                                                                     \
    const TC *restrict k = (const TC *)p[1];                                                       \
    const T *restrict a = (const T *)p[2], *restrict b = (const T *)p[3];                          \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {                                        \
      SIMD for (int64_t i = 0; i < n; i++) o[i] = k[i] != 0 ? a[i] : b[i];                         \
    } else                                                                                         \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = k[i * s[1]] != 0 ? a[i * s[2]] : b[i * s[3]];  \
  }
WHERE_ROW(where_ff, float, float)
WHERE_ROW(where_fd, float, double)
WHERE_ROW(where_fl, float, int64_t)
WHERE_ROW(where_df, double, float)
WHERE_ROW(where_dd, double, double)
WHERE_ROW(where_dl, double, int64_t)

static int cpu_where(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  static const cpu_row_fn fns[2][3] = {{where_ff, where_fd, where_fl},
                                       {where_df, where_dd, where_dl}};
  nn_tensor *ops[4] = {out[0], in[0], in[1], in[2]};
  cpu_iter it;
  cpu_iter_init(&it, 4, ops);
  cpu_iter_run(&it, fns[out[0]->dtype == NN_DTYPE_F64][in[0]->dtype], NULL, true);
  return NN_OK;
}

#define MF_ROW(NAME, T, TC)                                                                        \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const mf_ctx *c = vctx;                                                                        \
    T *restrict o = (T *)p[0];                                                                     \
    const T *restrict a = (const T *)p[1];                                                         \
    const TC *restrict k = (const TC *)p[2];                                                       \
    const T v = (T)c->v;                                                                           \
    const int inv = c->invert;                                                                     \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                     \
      SIMD for (int64_t i = 0; i < n; i++) o[i] = (k[i] != 0) != inv ? v : a[i];                   \
    } else                                                                                         \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = (k[i * s[2]] != 0) != inv ? v : a[i * s[1]];   \
  }
MF_ROW(mf_ff, float, float)
MF_ROW(mf_fd, float, double)
MF_ROW(mf_fl, float, int64_t)
MF_ROW(mf_df, double, float)
MF_ROW(mf_dd, double, double)
MF_ROW(mf_dl, double, int64_t)

static int cpu_masked_fill(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  static const cpu_row_fn fns[2][3] = {{mf_ff, mf_fd, mf_fl}, {mf_df, mf_dd, mf_dl}};
  mf_ctx c = {p->i[1] != 0, p->f[0]};
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_iter_run(&it, fns[out[0]->dtype == NN_DTYPE_F64][in[1]->dtype], &c, true);
  return NN_OK;
}

/* ---- mul_scaled: out = in0 * in1 * f[0] (dropout with a given mask, in-place t *= x) ---- */

#define MS_ROW(NAME, T)                                                                            \
  ROW_CLONES static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {     \
    const T k = (T) * (const double *)vctx;                                                        \
    T *o = (T *)p[0]; /* may alias in0 exactly (in place) */                                       \
    const T *a = (const T *)p[1], *b = (const T *)p[2];                                            \
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                                     \
      SIMD for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i] * k;                                 \
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                              \
      SIMD for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[0] * k;                                 \
    } else                                                                                         \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = a[i * s[1]] * b[i * s[2]] * k;                 \
  }
MS_ROW(ms_f32, float)
MS_ROW(ms_f64, double)

static int cpu_mul_scaled(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_iter_run(&it, out[0]->dtype == NN_DTYPE_F32 ? ms_f32 : ms_f64, &p->f[0], true);
  return NN_OK;
}

void nn_cpu_register_elementwise(nn_backend_i *be) {
  be->kernels[NN_OP_BINARY] = cpu_binary;
  be->kernels[NN_OP_SCALAR] = cpu_scalar;
  be->kernels[NN_OP_UNARY] = cpu_unary;
  be->kernels[NN_OP_UNARY_BACKWARD] = cpu_unary_backward;
  be->kernels[NN_OP_BINARY_BACKWARD] = cpu_binary_backward;
  be->kernels[NN_OP_COMPARE] = cpu_compare;
  be->kernels[NN_OP_WHERE] = cpu_where;
  be->kernels[NN_OP_MASKED_FILL] = cpu_masked_fill;
  be->kernels[NN_OP_MUL_SCALED] = cpu_mul_scaled;
}
