/* nn/ops_reduce.h: reductions (sum, mean, var, max, min, argmax), softmax and log-softmax, the
 * losses (cross-entropy with hard or soft targets, NLL, MSE), topk and sort.
 *
 * Conventions shared by every function here:
 * - All return NN_OK or a negative NN_ERR_* code with a message naming the op, the dim and the
 *   shapes in nn_errmsg(); on error every out-parameter is NULL. Each output is a new reference
 *   (release it with nn_tensor_free), contiguous, on the input's device.
 * - dim counts from the end when negative (-1 is the last dim). A dim outside [-ndim, ndim) is
 *   NN_ERR_INDEX ("max: dim 2 out of range for shape (3, 4)"). A 0-dim tensor takes dim 0 or -1
 *   and behaves as a tensor of one element.
 * - keepdim keeps the reduced dim with size 1; otherwise it is removed.
 * - Float ops accept float32 and float64 and return the input's dtype; int64 input is
 *   NN_ERR_DTYPE except where said (max, min, argmax, argmin, sort, argsort, topk take int64).
 * - Results are deterministic: every output element is accumulated serially in a fixed order
 *   (sum, mean and var in double), and threads only split independent outputs, so the bits do
 *   not depend on the thread count.
 * - NaN follows PyTorch: max/min/argmax/argmin pick the first NaN; softmax of a row holding a
 *   NaN is NaN; sort and topk treat NaN as larger than +inf (last ascending, first descending).
 * - The values are differentiable (autograd records a node when an input requires grad);
 *   indices (int64) never are.
 */
#ifndef NN_OPS_REDUCE_H
#define NN_OPS_REDUCE_H

#include "tensor.h"

/* Reduction applied to the per-row (or per-element) losses: the mean over rows (elements for
 * MSE), the sum, or none (the unreduced losses are returned). */
typedef enum { NN_REDUCTION_MEAN, NN_REDUCTION_SUM, NN_REDUCTION_NONE } nn_reduction;

/* ---- sum, mean, var ---- */

/* Sum over dim (nn_sum) or over every element (nn_sum_all, a 0-dim result). Accumulates in
 * double. For a set of dims use nn_sum_dims (ops_core.h). */
int nn_sum(nn_tensor **out, nn_tensor *t, int dim, bool keepdim);
int nn_sum_all(nn_tensor **out, nn_tensor *t);

/* Arithmetic mean over dim, over the dims flagged in mask (bit d = dim d; a bit at or above ndim
 * is NN_ERR_INDEX; mask 0 returns the values themselves), or over every element (0-dim). The
 * mean over an empty dim is NaN. */
int nn_mean(nn_tensor **out, nn_tensor *t, int dim, bool keepdim);
int nn_mean_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim);
int nn_mean_all(nn_tensor **out, nn_tensor *t);

/* Variance over dim (or over the dims in mask): sum((x - mean)^2) / max(0, n - correction),
 * with n the number of elements reduced. correction 1 is the unbiased estimate, 0 the
 * population variance; correction < 0 is NN_ERR_ARG. Two passes in double (mean, then squared
 * deviations). n <= correction gives inf or NaN, as in PyTorch. */
int nn_var(nn_tensor **out, nn_tensor *t, int dim, bool keepdim, int correction);
int nn_var_dims(nn_tensor **out, nn_tensor *t, unsigned mask, bool keepdim, int correction);

/* ---- max, min, argmax, argmin ---- */

/* Largest (nn_max) or smallest (nn_min) element along dim. values has t's dtype; indices
 * (int64, positions along dim) may be NULL when not wanted. Ties pick the first index; a NaN
 * wins and its first index is returned. The gradient flows to the selected element only.
 * Reducing a dim of size 0 is NN_ERR_SHAPE. */
int nn_max(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool keepdim);
int nn_min(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool keepdim);
/* Over every element: a 0-dim value. An empty tensor is NN_ERR_SHAPE. */
int nn_max_all(nn_tensor **out, nn_tensor *t);
int nn_min_all(nn_tensor **out, nn_tensor *t);
/* Positions (int64) of the max / min along dim, with the tie and NaN rules of nn_max. */
int nn_argmax(nn_tensor **out, nn_tensor *t, int dim, bool keepdim);
int nn_argmin(nn_tensor **out, nn_tensor *t, int dim, bool keepdim);

