/* nn/backend/cpu/cpu_index.c: CPU kernels of the indexing ops in nn/ops_index.def.
 *
 * gather walks out, idx and a view of t whose stride along dim is 0 with the row iterator, adding
 * idx * stride[dim] per element. scatter_add is deterministic without atomics: the elements of one
 * output row along dim are only ever touched by the thread that owns the corresponding "other"
 * coordinates (all dims but dim), and it adds them in ascending order of their position j along
 * dim. When idx is a broadcast 1-D index (segment sums, index_select and embedding backward) and
 * the other coordinates are too few to share out, ranges of targets are shared out instead, each
 * scanning the index in ascending j; both schedules give the same bits. */
#include "cpu.h"

void nn_cpu_register_rng(nn_backend_i *be); /* cpu_rng.c: the rng kernels of ops_index.def */

/* ---- index_check: out0 (2,) = {position of the first value outside [0, bound), value} ---- */

static int cpu_index_check(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *idx = in[0], *c = NULL;
  int64_t bound = p->i[0];
  /* Broadcast dims (stride 0) repeat values, so scan only their first slice: the first bad
   * element of the whole tensor in row-major order is the first bad one of that slice, with the
   * broadcast coordinates 0. */
  nn_tensor r = *idx; /* geometry only: shares idx's storage, never freed */
  int map[NN_MAX_DIMS], nr = 0;
  for (int d = 0; d < idx->ndim; d++)
    if (!(idx->stride[d] == 0 && idx->shape[d] > 1)) {
      r.shape[nr] = idx->shape[d];
      r.stride[nr] = idx->stride[d];
      map[nr++] = d;
    }
  r.ndim = nr;
  nn_tensor *src = &r;
  if (!nn_tensor_is_contiguous(&r)) {
    int rc = nn_tensor_empty(&c, nr, r.shape, NN_DTYPE_I64, nn_cpu);
    if (!rc) rc = nn_copy_(c, &r);
    if (rc) {
      nn_tensor_free(c);
      return rc;
    }
    src = c;
  }
  const int64_t *v = I64(src);
  int64_t n = nn_tensor_numel(src), first = INT64_MAX;
  const int64_t CH = 16384;
  int64_t nch = (n + CH - 1) / CH;
  /* the first bad position is unique, so a min-reduction over chunks is deterministic */
#pragma omp parallel for schedule(static) reduction(min : first) if (n >= CPU_PAR_MIN)
  for (int64_t ch = 0; ch < nch; ch++) {
    int64_t i1 = (ch + 1) * CH < n ? (ch + 1) * CH : n;
    for (int64_t i = ch * CH; i < i1; i++)
      if ((uint64_t)v[i] >= (uint64_t)bound) { /* also catches negatives */
        if (i < first) first = i;
        break;
      }
  }
  int64_t *o = I64(out[0]);
  if (first == INT64_MAX) {
    o[0] = -1;
    o[1] = 0;
  } else { /* slice position -> coordinates -> position in the whole tensor */
    int64_t coord[NN_MAX_DIMS] = {0}, rem = first, pos = 0;
    for (int k = nr - 1; k >= 0; k--) {
      coord[map[k]] = rem % r.shape[k];
      rem /= r.shape[k];
    }
    for (int d = 0; d < idx->ndim; d++) pos = pos * idx->shape[d] + coord[d];
    o[0] = pos;
    o[1] = v[first];
  }
  nn_tensor_free(c);
  return NN_OK;
}

/* ---- gather: out [..j..] = t[.. idx[..j..] ..] ----
 * Operands of the row iterator: 0 out, 1 idx, 2 t viewed with idx's shape and stride 0 on dim.
 * A pure copy, so it moves 4- or 8-byte words whatever the dtype. */

