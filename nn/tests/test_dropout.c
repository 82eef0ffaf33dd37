/* nn/tests/test_dropout.c: gyro dropout, block-wise dropout and the block-sparse products
 * (nn/gyro_dropout.h, nn/ops_block.h). N rows, I/O features, G row groups, bs block size.
 *
 * Tolerances: block_linear against a double reference 1e-5 (float32 dot products of <= 64
 * terms); block-wise against dense-with-mask 1e-5 relative, not bit equality, because BLAS
 * blocks a shorter inner dimension (only the kept columns) differently from the dense one, so
 * the float32 sums are added in another order; dropout layers alone and checkpoint resumes are
 * compared bit for bit (memcmp). */
#include "checkpoint.h"
#include "gyro_dropout.h"
#include "harness.h"
#include "module.h"
#include "ops_block.h"
#include "optim.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static nn_tensor *mask_rand(int64_t G, int64_t nb, double keep) {
  nn_tensor *m = th_rand(2, (int64_t[]){G, nb}, 0, 1);
  for (int64_t i = 0; i < G * nb; i++) nn_tensor_set_flat(m, i, nn_tensor_get_flat(m, i) < keep);
  return m;
}

/* group of row r for G groups over N rows: rows [g*N/G, (g+1)*N/G) */
static int64_t grp(int64_t r, int64_t G, int64_t N) {
  int64_t g = 0;
  while (g + 1 < G && (g + 1) * N / G <= r) g++;
  return g;
}

static double flag(nn_tensor *m, int64_t r, int64_t N, int64_t u, int64_t bs) {
  if (!m) return 1;
  return nn_tensor_get_flat(m, grp(r, m->shape[0], N) * m->shape[1] + u / bs);
}

typedef struct {
  nn_tensor *kin;
  int64_t bsi;
  nn_tensor *kout;
  int64_t bso;
} bl_ctx;

static int bl_fn(void *vc, nn_tensor **in, nn_tensor **out) {
  bl_ctx *c = vc;
  return nn_block_linear(out, in[0], in[1], in[2], c->kin, c->bsi, c->kout, c->bso);
}

/* The same function densely: linear(x * expand(kin), w, b) * expand(kout). */
static int dense_fn(void *vc, nn_tensor **in, nn_tensor **out) {
  bl_ctx *c = vc;
  int64_t N = in[0]->shape[0];
  nn_tensor *mi = NULL, *mo = NULL, *xm = NULL, *y = NULL;
  int rc = NN_OK;
  if (c->kin) rc = nn_block_mask_expand(&mi, c->kin, N, c->bsi);
  if (!rc) rc = c->kin ? nn_mul(&xm, in[0], mi) : (xm = nn_tensor_retain(in[0]), NN_OK);
  if (!rc) rc = nn_linear(&y, xm, in[1], in[2]);
  if (!rc && c->kout) rc = nn_block_mask_expand(&mo, c->kout, N, c->bso);
  if (!rc) rc = c->kout ? nn_mul(out, y, mo) : (*out = nn_tensor_retain(y), NN_OK);
  nn_tensor_free(mi);
  nn_tensor_free(mo);
  nn_tensor_free(xm);
  nn_tensor_free(y);
  return rc;
}

