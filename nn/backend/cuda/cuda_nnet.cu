/* nn/backend/cuda/cuda_nnet.cu: convolution, pooling and normalisation on the GPU
 * (references: cpu_nnet.c). N batch, C channels, H, W input, O output channels, KH, KW kernel,
 * OH, OW output, G groups, S = H*W (batch norm), R rows and D features (layer norm).
 *
 * Convolution runs on cuDNN (forward and both backward passes; strided inputs are packed first).
 * TF32 follows nn_set_allow_tf32 (off: CUDNN_FMA_MATH, full float32 products); in deterministic
 * mode only algorithms that cuDNN reports deterministic are chosen. Algorithms come from cuDNN's
 * heuristics (no timing runs), cached per geometry. Without cuDNN at build time the convolution
 * kernels are wb's own direct loops (correct, deterministic, slow).
 *
 * Pooling and normalisation are wb's own kernels, because cuDNN's differ from the CPU's
 * contract: max pooling's argmax output with the CPU's rule (padding -inf; a later NaN in the
 * window takes over, as `v > best || isnan(v)` does), PyTorch's avg-pool divisor, batch norm's
 * outputs (invstd, the running variance's M/(M-1) factor). The backward kernels gather (each
 * input element sums the outputs whose window holds it, in the CPU's (oh, ow) order), so they
 * need no atomics and give the CPU's bits. Statistics accumulate in double. */
#include "cuda.h"

#include <math.h>
#include <pthread.h>
#ifdef WB_HAVE_CUDNN
#include <cudnn.h>
#endif

/* A contiguous copy of t on its device, or t retained when it is contiguous and 16-byte aligned
 * (a view at an odd offset is copied: cuDNN's vectorised kernels assume aligned tensors). */
static int packed(nn_tensor **out, nn_tensor *t) {
  *out = NULL;
  if (nn_tensor_is_contiguous(t) && !((uintptr_t)nn_tensor_data(t) & 15)) {
    *out = nn_tensor_retain(t);
    return NN_OK;
  }
  int rc = nn_tensor_empty(out, t->ndim, t->shape, t->dtype, t->storage->device);
  if (!rc) rc = nn_copy_(*out, t);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

typedef struct {
  int64_t N, C, H, W, O, KH, KW, OH, OW, G, sh, sw, ph, pw, dh, dw;
} conv_geom;

static conv_geom geom_of(const int64_t *xs, const int64_t *ws, const int64_t *os,
                         const nn_op_params *p) {
  conv_geom g;
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.O = ws[0], g.KH = ws[2], g.KW = ws[3], g.OH = os[2], g.OW = os[3];
  g.sh = p->i[0], g.sw = p->i[1], g.ph = p->i[2], g.pw = p->i[3], g.dh = p->i[4], g.dw = p->i[5];
  g.G = p->i[6];
  return g;
}

/* ---------------------------------------------------------------- bias: sums and adds */

/* db[o] = sum over n, oh, ow of dout[n, o, ., .] (any strides), in double; one block per o */
template <class T>
static __global__ void bias_sum_kernel(T *db, int64_t dbs, const T *d, int64_t N, int64_t O,
                                       int64_t OH, int64_t OW, int64_t s0, int64_t s1, int64_t s2,
                                       int64_t s3) {
  __shared__ double sh[32];
  int64_t L = OH * OW, M = N * L;
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      int64_t n = i / L, l = i % L;
      s += (double)d[n * s0 + o * s1 + (l / OW) * s2 + (l % OW) * s3];
    }
    s = cu_block_sum(s, sh);
    if (threadIdx.x == 0) db[o * dbs] = (T)s;
  }
}

static int bias_sum(nn_tensor *db, nn_tensor *d) {
  int64_t O = d->shape[1];
  if (O == 0) return NN_OK;
  unsigned b = (unsigned)(O < 65535 ? O : 65535);
  const int64_t *s = d->stride;
  if (db->dtype == NN_DTYPE_F32)
    bias_sum_kernel<float><<<b, 256, 0, cu_stream()>>>(
        cu_ptr<float>(db), db->stride[0], cu_ptr<float>(d), d->shape[0], O, d->shape[2],
        d->shape[3], s[0], s[1], s[2], s[3]);
  else
    bias_sum_kernel<double><<<b, 256, 0, cu_stream()>>>(
        cu_ptr<double>(db), db->stride[0], cu_ptr<double>(d), d->shape[0], O, d->shape[2],
        d->shape[3], s[0], s[1], s[2], s[3]);
  return CU_LAUNCHED("conv2d_backward_bias");
}

template <class T> struct addb_fn {
  T *o;
  const T *b;
  __device__ void operator()(const int64_t *off) const { o[off[0]] += b[off[1]]; }
};

/* out (N, O, OH, OW) += bias[o] */
static int bias_add(nn_tensor *o, nn_tensor *b) {
  nn_tensor *bv = nn_alias(b);
  if (!bv) return nn_seterr(NN_ERR_NOMEM, "conv2d: out of memory");
  int64_t bs = b->stride[0];
  bv->ndim = 4;
  for (int d = 0; d < 4; d++) bv->shape[d] = o->shape[d], bv->stride[d] = 0;
  bv->stride[1] = bs;
  nn_tensor *ops[2] = {o, bv};
  int rc = o->dtype == NN_DTYPE_F32
               ? cu_map<2>("conv2d", ops, addb_fn<float>{cu_ptr<float>(o), cu_ptr<float>(b)})
               : cu_map<2>("conv2d", ops, addb_fn<double>{cu_ptr<double>(o), cu_ptr<double>(b)});
  nn_tensor_free(bv);
  return rc;
}

static int cuda_conv2d_backward_bias(nn_tensor *const *out, nn_tensor *const *in,
                                     const nn_op_params *p) {
  (void)p;
  return bias_sum(out[0], in[0]);
}

#ifdef WB_HAVE_CUDNN
/* ---------------------------------------------------------------- convolution on cuDNN */

static cudnnHandle_t dnn;

static int dnn_check(cudnnStatus_t s, const char *op) {
  if (s == CUDNN_STATUS_SUCCESS) return NN_OK;
  return nn_seterr(s == CUDNN_STATUS_ALLOC_FAILED ? NN_ERR_NOMEM : NN_ERR_DEVICE,
                   "%s: cuDNN error %s", op, cudnnGetErrorString(s));
}

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER };

