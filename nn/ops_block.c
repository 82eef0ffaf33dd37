/* nn/ops_block.c: front-ends of the block-sparse products (ops_block.h): shape checks, autograd.
 * Shapes: N rows, I input features, O output features, G row groups, bs block size. */
#include "ops_block.h"
#include "autograd.h"

static int check_mask(const char *what, nn_tensor *m, int64_t feat, int64_t bs) {
  char b[128];
  if (!m) return NN_OK;
  if (m->dtype != NN_DTYPE_F32)
    return nn_seterr(NN_ERR_DTYPE, "block_linear: %s mask must be float32, got %s", what,
                     nn_dtype_name(m->dtype));
  if (bs <= 0 || feat % bs)
    return nn_seterr(NN_ERR_SHAPE, "block_linear: %s block size %lld does not divide %lld features",
                     what, (long long)bs, (long long)feat);
  if (m->ndim != 2 || m->shape[0] < 1 || m->shape[1] != feat / bs)
    return nn_seterr(NN_ERR_SHAPE, "block_linear: %s mask of shape %s, expected (groups, %lld)",
                     what, nn_shape_str(m, b, sizeof b), (long long)(feat / bs));
  return NN_OK;
}

/* a contiguous tensor of t (t retained when already contiguous), not recorded */
static int contig(nn_tensor **out, nn_tensor *t) {
  *out = NULL;
  if (!t) return NN_OK;
  bool prev = nn_set_grad_enabled(false);
  int rc = nn_contiguous(out, t);
  nn_set_grad_enabled(prev);
  return rc;
}

/* saved[0] kin, saved[1] kout (aliases or NULL); p as the forward kernel's. */
static int block_linear_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *w = n->in[1], *dc = NULL, *xc = NULL, *wc = NULL;
  nn_tensor *outs[3] = {NULL, NULL, NULL};
  int k = 0, flags = 0, rc = contig(&dc, dout);
  if (!rc) rc = contig(&xc, x);
  if (!rc) rc = contig(&wc, w);
  if (!rc && n->needs_grad[0]) {
    rc = nn_tensor_empty(&din[0], 2, x->shape, NN_DTYPE_F32, x->storage->device);
    outs[k++] = din[0];
    flags |= 1;
  }
  if (!rc && n->needs_grad[1]) {
    rc = nn_tensor_empty(&din[1], 2, w->shape, NN_DTYPE_F32, w->storage->device);
    outs[k++] = din[1];
    flags |= 2;
  }
  if (!rc && n->n_in > 2 && n->needs_grad[2]) {
    rc = nn_tensor_empty(&din[2], 1, &w->shape[0], NN_DTYPE_F32, w->storage->device);
    outs[k++] = din[2];
    flags |= 4;
  }
  if (!rc && k) {
    nn_op_params p = n->p;
    p.i[5] = flags;
    nn_tensor *in[5] = {dc, xc, wc, n->saved[0], n->saved[1]};
    rc = nn_dispatch(NN_OP_BLOCK_LINEAR_BACKWARD, k, outs, 5, in, &p);
  }
  nn_tensor_free(dc);
  nn_tensor_free(xc);
  nn_tensor_free(wc);
  return rc; /* the engine frees din[] on error */
}

int nn_block_linear(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias, nn_tensor *kin,
                    int64_t bsi, nn_tensor *kout, int64_t bso) {
  *out = NULL;
  char b1[128], b2[128];
  if (x->ndim != 2 || w->ndim != 2 || w->shape[1] != x->shape[1] ||
      (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])))
    return nn_seterr(NN_ERR_SHAPE,
                     "block_linear: input %s, weight %s%s: input must be (N, I), "
                     "weight (O, I) and bias (O)",
                     nn_shape_str(x, b1, sizeof b1), nn_shape_str(w, b2, sizeof b2),
                     bias ? " with bias" : "");
  if (x->dtype != NN_DTYPE_F32 || w->dtype != NN_DTYPE_F32 || (bias && bias->dtype != NN_DTYPE_F32))
    return nn_seterr(NN_ERR_DTYPE, "block_linear: input %s and weight %s must be float32",
                     nn_dtype_name(x->dtype), nn_dtype_name(w->dtype));
  int rc = check_mask("input", kin, x->shape[1], bsi);
  if (!rc) rc = check_mask("output", kout, w->shape[0], bso);
  if (rc) return rc;
  nn_tensor *xc = NULL, *wc = NULL, *bc = NULL, *ki = NULL, *ko = NULL, *o = NULL;
  rc = contig(&xc, x);
  if (!rc) rc = contig(&wc, w);
  if (!rc) rc = contig(&bc, bias);
  if (!rc) rc = contig(&ki, kin);
  if (!rc) rc = contig(&ko, kout);
  if (!rc)
    rc = nn_tensor_empty(&o, 2, (int64_t[]){x->shape[0], w->shape[0]}, NN_DTYPE_F32,
                         x->storage->device);
  nn_op_params p = {0};
  p.i[0] = kin ? bsi : 1;
  p.i[1] = kout ? bso : 1;
  p.i[2] = bias != NULL;
  p.i[3] = kin != NULL;
  p.i[4] = kout != NULL;
  if (!rc) {
    nn_tensor *in[5] = {xc, wc, bc, ki, ko};
    rc = nn_dispatch(NN_OP_BLOCK_LINEAR, 1, &o, 5, in, &p);
  }
  if (!rc) {
    nn_tensor *in[3] = {x, w, bias};
    nn_node *nd = NULL;
    rc = nn_record(o, "block_linear", block_linear_backward, bias ? 3 : 2, in, &nd);
    if (!rc && nd) {
      nd->p = p;
      nd->saved[0] = ki ? nn_alias(ki) : NULL;
      nd->saved[1] = ko ? nn_alias(ko) : NULL;
      if ((ki && !nd->saved[0]) || (ko && !nd->saved[1]))
        rc = nn_seterr(NN_ERR_NOMEM, "block_linear: out of memory");
    }
  }
  nn_tensor_free(xc);
  nn_tensor_free(wc);
  nn_tensor_free(bc);
  nn_tensor_free(ki);
  nn_tensor_free(ko);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

int nn_block_mask_expand(nn_tensor **out, nn_tensor *mask, int64_t n_rows, int64_t bs) {
  *out = NULL;
  char b[128];
  if (mask->dtype != NN_DTYPE_F32)
    return nn_seterr(NN_ERR_DTYPE, "block_mask_expand: mask must be float32, got %s",
                     nn_dtype_name(mask->dtype));
  if (mask->ndim != 2 || mask->shape[0] < 1 || n_rows < 0 || bs < 1)
    return nn_seterr(NN_ERR_SHAPE,
                     "block_mask_expand: mask of shape %s for %lld rows and block %lld: "
                     "expected a (groups, blocks) mask",
                     nn_shape_str(mask, b, sizeof b), (long long)n_rows, (long long)bs);
  nn_tensor *mc = NULL, *o = NULL;
  int rc = contig(&mc, mask);
  if (!rc)
    rc = nn_tensor_empty(&o, 2, (int64_t[]){n_rows, mask->shape[1] * bs}, NN_DTYPE_F32,
                         mask->storage->device);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = bs;
    rc = nn_dispatch(NN_OP_BLOCK_MASK_EXPAND, 1, &o, 1, &mc, &p);
  }
  nn_tensor_free(mc);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}