static void test_block_linear(void) {
  /* N, I, O, bsi, bso, Gi, Go (0: no mask), bias */
  static const int64_t cases[][8] = {{10, 32, 24, 8, 4, 3, 4, 1}, {7, 16, 16, 4, 8, 1, 0, 1},
                                     {5, 12, 20, 3, 5, 0, 6, 0},  {9, 8, 8, 2, 2, 2, 2, 1},
                                     {0, 8, 8, 2, 2, 2, 2, 1},    {6, 16, 16, 16, 16, 1, 1, 1}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    const int64_t *k = cases[c];
    int64_t N = k[0], NI = k[1], O = k[2];
    nn_tensor *x = th_rand(2, (int64_t[]){N, NI}, -1, 1),
              *w = th_rand(2, (int64_t[]){O, NI}, -1, 1);
    nn_tensor *b = k[7] ? th_rand(1, (int64_t[]){O}, -1, 1) : NULL;
    bl_ctx ctx = {k[5] ? mask_rand(k[5], NI / k[3], 0.5) : NULL, k[3],
                  k[6] ? mask_rand(k[6], O / k[4], 0.6) : NULL, k[4]};
    nn_tensor *y = NULL, *in[3] = {x, w, b};
    OK(bl_fn(&ctx, in, &y));
    double *ref = calloc((size_t)(N * O + 1), sizeof *ref);
    for (int64_t r = 0; r < N; r++)
      for (int64_t o = 0; o < O; o++) {
        if (!flag(ctx.kout, r, N, o, ctx.bso)) continue;
        double s = b ? nn_tensor_get_flat(b, o) : 0;
        for (int64_t i = 0; i < NI; i++)
          s += flag(ctx.kin, r, N, i, ctx.bsi) * nn_tensor_get_flat(x, r * NI + i) *
               nn_tensor_get_flat(w, o * NI + i);
        ref[r * O + o] = s;
      }
    char what[64];
    snprintf(what, sizeof what, "block_linear case %zu", c);
    if (y) th_close(y, ref, 1e-5, 1e-5, what);
    free(ref);
    nn_tensor_free(y);
    /* gradients: against finite differences, and against the dense function with the masks */
    nn_tensor_set_requires_grad(x, true);
    nn_tensor_set_requires_grad(w, true);
    if (b) nn_tensor_set_requires_grad(b, true);
    if (N > 0) th_gradcheck(bl_fn, &ctx, b ? 3 : 2, in, 1e-2, 2e-3, 2e-2, what);
    nn_tensor *yb = NULL, *yd = NULL, *r = th_rand(2, (int64_t[]){N, O}, -1, 1), *l = NULL;
    double *g[2][3] = {{0}};
    for (int i = 0; i < (b ? 3 : 2); i++) nn_tensor_zero_grad(in[i], true);
    for (int pass = 0; pass < 2; pass++) {
      nn_tensor **yy = pass ? &yd : &yb;
      OK((pass ? dense_fn : bl_fn)(&ctx, in, yy));
      OK(nn_mul(&l, *yy, r));
      nn_tensor *s = NULL;
      OK(nn_sum_dims(&s, l, 3u, false));
      OK(nn_backward(s, NULL));
      for (int i = 0; i < (b ? 3 : 2); i++) {
        g[pass][i] = th_to_double(in[i]->grad);
        nn_tensor_zero_grad(in[i], true);
      }
      nn_tensor_free(s);
      nn_tensor_free(l);
    }
    double *yref = th_to_double(yd);
    th_close(yb, yref, 1e-5, 1e-5, "block_linear equals dense with mask");
    free(yref);
    for (int i = 0; i < (b ? 3 : 2); i++) {
      nn_tensor *t = NULL;
      OK(nn_tensor_from_data(&t, in[i]->ndim, in[i]->shape, NN_DTYPE_F64, g[0][i]));
      snprintf(what, sizeof what, "case %zu grad %d equals dense with mask", c, i);
      th_close(t, g[1][i], 1e-5, 1e-5, what);
      nn_tensor_free(t);
      free(g[0][i]);
      free(g[1][i]);
    }
    nn_tensor_free(yb);
    nn_tensor_free(yd);
    nn_tensor_free(r);
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
    nn_tensor_free(ctx.kin);
    nn_tensor_free(ctx.kout);
  }
  /* bad input */
  nn_tensor *x = th_rand(2, (int64_t[]){4, 12}, -1, 1), *w = th_rand(2, (int64_t[]){8, 12}, -1, 1);
  nn_tensor *m = mask_rand(2, 3, 0.5), *y = NULL;
  EXPECT_ERR(nn_block_linear(&y, x, w, NULL, m, 5, NULL, 1), NN_ERR_SHAPE,
             "input block size 5 does not divide 12 features");
  EXPECT_ERR(nn_block_linear(&y, x, w, NULL, m, 3, NULL, 1), NN_ERR_SHAPE,
             "input mask of shape (2, 3), expected (groups, 4)");
  EXPECT_ERR(nn_block_linear(&y, x, w, x, NULL, 1, NULL, 1), NN_ERR_SHAPE,
             "block_linear: input (4, 12), weight (8, 12) with bias");
  CHECK(y == NULL, "out-parameter NULL on error");
  nn_tensor_free(x);
  nn_tensor_free(w);
  nn_tensor_free(m);
}

