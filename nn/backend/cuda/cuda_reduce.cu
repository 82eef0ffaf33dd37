/* nn/backend/cuda/cuda_reduce.cu: the ops of nn/ops_reduce.def on the GPU: max/min, var,
 * softmax, the losses and sorting (references: cpu_reduce.c). N rows, C classes, L the length of
 * the reduced dim; a lane is one 1-D slice along the reduced dim.
 *
 * Row kernels give each lane to a group of threads: a warp when rows are short or many, a
 * block of 256 when a few long rows would leave the GPU idle. A group accumulates in double in a
 * fixed order (strided partial sums, then a butterfly), so results are the same run to run; they
 * differ from the CPU's serial order only in the last bits of the double sums. Max/argmax keep
 * the CPU's rule exactly (first index on ties, the first NaN wins). Sorting is a bitonic sort of
 * tiles in shared memory followed by merge passes that place every element by binary search;
 * the order (value, NaN largest, then index) is strict and total, so the result is the CPU's
 * stable sort bit for bit. Loss kernels check labels on the device and report the first bad row
 * with the CPU's message (which waits for the stream: a loss is read by the host anyway). */
#include "cuda.h"

#include <math.h>

#define ROWK 6

/* ---------------------------------------------------------------- lanes */

typedef struct {
  int ld; /* lane dims (all dims but the reduced one) */
  int64_t lanes;
  int64_t lshape[NN_MAX_DIMS];
  int64_t lst[ROWK][NN_MAX_DIMS]; /* per operand: strides of the lane dims */
  int64_t rs[ROWK], rl[ROWK];     /* per operand: stride and length along the reduced dim */
} rgeo;

/* ops may hold NULLs; all others share ndim and the shape off dim. */
static rgeo rgeo_make(int n_ops, nn_tensor *const *ops, int dim) {
  rgeo g;
  memset(&g, 0, sizeof g);
  const nn_tensor *t0 = NULL;
  for (int k = 0; k < n_ops; k++)
    if (ops[k] && !t0) t0 = ops[k];
  g.lanes = 1;
  for (int d = 0; d < t0->ndim; d++) {
    if (d == dim) continue;
    g.lshape[g.ld] = t0->shape[d];
    for (int k = 0; k < n_ops; k++) g.lst[k][g.ld] = ops[k] ? ops[k]->stride[d] : 0;
    g.lanes *= t0->shape[d];
    g.ld++;
  }
  for (int k = 0; k < n_ops; k++) {
    g.rs[k] = ops[k] && ops[k]->ndim ? ops[k]->stride[dim] : 0;
    g.rl[k] = ops[k] && ops[k]->ndim ? ops[k]->shape[dim] : 1;
  }
  return g;
}

static __device__ __forceinline__ int64_t lane_off(const rgeo &g, int k, int64_t lane) {
  return cu_flat_offset(lane, g.ld, g.lshape, g.lst[k]);
}

/* A group of G threads per lane: G = 32 (a warp; 8 lanes per block) or 256 (a block). */
template <int G> struct grp {
  static __device__ __forceinline__ int tid() { return G == 32 ? (threadIdx.x & 31) : threadIdx.x; }
  static __device__ __forceinline__ int64_t first() {
    return G == 32 ? blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5) : blockIdx.x;
  }
  static __device__ __forceinline__ int64_t step() {
    return G == 32 ? (int64_t)gridDim.x * (blockDim.x >> 5) : gridDim.x;
  }
  static __device__ __forceinline__ double sum(double v, double *sh) {
    return G == 32 ? cu_warp_sum(v) : cu_block_sum(v, sh);
  }
};

template <class T> static __device__ __forceinline__ T tmax(T a, T b) { return b > a ? b : a; }

/* Max over a group (any order: NaN makes the caller's results NaN either way). */
template <int G, class T> static __device__ __forceinline__ T grp_max(T v, T *shm) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = tmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (G == 32) return v;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shm[w] = v;
  __syncthreads();
  T t = shm[0];
  for (int i = 1; i < (int)(blockDim.x >> 5); i++) t = tmax(t, shm[i]);
  return t;
}

static int lanes_grid(int64_t lanes, int64_t L, int *G) {
  *G = (L >= 2048 && lanes < 4 * cu_sm_count()) ? 256 : 32;
  int64_t per = *G == 32 ? CU_THREADS / 32 : 1, b = (lanes + per - 1) / per;
  int64_t cap = (int64_t)cu_sm_count() * 32;
  return (int)(b < 1 ? 1 : b > cap ? cap : b);
}

/* Launches KERNEL<G, ...> with the lane grid for (lanes, L). */
#define LANES_LAUNCH(lanes, L, KERNEL, ...)                                                        \
  do {                                                                                             \
    int G_;                                                                                        \
    int b_ = lanes_grid((lanes), (L), &G_);                                                        \
    if (G_ == 32)                                                                                  \
      KERNEL<32><<<b_, CU_THREADS, 0, cu_stream()>>>(__VA_ARGS__);                                 \
    else                                                                                           \
      KERNEL<256><<<b_, 256, 0, cu_stream()>>>(__VA_ARGS__);                                       \
  } while (0)

/* ---------------------------------------------------------------- max / min */

