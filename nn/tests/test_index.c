/* nn/tests/test_index.c: embedding, index_select, gather, scatter_add, concat, stack, split and
 * one_hot: forward against plain double references (contiguous and strided inputs, negative
 * dims, repeated indices), backward against finite differences, the determinism of scatter_add
 * (both of its CPU schedules against a float sum in index order, and across thread counts), and
 * the error messages of bad input. */
#include "harness.h"

#include <math.h>
#include <string.h>

static nn_tensor *req(nn_tensor *t) {
  nn_tensor_set_requires_grad(t, true);
  return t;
}

/* Replaces *t by a strided copy with the same values. */
static void make_noncontig(nn_tensor **t) {
  nn_tensor *s = th_noncontig(*t);
  nn_tensor_free(*t);
  *t = s;
}

static nn_tensor *idx_of(int ndim, const int64_t *shape, const int64_t *v) {
  nn_tensor *t = NULL;
  nn_tensor_from_data(&t, ndim, shape, NN_DTYPE_I64, v);
  return t;
}

/* Row-major flat index <-> coordinates. */
static void unravel(int64_t f, int ndim, const int64_t *shape, int64_t *c) {
  for (int d = ndim - 1; d >= 0; d--) {
    c[d] = shape[d] ? f % shape[d] : 0;
    f = shape[d] ? f / shape[d] : 0;
  }
}

static int64_t ravel(int ndim, const int64_t *shape, const int64_t *c) {
  int64_t f = 0;
  for (int d = 0; d < ndim; d++) f = f * shape[d] + c[d];
  return f;
}

/* ---- embedding ---- */

static int emb_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  (void)ctx;
  return nn_embedding(out, in[0], in[1]);
}

