/* nn/optim.c: optimizer state, parameter groups, steps (one fused kernel per parameter), grad
 * clipping and state save/restore. Update equations: see nn/optim.h. */
#include "optim.h"
#include "autograd.h"
#include "backend.h"
#include "module.h"
#include "ops_elementwise.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pstate {
  nn_tensor *p; /* borrowed */
  int group;
  nn_tensor *buf[3]; /* SGD: momentum; Adam: exp_avg, exp_avg_sq; RMSProp: square_avg, momentum,
                        grad_avg */
  bool started;      /* SGD momentum initialised */
} pstate;

struct nn_optim {
  nn_optim_kind kind;
  int n_groups;
  nn_optim_opts *groups;
  int n;
  pstate *ps;
  int64_t step;
};

static const char *const buf_names[4][3] = {
    {"momentum_buffer", NULL, NULL},
    {"exp_avg", "exp_avg_sq", NULL},
    {"exp_avg", "exp_avg_sq", NULL},
    {"square_avg", "momentum_buffer", "grad_avg"},
};

const char *nn_optim_kind_name(nn_optim_kind kind) {
  static const char *names[] = {"SGD", "Adam", "AdamW", "RMSProp"};
  return (unsigned)kind < 4 ? names[kind] : "?";
}

nn_optim_opts nn_optim_defaults(nn_optim_kind kind) {
  nn_optim_opts o = {0};
  o.beta1 = 0.9;
  o.beta2 = 0.999;
  o.eps = 1e-8;
  o.alpha = 0.99;
  switch (kind) {
  case NN_OPTIM_SGD:
    o.lr = 0.01;
    break;
  case NN_OPTIM_ADAM:
    o.lr = 1e-3;
    break;
  case NN_OPTIM_ADAMW:
    o.lr = 1e-3;
    o.weight_decay = 0.01;
    break;
  case NN_OPTIM_RMSPROP:
    o.lr = 0.01;
    break;
  }
  return o;
}

static int check_opts(nn_optim_kind kind, const nn_optim_opts *o) {
  const char *k = nn_optim_kind_name(kind);
  if (!(o->lr >= 0)) return nn_seterr(NN_ERR_ARG, "%s: invalid learning rate %g", k, o->lr);
  if (!(o->momentum >= 0)) return nn_seterr(NN_ERR_ARG, "%s: invalid momentum %g", k, o->momentum);
  if (!(o->weight_decay >= 0))
    return nn_seterr(NN_ERR_ARG, "%s: invalid weight_decay %g", k, o->weight_decay);
  if (kind == NN_OPTIM_SGD && o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return nn_seterr(NN_ERR_ARG, "SGD: Nesterov momentum requires a momentum and zero dampening");
  if ((kind == NN_OPTIM_ADAM || kind == NN_OPTIM_ADAMW) &&
      (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1)))
    return nn_seterr(NN_ERR_ARG, "%s: betas must be in [0, 1), got (%g, %g)", k, o->beta1,
                     o->beta2);
  if (!(o->eps >= 0)) return nn_seterr(NN_ERR_ARG, "%s: invalid eps %g", k, o->eps);
  if (kind == NN_OPTIM_RMSPROP && !(o->alpha >= 0 && o->alpha <= 1))
    return nn_seterr(NN_ERR_ARG, "RMSProp: alpha must be in [0, 1], got %g", o->alpha);
  return NN_OK;
}

int nn_optim_new(nn_optim **out, nn_optim_kind kind, int n, nn_tensor *const *params,
                 const nn_optim_opts *o) {
  *out = NULL;
  if ((unsigned)kind > NN_OPTIM_RMSPROP)
    return nn_seterr(NN_ERR_ARG, "optim: unknown kind %d", (int)kind);
  nn_optim *opt = calloc(1, sizeof *opt);
  if (!opt) return nn_seterr(NN_ERR_NOMEM, "optim: out of memory");
  opt->kind = kind;
  int g, rc = nn_optim_add_group(opt, n, params, o, &g);
  if (rc) {
    nn_optim_free(opt);
    return rc;
  }
  *out = opt;
  return NN_OK;
}

