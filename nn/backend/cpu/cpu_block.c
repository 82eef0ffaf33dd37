/* nn/backend/cpu/cpu_block.c: block-sparse products of block-wise dropout on the CPU
 * (ops_block.def). N rows, I input and O output features, G row groups, bs block size.
 *
 * The rows are cut into segments on which both masks' row groups are constant. For each segment
 * the kept input columns of x and the kept block of w are gathered into packed scratch matrices,
 * one BLAS product runs on them, and the result is scattered back; a mask that keeps everything
 * skips its gather. The work is thus proportional to the kept blocks (the point of block-wise
 * dropout), and every output element is one dot product of BLAS, independent of the thread
 * count's effect beyond OpenBLAS's own (nn/README.md). */
#include "cpu.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* Row r0 of group g of G over N rows (integer division: ops_block.h). */
static int64_t grp_start(int64_t g, int64_t G, int64_t N) { return g * N / G; }

/* One mask: G groups of nb flags, block size bs; kept lists per group. NULL mask: all kept. */
typedef struct bmask {
  int64_t G, nb, bs, units;
  int64_t *idx; /* (G, nb): the kept block indices of each group, in order */
  int64_t *cnt; /* (G): how many */
  bool all;     /* no mask */
} bmask;

static int bmask_init(bmask *m, const nn_tensor *t, int64_t units, int64_t bs) {
  memset(m, 0, sizeof *m);
  m->units = units;
  if (!t) {
    m->all = true;
    m->G = 1;
    return NN_OK;
  }
  m->G = t->shape[0];
  m->nb = t->shape[1];
  m->bs = bs;
  m->idx = malloc((size_t)(m->G * m->nb + 1) * sizeof *m->idx);
  m->cnt = malloc((size_t)m->G * sizeof *m->cnt);
  if (!m->idx || !m->cnt) {
    free(m->idx);
    free(m->cnt);
    return nn_seterr(NN_ERR_NOMEM, "block_linear: out of memory");
  }
  const float *f = F32(t);
  for (int64_t g = 0; g < m->G; g++) {
    int64_t c = 0;
    for (int64_t b = 0; b < m->nb; b++)
      if (f[g * m->nb + b] != 0) m->idx[g * m->nb + c++] = b;
    m->cnt[g] = c;
  }
  return NN_OK;
}

static void bmask_deinit(bmask *m) {
  free(m->idx);
  free(m->cnt);
}

/* Scratch from the core's caching allocator (a training loop reuses the same blocks every step
 * instead of mapping fresh pages); NULL on failure. */
static float *scratch(nn_tensor **t, int64_t n) {
  *t = NULL;
  if (nn_tensor_empty(t, 1, (int64_t[]){n + 16}, NN_DTYPE_F32, nn_cpu)) return NULL;
  return F32(*t);
}

/* kept units of group g */
static int64_t bmask_kept(const bmask *m, int64_t g) {
  return m->all ? m->units : m->cnt[g] * m->bs;
}
/* group of the segment starting at row r (the last group whose start is <= r) */
static int64_t grp_of(const bmask *m, int64_t r, int64_t N) {
  if (m->all) return 0;
  int64_t g = N ? r * m->G / N : 0; /* a lower bound; step forward */
  while (g + 1 < m->G && grp_start(g + 1, m->G, N) <= r) g++;
  while (g > 0 && grp_start(g, m->G, N) > r) g--;
  return g;
}
static int64_t grp_end(const bmask *m, int64_t g, int64_t N) {
  return m->all ? N : grp_start(g + 1, m->G, N);
}

/* dst (R, kept) = src[r0 .. r0+R, kept columns of group g] (src has ld columns) */
static void gather_cols(float *dst, const float *src, int64_t ld, int64_t R, const bmask *m,
                        int64_t g) {
  int64_t k = m->cnt[g], bs = m->bs;
  const int64_t *idx = m->idx + g * m->nb;
  for (int64_t r = 0; r < R; r++)
    for (int64_t j = 0; j < k; j++)
      memcpy(dst + r * k * bs + j * bs, src + r * ld + idx[j] * bs, (size_t)bs * sizeof *dst);
}

