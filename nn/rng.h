/* nn/rng.h: counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
 *
 * A generator is (key, counter): the key is the 64-bit seed, the 128-bit counter is the stream
 * id (high 64 bits) and an offset (low 64 bits) that counts Philox blocks already used. Each
 * block gives four 32-bit outputs. Because output n of a draw is a pure function of (seed, stream,
 * offset + n / 4, n % 4), any backend, any thread count and any order of evaluation give the same
 * numbers: the CUDA backend computes the same function per element.
 *
 * Draw rules (what every backend must reproduce), for a draw of n elements starting at offset o,
 * element i being the i-th of the tensor in row-major order:
 *   uniform u[i]   = ((x >> 8) + 0.5) * 2^-24 from output x = word i % 4 of block o + i / 4,
 *                    so u is in (0, 1); scaled as lo + (hi - lo) * u in double, then rounded to
 *                    the output dtype; a value that rounds to (dtype)hi or above is replaced by
 *                    the largest dtype value below it, so stored values lie in [lo, hi)
 *   normal z[i]    = Box-Muller on the pair of uniforms of words (2*(i%2), 2*(i%2)+1) of block
 *                    o + i / 2: z = sqrt(-2 ln u1) * cos(2 pi u2), in double; stored as
 *                    mean + std * z rounded to the dtype. (24-bit uniforms bound |z| by 5.9.)
 *   bernoulli b[i] = u[i] < p (1 or 0), u[i] as for uniform
 *   categorical    = for probs (N, C) and S samples per row, sample j of row r takes u[r*S + j]
 *                    and returns the smallest class k with cdf[k] > u * cdf[C-1], where cdf[k] is
 *                    the running sum p[0] + ... + p[k] of the row in double, in class order
 *                    (classes of probability 0 are never drawn)
 *   randperm       = Fisher-Yates on the host: for i = n-1 down to 1, swap a[i] and
 *                    a[nn_rng_below(r, i + 1)], starting from a = 0, 1, ..., n-1
 * and the generator's offset advances by the blocks the draw used: ceil(n/4) for uniform and
 * bernoulli, ceil(n/2) for normal, ceil(N*S/4) for categorical, n-1 for randperm (one block per
 * nn_rng_below; none for n < 2). A failed call leaves the offset unchanged. Independent streams:
 * nn_rng_init(&r, seed, stream) with distinct stream ids never overlap.
 *
 * Threads: a generator is a plain struct; calls that draw from one generator must not run
 * concurrently (the default generator included). The draws themselves may use many threads and
 * still give the same numbers.
 */
#ifndef NN_RNG_H
#define NN_RNG_H

#include "tensor.h"

typedef struct nn_rng {
  uint64_t seed;   /* Philox key */
  uint64_t stream; /* high half of the counter */
  uint64_t offset; /* low half: blocks used so far */
} nn_rng;

/* One Philox-4x32-10 block for key (k0, k1) and counter (c0..c3) into out[4]. */
void nn_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void nn_rng_init(nn_rng *r, uint64_t seed, uint64_t stream);
/* The process-wide default generator (stream 0), reseeded by nn_manual_seed. */
nn_rng *nn_default_rng(void);
void nn_manual_seed(uint64_t seed);

/* Word w (0..3) of block b of generator r, without advancing it. */
uint32_t nn_rng_word(const nn_rng *r, uint64_t block, int w);
/* Scalar draws that advance r by one block each (for host-side decisions: shuffles, choices). */
double nn_rng_uniform(nn_rng *r);             /* (0, 1) with 24-bit resolution as above */
uint64_t nn_rng_below(nn_rng *r, uint64_t n); /* uniform integer in [0, n) from 64 bits */

/* ---- random tensors ----
 * rng NULL means nn_default_rng(). Each call advances the generator as the rules above say and
 * returns NN_OK or NN_ERR_* (message in nn_errmsg()); out-parameters are new references, NULL on
 * error. The fills run as kernels (RNG_* in ops_index.def) on t's device; none is recorded by
 * autograd (they are initialisers, like nn_fill_). */

/* Fills t (float32 or float64) in place with uniform values in [lo, hi). t may be a strided view:
 * element i of the rules is t's i-th element in row-major order. Errors: NN_ERR_DTYPE (int64),
 * NN_ERR_ARG (lo > hi, or lo, hi or hi - lo not finite). */
int nn_uniform_(nn_tensor *t, double lo, double hi, nn_rng *rng);
/* Fills t with normal values of the given mean and standard deviation (std >= 0, finite).
 * Errors: NN_ERR_DTYPE, NN_ERR_ARG. */
int nn_normal_(nn_tensor *t, double mean, double std, nn_rng *rng);
/* Fills t with 1 (probability p) or 0. Errors: NN_ERR_DTYPE, NN_ERR_ARG (p outside [0, 1]). */
int nn_bernoulli_(nn_tensor *t, double p, nn_rng *rng);

/* New float32 CPU tensor of the given shape, uniform in [0, 1) (in fact (0, 1): see the rule). */
int nn_rand(nn_tensor **out, int ndim, const int64_t *shape, nn_rng *rng);
/* New float32 CPU tensor of the given shape, standard normal. */
int nn_randn(nn_tensor **out, int ndim, const int64_t *shape, nn_rng *rng);
/* New int64 (n) tensor holding a uniformly random permutation of 0 .. n-1, on the CPU.
 * Errors: NN_ERR_ARG (n < 0). */
int nn_randperm(nn_tensor **out, int64_t n, nn_rng *rng);
/* Draws n_samples class indices with replacement from each row of probs: probs (C) gives int64
 * (n_samples), probs (N, C) gives (N, n_samples). probs is float32 or float64, any strides, and
 * need not be normalised. Errors: NN_ERR_SHAPE (probs not 1-D or 2-D), NN_ERR_DTYPE,
 * NN_ERR_ARG (n_samples < 0; a row with a negative, NaN or infinite entry, or zero total mass,
 * or no classes: the message names the row and entry). */
int nn_categorical(nn_tensor **out, nn_tensor *probs, int64_t n_samples, nn_rng *rng);

#endif