void nn_optim_free(nn_optim *opt) {
  if (!opt) return;
  for (int i = 0; i < opt->n; i++)
    for (int k = 0; k < 3; k++) nn_tensor_free(opt->ps[i].buf[k]);
  free(opt->ps);
  free(opt->groups);
  free(opt);
}

int nn_optim_add_group(nn_optim *opt, int n, nn_tensor *const *params, const nn_optim_opts *o,
                       int *group) {
  *group = -1;
  nn_optim_opts oo = o ? *o : nn_optim_defaults(opt->kind);
  int rc = check_opts(opt->kind, &oo);
  if (rc) return rc;
  for (int i = 0; i < n; i++) {
    if (params[i]->dtype != NN_DTYPE_F32)
      return nn_seterr(NN_ERR_DTYPE, "%s: parameter %d is %s; optimizers update float32 tensors",
                       nn_optim_kind_name(opt->kind), i, nn_dtype_name(params[i]->dtype));
    if (!nn_tensor_is_contiguous(params[i]))
      return nn_seterr(NN_ERR_ARG, "%s: parameter %d is not contiguous",
                       nn_optim_kind_name(opt->kind), i);
    for (int j = 0; j < opt->n; j++)
      if (opt->ps[j].p == params[i])
        return nn_seterr(NN_ERR_ARG, "%s: parameter %d appears in more than one group",
                         nn_optim_kind_name(opt->kind), i);
  }
  nn_optim_opts *gs = realloc(opt->groups, (size_t)(opt->n_groups + 1) * sizeof *gs);
  if (!gs) return nn_seterr(NN_ERR_NOMEM, "optim: out of memory");
  opt->groups = gs;
  pstate *ps = realloc(opt->ps, (size_t)(opt->n + n) * sizeof *ps);
  if (!ps && opt->n + n > 0) return nn_seterr(NN_ERR_NOMEM, "optim: out of memory");
  opt->ps = ps;
  gs[opt->n_groups] = oo;
  for (int i = 0; i < n; i++) {
    pstate *s = &ps[opt->n + i];
    memset(s, 0, sizeof *s);
    s->p = params[i];
    s->group = opt->n_groups;
  }
  opt->n += n;
  *group = opt->n_groups++;
  return NN_OK;
}

int nn_optim_num_groups(const nn_optim *opt) { return opt->n_groups; }
nn_optim_opts *nn_optim_group_opts(nn_optim *opt, int group) {
  return group >= 0 && group < opt->n_groups ? &opt->groups[group] : NULL;
}
nn_optim_kind nn_optim_kind_of(const nn_optim *opt) { return opt->kind; }
int64_t nn_optim_steps(const nn_optim *opt) { return opt->step; }

void nn_optim_set_lr(nn_optim *opt, double lr) {
  for (int g = 0; g < opt->n_groups; g++) opt->groups[g].lr = lr;
}

double nn_optim_get_lr(const nn_optim *opt, int group) {
  return group >= 0 && group < opt->n_groups ? opt->groups[group].lr : NAN;
}

void nn_optim_zero_grad(nn_optim *opt, bool set_to_none) {
  for (int i = 0; i < opt->n; i++) nn_tensor_zero_grad(opt->ps[i].p, set_to_none);
}

static int ensure_buf(pstate *s, int k) {
  if (s->buf[k]) return NN_OK;
  return nn_tensor_zeros_like(&s->buf[k], s->p);
}

