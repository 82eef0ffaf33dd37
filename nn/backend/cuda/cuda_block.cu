/* nn/backend/cuda/cuda_block.cu: block-sparse products of block-wise dropout on the GPU
 * (ops_block.def; reference: cpu_block.c). N rows, I input and O output features, G row groups
 * (group g: rows [g*N/G, (g+1)*N/G)), bs block size, nb blocks per mask row, U units.
 *
 * The CPU's plan, step for step. The two masks (a few dozen rows of flags) are read to the host
 * with one synchronising copy; the host builds each group's list of kept blocks and the inverse
 * map (block -> position among the kept ones, -1 when dropped) and sends both tables back in one
 * copy. The rows are cut into segments on which both masks' groups are constant; per segment the
 * kept block of w is packed (one kernel), and one cuBLAS product runs on the packed matrices
 * (ko x ki per row: the work is proportional to the kept blocks). The kept columns of x (and of
 * dout in the backward) are packed for all rows by one kernel before the loop; one kernel after
 * it scatters the packed results back, writing zeros at dropped units, and adds the bias. Packed
 * row r keeps row stride U, so segment s is the matrix at packed + r0*U with leading dimension U.
 *
 * Results: each output element is one cuBLAS dot product over the same kept terms as the CPU's
 * BLAS (another summation order: float32 rounding); dw adds the segments' packed products in row
 * order, as the CPU does; dbias sums each column over the rows in order in double, the CPU's
 * order and bits. No atomics: every element is written by one thread, so the kernels are
 * deterministic with or without nn_set_deterministic (cuBLAS's GEMMs are too, on one stream). */
#include "cuda.h"

#include <cublas_v2.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- masks and their tables */

/* One block mask on the host: G groups of nb flags, block size bs, over `units` units; an absent
 * mask keeps everything (all: one group, one block of all the units). */
typedef struct {
  int64_t G, nb, bs, units;
  bool all;
  const int64_t *idx; /* (G, nb): the kept block indices of each group, in order */
  const int64_t *cnt; /* (G): how many */
  const int64_t *pos; /* (G, nb): block b's position among its group's kept blocks, or -1 */
} bmask;

/* The device view of a bmask (tables in device memory), passed to kernels by value. */
typedef struct {
  int64_t G, nb, bs, units;
  int all;
  const int64_t *idx, *cnt, *pos;
} dmask;

/* Row group of row r < N (the last group whose start g*N/G is <= r; cpu_block.c's grp_of). */
static __host__ __device__ __forceinline__ int64_t grp_of(int64_t r, int64_t G, int64_t N) {
  return ((r + 1) * G - 1) / N;
}

static int64_t h_group(const bmask *m, int64_t r, int64_t N) {
  return m->all ? 0 : grp_of(r, m->G, N);
}
static int64_t h_end(const bmask *m, int64_t g, int64_t N) {
  return m->all ? N : (g + 1) * N / m->G;
}
static int64_t h_kept(const bmask *m, int64_t g) { return m->all ? m->units : m->cnt[g] * m->bs; }

static __device__ __forceinline__ int64_t d_group(const dmask &m, int64_t r, int64_t N) {
  return m.all ? 0 : grp_of(r, m.G, N);
}
/* kept units of group g */
static __device__ __forceinline__ int64_t d_kept(const dmask &m, int64_t g) {
  return m.all ? m.units : m.cnt[g] * m.bs;
}
/* the unit at kept position j < d_kept(m, g) of group g */
static __device__ __forceinline__ int64_t d_unit(const dmask &m, int64_t g, int64_t j) {
  return m.all ? j : m.idx[g * m.nb + j / m.bs] * m.bs + j % m.bs;
}
/* kept position of unit u in group g, -1 when u is dropped */
static __device__ __forceinline__ int64_t d_pos(const dmask &m, int64_t g, int64_t u) {
  if (m.all) return u;
  int64_t p = m.pos[g * m.nb + u / m.bs];
  return p < 0 ? -1 : p * m.bs + u % m.bs;
}

/* Both masks of one call: [0] the input mask (over I), [1] the output mask (over O). */
typedef struct {
  bmask h[2];
  dmask d[2];
  int64_t *tab;   /* host tables of both masks (malloc'd) */
  nn_tensor *dev; /* their device copy (cu_scratch) */
} bmasks;

