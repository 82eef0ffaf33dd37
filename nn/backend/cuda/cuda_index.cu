/* nn/backend/cuda/cuda_index.cu: indexing and random-number kernels on the GPU (references:
 * cpu_index.c and cpu_rng.c).
 *
 * scatter_add: in deterministic mode (nn_set_deterministic) every output row along dim is owned
 * by one thread, which adds its terms in ascending j: the CPU's order and bits. Otherwise, when
 * the rows are too few to keep the GPU busy (embedding backward: a few hundred feature columns,
 * thousands of tokens), each term is an atomicAdd, whose order, and so whose last bits, vary
 * from run to run.
 *
 * Random numbers follow nn/rng.h's draw rules element by element: element i of a draw reads
 * Philox-4x32-10 block offset + i/4 (offset + i/2 for normal), the same function as the CPU's
 * nn_philox4x32. The scaling is done in double with explicitly rounded operations (__dmul_rn,
 * __dadd_rn: no fused multiply-add, which the CPU build does not use either), so uniform and
 * bernoulli draws are the CPU's bits; normal draws go through CUDA's double log and cos (within
 * 1 ulp of glibc's), so float32 normals match the CPU's bits except in rare rounding ties and
 * float64 normals agree within a few ulp. */
#include "cuda.h"

#include <math.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- index_check */

/* o[0] (preset to all ones) = the lowest row-major position of a value outside [0, bound) */
static __global__ void idxchk_kernel(unsigned long long *o, const int64_t *v, cu_geo<1> g,
                                     int64_t bound) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < g.n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[1];
    cu_offsets<1>(g, i, off);
    if ((uint64_t)v[off[0]] >= (uint64_t)bound) atomicMin(o, (unsigned long long)i);
  }
}

/* o = {first, its value} or {-1, 0} */
static __global__ void idxchk_final_kernel(int64_t *o, const int64_t *v, cu_geo<1> g) {
  unsigned long long first = (unsigned long long)o[0];
  if (first == ~0ull) {
    o[0] = -1;
    o[1] = 0;
    return;
  }
  int64_t off[1];
  cu_offsets<1>(g, (int64_t)first, off);
  o[1] = v[off[0]];
}

static int cuda_index_check(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *idx = in[0], *o = out[0];
  int64_t *op = cu_ptr<int64_t>(o);
  int rc = cu_check(cudaMemsetAsync(op, 0xff, 2 * sizeof(int64_t), cu_stream()), "index_check");
  if (rc) return rc;
  /* a geometry that is not merged, so flat positions stay row-major over all of idx's dims */
  cu_geo<1> g;
  memset(&g, 0, sizeof g);
  g.n = nn_tensor_numel(idx);
  g.ndim = idx->ndim ? idx->ndim : 1;
  for (int d = 0; d < idx->ndim; d++) g.shape[d] = idx->shape[d], g.st[0][d] = idx->stride[d];
  if (!idx->ndim) g.shape[0] = 1, g.st[0][0] = 0;
  if (g.n > 0)
    idxchk_kernel<<<cu_blocks(g.n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        (unsigned long long *)op, cu_ptr<int64_t>(idx), g, p->i[0]);
  idxchk_final_kernel<<<1, 1, 0, cu_stream()>>>(op, cu_ptr<int64_t>(idx), g);
  return CU_LAUNCHED("index_check");
}

/* ---------------------------------------------------------------- gather */

template <class W> struct gather_fn {
  W *o;
  const int64_t *ix;
  const W *t;
  int64_t sd;
  __device__ void operator()(const int64_t *off) const { o[off[0]] = t[off[2] + ix[off[1]] * sd]; }
};

static int cuda_gather(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *t = in[0], *idx = in[1];
  int dim = (int)p->i[0];
  nn_tensor tv = *t; /* geometry only: t with idx's shape and stride 0 along dim */
  for (int d = 0; d < idx->ndim; d++) tv.shape[d] = idx->shape[d];
  tv.stride[dim] = 0;
  nn_tensor *ops[3] = {out[0], idx, &tv};
  int64_t sd = t->stride[dim];
  if (nn_dtype_size(t->dtype) == 4)
    return cu_map<3>("gather", ops,
                     gather_fn<uint32_t>{cu_ptr<uint32_t>(out[0]), cu_ptr<int64_t>(idx),
                                         cu_ptr<uint32_t>(t), sd});
  return cu_map<3>(
      "gather", ops,
      gather_fn<uint64_t>{cu_ptr<uint64_t>(out[0]), cu_ptr<int64_t>(idx), cu_ptr<uint64_t>(t), sd});
}

/* ---------------------------------------------------------------- scatter_add */