static void test_embedding(void) {
  int64_t wsh[2] = {7, 5};
  struct {
    int ndim;
    int64_t shape[3];
    int64_t v[8];
  } cases[] = {
      {1, {4}, {1, 6, 1, 0}},
      {2, {2, 3}, {3, 3, 3, 0, 6, 2}},
      {0, {0}, {4}},
      {1, {0}, {0}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
    for (int nc = 0; nc < 2; nc++) {
      nn_tensor *w = th_rand(2, wsh, -1, 1),
                *idx = idx_of(cases[c].ndim, cases[c].shape, cases[c].v);
      if (nc) {
        make_noncontig(&w);
        make_noncontig(&idx);
      }
      nn_tensor *o = NULL;
      OK(nn_embedding(&o, w, idx));
      if (!o) continue;
      int64_t K = nn_tensor_numel(idx);
      CHECK(o->ndim == cases[c].ndim + 1 && o->shape[o->ndim - 1] == 5 &&
                nn_tensor_numel(o) == K * 5,
            "embedding output shape");
      double *ref = malloc((size_t)(K * 5 + 1) * sizeof *ref);
      for (int64_t k = 0; k < K; k++)
        for (int d = 0; d < 5; d++)
          ref[k * 5 + d] = nn_tensor_get_flat(w, (int64_t)nn_tensor_get_flat(idx, k) * 5 + d);
      char what[64];
      snprintf(what, sizeof what, "embedding case %zu nc %d", c, nc);
      th_close(o, ref, 0, 0, what);
      free(ref);
      nn_tensor_free(o);
      req(w);
      nn_tensor *in[2] = {w, idx};
      th_gradcheck(emb_fn, NULL, 2, in, 1e-3, 2e-3, 2e-2, what);
      nn_tensor_free(w);
      nn_tensor_free(idx);
    }
  /* repeated indices: the row's gradient is the count of its uses, exactly */
  nn_tensor *w = req(th_rand(2, wsh, -1, 1)),
            *idx = idx_of(1, (int64_t[]){5}, (int64_t[]){2, 2, 5, 2, 0});
  nn_tensor *o = NULL, *s = NULL;
  OK(nn_embedding(&o, w, idx));
  OK(nn_sum_dims(&s, o, 3u, false));
  OK(nn_backward(s, NULL));
  double want[7] = {1, 0, 3, 0, 0, 1, 0};
  for (int r = 0; r < 7; r++)
    CHECK(nn_tensor_get_flat(w->grad, r * 5 + 1) == want[r], "embedding grad row %d is %g, want %g",
          r, nn_tensor_get_flat(w->grad, r * 5 + 1), want[r]);
  nn_tensor_free(o);
  nn_tensor_free(s);
  /* errors */
  nn_tensor *bad = idx_of(1, (int64_t[]){4}, (int64_t[]){1, 2, 7, 0});
  EXPECT_ERR(nn_embedding(&o, w, bad), NN_ERR_INDEX,
             "embedding: index 7 at position 2 of indices (4,) is out of range for the rows of "
             "weight (7, 5): valid range is [0, 7)");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_set_flat(bad, 2, -1);
  EXPECT_ERR(nn_embedding(&o, w, bad), NN_ERR_INDEX, "index -1 at position 2");
  nn_tensor *fidx = th_rand(1, (int64_t[]){3}, 0, 3);
  EXPECT_ERR(nn_embedding(&o, w, fidx), NN_ERR_DTYPE,
             "embedding: indices must be int64, got float32");
  nn_tensor *w1 = th_rand(1, (int64_t[]){7}, 0, 1);
  EXPECT_ERR(nn_embedding(&o, w1, idx), NN_ERR_SHAPE,
             "embedding: weight must be 2-D (V, D), got shape (7,)");
  nn_tensor_free(w1);
  nn_tensor_free(fidx);
  nn_tensor_free(bad);
  nn_tensor_free(w);
  nn_tensor_free(idx);
}

/* ---- index_select ---- */

typedef struct {
  int dim;
} dim_ctx;

static int isel_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_index_select(out, in[0], ((dim_ctx *)ctx)->dim, in[1]);
}

static void test_index_select(void) {
  int64_t sh[3] = {3, 4, 5};
  int64_t iv[6] = {2, 0, 2, 1, 2, 0};
  int dims[5] = {0, 1, 2, -1, -2};
  for (int k = 0; k < 5; k++)
    for (int nc = 0; nc < 2; nc++) {
      int dim = dims[k], d = dim < 0 ? dim + 3 : dim;
      nn_tensor *t = th_rand(3, sh, -1, 1), *idx = idx_of(1, (int64_t[]){6}, iv), *o = NULL;
      if (nc) {
        make_noncontig(&t);
        make_noncontig(&idx);
      }
      OK(nn_index_select(&o, t, dim, idx));
      if (!o) continue;
      int64_t osh[3] = {3, 4, 5};
      osh[d] = 6;
      CHECK(o->shape[0] == osh[0] && o->shape[1] == osh[1] && o->shape[2] == osh[2],
            "index_select shape");
      int64_t n = nn_tensor_numel(o), c[3];
      double *ref = malloc((size_t)n * sizeof *ref);
      for (int64_t f = 0; f < n; f++) {
        unravel(f, 3, osh, c);
        c[d] = iv[c[d]];
        ref[f] = nn_tensor_get_flat(t, ravel(3, sh, c));
      }
      char what[64];
      snprintf(what, sizeof what, "index_select dim %d nc %d", dim, nc);
      th_close(o, ref, 0, 0, what);
      free(ref);
      nn_tensor_free(o);
      req(t);
      dim_ctx cx = {dim};
      nn_tensor *in[2] = {t, idx};
      th_gradcheck(isel_fn, &cx, 2, in, 1e-3, 2e-3, 2e-2, what);
      nn_tensor_free(t);
      nn_tensor_free(idx);
    }
  nn_tensor *t = th_rand(3, sh, -1, 1), *o = NULL;
  nn_tensor *i2 = idx_of(2, (int64_t[]){2, 2}, (int64_t[]){0, 1, 1, 0});
  EXPECT_ERR(nn_index_select(&o, t, 0, i2), NN_ERR_SHAPE,
             "index_select: indices must be 1-D, got shape (2, 2)");
  nn_tensor *i1 = idx_of(1, (int64_t[]){3}, (int64_t[]){0, 4, 1});
  EXPECT_ERR(nn_index_select(&o, t, 3, i1), NN_ERR_INDEX,
             "index_select: dim 3 out of range for shape (3, 4, 5)");
  EXPECT_ERR(nn_index_select(&o, t, -4, i1), NN_ERR_INDEX, "dim -4 out of range");
  EXPECT_ERR(nn_index_select(&o, t, 1, i1), NN_ERR_INDEX,
             "index_select: index 4 at position 1 of indices (3,) is out of range for dim 1 of "
             "input (3, 4, 5): valid range is [0, 4)");
  OK(nn_index_select(&o, t, -1, i1)); /* 4 < 5: fine on the last dim */
  CHECK(o && o->shape[2] == 3, "index_select on dim -1");
  nn_tensor_free(o);
  nn_tensor_free(i1);
  nn_tensor_free(i2);
  nn_tensor_free(t);
}

/* ---- gather ---- */

static int gather_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_gather(out, in[0], ((dim_ctx *)ctx)->dim, in[1]);
}

