/* nn/ops_nnet.c: front-ends and backward rules of convolution, pooling and normalisation.
 * N batch, C channels, H, W input, O output channels, KH, KW kernel, OH, OW output.
 *
 * Conv backward: dx = conv_transpose(dout, w) (CONV2D_BACKWARD_INPUT), dw = sum over the batch of
 * dout (x) im2col(x) (CONV2D_BACKWARD_WEIGHT, which also sums dbias). Max pool saves its argmax.
 * Batch and layer norm save the mean and 1/sqrt(var + eps) they used; their input gradient is
 * dx = w*is*(dy - mean(dy) - xhat*mean(dy*xhat)) (Ioffe & Szegedy 2015, section 3). */
#include "ops_nnet.h"
#include "autograd.h"

#include <stdio.h>
#include <string.h>

/* Frees t and clears *out on error; the common tail of the front-ends. */
static int finish(nn_tensor **out, nn_tensor *t, int rc) {
  if (rc) {
    nn_tensor_free(t);
    *out = NULL;
    return rc;
  }
  *out = t;
  return NN_OK;
}

static int check_float(const char *op, const nn_tensor *x, nn_tensor *const *others, int n) {
  if (x->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: int64 input; convert to float32 or float64 first", op);
  for (int i = 0; i < n; i++)
    if (others[i] && others[i]->dtype != x->dtype)
      return nn_seterr(NN_ERR_DTYPE, "%s: all operands must share the input's dtype %s, got %s", op,
                       nn_dtype_name(x->dtype), nn_dtype_name(others[i]->dtype));
  return NN_OK;
}

/* ---------------------------------------------------------------- conv2d */

static int conv2d_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
  int rc = NN_OK;
  if (n->needs_grad[0]) {
    rc = nn_tensor_empty(&din[0], 4, x->shape, x->dtype, x->storage->device);
    nn_tensor *in[2] = {dout, w};
    if (!rc) rc = nn_dispatch(NN_OP_CONV2D_BACKWARD_INPUT, 1, &din[0], 2, in, &n->p);
  }
  if (!rc && n->needs_grad[1]) {
    nn_op_params p = n->p;
    p.i[7] = n->needs_grad[2];
    rc = nn_tensor_empty(&din[1], 4, w->shape, w->dtype, w->storage->device);
    if (!rc && p.i[7]) rc = nn_tensor_empty(&din[2], 1, b->shape, b->dtype, b->storage->device);
    nn_tensor *o[2] = {din[1], din[2]}, *in[2] = {dout, x};
    if (!rc) rc = nn_dispatch(NN_OP_CONV2D_BACKWARD_WEIGHT, 2, o, 2, in, &p);
  } else if (!rc && n->needs_grad[2]) {
    rc = nn_tensor_empty(&din[2], 1, b->shape, b->dtype, b->storage->device);
    if (!rc) rc = nn_dispatch(NN_OP_CONV2D_BACKWARD_BIAS, 1, &din[2], 1, &dout, &n->p);
  }
  return rc;
}

