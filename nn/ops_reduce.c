/* nn/ops_reduce.c: front-ends and backward rules of the reductions, softmax, losses, topk and
 * sort (see ops_reduce.h). Shapes: N rows (batch), C classes; "keepdim shape" is the input's shape
 * with the reduced dim of size 1: kernels always write that shape, and keepdim = false is a
 * view without the dim.
 *
 * Backward rules: max, min, topk and sort share select_backward (scatter dout to the saved
 * indices); softmax saves its output; cross-entropy saves only the row log-sum-exp (N,); var
 * saves the mean. sum and mean reuse nn_sum_dims (double accumulation) from ops_core.
 */
#include "ops_reduce.h"
#include "autograd.h"
#include "ops_core.h"
#include "ops_elementwise.h"

#include <string.h>

/* ---------------------------------------------------------------- helpers */

static int wrap(const char *op, const nn_tensor *t, int dim, int *d) {
  char b[128];
  *d = nn_wrap_dim(dim, t->ndim);
  if (*d < 0)
    return nn_seterr(NN_ERR_INDEX, "%s: dim %d out of range for shape %s", op, dim,
                     nn_shape_str(t, b, sizeof b));
  return NN_OK;
}

static int need_float(const char *op, const nn_tensor *t, const char *what) {
  if (t->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: %s is int64; convert it to float32 or float64 first", op,
                     what);
  return NN_OK;
}

/* Bits of mask at or above ndim name no dim. */
static int check_mask(const char *op, const nn_tensor *t, unsigned mask) {
  char b[128];
  unsigned all = t->ndim ? (unsigned)((1ull << t->ndim) - 1) : 0;
  if (mask & ~all)
    return nn_seterr(NN_ERR_INDEX, "%s: dim mask 0x%x names dims out of range for shape %s", op,
                     mask, nn_shape_str(t, b, sizeof b));
  return NN_OK;
}

/* New contiguous tensor shaped like t with dim d of size len. */
static int alloc_along(nn_tensor **out, const nn_tensor *t, int d, int64_t len, nn_dtype dt) {
  int64_t sh[NN_MAX_DIMS];
  memcpy(sh, t->shape, sizeof sh);
  sh[d] = len;
  return nn_tensor_empty(out, t->ndim, sh, dt, t->storage->device);
}

/* *out = k without dim d (a view, no autograd); takes k. */
static int drop_dim(nn_tensor **out, nn_tensor *k, int d) {
  bool prev = nn_set_grad_enabled(false);
  int rc = nn_squeeze(out, k, d);
  nn_set_grad_enabled(prev);
  nn_tensor_free(k);
  return rc;
}

/* t as a 1-element 1-D tensor (differentiable), for the ops on a 0-dim input. */
static int as_1d(nn_tensor **out, nn_tensor *t) { return nn_reshape(out, t, 1, (int64_t[]){1}); }

/* Replaces *x (one element) by a 0-dim reshape of it (differentiable). */
static int to_0dim(nn_tensor **x) {
  if (!*x || nn_tensor_numel(*x) != 1) return NN_OK;
  nn_tensor *s = NULL;
  int rc = nn_reshape(&s, *x, 0, NULL);
  nn_tensor_free(*x);
  *x = s;
  return rc;
}

/* ---------------------------------------------------------------- sum, mean */

int nn_sum(nn_tensor **out, nn_tensor *t, int dim, bool keepdim) {
  *out = NULL;
  int d, rc = wrap("sum", t, dim, &d);
  if (rc) return rc;
  return nn_sum_dims(out, t, t->ndim ? 1u << d : 0, keepdim);
}

int nn_sum_all(nn_tensor **out, nn_tensor *t) { return nn_sum_dims(out, t, ~0u, false); }

int nn_mean_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim) {
  *out = NULL;
  int rc = need_float("mean", t, "input");
  if (!rc) rc = check_mask("mean", t, mask);
  if (rc) return rc;
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++)
    if ((mask >> d) & 1) n *= t->shape[d];
  nn_tensor *s = NULL;
  rc = nn_sum_dims(&s, t, mask, keepdim);
  if (!rc) rc = nn_mul_scalar(out, s, 1.0 / (double)n); /* n = 0: 0 * inf = NaN */
  nn_tensor_free(s);
  return rc;
}

