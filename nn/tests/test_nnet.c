/* nn/tests/test_nnet.c: conv2d, pooling, batch norm and layer norm: forward against direct
 * double-precision loops (contiguous, strided and permuted inputs), backward against finite
 * differences (small shapes) and against direct loops (shapes large enough to take the
 * multi-threaded paths), determinism, and the error messages of bad input.
 * N batch, C channels, H, W input, O output channels, KH, KW kernel, OH, OW output. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nn_tensor *req(nn_tensor *t) {
  nn_tensor_set_requires_grad(t, true);
  return t;
}

/* Same values as t (N, C, H, W), stored NHWC and viewed back as NCHW through a permute. */
static nn_tensor *permuted(const nn_tensor *t) {
  nn_tensor *nhwc = NULL, *v = NULL, *c = NULL;
  nn_permute(&v, (nn_tensor *)t, (int[]){0, 2, 3, 1});
  nn_contiguous(&c, v);
  nn_permute(&nhwc, c, (int[]){0, 3, 1, 2});
  nn_tensor_free(v);
  nn_tensor_free(c);
  return nhwc;
}

static nn_tensor *layout(nn_tensor *t, int kind) {
  nn_tensor *r = kind == 1 ? th_noncontig(t) : kind == 2 ? permuted(t) : nn_tensor_retain(t);
  nn_tensor_free(t);
  return r;
}

/* ---------------------------------------------------------------- conv2d */

typedef struct conv_case {
  int64_t N, C, H, W, O, KH, KW;
  nn_conv2d_opts o;
  int bias;
} conv_case;

/* The 7-loop definition: out[n][o][oh][ow] = b[o] + sum_{c,kh,kw} x[n][g*Cg+c][ih][iw] *
 * w[o][c][kh][kw]. */
static void ref_conv(const conv_case *k, const double *x, const double *w, const double *b,
                     int64_t OH, int64_t OW, double *out) {
  int64_t G = k->o.groups, Cg = k->C / G, Og = k->O / G;
  for (int64_t n = 0; n < k->N; n++)
    for (int64_t o = 0; o < k->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double s = b ? b[o] : 0;
          int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; c++)
            for (int64_t kh = 0; kh < k->KH; kh++)
              for (int64_t kw = 0; kw < k->KW; kw++) {
                int64_t ih = oh * k->o.stride[0] - k->o.padding[0] + kh * k->o.dilation[0];
                int64_t iw = ow * k->o.stride[1] - k->o.padding[1] + kw * k->o.dilation[1];
                if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
                s += x[((n * k->C + g * Cg + c) * k->H + ih) * k->W + iw] *
                     w[((o * Cg + c) * k->KH + kh) * k->KW + kw];
              }
          out[((n * k->O + o) * OH + oh) * OW + ow] = s;
        }
}

/* Gradients of sum(out * R) by the same loops: dx, dw, db (any may be NULL). */
static void ref_conv_grad(const conv_case *k, const double *x, const double *w, const double *R,
                          int64_t OH, int64_t OW, double *dx, double *dw, double *db) {
  int64_t G = k->o.groups, Cg = k->C / G, Og = k->O / G;
  if (dx) memset(dx, 0, sizeof *dx * (size_t)(k->N * k->C * k->H * k->W));
  if (dw) memset(dw, 0, sizeof *dw * (size_t)(k->O * Cg * k->KH * k->KW));
  if (db) memset(db, 0, sizeof *db * (size_t)k->O);
  for (int64_t n = 0; n < k->N; n++)
    for (int64_t o = 0; o < k->O; o++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double r = R[((n * k->O + o) * OH + oh) * OW + ow];
          int64_t g = o / Og;
          if (db) db[o] += r;
          for (int64_t c = 0; c < Cg; c++)
            for (int64_t kh = 0; kh < k->KH; kh++)
              for (int64_t kw = 0; kw < k->KW; kw++) {
                int64_t ih = oh * k->o.stride[0] - k->o.padding[0] + kh * k->o.dilation[0];
                int64_t iw = ow * k->o.stride[1] - k->o.padding[1] + kw * k->o.dilation[1];
                if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
                int64_t xi = ((n * k->C + g * Cg + c) * k->H + ih) * k->W + iw;
                int64_t wi = ((o * Cg + c) * k->KH + kh) * k->KW + kw;
                if (dx) dx[xi] += r * w[wi];
                if (dw) dw[wi] += r * x[xi];
              }
        }
}

static int64_t out_size(int64_t in, int64_t k, int s, int p, int d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static int conv_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  const conv_case *k = ctx;
  return nn_conv2d(out, in[0], in[1], k->bias ? in[2] : NULL, &k->o);
}

/* Forward of one case against ref_conv, with x laid out as kind (0 contiguous, 1 strided,
 * 2 permuted) and w strided when wnc. */
static void check_conv_forward(const conv_case *k, int kind, int wnc, nn_dtype dt,
                               const char *what) {
  int64_t G = k->o.groups;
  nn_tensor *x = layout(th_rand_dt(4, (int64_t[]){k->N, k->C, k->H, k->W}, -1, 1, dt), kind);
  nn_tensor *w = layout(th_rand_dt(4, (int64_t[]){k->O, k->C / G, k->KH, k->KW}, -1, 1, dt), wnc);
  nn_tensor *b = th_rand_dt(1, (int64_t[]){k->O}, -1, 1, dt), *o = NULL;
  OK(nn_conv2d(&o, x, w, k->bias ? b : NULL, &k->o));
  if (o) {
    int64_t OH = out_size(k->H, k->KH, k->o.stride[0], k->o.padding[0], k->o.dilation[0]);
    int64_t OW = out_size(k->W, k->KW, k->o.stride[1], k->o.padding[1], k->o.dilation[1]);
    CHECK(o->ndim == 4 && o->shape[0] == k->N && o->shape[1] == k->O && o->shape[2] == OH &&
              o->shape[3] == OW,
          "%s: output shape", what);
    double *xd = th_to_double(x), *wd = th_to_double(w), *bd = th_to_double(b);
    double *ref = malloc(sizeof *ref * (size_t)(k->N * k->O * OH * OW));
    ref_conv(k, xd, wd, k->bias ? bd : NULL, OH, OW, ref);
    double tol = dt == NN_DTYPE_F32 ? 1e-5 : 1e-12;
    th_close(o, ref, tol, tol, what);
    free(xd);
    free(wd);
    free(bd);
    free(ref);
  }
  nn_tensor_free(o);
  nn_tensor_free(x);
  nn_tensor_free(w);
  nn_tensor_free(b);
}

