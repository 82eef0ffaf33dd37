/* nn/tests/test_optim.c: each optimizer's step against values computed by hand (in double, from
 * the equations in nn/optim.h), parameter groups, set_lr, grad clipping, state round trip and
 * the error messages. */
#include "harness.h"
#include "module.h"
#include "optim.h"

#include <math.h>
#include <string.h>

/* p and g as 1-D float32 tensors; g installed as p's grad */
static nn_tensor *param(const double *v, int n) {
  nn_tensor *t = NULL;
  int64_t sh = n;
  nn_tensor_empty(&t, 1, &sh, NN_DTYPE_F32, nn_cpu);
  for (int i = 0; i < n; i++) nn_tensor_set_flat(t, i, v[i]);
  nn_tensor_set_requires_grad(t, true);
  return t;
}

static void set_grad(nn_tensor *p, const double *g, int n) {
  if (!p->grad) nn_tensor_zeros_like(&p->grad, p);
  for (int i = 0; i < n; i++) nn_tensor_set_flat(p->grad, i, g[i]);
}

static double P0[3] = {1.0, -2.0, 0.5};
static double G[3][3] = {{0.1, -0.3, 0.2}, {0.05, 0.2, -0.1}, {-0.2, 0.1, 0.3}};

static void check_p(nn_tensor *p, const double *want, const char *what) {
  th_close(p, want, 1e-6, 1e-5, what);
}

static void test_sgd(void) {
  for (int variant = 0; variant < 4; variant++) {
    /* 0 plain, 1 momentum, 2 nesterov, 3 momentum+dampening+wd */
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
    o.lr = 0.1;
    if (variant >= 1) o.momentum = 0.9;
    if (variant == 2) o.nesterov = true;
    if (variant == 3) {
      o.dampening = 0.5;
      o.weight_decay = 0.01;
    }
    nn_tensor *p = param(P0, 3);
    nn_optim *opt = NULL;
    OK(nn_optim_new(&opt, NN_OPTIM_SGD, 1, &p, &o));
    double w[3], buf[3] = {0};
    memcpy(w, P0, sizeof w);
    for (int s = 0; s < 3; s++) {
      set_grad(p, G[s], 3);
      OK(nn_optim_step(opt));
      for (int i = 0; i < 3; i++) {
        double d = G[s][i] + o.weight_decay * w[i];
        if (o.momentum) {
          buf[i] = s == 0 ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
          d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
        }
        w[i] -= o.lr * d;
      }
      char what[64];
      snprintf(what, sizeof what, "sgd variant %d step %d", variant, s);
      check_p(p, w, what);
    }
    nn_optim_free(opt);
    nn_tensor_free(p);
  }
}

static void test_adam(void) {
  for (int kind = NN_OPTIM_ADAM; kind <= NN_OPTIM_ADAMW; kind++) {
    nn_optim_opts o = nn_optim_defaults(kind);
    o.lr = 0.01;
    o.weight_decay = 0.1;
    nn_tensor *p = param(P0, 3);
    nn_optim *opt = NULL;
    OK(nn_optim_new(&opt, kind, 1, &p, &o));
    double w[3], m[3] = {0}, v[3] = {0};
    memcpy(w, P0, sizeof w);
    for (int s = 0; s < 3; s++) {
      set_grad(p, G[s], 3);
      OK(nn_optim_step(opt));
      int t = s + 1;
      for (int i = 0; i < 3; i++) {
        double d = G[s][i];
        if (kind == NN_OPTIM_ADAMW)
          w[i] *= 1 - o.lr * o.weight_decay;
        else
          d += o.weight_decay * w[i];
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * d;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * d * d;
        double bc1 = 1 - pow(o.beta1, t), bc2 = 1 - pow(o.beta2, t);
        w[i] -= o.lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + o.eps);
      }
      check_p(p, w, kind == NN_OPTIM_ADAM ? "adam" : "adamw");
    }
    CHECK(nn_optim_steps(opt) == 3, "step count");
    nn_optim_free(opt);
    nn_tensor_free(p);
  }
}

static void test_rmsprop(void) {
  for (int variant = 0; variant < 3; variant++) { /* plain, momentum, centered */
    nn_optim_opts o = nn_optim_defaults(NN_OPTIM_RMSPROP);
    o.lr = 0.01;
    if (variant == 1) o.momentum = 0.9;
    if (variant == 2) o.centered = true;
    nn_tensor *p = param(P0, 3);
    nn_optim *opt = NULL;
    OK(nn_optim_new(&opt, NN_OPTIM_RMSPROP, 1, &p, &o));
    double w[3], sq[3] = {0}, buf[3] = {0}, ga[3] = {0};
    memcpy(w, P0, sizeof w);
    for (int s = 0; s < 3; s++) {
      set_grad(p, G[s], 3);
      OK(nn_optim_step(opt));
      for (int i = 0; i < 3; i++) {
        double d = G[s][i];
        sq[i] = o.alpha * sq[i] + (1 - o.alpha) * d * d;
        double avg;
        if (o.centered) {
          ga[i] = o.alpha * ga[i] + (1 - o.alpha) * d;
          avg = sqrt(sq[i] - ga[i] * ga[i]) + o.eps;
        } else {
          avg = sqrt(sq[i]) + o.eps;
        }
        if (o.momentum > 0) {
          buf[i] = o.momentum * buf[i] + d / avg;
          w[i] -= o.lr * buf[i];
        } else {
          w[i] -= o.lr * d / avg;
        }
      }
      check_p(p, w, "rmsprop");
    }
    nn_optim_free(opt);
    nn_tensor_free(p);
  }
}

