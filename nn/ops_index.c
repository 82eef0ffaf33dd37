/* nn/ops_index.c: front-ends and backward rules of the indexing and joining ops.
 *
 * Two kernels carry the group: GATHER (gather, index_select, embedding) and SCATTER_ADD
 * (scatter_add, one_hot, and every backward of a gather), plus INDEX_CHECK, which every op runs
 * on its indices first so that kernels can trust them. index_select is a gather whose index is
 * the 1-D idx broadcast (stride 0) over the other dims; its backward is then a scatter_add of a
 * broadcast index, which the CPU kernel runs as a segment sum over ranges of targets. concat
 * copies each input into a narrowed view of the output (the COPY kernel), so it needs no kernel
 * of its own.
 * Shapes: V vocabulary, D embedding width, K selected entries. */
#include "ops_index.h"
#include "autograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- checks */

static int check_idx_dtype(const char *op, const nn_tensor *idx) {
  if (idx->dtype != NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: indices must be int64, got %s", op,
                     nn_dtype_name(idx->dtype));
  return NN_OK;
}

static int wrap(const char *op, int dim, const nn_tensor *t, int *d) {
  char b[128];
  *d = nn_wrap_dim(dim, t->ndim);
  if (*d < 0 || t->ndim == 0)
    return nn_seterr(NN_ERR_INDEX, "%s: dim %d out of range for shape %s", op, dim,
                     nn_shape_str(t, b, sizeof b));
  return NN_OK;
}

/* Every value of idx in [0, bound), else NN_ERR_INDEX naming op, the value and where it is. */
static int check_range(const char *op, nn_tensor *idx, int64_t bound, const char *what) {
  if (nn_tensor_numel(idx) == 0) return NN_OK;
  nn_tensor *r = NULL;
  int64_t res[2];
  int rc = nn_tensor_empty(&r, 1, (int64_t[]){2}, NN_DTYPE_I64, idx->storage->device);
  if (!rc) {
    nn_op_params p = {0};
    p.i[0] = bound;
    rc = nn_dispatch(NN_OP_INDEX_CHECK, 1, &r, 1, &idx, &p);
  }
  if (!rc) rc = nn_tensor_to_host(r, NN_DTYPE_I64, res);
  nn_tensor_free(r);
  if (rc) return rc;
  if (res[0] < 0) return NN_OK;
  char b[128];
  return nn_seterr(NN_ERR_INDEX,
                   "%s: index %lld at position %lld of indices %s is out of range "
                   "for %s: valid range is [0, %lld)",
                   op, (long long)res[1], (long long)res[0], nn_shape_str(idx, b, sizeof b), what,
                   (long long)bound);
}

static void release_on_error(int rc, nn_tensor **out) {
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
}

/* ---------------------------------------------------------------- raw kernels (no autograd) */

/* out (idx's shape) = t gathered along d by idx (checked). */
static int gather_raw(nn_tensor **out, nn_tensor *t, int d, nn_tensor *idx) {
  int rc = nn_tensor_empty(out, idx->ndim, idx->shape, t->dtype, t->storage->device);
  if (rc) return rc;
  nn_op_params p = {0};
  p.i[0] = d;
  nn_tensor *in[2] = {t, idx};
  rc = nn_dispatch(NN_OP_GATHER, 1, out, 2, in, &p);
  release_on_error(rc, out);
  return rc;
}

/* acc += src scattered at idx along d (acc updated in place; indices checked). */
static int scatter_raw(nn_tensor *acc, int d, nn_tensor *idx, nn_tensor *src) {
  nn_op_params p = {0};
  p.i[0] = d;
  nn_tensor *in[2] = {idx, src};
  return nn_dispatch(NN_OP_SCATTER_ADD, 1, &acc, 2, in, &p);
}

/* out = zeros shaped like t, plus src scattered at idx along d. */
static int scatter_into_zeros(nn_tensor **out, const nn_tensor *like, int d, nn_tensor *idx,
                              nn_tensor *src) {
  int rc = nn_tensor_zeros(out, like->ndim, like->shape, src->dtype, src->storage->device);
  if (!rc) rc = scatter_raw(*out, d, idx, src);
  release_on_error(rc, out);
  return rc;
}

/* ---------------------------------------------------------------- gather */

/* p.i[0] dim; saved[0] the (possibly broadcast) index the forward gathered with */
static int gather_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  return scatter_into_zeros(&din[0], n->in[0], (int)n->p.i[0], n->saved[0], dout);
}