static void bmasks_deinit(bmasks *b) {
  free(b->tab);
  nn_tensor_free(b->dev);
}

/* Reads the masks mt[k] (contiguous float32 (G, units/bs) on the device, or NULL) with one
 * synchronisation and builds their tables on both sides. */
static int bmasks_init(bmasks *b, nn_tensor *const mt[2], const int64_t units[2],
                       const int64_t bs[2], const char *op) {
  memset(b, 0, sizeof *b);
  int64_t nf = 0, nt = 0;
  for (int k = 0; k < 2; k++) {
    bmask *m = &b->h[k];
    m->units = units[k];
    m->all = mt[k] == NULL;
    m->G = m->all ? 1 : mt[k]->shape[0];
    m->nb = m->all ? 1 : mt[k]->shape[1];
    m->bs = m->all ? units[k] : bs[k];
    if (!m->all) {
      nf += m->G * m->nb;
      nt += 2 * m->G * m->nb + m->G;
    }
  }
  if (!nt) { /* no mask: nothing to read */
    for (int k = 0; k < 2; k++)
      b->d[k] = dmask{b->h[k].G, b->h[k].nb, b->h[k].bs, b->h[k].units, 1, NULL, NULL, NULL};
    return NN_OK;
  }
  float *flags = (float *)malloc((size_t)(nf + 1) * sizeof *flags);
  b->tab = (int64_t *)malloc((size_t)nt * sizeof *b->tab);
  int64_t *dtab = NULL;
  int rc = flags && b->tab ? NN_OK : nn_seterr(NN_ERR_NOMEM, "%s: out of memory", op);
  int64_t off = 0;
  for (int k = 0; k < 2 && !rc; k++) {
    const bmask *m = &b->h[k];
    if (m->all || m->G * m->nb == 0) continue;
    rc = cu_check(cudaMemcpyAsync(flags + off, cu_ptr<float>(mt[k]),
                                  (size_t)(m->G * m->nb) * sizeof *flags, cudaMemcpyDeviceToHost,
                                  cu_stream()),
                  op);
    off += m->G * m->nb;
  }
  if (!rc) rc = cu_check(cudaStreamSynchronize(cu_stream()), op);
  if (!rc) rc = cu_scratch(&b->dev, (void **)&dtab, (size_t)nt * sizeof *dtab);
  if (rc) {
    free(flags);
    return rc;
  }
  /* per mask: idx (G, nb), cnt (G), pos (G, nb), the CPU's bmask_init rule (flag != 0 keeps) */
  const float *f = flags;
  int64_t *t = b->tab;
  for (int k = 0; k < 2; k++) {
    bmask *m = &b->h[k];
    if (m->all) {
      b->d[k] = dmask{m->G, m->nb, m->bs, m->units, 1, NULL, NULL, NULL};
      continue;
    }
    int64_t G = m->G, nb = m->nb, *idx = t, *cnt = t + G * nb, *pos = t + G * nb + G;
    for (int64_t g = 0; g < G; g++) {
      int64_t c = 0;
      for (int64_t j = 0; j < nb; j++) {
        idx[g * nb + j] = 0;
        pos[g * nb + j] = -1;
      }
      for (int64_t j = 0; j < nb; j++)
        if (f[g * nb + j] != 0) {
          pos[g * nb + j] = c;
          idx[g * nb + c++] = j;
        }
      cnt[g] = c;
    }
    m->idx = idx;
    m->cnt = cnt;
    m->pos = pos;
    int64_t o = t - b->tab;
    b->d[k] = dmask{G, nb, m->bs, m->units, 0, dtab + o, dtab + o + G * nb, dtab + o + G * nb + G};
    f += G * nb;
    t += 2 * G * nb + G;
  }
  free(flags);
  /* from pageable memory: returns once staged; b->tab lives until bmasks_deinit anyway */
  return cu_check(
      cudaMemcpyAsync(dtab, b->tab, (size_t)nt * sizeof *dtab, cudaMemcpyHostToDevice, cu_stream()),
      op);
}

/* ---------------------------------------------------------------- kernels */