int nn_mean(nn_tensor **out, nn_tensor *t, int dim, bool keepdim) {
  *out = NULL;
  int d, rc = wrap("mean", t, dim, &d);
  if (rc) return rc;
  return nn_mean_dims(out, t, t->ndim ? 1u << d : 0, keepdim);
}

int nn_mean_all(nn_tensor **out, nn_tensor *t) {
  return nn_mean_dims(out, t, t->ndim ? (unsigned)((1ull << t->ndim) - 1) : 0, false);
}

/* ---------------------------------------------------------------- var */

/* dx = (x - mean) * dout * 2 / (n - correction); saved[0] = mean (keepdim). */
static int var_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *mean = n->saved[0], *g = NULL;
  int rc = nn_reshape(&g, dout, mean->ndim, mean->shape);
  if (!rc) rc = nn_tensor_empty_like(din, x);
  if (!rc) {
    nn_tensor *in[3] = {x, mean, g};
    rc = nn_dispatch(NN_OP_VAR_BACKWARD, 1, din, 3, in, &n->p);
  }
  nn_tensor_free(g);
  return rc;
}

/* Variance along one dim d of t (ndim >= 1). */
static int var_dim(nn_tensor **out, nn_tensor *t, int d, bool keepdim, int correction) {
  nn_tensor *v = NULL, *m = NULL, *o = NULL;
  int rc = alloc_along(&v, t, d, 1, t->dtype);
  if (!rc) rc = alloc_along(&m, t, d, 1, t->dtype);
  nn_op_params p = {0};
  p.i[0] = d;
  p.i[1] = correction;
  double div = (double)t->shape[d] - correction;
  p.f[0] = 2.0 / (div > 0 ? div : 0);
  if (!rc) {
    nn_tensor *o2[2] = {v, m};
    rc = nn_dispatch(NN_OP_VAR, 2, o2, 1, &t, &p);
  }
  if (!rc) rc = keepdim ? (o = nn_tensor_retain(v), NN_OK) : drop_dim(&o, nn_tensor_retain(v), d);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(o, "var", var_backward, 1, &t, &n);
  if (!rc && n) {
    n->p = p;
    if (!(n->saved[0] = nn_alias(m))) rc = nn_seterr(NN_ERR_NOMEM, "var: out of memory");
  }
  nn_tensor_free(v);
  nn_tensor_free(m);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

int nn_var_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim, int correction) {
  *out = NULL;
  int rc = need_float("var", t, "input");
  if (!rc) rc = check_mask("var", t, mask);
  if (!rc && correction < 0)
    rc = nn_seterr(NN_ERR_ARG, "var: correction %d is negative", correction);
  if (rc) return rc;
  int nred = __builtin_popcount(mask);
  if (nred == 1) return var_dim(out, t, __builtin_ctz(mask), keepdim, correction);
  /* several dims (or none): move the reduced dims last, flatten them into one, reduce that */
  int perm[NN_MAX_DIMS], np = 0;
  int64_t sh[NN_MAX_DIMS], R = 1;
  bool ident = true;
  for (int d = 0; d < t->ndim; d++)
    if (!((mask >> d) & 1)) sh[np] = t->shape[d], perm[np++] = d;
  int nkeep = np;
  for (int d = 0; d < t->ndim; d++)
    if ((mask >> d) & 1) R *= t->shape[d], perm[np++] = d;
  for (int d = 0; d < t->ndim; d++) ident &= perm[d] == d;
  sh[nkeep] = R;
  nn_tensor *pt = NULL, *flat = NULL, *v = NULL;
  rc = ident ? (pt = nn_tensor_retain(t), NN_OK) : nn_permute(&pt, t, perm);
  if (!rc) rc = nn_reshape(&flat, pt, nkeep + 1, sh);
  if (!rc) rc = var_dim(&v, flat, nkeep, false, correction);
  if (!rc && keepdim) {
    for (int d = 0; d < t->ndim; d++) sh[d] = (mask >> d) & 1 ? 1 : t->shape[d];
    rc = nn_reshape(out, v, t->ndim, sh);
  } else if (!rc) {
    *out = nn_tensor_retain(v);
  }
  nn_tensor_free(pt);
  nn_tensor_free(flat);
  nn_tensor_free(v);
  return rc;
}

