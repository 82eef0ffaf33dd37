/* nn/autograd.c: graph recording and the reverse-mode engine.
 *
 * Graph ownership: a tensor owns a reference to its grad_fn node; a node owns references to its
 * input tensors (and so, transitively, to their nodes) and to its saved tensors. A node never
 * refers to its own output, so the graph has no cycles and dies with the last tensor holding it.
 */
#include "autograd.h"
#include "ops_core.h"
#include "ops_elementwise.h"

#include <stdlib.h>
#include <string.h>

static _Thread_local int grad_disabled; /* 0: grad mode on (the default) */

bool nn_set_grad_enabled(bool on) {
  bool prev = !grad_disabled;
  grad_disabled = !on;
  return prev;
}

bool nn_is_grad_enabled(void) { return !grad_disabled; }

int nn_tensor_set_requires_grad(nn_tensor *t, bool on) {
  if (t->grad_fn)
    return nn_seterr(NN_ERR_STATE,
                     "requires_grad: only leaf tensors can change requires_grad "
                     "(this one was produced by %s); detach it first",
                     t->grad_fn->name);
  if (on && t->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "requires_grad: int64 tensors cannot require grad");
  t->requires_grad = on;
  return NN_OK;
}

bool nn_needs_graph(int n, nn_tensor *const *in) {
  if (grad_disabled) return false;
  for (int i = 0; i < n; i++)
    if (in[i] && in[i]->requires_grad) return true;
  return false;
}

static void node_release_saved(nn_node *n) {
  for (int i = 0; i < n->n_in; i++) {
    nn_tensor_free(n->in[i]);
    n->in[i] = NULL;
  }
  for (int i = 0; i < NN_NODE_MAX_SAVED; i++) {
    nn_tensor_free(n->saved[i]);
    n->saved[i] = NULL;
  }
  n->released = true;
}

void nn_node_release(nn_node *n) {
  if (!n || --n->refcount > 0) return;
  /* Inputs may hold long chains of nodes: release iteratively to bound stack depth. Each input
   * whose last reference we drop frees its own node through nn_tensor_free, which recurses at
   * most once per graph level; deep graphs (long RNN chains) are the documented limit. */
  node_release_saved(n);
  nn_tensor_free(n->grad);
  free(n);
}

int nn_record(nn_tensor *out, const char *name, nn_backward_fn bw, int n_in, nn_tensor *const *in,
              nn_node **node) {
  if (node) *node = NULL;
  NN_ASSERT(n_in <= NN_NODE_MAX_IN);
  if (!nn_needs_graph(n_in, in)) return NN_OK;
  NN_ASSERT(out->grad_fn == NULL);
  nn_node *n = calloc(1, sizeof *n);
  if (!n) return nn_seterr(NN_ERR_NOMEM, "%s: out of memory recording the graph", name);
  n->refcount = 1;
  n->name = name;
  n->backward = bw;
  n->n_in = n_in;
  for (int i = 0; i < n_in; i++) {
    n->in[i] = nn_tensor_retain(in[i]);
    n->needs_grad[i] = in[i] && in[i]->requires_grad;
  }
  n->out_ndim = out->ndim;
  memcpy(n->out_shape, out->shape, sizeof n->out_shape);
  out->grad_fn = n;
  out->requires_grad = true;
  if (node) *node = n;
  return NN_OK;
}

/* True when nobody else can see t's memory, so it may be updated in place. */
static bool exclusive(const nn_tensor *t) {
  return t->refcount == 1 && t->storage->refcount == 1 && nn_tensor_is_contiguous(t) && !t->grad_fn;
}

/* Adds g into *acc (creating it when NULL). Takes ownership of g. Gradients handed over by
 * backward rules may be views of other gradients, so an *acc that is shared is replaced by a
 * fresh sum instead of being written in place. */
static int accumulate(nn_tensor **acc, nn_tensor *g) {
  if (!*acc) {
    *acc = g;
    return NN_OK;
  }
  int rc;
  if (exclusive(*acc)) {
    rc = nn_add_(*acc, g);
  } else {
    nn_tensor *s = NULL;
    rc = nn_add(&s, *acc, g);
    if (!rc) {
      nn_tensor_free(*acc);
      *acc = s;
    }
  }
  nn_tensor_free(g);
  return rc;
}

/* Leaf grads are stored contiguous and exclusively owned, with the leaf's shape and dtype. */
static int accumulate_leaf(nn_tensor *leaf, nn_tensor *g) {
  if (!leaf->grad && !exclusive(g)) {
    nn_tensor *c = NULL;
    int rc = nn_tensor_empty_like(&c, leaf);
    if (!rc) rc = nn_copy_(c, g);
    nn_tensor_free(g);
    if (rc) {
      nn_tensor_free(c);
      return rc;
    }
    g = c;
  }
  if (leaf->grad) {
    int rc = nn_add_(leaf->grad, g);
    nn_tensor_free(g);
    return rc;
  }
  leaf->grad = g;
  return NN_OK;
}

typedef struct {
  nn_node **v;
  int n, cap;
} nodevec;

static int push(nodevec *s, nn_node *n) {
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 64;
    nn_node **p = realloc(s->v, (size_t)cap * sizeof *p);
    if (!p) return nn_seterr(NN_ERR_NOMEM, "backward: out of memory");
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = n;
  return NN_OK;
}

static unsigned backward_epoch;