template <class T> static __device__ __forceinline__ bool is_nan(T v) { return v != v; }
template <> __device__ __forceinline__ bool is_nan<int64_t>(int64_t v) {
  (void)v;
  return false;
}

/* (v, i) beats (w, j) for max (min if mn): the first NaN wins, then the larger value, then the
 * lower index: the CPU's serial rule as a total order. */
template <class T>
static __device__ __forceinline__ bool mx_better(T v, int64_t i, T w, int64_t j, int mn) {
  bool a = is_nan(v), b = is_nan(w);
  if (a || b) return a && b ? i < j : a;
  if (mn ? v < w : v > w) return true;
  if (mn ? w < v : w > v) return false;
  return i < j;
}

template <int G, class T>
static __global__ void max_kernel(T *ov, int64_t *oi, const T *x, rgeo g, int mn) {
  __shared__ T shv[32];
  __shared__ int64_t shi[32];
  int64_t L = g.rl[2];
  for (int64_t r = grp<G>::first(); r < g.lanes; r += grp<G>::step()) {
    const T *xr = x + lane_off(g, 2, r);
    T bv = 0;
    int64_t bi = -1;
    for (int64_t j = grp<G>::tid(); j < L; j += G) {
      T v = xr[j * g.rs[2]];
      if (bi < 0 || mx_better(v, j, bv, bi, mn)) bv = v, bi = j;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      T v = __shfl_xor_sync(0xffffffffu, bv, o);
      int64_t i = __shfl_xor_sync(0xffffffffu, bi, o);
      if (i >= 0 && (bi < 0 || mx_better(v, i, bv, bi, mn))) bv = v, bi = i;
    }
    if (G > 32) {
      int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
      __syncthreads();
      if (lane == 0) shv[w] = bv, shi[w] = bi;
      __syncthreads();
      bv = shv[0], bi = shi[0];
      for (int k = 1; k < G / 32; k++)
        if (shi[k] >= 0 && (bi < 0 || mx_better(shv[k], shi[k], bv, bi, mn)))
          bv = shv[k], bi = shi[k];
    }
    if (grp<G>::tid() == 0) {
      ov[lane_off(g, 0, r)] = bv;
      oi[lane_off(g, 1, r)] = bi < 0 ? 0 : bi;
    }
  }
}

template <class T>
static int max_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  rgeo g = rgeo_make(3, ops, (int)p->i[0]);
  if (g.lanes == 0) return NN_OK;
  LANES_LAUNCH(g.lanes, g.rl[2], max_kernel, cu_ptr<T>(out[0]), cu_ptr<int64_t>(out[1]),
               cu_ptr<T>(in[0]), g, (int)p->i[1]);
  return CU_LAUNCHED("max");
}

static int cuda_max(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  switch (in[0]->dtype) {
  case NN_DTYPE_F32:
    return max_run<float>(out, in, p);
  case NN_DTYPE_F64:
    return max_run<double>(out, in, p);
  case NN_DTYPE_I64:
    return max_run<int64_t>(out, in, p);
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- select_backward
 * dx (L) = 0, then dx[idx[j]] += dout[j] in ascending j: one thread per lane, the CPU's order. */

template <class T>
static __global__ void selbw_kernel(T *dx, const int64_t *idx, const T *g, rgeo geo) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < geo.lanes;
       r += (int64_t)gridDim.x * blockDim.x) {
    T *d = dx + lane_off(geo, 0, r);
    const int64_t *ix = idx + lane_off(geo, 1, r);
    const T *gr = g + lane_off(geo, 2, r);
    for (int64_t j = 0; j < geo.rl[0]; j++) d[j * geo.rs[0]] = 0;
    for (int64_t j = 0; j < geo.rl[1]; j++) d[ix[j * geo.rs[1]] * geo.rs[0]] += gr[j * geo.rs[2]];
  }
}

static int cuda_select_backward(nn_tensor *const *out, nn_tensor *const *in,
                                const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  rgeo g = rgeo_make(3, ops, (int)p->i[0]);
  if (g.lanes == 0) return NN_OK;
  unsigned b = cu_blocks(g.lanes, CU_THREADS);
  if (out[0]->dtype == NN_DTYPE_F32)
    selbw_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<int64_t>(in[0]), cu_ptr<float>(in[1]), g);
  else
    selbw_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<int64_t>(in[0]), cu_ptr<double>(in[1]), g);
  return CU_LAUNCHED("select_backward");
}

/* ---------------------------------------------------------------- var */

template <int G, class T>
static __global__ void var_kernel(T *ov, T *om, const T *x, rgeo g, int64_t corr) {
  __shared__ double sh[32];
  int64_t L = g.rl[2];
  for (int64_t r = grp<G>::first(); r < g.lanes; r += grp<G>::step()) {
    const T *xr = x + lane_off(g, 2, r);
    double s = 0;
    for (int64_t j = grp<G>::tid(); j < L; j += G) s += (double)xr[j * g.rs[2]];
    double mean = grp<G>::sum(s, sh) / (double)L, q = 0;
    for (int64_t j = grp<G>::tid(); j < L; j += G) {
      double d = xr[j * g.rs[2]] - mean;
      q += d * d;
    }
    q = grp<G>::sum(q, sh);
    if (grp<G>::tid() == 0) {
      double div = (double)L - (double)corr;
      ov[lane_off(g, 0, r)] = (T)(q / (div > 0 ? div : 0));
      om[lane_off(g, 1, r)] = (T)mean;
    }
  }
}

