/* nn/tensor.c: errors, the caching allocator, tensor creation, views and copies.
 *
 * Memory scheme (see nn/README.md): reference-counted storage over a caching allocator. Freed
 * blocks go back to a per-device free list keyed by a rounded size class and are handed out
 * again to the next request of that class, so a training loop that allocates the same shapes
 * every step reaches a fixed footprint after its first step and calls malloc no more.
 */
#include "autograd.h"
#include "backend.h"
#include "ops_core.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const nn_device nn_cpu = {NN_DEVICE_CPU, 0};

/* ---------------------------------------------------------------- errors */

static _Thread_local char errbuf[512];
static _Thread_local int errcode;

const char *nn_errmsg(void) { return errcode ? errbuf : "no error"; }
int nn_errcode(void) { return errcode; }
void nn_clearerr(void) {
  errcode = 0;
  errbuf[0] = 0;
}

int nn_seterr(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  errcode = code;
  return code;
}

void nn_assert_fail(const char *file, int line, const char *expr) {
  fprintf(stderr, "wb: internal error at %s:%d: assertion failed: %s\n", file, line, expr);
  abort();
}

const char *nn_shape_str(const nn_tensor *t, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "(");
  for (int d = 0; d < t->ndim && k < n; d++)
    k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
  if (t->ndim == 1 && k < n) k += (size_t)snprintf(buf + k, n - k, ",");
  if (k < n) snprintf(buf + k, n - k, ")");
  return buf;
}

const char *nn_dtype_name(nn_dtype dt) {
  switch (dt) {
  case NN_DTYPE_F32:
    return "float32";
  case NN_DTYPE_F64:
    return "float64";
  case NN_DTYPE_I64:
    return "int64";
  }
  return "?";
}

const char *nn_device_name(nn_device_type d) { return d == NN_DEVICE_CUDA ? "cuda" : "cpu"; }

size_t nn_dtype_size(nn_dtype dt) { return dt == NN_DTYPE_F32 ? 4 : 8; }

int nn_wrap_dim(int dim, int ndim) {
  int n = ndim ? ndim : 1;
  if (dim < 0) dim += n;
  return (dim < 0 || dim >= n) ? -1 : dim;
}

/* ---------------------------------------------------------------- caching allocator */

/* Size classes: below 512 bytes one class per 64 bytes; above, four classes per power of two
 * (at most 25% slack). */
#define NCLASS 256
typedef struct {
  void **ptrs;
  int n, cap;
} freelist;
static freelist cache[NN_DEVICE_COUNT][NCLASS];
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t cached_bytes[NN_DEVICE_COUNT];

static int size_class(size_t nbytes, size_t *rounded) {
  if (nbytes <= 512) {
    size_t c = (nbytes + 63) / 64;
    if (c == 0) c = 1;
    *rounded = c * 64;
    return (int)c - 1; /* 0..7 */
  }
  int lg = 63 - __builtin_clzll((unsigned long long)(nbytes - 1)); /* 2^lg < nbytes <= 2^(lg+1) */
  size_t base = (size_t)1 << lg, q = base / 4;
  size_t k = (nbytes - base + q - 1) / q; /* 1..4 */
  *rounded = base + k * q;
  int c = 8 + (lg - 9) * 4 + (int)(k - 1);
  return c < NCLASS ? c : -1; /* very large: not cached */
}

static void *cache_alloc(nn_device_type d, size_t nbytes, size_t *got) {
  size_t r;
  int c = size_class(nbytes, &r);
  if (c < 0) r = nbytes;
  *got = r;
  if (c >= 0) {
    pthread_mutex_lock(&cache_mu);
    freelist *f = &cache[d][c];
    if (f->n > 0) {
      void *p = f->ptrs[--f->n];
      cached_bytes[d] -= r;
      pthread_mutex_unlock(&cache_mu);
      return p;
    }
    pthread_mutex_unlock(&cache_mu);
  }
  const nn_backend_i *be = nn_backend_get(d);
  if (!be) return NULL;
  void *p = be->alloc(r);
  if (!p) { /* release the cache and retry once */
    pthread_mutex_lock(&cache_mu);
    for (int i = 0; i < NCLASS; i++) {
      freelist *f = &cache[d][i];
      while (f->n) be->free(f->ptrs[--f->n]);
    }
    cached_bytes[d] = 0;
    pthread_mutex_unlock(&cache_mu);
    p = be->alloc(r);
  }
  return p;
}