int nn_backward(nn_tensor *root, nn_tensor *grad) {
  char b1[128], b2[128];
  if (!root->requires_grad)
    return nn_seterr(NN_ERR_STATE,
                     "backward: tensor of shape %s does not require grad "
                     "(no input requires grad, or it was computed without grad)",
                     nn_shape_str(root, b1, sizeof b1));
  if (!grad && nn_tensor_numel(root) != 1)
    return nn_seterr(NN_ERR_SHAPE,
                     "backward: grad can be implied only for a one-element output, "
                     "got shape %s",
                     nn_shape_str(root, b1, sizeof b1));
  if (grad && !nn_tensor_same_shape(grad, root))
    return nn_seterr(NN_ERR_SHAPE, "backward: grad of shape %s for output of shape %s",
                     nn_shape_str(grad, b1, sizeof b1), nn_shape_str(root, b2, sizeof b2));
  nn_tensor *g0 = NULL;
  int rc;
  if (grad) {
    rc = nn_clone(&g0, grad);
    if (rc) return rc;
  } else {
    rc = nn_tensor_full(&g0, root->ndim, root->shape, 1.0, root->dtype, root->storage->device);
    if (rc) return rc;
  }
  bool prev = nn_set_grad_enabled(false);
  if (!root->grad_fn) { /* root is a leaf */
    rc = accumulate_leaf(root, g0);
    nn_set_grad_enabled(prev);
    return rc;
  }
  if (root->grad_fn->released) {
    nn_tensor_free(g0);
    nn_set_grad_enabled(prev);
    return nn_seterr(NN_ERR_STATE,
                     "backward: the graph through %s was already freed by an "
                     "earlier backward; recompute the forward pass",
                     root->grad_fn->name);
  }
  /* 1. collect nodes (iterative DFS) and count consumers of each node's output */
  unsigned epoch = ++backward_epoch;
  nodevec all = {0}, stack = {0};
  rc = push(&stack, root->grad_fn);
  root->grad_fn->mark = epoch;
  root->grad_fn->pending = 0;
  while (!rc && stack.n) {
    nn_node *n = stack.v[--stack.n];
    rc = push(&all, n);
    if (!rc) n->refcount++; /* keeps n alive while step 3 releases the graph */
    for (int i = 0; !rc && i < n->n_in; i++) {
      nn_tensor *in = n->in[i];
      if (!in || !n->needs_grad[i] || !in->grad_fn) continue;
      nn_node *m = in->grad_fn;
      if (m->released) {
        rc = nn_seterr(NN_ERR_STATE,
                       "backward: the graph through %s was already freed by an "
                       "earlier backward; recompute the forward pass",
                       m->name);
        break;
      }
      if (m->mark != epoch) {
        m->mark = epoch;
        m->pending = 0;
        rc = push(&stack, m);
      }
      m->pending++;
    }
  }
  /* 2. run nodes whose consumers have all delivered their gradient (Kahn's order) */
  if (!rc) {
    root->grad_fn->grad = g0;
    g0 = NULL;
    stack.n = 0;
    rc = push(&stack, root->grad_fn);
  }
  while (!rc && stack.n) {
    nn_node *n = stack.v[--stack.n];
    nn_tensor *dout = n->grad;
    n->grad = NULL;
    nn_tensor *din[NN_NODE_MAX_IN] = {0};
    if (dout) rc = n->backward(n, dout, din);
    nn_tensor_free(dout);
    for (int i = 0; i < n->n_in; i++) {
      nn_tensor *in = n->in[i];
      if (!in || !n->needs_grad[i]) continue;
      if (!rc && din[i]) {
        if (!nn_tensor_same_shape(din[i], in))
          rc = nn_seterr(NN_ERR_STATE, "backward of %s: gradient shape %s for input %d of shape %s",
                         n->name, nn_shape_str(din[i], b1, sizeof b1), i,
                         nn_shape_str(in, b2, sizeof b2));
        else if (in->grad_fn)
          rc = accumulate(&in->grad_fn->grad, din[i]);
        else
          rc = accumulate_leaf(in, din[i]);
        din[i] = NULL;
      }
      nn_tensor_free(din[i]);
      if (in->grad_fn && --in->grad_fn->pending == 0 && !rc) rc = push(&stack, in->grad_fn);
    }
  }
  /* 3. free the graph's saved state (retain_graph=False) and any leftover gradients */
  for (int i = 0; i < all.n; i++) {
    nn_tensor_free(all.v[i]->grad);
    all.v[i]->grad = NULL;
  }
  for (int i = 0; i < all.n; i++) node_release_saved(all.v[i]);
  for (int i = 0; i < all.n; i++) nn_node_release(all.v[i]);
  nn_tensor_free(g0);
  free(all.v);
  free(stack.v);
  nn_set_grad_enabled(prev);
  return rc;
}

void nn_tensor_zero_grad(nn_tensor *t, bool set_to_none) {
  if (!t->grad) return;
  /* A grad whose memory is shared (a view into a flat gradient buffer) is zeroed in place even
   * when set_to_none asks to drop it, so the flat buffer stays the gradient. A caller holding the
   * grad tensor itself keeps its values, as in PyTorch. */
  if (set_to_none && t->grad->storage->refcount == 1) {
    nn_tensor_free(t->grad);
    t->grad = NULL;
  } else {
    nn_fill_(t->grad, 0.0);
  }
}
