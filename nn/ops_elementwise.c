/* nn/ops_elementwise.c: front-ends and backward rules of the elementwise ops.
 * Binary ops: out = a (op) b with numpy broadcasting; the backward of a broadcast operand sums
 * the incoming gradient back to that operand's shape (nn_sum_to_shape). Unary ops and the
 * nonlinear binary ops (div, pow, maximum, minimum) take their gradient from one fused kernel
 * each (NN_OP_UNARY_BACKWARD, NN_OP_BINARY_BACKWARD): dout * f'(.) in one pass, no temporaries. */
#include "ops_elementwise.h"
#include "autograd.h"
#include "ops_core.h"

#include <math.h>

static const char *bin_names[NN_BIN_COUNT] = {"add", "sub",     "mul",    "div",
                                              "pow", "maximum", "minimum"};

static int check_float_pair(const char *op, const nn_tensor *a, const nn_tensor *b) {
  if (a->dtype != b->dtype || a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE,
                     "%s: operands must be float32 or float64 of one dtype, got %s and %s", op,
                     nn_dtype_name(a->dtype), nn_dtype_name(b->dtype));
  if (a->storage->device.type != b->storage->device.type)
    return nn_seterr(NN_ERR_DEVICE, "%s: operands on different devices (%s and %s)", op,
                     nn_device_name(a->storage->device.type),
                     nn_device_name(b->storage->device.type));
  return NN_OK;
}

/* out = a (code) b without autograd; a and b are broadcast to the common shape. */
static int binary_raw(nn_tensor **out, nn_tensor *a, nn_tensor *b, int code) {
  *out = NULL;
  const char *name = bin_names[code];
  int ndim, rc = check_float_pair(name, a, b);
  int64_t shape[NN_MAX_DIMS];
  if (!rc) rc = nn_broadcast_shape(name, a, b, &ndim, shape);
  if (rc) return rc;
  nn_tensor *o = NULL, *ea = NULL, *eb = NULL;
  rc = nn_tensor_empty(&o, ndim, shape, a->dtype, a->storage->device);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_expand(&ea, a, ndim, shape);
  if (!rc) rc = nn_expand(&eb, b, ndim, shape);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = code;
    nn_tensor *in[2] = {ea, eb};
    rc = nn_dispatch(NN_OP_BINARY, 1, &o, 2, in, &p);
  }
  nn_tensor_free(ea);
  nn_tensor_free(eb);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

static int scalar_raw(nn_tensor **out, nn_tensor *a, double s, int code, bool reverse) {
  *out = NULL;
  if (a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: int64 operand; convert to float first", bin_names[code]);
  nn_tensor *o = NULL;
  int rc = nn_tensor_empty_like(&o, a);
  if (rc) return rc;
  nn_op_params p = {0};
  p.i[0] = code;
  p.i[1] = reverse;
  p.f[0] = s;
  rc = nn_dispatch(NN_OP_SCALAR, 1, &o, 1, &a, &p);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

/* Gradient of one operand: g (already in out's shape) summed to the operand's shape. Takes g. */
static int reduce_to(nn_tensor **din, nn_tensor *g, const nn_tensor *like) {
  if (nn_tensor_same_shape(g, like)) {
    *din = g;
    return NN_OK;
  }
  int rc = nn_sum_to_shape(din, g, like->ndim, like->shape);
  nn_tensor_free(g);
  return rc;
}

/* din = dout * d(a code b)/d(operand which) from the fused kernel, in out's shape, then summed
 * to the operand's shape. */
static int binb(nn_tensor **din, nn_tensor *dout, nn_tensor *a, nn_tensor *b, int code, int which) {
  *din = NULL;
  nn_tensor *g = NULL, *ea = NULL, *eb = NULL;
  int rc = nn_tensor_empty_like(&g, dout);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_expand(&ea, a, dout->ndim, dout->shape);
  if (!rc) rc = nn_expand(&eb, b, dout->ndim, dout->shape);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = code;
    p.i[1] = which;
    nn_tensor *in[3] = {dout, ea, eb};
    rc = nn_dispatch(NN_OP_BINARY_BACKWARD, 1, &g, 3, in, &p);
  }
  nn_tensor_free(ea);
  nn_tensor_free(eb);
  if (rc) {
    nn_tensor_free(g);
    return rc;
  }
  return reduce_to(din, g, which ? b : a);
}

static int binary_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *a = n->in[0], *b = n->in[1];
  int code = (int)n->p.i[0], rc = NN_OK;
  nn_tensor *g = NULL;
  if (n->needs_grad[0]) {
    switch (code) {
    case NN_BIN_ADD:
    case NN_BIN_SUB:
      g = nn_tensor_retain(dout);
      break;
    case NN_BIN_MUL:
      rc = binary_raw(&g, dout, b, NN_BIN_MUL);
      break;
    case NN_BIN_DIV:
      rc = binary_raw(&g, dout, b, NN_BIN_DIV);
      break;
    default:
      rc = binb(&din[0], dout, a, b, code, 0);
      break;
    }
    if (!rc && g) rc = reduce_to(&din[0], g, a);
    if (rc) return rc;
  }
  if (n->needs_grad[1]) {
    g = NULL;
    switch (code) {
    case NN_BIN_ADD:
      g = nn_tensor_retain(dout);
      break;
    case NN_BIN_SUB:
      rc = scalar_raw(&g, dout, -1.0, NN_BIN_MUL, false);
      break;
    case NN_BIN_MUL:
      rc = binary_raw(&g, dout, a, NN_BIN_MUL);
      break;
    default:
      rc = binb(&din[1], dout, a, b, code, 1);
      break; /* div: -dout a / b^2 */
    }
    if (!rc && g) rc = reduce_to(&din[1], g, b);
  }
  return rc;
}

