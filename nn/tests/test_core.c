/* nn/tests/test_core.c: views, copies, binary arithmetic, sums, matmul and linear: forward
 * against double references (contiguous, strided and broadcast inputs), backward against finite
 * differences, and the error messages of bad input. */
#include "harness.h"

#include <math.h>
#include <string.h>

/* th_noncontig that consumes its argument */
static nn_tensor *nc_of(nn_tensor *t) {
  nn_tensor *v = th_noncontig(t);
  nn_tensor_free(t);
  return v;
}

static nn_tensor *req(nn_tensor *t) {
  nn_tensor_set_requires_grad(t, true);
  return t;
}

/* ---- binary ops with broadcasting ---- */

static double bin_ref(int code, double x, double y) {
  switch (code) {
  case 0:
    return x + y;
  case 1:
    return x - y;
  case 2:
    return x * y;
  default:
    return x / y;
  }
}

static int bin_call(int code, nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  switch (code) {
  case 0:
    return nn_add(out, a, b);
  case 1:
    return nn_sub(out, a, b);
  case 2:
    return nn_mul(out, a, b);
  default:
    return nn_div(out, a, b);
  }
}

static int bin_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return bin_call(*(int *)ctx, out, in[0], in[1]);
}

static void test_binary(void) {
  struct {
    int na;
    int64_t a[4];
    int nb;
    int64_t b[4];
  } cases[] = {
      {2, {3, 4}, 2, {3, 4}}, {2, {3, 4}, 1, {4}},          {3, {2, 1, 4}, 2, {3, 1}},
      {1, {5}, 0, {0}},       {3, {2, 3, 4}, 3, {2, 3, 4}}, {2, {1, 4}, 2, {3, 1}},
  };
  for (int code = 0; code < 4; code++)
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
      for (int nc = 0; nc < 2; nc++) {
        nn_tensor *a = th_rand(cases[c].na, cases[c].a, 0.5, 2.0);
        nn_tensor *b = th_rand(cases[c].nb, cases[c].b, 0.5, 2.0);
        if (nc) { /* non-contiguous operands with the same values */
          nn_tensor *a2 = th_noncontig(a), *b2 = th_noncontig(b);
          nn_tensor_free(a);
          nn_tensor_free(b);
          a = a2;
          b = b2;
        }
        nn_tensor *o = NULL;
        OK(bin_call(code, &o, a, b));
        if (!o) continue;
        /* reference: walk the broadcast index space in double */
        int64_t n = nn_tensor_numel(o);
        double *ref = malloc((size_t)n * sizeof *ref);
        nn_tensor *ea = NULL, *eb = NULL;
        nn_expand(&ea, a, o->ndim, o->shape);
        nn_expand(&eb, b, o->ndim, o->shape);
        for (int64_t i = 0; i < n; i++)
          ref[i] = bin_ref(code, nn_tensor_get_flat(ea, i), nn_tensor_get_flat(eb, i));
        char what[64];
        snprintf(what, sizeof what, "binary %d case %zu nc %d", code, c, nc);
        th_close(o, ref, 1e-6, 1e-6, what);
        free(ref);
        nn_tensor_free(ea);
        nn_tensor_free(eb);
        nn_tensor_free(o);
        req(a);
        req(b);
        nn_tensor *in[2] = {a, b};
        th_gradcheck(bin_fn, &code, 2, in, 1e-3, 2e-3, 2e-2, what);
        nn_tensor_free(a);
        nn_tensor_free(b);
      }
  nn_tensor *a = th_rand(2, (int64_t[]){3, 4}, 0, 1), *b = th_rand(1, (int64_t[]){3}, 0, 1), *o;
  EXPECT_ERR(nn_add(&o, a, b), NN_ERR_SHAPE, "add: shapes (3, 4) and (3,) cannot be broadcast");
  CHECK(o == NULL, "out-parameter left NULL on error");
  nn_tensor *l = th_randint(1, (int64_t[]){4}, 3);
  EXPECT_ERR(nn_mul(&o, a, l), NN_ERR_DTYPE, "mul: operands must be float32 or float64");
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(l);
}