int nn_var(nn_tensor **out, nn_tensor *t, int dim, bool keepdim, int correction) {
  *out = NULL;
  int d, rc = wrap("var", t, dim, &d);
  if (rc) return rc;
  return nn_var_dims(out, t, t->ndim ? 1u << d : 0, keepdim, correction);
}

/* ---------------------------------------------------------------- select (max, topk, sort) */

/* dx = 0, then dout scattered to the saved indices along p.i[0]. */
static int select_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *idx = n->saved[0], *g = NULL;
  int rc = nn_reshape(&g, dout, idx->ndim, idx->shape);
  if (!rc) rc = nn_tensor_empty_like(din, x);
  if (!rc) {
    nn_tensor *in[2] = {idx, g};
    rc = nn_dispatch(NN_OP_SELECT_BACKWARD, 1, din, 2, in, &n->p);
  }
  nn_tensor_free(g);
  return rc;
}

/* Attaches select_backward to v, an output of op picking idx (keepdim layout) along d of t. */
static int record_select(nn_tensor *v, nn_tensor *t, nn_tensor *idx, int d, const char *op) {
  nn_node *n = NULL;
  int rc = nn_record(v, op, select_backward, 1, &t, &n);
  if (!rc && n) {
    n->p.i[0] = d;
    if (!(n->saved[0] = nn_alias(idx))) rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory", op);
  }
  return rc;
}

static int maxmin(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool keepdim,
                  int is_min, const char *op) {
  char b[128];
  *values = NULL;
  if (indices) *indices = NULL;
  int d, rc = wrap(op, t, dim, &d);
  if (rc) return rc;
  if (t->ndim == 0) { /* reducing the one element of (1,) gives the 0-dim result */
    nn_tensor *t1 = NULL;
    rc = as_1d(&t1, t);
    if (!rc) rc = maxmin(values, indices, t1, 0, false, is_min, op);
    nn_tensor_free(t1);
    return rc;
  }
  if (t->shape[d] == 0)
    return nn_seterr(NN_ERR_SHAPE, "%s: cannot reduce dim %d of size 0 (shape %s)", op, dim,
                     nn_shape_str(t, b, sizeof b));
  nn_tensor *v = NULL, *ix = NULL, *vo = NULL, *io = NULL;
  rc = alloc_along(&v, t, d, 1, t->dtype);
  if (!rc) rc = alloc_along(&ix, t, d, 1, NN_DTYPE_I64);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = d;
    p.i[1] = is_min;
    nn_tensor *o[2] = {v, ix};
    rc = nn_dispatch(NN_OP_MAX, 2, o, 1, &t, &p);
  }
  if (!rc) rc = keepdim ? (vo = nn_tensor_retain(v), NN_OK) : drop_dim(&vo, nn_tensor_retain(v), d);
  if (!rc && indices)
    rc = keepdim ? (io = nn_tensor_retain(ix), NN_OK) : drop_dim(&io, nn_tensor_retain(ix), d);
  if (!rc) rc = record_select(vo, t, ix, d, op);
  nn_tensor_free(v);
  nn_tensor_free(ix);
  if (rc) {
    nn_tensor_free(vo);
    nn_tensor_free(io);
    return rc;
  }
  *values = vo;
  if (indices) *indices = io;
  return NN_OK;
}

int nn_max(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool keepdim) {
  return maxmin(values, indices, t, dim, keepdim, 0, "max");
}

int nn_min(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool keepdim) {
  return maxmin(values, indices, t, dim, keepdim, 1, "min");
}

static int maxmin_all(nn_tensor **out, nn_tensor *t, int is_min, const char *op) {
  char b[128];
  *out = NULL;
  int64_t n = nn_tensor_numel(t);
  if (n == 0)
    return nn_seterr(NN_ERR_SHAPE, "%s: empty tensor of shape %s", op,
                     nn_shape_str(t, b, sizeof b));
  nn_tensor *f = NULL;
  int rc = nn_reshape(&f, t, 1, &n);
  if (!rc) rc = maxmin(out, NULL, f, 0, false, is_min, op);
  nn_tensor_free(f);
  return rc;
}

