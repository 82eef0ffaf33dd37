/* nn/data_transforms.c: training-time augmentations and robustness corruptions of image batches.
 *
 * Shape letters: N samples, C channels, H height, W width; every function maps x (N, C, H, W)
 * float32 to a new contiguous (N, C, H, W) float32 clamped to [0, 1]. Samples are independent,
 * so the loops over n run in parallel; random parameters are a pure function of (generator,
 * sample index), never of the thread that handles the sample.
 * Corruption parameters follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
 * Common Corruptions and Perturbations" (ICLR 2019) and Mu & Gilmer, "MNIST-C" (2019); the table
 * is in data.h.
 */
#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TAG_NOISE 0x6e6f697365ull    /* "noise" */
#define TAG_ROTATE 0x726f74617465ull /* "rotate" */
#define PAR_MIN 65536 /* elements below which threads cost more than they save (per-pixel math) */
#define PAR_MIN_COPY (1 << 22) /* the same for memory-bound copies: flips, shifts, the clamp */

typedef struct {
  int64_t n, c, h, w;
  const float *x; /* (N, C, H, W) contiguous input */
  float *o;       /* (N, C, H, W) output */
  nn_tensor *cx;  /* owned reference behind x */
} batch;

/* Checks x, makes it contiguous and allocates the output. */
static int batch_begin(batch *b, nn_tensor **out, const char *op, const nn_tensor *x) {
  char s[128];
  *out = NULL;
  memset(b, 0, sizeof *b);
  if (x->storage->device.type != NN_DEVICE_CPU)
    return nn_seterr(NN_ERR_DEVICE, "%s is not implemented on %s", op,
                     nn_device_name(x->storage->device.type));
  if (x->ndim != 4)
    return nn_seterr(NN_ERR_SHAPE, "%s: x must be (N, C, H, W), got %s", op,
                     nn_shape_str(x, s, sizeof s));
  if (x->dtype != NN_DTYPE_F32)
    return nn_seterr(NN_ERR_DTYPE, "%s: x must be float32, got %s", op, nn_dtype_name(x->dtype));
  nn_tensor *dx = NULL;
  int rc = nn_detach(&dx, (nn_tensor *)x);
  if (!rc) rc = nn_contiguous(&b->cx, dx);
  nn_tensor_free(dx);
  if (!rc) rc = nn_tensor_empty(out, 4, x->shape, NN_DTYPE_F32, nn_cpu);
  if (rc) {
    nn_tensor_free(b->cx);
    b->cx = NULL;
    return rc;
  }
  b->n = x->shape[0];
  b->c = x->shape[1];
  b->h = x->shape[2];
  b->w = x->shape[3];
  b->x = nn_tensor_data(b->cx);
  b->o = nn_tensor_data(*out);
  return NN_OK;
}

/* Clamps the output to [0, 1] and releases the input reference. */
static int batch_end(batch *b) {
  int64_t total = b->n * b->c * b->h * b->w;
  float *o = b->o;
#pragma omp parallel for simd schedule(static) if (total > PAR_MIN_COPY)
  for (int64_t i = 0; i < total; i++) { /* ternaries, not fminf/fmaxf: those are libm calls */
    float v = o[i];
    v = v < 0.0f ? 0.0f : v;
    o[i] = v > 1.0f ? 1.0f : v;
  }
  nn_tensor_free(b->cx);
  return NN_OK;
}

static int64_t img_size(const batch *b) { return b->c * b->h * b->w; }
static bool big(const batch *b) { return b->n * img_size(b) > PAR_MIN; }
static bool big_copy(const batch *b) { return b->n * img_size(b) > PAR_MIN_COPY; }

/* floor of a double as an integer, without the libm call that x86-64's baseline ISA needs */
static int64_t ifloor(double v) {
  int64_t i = (int64_t)v;
  return i - (i > v);
}

/* Uniform in (0, 1) from a Philox word, the rule of rng.h. */
static double word_uniform(uint32_t x) { return ((double)(x >> 8) + 0.5) * (1.0 / 16777216.0); }

/* All four words of block b of r in one Philox evaluation (nn_rng_word computes the same block
 * per word; the counter layout here is the one rng.c uses: block, then stream, key = seed). */
