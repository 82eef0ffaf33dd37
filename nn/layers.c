/* nn/layers.c: the built-in layer types and their registration by name.
 * Shapes: N batch, C channels, H, W; I/O in/out features. Each layer composes ops (autograd
 * gives the backward), reports its output shape and forward FLOPs, and has a constructor by
 * name taking options (nn_opt) for the registry. */
#include "autograd.h"
#include "backend.h"
#include "gyro_dropout.h"
#include "module.h"
#include "ops_core.h"
#include "ops_elementwise.h"
#include "ops_index.h"
#include "ops_reduce.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t numel_of(const nn_shape_info *s, int from) {
  int64_t n = 1;
  for (int d = from; d < s->ndim; d++) n *= s->shape[d];
  return n;
}

static int shape_err(const char *layer, const nn_shape_info *in, const char *want) {
  char b[160] = "(";
  size_t k = 1;
  for (int d = 0; d < in->ndim; d++)
    k += (size_t)snprintf(b + k, sizeof b - k, d ? ", %lld" : "%lld", (long long)in->shape[d]);
  snprintf(b + k, sizeof b - k, ")");
  return nn_seterr(NN_ERR_SHAPE, "%s: input of shape %s, expected %s", layer, b, want);
}

/* ---------------------------------------------------------------- Linear */

typedef struct {
  int64_t in, out;
} linear_state;

static int linear_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  return nn_linear(out, x, m->params[0].t, m->n_params > 1 ? m->params[1].t : NULL);
}

static int linear_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  const linear_state *s = m->state;
  if (in->ndim < 1 || in->shape[in->ndim - 1] != s->in) {
    char want[64];
    snprintf(want, sizeof want, "(..., %lld)", (long long)s->in);
    return shape_err("Linear", in, want);
  }
  *out = *in;
  out->shape[in->ndim - 1] = s->out;
  int64_t rows = numel_of(in, 0) / s->in;
  out->flops = rows * s->out * (2 * s->in - 1 + (m->n_params > 1 ? 1 : 0));
  return NN_OK;
}

static void linear_describe(const nn_module *m, char *buf, size_t n) {
  const linear_state *s = m->state;
  snprintf(buf, n, "in=%lld, out=%lld, bias=%s", (long long)s->in, (long long)s->out,
           m->n_params > 1 ? "true" : "false");
}

static const nn_module_i linear_vt = {"Linear", linear_forward, linear_shape, NULL,
                                      linear_describe};