/* Gather with autograd; idx already checked. name labels the node. */
static int gather_rec(nn_tensor **out, nn_tensor *t, int d, nn_tensor *idx, const char *name) {
  int rc = gather_raw(out, t, d, idx);
  if (rc || t->dtype == NN_DTYPE_I64) return rc;
  nn_node *n = NULL;
  rc = nn_record(*out, name, gather_backward, 1, &t, &n);
  if (!rc && n) {
    n->p.i[0] = d;
    n->saved[0] = nn_alias(idx);
    if (!n->saved[0]) rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory", name);
  }
  release_on_error(rc, out);
  return rc;
}

int nn_gather(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx) {
  *out = NULL;
  char b1[128], b2[128];
  int d, rc = check_idx_dtype("gather", idx);
  if (!rc) rc = wrap("gather", dim, t, &d);
  if (rc) return rc;
  if (idx->ndim != t->ndim)
    return nn_seterr(NN_ERR_SHAPE, "gather: indices %s must have as many dims as input %s",
                     nn_shape_str(idx, b1, sizeof b1), nn_shape_str(t, b2, sizeof b2));
  for (int e = 0; e < t->ndim; e++)
    if (e != d && idx->shape[e] > t->shape[e])
      return nn_seterr(NN_ERR_SHAPE, "gather: indices %s are larger than input %s in dim %d",
                       nn_shape_str(idx, b1, sizeof b1), nn_shape_str(t, b2, sizeof b2), e);
  char w[300];
  snprintf(w, sizeof w, "dim %d of input %s", d, nn_shape_str(t, b2, sizeof b2));
  rc = check_range("gather", idx, t->shape[d], w);
  if (rc) return rc;
  return gather_rec(out, t, d, idx, "gather");
}

/* ---------------------------------------------------------------- index_select, embedding */

/* out = t selected along d by idx (K values, already checked); op labels the node. */
static int index_select_impl(nn_tensor **out, nn_tensor *t, int d, nn_tensor *idx, const char *op) {
  /* idx broadcast over t's other dims: (1, .., K, .., 1) expanded to out's shape */
  int64_t sh[NN_MAX_DIMS], vs[NN_MAX_DIMS];
  for (int e = 0; e < t->ndim; e++) {
    sh[e] = t->shape[e];
    vs[e] = 1;
  }
  int64_t K = nn_tensor_numel(idx);
  sh[d] = vs[d] = K;
  nn_tensor *v = NULL, *e = NULL;
  bool prev = nn_set_grad_enabled(false);
  int rc = nn_reshape(&v, idx, t->ndim, vs);
  if (!rc) rc = nn_expand(&e, v, t->ndim, sh);
  nn_set_grad_enabled(prev);
  if (!rc) rc = gather_rec(out, t, d, e, op);
  nn_tensor_free(v);
  nn_tensor_free(e);
  return rc;
}

int nn_index_select(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx) {
  *out = NULL;
  char b[128];
  int d, rc = check_idx_dtype("index_select", idx);
  if (!rc) rc = wrap("index_select", dim, t, &d);
  if (rc) return rc;
  if (idx->ndim > 1)
    return nn_seterr(NN_ERR_SHAPE, "index_select: indices must be 1-D, got shape %s",
                     nn_shape_str(idx, b, sizeof b));
  char w[300];
  snprintf(w, sizeof w, "dim %d of input %s", d, nn_shape_str(t, b, sizeof b));
  rc = check_range("index_select", idx, t->shape[d], w);
  if (rc) return rc;
  return index_select_impl(out, t, d, idx, "index_select");
}

int nn_embedding(nn_tensor **out, nn_tensor *weight, nn_tensor *idx) {
  *out = NULL;
  char b1[128], b2[128];
  int rc = check_idx_dtype("embedding", idx);
  if (rc) return rc;
  if (weight->ndim != 2)
    return nn_seterr(NN_ERR_SHAPE, "embedding: weight must be 2-D (V, D), got shape %s",
                     nn_shape_str(weight, b1, sizeof b1));
  if (weight->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "embedding: weight must be float32 or float64, got int64");
  if (idx->ndim + 1 > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_SHAPE,
                     "embedding: indices %s leave no room for the D dim (at most %d dims)",
                     nn_shape_str(idx, b1, sizeof b1), NN_MAX_DIMS);
  nn_tensor *flat = NULL, *rows = NULL;
  int64_t sh[NN_MAX_DIMS];
  memcpy(sh, idx->shape, sizeof sh);
  sh[idx->ndim] = weight->shape[1];
  snprintf(b2, sizeof b2, "the rows of weight %s", nn_shape_str(weight, b1, sizeof b1));
  rc = check_range("embedding", idx, weight->shape[0], b2);
  if (!rc) rc = nn_reshape(&flat, idx, 1, (int64_t[]){nn_tensor_numel(idx)});
  if (!rc) rc = index_select_impl(&rows, weight, 0, flat, "embedding");
  if (!rc) rc = nn_reshape(out, rows, idx->ndim + 1, sh); /* (K, D) -> (..., D), a view */
  nn_tensor_free(flat);
  nn_tensor_free(rows);
  return rc;
}