#define GRID_LOOP(i, n)                                                                            \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                        \
       i += (int64_t)gridDim.x * blockDim.x)

/* dst (N, U): row r's kept units of src (N, U) packed to the left, dst[r, j] = src[r, unit(j)]
 * for j < kept(group(r)); the rest of the row is left alone. */
static __global__ void block_gather_kernel(float *dst, const float *src, int64_t N, int64_t U,
                                           dmask m) {
  GRID_LOOP(i, N * U) {
    int64_t r = i / U, j = i % U, g = d_group(m, r, N);
    if (j < d_kept(m, g)) dst[i] = src[r * U + d_unit(m, g, j)];
  }
}

/* dst (ko, ki) = w[kept outputs of group go, kept inputs of group gi], w (O, I) */
static __global__ void block_pack_w_kernel(float *dst, const float *w, int64_t I, dmask mo,
                                           int64_t go, int64_t ko, dmask mi, int64_t gi,
                                           int64_t ki) {
  GRID_LOOP(i, ko * ki) {
    int64_t a = i / ki, c = i % ki;
    dst[i] = w[d_unit(mo, go, a) * I + d_unit(mi, gi, c)];
  }
}

/* dw[kept outputs of go, kept inputs of gi] += src (ko, ki), dw (O, I) */
static __global__ void block_dw_add_kernel(float *dw, const float *src, int64_t I, dmask mo,
                                           int64_t go, int64_t ko, dmask mi, int64_t gi,
                                           int64_t ki) {
  GRID_LOOP(i, ko * ki) {
    int64_t a = i / ki, c = i % ki;
    dw[d_unit(mo, go, a) * I + d_unit(mi, gi, c)] += src[i];
  }
}

/* y (N, O) from the packed products ys (row r's kept outputs at ys[r*O + position]; ys may be
 * y itself when no output mask is given): 0 at dropped outputs; where the row's group keeps no
 * input the product was skipped and the value is the bias alone (cpu_block_linear's C init). */
static __global__ void block_linear_out_kernel(float *y, const float *ys, const float *bias,
                                               int64_t N, int64_t O, dmask mi, dmask mo) {
  GRID_LOOP(i, N * O) {
    int64_t r = i / O, o = i % O, p = d_pos(mo, d_group(mo, r, N), o);
    float v;
    if (p < 0)
      v = 0.0f;
    else if (d_kept(mi, d_group(mi, r, N)) > 0)
      v = bias ? ys[r * O + p] + bias[o] : ys[r * O + p];
    else
      v = bias ? bias[o] : 0.0f;
    y[i] = v;
  }
}

/* dx (N, I) from the packed products dxs (may be dx itself without an input mask): 0 at dropped
 * inputs and on rows whose group keeps no output (their product was skipped). */
static __global__ void block_dx_out_kernel(float *dx, const float *dxs, int64_t N, int64_t I,
                                           dmask mi, dmask mo) {
  GRID_LOOP(i, N * I) {
    int64_t r = i / I, u = i % I, p = d_pos(mi, d_group(mi, r, N), u);
    dx[i] = p >= 0 && d_kept(mo, d_group(mo, r, N)) > 0 ? dxs[r * I + p] : 0.0f;
  }
}

/* db[o] = sum of dout[r, o] over the rows r whose group keeps o, in double, rows in order (the
 * CPU's order, so the CPU's bits); one thread per column, coalesced along a row */
static __global__ void block_dbias_kernel(float *db, const float *dy, int64_t N, int64_t O,
                                          dmask mo) {
  GRID_LOOP(o, O) {
    double s = 0;
    for (int64_t r = 0; r < N; r++)
      if (d_pos(mo, d_group(mo, r, N), o) >= 0) s += dy[r * O + o];
    db[o] = (float)s;
  }
}

/* out (N, U) = flag of mask (G, nb) at row r's group and unit u's block, as 1 or 0 */
static __global__ void block_mask_expand_kernel(float *out, const float *m, int64_t N, int64_t U,
                                                int64_t G, int64_t nb, int64_t bs) {
  GRID_LOOP(i, N * U) {
    int64_t r = i / U, u = i % U;
    out[i] = m[grp_of(r, G, N) * nb + u / bs] != 0 ? 1.0f : 0.0f;
  }
}