static void cache_free(nn_device_type d, void *p, size_t nbytes) {
  size_t r;
  int c = size_class(nbytes, &r);
  const nn_backend_i *be = nn_backend_get(d);
  if (c >= 0) {
    pthread_mutex_lock(&cache_mu);
    freelist *f = &cache[d][c];
    if (f->n == f->cap) {
      int cap = f->cap ? f->cap * 2 : 8;
      void **np = realloc(f->ptrs, (size_t)cap * sizeof *np);
      if (!np) {
        pthread_mutex_unlock(&cache_mu);
        be->free(p);
        return;
      }
      f->ptrs = np;
      f->cap = cap;
    }
    f->ptrs[f->n++] = p;
    cached_bytes[d] += r;
    pthread_mutex_unlock(&cache_mu);
    return;
  }
  be->free(p);
}

static nn_storage *storage_new(size_t nbytes, nn_device dev) {
  nn_storage *s = malloc(sizeof *s);
  if (!s) return NULL;
  size_t got = 0;
  s->data = cache_alloc(dev.type, nbytes ? nbytes : 1, &got);
  if (!s->data) {
    free(s);
    return NULL;
  }
  s->refcount = 1;
  s->device = dev;
  s->nbytes = got;
  return s;
}

static void storage_release(nn_storage *s) {
  if (!s || --s->refcount > 0) return;
  cache_free(s->device.type, s->data, s->nbytes);
  free(s);
}

/* ---------------------------------------------------------------- tensor objects */

static nn_tensor *tensor_struct(nn_dtype dt, int ndim, const int64_t *shape) {
  nn_tensor *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->refcount = 1;
  t->dtype = dt;
  t->ndim = ndim;
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    t->shape[d] = shape[d];
    t->stride[d] = st;
    st *= shape[d];
  }
  return t;
}

static int check_shape(const char *op, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_SHAPE, "%s: %d dims requested, at most %d supported", op, ndim,
                     NN_MAX_DIMS);
  for (int d = 0; d < ndim; d++)
    if (shape[d] < 0)
      return nn_seterr(NN_ERR_SHAPE, "%s: negative size %lld at dim %d", op, (long long)shape[d],
                       d);
  return NN_OK;
}

int nn_tensor_empty(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt, nn_device dev) {
  *out = NULL;
  int rc = check_shape("empty", ndim, shape);
  if (rc) return rc;
  if (!nn_backend_get(dev.type))
    return nn_seterr(NN_ERR_DEVICE, "empty: device %s is not available in this build",
                     nn_device_name(dev.type));
  nn_tensor *t = tensor_struct(dt, ndim, shape);
  if (!t) return nn_seterr(NN_ERR_NOMEM, "empty: out of memory");
  int64_t n = nn_tensor_numel(t);
  t->storage = storage_new((size_t)n * nn_dtype_size(dt), dev);
  if (!t->storage) {
    free(t);
    return nn_seterr(NN_ERR_NOMEM, "empty: cannot allocate %lld bytes on %s",
                     (long long)(n * (int64_t)nn_dtype_size(dt)), nn_device_name(dev.type));
  }
  *out = t;
  return NN_OK;
}

int nn_tensor_full(nn_tensor **out, int ndim, const int64_t *shape, double v, nn_dtype dt,
                   nn_device dev) {
  int rc = nn_tensor_empty(out, ndim, shape, dt, dev);
  if (rc) return rc;
  rc = nn_fill_(*out, v);
  if (rc) {
    nn_tensor_free(*out);
    *out = NULL;
  }
  return rc;
}

int nn_tensor_zeros(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt, nn_device dev) {
  return nn_tensor_full(out, ndim, shape, 0.0, dt, dev);
}

int nn_tensor_empty_like(nn_tensor **out, const nn_tensor *t) {
  return nn_tensor_empty(out, t->ndim, t->shape, t->dtype, t->storage->device);
}

int nn_tensor_zeros_like(nn_tensor **out, const nn_tensor *t) {
  return nn_tensor_zeros(out, t->ndim, t->shape, t->dtype, t->storage->device);
}

int nn_tensor_from_data(nn_tensor **out, int ndim, const int64_t *shape, nn_dtype dt,
                        const void *data) {
  int rc = nn_tensor_empty(out, ndim, shape, dt, nn_cpu);
  if (rc) return rc;
  memcpy(nn_tensor_data(*out), data, (size_t)nn_tensor_numel(*out) * nn_dtype_size(dt));
  return NN_OK;
}

int nn_tensor_arange(nn_tensor **out, int64_t n, nn_dtype dt) {
  int rc = nn_tensor_empty(out, 1, &n, dt, nn_cpu);
  if (rc) return rc;
  for (int64_t i = 0; i < n; i++) nn_tensor_set_flat(*out, i, (double)i);
  return NN_OK;
}

