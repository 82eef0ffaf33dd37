/* nn/tests/test_module.c: layers (parameters, names, forward against the ops, gradients through
 * containers), the registry (a layer type added from outside the core), flat parameter and
 * gradient buffers, FLOP/parameter counts, initialisation statistics. */
#include "harness.h"
#include "module.h"

#include <math.h>
#include <string.h>

static void test_linear_conv(void) {
  nn_module *lin = NULL, *conv = NULL;
  OK(nn_linear_new(&lin, 4, 3, true));
  CHECK(lin->n_params == 2 && !strcmp(lin->params[0].name, "weight") &&
            lin->params[0].t->shape[0] == 3 && lin->params[0].t->shape[1] == 4 &&
            lin->params[1].t->shape[0] == 3,
        "Linear: weight (out, in) then bias (out)");
  /* PyTorch default init bound 1/sqrt(4) = 0.5 */
  double mx = 0;
  for (int i = 0; i < 12; i++) mx = fmax(mx, fabs(nn_tensor_get_flat(lin->params[0].t, i)));
  CHECK(mx <= 0.5 && mx > 0.1, "Linear init within +-1/sqrt(in): max %g", mx);
  nn_tensor *x = th_rand(2, (int64_t[]){5, 4}, -1, 1), *y = NULL, *ref = NULL;
  OK(nn_module_forward(lin, x, &y));
  OK(nn_linear(&ref, x, lin->params[0].t, lin->params[1].t));
  CHECK(y && ref && !memcmp(nn_tensor_data(y), nn_tensor_data(ref), 15 * 4),
        "Linear forward = nn_linear");
  nn_tensor_free(y);
  nn_tensor_free(ref);
  nn_tensor_free(x);
  nn_conv2d_opts o = {{2, 2}, {1, 1}, {1, 1}, 2};
  OK(nn_conv2d_new(&conv, 4, 6, 3, 3, &o, true));
  nn_tensor *w = nn_module_param(conv, "weight");
  CHECK(w && w->ndim == 4 && w->shape[0] == 6 && w->shape[1] == 2 && w->shape[2] == 3,
        "Conv2d weight (out, in/groups, k, k)");
  x = th_rand(4, (int64_t[]){2, 4, 7, 7}, -1, 1);
  OK(nn_module_forward(conv, x, &y));
  CHECK(y && y->shape[1] == 6 && y->shape[2] == 4 && y->shape[3] == 4, "Conv2d output shape");
  nn_tensor_free(y);
  nn_tensor_free(x);
  x = th_rand(4, (int64_t[]){2, 3, 7, 7}, -1, 1);
  EXPECT_ERR(nn_module_forward(conv, x, &y), NN_ERR_SHAPE, "conv2d");
  nn_tensor_free(x);
  nn_module_free(lin);
  nn_module_free(conv);
  EXPECT_ERR(nn_conv2d_new(&conv, 4, 6, 3, 3, &(nn_conv2d_opts){{1, 1}, {0, 0}, {1, 1}, 4}, true),
             NN_ERR_ARG, "Conv2d: invalid options");
  CHECK(conv == NULL, "out-parameter NULL on error");
}

static nn_module *g_model;
static int model_fn(void *ctx, nn_tensor **in, nn_tensor **out) {
  (void)ctx;
  return nn_module_forward(g_model, in[0], out);
}