static nn_module *gyro(double p, int64_t size, int sigma, int tau, int64_t period, int64_t block,
                       bool shared) {
  nn_gyro_opts o = {p, size, sigma, tau, 0, period, block, shared};
  nn_module *m = NULL;
  OK(nn_gyro_dropout_new(&m, &o));
  return m;
}

static nn_tensor *buf(nn_module *m, const char *name) {
  for (int i = 0; i < m->n_buffers; i++)
    if (!strcmp(m->buffers[i].name, name)) return m->buffers[i].t;
  return NULL;
}

static void test_gyro(void) {
  /* the period formula: total_iters * tau / sigma, at least 1; period overrides */
  nn_gyro_opts o = {0.5, 64, 256, 16, 4690, 0, 1, false};
  CHECK(nn_gyro_period(&o) == 293, "period %lld", (long long)nn_gyro_period(&o));
  o.iters = 10;
  CHECK(nn_gyro_period(&o) == 1, "short run: period 1");
  o.sigma = 64, o.tau = 8, o.iters = 1000;
  CHECK(nn_gyro_period(&o) == 125, "period %lld", (long long)nn_gyro_period(&o));
  o.period = 7;
  CHECK(nn_gyro_period(&o) == 7, "explicit period");

  /* keep rate of the pool: 256 x 512 Bernoulli(0.7) draws, 5 standard deviations */
  nn_manual_seed(3);
  nn_module *g = gyro(0.3, 512, 256, 16, 5, 1, false);
  nn_tensor *pool = buf(g, "pool");
  double s = 0, n = (double)nn_tensor_numel(pool);
  for (int64_t i = 0; i < nn_tensor_numel(pool); i++) s += nn_tensor_get_flat(pool, i);
  CHECK(fabs(s / n - 0.7) < 5 * sqrt(0.21 / n), "keep rate %g", s / n);

  /* one mask per row group within a period, a new draw after it; N = 37 not divisible by tau */
  for (int64_t N = 37; N >= 5; N -= 32) {
    nn_tensor *x = NULL, *y = NULL;
    OK(nn_tensor_full(&x, 2, (int64_t[]){N, 512}, 1.0, NN_DTYPE_F32, nn_cpu));
    int64_t prev[16] = {0};
    for (int it = 0; it < 15; it++) {
      OK(nn_module_forward(g, x, &y));
      if (!y) break;
      const int64_t *draw = nn_tensor_data(buf(g, "draw"));
      int64_t step = *(int64_t *)nn_tensor_data(buf(g, "step"));
      bool ok = true;
      for (int64_t r = 0; r < N; r++) {
        int64_t gr = grp(r, 16, N);
        for (int64_t u = 0; u < 512; u++)
          if (fabs(nn_tensor_get_flat(y, r * 512 + u) -
                   nn_tensor_get_flat(pool, draw[gr] * 512 + u) / 0.7) > 1e-6)
            ok = false;
      }
      CHECK(ok, "N=%lld step %lld: row groups use the drawn masks, scaled", (long long)N,
            (long long)step);
      bool distinct = true;
      for (int i = 0; i < 16; i++)
        for (int j = 0; j < i; j++) distinct &= draw[i] != draw[j];
      CHECK(distinct, "tau distinct masks per draw");
      if ((step - 1) % 5 != 0)
        CHECK(!memcmp(prev, draw, sizeof prev), "same draw within a period");
      else if (step > 1)
        CHECK(memcmp(prev, draw, sizeof prev), "new draw after a period");
      memcpy(prev, draw, sizeof prev);
      nn_tensor_free(y);
    }
    nn_tensor_free(x);
  }
  /* gradient: dx = dout * mask / (1 - p) */
  {
    nn_tensor *x = th_rand(2, (int64_t[]){20, 512}, -1, 1), *y = NULL, *sum = NULL;
    nn_tensor_set_requires_grad(x, true);
    OK(nn_module_forward(g, x, &y));
    OK(nn_sum_dims(&sum, y, 3u, false));
    OK(nn_backward(sum, NULL));
    bool ok = x->grad != NULL;
    for (int64_t i = 0; ok && i < 20 * 512; i++) {
      double xv = nn_tensor_get_flat(x, i), yv = nn_tensor_get_flat(y, i),
             gv = nn_tensor_get_flat(x->grad, i);
      ok = (gv == 0 && yv == 0) || (fabs(gv - 1 / 0.7) < 1e-6 && fabs(yv - xv / 0.7) < 1e-6);
    }
    CHECK(ok, "gradient is the scaled mask");
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_tensor_free(sum);
  }
  /* evaluation: identity */
  nn_module_train(g, false);
  nn_tensor *x = th_rand(2, (int64_t[]){3, 512}, -1, 1), *y = NULL;
  OK(nn_module_forward(g, x, &y));
  CHECK(y == x, "evaluation returns the input");
  nn_tensor_free(y);
  nn_tensor_free(x);
  nn_module_free(g);

  /* shared: one index for every layer built after one seed; independent: another */
  nn_manual_seed(9);
  nn_module *a = gyro(0.5, 64, 32, 4, 1, 1, true), *b = gyro(0.5, 128, 32, 4, 1, 1, true);
  nn_module *c = gyro(0.5, 64, 32, 4, 1, 1, false);
  bool same = true, diff = false;
  for (int it = 0; it < 6; it++) {
    nn_module *ms[3] = {a, b, c};
    for (int k = 0; k < 3; k++) {
      nn_tensor *xx = NULL, *yy = NULL;
      OK(nn_tensor_full(&xx, 2, (int64_t[]){8, k == 1 ? 128 : 64}, 1.0, NN_DTYPE_F32, nn_cpu));
      OK(nn_module_forward(ms[k], xx, &yy));
      nn_tensor_free(xx);
      nn_tensor_free(yy);
    }
    same &= !memcmp(nn_tensor_data(buf(a, "draw")), nn_tensor_data(buf(b, "draw")),
                    4 * sizeof(int64_t));
    diff |= memcmp(nn_tensor_data(buf(a, "draw")), nn_tensor_data(buf(c, "draw")),
                   4 * sizeof(int64_t)) != 0;
  }
  CHECK(same, "shared layers draw the same subnetwork indices");
  CHECK(diff, "independent layers draw their own");
  nn_module_free(a);
  nn_module_free(b);
  nn_module_free(c);

  /* bad options */
  nn_module *m = NULL;
  nn_opt bad[] = {{"p", 1.0, NULL}, {"size", 64, NULL}, {"iters", 100, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 3, bad), NN_ERR_ARG, "p must be in [0, 1), got 1");
  nn_opt st[] = {{"sigma", 8, NULL}, {"size", 64, NULL}, {"iters", 100, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 3, st), NN_ERR_ARG,
             "need sigma >= tau >= 1, got sigma=8, tau=16");
  nn_opt bl[] = {{"block", 48, NULL}, {"size", 64, NULL}, {"iters", 100, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 3, bl), NN_ERR_ARG,
             "block=48 does not divide size=64");
  nn_opt un[] = {{"sigmaa", 8, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 1, un), NN_ERR_ARG,
             "unknown option \"sigmaa\"; known options: p, size, sigma, tau, iters, period, block, "
             "shared");
  nn_opt ni[] = {{"size", 64, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 1, ni), NN_ERR_ARG, "give iters");
  EXPECT_ERR(nn_layer_new(&m, "GyroDropout", 0, NULL), NN_ERR_ARG,
             "size (units per row) is required");
  nn_opt bp[] = {{"p", -0.1, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "BlockDropout", 1, bp), NN_ERR_ARG,
             "BlockDropout: p must be in [0, 1)");
  CHECK(m == NULL, "no module on error");
}