static int cuda_var(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  rgeo g = rgeo_make(3, ops, (int)p->i[0]);
  if (g.lanes == 0) return NN_OK;
  if (in[0]->dtype == NN_DTYPE_F32)
    LANES_LAUNCH(g.lanes, g.rl[2], var_kernel, cu_ptr<float>(out[0]), cu_ptr<float>(out[1]),
                 cu_ptr<float>(in[0]), g, p->i[1]);
  else
    LANES_LAUNCH(g.lanes, g.rl[2], var_kernel, cu_ptr<double>(out[0]), cu_ptr<double>(out[1]),
                 cu_ptr<double>(in[0]), g, p->i[1]);
  return CU_LAUNCHED("var");
}

/* dx = (x - mean) * (T)(dout * f): ops out0 dx, in0 x, in1 mean, in2 dout (keepdim) */
template <class T> struct varbw_fn {
  T *dx;
  const T *x, *m, *g;
  double f;
  __device__ void operator()(const int64_t *off) const {
    T gs = (T)(g[off[3]] * f);
    dx[off[0]] = (x[off[1]] - m[off[2]]) * gs;
  }
};

static int expand_like(nn_tensor **o, nn_tensor *t, const nn_tensor *like) {
  return nn_expand(o, t, like->ndim, like->shape);
}

static int cuda_var_backward(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *m = NULL, *g = NULL;
  int rc = expand_like(&m, in[1], out[0]);
  if (!rc) rc = expand_like(&g, in[2], out[0]);
  if (!rc) {
    nn_tensor *ops[4] = {out[0], in[0], m, g};
    if (out[0]->dtype == NN_DTYPE_F32)
      rc = cu_map<4>("var_backward", ops,
                     varbw_fn<float>{cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), cu_ptr<float>(m),
                                     cu_ptr<float>(g), p->f[0]});
    else
      rc = cu_map<4>("var_backward", ops,
                     varbw_fn<double>{cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                                      cu_ptr<double>(m), cu_ptr<double>(g), p->f[0]});
  }
  nn_tensor_free(m);
  nn_tensor_free(g);
  return rc;
}

/* ---------------------------------------------------------------- softmax */

static __device__ __forceinline__ float d_exp(float x) { return expf(x); }
static __device__ __forceinline__ double d_exp(double x) { return exp(x); }

/* softmax: y = exp(x - m) * (T)(1 / sum); log_softmax: y = (x - m) - (T)log(sum) */
template <int G, class T> static __global__ void softmax_kernel(T *y, const T *x, rgeo g, int lg) {
  __shared__ double sh[32];
  __shared__ T shm[32];
  int64_t L = g.rl[1];
  for (int64_t r = grp<G>::first(); r < g.lanes; r += grp<G>::step()) {
    const T *xr = x + lane_off(g, 1, r);
    T *yr = y + lane_off(g, 0, r);
    T m = (T)-INFINITY;
    for (int64_t j = grp<G>::tid(); j < L; j += G) m = tmax(m, xr[j * g.rs[1]]);
    m = grp_max<G, T>(m, shm);
    double s = 0;
    for (int64_t j = grp<G>::tid(); j < L; j += G) s += (double)d_exp(xr[j * g.rs[1]] - m);
    s = grp<G>::sum(s, sh);
    if (!lg) {
      T inv = (T)(1.0 / s);
      for (int64_t j = grp<G>::tid(); j < L; j += G)
        yr[j * g.rs[0]] = d_exp(xr[j * g.rs[1]] - m) * inv;
    } else {
      T ls = (T)log(s);
      for (int64_t j = grp<G>::tid(); j < L; j += G) yr[j * g.rs[0]] = (xr[j * g.rs[1]] - m) - ls;
    }
  }
}

static int cuda_softmax(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[2] = {out[0], in[0]};
  rgeo g = rgeo_make(2, ops, (int)p->i[0]);
  if (g.lanes == 0 || g.rl[1] == 0) return NN_OK;
  if (in[0]->dtype == NN_DTYPE_F32)
    LANES_LAUNCH(g.lanes, g.rl[1], softmax_kernel, cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), g,
                 (int)p->i[1]);
  else
    LANES_LAUNCH(g.lanes, g.rl[1], softmax_kernel, cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), g,
                 (int)p->i[1]);
  return CU_LAUNCHED("softmax");
}

/* softmax: dx = y (dy - (T)<dy, y>); log: dx = dy - exp(y) (T)sum(dy) */
template <int G, class T>
static __global__ void smbw_kernel(T *dx, const T *y, const T *dy, rgeo g, int lg) {
  __shared__ double sh[32];
  int64_t L = g.rl[0];
  for (int64_t r = grp<G>::first(); r < g.lanes; r += grp<G>::step()) {
    T *d = dx + lane_off(g, 0, r);
    const T *yr = y + lane_off(g, 1, r), *gr = dy + lane_off(g, 2, r);
    double s = 0;
    for (int64_t j = grp<G>::tid(); j < L; j += G)
      s += lg ? (double)gr[j * g.rs[2]] : (double)gr[j * g.rs[2]] * yr[j * g.rs[1]];
    T t = (T)grp<G>::sum(s, sh);
    for (int64_t j = grp<G>::tid(); j < L; j += G) {
      T yv = yr[j * g.rs[1]], gv = gr[j * g.rs[2]];
      d[j * g.rs[0]] = lg ? gv - d_exp(yv) * t : yv * (gv - t);
    }
  }
}