/* Checks conv2d's operands; fills its kernel params p and output shape osh (N, O, OH, OW). */
static int conv_setup(nn_tensor *x, nn_tensor *w, nn_tensor *bias, const nn_conv2d_opts *o,
                      nn_op_params *p, int64_t osh[4]) {
  static const nn_conv2d_opts dflt = {{1, 1}, {0, 0}, {1, 1}, 1};
  if (!o) o = &dflt;
  char bx[128], bw[128], bb[128], what[512];
  snprintf(what, sizeof what, "conv2d: input %s, weight %s, %s%s", nn_shape_str(x, bx, sizeof bx),
           nn_shape_str(w, bw, sizeof bw), bias ? "bias " : "no bias",
           bias ? nn_shape_str(bias, bb, sizeof bb) : "");
  nn_tensor *others[2] = {w, bias};
  int rc = check_float("conv2d", x, others, 2);
  if (rc) return rc;
  if (x->ndim != 4 || w->ndim != 4)
    return nn_seterr(NN_ERR_SHAPE,
                     "%s: input must be 4-D (N, C, H, W) and weight 4-D "
                     "(O, C/groups, KH, KW)",
                     what);
  for (int k = 0; k < 2; k++)
    if (o->stride[k] < 1 || o->dilation[k] < 1 || o->padding[k] < 0 || o->groups < 1)
      return nn_seterr(NN_ERR_ARG,
                       "conv2d: stride (%d, %d) and dilation (%d, %d) must be >= 1, "
                       "padding (%d, %d) >= 0, groups %d >= 1",
                       o->stride[0], o->stride[1], o->dilation[0], o->dilation[1], o->padding[0],
                       o->padding[1], o->groups);
  int64_t N = x->shape[0], C = x->shape[1], O = w->shape[0], G = o->groups;
  if (C % G || O % G)
    return nn_seterr(NN_ERR_SHAPE,
                     "%s, groups %lld: input channels %lld and output channels "
                     "%lld must both be divisible by groups",
                     what, (long long)G, (long long)C, (long long)O);
  if (w->shape[1] != C / G)
    return nn_seterr(NN_ERR_SHAPE,
                     "%s, groups %lld: channel mismatch: weight expects %lld "
                     "input channels per group, input has %lld / %lld = %lld",
                     what, (long long)G, (long long)w->shape[1], (long long)C, (long long)G,
                     (long long)(C / G));
  if (bias && (bias->ndim != 1 || bias->shape[0] != O))
    return nn_seterr(NN_ERR_SHAPE, "%s: bias must be (%lld,)", what, (long long)O);
  int64_t osz[2];
  for (int k = 0; k < 2; k++) {
    int64_t in = x->shape[2 + k], kk = w->shape[2 + k];
    int64_t span = (int64_t)o->dilation[k] * (kk - 1) + 1, padded = in + 2 * (int64_t)o->padding[k];
    osz[k] = padded >= span ? (padded - span) / o->stride[k] + 1 : 0;
  }
  if (C == 0) return nn_seterr(NN_ERR_SHAPE, "%s: input has no channels", what);
  if (osz[0] <= 0 || osz[1] <= 0 || O == 0)
    return nn_seterr(NN_ERR_SHAPE,
                     "%s, stride (%d, %d), padding (%d, %d), dilation (%d, %d): "
                     "output (%lld, %lld, %lld, %lld) is empty",
                     what, o->stride[0], o->stride[1], o->padding[0], o->padding[1], o->dilation[0],
                     o->dilation[1], (long long)N, (long long)O, (long long)osz[0],
                     (long long)osz[1]);
  for (int k = 0; k < 2; k++) {
    p->i[k] = o->stride[k];
    p->i[2 + k] = o->padding[k];
    p->i[4 + k] = o->dilation[k];
  }
  p->i[6] = G;
  osh[0] = N, osh[1] = O, osh[2] = osz[0], osh[3] = osz[1];
  return NN_OK;
}