int nn_optim_step(nn_optim *opt) {
  opt->step++;
  for (int i = 0; i < opt->n; i++) {
    pstate *s = &opt->ps[i];
    nn_tensor *p = s->p, *g = p->grad;
    if (!g) continue;
    const nn_optim_opts *o = &opt->groups[s->group];
    nn_op_params pr = {0};
    int rc = NN_OK;
    switch (opt->kind) {
    case NN_OPTIM_SGD: {
      bool mom = o->momentum != 0;
      if (mom) rc = ensure_buf(s, 0);
      if (rc) return rc;
      pr.f[0] = o->lr;
      pr.f[1] = o->momentum;
      pr.f[2] = o->dampening;
      pr.f[3] = o->weight_decay;
      pr.i[0] = mom;
      pr.i[1] = o->nesterov;
      pr.i[2] = mom && !s->started;
      nn_tensor *in[3] = {p, g, mom ? s->buf[0] : p};
      rc = nn_dispatch(NN_OP_SGD_STEP, 0, NULL, 3, in, &pr);
      if (mom) s->started = true;
    } break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW: {
      rc = ensure_buf(s, 0);
      if (!rc) rc = ensure_buf(s, 1);
      if (rc) return rc;
      pr.f[0] = o->lr;
      pr.f[1] = o->beta1;
      pr.f[2] = o->beta2;
      pr.f[3] = o->eps;
      pr.f[4] = o->weight_decay;
      pr.f[5] = 1.0 - pow(o->beta1, (double)opt->step);
      pr.f[6] = 1.0 - pow(o->beta2, (double)opt->step);
      pr.i[0] = opt->kind == NN_OPTIM_ADAMW;
      nn_tensor *in[4] = {p, g, s->buf[0], s->buf[1]};
      rc = nn_dispatch(NN_OP_ADAM_STEP, 0, NULL, 4, in, &pr);
    } break;
    case NN_OPTIM_RMSPROP: {
      rc = ensure_buf(s, 0);
      if (!rc && o->momentum > 0) rc = ensure_buf(s, 1);
      if (!rc && o->centered) rc = ensure_buf(s, 2);
      if (rc) return rc;
      pr.f[0] = o->lr;
      pr.f[1] = o->alpha;
      pr.f[2] = o->eps;
      pr.f[3] = o->weight_decay;
      pr.f[4] = o->momentum;
      pr.i[0] = o->momentum > 0;
      pr.i[1] = o->centered;
      nn_tensor *in[5] = {p, g, s->buf[0], s->buf[1] ? s->buf[1] : p, s->buf[2] ? s->buf[2] : p};
      rc = nn_dispatch(NN_OP_RMSPROP_STEP, 0, NULL, 5, in, &pr);
    } break;
    }
    if (rc) return rc;
  }
  return NN_OK;
}

/* ---- state ---- */

int nn_optim_state(nn_optim *opt, nn_named **out, int *n) {
  *out = NULL;
  *n = 0;
  nn_named *l = NULL;
  int cnt = 0;
  for (int i = 0; i < opt->n; i++)
    for (int k = 0; k < 3; k++) {
      const char *bn = buf_names[opt->kind][k];
      if (!bn || !opt->ps[i].buf[k]) continue;
      nn_named *nl = realloc(l, (size_t)(cnt + 1) * sizeof *nl);
      if (!nl) {
        nn_named_list_free(l, cnt);
        return nn_seterr(NN_ERR_NOMEM, "optim state: out of memory");
      }
      l = nl;
      char name[64];
      snprintf(name, sizeof name, "%d.%s", i, bn);
      l[cnt].name = strdup(name);
      l[cnt].t = opt->ps[i].buf[k];
      cnt++;
    }
  *out = l;
  *n = cnt;
  return NN_OK;
}

