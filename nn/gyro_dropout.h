/* nn/gyro_dropout.h: gyro dropout and block-wise dropout (Lee et al., "Gyro Dropout: Maximizing
 * Ensemble Effect in Neural Network Training", MLSys 2022), and the container that turns
 * block-wise dropout into saved work.
 *
 * Shapes: N batch rows, U units per row (the product of the non-batch dims), G row groups,
 * bs block size, nb = U / bs blocks.
 *
 * GyroDropout pre-selects sigma masks when it is built (each unit, or each block of bs units,
 * kept with probability 1 - p). Training runs in periods of `period` iterations (the paper's
 * period = total_iters * tau / sigma, rounded down, at least 1): at the start of each period tau
 * distinct masks are drawn from the pool; every minibatch is cut into tau contiguous row groups
 * (group g: rows [g*N/tau, (g+1)*N/tau), so any N works, the last partial batch included) and
 * group g uses the g-th drawn mask, scaled by 1 / (1 - p) (inverted dropout). Evaluation uses the
 * whole network (identity). The draw of period k is a pure function of (key, k): Fisher-Yates
 * over the pool's indices with Philox (seed = key, stream NN_GYRO_STREAM, offset k * tau). With
 * shared = true the key is the default generator's seed when the layer is built, so every gyro
 * layer built after one nn_manual_seed (with equal sigma, tau and period) draws the same indices:
 * index j picks subnetwork j in every layer, the paper's idea; shared = false (the released
 * code's behaviour) gives each layer its own key from the generator.
 *
 * State in module buffers, hence in checkpoints (nn_checkpoint_save): "pool" float32 (sigma, nb)
 * the masks, "draw" int64 (tau) the current period's mask indices, "step" int64 (1) training
 * forwards so far, "key" int64 (1). A resumed run continues bit for bit.
 *
 * BlockDropout drops blocks of bs contiguous units: each training forward draws a fresh (groups,
 * nb) block mask (each block kept with probability 1 - p) from the module's generator (m->rng,
 * NULL: the default one); groups = 1 shares one mask over the minibatch.
 *
 * Devices: the layers follow their input. The mask is made on the input's device (BlockDropout
 * draws it there: the same numbers on every device, nn/rng.h). GyroDropout's state may live on
 * any device (nn_module_to moves it with the model); off the CPU each training forward reads the
 * step and the draw (or the key, at a period's start) with one synchronisation each, and copies
 * the drawn pool rows on the device.
 *
 * On their own, both layers multiply by the expanded mask (dense work). Inside a
 * BlockSequential a Linear -> [elementwise activations] -> block-wise dropout -> Linear chain
 * runs on nn_block_linear: the first product computes only the kept output blocks, the second
 * reads only the kept input blocks, forward and backward, with the same values as the dense
 * computation with the mask (up to float32 summation order) and the same random draws.
 */
#ifndef NN_GYRO_DROPOUT_H
#define NN_GYRO_DROPOUT_H

#include "module.h"

#define NN_GYRO_STREAM 0x6779726fULL /* "gyro": the Philox stream of the draws */

typedef struct nn_gyro_opts {
  double p;       /* drop probability in [0, 1) */
  int64_t size;   /* units per row U (required: the pool is built with the layer) */
  int sigma, tau; /* pool size and masks per period (sigma >= tau >= 1); paper: 256, 16 */
  int64_t iters;  /* total training iterations; period = max(1, iters * tau / sigma) */
  int64_t period; /* or the period directly (> 0 overrides iters) */
  int64_t block;  /* 1: unit-wise masks; > 1: blocks of this many units (must divide size) */
  bool shared;    /* one index picks the same subnetwork in every gyro layer */
} nn_gyro_opts;

/* New GyroDropout; draws the pool from the default generator. Errors: NN_ERR_ARG naming the
 * option (p outside [0, 1), sigma < tau, tau < 1, size <= 0, block not dividing size, neither
 * iters nor period). */
int nn_gyro_dropout_new(nn_module **out, const nn_gyro_opts *o);
/* The period of o in iterations (max(1, iters * tau / sigma), or o->period when > 0). */
int64_t nn_gyro_period(const nn_gyro_opts *o);

/* New BlockDropout. Errors: NN_ERR_ARG (p outside [0, 1), block < 1, groups < 1). The block size
 * must divide the units of the input (checked at forward, NN_ERR_SHAPE). */
int nn_block_dropout_new(nn_module **out, double p, int64_t block, int64_t groups);

/* A Sequential (children "0", "1", ...; retained) that, while training, fuses Linear ->
 * [ReLU, LeakyReLU, GELU, Tanh, Sigmoid, Softplus]* -> BlockDropout or GyroDropout (block > 1)
 * -> Linear chains into block-sparse products (nn_block_linear). In evaluation, and for any
 * other layers, it runs the children one by one like nn_sequential_new. Parameter names are a
 * Sequential's, so checkpoints move between the two. */
int nn_block_sequential_new(nn_module **out, int n, nn_module *const *children);

/* Constructors by name for the layer registry (nn/layers.c): "GyroDropout" (p, size, sigma,
 * tau, iters, period, block, shared) and "BlockDropout" (p, block, groups). */
int nn_gyro_dropout_ctor(nn_module **out, int n, const nn_opt *o);
int nn_block_dropout_ctor(nn_module **out, int n, const nn_opt *o);

#endif
