/* nn/backend/cuda/cuda_core.cu: copy/convert, fill, sum and matrix products on the GPU (the
 * references are in nn/backend/cpu/cpu_core.c). Matrix products go to cuBLAS; transposed views
 * are passed as transposes, other strides are packed first. B batch, M rows, K inner, N columns.
 *
 * TF32 is off unless nn_set_allow_tf32(true): cuBLAS then runs float32 products in full float32
 * (CUBLAS_DEFAULT_MATH), which matches the CPU within float32 rounding. cuBLAS's GEMMs are
 * deterministic on one device and stream (no atomics mode is set). Sums accumulate in double in
 * a fixed tree order per output element. */
#include "cuda.h"

#include <cublas_v2.h>

/* ---------------------------------------------------------------- cuBLAS handle */

static cublasHandle_t blas;

struct cublasContext *cu_cublas(void) {
  if (!blas) {
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) return NULL;
    cublasSetStream(blas, cu_stream());
  }
  cublasSetMathMode(blas, nn_get_allow_tf32() && cu_cc_major() >= 8 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                    : CUBLAS_DEFAULT_MATH);
  return blas;
}

static int blas_check(cublasStatus_t s, const char *op) {
  if (s == CUBLAS_STATUS_SUCCESS) return NN_OK;
  return nn_seterr(s == CUBLAS_STATUS_ALLOC_FAILED ? NN_ERR_NOMEM : NN_ERR_DEVICE,
                   "%s: cuBLAS error %s", op, cublasGetStatusString(s));
}

/* ---------------------------------------------------------------- copy */

template <class TO, class TI> struct copy_fn {
  TO *o;
  const TI *a;
  __device__ void operator()(const int64_t *off) const { o[off[0]] = (TO)a[off[1]]; }
};

template <class TO> static int copy_to(nn_tensor *o, nn_tensor *a) {
  nn_tensor *ops[2] = {o, a};
  switch (a->dtype) {
  case NN_DTYPE_F32:
    return cu_map<2>("copy", ops, copy_fn<TO, float>{cu_ptr<TO>(o), cu_ptr<float>(a)});
  case NN_DTYPE_F64:
    return cu_map<2>("copy", ops, copy_fn<TO, double>{cu_ptr<TO>(o), cu_ptr<double>(a)});
  case NN_DTYPE_I64:
    return cu_map<2>("copy", ops, copy_fn<TO, int64_t>{cu_ptr<TO>(o), cu_ptr<int64_t>(a)});
  }
  return NN_OK;
}