static int binary(nn_tensor **out, nn_tensor *a, nn_tensor *b, int code) {
  int rc = binary_raw(out, a, b, code);
  if (rc) return rc;
  nn_tensor *in[2] = {a, b};
  nn_node *n = NULL;
  rc = nn_record(*out, bin_names[code], binary_backward, 2, in, &n);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
    return rc;
  }
  if (n) n->p.i[0] = code;
  return NN_OK;
}

int nn_add(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return binary(out, a, b, NN_BIN_ADD); }
int nn_sub(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return binary(out, a, b, NN_BIN_SUB); }
int nn_mul(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return binary(out, a, b, NN_BIN_MUL); }
int nn_div(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return binary(out, a, b, NN_BIN_DIV); }
int nn_pow(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return binary(out, a, b, NN_BIN_POW); }
int nn_maximum(nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  return binary(out, a, b, NN_BIN_MAX);
}
int nn_minimum(nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  return binary(out, a, b, NN_BIN_MIN);
}

/* scalar ops: p.i[0] code, p.i[1] reverse, p.f[0] s */
static int scalar_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  int code = (int)n->p.i[0];
  bool rev = n->p.i[1];
  double s = n->p.f[0];
  if (code == NN_BIN_ADD) return nn_clone(din, dout);
  if (code == NN_BIN_SUB) return scalar_raw(din, dout, rev ? -1.0 : 1.0, NN_BIN_MUL, false);
  if (code == NN_BIN_MUL) return scalar_raw(din, dout, s, NN_BIN_MUL, false);
  if (code == NN_BIN_DIV && !rev) return scalar_raw(din, dout, 1.0 / s, NN_BIN_MUL, false);
  /* s / a: d/da = -s / a^2 = -(out) / a, with out = s / a saved as saved[0] */
  nn_tensor *t = NULL;
  int rc = binary_raw(&t, n->saved[0], n->in[0], NN_BIN_DIV);
  if (!rc) rc = binary_raw(din, dout, t, NN_BIN_MUL);
  nn_tensor_free(t);
  if (!rc) rc = nn_mul_scalar_(*din, -1.0);
  return rc;
}

static int scalar(nn_tensor **out, nn_tensor *a, double s, int code, bool rev) {
  int rc = scalar_raw(out, a, s, code, rev);
  if (rc) return rc;
  nn_node *n = NULL;
  rc = nn_record(*out, bin_names[code], scalar_backward, 1, &a, &n);
  if (!rc && n) {
    n->p.i[0] = code;
    n->p.i[1] = rev;
    n->p.f[0] = s;
    if (code == NN_BIN_DIV && rev && !(n->saved[0] = nn_alias(*out)))
      rc = nn_seterr(NN_ERR_NOMEM, "rdiv: out of memory");
  }
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

int nn_add_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return scalar(out, a, s, NN_BIN_ADD, false);
}
int nn_mul_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return scalar(out, a, s, NN_BIN_MUL, false);
}
int nn_rsub_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return scalar(out, a, s, NN_BIN_SUB, true);
}
int nn_rdiv_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return scalar(out, a, s, NN_BIN_DIV, true);
}