static void test_block_dropout(void) {
  nn_module *d = NULL;
  nn_opt o[] = {{"p", 0.25, NULL}, {"block", 16, NULL}, {"groups", 3, NULL}};
  OK(nn_layer_new(&d, "BlockDropout", 3, o));
  if (!d) return;
  nn_tensor *x = NULL, *y = NULL;
  OK(nn_tensor_full(&x, 2, (int64_t[]){10, 256}, 1.0, NN_DTYPE_F32, nn_cpu));
  double kept = 0, total = 0;
  bool blocks = true, groups = true;
  for (int it = 0; it < 200; it++) {
    OK(nn_module_forward(d, x, &y));
    if (!y) break;
    for (int64_t r = 0; r < 10; r++)
      for (int64_t u = 0; u < 256; u++) {
        double v = nn_tensor_get_flat(y, r * 256 + u);
        if (v != nn_tensor_get_flat(y, r * 256 + u / 16 * 16)) blocks = false;
        int64_t r0 = grp(r, 3, 10) * 10 / 3; /* the group's first row */
        if (v != nn_tensor_get_flat(y, r0 * 256 + u)) groups = false;
        kept += v != 0;
        total++;
      }
    nn_tensor_free(y);
  }
  CHECK(blocks, "units dropped in blocks of 16");
  CHECK(groups, "one mask per row group");
  /* 200 x 3 groups x 16 blocks = 9600 block draws */
  CHECK(fabs(kept / total - 0.75) < 5 * sqrt(0.75 * 0.25 / 9600), "keep rate %g", kept / total);
  nn_tensor *x2 = th_rand(2, (int64_t[]){4, 40}, 0, 1);
  EXPECT_ERR(nn_module_forward(d, x2, &y), NN_ERR_SHAPE,
             "BlockDropout: block=16 does not divide the 40 units");
  nn_tensor_free(x2);
  nn_tensor_free(x);
  nn_module_free(d);
}