static int cuda_softmax_backward(nn_tensor *const *out, nn_tensor *const *in,
                                 const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], in[0], in[1]};
  rgeo g = rgeo_make(3, ops, (int)p->i[0]);
  if (g.lanes == 0 || g.rl[0] == 0) return NN_OK;
  if (out[0]->dtype == NN_DTYPE_F32)
    LANES_LAUNCH(g.lanes, g.rl[0], smbw_kernel, cu_ptr<float>(out[0]), cu_ptr<float>(in[0]),
                 cu_ptr<float>(in[1]), g, (int)p->i[1]);
  else
    LANES_LAUNCH(g.lanes, g.rl[0], smbw_kernel, cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                 cu_ptr<double>(in[1]), g, (int)p->i[1]);
  return CU_LAUNCHED("softmax_backward");
}

/* ---------------------------------------------------------------- losses
 * Rows of (N, C) x with strides (xs0, xs1); labels, lse and dout are 1-D with their strides. */

typedef struct {
  int64_t N, C, xs0, xs1, ts0, ts1, ls, es, gs;
} lgeo;

static lgeo lgeo_make(const nn_tensor *x, const nn_tensor *t, const nn_tensor *lab,
                      const nn_tensor *lse, const nn_tensor *g) {
  lgeo q;
  q.N = x->shape[0];
  q.C = x->shape[1];
  q.xs0 = x->stride[0];
  q.xs1 = x->stride[1];
  q.ts0 = t ? t->stride[0] : 0;
  q.ts1 = t ? t->stride[1] : 0;
  q.ls = lab ? lab->stride[0] : 0;
  q.es = lse ? lse->stride[0] : 0;
  q.gs = g ? g->stride[0] : 0;
  return q;
}

/* bad: the lowest row whose label is outside [0, C) (atomicMin: order-independent) */
static __device__ __forceinline__ bool label_ok(int64_t l, int64_t C, int64_t n,
                                                unsigned long long *bad) {
  if ((uint64_t)l < (uint64_t)C) return true;
  atomicMin(bad, (unsigned long long)n);
  return false;
}

/* The first bad row (if any) as the CPU's NN_ERR_INDEX message. */
static int label_report(const char *name, void *bad_dev, const nn_tensor *labels, int64_t C) {
  int64_t bad;
  int rc = cu_read_i64(&bad, bad_dev, 1);
  if (rc || bad >= labels->shape[0] || bad < 0) return rc;
  int64_t v;
  rc = cu_read_i64(&v, cu_ptr<int64_t>(labels) + bad * labels->stride[0], 1);
  if (rc) return rc;
  return nn_seterr(NN_ERR_INDEX, "%s: label %lld at row %lld is out of range [0, %lld)", name,
                   (long long)v, (long long)bad, (long long)C);
}

static int bad_flag(nn_tensor **t, void **p) {
  int rc = cu_scratch(t, p, 8);
  if (!rc) rc = cu_check(cudaMemsetAsync(*p, 0xff, 8, cu_stream()), "loss");
  return rc;
}

/* out2 (0-dim) = sum of the rows (N,) in double, / N for MEAN: one block, fixed order. */
template <class T>
static __global__ void reduce_rows_kernel(T *r, const T *rows, int64_t N, int mean) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) s += (double)rows[n];
  s = cu_block_sum(s, sh);
  if (threadIdx.x == 0) *r = (T)(mean ? s / (double)N : s);
}

static int reduce_rows(nn_tensor *r, nn_tensor *rows, int red) {
  if (red == 2) return NN_OK;
  if (r->dtype == NN_DTYPE_F32)
    reduce_rows_kernel<float><<<1, 256, 0, cu_stream()>>>(cu_ptr<float>(r), cu_ptr<float>(rows),
                                                          rows->shape[0], red == 0);
  else
    reduce_rows_kernel<double><<<1, 256, 0, cu_stream()>>>(cu_ptr<double>(r), cu_ptr<double>(rows),
                                                           rows->shape[0], red == 0);
  return CU_LAUNCHED("loss reduction");
}

/* cross-entropy rows: lse = m + log(sum exp(x - m)); loss = lse - x[label] (hard labels) or
 * sum_j t_j (lse - x_j) (soft targets t) */
template <int G, class T>
static __global__ void ce_kernel(T *loss, double *lse, const T *x, const int64_t *lab, const T *t,
                                 lgeo q, unsigned long long *bad) {
  __shared__ double sh[32];
  __shared__ T shm[32];
  for (int64_t n = grp<G>::first(); n < q.N; n += grp<G>::step()) {
    const T *xr = x + n * q.xs0;
    T m = (T)-INFINITY;
    for (int64_t j = grp<G>::tid(); j < q.C; j += G) m = tmax(m, xr[j * q.xs1]);
    m = grp_max<G, T>(m, shm);
    double s = 0;
    for (int64_t j = grp<G>::tid(); j < q.C; j += G) s += (double)d_exp(xr[j * q.xs1] - m);
    s = grp<G>::sum(s, sh);
    double e = (double)m + log(s);
    if (t) {
      const T *tr = t + n * q.ts0;
      double a = 0;
      for (int64_t j = grp<G>::tid(); j < q.C; j += G) a += tr[j * q.ts1] * (e - xr[j * q.xs1]);
      a = grp<G>::sum(a, sh);
      if (grp<G>::tid() == 0) {
        lse[n] = e;
        loss[n] = (T)a;
      }
    } else if (grp<G>::tid() == 0) {
      int64_t l = lab[n * q.ls];
      lse[n] = e;
      loss[n] = label_ok(l, q.C, n, bad) ? (T)(e - (double)xr[l * q.xs1]) : (T)NAN;
    }
  }
}