/* ---------------------------------------------------------------- host side */

static int blas_check(cublasStatus_t s, const char *op) {
  if (s == CUBLAS_STATUS_SUCCESS) return NN_OK;
  return nn_seterr(s == CUBLAS_STATUS_ALLOC_FAILED ? NN_ERR_NOMEM : NN_ERR_DEVICE,
                   "%s: cuBLAS error %s", op, cublasGetStatusString(s));
}

/* Scratch of up to 5 float areas from one cu_scratch; n[k] floats each (0: NULL), each area
 * 256-byte aligned (cuBLAS's fast paths like aligned operands). */
static int scratch_areas(nn_tensor **t, float **areas, const int64_t *n, int k) {
  const int64_t align = 64;
  int64_t tot = 0;
  for (int j = 0; j < k; j++) tot += n[j] ? (n[j] + align - 1) / align * align : 0;
  *t = NULL;
  for (int j = 0; j < k; j++) areas[j] = NULL;
  if (!tot) return NN_OK;
  void *p = NULL;
  int rc = cu_scratch(t, &p, (size_t)tot * sizeof(float));
  if (rc) return rc;
  float *f = (float *)p;
  for (int j = 0; j < k; j++) {
    if (!n[j]) continue;
    areas[j] = f;
    f += (n[j] + align - 1) / align * align;
  }
  return NN_OK;
}

#define LAUNCH(kernel, n, ...)                                                                     \
  kernel<<<cu_blocks((n), CU_THREADS), CU_THREADS, 0, cu_stream()>>>(__VA_ARGS__)

/* in0 x (N, I), in1 w (O, I), in2 bias (O)?, in3 kin?, in4 kout? -> out (N, O) */
static int cuda_block_linear(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  const char *op = "block_linear";
  nn_tensor *xt = in[0], *wt = in[1];
  int64_t N = xt->shape[0], I = xt->shape[1], O = wt->shape[0];
  const float *x = cu_ptr<float>(xt), *w = cu_ptr<float>(wt);
  const float *bias = p->i[2] ? cu_ptr<float>(in[2]) : NULL;
  float *y = cu_ptr<float>(out[0]);
  if (N == 0 || O == 0) return NN_OK;
  nn_tensor *mt[2] = {p->i[3] ? in[3] : NULL, p->i[4] ? in[4] : NULL}, *scr = NULL;
  const int64_t units[2] = {I, O}, bs[2] = {p->i[0], p->i[1]};
  bmasks b;
  int rc = bmasks_init(&b, mt, units, bs, op);
  const bmask *mi = &b.h[0], *mo = &b.h[1];
  const dmask di = b.d[0], dm = b.d[1];
  bool packed = !(mi->all && mo->all), gaps = false;
  float *area[3] = {NULL, NULL, NULL}; /* xs (N, I), ys (N, O), ws (O, I) */
  cublasHandle_t h = NULL;
  if (!rc) {
    int64_t n[3] = {mi->all ? 0 : N * I, mo->all ? 0 : N * O, packed ? O * I : 0};
    rc = scratch_areas(&scr, area, n, 3);
  }
  if (!rc && !(h = cu_cublas()))
    rc = nn_seterr(NN_ERR_DEVICE, "%s: cannot create a cuBLAS handle", op);
  if (!rc && !mi->all && I > 0) {
    LAUNCH(block_gather_kernel, N * I, area[0], x, N, I, di);
    rc = CU_LAUNCHED(op);
  }
  for (int64_t r0 = 0; !rc && r0 < N;) {
    int64_t gi = h_group(mi, r0, N), go = h_group(mo, r0, N);
    int64_t e1 = h_end(mi, gi, N), e2 = h_end(mo, go, N), r1 = e1 < e2 ? e1 : e2, R = r1 - r0;
    NN_ASSERT(R > 0); /* r0 lies in both groups */
    int64_t ki = h_kept(mi, gi), ko = h_kept(mo, go);
    if (ki == 0 || ko == 0) { /* the out kernel writes the bias or 0 */
      gaps = true;
      r0 = r1;
      continue;
    }
    /* A (R, ki) kept inputs, B (ko, ki) kept weights, C (R, ko): C = A @ B^T, column-major
     * C^T (ko, R) = op_T(B as (ki, ko)) @ (A as (ki, R)) */
    const float *A = (mi->all ? x : area[0]) + r0 * I, *B = w;
    int64_t ldb = I;
    if (packed) {
      LAUNCH(block_pack_w_kernel, ko * ki, area[2], w, I, dm, go, ko, di, gi, ki);
      rc = CU_LAUNCHED(op);
      B = area[2];
      ldb = ki;
    }
    float *C = (mo->all ? y : area[1]) + r0 * O, alpha = 1, beta = 0;
    if (!rc)
      rc = blas_check(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)ko, (int)R, (int)ki, &alpha, B,
                                  (int)ldb, A, (int)I, &beta, C, (int)O),
                      op);
    r0 = r1;
  }
  if (!rc && (!mo->all || bias || gaps)) {
    LAUNCH(block_linear_out_kernel, N * O, y, mo->all ? y : area[1], bias, N, O, di, dm);
    rc = CU_LAUNCHED(op);
  }
  nn_tensor_free(scr);
  bmasks_deinit(&b);
  return rc;
}