static void test_conv_forward(void) {
  /* every combination of stride, padding, dilation and groups on non-square shapes */
  int strides[2] = {1, 2}, pads[3] = {0, 1, 2}, dils[2] = {1, 2};
  int n_case = 0;
  for (int si = 0; si < 2; si++)
    for (int pi = 0; pi < 3; pi++)
      for (int di = 0; di < 2; di++)
        for (int gi = 0; gi < 3; gi++) {
          int groups = gi == 0 ? 1 : gi == 1 ? 2 : 4; /* 4 == C: depthwise */
          conv_case k = {
              2, 4, 7, 9, gi == 2 ? 8 : 6, 3, 2, {{0, 0}, {0, 0}, {0, 0}, 0}, (si + pi + gi) % 2};
          k.o.stride[0] = strides[si];
          k.o.stride[1] = strides[1 - si];
          k.o.padding[0] = pads[pi];
          k.o.padding[1] = pads[(pi + 1) % 3];
          k.o.dilation[0] = dils[di];
          k.o.dilation[1] = dils[1 - di];
          k.o.groups = groups;
          char what[96];
          int kind = n_case % 3;
          snprintf(what, sizeof what, "conv2d s%d p%d d%d g%d bias %d layout %d", strides[si],
                   pads[pi], dils[di], groups, k.bias, kind);
          check_conv_forward(&k, kind, n_case % 2, NN_DTYPE_F32, what);
          n_case++;
        }
  /* pointwise (1x1, stride 1, no padding: x read in place), on contiguous and strided x */
  conv_case pw = {3, 6, 5, 4, 4, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}, 1};
  for (int kind = 0; kind < 3; kind++) check_conv_forward(&pw, kind, 0, NN_DTYPE_F32, "conv2d 1x1");
  pw.o.groups = 2;
  check_conv_forward(&pw, 0, 0, NN_DTYPE_F32, "conv2d 1x1 groups 2");
  conv_case pw2 = {2, 4, 7, 6, 3, 1, 1, {{2, 1}, {1, 0}, {1, 1}, 1}, 1}; /* 1x1, not pointwise */
  check_conv_forward(&pw2, 1, 0, NN_DTYPE_F32, "conv2d 1x1 stride 2 padded");
  /* kernel as large as the padded input, 1x1 output; NULL options */
  conv_case big = {2, 3, 4, 5, 2, 6, 7, {{1, 1}, {1, 1}, {1, 1}, 1}, 1};
  check_conv_forward(&big, 0, 0, NN_DTYPE_F32, "conv2d full window");
  conv_case dflt = {2, 3, 6, 5, 4, 3, 3, {{1, 1}, {0, 0}, {1, 1}, 1}, 0};
  check_conv_forward(&dflt, 1, 0, NN_DTYPE_F64, "conv2d float64");
  {
    nn_tensor *x = th_rand(4, (int64_t[]){2, 3, 6, 5}, -1, 1);
    nn_tensor *w = th_rand(4, (int64_t[]){4, 3, 3, 3}, -1, 1), *a = NULL, *b = NULL;
    OK(nn_conv2d(&a, x, w, NULL, NULL));
    OK(nn_conv2d(&b, x, w, NULL, &dflt.o));
    double *bd = th_to_double(b);
    th_close(a, bd, 0, 0, "conv2d NULL options are stride 1, padding 0, dilation 1, groups 1");
    free(bd);
    nn_tensor_free(a);
    nn_tensor_free(b);
    nn_tensor_free(x);
    nn_tensor_free(w);
  }
  { /* an empty batch: empty output, zero weight gradient */
    nn_tensor *x = th_rand(4, (int64_t[]){0, 3, 6, 5}, -1, 1), *o = NULL;
    nn_tensor *w = req(th_rand(4, (int64_t[]){4, 3, 3, 3}, -1, 1)), *g = NULL;
    OK(nn_conv2d(&o, x, w, NULL, &dflt.o));
    CHECK(o && o->shape[0] == 0 && o->shape[1] == 4 && o->shape[2] == 4 && o->shape[3] == 3,
          "conv2d empty batch shape");
    if (o) {
      OK(nn_tensor_zeros(&g, 4, o->shape, NN_DTYPE_F32, nn_cpu));
      OK(nn_backward(o, g));
      double zeros[108] = {0};
      CHECK(w->grad != NULL, "conv2d empty batch: weight gets a gradient");
      if (w->grad) th_close(w->grad, zeros, 0, 0, "conv2d empty batch dw");
    }
    nn_tensor_free(g);
    nn_tensor_free(o);
    nn_tensor_free(x);
    nn_tensor_free(w);
  }
  /* large enough for the batch to be split over threads (LeNet-like second layer, padded) */
  conv_case lenet = {8, 8, 14, 14, 16, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 1};
  check_conv_forward(&lenet, 0, 0, NN_DTYPE_F32, "conv2d threaded");
  check_conv_forward(&lenet, 2, 0, NN_DTYPE_F32, "conv2d threaded permuted");
}

static void test_conv_gradcheck(void) {
  { /* float64: the double kernels, to tight tolerances */
    conv_case k = {2, 4, 6, 5, 4, 3, 2, {{2, 1}, {1, 1}, {1, 2}, 2}, 1};
    nn_tensor *x = req(layout(th_rand_dt(4, (int64_t[]){2, 4, 6, 5}, -1, 1, NN_DTYPE_F64), 1));
    nn_tensor *w = req(th_rand_dt(4, (int64_t[]){4, 2, 3, 2}, -1, 1, NN_DTYPE_F64));
    nn_tensor *b = req(th_rand_dt(1, (int64_t[]){4}, -1, 1, NN_DTYPE_F64));
    nn_tensor *in[3] = {x, w, b};
    th_gradcheck(conv_fn, &k, 3, in, 1e-6, 1e-8, 1e-6, "conv2d float64 grad");
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
  }
  conv_case cases[] = {
      {2, 3, 5, 6, 4, 3, 2, {{1, 1}, {1, 0}, {1, 1}, 1}, 1},
      {2, 4, 7, 6, 4, 3, 3, {{2, 1}, {1, 2}, {1, 2}, 2}, 1},
      {1, 4, 6, 7, 8, 3, 3, {{1, 2}, {2, 1}, {2, 1}, 4}, 1}, /* depthwise, multiplier 2 */
      {2, 4, 4, 5, 6, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 2}, 0}, /* pointwise */
      {2, 2, 6, 5, 3, 2, 3, {{2, 2}, {0, 1}, {1, 1}, 1}, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    conv_case *k = &cases[c];
    nn_tensor *x = layout(th_rand(4, (int64_t[]){k->N, k->C, k->H, k->W}, -1, 1), (int)c % 3);
    nn_tensor *w = th_rand(4, (int64_t[]){k->O, k->C / k->o.groups, k->KH, k->KW}, -1, 1);
    nn_tensor *b = th_rand(1, (int64_t[]){k->O}, -1, 1);
    nn_tensor *in[3] = {req(x), req(w), req(b)};
    char what[64];
    snprintf(what, sizeof what, "conv2d grad case %zu", c);
    th_gradcheck(conv_fn, k, k->bias ? 3 : 2, in, 1e-3, 2e-3, 2e-2, what);
    /* only some inputs requiring grad takes the other backward paths */
    nn_tensor_set_requires_grad(w, false);
    snprintf(what, sizeof what, "conv2d grad case %zu (x, bias)", c);
    th_gradcheck(conv_fn, k, k->bias ? 3 : 2, in, 1e-3, 2e-3, 2e-2, what);
    nn_tensor_set_requires_grad(x, false);
    if (k->bias) {
      snprintf(what, sizeof what, "conv2d grad case %zu (bias only)", c);
      th_gradcheck(conv_fn, k, 3, in, 1e-3, 2e-3, 2e-2, what);
    }
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
  }
}

