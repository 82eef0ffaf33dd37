/* nn/tests/test_fusion.c: fused ops against the unfused ops they replace, bit for bit.
 *
 * nn_conv2d_relu_max_pool2d must give exactly (memcmp) the output and the gradients of x, w and
 * bias of conv2d, relu and max_pool2d in turn: on inputs with negative values, exact zeros (both
 * signs), ties inside pooling windows and NaN; float32 and float64; contiguous and strided x;
 * every subset of the inputs requiring grad; 1 and 2 threads. nn.Sequential's fusion of a
 * Conv2d, ReLU, MaxPool2d run is checked against running its children one by one, and its
 * parameter names and per-layer stats are checked to be those of the unfused layers.
 * N batch, C channels, H, W input, O output channels, K kernel. */
#include "harness.h"
#include "module.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Values on a coarse grid (k/4 in [-2, 2]): many ties and exact zeros; some -0.0; one NaN when
 * nan is set. */
static nn_tensor *grid(int ndim, const int64_t *shape, nn_dtype dt, bool nan) {
  nn_tensor *t = th_rand_dt(ndim, shape, -2, 2, dt);
  int64_t n = nn_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    double v = round(nn_tensor_get_flat(t, i) * 4) / 4;
    if (v == 0 && th_uniform() < 0.5) v = -0.0;
    nn_tensor_set_flat(t, i, v);
  }
  if (nan && n > 3) nn_tensor_set_flat(t, n / 3, NAN);
  return t;
}

static bool same_bits(const nn_tensor *a, const nn_tensor *b) {
  if (!a || !b) return a == b;
  if (a->dtype != b->dtype || nn_tensor_numel(a) != nn_tensor_numel(b)) return false;
  nn_tensor *ca = NULL, *cb = NULL;
  nn_contiguous(&ca, (nn_tensor *)a);
  nn_contiguous(&cb, (nn_tensor *)b);
  bool eq = !memcmp(nn_tensor_data(ca), nn_tensor_data(cb),
                    (size_t)nn_tensor_numel(a) * nn_dtype_size(a->dtype));
  nn_tensor_free(ca);
  nn_tensor_free(cb);
  return eq;
}

static nn_tensor *grad_copy(nn_tensor *t) {
  nn_tensor *g = NULL;
  if (t->grad) nn_contiguous(&g, t->grad);
  return g;
}

typedef struct fcase {
  int64_t N, C, H, W, O, KH, KW;
  nn_conv2d_opts o;
  int pk, ps, pp; /* pool kernel, stride, padding */
  bool bias;
} fcase;

/* y = maxpool(relu(conv(x))) unfused (fused false) or fused; then backward from dy. */
static int run_case(nn_tensor **y, nn_tensor *x, nn_tensor *w, nn_tensor *b, const fcase *c,
                    nn_tensor *dy, bool fused) {
  int k[2] = {c->pk, c->pk}, s[2] = {c->ps, c->ps}, p[2] = {c->pp, c->pp};
  int rc;
  if (fused) {
    rc = nn_conv2d_relu_max_pool2d(y, x, w, b, &c->o, k, s, p);
  } else {
    nn_tensor *cv = NULL, *r = NULL;
    rc = nn_conv2d(&cv, x, w, b, &c->o);
    if (!rc) rc = nn_relu(&r, cv);
    if (!rc) rc = nn_max_pool2d(y, r, k, s, p);
    nn_tensor_free(cv);
    nn_tensor_free(r);
  }
  if (!rc && dy && (*y)->grad_fn) rc = nn_backward(*y, dy);
  return rc;
}

