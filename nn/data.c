/* nn/data.c: datasets, subsets and splits, per-channel normalisation (the batcher is in
 * data_batch.c).
 *
 * Shape letters: N samples, C channels, K classes. A "row" is one sample: x[n] and y[n] are
 * contiguous runs of bytes, so a subset is one memcpy per sample and tensor.
 * Random choices use Fisher-Yates on nn_rng_below, one Philox block per draw, each purpose on its
 * own stream (the tags below) so a seed shared between purposes gives unrelated draws.
 */
#include "data.h"

#include "autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Philox stream tags (ASCII): which purpose a seed is drawn for. */
#define TAG_SPLIT 0x73706c6974ull /* "split" */
#define TAG_KSHOT 0x6b73686f74ull /* "kshot" */

/* ---------------------------------------------------------------- datasets */

static bool is_float(nn_dtype dt) { return dt == NN_DTYPE_F32 || dt == NN_DTYPE_F64; }

/* Bytes of one sample of t (N, ...). */
static size_t row_bytes(const nn_tensor *t) {
  size_t r = nn_dtype_size(t->dtype);
  for (int d = 1; d < t->ndim; d++) r *= (size_t)t->shape[d];
  return r;
}

/* Takes ownership of x and y (contiguous, checked). */
static int wrap(nn_dataset **out, nn_tensor *x, nn_tensor *y, int n_classes) {
  nn_dataset *d = malloc(sizeof *d);
  if (!d) {
    nn_tensor_free(x);
    nn_tensor_free(y);
    return nn_seterr(NN_ERR_NOMEM, "dataset: out of memory");
  }
  d->x = x;
  d->y = y;
  d->n = x->shape[0];
  d->n_classes = n_classes;
  *out = d;
  return NN_OK;
}

/* A contiguous tensor with t's values and no autograd history (t retained when possible). */
static int plain_contiguous(nn_tensor **out, nn_tensor *t) {
  nn_tensor *dt = NULL;
  int rc = nn_detach(&dt, t);
  if (rc) return rc;
  rc = nn_contiguous(out, dt);
  nn_tensor_free(dt);
  return rc;
}

int nn_dataset_new(nn_dataset **out, nn_tensor *x, nn_tensor *y, int n_classes) {
  char b1[128], b2[128];
  *out = NULL;
  if (!x || !y) return nn_seterr(NN_ERR_ARG, "dataset_new: x and y must not be NULL");
  if (x->storage->device.type != NN_DEVICE_CPU || y->storage->device.type != NN_DEVICE_CPU)
    return nn_seterr(NN_ERR_DEVICE, "dataset_new: datasets live on the cpu, got x on %s, y on %s",
                     nn_device_name(x->storage->device.type),
                     nn_device_name(y->storage->device.type));
  if (x->ndim < 1 || y->ndim < 1 || y->shape[0] != x->shape[0])
    return nn_seterr(NN_ERR_SHAPE,
                     "dataset_new: x %s and y %s must both have the sample count as dim 0",
                     nn_shape_str(x, b1, sizeof b1), nn_shape_str(y, b2, sizeof b2));
  if (!is_float(x->dtype))
    return nn_seterr(NN_ERR_DTYPE, "dataset_new: x must be float32 or float64, got %s",
                     nn_dtype_name(x->dtype));
  if (n_classes < 0)
    return nn_seterr(NN_ERR_ARG, "dataset_new: n_classes = %d must be >= 0", n_classes);
  if (n_classes > 0 && (y->dtype != NN_DTYPE_I64 || y->ndim != 1))
    return nn_seterr(NN_ERR_DTYPE,
                     "dataset_new: with n_classes = %d, y must be int64 (N), got %s %s", n_classes,
                     nn_dtype_name(y->dtype), nn_shape_str(y, b2, sizeof b2));
  if (n_classes == 0 && !is_float(y->dtype))
    return nn_seterr(NN_ERR_DTYPE,
                     "dataset_new: regression targets (n_classes = 0) must be float, got %s",
                     nn_dtype_name(y->dtype));
  nn_tensor *cx = NULL, *cy = NULL;
  int rc = plain_contiguous(&cx, x);
  if (!rc) rc = plain_contiguous(&cy, y);
  if (rc) {
    nn_tensor_free(cx);
    return rc;
  }
  if (n_classes > 0) {
    const int64_t *lab = nn_tensor_data(cy);
    for (int64_t i = 0; i < cy->shape[0]; i++)
      if (lab[i] < 0 || lab[i] >= n_classes) {
        nn_tensor_free(cx);
        nn_tensor_free(cy);
        return nn_seterr(NN_ERR_INDEX, "dataset_new: label %lld at index %lld is outside 0..%d",
                         (long long)lab[i], (long long)i, n_classes - 1);
      }
  }
  return wrap(out, cx, cy, n_classes);
}

