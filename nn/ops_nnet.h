/* nn/ops_nnet.h: convolution, pooling and normalisation (PyTorch's conv2d, max_pool2d,
 * avg_pool2d, batch_norm, layer_norm).
 *
 * Shapes: N batch, C channels, H, W input height and width, O output channels, KH, KW kernel,
 * OH, OW output height and width. Layout is NCHW, weights are (O, C/groups, KH, KW), as in
 * PyTorch, so its weights load unchanged.
 *
 * All functions return NN_OK or NN_ERR_* with a message naming the op and the shapes
 * (nn_errmsg()); *out is a new reference on success and NULL on error. Inputs may be arbitrary
 * strided views. float32 and float64 are accepted (all float operands of one call share a
 * dtype); int64 is an NN_ERR_DTYPE error. Every op is differentiable with respect to every
 * float input (gradients to x, weight and bias); the gradients are recorded when grad mode is on
 * and an input requires grad. Results are bit-identical run to run for a fixed thread count,
 * and no reduction's order depends on the thread count (conv2d's weight gradient: up to 8
 * threads), so 1 and 2 threads give the same bits too. */
#ifndef NN_OPS_NNET_H
#define NN_OPS_NNET_H

#include "tensor.h"

/* Options of nn_conv2d. Each pair is (height, width). */
typedef struct nn_conv2d_opts {
  int stride[2];   /* >= 1 */
  int padding[2];  /* >= 0, zeros */
  int dilation[2]; /* >= 1 */
  int groups;      /* >= 1; C and O must be divisible by it */
} nn_conv2d_opts;

/* 2-D cross-correlation (PyTorch conv2d): x (N, C, H, W), w (O, C/groups, KH, KW), bias (O) or
 * NULL -> out (N, O, OH, OW) with OH = (H + 2*padding - dilation*(KH-1) - 1) / stride + 1 (floor)
 * and likewise OW. Group g of the output channels sees only input channels
 * [g*C/groups, (g+1)*C/groups); groups == C with O == k*C is a depthwise convolution.
 * o == NULL means stride 1, padding 0, dilation 1, groups 1. N may be 0 (an empty batch).
 * Gradients: dx by GEMM + col2im, dw summed over the batch, dbias the sum of dout over N, OH, OW.
 * On the CPU each call takes per-thread scratch of C*KH*KW*OH*OW (+ a padded input plane)
 * elements; nothing beyond the inputs is saved for backward (the columns are recomputed).
 * Errors: NN_ERR_SHAPE when x or w is not 4-D, bias is not (O), w's channel dim is not
 * C/groups, C or O is not divisible by groups, C or O is 0, or OH or OW < 1; NN_ERR_ARG for a
 * stride or dilation < 1, padding < 0 or groups < 1; NN_ERR_DTYPE for mixed or int64 dtypes. */
int nn_conv2d(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias,
              const nn_conv2d_opts *o);

/* 2-D max pooling: x (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2*padding - KH) / stride + 1.
 * kernel >= 1; stride NULL means stride = kernel; padding NULL means 0. Padding is -inf (never
 * selected) and must be at most half the kernel (PyTorch's rule), so every window holds at least
 * one input. A NaN in a window wins (PyTorch). The argmax of each window (an int64 per output,
 * kept while the graph lives) is saved for backward, which routes each output's gradient to that
 * one input (ties: the first in row-major order). Errors: NN_ERR_SHAPE for a non-4-D x or OH or
 * OW < 1; NN_ERR_ARG for a kernel or stride < 1, padding < 0 or padding > kernel/2. */
int nn_max_pool2d(nn_tensor **out, nn_tensor *x, const int kernel[2], const int stride[2],
                  const int padding[2]);

/* max_pool2d(relu(conv2d(x, w, bias, o)), kernel, stride, padding) in one op, with the
 * arguments of nn_conv2d and nn_max_pool2d: the same values and gradients bit for bit as the three
 * ops in turn (same thread count), without the conv output in memory (on the CPU each sample's
 * conv output goes through a per-thread buffer). Saves the argmax (an int64 per output) for
 * backward. nn.Sequential uses it for a Conv2d, ReLU, MaxPool2d run of its children. Errors:
 * those of nn_conv2d, then of nn_max_pool2d on the conv output's shape. */
int nn_conv2d_relu_max_pool2d(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias,
                              const nn_conv2d_opts *o, const int kernel[2], const int stride[2],
                              const int padding[2]);

/* 2-D average pooling with the shapes and arguments of nn_max_pool2d. Padding is zeros; with
 * count_include_pad the divisor is KH*KW, otherwise the number of non-padding inputs in the
 * window. Errors as nn_max_pool2d. */
int nn_avg_pool2d(nn_tensor **out, nn_tensor *x, const int kernel[2], const int stride[2],
                  const int padding[2], bool count_include_pad);

/* Mean over H and W: x (N, C, H, W) -> (N, C). Errors: NN_ERR_SHAPE for a non-4-D or empty x. */
int nn_global_avg_pool2d(nn_tensor **out, nn_tensor *x);

/* Batch normalisation (Ioffe & Szegedy 2015): x (N, C), (N, C, L) or (N, C, H, W); per
 * channel c,
 *   out = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c
 * weight and bias are (C) or NULL (1 and 0). running_mean and running_var are (C) or NULL.
 * training: mean and var are the batch statistics over all dims but C, var biased; the running
 *   statistics (when given) are updated in place, PyTorch's way:
 *     running_mean = (1 - momentum) * running_mean + momentum * mean
 *     running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
 *   with M = N*H*W (N*L, N) values per channel: the unbiased batch variance. The update is not
 *   recorded by autograd.
 * eval (training false): mean and var are running_mean and running_var, which are required.
 * Gradients flow to x, weight and bias in both modes (in eval the statistics are constants).
 * Errors: NN_ERR_SHAPE for x not 2-, 3- or 4-D, a parameter or statistic not (C), or training
 * with one value per channel (M == 1); NN_ERR_ARG for eval without running statistics or
 * eps < 0. */
int nn_batch_norm(nn_tensor **out, nn_tensor *x, nn_tensor *weight, nn_tensor *bias,
                  nn_tensor *running_mean, nn_tensor *running_var, bool training, double momentum,
                  double eps);

/* Layer normalisation (Ba et al. 2016) over the last n_norm_dims dims of x: each slice
 * x[i, ...] of D = prod(last n_norm_dims dims) values becomes
 *   out = (x - mean) / sqrt(var + eps) * weight + bias      (var biased)
 * weight and bias have exactly those n_norm_dims dims, or are NULL (1 and 0).
 * Errors: NN_ERR_SHAPE when n_norm_dims is not in [1, x->ndim], the normalised slice is empty,
 * or weight/bias do not have the normalised shape; NN_ERR_ARG for eps < 0. */
int nn_layer_norm(nn_tensor **out, nn_tensor *x, int n_norm_dims, nn_tensor *weight,
                  nn_tensor *bias, double eps);

#endif