/* Descriptors of one call (contiguous NCHW tensors). */
typedef struct {
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t c;
  cudnnDataType_t dt;
  bool ok;
} conv_desc;

static void desc_free(conv_desc *d) {
  if (d->x) cudnnDestroyTensorDescriptor(d->x);
  if (d->y) cudnnDestroyTensorDescriptor(d->y);
  if (d->w) cudnnDestroyFilterDescriptor(d->w);
  if (d->c) cudnnDestroyConvolutionDescriptor(d->c);
}

static int desc_init(conv_desc *d, const conv_geom *g, nn_dtype dt, const char *op) {
  memset(d, 0, sizeof *d);
  if (!dnn) {
    int rc = dnn_check(cudnnCreate(&dnn), op);
    if (rc) return rc;
    cudnnSetStream(dnn, cu_stream());
  }
  d->dt = dt == NN_DTYPE_F32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
  int rc = dnn_check(cudnnCreateTensorDescriptor(&d->x), op);
  if (!rc) rc = dnn_check(cudnnCreateTensorDescriptor(&d->y), op);
  if (!rc) rc = dnn_check(cudnnCreateFilterDescriptor(&d->w), op);
  if (!rc) rc = dnn_check(cudnnCreateConvolutionDescriptor(&d->c), op);
  if (!rc)
    rc = dnn_check(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, d->dt, (int)g->N, (int)g->C,
                                              (int)g->H, (int)g->W),
                   op);
  if (!rc)
    rc = dnn_check(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, d->dt, (int)g->N, (int)g->O,
                                              (int)g->OH, (int)g->OW),
                   op);
  if (!rc)
    rc = dnn_check(cudnnSetFilter4dDescriptor(d->w, d->dt, CUDNN_TENSOR_NCHW, (int)g->O,
                                              (int)(g->C / g->G), (int)g->KH, (int)g->KW),
                   op);
  if (!rc)
    rc = dnn_check(cudnnSetConvolution2dDescriptor(d->c, (int)g->ph, (int)g->pw, (int)g->sh,
                                                   (int)g->sw, (int)g->dh, (int)g->dw,
                                                   CUDNN_CROSS_CORRELATION, d->dt),
                   op);
  if (!rc) rc = dnn_check(cudnnSetConvolutionGroupCount(d->c, (int)g->G), op);
  if (!rc) rc = dnn_check(cudnnSetConvolutionMathType(d->c, CUDNN_FMA_MATH), op);
  if (rc) desc_free(d);
  return rc;
}

/* Algorithm cache: geometry, dtype, kind and the two switches -> algorithm, math, workspace. */
typedef struct {
  conv_geom g;
  int kind, dt, det, tf32;
  int algo;
  cudnnMathType_t math;
  size_t ws;
} algo_entry;
#define ALGO_CACHE 64
static algo_entry algo_cache[ALGO_CACHE];
static int algo_n, algo_next;
static pthread_mutex_t algo_mu = PTHREAD_MUTEX_INITIALIZER;

/* A returned algorithm is usable when it ran the heuristics, is deterministic if asked, and,
 * for float32 with TF32 off, uses plain FMA math (PyTorch asserts the same); float64 has no
 * tensor-op choice. */
static bool algo_ok(cudnnStatus_t st, cudnnDeterminism_t det, cudnnMathType_t math, bool want_det,
                    bool fma_only) {
  if (st != CUDNN_STATUS_SUCCESS) return false;
  if (want_det && det != CUDNN_DETERMINISTIC) return false;
  if (fma_only && math != CUDNN_FMA_MATH) return false;
  return true;
}

static int algo_pick(conv_desc *d, const conv_geom *g, nn_dtype dt, int kind, int *algo, size_t *ws,
                     const char *op) {
  bool det = nn_get_deterministic(),
       tf32 = nn_get_allow_tf32() && cu_cc_major() >= 8 && dt == NN_DTYPE_F32;
  bool fma_only = dt == NN_DTYPE_F32 && !tf32;
  pthread_mutex_lock(&algo_mu);
  for (int i = 0; i < algo_n; i++) {
    algo_entry *e = &algo_cache[i];
    if (e->kind == kind && e->dt == (int)dt && e->det == det && e->tf32 == tf32 &&
        !memcmp(&e->g, g, sizeof *g)) {
      *algo = e->algo;
      *ws = e->ws;
      cudnnMathType_t m = e->math;
      pthread_mutex_unlock(&algo_mu);
      return dnn_check(cudnnSetConvolutionMathType(d->c, m), op);
    }
  }
  pthread_mutex_unlock(&algo_mu);
  if (tf32) cudnnSetConvolutionMathType(d->c, CUDNN_TENSOR_OP_MATH);
  int n = 0, found = -1;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t mem = 0;
  int rc = NN_OK;
  if (kind == CONV_FWD) {
    cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    rc = dnn_check(cudnnGetConvolutionForwardAlgorithm_v7(dnn, d->x, d->w, d->c, d->y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, r),
                   op);
    for (int i = 0; !rc && i < n && found < 0; i++)
      if (algo_ok(r[i].status, r[i].determinism, r[i].mathType, det, fma_only))
        found = r[i].algo, math = r[i].mathType, mem = r[i].memory;
    if (!rc && found < 0) {
      found = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM; /* deterministic, no workspace */
      math = CUDNN_FMA_MATH;
    }
  } else if (kind == CONV_BWD_DATA) {
    cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    rc = dnn_check(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                       dnn, d->w, d->y, d->c, d->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, r),
                   op);
    for (int i = 0; !rc && i < n && found < 0; i++)
      if (algo_ok(r[i].status, r[i].determinism, r[i].mathType, det, fma_only))
        found = r[i].algo, math = r[i].mathType, mem = r[i].memory;
    if (!rc && found < 0) {
      found = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1; /* deterministic */
      math = CUDNN_FMA_MATH;
    }
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    rc = dnn_check(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                       dnn, d->x, d->y, d->c, d->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, r),
                   op);
    for (int i = 0; !rc && i < n && found < 0; i++)
      if (algo_ok(r[i].status, r[i].determinism, r[i].mathType, det, fma_only))
        found = r[i].algo, math = r[i].mathType, mem = r[i].memory;
    if (!rc && found < 0) {
      found = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1; /* deterministic */
      math = CUDNN_FMA_MATH;
    }
  }
  if (rc) return rc;
  rc = dnn_check(cudnnSetConvolutionMathType(d->c, math), op);
  if (rc) return rc;
  /* the workspace of the chosen algorithm (the heuristics' estimate may be 0 for fallbacks) */
  size_t need = 0;
  cudnnStatus_t st;
  if (kind == CONV_FWD)
    st = cudnnGetConvolutionForwardWorkspaceSize(dnn, d->x, d->w, d->c, d->y,
                                                 (cudnnConvolutionFwdAlgo_t)found, &need);
  else if (kind == CONV_BWD_DATA)
    st = cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, d->w, d->y, d->c, d->x,
                                                      (cudnnConvolutionBwdDataAlgo_t)found, &need);
  else
    st = cudnnGetConvolutionBackwardFilterWorkspaceSize(
        dnn, d->x, d->y, d->c, d->w, (cudnnConvolutionBwdFilterAlgo_t)found, &need);
  if ((rc = dnn_check(st, op))) return rc;
  *algo = found;
  *ws = need > mem ? need : mem;
  pthread_mutex_lock(&algo_mu);
  algo_entry *e = &algo_cache[algo_n < ALGO_CACHE ? algo_n++ : (algo_next++ % ALGO_CACHE)];
  e->g = *g, e->kind = kind, e->dt = (int)dt, e->det = det, e->tf32 = tf32;
  e->algo = found, e->math = math, e->ws = *ws;
  pthread_mutex_unlock(&algo_mu);
  return NN_OK;
}

