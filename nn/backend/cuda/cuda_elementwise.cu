/* nn/backend/cuda/cuda_elementwise.cu: elementwise kernels on the GPU: binary with broadcasting,
 * scalar, unary math and activations with their fused backward kernels, comparisons,
 * where/masked_fill and the scaled product of dropout (references: cpu_elementwise.c; the
 * expressions below are the CPU's, NaN rules included). Inputs arrive expanded to the output's
 * shape (stride 0 on broadcast dims); cu_map walks any strides.
 *
 * float32 math uses CUDA's single-precision functions (expf, tanhf, erfcf: within 2 ulp) where
 * the CPU uses its own polynomial versions (within 4 ulp), so float32 results agree to a few
 * ulp, not bit for bit; float64 uses the double functions on both. */
#include "../../ops_elementwise.h"
#include "cuda.h"

#define GELU_K 0.7978845608028654
#define GELU_C 0.044715
#define INV_SQRT_2PI 0.3989422804014327

/* Type-generic device math (the float overloads of CUDA's math library). */
static __device__ __forceinline__ float d_exp(float x) { return expf(x); }
static __device__ __forceinline__ double d_exp(double x) { return exp(x); }
static __device__ __forceinline__ float d_log(float x) { return logf(x); }
static __device__ __forceinline__ double d_log(double x) { return log(x); }
static __device__ __forceinline__ float d_log1p(float x) { return log1pf(x); }
static __device__ __forceinline__ double d_log1p(double x) { return log1p(x); }
static __device__ __forceinline__ float d_sqrt(float x) { return sqrtf(x); }
static __device__ __forceinline__ double d_sqrt(double x) { return sqrt(x); }
static __device__ __forceinline__ float d_tanh(float x) { return tanhf(x); }
static __device__ __forceinline__ double d_tanh(double x) { return tanh(x); }
static __device__ __forceinline__ float d_pow(float x, float y) { return powf(x, y); }
static __device__ __forceinline__ double d_pow(double x, double y) { return pow(x, y); }
static __device__ __forceinline__ float d_fabs(float x) { return fabsf(x); }
static __device__ __forceinline__ double d_fabs(double x) { return fabs(x); }
/* Phi(x) = erfc(-x / sqrt 2) / 2 */
static __device__ __forceinline__ float d_phi(float x) {
  return 0.5f * erfcf(-x * 0.70710678118654752f);
}
static __device__ __forceinline__ double d_phi(double x) {
  return 0.5 * erfc(-x * 0.70710678118654752440);
}

/* softplus log(1 + e^z) as max(z, 0) + log(1 + e^-|z|) */
template <class T> static __device__ __forceinline__ T softplus(T z) {
  return (z > 0 ? z : (T)0) + d_log1p(d_exp(z > 0 ? -z : z));
}

template <class T> static __device__ __forceinline__ T bin_apply(int code, T x, T y) {
  switch (code) {
  case NN_BIN_ADD:
    return x + y;
  case NN_BIN_SUB:
    return x - y;
  case NN_BIN_MUL:
    return x * y;
  case NN_BIN_DIV:
    return x / y;
  case NN_BIN_POW:
    return d_pow(x, y);
  case NN_BIN_MAX:
    return x > y || x != x ? x : y; /* NaN in x or y wins */
  case NN_BIN_MIN:
    return x < y || x != x ? x : y;
  }
  return x;
}

/* ---------------------------------------------------------------- binary, scalar */

/* out = in0 op in1, or out = in0 + alpha * in1 (axpy, p->i[2]) */
template <class T> struct bin_fn {
  T *o;
  const T *a, *b;
  int code, axpy;
  T alpha;
  __device__ void operator()(const int64_t *off) const {
    T x = a[off[1]], y = b[off[2]];
    o[off[0]] = axpy ? x + alpha * y : bin_apply<T>(code, x, y);
  }
};

static int cuda_binary(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  int code = (int)p->i[0], axpy = (int)p->i[2];
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<3>("binary", ops,
                     bin_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]),
                                   cu_ptr<float>(in[1]), code, axpy, (float)p->f[0]});
  return cu_map<3>("binary", ops,
                   bin_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                                  cu_ptr<double>(in[1]), code, axpy, p->f[0]});
}

/* out = in0 op v, or v op in0 when rev (max/min keep the CPU's operand order: x first) */
template <class T> struct sc_fn {
  T *o;
  const T *a;
  int code, rev;
  T v;
  __device__ void operator()(const int64_t *off) const {
    T x = a[off[1]];
    if (!rev || code == NN_BIN_MAX || code == NN_BIN_MIN)
      o[off[0]] = bin_apply<T>(code, x, v);
    else
      o[off[0]] = bin_apply<T>(code, v, x);
  }
};