nn_tensor *nn_tensor_retain(nn_tensor *t) {
  if (t) t->refcount++;
  return t;
}

void nn_node_release(nn_node *n); /* autograd.c */

void nn_tensor_free(nn_tensor *t) {
  if (!t || --t->refcount > 0) return;
  storage_release(t->storage);
  nn_tensor_free(t->grad);
  nn_node_release(t->grad_fn);
  free(t);
}

int64_t nn_tensor_numel(const nn_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

bool nn_tensor_is_contiguous(const nn_tensor *t) {
  int64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != st) return false;
    st *= t->shape[d];
  }
  return true;
}

bool nn_tensor_same_shape(const nn_tensor *a, const nn_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

void *nn_tensor_data(const nn_tensor *t) {
  return (char *)t->storage->data + t->offset * (int64_t)nn_dtype_size(t->dtype);
}

static int64_t flat_to_offset(const nn_tensor *t, int64_t i) {
  int64_t off = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t s = t->shape[d];
    off += (i % s) * t->stride[d];
    i /= s;
  }
  return off;
}

double nn_tensor_get_flat(const nn_tensor *t, int64_t i) {
  NN_ASSERT(t->storage->device.type == NN_DEVICE_CPU);
  int64_t o = flat_to_offset(t, i);
  void *p = nn_tensor_data(t);
  switch (t->dtype) {
  case NN_DTYPE_F32:
    return ((float *)p)[o];
  case NN_DTYPE_F64:
    return ((double *)p)[o];
  case NN_DTYPE_I64:
    return (double)((int64_t *)p)[o];
  }
  return 0;
}

void nn_tensor_set_flat(nn_tensor *t, int64_t i, double v) {
  NN_ASSERT(t->storage->device.type == NN_DEVICE_CPU);
  int64_t o = flat_to_offset(t, i);
  void *p = nn_tensor_data(t);
  switch (t->dtype) {
  case NN_DTYPE_F32:
    ((float *)p)[o] = (float)v;
    break;
  case NN_DTYPE_F64:
    ((double *)p)[o] = v;
    break;
  case NN_DTYPE_I64:
    ((int64_t *)p)[o] = (int64_t)v;
    break;
  }
}

int nn_tensor_to_host(const nn_tensor *t, nn_dtype dt, void *dst) {
  nn_tensor *tmp = NULL, *h = NULL;
  int rc = nn_tensor_empty(&h, t->ndim, t->shape, dt, nn_cpu);
  if (rc) return rc;
  if (t->storage->device.type != NN_DEVICE_CPU) {
    const nn_backend_i *be = nn_backend_get(t->storage->device.type);
    /* convert on the device, then transfer */
    rc = nn_tensor_empty(&tmp, t->ndim, t->shape, dt, t->storage->device);
    if (!rc) rc = nn_copy_(tmp, t);
    if (!rc)
      rc = be->to_host(nn_tensor_data(h), nn_tensor_data(tmp),
                       (size_t)nn_tensor_numel(t) * nn_dtype_size(dt));
  } else {
    rc = nn_copy_(h, t);
  }
  if (!rc) memcpy(dst, nn_tensor_data(h), (size_t)nn_tensor_numel(h) * nn_dtype_size(dt));
  nn_tensor_free(tmp);
  nn_tensor_free(h);
  return rc;
}

int nn_tensor_item(const nn_tensor *t, double *v) {
  *v = 0;
  if (nn_tensor_numel(t) != 1) {
    char b[128];
    return nn_seterr(NN_ERR_SHAPE, "item: tensor of shape %s has %lld elements, not 1",
                     nn_shape_str(t, b, sizeof b), (long long)nn_tensor_numel(t));
  }
  if (t->storage->device.type == NN_DEVICE_CPU) {
    *v = nn_tensor_get_flat(t, 0);
    return NN_OK;
  }
  double d;
  int rc = nn_tensor_to_host(t, NN_DTYPE_F64, &d);
  if (rc) return rc;
  *v = d;
  return NN_OK;
}

/* ---------------------------------------------------------------- in-place copy and fill */