static void test_groups_lr_clip(void) {
  nn_tensor *a = param(P0, 3), *b = param(P0, 3);
  nn_optim_opts o = nn_optim_defaults(NN_OPTIM_SGD);
  o.lr = 0.1;
  nn_optim *opt = NULL;
  OK(nn_optim_new(&opt, NN_OPTIM_SGD, 1, &a, &o));
  o.lr = 1.0;
  int g = -1;
  OK(nn_optim_add_group(opt, 1, &b, &o, &g));
  CHECK(g == 1 && nn_optim_num_groups(opt) == 2, "second group");
  set_grad(a, G[0], 3);
  set_grad(b, G[0], 3);
  OK(nn_optim_step(opt));
  CHECK(fabs(nn_tensor_get_flat(a, 0) - (1.0 - 0.1 * 0.1)) < 1e-6, "group 0 lr");
  CHECK(fabs(nn_tensor_get_flat(b, 0) - (1.0 - 1.0 * 0.1)) < 1e-6, "group 1 lr");
  nn_optim_set_lr(opt, 0.5);
  CHECK(nn_optim_get_lr(opt, 0) == 0.5 && nn_optim_get_lr(opt, 1) == 0.5, "set_lr all groups");
  EXPECT_ERR(nn_optim_add_group(opt, 1, &b, &o, &g), NN_ERR_ARG, "more than one group");
  /* clipping: grads (3,4) and (0,0,12) -> norm 13 */
  double ga[3] = {3, 4, 0}, gb[3] = {0, 0, 12};
  set_grad(a, ga, 3);
  set_grad(b, gb, 3);
  nn_tensor *ps[2] = {a, b};
  double norm = 0;
  OK(nn_clip_grad_norm(&norm, 2, ps, 6.5));
  CHECK(fabs(norm - 13.0) < 1e-9, "clip reports the norm before clipping: %g", norm);
  CHECK(fabs(nn_tensor_get_flat(b->grad, 2) - 12 * 6.5 / (13 + 1e-6)) < 1e-5, "clipped value");
  OK(nn_clip_grad_norm(&norm, 2, ps, 100));
  CHECK(fabs(nn_tensor_get_flat(b->grad, 2) - 12 * 6.5 / (13 + 1e-6)) < 1e-5, "no clip below max");
  nn_optim_free(opt);
  /* errors */
  o = nn_optim_defaults(NN_OPTIM_SGD);
  o.lr = -1;
  EXPECT_ERR(nn_optim_new(&opt, NN_OPTIM_SGD, 1, &a, &o), NN_ERR_ARG,
             "SGD: invalid learning rate -1");
  o.lr = 0.1;
  o.nesterov = true;
  EXPECT_ERR(nn_optim_new(&opt, NN_OPTIM_SGD, 1, &a, &o), NN_ERR_ARG, "Nesterov momentum requires");
  o = nn_optim_defaults(NN_OPTIM_ADAM);
  o.beta1 = 1.0;
  EXPECT_ERR(nn_optim_new(&opt, NN_OPTIM_ADAM, 1, &a, &o), NN_ERR_ARG, "betas must be in [0, 1)");
  nn_tensor *l = th_randint(1, (int64_t[]){3}, 5);
  EXPECT_ERR(nn_optim_new(&opt, NN_OPTIM_SGD, 1, &l, NULL), NN_ERR_DTYPE,
             "optimizers update float32");
  nn_tensor_free(l);
  nn_tensor_free(a);
  nn_tensor_free(b);
}

/* state round trip: two optimizers, one restored from the other's state, step identically */
static void test_state(void) {
  for (int kind = 0; kind < 4; kind++) {
    nn_optim_opts o = nn_optim_defaults(kind);
    o.momentum = kind == NN_OPTIM_ADAM || kind == NN_OPTIM_ADAMW ? 0 : 0.9;
    nn_tensor *a = param(P0, 3), *b = param(P0, 3);
    nn_optim *oa = NULL, *ob = NULL;
    OK(nn_optim_new(&oa, kind, 1, &a, &o));
    OK(nn_optim_new(&ob, kind, 1, &b, &o));
    set_grad(a, G[0], 3);
    OK(nn_optim_step(oa));
    nn_named *st = NULL;
    int n = 0;
    OK(nn_optim_state(oa, &st, &n));
    CHECK(n >= 1, "state has buffers");
    OK(nn_copy_(b, a));
    OK(nn_optim_load_state(ob, n, st, nn_optim_steps(oa)));
    nn_named_list_free(st, n);
    set_grad(a, G[1], 3);
    set_grad(b, G[1], 3);
    OK(nn_optim_step(oa));
    OK(nn_optim_step(ob));
    CHECK(!memcmp(nn_tensor_data(a), nn_tensor_data(b), 12),
          "restored optimizer steps identically (%s)", nn_optim_kind_name(kind));
    nn_optim_free(oa);
    nn_optim_free(ob);
    nn_tensor_free(a);
    nn_tensor_free(b);
  }
}

int main(void) {
  test_sgd();
  test_adam();
  test_rmsprop();
  test_groups_lr_clip();
  test_state();
  return th_done();
}