int nn_max_all(nn_tensor **out, nn_tensor *t) { return maxmin_all(out, t, 0, "max_all"); }
int nn_min_all(nn_tensor **out, nn_tensor *t) { return maxmin_all(out, t, 1, "min_all"); }

static int argmaxmin(nn_tensor **out, nn_tensor *t, int dim, bool keepdim, int is_min,
                     const char *op) {
  nn_tensor *v = NULL;
  bool prev = nn_set_grad_enabled(false);
  int rc = maxmin(&v, out, t, dim, keepdim, is_min, op);
  nn_set_grad_enabled(prev);
  nn_tensor_free(v);
  return rc;
}

int nn_argmax(nn_tensor **out, nn_tensor *t, int dim, bool keepdim) {
  return argmaxmin(out, t, dim, keepdim, 0, "argmax");
}

int nn_argmin(nn_tensor **out, nn_tensor *t, int dim, bool keepdim) {
  return argmaxmin(out, t, dim, keepdim, 1, "argmin");
}

/* ---------------------------------------------------------------- topk, sort */

static int sort_impl(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int64_t k, int dim,
                     bool desc, bool is_topk, const char *op) {
  char b[128];
  *values = NULL;
  if (indices) *indices = NULL;
  int d, rc = wrap(op, t, dim, &d);
  if (rc) return rc;
  if (t->ndim == 0) { /* sort the one element of (1,), then give the 0-dim shape back */
    nn_tensor *t1 = NULL;
    rc = as_1d(&t1, t);
    if (!rc) rc = sort_impl(values, indices, t1, is_topk ? k : 1, 0, desc, is_topk, op);
    nn_tensor_free(t1);
    if (!rc) rc = to_0dim(values);
    if (!rc && indices) rc = to_0dim(indices);
    if (rc) {
      nn_tensor_free(*values);
      if (indices) nn_tensor_free(*indices);
      *values = NULL;
      if (indices) *indices = NULL;
    }
    return rc;
  }
  int64_t L = t->shape[d];
  if (!is_topk) k = L;
  if (k < 0 || k > L)
    return nn_seterr(NN_ERR_ARG, "%s: k = %lld is out of range for dim %d of size %lld (shape %s)",
                     op, (long long)k, dim, (long long)L, nn_shape_str(t, b, sizeof b));
  nn_tensor *v = NULL, *ix = NULL;
  rc = alloc_along(&v, t, d, k, t->dtype);
  if (!rc) rc = alloc_along(&ix, t, d, k, NN_DTYPE_I64);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = d;
    p.i[1] = k;
    p.i[2] = desc;
    nn_tensor *o[2] = {v, ix};
    rc = nn_dispatch(NN_OP_SORT, 2, o, 1, &t, &p);
  }
  if (!rc) rc = record_select(v, t, ix, d, op);
  if (rc) {
    nn_tensor_free(v);
    nn_tensor_free(ix);
    return rc;
  }
  *values = v;
  if (indices)
    *indices = ix;
  else
    nn_tensor_free(ix);
  return NN_OK;
}

int nn_topk(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int64_t k, int dim, bool largest,
            bool sorted) {
  (void)sorted; /* always sorted: the kernel orders the k it keeps */
  return sort_impl(values, indices, t, k, dim, largest, true, "topk");
}

int nn_sort(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool descending) {
  return sort_impl(values, indices, t, 0, dim, descending, false, "sort");
}

int nn_argsort(nn_tensor **out, nn_tensor *t, int dim, bool descending) {
  nn_tensor *v = NULL;
  bool prev = nn_set_grad_enabled(false);
  int rc = sort_impl(&v, out, t, 0, dim, descending, false, "argsort");
  nn_set_grad_enabled(prev);
  nn_tensor_free(v);
  return rc;
}

/* ---------------------------------------------------------------- softmax */

/* saved[0] = the forward's output y; p.i[0] dim, p.i[1] log. */
static int softmax_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *y = n->saved[0];
  int rc = nn_tensor_empty_like(din, y);
  if (!rc) {
    nn_tensor *in[2] = {y, dout};
    rc = nn_dispatch(NN_OP_SOFTMAX_BACKWARD, 1, din, 2, in, &n->p);
  }
  return rc;
}