/* ---- in place ---- */

int nn_add_(nn_tensor *t, const nn_tensor *x) { return nn_axpy_(t, 1.0, x); }

int nn_axpy_(nn_tensor *t, double alpha, const nn_tensor *x) {
  int rc = check_float_pair("axpy_", t, x);
  if (rc) return rc;
  nn_tensor *ex = NULL;
  bool prev = nn_set_grad_enabled(false);
  rc = nn_expand(&ex, (nn_tensor *)x, t->ndim, t->shape);
  nn_set_grad_enabled(prev);
  if (rc) {
    char b1[128], b2[128];
    return nn_seterr(NN_ERR_SHAPE, "add_: shape %s does not broadcast to %s",
                     nn_shape_str(x, b1, sizeof b1), nn_shape_str(t, b2, sizeof b2));
  }
  nn_op_params p = {0};
  p.i[0] = NN_BIN_ADD;
  p.i[2] = 1; /* axpy: out = in0 + f[0] * in1 */
  p.f[0] = alpha;
  nn_tensor *in[2] = {t, ex};
  rc = nn_dispatch(NN_OP_BINARY, 1, &t, 2, in, &p);
  nn_tensor_free(ex);
  return rc;
}

int nn_mul_scalar_(nn_tensor *t, double s) {
  nn_op_params p = {0};
  p.i[0] = NN_BIN_MUL;
  p.f[0] = s;
  return nn_dispatch(NN_OP_SCALAR, 1, &t, 1, &t, &p);
}

int nn_mul_(nn_tensor *t, const nn_tensor *x) {
  int rc = check_float_pair("mul_", t, x);
  if (rc) return rc;
  nn_tensor *ex = NULL;
  bool prev = nn_set_grad_enabled(false);
  rc = nn_expand(&ex, (nn_tensor *)x, t->ndim, t->shape);
  nn_set_grad_enabled(prev);
  if (rc) {
    char b1[128], b2[128];
    return nn_seterr(NN_ERR_SHAPE, "mul_: shape %s does not broadcast to %s",
                     nn_shape_str(x, b1, sizeof b1), nn_shape_str(t, b2, sizeof b2));
  }
  nn_op_params p = {0};
  p.f[0] = 1.0;
  nn_tensor *in[2] = {t, ex};
  rc = nn_dispatch(NN_OP_MUL_SCALED, 1, &t, 2, in, &p);
  nn_tensor_free(ex);
  return rc;
}

/* ---------------------------------------------------------------- unary ops */

static const struct {
  const char *name;
  bool from_out; /* backward reads the output y (saved alias) rather than the input x */
} un_info[NN_UN_COUNT] = {
    [NN_UN_NEG] = {"neg", false},           [NN_UN_EXP] = {"exp", true},
    [NN_UN_LOG] = {"log", false},           [NN_UN_SQRT] = {"sqrt", true},
    [NN_UN_RSQRT] = {"rsqrt", true},        [NN_UN_ABS] = {"abs", false},
    [NN_UN_POW] = {"pow", false},           [NN_UN_CLAMP] = {"clamp", false},
    [NN_UN_RELU] = {"relu", true},          [NN_UN_LEAKY_RELU] = {"leaky_relu", false},
    [NN_UN_TANH] = {"tanh", true},          [NN_UN_SIGMOID] = {"sigmoid", true},
    [NN_UN_GELU] = {"gelu", false},         [NN_UN_GELU_TANH] = {"gelu", false},
    [NN_UN_SOFTPLUS] = {"softplus", false},
};