int nn_copy_(nn_tensor *dst, const nn_tensor *src) {
  char b1[128], b2[128];
  /* src must broadcast to dst */
  if (src->ndim > dst->ndim) goto bad;
  for (int d = 0; d < src->ndim; d++) {
    int64_t s = src->shape[src->ndim - 1 - d], t = dst->shape[dst->ndim - 1 - d];
    if (s != t && s != 1) goto bad;
  }
  nn_tensor *ex = NULL, *moved = NULL;
  int rc = NN_OK;
  if (src->storage->device.type != dst->storage->device.type) { /* cross-device: move first */
    bool prev = nn_set_grad_enabled(false);
    rc = nn_to_device(&moved, (nn_tensor *)src, dst->storage->device);
    nn_set_grad_enabled(prev);
    if (rc) return rc;
    src = moved;
  }
  rc = nn_expand(&ex, (nn_tensor *)src, dst->ndim, dst->shape);
  nn_tensor_free(moved);
  if (rc) return rc;
  nn_op_params p = {0};
  rc = nn_dispatch(NN_OP_COPY, 1, &dst, 1, &ex, &p);
  nn_tensor_free(ex);
  return rc;
bad:
  return nn_seterr(NN_ERR_SHAPE, "copy: source of shape %s does not broadcast to %s",
                   nn_shape_str(src, b1, sizeof b1), nn_shape_str(dst, b2, sizeof b2));
}

int nn_fill_(nn_tensor *t, double v) {
  nn_op_params p = {0};
  p.f[0] = v;
  return nn_dispatch(NN_OP_FILL, 1, &t, 0, NULL, &p);
}

int nn_tensor_rebind_(nn_tensor *t, const nn_tensor *v) {
  char b1[128], b2[128];
  if (!nn_tensor_same_shape(t, v) || t->dtype != v->dtype)
    return nn_seterr(NN_ERR_SHAPE, "rebind: %s %s and %s %s differ", nn_dtype_name(t->dtype),
                     nn_shape_str(t, b1, sizeof b1), nn_dtype_name(v->dtype),
                     nn_shape_str(v, b2, sizeof b2));
  v->storage->refcount++;
  storage_release(t->storage);
  t->storage = v->storage;
  t->offset = v->offset;
  memcpy(t->stride, v->stride, sizeof t->stride);
  return NN_OK;
}

/* ---------------------------------------------------------------- views */

/* A new tensor object sharing t's storage (retained), with t's dtype; shape set by the caller. */
static nn_tensor *view_of(const nn_tensor *t) {
  nn_tensor *v = calloc(1, sizeof *v);
  if (!v) return NULL;
  v->refcount = 1;
  v->dtype = t->dtype;
  v->storage = t->storage;
  v->storage->refcount++;
  v->offset = t->offset;
  v->ndim = t->ndim;
  memcpy(v->shape, t->shape, sizeof v->shape);
  memcpy(v->stride, t->stride, sizeof v->stride);
  return v;
}

nn_tensor *nn_alias(nn_tensor *t) { return view_of(t); }

int nn_detach(nn_tensor **out, nn_tensor *t) {
  *out = view_of(t);
  return *out ? NN_OK : nn_seterr(NN_ERR_NOMEM, "detach: out of memory");
}

/* Backward of every pure view: route dout back through the inverse view. We implement it
 * generically: make a zero tensor shaped like the input, take the same view of it, and add dout
 * into that view (handles narrow, slice, expand (sum), transpose, reshape alike). */
static int view_backward(nn_node *n, nn_tensor *dout, nn_tensor **din);

typedef enum { V_RESHAPE, V_TRANSPOSE, V_PERMUTE, V_NARROW, V_EXPAND, V_SLICE } view_kind;

static int record_view(nn_tensor *out, nn_tensor *in, view_kind k, const nn_op_params *p) {
  if (!nn_needs_graph(1, &in)) return NN_OK;
  nn_node *n = NULL;
  static const char *names[] = {"reshape", "transpose", "permute", "narrow", "expand", "slice"};
  int rc = nn_record(out, names[k], view_backward, 1, &in, &n);
  if (rc) return rc;
  n->p = *p;
  n->p.i[15] = k;
  return NN_OK;
}

/* Re-applies view kind k with params p to base (no autograd). */
static int apply_view(nn_tensor **out, nn_tensor *base, const nn_node *n);

static int finish_view(nn_tensor **out, nn_tensor *v, nn_tensor *in, view_kind k,
                       const nn_op_params *p) {
  int rc = record_view(v, in, k, p);
  if (rc) {
    nn_tensor_free(v);
    *out = NULL;
    return rc;
  }
  *out = v;
  return NN_OK;
}