int nn_conv2d(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias,
              const nn_conv2d_opts *o) {
  *out = NULL;
  nn_op_params p = {0};
  int64_t osh[4];
  int rc = conv_setup(x, w, bias, o, &p, osh);
  if (rc) return rc;
  nn_tensor *y = NULL;
  rc = nn_tensor_empty(&y, 4, osh, x->dtype, x->storage->device);
  nn_tensor *in[3] = {x, w, bias};
  if (!rc) rc = nn_dispatch(NN_OP_CONV2D, 1, &y, 3, in, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(y, "conv2d", conv2d_backward, 3, in, &n);
  if (!rc && n) n->p = p;
  return finish(out, y, rc);
}

/* ---------------------------------------------------------------- pooling */

/* Checks the window for an input of shape xsh (N, C, H, W) (named xname in messages); fills p
 * (kernel, stride, padding) and the output size. */
static int pool_dims(const char *op, const char *xname, const int64_t *xsh, const int kernel[2],
                     const int stride[2], const int padding[2], nn_op_params *p, int64_t *osh) {
  int k[2] = {kernel[0], kernel[1]};
  int s[2] = {stride ? stride[0] : k[0], stride ? stride[1] : k[1]};
  int pd[2] = {padding ? padding[0] : 0, padding ? padding[1] : 0};
  for (int d = 0; d < 2; d++)
    if (k[d] < 1 || s[d] < 1 || pd[d] < 0 || pd[d] > k[d] / 2)
      return nn_seterr(NN_ERR_ARG,
                       "%s: input %s, kernel (%d, %d), stride (%d, %d), padding (%d, "
                       "%d): kernel and stride must be >= 1 and padding in [0, "
                       "kernel/2]",
                       op, xname, k[0], k[1], s[0], s[1], pd[0], pd[1]);
  osh[0] = xsh[0];
  osh[1] = xsh[1];
  for (int d = 0; d < 2; d++) {
    int64_t padded = xsh[2 + d] + 2 * (int64_t)pd[d];
    osh[2 + d] = padded >= k[d] ? (padded - k[d]) / s[d] + 1 : 0;
    p->i[d] = k[d];
    p->i[2 + d] = s[d];
    p->i[4 + d] = pd[d];
  }
  if (osh[2] <= 0 || osh[3] <= 0)
    return nn_seterr(NN_ERR_SHAPE,
                     "%s: input %s, kernel (%d, %d), stride (%d, %d), padding (%d, "
                     "%d): output (%lld, %lld, %lld, %lld) is empty",
                     op, xname, k[0], k[1], s[0], s[1], pd[0], pd[1], (long long)osh[0],
                     (long long)osh[1], (long long)osh[2], (long long)osh[3]);
  return NN_OK;
}

/* Checks x and the window; fills p (kernel, stride, padding) and the output size. */
static int pool_setup(const char *op, nn_tensor *x, const int kernel[2], const int stride[2],
                      const int padding[2], nn_op_params *p, int64_t *osh) {
  char bx[128];
  int rc = check_float(op, x, NULL, 0);
  if (rc) return rc;
  if (x->ndim != 4)
    return nn_seterr(NN_ERR_SHAPE, "%s: input %s must be 4-D (N, C, H, W)", op,
                     nn_shape_str(x, bx, sizeof bx));
  return pool_dims(op, nn_shape_str(x, bx, sizeof bx), x->shape, kernel, stride, padding, p, osh);
}

static int max_pool2d_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0];
  int rc = nn_tensor_empty(&din[0], 4, x->shape, x->dtype, x->storage->device);
  nn_tensor *in[2] = {dout, n->saved[0]};
  if (!rc) rc = nn_dispatch(NN_OP_MAXPOOL2D_BACKWARD, 1, &din[0], 2, in, &n->p);
  return rc;
}

int nn_max_pool2d(nn_tensor **out, nn_tensor *x, const int kernel[2], const int stride[2],
                  const int padding[2]) {
  *out = NULL;
  nn_op_params p = {0};
  int64_t osh[4];
  int rc = pool_setup("max_pool2d", x, kernel, stride, padding, &p, osh);
  if (rc) return rc;
  nn_tensor *y = NULL, *idx = NULL;
  rc = nn_tensor_empty(&y, 4, osh, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&idx, 4, osh, NN_DTYPE_I64, x->storage->device);
  nn_tensor *o[2] = {y, idx};
  if (!rc) rc = nn_dispatch(NN_OP_MAXPOOL2D, 2, o, 1, &x, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(y, "max_pool2d", max_pool2d_backward, 1, &x, &n);
  if (!rc && n) {
    n->p = p;
    n->saved[0] = idx; /* the node takes our reference */
    idx = NULL;
  }
  nn_tensor_free(idx);
  return finish(out, y, rc);
}

static int avg_pool2d_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0];
  int rc = nn_tensor_empty(&din[0], 4, x->shape, x->dtype, x->storage->device);
  if (!rc) rc = nn_dispatch(NN_OP_AVGPOOL2D_BACKWARD, 1, &din[0], 1, &dout, &n->p);
  return rc;
}