static int scalar_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  switch (*(int *)ctx) {
  case 0:
    return nn_add_scalar(out, in[0], 1.5);
  case 1:
    return nn_mul_scalar(out, in[0], -2.0);
  case 2:
    return nn_rsub_scalar(out, in[0], 3.0);
  default:
    return nn_rdiv_scalar(out, in[0], 2.0);
  }
}

static void test_scalar(void) {
  for (int code = 0; code < 4; code++) {
    nn_tensor *a = nc_of(th_rand(2, (int64_t[]){3, 5}, 0.5, 2.0)), *o = NULL;
    int64_t n = nn_tensor_numel(a);
    OK(scalar_fn(&code, &a, &o));
    double *ref = th_to_double(a);
    for (int64_t i = 0; i < n; i++)
      ref[i] = code == 0   ? ref[i] + 1.5
               : code == 1 ? ref[i] * -2.0
               : code == 2 ? 3.0 - ref[i]
                           : 2.0 / ref[i];
    th_close(o, ref, 1e-6, 1e-6, "scalar");
    free(ref);
    nn_tensor_free(o);
    req(a);
    th_gradcheck(scalar_fn, &code, 1, &a, 1e-3, 2e-3, 2e-2, "scalar grad");
    nn_tensor_free(a);
  }
}

/* ---- sums ---- */

static int sum_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_sum_dims(out, in[0], *(unsigned *)ctx, false);
}

static void test_sum(void) {
  int64_t sh[3] = {3, 4, 5};
  for (unsigned mask = 1; mask < 8; mask++) {
    nn_tensor *a = nc_of(th_rand(3, sh, -1, 1)), *o = NULL;
    OK(nn_sum_dims(&o, a, mask, false));
    double ref[60] = {0};
    /* reference: index into the kept dims */
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 4; j++)
        for (int k = 0; k < 5; k++) {
          int64_t idx = 0;
          if (!(mask & 1)) idx = idx * 3 + i;
          if (!(mask & 2)) idx = idx * 4 + j;
          if (!(mask & 4)) idx = idx * 5 + k;
          ref[idx] += nn_tensor_get_flat(a, (i * 4 + j) * 5 + k);
        }
    th_close(o, ref, 1e-5, 1e-5, "sum_dims");
    nn_tensor_free(o);
    req(a);
    th_gradcheck(sum_fn, &mask, 1, &a, 1e-3, 1e-3, 1e-2, "sum_dims grad");
    nn_tensor_free(a);
  }
}

/* ---- views ---- */

static int view_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  int k = *(int *)ctx;
  nn_tensor *v = NULL, *w = NULL;
  int rc;
  switch (k) {
  case 0:
    rc = nn_transpose(&v, in[0], 0, 2);
    break;
  case 1:
    rc = nn_permute(&v, in[0], (int[]){2, 0, 1});
    break;
  case 2:
    rc = nn_narrow(&v, in[0], 1, 1, 2);
    break;
  case 3:
    rc = nn_slice(&v, in[0], 2, 0, 4, 2);
    break;
  case 4:
    rc = nn_reshape(&v, in[0], 2, (int64_t[]){-1, 4});
    break;
  case 5:
    rc = nn_expand(&v, in[0], 4, (int64_t[]){2, 2, 3, 4});
    break;
  default:
    rc = nn_unsqueeze(&v, in[0], 1);
    break;
  }
  if (rc) return rc;
  /* multiply so that the view's elements get distinct weights */
  rc = nn_mul_scalar(&w, v, 1.0);
  nn_tensor_free(v);
  *out = w;
  return rc;
}