static void block_words(const nn_rng *r, uint64_t b, uint32_t out[4]) {
  uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)r->stream,
                     (uint32_t)(r->stream >> 32)};
  uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)};
  nn_philox4x32(ctr, key, out);
}

/* ---------------------------------------------------------------- per-image kernels */

static void flip_image(float *o, const float *x, int64_t planes, int64_t h, int64_t w) {
  for (int64_t r = 0; r < planes * h; r++)
    for (int64_t j = 0; j < w; j++) o[r * w + j] = x[r * w + (w - 1 - j)];
}

/* out[i, j] = x[i - dy, j - dx], 0 outside: a row at a time, as memcpy of the covered span. */
static void shift_image(float *o, const float *x, int64_t planes, int64_t h, int64_t w, int64_t dy,
                        int64_t dx) {
  int64_t j0 = dx > 0 ? dx : 0, j1 = dx < 0 ? w + dx : w; /* covered output columns [j0, j1) */
  if (j1 < j0) j1 = j0;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t i = 0; i < h; i++) {
      float *orow = o + (p * h + i) * w;
      int64_t si = i - dy;
      if (si < 0 || si >= h || j1 == j0) {
        memset(orow, 0, (size_t)w * sizeof *orow);
        continue;
      }
      memset(orow, 0, (size_t)j0 * sizeof *orow);
      memcpy(orow + j0, x + (p * h + si) * w + (j0 - dx), (size_t)(j1 - j0) * sizeof *orow);
      memset(orow + j1, 0, (size_t)(w - j1) * sizeof *orow);
    }
}

/* Counter-clockwise rotation (row 0 at the top) about the centre: output (i, j) samples the
 * input at centre + R(-theta) (j - cx, i - cy), bilinearly, 0 outside. With u = j - cx,
 * v = i - cy (v pointing down): sx = cx + u cos - v sin, sy = cy + u sin + v cos. */
static void rotate_image(float *o, const float *x, int64_t planes, int64_t h, int64_t w, double cs,
                         double sn) {
  double cx = 0.5 * (double)(w - 1), cy = 0.5 * (double)(h - 1);
  for (int64_t i = 0; i < h; i++) {
    double v = (double)i - cy;
    /* source of (i, 0); each step right adds (cs, sn). j * cs, not a running sum, so that a
     * rotation by 0 lands exactly on the pixels */
    double sx0 = cx - cx * cs - v * sn, sy0 = cy - cx * sn + v * cs;
    for (int64_t j = 0; j < w; j++) {
      double sx = sx0 + (double)j * cs, sy = sy0 + (double)j * sn;
      float *op = o + i * w + j;
      if (sx <= -1 || sy <= -1 || sx >= (double)w || sy >= (double)h) { /* all four outside */
        for (int64_t p = 0; p < planes; p++) op[p * h * w] = 0;
        continue;
      }
      int64_t x0 = ifloor(sx), y0 = ifloor(sy);
      double ax = sx - (double)x0, ay = sy - (double)y0;
      double w00 = (1 - ay) * (1 - ax), w01 = (1 - ay) * ax, w10 = ay * (1 - ax), w11 = ay * ax;
      const float *sp = x + y0 * w + x0;
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) { /* interior: no bounds checks */
        for (int64_t p = 0; p < planes; p++, sp += h * w)
          op[p * h * w] = (float)(w00 * sp[0] + w01 * sp[1] + w10 * sp[w] + w11 * sp[w + 1]);
        continue;
      }
      bool in_x0 = x0 >= 0, in_x1 = x0 + 1 < w, in_y0 = y0 >= 0, in_y1 = y0 + 1 < h;
      for (int64_t p = 0; p < planes; p++, sp += h * w) {
        double acc = 0;
        if (in_y0 && in_x0) acc += w00 * sp[0];
        if (in_y0 && in_x1 && w01 != 0) acc += w01 * sp[1];
        if (in_y1 && in_x0 && w10 != 0) acc += w10 * sp[w];
        if (in_y1 && in_x1 && w11 != 0) acc += w11 * sp[w + 1];
        op[p * h * w] = (float)acc;
      }
    }
  }
}

/* ---------------------------------------------------------------- deterministic transforms */

int nn_data_hflip(nn_tensor **out, const nn_tensor *x) {
  batch b;
  int rc = batch_begin(&b, out, "hflip", x);
  if (rc) return rc;
  int64_t sz = img_size(&b);
#pragma omp parallel for schedule(static) if (big_copy(&b))
  for (int64_t n = 0; n < b.n; n++) flip_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w);
  return batch_end(&b);
}

