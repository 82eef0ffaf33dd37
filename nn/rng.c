/* nn/rng.c: Philox-4x32-10, the default generator, and the random-tensor front-ends (their
 * kernels are the RNG_* ops, in backend/cpu/cpu_rng.c). Constants from Salmon et al., SC'11. */
#include "rng.h"
#include "backend.h"

#include <math.h>
#include <stdlib.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void nn_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

void nn_rng_init(nn_rng *r, uint64_t seed, uint64_t stream) {
  r->seed = seed;
  r->stream = stream;
  r->offset = 0;
}

static nn_rng default_rng = {0, 0, 0};

nn_rng *nn_default_rng(void) { return &default_rng; }

void nn_manual_seed(uint64_t seed) { nn_rng_init(&default_rng, seed, 0); }

uint32_t nn_rng_word(const nn_rng *r, uint64_t block, int w) {
  uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)r->stream,
                     (uint32_t)(r->stream >> 32)};
  uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)}, out[4];
  nn_philox4x32(ctr, key, out);
  return out[w & 3];
}

double nn_rng_uniform(nn_rng *r) {
  uint32_t x = nn_rng_word(r, r->offset++, 0);
  return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0);
}

uint64_t nn_rng_below(nn_rng *r, uint64_t n) {
  uint64_t b = r->offset++;
  uint64_t x = ((uint64_t)nn_rng_word(r, b, 0) << 32) | nn_rng_word(r, b, 1);
  /* multiply-shift: bias below 2^-64 * n, negligible for tensor-sized n */
  return (uint64_t)(((unsigned __int128)x * n) >> 64);
}

/* ---------------------------------------------------------------- random tensors */

static nn_rng *rng_or_default(nn_rng *r) { return r ? r : &default_rng; }

static void rng_params(nn_op_params *p, const nn_rng *r) {
  p->i[0] = (int64_t)r->seed;
  p->i[1] = (int64_t)r->stream;
  p->i[2] = (int64_t)r->offset;
}

/* Runs fill kernel op on t (a contiguous temporary when t is strided), then advances r. */
static int fill_draw(const char *name, int op, nn_tensor *t, nn_op_params *p, nn_rng *r,
                     uint64_t per_block) {
  if (t->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "%s: tensor must be float32 or float64, got int64", name);
  r = rng_or_default(r);
  rng_params(p, r);
  uint64_t n = (uint64_t)nn_tensor_numel(t);
  int rc;
  if (nn_tensor_is_contiguous(t)) {
    rc = nn_dispatch(op, 1, &t, 0, NULL, p);
  } else {
    nn_tensor *c = NULL;
    rc = nn_tensor_empty(&c, t->ndim, t->shape, t->dtype, t->storage->device);
    if (!rc) rc = nn_dispatch(op, 1, &c, 0, NULL, p);
    if (!rc) rc = nn_copy_(t, c);
    nn_tensor_free(c);
  }
  if (!rc) r->offset += (n + per_block - 1) / per_block;
  return rc;
}

int nn_uniform_(nn_tensor *t, double lo, double hi, nn_rng *rng) {
  if (!(lo <= hi) || !isfinite(hi - lo))
    return nn_seterr(NN_ERR_ARG, "uniform_: needs finite lo <= hi, got [%g, %g)", lo, hi);
  nn_op_params p = {0};
  p.f[0] = lo;
  p.f[1] = hi;
  return fill_draw("uniform_", NN_OP_RNG_UNIFORM, t, &p, rng, 4);
}

int nn_normal_(nn_tensor *t, double mean, double std, nn_rng *rng) {
  if (!isfinite(mean) || !(std >= 0) || !isfinite(std))
    return nn_seterr(NN_ERR_ARG,
                     "normal_: needs a finite mean and a finite std >= 0, got mean %g, "
                     "std %g",
                     mean, std);
  nn_op_params p = {0};
  p.f[0] = mean;
  p.f[1] = std;
  return fill_draw("normal_", NN_OP_RNG_NORMAL, t, &p, rng, 2);
}

int nn_bernoulli_(nn_tensor *t, double pr, nn_rng *rng) {
  if (!(pr >= 0 && pr <= 1))
    return nn_seterr(NN_ERR_ARG, "bernoulli_: p must be in [0, 1], got %g", pr);
  nn_op_params p = {0};
  p.f[0] = pr;
  return fill_draw("bernoulli_", NN_OP_RNG_BERNOULLI, t, &p, rng, 4);
}

static int new_draw(nn_tensor **out, int ndim, const int64_t *shape, nn_rng *rng, bool normal) {
  *out = NULL;
  int rc = nn_tensor_empty(out, ndim, shape, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = normal ? nn_normal_(*out, 0.0, 1.0, rng) : nn_uniform_(*out, 0.0, 1.0, rng);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

int nn_rand(nn_tensor **out, int ndim, const int64_t *shape, nn_rng *rng) {
  return new_draw(out, ndim, shape, rng, false);
}

int nn_randn(nn_tensor **out, int ndim, const int64_t *shape, nn_rng *rng) {
  return new_draw(out, ndim, shape, rng, true);
}

int nn_randperm(nn_tensor **out, int64_t n, nn_rng *rng) {
  *out = NULL;
  if (n < 0) return nn_seterr(NN_ERR_ARG, "randperm: n must be >= 0, got %lld", (long long)n);
  int rc = nn_tensor_empty(out, 1, &n, NN_DTYPE_I64, nn_cpu);
  if (rc) return rc;
  nn_rng *r = rng_or_default(rng);
  int64_t *a = nn_tensor_data(*out);
  for (int64_t i = 0; i < n; i++) a[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)nn_rng_below(r, (uint64_t)i + 1), t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return NN_OK;
}

int nn_categorical(nn_tensor **out, nn_tensor *probs, int64_t n_samples, nn_rng *rng) {
  *out = NULL;
  char b[128];
  if (probs->ndim < 1 || probs->ndim > 2)
    return nn_seterr(NN_ERR_SHAPE, "categorical: probs must be (C) or (N, C), got shape %s",
                     nn_shape_str(probs, b, sizeof b));
  if (probs->dtype == NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "categorical: probs must be float32 or float64, got int64");
  if (n_samples < 0)
    return nn_seterr(NN_ERR_ARG, "categorical: n_samples must be >= 0, got %lld",
                     (long long)n_samples);
  nn_rng *r = rng_or_default(rng);
  /* the kernel sees (N, C) probs and writes (N, S) */
  nn_tensor p2 = *probs; /* geometry only: shares probs' storage, never freed */
  if (probs->ndim == 1) {
    p2.ndim = 2;
    p2.shape[0] = 1;
    p2.stride[0] = 0;
    p2.shape[1] = probs->shape[0];
    p2.stride[1] = probs->stride[0];
  }
  int64_t N = p2.shape[0], sh[2] = {N, n_samples};
  nn_tensor *o = NULL, *pin = &p2;
  int rc = nn_tensor_empty(&o, 2, sh, NN_DTYPE_I64, probs->storage->device);
  if (!rc) {
    nn_op_params p = {0};
    rng_params(&p, r);
    rc = nn_dispatch(NN_OP_RNG_CATEGORICAL, 1, &o, 1, &pin, &p);
  }
  if (!rc && probs->ndim == 1) { /* (1, S) -> (S) */
    o->ndim = 1;
    o->shape[0] = n_samples;
    o->stride[0] = 1;
  }
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  r->offset += ((uint64_t)N * (uint64_t)n_samples + 3) / 4;
  *out = o;
  return NN_OK;
}