int nn_linear_new(nn_module **out, int64_t in, int64_t outf, bool bias) {
  *out = NULL;
  if (in <= 0 || outf <= 0)
    return nn_seterr(NN_ERR_ARG, "Linear: sizes must be positive, got in=%lld out=%lld",
                     (long long)in, (long long)outf);
  linear_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "Linear: out of memory");
  s->in = in;
  s->out = outf;
  nn_module *m = NULL;
  nn_tensor *w = NULL, *b = NULL;
  int rc = nn_module_new(&m, &linear_vt, s);
  if (rc) {
    free(s);
    return rc;
  }
  rc = nn_tensor_empty(&w, 2, (int64_t[]){outf, in}, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_init_(w, NN_INIT_PYTORCH_DEFAULT, 0, NULL);
  if (!rc)
    rc = nn_module_add_param(m, "weight", w);
  else
    nn_tensor_free(w);
  if (!rc && bias) {
    rc = nn_tensor_empty(&b, 1, &outf, NN_DTYPE_F32, nn_cpu);
    if (!rc) { /* PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
      double bd = 1.0 / sqrt((double)in);
      rc = nn_uniform_(b, -bd, bd, NULL);
    }
    if (!rc)
      rc = nn_module_add_param(m, "bias", b);
    else
      nn_tensor_free(b);
  }
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- Conv2d */

typedef struct {
  int64_t cin, cout;
  int kh, kw;
  nn_conv2d_opts o;
} conv_state;

static int conv_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const conv_state *s = m->state;
  return nn_conv2d(out, x, m->params[0].t, m->n_params > 1 ? m->params[1].t : NULL, &s->o);
}

static int conv_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  const conv_state *s = m->state;
  if (in->ndim != 4 || in->shape[1] != s->cin) {
    char want[64];
    snprintf(want, sizeof want, "(N, %lld, H, W)", (long long)s->cin);
    return shape_err("Conv2d", in, want);
  }
  int64_t H = in->shape[2], W = in->shape[3];
  int64_t OH = (H + 2 * s->o.padding[0] - s->o.dilation[0] * (s->kh - 1) - 1) / s->o.stride[0] + 1;
  int64_t OW = (W + 2 * s->o.padding[1] - s->o.dilation[1] * (s->kw - 1) - 1) / s->o.stride[1] + 1;
  if (OH <= 0 || OW <= 0) return shape_err("Conv2d", in, "an input larger than the kernel");
  *out = *in;
  out->shape[1] = s->cout;
  out->shape[2] = OH;
  out->shape[3] = OW;
  int64_t k = s->cin / s->o.groups * s->kh * s->kw;
  out->flops = in->shape[0] * s->cout * OH * OW * (2 * k - 1 + (m->n_params > 1 ? 1 : 0));
  return NN_OK;
}

static void conv_describe(const nn_module *m, char *buf, size_t n) {
  const conv_state *s = m->state;
  snprintf(buf, n, "in=%lld, out=%lld, kernel=%dx%d, stride=%d, padding=%d, dilation=%d, groups=%d",
           (long long)s->cin, (long long)s->cout, s->kh, s->kw, s->o.stride[0], s->o.padding[0],
           s->o.dilation[0], s->o.groups);
}

static const nn_module_i conv_vt = {"Conv2d", conv_forward, conv_shape, NULL, conv_describe};

int nn_conv2d_new(nn_module **out, int64_t cin, int64_t cout, int kh, int kw,
                  const nn_conv2d_opts *o, bool bias) {
  *out = NULL;
  nn_conv2d_opts def = {{1, 1}, {0, 0}, {1, 1}, 1};
  if (!o) o = &def;
  if (cin <= 0 || cout <= 0 || kh <= 0 || kw <= 0 || o->groups <= 0 || cin % o->groups ||
      cout % o->groups || o->stride[0] <= 0 || o->stride[1] <= 0 || o->dilation[0] <= 0 ||
      o->dilation[1] <= 0 || o->padding[0] < 0 || o->padding[1] < 0)
    return nn_seterr(NN_ERR_ARG,
                     "Conv2d: invalid options in=%lld out=%lld kernel=%dx%d groups=%d "
                     "(channels must divide by groups; sizes, stride and dilation positive)",
                     (long long)cin, (long long)cout, kh, kw, o->groups);
  conv_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "Conv2d: out of memory");
  *s = (conv_state){cin, cout, kh, kw, *o};
  nn_module *m = NULL;
  nn_tensor *w = NULL, *b = NULL;
  int rc = nn_module_new(&m, &conv_vt, s);
  if (rc) {
    free(s);
    return rc;
  }
  rc = nn_tensor_empty(&w, 4, (int64_t[]){cout, cin / o->groups, kh, kw}, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_init_(w, NN_INIT_PYTORCH_DEFAULT, 0, NULL);
  if (!rc)
    rc = nn_module_add_param(m, "weight", w);
  else
    nn_tensor_free(w);
  if (!rc && bias) {
    rc = nn_tensor_empty(&b, 1, &cout, NN_DTYPE_F32, nn_cpu);
    double bd = 1.0 / sqrt((double)(cin / o->groups * kh * kw));
    if (!rc) rc = nn_uniform_(b, -bd, bd, NULL);
    if (!rc)
      rc = nn_module_add_param(m, "bias", b);
    else
      nn_tensor_free(b);
  }
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- BatchNorm */

typedef struct {
  int64_t c;
  int dims;
  double eps, momentum;
  bool affine;
} bn_state;

static int bn_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const bn_state *s = m->state;
  char b[128];
  if (x->ndim != s->dims || x->shape[1] != s->c)
    return nn_seterr(NN_ERR_SHAPE, "BatchNorm%dd: input of shape %s, expected %s with C = %lld",
                     s->dims == 2 ? 1 : 2, nn_shape_str(x, b, sizeof b),
                     s->dims == 2 ? "(N, C)" : "(N, C, H, W)", (long long)s->c);
  nn_tensor *w = s->affine ? m->params[0].t : NULL, *bias = s->affine ? m->params[1].t : NULL;
  return nn_batch_norm(out, x, w, bias, m->buffers[0].t, m->buffers[1].t, m->training, s->momentum,
                       s->eps);
}

static int bn_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  const bn_state *s = m->state;
  if (in->ndim != s->dims || in->shape[1] != s->c)
    return shape_err(s->dims == 2 ? "BatchNorm1d" : "BatchNorm2d", in,
                     s->dims == 2 ? "(N, C)" : "(N, C, H, W)");
  *out = *in;
  out->flops = numel_of(in, 0) * (s->affine ? 4 : 2);
  return NN_OK;
}

