/* nn/ops_elementwise.c: front-ends and backward rules of the elementwise ops.
 * Binary ops: out = a (op) b with numpy broadcasting; the backward of a broadcast operand sums
 * the incoming gradient back to that operand's shape (nn_sum_to_shape). */
#include "ops_elementwise.h"
#include "autograd.h"
#include "ops_core.h"

static const char *bin_names[NN_BIN_COUNT] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};

static int check_float_pair(const char *op, const nn_tensor *a, const nn_tensor *b) {
  if (a->dtype != b->dtype || a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: operands must be float32 or float64 of one dtype, got %s and %s",
                     op, nn_dtype_name(a->dtype), nn_dtype_name(b->dtype));
  if (a->storage->device.type != b->storage->device.type)
    return nn_seterr(NN_ERR_DEVICE, "%s: operands on different devices (%s and %s)", op,
                     nn_device_name(a->storage->device.type), nn_device_name(b->storage->device.type));
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

static int binary_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *a = n->in[0], *b = n->in[1];
  int code = (int)n->p.i[0], rc = NN_OK;
  nn_tensor *g = NULL, *t = NULL;
  if (n->needs_grad[0]) {
    switch (code) {
    case NN_BIN_ADD:
    case NN_BIN_SUB: g = nn_tensor_retain(dout); break;
    case NN_BIN_MUL: rc = binary_raw(&g, dout, b, NN_BIN_MUL); break;
    case NN_BIN_DIV: rc = binary_raw(&g, dout, b, NN_BIN_DIV); break;
    }
    if (!rc) rc = reduce_to(&din[0], g, a);
    if (rc) return rc;
  }
  if (n->needs_grad[1]) {
    g = NULL;
    switch (code) {
    case NN_BIN_ADD: g = nn_tensor_retain(dout); break;
    case NN_BIN_SUB: rc = scalar_raw(&g, dout, -1.0, NN_BIN_MUL, false); break;
    case NN_BIN_MUL: rc = binary_raw(&g, dout, a, NN_BIN_MUL); break;
    case NN_BIN_DIV: /* d(a/b)/db = -a / b^2 = -(a/b)/b */
      rc = binary_raw(&t, a, b, NN_BIN_DIV);
      if (!rc) rc = binary_raw(&g, t, b, NN_BIN_DIV);
      nn_tensor_free(t);
      t = g;
      g = NULL;
      if (!rc) rc = binary_raw(&g, dout, t, NN_BIN_MUL);
      nn_tensor_free(t);
      if (!rc) rc = nn_mul_scalar_(g, -1.0);
      break;
    }
    if (!rc) rc = reduce_to(&din[1], g, b);
    else nn_tensor_free(g);
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
