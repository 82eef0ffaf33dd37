/* nn/ops_core.c: matrix products and sum reductions (front-ends and backward rules).
 * Shapes: B batch, M rows, K inner, N columns; I/O input/output features of Linear. */
#include "ops_core.h"
#include "autograd.h"
#include "ops_elementwise.h"

#include <string.h>

/* ---------------------------------------------------------------- sums */

static int sum_keepdim_raw(nn_tensor **out, nn_tensor *t, unsigned mask) {
  int64_t sh[NN_MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) sh[d] = (mask >> d) & 1 ? 1 : t->shape[d];
  int rc = nn_tensor_empty(out, t->ndim, sh, t->dtype, t->storage->device);
  if (rc) return rc;
  nn_op_params p = {0};
  rc = nn_dispatch(NN_OP_SUM, 1, out, 1, &t, &p);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

static int sum_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *in = n->in[0], *k = NULL, *e = NULL;
  /* dout has the reduced shape; view it with the keepdim shape, then broadcast back. */
  int64_t sh[NN_MAX_DIMS];
  unsigned mask = (unsigned)n->p.i[0];
  for (int d = 0; d < in->ndim; d++) sh[d] = (mask >> d) & 1 ? 1 : in->shape[d];
  int rc = nn_reshape(&k, dout, in->ndim, sh);
  if (!rc) rc = nn_expand(&e, k, in->ndim, in->shape);
  if (!rc) rc = nn_contiguous(din, e);
  nn_tensor_free(k);
  nn_tensor_free(e);
  return rc;
}

/* Sum over mask, result reshaped to (ndim, shape). */
static int sum_impl(nn_tensor **out, nn_tensor *t, unsigned mask, int ndim, const int64_t *shape) {
  *out = NULL;
  if (t->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "sum: int64 input; convert to float first");
  nn_tensor *k = NULL;
  int rc = sum_keepdim_raw(&k, t, mask);
  if (rc) return rc;
  bool prev = nn_set_grad_enabled(false);
  rc = nn_view(out, k, ndim, shape);
  nn_set_grad_enabled(prev);
  nn_tensor_free(k);
  if (rc) return rc;
  nn_node *n = NULL;
  rc = nn_record(*out, "sum", sum_backward, 1, &t, &n);
  if (!rc && n) n->p.i[0] = mask;
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

int nn_sum_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim) {
  *out = NULL;
  int64_t sh[NN_MAX_DIMS];
  int k = 0;
  mask &= t->ndim ? (1u << t->ndim) - 1 : 0;
  for (int d = 0; d < t->ndim; d++) {
    if (!((mask >> d) & 1))
      sh[k++] = t->shape[d];
    else if (keepdim)
      sh[k++] = 1;
  }
  return sum_impl(out, t, mask, k, sh);
}

int nn_sum_to_shape(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape) {
  *out = NULL;
  char b[128];
  int lead = t->ndim - ndim;
  unsigned mask = 0;
  if (lead < 0) goto bad;
  for (int d = 0; d < t->ndim; d++) {
    if (d < lead)
      mask |= 1u << d;
    else if (shape[d - lead] == 1 && t->shape[d] != 1)
      mask |= 1u << d;
    else if (shape[d - lead] != t->shape[d])
      goto bad;
  }
  if (!mask) return nn_reshape(out, t, ndim, shape);
  return sum_impl(out, t, mask, ndim, shape);
bad:
  return nn_seterr(NN_ERR_SHAPE, "sum_to_shape: %s does not reduce to a %d-dim shape",
                   nn_shape_str(t, b, sizeof b), ndim);
}

/* ---------------------------------------------------------------- matmul */

/* Views t (..., R, C) as a 3-D (B, R, C) tensor when its batch dims collapse to one stride;
 * otherwise as a contiguous copy. */
