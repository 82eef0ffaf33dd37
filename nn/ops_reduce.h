/* nn/ops_reduce.h: see nn/ops_reduce.c. All functions return NN_OK or NN_ERR_* (message in
 * nn_errmsg()); *out is a new reference. */
#ifndef NN_OPS_REDUCE_H
#define NN_OPS_REDUCE_H

#include "tensor.h"

#endif