/* Backward of shapes that take the threaded paths, against ref_conv_grad, on 1 and 2 threads;
 * bit-identical across runs and thread counts. */
static void test_conv_backward_threaded(void) {
  conv_case cases[] = {
      {6, 8, 12, 11, 16, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 1},
      {11, 16, 13, 12, 16, 3, 3, {{2, 1}, {1, 1}, {1, 2}, 2}, 1}, /* uneven chunks */
      {8, 32, 12, 12, 64, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}, 1},
  };
  int saved = nn_get_num_threads();
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    conv_case *k = &cases[c];
    int64_t OH = out_size(k->H, k->KH, k->o.stride[0], k->o.padding[0], k->o.dilation[0]);
    int64_t OW = out_size(k->W, k->KW, k->o.stride[1], k->o.padding[1], k->o.dilation[1]);
    int64_t Cg = k->C / k->o.groups;
    nn_tensor *x = req(th_rand(4, (int64_t[]){k->N, k->C, k->H, k->W}, -1, 1));
    nn_tensor *w = req(th_rand(4, (int64_t[]){k->O, Cg, k->KH, k->KW}, -1, 1));
    nn_tensor *b = req(th_rand(1, (int64_t[]){k->O}, -1, 1));
    nn_tensor *R = th_rand(4, (int64_t[]){k->N, k->O, OH, OW}, -1, 1);
    double *xd = th_to_double(x), *wd = th_to_double(w), *Rd = th_to_double(R);
    double *dx = malloc(sizeof *dx * (size_t)nn_tensor_numel(x));
    double *dw = malloc(sizeof *dw * (size_t)nn_tensor_numel(w)), db[64]; /* O <= 64 */
    ref_conv_grad(k, xd, wd, Rd, OH, OW, dx, dw, db);
    nn_tensor *first[3] = {0};
    for (int run = 0; run < 3; run++) {
      nn_set_num_threads(run == 0 ? 1 : 2);
      nn_tensor *o = NULL;
      nn_tensor_zero_grad(x, true);
      nn_tensor_zero_grad(w, true);
      nn_tensor_zero_grad(b, true);
      OK(nn_conv2d(&o, x, w, b, &k->o));
      OK(nn_backward(o, R));
      nn_tensor_free(o);
      char what[64];
      snprintf(what, sizeof what, "conv2d threaded grad case %zu run %d", c, run);
      th_close(x->grad, dx, 1e-4, 1e-4, what);
      th_close(w->grad, dw, 1e-4, 1e-4, what);
      th_close(b->grad, db, 1e-4, 1e-4, what);
      /* the batch is cut by its size alone: the same bits on 1 and 2 threads, run after run */
      if (run == 0) {
        first[0] = nn_tensor_retain(x->grad);
        first[1] = nn_tensor_retain(w->grad);
        first[2] = nn_tensor_retain(b->grad);
      } else {
        nn_tensor *now[3] = {x->grad, w->grad, b->grad};
        for (int i = 0; i < 3; i++) {
          int64_t n = nn_tensor_numel(now[i]);
          CHECK(memcmp(nn_tensor_data(now[i]), nn_tensor_data(first[i]), (size_t)n * 4) == 0,
                "conv2d case %zu: gradient %d of run %d differs from 1 thread's", c, i, run);
          if (run == 2) nn_tensor_free(first[i]);
        }
      }
    }
    free(xd);
    free(wd);
    free(Rd);
    free(dx);
    free(dw);
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
    nn_tensor_free(R);
  }
  nn_set_num_threads(saved);
}

/* Winograd F(2x2, 5x5) (float32 5x5 stride-1 convolutions with channel counts in multiples of
 * 16, on AVX-512 CPUs): output, input gradient and weight gradient against the double loops for
 * paddings 0 to 4, odd output sizes (partial tiles) and strided / permuted inputs; the same bits
 * on 1 and 2 threads; and different bits from direct convolution (nn_set_winograd(false)), which
 * proves the Winograd path ran. The bound is 2e-5 relative to the largest reference value; the
 * measured worst cases, and direct convolution's, are printed. */
