/* nn/backend/cpu/cpu_nnet.c: CPU kernels of the ops in nn/ops_nnet.def. */
#include "cpu.h"

void nn_cpu_register_nnet(nn_backend_i *be) { (void)be; }