/* dst[r0 .., kept columns] (+)= src (R, kept); add: accumulate */
static void scatter_cols(float *dst, int64_t ld, const float *src, int64_t R, const bmask *m,
                         int64_t g, bool add) {
  int64_t k = m->cnt[g], bs = m->bs;
  const int64_t *idx = m->idx + g * m->nb;
  for (int64_t r = 0; r < R; r++)
    for (int64_t j = 0; j < k; j++) {
      float *d = dst + r * ld + idx[j] * bs;
      const float *s = src + r * k * bs + j * bs;
      if (add)
        for (int64_t e = 0; e < bs; e++) d[e] += s[e];
      else
        memcpy(d, s, (size_t)bs * sizeof *d);
    }
}

/* Packed view of the kept rows (mo, go) and kept columns (mi, gi) of w (O, NI): returns a pointer
 * and leading dimension, gathering into buf when a mask is given. */
static const float *pack_w(float *buf, const float *w, int64_t NI, const bmask *mo, int64_t go,
                           const bmask *mi, int64_t gi, int64_t *ld) {
  if (mo->all && mi->all) {
    *ld = NI;
    return w;
  }
  int64_t ko = bmask_kept(mo, go), ki = bmask_kept(mi, gi);
  int64_t nbo = mo->all ? 1 : mo->cnt[go], bso = mo->all ? mo->units : mo->bs;
#pragma omp parallel for schedule(static) if (ko * ki >= CPU_PAR_MIN)
  for (int64_t jb = 0; jb < nbo; jb++) {
    int64_t o0 = mo->all ? 0 : mo->idx[go * mo->nb + jb] * bso;
    for (int64_t e = 0; e < bso; e++) {
      const float *src = w + (o0 + e) * NI;
      float *dst = buf + (jb * bso + e) * ki;
      if (mi->all)
        memcpy(dst, src, (size_t)NI * sizeof *dst);
      else
        gather_cols(dst, src, NI, 1, mi, gi);
    }
  }
  *ld = ki;
  return buf;
}

/* in0 x, in1 w, in2 bias?, in3 kin?, in4 kout? -> out (N, O) */
static int cpu_block_linear(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *xt = in[0], *wt = in[1];
  int64_t N = xt->shape[0], NI = xt->shape[1], O = wt->shape[0];
  const float *x = F32(xt), *w = F32(wt), *bias = p->i[2] ? F32(in[2]) : NULL;
  float *y = F32(out[0]);
  bmask mi, mo;
  int rc = bmask_init(&mi, p->i[3] ? in[3] : NULL, NI, p->i[0]);
  if (rc) return rc;
  rc = bmask_init(&mo, p->i[4] ? in[4] : NULL, O, p->i[1]);
  if (rc) {
    bmask_deinit(&mi);
    return rc;
  }
  nn_tensor *t_xs = NULL, *t_ws = NULL, *t_ys = NULL;
  float *xs = mi.all ? NULL : scratch(&t_xs, N * NI);
  float *ws = (mi.all && mo.all) ? NULL : scratch(&t_ws, O * NI);
  float *ys = mo.all ? NULL : scratch(&t_ys, N * O);
  if ((!mi.all && !xs) || (!(mi.all && mo.all) && !ws) || (!mo.all && !ys)) {
    rc = nn_seterr(NN_ERR_NOMEM, "block_linear: out of memory");
    goto done;
  }
  if (!mo.all) memset(y, 0, (size_t)N * (size_t)O * sizeof *y);
  for (int64_t r0 = 0; r0 < N;) {
    int64_t gi = grp_of(&mi, r0, N), go = grp_of(&mo, r0, N);
    int64_t e1 = grp_end(&mi, gi, N), e2 = grp_end(&mo, go, N), r1 = e1 < e2 ? e1 : e2, R = r1 - r0;
    if (R <= 0) break; /* cannot happen: r0 lies in both groups */
    int64_t ki = bmask_kept(&mi, gi), ko = bmask_kept(&mo, go);
    /* A: (R, ki) kept inputs; B: (ko, ki) kept weights; C: (R, ko) */
    const float *A = x + r0 * NI;
    int64_t lda = NI, ldb, ldc = mo.all ? O : ko;
    if (!mi.all) {
      gather_cols(xs, A, NI, R, &mi, gi);
      A = xs;
      lda = ki;
    }
    const float *B = pack_w(ws, w, NI, &mo, go, &mi, gi, &ldb);
    float *C = mo.all ? y + r0 * O : ys;
    if (ko > 0) {
      for (int64_t r = 0; r < R; r++) { /* C = bias (kept) or 0, then C += A @ B^T */
        float *c = C + r * ldc;
        if (!bias)
          memset(c, 0, (size_t)ko * sizeof *c);
        else if (mo.all)
          memcpy(c, bias, (size_t)O * sizeof *c);
        else
          gather_cols(c, bias, 0, 1, &mo, go);
      }
      if (ki > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)ko, (int)ki, 1.0f, A,
                    (int)lda, B, (int)ldb, 1.0f, C, (int)ldc);
      if (!mo.all) scatter_cols(y + r0 * O, O, ys, R, &mo, go, false);
    }
    r0 = r1;
  }