/* MLP I -> H -> H -> C with the given dropout layers after each hidden ReLU, built twice over the
 * same children: a Sequential (dense with mask) and a BlockSequential (block-sparse). */
static void mlp_pair(nn_module *d1, nn_module *d2, int64_t I, int64_t H, int64_t C, nn_module **seq,
                     nn_module **bseq) {
  nn_module *l1, *l2, *l3, *r1, *r2;
  nn_linear_new(&l1, I, H, true);
  nn_linear_new(&l2, H, H, true);
  nn_linear_new(&l3, H, C, true);
  nn_activation_new(&r1, NN_ACT_RELU, 0);
  nn_activation_new(&r2, NN_ACT_RELU, 0);
  nn_module *ch[] = {l1, r1, d1, l2, r2, d2, l3};
  OK(nn_sequential_new(seq, 7, ch));
  OK(nn_block_sequential_new(bseq, 7, ch));
  for (int i = 0; i < 7; i++)
    if (ch[i] != d1 && ch[i] != d2) nn_module_free(ch[i]);
}

static double *loss_grads(nn_module *m, nn_tensor *x, nn_tensor *lab, double **out_y) {
  nn_tensor *y = NULL, *loss = NULL;
  nn_module_zero_grad(m, true);
  OK(nn_module_forward(m, x, &y));
  OK(nn_cross_entropy(&loss, y, lab, NN_REDUCTION_MEAN));
  OK(nn_backward(loss, NULL));
  nn_named *l;
  int n;
  nn_module_parameters(m, &l, &n);
  int64_t tot = 0;
  for (int i = 0; i < n; i++) tot += nn_tensor_numel(l[i].t);
  double *g = calloc((size_t)tot, sizeof *g);
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    double *gi = th_to_double(l[i].t->grad);
    memcpy(g + off, gi, (size_t)nn_tensor_numel(l[i].t) * sizeof *g);
    off += nn_tensor_numel(l[i].t);
    free(gi);
  }
  nn_named_list_free(l, n);
  *out_y = th_to_double(y);
  nn_tensor_free(y);
  nn_tensor_free(loss);
  return g;
}