static void test_conv_winograd(void) {
  conv_case cases[] = {
      {3, 16, 14, 14, 32, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 1}, /* LeNet's second layer */
      {2, 32, 9, 11, 16, 5, 5, {{1, 1}, {0, 1}, {1, 1}, 1}, 0},  /* odd outputs */
      {2, 16, 6, 7, 16, 5, 5, {{1, 1}, {4, 3}, {1, 1}, 1}, 1},   /* padding up to 4 */
  };
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool wino_default = nn_get_winograd();
  int saved = nn_get_num_threads();
  double worst[3] = {0}, direct[3] = {0}; /* output, input gradient, weight gradient */
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    conv_case *k = &cases[c];
    int64_t OH = out_size(k->H, 5, 1, k->o.padding[0], 1),
            OW = out_size(k->W, 5, 1, k->o.padding[1], 1);
    int64_t no = k->N * k->O * OH * OW;
    nn_tensor *x = req(layout(th_rand(4, (int64_t[]){k->N, k->C, k->H, k->W}, -1, 1), (int)c % 3));
    nn_tensor *w = req(th_rand(4, (int64_t[]){k->O, k->C, 5, 5}, -1, 1));
    nn_tensor *b = req(th_rand(1, (int64_t[]){k->O}, -1, 1));
    nn_tensor *R = th_rand(4, (int64_t[]){k->N, k->O, OH, OW}, -1, 1);
    double *xd = th_to_double(x), *wd = th_to_double(w), *bd = th_to_double(b),
           *Rd = th_to_double(R);
    int64_t nx = nn_tensor_numel(x), nw = nn_tensor_numel(w);
    double *ref = malloc(sizeof *ref * (size_t)no), *dx = malloc(sizeof *dx * (size_t)nx);
    double *dw = malloc(sizeof *dw * (size_t)nw);
    ref_conv(k, xd, wd, k->bias ? bd : NULL, OH, OW, ref);
    ref_conv_grad(k, xd, wd, Rd, OH, OW, dx, dw, NULL);
    const double *refs[3] = {ref, dx, dw};
    int64_t ns[3] = {no, nx, nw};
    double mag[3] = {0};
    for (int j = 0; j < 3; j++)
      for (int64_t i = 0; i < ns[j]; i++) mag[j] = fmax(mag[j], fabs(refs[j][i]));
    nn_tensor *first[3] = {0};
    for (int run = 0; run < 3; run++) { /* Winograd on 1 and 2 threads, then direct */
      nn_set_winograd(run < 2);
      nn_set_num_threads(run == 1 ? 2 : 1);
      nn_tensor *o = NULL;
      nn_tensor_zero_grad(x, true);
      nn_tensor_zero_grad(w, true);
      OK(nn_conv2d(&o, x, w, k->bias ? b : NULL, &k->o));
      OK(nn_backward(o, R));
      nn_tensor *got[3] = {o, x->grad, w->grad};
      static const char *names[3] = {"output", "input gradient", "weight gradient"};
      for (int j = 0; j < 3; j++) {
        char what[96];
        snprintf(what, sizeof what, "conv2d winograd case %zu run %d %s", c, run, names[j]);
        th_close(got[j], refs[j], 2e-5 * mag[j], 0, what);
        double *wj = run < 2 ? &worst[j] : &direct[j];
        for (int64_t i = 0; i < ns[j]; i++)
          *wj = fmax(*wj, fabs(nn_tensor_get_flat(got[j], i) - refs[j][i]) / mag[j]);
        nn_tensor *gc = NULL;
        OK(nn_contiguous(&gc, got[j]));
        size_t bytes = (size_t)ns[j] * 4;
        if (run == 0)
          first[j] = nn_tensor_retain(gc);
        else if (run == 1)
          CHECK(!memcmp(nn_tensor_data(gc), nn_tensor_data(first[j]), bytes),
                "conv2d winograd case %zu: 2 threads give other bits than 1 (%s)", c, names[j]);
        else if (avx512) /* direct convolution rounds differently */
          CHECK(memcmp(nn_tensor_data(gc), nn_tensor_data(first[j]), bytes) != 0,
                "conv2d winograd case %zu: the %s equals direct convolution's bit for bit "
                "(Winograd did not run)",
                c, names[j]);
        nn_tensor_free(gc);
      }
      nn_tensor_free(o);
    }
    for (int j = 0; j < 3; j++) nn_tensor_free(first[j]);
    free(xd);
    free(wd);
    free(bd);
    free(Rd);
    free(ref);
    free(dx);
    free(dw);
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
    nn_tensor_free(R);
  }
  nn_set_winograd(wino_default);
  nn_set_num_threads(saved);
  printf("winograd (%s): worst error relative to the largest value: output %.2e, input gradient "
         "%.2e, weight gradient %.2e (direct convolution: %.2e, %.2e, %.2e)\n",
         avx512 ? "AVX-512" : "not used: no AVX-512", worst[0], worst[1], worst[2], direct[0],
         direct[1], direct[2]);
}

static void test_conv_errors(void) {
  nn_tensor *x = th_rand(4, (int64_t[]){2, 4, 8, 8}, -1, 1), *o = (nn_tensor *)&o;
  nn_tensor *w = th_rand(4, (int64_t[]){6, 3, 3, 3}, -1, 1);
  nn_tensor *w2 = th_rand(4, (int64_t[]){6, 2, 3, 3}, -1, 1);
  nn_tensor *w5 = th_rand(4, (int64_t[]){5, 2, 3, 3}, -1, 1);
  nn_tensor *wbig = th_rand(4, (int64_t[]){6, 4, 11, 3}, -1, 1);
  nn_tensor *b = th_rand(1, (int64_t[]){5}, -1, 1);
  nn_tensor *x3 = th_rand(3, (int64_t[]){4, 8, 8}, -1, 1);
  nn_tensor *xl = th_randint(4, (int64_t[]){2, 4, 8, 8}, 3);
  nn_tensor *x64 = th_rand_dt(4, (int64_t[]){2, 4, 8, 8}, -1, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_conv2d(&o, x, w, NULL, NULL), NN_ERR_SHAPE,
             "conv2d: input (2, 4, 8, 8), weight (6, 3, 3, 3), no bias, groups 1: channel "
             "mismatch: weight expects 3 input channels per group, input has 4 / 1 = 4");
  CHECK(o == NULL, "out-parameter NULL on error");
  nn_conv2d_opts g3 = {{1, 1}, {0, 0}, {1, 1}, 3};
  EXPECT_ERR(nn_conv2d(&o, x, w, NULL, &g3), NN_ERR_SHAPE,
             "conv2d: input (2, 4, 8, 8), weight (6, 3, 3, 3), no bias, groups 3: input "
             "channels 4 and output channels 6 must both be divisible by groups");
  nn_conv2d_opts g2 = {{1, 1}, {0, 0}, {1, 1}, 2};
  EXPECT_ERR(nn_conv2d(&o, x, w5, NULL, &g2), NN_ERR_SHAPE,
             "input channels 4 and output channels 5 must both be divisible by groups");
  EXPECT_ERR(nn_conv2d(&o, x, w2, b, &g2), NN_ERR_SHAPE,
             "conv2d: input (2, 4, 8, 8), weight (6, 2, 3, 3), bias (5,): bias must be (6,)");
  EXPECT_ERR(nn_conv2d(&o, x, wbig, NULL, NULL), NN_ERR_SHAPE,
             "conv2d: input (2, 4, 8, 8), weight (6, 4, 11, 3), no bias, stride (1, 1), padding "
             "(0, 0), dilation (1, 1): output (2, 6, 0, 6) is empty");
  nn_conv2d_opts dil = {{1, 1}, {0, 0}, {4, 1}, 1};
  nn_tensor *w4 = th_rand(4, (int64_t[]){6, 4, 3, 3}, -1, 1);
  EXPECT_ERR(nn_conv2d(&o, x, w4, NULL, &dil), NN_ERR_SHAPE, "output (2, 6, 0, 6) is empty");
  EXPECT_ERR(nn_conv2d(&o, x3, w4, NULL, NULL), NN_ERR_SHAPE,
             "conv2d: input (4, 8, 8), weight (6, 4, 3, 3), no bias: input must be 4-D "
             "(N, C, H, W)");
  nn_conv2d_opts bad = {{0, 1}, {0, 0}, {1, 1}, 1};
  EXPECT_ERR(nn_conv2d(&o, x, w4, NULL, &bad), NN_ERR_ARG, "conv2d: stride (0, 1)");
  EXPECT_ERR(nn_conv2d(&o, xl, w4, NULL, NULL), NN_ERR_DTYPE, "conv2d: int64 input");
  EXPECT_ERR(nn_conv2d(&o, x64, w4, NULL, NULL), NN_ERR_DTYPE,
             "conv2d: all operands must share the input's dtype float64, got float32");
  CHECK(o == NULL, "out-parameter NULL on error");
  nn_tensor *all[] = {x, w, w2, w5, wbig, b, x3, xl, x64, w4};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) nn_tensor_free(all[i]);
}