int nn_data_translate(nn_tensor **out, const nn_tensor *x, int64_t dy, int64_t dx) {
  batch b;
  int rc = batch_begin(&b, out, "translate", x);
  if (rc) return rc;
  int64_t sz = img_size(&b);
#pragma omp parallel for schedule(static) if (big_copy(&b))
  for (int64_t n = 0; n < b.n; n++) shift_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, dy, dx);
  return batch_end(&b);
}

int nn_data_rotate(nn_tensor **out, const nn_tensor *x, double degrees) {
  if (!isfinite(degrees)) {
    *out = NULL;
    return nn_seterr(NN_ERR_ARG, "rotate: angle %g is not finite", degrees);
  }
  batch b;
  int rc = batch_begin(&b, out, "rotate", x);
  if (rc) return rc;
  double a = degrees * M_PI / 180.0, cs = cos(a), sn = sin(a);
  int64_t sz = img_size(&b);
#pragma omp parallel for schedule(static) if (big(&b))
  for (int64_t n = 0; n < b.n; n++) rotate_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, cs, sn);
  return batch_end(&b);
}

/* ---------------------------------------------------------------- random augmentations */

int nn_data_random_hflip(nn_tensor **out, const nn_tensor *x, double p, nn_rng *r) {
  if (!(p >= 0 && p <= 1)) {
    *out = NULL;
    return nn_seterr(NN_ERR_ARG, "random_hflip: p = %g must be in [0, 1]", p);
  }
  batch b;
  int rc = batch_begin(&b, out, "random_hflip", x);
  if (rc) return rc;
  int64_t sz = img_size(&b);
  uint64_t base = r->offset;
#pragma omp parallel for schedule(static) if (big_copy(&b))
  for (int64_t n = 0; n < b.n; n++) {
    if (word_uniform(nn_rng_word(r, base + (uint64_t)n, 0)) < p)
      flip_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w);
    else
      memcpy(b.o + n * sz, b.x + n * sz, (size_t)sz * sizeof(float));
  }
  r->offset += (uint64_t)b.n;
  return batch_end(&b);
}

int nn_data_random_crop(nn_tensor **out, const nn_tensor *x, int pad, nn_rng *r) {
  if (pad < 0) {
    *out = NULL;
    return nn_seterr(NN_ERR_ARG, "random_crop: pad = %d must be >= 0", pad);
  }
  batch b;
  int rc = batch_begin(&b, out, "random_crop", x);
  if (rc) return rc;
  int64_t sz = img_size(&b);
  uint64_t base = r->offset, span = 2 * (uint64_t)pad + 1;
#pragma omp parallel for schedule(static) if (big_copy(&b))
  for (int64_t n = 0; n < b.n; n++) {
    /* multiply-shift maps a 32-bit word onto 0..2 pad */
    int64_t dy = (int64_t)(((uint64_t)nn_rng_word(r, base + (uint64_t)n, 0) * span) >> 32) - pad;
    int64_t dx = (int64_t)(((uint64_t)nn_rng_word(r, base + (uint64_t)n, 1) * span) >> 32) - pad;
    shift_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, dy, dx);
  }
  r->offset += (uint64_t)b.n;
  return batch_end(&b);
}

int nn_data_random_rotate(nn_tensor **out, const nn_tensor *x, double max_degrees, nn_rng *r) {
  if (!(max_degrees >= 0 && max_degrees <= 360)) {
    *out = NULL;
    return nn_seterr(NN_ERR_ARG, "random_rotate: max_degrees = %g must be in [0, 360]",
                     max_degrees);
  }
  batch b;
  int rc = batch_begin(&b, out, "random_rotate", x);
  if (rc) return rc;
  int64_t sz = img_size(&b);
  uint64_t base = r->offset;
#pragma omp parallel for schedule(static) if (big(&b))
  for (int64_t n = 0; n < b.n; n++) {
    double u = word_uniform(nn_rng_word(r, base + (uint64_t)n, 0));
    double a = (2 * u - 1) * max_degrees * M_PI / 180.0;
    rotate_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, cos(a), sin(a));
  }
  r->offset += (uint64_t)b.n;
  return batch_end(&b);
}