template <class T>
static int ce_run(const char *name, nn_tensor *const *out, nn_tensor *const *in,
                  const nn_op_params *p, bool soft) {
  nn_tensor *x = in[0], *flag = NULL;
  void *bad = NULL;
  lgeo q = soft ? lgeo_make(x, in[1], NULL, NULL, NULL) : lgeo_make(x, NULL, in[1], NULL, NULL);
  int rc = soft ? NN_OK : bad_flag(&flag, &bad);
  if (!rc && q.N > 0) {
    LANES_LAUNCH(q.N, q.C, ce_kernel, cu_ptr<T>(out[0]), cu_ptr<double>(out[1]), cu_ptr<T>(x),
                 soft ? NULL : cu_ptr<int64_t>(in[1]), soft ? cu_ptr<T>(in[1]) : NULL, q,
                 (unsigned long long *)bad);
    rc = CU_LAUNCHED(name);
  }
  if (!rc && !soft) rc = label_report(name, bad, in[1], q.C);
  if (!rc) rc = reduce_rows(out[2], out[0], (int)p->i[0]);
  nn_tensor_free(flag);
  return rc;
}

static int cuda_cross_entropy(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  return in[0]->dtype == NN_DTYPE_F32 ? ce_run<float>("cross_entropy", out, in, p, false)
                                      : ce_run<double>("cross_entropy", out, in, p, false);
}

static int cuda_cross_entropy_soft(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  return in[0]->dtype == NN_DTYPE_F32 ? ce_run<float>("cross_entropy_soft", out, in, p, true)
                                      : ce_run<double>("cross_entropy_soft", out, in, p, true);
}

/* dx (N, C) contiguous = (exp(x - lse) - onehot(label)) * (T)(dout * f); lse split hi + lo in T */
template <class T>
static __global__ void cebw_kernel(T *dx, const T *x, const int64_t *lab, const double *lse,
                                   const T *g, lgeo q, double f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < q.N * q.C;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t n = i / q.C, c = i % q.C;
    double e = lse[n * q.es];
    T hi = (T)e, lo = (T)(e - hi), gs = (T)(g[n * q.gs] * f);
    T v = d_exp((x[n * q.xs0 + c * q.xs1] - hi) - lo) * gs;
    if (c == lab[n * q.ls]) v -= gs;
    dx[i] = v;
  }
}

static int cuda_cross_entropy_backward(nn_tensor *const *out, nn_tensor *const *in,
                                       const nn_op_params *p) {
  lgeo q = lgeo_make(in[0], NULL, in[1], in[2], in[3]);
  if (q.N * q.C == 0) return NN_OK;
  unsigned b = cu_blocks(q.N * q.C, CU_THREADS);
  if (out[0]->dtype == NN_DTYPE_F32)
    cebw_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), cu_ptr<int64_t>(in[1]), cu_ptr<double>(in[2]),
        cu_ptr<float>(in[3]), q, p->f[0]);
  else
    cebw_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), cu_ptr<int64_t>(in[1]),
        cu_ptr<double>(in[2]), cu_ptr<double>(in[3]), q, p->f[0]);
  return CU_LAUNCHED("cross_entropy_backward");
}

/* dx = (softmax(x) sum(t) - t) * gs with (T)sum(t) * gs first; dt = (T)(lse - x) * gs */
template <int G, class T>
static __global__ void cesbw_kernel(T *dx, T *dt, int64_t dxs0, int64_t dxs1, int64_t dts0,
                                    int64_t dts1, const T *x, const T *t, const double *lse,
                                    const T *g, lgeo q, double f) {
  __shared__ double sh[32];
  for (int64_t n = grp<G>::first(); n < q.N; n += grp<G>::step()) {
    const T *xr = x + n * q.xs0, *tr = t + n * q.ts0;
    double e = lse[n * q.es];
    T gs = (T)(g[n * q.gs] * f);
    if (dx) {
      double s = 0;
      for (int64_t j = grp<G>::tid(); j < q.C; j += G) s += (double)tr[j * q.ts1];
      T ts = (T)grp<G>::sum(s, sh) * gs;
      T hi = (T)e, lo = (T)(e - hi);
      for (int64_t j = grp<G>::tid(); j < q.C; j += G)
        dx[n * dxs0 + j * dxs1] = d_exp((xr[j * q.xs1] - hi) - lo) * ts - tr[j * q.ts1] * gs;
    }
    if (dt)
      for (int64_t j = grp<G>::tid(); j < q.C; j += G)
        dt[n * dts0 + j * dts1] = (T)(e - (double)xr[j * q.xs1]) * gs;
  }
}