/* Validates state entries against opt; fills idx[j] = param * 3 + buffer. */
static int validate_state(nn_optim *opt, int n, const nn_named *state, int *idx) {
  for (int j = 0; j < n; j++) {
    int i = -1, k = -1;
    char bn[64];
    if (sscanf(state[j].name, "%d.%63s", &i, bn) != 2 || i < 0 || i >= opt->n)
      return nn_seterr(NN_ERR_ARG,
                       "optim load: state entry \"%s\" does not match an optimizer "
                       "over %d parameters",
                       state[j].name, opt->n);
    for (int q = 0; q < 3; q++)
      if (buf_names[opt->kind][q] && !strcmp(buf_names[opt->kind][q], bn)) k = q;
    if (k < 0)
      return nn_seterr(NN_ERR_ARG, "optim load: state entry \"%s\" is not a %s buffer",
                       state[j].name, nn_optim_kind_name(opt->kind));
    if (!nn_tensor_same_shape(state[j].t, opt->ps[i].p) || state[j].t->dtype != NN_DTYPE_F32) {
      char b1[128], b2[128];
      return nn_seterr(NN_ERR_SHAPE, "optim load: state \"%s\" has shape %s, parameter %d has %s",
                       state[j].name, nn_shape_str(state[j].t, b1, sizeof b1), i,
                       nn_shape_str(opt->ps[i].p, b2, sizeof b2));
    }
    if (idx) idx[j] = i * 3 + k;
  }
  return NN_OK;
}

int nn_optim_check_state(nn_optim *opt, int n, const nn_named *state) {
  return validate_state(opt, n, state, NULL);
}

int nn_optim_load_state(nn_optim *opt, int n, const nn_named *state, int64_t step) {
  int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
  if (!idx) return nn_seterr(NN_ERR_NOMEM, "optim load: out of memory");
  int rc = validate_state(opt, n, state, idx);
  /* buffers are allocated before anything is written, so a failure writes nothing */
  for (int j = 0; !rc && j < n; j++) rc = ensure_buf(&opt->ps[idx[j] / 3], idx[j] % 3);
  for (int j = 0; !rc && j < n; j++) {
    int i = idx[j] / 3, k = idx[j] % 3;
    rc = nn_copy_(opt->ps[i].buf[k], state[j].t);
    if (opt->kind == NN_OPTIM_SGD) opt->ps[i].started = true;
  }
  free(idx);
  if (!rc) opt->step = step;
  return rc;
}

int nn_clip_grad_norm(double *total_norm, int n, nn_tensor *const *params, double max_norm) {
  *total_norm = 0;
  double ss = 0;
  for (int i = 0; i < n; i++) {
    nn_tensor *g = params[i]->grad;
    if (!g) continue;
    /* sum of squares in double, in a fixed order */
    int64_t m = nn_tensor_numel(g);
    if (g->storage->device.type != NN_DEVICE_CPU) { /* bring device grads to the host */
      float *h = malloc((size_t)(m ? m : 1) * sizeof *h);
      if (!h) return nn_seterr(NN_ERR_NOMEM, "clip_grad_norm: out of memory");
      int rc = nn_tensor_to_host(g, NN_DTYPE_F32, h);
      for (int64_t j = 0; !rc && j < m; j++) ss += (double)h[j] * h[j];
      free(h);
      if (rc) return rc;
    } else if (!nn_tensor_is_contiguous(g)) {
      for (int64_t j = 0; j < m; j++) {
        double v = nn_tensor_get_flat(g, j);
        ss += v * v;
      }
    } else {
      const float *d = nn_tensor_data(g);
      for (int64_t j = 0; j < m; j++) ss += (double)d[j] * d[j];
    }
  }
  double norm = sqrt(ss);
  *total_norm = norm;
  if (!(max_norm > 0))
    return nn_seterr(NN_ERR_ARG, "clip_grad_norm: max_norm must be positive, got %g", max_norm);
  double coef = max_norm / (norm + 1e-6); /* PyTorch's rule */
  if (coef < 1)
    for (int i = 0; i < n; i++)
      if (params[i]->grad) {
        int rc = nn_mul_scalar_(params[i]->grad, coef);
        if (rc) return rc;
      }
  return NN_OK;
}