static const nn_module_i bn1_vt = {"BatchNorm1d", bn_forward, bn_shape, NULL, NULL};
static const nn_module_i bn2_vt = {"BatchNorm2d", bn_forward, bn_shape, NULL, NULL};

int nn_batchnorm_new(nn_module **out, int64_t c, int dims, double eps, double momentum,
                     bool affine) {
  *out = NULL;
  if (c <= 0 || (dims != 2 && dims != 4))
    return nn_seterr(NN_ERR_ARG, "BatchNorm: channels must be positive and dims 2 or 4");
  bn_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "BatchNorm: out of memory");
  *s = (bn_state){c, dims, eps, momentum, affine};
  nn_module *m = NULL;
  int rc = nn_module_new(&m, dims == 2 ? &bn1_vt : &bn2_vt, s);
  if (rc) {
    free(s);
    return rc;
  }
  nn_tensor *t = NULL;
  if (affine) {
    rc = nn_tensor_full(&t, 1, &c, 1.0, NN_DTYPE_F32, nn_cpu);
    if (!rc) rc = nn_module_add_param(m, "weight", t);
    if (!rc) rc = nn_tensor_zeros(&t, 1, &c, NN_DTYPE_F32, nn_cpu);
    if (!rc) rc = nn_module_add_param(m, "bias", t);
  }
  if (!rc) rc = nn_tensor_zeros(&t, 1, &c, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_module_add_buffer(m, "running_mean", t);
  if (!rc) rc = nn_tensor_full(&t, 1, &c, 1.0, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_module_add_buffer(m, "running_var", t);
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- LayerNorm */

typedef struct {
  int n_dims;
  int64_t shape[NN_MAX_DIMS];
  double eps;
  bool affine;
} ln_state;

static int ln_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const ln_state *s = m->state;
  char b[128];
  bool ok = x->ndim >= s->n_dims;
  for (int d = 0; ok && d < s->n_dims; d++)
    if (x->shape[x->ndim - s->n_dims + d] != s->shape[d]) ok = false;
  if (!ok)
    return nn_seterr(NN_ERR_SHAPE,
                     "LayerNorm: input of shape %s does not end with the normalised shape",
                     nn_shape_str(x, b, sizeof b));
  return nn_layer_norm(out, x, s->n_dims, s->affine ? m->params[0].t : NULL,
                       s->affine ? m->params[1].t : NULL, s->eps);
}

static int ln_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  const ln_state *s = m->state;
  *out = *in;
  out->flops = numel_of(in, 0) * (s->affine ? 7 : 5);
  return NN_OK;
}

static const nn_module_i ln_vt = {"LayerNorm", ln_forward, ln_shape, NULL, NULL};