static void test_gather(void) {
  int64_t sh[3] = {3, 4, 5};
  int dims[4] = {0, 1, -1, 2};
  int64_t ish[4][3] = {{5, 3, 4}, {2, 6, 5}, {3, 2, 7}, {1, 4, 2}};
  for (int k = 0; k < 4; k++)
    for (int nc = 0; nc < 2; nc++) {
      int dim = dims[k], d = dim < 0 ? dim + 3 : dim;
      nn_tensor *t = th_rand(3, sh, -1, 1), *idx = th_randint(3, ish[k], sh[d]), *o = NULL;
      if (nc) {
        make_noncontig(&t);
        make_noncontig(&idx);
      }
      OK(nn_gather(&o, t, dim, idx));
      if (!o) continue;
      CHECK(nn_tensor_same_shape(o, idx), "gather output has idx's shape");
      int64_t n = nn_tensor_numel(o), c[3];
      double *ref = malloc((size_t)n * sizeof *ref);
      for (int64_t f = 0; f < n; f++) {
        unravel(f, 3, ish[k], c);
        c[d] = (int64_t)nn_tensor_get_flat(idx, f);
        ref[f] = nn_tensor_get_flat(t, ravel(3, sh, c));
      }
      char what[64];
      snprintf(what, sizeof what, "gather dim %d nc %d", dim, nc);
      th_close(o, ref, 0, 0, what);
      free(ref);
      nn_tensor_free(o);
      req(t);
      dim_ctx cx = {dim};
      nn_tensor *in[2] = {t, idx};
      th_gradcheck(gather_fn, &cx, 2, in, 1e-3, 2e-3, 2e-2, what);
      nn_tensor_free(t);
      nn_tensor_free(idx);
    }
  /* int64 values gather too (no autograd) */
  nn_tensor *lt = idx_of(2, (int64_t[]){2, 3}, (int64_t[]){10, 11, 12, 13, 14, 15});
  nn_tensor *gi = idx_of(2, (int64_t[]){2, 2}, (int64_t[]){2, 0, 1, 1}), *o = NULL;
  OK(nn_gather(&o, lt, 1, gi));
  double lref[4] = {12, 10, 14, 14};
  if (o) th_close(o, lref, 0, 0, "gather int64");
  nn_tensor_free(o);
  nn_tensor *t = th_rand(3, sh, -1, 1);
  EXPECT_ERR(nn_gather(&o, t, 0, gi), NN_ERR_SHAPE,
             "gather: indices (2, 2) must have as many dims as input (3, 4, 5)");
  nn_tensor *big = th_randint(3, (int64_t[]){2, 5, 5}, 3);
  EXPECT_ERR(nn_gather(&o, t, 0, big), NN_ERR_SHAPE,
             "gather: indices (2, 5, 5) are larger than input (3, 4, 5) in dim 1");
  nn_tensor *oob = th_randint(3, (int64_t[]){2, 2, 2}, 3);
  nn_tensor_set_flat(oob, 5, 9);
  EXPECT_ERR(nn_gather(&o, t, -2, oob), NN_ERR_INDEX,
             "gather: index 9 at position 5 of indices (2, 2, 2) is out of range for dim 1 of "
             "input (3, 4, 5): valid range is [0, 4)");
  nn_tensor *fi = th_rand(3, (int64_t[]){2, 2, 2}, 0, 1);
  EXPECT_ERR(nn_gather(&o, t, 0, fi), NN_ERR_DTYPE, "gather: indices must be int64, got float32");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_free(fi);
  nn_tensor_free(oob);
  nn_tensor_free(big);
  nn_tensor_free(t);
  nn_tensor_free(lt);
  nn_tensor_free(gi);
}

