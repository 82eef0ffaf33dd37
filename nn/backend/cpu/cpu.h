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

#define F32(t) ((float *)nn_tensor_data(t))
#define F64(t) ((double *)nn_tensor_data(t))
#define I64(t) ((int64_t *)nn_tensor_data(t))

#endif