/* t's geometry without dim d, with like's shape off d (cpu_index.c's drop_dim) */
static nn_tensor drop_dim(const nn_tensor *t, const nn_tensor *like, int d) {
  nn_tensor v = *t;
  int k = 0;
  for (int e = 0; e < like->ndim; e++) {
    if (e == d) continue;
    v.shape[k] = like->shape[e];
    v.stride[k] = t->stride[e];
    k++;
  }
  v.ndim = k;
  return v;
}

/* One thread per output row (other coordinates): terms in ascending j. */
template <class T>
static __global__ void scat_rows_kernel(T *o, const int64_t *ix, const T *s, cu_geo<3> g, int64_t J,
                                        int64_t so, int64_t si, int64_t ss) {
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < g.n;
       b += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    cu_offsets<3>(g, b, off);
    for (int64_t j = 0; j < J; j++) o[off[0] + ix[off[1] + j * si] * so] += s[off[2] + j * ss];
  }
}

static __device__ __forceinline__ void atomic_add(float *p, float v) { atomicAdd(p, v); }
static __device__ __forceinline__ void atomic_add(double *p, double v) { atomicAdd(p, v); }
static __device__ __forceinline__ void atomic_add(int64_t *p, int64_t v) {
  atomicAdd((unsigned long long *)p, (unsigned long long)v); /* two's complement wraps alike */
}

/* One thread per term (b, j): atomics. */
template <class T>
static __global__ void scat_atomic_kernel(T *o, const int64_t *ix, const T *s, cu_geo<3> g,
                                          int64_t J, int64_t so, int64_t si, int64_t ss) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < g.n * J;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t b = e / J, j = e % J, off[3];
    cu_offsets<3>(g, b, off);
    atomic_add(o + off[0] + ix[off[1] + j * si] * so, s[off[2] + j * ss]);
  }
}

template <class T> static int scat_run(nn_tensor *o, nn_tensor *idx, nn_tensor *src, int dim) {
  int64_t J = idx->shape[dim];
  nn_tensor ov = drop_dim(o, idx, dim), iv = drop_dim(idx, idx, dim), sv = drop_dim(src, idx, dim);
  nn_tensor *ops[3] = {&ov, &iv, &sv};
  cu_geo<3> g = cu_geo_make<3>(ops);
  int64_t so = o->stride[dim], si = idx->stride[dim], ss = src->stride[dim];
  /* rows enough to fill the GPU (a thread each), or determinism asked for: the ordered path */
  bool rows = nn_get_deterministic() || g.n >= (int64_t)cu_sm_count() * 256 || J <= 4;
  if (rows)
    scat_rows_kernel<T><<<cu_blocks(g.n, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<T>(o), cu_ptr<int64_t>(idx), cu_ptr<T>(src), g, J, so, si, ss);
  else
    scat_atomic_kernel<T><<<cu_blocks(g.n * J, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<T>(o), cu_ptr<int64_t>(idx), cu_ptr<T>(src), g, J, so, si, ss);
  return CU_LAUNCHED("scatter_add");
}

static int cuda_scatter_add(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *idx = in[0], *src = in[1];
  if (nn_tensor_numel(idx) == 0) return NN_OK;
  int dim = (int)p->i[0];
  switch (o->dtype) {
  case NN_DTYPE_F32:
    return scat_run<float>(o, idx, src, dim);
  case NN_DTYPE_F64:
    return scat_run<double>(o, idx, src, dim);
  case NN_DTYPE_I64:
    return scat_run<int64_t>(o, idx, src, dim);
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- Philox and the draws */

typedef struct {
  uint32_t k0, k1;
  uint64_t stream, offset;
} philox_ctx;

static philox_ctx ctx_of(const nn_op_params *p) {
  uint64_t seed = (uint64_t)p->i[0];
  philox_ctx c = {(uint32_t)seed, (uint32_t)(seed >> 32), (uint64_t)p->i[1], (uint64_t)p->i[2]};
  return c;
}

/* Philox-4x32-10 (nn/rng.c's nn_philox4x32) of block offset + b */
static __device__ __forceinline__ void philox_block(const philox_ctx &c, uint64_t b,
                                                    uint32_t out[4]) {
  uint64_t blk = c.offset + b;
  uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32), c2 = (uint32_t)c.stream,
           c3 = (uint32_t)(c.stream >> 32);
  uint32_t k0 = c.k0, k1 = c.k1;
#pragma unroll
  for (int r = 0; r < 10; r++) {
    uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* rng.h's uniform: 24 bits centred in their cell, in (0, 1); exact in double */
static __device__ __forceinline__ double u01(uint32_t x) {
  return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0);
}

/* uniform: v = (T)(lo + (hi - lo) u); a value at or above (T)hi becomes `below` */
template <class T>
static __global__ void uniform_kernel(T *o, int64_t n, philox_ctx c, double lo, double w, T hit,
                                      T below, int clamp) {
  int64_t nb = (n + 3) / 4;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
       b += (int64_t)gridDim.x * blockDim.x) {
    uint32_t x[4];
    philox_block(c, (uint64_t)b, x);
    int64_t i0 = b * 4, m = n - i0 < 4 ? n - i0 : 4;
    for (int64_t k = 0; k < m; k++) {
      T v = (T)__dadd_rn(lo, __dmul_rn(w, u01(x[k])));
      o[i0 + k] = v >= hit && clamp ? below : v;
    }
  }
}

template <class T> static T next_below(T hi, T lo) { return (T)nextafter((double)hi, (double)lo); }
template <> float next_below<float>(float hi, float lo) { return nextafterf(hi, lo); }

static int cuda_uniform(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  int64_t n = nn_tensor_numel(o);
  if (!n) return NN_OK;
  philox_ctx c = ctx_of(p);
  double lo = p->f[0], hi = p->f[1];
  unsigned b = cu_blocks((n + 3) / 4, CU_THREADS);
  if (o->dtype == NN_DTYPE_F32) {
    float hit = (float)hi, lot = (float)lo, below = next_below<float>(hit, lot);
    if (below < lot) below = lot;
    uniform_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<float>(o), n, c, lo, hi - lo,
                                                             hit, below, lo < hi);
  } else {
    double below = next_below<double>(hi, lo);
    if (below < lo) below = lo;
    uniform_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(o), n, c, lo, hi - lo,
                                                              hi, below, lo < hi);
  }
  return CU_LAUNCHED("uniform");
}