/* ---- scatter_add ---- */

static int scatter_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_scatter_add(out, in[0], ((dim_ctx *)ctx)->dim, in[1], in[2]);
}

/* out = t + src scattered, in double */
static double *scatter_ref(const nn_tensor *t, int d, const nn_tensor *idx, const nn_tensor *src) {
  double *ref = th_to_double(t);
  int64_t n = nn_tensor_numel(idx), c[NN_MAX_DIMS];
  for (int64_t f = 0; f < n; f++) {
    unravel(f, idx->ndim, idx->shape, c);
    double v = nn_tensor_get_flat(src, ravel(src->ndim, src->shape, c));
    c[d] = (int64_t)nn_tensor_get_flat(idx, f);
    ref[ravel(t->ndim, t->shape, c)] += v;
  }
  return ref;
}

static void test_scatter_add(void) {
  struct {
    int dim;
    int64_t t[3], idx[3], src[3];
  } cases[] = {
      {0, {4, 5, 2}, {6, 3, 2}, {7, 4, 2}},
      {1, {3, 4, 2}, {2, 7, 2}, {2, 7, 3}},
      {-1, {2, 3, 4}, {2, 3, 6}, {2, 3, 6}},
      {-3, {5, 2, 2}, {3, 1, 2}, {3, 2, 2}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
    for (int nc = 0; nc < 2; nc++) {
      int dim = cases[k].dim, d = dim < 0 ? dim + 3 : dim;
      nn_tensor *t = th_rand(3, cases[k].t, -1, 1), *src = th_rand(3, cases[k].src, -1, 1);
      nn_tensor *idx = th_randint(3, cases[k].idx, cases[k].t[d]), *o = NULL;
      if (nc) {
        make_noncontig(&t);
        make_noncontig(&src);
        make_noncontig(&idx);
      }
      OK(nn_scatter_add(&o, t, dim, idx, src));
      if (!o) continue;
      CHECK(nn_tensor_same_shape(o, t), "scatter_add output has t's shape");
      double *ref = scatter_ref(t, d, idx, src);
      char what[64];
      snprintf(what, sizeof what, "scatter_add case %zu nc %d", k, nc);
      th_close(o, ref, 1e-6, 1e-6, what);
      free(ref);
      nn_tensor_free(o);
      req(t);
      req(src);
      dim_ctx cx = {dim};
      nn_tensor *in[3] = {t, idx, src};
      th_gradcheck(scatter_fn, &cx, 3, in, 1e-3, 2e-3, 2e-2, what);
      nn_tensor_free(t);
      nn_tensor_free(src);
      nn_tensor_free(idx);
    }
  /* repeated targets in 1-D: out[i] = t[i] + sum of src at i */
  nn_tensor *t = NULL, *src = NULL, *o = NULL;
  nn_tensor_from_data(&t, 1, (int64_t[]){3}, NN_DTYPE_F32, (float[]){1, 2, 3});
  nn_tensor_from_data(&src, 1, (int64_t[]){5}, NN_DTYPE_F32, (float[]){10, 20, 30, 40, 50});
  nn_tensor *idx = idx_of(1, (int64_t[]){5}, (int64_t[]){2, 0, 2, 2, 0});
  OK(nn_scatter_add(&o, t, 0, idx, src));
  double r1[3] = {71, 2, 83};
  if (o) th_close(o, r1, 0, 0, "scatter_add repeated 1-D");
  CHECK(nn_tensor_get_flat(t, 0) == 1.0, "scatter_add leaves t alone");
  nn_tensor_free(o);
  /* int64 */
  nn_tensor *lt = idx_of(1, (int64_t[]){3}, (int64_t[]){1, 1, 1});
  nn_tensor *ls = idx_of(1, (int64_t[]){5}, (int64_t[]){1, 2, 3, 4, 5});
  OK(nn_scatter_add(&o, lt, 0, idx, ls));
  double r2[3] = {8, 1, 9};
  if (o) th_close(o, r2, 0, 0, "scatter_add int64");
  nn_tensor_free(o);
  /* errors */
  nn_tensor *s64 = th_rand_dt(1, (int64_t[]){5}, 0, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_scatter_add(&o, t, 0, idx, s64), NN_ERR_DTYPE,
             "scatter_add: input and src must share a dtype, got float32 and float64");
  nn_tensor *small = th_rand(1, (int64_t[]){4}, 0, 1);
  EXPECT_ERR(nn_scatter_add(&o, t, 0, idx, small), NN_ERR_SHAPE,
             "scatter_add: input (3,), indices (5,), src (4,): all need the same number of dims");
  nn_tensor *bad = idx_of(1, (int64_t[]){5}, (int64_t[]){0, 1, 3, 0, 0});
  EXPECT_ERR(nn_scatter_add(&o, t, 0, bad, src), NN_ERR_INDEX,
             "scatter_add: index 3 at position 2 of indices (5,) is out of range for dim 0 of "
             "input (3,): valid range is [0, 3)");
  EXPECT_ERR(nn_scatter_add(&o, t, 1, idx, src), NN_ERR_INDEX,
             "scatter_add: dim 1 out of range for shape (3,)");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_free(bad);
  nn_tensor_free(small);
  nn_tensor_free(s64);
  nn_tensor_free(lt);
  nn_tensor_free(ls);
  nn_tensor_free(t);
  nn_tensor_free(src);
  nn_tensor_free(idx);
}

/* Both CPU schedules of scatter_add (ranges of targets, and rows of other coordinates) must give
 * exactly the float sum in ascending index position, for any thread count. */
static void scatter_exact(int64_t N, int64_t J, int64_t F, bool broadcast, const char *what) {
  nn_tensor *t = th_rand(2, (int64_t[]){N, F}, -1, 1), *src = th_rand(2, (int64_t[]){J, F}, -1, 1);
  nn_tensor *idx = NULL, *e1 = th_randint(1, (int64_t[]){J}, N), *e2 = NULL;
  if (broadcast) { /* segment sum: one target per row j, broadcast over F */
    nn_reshape(&e2, e1, 2, (int64_t[]){J, 1});
    nn_expand(&idx, e2, 2, (int64_t[]){J, F});
  } else {
    idx = th_randint(2, (int64_t[]){J, F}, N);
  }
  float *ref = malloc((size_t)(N * F) * sizeof *ref);
  for (int64_t i = 0; i < N * F; i++) ref[i] = (float)nn_tensor_get_flat(t, i);
  for (int64_t j = 0; j < J; j++)
    for (int64_t f = 0; f < F; f++) {
      int64_t n = (int64_t)nn_tensor_get_flat(idx, j * F + f);
      ref[n * F + f] += (float)nn_tensor_get_flat(src, j * F + f);
    }
  nn_tensor *o[2] = {NULL, NULL};
  int threads[2] = {1, 2};
  for (int k = 0; k < 2; k++) {
    nn_set_num_threads(threads[k]);
    OK(nn_scatter_add(&o[k], t, 0, idx, src));
  }
  nn_set_num_threads(0);
  if (o[0] && o[1]) {
    int same = memcmp(nn_tensor_data(o[0]), nn_tensor_data(o[1]), (size_t)(N * F) * 4) == 0;
    CHECK(same, "%s: 1 and 2 threads differ", what);
    int exact = memcmp(nn_tensor_data(o[0]), ref, (size_t)(N * F) * 4) == 0;
    CHECK(exact, "%s: not the float sum in index order", what);
  }
  free(ref);
  nn_tensor_free(o[0]);
  nn_tensor_free(o[1]);
  nn_tensor_free(t);
  nn_tensor_free(src);
  nn_tensor_free(idx);
  nn_tensor_free(e1);
  nn_tensor_free(e2);
}

static void test_scatter_determinism(void) {
  scatter_exact(100, 5000, 8, true, "segment sum (target ranges)");
  scatter_exact(3, 20, 40000, true, "broadcast index, wide rows");
  scatter_exact(3, 10, 40000, false, "general index, wide rows");
  scatter_exact(50, 3000, 16, false, "general index, narrow rows");
}

/* ---- concat, stack, split ---- */

typedef struct {
  int n, dim, stack;
} cat_ctx;

static int cat_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  cat_ctx *c = ctx;
  return c->stack ? nn_stack(out, c->n, in, c->dim) : nn_concat(out, c->n, in, c->dim);
}

static void check_concat(int n, int dim, int nc, int grad_mask) {
  int64_t base[3] = {2, 3, 2};
  int d = dim < 0 ? dim + 3 : dim;
  nn_tensor *ts[20];
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    int64_t sh[3] = {base[0], base[1], base[2]};
    sh[d] = 1 + i % 3;
    total += sh[d];
    ts[i] = th_rand(3, sh, -1, 1);
    if (nc) make_noncontig(&ts[i]);
  }
  nn_tensor *o = NULL;
  OK(nn_concat(&o, n, ts, dim));
  char what[64];
  snprintf(what, sizeof what, "concat n %d dim %d nc %d", n, dim, nc);
  if (o) {
    int64_t osh[3] = {base[0], base[1], base[2]};
    osh[d] = total;
    CHECK(o->shape[d] == total, "%s: size along dim", what);
    int64_t m = nn_tensor_numel(o), c[3];
    double *ref = malloc((size_t)m * sizeof *ref);
    for (int64_t f = 0; f < m; f++) {
      unravel(f, 3, osh, c);
      int i = 0;
      while (c[d] >= ts[i]->shape[d]) c[d] -= ts[i++]->shape[d];
      ref[f] = nn_tensor_get_flat(ts[i], ravel(3, ts[i]->shape, c));
    }
    th_close(o, ref, 0, 0, what);
    free(ref);
    nn_tensor_free(o);
  }
  for (int i = 0; i < n; i++)
    if ((grad_mask >> (i % 8)) & 1) req(ts[i]);
  cat_ctx cx = {n, dim, 0};
  th_gradcheck(cat_fn, &cx, n, ts, 1e-3, 2e-3, 2e-2, what);
  for (int i = 0; i < n; i++) {
    CHECK(((grad_mask >> (i % 8)) & 1) || !ts[i]->grad, "%s: input %d got a gradient", what, i);
    nn_tensor_free(ts[i]);
  }
}