/* One convolution pass. fwd: y = conv(x, w); bwd data: x = conv^T(y, w); bwd filter: w = x (*) y.
 */
static int conv_run(int kind, const conv_geom *g, nn_dtype dt, void *x, void *w, void *y,
                    const char *op) {
  conv_desc d;
  int rc = desc_init(&d, g, dt, op);
  if (rc) return rc;
  int algo = 0;
  size_t wsz = 0;
  nn_tensor *ws = NULL;
  void *wp = NULL;
  rc = algo_pick(&d, g, dt, kind, &algo, &wsz, op);
  if (!rc && wsz) rc = cu_scratch(&ws, &wp, wsz);
  if (!rc) {
    float af = 1, bf = 0;
    double ad = 1, bd = 0;
    const void *al = dt == NN_DTYPE_F32 ? (const void *)&af : (const void *)&ad;
    const void *be = dt == NN_DTYPE_F32 ? (const void *)&bf : (const void *)&bd;
    if (kind == CONV_FWD)
      rc = dnn_check(cudnnConvolutionForward(dnn, al, d.x, x, d.w, w, d.c,
                                             (cudnnConvolutionFwdAlgo_t)algo, wp, wsz, be, d.y, y),
                     op);
    else if (kind == CONV_BWD_DATA)
      rc = dnn_check(cudnnConvolutionBackwardData(dnn, al, d.w, w, d.y, y, d.c,
                                                  (cudnnConvolutionBwdDataAlgo_t)algo, wp, wsz, be,
                                                  d.x, x),
                     op);
    else
      rc = dnn_check(cudnnConvolutionBackwardFilter(dnn, al, d.x, x, d.y, y, d.c,
                                                    (cudnnConvolutionBwdFilterAlgo_t)algo, wp, wsz,
                                                    be, d.w, w),
                     op);
  }
  nn_tensor_free(ws); /* stream order keeps the workspace alive for the queued work */
  desc_free(&d);
  return rc;
}

#else
/* ---------------------------------------------------------------- convolution, own kernels
 * Direct loops, one thread per output element, each summing its terms in a fixed order. */

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER };

template <class T>
static __global__ void conv_fwd_kernel(T *y, const T *x, const T *w, conv_geom g) {
  int64_t Cg = g.C / g.G, Og = g.O / g.G, n_out = g.N * g.O * g.OH * g.OW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_out;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ow = i % g.OW, oh = i / g.OW % g.OH, o = i / (g.OW * g.OH) % g.O,
            n = i / (g.OW * g.OH * g.O);
    int64_t grp = o / Og;
    T s = 0;
    for (int64_t c = 0; c < Cg; c++)
      for (int64_t kh = 0; kh < g.KH; kh++) {
        int64_t ih = oh * g.sh - g.ph + kh * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.KW; kw++) {
          int64_t iw = ow * g.sw - g.pw + kw * g.dw;
          if (iw < 0 || iw >= g.W) continue;
          s += x[((n * g.C + grp * Cg + c) * g.H + ih) * g.W + iw] *
               w[((o * Cg + c) * g.KH + kh) * g.KW + kw];
        }
      }
    y[i] = s;
  }
}

template <class T>
static __global__ void conv_bwd_data_kernel(T *dx, const T *w, const T *dy, conv_geom g) {
  int64_t Cg = g.C / g.G, Og = g.O / g.G, n_in = g.N * g.C * g.H * g.W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_in;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t iw = i % g.W, ih = i / g.W % g.H, c = i / (g.W * g.H) % g.C, n = i / (g.W * g.H * g.C);
    int64_t grp = c / Cg, cg = c % Cg;
    T s = 0;
    for (int64_t og = 0; og < Og; og++) {
      int64_t o = grp * Og + og;
      for (int64_t kh = 0; kh < g.KH; kh++) {
        int64_t t = ih + g.ph - kh * g.dh;
        if (t < 0 || t % g.sh) continue;
        int64_t oh = t / g.sh;
        if (oh >= g.OH) continue;
        for (int64_t kw = 0; kw < g.KW; kw++) {
          int64_t u = iw + g.pw - kw * g.dw;
          if (u < 0 || u % g.sw) continue;
          int64_t ow = u / g.sw;
          if (ow >= g.OW) continue;
          s += dy[((n * g.O + o) * g.OH + oh) * g.OW + ow] *
               w[((o * Cg + cg) * g.KH + kh) * g.KW + kw];
        }
      }
    }
    dx[i] = s;
  }
}