static int as_batched(nn_tensor **out, nn_tensor *t) {
  int nb = t->ndim - 2;
  int64_t B = 1;
  for (int d = 0; d < nb; d++) B *= t->shape[d];
  int64_t bstride = 0;
  bool ok = true;
  /* find one stride that walks all batch dims in row-major order (ignoring size-1 dims) */
  int64_t expect = -1;
  for (int d = nb - 1; d >= 0; d--) {
    if (t->shape[d] == 1) continue;
    if (expect < 0) {
      bstride = t->stride[d];
      expect = t->stride[d] * t->shape[d];
    } else if (t->stride[d] == expect) {
      expect *= t->shape[d];
    } else if (bstride == 0 && t->stride[d] == 0) {
      /* all zero strides collapse */
    } else {
      ok = false;
    }
  }
  nn_tensor *src = t, *c = NULL;
  if (!ok) {
    int rc = nn_tensor_empty(&c, t->ndim, t->shape, t->dtype, t->storage->device);
    if (!rc) rc = nn_copy_(c, t);
    if (rc) {
      nn_tensor_free(c);
      return rc;
    }
    src = c;
    bstride = t->shape[nb] * t->shape[nb + 1];
  }
  nn_tensor *v = nn_alias(src);
  if (!v) {
    nn_tensor_free(c);
    return nn_seterr(NN_ERR_NOMEM, "matmul: out of memory");
  }
  v->ndim = 3;
  v->shape[0] = B;
  v->stride[0] = bstride;
  v->shape[1] = src->shape[nb];
  v->stride[1] = src->stride[nb];
  v->shape[2] = src->shape[nb + 1];
  v->stride[2] = src->stride[nb + 1];
  nn_tensor_free(c); /* v keeps the storage; src (== c) is read above */
  *out = v;
  return NN_OK;
}

/* out (..., M, N) = a (..., M, K) @ b (..., K, N), batch dims broadcast; no autograd. */
static int matmul_raw(nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  *out = NULL;
  char b1[128], b2[128];
  int na = a->ndim - 2, nbd = b->ndim - 2, nb = na > nbd ? na : nbd;
  int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
  if (b->shape[b->ndim - 2] != K)
    return nn_seterr(NN_ERR_SHAPE, "matmul: shapes %s and %s: inner dims differ (%lld vs %lld)",
                     nn_shape_str(a, b1, sizeof b1), nn_shape_str(b, b2, sizeof b2), (long long)K,
                     (long long)b->shape[b->ndim - 2]);
  int64_t osh[NN_MAX_DIMS], ash[NN_MAX_DIMS], bsh[NN_MAX_DIMS];
  for (int d = 0; d < nb; d++) {
    int da = d - (nb - na), db = d - (nb - nbd);
    int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1)
      return nn_seterr(NN_ERR_SHAPE, "matmul: batch dims of %s and %s cannot be broadcast",
                       nn_shape_str(a, b1, sizeof b1), nn_shape_str(b, b2, sizeof b2));
    osh[d] = ash[d] = bsh[d] = sa == 1 ? sb : sa;
  }
  osh[nb] = ash[nb] = M;
  osh[nb + 1] = N;
  ash[nb + 1] = K;
  bsh[nb] = K;
  bsh[nb + 1] = N;
  nn_tensor *o = NULL, *ea = NULL, *eb = NULL, *a3 = NULL, *b3 = NULL, *o3 = NULL;
  int rc = nn_tensor_empty(&o, nb + 2, osh, a->dtype, a->storage->device);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_expand(&ea, a, nb + 2, ash);
  if (!rc) rc = nn_expand(&eb, b, nb + 2, bsh);
  if (!rc) rc = as_batched(&a3, ea);
  if (!rc) rc = as_batched(&b3, eb);
  if (!rc) rc = as_batched(&o3, o);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    nn_tensor *in[2] = {a3, b3};
    rc = nn_dispatch(NN_OP_MATMUL, 1, &o3, 2, in, &p);
  }
  nn_tensor_free(ea);
  nn_tensor_free(eb);
  nn_tensor_free(a3);
  nn_tensor_free(b3);
  nn_tensor_free(o3);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

static int mT(nn_tensor **out, nn_tensor *t) { return nn_transpose(out, t, -1, -2); }