static int cuda_cross_entropy_soft_backward(nn_tensor *const *out, nn_tensor *const *in,
                                            const nn_op_params *p) {
  int mask = (int)p->i[1];
  nn_tensor *dx = mask & 1 ? out[0] : NULL, *dt = mask & 2 ? out[mask & 1] : NULL;
  lgeo q = lgeo_make(in[0], in[1], NULL, in[2], in[3]);
  if (q.N == 0 || q.C == 0) return NN_OK;
  int64_t a0 = dx ? dx->stride[0] : 0, a1 = dx ? dx->stride[1] : 0;
  int64_t b0 = dt ? dt->stride[0] : 0, b1 = dt ? dt->stride[1] : 0;
  if (in[0]->dtype == NN_DTYPE_F32)
    LANES_LAUNCH(q.N, q.C, cesbw_kernel, dx ? cu_ptr<float>(dx) : NULL,
                 dt ? cu_ptr<float>(dt) : NULL, a0, a1, b0, b1, cu_ptr<float>(in[0]),
                 cu_ptr<float>(in[1]), cu_ptr<double>(in[2]), cu_ptr<float>(in[3]), q, p->f[0]);
  else
    LANES_LAUNCH(q.N, q.C, cesbw_kernel, dx ? cu_ptr<double>(dx) : NULL,
                 dt ? cu_ptr<double>(dt) : NULL, a0, a1, b0, b1, cu_ptr<double>(in[0]),
                 cu_ptr<double>(in[1]), cu_ptr<double>(in[2]), cu_ptr<double>(in[3]), q, p->f[0]);
  return CU_LAUNCHED("cross_entropy_soft_backward");
}

/* nll: loss[n] = -logp[n, label[n]] */
template <class T>
static __global__ void nll_kernel(T *loss, const T *lp, const int64_t *lab, lgeo q,
                                  unsigned long long *bad) {
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < q.N;
       n += (int64_t)gridDim.x * blockDim.x) {
    int64_t l = lab[n * q.ls];
    loss[n] = label_ok(l, q.C, n, bad) ? -lp[n * q.xs0 + l * q.xs1] : (T)NAN;
  }
}

static int cuda_nll_loss(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  lgeo q = lgeo_make(in[0], NULL, in[1], NULL, NULL);
  nn_tensor *flag = NULL;
  void *bad = NULL;
  int rc = bad_flag(&flag, &bad);
  if (!rc && q.N > 0) {
    unsigned b = cu_blocks(q.N, CU_THREADS);
    if (in[0]->dtype == NN_DTYPE_F32)
      nll_kernel<float>
          <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<float>(out[0]), cu_ptr<float>(in[0]),
                                              cu_ptr<int64_t>(in[1]), q, (unsigned long long *)bad);
    else
      nll_kernel<double>
          <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(out[0]), cu_ptr<double>(in[0]),
                                              cu_ptr<int64_t>(in[1]), q, (unsigned long long *)bad);
    rc = CU_LAUNCHED("nll_loss");
  }
  if (!rc) rc = label_report("nll_loss", bad, in[1], q.C);
  if (!rc) rc = reduce_rows(out[2], out[0], (int)p->i[0]);
  nn_tensor_free(flag);
  return rc;
}

/* d (N, C) contiguous = 0 except -dout[n] * f at (n, label[n]) */
template <class T>
static __global__ void nllbw_kernel(T *d, const int64_t *lab, const T *g, int64_t N, int64_t C,
                                    int64_t ls, int64_t gs, double f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * C;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t n = i / C, c = i % C;
    d[i] = c == lab[n * ls] ? (T)(-g[n * gs] * f) : (T)0;
  }
}

static int cuda_nll_loss_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  nn_tensor *d = out[0];
  int64_t N = d->shape[0], C = d->shape[1];
  if (N * C == 0) return NN_OK;
  unsigned b = cu_blocks(N * C, CU_THREADS);
  if (d->dtype == NN_DTYPE_F32)
    nllbw_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(d), cu_ptr<int64_t>(in[0]), cu_ptr<float>(in[1]), N, C, in[0]->stride[0],
        in[1]->stride[0], p->f[0]);
  else
    nllbw_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(d), cu_ptr<int64_t>(in[0]), cu_ptr<double>(in[1]), N, C, in[0]->stride[0],
        in[1]->stride[0], p->f[0]);
  return CU_LAUNCHED("nll_loss_backward");
}

/* ---------------------------------------------------------------- mse */

template <class T> struct mse_sq_fn {
  T *o;
  const T *a, *b;
  __device__ void operator()(const int64_t *off) const {
    T d = a[off[1]] - b[off[2]];
    o[off[0]] = d * d;
  }
};

/* Stage 1: block k sums the elements k, k + P, k + 2P, ... (P partials, fixed by n): the same
 * bits for any device. Stage 2 sums the partials in one block. */
#define MSE_PARTS 1024
template <class T>
static __global__ void mse_part_kernel(double *part, const T *a, const T *b, cu_geo<2> g,
                                       int64_t P) {
  __shared__ double sh[32];
  for (int64_t k = blockIdx.x; k < P; k += gridDim.x) {
    double s = 0;
    for (int64_t i = k + threadIdx.x * P; i < g.n; i += (int64_t)blockDim.x * P) {
      int64_t off[2];
      cu_offsets<2>(g, i, off);
      double d = (double)a[off[0]] - b[off[1]];
      s += d * d;
    }
    s = cu_block_sum(s, sh);
    if (threadIdx.x == 0) part[k] = s;
  }
}