template <class T>
static __global__ void conv_bwd_filter_kernel(T *dw, const T *x, const T *dy, conv_geom g) {
  int64_t Cg = g.C / g.G, Og = g.O / g.G, n_w = g.O * Cg * g.KH * g.KW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_w;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t kw = i % g.KW, kh = i / g.KW % g.KH, c = i / (g.KW * g.KH) % Cg,
            o = i / (g.KW * g.KH * Cg);
    int64_t grp = o / Og;
    double s = 0;
    for (int64_t n = 0; n < g.N; n++)
      for (int64_t oh = 0; oh < g.OH; oh++) {
        int64_t ih = oh * g.sh - g.ph + kh * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t ow = 0; ow < g.OW; ow++) {
          int64_t iw = ow * g.sw - g.pw + kw * g.dw;
          if (iw < 0 || iw >= g.W) continue;
          s += (double)dy[((n * g.O + o) * g.OH + oh) * g.OW + ow] *
               x[((n * g.C + grp * Cg + c) * g.H + ih) * g.W + iw];
        }
      }
    dw[i] = (T)s;
  }
}

static int conv_run(int kind, const conv_geom *g, nn_dtype dt, void *x, void *w, void *y,
                    const char *op) {
  int64_t n = kind == CONV_FWD        ? g->N * g->O * g->OH * g->OW
              : kind == CONV_BWD_DATA ? g->N * g->C * g->H * g->W
                                      : g->O * (g->C / g->G) * g->KH * g->KW;
  unsigned b = cu_blocks(n, CU_THREADS);
  cudaStream_t s = cu_stream();
  if (dt == NN_DTYPE_F32) {
    if (kind == CONV_FWD)
      conv_fwd_kernel<float><<<b, CU_THREADS, 0, s>>>((float *)y, (float *)x, (float *)w, *g);
    else if (kind == CONV_BWD_DATA)
      conv_bwd_data_kernel<float><<<b, CU_THREADS, 0, s>>>((float *)x, (float *)w, (float *)y, *g);
    else
      conv_bwd_filter_kernel<float>
          <<<b, CU_THREADS, 0, s>>>((float *)w, (float *)x, (float *)y, *g);
  } else {
    if (kind == CONV_FWD)
      conv_fwd_kernel<double><<<b, CU_THREADS, 0, s>>>((double *)y, (double *)x, (double *)w, *g);
    else if (kind == CONV_BWD_DATA)
      conv_bwd_data_kernel<double>
          <<<b, CU_THREADS, 0, s>>>((double *)x, (double *)w, (double *)y, *g);
    else
      conv_bwd_filter_kernel<double>
          <<<b, CU_THREADS, 0, s>>>((double *)w, (double *)x, (double *)y, *g);
  }
  return CU_LAUNCHED(op);
}
#endif

static int cuda_conv2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *xc = NULL, *wc = NULL;
  conv_geom g = geom_of(in[0]->shape, in[1]->shape, o->shape, p);
  if (nn_tensor_numel(o) == 0) return NN_OK;
  int rc = packed(&xc, in[0]);
  if (!rc) rc = packed(&wc, in[1]);
  if (!rc)
    rc = conv_run(CONV_FWD, &g, o->dtype, nn_tensor_data(xc), nn_tensor_data(wc), nn_tensor_data(o),
                  "conv2d");
  if (!rc && in[2]) rc = bias_add(o, in[2]);
  nn_tensor_free(xc);
  nn_tensor_free(wc);
  return rc;
}

static int cuda_conv2d_backward_input(nn_tensor *const *out, nn_tensor *const *in,
                                      const nn_op_params *p) {
  nn_tensor *dx = out[0], *dc = NULL, *wc = NULL;
  conv_geom g = geom_of(dx->shape, in[1]->shape, in[0]->shape, p);
  if (nn_tensor_numel(dx) == 0) return NN_OK;
  int rc = packed(&dc, in[0]);
  if (!rc) rc = packed(&wc, in[1]);
  if (!rc)
    rc = conv_run(CONV_BWD_DATA, &g, dx->dtype, nn_tensor_data(dx), nn_tensor_data(wc),
                  nn_tensor_data(dc), "conv2d_backward_input");
  nn_tensor_free(dc);
  nn_tensor_free(wc);
  return rc;
}

static int cuda_conv2d_backward_weight(nn_tensor *const *out, nn_tensor *const *in,
                                       const nn_op_params *p) {
  nn_tensor *dw = out[0], *db = p->i[7] ? out[1] : NULL, *dc = NULL, *xc = NULL;
  conv_geom g = geom_of(in[1]->shape, dw->shape, in[0]->shape, p);
  int rc = NN_OK;
  if (g.N == 0) {
    rc = nn_fill_(dw, 0.0);
    if (!rc && db) rc = nn_fill_(db, 0.0);
    return rc;
  }
  rc = packed(&dc, in[0]);
  if (!rc) rc = packed(&xc, in[1]);
  if (!rc)
    rc = conv_run(CONV_BWD_FILTER, &g, dw->dtype, nn_tensor_data(xc), nn_tensor_data(dw),
                  nn_tensor_data(dc), "conv2d_backward_weight");
  if (!rc && db) rc = bias_sum(db, dc);
  nn_tensor_free(dc);
  nn_tensor_free(xc);
  return rc;
}

/* ---------------------------------------------------------------- pooling */

typedef struct {
  int64_t N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw;
  int include_pad;
} pool_geom;

static pool_geom pool_of(const int64_t *xs, const int64_t *os, const nn_op_params *p) {
  pool_geom g;
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3], g.OH = os[2], g.OW = os[3];
  g.kh = p->i[0], g.kw = p->i[1], g.sh = p->i[2], g.sw = p->i[3], g.ph = p->i[4], g.pw = p->i[5];
  g.include_pad = (int)p->i[6];
  return g;
}