static int matmul_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *a = n->in[0], *b = n->in[1], *t = NULL, *g = NULL;
  int rc = NN_OK;
  if (n->needs_grad[0]) { /* dA = dOut @ B^T */
    rc = mT(&t, b);
    if (!rc) rc = matmul_raw(&g, dout, t);
    nn_tensor_free(t);
    t = NULL;
    if (!rc) rc = nn_sum_to_shape(&din[0], g, a->ndim, a->shape);
    nn_tensor_free(g);
    g = NULL;
  }
  if (!rc && n->needs_grad[1]) { /* dB = A^T @ dOut */
    rc = mT(&t, a);
    if (!rc) rc = matmul_raw(&g, t, dout);
    nn_tensor_free(t);
    if (!rc) rc = nn_sum_to_shape(&din[1], g, b->ndim, b->shape);
    nn_tensor_free(g);
  }
  return rc;
}

int nn_matmul(nn_tensor **out, nn_tensor *a, nn_tensor *b) {
  *out = NULL;
  char b1[128], b2[128];
  if (a->dtype != b->dtype || a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE,
                     "matmul: operands must be float32 or float64 of one dtype, got %s and %s",
                     nn_dtype_name(a->dtype), nn_dtype_name(b->dtype));
  if (a->ndim == 0 || b->ndim == 0)
    return nn_seterr(NN_ERR_SHAPE, "matmul: 0-dim operand (shapes %s and %s)",
                     nn_shape_str(a, b1, sizeof b1), nn_shape_str(b, b2, sizeof b2));
  int rc;
  if (a->ndim == 1 || b->ndim == 1) { /* promote 1-D operands, then squeeze the added dims */
    nn_tensor *a2 = NULL, *b2t = NULL, *o = NULL, *o1 = NULL;
    rc = a->ndim == 1 ? nn_unsqueeze(&a2, a, 0) : (a2 = nn_tensor_retain(a), NN_OK);
    if (!rc) rc = b->ndim == 1 ? nn_unsqueeze(&b2t, b, -1) : (b2t = nn_tensor_retain(b), NN_OK);
    if (!rc) rc = nn_matmul(&o, a2, b2t);
    if (!rc && b->ndim == 1) {
      rc = nn_squeeze(&o1, o, -1);
      nn_tensor_free(o);
      o = o1;
      o1 = NULL;
    }
    if (!rc && a->ndim == 1) {
      rc = nn_squeeze(&o1, o, -1 - (b->ndim == 1 ? 0 : 1));
      nn_tensor_free(o);
      o = o1;
    }
    nn_tensor_free(a2);
    nn_tensor_free(b2t);
    if (rc) {
      nn_tensor_free(o);
      return rc;
    }
    *out = o;
    return NN_OK;
  }
  rc = matmul_raw(out, a, b);
  if (rc) return rc;
  nn_tensor *in[2] = {a, b};
  rc = nn_record(*out, "matmul", matmul_backward, 2, in, NULL);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

/* ---------------------------------------------------------------- linear */

/* dx = dout (N, O) @ w (O, I) and dw = dout^T (O, N) @ x (N, I) as one MATMUL_PAIR, where the
 * backend has it (the CPU runs the two products side by side on the threads). */
static int linear_grads_pair(nn_tensor **dx, nn_tensor **dw, nn_tensor *dout, nn_tensor *w,
                             nn_tensor *x) {
  nn_tensor *t = NULL, *v[6] = {0}, *o[2] = {0};
  int64_t N = dout->shape[0], O = dout->shape[1], I = w->shape[1];
  nn_device dev = dout->storage->device;
  int rc = nn_tensor_empty(&o[0], 2, (int64_t[]){N, I}, dout->dtype, dev);
  if (!rc) rc = nn_tensor_empty(&o[1], 2, (int64_t[]){O, I}, dout->dtype, dev);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = mT(&t, dout);
  nn_tensor *src[6] = {o[0], o[1], dout, w, t, x};
  for (int i = 0; i < 6 && !rc; i++) rc = nn_unsqueeze(&v[i], src[i], 0);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    rc = nn_dispatch(NN_OP_MATMUL_PAIR, 2, v, 4, v + 2, &p);
  }
  nn_tensor_free(t);
  for (int i = 0; i < 6; i++) nn_tensor_free(v[i]);
  if (rc) {
    nn_tensor_free(o[0]);
    nn_tensor_free(o[1]);
    return rc;
  }
  *dx = o[0];
  *dw = o[1];
  return NN_OK;
}

