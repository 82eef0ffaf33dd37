/* nn/rng.h: counter-based random numbers (Philox-4x32-10). */
#ifndef NN_RNG_H
#define NN_RNG_H

#include "tensor.h"

#endif