/* out (contiguous planes) = window max in the CPU's scan order; idx = ih*W + iw */
template <class T>
static __global__ void maxpool_kernel(T *o, int64_t *idx, const T *x, pool_geom g, int64_t s0,
                                      int64_t s1, int64_t s2, int64_t s3) {
  int64_t n_out = g.N * g.C * g.OH * g.OW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_out;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ow = i % g.OW, oh = i / g.OW % g.OH, pl = i / (g.OW * g.OH), n = pl / g.C, c = pl % g.C;
    int64_t h0 = oh * g.sh - g.ph, h1 = h0 + g.kh < g.H ? h0 + g.kh : g.H;
    int64_t w0 = ow * g.sw - g.pw, w1 = w0 + g.kw < g.W ? w0 + g.kw : g.W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    const T *xp = x + n * s0 + c * s1;
    T best = (T)-INFINITY;
    int64_t bi = h0 * g.W + w0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) {
        T v = xp[ih * s2 + iw * s3];
        if (v > best || v != v) {
          best = v;
          bi = ih * g.W + iw;
        }
      }
    o[i] = best;
    idx[i] = bi;
  }
}

static int cuda_maxpool2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *x = in[0];
  pool_geom g = pool_of(x->shape, out[0]->shape, p);
  int64_t n = nn_tensor_numel(out[0]);
  if (!n) return NN_OK;
  const int64_t *s = x->stride;
  unsigned b = cu_blocks(n, CU_THREADS);
  if (x->dtype == NN_DTYPE_F32)
    maxpool_kernel<float>
        <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<float>(out[0]), cu_ptr<int64_t>(out[1]),
                                            cu_ptr<float>(x), g, s[0], s[1], s[2], s[3]);
  else
    maxpool_kernel<double>
        <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(out[0]), cu_ptr<int64_t>(out[1]),
                                            cu_ptr<double>(x), g, s[0], s[1], s[2], s[3]);
  return CU_LAUNCHED("max_pool2d");
}

/* Output rows [*a, *b) whose windows (stride s, kernel k, padding pd) can hold input row i;
 * callers check the exact window. */
static __device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t s, int64_t pd,
                                                int64_t n_out, int64_t *a, int64_t *b) {
  int64_t t = i + pd - k + 1; /* o*s > i + pd - k  <=> window end beyond i */
  int64_t lo = t <= 0 ? 0 : (t + s - 1) / s, hi = (i + pd) / s + 1;
  *a = lo;
  *b = hi < n_out ? hi : n_out;
}

/* dx (contiguous) [ih, iw] = sum of dout over the outputs whose argmax is (ih, iw), in (oh, ow)
 * order: the CPU's scatter, as a gather */
template <class T>
static __global__ void maxpool_bwd_kernel(T *dx, const T *dout, const int64_t *idx, pool_geom g,
                                          int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  int64_t n_in = g.N * g.C * g.H * g.W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_in;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t iw = i % g.W, ih = i / g.W % g.H, pl = i / (g.W * g.H), n = pl / g.C, c = pl % g.C;
    int64_t oh0, oh1, ow0, ow1, me = ih * g.W + iw;
    covering(ih, g.kh, g.sh, g.ph, g.OH, &oh0, &oh1);
    covering(iw, g.kw, g.sw, g.pw, g.OW, &ow0, &ow1);
    const int64_t *ip = idx + pl * g.OH * g.OW;
    T s = 0;
    for (int64_t oh = oh0; oh < oh1; oh++)
      for (int64_t ow = ow0; ow < ow1; ow++)
        if (ip[oh * g.OW + ow] == me) s += dout[n * d0 + c * d1 + oh * d2 + ow * d3];
    dx[i] = s;
  }
}

static int cuda_maxpool2d_backward(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  nn_tensor *dx = out[0], *dout = in[0];
  pool_geom g = pool_of(dx->shape, dout->shape, p);
  int64_t n = nn_tensor_numel(dx);
  if (!n) return NN_OK;
  const int64_t *s = dout->stride;
  unsigned b = cu_blocks(n, CU_THREADS);
  if (dx->dtype == NN_DTYPE_F32)
    maxpool_bwd_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(dx), cu_ptr<float>(dout), cu_ptr<int64_t>(in[1]), g, s[0], s[1], s[2], s[3]);
  else
    maxpool_bwd_kernel<double>
        <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(dx), cu_ptr<double>(dout),
                                            cu_ptr<int64_t>(in[1]), g, s[0], s[1], s[2], s[3]);
  return CU_LAUNCHED("max_pool2d_backward");
}

/* The window of output (oh, ow) clipped to the input, and its divisor (cpu_nnet.c's avg_window). */
static __device__ __forceinline__ void avg_window(const pool_geom &g, int64_t oh, int64_t ow,
                                                  int64_t *h0, int64_t *h1, int64_t *w0,
                                                  int64_t *w1, double *div) {
  int64_t a = oh * g.sh - g.ph, b = ow * g.sw - g.pw;
  int64_t ae = a + g.kh < g.H + g.ph ? a + g.kh : g.H + g.ph;
  int64_t be = b + g.kw < g.W + g.pw ? b + g.kw : g.W + g.pw;
  int64_t padded = (ae - a) * (be - b);
  *h0 = a < 0 ? 0 : a;
  *w0 = b < 0 ? 0 : b;
  *h1 = ae < g.H ? ae : g.H;
  *w1 = be < g.W ? be : g.W;
  *div = (double)(g.include_pad ? padded : (*h1 - *h0) * (*w1 - *w0));
}

template <class T>
static __global__ void avgpool_kernel(T *o, const T *x, pool_geom g, int64_t s0, int64_t s1,
                                      int64_t s2, int64_t s3) {
  int64_t n_out = g.N * g.C * g.OH * g.OW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_out;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ow = i % g.OW, oh = i / g.OW % g.OH, pl = i / (g.OW * g.OH), n = pl / g.C, c = pl % g.C;
    int64_t h0, h1, w0, w1;
    double div, s = 0;
    avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div);
    const T *xp = x + n * s0 + c * s1;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * s2 + iw * s3];
    o[i] = (T)(s / div);
  }
}

static int cuda_avgpool2d(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *x = in[0];
  pool_geom g = pool_of(x->shape, out[0]->shape, p);
  int64_t n = nn_tensor_numel(out[0]);
  if (!n) return NN_OK;
  const int64_t *s = x->stride;
  unsigned b = cu_blocks(n, CU_THREADS);
  if (x->dtype == NN_DTYPE_F32)
    avgpool_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<float>(x), g, s[0], s[1], s[2], s[3]);
  else
    avgpool_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<double>(x), g, s[0], s[1], s[2], s[3]);
  return CU_LAUNCHED("avg_pool2d");
}

/* dx [ih, iw] = sum over the outputs whose clipped window holds it of (T)(dout / div), (oh, ow)
 * order */
