/* nn/backend/cpu/cpu_core.c: copy/convert, fill, sum and matrix products on the CPU.
 * The only file with cblas.h: matrix products go to OpenBLAS, transposed views as transposes.
 * Shapes: B batch, M rows, K inner, N columns. */
#include "cpu.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

/* ---- copy: out = in0 (expanded to out's shape), converting dtype ---- */

#define COPY_ROW(NAME, TO, TI)                                                                     \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx) {                 \
    (void)ctx;                                                                                     \
    TO *o = (TO *)p[0];                                                                            \
    const TI *a = (const TI *)p[1];                                                                \
    if (s[0] == 1 && s[1] == 1)                                                                    \
      for (int64_t i = 0; i < n; i++) o[i] = (TO)a[i];                                             \
    else                                                                                           \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = (TO)a[i * s[1]];                               \
  }
COPY_ROW(copy_ff, float, float)
COPY_ROW(copy_fd, float, double)
COPY_ROW(copy_fl, float, int64_t)
COPY_ROW(copy_df, double, float)
COPY_ROW(copy_dd, double, double)
COPY_ROW(copy_dl, double, int64_t)
COPY_ROW(copy_lf, int64_t, float)
COPY_ROW(copy_ld, int64_t, double)
COPY_ROW(copy_ll, int64_t, int64_t)

static int cpu_copy(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  static const cpu_row_fn fns[3][3] = {
      {copy_ff, copy_fd, copy_fl}, {copy_df, copy_dd, copy_dl}, {copy_lf, copy_ld, copy_ll}};
  nn_tensor *ops[2] = {out[0], in[0]};
  cpu_iter it;
  cpu_iter_init(&it, 2, ops);
  cpu_iter_run(&it, fns[out[0]->dtype][in[0]->dtype], NULL, true);
  return NN_OK;
}

/* ---- fill ---- */

typedef struct {
  nn_dtype dt;
  double v;
} fill_ctx;

static void fill_any(int64_t n, char *const *p, const int64_t *s, const void *vctx) {
  const fill_ctx *c = vctx;
  switch (c->dt) {
  case NN_DTYPE_F32: {
    float *o = (float *)p[0], v = (float)c->v;
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = v;
  } break;
  case NN_DTYPE_F64: {
    double *o = (double *)p[0];
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = c->v;
  } break;
  case NN_DTYPE_I64: {
    int64_t *o = (int64_t *)p[0], v = (int64_t)c->v;
    for (int64_t i = 0; i < n; i++) o[i * s[0]] = v;
  } break;
  }
}

static int cpu_fill(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)in;
  fill_ctx c = {out[0]->dtype, p->f[0]};
  cpu_iter it;
  cpu_iter_init(&it, 1, out);
  cpu_iter_run(&it, fill_any, &c, true);
  return NN_OK;
}

/* ---- sum: out (keepdim) = sum of in0 over the dims where out has size 1 ----
 * Accumulates in double, walking the input in row-major order: the result does not depend on the
 * thread count. */

static void sum_row(int64_t n, char *const *p, const int64_t *s, const void *ctx) {
  double *acc = (double *)p[0];
  nn_dtype dt = *(const nn_dtype *)ctx;
  if (dt == NN_DTYPE_F32) {
    const float *a = (const float *)p[1];
    if (s[0] == 0) {
      double t = 0;
      for (int64_t i = 0; i < n; i++) t += a[i * s[1]];
      acc[0] += t;
    } else if (s[0] == 1 && s[1] == 1) { /* a row added into the accumulators (a column sum) */
#pragma omp simd
      for (int64_t i = 0; i < n; i++) acc[i] += a[i];
    } else {
      for (int64_t i = 0; i < n; i++) acc[i * s[0]] += a[i * s[1]];
    }
  } else {
    const double *a = (const double *)p[1];
    if (s[0] == 0) {
      double t = 0;
      for (int64_t i = 0; i < n; i++) t += a[i * s[1]];
      acc[0] += t;
    } else {
      for (int64_t i = 0; i < n; i++) acc[i * s[0]] += a[i * s[1]];
    }
  }
}