static int cuda_copy(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  nn_tensor *o = out[0], *a = in[0];
  /* same dtype, both contiguous: one memcpy on the stream */
  if (o->dtype == a->dtype && nn_tensor_is_contiguous(o) && nn_tensor_is_contiguous(a) &&
      nn_tensor_same_shape(o, a)) {
    size_t nb = (size_t)nn_tensor_numel(o) * nn_dtype_size(o->dtype);
    if (!nb) return NN_OK;
    return cu_check(cudaMemcpyAsync(nn_tensor_data(o), nn_tensor_data(a), nb,
                                    cudaMemcpyDeviceToDevice, cu_stream()),
                    "copy");
  }
  switch (o->dtype) {
  case NN_DTYPE_F32:
    return copy_to<float>(o, a);
  case NN_DTYPE_F64:
    return copy_to<double>(o, a);
  case NN_DTYPE_I64:
    return copy_to<int64_t>(o, a);
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- fill */

template <class T> struct fill_fn {
  T *o;
  T v;
  __device__ void operator()(const int64_t *off) const { o[off[0]] = v; }
};

static int cuda_fill(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  nn_tensor *o = out[0];
  switch (o->dtype) {
  case NN_DTYPE_F32:
    return cu_map<1>("fill", out, fill_fn<float>{cu_ptr<float>(o), (float)p->f[0]});
  case NN_DTYPE_F64:
    return cu_map<1>("fill", out, fill_fn<double>{cu_ptr<double>(o), p->f[0]});
  case NN_DTYPE_I64:
    return cu_map<1>("fill", out, fill_fn<int64_t>{cu_ptr<int64_t>(o), (int64_t)p->f[0]});
  }
  return NN_OK;
}

/* ---------------------------------------------------------------- sum
 * out (keepdim) = sum of in0 over the dims where out has size 1 and in0 does not. Kept dims
 * (M outputs) and reduced dims (R terms) are walked as two row-major index spaces; each output
 * accumulates its R terms in double, one thread per output when R is small, else one block. */

typedef struct {
  int kd, rd;
  int64_t kshape[NN_MAX_DIMS], kin[NN_MAX_DIMS], kout[NN_MAX_DIMS];
  int64_t rshape[NN_MAX_DIMS], rin[NN_MAX_DIMS];
  int64_t M, R;
} sum_geo;

template <class TO, class TI>
static __global__ void sum_thread_kernel(TO *o, const TI *a, sum_geo g) {
  for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < g.M;
       m += (int64_t)gridDim.x * blockDim.x) {
    int64_t base = cu_flat_offset(m, g.kd, g.kshape, g.kin);
    double s = 0;
    for (int64_t r = 0; r < g.R; r++)
      s += (double)a[base + cu_flat_offset(r, g.rd, g.rshape, g.rin)];
    o[cu_flat_offset(m, g.kd, g.kshape, g.kout)] = (TO)s;
  }
}

template <class TO, class TI>
static __global__ void sum_block_kernel(TO *o, const TI *a, sum_geo g) {
  __shared__ double sh[32];
  for (int64_t m = blockIdx.x; m < g.M; m += gridDim.x) {
    int64_t base = cu_flat_offset(m, g.kd, g.kshape, g.kin);
    double s = 0;
    for (int64_t r = threadIdx.x; r < g.R; r += blockDim.x)
      s += (double)a[base + cu_flat_offset(r, g.rd, g.rshape, g.rin)];
    s = cu_block_sum(s, sh);
    if (threadIdx.x == 0) o[cu_flat_offset(m, g.kd, g.kshape, g.kout)] = (TO)s;
  }
}

template <class TO, class TI> static int sum_run(nn_tensor *o, nn_tensor *a, const sum_geo &g) {
  if (g.M == 0) return NN_OK;
  if (g.R <= 32) {
    sum_thread_kernel<TO, TI><<<cu_blocks(g.M, CU_THREADS), CU_THREADS, 0, cu_stream()>>>(
        cu_ptr<TO>(o), cu_ptr<TI>(a), g);
  } else {
    int threads = g.R >= 256 ? 256 : (int)((g.R + 31) / 32 * 32);
    int64_t blocks = g.M < 65535 ? g.M : 65535;
    sum_block_kernel<TO, TI>
        <<<(unsigned)blocks, threads, 0, cu_stream()>>>(cu_ptr<TO>(o), cu_ptr<TI>(a), g);
  }
  return CU_LAUNCHED("sum");
}

static int cuda_sum(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  nn_tensor *o = out[0], *a = in[0];
  sum_geo g;
  memset(&g, 0, sizeof g);
  g.M = g.R = 1;
  for (int d = 0; d < a->ndim; d++) {
    if (o->shape[d] == 1 && a->shape[d] != 1) {
      g.rshape[g.rd] = a->shape[d];
      g.rin[g.rd++] = a->stride[d];
      g.R *= a->shape[d];
    } else {
      g.kshape[g.kd] = a->shape[d];
      g.kin[g.kd] = a->stride[d];
      g.kout[g.kd++] = o->stride[d];
      g.M *= a->shape[d];
    }
  }
  if (g.R == 0) return nn_fill_(o, 0.0);
  bool of = o->dtype == NN_DTYPE_F32, af = a->dtype == NN_DTYPE_F32;
  if (of && af) return sum_run<float, float>(o, a, g);
  if (of) return sum_run<float, double>(o, a, g);
  if (af) return sum_run<double, float>(o, a, g);
  return sum_run<double, double>(o, a, g);
}

/* ---------------------------------------------------------------- matmul
 * out (B, M, N) = in0 (B, M, K) @ in1 (B, K, N) [+ out if p->i[0]]. Row-major C = A B is
 * column-major C^T = B^T A^T, so cuBLAS gets (B, A) with m = N, n = M. A row-major operand with
 * unit column stride is cuBLAS's OP_N with ld = its row stride; one with unit row stride is OP_T
 * with ld = its column stride (cpu_core.c's blas_layout, the same cases). */

static bool blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, cublasOperation_t *tr,
                        int64_t *ld) {
  if (cs == 1 && rs >= (cols > 1 ? cols : 1)) {
    *tr = CUBLAS_OP_N;
    *ld = rs;
    return true;
  }
  if (rs == 1 && cs >= (rows > 1 ? rows : 1)) {
    *tr = CUBLAS_OP_T;
    *ld = cs;
    return true;
  }
  if (rows == 1 && cs == 1) {
    *tr = CUBLAS_OP_N;
    *ld = cols > 1 ? cols : 1;
    return true;
  }
  if (cols == 1 && rs == 1) {
    *tr = CUBLAS_OP_T;
    *ld = rows > 1 ? rows : 1;
    return true;
  }
  return false;
}

