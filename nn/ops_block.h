/* nn/ops_block.h: block-sparse matrix products for block-wise dropout.
 *
 * Shapes: N rows (batch), I input and O output features, G row groups, bs block size.
 * A block mask is a float32 (G, U/bs) tensor of 0/1 flags: row group g (rows [g*N/G, (g+1)*N/G),
 * integer division, so any N and G work and a group may be empty) keeps unit block b of U units
 * (units [b*bs, (b+1)*bs)) when mask[g, b] != 0. Block-wise dropout (nn/gyro_dropout.h) draws
 * such masks; the products below then compute only the kept blocks, so dropped units cost no
 * work. All functions return NN_OK or NN_ERR_* (message in nn_errmsg()); *out is a new
 * reference, NULL on error.
 */
#ifndef NN_OPS_BLOCK_H
#define NN_OPS_BLOCK_H

#include "tensor.h"

/* out (N, O) = x (N, I) @ w (O, I)^T + bias (O), computed over kept blocks only:
 *   out[r, o] = o kept by kout ? sum over i kept by kin of x[r, i] * w[o, i] + bias[o] : 0.
 * kin (Gi, I/bsi) and kout (Go, O/bso) are block masks or NULL (every unit kept); bias may be
 * NULL. With kin equal to the mask of a dropout that zeroed x's dropped units, the result equals
 * the dense nn_linear followed by multiplying by the expanded kout mask (up to the order of the
 * float32 sums: BLAS blocks a shorter inner dimension differently). Differentiable in x, w and
 * bias: the gradients of the function above (zero at dropped units), computed over kept blocks
 * only. float32, on the CPU and on CUDA (backend/cuda/cuda_block.cu, which reads the masks to the
 * host with one synchronisation per call; x, w, bias and the masks on one device).
 * Errors: NN_ERR_SHAPE (x not 2-D, w not (O, I), bias not (O), a mask not 2-D or with a width
 * other than features/bs, a block size not dividing the features), NN_ERR_DTYPE (not float32),
 * NN_ERR_DEVICE (no kernel on the device, or tensors on different devices). */
int nn_block_linear(nn_tensor **out, nn_tensor *x, nn_tensor *w, nn_tensor *bias, nn_tensor *kin,
                    int64_t bsi, nn_tensor *kout, int64_t bso);

/* out (N, U) float32: row r holds mask (G, U/bs) row g(r) (its row group), each flag repeated
 * bs times: the dense dropout mask of a block mask. Not recorded by autograd.
 * Errors: NN_ERR_SHAPE (mask not 2-D, N < 0), NN_ERR_DTYPE (mask not float32). */
int nn_block_mask_expand(nn_tensor **out, nn_tensor *mask, int64_t n_rows, int64_t bs);

#endif