static void test_block_equals_dense(void) {
  for (int kind = 0; kind < 3; kind++) {
    nn_manual_seed(11);
    nn_module *d1 = NULL, *d2 = NULL, *seq = NULL, *bseq = NULL;
    const int64_t N = 10, I = 24, H = 64, C = 5;
    if (kind < 2) {
      OK(nn_block_dropout_new(&d1, 0.5, 16, kind ? 3 : 1));
      OK(nn_block_dropout_new(&d2, 0.5, 8, kind ? 4 : 1));
    } else {
      d1 = gyro(0.5, H, 8, 4, 2, 16, true);
      d2 = gyro(0.5, H, 8, 4, 2, 8, true);
    }
    mlp_pair(d1, d2, I, H, C, &seq, &bseq);
    nn_tensor *x = th_rand(2, (int64_t[]){N, I}, -1, 1), *lab = th_randint(1, (int64_t[]){N}, C);
    nn_tensor *s1 = kind == 2 ? buf(d1, "step") : NULL, *s2 = kind == 2 ? buf(d2, "step") : NULL;
    for (int step = 0; step < 3; step++) {
      double *yd, *yb;
      nn_manual_seed(100 + step);
      int64_t k1 = s1 ? *(int64_t *)nn_tensor_data(s1) : 0,
              k2 = s2 ? *(int64_t *)nn_tensor_data(s2) : 0;
      double *gd = loss_grads(seq, x, lab, &yd);
      nn_manual_seed(100 + step); /* same draws again */
      if (s1) *(int64_t *)nn_tensor_data(s1) = k1, *(int64_t *)nn_tensor_data(s2) = k2;
      double *gb = loss_grads(bseq, x, lab, &yb);
      nn_tensor *t = NULL;
      OK(nn_tensor_from_data(&t, 2, (int64_t[]){N, C}, NN_DTYPE_F64, yb));
      char what[80];
      snprintf(what, sizeof what, "kind %d step %d: block-wise output equals dense with mask", kind,
               step);
      th_close(t, yd, 1e-5, 1e-5, what);
      nn_tensor_free(t);
      int64_t np = nn_module_num_params(seq);
      OK(nn_tensor_from_data(&t, 1, &np, NN_DTYPE_F64, gb));
      snprintf(what, sizeof what, "kind %d step %d: block-wise gradients equal dense with mask",
               kind, step);
      th_close(t, gd, 1e-5, 1e-5, what);
      nn_tensor_free(t);
      free(yd);
      free(yb);
      free(gd);
      free(gb);
    }
    nn_tensor_free(x);
    nn_tensor_free(lab);
    nn_module_free(seq);
    nn_module_free(bseq);
    nn_module_free(d1);
    nn_module_free(d2);
  }
}

/* train k steps with SGD on fixed data */
static void train(nn_module *m, nn_optim *o, int k, int64_t N) {
  for (int s = 0; s < k; s++) {
    nn_rng r;
    nn_rng_init(&r, 77, (uint64_t)s);
    nn_tensor *x = NULL, *lab = NULL, *y = NULL, *loss = NULL;
    OK(nn_tensor_empty(&x, 2, (int64_t[]){N, 32}, NN_DTYPE_F32, nn_cpu));
    OK(nn_normal_(x, 0, 1, &r));
    OK(nn_tensor_zeros(&lab, 1, &N, NN_DTYPE_I64, nn_cpu));
    for (int64_t i = 0; i < N; i++) nn_tensor_set_flat(lab, i, (double)nn_rng_below(&r, 4));
    nn_optim_zero_grad(o, true);
    OK(nn_module_forward(m, x, &y));
    OK(nn_cross_entropy(&loss, y, lab, NN_REDUCTION_MEAN));
    OK(nn_backward(loss, NULL));
    OK(nn_optim_step(o));
    nn_tensor_free(x);
    nn_tensor_free(lab);
    nn_tensor_free(y);
    nn_tensor_free(loss);
  }
}