/* ---- softmax ---- */

/* softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m) along dim, m the row's max (so large logits
 * do not overflow); log_softmax(x)_i = (x_i - m) - log sum_j exp(x_j - m). One fused kernel
 * forward, one backward (which reuses the saved output). A row of all -inf gives NaN. */
int nn_softmax(nn_tensor **out, nn_tensor *t, int dim);
int nn_log_softmax(nn_tensor **out, nn_tensor *t, int dim);

/* ---- losses ---- */

/* Cross-entropy of logits (N, C) float against class labels (N,) int64 in [0, C):
 * loss_n = logsumexp(logits[n, :]) - logits[n, labels[n]], reduced by red (MEAN divides by N;
 * an empty batch gives NaN). The result is 0-dim, or (N,) for NN_REDUCTION_NONE.
 * Fused: the forward kernel computes each row's log-sum-exp and loss in one sweep and keeps
 * only the log-sum-exp (N,) for backward, whose kernel writes (softmax - onehot) * dout (/ N)
 * in one pass. Gradient to logits only.
 * Errors: NN_ERR_SHAPE unless logits are (N, C) with C >= 1 and labels (N,); NN_ERR_DTYPE for
 * int64 logits or labels that are not int64; NN_ERR_INDEX naming the value and the row of a
 * label outside [0, C); NN_ERR_ARG for an unknown reduction. */
int nn_cross_entropy(nn_tensor **out, nn_tensor *logits, nn_tensor *labels, nn_reduction red);

/* Cross-entropy against class probabilities (distillation): targets (N, C), same dtype as the
 * logits: loss_n = -sum_c targets[n, c] * log_softmax(logits)[n, c]; MEAN divides by N.
 * Targets are not checked to be a distribution (rows need not sum to 1). Gradients to the logits,
 * (softmax * sum(targets) - targets) * dout, and to the targets when they require grad,
 * -log_softmax(logits) * dout. Errors as nn_cross_entropy (shapes must match). */
int nn_cross_entropy_soft(nn_tensor **out, nn_tensor *logits, nn_tensor *targets, nn_reduction red);

/* Negative log-likelihood of log-probabilities logp (N, C) (typically nn_log_softmax's output)
 * at labels (N,) int64: loss_n = -logp[n, labels[n]]. Reduction, errors and gradient (to logp)
 * as nn_cross_entropy, so nll_loss(log_softmax(x)) equals cross_entropy(x). */
int nn_nll_loss(nn_tensor **out, nn_tensor *logp, nn_tensor *labels, nn_reduction red);

/* Mean squared error: (a - b)^2 elementwise, reduced by red (MEAN over all elements; NONE keeps
 * a's shape). a and b must have the same shape (NN_ERR_SHAPE, no broadcasting) and the same float
 * dtype (NN_ERR_DTYPE). Gradients to both. */
int nn_mse_loss(nn_tensor **out, nn_tensor *a, nn_tensor *b, nn_reduction red);

/* ---- topk, sort ---- */

/* The k largest (largest = true) or smallest elements along dim, values and their int64
 * indices, shaped like t with dim of size k. Equal values come in index order and NaN counts as
 * the largest value. The result is always in sorted order (best first), so sorted = false is
 * accepted and gives the same answer. indices may be NULL. k < 0 or k larger than the dim is
 * NN_ERR_ARG. The gradient of values scatters back to the selected positions. */
int nn_topk(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int64_t k, int dim, bool largest,
            bool sorted);

/* Stable sort along dim, ascending or descending (equal elements keep their order; NaN last
 * ascending, first descending). indices (int64, may be NULL) gives each value's original
 * position. values is differentiable (the gradient is permuted back). */
int nn_sort(nn_tensor **values, nn_tensor **indices, nn_tensor *t, int dim, bool descending);
/* The indices of nn_sort alone (int64). */
int nn_argsort(nn_tensor **out, nn_tensor *t, int dim, bool descending);

#endif