static int cpu_sum(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  (void)p;
  nn_tensor *o = out[0], *a = in[0];
  nn_tensor *acc = NULL, *eacc = NULL;
  int rc = nn_tensor_zeros(&acc, o->ndim, o->shape, NN_DTYPE_F64, nn_cpu);
  if (!rc) {
    eacc = nn_alias(acc);
    if (!eacc) rc = nn_seterr(NN_ERR_NOMEM, "sum: out of memory");
  }
  if (!rc) {
    for (int d = 0; d < a->ndim; d++) {
      eacc->shape[d] = a->shape[d];
      if (o->shape[d] == 1) eacc->stride[d] = 0;
    }
    nn_tensor *ops[2] = {eacc, a};
    cpu_iter it;
    cpu_iter_init(&it, 2, ops);
    /* parallel only over rows that write distinct accumulators */
    bool par = it.ndim >= 2;
    for (int d = 0; d < it.ndim - 1; d++)
      if (it.stride[0][d] == 0) par = false;
    if (it.stride[0][it.ndim - 1] == 0 && it.ndim == 1) par = false;
    cpu_iter_run(&it, sum_row, &a->dtype, par);
    nn_tensor *src = acc;
    nn_tensor *ops2[2] = {o, src};
    cpu_iter it2;
    cpu_iter_init(&it2, 2, ops2);
    static const cpu_row_fn conv[2] = {copy_fd, copy_dd};
    cpu_iter_run(&it2, conv[o->dtype == NN_DTYPE_F64], NULL, false);
  }
  nn_tensor_free(eacc);
  nn_tensor_free(acc);
  return rc;
}

/* ---- matmul: out (B, M, N) = in0 (B, M, K) @ in1 (B, K, N) [+ out if p->i[0]] ---- */

/* BLAS layout of a 2-D row-major operand with strides (rs, cs): row-major no-trans when cs == 1,
 * as a transposed column-major-like matrix when rs == 1. */
static int blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *tr,
                       int64_t *ld) {
  if (cs == 1 && rs >= (cols > 1 ? cols : 1)) {
    *tr = CblasNoTrans;
    *ld = rs;
    return 1;
  }
  if (rs == 1 && cs >= (rows > 1 ? rows : 1)) {
    *tr = CblasTrans;
    *ld = cs;
    return 1;
  }
  if (rows == 1 && cs == 1) { /* a single row: any leading dim */
    *tr = CblasNoTrans;
    *ld = cols > 1 ? cols : 1;
    return 1;
  }
  if (cols == 1 && rs == 1) {
    *tr = CblasTrans;
    *ld = rows > 1 ? rows : 1;
    return 1;
  }
  return 0;
}

int cpu_blas_threads(void) {
#ifdef _OPENMP
  if (omp_in_parallel()) return 1;
#ifdef OPENBLAS_THREAD
  if (openblas_get_parallel() == OPENBLAS_THREAD) return 1; /* pthreads OpenBLAS: its own threads */
#endif
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/* With several threads, one float32 product of a training step's size runs as one column panel
 * of out per thread, each a single-threaded BLAS call (the OpenMP build of OpenBLAS runs
 * single-threaded inside a parallel region), instead of one BLAS call threading itself: on the
 * 2-core machine this made the MLP benchmark's step ~6% faster (bench/README.md), as the panels
 * need no synchronisation inside BLAS. Every element of out is still one BLAS dot product over
 * K; the panels are fixed by N and the thread count, so the bits depend on the thread count only,
 * as before. Not inside a parallel region, nor for products too small to pay the fork. */
static int split_threads(int64_t B, int64_t M, int64_t N, int64_t K, nn_dtype dt) {
  int nt = cpu_blas_threads();
  if (B != 1 || dt != NN_DTYPE_F32 || nt < 2) return 1;
  if (N < 64 * (int64_t)nt || (double)M * N * K < 1e6) return 1;
  return nt;
}

/* First column of panel t of n panels over N columns, on a multiple of 16 floats (one cache line
 * and one AVX-512 vector) except the end. */
static int64_t panel_start(int64_t N, int t, int n) {
  return t >= n ? N : (N * t / n) & ~(int64_t)15;
}

/* Columns [panel_start(N, t, n), panel_start(N, t + 1, n)) of o (M, N) = op(a) op(b) + beta o,
 * float32, one single-threaded BLAS call. */
static void sgemm_panel(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *o, int t, int n) {
  int64_t n0 = panel_start(N, t, n), n1 = panel_start(N, t + 1, n);
  if (n1 <= n0) return;
  cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)(n1 - n0), (int)K, 1.0f, a, (int)lda,
              b + (tb == CblasNoTrans ? n0 : n0 * ldb), (int)ldb, beta, o + n0, (int)N);
}