done:
  nn_tensor_free(t_xs);
  nn_tensor_free(t_ws);
  nn_tensor_free(t_ys);
  bmask_deinit(&mi);
  bmask_deinit(&mo);
  return rc;
}

/* outs flagged in i[5] (dx 1, dw 2, db 4); in0 dout (N, O), in1 x, in2 w, in3 kin?, in4 kout? */
static int cpu_block_linear_backward(nn_tensor *const *out, nn_tensor *const *in,
                                     const nn_op_params *p) {
  int k = 0;
  float *dx = (p->i[5] & 1) ? F32(out[k++]) : NULL;
  float *dw = (p->i[5] & 2) ? F32(out[k++]) : NULL;
  float *db = (p->i[5] & 4) ? F32(out[k++]) : NULL;
  nn_tensor *dt = in[0], *xt = in[1], *wt = in[2];
  int64_t N = dt->shape[0], O = dt->shape[1], NI = xt->shape[1];
  const float *dy = F32(dt), *x = F32(xt), *w = F32(wt);
  bmask mi, mo;
  int rc = bmask_init(&mi, p->i[3] ? in[3] : NULL, NI, p->i[0]);
  if (rc) return rc;
  rc = bmask_init(&mo, p->i[4] ? in[4] : NULL, O, p->i[1]);
  if (rc) {
    bmask_deinit(&mi);
    return rc;
  }
  bool packed = !(mi.all && mo.all);
  nn_tensor *t_xs = NULL, *t_dys = NULL, *t_ws = NULL, *t_dxs = NULL;
  float *xs = mi.all || !dw ? NULL : scratch(&t_xs, N * NI);
  float *dys = mo.all ? NULL : scratch(&t_dys, N * O);
  float *ws = packed ? scratch(&t_ws, O * NI) : NULL;
  float *dxs = mi.all || !dx ? NULL : scratch(&t_dxs, N * NI);
  double *dbs = calloc((size_t)O + 1, sizeof *dbs);
  if ((!mi.all && dw && !xs) || (!mo.all && !dys) || (packed && !ws) || (!mi.all && dx && !dxs) ||
      !dbs) {
    rc = nn_seterr(NN_ERR_NOMEM, "block_linear_backward: out of memory");
    goto done;
  }
  if (dx) memset(dx, 0, (size_t)N * (size_t)NI * sizeof *dx);
  if (dw) memset(dw, 0, (size_t)O * (size_t)NI * sizeof *dw);
  for (int64_t r0 = 0; r0 < N;) {
    int64_t gi = grp_of(&mi, r0, N), go = grp_of(&mo, r0, N);
    int64_t e1 = grp_end(&mi, gi, N), e2 = grp_end(&mo, go, N), r1 = e1 < e2 ? e1 : e2, R = r1 - r0;
    if (R <= 0) break;
    int64_t ki = bmask_kept(&mi, gi), ko = bmask_kept(&mo, go);
    if (ko == 0) {
      r0 = r1;
      continue;
    }
    /* D: (R, ko) kept output gradients; A: (R, ki) kept inputs */
    const float *D = dy + r0 * O, *A = x + r0 * NI;
    int64_t ldd = O, lda = NI;
    if (!mo.all) {
      gather_cols(dys, D, O, R, &mo, go);
      D = dys;
      ldd = ko;
    }
    if (dw && ki > 0) { /* dw[kept, kept] += D^T @ A */
      if (!mi.all) {
        gather_cols(xs, A, NI, R, &mi, gi);
        A = xs;
        lda = ki;
      }
      if (!packed)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ko, (int)ki, (int)R, 1.0f, D,
                    (int)ldd, A, (int)lda, 1.0f, dw, (int)NI);
      else {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ko, (int)ki, (int)R, 1.0f, D,
                    (int)ldd, A, (int)lda, 0.0f, ws, (int)ki);
        int64_t nbo = mo.all ? 1 : mo.cnt[go], bso = mo.all ? O : mo.bs;
#pragma omp parallel for schedule(static) if (ko * ki >= CPU_PAR_MIN)
        for (int64_t jb = 0; jb < nbo; jb++) {
          int64_t o0 = mo.all ? 0 : mo.idx[go * mo.nb + jb] * bso;
          for (int64_t e = 0; e < bso; e++) {
            float *d = dw + (o0 + e) * NI;
            const float *s = ws + (jb * bso + e) * ki;
            if (mi.all)
              for (int64_t c = 0; c < NI; c++) d[c] += s[c];
            else
              scatter_cols(d, NI, s, 1, &mi, gi, true);
          }
        }
      }
    }
    if (dx && ki > 0) { /* dx[rows, kept] = D @ W[kept, kept] */
      int64_t ldb;
      const float *B = pack_w(ws, w, NI, &mo, go, &mi, gi, &ldb);
      float *C = mi.all ? dx + r0 * NI : dxs;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)ki, (int)ko, 1.0f, D,
                  (int)ldd, B, (int)ldb, 0.0f, C, (int)(mi.all ? NI : ki));
      if (!mi.all) scatter_cols(dx + r0 * NI, NI, dxs, R, &mi, gi, false);
    }
    if (db) { /* column sums in double, rows in order */
      for (int64_t r = 0; r < R; r++) {
        const float *d = D + r * ldd;
        if (mo.all)
          for (int64_t c = 0; c < O; c++) dbs[c] += d[c];
        else
          for (int64_t j = 0; j < mo.cnt[go]; j++)
            for (int64_t e = 0; e < mo.bs; e++)
              dbs[mo.idx[go * mo.nb + j] * mo.bs + e] += d[j * mo.bs + e];
      }
    }
    r0 = r1;
  }
  if (db)
    for (int64_t c = 0; c < O; c++) db[c] = (float)dbs[c];
