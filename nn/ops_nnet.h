/* nn/ops_nnet.h: see nn/ops_nnet.c. All functions return NN_OK or NN_ERR_* (message in
 * nn_errmsg()); *out is a new reference. */
#ifndef NN_OPS_NNET_H
#define NN_OPS_NNET_H

#include "tensor.h"

#endif