static int unary_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  int code = (int)n->p.i[0];
  nn_tensor *x = n->in[0], *v = un_info[code].from_out ? n->saved[0] : x;
  int rc = nn_tensor_empty(din, x->ndim, x->shape, x->dtype, x->storage->device);
  if (rc) return rc;
  nn_tensor *in[2] = {dout, v};
  rc = nn_dispatch(NN_OP_UNARY_BACKWARD, 1, din, 2, in, &n->p);
  if (rc) {
    nn_tensor_free(*din);
    *din = NULL;
  }
  return rc;
}

/* out = f(a) for NN_UN_* code with parameters f0, f1; records the node. */
static int unary(nn_tensor **out, nn_tensor *a, int code, double f0, double f1) {
  *out = NULL;
  const char *name = un_info[code].name;
  if (a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: int64 input; convert to float first", name);
  nn_tensor *o = NULL;
  int rc = nn_tensor_empty_like(&o, a);
  if (rc) return rc;
  nn_op_params p = {0};
  p.i[0] = code;
  p.f[0] = f0;
  p.f[1] = f1;
  rc = nn_dispatch(NN_OP_UNARY, 1, &o, 1, &a, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(o, name, unary_backward, 1, &a, &n);
  if (!rc && n) {
    n->p = p;
    if (un_info[code].from_out && !(n->saved[0] = nn_alias(o)))
      rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory", name);
  }
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

int nn_neg(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_NEG, 0, 0); }
int nn_exp(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_EXP, 0, 0); }
int nn_log(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_LOG, 0, 0); }
int nn_sqrt(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_SQRT, 0, 0); }
int nn_rsqrt(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_RSQRT, 0, 0); }
int nn_abs(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_ABS, 0, 0); }
int nn_relu(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_RELU, 0, 0); }
int nn_tanh(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_TANH, 0, 0); }
int nn_sigmoid(nn_tensor **out, nn_tensor *a) { return unary(out, a, NN_UN_SIGMOID, 0, 0); }

int nn_pow_scalar(nn_tensor **out, nn_tensor *a, double p) {
  return unary(out, a, NN_UN_POW, p, 0);
}

int nn_clamp(nn_tensor **out, nn_tensor *a, double lo, double hi) {
  *out = NULL;
  if (isnan(lo) || isnan(hi))
    return nn_seterr(NN_ERR_ARG,
                     "clamp: bounds must not be NaN (lo %g, hi %g); use -INFINITY or "
                     "INFINITY for a one-sided clamp",
                     lo, hi);
  return unary(out, a, NN_UN_CLAMP, lo, hi);
}

int nn_leaky_relu(nn_tensor **out, nn_tensor *a, double slope) {
  return unary(out, a, NN_UN_LEAKY_RELU, slope, 0);
}

int nn_gelu(nn_tensor **out, nn_tensor *a, bool tanh_approx) {
  return unary(out, a, tanh_approx ? NN_UN_GELU_TANH : NN_UN_GELU, 0, 0);
}

int nn_softplus(nn_tensor **out, nn_tensor *a, double beta, double threshold) {
  *out = NULL;
  if (beta == 0 || isnan(beta) || isnan(threshold))
    return nn_seterr(NN_ERR_ARG,
                     "softplus: beta must be nonzero and beta, threshold not NaN "
                     "(got beta %g, threshold %g)",
                     beta, threshold);
  return unary(out, a, NN_UN_SOFTPLUS, beta, threshold);
}

/* ---------------------------------------------------------------- comparisons */

static const char *cmp_names[NN_CMP_COUNT] = {"eq", "ne", "gt", "ge", "lt", "le"};