int nn_layernorm_new(nn_module **out, int n_dims, const int64_t *shape, double eps, bool affine) {
  *out = NULL;
  if (n_dims <= 0 || n_dims > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_ARG, "LayerNorm: normalised shape must have 1..%d dims", NN_MAX_DIMS);
  ln_state *s = calloc(1, sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "LayerNorm: out of memory");
  s->n_dims = n_dims;
  memcpy(s->shape, shape, (size_t)n_dims * sizeof *shape);
  s->eps = eps;
  s->affine = affine;
  nn_module *m = NULL;
  int rc = nn_module_new(&m, &ln_vt, s);
  if (rc) {
    free(s);
    return rc;
  }
  nn_tensor *t = NULL;
  if (affine) {
    rc = nn_tensor_full(&t, n_dims, shape, 1.0, NN_DTYPE_F32, nn_cpu);
    if (!rc) rc = nn_module_add_param(m, "weight", t);
    if (!rc) rc = nn_tensor_zeros(&t, n_dims, shape, NN_DTYPE_F32, nn_cpu);
    if (!rc) rc = nn_module_add_param(m, "bias", t);
  }
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- Dropout */

typedef struct {
  double p;
} dropout_state;

static int dropout_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const dropout_state *s = m->state;
  if (!m->training || s->p == 0) {
    *out = nn_tensor_retain(x);
    return NN_OK;
  }
  nn_tensor *mask = NULL;
  int rc = nn_tensor_empty(&mask, x->ndim, x->shape, x->dtype, x->storage->device);
  if (!rc) rc = nn_bernoulli_(mask, 1.0 - s->p, m->rng);
  if (!rc) rc = nn_dropout_mask(out, x, mask, s->p < 1 ? 1.0 / (1.0 - s->p) : 0.0);
  nn_tensor_free(mask);
  return rc;
}

static void dropout_describe(const nn_module *m, char *buf, size_t n) {
  snprintf(buf, n, "p=%g", ((const dropout_state *)m->state)->p);
}

static const nn_module_i dropout_vt = {"Dropout", dropout_forward, NULL, NULL, dropout_describe};

int nn_dropout_new(nn_module **out, double p) {
  *out = NULL;
  if (!(p >= 0 && p <= 1)) return nn_seterr(NN_ERR_ARG, "Dropout: p must be in [0, 1], got %g", p);
  dropout_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "Dropout: out of memory");
  s->p = p;
  int rc = nn_module_new(out, &dropout_vt, s);
  if (rc) free(s);
  return rc;
}

/* ---------------------------------------------------------------- Embedding */

static int emb_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  return nn_embedding(out, m->params[0].t, x);
}

static int emb_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  *out = *in;
  if (in->ndim >= NN_MAX_DIMS) return shape_err("Embedding", in, "fewer dims");
  out->shape[out->ndim++] = m->params[0].t->shape[1];
  out->flops = 0;
  return NN_OK;
}

static const nn_module_i emb_vt = {"Embedding", emb_forward, emb_shape, NULL, NULL};

int nn_embedding_new(nn_module **out, int64_t num, int64_t dim) {
  *out = NULL;
  if (num <= 0 || dim <= 0) return nn_seterr(NN_ERR_ARG, "Embedding: sizes must be positive");
  nn_module *m = NULL;
  nn_tensor *w = NULL;
  int rc = nn_module_new(&m, &emb_vt, NULL);
  if (!rc) rc = nn_tensor_empty(&w, 2, (int64_t[]){num, dim}, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_normal_(w, 0.0, 1.0, NULL);
  if (!rc)
    rc = nn_module_add_param(m, "weight", w);
  else
    nn_tensor_free(w);
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- activations */

typedef struct {
  nn_act kind;
  double param;
} act_state;

static int act_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const act_state *s = m->state;
  switch (s->kind) {
  case NN_ACT_RELU:
    return nn_relu(out, x);
  case NN_ACT_LEAKY_RELU:
    return nn_leaky_relu(out, x, s->param);
  case NN_ACT_GELU:
    return nn_gelu(out, x, s->param != 0);
  case NN_ACT_TANH:
    return nn_tanh(out, x);
  case NN_ACT_SIGMOID:
    return nn_sigmoid(out, x);
  case NN_ACT_SOFTPLUS:
    return nn_softplus(out, x, s->param, 20.0);
  }
  return nn_seterr(NN_ERR_ARG, "activation: unknown kind");
}

static int act_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  static const int cost[] = {1, 2, 8, 6, 4, 4};
  *out = *in;
  out->flops = numel_of(in, 0) * cost[((const act_state *)m->state)->kind];
  return NN_OK;
}

