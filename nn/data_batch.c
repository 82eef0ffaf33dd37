/* nn/data_batch.c: the minibatch iterator (nn_batcher).
 *
 * Shape letters: N samples, B batch. Each epoch's order is a Fisher-Yates permutation drawn from
 * its own Philox stream; a batch is gathered with one memcpy per sample into tensors the batcher
 * reuses while nobody else holds them (see data.h for the contract).
 */
#include "data.h"

#include <stdlib.h>
#include <string.h>

#define TAG_BATCH 0x6261746368ull /* "batch": xored with the epoch number */

/* Bytes of one sample of t (N, ...). */
static size_t row_bytes(const nn_tensor *t) {
  size_t r = nn_dtype_size(t->dtype);
  for (int d = 1; d < t->ndim; d++) r *= (size_t)t->shape[d];
  return r;
}

/* dst rows i = src rows idx[i], i < m; src contiguous. Threads only for very large batches. */
static void gather(void *dst, const nn_tensor *src, const int64_t *idx, int64_t m) {
  size_t rb = row_bytes(src);
  const char *s = nn_tensor_data(src);
  char *o = dst;
#pragma omp parallel for schedule(static) if ((size_t)m * rb > ((size_t)4 << 20))
  for (int64_t i = 0; i < m; i++) memcpy(o + (size_t)i * rb, s + (size_t)idx[i] * rb, rb);
}

struct nn_batcher {
  nn_tensor *x, *y; /* the dataset's tensors (own references) */
  int64_t n, batch_size;
  bool shuffle, drop_last;
  uint64_t seed;
  int64_t epoch, pos; /* pos: samples of this epoch already yielded */
  bool perm_ready;    /* perm holds the order of this epoch */
  int64_t *perm;      /* (N) */
  nn_tensor *bx, *by; /* last batch (own references), reused when nobody else holds it */
};

int nn_batcher_new(nn_batcher **out, const nn_dataset *d, const nn_batcher_opts *opts) {
  *out = NULL;
  if (!opts) return nn_seterr(NN_ERR_ARG, "batcher_new: options must not be NULL");
  if (opts->batch_size < 1)
    return nn_seterr(NN_ERR_ARG, "batcher_new: batch_size = %lld must be >= 1",
                     (long long)opts->batch_size);
  nn_batcher *b = calloc(1, sizeof *b);
  if (b) b->perm = malloc((size_t)(d->n ? d->n : 1) * sizeof *b->perm);
  if (!b || !b->perm) {
    free(b);
    return nn_seterr(NN_ERR_NOMEM, "batcher_new: out of memory for %lld indices", (long long)d->n);
  }
  b->x = nn_tensor_retain(d->x);
  b->y = nn_tensor_retain(d->y);
  b->n = d->n;
  b->batch_size = opts->batch_size;
  b->shuffle = opts->shuffle;
  b->drop_last = opts->drop_last;
  b->seed = opts->seed;
  *out = b;
  return NN_OK;
}

void nn_batcher_free(nn_batcher *b) {
  if (!b) return;
  nn_tensor_free(b->x);
  nn_tensor_free(b->y);
  nn_tensor_free(b->bx);
  nn_tensor_free(b->by);
  free(b->perm);
  free(b);
}

void nn_batcher_set_epoch(nn_batcher *b, int64_t epoch) {
  b->epoch = epoch;
  b->pos = 0;
  b->perm_ready = false;
}

int64_t nn_batcher_epoch(const nn_batcher *b) { return b->epoch; }

int64_t nn_batcher_num_batches(const nn_batcher *b) {
  return b->drop_last ? b->n / b->batch_size : (b->n + b->batch_size - 1) / b->batch_size;
}

static void make_perm(nn_batcher *b) {
  for (int64_t i = 0; i < b->n; i++) b->perm[i] = i;
  if (b->shuffle) {
    nn_rng r;
    nn_rng_init(&r, b->seed, TAG_BATCH ^ (uint64_t)b->epoch);
    for (int64_t i = b->n - 1; i > 0; i--) {
      int64_t j = (int64_t)nn_rng_below(&r, (uint64_t)i + 1);
      int64_t t = b->perm[i];
      b->perm[i] = b->perm[j];
      b->perm[j] = t;
    }
  }
  b->perm_ready = true;
}

/* *slot ready to hold m rows like src: reused when only the batcher holds it. */
static int batch_slot(nn_tensor **slot, const nn_tensor *src, int64_t m) {
  nn_tensor *t = *slot;
  if (t && t->refcount == 1 && t->storage->refcount == 1 && t->shape[0] == m) return NN_OK;
  nn_tensor_free(t);
  *slot = NULL;
  int64_t shape[NN_MAX_DIMS];
  memcpy(shape, src->shape, sizeof shape);
  shape[0] = m;
  return nn_tensor_empty(slot, src->ndim, shape, src->dtype, nn_cpu);
}

int nn_batcher_next(nn_batcher *b, nn_tensor **x, nn_tensor **y) {
  *x = *y = NULL;
  int64_t end = b->drop_last ? b->n - b->n % b->batch_size : b->n;
  if (b->pos >= end) {
    nn_batcher_set_epoch(b, b->epoch + 1);
    return 0;
  }
  if (!b->perm_ready) make_perm(b);
  int64_t m = end - b->pos < b->batch_size ? end - b->pos : b->batch_size;
  int rc = batch_slot(&b->bx, b->x, m);
  if (!rc) rc = batch_slot(&b->by, b->y, m);
  if (rc) return rc;
  gather(nn_tensor_data(b->bx), b->x, b->perm + b->pos, m);
  gather(nn_tensor_data(b->by), b->y, b->perm + b->pos, m);
  b->pos += m;
  *x = nn_tensor_retain(b->bx);
  *y = nn_tensor_retain(b->by);
  return 1;
}