static void test_concat(void) {
  int dims[4] = {0, 1, -1, 2};
  for (int k = 0; k < 4; k++)
    for (int nc = 0; nc < 2; nc++) check_concat(3, dims[k], nc, 0xff);
  check_concat(1, 1, 0, 0xff);
  check_concat(9, 1, 0, 0xff);   /* 9 inputs: three group nodes under out's node */
  check_concat(20, -1, 1, 0xff); /* 20: five groups, then two, then out */
  check_concat(11, 0, 0, 0x5a);  /* only some inputs require grad */
  /* one tensor twice: its gradient is the sum of both spans' */
  nn_tensor *x2 = req(th_rand(2, (int64_t[]){2, 3}, -1, 1)), *xx[3] = {x2, x2, x2};
  cat_ctx c3 = {3, 1, 0};
  th_gradcheck(cat_fn, &c3, 3, xx, 1e-3, 2e-3, 2e-2, "concat of one tensor three times");
  nn_tensor_free(x2);
  /* int64 concat copies */
  nn_tensor *a = idx_of(1, (int64_t[]){2}, (int64_t[]){1, 2}),
            *b = idx_of(1, (int64_t[]){1}, (int64_t[]){3});
  nn_tensor *o = NULL, *ab[2] = {a, b};
  OK(nn_concat(&o, 2, ab, 0));
  double r[3] = {1, 2, 3};
  if (o) th_close(o, r, 0, 0, "concat int64");
  nn_tensor_free(o);
  /* errors */
  nn_tensor *x = th_rand(2, (int64_t[]){2, 3}, 0, 1), *y = th_rand(2, (int64_t[]){3, 3}, 0, 1);
  nn_tensor *xy[2] = {x, y}, *xa[2] = {x, a};
  EXPECT_ERR(
      nn_concat(&o, 2, xy, 1), NN_ERR_SHAPE,
      "concat: input 1 has shape (3, 3) but input 0 has shape (2, 3); all dims but 1 must match");
  OK(nn_concat(&o, 2, xy, -2));
  CHECK(o && o->shape[0] == 5, "concat dim -2");
  nn_tensor_free(o);
  EXPECT_ERR(nn_concat(&o, 2, xa, 0), NN_ERR_DTYPE,
             "concat: input 1 is int64 but input 0 is float32");
  EXPECT_ERR(nn_concat(&o, 0, xy, 0), NN_ERR_ARG, "concat: needs at least one input, got 0");
  EXPECT_ERR(nn_concat(&o, 2, xy, 2), NN_ERR_INDEX, "concat: dim 2 out of range for shape (2, 3)");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_free(x);
  nn_tensor_free(y);
  nn_tensor_free(a);
  nn_tensor_free(b);
}