static const nn_module_i act_vts[] = {
    {"ReLU", act_forward, act_shape, NULL, NULL},
    {"LeakyReLU", act_forward, act_shape, NULL, NULL},
    {"GELU", act_forward, act_shape, NULL, NULL},
    {"Tanh", act_forward, act_shape, NULL, NULL},
    {"Sigmoid", act_forward, act_shape, NULL, NULL},
    {"Softplus", act_forward, act_shape, NULL, NULL},
};

int nn_activation_new(nn_module **out, nn_act kind, double param) {
  *out = NULL;
  if ((int)kind < 0 || kind > NN_ACT_SOFTPLUS)
    return nn_seterr(NN_ERR_ARG, "activation: unknown kind %d", (int)kind);
  act_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "activation: out of memory");
  s->kind = kind;
  s->param = param;
  int rc = nn_module_new(out, &act_vts[kind], s);
  if (rc) free(s);
  return rc;
}

/* ---------------------------------------------------------------- pooling, flatten */

typedef struct {
  int k, stride, padding;
} pool_state;

static int pool_out(const char *name, const pool_state *s, const nn_shape_info *in,
                    nn_shape_info *out) {
  if (in->ndim != 4) return shape_err(name, in, "(N, C, H, W)");
  *out = *in;
  for (int d = 2; d < 4; d++) {
    out->shape[d] = (in->shape[d] + 2 * s->padding - s->k) / s->stride + 1;
    if (out->shape[d] <= 0) return shape_err(name, in, "an input larger than the window");
  }
  out->flops = numel_of(out, 0) * s->k * s->k;
  return NN_OK;
}

static int maxpool_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const pool_state *s = m->state;
  int k[2] = {s->k, s->k}, st[2] = {s->stride, s->stride}, pd[2] = {s->padding, s->padding};
  return nn_max_pool2d(out, x, k, st, pd);
}

static int maxpool_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  return pool_out("MaxPool2d", m->state, in, out);
}

static int avgpool_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const pool_state *s = m->state;
  int k[2] = {s->k, s->k}, st[2] = {s->stride, s->stride}, pd[2] = {s->padding, s->padding};
  return nn_avg_pool2d(out, x, k, st, pd, true);
}

static int avgpool_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  return pool_out("AvgPool2d", m->state, in, out);
}

static const nn_module_i maxpool_vt = {"MaxPool2d", maxpool_forward, maxpool_shape, NULL, NULL};
static const nn_module_i avgpool_vt = {"AvgPool2d", avgpool_forward, avgpool_shape, NULL, NULL};

static int pool_new(nn_module **out, const nn_module_i *vt, int k, int stride, int padding) {
  *out = NULL;
  if (stride <= 0) stride = k;
  if (k <= 0 || padding < 0 || padding * 2 > k)
    return nn_seterr(NN_ERR_ARG, "%s: kernel must be positive and padding at most half of it",
                     vt->type);
  pool_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "%s: out of memory", vt->type);
  *s = (pool_state){k, stride, padding};
  int rc = nn_module_new(out, vt, s);
  if (rc) free(s);
  return rc;
}

int nn_maxpool2d_new(nn_module **out, int k, int stride, int padding) {
  return pool_new(out, &maxpool_vt, k, stride, padding);
}

int nn_avgpool2d_new(nn_module **out, int k, int stride, int padding) {
  return pool_new(out, &avgpool_vt, k, stride, padding);
}

static int gap_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  (void)m;
  return nn_global_avg_pool2d(out, x);
}

static int gap_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  (void)m;
  if (in->ndim != 4) return shape_err("GlobalAvgPool2d", in, "(N, C, H, W)");
  *out = *in;
  out->ndim = 2;
  out->flops = numel_of(in, 0);
  return NN_OK;
}