int nn_avg_pool2d(nn_tensor **out, nn_tensor *x, const int kernel[2], const int stride[2],
                  const int padding[2], bool count_include_pad) {
  *out = NULL;
  nn_op_params p = {0};
  int64_t osh[4];
  int rc = pool_setup("avg_pool2d", x, kernel, stride, padding, &p, osh);
  if (rc) return rc;
  p.i[6] = count_include_pad;
  nn_tensor *y = NULL;
  rc = nn_tensor_empty(&y, 4, osh, x->dtype, x->storage->device);
  if (!rc) rc = nn_dispatch(NN_OP_AVGPOOL2D, 1, &y, 1, &x, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(y, "avg_pool2d", avg_pool2d_backward, 1, &x, &n);
  if (!rc && n) n->p = p;
  return finish(out, y, rc);
}

int nn_global_avg_pool2d(nn_tensor **out, nn_tensor *x) {
  *out = NULL;
  char bx[128];
  if (x->ndim != 4 || nn_tensor_numel(x) == 0)
    return nn_seterr(NN_ERR_SHAPE,
                     "global_avg_pool2d: input %s must be 4-D (N, C, H, W) and "
                     "non-empty",
                     nn_shape_str(x, bx, sizeof bx));
  int k[2] = {(int)x->shape[2], (int)x->shape[3]};
  nn_tensor *y = NULL;
  int rc = nn_avg_pool2d(&y, x, k, NULL, NULL, true);
  if (!rc) rc = nn_reshape(out, y, 2, x->shape);
  nn_tensor_free(y);
  return rc;
}

/* ---------------------------------------------------------------- conv2d + relu + max_pool2d */

static int conv_relu_pool_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *o[3];
  nn_op_params p = n->p;
  int rc = NN_OK, k = 0;
  p.i[14] = 0;
  for (int i = 0; i < 3 && !rc; i++) {
    if (!n->needs_grad[i]) continue;
    nn_tensor *like = i == 0 ? x : i == 1 ? w : b;
    rc = nn_tensor_empty(&din[i], like->ndim, like->shape, like->dtype, like->storage->device);
    o[k++] = din[i];
    p.i[14] |= 1 << i;
  }
  nn_tensor *in[4] = {dout, x, w, n->saved[0]};
  if (!rc && k) rc = nn_dispatch(NN_OP_CONV2D_RELU_MAXPOOL_BACKWARD, k, o, 4, in, &p);
  return rc;
}

int nn_conv2d_relu_max_pool2d(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias,
                              const nn_conv2d_opts *o, const int kernel[2], const int stride[2],
                              const int padding[2]) {
  *out = NULL;
  nn_op_params p = {0}, pp = {0};
  int64_t csh[4], osh[4];
  char name[128];
  int rc = conv_setup(x, w, bias, o, &p, csh);
  if (rc) return rc;
  snprintf(name, sizeof name, "(conv2d output) (%lld, %lld, %lld, %lld)", (long long)csh[0],
           (long long)csh[1], (long long)csh[2], (long long)csh[3]);
  rc = pool_dims("conv2d_relu_max_pool2d", name, csh, kernel, stride, padding, &pp, osh);
  if (rc) return rc;
  for (int k = 0; k < 6; k++) p.i[8 + k] = pp.i[k];
  nn_tensor *y = NULL, *idx = NULL;
  rc = nn_tensor_empty(&y, 4, osh, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&idx, 4, osh, NN_DTYPE_I64, x->storage->device);
  nn_tensor *outs[2] = {y, idx}, *in[3] = {x, w, bias};
  if (!rc) rc = nn_dispatch(NN_OP_CONV2D_RELU_MAXPOOL, 2, outs, 3, in, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(y, "conv2d_relu_max_pool2d", conv_relu_pool_backward, 3, in, &n);
  if (!rc && n) {
    n->p = p;
    n->saved[0] = idx; /* the node takes our reference */
    idx = NULL;
  }
  nn_tensor_free(idx);
  return finish(out, y, rc);
}

/* ---------------------------------------------------------------- normalisation */

/* Row r (0 or 1) of a (2, D) tensor, viewed with shape (ndim, shape) (no copy). */
static int sums_row(nn_tensor **out, nn_tensor *sums, int64_t r, int ndim, const int64_t *shape) {
  nn_tensor *row = NULL;
  int rc = nn_narrow(&row, sums, 0, r, 1);
  if (!rc) rc = nn_reshape(out, row, ndim, shape);
  nn_tensor_free(row);
  return rc;
}

static int batch_norm_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1], *mean = n->saved[0], *inv = n->saved[1];
  nn_tensor *dy = NULL, *sums = NULL;
  bool training = n->p.i[0];
  int64_t C = x->shape[1];
  int rc = nn_contiguous(&dy, dout);
  if (!rc && (n->needs_grad[1] || n->needs_grad[2] || (training && n->needs_grad[0]))) {
    rc = nn_tensor_empty(&sums, 2, (int64_t[]){2, C}, x->dtype, x->storage->device);
    nn_tensor *in[4] = {dy, x, mean, inv};
    if (!rc) rc = nn_dispatch(NN_OP_BATCHNORM_BACKWARD_REDUCE, 1, &sums, 4, in, &n->p);
  }
  if (!rc && n->needs_grad[0]) {
    rc = nn_tensor_empty(&din[0], x->ndim, x->shape, x->dtype, x->storage->device);
    nn_tensor *in[6] = {dy, x, w, mean, inv, sums};
    if (!rc) rc = nn_dispatch(NN_OP_BATCHNORM_BACKWARD, 1, &din[0], 6, in, &n->p);
  }
  if (!rc && n->needs_grad[1]) rc = sums_row(&din[1], sums, 1, 1, &C);
  if (!rc && n->needs_grad[2]) rc = sums_row(&din[2], sums, 0, 1, &C);
  nn_tensor_free(dy);
  nn_tensor_free(sums);
  return rc;
}