static void test_views(void) {
  int64_t sh[3] = {2, 3, 4};
  for (int k = 0; k < 7; k++) {
    nn_tensor *a = th_rand(3, sh, -1, 1);
    req(a);
    th_gradcheck(view_fn, &k, 1, &a, 1e-3, 1e-3, 1e-2, "view grad");
    nn_tensor_free(a);
  }
  /* forward semantics */
  nn_tensor *a = NULL, *t = NULL, *c = NULL, *s = NULL;
  OK(nn_tensor_arange(&a, 24, NN_DTYPE_F32));
  nn_tensor *a3 = NULL;
  OK(nn_reshape(&a3, a, 3, sh));
  OK(nn_transpose(&t, a3, 0, 2)); /* (4, 3, 2): t[i][j][k] = a3[k][j][i] */
  CHECK(t->shape[0] == 4 && t->shape[2] == 2 && !nn_tensor_is_contiguous(t), "transpose shape");
  CHECK(nn_tensor_get_flat(t, 1) == 12.0, "transpose value %g", nn_tensor_get_flat(t, 1));
  OK(nn_contiguous(&c, t));
  CHECK(nn_tensor_is_contiguous(c) && nn_tensor_get_flat(c, 1) == 12.0, "contiguous copy");
  CHECK(c->storage != t->storage, "contiguous of a strided view copies");
  OK(nn_slice(&s, a, 0, -5, 100, 2)); /* 19, 21, 23 */
  CHECK(s->shape[0] == 3 && nn_tensor_get_flat(s, 2) == 23.0, "slice negative start");
  nn_tensor *r = NULL, *e = NULL;
  EXPECT_ERR(nn_reshape(&r, a, 2, (int64_t[]){5, 5}), NN_ERR_SHAPE,
             "reshape: shape (5, 5) is invalid for input of shape (24,)");
  EXPECT_ERR(nn_transpose(&r, a3, 0, 3), NN_ERR_INDEX, "transpose: dims (0, 3) out of range");
  EXPECT_ERR(nn_narrow(&r, a3, 1, 2, 2), NN_ERR_INDEX, "narrow: [2, 4) out of range");
  EXPECT_ERR(nn_expand(&e, a3, 3, (int64_t[]){2, 5, 4}), NN_ERR_SHAPE,
             "expand: shape (2, 3, 4) cannot be broadcast to (2, 5, 4)");
  EXPECT_ERR(nn_view(&r, t, 1, (int64_t[]){24}), NN_ERR_SHAPE, "not contiguous");
  nn_tensor *big = NULL;
  EXPECT_ERR(nn_tensor_empty(&big, 1, (int64_t[]){-3}, NN_DTYPE_F32, nn_cpu), NN_ERR_SHAPE,
             "negative size -3");
  nn_tensor_free(a);
  nn_tensor_free(a3);
  nn_tensor_free(t);
  nn_tensor_free(c);
  nn_tensor_free(s);
}

/* ---- matmul ---- */

static void ref_matmul(const nn_tensor *a, const nn_tensor *b, const nn_tensor *o, double *ref) {
  /* a (..., M, K), b (..., K, N) expanded to o's batch */
  int nd = o->ndim;
  int64_t M = o->shape[nd - 2], N = o->shape[nd - 1], K = a->shape[a->ndim - 1];
  int64_t Bn = nn_tensor_numel(o) / (M * N > 0 ? M * N : 1);
  int64_t ash[NN_MAX_DIMS], bsh[NN_MAX_DIMS];
  memcpy(ash, o->shape, sizeof ash);
  memcpy(bsh, o->shape, sizeof bsh);
  ash[nd - 1] = K;
  bsh[nd - 2] = K;
  nn_tensor *ea = NULL, *eb = NULL;
  nn_expand(&ea, (nn_tensor *)a, nd, ash);
  nn_expand(&eb, (nn_tensor *)b, nd, bsh);
  for (int64_t bi = 0; bi < Bn; bi++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++)
          s += nn_tensor_get_flat(ea, bi * M * K + i * K + k) *
               nn_tensor_get_flat(eb, bi * K * N + k * N + j);
        ref[bi * M * N + i * N + j] = s;
      }
  nn_tensor_free(ea);
  nn_tensor_free(eb);
}

