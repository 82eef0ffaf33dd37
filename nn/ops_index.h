/* nn/ops_index.h: indexing and joining: embedding lookup, index_select, gather, scatter_add,
 * concat, stack, split and one_hot.
 *
 * All functions return NN_OK or a negative NN_ERR_* code with a message naming the op and the
 * shapes in nn_errmsg(); out-parameters are NULL unless the call succeeded, and *out is a new
 * reference (nn_tensor_free). Inputs are borrowed: nothing here keeps a pointer to them except the
 * autograd graph, which retains what backward needs.
 *
 * Index tensors are int64 and hold 0-based positions (no negative wrap-around: -1 is out of
 * range). Every index is checked before use: a value outside [0, size) fails with NN_ERR_INDEX,
 * naming the op, the offending value, its position in the index tensor and the valid range. Dims
 * may be negative and count from the end (-1 is the last dim); a dim out of range is NN_ERR_INDEX.
 *
 * Value tensors may be float32, float64 or int64 (the gather/select/concat family copies any of
 * them; gradients flow only to float tensors), and may be arbitrary strided views. Gradients of
 * repeated indices (embedding, index_select, gather backward; scatter_add forward) are summed
 * in ascending index-position order on one thread per output element: the result is bit-identical
 * run to run and for any thread count (no atomics).
 */
#ifndef NN_OPS_INDEX_H
#define NN_OPS_INDEX_H

#include "tensor.h"

/* Embedding lookup: out[..., :] = weight[idx[...], :].
 * weight (V, D) float; idx int64 of any shape (0-dim included) with values in [0, V);
 * out (..., D) with idx's shape followed by D. Differentiable in weight: the gradient of a row
 * used by several positions is the sum of their output gradients (rows never used get 0).
 * Errors: NN_ERR_SHAPE (weight not 2-D), NN_ERR_DTYPE (idx not int64, weight int64),
 * NN_ERR_INDEX (an index outside [0, V)). */
int nn_embedding(nn_tensor **out, nn_tensor *weight, nn_tensor *idx);

/* Selects entries of t along dim: out has t's shape with shape[dim] = K, and
 * out[.., k, ..] = t[.., idx[k], ..]. idx int64, 1-D of K values in [0, t->shape[dim]) (a
 * 0-dim idx counts as one value). Repeats allowed. Differentiable in t.
 * Errors: NN_ERR_INDEX (dim or an index out of range), NN_ERR_SHAPE (idx not 1-D),
 * NN_ERR_DTYPE (idx not int64). */
int nn_index_select(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx);

/* PyTorch gather: out has idx's shape and out[i][j][k] = t[idx[i][j][k]][j][k] for dim 0
 * (likewise for other dims). idx int64 with t's number of dims, idx->shape[d] <= t->shape[d] for
 * every d != dim, values in [0, t->shape[dim]). Differentiable in t (the backward is a
 * scatter_add into zeros). Errors: NN_ERR_INDEX, NN_ERR_SHAPE (ndims differ or idx larger than
 * t off dim), NN_ERR_DTYPE. */
int nn_gather(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx);

/* PyTorch scatter_add, out of place: out = copy of t, then
 * out[idx[i][j][k]][j][k] += src[i][j][k] for dim 0 (likewise for other dims), over idx's shape.
 * t, idx, src have one number of dims; idx->shape[d] <= src->shape[d] for all d and
 * idx->shape[d] <= t->shape[d] for d != dim; only the leading idx-shaped block of src is read.
 * t and src share a dtype. This is the segment sum of graph networks: each output element adds
 * its contributions in ascending order of their position along dim, deterministically.
 * Differentiable in t (dout) and src (dout gathered at idx; zero outside the idx block).
 * Errors: NN_ERR_INDEX, NN_ERR_SHAPE, NN_ERR_DTYPE. */
int nn_scatter_add(nn_tensor **out, nn_tensor *t, int dim, nn_tensor *idx, nn_tensor *src);

/* Concatenates ts[0..n) along dim: every input has the same number of dims (>= 1), dtype and
 * sizes off dim; out->shape[dim] is the sum of theirs. Differentiable in every input, for any n:
 * an autograd node holds at most NN_NODE_MAX_IN inputs, so for n > 4 the inputs are grouped four
 * at a time under intermediate tensors that are views of out's own storage (no extra copy), each
 * with a node that narrows its gradient to its members; the groups nest until at most four
 * remain for out's node. Errors: NN_ERR_ARG (n < 1), NN_ERR_INDEX (dim), NN_ERR_SHAPE,
 * NN_ERR_DTYPE. */
int nn_concat(nn_tensor **out, int n, nn_tensor *const *ts, int dim);

/* Stacks ts[0..n), all of one shape, along a new dim: out has n at position dim (in
 * [-(ndim+1), ndim]) and out[.., i, ..] = ts[i]. Differentiable in every input as nn_concat.
 * Errors: as nn_concat. */
int nn_stack(nn_tensor **out, int n, nn_tensor *const *ts, int dim);

/* Splits t along dim into n consecutive pieces of sizes[0..n) (each >= 0, summing to
 * t->shape[dim]). outs[0..n) receive views of t (nn_narrow: sharing its storage, differentiable).
 * Errors: NN_ERR_ARG (n < 1, a negative size), NN_ERR_SHAPE (sizes do not add up),
 * NN_ERR_INDEX (dim). On error every outs[i] is NULL. */
int nn_split(nn_tensor **outs, nn_tensor *t, int n, const int64_t *sizes, int dim);

/* One-hot encoding: labels int64 of any shape with values in [0, num_classes) -> float32
 * (..., num_classes) with 1 at the label and 0 elsewhere. Not differentiable.
 * Errors: NN_ERR_ARG (num_classes < 1), NN_ERR_DTYPE, NN_ERR_INDEX (a label out of range). */
int nn_one_hot(nn_tensor **out, nn_tensor *labels, int64_t num_classes);

#endif