/* outs flagged in i[5] (dx 1, dw 2, db 4); in0 dout (N, O), in1 x (N, I), in2 w (O, I),
 * in3 kin?, in4 kout? */
static int cuda_block_linear_backward(nn_tensor *const *out, nn_tensor *const *in,
                                      const nn_op_params *p) {
  const char *op = "block_linear_backward";
  int k = 0;
  float *dx = (p->i[5] & 1) ? cu_ptr<float>(out[k++]) : NULL;
  float *dw = (p->i[5] & 2) ? cu_ptr<float>(out[k++]) : NULL;
  float *db = (p->i[5] & 4) ? cu_ptr<float>(out[k++]) : NULL;
  nn_tensor *dt = in[0], *xt = in[1], *wt = in[2];
  int64_t N = dt->shape[0], O = dt->shape[1], I = xt->shape[1];
  const float *dy = cu_ptr<float>(dt), *x = cu_ptr<float>(xt), *w = cu_ptr<float>(wt);
  nn_tensor *mt[2] = {p->i[3] ? in[3] : NULL, p->i[4] ? in[4] : NULL}, *scr = NULL;
  const int64_t units[2] = {I, O}, bs[2] = {p->i[0], p->i[1]};
  int rc = NN_OK;
  if (dw && O * I > 0)
    rc = cu_check(cudaMemsetAsync(dw, 0, (size_t)(O * I) * sizeof *dw, cu_stream()), op);
  if (rc) return rc;
  if (N == 0) { /* dx is empty, dw zero, dbias zero */
    if (db && O > 0) rc = cu_check(cudaMemsetAsync(db, 0, (size_t)O * sizeof *db, cu_stream()), op);
    return rc;
  }
  bmasks b;
  rc = bmasks_init(&b, mt, units, bs, op);
  const bmask *mi = &b.h[0], *mo = &b.h[1];
  const dmask di = b.d[0], dm = b.d[1];
  bool packed = !(mi->all && mo->all), gaps = false;
  /* dys (N, O), xs (N, I), wsd (O, I) dw's packed product, wsp (O, I) packed w, dxs (N, I) */
  float *area[5] = {NULL, NULL, NULL, NULL, NULL};
  cublasHandle_t h = NULL;
  if (!rc) {
    int64_t n[5] = {mo->all ? 0 : N * O, !mi->all && dw ? N * I : 0, packed && dw ? O * I : 0,
                    packed && dx ? O * I : 0, !mi->all && dx ? N * I : 0};
    rc = scratch_areas(&scr, area, n, 5);
  }
  if (!rc && !(h = cu_cublas()))
    rc = nn_seterr(NN_ERR_DEVICE, "%s: cannot create a cuBLAS handle", op);
  if (!rc && !mo->all && O > 0) {
    LAUNCH(block_gather_kernel, N * O, area[0], dy, N, O, dm);
    rc = CU_LAUNCHED(op);
  }
  if (!rc && area[1] && I > 0) {
    LAUNCH(block_gather_kernel, N * I, area[1], x, N, I, di);
    rc = CU_LAUNCHED(op);
  }
  for (int64_t r0 = 0; !rc && r0 < N;) {
    int64_t gi = h_group(mi, r0, N), go = h_group(mo, r0, N);
    int64_t e1 = h_end(mi, gi, N), e2 = h_end(mo, go, N), r1 = e1 < e2 ? e1 : e2, R = r1 - r0;
    NN_ASSERT(R > 0);
    int64_t ki = h_kept(mi, gi), ko = h_kept(mo, go);
    if (ko == 0 || ki == 0) { /* no terms: dx rows 0 (the out kernel), dw and db untouched */
      gaps = gaps || ko == 0;
      r0 = r1;
      continue;
    }
    /* D (R, ko) kept output gradients, A (R, ki) kept inputs, both with row stride O / I */
    const float *D = (mo->all ? dy : area[0]) + r0 * O;
    float alpha = 1, beta = 0;
    if (dw) { /* M (ko, ki) = D^T @ A; column-major M^T (ki, ko) = (A as (ki, R)) @ op_T(D) */
      const float *A = (mi->all ? x : area[1]) + r0 * I;
      if (!packed) { /* one segment: straight into dw (zeroed above), as the CPU's beta 1 */
        float one = 1;
        rc = blas_check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)ki, (int)ko, (int)R, &alpha,
                                    A, (int)I, D, (int)O, &one, dw, (int)I),
                        op);
      } else {
        rc = blas_check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)ki, (int)ko, (int)R, &alpha,
                                    A, (int)I, D, (int)O, &beta, area[2], (int)ki),
                        op);
        if (!rc) {
          LAUNCH(block_dw_add_kernel, ko * ki, dw, area[2], I, dm, go, ko, di, gi, ki);
          rc = CU_LAUNCHED(op);
        }
      }
    }
    if (!rc && dx) { /* C (R, ki) = D @ Wp, Wp (ko, ki); column-major C^T = Wp^T @ D^T */
      const float *B = w;
      int64_t ldb = I;
      if (packed) {
        LAUNCH(block_pack_w_kernel, ko * ki, area[3], w, I, dm, go, ko, di, gi, ki);
        rc = CU_LAUNCHED(op);
        B = area[3];
        ldb = ki;
      }
      float *C = (mi->all ? dx : area[4]) + r0 * I;
      if (!rc)
        rc = blas_check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)ki, (int)R, (int)ko, &alpha,
                                    B, (int)ldb, D, (int)O, &beta, C, (int)I),
                        op);
    }
    r0 = r1;
  }
  if (!rc && dx && I > 0 && (!mi->all || gaps)) {
    LAUNCH(block_dx_out_kernel, N * I, dx, mi->all ? dx : area[4], N, I, di, dm);
    rc = CU_LAUNCHED(op);
  }
  if (!rc && db && O > 0) {
    LAUNCH(block_dbias_kernel, O, db, dy, N, O, dm);
    rc = CU_LAUNCHED(op);
  }
  nn_tensor_free(scr);
  bmasks_deinit(&b);
  return rc;
}

/* out (N, U) = in0 mask (G, U/bs) of each row's group, flags repeated bs = i[0] times */
static int cuda_block_mask_expand(nn_tensor *const *out, nn_tensor *const *in,
                                  const nn_op_params *p) {
  int64_t N = out[0]->shape[0], U = out[0]->shape[1], G = in[0]->shape[0], nb = in[0]->shape[1];
  if (N * U == 0) return NN_OK;
  LAUNCH(block_mask_expand_kernel, N * U, cu_ptr<float>(out[0]), cu_ptr<float>(in[0]), N, U, G, nb,
         p->i[0]);
  return CU_LAUNCHED("block_mask_expand");
}

void nn_cuda_register_block(nn_backend_i *be) {
  be->kernels[NN_OP_BLOCK_LINEAR] = cuda_block_linear;
  be->kernels[NN_OP_BLOCK_LINEAR_BACKWARD] = cuda_block_linear_backward;
  be->kernels[NN_OP_BLOCK_MASK_EXPAND] = cuda_block_mask_expand;
}