int nn_view(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape) {
  *out = NULL;
  char b[128];
  int64_t sh[NN_MAX_DIMS];
  int infer = -1;
  if (ndim < 0 || ndim > NN_MAX_DIMS)
    return nn_seterr(NN_ERR_SHAPE, "reshape: %d dims requested, at most %d", ndim, NN_MAX_DIMS);
  int64_t known = 1;
  for (int d = 0; d < ndim; d++) {
    sh[d] = shape[d];
    if (sh[d] == -1) {
      if (infer >= 0) return nn_seterr(NN_ERR_SHAPE, "reshape: more than one -1 in the shape");
      infer = d;
    } else if (sh[d] < 0) {
      return nn_seterr(NN_ERR_SHAPE, "reshape: negative size %lld", (long long)sh[d]);
    } else {
      known *= sh[d];
    }
  }
  int64_t n = nn_tensor_numel(t);
  if (infer >= 0) {
    if (known == 0 || n % known)
      return nn_seterr(NN_ERR_SHAPE, "reshape: cannot infer -1 for %lld elements of %s",
                       (long long)n, nn_shape_str(t, b, sizeof b));
    sh[infer] = n / known;
    known *= sh[infer];
  }
  if (known != n) {
    char b2[128] = "(";
    size_t k = 1;
    for (int d = 0; d < ndim; d++)
      k += (size_t)snprintf(b2 + k, sizeof b2 - k, d ? ", %lld" : "%lld", (long long)sh[d]);
    snprintf(b2 + k, sizeof b2 - k, ")");
    return nn_seterr(NN_ERR_SHAPE,
                     "reshape: shape %s is invalid for input of shape %s (%lld elements)", b2,
                     nn_shape_str(t, b, sizeof b), (long long)n);
  }
  if (!nn_tensor_is_contiguous(t))
    return nn_seterr(NN_ERR_SHAPE, "view: tensor of shape %s is not contiguous; use reshape",
                     nn_shape_str(t, b, sizeof b));
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "reshape: out of memory");
  v->ndim = ndim;
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    v->shape[d] = sh[d];
    v->stride[d] = st;
    st *= sh[d];
  }
  nn_op_params p = {0};
  p.i[0] = ndim;
  for (int d = 0; d < ndim; d++) p.i[1 + d] = sh[d];
  return finish_view(out, v, t, V_RESHAPE, &p);
}

int nn_reshape(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape) {
  *out = NULL;
  if (nn_tensor_is_contiguous(t)) return nn_view(out, t, ndim, shape);
  nn_tensor *c = NULL;
  int rc = nn_contiguous(&c, t);
  if (rc) return rc;
  rc = nn_view(out, c, ndim, shape);
  nn_tensor_free(c);
  return rc;
}

int nn_transpose(nn_tensor **out, nn_tensor *t, int d0, int d1) {
  *out = NULL;
  char b[128];
  int a = nn_wrap_dim(d0, t->ndim), c = nn_wrap_dim(d1, t->ndim);
  if (a < 0 || c < 0 || t->ndim == 0)
    return nn_seterr(NN_ERR_INDEX, "transpose: dims (%d, %d) out of range for shape %s", d0, d1,
                     nn_shape_str(t, b, sizeof b));
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "transpose: out of memory");
  int64_t s = v->shape[a];
  v->shape[a] = v->shape[c];
  v->shape[c] = s;
  s = v->stride[a];
  v->stride[a] = v->stride[c];
  v->stride[c] = s;
  nn_op_params p = {0};
  p.i[0] = a;
  p.i[1] = c;
  return finish_view(out, v, t, V_TRANSPOSE, &p);
}

int nn_permute(nn_tensor **out, nn_tensor *t, const int *perm) {
  *out = NULL;
  char b[128];
  int seen[NN_MAX_DIMS] = {0}, pr[NN_MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) {
    int q = nn_wrap_dim(perm[d], t->ndim);
    if (q < 0 || seen[q])
      return nn_seterr(NN_ERR_INDEX, "permute: invalid permutation for shape %s (entry %d is %d)",
                       nn_shape_str(t, b, sizeof b), d, perm[d]);
    seen[q] = 1;
    pr[d] = q;
  }
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "permute: out of memory");
  nn_op_params p = {0};
  for (int d = 0; d < t->ndim; d++) {
    v->shape[d] = t->shape[pr[d]];
    v->stride[d] = t->stride[pr[d]];
    p.i[d] = pr[d];
  }
  return finish_view(out, v, t, V_PERMUTE, &p);
}