/* ---------------------------------------------------------------- scatter_add */

/* p.i[0] dim; saved[0] idx; in[0] t, in[1] src (the idx-shaped block) */
static int scatter_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  int rc = NN_OK;
  if (n->needs_grad[0]) din[0] = nn_tensor_retain(dout);
  if (n->needs_grad[1]) rc = gather_raw(&din[1], dout, (int)n->p.i[0], n->saved[0]);
  return rc;
}

int nn_scatter_add(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx, nn_tensor *src) {
  *out = NULL;
  char b1[128], b2[128], b3[128];
  int d, rc = check_idx_dtype("scatter_add", idx);
  if (!rc) rc = wrap("scatter_add", dim, t, &d);
  if (rc) return rc;
  if (t->dtype != src->dtype)
    return nn_seterr(NN_ERR_DTYPE, "scatter_add: input and src must share a dtype, got %s and %s",
                     nn_dtype_name(t->dtype), nn_dtype_name(src->dtype));
  if (idx->ndim != t->ndim || src->ndim != t->ndim) goto bad_shape;
  for (int e = 0; e < t->ndim; e++)
    if (idx->shape[e] > src->shape[e] || (e != d && idx->shape[e] > t->shape[e])) goto bad_shape;
  char w[300];
  snprintf(w, sizeof w, "dim %d of input %s", d, nn_shape_str(t, b1, sizeof b1));
  rc = check_range("scatter_add", idx, t->shape[d], w);
  if (rc) return rc;
  /* only the idx-shaped leading block of src takes part: a narrowed (differentiable) view */
  nn_tensor *s = nn_tensor_retain(src);
  for (int e = 0; !rc && e < t->ndim; e++)
    if (s->shape[e] != idx->shape[e]) {
      nn_tensor *v = NULL;
      rc = nn_narrow(&v, s, e, 0, idx->shape[e]);
      nn_tensor_free(s);
      s = v;
    }
  if (!rc) rc = nn_tensor_empty(out, t->ndim, t->shape, t->dtype, t->storage->device);
  if (!rc) rc = nn_copy_(*out, t);
  if (!rc) rc = scatter_raw(*out, d, idx, s);
  if (!rc && t->dtype != NN_DTYPE_I64) {
    nn_node *n = NULL;
    nn_tensor *in[2] = {t, s};
    rc = nn_record(*out, "scatter_add", scatter_backward, 2, in, &n);
    if (!rc && n) {
      n->p.i[0] = d;
      n->saved[0] = nn_alias(idx);
      if (!n->saved[0]) rc = nn_seterr(NN_ERR_NOMEM, "scatter_add: out of memory");
    }
  }
  nn_tensor_free(s);
  release_on_error(rc, out);
  return rc;
bad_shape:
  return nn_seterr(
      NN_ERR_SHAPE,
      "scatter_add: input %s, indices %s, src %s: all need the same "
      "number of dims, indices no larger than src, and no larger than input off dim %d",
      nn_shape_str(t, b1, sizeof b1), nn_shape_str(idx, b2, sizeof b2),
      nn_shape_str(src, b3, sizeof b3), d);
}

/* ---------------------------------------------------------------- one_hot */