#define GATHER_ROW(NAME, T)                                                                        \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx) {                 \
    int64_t sd = *(const int64_t *)ctx;                                                            \
    T *o = (T *)p[0];                                                                              \
    const int64_t *ix = (const int64_t *)p[1];                                                     \
    const T *t = (const T *)p[2];                                                                  \
    if (s[1] == 0) { /* one index for the whole row (index_select, embedding) */                   \
      const T *src = t + ix[0] * sd;                                                               \
      if (s[0] == 1 && s[2] == 1)                                                                  \
        for (int64_t i = 0; i < n; i++) o[i] = src[i];                                             \
      else                                                                                         \
        for (int64_t i = 0; i < n; i++) o[i * s[0]] = src[i * s[2]];                               \
    } else {                                                                                       \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] = t[i * s[2] + ix[i * s[1]] * sd];               \
    }                                                                                              \
  }
GATHER_ROW(gather_w4, uint32_t)
GATHER_ROW(gather_w8, uint64_t)

static int cpu_gather(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *t = in[0], *idx = in[1];
  int dim = (int)p->i[0];
  /* a struct copy used only as iterator geometry: shares t's storage, never freed */
  nn_tensor tv = *t;
  for (int d = 0; d < idx->ndim; d++) tv.shape[d] = idx->shape[d];
  tv.stride[dim] = 0;
  int64_t sd = t->stride[dim];
  nn_tensor *ops[3] = {out[0], idx, &tv};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_iter_run(&it, nn_dtype_size(t->dtype) == 4 ? gather_w4 : gather_w8, &sd, true);
  return NN_OK;
}

/* ---- scatter_add: out[.. idx[..j..] ..] += src[..j..] ---- */

/* Drops dim d from t's geometry, with the shape of like (idx) off d. */
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

typedef struct {
  int64_t J;          /* idx->shape[dim] */
  int64_t so, si, ss; /* strides along dim of out, idx, src */
} scat_ctx;

/* One row of "other" coordinates (operands 0 out, 1 idx, 2 src with dim dropped); for each j in
 * ascending order, adds src[.., j, ..] into out at idx[.., j, ..]. */
#define SCAT_ROW(NAME, T)                                                                          \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *vctx) {                \
    const scat_ctx *c = vctx;                                                                      \
    T *o = (T *)p[0];                                                                              \
    for (int64_t j = 0; j < c->J; j++) {                                                           \
      const int64_t *ix = (const int64_t *)p[1] + j * c->si;                                       \
      const T *sv = (const T *)p[2] + j * c->ss;                                                   \
      if (s[1] == 0) {                                                                             \
        T *orow = o + ix[0] * c->so;                                                               \
        if (s[0] == 1 && s[2] == 1)                                                                \
          for (int64_t b = 0; b < n; b++) orow[b] += sv[b];                                        \
        else                                                                                       \
          for (int64_t b = 0; b < n; b++) orow[b * s[0]] += sv[b * s[2]];                          \
      } else {                                                                                     \
        for (int64_t b = 0; b < n; b++) o[b * s[0] + ix[b * s[1]] * c->so] += sv[b * s[2]];        \
      }                                                                                            \
    }                                                                                              \
  }
SCAT_ROW(scat_f32, float)
SCAT_ROW(scat_f64, double)
SCAT_ROW(scat_i64, int64_t)

/* out row (other coords) += src row, for the range path: operands 0 out, 1 src. */
#define ADD_ROW(NAME, T)                                                                           \
  static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx) {                 \
    (void)ctx;                                                                                     \
    T *o = (T *)p[0];                                                                              \
    const T *a = (const T *)p[1];                                                                  \
    if (s[0] == 1 && s[1] == 1)                                                                    \
      for (int64_t i = 0; i < n; i++) o[i] += a[i];                                                \
    else                                                                                           \
      for (int64_t i = 0; i < n; i++) o[i * s[0]] += a[i * s[1]];                                  \
  }
ADD_ROW(add_f32, float)
ADD_ROW(add_f64, double)
ADD_ROW(add_i64, int64_t)

/* Range path: idx depends on j only (a broadcast 1-D index). The targets 0..N-1 are cut into R
 * ranges; each range is one task that scans all of the (short) index in ascending j and adds the
 * src rows that land in its range. No sort, no scratch memory, and each output row still sums its
 * terms in ascending j, so R (which follows the thread count) does not change the bits. */