template <class T>
static __global__ void avgpool_bwd_kernel(T *dx, const T *dout, pool_geom g, int64_t d0, int64_t d1,
                                          int64_t d2, int64_t d3) {
  int64_t n_in = g.N * g.C * g.H * g.W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_in;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t iw = i % g.W, ih = i / g.W % g.H, pl = i / (g.W * g.H), n = pl / g.C, c = pl % g.C;
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, g.kh, g.sh, g.ph, g.OH, &oh0, &oh1);
    covering(iw, g.kw, g.sw, g.pw, g.OW, &ow0, &ow1);
    T s = 0;
    for (int64_t oh = oh0; oh < oh1; oh++)
      for (int64_t ow = ow0; ow < ow1; ow++) {
        int64_t h0, h1, w0, w1;
        double div;
        avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div);
        if (ih < h0 || ih >= h1 || iw < w0 || iw >= w1) continue;
        s += (T)(dout[n * d0 + c * d1 + oh * d2 + ow * d3] / div);
      }
    dx[i] = s;
  }
}

static int cuda_avgpool2d_backward(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  nn_tensor *dx = out[0], *dout = in[0];
  pool_geom g = pool_of(dx->shape, dout->shape, p);
  int64_t n = nn_tensor_numel(dx);
  if (!n) return NN_OK;
  const int64_t *s = dout->stride;
  unsigned b = cu_blocks(n, CU_THREADS);
  if (dx->dtype == NN_DTYPE_F32)
    avgpool_bwd_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(dx), cu_ptr<float>(dout), g, s[0], s[1], s[2], s[3]);
  else
    avgpool_bwd_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(dx), cu_ptr<double>(dout), g, s[0], s[1], s[2], s[3]);
  return CU_LAUNCHED("avg_pool2d_backward");
}

/* ---------------------------------------------------------------- batch norm
 * x (N, C, S) contiguous; 1-D (C) tensors (weight, bias, running stats, outputs) any stride. */

typedef struct {
  int64_t N, C, S;
} bn_geom;

static bn_geom bn_of(const nn_tensor *x) {
  bn_geom g = {x->shape[0], x->shape[1], 1};
  for (int d = 2; d < x->ndim; d++) g.S *= x->shape[d];
  return g;
}

template <class T>
static __device__ __forceinline__ double at(const T *t, int64_t s, int64_t i, double dflt) {
  return t ? (double)t[i * s] : dflt;
}

/* per channel (one block each): statistics, outputs mean/invstd, the running-stat update and
 * the affine coefficients ka = is*w, kb = b - mean*ka (double) */
template <class T>
static __global__ void bn_stats_kernel(const T *x, bn_geom g, int training, double momentum,
                                       double eps, const T *w, int64_t ws, const T *b, int64_t bs,
                                       T *rm, int64_t rms, T *rv, int64_t rvs, T *om, int64_t oms,
                                       T *oi, int64_t ois, double *k) {
  __shared__ double sh[32];
  int64_t M = g.N * g.S;
  for (int64_t c = blockIdx.x; c < g.C; c += gridDim.x) {
    double mean, var;
    if (training) {
      double s = 0;
      for (int64_t i = threadIdx.x; i < M; i += blockDim.x)
        s += (double)x[(i / g.S * g.C + c) * g.S + i % g.S];
      mean = cu_block_sum(s, sh) / (double)M;
      double q = 0;
      for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        double d = x[(i / g.S * g.C + c) * g.S + i % g.S] - mean;
        q += d * d;
      }
      var = cu_block_sum(q, sh) / (double)M;
    } else {
      mean = at(rm, rms, c, 0.0);
      var = at(rv, rvs, c, 1.0);
    }
    if (threadIdx.x == 0) {
      double is = 1.0 / sqrt(var + eps), ka = is * at(w, ws, c, 1.0);
      om[c * oms] = (T)mean;
      oi[c * ois] = (T)is;
      k[c] = ka;
      k[g.C + c] = at(b, bs, c, 0.0) - mean * ka;
      if (training && rm) rm[c * rms] = (T)((1 - momentum) * at(rm, rms, c, 0.0) + momentum * mean);
      if (training && rv)
        rv[c * rvs] = (T)((1 - momentum) * at(rv, rvs, c, 0.0) +
                          momentum * var * (double)M / (double)(M - 1));
    }
  }
}

/* y = x * (T)k1[c] + (T)k2[c] (+ x2 * (T)k3[c] when x2: the backward's dy*k1 + x*k2 + k3) */
template <class T>
static __global__ void bn_apply_kernel(T *y, const T *a, const T *x2, const double *k, bn_geom g) {
  int64_t n = g.N * g.C * g.S;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t c = i / g.S % g.C;
    if (x2)
      y[i] = a[i] * (T)k[c] + x2[i] * (T)k[g.C + c] + (T)k[2 * g.C + c];
    else
      y[i] = a[i] * (T)k[c] + (T)k[g.C + c];
  }
}

template <class T> static const T *opt_ptr(const nn_tensor *t) { return t ? cu_ptr<T>(t) : NULL; }
static int64_t opt_stride(const nn_tensor *t) { return t ? t->stride[0] : 0; }

template <class T>
static int bn_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *x = in[0], *w = in[1], *b = in[2], *rm = out[3], *rv = out[4], *scr = NULL;
  bn_geom g = bn_of(x);
  if (g.C == 0) return NN_OK;
  bool training = p->i[0] != 0;
  nn_tensor *rmi = training ? rm : in[3], *rvi = training ? rv : in[4];
  void *k = NULL;
  int rc = cu_scratch(&scr, &k, (size_t)(2 * g.C) * 8);
  if (rc) return rc;
  unsigned blocks = (unsigned)(g.C < 65535 ? g.C : 65535);
  bn_stats_kernel<T><<<blocks, 256, 0, cu_stream()>>>(
      cu_ptr<T>(x), g, training, p->f[0], p->f[1], opt_ptr<T>(w), opt_stride(w), opt_ptr<T>(b),
      opt_stride(b), rmi ? cu_ptr<T>(rmi) : NULL, opt_stride(rmi), rvi ? cu_ptr<T>(rvi) : NULL,
      opt_stride(rvi), cu_ptr<T>(out[1]), out[1]->stride[0], cu_ptr<T>(out[2]), out[2]->stride[0],
      (double *)k);
  int64_t n = g.N * g.C * g.S;
  if (n)
    bn_apply_kernel<T><<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<T>(out[0]), cu_ptr<T>(x), NULL, (const double *)k, g);
  rc = CU_LAUNCHED("batch_norm");
  nn_tensor_free(scr);
  return rc;
}