int nn_slice(nn_tensor **out, nn_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
  *out = NULL;
  char b[128];
  int d = nn_wrap_dim(dim, t->ndim);
  if (d < 0 || t->ndim == 0)
    return nn_seterr(NN_ERR_INDEX, "slice: dim %d out of range for shape %s", dim,
                     nn_shape_str(t, b, sizeof b));
  if (step <= 0)
    return nn_seterr(NN_ERR_ARG, "slice: step must be positive, got %lld", (long long)step);
  int64_t n = t->shape[d];
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  if (start < 0) start = 0;
  if (stop > n) stop = n;
  if (start > n) start = n;
  int64_t len = stop > start ? (stop - start + step - 1) / step : 0;
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "slice: out of memory");
  v->offset += start * t->stride[d];
  v->shape[d] = len;
  v->stride[d] = t->stride[d] * step;
  nn_op_params p = {0};
  p.i[0] = d;
  p.i[1] = start;
  p.i[2] = len;
  p.i[3] = step;
  return finish_view(out, v, t, V_SLICE, &p);
}

int nn_narrow(nn_tensor **out, nn_tensor *t, int dim, int64_t start, int64_t len) {
  *out = NULL;
  char b[128];
  int d = nn_wrap_dim(dim, t->ndim);
  if (d < 0 || t->ndim == 0)
    return nn_seterr(NN_ERR_INDEX, "narrow: dim %d out of range for shape %s", dim,
                     nn_shape_str(t, b, sizeof b));
  if (start < 0 || len < 0 || start + len > t->shape[d])
    return nn_seterr(NN_ERR_INDEX, "narrow: [%lld, %lld) out of range for dim %d of shape %s",
                     (long long)start, (long long)(start + len), d, nn_shape_str(t, b, sizeof b));
  return nn_slice(out, t, d, start, start + len, 1);
}

int nn_expand(nn_tensor **out, nn_tensor *t, int ndim, const int64_t *shape) {
  *out = NULL;
  char b[128];
  if (ndim < t->ndim || ndim > NN_MAX_DIMS) goto bad;
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "expand: out of memory");
  int lead = ndim - t->ndim;
  for (int d = ndim - 1; d >= 0; d--) {
    int sd = d - lead;
    int64_t s = sd >= 0 ? t->shape[sd] : 1, st = sd >= 0 ? t->stride[sd] : 0;
    int64_t want = shape[d] == -1 && sd >= 0 ? s : shape[d];
    if (s == want) {
      v->shape[d] = s;
      v->stride[d] = st;
    } else if (s == 1 && want >= 0) {
      v->shape[d] = want;
      v->stride[d] = 0;
    } else {
      nn_tensor_free(v);
      goto bad;
    }
  }
  v->ndim = ndim;
  nn_op_params p = {0};
  p.i[0] = ndim;
  for (int d = 0; d < ndim; d++) p.i[1 + d] = v->shape[d];
  return finish_view(out, v, t, V_EXPAND, &p);
bad:;
  char b2[128] = "(";
  size_t k = 1;
  for (int d = 0; d < ndim && d < NN_MAX_DIMS; d++)
    k += (size_t)snprintf(b2 + k, sizeof b2 - k, d ? ", %lld" : "%lld", (long long)shape[d]);
  snprintf(b2 + k, sizeof b2 - k, ")");
  return nn_seterr(NN_ERR_SHAPE, "expand: shape %s cannot be broadcast to %s",
                   nn_shape_str(t, b, sizeof b), b2);
}

/* unsqueeze and squeeze are pure views (any strides); their backward reshapes dout back. */
static int insert_or_drop(nn_tensor **out, nn_tensor *t, int d, bool insert) {
  nn_tensor *v = view_of(t);
  if (!v) return nn_seterr(NN_ERR_NOMEM, "%s: out of memory", insert ? "unsqueeze" : "squeeze");
  if (insert) {
    for (int i = t->ndim; i > d; i--) {
      v->shape[i] = t->shape[i - 1];
      v->stride[i] = t->stride[i - 1];
    }
    v->shape[d] = 1;
    v->stride[d] = d < t->ndim ? t->shape[d] * t->stride[d] : 1;
    v->ndim = t->ndim + 1;
  } else {
    for (int i = d; i < t->ndim - 1; i++) {
      v->shape[i] = t->shape[i + 1];
      v->stride[i] = t->stride[i + 1];
    }
    v->ndim = t->ndim - 1;
  }
  nn_op_params p = {0};
  p.i[0] = v->ndim;
  for (int i = 0; i < v->ndim; i++) p.i[1 + i] = v->shape[i];
  return finish_view(out, v, t, V_RESHAPE, &p);
}

int nn_unsqueeze(nn_tensor **out, nn_tensor *t, int dim) {
  *out = NULL;
  char b[128];
  int d = dim < 0 ? dim + t->ndim + 1 : dim;
  if (d < 0 || d > t->ndim || t->ndim >= NN_MAX_DIMS)
    return nn_seterr(NN_ERR_INDEX, "unsqueeze: dim %d out of range for shape %s", dim,
                     nn_shape_str(t, b, sizeof b));
  return insert_or_drop(out, t, d, true);
}