static void test_stack(void) {
  int64_t sh[2] = {2, 3};
  int dims[5] = {0, 1, 2, -1, -3};
  for (int k = 0; k < 5; k++) {
    int dim = dims[k], d = dim < 0 ? dim + 3 : dim;
    nn_tensor *ts[6];
    for (int i = 0; i < 6; i++) ts[i] = th_rand(2, sh, -1, 1);
    make_noncontig(&ts[1]);
    nn_tensor *o = NULL;
    OK(nn_stack(&o, 6, ts, dim));
    char what[64];
    snprintf(what, sizeof what, "stack dim %d", dim);
    if (o) {
      CHECK(o->ndim == 3 && o->shape[d] == 6, "%s: shape", what);
      int64_t m = nn_tensor_numel(o), c[3];
      double *ref = malloc((size_t)m * sizeof *ref);
      for (int64_t f = 0; f < m; f++) {
        unravel(f, 3, o->shape, c);
        int64_t i = c[d], cc[2], q = 0;
        for (int e = 0; e < 3; e++)
          if (e != d) cc[q++] = c[e];
        ref[f] = nn_tensor_get_flat(ts[i], cc[0] * 3 + cc[1]);
      }
      th_close(o, ref, 0, 0, what);
      free(ref);
      nn_tensor_free(o);
    }
    for (int i = 0; i < 6; i++) req(ts[i]);
    cat_ctx cx = {6, dim, 1};
    th_gradcheck(cat_fn, &cx, 6, ts, 1e-3, 2e-3, 2e-2, what);
    for (int i = 0; i < 6; i++) nn_tensor_free(ts[i]);
  }
  nn_tensor *x = th_rand(2, sh, 0, 1), *y = th_rand(2, (int64_t[]){3, 2}, 0, 1), *o = NULL;
  nn_tensor *xy[2] = {x, y}, *xx[2] = {x, x};
  EXPECT_ERR(nn_stack(&o, 2, xy, 0), NN_ERR_SHAPE,
             "stack: input 1 has shape (3, 2) but input 0 has shape (2, 3)");
  EXPECT_ERR(nn_stack(&o, 2, xx, 3), NN_ERR_INDEX,
             "stack: dim 3 out of range for inputs of shape (2, 3)");
  EXPECT_ERR(nn_stack(&o, 2, xx, -4), NN_ERR_INDEX, "stack: dim -4 out of range");
  EXPECT_ERR(nn_stack(&o, 0, xx, 0), NN_ERR_ARG, "stack: needs at least one input");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_free(x);
  nn_tensor_free(y);
}