/* ---------------------------------------------------------------- pooling */

typedef struct pool_case {
  int64_t N, C, H, W;
  int k[2], s[2], p[2];
  int null_stride, include_pad;
} pool_case;

/* max (kind 0) or average (kind 1) over each window; windows clipped to the input. */
static void ref_pool(const pool_case *q, int kind, const double *x, int64_t OH, int64_t OW,
                     double *out) {
  int s0 = q->null_stride ? q->k[0] : q->s[0], s1 = q->null_stride ? q->k[1] : q->s[1];
  for (int64_t pl = 0; pl < q->N * q->C; pl++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double best = -INFINITY, sum = 0;
        int cnt = 0;
        for (int kh = 0; kh < q->k[0]; kh++)
          for (int kw = 0; kw < q->k[1]; kw++) {
            int64_t ih = oh * s0 - q->p[0] + kh, iw = ow * s1 - q->p[1] + kw;
            if (ih < 0 || ih >= q->H || iw < 0 || iw >= q->W) continue;
            double v = x[(pl * q->H + ih) * q->W + iw];
            best = v > best ? v : best;
            sum += v;
            cnt++;
          }
        out[(pl * OH + oh) * OW + ow] =
            kind == 0 ? best : sum / (q->include_pad ? q->k[0] * q->k[1] : cnt);
      }
}

static int pool_fn_max(void *ctx, nn_tensor **in, nn_tensor **out) {
  const pool_case *q = ctx;
  return nn_max_pool2d(out, in[0], q->k, q->null_stride ? NULL : q->s, q->p);
}

static int pool_fn_avg(void *ctx, nn_tensor **in, nn_tensor **out) {
  const pool_case *q = ctx;
  return nn_avg_pool2d(out, in[0], q->k, q->null_stride ? NULL : q->s, q->p, q->include_pad);
}

/* Distinct values (a shuffled ramp) so that max pooling has no ties. */
static nn_tensor *distinct(int64_t N, int64_t C, int64_t H, int64_t W) {
  nn_tensor *t = th_rand(4, (int64_t[]){N, C, H, W}, 0, 1);
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) nn_tensor_set_flat(t, i, (double)i);
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = (int64_t)(th_uniform() * (double)(i + 1));
    j = j > i ? i : j;
    double a = nn_tensor_get_flat(t, i), b = nn_tensor_get_flat(t, j);
    nn_tensor_set_flat(t, i, b);
    nn_tensor_set_flat(t, j, a);
  }
  for (int64_t i = 0; i < n; i++) /* spacing 0.05 >> the 1e-3 FD step */
    nn_tensor_set_flat(t, i, nn_tensor_get_flat(t, i) * 0.05 - 1.0);
  return t;
}