template <class T>
static __global__ void mse_final_kernel(T *o, const double *part, int64_t P, int64_t n, int mean) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t k = threadIdx.x; k < P; k += blockDim.x) s += part[k];
  s = cu_block_sum(s, sh);
  if (threadIdx.x == 0) *o = (T)(mean ? s / (double)n : s);
}

template <class T>
static int mse_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *a = in[0], *b = in[1];
  if (p->i[0] == 2) {
    nn_tensor *ops[3] = {out[0], a, b};
    return cu_map<3>("mse_loss", ops, mse_sq_fn<T>{cu_ptr<T>(out[0]), cu_ptr<T>(a), cu_ptr<T>(b)});
  }
  nn_tensor *ops[2] = {a, b}, *scr = NULL;
  cu_geo<2> g = cu_geo_make<2>(ops);
  int64_t P = (g.n + 4095) / 4096;
  P = P < 1 ? 1 : P > MSE_PARTS ? MSE_PARTS : P;
  void *part = NULL;
  int rc = cu_scratch(&scr, &part, (size_t)P * 8);
  if (rc) return rc;
  mse_part_kernel<T>
      <<<(unsigned)P, 256, 0, cu_stream()>>>((double *)part, cu_ptr<T>(a), cu_ptr<T>(b), g, P);
  mse_final_kernel<T>
      <<<1, 256, 0, cu_stream()>>>(cu_ptr<T>(out[0]), (const double *)part, P, g.n, p->i[0] == 0);
  rc = CU_LAUNCHED("mse_loss");
  nn_tensor_free(scr);
  return rc;
}

static int cuda_mse_loss(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  return in[0]->dtype == NN_DTYPE_F32 ? mse_run<float>(out, in, p) : mse_run<double>(out, in, p);
}

template <class T> struct mse_bw_fn {
  T *o;
  const T *a, *b, *g;
  T f;
  __device__ void operator()(const int64_t *off) const {
    o[off[0]] = (a[off[1]] - b[off[2]]) * g[off[3]] * f;
  }
};

static int cuda_mse_loss_backward(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  int mask = (int)p->i[1], k = 0, rc = NN_OK;
  for (int side = 0; side < 2 && !rc; side++) {
    if (!(mask & (1 << side))) continue;
    double f = side ? -p->f[0] : p->f[0];
    nn_tensor *o = out[k++], *ops[4] = {o, in[0], in[1], in[2]};
    if (o->dtype == NN_DTYPE_F32)
      rc = cu_map<4>("mse_loss_backward", ops,
                     mse_bw_fn<float>{cu_ptr<float>(o), cu_ptr<float>(in[0]), cu_ptr<float>(in[1]),
                                      cu_ptr<float>(in[2]), (float)f});
    else
      rc = cu_map<4>("mse_loss_backward", ops,
                     mse_bw_fn<double>{cu_ptr<double>(o), cu_ptr<double>(in[0]),
                                       cu_ptr<double>(in[1]), cu_ptr<double>(in[2]), f});
  }
  return rc;
}

/* ---------------------------------------------------------------- sort / topk */

template <class T> struct spair {
  T v;
  int64_t i; /* position in the row; -1 marks tile padding, which sorts after everything */
};

/* The CPU's strict total order: NaN largest, then value, then index (stable). */
template <class T>
static __device__ __forceinline__ bool before(const spair<T> &a, const spair<T> &b, int desc) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  bool an = is_nan(a.v), bn = is_nan(b.v);
  if (an != bn) return desc ? an : bn;
  if (!an) {
    if (a.v < b.v) return !desc;
    if (b.v < a.v) return desc;
  }
  return a.i < b.i;
}

template <class T>
static __global__ void sort_pack_kernel(spair<T> *a, const T *x, rgeo g, int64_t L) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < g.lanes * L;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / L, j = i % L;
    a[i].v = x[lane_off(g, 2, r) + j * g.rs[2]];
    a[i].i = j;
  }
}

/* One block sorts one tile of TILE (a power of two, = blockDim.x) elements of one lane. */
template <class T>
static __global__ void sort_tile_kernel(spair<T> *a, int64_t L, int64_t tiles, int desc) {
  extern __shared__ __align__(16) unsigned char smem[];
  spair<T> *s = (spair<T> *)smem;
  int TILE = blockDim.x, t = threadIdx.x;
  for (int64_t b = blockIdx.x; b < tiles; b += gridDim.x) {
    int64_t per = (L + TILE - 1) / TILE, r = b / per, j0 = (b % per) * TILE;
    spair<T> *row = a + r * L;
    if (j0 + t < L)
      s[t] = row[j0 + t];
    else
      s[t].i = -1;
    __syncthreads();
    for (int k = 2; k <= TILE; k <<= 1)
      for (int j = k >> 1; j > 0; j >>= 1) {
        int ixj = t ^ j;
        if (ixj > t) {
          bool up = (t & k) == 0;
          spair<T> p = s[t], q = s[ixj];
          if (up ? before(q, p, desc) : before(p, q, desc)) {
            s[t] = q;
            s[ixj] = p;
          }
        }
        __syncthreads();
      }
    if (j0 + t < L) row[j0 + t] = s[t];
    __syncthreads();
  }
}