/* x (N, I), w (O, I), bias (O) -> (N, O); fused: out = bias broadcast, then out += x @ w^T. */
static int linear_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1];
  int rc = NN_OK;
  const nn_backend_i *be = nn_backend_get(dout->storage->device.type);
  bool pair = n->needs_grad[0] && n->needs_grad[1] && be && be->kernels[NN_OP_MATMUL_PAIR] &&
              dout->dtype == w->dtype && x->dtype == w->dtype;
  if (pair)
    rc = linear_grads_pair(&din[0], &din[1], dout, w, x);
  else {
    if (n->needs_grad[0]) rc = matmul_raw(&din[0], dout, w); /* (N, O) @ (O, I) */
    if (!rc && n->needs_grad[1]) {                           /* (O, N) @ (N, I) */
      nn_tensor *t = NULL;
      rc = mT(&t, dout);
      if (!rc) rc = matmul_raw(&din[1], t, x);
      nn_tensor_free(t);
    }
  }
  if (!rc && n->n_in > 2 && n->needs_grad[2]) rc = nn_sum_dims(&din[2], dout, 1u, false);
  return rc;
}

int nn_linear(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias) {
  *out = NULL;
  char b1[128], b2[128];
  if (x->ndim != 2) { /* (..., I): flatten the leading dims */
    if (x->ndim < 1) return nn_seterr(NN_ERR_SHAPE, "linear: 0-dim input");
    nn_tensor *x2 = NULL, *o = NULL;
    int rc = nn_reshape(&x2, x, 2, (int64_t[]){-1, x->shape[x->ndim - 1]});
    if (!rc) rc = nn_linear(&o, x2, w, bias);
    nn_tensor_free(x2);
    if (rc) return rc;
    int64_t sh[NN_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[x->ndim - 1] = o->shape[1];
    rc = nn_reshape(out, o, x->ndim, sh);
    nn_tensor_free(o);
    return rc;
  }
  if (w->ndim != 2 || w->shape[1] != x->shape[1] ||
      (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])))
    return nn_seterr(NN_ERR_SHAPE,
                     "linear: input %s, weight %s%s: weight must be (out, %lld) and bias (out,)",
                     nn_shape_str(x, b1, sizeof b1), nn_shape_str(w, b2, sizeof b2),
                     bias ? " with bias" : "", (long long)x->shape[1]);
  if (x->dtype != w->dtype || x->dtype == NN_DTYPE_I64 || (bias && bias->dtype != x->dtype))
    return nn_seterr(NN_ERR_DTYPE, "linear: input %s and weight %s must share a float dtype",
                     nn_dtype_name(x->dtype), nn_dtype_name(w->dtype));
  int64_t N = x->shape[0], O = w->shape[0];
  nn_tensor *o = NULL, *wt = NULL, *x3 = NULL, *w3 = NULL, *o3 = NULL;
  int rc = nn_tensor_empty(&o, 2, (int64_t[]){N, O}, x->dtype, x->storage->device);
  if (!rc) rc = bias ? nn_copy_(o, bias) : NN_OK;
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_transpose(&wt, w, 0, 1);
  if (!rc) rc = nn_unsqueeze(&x3, x, 0);
  if (!rc) rc = nn_unsqueeze(&w3, wt, 0);
  if (!rc) rc = nn_unsqueeze(&o3, o, 0);
  nn_set_grad_enabled(prev);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = bias != NULL; /* accumulate onto the bias rows */
    nn_tensor *in[2] = {x3, w3};
    rc = nn_dispatch(NN_OP_MATMUL, 1, &o3, 2, in, &p);
  }
  nn_tensor_free(wt);
  nn_tensor_free(x3);
  nn_tensor_free(w3);
  nn_tensor_free(o3);
  if (!rc) {
    nn_tensor *in[3] = {x, w, bias};
    rc = nn_record(o, "linear", linear_backward, bias ? 3 : 2, in, NULL);
  }
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}