/* pieces of a split, concatenated in reverse order, then scaled (so gradients are distinct) */
static int split_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  int dim = ((dim_ctx *)ctx)->dim;
  nn_tensor *p[3] = {NULL, NULL, NULL}, *rev[3], *c = NULL;
  int rc = nn_split(p, in[0], 3, (int64_t[]){1, 3, 1}, dim);
  if (rc) return rc;
  rev[0] = p[2];
  rev[1] = p[0];
  rev[2] = p[1];
  rc = nn_concat(&c, 3, rev, dim);
  if (!rc) rc = nn_mul_scalar(out, c, 2.0);
  for (int i = 0; i < 3; i++) nn_tensor_free(p[i]);
  nn_tensor_free(c);
  return rc;
}

static void test_split(void) {
  int64_t sh[3] = {2, 5, 3};
  nn_tensor *t = th_rand(3, sh, -1, 1), *p[3] = {NULL, NULL, NULL};
  OK(nn_split(p, t, 3, (int64_t[]){1, 3, 1}, -2));
  if (p[0] && p[1] && p[2]) {
    CHECK(p[1]->shape[1] == 3 && p[1]->storage == t->storage, "split piece is a view");
    int64_t c[3];
    int ok = 1;
    for (int64_t f = 0; f < nn_tensor_numel(p[1]); f++) {
      unravel(f, 3, p[1]->shape, c);
      c[1] += 1;
      if (nn_tensor_get_flat(p[1], f) != nn_tensor_get_flat(t, ravel(3, sh, c))) ok = 0;
    }
    CHECK(ok, "split values");
  }
  for (int i = 0; i < 3; i++) nn_tensor_free(p[i]);
  for (int nc = 0; nc < 2; nc++) {
    nn_tensor *u = th_rand(3, sh, -1, 1);
    if (nc) make_noncontig(&u);
    req(u);
    dim_ctx cx = {1};
    th_gradcheck(split_fn, &cx, 1, &u, 1e-3, 2e-3, 2e-2, nc ? "split grad nc" : "split grad");
    nn_tensor_free(u);
  }
  p[0] = p[1] = p[2] = (nn_tensor *)1; /* must come back NULL */
  EXPECT_ERR(nn_split(p, t, 3, (int64_t[]){1, 3, 2}, 1), NN_ERR_SHAPE,
             "split: sizes add up to 6 but dim 1 of shape (2, 5, 3) has size 5");
  CHECK(!p[0] && !p[1] && !p[2], "outs NULL on error");
  EXPECT_ERR(nn_split(p, t, 2, (int64_t[]){6, -1}, 1), NN_ERR_ARG,
             "split: size 1 is negative (-1)");
  EXPECT_ERR(nn_split(p, t, 1, (int64_t[]){2}, 3), NN_ERR_INDEX,
             "split: dim 3 out of range for shape (2, 5, 3)");
  EXPECT_ERR(nn_split(p, t, 0, (int64_t[]){2}, 0), NN_ERR_ARG, "split: needs at least one piece");
  nn_tensor_free(t);
}