/* One merge pass of sorted runs of width w: every element moves to (its rank in its run) + (the
 * number of elements of the partner run that come before it). */
template <class T>
static __global__ void sort_merge_kernel(spair<T> *dst, const spair<T> *src, int64_t lanes,
                                         int64_t L, int64_t w, int desc) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < lanes * L;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / L, j = i % L, run = j / w, start = run * w;
    const spair<T> *row = src + r * L;
    spair<T> x = row[j];
    int64_t p0, p1, base;
    if (run % 2 == 0) {
      p0 = start + w;
      p1 = start + 2 * w < L ? start + 2 * w : L;
      base = start;
    } else {
      p0 = start - w;
      p1 = start;
      base = start - w;
    }
    int64_t pos = j - start;
    if (p0 < L) {
      int64_t lo = p0, hi = p1; /* count of partner elements before x */
      while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (before(row[mid], x, desc))
          lo = mid + 1;
        else
          hi = mid;
      }
      pos += lo - p0;
    } else {
      base = start;
    }
    dst[r * L + base + pos] = x;
  }
}

template <class T>
static __global__ void sort_out_kernel(T *ov, int64_t *oi, const spair<T> *a, rgeo g, int64_t L,
                                       int64_t K) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < g.lanes * K;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / K, j = i % K;
    spair<T> e = a[r * L + j];
    ov[lane_off(g, 0, r) + j * g.rs[0]] = e.v;
    oi[lane_off(g, 1, r) + j * g.rs[1]] = e.i;
  }
}

template <class T>
static int sort_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *ops[3] = {out[0], out[1], in[0]};
  rgeo g = rgeo_make(3, ops, (int)p->i[0]);
  int64_t L = g.rl[2], K = p->i[1];
  int desc = (int)p->i[2];
  if (g.lanes == 0 || L == 0 || K == 0) return NN_OK;
  nn_tensor *s1 = NULL, *s2 = NULL;
  void *b1 = NULL, *b2 = NULL;
  size_t nb = (size_t)(g.lanes * L) * sizeof(spair<T>);
  int rc = cu_scratch(&s1, &b1, nb);
  if (!rc) rc = cu_scratch(&s2, &b2, nb);
  if (!rc) {
    spair<T> *a = (spair<T> *)b1, *b = (spair<T> *)b2;
    int64_t n = g.lanes * L;
    sort_pack_kernel<T>
        <<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(a, cu_ptr<T>(in[0]), g, L);
    int tile = 32;
    while (tile < L && tile < 1024) tile <<= 1;
    int64_t tiles = g.lanes * ((L + tile - 1) / tile);
    int64_t nblk = tiles < 65535 ? tiles : 65535;
    sort_tile_kernel<T>
        <<<(unsigned)nblk, tile, tile * sizeof(spair<T>), cu_stream()>>>(a, L, tiles, desc);
    for (int64_t w = tile; w < L; w *= 2) {
      sort_merge_kernel<T>
          <<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(b, a, g.lanes, L, w, desc);
      spair<T> *t = a;
      a = b;
      b = t;
    }
    sort_out_kernel<T><<<cu_blocks(g.lanes * K, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<T>(out[0]), cu_ptr<int64_t>(out[1]), a, g, L, K);
    rc = CU_LAUNCHED("sort");
  }
  nn_tensor_free(s1);
  nn_tensor_free(s2);
  return rc;
}

static int cuda_sort(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  switch (in[0]->dtype) {
  case NN_DTYPE_F32:
    return sort_run<float>(out, in, p);
  case NN_DTYPE_F64:
    return sort_run<double>(out, in, p);
  case NN_DTYPE_I64:
    return sort_run<int64_t>(out, in, p);
  }
  return NN_OK;
}

void nn_cuda_register_reduce(nn_backend_i *be) {
  be->kernels[NN_OP_MAX] = cuda_max;
  be->kernels[NN_OP_SELECT_BACKWARD] = cuda_select_backward;
  be->kernels[NN_OP_VAR] = cuda_var;
  be->kernels[NN_OP_VAR_BACKWARD] = cuda_var_backward;
  be->kernels[NN_OP_SOFTMAX] = cuda_softmax;
  be->kernels[NN_OP_SOFTMAX_BACKWARD] = cuda_softmax_backward;
  be->kernels[NN_OP_CROSS_ENTROPY] = cuda_cross_entropy;
  be->kernels[NN_OP_CROSS_ENTROPY_BACKWARD] = cuda_cross_entropy_backward;
  be->kernels[NN_OP_CROSS_ENTROPY_SOFT] = cuda_cross_entropy_soft;
  be->kernels[NN_OP_CROSS_ENTROPY_SOFT_BACKWARD] = cuda_cross_entropy_soft_backward;
  be->kernels[NN_OP_NLL_LOSS] = cuda_nll_loss;
  be->kernels[NN_OP_NLL_LOSS_BACKWARD] = cuda_nll_loss_backward;
  be->kernels[NN_OP_MSE_LOSS] = cuda_mse_loss;
  be->kernels[NN_OP_MSE_LOSS_BACKWARD] = cuda_mse_loss_backward;
  be->kernels[NN_OP_SORT] = cuda_sort;
}