static void test_containers_grad(void) {
  /* Residual(Sequential(Linear, Tanh, Linear)) then Linear: gradient to the input and to params */
  nn_module *l1, *t, *l2, *body, *res, *head, *model;
  OK(nn_linear_new(&l1, 3, 5, true));
  OK(nn_activation_new(&t, NN_ACT_TANH, 0));
  OK(nn_linear_new(&l2, 5, 3, true));
  OK(nn_sequential_new(&body, 3, (nn_module *[]){l1, t, l2}));
  OK(nn_residual_new(&res, body, NULL));
  OK(nn_linear_new(&head, 3, 2, false));
  OK(nn_sequential_new(&model, 2, (nn_module *[]){res, head}));
  nn_named *l = NULL;
  int n = 0;
  OK(nn_module_parameters(model, &l, &n));
  CHECK(n == 5 && !strcmp(l[0].name, "0.body.0.weight") && !strcmp(l[4].name, "1.weight"),
        "dotted parameter names (%d params, first %s)", n, n ? l[0].name : "-");
  CHECK(nn_module_num_params(model) == 3 * 5 + 5 + 5 * 3 + 3 + 3 * 2, "parameter count");
  nn_tensor *x = th_rand(2, (int64_t[]){4, 3}, -1, 1);
  nn_tensor_set_requires_grad(x, true);
  g_model = model;
  th_gradcheck(model_fn, NULL, 1, &x, 1e-3, 2e-3, 2e-2, "model input grad");
  nn_tensor_free(x);
  nn_named_list_free(l, n);
  nn_module *mods[] = {l1, t, l2, body, res, head, model};
  for (int i = 0; i < 7; i++) nn_module_free(mods[i]);
}

static void test_modes(void) {
  nn_module *bn = NULL, *dp = NULL;
  OK(nn_batchnorm_new(&bn, 3, 2, 1e-5, 0.1, true));
  CHECK(bn->n_buffers == 2, "BatchNorm has running_mean and running_var buffers");
  nn_tensor *x = th_rand(2, (int64_t[]){8, 3}, 0, 4), *y1 = NULL, *y2 = NULL;
  OK(nn_module_forward(bn, x, &y1));
  CHECK(fabs(nn_tensor_get_flat(bn->buffers[0].t, 0)) > 0.01, "training updates running_mean");
  nn_module_train(bn, false);
  OK(nn_module_forward(bn, x, &y2));
  CHECK(y1 && y2 && fabs(nn_tensor_get_flat(y1, 0) - nn_tensor_get_flat(y2, 0)) > 1e-3,
        "eval uses running stats, not batch stats");
  nn_tensor_free(y1);
  nn_tensor_free(y2);
  nn_tensor_free(x);
  OK(nn_dropout_new(&dp, 0.25));
  x = NULL;
  OK(nn_tensor_full(&x, 1, (int64_t[]){20000}, 1.0, NN_DTYPE_F32, nn_cpu));
  OK(nn_module_forward(dp, x, &y1));
  int64_t kept = 0;
  double v = 0;
  for (int i = 0; i < 20000; i++) {
    double e = nn_tensor_get_flat(y1, i);
    if (e != 0) {
      kept++;
      v = e;
    }
  }
  /* keep rate 0.75, std of the count sqrt(n p (1-p)) = 61 */
  CHECK(fabs((double)kept - 15000) < 5 * 61.3, "Dropout keeps 75%%: %lld of 20000",
        (long long)kept);
  CHECK(fabs(v - 1 / 0.75) < 1e-6, "inverted scaling 1/(1-p): %g", v);
  nn_tensor_free(y1);
  nn_module_train(dp, false);
  OK(nn_module_forward(dp, x, &y1));
  CHECK(y1 == x, "Dropout in eval mode is the identity");
  nn_tensor_free(y1);
  nn_tensor_free(x);
  nn_module_free(bn);
  nn_module_free(dp);
  EXPECT_ERR(nn_dropout_new(&dp, 1.5), NN_ERR_ARG, "Dropout: p must be in [0, 1], got 1.5");
}