int nn_squeeze(nn_tensor **out, nn_tensor *t, int dim) {
  *out = NULL;
  char b[128];
  int d = nn_wrap_dim(dim, t->ndim);
  if (d < 0 || t->ndim == 0 || t->shape[d] != 1)
    return nn_seterr(NN_ERR_INDEX, "squeeze: dim %d of shape %s is not of size 1", dim,
                     nn_shape_str(t, b, sizeof b));
  return insert_or_drop(out, t, d, false);
}

int nn_flatten(nn_tensor **out, nn_tensor *t, int start_dim, int end_dim) {
  *out = NULL;
  char b[128];
  if (t->ndim == 0) return nn_reshape(out, t, 1, (int64_t[]){1});
  int s = nn_wrap_dim(start_dim, t->ndim), e = nn_wrap_dim(end_dim, t->ndim);
  if (s < 0 || e < 0 || s > e)
    return nn_seterr(NN_ERR_INDEX, "flatten: dims %d..%d invalid for shape %s", start_dim, end_dim,
                     nn_shape_str(t, b, sizeof b));
  int64_t sh[NN_MAX_DIMS];
  int k = 0;
  for (int d = 0; d < s; d++) sh[k++] = t->shape[d];
  int64_t m = 1;
  for (int d = s; d <= e; d++) m *= t->shape[d];
  sh[k++] = m;
  for (int d = e + 1; d < t->ndim; d++) sh[k++] = t->shape[d];
  return nn_reshape(out, t, k, sh);
}

static int apply_view(nn_tensor **out, nn_tensor *base, const nn_node *n) {
  const nn_op_params *p = &n->p;
  switch ((view_kind)p->i[15]) {
  case V_RESHAPE:
    return nn_view(out, base, (int)p->i[0], &p->i[1]);
  case V_TRANSPOSE:
    return nn_transpose(out, base, (int)p->i[0], (int)p->i[1]);
  case V_PERMUTE: {
    int perm[NN_MAX_DIMS];
    for (int d = 0; d < base->ndim; d++) perm[d] = (int)p->i[d];
    return nn_permute(out, base, perm);
  }
  case V_NARROW:
  case V_SLICE:
    return nn_slice(out, base, (int)p->i[0], p->i[1], p->i[1] + (p->i[2] - 1) * p->i[3] + 1,
                    p->i[3]);
  case V_EXPAND:
    return nn_expand(out, base, (int)p->i[0], &p->i[1]);
  }
  return nn_seterr(NN_ERR_STATE, "view backward: unknown view kind");
}

static int view_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  nn_tensor *in = n->in[0];
  if ((view_kind)n->p.i[15] == V_EXPAND) return nn_sum_to_shape(din, dout, in->ndim, in->shape);
  if ((view_kind)n->p.i[15] == V_RESHAPE) return nn_reshape(din, dout, in->ndim, in->shape);
  nn_tensor *z = NULL, *v = NULL;
  int rc = nn_tensor_zeros(&z, in->ndim, in->shape, dout->dtype, dout->storage->device);
  if (!rc) rc = apply_view(&v, z, n);
  if (!rc) rc = nn_copy_(v, dout);
  nn_tensor_free(v);
  if (rc) {
    nn_tensor_free(z);
    return rc;
  }
  *din = z;
  return NN_OK;
}

/* ---------------------------------------------------------------- copies */

static int copy_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  if (n->in[0]->dtype == dout->dtype) return nn_clone(din, dout);
  return nn_to_dtype(din, dout, n->in[0]->dtype);
}

static int copy_to(nn_tensor **out, nn_tensor *t, nn_dtype dt, const char *name) {
  *out = NULL;
  nn_tensor *c = NULL;
  int rc = nn_tensor_empty(&c, t->ndim, t->shape, dt, t->storage->device);
  if (!rc) rc = nn_copy_(c, t);
  if (!rc && dt != NN_DTYPE_I64 && t->dtype != NN_DTYPE_I64 && nn_needs_graph(1, &t))
    rc = nn_record(c, name, copy_backward, 1, &t, NULL);
  if (rc) {
    nn_tensor_free(c);
    return rc;
  }
  *out = c;
  return NN_OK;
}

int nn_clone(nn_tensor **out, nn_tensor *t) { return copy_to(out, t, t->dtype, "clone"); }