static nn_module *resume_model(uint64_t seed, nn_optim **opt) {
  nn_manual_seed(seed);
  nn_module *d1 = gyro(0.5, 64, 16, 4, 3, 16, false), *d2 = NULL,
            *d3 = gyro(0.3, 64, 8, 2, 2, 1, false);
  OK(nn_block_dropout_new(&d2, 0.4, 8, 2));
  nn_module *l1, *l2, *l3, *l4, *r1, *r2, *r3;
  nn_linear_new(&l1, 32, 64, true);
  nn_linear_new(&l2, 64, 64, true);
  nn_linear_new(&l3, 64, 64, true);
  nn_linear_new(&l4, 64, 4, true);
  nn_activation_new(&r1, NN_ACT_RELU, 0);
  nn_activation_new(&r2, NN_ACT_RELU, 0);
  nn_activation_new(&r3, NN_ACT_RELU, 0);
  nn_module *ch[] = {l1, r1, d1, l2, r2, d2, l3, r3, d3, l4}, *m = NULL;
  OK(nn_block_sequential_new(&m, 10, ch));
  for (int i = 0; i < 10; i++) nn_module_free(ch[i]);
  nn_named *l;
  int n;
  nn_module_parameters(m, &l, &n);
  nn_tensor *ps[16];
  for (int i = 0; i < n; i++) ps[i] = l[i].t;
  nn_named_list_free(l, n);
  nn_optim_opts oo = nn_optim_defaults(NN_OPTIM_SGD);
  oo.lr = 0.05;
  oo.momentum = 0.9;
  OK(nn_optim_new(opt, NN_OPTIM_SGD, n, ps, &oo));
  return m;
}

static void test_resume(void) {
  char path[] = "/tmp/wb_test_dropout_XXXXXX";
  int fd = mkstemp(path);
  if (fd >= 0) close(fd);
  nn_optim *oa = NULL, *ob = NULL;
  nn_module *a = resume_model(5, &oa);
  train(a, oa, 7, 13); /* 13 rows: not divisible by tau = 4 */
  OK(nn_checkpoint_save(path, a, oa, nn_default_rng(), NULL));
  train(a, oa, 8, 13);
  nn_module *b = resume_model(6, &ob); /* another seed: everything must come from the file */
  OK(nn_checkpoint_load(path, b, ob, nn_default_rng(), NULL));
  train(b, ob, 8, 13);
  nn_named *la, *lb;
  int na, nb;
  nn_module_parameters(a, &la, &na);
  nn_module_parameters(b, &lb, &nb);
  bool same = na == nb;
  for (int i = 0; same && i < na; i++)
    same = !memcmp(nn_tensor_data(la[i].t), nn_tensor_data(lb[i].t),
                   (size_t)nn_tensor_numel(la[i].t) * sizeof(float));
  CHECK(same, "resumed run has the uninterrupted run's parameters bit for bit");
  nn_named_list_free(la, na);
  nn_named_list_free(lb, nb);
  nn_module_buffers(a, &la, &na);
  nn_module_buffers(b, &lb, &nb);
  same = na == nb && na == 8;
  for (int i = 0; same && i < na; i++)
    same = !memcmp(nn_tensor_data(la[i].t), nn_tensor_data(lb[i].t),
                   (size_t)nn_tensor_numel(la[i].t) * nn_dtype_size(la[i].t->dtype));
  CHECK(same, "and the same gyro state (pool, draw, step, key)");
  nn_named_list_free(la, na);
  nn_named_list_free(lb, nb);
  nn_module_free(a);
  nn_module_free(b);
  nn_optim_free(oa);
  nn_optim_free(ob);
  unlink(path);
}

int main(void) {
  th_seed(1);
  nn_set_num_threads(1);
  test_block_linear();
  test_gyro();
  test_block_dropout();
  test_block_equals_dense();
  test_resume();
  return th_done();
}