int nn_one_hot(nn_tensor **out, nn_tensor *labels, int64_t num_classes) {
  *out = NULL;
  char b[128];
  int rc = check_idx_dtype("one_hot", labels);
  if (rc) return rc;
  if (num_classes < 1)
    return nn_seterr(NN_ERR_ARG, "one_hot: num_classes must be >= 1, got %lld",
                     (long long)num_classes);
  if (labels->ndim + 1 > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_SHAPE, "one_hot: labels %s leave no room for the class dim",
                     nn_shape_str(labels, b, sizeof b));
  snprintf(b, sizeof b, "num_classes %lld", (long long)num_classes);
  rc = check_range("one_hot", labels, num_classes, b);
  if (rc) return rc;
  /* zeros (..., C), then scatter 1 at (..., labels[...]) */
  int nd = labels->ndim;
  int64_t sh[NN_MAX_DIMS];
  memcpy(sh, labels->shape, sizeof sh);
  sh[nd] = num_classes;
  nn_tensor *u = NULL, *one = NULL, *ones = NULL;
  rc = nn_tensor_zeros(out, nd + 1, sh, NN_DTYPE_F32, labels->storage->device);
  bool prev = nn_set_grad_enabled(false);
  if (!rc) rc = nn_unsqueeze(&u, labels, -1);
  if (!rc) rc = nn_tensor_full(&one, 0, sh, 1.0, NN_DTYPE_F32, labels->storage->device);
  if (!rc) rc = nn_expand(&ones, one, nd + 1, u->shape);
  nn_set_grad_enabled(prev);
  if (!rc) rc = scatter_raw(*out, nd, u, ones);
  nn_tensor_free(u);
  nn_tensor_free(one);
  nn_tensor_free(ones);
  release_on_error(rc, out);
  return rc;
}

/* ---------------------------------------------------------------- concat, stack, split */

/* p.i[0] dim; din[i] = dout narrowed to input i's span along dim (a view of dout) */
static int concat_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  int d = (int)n->p.i[0], rc = NN_OK;
  int64_t start = 0;
  for (int i = 0; i < n->n_in && !rc; i++) {
    int64_t len = n->in[i]->shape[d];
    if (n->needs_grad[i]) rc = nn_narrow(&din[i], dout, d, start, len);
    start += len;
  }
  return rc;
}

/* A view of o's storage spanning [start, start + len) along d, for a group node. */
static nn_tensor *span_of(nn_tensor *o, int d, int64_t start, int64_t len) {
  nn_tensor *v = nn_alias(o);
  if (!v) return NULL;
  v->offset += start * o->stride[d];
  v->shape[d] = len;
  return v;
}

/* Records out's node over the m inputs, grouping them four at a time under views of out's
 * storage while more than NN_NODE_MAX_IN remain (see nn_concat in ops_index.h). */
static int concat_record(nn_tensor *o, int m, nn_tensor *const *ts, int d, const char *name) {
  if (!nn_needs_graph(m, ts)) return NN_OK;
  nn_tensor *const *cur = ts;
  nn_tensor **own = NULL, **next = NULL; /* own: the current level's group views, when grouped */
  int rc = NN_OK;
  while (!rc && m > NN_NODE_MAX_IN) {
    int g = (m + NN_NODE_MAX_IN - 1) / NN_NODE_MAX_IN;
    next = calloc((size_t)g, sizeof *next);
    if (!next) {
      rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory recording the graph", name);
      break;
    }
    int64_t start = 0;
    for (int k = 0; k < g && !rc; k++) {
      int i0 = k * NN_NODE_MAX_IN, cnt = m - i0 < NN_NODE_MAX_IN ? m - i0 : NN_NODE_MAX_IN;
      int64_t len = 0;
      for (int i = i0; i < i0 + cnt; i++) len += cur[i]->shape[d];
      next[k] = span_of(o, d, start, len);
      if (!next[k]) rc = nn_seterr(NN_ERR_NOMEM, "%s: out of memory recording the graph", name);
      nn_node *n = NULL;
      if (!rc) rc = nn_record(next[k], name, concat_backward, cnt, cur + i0, &n);
      if (n) n->p.i[0] = d;
      start += len;
    }
    if (own) {
      for (int i = 0; i < m; i++) nn_tensor_free(own[i]);
      free(own);
    }
    cur = own = next;
    m = g;
    next = NULL;
  }
  if (!rc) {
    nn_node *n = NULL;
    rc = nn_record(o, name, concat_backward, m, cur, &n);
    if (n) n->p.i[0] = d;
  }
  if (own) {
    for (int i = 0; i < m; i++) nn_tensor_free(own[i]);
    free(own);
  }
  return rc;
}

