/* nn/ops_core.h: matrix products and the reductions that broadcasting's backward needs.
 * All functions return NN_OK or NN_ERR_* (message in nn_errmsg()); *out is a new reference. */
#ifndef NN_OPS_CORE_H
#define NN_OPS_CORE_H

#include "tensor.h"

/* Matrix product with numpy/PyTorch semantics: 1-D x 1-D dot, 2-D x 2-D matrix product, and
 * batched products of >= 3-D operands whose batch dims broadcast. float32 or float64 operands of
 * one dtype. Transposed views are passed to BLAS as transposes, never copied. */
int nn_matmul(nn_tensor **out, nn_tensor *a, nn_tensor *b);
/* out (N, O) = x (N, I) @ w(O, I)^T + bias (O) (PyTorch Linear layout); bias may be NULL. */
int nn_linear(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias);

/* Sum of t reduced to shape (which t broadcasts to): the gradient of a broadcast. */
int nn_sum_to_shape(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape);
/* Sum over the dims flagged in mask (bit d = dim d); keepdim keeps them as size 1. */
int nn_sum_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim);

#endif