static int softmax_impl(nn_tensor **out, nn_tensor *t, int dim, int log, const char *op) {
  *out = NULL;
  int d, rc = wrap(op, t, dim, &d);
  if (!rc) rc = need_float(op, t, "input");
  if (rc) return rc;
  if (t->ndim == 0) {
    nn_tensor *t1 = NULL;
    rc = as_1d(&t1, t);
    if (!rc) rc = softmax_impl(out, t1, 0, log, op);
    nn_tensor_free(t1);
    if (!rc) rc = to_0dim(out);
    return rc;
  }
  nn_tensor *o = NULL;
  nn_op_params p = {0};
  p.i[0] = d;
  p.i[1] = log;
  rc = nn_tensor_empty(&o, t->ndim, t->shape, t->dtype, t->storage->device);
  if (!rc) rc = nn_dispatch(NN_OP_SOFTMAX, 1, &o, 1, &t, &p);
  nn_node *n = NULL;
  if (!rc) rc = nn_record(o, op, softmax_backward, 1, &t, &n);
  if (!rc && n) {
    n->p = p;
    if (!(n->saved[0] = nn_alias(o))) rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory", op);
  }
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}

int nn_softmax(nn_tensor **out, nn_tensor *t, int dim) {
  return softmax_impl(out, t, dim, 0, "softmax");
}

int nn_log_softmax(nn_tensor **out, nn_tensor *t, int dim) {
  return softmax_impl(out, t, dim, 1, "log_softmax");
}

/* ---------------------------------------------------------------- losses */

static int check_red(const char *op, nn_reduction red) {
  if ((unsigned)red > NN_REDUCTION_NONE)
    return nn_seterr(NN_ERR_ARG,
                     "%s: unknown reduction %d (expected NN_REDUCTION_MEAN, "
                     "NN_REDUCTION_SUM or NN_REDUCTION_NONE)",
                     op, (int)red);
  return NN_OK;
}

/* x (N, C) float, C >= 1. */
static int check_rows(const char *op, const char *what, const nn_tensor *x) {
  char b[128];
  int rc = need_float(op, x, what);
  if (rc) return rc;
  if (x->ndim != 2 || x->shape[1] < 1)
    return nn_seterr(NN_ERR_SHAPE, "%s: %s must be (N, C) with C >= 1, got %s", op, what,
                     nn_shape_str(x, b, sizeof b));
  return NN_OK;
}

/* x (N, C) float and labels (N,) int64. */
static int check_labeled(const char *op, const char *what, const nn_tensor *x,
                         const nn_tensor *labels, nn_reduction red) {
  char b1[128], b2[128];
  int rc = check_red(op, red);
  if (!rc) rc = check_rows(op, what, x);
  if (rc) return rc;
  if (labels->dtype != NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: labels must be int64 class indices, got %s", op,
                     nn_dtype_name(labels->dtype));
  if (labels->ndim != 1 || labels->shape[0] != x->shape[0])
    return nn_seterr(NN_ERR_SHAPE, "%s: %s %s and labels %s: expected labels of shape (%lld,)", op,
                     what, nn_shape_str(x, b1, sizeof b1), nn_shape_str(labels, b2, sizeof b2),
                     (long long)x->shape[0]);
  return NN_OK;
}

/* Runs loss kernel op on (x, y): out0 per-row losses (N,), out1 the row log-sum-exp (N,) in
 * float64 when lse is not NULL, out2 the reduction (0-dim) unless NONE. *res is the loss the
 * user gets: the rows for NONE, else the reduction. */
static int loss_run(int op, nn_tensor *x, nn_tensor *y, nn_reduction red, nn_tensor **res,
                    nn_tensor **lse) {
  int64_t N = x->shape[0];
  nn_device dev = x->storage->device;
  nn_tensor *rows = NULL, *l = NULL, *r = NULL;
  int rc = nn_tensor_empty(&rows, 1, &N, x->dtype, dev);
  if (!rc && lse) rc = nn_tensor_empty(&l, 1, &N, NN_DTYPE_F64, dev);
  if (!rc && red != NN_REDUCTION_NONE) rc = nn_tensor_empty(&r, 0, &N, x->dtype, dev);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = red;
    nn_tensor *o[3] = {rows, l, r}, *in[2] = {x, y};
    rc = nn_dispatch(op, 3, o, 2, in, &p);
  }
  if (rc) {
    nn_tensor_free(rows);
    nn_tensor_free(l);
    nn_tensor_free(r);
    return rc;
  }
  if (red == NN_REDUCTION_NONE) {
    *res = rows;
  } else {
    *res = r;
    nn_tensor_free(rows);
  }
  if (lse) *lse = l;
  return NN_OK;
}