static void test_pool(void) {
  pool_case cases[] = {
      {2, 3, 8, 8, {2, 2}, {2, 2}, {0, 0}, 1, 0},  /* the 2x2 fast path */
      {2, 3, 7, 13, {2, 2}, {2, 2}, {0, 0}, 0, 1}, /* odd sizes: last row/col dropped */
      {1, 2, 7, 6, {3, 3}, {2, 2}, {1, 1}, 0, 1},   {1, 2, 7, 6, {3, 3}, {2, 2}, {1, 1}, 0, 0},
      {2, 2, 6, 7, {3, 2}, {1, 2}, {1, 0}, 0, 0},   {1, 3, 5, 5, {2, 3}, {1, 1}, {1, 1}, 0, 1},
      {4, 8, 32, 32, {2, 2}, {2, 2}, {0, 0}, 1, 1}, /* large enough to run in parallel */
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    pool_case *q = &cases[c];
    int s0 = q->null_stride ? q->k[0] : q->s[0], s1 = q->null_stride ? q->k[1] : q->s[1];
    int64_t OH = (q->H + 2 * q->p[0] - q->k[0]) / s0 + 1;
    int64_t OW = (q->W + 2 * q->p[1] - q->k[1]) / s1 + 1;
    for (int kind = 0; kind < 3; kind++) {
      nn_tensor *x = layout(distinct(q->N, q->C, q->H, q->W), kind);
      double *xd = th_to_double(x), *ref = malloc(sizeof *ref * (size_t)(q->N * q->C * OH * OW));
      for (int op = 0; op < 2; op++) {
        nn_tensor *o = NULL;
        OK((op ? pool_fn_avg : pool_fn_max)(q, &x, &o));
        if (!o) continue;
        char what[64];
        snprintf(what, sizeof what, "%s case %zu layout %d", op ? "avg_pool2d" : "max_pool2d", c,
                 kind);
        CHECK(o->shape[2] == OH && o->shape[3] == OW, "%s: shape", what);
        ref_pool(q, op, xd, OH, OW, ref);
        th_close(o, ref, 1e-6, 1e-6, what);
        nn_tensor_free(o);
        if (kind == 1 && nn_tensor_numel(x) < 400) {
          req(x);
          th_gradcheck(op ? pool_fn_avg : pool_fn_max, q, 1, &x, 1e-3, 2e-3, 2e-2, what);
          nn_tensor_set_requires_grad(x, false);
        }
      }
      free(xd);
      free(ref);
      nn_tensor_free(x);
    }
  }
  /* NaN wins, -inf padding is never chosen, argmax routes the gradient */
  nn_tensor *x = NULL, *o = NULL;
  double v[8] = {1, NAN, 3, 4, -5, -6, -7, -8};
  OK(nn_tensor_from_data(&x, 4, (int64_t[]){1, 2, 2, 2}, NN_DTYPE_F64, v));
  OK(nn_max_pool2d(&o, x, (int[]){2, 2}, (int[]){1, 1}, (int[]){1, 1}));
  CHECK(o && nn_tensor_get_flat(o, 0) == 1 && isnan(nn_tensor_get_flat(o, 1)) &&
            isnan(nn_tensor_get_flat(o, 4)),
        "max_pool2d: NaN propagates");
  CHECK(o && nn_tensor_get_flat(o, 9) == -5 && nn_tensor_get_flat(o, 17) == -8,
        "max_pool2d: padding is -inf (got %g, %g)", o ? nn_tensor_get_flat(o, 9) : 0,
        o ? nn_tensor_get_flat(o, 17) : 0);
  nn_tensor_free(o);
  nn_tensor_free(x);
  /* the 2x2 fast path (vector part and tail): ties go to the first, the last NaN wins */
  float xv[20] = {1, 1, 5, 2, NAN, 0, 3, 3, 7, NAN, 1, 1, 5, 9, 0, NAN, 3, 3, 7, 8};
  OK(nn_tensor_from_data(&x, 4, (int64_t[]){1, 1, 2, 10}, NN_DTYPE_F32, xv));
  req(x);
  OK(nn_max_pool2d(&o, x, (int[]){2, 2}, NULL, NULL));
  if (o) {
    double want[5] = {1, 9, NAN, 3, NAN};
    th_close(o, want, 0, 0, "max_pool2d 2x2 ties and NaN");
    nn_tensor *ones = NULL;
    OK(nn_tensor_full(&ones, 4, o->shape, 1.0, NN_DTYPE_F32, nn_cpu));
    OK(nn_backward(o, ones));
    double g[20] = {0};
    g[0] = g[13] = g[15] = g[6] = g[9] = 1;
    if (x->grad) th_close(x->grad, g, 0, 0, "max_pool2d 2x2 argmax");
    nn_tensor_free(ones);
  }
  nn_tensor_free(o);
  nn_tensor_free(x);
  /* float64 */
  nn_tensor *x64 = th_rand_dt(4, (int64_t[]){2, 2, 5, 6}, -1, 1, NN_DTYPE_F64);
  pool_case q = {2, 2, 5, 6, {3, 2}, {2, 2}, {1, 1}, 0, 0};
  double *xd = th_to_double(x64), ref[2 * 2 * 3 * 4];
  for (int op = 0; op < 2; op++) {
    OK((op ? pool_fn_avg : pool_fn_max)(&q, &x64, &o));
    ref_pool(&q, op, xd, 3, 4, ref);
    if (o) th_close(o, ref, 1e-12, 1e-12, "pool float64");
    nn_tensor_free(o);
    req(x64);
    th_gradcheck(op ? pool_fn_avg : pool_fn_max, &q, 1, &x64, 1e-6, 1e-8, 1e-6,
                 "pool float64 grad");
    nn_tensor_set_requires_grad(x64, false);
  }
  free(xd);
  nn_tensor_free(x64);
}

static int gap_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  (void)ctx;
  return nn_global_avg_pool2d(out, in[0]);
}

static void test_global_avg_pool(void) {
  nn_tensor *x = layout(th_rand(4, (int64_t[]){3, 4, 5, 6}, -1, 1), 1), *o = NULL;
  OK(nn_global_avg_pool2d(&o, x));
  CHECK(o && o->ndim == 2 && o->shape[0] == 3 && o->shape[1] == 4, "global_avg_pool2d shape");
  double ref[12] = {0};
  for (int64_t i = 0; i < 3 * 4 * 30; i++) ref[i / 30] += nn_tensor_get_flat(x, i) / 30;
  if (o) th_close(o, ref, 1e-6, 1e-6, "global_avg_pool2d");
  nn_tensor_free(o);
  req(x);
  th_gradcheck(gap_fn, NULL, 1, &x, 1e-3, 2e-3, 2e-2, "global_avg_pool2d grad");
  nn_tensor_free(x);
}

static void test_pool_errors(void) {
  nn_tensor *x = th_rand(4, (int64_t[]){2, 3, 4, 5}, -1, 1), *o = (nn_tensor *)&o;
  nn_tensor *x3 = th_rand(3, (int64_t[]){3, 4, 5}, -1, 1);
  EXPECT_ERR(nn_max_pool2d(&o, x3, (int[]){2, 2}, NULL, NULL), NN_ERR_SHAPE,
             "max_pool2d: input (3, 4, 5) must be 4-D (N, C, H, W)");
  CHECK(o == NULL, "out-parameter NULL on error");
  EXPECT_ERR(nn_max_pool2d(&o, x, (int[]){2, 2}, NULL, (int[]){2, 0}), NN_ERR_ARG,
             "max_pool2d: input (2, 3, 4, 5), kernel (2, 2), stride (2, 2), padding (2, 0): "
             "kernel and stride must be >= 1 and padding in [0, kernel/2]");
  EXPECT_ERR(nn_avg_pool2d(&o, x, (int[]){2, 6}, NULL, NULL, true), NN_ERR_SHAPE,
             "avg_pool2d: input (2, 3, 4, 5), kernel (2, 6), stride (2, 6), padding (0, 0): "
             "output (2, 3, 2, 0) is empty");
  EXPECT_ERR(nn_avg_pool2d(&o, x, (int[]){0, 2}, NULL, NULL, true), NN_ERR_ARG, "avg_pool2d");
  EXPECT_ERR(nn_global_avg_pool2d(&o, x3), NN_ERR_SHAPE,
             "global_avg_pool2d: input (3, 4, 5) must be 4-D");
  CHECK(o == NULL, "out-parameter NULL on error");
  nn_tensor_free(x);
  nn_tensor_free(x3);
}

/* ---------------------------------------------------------------- batch norm */

/* x (N, C, S) row-major; mean/var per channel over N and S (var biased). */
static void ref_stats(const double *x, int64_t N, int64_t C, int64_t S, double *mean, double *var) {
  for (int64_t c = 0; c < C; c++) {
    double s = 0, v = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < S; i++) s += x[(n * C + c) * S + i];
    mean[c] = s / (double)(N * S);
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < S; i++) {
        double d = x[(n * C + c) * S + i] - mean[c];
        v += d * d;
      }
    var[c] = v / (double)(N * S);
  }
}

typedef struct bn_ctx {
  bool training, weight, bias;
  nn_tensor *rm, *rv;
} bn_ctx;

static int bn_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  bn_ctx *b = ctx;
  return nn_batch_norm(out, in[0], b->weight ? in[1] : NULL, b->bias ? in[2] : NULL, b->rm, b->rv,
                       b->training, 0.1, 1e-5);
}