static const nn_module_i gap_vt = {"GlobalAvgPool2d", gap_forward, gap_shape, NULL, NULL};

int nn_global_avgpool2d_new(nn_module **out) { return nn_module_new(out, &gap_vt, NULL); }

typedef struct {
  int start, end;
} flatten_state;

static int flatten_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  const flatten_state *s = m->state;
  return nn_flatten(out, x, s->start, s->end);
}

static int flatten_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  const flatten_state *s = m->state;
  int a = nn_wrap_dim(s->start, in->ndim), b = nn_wrap_dim(s->end, in->ndim);
  if (a < 0 || b < 0 || a > b) return shape_err("Flatten", in, "more dims");
  out->ndim = 0;
  for (int d = 0; d < a; d++) out->shape[out->ndim++] = in->shape[d];
  int64_t n = 1;
  for (int d = a; d <= b; d++) n *= in->shape[d];
  out->shape[out->ndim++] = n;
  for (int d = b + 1; d < in->ndim; d++) out->shape[out->ndim++] = in->shape[d];
  out->flops = 0;
  return NN_OK;
}

static const nn_module_i flatten_vt = {"Flatten", flatten_forward, flatten_shape, NULL, NULL};

int nn_flatten_new(nn_module **out, int start_dim, int end_dim) {
  *out = NULL;
  flatten_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "Flatten: out of memory");
  *s = (flatten_state){start_dim, end_dim};
  int rc = nn_module_new(out, &flatten_vt, s);
  if (rc) free(s);
  return rc;
}

/* ---------------------------------------------------------------- Sequential, Residual */

/* A Conv2d, ReLU, MaxPool2d run of children from i on, fused into one op (the conv output is
 * never stored; values and gradients are those of the three layers bit for bit, see
 * nn_conv2d_relu_max_pool2d). Only inside the Sequential's own forward, where the two inner
 * outputs are not observable. Returns 1 and *out when it ran, 0 when the run does not match or
 * the device has no fused kernel (the caller runs the layers one by one, which also gives their
 * own error messages), or an error. */
static int seq_fused(nn_module *m, int i, nn_tensor *x, nn_tensor **out) {
  *out = NULL;
  if (i + 2 >= m->n_children) return 0;
  nn_module *c = m->children[i], *r = m->children[i + 1], *pl = m->children[i + 2];
  if (c->vt != &conv_vt || r->vt != &act_vts[NN_ACT_RELU] || pl->vt != &maxpool_vt) return 0;
  const nn_backend_i *be = nn_backend_get(x->storage->device.type);
  if (!be || !be->kernels[NN_OP_CONV2D_RELU_MAXPOOL] ||
      !be->kernels[NN_OP_CONV2D_RELU_MAXPOOL_BACKWARD])
    return 0;
  const conv_state *cs = c->state;
  const pool_state *ps = pl->state;
  int k[2] = {ps->k, ps->k}, st[2] = {ps->stride, ps->stride}, pd[2] = {ps->padding, ps->padding};
  int rc = nn_conv2d_relu_max_pool2d(out, x, c->params[0].t,
                                     c->n_params > 1 ? c->params[1].t : NULL, &cs->o, k, st, pd);
  return rc ? 0 : 1; /* on error the layers run one by one and report it in their words */
}

static int seq_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  nn_tensor *cur = nn_tensor_retain(x);
  for (int i = 0; i < m->n_children; i++) {
    nn_tensor *next = NULL;
    int rc = seq_fused(m, i, cur, &next);
    if (rc == 1) {
      i += 2;
      rc = NN_OK;
    } else
      rc = nn_module_forward(m->children[i], cur, &next);
    nn_tensor_free(cur);
    if (rc) return rc;
    cur = next;
  }
  *out = cur;
  return NN_OK;
}

static const nn_module_i seq_vt = {"Sequential", seq_forward, nn_module_chain_shape, NULL, NULL};

int nn_sequential_new(nn_module **out, int n, nn_module *const *children) {
  return nn_module_new_chain(out, &seq_vt, n, children);
}