static int packed_copy(nn_tensor **c, nn_tensor *t) {
  int rc = nn_tensor_empty(c, t->ndim, t->shape, t->dtype, t->storage->device);
  if (!rc) rc = nn_copy_(*c, t);
  return rc;
}

static int cuda_matmul(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *a = in[0], *b = in[1], *ac = NULL, *bc = NULL;
  int64_t B = o->shape[0], M = o->shape[1], N = o->shape[2], K = a->shape[2];
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  int64_t lda = 1, ldb = 1;
  int rc = NN_OK;
  if (!blas_layout(M, K, a->stride[1], a->stride[2], &ta, &lda)) {
    if ((rc = packed_copy(&ac, a))) goto done;
    a = ac;
    blas_layout(M, K, a->stride[1], a->stride[2], &ta, &lda);
  }
  if (!blas_layout(K, N, b->stride[1], b->stride[2], &tb, &ldb)) {
    if ((rc = packed_copy(&bc, b))) goto done;
    b = bc;
    blas_layout(K, N, b->stride[1], b->stride[2], &tb, &ldb);
  }
  NN_ASSERT(o->stride[2] == 1 && (o->stride[1] == N || M <= 1));
  if (M == 0 || N == 0 || B == 0) goto done;
  if (K == 0) {
    if (!p->i[0]) rc = nn_fill_(o, 0.0);
    goto done;
  }
  {
    cublasHandle_t h = cu_cublas();
    if (!h) {
      rc = nn_seterr(NN_ERR_DEVICE, "matmul: cannot create a cuBLAS handle");
      goto done;
    }
    long long sa = a->shape[0] > 1 ? a->stride[0] : 0, sb = b->shape[0] > 1 ? b->stride[0] : 0;
    long long so = M * N;
    if (o->dtype == NN_DTYPE_F32) {
      float alpha = 1, beta = p->i[0] ? 1.0f : 0.0f;
      rc = blas_check(cublasSgemmStridedBatched(h, tb, ta, (int)N, (int)M, (int)K, &alpha,
                                                cu_ptr<float>(b), (int)ldb, sb, cu_ptr<float>(a),
                                                (int)lda, sa, &beta, cu_ptr<float>(o), (int)N, so,
                                                (int)B),
                      "matmul");
    } else {
      double alpha = 1, beta = p->i[0] ? 1.0 : 0.0;
      rc = blas_check(cublasDgemmStridedBatched(h, tb, ta, (int)N, (int)M, (int)K, &alpha,
                                                cu_ptr<double>(b), (int)ldb, sb, cu_ptr<double>(a),
                                                (int)lda, sa, &beta, cu_ptr<double>(o), (int)N, so,
                                                (int)B),
                      "matmul");
    }
  }
done:
  nn_tensor_free(ac);
  nn_tensor_free(bc);
  return rc;
}

void nn_cuda_register_core(nn_backend_i *be) {
  be->kernels[NN_OP_COPY] = cuda_copy;
  be->kernels[NN_OP_FILL] = cuda_fill;
  be->kernels[NN_OP_SUM] = cuda_sum;
  be->kernels[NN_OP_MATMUL] = cuda_matmul;
}