int nn_batch_norm(nn_tensor **out, nn_tensor *x, nn_tensor *weight, nn_tensor *bias,
                  nn_tensor *running_mean, nn_tensor *running_var, bool training, double momentum,
                  double eps) {
  *out = NULL;
  char bx[128], bp[128];
  nn_tensor *par[4] = {weight, bias, running_mean, running_var};
  static const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
  int rc = check_float("batch_norm", x, par, 4);
  if (rc) return rc;
  if (x->ndim < 2 || x->ndim > 4)
    return nn_seterr(NN_ERR_SHAPE, "batch_norm: input %s must be (N, C), (N, C, L) or (N, C, H, W)",
                     nn_shape_str(x, bx, sizeof bx));
  int64_t C = x->shape[1], M = nn_tensor_numel(x) / (C ? C : 1);
  for (int i = 0; i < 4; i++)
    if (par[i] && (par[i]->ndim != 1 || par[i]->shape[0] != C))
      return nn_seterr(NN_ERR_SHAPE, "batch_norm: input %s has %lld channels but %s is %s",
                       nn_shape_str(x, bx, sizeof bx), (long long)C, names[i],
                       nn_shape_str(par[i], bp, sizeof bp));
  if (!training && (!running_mean || !running_var))
    return nn_seterr(NN_ERR_ARG,
                     "batch_norm: input %s: eval mode needs running_mean and "
                     "running_var",
                     nn_shape_str(x, bx, sizeof bx));
  if (!(eps >= 0)) return nn_seterr(NN_ERR_ARG, "batch_norm: eps %g must be >= 0", eps);
  if (C == 0 || (training && M <= 1))
    return nn_seterr(NN_ERR_SHAPE,
                     "batch_norm: input %s: training needs more than one value "
                     "per channel",
                     nn_shape_str(x, bx, sizeof bx));
  nn_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *mean = NULL, *inv = NULL;
  rc = nn_contiguous(&xc, x);
  if (!rc && weight) rc = nn_contiguous(&wc, weight);
  if (!rc && bias) rc = nn_contiguous(&bc, bias);
  if (!rc) rc = nn_tensor_empty(&y, x->ndim, x->shape, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&mean, 1, &C, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&inv, 1, &C, x->dtype, x->storage->device);
  nn_op_params p = {0};
  p.i[0] = training;
  p.f[0] = momentum;
  p.f[1] = eps;
  if (!rc) {
    nn_tensor *o[5] = {y, mean, inv, training ? running_mean : NULL, training ? running_var : NULL};
    nn_tensor *in[5] = {xc, wc, bc, running_mean, running_var};
    rc = nn_dispatch(NN_OP_BATCHNORM, 5, o, 5, in, &p);
  }
  nn_node *n = NULL;
  nn_tensor *in[3] = {xc, wc, bc};
  if (!rc) rc = nn_record(y, "batch_norm", batch_norm_backward, 3, in, &n);
  if (!rc && n) {
    n->p = p;
    n->saved[0] = mean;
    n->saved[1] = inv;
    mean = inv = NULL;
  }
  nn_tensor_free(xc);
  nn_tensor_free(wc);
  nn_tensor_free(bc);
  nn_tensor_free(mean);
  nn_tensor_free(inv);
  return finish(out, y, rc);
}

static int layer_norm_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1], *mean = n->saved[0], *inv = n->saved[1];
  nn_tensor *dy = NULL, *sums = NULL;
  int64_t D = x->shape[1];
  int rc = nn_contiguous(&dy, dout);
  if (!rc && n->needs_grad[0]) {
    rc = nn_tensor_empty(&din[0], 2, x->shape, x->dtype, x->storage->device);
    nn_tensor *in[5] = {dy, x, w, mean, inv};
    if (!rc) rc = nn_dispatch(NN_OP_LAYERNORM_BACKWARD, 1, &din[0], 5, in, &n->p);
  }
  if (!rc && (n->needs_grad[1] || n->needs_grad[2])) {
    rc = nn_tensor_empty(&sums, 2, (int64_t[]){2, D}, x->dtype, x->storage->device);
    nn_tensor *in[4] = {dy, x, mean, inv};
    if (!rc) rc = nn_dispatch(NN_OP_LAYERNORM_BACKWARD_WEIGHT, 1, &sums, 4, in, &n->p);
    if (!rc && n->needs_grad[1]) rc = sums_row(&din[1], sums, 1, 1, &D);
    if (!rc && n->needs_grad[2]) rc = sums_row(&din[2], sums, 0, 1, &D);
  }
  nn_tensor_free(dy);
  nn_tensor_free(sums);
  return rc;
}