/* A layer type defined outside the core: y = scale * x, scale a learned scalar. */
static int scale_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  return nn_mul(out, x, m->params[0].t);
}
static const nn_module_i scale_vt = {"Scale", scale_forward, NULL, NULL, NULL};
static int scale_ctor(nn_module **out, int n, const nn_opt *o) {
  static const char *const known[] = {"init", NULL};
  int rc = nn_opts_check("Scale", n, o, known);
  if (rc) return rc;
  nn_tensor *s = NULL;
  rc = nn_tensor_full(&s, 1, (int64_t[]){1}, nn_opt_num(n, o, "init", 1.0), NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_module_new(out, &scale_vt, NULL);
  if (!rc) rc = nn_module_add_param(*out, "scale", s);
  return rc;
}

static void test_registry(void) {
  OK(nn_layer_register("Scale", scale_ctor, "init=1"));
  EXPECT_ERR(nn_layer_register("Scale", scale_ctor, ""), NN_ERR_ARG, "already registered");
  nn_module *m = NULL;
  nn_opt o[] = {{"init", 3.0, NULL}};
  OK(nn_layer_new(&m, "Scale", 1, o));
  nn_tensor *x = th_rand(1, (int64_t[]){4}, 1, 2), *y = NULL;
  OK(nn_module_forward(m, x, &y));
  CHECK(y && fabs(nn_tensor_get_flat(y, 2) - 3 * nn_tensor_get_flat(x, 2)) < 1e-6,
        "registered layer runs");
  nn_tensor_free(y);
  nn_tensor_free(x);
  nn_module_free(m);
  EXPECT_ERR(nn_layer_new(&m, "Lineer", 0, NULL), NN_ERR_ARG,
             "unknown layer type \"Lineer\"; known types: Linear, Conv2d");
  nn_opt bad[] = {{"in", 3, NULL}, {"outt", 4, NULL}};
  EXPECT_ERR(nn_layer_new(&m, "Linear", 2, bad), NN_ERR_ARG,
             "Linear: unknown option \"outt\"; known options: in, out, bias");
  nn_opt good[] = {{"in", 3, NULL}, {"out", 4, NULL}};
  OK(nn_layer_new(&m, "Linear", 2, good));
  CHECK(m && nn_module_num_params(m) == 16, "Linear by name");
  nn_module_free(m);
  int n = 0;
  const char *const *names = nn_layer_names(&n);
  int found = 0;
  for (int i = 0; i < n; i++) found |= !strcmp(names[i], "Scale");
  CHECK(found && n >= 18, "layer names include the registered type (%d names)", n);
}

static void test_flatten(void) {
  nn_module *a, *b, *m;
  OK(nn_linear_new(&a, 3, 4, true));
  OK(nn_linear_new(&b, 4, 2, true));
  OK(nn_sequential_new(&m, 2, (nn_module *[]){a, b}));
  nn_tensor *w0 = nn_module_param(m, "0.weight");
  double before = nn_tensor_get_flat(w0, 5);
  nn_tensor *flat = NULL, *grads = NULL;
  OK(nn_module_flatten(m, &flat, &grads));
  CHECK(flat && nn_tensor_numel(flat) == 12 + 4 + 8 + 2, "flat buffer holds every parameter");
  CHECK(nn_tensor_get_flat(w0, 5) == before && nn_tensor_get_flat(flat, 5) == before,
        "values preserved");
  nn_tensor_set_flat(flat, 5, 42.0);
  CHECK(nn_tensor_get_flat(w0, 5) == 42.0, "parameter is a view of the flat buffer");
  nn_tensor *x = th_rand(2, (int64_t[]){5, 3}, -1, 1), *y = NULL, *s = NULL;
  OK(nn_module_forward(m, x, &y));
  OK(nn_sum_dims(&s, y, 3u, false));
  OK(nn_backward(s, NULL));
  nn_tensor *gb1 = nn_module_param(m, "1.bias")->grad;
  CHECK(gb1 && nn_tensor_get_flat(gb1, 0) == 5.0 && nn_tensor_get_flat(grads, 24) == 5.0,
        "gradients land in the flat gradient buffer");
  nn_module_zero_grad(m, true);
  CHECK(nn_tensor_get_flat(grads, 24) == 0.0 && nn_module_param(m, "1.bias")->grad,
        "zero_grad zeroes the flat buffer in place");
  nn_tensor *f2 = NULL;
  OK(nn_module_flatten(m, &f2, NULL));
  CHECK(f2 == flat, "flatten again returns the same buffer");
  nn_tensor_free(f2);
  nn_tensor_free(flat);
  nn_tensor_free(grads);
  nn_tensor_free(x);
  nn_tensor_free(y);
  nn_tensor_free(s);
  nn_module_free(a);
  nn_module_free(b);
  nn_module_free(m);
}

static void test_stats(void) {
  /* the LeNet-style CNN of the training benchmark */
  nn_module *l[10], *m;
  nn_conv2d_opts p2 = {{1, 1}, {2, 2}, {1, 1}, 1};
  OK(nn_conv2d_new(&l[0], 1, 32, 5, 5, &p2, true));
  OK(nn_activation_new(&l[1], NN_ACT_RELU, 0));
  OK(nn_maxpool2d_new(&l[2], 2, 2, 0));
  OK(nn_conv2d_new(&l[3], 32, 64, 5, 5, &p2, true));
  OK(nn_activation_new(&l[4], NN_ACT_RELU, 0));
  OK(nn_maxpool2d_new(&l[5], 2, 2, 0));
  OK(nn_flatten_new(&l[6], 1, -1));
  OK(nn_linear_new(&l[7], 3136, 256, true));
  OK(nn_activation_new(&l[8], NN_ACT_RELU, 0));
  OK(nn_linear_new(&l[9], 256, 10, true));
  OK(nn_sequential_new(&m, 10, l));
  nn_layer_stat *rows = NULL, total;
  int n = 0;
  OK(nn_module_stats(m, 4, (int64_t[]){1, 1, 28, 28}, &rows, &n, &total));
  CHECK(n == 10, "one row per leaf layer: %d", n);
  if (n == 10) {
    CHECK(!strcmp(rows[3].name, "3") && !strcmp(rows[3].type, "Conv2d") &&
              rows[3].out.shape[1] == 64 && rows[3].out.shape[2] == 14,
          "conv2 row");
    /* conv2: 64 x 14 x 14 outputs, each 32*25 MACs: 2*800-1 + 1 (bias) FLOPs */
    CHECK(rows[3].out.flops == 64LL * 14 * 14 * 1600, "conv2 FLOPs %lld",
          (long long)rows[3].out.flops);
    CHECK(rows[9].out.flops == 10LL * 512, "linear2 FLOPs %lld", (long long)rows[9].out.flops);
    CHECK(rows[3].params == 64 * 32 * 25 + 64, "conv2 params");
  }
  CHECK(total.params == 832 + 51264 + 803072 + 2570, "total params %lld", (long long)total.params);
  CHECK(total.out.ndim == 2 && total.out.shape[1] == 10, "output shape");
  free(rows);
  EXPECT_ERR(nn_module_stats(m, 4, (int64_t[]){1, 3, 28, 28}, &rows, &n, &total), NN_ERR_SHAPE,
             "Conv2d: input of shape (1, 3, 28, 28), expected (N, 1, H, W)");
  for (int i = 0; i < 10; i++) nn_module_free(l[i]);
  nn_module_free(m);
}

static void test_init(void) {
  nn_tensor *t = NULL;
  OK(nn_tensor_empty(&t, 2, (int64_t[]){400, 100}, NN_DTYPE_F32, nn_cpu));
  struct {
    nn_init k;
    double p, want_std;
  } cases[] = {
      {NN_INIT_KAIMING_NORMAL, 0, sqrt(2.0 / 100)},
      {NN_INIT_KAIMING_UNIFORM, 0, sqrt(2.0 / 100)},
      {NN_INIT_XAVIER_NORMAL, 0, sqrt(2.0 / 500)},
      {NN_INIT_XAVIER_UNIFORM, 0, sqrt(2.0 / 500)},
      {NN_INIT_NORMAL, 0.3, 0.3},
      {NN_INIT_ZEROS, 0, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    OK(nn_init_(t, cases[c].k, cases[c].p, NULL));
    double s = 0, ss = 0;
    for (int i = 0; i < 40000; i++) {
      double v = nn_tensor_get_flat(t, i);
      s += v;
      ss += v * v;
    }
    double mean = s / 40000, sd = sqrt(ss / 40000 - mean * mean);
    CHECK(fabs(sd - cases[c].want_std) <= 0.03 * cases[c].want_std + 1e-12,
          "init %d: std %g, want %g", (int)cases[c].k, sd, cases[c].want_std);
  }
  nn_tensor_free(t);
}

int main(void) {
  th_seed(3);
  test_linear_conv();
  test_containers_grad();
  test_modes();
  test_registry();
  test_flatten();
  test_stats();
  test_init();
  return th_done();
}