/* ---------------------------------------------------------------- corruptions */

static const char *corruption_names[NN_CORRUPT_COUNT] = {"gaussian_noise", "gaussian_blur",
                                                         "contrast", "rotate", "pixelate"};
/* Per-severity parameters; the table with sources is in data.h. */
static const double noise_std[5] = {0.08, 0.12, 0.18, 0.26, 0.38};
static const double blur_sigma[5] = {0.4, 0.6, 0.7, 0.8, 1.0};
static const double contrast_c[5] = {0.4, 0.3, 0.2, 0.1, 0.05};
static const double rotate_deg[5] = {15, 30, 45, 60, 75};
static const double pixelate_f[5] = {0.6, 0.5, 0.4, 0.3, 0.2};

const char *nn_data_corruption_name(nn_corruption kind) {
  return (unsigned)kind < NN_CORRUPT_COUNT ? corruption_names[kind] : NULL;
}

int nn_data_corruption_from_name(nn_corruption *kind, const char *name) {
  for (int k = 0; k < NN_CORRUPT_COUNT; k++)
    if (name && strcmp(name, corruption_names[k]) == 0) {
      *kind = (nn_corruption)k;
      return NN_OK;
    }
  return nn_seterr(NN_ERR_ARG,
                   "corrupt: unknown corruption \"%s\"; valid names: gaussian_noise, "
                   "gaussian_blur, contrast, rotate, pixelate",
                   name ? name : "(null)");
}

/* Separable Gaussian blur of each plane with edge pixels repeated; tmp holds h * w floats. */
static void blur_image(float *o, const float *x, int64_t planes, int64_t h, int64_t w,
                       const double *k, int rad, float *tmp) {
  for (int64_t p = 0; p < planes; p++) {
    const float *src = x + p * h * w;
    float *dst = o + p * h * w;
    for (int64_t i = 0; i < h; i++)
      for (int64_t j = 0; j < w; j++) {
        double acc = 0;
        for (int t = -rad; t <= rad; t++) {
          int64_t jj = j + t < 0 ? 0 : j + t >= w ? w - 1 : j + t;
          acc += k[t + rad] * src[i * w + jj];
        }
        tmp[i * w + j] = (float)acc;
      }
    for (int64_t i = 0; i < h; i++)
      for (int64_t j = 0; j < w; j++) {
        double acc = 0;
        for (int t = -rad; t <= rad; t++) {
          int64_t ii = i + t < 0 ? 0 : i + t >= h ? h - 1 : i + t;
          acc += k[t + rad] * tmp[ii * w + j];
        }
        dst[i * w + j] = (float)acc;
      }
  }
}

/* Box-average over cells then repeat: row i belongs to cell floor(i * sh / h). */
static void pixelate_image(float *o, const float *x, int64_t planes, int64_t h, int64_t w,
                           int64_t sh, int64_t sw, double *cell, int64_t *cnt) {
  for (int64_t p = 0; p < planes; p++) {
    const float *src = x + p * h * w;
    float *dst = o + p * h * w;
    memset(cell, 0, (size_t)(sh * sw) * sizeof *cell);
    memset(cnt, 0, (size_t)(sh * sw) * sizeof *cnt);
    for (int64_t i = 0; i < h; i++)
      for (int64_t j = 0; j < w; j++) {
        int64_t q = (i * sh / h) * sw + j * sw / w;
        cell[q] += src[i * w + j];
        cnt[q]++;
      }
    for (int64_t i = 0; i < h; i++)
      for (int64_t j = 0; j < w; j++) {
        int64_t q = (i * sh / h) * sw + j * sw / w;
        dst[i * w + j] = (float)(cell[q] / (double)cnt[q]);
      }
  }
}