done:
  nn_tensor_free(t_xs);
  nn_tensor_free(t_dys);
  nn_tensor_free(t_ws);
  nn_tensor_free(t_dxs);
  free(dbs);
  bmask_deinit(&mi);
  bmask_deinit(&mo);
  return rc;
}

/* out (N, U) = in0 (G, U/bs) of each row's group, flags repeated bs times */
static int cpu_block_mask_expand(nn_tensor *const *out, nn_tensor *const *in,
                                 const nn_op_params *p) {
  int64_t N = out[0]->shape[0], U = out[0]->shape[1], G = in[0]->shape[0], nb = in[0]->shape[1];
  int64_t bs = p->i[0];
  const float *m = F32(in[0]);
  float *o = F32(out[0]);
  for (int64_t g = 0; g < G; g++)
    for (int64_t r = grp_start(g, G, N); r < grp_start(g + 1, G, N); r++)
      for (int64_t b = 0; b < nb; b++)
        for (int64_t e = 0; e < bs; e++) o[r * U + b * bs + e] = m[g * nb + b] != 0 ? 1.0f : 0.0f;
  return NN_OK;
}

void nn_cpu_register_block(nn_backend_i *be) {
  be->kernels[NN_OP_BLOCK_LINEAR] = cpu_block_linear;
  be->kernels[NN_OP_BLOCK_LINEAR_BACKWARD] = cpu_block_linear_backward;
  be->kernels[NN_OP_BLOCK_MASK_EXPAND] = cpu_block_mask_expand;
}