/* The upstream gradient as one value per row: dout (N,) for NONE, a 0-dim dout expanded. */
static int row_grad(nn_tensor **g, nn_tensor *dout, int64_t N) {
  if (dout->ndim == 1) {
    *g = nn_tensor_retain(dout);
    return NN_OK;
  }
  return nn_expand(g, dout, 1, &N);
}

static double row_scale(const nn_node *n, int64_t N) {
  return n->p.i[0] == NN_REDUCTION_MEAN ? 1.0 / (double)N : 1.0;
}

/* in[0] logits, in[1] labels, saved[0] lse, p.i[0] reduction. */
static int ce_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *g = NULL;
  int64_t N = x->shape[0];
  int rc = row_grad(&g, dout, N);
  if (!rc) rc = nn_tensor_empty_like(&din[0], x);
  if (!rc) {
    nn_op_params p = {0};
    p.f[0] = row_scale(n, N);
    nn_tensor *in[4] = {x, n->in[1], n->saved[0], g};
    rc = nn_dispatch(NN_OP_CROSS_ENTROPY_BACKWARD, 1, &din[0], 4, in, &p);
  }
  nn_tensor_free(g);
  return rc;
}

/* Runs a loss (x, y) with its backward rule: saves lse when the kernel makes one. */
static int loss(nn_tensor **out, int op, const char *name, nn_backward_fn bw, nn_tensor *x,
                nn_tensor *y, nn_reduction red, bool with_lse) {
  nn_tensor *res = NULL, *lse = NULL;
  int rc = loss_run(op, x, y, red, &res, with_lse ? &lse : NULL);
  if (rc) return rc;
  nn_tensor *in[2] = {x, y};
  nn_node *n = NULL;
  rc = nn_record(res, name, bw, 2, in, &n);
  if (!rc && n) {
    n->p.i[0] = red;
    n->saved[0] = lse;
    lse = NULL;
  }
  nn_tensor_free(lse);
  if (rc) {
    nn_tensor_free(res);
    return rc;
  }
  *out = res;
  return NN_OK;
}

int nn_cross_entropy(nn_tensor **out, nn_tensor *logits, nn_tensor *labels, nn_reduction red) {
  *out = NULL;
  int rc = check_labeled("cross_entropy", "logits", logits, labels, red);
  if (rc) return rc;
  return loss(out, NN_OP_CROSS_ENTROPY, "cross_entropy", ce_backward, logits, labels, red, true);
}

/* in[0] logits, in[1] targets, saved[0] lse. */
static int ces_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *t = n->in[1], *g = NULL, *o[2] = {NULL, NULL};
  int64_t N = x->shape[0];
  int mask = n->needs_grad[0] | n->needs_grad[1] << 1, k = 0;
  int rc = row_grad(&g, dout, N);
  if (!rc && (mask & 1) && !(rc = nn_tensor_empty_like(&din[0], x))) o[k++] = din[0];
  if (!rc && (mask & 2) && !(rc = nn_tensor_empty_like(&din[1], t))) o[k++] = din[1];
  if (!rc) {
    nn_op_params p = {0};
    p.i[1] = mask;
    p.f[0] = row_scale(n, N);
    nn_tensor *in[4] = {x, t, n->saved[0], g};
    rc = nn_dispatch(NN_OP_CROSS_ENTROPY_SOFT_BACKWARD, k, o, 4, in, &p);
  }
  nn_tensor_free(g);
  return rc;
}

