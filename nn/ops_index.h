/* nn/ops_index.h: see nn/ops_index.c. All functions return NN_OK or NN_ERR_* (message in
 * nn_errmsg()); *out is a new reference. */
#ifndef NN_OPS_INDEX_H
#define NN_OPS_INDEX_H

#include "tensor.h"

#endif