void nn_dataset_free(nn_dataset *d) {
  if (!d) return;
  nn_tensor_free(d->x);
  nn_tensor_free(d->y);
  free(d);
}

int nn_dataset_class_counts(const nn_dataset *d, int64_t *counts) {
  if (d->n_classes <= 0)
    return nn_seterr(NN_ERR_ARG, "dataset_class_counts: the dataset has no class labels");
  memset(counts, 0, (size_t)d->n_classes * sizeof *counts);
  const int64_t *lab = nn_tensor_data(d->y);
  for (int64_t i = 0; i < d->n; i++) counts[lab[i]]++;
  return NN_OK;
}

/* ---------------------------------------------------------------- gathering rows */

/* dst rows i = src rows idx[i], i < m; src is contiguous. */
static void gather(void *dst, const nn_tensor *src, const int64_t *idx, int64_t m) {
  size_t rb = row_bytes(src);
  const char *s = nn_tensor_data(src);
  char *o = dst;
  /* a memcpy per row; threads only when the batch is large enough to pay for them */
#pragma omp parallel for schedule(static) if ((size_t)m * rb > ((size_t)4 << 20))
  for (int64_t i = 0; i < m; i++) memcpy(o + (size_t)i * rb, s + (size_t)idx[i] * rb, rb);
}

static int gather_new(nn_tensor **out, const nn_tensor *src, const int64_t *idx, int64_t m) {
  int64_t shape[NN_MAX_DIMS];
  memcpy(shape, src->shape, sizeof shape);
  shape[0] = m;
  int rc = nn_tensor_empty(out, src->ndim, shape, src->dtype, nn_cpu);
  if (rc) return rc;
  gather(nn_tensor_data(*out), src, idx, m);
  return NN_OK;
}

/* New dataset of rows idx[0..m-1]; labels mapped through relabel[] when given. */
static int subset_rows(nn_dataset **out, const nn_dataset *d, const int64_t *idx, int64_t m,
                       const int64_t *relabel, int n_classes) {
  nn_tensor *x = NULL, *y = NULL;
  int rc = gather_new(&x, d->x, idx, m);
  if (!rc) rc = gather_new(&y, d->y, idx, m);
  if (rc) {
    nn_tensor_free(x);
    return rc;
  }
  if (relabel) {
    int64_t *lab = nn_tensor_data(y);
    for (int64_t i = 0; i < m; i++) lab[i] = relabel[lab[i]];
  }
  return wrap(out, x, y, n_classes);
}

/* Indices i with mask[i] == want, ascending, into a new array; *m gets the count. */
static int64_t *mask_indices(const unsigned char *mask, int64_t n, unsigned char want, int64_t *m) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += mask[i] == want;
  int64_t *idx = malloc((size_t)(k ? k : 1) * sizeof *idx);
  if (!idx) return NULL;
  k = 0;
  for (int64_t i = 0; i < n; i++)
    if (mask[i] == want) idx[k++] = i;
  *m = k;
  return idx;
}

int nn_dataset_subset(nn_dataset **out, const nn_dataset *d, const nn_tensor *idx) {
  char b[128];
  *out = NULL;
  if (idx->dtype != NN_DTYPE_I64)
    return nn_seterr(NN_ERR_DTYPE, "dataset_subset: indices must be int64, got %s",
                     nn_dtype_name(idx->dtype));
  if (idx->ndim != 1)
    return nn_seterr(NN_ERR_SHAPE, "dataset_subset: indices must be 1-D, got %s",
                     nn_shape_str(idx, b, sizeof b));
  if (idx->storage->device.type != NN_DEVICE_CPU)
    return nn_seterr(NN_ERR_DEVICE, "dataset_subset: indices must be on the cpu, got %s",
                     nn_device_name(idx->storage->device.type));
  int64_t m = idx->shape[0];
  int64_t *ix = malloc((size_t)(m ? m : 1) * sizeof *ix);
  if (!ix) return nn_seterr(NN_ERR_NOMEM, "dataset_subset: out of memory");
  for (int64_t i = 0; i < m; i++) {
    ix[i] = (int64_t)nn_tensor_get_flat(idx, i);
    if (ix[i] < 0 || ix[i] >= d->n) {
      int64_t bad = ix[i];
      free(ix);
      return nn_seterr(NN_ERR_INDEX,
                       "dataset_subset: index %lld at position %lld is outside 0..%lld",
                       (long long)bad, (long long)i, (long long)d->n - 1);
    }
  }
  int rc = subset_rows(out, d, ix, m, NULL, d->n_classes);
  free(ix);
  return rc;
}