static void test_batch_norm(void) {
  struct {
    int ndim;
    int64_t sh[4];
  } shapes[] = {
      {2, {6, 5}}, {4, {3, 4, 3, 5}}, {3, {4, 3, 7}}, {2, {300, 130}}, {4, {8, 6, 32, 32}}};
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
    for (int variant = 0; variant < 3; variant++) {
      int nd = shapes[si].ndim;
      const int64_t *sh = shapes[si].sh;
      int64_t N = sh[0], C = sh[1], S = 1;
      for (int d = 2; d < nd; d++) S *= sh[d];
      bn_ctx b = {true, variant != 1, variant != 2, NULL, NULL};
      nn_tensor *x = th_rand(nd, sh, -2, 3);
      if (variant == 1) x = layout(x, 1);
      nn_tensor *w = th_rand(1, &C, 0.5, 1.5), *bb = th_rand(1, &C, -1, 1);
      b.rm = th_rand(1, &C, -1, 1);
      b.rv = th_rand(1, &C, 0.5, 2);
      double *xd = th_to_double(x), *wd = th_to_double(w), *bd = th_to_double(bb);
      double *rm0 = th_to_double(b.rm), *rv0 = th_to_double(b.rv);
      double *mean = malloc(sizeof *mean * (size_t)C), *var = malloc(sizeof *var * (size_t)C);
      double *ref = malloc(sizeof *ref * (size_t)(N * C * S));
      ref_stats(xd, N, C, S, mean, var);
      char what[80];
      for (int mode = 0; mode < 2; mode++) { /* training, then eval with the updated stats */
        b.training = mode == 0;
        double *m = mean, *v = var;
        double *rmd = th_to_double(b.rm), *rvd = th_to_double(b.rv);
        if (!b.training) m = rmd, v = rvd;
        for (int64_t n = 0; n < N; n++)
          for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
              int64_t j = (n * C + c) * S + i;
              ref[j] = (xd[j] - m[c]) / sqrt(v[c] + 1e-5) * (b.weight ? wd[c] : 1) +
                       (b.bias ? bd[c] : 0);
            }
        nn_tensor *o = NULL, *in[3] = {x, w, bb};
        OK(bn_fn(&b, in, &o));
        snprintf(what, sizeof what, "batch_norm %s shape %zu variant %d",
                 b.training ? "train" : "eval", si, variant);
        if (o) th_close(o, ref, 1e-4, 1e-4, what);
        nn_tensor_free(o);
        if (b.training) { /* running stats: momentum 0.1, unbiased variance */
          double M = (double)(N * S), rmr[200], rvr[200];
          for (int64_t c = 0; c < C; c++) {
            rmr[c] = 0.9 * rm0[c] + 0.1 * mean[c];
            rvr[c] = 0.9 * rv0[c] + 0.1 * var[c] * M / (M - 1);
          }
          th_close(b.rm, rmr, 1e-6, 1e-5, "batch_norm running_mean");
          th_close(b.rv, rvr, 1e-6, 1e-5, "batch_norm running_var");
        }
        free(rmd);
        free(rvd);
        if (N * C * S <= 200) {
          nn_tensor *gin[3] = {req(x), b.weight ? req(w) : w, b.bias ? req(bb) : bb};
          /* running stats are left alone during the checks (they would drift each forward) */
          nn_tensor *rm = b.rm, *rv = b.rv;
          if (b.training) b.rm = b.rv = NULL;
          th_gradcheck(bn_fn, &b, 3, gin, 1e-3, 3e-3, 3e-2, what);
          b.rm = rm;
          b.rv = rv;
          nn_tensor_set_requires_grad(x, false);
          nn_tensor_set_requires_grad(w, false);
          nn_tensor_set_requires_grad(bb, false);
        }
      }
      free(xd);
      free(wd);
      free(bd);
      free(rm0);
      free(rv0);
      free(mean);
      free(var);
      free(ref);
      nn_tensor_free(x);
      nn_tensor_free(w);
      nn_tensor_free(bb);
      nn_tensor_free(b.rm);
      nn_tensor_free(b.rv);
    }
  /* float64 gradients in training mode, tighter */
  bn_ctx b = {true, true, true, NULL, NULL};
  nn_tensor *x = req(th_rand_dt(4, (int64_t[]){3, 2, 3, 2}, -1, 1, NN_DTYPE_F64));
  nn_tensor *w = req(th_rand_dt(1, (int64_t[]){2}, 0.5, 1.5, NN_DTYPE_F64));
  nn_tensor *bb = req(th_rand_dt(1, (int64_t[]){2}, -1, 1, NN_DTYPE_F64));
  nn_tensor *in[3] = {x, w, bb};
  th_gradcheck(bn_fn, &b, 3, in, 1e-6, 1e-7, 1e-5, "batch_norm float64 grad");
  nn_tensor *o = (nn_tensor *)&o, *c5 = th_rand_dt(1, (int64_t[]){5}, 0, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_batch_norm(&o, x, c5, NULL, NULL, NULL, true, 0.1, 1e-5), NN_ERR_SHAPE,
             "batch_norm: input (3, 2, 3, 2) has 2 channels but weight is (5,)");
  CHECK(o == NULL, "out-parameter NULL on error");
  EXPECT_ERR(nn_batch_norm(&o, x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5), NN_ERR_ARG,
             "batch_norm: input (3, 2, 3, 2): eval mode needs running_mean and running_var");
  nn_tensor *one = th_rand_dt(2, (int64_t[]){1, 4}, 0, 1, NN_DTYPE_F64);
  EXPECT_ERR(nn_batch_norm(&o, one, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), NN_ERR_SHAPE,
             "batch_norm: input (1, 4): training needs more than one value per channel");
  nn_tensor *x5 = th_rand(5, (int64_t[]){2, 2, 2, 2, 2}, 0, 1),
            *w32 = th_rand(1, (int64_t[]){2}, 0, 1);
  EXPECT_ERR(nn_batch_norm(&o, x5, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), NN_ERR_SHAPE,
             "batch_norm: input (2, 2, 2, 2, 2) must be (N, C), (N, C, L) or (N, C, H, W)");
  EXPECT_ERR(nn_batch_norm(&o, x, w32, NULL, NULL, NULL, true, 0.1, 1e-5), NN_ERR_DTYPE,
             "batch_norm: all operands must share the input's dtype float64, got float32");
  nn_tensor *all[] = {x, w, bb, c5, one, x5, w32};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) nn_tensor_free(all[i]);
}

/* ---------------------------------------------------------------- layer norm */