static void check_case(const fcase *c, nn_dtype dt, bool strided, int grads, bool nan) {
  char what[160];
  snprintf(what, sizeof what,
           "N%lld C%lld %lldx%lld O%lld k%lldx%lld s%d p%d d%d g%d pool %d/%d/%d bias %d %s%s "
           "grads %d%s",
           (long long)c->N, (long long)c->C, (long long)c->H, (long long)c->W, (long long)c->O,
           (long long)c->KH, (long long)c->KW, c->o.stride[0], c->o.padding[0], c->o.dilation[0],
           c->o.groups, c->pk, c->ps, c->pp, c->bias, dt == NN_DTYPE_F32 ? "f32" : "f64",
           strided ? " strided" : "", grads, nan ? " NaN" : "");
  nn_tensor *x = grid(4, (int64_t[]){c->N, c->C, c->H, c->W}, dt, nan);
  if (strided) {
    nn_tensor *v = th_noncontig(x);
    nn_tensor_free(x);
    x = v;
  }
  nn_tensor *w = grid(4, (int64_t[]){c->O, c->C / c->o.groups, c->KH, c->KW}, dt, false);
  nn_tensor *b = c->bias ? grid(1, &c->O, dt, false) : NULL;
  nn_tensor_set_requires_grad(x, grads & 1);
  nn_tensor_set_requires_grad(w, (grads & 2) != 0);
  if (b) nn_tensor_set_requires_grad(b, (grads & 4) != 0);
  nn_tensor *y[2] = {NULL, NULL}, *g[2][3] = {{NULL}}, *dy = NULL;
  for (int f = 0; f < 2; f++) {
    nn_tensor *probe = NULL;
    if (f == 0) {
      bool prev = nn_set_grad_enabled(false);
      OK(run_case(&probe, x, w, b, c, NULL, false));
      nn_set_grad_enabled(prev);
      if (!probe) break;
      dy = grid(4, probe->shape, dt, false);
      nn_tensor_free(probe);
    }
    OK(run_case(&y[f], x, w, b, c, dy, f == 1));
    nn_tensor *in[3] = {x, w, b};
    for (int i = 0; i < 3; i++)
      if (in[i]) {
        g[f][i] = grad_copy(in[i]);
        nn_tensor_zero_grad(in[i], true);
      }
  }
  CHECK(y[0] && same_bits(y[0], y[1]), "%s: forward differs", what);
  static const char *names[3] = {"x", "w", "bias"};
  for (int i = 0; i < 3; i++) {
    bool want = (grads >> i) & 1 && (i < 2 || b);
    CHECK(!want || g[0][i], "%s: unfused gave no %s grad", what, names[i]);
    CHECK(same_bits(g[0][i], g[1][i]), "%s: %s grad differs", what, names[i]);
  }
  /* grad mode off: the same values */
  bool prev = nn_set_grad_enabled(false);
  nn_tensor *yn = NULL;
  OK(run_case(&yn, x, w, b, c, NULL, true));
  nn_set_grad_enabled(prev);
  CHECK(yn && same_bits(y[0], yn), "%s: forward without grad differs", what);
  nn_tensor_free(yn);
  for (int f = 0; f < 2; f++) {
    nn_tensor_free(y[f]);
    for (int i = 0; i < 3; i++) nn_tensor_free(g[f][i]);
  }
  nn_tensor_free(dy);
  nn_tensor_free(x);
  nn_tensor_free(w);
  nn_tensor_free(b);
}

static void test_op(void) {
  static const fcase cases[] = {
      /* LeNet's layers (small batch, and a batch of more chunks than threads) */
      {4, 1, 12, 12, 8, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 2, 2, 0, true},
      {19, 4, 8, 8, 6, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 2, 2, 0, true},
      /* channels in multiples of 16: conv and its input gradient run as Winograd (AVX-512) */
      {5, 16, 10, 10, 32, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}, 2, 2, 0, true},
      /* odd sizes (a row and column left out of the pooling), no bias */
      {3, 2, 9, 11, 5, 3, 3, {{1, 1}, {0, 0}, {1, 1}, 1}, 2, 2, 0, false},
      /* overlapping windows with padding: an input may be the argmax of several outputs */
      {3, 3, 10, 10, 4, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}, 3, 1, 1, true},
      {2, 3, 10, 10, 4, 3, 3, {{2, 2}, {1, 1}, {1, 1}, 1}, 3, 2, 1, true},
      /* pointwise, grouped, dilated */
      {3, 4, 6, 6, 6, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}, 2, 2, 0, true},
      {3, 4, 8, 8, 6, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 2}, 2, 2, 0, true},
      {2, 2, 11, 11, 3, 3, 3, {{1, 1}, {2, 2}, {2, 2}, 1}, 2, 2, 0, true},
  };
  int nc = (int)(sizeof cases / sizeof cases[0]);
  for (int t = 1; t <= 2; t++) {
    nn_set_num_threads(t);
    for (int i = 0; i < nc; i++) {
      check_case(&cases[i], NN_DTYPE_F32, false, 7, false);
      check_case(&cases[i], NN_DTYPE_F32, true, 7, i == 1);
      check_case(&cases[i], NN_DTYPE_F64, i % 2 == 1, 7, false);
      for (int gr = 0; gr < 7; gr++) check_case(&cases[i], NN_DTYPE_F32, gr % 2 == 1, gr, false);
    }
  }
  /* the pooling's errors name the conv output */
  nn_tensor *x = th_rand(4, (int64_t[]){1, 1, 4, 4}, -1, 1),
            *w = th_rand(4, (int64_t[]){2, 1, 3, 3}, -1, 1);
  nn_tensor *y = NULL;
  nn_conv2d_opts o = {{1, 1}, {0, 0}, {1, 1}, 1};
  EXPECT_ERR(nn_conv2d_relu_max_pool2d(&y, x, w, NULL, &o, (int[]){3, 3}, NULL, NULL), NN_ERR_SHAPE,
             "conv2d output");
  EXPECT_ERR(nn_conv2d_relu_max_pool2d(&y, x, w, NULL, &o, (int[]){2, 2}, NULL, (int[]){2, 2}),
             NN_ERR_ARG, "padding");
  nn_tensor *w3 = th_rand(4, (int64_t[]){2, 3, 3, 3}, -1, 1);
  EXPECT_ERR(nn_conv2d_relu_max_pool2d(&y, x, w3, NULL, &o, (int[]){2, 2}, NULL, NULL),
             NN_ERR_SHAPE, "channel mismatch");
  nn_tensor_free(x);
  nn_tensor_free(w);
  nn_tensor_free(w3);
}

