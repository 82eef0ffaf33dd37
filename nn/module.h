/* nn/module.h: layers (modules) with named parameters, the layer registry, flat parameter
 * buffers and FLOP/parameter counts.
 *
 * A module is a reference-counted object with a vtable (nn_module_i), named parameters (leaf
 * tensors with requires_grad), named buffers (running statistics: saved in checkpoints, not
 * trained), named children, and a training flag. Parameter names follow PyTorch: a Sequential's
 * children are "0", "1", ... so its parameters are "0.weight", "0.bias", ...; layouts and order
 * are PyTorch's (Linear: weight (out, in) then bias (out); Conv2d: weight (out, in/groups, kh,
 * kw) then bias).
 *
 * Layers compose ops, so autograd gives their backward. A layer type defined outside nn/ (a
 * quadratic neuron, a Bayesian layer, gyro dropout) fills an nn_module_i and registers a
 * constructor with nn_layer_register(); nn_layer_new() then builds it by name, so scripts can
 * use it without any edit to the core.
 */
#ifndef NN_MODULE_H
#define NN_MODULE_H

#include "ops_nnet.h"
#include "rng.h"
#include "tensor.h"

typedef struct nn_module nn_module;

/* Output shape and forward FLOPs for one input shape (batch dim included). */
typedef struct nn_shape_info {
  int ndim;
  int64_t shape[NN_MAX_DIMS];
  int64_t flops; /* multiply and add counted as 2 FLOPs; forward pass only */
} nn_shape_info;

typedef struct nn_module_i {
  const char *type; /* "Linear", "Conv2d", ... */
  /* out = m(x). Required. */
  int (*forward)(nn_module *m, nn_tensor *x, nn_tensor **out);
  /* Output shape and FLOPs for an input of shape in; optional (NULL: shape unchanged, 0 FLOPs). */
  int (*shape)(const nn_module *m, const nn_shape_info *in, nn_shape_info *out);
  /* Frees the type's private state (m->state); optional. */
  void (*free_state)(nn_module *m);
  /* One-line description of the options, e.g. "in=784, out=512, bias=true"; optional. */
  void (*describe)(const nn_module *m, char *buf, size_t n);
} nn_module_i;

typedef struct nn_named {
  char *name;
  nn_tensor *t;
} nn_named;

struct nn_module {
  int refcount;
  const nn_module_i *vt;
  bool training;
  int n_params, n_buffers, n_children;
  nn_named *params;  /* owned references */
  nn_named *buffers; /* owned references */
  nn_module **children;
  char **child_names;
  void *state; /* type-specific */
  nn_rng *rng; /* generator for stochastic layers (dropout); NULL = default */
};

/* ---- generic module API ---- */
int nn_module_forward(nn_module *m, nn_tensor *x, nn_tensor **out);
nn_module *nn_module_retain(nn_module *m);
void nn_module_free(nn_module *m); /* drops one reference; NULL is a no-op */
/* Training flag, set recursively. */
void nn_module_train(nn_module *m, bool on);

/* For layer implementations: a new module of type vt with private state (owned; freed by
 * vt->free_state or free()). */
int nn_module_new(nn_module **out, const nn_module_i *vt, void *state);
/* Adds a parameter (takes the reference; marks it requires_grad) / buffer / child (retained). */
int nn_module_add_param(nn_module *m, const char *name, nn_tensor *t);
int nn_module_add_buffer(nn_module *m, const char *name, nn_tensor *t);
int nn_module_add_child(nn_module *m, const char *name, nn_module *child);

/* All parameters, depth first in registration order, with dotted names. The array and names are
 * malloc'd (free with nn_named_list_free); the tensors are borrowed (not retained). */
int nn_module_parameters(nn_module *m, nn_named **out, int *n);
int nn_module_buffers(nn_module *m, nn_named **out, int *n);
void nn_named_list_free(nn_named *list, int n);
/* Parameter by dotted name ("0.weight"), borrowed; NULL when absent. */
nn_tensor *nn_module_param(nn_module *m, const char *name);
int64_t nn_module_num_params(nn_module *m);

/* Moves every parameter into one contiguous float32 buffer and every gradient into another, so
 * that the parameters and gradients are also views of two flat vectors (gradient compression,
 * SWAG and SG-MCMC work on those). Values are preserved; grads start at zero and zero_grad zeroes
 * them in place. *params and *grads are new references to the flat vectors (either may be NULL
 * if not wanted). Calling it again returns the same buffers. */
int nn_module_flatten(nn_module *m, nn_tensor **params, nn_tensor **grads);
/* Moves every parameter and buffer (children included) to device dev (nn/module_to.c): each
 * tensor object is rebound to a copy on dev (nn_tensor_rebind_), so optimizers and scripts that
 * hold the parameter objects keep working; gradients are dropped. Build optimizers after the
 * move (their state buffers are created on the parameters' device). Errors: NN_ERR_DEVICE (dev
 * not available), NN_ERR_NOMEM (nothing moved then), NN_ERR_STATE for a flattened module
 * (nn_module_flatten) moved across devices. */
int nn_module_to(nn_module *m, nn_device dev);
/* Zeroes every parameter's grad (in place; set_to_none drops them unless flattened). */
void nn_module_zero_grad(nn_module *m, bool set_to_none);

