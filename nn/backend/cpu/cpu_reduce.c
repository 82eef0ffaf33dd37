/* nn/backend/cpu/cpu_reduce.c: CPU kernels of the ops in nn/ops_reduce.def. */
#include "cpu.h"

void nn_cpu_register_reduce(nn_backend_i *be) { (void)be; }