static void scatter_ranges(nn_tensor *o, const nn_tensor *idx, const nn_tensor *src, int dim) {
  int64_t J = idx->shape[dim], N = o->shape[dim], si = idx->stride[dim];
  const int64_t *iv = I64(idx);
  nn_tensor ov = drop_dim(o, idx, dim), sv = drop_dim(src, idx, dim);
  nn_tensor *ops[2] = {&ov, &sv};
  cpu_iter it0;
  cpu_iter_init(&it0, 2, ops);
  cpu_row_fn fn = o->dtype == NN_DTYPE_F32 ? add_f32 : o->dtype == NN_DTYPE_F64 ? add_f64 : add_i64;
  int64_t so = o->stride[dim] * (int64_t)nn_dtype_size(o->dtype);
  int64_t ss = src->stride[dim] * (int64_t)nn_dtype_size(src->dtype);
  bool one_row = it0.ndim == 1; /* the usual case: call the row function directly */
  int64_t rs[2] = {it0.stride[0][0], it0.stride[1][0]}, rn = it0.shape[0];
  int64_t T = nn_get_num_threads(), R = T > 1 ? 4 * T : 1; /* 4 per thread: skewed degrees */
  if (R > N) R = N;
    /* dynamic: the ranges' loads differ; which thread runs a range does not change its sums */
#pragma omp parallel for schedule(dynamic, 1) if (R > 1)
  for (int64_t q = 0; q < R; q++) {
    int64_t k0 = N * q / R, k1 = N * (q + 1) / R;
    cpu_iter it = it0;
    for (int64_t j = 0; j < J; j++) {
      int64_t k = iv[j * si];
      if (k < k0 || k >= k1) continue;
      it.base[0] = it0.base[0] + k * so;
      it.base[1] = it0.base[1] + j * ss;
      if (one_row)
        fn(rn, it.base, rs, NULL);
      else
        cpu_iter_run(&it, fn, NULL, false);
    }
  }
}

static int cpu_scatter_add(nn_tensor *const *out, nn_tensor *const *in, const nn_op_params *p) {
  nn_tensor *o = out[0], *idx = in[0], *src = in[1];
  int dim = (int)p->i[0];
  if (nn_tensor_numel(idx) == 0) return NN_OK;
  int64_t J = idx->shape[dim], others = nn_tensor_numel(idx) / J;
  bool broadcast = true; /* idx varies along dim only */
  for (int d = 0; d < idx->ndim; d++)
    if (d != dim && idx->shape[d] > 1 && idx->stride[d] != 0) broadcast = false;
  /* the range path when the other coordinates are too few to share out */
  if (broadcast && others < CPU_PAR_MIN && J * others >= CPU_PAR_MIN) {
    scatter_ranges(o, idx, src, dim);
    return NN_OK;
  }
  scat_ctx c = {J, o->stride[dim], idx->stride[dim], src->stride[dim]};
  nn_tensor ov = drop_dim(o, idx, dim), iv = drop_dim(idx, idx, dim), sv = drop_dim(src, idx, dim);
  nn_tensor *ops[3] = {&ov, &iv, &sv};
  cpu_iter it;
  cpu_iter_init(&it, 3, ops);
  cpu_row_fn fn = o->dtype == NN_DTYPE_F32   ? scat_f32
                  : o->dtype == NN_DTYPE_F64 ? scat_f64
                                             : scat_i64;
  /* rows (and chunks of one long row) cover disjoint other-coordinates: no two threads write
   * one output element */
  cpu_iter_run(&it, fn, &c, true);
  return NN_OK;
}

void nn_cpu_register_index(nn_backend_i *be) {
  be->kernels[NN_OP_INDEX_CHECK] = cpu_index_check;
  be->kernels[NN_OP_GATHER] = cpu_gather;
  be->kernels[NN_OP_SCATTER_ADD] = cpu_scatter_add;
  nn_cpu_register_rng(be);
}