/* Shared by concat and stack: ts already have one ndim; d already wrapped. */
static int concat_impl(nn_tensor **out, int n, nn_tensor *const *ts, int d, const char *name) {
  char b1[128], b2[128];
  const nn_tensor *t0 = ts[0];
  int64_t sh[NN_MAX_DIMS];
  memcpy(sh, t0->shape, sizeof sh);
  sh[d] = 0;
  for (int i = 0; i < n; i++) {
    const nn_tensor *t = ts[i];
    if (t->dtype != t0->dtype)
      return nn_seterr(NN_ERR_DTYPE, "%s: input %d is %s but input 0 is %s", name, i,
                       nn_dtype_name(t->dtype), nn_dtype_name(t0->dtype));
    bool ok = t->ndim == t0->ndim;
    for (int e = 0; ok && e < t0->ndim; e++)
      if (e != d && t->shape[e] != t0->shape[e]) ok = false;
    if (!ok)
      return nn_seterr(NN_ERR_SHAPE,
                       "%s: input %d has shape %s but input 0 has shape %s; all "
                       "dims but %d must match",
                       name, i, nn_shape_str(t, b1, sizeof b1), nn_shape_str(t0, b2, sizeof b2), d);
    sh[d] += t->shape[d];
  }
  int rc = nn_tensor_empty(out, t0->ndim, sh, t0->dtype, t0->storage->device);
  int64_t start = 0;
  bool prev = nn_set_grad_enabled(false);
  for (int i = 0; i < n && !rc; i++) {
    nn_tensor *v = NULL;
    rc = nn_narrow(&v, *out, d, start, ts[i]->shape[d]);
    if (!rc) rc = nn_copy_(v, ts[i]);
    nn_tensor_free(v);
    start += ts[i]->shape[d];
  }
  nn_set_grad_enabled(prev);
  if (!rc && t0->dtype != NN_DTYPE_I64) rc = concat_record(*out, n, ts, d, name);
  release_on_error(rc, out);
  return rc;
}

int nn_concat(nn_tensor **out, int n, nn_tensor *const *ts, int dim) {
  *out = NULL;
  if (n < 1) return nn_seterr(NN_ERR_ARG, "concat: needs at least one input, got %d", n);
  int d, rc = wrap("concat", dim, ts[0], &d);
  if (rc) return rc;
  return concat_impl(out, n, ts, d, "concat");
}

int nn_stack(nn_tensor **out, int n, nn_tensor *const *ts, int dim) {
  *out = NULL;
  char b1[128], b2[128];
  if (n < 1) return nn_seterr(NN_ERR_ARG, "stack: needs at least one input, got %d", n);
  int nd = ts[0]->ndim, d = dim < 0 ? dim + nd + 1 : dim;
  if (d < 0 || d > nd || nd >= NN_MAX_DIMS)
    return nn_seterr(NN_ERR_INDEX, "stack: dim %d out of range for inputs of shape %s", dim,
                     nn_shape_str(ts[0], b1, sizeof b1));
  for (int i = 1; i < n; i++)
    if (!nn_tensor_same_shape(ts[i], ts[0]))
      return nn_seterr(NN_ERR_SHAPE,
                       "stack: input %d has shape %s but input 0 has shape %s; all "
                       "must match",
                       i, nn_shape_str(ts[i], b1, sizeof b1), nn_shape_str(ts[0], b2, sizeof b2));
  nn_tensor **u = calloc((size_t)n, sizeof *u);
  if (!u) return nn_seterr(NN_ERR_NOMEM, "stack: out of memory");
  int rc = NN_OK;
  for (int i = 0; i < n && !rc; i++) rc = nn_unsqueeze(&u[i], ts[i], d); /* differentiable views */
  if (!rc) rc = concat_impl(out, n, u, d, "stack");
  for (int i = 0; i < n; i++) nn_tensor_free(u[i]);
  free(u);
  return rc;
}

int nn_split(nn_tensor **outs, nn_tensor *t, int n, const int64_t *sizes, int dim) {
  char b[128];
  if (n < 1) return nn_seterr(NN_ERR_ARG, "split: needs at least one piece, got %d", n);
  for (int i = 0; i < n; i++) outs[i] = NULL;
  int d, rc = wrap("split", dim, t, &d);
  if (rc) return rc;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    if (sizes[i] < 0)
      return nn_seterr(NN_ERR_ARG, "split: size %d is negative (%lld)", i, (long long)sizes[i]);
    total += sizes[i];
  }
  if (total != t->shape[d])
    return nn_seterr(NN_ERR_SHAPE,
                     "split: sizes add up to %lld but dim %d of shape %s has size %lld",
                     (long long)total, d, nn_shape_str(t, b, sizeof b), (long long)t->shape[d]);
  int64_t start = 0;
  for (int i = 0; i < n && !rc; i++) {
    rc = nn_narrow(&outs[i], t, d, start, sizes[i]);
    start += sizes[i];
  }
  if (rc)
    for (int i = 0; i < n; i++) {
      nn_tensor_free(outs[i]);
      outs[i] = NULL;
    }
  return rc;
}