/* out (0/1) = a cmp b, or a cmp s when b is NULL. Not recorded. */
static int compare(nn_tensor **out, nn_tensor *a, nn_tensor *b, double s, int code) {
  *out = NULL;
  const char *name = cmp_names[code];
  int ndim = a->ndim, rc = NN_OK;
  int64_t shape[NN_MAX_DIMS];
  for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
  if (b) {
    if (a->dtype != b->dtype)
      return nn_seterr(NN_ERR_DTYPE, "%s: operands must share a dtype, got %s and %s", name,
                       nn_dtype_name(a->dtype), nn_dtype_name(b->dtype));
    if (a->storage->device.type != b->storage->device.type)
      return nn_seterr(NN_ERR_DEVICE, "%s: operands on different devices (%s and %s)", name,
                       nn_device_name(a->storage->device.type),
                       nn_device_name(b->storage->device.type));
    rc = nn_broadcast_shape(name, a, b, &ndim, shape);
    if (rc) return rc;
  }
  nn_dtype odt = a->dtype == NN_DTYPE_I64 ? NN_DTYPE_F32 : a->dtype;
  nn_tensor *o = NULL, *ea = NULL, *eb = NULL;
  rc = nn_tensor_empty(&o, ndim, shape, odt, a->storage->device);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_expand(&ea, a, ndim, shape);
  if (!rc && b) rc = nn_expand(&eb, b, ndim, shape);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = code;
    p.i[1] = b == NULL;
    p.f[0] = s;
    nn_tensor *in[2] = {ea, eb};
    rc = nn_dispatch(NN_OP_COMPARE, 1, &o, b ? 2 : 1, in, &p);
  }
  nn_tensor_free(ea);
  nn_tensor_free(eb);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

int nn_eq(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_EQ); }
int nn_ne(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_NE); }
int nn_gt(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_GT); }
int nn_ge(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_GE); }
int nn_lt(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_LT); }
int nn_le(nn_tensor **out, nn_tensor *a, nn_tensor *b) { return compare(out, a, b, 0, NN_CMP_LE); }
int nn_eq_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_EQ);
}
int nn_ne_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_NE);
}
int nn_gt_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_GT);
}
int nn_ge_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_GE);
}
int nn_lt_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_LT);
}
int nn_le_scalar(nn_tensor **out, nn_tensor *a, double s) {
  return compare(out, a, NULL, s, NN_CMP_LE);
}

/* ---------------------------------------------------------------- where, masked_fill, dropout */

/* mask expanded to a's shape, or NN_ERR_SHAPE naming op. */
static int expand_mask(nn_tensor **out, const char *op, nn_tensor *mask, const nn_tensor *a) {
  bool prev = nn_set_grad_enabled(false);
  int rc = nn_expand(out, mask, a->ndim, a->shape);
  nn_set_grad_enabled(prev);
  if (rc) {
    char b1[128], b2[128];
    return nn_seterr(NN_ERR_SHAPE,
                     "%s: mask of shape %s does not broadcast to the input's shape %s", op,
                     nn_shape_str(mask, b1, sizeof b1), nn_shape_str(a, b2, sizeof b2));
  }
  return NN_OK;
}

/* out = (mask != 0) != invert ? v : a, mask broadcast to a; not recorded. */
static int masked_fill_raw(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double v, bool invert,
                           const char *op) {
  *out = NULL;
  nn_tensor *o = NULL, *em = NULL;
  int rc = expand_mask(&em, op, mask, a);
  if (!rc) rc = nn_tensor_empty_like(&o, a);
  if (!rc) {
    nn_op_params p = {0};
    p.i[1] = invert;
    p.f[0] = v;
    nn_tensor *in[2] = {a, em};
    rc = nn_dispatch(NN_OP_MASKED_FILL, 1, &o, 2, in, &p);
  }
  nn_tensor_free(em);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

/* saved[0]: the condition (alias, no graph). */
static int where_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  int rc = NN_OK;
  for (int k = 0; k < 2 && !rc; k++) {
    if (!n->needs_grad[k]) continue;
    nn_tensor *g = NULL; /* dout where cond (k = 0) or where !cond (k = 1), 0 elsewhere */
    rc = masked_fill_raw(&g, dout, n->saved[0], 0.0, k == 0, "where");
    if (!rc) rc = reduce_to(&din[k], g, n->in[k]);
  }
  return rc;
}