static int cuda_scalar(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[2] = {out[0], in[0]};
  int code = (int)p->i[0], rev = (int)p->i[1];
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<2>(
        "scalar", ops,
        sc_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), code, rev, (float)p->f[0]});
  return cu_map<2>(
      "scalar", ops,
      sc_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), code, rev, p->f[0]});
}

/* ---------------------------------------------------------------- unary */

template <class T>
static __device__ __forceinline__ T unary_apply(int code, T x, T f0, T f1, double pf0) {
  const T one = 1;
  switch (code) {
  case NN_UN_NEG:
    return -x;
  case NN_UN_EXP:
    return d_exp(x);
  case NN_UN_LOG:
    return d_log(x);
  case NN_UN_SQRT:
    return d_sqrt(x);
  case NN_UN_RSQRT:
    return one / d_sqrt(x);
  case NN_UN_ABS:
    return d_fabs(x);
  case NN_UN_POW:
    if (pf0 == 2.0) return x * x;
    if (pf0 == 1.0) return x;
    return d_pow(x, f0);
  case NN_UN_CLAMP:
    return x < f0 ? (f0 > f1 ? f1 : f0) : (x > f1 ? f1 : x); /* NaN passes */
  case NN_UN_RELU:
    return x < 0 ? (T)0 : x; /* NaN passes */
  case NN_UN_LEAKY_RELU:
    return x > 0 ? x : x * f0;
  case NN_UN_TANH:
    return d_tanh(x);
  case NN_UN_SIGMOID:
    return one / (one + d_exp(-x));
  case NN_UN_GELU:
    return x * d_phi(x);
  case NN_UN_GELU_TANH: /* x sigmoid(2u), u = k (x + c x^3) */
    return x / (one + d_exp((T)(-2 * GELU_K) * (x + (T)GELU_C * x * x * x)));
  case NN_UN_SOFTPLUS:
    return x * f0 > f1 ? x : softplus<T>(x * f0) / f0;
  }
  return x;
}

template <class T> struct un_fn {
  T *o;
  const T *a;
  int code;
  T f0, f1;
  double pf0;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = unary_apply<T>(code, a[off[1]], f0, f1, pf0);
  }
};

static int cuda_unary(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[2] = {out[0], in[0]};
  int code = (int)p->i[0];
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<2>("unary", ops,
                     un_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), code, (float)p->f[0],
                                  (float)p->f[1], p->f[0]});
  return cu_map<2>("unary", ops,
                   un_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), code, p->f[0],
                                 p->f[1], p->f[0]});
}

/* d/dx GELU: Phi(x) + x phi(x); tanh form: s + 2k x s (1 - s)(1 + 3c x^2), s = sigmoid(2u) */
template <class T> static __device__ __forceinline__ T gelu_grad(T x) {
  return d_phi(x) + x * (T)INV_SQRT_2PI * d_exp((T)-0.5 * x * x);
}
template <class T> static __device__ __forceinline__ T gelu_tanh_grad(T x) {
  T e = d_exp((T)(-2 * GELU_K) * (x + (T)GELU_C * x * x * x)), sg = (T)1 / ((T)1 + e);
  T oms = e * sg;
  oms = oms != oms ? (T)1 : oms;
  return sg + (T)(2 * GELU_K) * x * (oms * sg) * ((T)1 + (T)(3 * GELU_C) * x * x);
}

/* out = g * f'(v), v the op's input or output per NN_UN_* code */
template <class T> struct unb_fn {
  T *o;
  const T *ga, *va;
  int code;
  T f0, f1;
  double pf0;
  __device__ void operator()(const int64_t *off) const {
    const T one = 1;
    T g = ga[off[1]], v = va[off[2]], r = g;
    switch (code) {
    case NN_UN_NEG:
      r = -g;
      break;
    case NN_UN_EXP:
      r = g * v;
      break;
    case NN_UN_LOG:
      r = g / v;
      break;
    case NN_UN_SQRT:
      r = g / (v + v);
      break;
    case NN_UN_RSQRT:
      r = (T)-0.5 * g * v * v * v;
      break;
    case NN_UN_ABS:
      r = v > 0 ? g : v < 0 ? -g : (T)0;
      break;
    case NN_UN_POW:
      if (pf0 == 0.0)
        r = (T)0 * g;
      else if (pf0 == 1.0)
        r = g;
      else if (pf0 == 2.0)
        r = g * (v + v);
      else
        r = g * f0 * d_pow(v, f0 - one);
      break;
    case NN_UN_CLAMP:
      r = v >= f0 && v <= f1 ? g : (T)0;
      break;
    case NN_UN_RELU:
      r = v > 0 ? g : (T)0;
      break;
    case NN_UN_LEAKY_RELU:
      r = v > 0 ? g : g * f0;
      break;
    case NN_UN_TANH:
      r = g * (one - v * v);
      break;
    case NN_UN_SIGMOID:
      r = g * v * (one - v);
      break;
    case NN_UN_GELU:
      r = g * gelu_grad<T>(v);
      break;
    case NN_UN_GELU_TANH:
      r = g * gelu_tanh_grad<T>(v);
      break;
    case NN_UN_SOFTPLUS:
      r = v * f0 > f1 ? g : g / (one + d_exp(-v * f0));
      break;
    }
    o[off[0]] = r;
  }
};

