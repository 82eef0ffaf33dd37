/* nn/autograd.h: reverse-mode automatic differentiation over a recorded graph.
 *
 * While grad mode is on, every differentiable op whose inputs include a tensor with
 * requires_grad records a node: the backward rule, the inputs (retained) and whatever the rule
 * saved. nn_backward() runs the nodes in reverse topological order from a scalar root,
 * accumulating into the grad of every leaf that requires grad (parameters and inputs alike).
 * After a backward the graph's saved tensors are released (PyTorch's retain_graph=False), so a
 * second backward through the same graph is an NN_ERR_STATE error, and activations are freed at
 * once even while the caller still holds the loss.
 */
#ifndef NN_AUTOGRAD_H
#define NN_AUTOGRAD_H

#include "backend.h"

#define NN_NODE_MAX_IN 4
#define NN_NODE_MAX_SAVED 4

/* Backward rule: given dout (gradient of the node's output), write din[i] (a new reference, shaped
 * like input i) for every i with n->needs_grad[i]; leave the others NULL. Runs with grad mode off.
 */
typedef int (*nn_backward_fn)(nn_node *n, nn_tensor *dout, nn_tensor **din);

struct nn_node {
  int refcount;
  const char *name; /* op name for messages */
  nn_backward_fn backward;
  int n_in;
  nn_tensor *in[NN_NODE_MAX_IN]; /* retained inputs; released after backward */
  bool needs_grad[NN_NODE_MAX_IN];
  nn_tensor *saved[NN_NODE_MAX_SAVED]; /* retained extras (output alias, masks, indices) */
  nn_op_params p;                      /* op parameters for the rule */
  int out_ndim;                        /* output shape, for the root gradient and checks */
  int64_t out_shape[NN_MAX_DIMS];
  bool released;
  /* engine scratch */
  nn_tensor *grad;
  int pending;
  unsigned mark;
};

/* Grad mode (thread-local, on by default). Returns the previous setting. */
bool nn_set_grad_enabled(bool on);
bool nn_is_grad_enabled(void);

/* Marks a leaf tensor as requiring grad (or not). Error on a non-leaf. */
int nn_tensor_set_requires_grad(nn_tensor *t, bool on);

/* Backpropagates from root. root must be a one-element tensor unless grad (shaped like root) is
 * given. Gradients accumulate (+=) into leaves' grad. */
int nn_backward(nn_tensor *root, nn_tensor *grad);

/* Drops a leaf's accumulated grad (set_to_none: the next backward then stores its gradient
 * without an add, PyTorch's default) or zeroes it in place. A grad whose memory is shared (a
 * view into a flat gradient buffer, nn_module_flatten) is always zeroed in place, so the flat
 * buffer stays the gradient; a caller holding the dropped grad tensor keeps its values. */
void nn_tensor_zero_grad(nn_tensor *t, bool set_to_none);

/* For op front-ends: true when grad mode is on and any of the n inputs requires grad. */
bool nn_needs_graph(int n, nn_tensor *const *in);

/* For op front-ends: attaches a new node to out (which must have no grad_fn yet). Retains the
 * inputs; the caller fills n->saved and n->p through the returned pointer (may be NULL when no
 * node is needed: grad mode off or no input requires grad). Returns NN_ERR_NOMEM on failure. */
int nn_record(nn_tensor *out, const char *name, nn_backward_fn bw, int n_in, nn_tensor *const *in,
              nn_node **node);
/* A tensor sharing t's storage with no graph attached, for n->saved (avoids out->node cycles). */
nn_tensor *nn_alias(nn_tensor *t);

#endif