/* ---------------------------------------------------------------- splits and class subsets */

/* Indices of d grouped by class (ascending within a class): members[start[c] .. start[c+1]). */
static int group_by_class(const nn_dataset *d, int64_t **members, int64_t **start) {
  int k = d->n_classes;
  *members = malloc((size_t)(d->n ? d->n : 1) * sizeof **members);
  *start = calloc((size_t)k + 1, sizeof **start);
  int64_t *fill = calloc((size_t)k, sizeof *fill);
  if (!*members || !*start || !fill) {
    free(*members);
    free(*start);
    free(fill);
    *members = *start = NULL;
    return nn_seterr(NN_ERR_NOMEM, "dataset: out of memory grouping %lld samples by class",
                     (long long)d->n);
  }
  const int64_t *lab = nn_tensor_data(d->y);
  for (int64_t i = 0; i < d->n; i++) (*start)[lab[i] + 1]++;
  for (int c = 0; c < k; c++) (*start)[c + 1] += (*start)[c];
  for (int64_t i = 0; i < d->n; i++) {
    int64_t c = lab[i];
    (*members)[(*start)[c] + fill[c]++] = i;
  }
  free(fill);
  return NN_OK;
}

/* Moves q elements chosen uniformly without replacement to a[0..q-1] (partial Fisher-Yates). */
static void choose(int64_t *a, int64_t n, int64_t q, nn_rng *r) {
  for (int64_t i = 0; i < q; i++) {
    int64_t j = i + (int64_t)nn_rng_below(r, (uint64_t)(n - i));
    int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* Builds the two datasets of a mask (1 = val). */
static int split_by_mask(nn_dataset **train, nn_dataset **val, const nn_dataset *d,
                         const unsigned char *mask) {
  int64_t mt = 0, mv = 0;
  int64_t *it = mask_indices(mask, d->n, 0, &mt), *iv = mask_indices(mask, d->n, 1, &mv);
  int rc = (it && iv) ? NN_OK : nn_seterr(NN_ERR_NOMEM, "dataset_split: out of memory");
  if (!rc) rc = subset_rows(train, d, it, mt, NULL, d->n_classes);
  if (!rc) {
    rc = subset_rows(val, d, iv, mv, NULL, d->n_classes);
    if (rc) {
      nn_dataset_free(*train);
      *train = NULL;
    }
  }
  free(it);
  free(iv);
  return rc;
}

int nn_dataset_split(nn_dataset **train, nn_dataset **val, const nn_dataset *d, int64_t n_val,
                     uint64_t seed, bool stratified) {
  *train = *val = NULL;
  if (n_val < 0 || n_val > d->n)
    return nn_seterr(NN_ERR_ARG, "dataset_split: n_val = %lld is outside 0..%lld", (long long)n_val,
                     (long long)d->n);
  if (stratified && d->n_classes <= 0)
    return nn_seterr(NN_ERR_ARG, "dataset_split: a stratified split needs class labels, and this "
                                 "dataset has regression targets");
  nn_rng r;
  nn_rng_init(&r, seed, TAG_SPLIT);
  unsigned char *mask = calloc((size_t)(d->n ? d->n : 1), 1);
  int64_t *members = NULL, *start = NULL, *quota = NULL;
  int rc = mask ? NN_OK : nn_seterr(NN_ERR_NOMEM, "dataset_split: out of memory");
  if (!rc && !stratified) {
    members = malloc((size_t)(d->n ? d->n : 1) * sizeof *members);
    if (!members) rc = nn_seterr(NN_ERR_NOMEM, "dataset_split: out of memory");
    for (int64_t i = 0; !rc && i < d->n; i++) members[i] = i;
    if (!rc) {
      choose(members, d->n, n_val, &r);
      for (int64_t i = 0; i < n_val; i++) mask[members[i]] = 1;
    }
  } else if (!rc) {
    int k = d->n_classes;
    rc = group_by_class(d, &members, &start);
    quota = calloc((size_t)k, sizeof *quota);
    if (!rc && !quota) rc = nn_seterr(NN_ERR_NOMEM, "dataset_split: out of memory");
    if (!rc) {
      /* largest remainder: floor(n_val * N_c / N), then +1 to the largest remainders */
      int64_t given = 0;
      for (int c = 0; c < k; c++) {
        int64_t nc = start[c + 1] - start[c];
        quota[c] = d->n ? (int64_t)((unsigned __int128)n_val * (uint64_t)nc / (uint64_t)d->n) : 0;
        given += quota[c];
      }
      while (given < n_val) {
        int best = -1;
        uint64_t best_rem = 0;
        for (int c = 0; c < k; c++) {
          int64_t nc = start[c + 1] - start[c];
          uint64_t rem = (uint64_t)((unsigned __int128)n_val * (uint64_t)nc % (uint64_t)d->n);
          /* a class already bumped has quota > floor: skip it */
          bool bumped = quota[c] * (__int128)d->n > (__int128)n_val * nc;
          if (!bumped && rem > best_rem) best = c, best_rem = rem;
        }
        NN_ASSERT(best >= 0);
        quota[best]++;
        given++;
      }
      for (int c = 0; c < k; c++) {
        int64_t *seg = members + start[c];
        choose(seg, start[c + 1] - start[c], quota[c], &r);
        for (int64_t i = 0; i < quota[c]; i++) mask[seg[i]] = 1;
      }
    }
  }
  if (!rc) rc = split_by_mask(train, val, d, mask);
  free(mask);
  free(members);
  free(start);
  free(quota);
  return rc;
}

int nn_dataset_select_classes(nn_dataset **out, const nn_dataset *d, const int64_t *classes, int k,
                              bool relabel) {
  *out = NULL;
  if (d->n_classes <= 0)
    return nn_seterr(NN_ERR_ARG, "dataset_select_classes: the dataset has no class labels");
  if (k < 1) return nn_seterr(NN_ERR_ARG, "dataset_select_classes: k = %d must be >= 1", k);
  int64_t *map = malloc((size_t)d->n_classes * sizeof *map);
  if (!map) return nn_seterr(NN_ERR_NOMEM, "dataset_select_classes: out of memory");
  for (int c = 0; c < d->n_classes; c++) map[c] = -1;
  int rc = NN_OK;
  for (int i = 0; i < k && !rc; i++) {
    int64_t c = classes[i];
    if (c < 0 || c >= d->n_classes)
      rc = nn_seterr(NN_ERR_INDEX, "dataset_select_classes: class %lld is outside 0..%d",
                     (long long)c, d->n_classes - 1);
    else if (map[c] >= 0)
      rc =
          nn_seterr(NN_ERR_ARG, "dataset_select_classes: class %lld is listed twice", (long long)c);
    else
      map[c] = relabel ? i : c;
  }
  const int64_t *lab = nn_tensor_data(d->y);
  unsigned char *mask = rc ? NULL : malloc((size_t)(d->n ? d->n : 1));
  if (!rc && !mask) rc = nn_seterr(NN_ERR_NOMEM, "dataset_select_classes: out of memory");
  int64_t m = 0, *idx = NULL;
  if (!rc) {
    for (int64_t i = 0; i < d->n; i++) mask[i] = map[lab[i]] >= 0;
    idx = mask_indices(mask, d->n, 1, &m);
    if (!idx) rc = nn_seterr(NN_ERR_NOMEM, "dataset_select_classes: out of memory");
  }
  if (!rc) rc = subset_rows(out, d, idx, m, map, relabel ? k : d->n_classes);
  free(idx);
  free(mask);
  free(map);
  return rc;
}

int nn_dataset_kshot(nn_dataset **out, const nn_dataset *d, int64_t k, uint64_t seed) {
  *out = NULL;
  if (d->n_classes <= 0)
    return nn_seterr(NN_ERR_ARG, "dataset_kshot: the dataset has no class labels");
  if (k < 1) return nn_seterr(NN_ERR_ARG, "dataset_kshot: k = %lld must be >= 1", (long long)k);
  int64_t *members = NULL, *start = NULL;
  int rc = group_by_class(d, &members, &start);
  if (rc) return rc;
  for (int c = 0; c < d->n_classes && !rc; c++) {
    int64_t nc = start[c + 1] - start[c];
    if (nc > 0 && nc < k)
      rc = nn_seterr(NN_ERR_ARG, "dataset_kshot: class %d has %lld samples, fewer than k = %lld", c,
                     (long long)nc, (long long)k);
  }
  unsigned char *mask = rc ? NULL : calloc((size_t)(d->n ? d->n : 1), 1);
  if (!rc && !mask) rc = nn_seterr(NN_ERR_NOMEM, "dataset_kshot: out of memory");
  int64_t m = 0, *idx = NULL;
  if (!rc) {
    nn_rng r;
    nn_rng_init(&r, seed, TAG_KSHOT);
    for (int c = 0; c < d->n_classes; c++) {
      int64_t nc = start[c + 1] - start[c], *seg = members + start[c];
      if (nc == 0) continue;
      choose(seg, nc, k, &r);
      for (int64_t i = 0; i < k; i++) mask[seg[i]] = 1;
    }
    idx = mask_indices(mask, d->n, 1, &m);
    if (!idx) rc = nn_seterr(NN_ERR_NOMEM, "dataset_kshot: out of memory");
  }
  if (!rc) rc = subset_rows(out, d, idx, m, NULL, d->n_classes);
  free(idx);
  free(mask);
  free(members);
  free(start);
  return rc;
}

/* ---------------------------------------------------------------- normalisation */

/* x (N, C, S) as a contiguous run: channel count C = dim 1 (1 for 1-D x), S = the rest. */
static void channel_layout(const nn_tensor *x, int64_t *c, int64_t *s) {
  *c = x->ndim >= 2 ? x->shape[1] : 1;
  *s = 1;
  for (int d = 2; d < x->ndim; d++) *s *= x->shape[d];
}

/* Sum over segment (n, c) of f(v) in double; SQ picks (v - mu)^2. */
#define SEG_SUM(T, p, s, mu, SQ)                                                                   \
  ({                                                                                               \
    double acc_ = 0;                                                                               \
    const T *q_ = (const T *)(p);                                                                  \
    for (int64_t j_ = 0; j_ < (s); j_++) {                                                         \
      double v_ = (double)q_[j_] - (mu);                                                           \
      acc_ += (SQ) ? v_ * v_ : v_;                                                                 \
    }                                                                                              \
    acc_;                                                                                          \
  })

int nn_dataset_channel_stats(nn_tensor **mean, nn_tensor **std, const nn_dataset *d) {
  *mean = *std = NULL;
  if (d->n == 0) return nn_seterr(NN_ERR_ARG, "dataset_channel_stats: the dataset is empty");
  int64_t C, S, N = d->n;
  channel_layout(d->x, &C, &S);
  double *part = malloc((size_t)(N * C) * sizeof *part);
  double *mu = calloc((size_t)C, sizeof *mu), *var = calloc((size_t)C, sizeof *var);
  if (!part || !mu || !var) {
    free(part);
    free(mu);
    free(var);
    return nn_seterr(NN_ERR_NOMEM, "dataset_channel_stats: out of memory");
  }
  bool f32 = d->x->dtype == NN_DTYPE_F32;
  const char *base = nn_tensor_data(d->x);
  size_t es = nn_dtype_size(d->x->dtype);
  /* two passes (mean, then squared deviations); per-(n, c) partial sums reduced in index order
   * so the result is the same for any thread count */
  for (int pass = 0; pass < 2; pass++) {
#pragma omp parallel for schedule(static) if (N * C * S > 100000)
    for (int64_t i = 0; i < N * C; i++) {
      const void *p = base + (size_t)(i * S) * es;
      double m = pass ? mu[i % C] : 0.0;
      part[i] = f32 ? SEG_SUM(float, p, S, m, pass) : SEG_SUM(double, p, S, m, pass);
    }
    double *acc = pass ? var : mu;
    for (int64_t i = 0; i < N * C; i++) acc[i % C] += part[i];
    for (int64_t c = 0; c < C; c++) acc[c] /= (double)(N * S);
  }
  int rc = nn_tensor_empty(mean, 1, &C, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_tensor_empty(std, 1, &C, NN_DTYPE_F32, nn_cpu);
  if (!rc) {
    for (int64_t c = 0; c < C; c++) {
      ((float *)nn_tensor_data(*mean))[c] = (float)mu[c];
      ((float *)nn_tensor_data(*std))[c] = (float)sqrt(var[c]);
    }
  } else {
    nn_tensor_free(*mean);
    *mean = NULL;
  }
  free(part);
  free(mu);
  free(var);
  return rc;
}

int nn_data_normalize(nn_tensor **out, const nn_tensor *x, const nn_tensor *mean,
                      const nn_tensor *std) {
  char b1[128], b2[128], b3[128];
  *out = NULL;
  if (x->storage->device.type != NN_DEVICE_CPU || mean->storage->device.type != NN_DEVICE_CPU ||
      std->storage->device.type != NN_DEVICE_CPU)
    return nn_seterr(NN_ERR_DEVICE, "normalize is not implemented on cuda");
  if (!is_float(x->dtype) || !is_float(mean->dtype) || !is_float(std->dtype))
    return nn_seterr(NN_ERR_DTYPE, "normalize: x, mean and std must be float, got %s, %s, %s",
                     nn_dtype_name(x->dtype), nn_dtype_name(mean->dtype),
                     nn_dtype_name(std->dtype));
  if (x->ndim < 1)
    return nn_seterr(NN_ERR_SHAPE, "normalize: x must have a sample dim, got a scalar");
  int64_t C, S;
  channel_layout(x, &C, &S);
  if (mean->ndim != 1 || std->ndim != 1 || mean->shape[0] != C || std->shape[0] != C)
    return nn_seterr(NN_ERR_SHAPE,
                     "normalize: x %s has %lld channels (dim 1); mean %s and std %s "
                     "must both be (%lld,)",
                     nn_shape_str(x, b1, sizeof b1), (long long)C,
                     nn_shape_str(mean, b2, sizeof b2), nn_shape_str(std, b3, sizeof b3),
                     (long long)C);
  double *ms = malloc((size_t)(2 * C) * sizeof *ms);
  if (!ms) return nn_seterr(NN_ERR_NOMEM, "normalize: out of memory");
  for (int64_t c = 0; c < C; c++) {
    ms[2 * c] = nn_tensor_get_flat(mean, c);
    double s = nn_tensor_get_flat(std, c);
    if (!(s > 0)) {
      free(ms);
      return nn_seterr(NN_ERR_ARG, "normalize: std[%lld] = %g must be > 0", (long long)c, s);
    }
    ms[2 * c + 1] = 1.0 / s;
  }
  nn_tensor *cx = NULL;
  int rc = plain_contiguous(&cx, (nn_tensor *)x);
  if (!rc) rc = nn_tensor_empty(out, x->ndim, x->shape, x->dtype, nn_cpu);
  if (!rc) {
    int64_t rows = nn_tensor_numel(x) / (S ? S : 1);
    if (S == 0) rows = 0;
    bool f32 = x->dtype == NN_DTYPE_F32;
    void *o = nn_tensor_data(*out);
    const void *in = nn_tensor_data(cx);
#pragma omp parallel for schedule(static) if (rows * S > 100000)
    for (int64_t i = 0; i < rows; i++) {
      double m = ms[2 * (i % C)], is = ms[2 * (i % C) + 1];
      if (f32) {
        float *po = (float *)o + i * S;
        const float *pi = (const float *)in + i * S;
        float fm = (float)m, fs = (float)is;
        for (int64_t j = 0; j < S; j++) po[j] = (pi[j] - fm) * fs;
      } else {
        double *po = (double *)o + i * S;
        const double *pi = (const double *)in + i * S;
        for (int64_t j = 0; j < S; j++) po[j] = (pi[j] - m) * is;
      }
    }
  }
  nn_tensor_free(cx);
  free(ms);
  return rc;
}

int nn_dataset_normalize(nn_dataset **out, const nn_dataset *d, const nn_tensor *mean,
                         const nn_tensor *std) {
  *out = NULL;
  nn_tensor *x = NULL;
  int rc = nn_data_normalize(&x, d->x, mean, std);
  if (rc) return rc;
  return wrap(out, x, nn_tensor_retain(d->y), d->n_classes);
}