static int matmul_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  (void)ctx;
  return nn_matmul(out, in[0], in[1]);
}

static void test_matmul(void) {
  struct {
    int na;
    int64_t a[4];
    int nb;
    int64_t b[4];
    int ta, tb; /* pass as transposed views */
  } cases[] = {
      {2, {3, 4}, 2, {4, 5}, 0, 0},
      {2, {3, 4}, 2, {4, 5}, 1, 0},
      {2, {3, 4}, 2, {4, 5}, 0, 1},
      {2, {3, 4}, 2, {4, 5}, 1, 1},
      {3, {2, 3, 4}, 3, {2, 4, 2}, 0, 1},
      {3, {2, 3, 4}, 2, {4, 2}, 0, 0},
      {4, {2, 1, 3, 4}, 3, {3, 4, 2}, 1, 0},
      {1, {4}, 1, {4}, 0, 0},
      {1, {4}, 2, {4, 3}, 0, 0},
      {2, {3, 4}, 1, {4}, 0, 0},
      {2, {1, 4}, 2, {4, 1}, 0, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    nn_tensor *a = th_rand(cases[c].na, cases[c].a, -1, 1);
    nn_tensor *b = th_rand(cases[c].nb, cases[c].b, -1, 1);
    nn_tensor *in[2] = {a, b};
    int tr[2] = {cases[c].ta, cases[c].tb};
    for (int k = 0; k < 2; k++)
      if (tr[k]) { /* same values, stored transposed */
        nn_tensor *x = in[k], *xt = NULL, *xc = NULL, *back = NULL;
        nn_transpose(&xt, x, -1, -2);
        nn_contiguous(&xc, xt);
        nn_transpose(&back, xc, -1, -2);
        CHECK(!nn_tensor_is_contiguous(back), "transposed operand is strided");
        nn_tensor_free(x);
        nn_tensor_free(xt);
        nn_tensor_free(xc);
        in[k] = back;
      }
    nn_tensor *o = NULL;
    OK(nn_matmul(&o, in[0], in[1]));
    if (o) {
      nn_tensor *a2 = NULL, *b2 = NULL, *o2 = NULL;
      /* reference on the promoted 2-D+ operands */
      if (in[0]->ndim == 1)
        nn_unsqueeze(&a2, in[0], 0);
      else
        a2 = nn_tensor_retain(in[0]);
      if (in[1]->ndim == 1)
        nn_unsqueeze(&b2, in[1], -1);
      else
        b2 = nn_tensor_retain(in[1]);
      nn_matmul(&o2, a2, b2);
      double *ref = malloc((size_t)nn_tensor_numel(o2) * sizeof *ref);
      ref_matmul(a2, b2, o2, ref);
      CHECK(nn_tensor_numel(o) == nn_tensor_numel(o2), "matmul 1-D promotion numel");
      char what[64];
      snprintf(what, sizeof what, "matmul case %zu", c);
      th_close(o, ref, 1e-5, 1e-5, what);
      free(ref);
      nn_tensor_free(a2);
      nn_tensor_free(b2);
      nn_tensor_free(o2);
      nn_tensor_free(o);
      req(in[0]);
      req(in[1]);
      th_gradcheck(matmul_fn, NULL, 2, in, 1e-3, 2e-3, 2e-2, what);
    }
    nn_tensor_free(in[0]);
    nn_tensor_free(in[1]);
  }
  /* float64 */
  nn_tensor *a = th_rand_dt(2, (int64_t[]){5, 3}, -1, 1, NN_DTYPE_F64);
  nn_tensor *b = th_rand_dt(2, (int64_t[]){3, 2}, -1, 1, NN_DTYPE_F64), *o = NULL;
  OK(nn_matmul(&o, a, b));
  double ref[10];
  ref_matmul(a, b, o, ref);
  th_close(o, ref, 1e-12, 1e-12, "matmul f64");
  nn_tensor *bad = th_rand(2, (int64_t[]){4, 2}, 0, 1), *o2 = NULL;
  nn_tensor *a32 = th_rand(2, (int64_t[]){5, 3}, 0, 1);
  EXPECT_ERR(nn_matmul(&o2, a32, bad), NN_ERR_SHAPE,
             "matmul: shapes (5, 3) and (4, 2): inner dims differ (3 vs 4)");
  EXPECT_ERR(nn_matmul(&o2, a, bad), NN_ERR_DTYPE,
             "matmul: operands must be float32 or float64 of one dtype, got float64 and float32");
  nn_tensor_free(a);
  nn_tensor_free(b);
  nn_tensor_free(o);
  nn_tensor_free(bad);
  nn_tensor_free(a32);
}

static int linear_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  return nn_linear(out, in[0], in[1], *(int *)ctx ? in[2] : NULL);
}