static int cuda_unary_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  int code = (int)p->i[0];
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<3>("unary_backward", ops,
                     unb_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]),
                                   cu_ptr<float>(in[1]), code, (float)p->f[0], (float)p->f[1],
                                   p->f[0]});
  return cu_map<3>("unary_backward", ops,
                   unb_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                                  cu_ptr<double>(in[1]), code, p->f[0], p->f[1], p->f[0]});
}

/* ---------------------------------------------------------------- binary backward
 * out = g * d(x op y)/d(x or y); max/min: the selected operand gets g, ties split it evenly. */

template <class T> struct binb_fn {
  T *o;
  const T *ga, *xa, *ya;
  int sel; /* code * 2 + which */
  __device__ void operator()(const int64_t *off) const {
    const T half = (T)0.5, one = 1;
    T g = ga[off[1]], x = xa[off[2]], y = ya[off[3]], r = 0;
    switch (sel) {
    case NN_BIN_DIV * 2:
      r = g / y;
      break;
    case NN_BIN_DIV * 2 + 1:
      r = -(g * (x / y)) / y;
      break;
    case NN_BIN_POW * 2:
      r = y == 0 ? (T)0 : g * y * d_pow(x, y - one);
      break;
    case NN_BIN_POW * 2 + 1:
      r = x == 0 && y >= 0 ? (T)0 : g * d_pow(x, y) * d_log(x);
      break;
    case NN_BIN_MAX * 2:
      r = x == y ? g * half : x < y ? (T)0 : g;
      break;
    case NN_BIN_MAX * 2 + 1:
      r = x == y ? g * half : x > y ? (T)0 : g;
      break;
    case NN_BIN_MIN * 2:
      r = x == y ? g * half : x > y ? (T)0 : g;
      break;
    case NN_BIN_MIN * 2 + 1:
      r = x == y ? g * half : x < y ? (T)0 : g;
      break;
    }
    o[off[0]] = r;
  }
};

static int cuda_binary_backward(nn_tensor *const *out, nn_tensor *const *in,
                                const nn_op_params *p) {
  nn_tensor *ops[4] = {out[0], in[0], in[1], in[2]};
  int sel = (int)(p->i[0] * 2 + p->i[1]);
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<4>("binary_backward", ops,
                     binb_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]),
                                    cu_ptr<float>(in[1]), cu_ptr<float>(in[2]), sel});
  return cu_map<4>("binary_backward", ops,
                   binb_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                                   cu_ptr<double>(in[1]), cu_ptr<double>(in[2]), sel});
}

/* ---------------------------------------------------------------- compare
 * out (0/1 in out's float dtype) = a cmp b, or a cmp v; a scalar compares in the input's type
 * for floats and in double for int64 (the CPU's TS). */

template <class T> static __device__ __forceinline__ bool cmp_apply(int code, T x, T y) {
  switch (code) {
  case NN_CMP_EQ:
    return x == y;
  case NN_CMP_NE:
    return x != y;
  case NN_CMP_GT:
    return x > y;
  case NN_CMP_GE:
    return x >= y;
  case NN_CMP_LT:
    return x < y;
  case NN_CMP_LE:
    return x <= y;
  }
  return false;
}

template <class TO, class TI> struct cmp_fn {
  TO *o;
  const TI *a, *b;
  int code;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = (TO)cmp_apply<TI>(code, a[off[1]], b[off[2]]);
  }
};

template <class TO, class TI, class TS> struct cmps_fn {
  TO *o;
  const TI *a;
  int code;
  TS v;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = (TO)cmp_apply<TS>(code, (TS)a[off[1]], v);
  }
};

template <class TO, class TI, class TS>
static int compare_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  int code = (int)p->i[0];
  if (p->i[1]) {
    nn_tensor *ops[2] = {out[0], in[0]};
    return cu_map<2>("compare", ops,
                     cmps_fn<TO, TI, TS>{cu_ptr<TO>(out[0]), cu_ptr<TI>(in[0]), code, (TS)p->f[0]});
  }
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  return cu_map<3>("compare", ops,
                   cmp_fn<TO, TI>{cu_ptr<TO>(out[0]), cu_ptr<TI>(in[0]), cu_ptr<TI>(in[1]), code});
}