static int cpu_matmul(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *a = in[0], *b = in[1];
  nn_tensor *ac = NULL, *bc = NULL;
  int64_t B = o->shape[0], M = o->shape[1], N = o->shape[2], K = a->shape[2];
  CBLAS_TRANSPOSE ta, tb;
  int64_t lda, ldb;
  int rc = NN_OK;
  /* operands BLAS cannot read in place (general strides) are packed first */
  if (!blas_layout(M, K, a->stride[1], a->stride[2], &ta, &lda)) {
    rc = nn_tensor_empty(&ac, 3, a->shape, a->dtype, nn_cpu);
    if (!rc) rc = nn_copy_(ac, a);
    if (rc) goto done;
    a = ac;
    blas_layout(M, K, a->stride[1], a->stride[2], &ta, &lda);
  }
  if (!blas_layout(K, N, b->stride[1], b->stride[2], &tb, &ldb)) {
    rc = nn_tensor_empty(&bc, 3, b->shape, b->dtype, nn_cpu);
    if (!rc) rc = nn_copy_(bc, b);
    if (rc) goto done;
    b = bc;
    blas_layout(K, N, b->stride[1], b->stride[2], &tb, &ldb);
  }
  NN_ASSERT(o->stride[2] == 1 && o->stride[1] == N);
  double beta = p->i[0] ? 1.0 : 0.0;
  if (M == 0 || N == 0) goto done;
  if (K == 0) {
    if (!p->i[0]) rc = nn_fill_(o, 0.0);
    goto done;
  }
  int split = split_threads(B, M, N, K, o->dtype);
  if (split > 1) {
#pragma omp parallel for num_threads(split) schedule(static, 1)
    for (int t = 0; t < split; t++)
      sgemm_panel(ta, tb, M, N, K, F32(a), lda, F32(b), ldb, (float)beta, F32(o), t, split);
    goto done;
  }
  for (int64_t i = 0; i < B; i++) {
    if (o->dtype == NN_DTYPE_F32)
      cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, 1.0f, F32(a) + i * a->stride[0],
                  (int)lda, F32(b) + i * b->stride[0], (int)ldb, (float)beta,
                  F32(o) + i * o->stride[0], (int)N);
    else
      cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, 1.0, F64(a) + i * a->stride[0],
                  (int)lda, F64(b) + i * b->stride[0], (int)ldb, beta, F64(o) + i * o->stride[0],
                  (int)N);
  }
done:
  nn_tensor_free(ac);
  nn_tensor_free(bc);
  return rc;
}

/* Two independent products (a layer's input and weight gradients) at once, each on its own half
 * of the threads (column panels within a half), in one parallel region: on the 2-core machine
 * the pair of a 512-unit layer's gradients ran 1.18-1.26x faster this way than one product after
 * the other, each split over both cores (wb_bench_nn, bench/README.md): whole products per thread
 * pack each operand once, and there is one fork instead of two. Products too small, too unequal
 * (more than 2x apart in work), not float32, or with operands BLAS cannot read in place run as two
 * cpu_matmul calls. The bits depend on the thread count only, as cpu_matmul's do. */
static int cpu_matmul_pair(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  CBLAS_TRANSPOSE ta[2], tb[2];
  int64_t lda[2], ldb[2], M[2], N[2], K[2];
  double work[2];
  int nt = cpu_blas_threads();
  bool together = nt >= 2;
  for (int k = 0; k < 2 && together; k++) {
    nn_tensor *o = out[k], *a = in[2 * k], *b = in[2 * k + 1];
    M[k] = o->shape[1], N[k] = o->shape[2], K[k] = a->shape[2];
    work[k] = (double)M[k] * N[k] * K[k];
    together = o->shape[0] == 1 && o->dtype == NN_DTYPE_F32 && work[k] >= 1e6 &&
               blas_layout(M[k], K[k], a->stride[1], a->stride[2], &ta[k], &lda[k]) &&
               blas_layout(K[k], N[k], b->stride[1], b->stride[2], &tb[k], &ldb[k]);
  }
  if (together) together = work[0] <= 2 * work[1] && work[1] <= 2 * work[0];
  if (!together) {
    nn_tensor *o0[1] = {out[0]}, *i0[2] = {in[0], in[1]}, *o1[1] = {out[1]},
              *i1[2] = {in[2], in[3]};
    int rc = cpu_matmul(o0, i0, p); /* p: no accumulation (ops_core.def) */
    return rc ? rc : cpu_matmul(o1, i1, p);
  }
  int half = nt / 2; /* threads [0, half) on product 0, the rest on product 1 */
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int t = 0; t < nt; t++) {
    int k = t < half ? 0 : 1, n = k == 0 ? half : nt - half, j = k == 0 ? t : t - half;
    sgemm_panel(ta[k], tb[k], M[k], N[k], K[k], F32(in[2 * k]), lda[k], F32(in[2 * k + 1]), ldb[k],
                0.0f, F32(out[k]), j, n);
  }
  return NN_OK;
}

void nn_cpu_register_core(nn_backend_i *be) {
  be->kernels[NN_OP_COPY] = cpu_copy;
  be->kernels[NN_OP_FILL] = cpu_fill;
  be->kernels[NN_OP_SUM] = cpu_sum;
  be->kernels[NN_OP_MATMUL] = cpu_matmul;
  be->kernels[NN_OP_MATMUL_PAIR] = cpu_matmul_pair;
}
