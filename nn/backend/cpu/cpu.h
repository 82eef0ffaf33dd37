/* nn/backend/cpu/cpu.h: shared helpers of the CPU kernels (internal).
 *
 * cpu_iter walks up to four same-shaped strided operands (inputs already expanded to the output
 * shape, stride 0 on broadcast dims). Dims that are contiguous in every operand are merged, so a
 * contiguous or simply-broadcast case becomes one long row. Rows are handed to a row function
 * with element strides; rows are split over OpenMP threads in fixed chunks, so the work each
 * element gets does not depend on the thread count. */
#ifndef NN_CPU_H
#define NN_CPU_H

#include "../../autograd.h"

#include <stdint.h>

#define CPU_MAX_OPS 4
/* Below this many elements a loop runs on one thread. */
#define CPU_PAR_MIN 32768

typedef struct cpu_iter {
  int n_ops;
  int ndim; /* after merging; >= 1 */
  int64_t shape[NN_MAX_DIMS];
  int64_t stride[CPU_MAX_OPS][NN_MAX_DIMS];
  char *base[CPU_MAX_OPS];
  int esize[CPU_MAX_OPS];
} cpu_iter;

/* One row: n elements; p[k] points at operand k's first element; s[k] its stride in elements. */
typedef void (*cpu_row_fn)(int64_t n, char *const *p, const int64_t *s, const void *ctx);

void cpu_iter_init(cpu_iter *it, int n_ops, nn_tensor *const *ops);
/* Calls fn over all rows; parallel when the total is large and parallel is true. */
void cpu_iter_run(const cpu_iter *it, cpu_row_fn fn, const void *ctx, bool parallel);

/* Per-group kernel registration (one per group file in backend/cpu). */
void nn_cpu_register_core(nn_backend_i *be);
void nn_cpu_register_elementwise(nn_backend_i *be);
void nn_cpu_register_reduce(nn_backend_i *be);
void nn_cpu_register_nnet(nn_backend_i *be);
void nn_cpu_register_norm(nn_backend_i *be); /* called by nn_cpu_register_nnet */
void nn_cpu_register_index(nn_backend_i *be);
void nn_cpu_register_optim(nn_backend_i *be);
void nn_cpu_register_block(nn_backend_i *be);

/* The threads wb may run single-threaded BLAS calls on side by side (cpu_core.c): 1 inside a
 * parallel region, without OpenMP, or with the pthreads OpenBLAS (which threads itself). */
int cpu_blas_threads(void);
/* The CPU has AVX-512 F, BW, VL and DQ (what the AVX-512 kernels are compiled for). */
bool cpu_have_avx512(void);

/* Winograd F(2x2, 5x5) convolution of one float32 sample (cpu_winograd.c). cpu_wino_usable: the
 * CPU has AVX-512 and nn_get_winograd() is on. U (36, Ci, Co) from w (O, C, 5, 5) by
 * cpu_wino_filters: Ci = C, Co = O for the forward; with dgrad, Ci = O, Co = C and the filters
 * flipped, for the input gradient. cpu_wino_conv: y (Co, OH, OW) contiguous = correlation of x
 * (Ci, H, W) (strides xs) zero-padded by ph, pw, with Ci and Co multiples of 16 and
 * OH = H + 2 ph - 4, OW = W + 2 pw - 4; scratch holds cpu_wino_scratch(Ci, Co, OH, OW) floats. */
bool cpu_wino_usable(void);
void cpu_wino_filters(float *U, const float *w, int64_t O, int64_t C, bool dgrad);
int64_t cpu_wino_scratch(int64_t Ci, int64_t Co, int64_t OH, int64_t OW);
void cpu_wino_conv(float *y, const float *x, const int64_t *xs, int64_t Ci, int64_t Co, int64_t H,
                   int64_t W, int64_t ph, int64_t pw, int64_t OH, int64_t OW, const float *U,
                   float *scratch);
/* The weight gradient: dU (36, Ci, Co) (+= unless first) the transform-domain gradient of one
 * sample x (Ci, H, W) with output gradient dy (Co, OH, OW) contiguous (same scratch as
 * cpu_wino_conv); cpu_wino_dw_finish: dw (O, C, 5, 5) from the sum dU (36, C, O). */
void cpu_wino_dw_sample(float *dU, const float *x, const int64_t *xs, const float *dy, int64_t Ci,
                        int64_t Co, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t OH,
                        int64_t OW, float *scratch, bool first);
void cpu_wino_dw_finish(float *dw, const float *dU, int64_t O, int64_t C);

#define F32(t) ((float *)nn_tensor_data(t))
#define F64(t) ((double *)nn_tensor_data(t))
#define I64(t) ((int64_t *)nn_tensor_data(t))

#endif