int nn_data_corrupt(nn_tensor **out, const nn_tensor *x, nn_corruption kind, int severity,
                    uint64_t seed) {
  *out = NULL;
  if ((unsigned)kind >= NN_CORRUPT_COUNT)
    return nn_seterr(NN_ERR_ARG,
                     "corrupt: unknown corruption %d; valid: 0..%d (gaussian_noise, "
                     "gaussian_blur, contrast, rotate, pixelate)",
                     (int)kind, NN_CORRUPT_COUNT - 1);
  if (severity < 1 || severity > 5)
    return nn_seterr(NN_ERR_ARG, "corrupt: %s severity %d is outside 1..5", corruption_names[kind],
                     severity);
  batch b;
  int rc = batch_begin(&b, out, corruption_names[kind], x);
  if (rc) return rc;
  int s = severity - 1;
  int64_t sz = img_size(&b), plane = b.h * b.w;
  nn_rng r;
  switch (kind) {
  case NN_CORRUPT_GAUSSIAN_NOISE: {
    nn_rng_init(&r, seed, TAG_NOISE);
    double sd = noise_std[s];
    int64_t total = b.n * sz;
    /* block k gives the normals of elements 2k and 2k + 1 (Box-Muller on words 0, 1 and 2, 3:
     * the normal rule of rng.h) */
#pragma omp parallel for schedule(static) if (big(&b))
    for (int64_t k = 0; k < (total + 1) / 2; k++) {
      uint32_t wd[4];
      block_words(&r, (uint64_t)k, wd);
      for (int h = 0; h < 2 && 2 * k + h < total; h++) {
        int64_t e = 2 * k + h;
        double u1 = word_uniform(wd[2 * h]), u2 = word_uniform(wd[2 * h + 1]);
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        b.o[e] = (float)(b.x[e] + sd * z);
      }
    }
    break;
  }
  case NN_CORRUPT_GAUSSIAN_BLUR: {
    double sig = blur_sigma[s], k[64], sum = 0;
    int rad = (int)ceil(3 * sig);
    for (int t = -rad; t <= rad; t++) sum += k[t + rad] = exp(-0.5 * t * t / (sig * sig));
    for (int t = 0; t <= 2 * rad; t++) k[t] /= sum;
    float *tmp = malloc((size_t)(plane * (b.n ? b.n : 1)) * sizeof *tmp);
    if (!tmp) {
      nn_tensor_free(b.cx);
      nn_tensor_free(*out);
      *out = NULL;
      return nn_seterr(NN_ERR_NOMEM, "gaussian_blur: out of memory");
    }
#pragma omp parallel for schedule(static) if (big(&b))
    for (int64_t n = 0; n < b.n; n++)
      blur_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, k, rad, tmp + n * plane);
    free(tmp);
    break;
  }
  case NN_CORRUPT_CONTRAST: {
    double c = contrast_c[s];
#pragma omp parallel for schedule(static) if (big(&b))
    for (int64_t n = 0; n < b.n; n++) {
      const float *p = b.x + n * sz;
      double m = 0;
      for (int64_t e = 0; e < sz; e++) m += p[e];
      m /= (double)(sz ? sz : 1);
      for (int64_t e = 0; e < sz; e++) b.o[n * sz + e] = (float)((p[e] - m) * c + m);
    }
    break;
  }
  case NN_CORRUPT_ROTATE: {
    nn_rng_init(&r, seed, TAG_ROTATE);
    double a = rotate_deg[s] * M_PI / 180.0;
#pragma omp parallel for schedule(static) if (big(&b))
    for (int64_t n = 0; n < b.n; n++) {
      double an = (nn_rng_word(&r, (uint64_t)n, 0) & 1) ? a : -a;
      rotate_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, cos(an), sin(an));
    }
    break;
  }
  case NN_CORRUPT_PIXELATE: {
    double f = pixelate_f[s];
    int64_t sh = (int64_t)llround(f * (double)b.h), sw = (int64_t)llround(f * (double)b.w);
    if (sh < 1) sh = 1;
    if (sw < 1) sw = 1;
    int64_t nt = b.n ? b.n : 1;
    double *cell = malloc((size_t)(sh * sw * nt) * sizeof *cell);
    int64_t *cnt = malloc((size_t)(sh * sw * nt) * sizeof *cnt);
    if (!cell || !cnt) {
      free(cell);
      free(cnt);
      nn_tensor_free(b.cx);
      nn_tensor_free(*out);
      *out = NULL;
      return nn_seterr(NN_ERR_NOMEM, "pixelate: out of memory");
    }
#pragma omp parallel for schedule(static) if (big(&b))
    for (int64_t n = 0; n < b.n; n++)
      pixelate_image(b.o + n * sz, b.x + n * sz, b.c, b.h, b.w, sh, sw, cell + n * sh * sw,
                     cnt + n * sh * sw);
    free(cell);
    free(cnt);
    break;
  }
  default:
    break;
  }
  return batch_end(&b);
}