/* normal: z = sqrt(-2 ln u1) cos(2 pi u2) from words (2k, 2k+1) of block offset + i/2 */
template <class T>
static __global__ void normal_kernel(T *o, int64_t n, philox_ctx c, double mean, double sd) {
  const double two_pi = 6.283185307179586476925286766559;
  int64_t nb = (n + 1) / 2;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
       b += (int64_t)gridDim.x * blockDim.x) {
    uint32_t x[4];
    philox_block(c, (uint64_t)b, x);
    int64_t i0 = b * 2, m = n - i0 < 2 ? n - i0 : 2;
    for (int64_t k = 0; k < m; k++) {
      double r = sqrt(__dmul_rn(-2.0, log(u01(x[2 * k]))));
      double z = __dmul_rn(r, cos(__dmul_rn(two_pi, u01(x[2 * k + 1]))));
      o[i0 + k] = (T)__dadd_rn(mean, __dmul_rn(sd, z));
    }
  }
}

static int cuda_normal(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  int64_t n = nn_tensor_numel(o);
  if (!n) return NN_OK;
  philox_ctx c = ctx_of(p);
  unsigned b = cu_blocks((n + 1) / 2, CU_THREADS);
  if (o->dtype == NN_DTYPE_F32)
    normal_kernel<float>
        <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<float>(o), n, c, p->f[0], p->f[1]);
  else
    normal_kernel<double>
        <<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(o), n, c, p->f[0], p->f[1]);
  return CU_LAUNCHED("normal");
}

template <class T>
static __global__ void bernoulli_kernel(T *o, int64_t n, philox_ctx c, double pr) {
  int64_t nb = (n + 3) / 4;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nb;
       b += (int64_t)gridDim.x * blockDim.x) {
    uint32_t x[4];
    philox_block(c, (uint64_t)b, x);
    int64_t i0 = b * 4, m = n - i0 < 4 ? n - i0 : 4;
    for (int64_t k = 0; k < m; k++) o[i0 + k] = u01(x[k]) < pr ? (T)1 : (T)0;
  }
}

static int cuda_bernoulli(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  nn_tensor *o = out[0];
  NN_ASSERT(nn_tensor_is_contiguous(o));
  int64_t n = nn_tensor_numel(o);
  if (!n) return NN_OK;
  philox_ctx c = ctx_of(p);
  unsigned b = cu_blocks((n + 3) / 4, CU_THREADS);
  if (o->dtype == NN_DTYPE_F32)
    bernoulli_kernel<float><<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<float>(o), n, c, p->f[0]);
  else
    bernoulli_kernel<double><<<b, CU_THREADS, 0, cu_stream()>>>(cu_ptr<double>(o), n, c, p->f[0]);
  return CU_LAUNCHED("bernoulli");
}

/* categorical, step 1 (a thread per row): the running sums cdf (N, C) in double, class order,
 * and the row's status: 0 ok, k + 1 for a first bad entry at k (negative, NaN or infinite),
 * -1 for zero total mass, -2 for finite entries whose sum overflows */