/* ---------------------------------------------------------------- Sequential */

static nn_module *lenetish(void) {
  nn_module *l[8], *m = NULL;
  int n = 0;
  nn_conv2d_opts p1 = {{1, 1}, {1, 1}, {1, 1}, 1};
  OK(nn_conv2d_new(&l[n++], 2, 4, 3, 3, &p1, true));
  OK(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
  OK(nn_maxpool2d_new(&l[n++], 2, 2, 0));
  OK(nn_conv2d_new(&l[n++], 4, 6, 3, 3, &p1, false));
  OK(nn_activation_new(&l[n++], NN_ACT_RELU, 0));
  OK(nn_maxpool2d_new(&l[n++], 2, 2, 0));
  OK(nn_flatten_new(&l[n++], 1, -1));
  OK(nn_linear_new(&l[n++], 6 * 3 * 3, 5, true));
  OK(nn_sequential_new(&m, n, l));
  for (int i = 0; i < n; i++) nn_module_free(l[i]);
  return m;
}

static void test_sequential(void) {
  nn_manual_seed(3);
  nn_module *m = lenetish();
  nn_tensor *x = grid(4, (int64_t[]){5, 2, 12, 12}, NN_DTYPE_F32, false);
  nn_named *pl = NULL;
  int np = 0;
  OK(nn_module_parameters(m, &pl, &np));
  static const char *want[] = {"0.weight", "0.bias", "3.weight", "7.weight", "7.bias"};
  CHECK(np == 5, "%d parameters", np);
  for (int i = 0; i < np && i < 5; i++)
    CHECK(!strcmp(pl[i].name, want[i]), "parameter %d is %s, want %s", i, pl[i].name, want[i]);
  nn_tensor *grads[2][5] = {{NULL}}, *y[2] = {NULL, NULL};
  for (int f = 0; f < 2; f++) {
    nn_tensor *cur = nn_tensor_retain(x);
    if (f == 0) {
      OK(nn_module_forward(m, x, &y[0])); /* the Sequential: fused */
    } else {
      for (int i = 0; i < m->n_children; i++) { /* the children one by one: unfused */
        nn_tensor *next = NULL;
        OK(nn_module_forward(m->children[i], cur, &next));
        nn_tensor_free(cur);
        cur = next;
      }
      y[1] = nn_tensor_retain(cur);
    }
    nn_tensor_free(cur);
    nn_tensor *loss = NULL;
    OK(nn_sum_all(&loss, y[f]));
    OK(nn_backward(loss, NULL));
    nn_tensor_free(loss);
    for (int i = 0; i < np; i++) {
      grads[f][i] = grad_copy(pl[i].t);
      nn_tensor_zero_grad(pl[i].t, true);
    }
  }
  CHECK(same_bits(y[0], y[1]), "Sequential: fused forward differs from the layers one by one");
  for (int i = 0; i < np; i++)
    CHECK(grads[0][i] && same_bits(grads[0][i], grads[1][i]), "Sequential: %s grad differs",
          pl[i].name);
  /* stats: one row per layer, as without fusion */
  nn_layer_stat *rows = NULL, total;
  int nr = 0;
  OK(nn_module_stats(m, 4, (int64_t[]){5, 2, 12, 12}, &rows, &nr, &total));
  CHECK(nr == 8, "%d stat rows", nr);
  if (nr == 8) {
    CHECK(!strcmp(rows[1].type, "ReLU") && !strcmp(rows[2].type, "MaxPool2d"), "rows %s %s",
          rows[1].type, rows[2].type);
    CHECK(rows[0].out.flops == 5LL * 4 * 12 * 12 * (2 * 18 - 1 + 1), "conv flops %lld",
          (long long)rows[0].out.flops);
  }
  free(rows);
  /* a window larger than the conv output: MaxPool2d's own error */
  nn_module *l[3], *bad = NULL;
  OK(nn_conv2d_new(&l[0], 2, 3, 3, 3, NULL, true));
  OK(nn_activation_new(&l[1], NN_ACT_RELU, 0));
  OK(nn_maxpool2d_new(&l[2], 16, 16, 0));
  OK(nn_sequential_new(&bad, 3, l));
  nn_tensor *yb = NULL;
  EXPECT_ERR(nn_module_forward(bad, x, &yb), NN_ERR_SHAPE, "max_pool2d");
  for (int i = 0; i < 3; i++) nn_module_free(l[i]);
  nn_module_free(bad);
  for (int f = 0; f < 2; f++) {
    nn_tensor_free(y[f]);
    for (int i = 0; i < np; i++) nn_tensor_free(grads[f][i]);
  }
  nn_named_list_free(pl, np);
  nn_tensor_free(x);
  nn_module_free(m);
}

int main(void) {
  th_seed(11);
  test_op();
  test_sequential();
  return th_done();
}