static void test_linear(void) {
  for (int bias = 0; bias < 2; bias++) {
    nn_tensor *x = th_rand(2, (int64_t[]){6, 4}, -1, 1), *w = th_rand(2, (int64_t[]){3, 4}, -1, 1);
    nn_tensor *b = th_rand(1, (int64_t[]){3}, -1, 1), *o = NULL;
    OK(nn_linear(&o, x, w, bias ? b : NULL));
    double ref[18];
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 3; j++) {
        double s = bias ? nn_tensor_get_flat(b, j) : 0;
        for (int k = 0; k < 4; k++)
          s += nn_tensor_get_flat(x, i * 4 + k) * nn_tensor_get_flat(w, j * 4 + k);
        ref[i * 3 + j] = s;
      }
    th_close(o, ref, 1e-5, 1e-5, "linear");
    nn_tensor_free(o);
    req(x);
    req(w);
    req(b);
    nn_tensor *in[3] = {x, w, b};
    th_gradcheck(linear_fn, &bias, bias ? 3 : 2, in, 1e-3, 2e-3, 2e-2, "linear grad");
    nn_tensor *w2 = th_rand(2, (int64_t[]){3, 5}, -1, 1);
    EXPECT_ERR(nn_linear(&o, x, w2, NULL), NN_ERR_SHAPE, "linear: input (6, 4), weight (3, 5)");
    nn_tensor_free(w2);
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
  }
}

/* A layer's two gradient products as one MATMUL_PAIR (side by side on 2 threads): against double
 * references, and bit for bit the products nn_matmul gives on one thread (each product is one
 * whole single-threaded BLAS call either way). */
static void test_linear_pair(void) {
  int saved = nn_get_num_threads();
  nn_tensor *x = req(th_rand(2, (int64_t[]){128, 256}, -1, 1));
  nn_tensor *w = req(th_rand(2, (int64_t[]){192, 256}, -1, 1));
  nn_tensor *R = th_rand(2, (int64_t[]){128, 192}, -1, 1), *Rt = NULL, *dx1 = NULL, *dw1 = NULL;
  double *dxr = calloc(128 * 256, sizeof *dxr), *dwr = calloc(192 * 256, sizeof *dwr);
  for (int i = 0; i < 128; i++)
    for (int o = 0; o < 192; o++) {
      double r = nn_tensor_get_flat(R, i * 192 + o);
      for (int k = 0; k < 256; k++) {
        dxr[i * 256 + k] += r * nn_tensor_get_flat(w, o * 256 + k);
        dwr[o * 256 + k] += r * nn_tensor_get_flat(x, i * 256 + k);
      }
    }
  nn_set_num_threads(1);
  OK(nn_matmul(&dx1, R, w));
  OK(nn_transpose(&Rt, R, 0, 1));
  OK(nn_matmul(&dw1, Rt, x));
  for (int threads = 1; threads <= 2; threads++) {
    nn_set_num_threads(threads);
    nn_tensor *o = NULL;
    nn_tensor_zero_grad(x, true);
    nn_tensor_zero_grad(w, true);
    OK(nn_linear(&o, x, w, NULL));
    OK(nn_backward(o, R));
    th_close(x->grad, dxr, 1e-4, 1e-4, "linear pair dx");
    th_close(w->grad, dwr, 1e-4, 1e-4, "linear pair dw");
    CHECK(!memcmp(nn_tensor_data(x->grad), nn_tensor_data(dx1), 128 * 256 * 4) &&
              !memcmp(nn_tensor_data(w->grad), nn_tensor_data(dw1), 192 * 256 * 4),
          "linear gradients on %d threads are not the bits of one-thread matmuls", threads);
    nn_tensor_free(o);
  }
  nn_set_num_threads(saved);
  free(dxr);
  free(dwr);
  nn_tensor_free(Rt);
  nn_tensor_free(dx1);
  nn_tensor_free(dw1);
  nn_tensor_free(R);
  nn_tensor_free(x);
  nn_tensor_free(w);
}