/* t (contiguous, or copied) viewed with shape (ndim, shape); differentiable. */
static int flat_view(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape) {
  nn_tensor *c = NULL;
  int rc = nn_contiguous(&c, t);
  if (!rc) rc = nn_reshape(out, c, ndim, shape);
  nn_tensor_free(c);
  return rc;
}

int nn_layer_norm(nn_tensor **out, nn_tensor *x, int n_norm_dims, nn_tensor *weight,
                  nn_tensor *bias, double eps) {
  *out = NULL;
  char bx[128], bp[128];
  nn_tensor *par[2] = {weight, bias};
  static const char *names[2] = {"weight", "bias"};
  int rc = check_float("layer_norm", x, par, 2);
  if (rc) return rc;
  if (n_norm_dims < 1 || n_norm_dims > x->ndim)
    return nn_seterr(NN_ERR_SHAPE, "layer_norm: input %s: n_norm_dims %d must be in [1, %d]",
                     nn_shape_str(x, bx, sizeof bx), n_norm_dims, x->ndim);
  int lead = x->ndim - n_norm_dims;
  int64_t R = 1, D = 1;
  for (int d = 0; d < x->ndim; d++) *(d < lead ? &R : &D) *= x->shape[d];
  if (D == 0)
    return nn_seterr(NN_ERR_SHAPE, "layer_norm: input %s: the normalised last %d dims are empty",
                     nn_shape_str(x, bx, sizeof bx), n_norm_dims);
  for (int i = 0; i < 2; i++) {
    bool ok = !par[i] || par[i]->ndim == n_norm_dims;
    for (int d = 0; ok && par[i] && d < n_norm_dims; d++)
      ok = par[i]->shape[d] == x->shape[lead + d];
    if (!ok)
      return nn_seterr(NN_ERR_SHAPE,
                       "layer_norm: input %s normalised over its last %d dims but "
                       "%s is %s",
                       nn_shape_str(x, bx, sizeof bx), n_norm_dims, names[i],
                       nn_shape_str(par[i], bp, sizeof bp));
  }
  if (!(eps >= 0)) return nn_seterr(NN_ERR_ARG, "layer_norm: eps %g must be >= 0", eps);
  nn_tensor *x2 = NULL, *w2 = NULL, *b2 = NULL, *y = NULL, *mean = NULL, *inv = NULL, *y2 = NULL;
  rc = flat_view(&x2, x, 2, (int64_t[]){R, D});
  if (!rc && weight) rc = flat_view(&w2, weight, 1, &D);
  if (!rc && bias) rc = flat_view(&b2, bias, 1, &D);
  if (!rc) rc = nn_tensor_empty(&y2, 2, (int64_t[]){R, D}, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&mean, 1, &R, x->dtype, x->storage->device);
  if (!rc) rc = nn_tensor_empty(&inv, 1, &R, x->dtype, x->storage->device);
  nn_op_params p = {0};
  p.f[1] = eps;
  nn_tensor *in[3] = {x2, w2, b2};
  if (!rc) {
    nn_tensor *o[3] = {y2, mean, inv};
    rc = nn_dispatch(NN_OP_LAYERNORM, 3, o, 3, in, &p);
  }
  nn_node *n = NULL;
  if (!rc) rc = nn_record(y2, "layer_norm", layer_norm_backward, 3, in, &n);
  if (!rc && n) {
    n->p = p;
    n->saved[0] = mean;
    n->saved[1] = inv;
    mean = inv = NULL;
  }
  if (!rc) rc = nn_reshape(&y, y2, x->ndim, x->shape);
  nn_tensor_free(x2);
  nn_tensor_free(w2);
  nn_tensor_free(b2);
  nn_tensor_free(y2);
  nn_tensor_free(mean);
  nn_tensor_free(inv);
  return finish(out, y, rc);
}
