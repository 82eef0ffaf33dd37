/* nn/ops_elementwise.h: elementwise arithmetic with broadcasting, activations, where/masked_fill.
 * All functions return NN_OK or NN_ERR_* (message in nn_errmsg()); *out is a new reference.
 * Binary ops broadcast numpy-style; both operands must have the same float dtype. */
#ifndef NN_OPS_ELEMENTWISE_H
#define NN_OPS_ELEMENTWISE_H

#include "tensor.h"

#include <stdbool.h>

int nn_add(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_sub(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_mul(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_div(nn_tensor **out, nn_tensor *a, nn_tensor *b);
/* With a scalar: a + s, a * s, s - a (rsub), s / a (rdiv). */
int nn_add_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_mul_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_rsub_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_rdiv_scalar(nn_tensor **out, nn_tensor *a, double s);

/* In place, not recorded by autograd (optimizers, gradient accumulation): t += x (x broadcast to
 * t); t += alpha * x; t *= s. */
int nn_add_(nn_tensor *t, const nn_tensor *x);
int nn_axpy_(nn_tensor *t, double alpha, const nn_tensor *x);
int nn_mul_scalar_(nn_tensor *t, double s);
/* In place, not recorded: t *= x, x broadcast to t (same float dtype). NN_ERR_SHAPE when x does
 * not broadcast to t's shape, NN_ERR_DTYPE on a dtype mismatch. */
int nn_mul_(nn_tensor *t, const nn_tensor *x);

/* ---- unary math and activations ----
 * Each takes a float32 or float64 tensor of any shape and strides and returns a new contiguous
 * tensor of the same shape and dtype; each is differentiable, its gradient computed by one fused
 * kernel pass. An int64 input is NN_ERR_DTYPE ("exp: int64 input; convert to float first"). NaN
 * inputs give NaN outputs (PyTorch's rule); the notes below say where a gradient at a kink or a
 * domain edge is defined by convention.
 * Accuracy: float64 uses libm. float32 exp, log, tanh, sigmoid, softplus and GELU use wb's own
 * vectorizable polynomials (as PyTorch uses Sleef), within 4 ulp of the exact value over the
 * whole range; GELU is within 8 ulp where |output| > 1e-4 and loses relative accuracy (to ~1e-5)
 * in its far negative tail, where PyTorch's float formula returns 0. */

int nn_neg(nn_tensor **out, nn_tensor *a);   /* -a */
int nn_exp(nn_tensor **out, nn_tensor *a);   /* e^a */
int nn_log(nn_tensor **out, nn_tensor *a);   /* natural log; -inf at 0, NaN below 0 */
int nn_sqrt(nn_tensor **out, nn_tensor *a);  /* NaN below 0; gradient 1 / (2 sqrt(a)), inf at 0 */
int nn_rsqrt(nn_tensor **out, nn_tensor *a); /* 1 / sqrt(a); gradient -0.5 a^-1.5 */
/* |a|; gradient sign(a), 0 at a == 0 (PyTorch). */
int nn_abs(nn_tensor **out, nn_tensor *a);
/* a^p for a scalar exponent; gradient p a^(p-1), exactly 0 when p == 0. p == 2 and p == 1 take
 * exact fast paths (a*a, a). */
int nn_pow_scalar(nn_tensor **out, nn_tensor *a, double p);
/* a^b elementwise with broadcasting (operands of one float dtype). Gradients: da = b a^(b-1)
 * (0 where b == 0), db = a^b ln a (0 where a == 0 and b >= 0, as PyTorch). */
int nn_pow(nn_tensor **out, nn_tensor *a, nn_tensor *b);
/* min(max(a, lo), hi): pass -INFINITY or INFINITY for a one-sided clamp; when lo > hi every
 * element becomes hi (PyTorch). NaN elements stay NaN. Gradient 1 where lo <= a <= hi (the
 * bounds included, as PyTorch), 0 outside and at NaN. NN_ERR_ARG when lo or hi is NaN. */
int nn_clamp(nn_tensor **out, nn_tensor *a, double lo, double hi);

/* max(a, 0); NaN stays NaN (PyTorch). Gradient 1 where the output is > 0, else 0 (0 at a == 0
 * and at NaN). */
int nn_relu(nn_tensor **out, nn_tensor *a);
/* a > 0 ? a : slope * a; gradient 1 where a > 0, slope elsewhere (slope at a == 0). */
int nn_leaky_relu(nn_tensor **out, nn_tensor *a, double slope);
int nn_tanh(nn_tensor **out, nn_tensor *a);    /* gradient 1 - tanh(a)^2, from the output */
int nn_sigmoid(nn_tensor **out, nn_tensor *a); /* 1 / (1 + e^-a); gradient s (1 - s) */
/* GELU (Hendrycks & Gimpel 2016). tanh_approx false: a Phi(a) = a/2 (1 + erf(a / sqrt 2)), the
 * exact form and PyTorch's default; true: a/2 (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))), PyTorch's
 * approximate="tanh". */
int nn_gelu(nn_tensor **out, nn_tensor *a, bool tanh_approx);
/* PyTorch's Softplus: log(1 + e^(beta a)) / beta, and a itself where beta * a > threshold
 * (gradient 1 there, sigmoid(beta a) elsewhere). PyTorch's defaults are beta 1, threshold 20.
 * Evaluated as (max(z, 0) + log(1 + e^-|z|)) / beta, z = beta a, which cannot overflow.
 * NN_ERR_ARG when beta is 0 or beta or threshold is NaN. */
int nn_softplus(nn_tensor **out, nn_tensor *a, double beta, double threshold);

/* ---- two-operand selections (broadcasting, operands of one float dtype) ----
 * Elementwise max / min. NaN in either operand gives NaN (PyTorch; not C's fmax). Gradient goes
 * to the selected operand; on ties (a == b) it is split evenly, half to each (PyTorch). Broadcast
 * operands receive the gradient summed back to their shape. */
int nn_maximum(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_minimum(nn_tensor **out, nn_tensor *a, nn_tensor *b);

/* ---- comparisons (not differentiable) ----
 * out = (a op b) as 0 or 1, with broadcasting. Float operands must share a dtype and the result
 * has that dtype; two int64 operands (labels, argmax indices) give a float32 result. Mixed
 * dtypes are NN_ERR_DTYPE, shapes that do not broadcast NN_ERR_SHAPE. Comparisons with NaN are
 * false, except ne, which is true (IEEE). The result never requires grad. */
int nn_eq(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_ne(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_gt(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_ge(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_lt(nn_tensor **out, nn_tensor *a, nn_tensor *b);
int nn_le(nn_tensor **out, nn_tensor *a, nn_tensor *b);
/* a op s with a scalar; s is first rounded to a's float dtype (PyTorch), int64 a compares in
 * double. Result dtype as above. */
int nn_eq_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_ne_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_gt_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_ge_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_lt_scalar(nn_tensor **out, nn_tensor *a, double s);
int nn_le_scalar(nn_tensor **out, nn_tensor *a, double s);

/* ---- selection by a condition or mask ----
 * cond ? a : b elementwise; cond, a and b broadcast together to the output shape. cond may have
 * any dtype (nonzero is true, NaN counts as true); a and b share one float dtype, which the output
 * has. Gradient: dout flows to a where cond is true and to b elsewhere (summed back to each
 * operand's shape); none to cond. NN_ERR_SHAPE names all three shapes when they do not
 * broadcast. */
int nn_where(nn_tensor **out, nn_tensor *cond, nn_tensor *a, nn_tensor *b);
/* a with the elements where mask is nonzero replaced by v. mask (any dtype) must broadcast to a's
 * shape (the output has a's shape and dtype), else NN_ERR_SHAPE. Gradient: dout where the mask is
 * zero, 0 where filled; none to mask. */
int nn_masked_fill(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double v);
/* Dropout with a caller-supplied mask: out = a * mask * scale, mask (0/1 values, a's float dtype)
 * broadcast to a's shape (out has a's shape), else NN_ERR_SHAPE / NN_ERR_DTYPE. Inverted dropout
 * with keep probability q uses scale = 1/q. Gradient: da = dout * mask * scale; none to mask (a
 * mask that requires grad is treated as a constant). The mask is retained until backward. */
int nn_dropout_mask(nn_tensor **out, nn_tensor *a, nn_tensor *mask, double scale);

/* ---- kernel codes, for backends (p->i[0] of the kernels in ops_elementwise.def) ----
 * NN_OP_UNARY computes out = f(in0); NN_OP_UNARY_BACKWARD computes out = dout * f'(.) from
 * in0 = dout and in1 = the tensor named after each code: x (the op's input) or y (its output). */
enum {
  NN_UN_NEG,        /* -x; backward ignores in1 */
  NN_UN_EXP,        /* backward from y */
  NN_UN_LOG,        /* backward from x */
  NN_UN_SQRT,       /* backward from y */
  NN_UN_RSQRT,      /* backward from y */
  NN_UN_ABS,        /* backward from x */
  NN_UN_POW,        /* x^f[0]; backward from x */
  NN_UN_CLAMP,      /* lo f[0], hi f[1]; backward from x */
  NN_UN_RELU,       /* backward from y */
  NN_UN_LEAKY_RELU, /* slope f[0]; backward from x */
  NN_UN_TANH,       /* backward from y */
  NN_UN_SIGMOID,    /* backward from y */
  NN_UN_GELU,       /* exact (erf); backward from x */
  NN_UN_GELU_TANH,  /* tanh approximation; backward from x */
  NN_UN_SOFTPLUS,   /* beta f[0], threshold f[1]; backward from x */
  NN_UN_COUNT
};
/* NN_OP_COMPARE codes. */
enum { NN_CMP_EQ, NN_CMP_NE, NN_CMP_GT, NN_CMP_GE, NN_CMP_LT, NN_CMP_LE, NN_CMP_COUNT };

#endif