/* ---- autograd engine ---- */

static void test_autograd(void) {
  /* y = x*x + x (x used twice), dy/dx = 2x + 1; gradients accumulate across backwards */
  nn_tensor *x = th_rand(1, (int64_t[]){4}, -1, 1), *xx = NULL, *y = NULL, *s = NULL;
  req(x);
  OK(nn_mul(&xx, x, x));
  OK(nn_add(&y, xx, x));
  OK(nn_sum_dims(&s, y, 1u, false));
  OK(nn_backward(s, NULL));
  for (int i = 0; i < 4; i++) {
    double v = nn_tensor_get_flat(x, i);
    CHECK(fabs(nn_tensor_get_flat(x->grad, i) - (2 * v + 1)) < 1e-6, "d(x*x+x)/dx");
  }
  EXPECT_ERR(nn_backward(s, NULL), NN_ERR_STATE, "already freed");
  nn_tensor_free(xx);
  nn_tensor_free(y);
  nn_tensor_free(s);
  /* a second forward accumulates */
  OK(nn_mul(&xx, x, x));
  OK(nn_sum_dims(&s, xx, 1u, false));
  OK(nn_backward(s, NULL));
  for (int i = 0; i < 4; i++) {
    double v = nn_tensor_get_flat(x, i);
    CHECK(fabs(nn_tensor_get_flat(x->grad, i) - (4 * v + 1)) < 1e-6, "accumulated grad");
  }
  nn_tensor_free(xx);
  nn_tensor_free(s);
  nn_tensor_zero_grad(x, false);
  CHECK(nn_tensor_get_flat(x->grad, 0) == 0.0, "zero_grad zeroes");
  /* no-grad region and detach */
  bool prev = nn_set_grad_enabled(false);
  OK(nn_mul(&xx, x, x));
  CHECK(!xx->requires_grad && !xx->grad_fn, "no graph under no-grad");
  nn_set_grad_enabled(prev);
  nn_tensor_free(xx);
  nn_tensor *d = NULL;
  OK(nn_detach(&d, x));
  CHECK(!d->requires_grad && d->storage == x->storage, "detach shares storage");
  OK(nn_mul(&xx, d, d));
  EXPECT_ERR(nn_backward(xx, NULL), NN_ERR_STATE, "does not require grad");
  nn_tensor_free(xx);
  nn_tensor_free(d);
  OK(nn_mul(&xx, x, x));
  EXPECT_ERR(nn_backward(xx, NULL), NN_ERR_SHAPE, "one-element output, got shape (4,)");
  EXPECT_ERR(nn_tensor_set_requires_grad(xx, false), NN_ERR_STATE, "only leaf tensors");
  nn_tensor_free(xx);
  nn_tensor_free(x);
}

int main(void) {
  th_seed(1);
  test_binary();
  test_scalar();
  test_sum();
  test_views();
  test_matmul();
  test_linear();
  test_linear_pair();
  test_autograd();
  return th_done();
}