typedef struct ln_ctx {
  int k;
  bool weight, bias;
} ln_ctx;

static int ln_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  ln_ctx *l = ctx;
  return nn_layer_norm(out, in[0], l->k, l->weight ? in[1] : NULL, l->bias ? in[2] : NULL, 1e-5);
}

static void test_layer_norm(void) {
  struct {
    int ndim;
    int64_t sh[4];
    int k;
  } cases[] = {{2, {4, 6}, 1}, {3, {2, 3, 5}, 2},  {3, {3, 2, 4}, 1},
               {1, {7}, 1},    {2, {300, 520}, 1}, {4, {2, 2, 3, 4}, 3}};
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
    for (int variant = 0; variant < 3; variant++) {
      int nd = cases[ci].ndim, k = cases[ci].k;
      const int64_t *sh = cases[ci].sh;
      ln_ctx l = {k, variant != 1, variant != 2};
      int64_t R = 1, D = 1;
      for (int d = 0; d < nd; d++) *(d < nd - k ? &R : &D) *= sh[d];
      nn_tensor *x = th_rand(nd, sh, -2, 3);
      if (variant == 1) x = layout(x, 1);
      nn_tensor *w = th_rand(k, sh + nd - k, 0.5, 1.5), *b = th_rand(k, sh + nd - k, -1, 1);
      if (variant == 2) w = layout(w, 1);
      double *xd = th_to_double(x), *wd = th_to_double(w), *bd = th_to_double(b);
      double *ref = malloc(sizeof *ref * (size_t)(R * D)), mean[1], var[1];
      for (int64_t r = 0; r < R; r++) {
        ref_stats(xd + r * D, 1, 1, D, mean, var);
        for (int64_t j = 0; j < D; j++)
          ref[r * D + j] =
              (xd[r * D + j] - mean[0]) / sqrt(var[0] + 1e-5) * (l.weight ? wd[j] : 1) +
              (l.bias ? bd[j] : 0);
      }
      nn_tensor *o = NULL, *in[3] = {x, w, b};
      OK(ln_fn(&l, in, &o));
      char what[64];
      snprintf(what, sizeof what, "layer_norm case %zu variant %d", ci, variant);
      if (o) {
        CHECK(nn_tensor_same_shape(o, x), "%s: shape", what);
        th_close(o, ref, 1e-4, 1e-4, what);
      }
      nn_tensor_free(o);
      if (R * D <= 100) {
        nn_tensor *gin[3] = {req(x), l.weight ? req(w) : w, l.bias ? req(b) : b};
        th_gradcheck(ln_fn, &l, 3, gin, 1e-3, 3e-3, 3e-2, what);
      } else { /* the threaded backward, against the same formulas in double */
        nn_tensor *R_ = th_rand(nd, sh, -1, 1);
        req(x);
        req(w);
        req(b);
        OK(ln_fn(&l, in, &o));
        OK(nn_backward(o, R_));
        nn_tensor_free(o);
        double *g = th_to_double(R_), *dx = malloc(sizeof *dx * (size_t)(R * D));
        double *dw = calloc((size_t)D, sizeof *dw), *db = calloc((size_t)D, sizeof *db);
        for (int64_t r = 0; r < R; r++) {
          ref_stats(xd + r * D, 1, 1, D, mean, var);
          double is = 1 / sqrt(var[0] + 1e-5), sg = 0, sgx = 0;
          for (int64_t j = 0; j < D; j++) {
            double xh = (xd[r * D + j] - mean[0]) * is, gj = g[r * D + j] * (l.weight ? wd[j] : 1);
            sg += gj;
            sgx += gj * xh;
            dw[j] += g[r * D + j] * xh;
            db[j] += g[r * D + j];
          }
          for (int64_t j = 0; j < D; j++) {
            double xh = (xd[r * D + j] - mean[0]) * is, gj = g[r * D + j] * (l.weight ? wd[j] : 1);
            dx[r * D + j] = is * (gj - sg / D - xh * sgx / D);
          }
        }
        th_close(x->grad, dx, 1e-4, 1e-3, "layer_norm threaded dx");
        if (l.weight) th_close(w->grad, dw, 1e-3, 1e-4, "layer_norm threaded dweight");
        if (l.bias) th_close(b->grad, db, 1e-3, 1e-4, "layer_norm threaded dbias");
        free(g);
        free(dx);
        free(dw);
        free(db);
        nn_tensor_free(R_);
      }
      free(xd);
      free(wd);
      free(bd);
      free(ref);
      nn_tensor_free(x);
      nn_tensor_free(w);
      nn_tensor_free(b);
    }
  { /* float64 */
    ln_ctx l = {2, true, true};
    nn_tensor *x = req(th_rand_dt(3, (int64_t[]){2, 3, 4}, -1, 1, NN_DTYPE_F64));
    nn_tensor *w = req(th_rand_dt(2, (int64_t[]){3, 4}, 0.5, 1.5, NN_DTYPE_F64));
    nn_tensor *b = req(th_rand_dt(2, (int64_t[]){3, 4}, -1, 1, NN_DTYPE_F64));
    nn_tensor *in[3] = {x, w, b};
    th_gradcheck(ln_fn, &l, 3, in, 1e-6, 1e-8, 1e-6, "layer_norm float64 grad");
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
  }
  nn_tensor *x = th_rand(3, (int64_t[]){2, 3, 4}, 0, 1), *w = th_rand(1, (int64_t[]){3}, 0, 1);
  nn_tensor *o = (nn_tensor *)&o;
  EXPECT_ERR(nn_layer_norm(&o, x, 1, w, NULL, 1e-5), NN_ERR_SHAPE,
             "layer_norm: input (2, 3, 4) normalised over its last 1 dims but weight is (3,)");
  CHECK(o == NULL, "out-parameter NULL on error");
  EXPECT_ERR(nn_layer_norm(&o, x, 4, NULL, NULL, 1e-5), NN_ERR_SHAPE,
             "layer_norm: input (2, 3, 4): n_norm_dims 4 must be in [1, 3]");
  EXPECT_ERR(nn_layer_norm(&o, x, 1, NULL, NULL, -1), NN_ERR_ARG,
             "layer_norm: eps -1 must be >= 0");
  nn_tensor_free(x);
  nn_tensor_free(w);
}

int main(void) {
  th_seed(7);
  test_conv_forward();
  test_conv_gradcheck();
  test_conv_backward_threaded();
  test_conv_winograd();
  test_conv_errors();
  test_pool();
  test_global_avg_pool();
  test_pool_errors();
  test_batch_norm();
  test_layer_norm();
  return th_done();
}