/* Per-layer output shapes, FLOPs and parameter counts for one input shape. *rows is a malloc'd
 * array of *n_rows rows, depth first, leaves only; the totals are returned in *total. */
typedef struct nn_layer_stat {
  char name[64];
  char type[32];
  nn_shape_info out;
  int64_t params;
} nn_layer_stat;
int nn_module_stats(nn_module *m, int ndim, const int64_t *in_shape, nn_layer_stat **rows,
                    int *n_rows, nn_layer_stat *total);
/* For container layers' shape functions: shape of child i for input in (records the child's
 * rows while nn_module_stats is walking). */
int nn_module_child_shape(nn_module *m, int i, const nn_shape_info *in, nn_shape_info *out);
/* For containers that run their children in order (Sequential, BlockSequential): the shape after
 * every child in turn, FLOPs summed; and a new module of type vt with children named "0", "1", ...
 * (retained; on error nothing is kept). */
int nn_module_chain_shape(const nn_module *m, const nn_shape_info *in, nn_shape_info *out);
int nn_module_new_chain(nn_module **out, const nn_module_i *vt, int n, nn_module *const *children);

/* ---- the layer registry ---- */
/* Options for constructors by name: key/value pairs, numbers or strings. */
typedef struct nn_opt {
  const char *key;
  double num;
  const char *str; /* NULL for numbers */
} nn_opt;
typedef int (*nn_layer_ctor)(nn_module **out, int n_opts, const nn_opt *opts);

/* Registers a constructor under a name (replacing none: a duplicate name is NN_ERR_ARG). */
int nn_layer_register(const char *name, nn_layer_ctor ctor, const char *doc);
/* Builds a layer by name; an unknown name is NN_ERR_ARG listing the registered names. */
int nn_layer_new(nn_module **out, const char *name, int n_opts, const nn_opt *opts);
/* Registered names (static storage), count in *n. */
const char *const *nn_layer_names(int *n);
/* Looks up an option; returns def when absent. Unknown keys are reported by nn_opts_check. */
double nn_opt_num(int n, const nn_opt *opts, const char *key, double def);
const char *nn_opt_str(int n, const nn_opt *opts, const char *key, const char *def);
/* NN_ERR_ARG naming the first key not in the NULL-terminated list known. */
int nn_opts_check(const char *layer, int n, const nn_opt *opts, const char *const *known);

/* ---- initialisation (driven by the seeded generator; rng NULL = default) ---- */
typedef enum {
  NN_INIT_KAIMING_NORMAL,  /* N(0, gain^2 / fan_in), gain sqrt(2) (ReLU) */
  NN_INIT_KAIMING_UNIFORM, /* U(-b, b), b = gain * sqrt(3 / fan_in) */
  NN_INIT_XAVIER_NORMAL,   /* N(0, 2 / (fan_in + fan_out)) */
  NN_INIT_XAVIER_UNIFORM,  /* U(-b, b), b = sqrt(6 / (fan_in + fan_out)) */
  NN_INIT_NORMAL,          /* N(0, a^2) with a = param */
  NN_INIT_UNIFORM,         /* U(-a, a) with a = param */
  NN_INIT_ZEROS,
  NN_INIT_PYTORCH_DEFAULT /* what torch.nn.Linear/Conv2d do: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
} nn_init;
/* fan_in/fan_out from the PyTorch convention (dim 1 x receptive field / dim 0 x receptive field).
 */
int nn_init_(nn_tensor *t, nn_init kind, double param, nn_rng *rng);

/* ---- built-in layers ---- */
int nn_linear_new(nn_module **out, int64_t in, int64_t outf, bool bias);
int nn_conv2d_new(nn_module **out, int64_t cin, int64_t cout, int kh, int kw,
                  const nn_conv2d_opts *o, bool bias);
/* dims 2 (BatchNorm1d on (N, C)) or 4 (BatchNorm2d on (N, C, H, W)); momentum 0.1, eps 1e-5 */
int nn_batchnorm_new(nn_module **out, int64_t c, int dims, double eps, double momentum,
                     bool affine);
/* normalises over the last n_dims dims of the given shape */
int nn_layernorm_new(nn_module **out, int n_dims, const int64_t *shape, double eps, bool affine);
int nn_dropout_new(nn_module **out, double p);
int nn_embedding_new(nn_module **out, int64_t num, int64_t dim);
typedef enum {
  NN_ACT_RELU,
  NN_ACT_LEAKY_RELU,
  NN_ACT_GELU,
  NN_ACT_TANH,
  NN_ACT_SIGMOID,
  NN_ACT_SOFTPLUS
} nn_act;
/* param: LeakyReLU slope (0.01), Softplus beta (1); GELU: 1 = tanh approximation */
int nn_activation_new(nn_module **out, nn_act kind, double param);
int nn_maxpool2d_new(nn_module **out, int k, int stride, int padding);
int nn_avgpool2d_new(nn_module **out, int k, int stride, int padding);
int nn_global_avgpool2d_new(nn_module **out);
int nn_flatten_new(nn_module **out, int start_dim, int end_dim);
/* Children are retained. */
int nn_sequential_new(nn_module **out, int n, nn_module *const *children);
/* out = body(x) + (shortcut ? shortcut(x) : x); both retained, shortcut may be NULL. */
int nn_residual_new(nn_module **out, nn_module *body, nn_module *shortcut);

#endif