static int cuda_batchnorm(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  return in[0]->dtype == NN_DTYPE_F32 ? bn_run<float>(out, in, p) : bn_run<double>(out, in, p);
}

/* out (2, C) = {sum dy, sum dy * (x - mean) * invstd} per channel */
template <class T>
static __global__ void bn_reduce_kernel(T *o, int64_t o0, int64_t o1, const T *dy, const T *x,
                                        bn_geom g, const T *mean, int64_t ms, const T *inv,
                                        int64_t is) {
  __shared__ double sh[32];
  int64_t M = g.N * g.S;
  for (int64_t c = blockIdx.x; c < g.C; c += gridDim.x) {
    double m = at(mean, ms, c, 0.0), a = 0, b = 0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      int64_t e = (i / g.S * g.C + c) * g.S + i % g.S;
      double gv = dy[e];
      a += gv;
      b += gv * (x[e] - m);
    }
    a = cu_block_sum(a, sh);
    b = cu_block_sum(b, sh);
    if (threadIdx.x == 0) {
      o[c * o1] = (T)a;
      o[o0 + c * o1] = (T)(b * at(inv, is, c, 1.0));
    }
  }
}

template <class T> static int bnr_run(nn_tensor *const *out, nn_tensor *const *in) {
  bn_geom g = bn_of(in[1]);
  if (g.C == 0) return NN_OK;
  unsigned blocks = (unsigned)(g.C < 65535 ? g.C : 65535);
  bn_reduce_kernel<T><<<blocks, 256, 0, cu_stream()>>>(
      cu_ptr<T>(out[0]), out[0]->stride[0], out[0]->stride[1], cu_ptr<T>(in[0]), cu_ptr<T>(in[1]),
      g, opt_ptr<T>(in[2]), opt_stride(in[2]), opt_ptr<T>(in[3]), opt_stride(in[3]));
  return CU_LAUNCHED("batch_norm_backward_reduce");
}

static int cuda_batchnorm_backward_reduce(nn_tensor *const *out, nn_tensor *const *in,
                                          const nn_op_params *p) {
  (void)p;
  return in[1]->dtype == NN_DTYPE_F32 ? bnr_run<float>(out, in) : bnr_run<double>(out, in);
}

/* k1 = w*is; training: k2 = -k1*is*sdyxh/M, k3 = -k1*sdy/M - k2*m (Ioffe & Szegedy) */
template <class T>
static __global__ void bn_bwk_kernel(double *k, bn_geom g, const T *w, int64_t ws, const T *mean,
                                     int64_t ms, const T *inv, int64_t is, const T *sums,
                                     int64_t s0, int64_t s1, int training) {
  double M = (double)(g.N * g.S);
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < g.C;
       c += (int64_t)gridDim.x * blockDim.x) {
    double iv = at(inv, is, c, 1.0), m = at(mean, ms, c, 0.0), a = at(w, ws, c, 1.0) * iv, k2 = 0,
           k3 = 0;
    if (training) {
      double sdy = sums[c * s1], sdyxh = sums[s0 + c * s1];
      k2 = -a * iv * sdyxh / M;
      k3 = -a * sdy / M - k2 * m;
    }
    k[c] = a;
    k[g.C + c] = k2;
    k[2 * g.C + c] = k3;
  }
}

template <class T>
static int bnb_run(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *x = in[1], *sums = in[5], *scr = NULL;
  bn_geom g = bn_of(x);
  if (g.C == 0) return NN_OK;
  void *k = NULL;
  int rc = cu_scratch(&scr, &k, (size_t)(3 * g.C) * 8);
  if (rc) return rc;
  bool tr = p->i[0] != 0;
  bn_bwk_kernel<T><<<cu_blocks(g.C, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
      (double *)k, g, opt_ptr<T>(in[2]), opt_stride(in[2]), opt_ptr<T>(in[3]), opt_stride(in[3]),
      opt_ptr<T>(in[4]), opt_stride(in[4]), tr ? cu_ptr<T>(sums) : NULL, tr ? sums->stride[0] : 0,
      tr ? sums->stride[1] : 0, tr);
  int64_t n = g.N * g.C * g.S;
  if (n)
    bn_apply_kernel<T><<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<T>(out[0]), cu_ptr<T>(in[0]), cu_ptr<T>(x), (const double *)k, g);
  rc = CU_LAUNCHED("batch_norm_backward");
  nn_tensor_free(scr);
  return rc;
}

static int cuda_batchnorm_backward(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  return in[1]->dtype == NN_DTYPE_F32 ? bnb_run<float>(out, in, p) : bnb_run<double>(out, in, p);
}

/* ---------------------------------------------------------------- layer norm (R, D) contiguous */

/* one warp per row: m, is = 1/sqrt(var + eps) in double; y = (x - (T)m) * (T)is [* w] [+ b] */
template <class T>
static __global__ void ln_kernel(T *y, T *om, T *oi, const T *x, const T *w, const T *b, int64_t R,
                                 int64_t D, double eps) {
  int lane = threadIdx.x & 31;
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); r < R;
       r += (int64_t)gridDim.x * (blockDim.x >> 5)) {
    const T *xr = x + r * D;
    double s = 0;
    for (int64_t j = lane; j < D; j += 32) s += (double)xr[j];
    double m = cu_warp_sum(s) / (double)D, q = 0;
    for (int64_t j = lane; j < D; j += 32) {
      double d = xr[j] - m;
      q += d * d;
    }
    double is = 1.0 / sqrt(cu_warp_sum(q) / (double)D + eps);
    T mt = (T)m, it = (T)is;
    for (int64_t j = lane; j < D; j += 32) {
      T v = (xr[j] - mt) * it;
      if (w) v = v * w[j];
      if (b) v = v + b[j];
      y[r * D + j] = v;
    }
    if (lane == 0) om[r] = (T)m, oi[r] = (T)is;
  }
}

