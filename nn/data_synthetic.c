/* nn/data_synthetic.c: small seeded datasets for tests and toy studies: heteroscedastic 1-D
 * regression, Gaussian blobs, two moons. Shape letters: N samples, D features, K classes.
 *
 * Draws are addressed, not sequential: element e of a draw reads Philox block e / 4 (uniforms) or
 * e / 2 (normals, the Box-Muller rule of rng.h) of a stream named after the dataset, so each
 * value is a pure function of (seed, e) and the sets are identical for every thread count.
 */
#include "data.h"

#include <math.h>
#include <stdlib.h>

#define TAG_REG_X 0x7265672d78ull    /* "reg-x" */
#define TAG_REG_E 0x7265672d65ull    /* "reg-e" */
#define TAG_BLOBS 0x626c6f6273ull    /* "blobs" */
#define TAG_MOON_T 0x6d6f6f6e2d74ull /* "moon-t" */
#define TAG_MOON_E 0x6d6f6f6e2d65ull /* "moon-e" */

static double u_of(uint32_t x) { return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0); }

/* Uniform (0, 1) number e of generator (seed, stream). */
static double uniform_at(const nn_rng *r, uint64_t e) { return u_of(nn_rng_word(r, e / 4, e % 4)); }

/* Standard normal number e of generator (seed, stream): Box-Muller on words 2(e%2), 2(e%2)+1 of
 * block e/2 (the rule of rng.h). */
static double normal_at(const nn_rng *r, uint64_t e) {
  int w = 2 * (int)(e % 2);
  double u1 = u_of(nn_rng_word(r, e / 2, w)), u2 = u_of(nn_rng_word(r, e / 2, w + 1));
  return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* Wraps freshly filled x and y, dropping our references either way. */
static int finish(nn_dataset **out, int rc, nn_tensor *x, nn_tensor *y, int n_classes) {
  if (!rc) rc = nn_dataset_new(out, x, y, n_classes);
  nn_tensor_free(x);
  nn_tensor_free(y);
  return rc;
}

int nn_data_regression1d(nn_dataset **out, int64_t n, double lo, double hi, double noise,
                         uint64_t seed) {
  *out = NULL;
  if (n < 0 || !(lo < hi) || !(noise >= 0) || !isfinite(lo) || !isfinite(hi))
    return nn_seterr(NN_ERR_ARG,
                     "regression1d: need n >= 0, finite lo < hi and noise >= 0; got n = %lld, "
                     "[%g, %g), noise = %g",
                     (long long)n, lo, hi, noise);
  int64_t shape[2] = {n, 1};
  nn_tensor *x = NULL, *y = NULL;
  int rc = nn_tensor_empty(&x, 2, shape, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_tensor_empty(&y, 2, shape, NN_DTYPE_F32, nn_cpu);
  if (!rc) {
    nn_rng rx, re;
    nn_rng_init(&rx, seed, TAG_REG_X);
    nn_rng_init(&re, seed, TAG_REG_E);
    float *px = nn_tensor_data(x), *py = nn_tensor_data(y);
    for (int64_t i = 0; i < n; i++) {
      double xi = lo + (hi - lo) * uniform_at(&rx, (uint64_t)i);
      if (xi >= hi) xi = lo; /* rounding at the top edge: keep the interval half-open */
      px[i] = (float)xi;
      py[i] = (float)(sin(3 * xi) + noise * (0.1 + fabs(xi)) * normal_at(&re, (uint64_t)i));
    }
  }
  return finish(out, rc, x, y, 0);
}

void nn_data_blob_center(double *center, int c, int k, int d) {
  for (int j = 0; j < d; j++) center[j] = 0;
  if (d == 1) {
    center[0] = 4.0 * c;
  } else {
    double a = 2 * M_PI * c / (k > 0 ? k : 1);
    center[0] = 4 * cos(a);
    center[1] = 4 * sin(a);
  }
}

int nn_data_blobs(nn_dataset **out, int64_t n, int k, int d, double std, uint64_t seed) {
  *out = NULL;
  if (n < 0 || k < 1 || d < 1 || !(std >= 0))
    return nn_seterr(NN_ERR_ARG,
                     "blobs: need n >= 0, k >= 1, d >= 1, std >= 0; got n = %lld, k = %d, d = %d, "
                     "std = %g",
                     (long long)n, k, d, std);
  int64_t xs[2] = {n, d};
  nn_tensor *x = NULL, *y = NULL;
  int rc = nn_tensor_empty(&x, 2, xs, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_tensor_empty(&y, 1, &n, NN_DTYPE_I64, nn_cpu);
  double *centers = rc ? NULL : malloc((size_t)k * (size_t)d * sizeof *centers);
  if (!rc && !centers) rc = nn_seterr(NN_ERR_NOMEM, "blobs: out of memory");
  if (!rc) {
    for (int c = 0; c < k; c++) nn_data_blob_center(centers + (size_t)c * d, c, k, d);
    nn_rng r;
    nn_rng_init(&r, seed, TAG_BLOBS);
    float *px = nn_tensor_data(x);
    int64_t *py = nn_tensor_data(y);
    for (int64_t i = 0; i < n; i++) {
      int c = (int)(i % k);
      py[i] = c;
      for (int j = 0; j < d; j++) {
        uint64_t e = (uint64_t)i * (uint64_t)d + (uint64_t)j;
        px[e] = (float)(centers[(size_t)c * d + j] + std * normal_at(&r, e));
      }
    }
  }
  free(centers);
  return finish(out, rc, x, y, k);
}

int nn_data_two_moons(nn_dataset **out, int64_t n, double noise, uint64_t seed) {
  *out = NULL;
  if (n < 0 || !(noise >= 0))
    return nn_seterr(NN_ERR_ARG, "two_moons: need n >= 0 and noise >= 0; got n = %lld, noise = %g",
                     (long long)n, noise);
  int64_t xs[2] = {n, 2};
  nn_tensor *x = NULL, *y = NULL;
  int rc = nn_tensor_empty(&x, 2, xs, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_tensor_empty(&y, 1, &n, NN_DTYPE_I64, nn_cpu);
  if (!rc) {
    nn_rng rt, re;
    nn_rng_init(&rt, seed, TAG_MOON_T);
    nn_rng_init(&re, seed, TAG_MOON_E);
    float *px = nn_tensor_data(x);
    int64_t *py = nn_tensor_data(y);
    for (int64_t i = 0; i < n; i++) {
      double t = M_PI * uniform_at(&rt, (uint64_t)i);
      int c = (int)(i % 2);
      double a = c ? 1 - cos(t) : cos(t), b = c ? 0.5 - sin(t) : sin(t);
      py[i] = c;
      px[2 * i] = (float)(a + noise * normal_at(&re, 2 * (uint64_t)i));
      px[2 * i + 1] = (float)(b + noise * normal_at(&re, 2 * (uint64_t)i + 1));
    }
  }
  return finish(out, rc, x, y, 2);
}