/* ---- one_hot ---- */

static void test_one_hot(void) {
  nn_tensor *l = idx_of(2, (int64_t[]){2, 3}, (int64_t[]){0, 4, 2, 2, 1, 4}), *o = NULL;
  for (int nc = 0; nc < 2; nc++) {
    if (nc) make_noncontig(&l);
    OK(nn_one_hot(&o, l, 5));
    if (!o) continue;
    CHECK(o->dtype == NN_DTYPE_F32 && o->ndim == 3 && o->shape[2] == 5, "one_hot shape and dtype");
    double ref[30] = {0};
    for (int i = 0; i < 6; i++) ref[i * 5 + (int)nn_tensor_get_flat(l, i)] = 1;
    th_close(o, ref, 0, 0, nc ? "one_hot nc" : "one_hot");
    nn_tensor_free(o);
  }
  nn_tensor *s = idx_of(0, NULL, (int64_t[]){2});
  OK(nn_one_hot(&o, s, 3));
  double r3[3] = {0, 0, 1};
  if (o) th_close(o, r3, 0, 0, "one_hot 0-dim");
  nn_tensor_free(o);
  EXPECT_ERR(nn_one_hot(&o, l, 4), NN_ERR_INDEX,
             "one_hot: index 4 at position 1 of indices (2, 3) is out of range for num_classes 4: "
             "valid range is [0, 4)");
  EXPECT_ERR(nn_one_hot(&o, l, 0), NN_ERR_ARG, "one_hot: num_classes must be >= 1, got 0");
  nn_tensor *f = th_rand(1, (int64_t[]){3}, 0, 1);
  EXPECT_ERR(nn_one_hot(&o, f, 3), NN_ERR_DTYPE, "one_hot: indices must be int64, got float32");
  CHECK(o == NULL, "out NULL on error");
  nn_tensor_free(f);
  nn_tensor_free(s);
  nn_tensor_free(l);
}

int main(void) {
  th_seed(3);
  test_embedding();
  test_index_select();
  test_gather();
  test_scatter_add();
  test_scatter_determinism();
  test_concat();
  test_stack();
  test_split();
  test_one_hot();
  return th_done();
}
