/* nn/ops_elementwise.h: elementwise arithmetic with broadcasting, activations, where/masked_fill.
 * All functions return NN_OK or NN_ERR_* (message in nn_errmsg()); *out is a new reference.
 * Binary ops broadcast numpy-style; both operands must have the same float dtype. */
#ifndef NN_OPS_ELEMENTWISE_H
#define NN_OPS_ELEMENTWISE_H

#include "tensor.h"

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

#endif