static int res_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  nn_tensor *a = NULL, *b = NULL;
  int rc = nn_module_forward(m->children[0], x, &a);
  if (!rc) {
    if (m->n_children > 1)
      rc = nn_module_forward(m->children[1], x, &b);
    else
      b = nn_tensor_retain(x);
  }
  if (!rc) rc = nn_add(out, a, b);
  nn_tensor_free(a);
  nn_tensor_free(b);
  return rc;
}

static int res_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out) {
  nn_shape_info a, b = *in;
  int rc = nn_module_child_shape((nn_module *)m, 0, in, &a);
  b.flops = 0;
  if (!rc && m->n_children > 1) rc = nn_module_child_shape((nn_module *)m, 1, in, &b);
  if (rc) return rc;
  if (a.ndim != b.ndim || memcmp(a.shape, b.shape, (size_t)a.ndim * sizeof a.shape[0]))
    return shape_err("Residual", in, "a body whose output shape equals the shortcut's");
  *out = a;
  out->flops = a.flops + b.flops + numel_of(&a, 0);
  return NN_OK;
}

static const nn_module_i res_vt = {"Residual", res_forward, res_shape, NULL, NULL};

int nn_residual_new(nn_module **out, nn_module *body, nn_module *shortcut) {
  *out = NULL;
  nn_module *m = NULL;
  int rc = nn_module_new(&m, &res_vt, NULL);
  if (!rc) rc = nn_module_add_child(m, "body", body);
  if (!rc && shortcut) rc = nn_module_add_child(m, "shortcut", shortcut);
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

/* ---------------------------------------------------------------- constructors by name */

#define OPTS_CHECK(layer, ...)                                                                     \
  do {                                                                                             \
    static const char *const known_[] = {__VA_ARGS__, NULL};                                       \
    int rc_ = nn_opts_check(layer, n, o, known_);                                                  \
    if (rc_) return rc_;                                                                           \
  } while (0)

static int c_linear(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Linear", "in", "out", "bias");
  return nn_linear_new(out, (int64_t)nn_opt_num(n, o, "in", 0), (int64_t)nn_opt_num(n, o, "out", 0),
                       nn_opt_num(n, o, "bias", 1) != 0);
}

static int c_conv(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Conv2d", "in", "out", "kernel", "stride", "padding", "dilation", "groups", "bias");
  int k = (int)nn_opt_num(n, o, "kernel", 0), s = (int)nn_opt_num(n, o, "stride", 1);
  int p = (int)nn_opt_num(n, o, "padding", 0), d = (int)nn_opt_num(n, o, "dilation", 1);
  nn_conv2d_opts co = {{s, s}, {p, p}, {d, d}, (int)nn_opt_num(n, o, "groups", 1)};
  return nn_conv2d_new(out, (int64_t)nn_opt_num(n, o, "in", 0), (int64_t)nn_opt_num(n, o, "out", 0),
                       k, k, &co, nn_opt_num(n, o, "bias", 1) != 0);
}

static int c_bn(nn_module **out, int n, const nn_opt *o, int dims) {
  OPTS_CHECK(dims == 2 ? "BatchNorm1d" : "BatchNorm2d", "channels", "eps", "momentum", "affine");
  return nn_batchnorm_new(out, (int64_t)nn_opt_num(n, o, "channels", 0), dims,
                          nn_opt_num(n, o, "eps", 1e-5), nn_opt_num(n, o, "momentum", 0.1),
                          nn_opt_num(n, o, "affine", 1) != 0);
}
static int c_bn1(nn_module **out, int n, const nn_opt *o) { return c_bn(out, n, o, 2); }
static int c_bn2(nn_module **out, int n, const nn_opt *o) { return c_bn(out, n, o, 4); }

static int c_ln(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("LayerNorm", "size", "eps", "affine");
  int64_t sz = (int64_t)nn_opt_num(n, o, "size", 0);
  return nn_layernorm_new(out, 1, &sz, nn_opt_num(n, o, "eps", 1e-5),
                          nn_opt_num(n, o, "affine", 1) != 0);
}

static int c_dropout(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Dropout", "p");
  return nn_dropout_new(out, nn_opt_num(n, o, "p", 0.5));
}

static int c_emb(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Embedding", "num", "dim");
  return nn_embedding_new(out, (int64_t)nn_opt_num(n, o, "num", 0),
                          (int64_t)nn_opt_num(n, o, "dim", 0));
}

static int c_relu(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("ReLU", "_");
  return nn_activation_new(out, NN_ACT_RELU, 0);
}
static int c_lrelu(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("LeakyReLU", "slope");
  return nn_activation_new(out, NN_ACT_LEAKY_RELU, nn_opt_num(n, o, "slope", 0.01));
}
static int c_gelu(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("GELU", "tanh");
  return nn_activation_new(out, NN_ACT_GELU, nn_opt_num(n, o, "tanh", 0));
}
static int c_tanh(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Tanh", "_");
  return nn_activation_new(out, NN_ACT_TANH, 0);
}
static int c_sigmoid(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Sigmoid", "_");
  return nn_activation_new(out, NN_ACT_SIGMOID, 0);
}
static int c_softplus(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Softplus", "beta");
  return nn_activation_new(out, NN_ACT_SOFTPLUS, nn_opt_num(n, o, "beta", 1.0));
}
static int c_maxpool(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("MaxPool2d", "kernel", "stride", "padding");
  return nn_maxpool2d_new(out, (int)nn_opt_num(n, o, "kernel", 2),
                          (int)nn_opt_num(n, o, "stride", 0), (int)nn_opt_num(n, o, "padding", 0));
}
static int c_avgpool(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("AvgPool2d", "kernel", "stride", "padding");
  return nn_avgpool2d_new(out, (int)nn_opt_num(n, o, "kernel", 2),
                          (int)nn_opt_num(n, o, "stride", 0), (int)nn_opt_num(n, o, "padding", 0));
}
static int c_gap(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("GlobalAvgPool2d", "_");
  return nn_global_avgpool2d_new(out);
}
static int c_flatten(nn_module **out, int n, const nn_opt *o) {
  OPTS_CHECK("Flatten", "start_dim", "end_dim");
  return nn_flatten_new(out, (int)nn_opt_num(n, o, "start_dim", 1),
                        (int)nn_opt_num(n, o, "end_dim", -1));
}

void nn_layers_register_builtin(void) {
  static const struct {
    const char *name;
    nn_layer_ctor ctor;
    const char *doc;
  } builtin[] = {
      {"Linear", c_linear, "in, out, bias=1"},
      {"Conv2d", c_conv, "in, out, kernel, stride=1, padding=0, dilation=1, groups=1, bias=1"},
      {"BatchNorm1d", c_bn1, "channels, eps=1e-5, momentum=0.1, affine=1"},
      {"BatchNorm2d", c_bn2, "channels, eps=1e-5, momentum=0.1, affine=1"},
      {"LayerNorm", c_ln, "size, eps=1e-5, affine=1"},
      {"Dropout", c_dropout, "p=0.5"},
      {"GyroDropout", nn_gyro_dropout_ctor,
       "p=0.5, size, sigma=256, tau=16, iters (or period), block=1, shared=0"},
      {"BlockDropout", nn_block_dropout_ctor, "p=0.5, block=32, groups=1"},
      {"Embedding", c_emb, "num, dim"},
      {"ReLU", c_relu, ""},
      {"LeakyReLU", c_lrelu, "slope=0.01"},
      {"GELU", c_gelu, "tanh=0"},
      {"Tanh", c_tanh, ""},
      {"Sigmoid", c_sigmoid, ""},
      {"Softplus", c_softplus, "beta=1"},
      {"MaxPool2d", c_maxpool, "kernel=2, stride=kernel, padding=0"},
      {"AvgPool2d", c_avgpool, "kernel=2, stride=kernel, padding=0"},
      {"GlobalAvgPool2d", c_gap, ""},
      {"Flatten", c_flatten, "start_dim=1, end_dim=-1"},
  };
  for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
    nn_layer_register(builtin[i].name, builtin[i].ctor, builtin[i].doc);
}
