/* nn/nn.h: wb's core in one include: tensors, autograd, ops, random numbers. */
#ifndef NN_NN_H
#define NN_NN_H

#include "autograd.h"
#include "data.h"
#include "ops_core.h"
#include "ops_elementwise.h"
#include "ops_index.h"
#include "ops_nnet.h"
#include "ops_reduce.h"
#include "rng.h"
#include "tensor.h"

#endif
