/* nn/optim.h: optimizers (SGD with momentum/Nesterov/weight decay, Adam, AdamW, RMSProp) with
 * parameter groups, a learning rate settable at every step, gradient clipping by global norm,
 * and optimizer state that can be saved and restored (nn/checkpoint.h).
 *
 * Update rules follow PyTorch's torch.optim exactly (so results can be compared step by step):
 *   SGD:     g += wd*p; buf = g (first step) or mu*buf + (1-dampening)*g;
 *            g = nesterov ? g + mu*buf : buf; p -= lr*g
 *   Adam:    g += wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *            p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *   AdamW:   p *= 1 - lr*wd, then Adam's update without the wd term
 *   RMSProp: g += wd*p; v = a*v + (1-a)*g^2; (centered: ga = a*ga + (1-a)*g, v' = v - ga^2);
 *            d = sqrt(v') + eps; with momentum: buf = mu*buf + g/d, p -= lr*buf; else p -= lr*g/d
 * Each step is one fused kernel per parameter (NN_OP_SGD_STEP, ...). Parameters without a grad
 * are skipped. The optimizer borrows the parameter tensors: keep the model alive while it is used.
 */
#ifndef NN_OPTIM_H
#define NN_OPTIM_H

#include "tensor.h"

typedef enum { NN_OPTIM_SGD, NN_OPTIM_ADAM, NN_OPTIM_ADAMW, NN_OPTIM_RMSPROP } nn_optim_kind;

typedef struct nn_optim_opts {
  double lr;
  double momentum, dampening; /* SGD, RMSProp (momentum) */
  bool nesterov;              /* SGD */
  double weight_decay;
  double beta1, beta2, eps; /* Adam, AdamW; eps also RMSProp */
  double alpha;             /* RMSProp smoothing */
  bool centered;            /* RMSProp */
} nn_optim_opts;

/* PyTorch's defaults for the kind: SGD lr 0.01; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8;
 * AdamW the same with weight_decay 0.01; RMSProp lr 0.01, alpha 0.99, eps 1e-8. */
nn_optim_opts nn_optim_defaults(nn_optim_kind kind);
const char *nn_optim_kind_name(nn_optim_kind kind);

typedef struct nn_optim nn_optim;

/* A new optimizer over n parameters (first group) with options o (NULL: defaults). Errors:
 * NN_ERR_ARG for a negative lr/momentum/weight decay, betas outside [0, 1), Nesterov without
 * momentum; NN_ERR_DTYPE for a non-float32 parameter. */
int nn_optim_new(nn_optim **out, nn_optim_kind kind, int n, nn_tensor *const *params,
                 const nn_optim_opts *o);
void nn_optim_free(nn_optim *opt);
/* Adds a parameter group with its own options; returns its index in *group. */
int nn_optim_add_group(nn_optim *opt, int n, nn_tensor *const *params, const nn_optim_opts *o,
                       int *group);
int nn_optim_num_groups(const nn_optim *opt);
nn_optim_opts *nn_optim_group_opts(nn_optim *opt, int group); /* modifiable in place */
nn_optim_kind nn_optim_kind_of(const nn_optim *opt);

int nn_optim_step(nn_optim *opt);
void nn_optim_zero_grad(nn_optim *opt, bool set_to_none);
/* Sets the learning rate of every group (schedules call this every step). */
void nn_optim_set_lr(nn_optim *opt, double lr);
double nn_optim_get_lr(const nn_optim *opt, int group);
/* Steps taken so far (Adam's t). */
int64_t nn_optim_steps(const nn_optim *opt);

/* Optimizer state as named tensors, for checkpoints: "<param index>.<buffer>", e.g.
 * "3.momentum_buffer", "3.exp_avg"; plus the step count as the scalar "step". The tensors are
 * borrowed; the array (and names) are malloc'd: free with nn_named_list_free (nn/module.h). */
typedef struct nn_named nn_named;
int nn_optim_state(nn_optim *opt, nn_named **out, int *n);
/* Restores state saved by nn_optim_state (same parameter count and shapes). All checks run
 * before anything is written: a mismatch leaves the optimizer untouched (NN_ERR_SHAPE/ARG). */
int nn_optim_load_state(nn_optim *opt, int n, const nn_named *state, int64_t step);
/* The checks of nn_optim_load_state alone (nothing written). */
int nn_optim_check_state(nn_optim *opt, int n, const nn_named *state);

/* Scales the grads of the n tensors so that their global L2 norm is at most max_norm; returns
 * the norm before clipping in *total_norm (computed in double). */
int nn_clip_grad_norm(double *total_norm, int n, nn_tensor *const *params, double max_norm);

#endif