int nn_cross_entropy_soft(nn_tensor **out, nn_tensor *logits, nn_tensor *targets,
                          nn_reduction red) {
  char b1[128], b2[128];
  *out = NULL;
  const char *op = "cross_entropy_soft";
  int rc = check_red(op, red);
  if (!rc) rc = check_rows(op, "logits", logits);
  if (rc) return rc;
  if (targets->dtype != logits->dtype)
    return nn_seterr(NN_ERR_DTYPE, "%s: targets must have the logits' dtype %s, got %s", op,
                     nn_dtype_name(logits->dtype), nn_dtype_name(targets->dtype));
  if (!nn_tensor_same_shape(logits, targets))
    return nn_seterr(NN_ERR_SHAPE, "%s: logits %s and targets %s must have the same shape", op,
                     nn_shape_str(logits, b1, sizeof b1), nn_shape_str(targets, b2, sizeof b2));
  return loss(out, NN_OP_CROSS_ENTROPY_SOFT, op, ces_backward, logits, targets, red, true);
}

/* in[0] logp, in[1] labels. */
static int nll_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *x = n->in[0], *g = NULL;
  int64_t N = x->shape[0];
  int rc = row_grad(&g, dout, N);
  if (!rc) rc = nn_tensor_empty(&din[0], 2, x->shape, x->dtype, x->storage->device);
  if (!rc) {
    nn_op_params p = {0};
    p.f[0] = row_scale(n, N);
    nn_tensor *in[2] = {n->in[1], g};
    rc = nn_dispatch(NN_OP_NLL_LOSS_BACKWARD, 1, &din[0], 2, in, &p);
  }
  nn_tensor_free(g);
  return rc;
}

int nn_nll_loss(nn_tensor **out, nn_tensor *logp, nn_tensor *labels, nn_reduction red) {
  *out = NULL;
  int rc = check_labeled("nll_loss", "logp", logp, labels, red);
  if (rc) return rc;
  return loss(out, NN_OP_NLL_LOSS, "nll_loss", nll_backward, logp, labels, red, false);
}

/* in[0] a, in[1] b; p.i[0] reduction. */
static int mse_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *a = n->in[0], *b = n->in[1], *g = NULL, *o[2] = {NULL, NULL};
  int mask = n->needs_grad[0] | n->needs_grad[1] << 1, k = 0;
  int64_t cnt = nn_tensor_numel(a);
  int rc = nn_expand(&g, dout, a->ndim, a->shape);
  if (!rc && (mask & 1) && !(rc = nn_tensor_empty_like(&din[0], a))) o[k++] = din[0];
  if (!rc && (mask & 2) && !(rc = nn_tensor_empty_like(&din[1], b))) o[k++] = din[1];
  if (!rc) {
    nn_op_params p = {0};
    p.i[1] = mask;
    p.f[0] = n->p.i[0] == NN_REDUCTION_MEAN ? 2.0 / (double)cnt : 2.0;
    nn_tensor *in[3] = {a, b, g};
    rc = nn_dispatch(NN_OP_MSE_LOSS_BACKWARD, k, o, 3, in, &p);
  }
  nn_tensor_free(g);
  return rc;
}

int nn_mse_loss(nn_tensor **out, nn_tensor *a, nn_tensor *b, nn_reduction red) {
  char b1[128], b2[128];
  *out = NULL;
  int rc = check_red("mse_loss", red);
  if (rc) return rc;
  if (a->dtype != b->dtype || a->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE,
                     "mse_loss: operands must be float32 or float64 of one dtype, got %s and %s",
                     nn_dtype_name(a->dtype), nn_dtype_name(b->dtype));
  if (!nn_tensor_same_shape(a, b))
    return nn_seterr(NN_ERR_SHAPE, "mse_loss: shapes %s and %s differ (no broadcasting)",
                     nn_shape_str(a, b1, sizeof b1), nn_shape_str(b, b2, sizeof b2));
  nn_tensor *o = NULL;
  rc = red == NN_REDUCTION_NONE
           ? nn_tensor_empty(&o, a->ndim, a->shape, a->dtype, a->storage->device)
           : nn_tensor_empty(&o, 0, a->shape, a->dtype, a->storage->device);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = red;
    nn_tensor *in[2] = {a, b};
    rc = nn_dispatch(NN_OP_MSE_LOSS, 1, &o, 2, in, &p);
  }
  nn_node *n = NULL;
  nn_tensor *in[2] = {a, b};
  if (!rc) rc = nn_record(o, "mse_loss", mse_backward, 2, in, &n);
  if (!rc && n) n->p.i[0] = red;
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}