static unsigned warp_rows_grid(int64_t R) {
  int64_t b = (R + 7) / 8, cap = (int64_t)cu_sm_count() * 32;
  return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

static int cuda_layernorm(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *x = in[0];
  int64_t R = x->shape[0], D = x->shape[1];
  if (R == 0) return NN_OK;
  unsigned b = warp_rows_grid(R);
  if (x->dtype == NN_DTYPE_F32)
    ln_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<float>(out[1]), cu_ptr<float>(out[2]), cu_ptr<float>(x),
        opt_ptr<float>(in[1]), opt_ptr<float>(in[2]), R, D, p->f[1]);
  else
    ln_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<double>(out[1]), cu_ptr<double>(out[2]), cu_ptr<double>(x),
        opt_ptr<double>(in[1]), opt_ptr<double>(in[2]), R, D, p->f[1]);
  return CU_LAUNCHED("layer_norm");
}

/* dx = a*g + b*x + c with g = dy [* w], sums of g and g*(x - m) in double (cpu_nnet.c's ln_row_bwd)
 */
template <class T>
static __global__ void ln_bwd_kernel(T *dx, const T *dy, const T *x, const T *w, const T *mean,
                                     const T *inv, int64_t R, int64_t D) {
  int lane = threadIdx.x & 31;
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); r < R;
       r += (int64_t)gridDim.x * (blockDim.x >> 5)) {
    const T *gr = dy + r * D, *xr = x + r * D;
    double m = mean[r], is = inv[r], s1 = 0, s2 = 0;
    for (int64_t j = lane; j < D; j += 32) {
      double g = w ? (double)gr[j] * w[j] : (double)gr[j];
      s1 += g;
      s2 += g * (xr[j] - m);
    }
    double sg = cu_warp_sum(s1), sgx = cu_warp_sum(s2);
    T a = (T)is, b = (T)(-is * is * is * sgx / (double)D);
    T c = (T)(-is * sg / (double)D + is * is * is * sgx * m / (double)D);
    for (int64_t j = lane; j < D; j += 32)
      dx[r * D + j] = w ? gr[j] * w[j] * a + xr[j] * b + c : gr[j] * a + xr[j] * b + c;
  }
}

static int cuda_layernorm_backward(nn_tensor *const *out, nn_tensor *const *in,
                                   const nn_op_params *p) {
  (void)p;
  nn_tensor *x = in[1];
  int64_t R = x->shape[0], D = x->shape[1];
  if (R == 0) return NN_OK;
  unsigned b = warp_rows_grid(R);
  if (x->dtype == NN_DTYPE_F32)
    ln_bwd_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), cu_ptr<float>(x), opt_ptr<float>(in[2]),
        cu_ptr<float>(in[3]), cu_ptr<float>(in[4]), R, D);
  else
    ln_bwd_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), cu_ptr<double>(x), opt_ptr<double>(in[2]),
        cu_ptr<double>(in[3]), cu_ptr<double>(in[4]), R, D);
  return CU_LAUNCHED("layer_norm_backward");
}

/* out (2, D) = {sum_r dy, sum_r dy * ((x - m) * is)}: one thread per column, rows in order */
template <class T>
static __global__ void ln_cols_kernel(T *o, const T *dy, const T *x, const T *mean, const T *inv,
                                      int64_t R, int64_t D) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < D;
       j += (int64_t)gridDim.x * blockDim.x) {
    double s0 = 0, s1 = 0;
    for (int64_t r = 0; r < R; r++) {
      double m = mean[r], is = inv[r], g = dy[r * D + j];
      s0 += g;
      s1 += g * ((x[r * D + j] - m) * is);
    }
    o[j] = (T)s0;
    o[D + j] = (T)s1;
  }
}

static int cuda_layernorm_backward_weight(nn_tensor *const *out, nn_tensor *const *in,
                                          const nn_op_params *p) {
  (void)p;
  nn_tensor *x = in[1];
  int64_t R = x->shape[0], D = x->shape[1];
  if (D == 0) return NN_OK;
  unsigned b = cu_blocks(D, CU_THREADS);
  if (x->dtype == NN_DTYPE_F32)
    ln_cols_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), cu_ptr<float>(x), cu_ptr<float>(in[2]),
        cu_ptr<float>(in[3]), R, D);
  else
    ln_cols_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<double>(out[0]), cu_ptr<double>(in[0]), cu_ptr<double>(x), cu_ptr<double>(in[2]),
        cu_ptr<double>(in[3]), R, D);
  return CU_LAUNCHED("layer_norm_backward_weight");
}

/* The fused conv2d + relu + max_pool2d ops of ops_nnet.def are optional: without them the
 * layers run one by one (nn/layers.c asks the backend), so they are left unset here. */
void nn_cuda_register_nnet(nn_backend_i *be) {
  be->kernels[NN_OP_CONV2D] = cuda_conv2d;
  be->kernels[NN_OP_CONV2D_BACKWARD_INPUT] = cuda_conv2d_backward_input;
  be->kernels[NN_OP_CONV2D_BACKWARD_WEIGHT] = cuda_conv2d_backward_weight;
  be->kernels[NN_OP_CONV2D_BACKWARD_BIAS] = cuda_conv2d_backward_bias;
  be->kernels[NN_OP_MAXPOOL2D] = cuda_maxpool2d;
  be->kernels[NN_OP_MAXPOOL2D_BACKWARD] = cuda_maxpool2d_backward;
  be->kernels[NN_OP_AVGPOOL2D] = cuda_avgpool2d;
  be->kernels[NN_OP_AVGPOOL2D_BACKWARD] = cuda_avgpool2d_backward;
  be->kernels[NN_OP_BATCHNORM] = cuda_batchnorm;
  be->kernels[NN_OP_BATCHNORM_BACKWARD_REDUCE] = cuda_batchnorm_backward_reduce;
  be->kernels[NN_OP_BATCHNORM_BACKWARD] = cuda_batchnorm_backward;
  be->kernels[NN_OP_LAYERNORM] = cuda_layernorm;
  be->kernels[NN_OP_LAYERNORM_BACKWARD] = cuda_layernorm_backward;
  be->kernels[NN_OP_LAYERNORM_BACKWARD_WEIGHT] = cuda_layernorm_backward_weight;
}