int nn_where(nn_tensor **out, nn_tensor *cond, nn_tensor *a, nn_tensor *b) {
  *out = NULL;
  int rc = check_float_pair("where", a, b);
  if (rc) return rc;
  if (cond->storage->device.type != a->storage->device.type)
    return nn_seterr(NN_ERR_DEVICE, "where: cond on %s, operands on %s",
                     nn_device_name(cond->storage->device.type),
                     nn_device_name(a->storage->device.type));
  /* broadcast all three shapes together */
  const nn_tensor *ts[3] = {cond, a, b};
  int ndim = 0;
  int64_t shape[NN_MAX_DIMS];
  for (int k = 0; k < 3; k++)
    if (ts[k]->ndim > ndim) ndim = ts[k]->ndim;
  for (int d = 0; d < ndim; d++) {
    shape[d] = 1;
    for (int k = 0; k < 3; k++) {
      int dk = ts[k]->ndim - ndim + d;
      int64_t sk = dk >= 0 ? ts[k]->shape[dk] : 1;
      if (sk == 1) continue;
      if (shape[d] != 1 && shape[d] != sk) {
        char b1[128], b2[128], b3[128];
        return nn_seterr(NN_ERR_SHAPE, "where: shapes cond %s, a %s, b %s cannot be broadcast",
                         nn_shape_str(cond, b1, sizeof b1), nn_shape_str(a, b2, sizeof b2),
                         nn_shape_str(b, b3, sizeof b3));
      }
      shape[d] = sk;
    }
  }
  nn_tensor *o = NULL, *e[3] = {NULL, NULL, NULL};
  rc = nn_tensor_empty(&o, ndim, shape, a->dtype, a->storage->device);
  bool prev = nn_set_grad_enabled(false);
  for (int k = 0; k < 3 && !rc; k++) rc = nn_expand(&e[k], (nn_tensor *)ts[k], ndim, shape);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    rc = nn_dispatch(NN_OP_WHERE, 1, &o, 3, e, &p);
  }
  for (int k = 0; k < 3; k++) nn_tensor_free(e[k]);
  nn_node *n = NULL;
  nn_tensor *in[2] = {a, b};
  if (!rc) rc = nn_record(o, "where", where_backward, 2, in, &n);
  if (!rc && n && !(n->saved[0] = nn_alias(cond)))
    rc = nn_seterr(NN_ERR_NOMEM, "where: out of memory");
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

/* saved[0]: the mask (alias). dout is zeroed where the forward filled. */
static int masked_fill_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  return masked_fill_raw(din, dout, n->saved[0], 0.0, false, "masked_fill");
}

int nn_masked_fill(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double v) {
  *out = NULL;
  if (a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "masked_fill: int64 input; convert to float first");
  if (mask->storage->device.type != a->storage->device.type)
    return nn_seterr(NN_ERR_DEVICE, "masked_fill: mask on %s, input on %s",
                     nn_device_name(mask->storage->device.type),
                     nn_device_name(a->storage->device.type));
  nn_tensor *o = NULL;
  int rc = masked_fill_raw(&o, a, mask, v, false, "masked_fill");
  if (rc) return rc;
  nn_node *n = NULL;
  rc = nn_record(o, "masked_fill", masked_fill_backward, 1, &a, &n);
  if (!rc && n && !(n->saved[0] = nn_alias(mask)))
    rc = nn_seterr(NN_ERR_NOMEM, "masked_fill: out of memory");
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

/* out = a * mask * scale, mask broadcast to a; not recorded. */
static int mul_scaled_raw(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double scale) {
  *out = NULL;
  nn_tensor *o = NULL, *em = NULL;
  int rc = expand_mask(&em, "dropout_mask", mask, a);
  if (!rc) rc = nn_tensor_empty_like(&o, a);
  if (!rc) {
    nn_op_params p = {0};
    p.f[0] = scale;
    nn_tensor *in[2] = {a, em};
    rc = nn_dispatch(NN_OP_MUL_SCALED, 1, &o, 2, in, &p);
  }
  nn_tensor_free(em);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

/* saved[0]: the mask (alias); p.f[0]: scale. */
static int dropout_mask_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  return mul_scaled_raw(din, dout, n->saved[0], n->p.f[0]);
}

int nn_dropout_mask(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double scale) {
  *out = NULL;
  int rc = check_float_pair("dropout_mask", a, mask);
  if (rc) return rc;
  nn_tensor *o = NULL;
  rc = mul_scaled_raw(&o, a, mask, scale);
  if (rc) return rc;
  nn_node *n = NULL;
  rc = nn_record(o, "dropout_mask", dropout_mask_backward, 1, &a, &n);
  if (!rc && n) {
    n->p.f[0] = scale;
    if (!(n->saved[0] = nn_alias(mask)))
      rc = nn_seterr(NN_ERR_NOMEM, "dropout_mask: out of memory");
  }
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}