template <class T>
static __global__ void cat_cdf_kernel(double *cdf, int64_t *status, const T *pr, int64_t N,
                                      int64_t C, int64_t rs, int64_t cs) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < N;
       r += (int64_t)gridDim.x * blockDim.x) {
    double acc = 0;
    int64_t st = 0;
    for (int64_t k = 0; k < C; k++) {
      double v = pr[r * rs + k * cs];
      if (!(v >= 0) || isinf(v)) {
        st = k + 1;
        break;
      }
      cdf[r * C + k] = acc += v;
    }
    if (!st && !(acc > 0)) st = -1;
    if (!st && isinf(acc)) st = -2;
    status[r] = st;
  }
}

/* step 2 (a thread per sample): sample j of row r takes uniform element r*S + j and returns the
 * smallest class k with cdf[k] > u * cdf[C-1] */
static __global__ void cat_sample_kernel(int64_t *o, const double *cdf, const int64_t *status,
                                         int64_t N, int64_t C, int64_t S, philox_ctx c) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * S;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / S;
    if (status[r]) continue;
    uint32_t x[4];
    philox_block(c, (uint64_t)i / 4, x);
    const double *row = cdf + r * C;
    double target = u01(x[i % 4]) * row[C - 1];
    int64_t lo = 0, hi = C - 1;
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      if (row[mid] > target)
        hi = mid;
      else
        lo = mid + 1;
    }
    o[i] = lo;
  }
}

static int cuda_categorical(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *pr = in[0], *scr = NULL;
  int64_t N = pr->shape[0], C = pr->shape[1], S = o->shape[1];
  NN_ASSERT(nn_tensor_is_contiguous(o) && o->shape[0] == N);
  if (N == 0) return NN_OK;
  if (C == 0)
    return nn_seterr(NN_ERR_ARG,
                     "categorical: probs of shape (%lld, 0) have no classes (zero total mass)",
                     (long long)N);
  void *mem = NULL;
  int rc = cu_scratch(&scr, &mem, (size_t)(N * C + N) * 8);
  if (rc) return rc;
  double *cdf = (double *)mem;
  int64_t *status = (int64_t *)(cdf + N * C);
  unsigned b = cu_blocks(N, 128);
  if (pr->dtype == NN_DTYPE_F32)
    cat_cdf_kernel<float><<<b, 128, 0, cu_stream()>>>(cdf, status, cu_ptr<float>(pr), N, C,
                                                      pr->stride[0], pr->stride[1]);
  else
    cat_cdf_kernel<double><<<b, 128, 0, cu_stream()>>>(cdf, status, cu_ptr<double>(pr), N, C,
                                                       pr->stride[0], pr->stride[1]);
  if (N * S > 0)
    cat_sample_kernel<<<cu_blocks(N * S, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<int64_t>(o), cdf, status, N, C, S, ctx_of(p));
  rc = CU_LAUNCHED("categorical");
  int64_t *st = NULL;
  if (!rc) {
    st = (int64_t *)malloc((size_t)N * sizeof *st);
    if (!st) rc = nn_seterr(NN_ERR_NOMEM, "categorical: out of memory");
  }
  if (!rc) rc = cu_read_i64(st, status, N);
  for (int64_t r = 0; !rc && r < N; r++) {
    if (!st[r]) continue;
    if (st[r] == -1) {
      rc =
          nn_seterr(NN_ERR_ARG, "categorical: row %lld of probs has zero total mass", (long long)r);
    } else if (st[r] == -2) {
      rc = nn_seterr(NN_ERR_ARG, "categorical: row %lld of probs sums to infinity", (long long)r);
    } else {
      int64_t k = st[r] - 1;
      double v = 0;
      nn_tensor *a = NULL, *e = NULL;
      if (!nn_narrow(&a, pr, 0, r, 1) && !nn_narrow(&e, a, 1, k, 1)) nn_tensor_item(e, &v);
      nn_tensor_free(a);
      nn_tensor_free(e);
      rc = nn_seterr(NN_ERR_ARG,
                     "categorical: probs[%lld, %lld] is %g; probabilities must be finite and >= 0",
                     (long long)r, (long long)k, v);
    }
  }
  free(st);
  nn_tensor_free(scr);
  return rc;
}

void nn_cuda_register_index(nn_backend_i *be) {
  be->kernels[NN_OP_INDEX_CHECK] = cuda_index_check;
  be->kernels[NN_OP_GATHER] = cuda_gather;
  be->kernels[NN_OP_SCATTER_ADD] = cuda_scatter_add;
  be->kernels[NN_OP_RNG_UNIFORM] = cuda_uniform;
  be->kernels[NN_OP_RNG_NORMAL] = cuda_normal;
  be->kernels[NN_OP_RNG_BERNOULLI] = cuda_bernoulli;
  be->kernels[NN_OP_RNG_CATEGORICAL] = cuda_categorical;
}