int nn_contiguous(nn_tensor **out, nn_tensor *t) {
  if (nn_tensor_is_contiguous(t)) {
    *out = nn_tensor_retain(t);
    return NN_OK;
  }
  return copy_to(out, t, t->dtype, "contiguous");
}

int nn_to_dtype(nn_tensor **out, nn_tensor *t, nn_dtype dt) {
  if (dt == t->dtype) {
    *out = nn_tensor_retain(t);
    return NN_OK;
  }
  return copy_to(out, t, dt, "to_dtype");
}

int nn_broadcast_shape(const char *op, const nn_tensor *a, const nn_tensor *b, int *ndim,
                       int64_t *shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < n; d++) {
    int da = a->ndim - n + d, db = b->ndim - n + d;
    int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char b1[128], b2[128];
      return nn_seterr(NN_ERR_SHAPE,
                       "%s: shapes %s and %s cannot be broadcast (dim %d: %lld vs %lld)", op,
                       nn_shape_str(a, b1, sizeof b1), nn_shape_str(b, b2, sizeof b2), d,
                       (long long)sa, (long long)sb);
    }
    shape[d] = sa == 1 ? sb : sa;
  }
  *ndim = n;
  return NN_OK;
}

/* ---------------------------------------------------------------- devices */

int nn_device_parse(nn_device *out, const char *s) {
  out->type = NN_DEVICE_CPU;
  out->index = 0;
  if (!strcmp(s, "cpu")) return NN_OK;
  if (!strncmp(s, "cuda", 4)) {
    char *end = NULL;
    long idx = 0;
    if (s[4] == ':') idx = strtol(s + 5, &end, 10);
    if ((s[4] == 0) || (s[4] == ':' && end && end != s + 5 && *end == 0 && idx >= 0)) {
      out->type = NN_DEVICE_CUDA;
      out->index = (int)idx;
      return NN_OK;
    }
  }
  return nn_seterr(NN_ERR_ARG, "unknown device \"%s\"; devices are cpu, cuda, cuda:N", s);
}

static int to_device_backward(nn_node *n, nn_tensor *dout, nn_tensor **din) {
  return nn_to_device(din, dout, n->in[0]->storage->device);
}

/* Contiguous same-dtype copy of a contiguous tensor across devices, through host memory when
 * neither side is the CPU. */
static int cross_copy(nn_tensor *dst, const nn_tensor *src) {
  size_t nb = (size_t)nn_tensor_numel(src) * nn_dtype_size(src->dtype);
  nn_device_type sd = src->storage->device.type, dd = dst->storage->device.type;
  if (sd == NN_DEVICE_CPU)
    return nn_backend_get(dd)->from_host(nn_tensor_data(dst), nn_tensor_data(src), nb);
  if (dd == NN_DEVICE_CPU)
    return nn_backend_get(sd)->to_host(nn_tensor_data(dst), nn_tensor_data(src), nb);
  nn_tensor *h = NULL;
  int rc = nn_tensor_empty(&h, src->ndim, src->shape, src->dtype, nn_cpu);
  if (!rc) rc = nn_backend_get(sd)->to_host(nn_tensor_data(h), nn_tensor_data(src), nb);
  if (!rc) rc = nn_backend_get(dd)->from_host(nn_tensor_data(dst), nn_tensor_data(h), nb);
  nn_tensor_free(h);
  return rc;
}

int nn_to_device(nn_tensor **out, nn_tensor *t, nn_device dev) {
  *out = NULL;
  nn_device have = t->storage->device;
  if (have.type == dev.type && have.index == dev.index) {
    *out = nn_tensor_retain(t);
    return NN_OK;
  }
  const nn_backend_i *be = nn_backend_get(dev.type);
  if (!be)
    return nn_seterr(NN_ERR_DEVICE,
                     "to: device %s is not available in this build (built without it, "
                     "or no such device)",
                     nn_device_name(dev.type));
  nn_tensor *c = NULL, *o = NULL;
  int rc = nn_contiguous(&c, t); /* on t's own device */
  if (!rc) rc = nn_tensor_empty(&o, t->ndim, t->shape, t->dtype, dev);
  if (!rc) {
    bool prev = nn_set_grad_enabled(false);
    rc = cross_copy(o, c);
    nn_set_grad_enabled(prev);
  }
  nn_tensor_free(c);
  if (!rc && t->dtype != NN_DTYPE_I64 && nn_needs_graph(1, &t))
    rc = nn_record(o, "to_device", to_device_backward, 1, &t, NULL);
  if (rc) {
    nn_tensor_free(o);
    return rc;
  }
  *out = o;
  return NN_OK;
}