template <class TO>
static int compare_to(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  switch (in[0]->dtype) {
  case NN_DTYPE_F32:
    return compare_run<TO, float, float>(out, in, p);
  case NN_DTYPE_F64:
    return compare_run<TO, double, double>(out, in, p);
  case NN_DTYPE_I64:
    return compare_run<TO, int64_t, double>(out, in, p);
  }
  return NN_OK;
}

static int cuda_compare(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  return out[0]->dtype == NN_DTYPE_F64 ? compare_to<double>(out, in, p)
                                       : compare_to<float>(out, in, p);
}

/* ---------------------------------------------------------------- where, masked_fill */

template <class T, class TC> struct where_fn {
  T *o;
  const TC *k;
  const T *a, *b;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = k[off[1]] != 0 ? a[off[2]] : b[off[3]];
  }
};

template <class T> static int where_run(nn_tensor *const *out, nn_tensor *const *in) {
  nn_tensor *ops[4] = {out[0], in[0], in[1], in[2]};
  T *o = cu_ptr<T>(out[0]);
  const T *a = cu_ptr<T>(in[1]), *b = cu_ptr<T>(in[2]);
  switch (in[0]->dtype) {
  case NN_DTYPE_F32:
    return cu_map<4>("where", ops, where_fn<T, float>{o, cu_ptr<float>(in[0]), a, b});
  case NN_DTYPE_F64:
    return cu_map<4>("where", ops, where_fn<T, double>{o, cu_ptr<double>(in[0]), a, b});
  case NN_DTYPE_I64:
    return cu_map<4>("where", ops, where_fn<T, int64_t>{o, cu_ptr<int64_t>(in[0]), a, b});
  }
  return NN_OK;
}

static int cuda_where(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  return out[0]->dtype == NN_DTYPE_F64 ? where_run<double>(out, in) : where_run<float>(out, in);
}

template <class T, class TC> struct mf_fn {
  T *o;
  const T *a;
  const TC *k;
  int inv;
  T v;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = (k[off[2]] != 0) != (inv != 0) ? v : a[off[1]];
  }
};

template <class T>
static int mf_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  T *o = cu_ptr<T>(out[0]);
  const T *a = cu_ptr<T>(in[0]);
  int inv = p->i[1] != 0;
  T v = (T)p->f[0];
  switch (in[1]->dtype) {
  case NN_DTYPE_F32:
    return cu_map<3>("masked_fill", ops, mf_fn<T, float>{o, a, cu_ptr<float>(in[1]), inv, v});
  case NN_DTYPE_F64:
    return cu_map<3>("masked_fill", ops, mf_fn<T, double>{o, a, cu_ptr<double>(in[1]), inv, v});
  case NN_DTYPE_I64:
    return cu_map<3>("masked_fill", ops, mf_fn<T, int64_t>{o, a, cu_ptr<int64_t>(in[1]), inv, v});
  }
  return NN_OK;
}

static int cuda_masked_fill(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  return out[0]->dtype == NN_DTYPE_F64 ? mf_run<double>(out, in, p) : mf_run<float>(out, in, p);
}

/* ---------------------------------------------------------------- mul_scaled (may be in place) */

template <class T> struct ms_fn {
  T *o;
  const T *a, *b;
  T k;
  __device__ void operator()(const int64_t *off) const { o[off[0]] = a[off[1]] * b[off[2]] * k; }
};

static int cuda_mul_scaled(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  if (out[0]->dtype == NN_DTYPE_F32)
    return cu_map<3>("mul_scaled", ops,
                     ms_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), cu_ptr<float>(in[1]),
                                  (float)p->f[0]});
  return cu_map<3>(
      "mul_scaled", ops,
      ms_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), cu_ptr<double>(in[1]), p->f[0]});
}

void nn_cuda_register_elementwise(nn_backend_i *be) {
  be->kernels[NN_OP_BINARY] = cuda_binary;
  be->kernels[NN_OP_SCALAR] = cuda_scalar;
  be->kernels[NN_OP_UNARY] = cuda_unary;
  be->kernels[NN_OP_UNARY_BACKWARD] = cuda_unary_backward;
  be->kernels[NN_OP_BINARY_BACKWARD] = cuda_binary_backward;
  be->kernels[NN_OP_COMPARE] = cuda_compare;
  be->kernels[NN_OP_WHERE] = cuda_where;
  be->kernels[NN_OP_MASKED_FILL] = cuda_masked_fill;
  be->kernels[NN_OP_MUL_SCALED] = cuda_mul_scaled;
}
