/* nn/gyro_dropout.c: GyroDropout, BlockDropout and BlockSequential (gyro_dropout.h; Lee et al.,
 * MLSys 2022). N batch rows, U units per row, G row groups, bs block size, nb = U / bs.
 * A layer's training forward is prepare (advance its state, return this step's (G, nb) block
 * mask) then apply (multiply by the expanded mask and 1 / (1 - p)); BlockSequential calls the
 * two around nn_block_linear so that dropped blocks are never computed. */
#include "gyro_dropout.h"
#include "autograd.h"
#include "ops_block.h"
#include "ops_elementwise.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  nn_gyro_opts o;
  int64_t nb, period;
} gyro_state;

typedef struct {
  double p;
  int64_t block, groups;
} bdrop_state;

static const nn_module_i gyro_vt, bdrop_vt;

int64_t nn_gyro_period(const nn_gyro_opts *o) {
  if (o->period > 0) return o->period;
  int64_t k = o->sigma > 0 ? o->iters * o->tau / o->sigma : 0;
  return k < 1 ? 1 : k;
}

/* ---------------------------------------------------------------- prepare / apply */

/* The indices of period k: the first tau of a Fisher-Yates shuffle of 0 .. sigma-1 with Philox
 * (key, NN_GYRO_STREAM, offset k * tau), one nn_rng_below per drawn index. */
static int gyro_draw(int64_t *draw, uint64_t key, int64_t k, int sigma, int tau) {
  int64_t *a = malloc((size_t)sigma * sizeof *a);
  if (!a) return nn_seterr(NN_ERR_NOMEM, "GyroDropout: out of memory");
  for (int i = 0; i < sigma; i++) a[i] = i;
  nn_rng r;
  nn_rng_init(&r, key, NN_GYRO_STREAM);
  r.offset = (uint64_t)k * (uint64_t)tau;
  for (int i = 0; i < tau; i++) {
    int64_t j = i + (int64_t)nn_rng_below(&r, (uint64_t)(sigma - i));
    int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
    draw[i] = a[i];
  }
  free(a);
  return NN_OK;
}

/* n int64 values of a state buffer to and from the host: direct on the cpu; on a device one
 * synchronising read, or an asynchronous write (nn_copy_ of a host tensor) */
static int state_read(nn_tensor *t, int64_t *v, int64_t n) {
  if (t->storage->device.type == NN_DEVICE_CPU) {
    memcpy(v, nn_tensor_data(t), (size_t)n * sizeof *v);
    return NN_OK;
  }
  return nn_tensor_to_host(t, NN_DTYPE_I64, v);
}

static int state_write(nn_tensor *t, const int64_t *v, int64_t n) {
  if (t->storage->device.type == NN_DEVICE_CPU) {
    memcpy(nn_tensor_data(t), v, (size_t)n * sizeof *v);
    return NN_OK;
  }
  nn_tensor *h = NULL;
  int rc = nn_tensor_from_data(&h, 1, &n, NN_DTYPE_I64, v);
  if (!rc) rc = nn_copy_(t, h);
  nn_tensor_free(h);
  return rc;
}

/* *out (G, nb) on pool's device: rows draw[0 .. G-1] of pool (sigma, nb) */
static int gyro_rows(nn_tensor **out, nn_tensor *pool, const int64_t *draw, int G, int64_t nb) {
  nn_tensor *g = NULL;
  int rc = nn_tensor_empty(&g, 2, (int64_t[]){G, nb}, NN_DTYPE_F32, pool->storage->device);
  if (!rc && pool->storage->device.type == NN_DEVICE_CPU) {
    const float *pl = nn_tensor_data(pool);
    float *gp = nn_tensor_data(g);
    for (int i = 0; i < G; i++) memcpy(gp + i * nb, pl + draw[i] * nb, (size_t)nb * sizeof *gp);
  } else { /* device to device copies of one row each, no synchronisation */
    for (int i = 0; !rc && i < G; i++) {
      nn_tensor *src = NULL, *dst = NULL;
      rc = nn_narrow(&src, pool, 0, draw[i], 1);
      if (!rc) rc = nn_narrow(&dst, g, 0, i, 1);
      if (!rc) rc = nn_copy_(dst, src);
      nn_tensor_free(src);
      nn_tensor_free(dst);
    }
  }
  if (rc) {
    nn_tensor_free(g);
    return rc;
  }
  *out = g;
  return NN_OK;
}

/* The state may live on any device (nn_module_to moves buffers with the parameters): on the cpu
 * it is read and written in place; elsewhere the step and the draw (or the key, at a period's
 * start) are read with one synchronisation each, and the mask rows are copied on the device. */
static int gyro_prepare(nn_module *m, int64_t N, int64_t U, nn_tensor **gm, int64_t *bs) {
  *gm = NULL;
  const gyro_state *s = m->state;
  (void)N;
  if (U != s->o.size)
    return nn_seterr(NN_ERR_SHAPE, "GyroDropout: input with %lld units per row, expected size=%lld",
                     (long long)U, (long long)s->o.size);
  nn_tensor *pool = m->buffers[0].t, *drawt = m->buffers[1].t, *stept = m->buffers[2].t;
  nn_tensor *keyt = m->buffers[3].t;
  int64_t step = 0, key = 0, *draw = malloc((size_t)s->o.tau * sizeof *draw);
  if (!draw) return nn_seterr(NN_ERR_NOMEM, "GyroDropout: out of memory");
  int rc = state_read(stept, &step, 1);
  if (!rc && step % s->period == 0) {
    rc = state_read(keyt, &key, 1);
    if (!rc) rc = gyro_draw(draw, (uint64_t)key, step / s->period, s->o.sigma, s->o.tau);
    if (!rc) rc = state_write(drawt, draw, s->o.tau);
  } else if (!rc) {
    rc = state_read(drawt, draw, s->o.tau);
  }
  for (int i = 0; !rc && i < s->o.tau; i++)
    if (draw[i] < 0 || draw[i] >= s->o.sigma)
      rc = nn_seterr(NN_ERR_STATE, "GyroDropout: draw index %lld outside the pool of %d masks",
                     (long long)draw[i], s->o.sigma);
  nn_tensor *g = NULL;
  if (!rc) rc = gyro_rows(&g, pool, draw, s->o.tau, s->nb);
  step++;
  if (!rc) rc = state_write(stept, &step, 1);
  free(draw);
  if (rc) {
    nn_tensor_free(g);
    return rc;
  }
  *gm = g;
  *bs = s->o.block;
  return NN_OK;
}

/* A fresh (groups, nb) mask drawn on dev (the same numbers on every device: nn/rng.h). */
static int bdrop_prepare(nn_module *m, int64_t N, int64_t U, nn_device dev, nn_tensor **gm,
                         int64_t *bs) {
  *gm = NULL;
  const bdrop_state *s = m->state;
  (void)N;
  if (U % s->block)
    return nn_seterr(NN_ERR_SHAPE,
                     "BlockDropout: block=%lld does not divide the %lld units per row",
                     (long long)s->block, (long long)U);
  nn_tensor *g = NULL;
  int rc = nn_tensor_empty(&g, 2, (int64_t[]){s->groups, U / s->block}, NN_DTYPE_F32, dev);
  if (!rc) rc = nn_bernoulli_(g, 1.0 - s->p, m->rng);
  if (rc) {
    nn_tensor_free(g);
    return rc;
  }
  *gm = g;
  *bs = s->block;
  return NN_OK;
}

static double drop_p(const nn_module *m) {
  return m->vt == &gyro_vt ? ((const gyro_state *)m->state)->o.p
                           : ((const bdrop_state *)m->state)->p;
}

/* This step's (G, nb) block mask on dev (the device of the input it will multiply). */
static int drop_prepare(nn_module *m, int64_t N, int64_t U, nn_device dev, nn_tensor **gm,
                        int64_t *bs) {
  if (m->vt != &gyro_vt) return bdrop_prepare(m, N, U, dev, gm, bs);
  nn_tensor *g = NULL, *t = NULL;
  int rc = gyro_prepare(m, N, U, &g, bs);
  if (!rc && (g->storage->device.type != dev.type || g->storage->device.index != dev.index)) {
    rc = nn_to_device(&t, g, dev);
    nn_tensor_free(g);
    g = rc ? NULL : t;
  }
  *gm = g;
  return rc;
}

/* out = x * expand(gm) / (1 - p), x viewed as (N, U) */
static int drop_apply(nn_module *m, nn_tensor **out, nn_tensor *x, nn_tensor *gm, int64_t bs) {
  nn_tensor *dense = NULL, *dv = NULL;
  int rc = nn_block_mask_expand(&dense, gm, x->shape[0], bs);
  if (!rc) rc = nn_view(&dv, dense, x->ndim, x->shape);
  if (!rc) rc = nn_dropout_mask(out, x, dv, 1.0 / (1.0 - drop_p(m)));
  nn_tensor_free(dense);
  nn_tensor_free(dv);
  return rc;
}

static int drop_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  if (!m->training) {
    *out = nn_tensor_retain(x);
    return NN_OK;
  }
  char b[128];
  if (x->ndim < 1)
    return nn_seterr(NN_ERR_SHAPE, "%s: input of shape %s, expected (N, ...)", m->vt->type,
                     nn_shape_str(x, b, sizeof b));
  int64_t N = x->shape[0], U = 1;
  for (int d = 1; d < x->ndim; d++) U *= x->shape[d];
  nn_tensor *gm = NULL;
  int64_t bs = 1;
  int rc = drop_prepare(m, N, U, x->storage->device, &gm, &bs);
  if (!rc) rc = drop_apply(m, out, x, gm, bs);
  nn_tensor_free(gm);
  return rc;
}

/* ---------------------------------------------------------------- GyroDropout */

static void gyro_describe(const nn_module *m, char *buf, size_t n) {
  const gyro_state *s = m->state;
  snprintf(buf, n, "p=%g, size=%lld, sigma=%d, tau=%d, period=%lld, block=%lld, shared=%s", s->o.p,
           (long long)s->o.size, s->o.sigma, s->o.tau, (long long)s->period, (long long)s->o.block,
           s->o.shared ? "true" : "false");
}

static const nn_module_i gyro_vt = {"GyroDropout", drop_forward, NULL, NULL, gyro_describe};

int nn_gyro_dropout_new(nn_module **out, const nn_gyro_opts *o) {
  *out = NULL;
  if (!(o->p >= 0 && o->p < 1))
    return nn_seterr(NN_ERR_ARG, "GyroDropout: p must be in [0, 1), got %g", o->p);
  if (o->tau < 1 || o->sigma < o->tau)
    return nn_seterr(NN_ERR_ARG, "GyroDropout: need sigma >= tau >= 1, got sigma=%d, tau=%d",
                     o->sigma, o->tau);
  if (o->size <= 0)
    return nn_seterr(NN_ERR_ARG,
                     "GyroDropout: size (units per row) is required and positive, got %lld",
                     (long long)o->size);
  if (o->block < 1 || o->size % o->block)
    return nn_seterr(NN_ERR_ARG, "GyroDropout: block=%lld does not divide size=%lld",
                     (long long)o->block, (long long)o->size);
  if (o->iters <= 0 && o->period <= 0)
    return nn_seterr(NN_ERR_ARG, "GyroDropout: give iters (total training iterations: period = "
                                 "iters * tau / sigma) or period");
  gyro_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "GyroDropout: out of memory");
  s->o = *o;
  s->nb = o->size / o->block;
  s->period = nn_gyro_period(o);
  nn_module *m = NULL;
  int rc = nn_module_new(&m, &gyro_vt, s);
  if (rc) {
    free(s);
    return rc;
  }
  nn_tensor *t = NULL;
  rc = nn_tensor_empty(&t, 2, (int64_t[]){o->sigma, s->nb}, NN_DTYPE_F32, nn_cpu);
  if (!rc) rc = nn_bernoulli_(t, 1.0 - o->p, NULL);
  if (!rc)
    rc = nn_module_add_buffer(m, "pool", t);
  else
    nn_tensor_free(t);
  if (!rc) rc = nn_tensor_zeros(&t, 1, (int64_t[]){o->tau}, NN_DTYPE_I64, nn_cpu);
  if (!rc) rc = nn_module_add_buffer(m, "draw", t);
  if (!rc) rc = nn_tensor_zeros(&t, 1, (int64_t[]){1}, NN_DTYPE_I64, nn_cpu);
  if (!rc) rc = nn_module_add_buffer(m, "step", t);
  if (!rc) rc = nn_tensor_zeros(&t, 1, (int64_t[]){1}, NN_DTYPE_I64, nn_cpu);
  if (!rc) {
    uint64_t key = o->shared ? nn_default_rng()->seed : nn_rng_below(nn_default_rng(), UINT64_MAX);
    *(int64_t *)nn_tensor_data(t) = (int64_t)key;
    rc = nn_module_add_buffer(m, "key", t);
  }
  if (rc) {
    nn_module_free(m);
    return rc;
  }
  *out = m;
  return NN_OK;
}

int nn_gyro_dropout_ctor(nn_module **out, int n, const nn_opt *o) {
  static const char *const known[] = {"p",      "size",  "sigma",  "tau", "iters",
                                      "period", "block", "shared", NULL};
  *out = NULL;
  int rc = nn_opts_check("GyroDropout", n, o, known);
  if (rc) return rc;
  nn_gyro_opts g = {nn_opt_num(n, o, "p", 0.5),
                    (int64_t)nn_opt_num(n, o, "size", 0),
                    (int)nn_opt_num(n, o, "sigma", 256),
                    (int)nn_opt_num(n, o, "tau", 16),
                    (int64_t)nn_opt_num(n, o, "iters", 0),
                    (int64_t)nn_opt_num(n, o, "period", 0),
                    (int64_t)nn_opt_num(n, o, "block", 1),
                    nn_opt_num(n, o, "shared", 0) != 0};
  return nn_gyro_dropout_new(out, &g);
}

/* ---------------------------------------------------------------- BlockDropout */

static void bdrop_describe(const nn_module *m, char *buf, size_t n) {
  const bdrop_state *s = m->state;
  snprintf(buf, n, "p=%g, block=%lld, groups=%lld", s->p, (long long)s->block,
           (long long)s->groups);
}

static const nn_module_i bdrop_vt = {"BlockDropout", drop_forward, NULL, NULL, bdrop_describe};

int nn_block_dropout_new(nn_module **out, double p, int64_t block, int64_t groups) {
  *out = NULL;
  if (!(p >= 0 && p < 1))
    return nn_seterr(NN_ERR_ARG, "BlockDropout: p must be in [0, 1), got %g", p);
  if (block < 1 || groups < 1)
    return nn_seterr(NN_ERR_ARG,
                     "BlockDropout: block and groups must be positive, got block=%lld, "
                     "groups=%lld",
                     (long long)block, (long long)groups);
  bdrop_state *s = malloc(sizeof *s);
  if (!s) return nn_seterr(NN_ERR_NOMEM, "BlockDropout: out of memory");
  *s = (bdrop_state){p, block, groups};
  int rc = nn_module_new(out, &bdrop_vt, s);
  if (rc) free(s);
  return rc;
}

int nn_block_dropout_ctor(nn_module **out, int n, const nn_opt *o) {
  static const char *const known[] = {"p", "block", "groups", NULL};
  *out = NULL;
  int rc = nn_opts_check("BlockDropout", n, o, known);
  if (rc) return rc;
  return nn_block_dropout_new(out, nn_opt_num(n, o, "p", 0.5),
                              (int64_t)nn_opt_num(n, o, "block", 32),
                              (int64_t)nn_opt_num(n, o, "groups", 1));
}

/* ---------------------------------------------------------------- BlockSequential */

/* Blocks smaller than this run densely: gathering single units costs more than it saves. */
#define FUSE_MIN_BLOCK 8

static bool is_linear(const nn_module *m) {
  return !strcmp(m->vt->type, "Linear") && m->n_params >= 1 && m->params[0].t->ndim == 2;
}

static bool is_elementwise(const nn_module *m) {
  static const char *const names[] = {"ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Softplus"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(m->vt->type, names[i])) return true;
  return false;
}

static bool is_block_drop(const nn_module *m) {
  if (m->vt == &bdrop_vt) return ((const bdrop_state *)m->state)->block >= FUSE_MIN_BLOCK;
  if (m->vt == &gyro_vt) return ((const gyro_state *)m->state)->o.block >= FUSE_MIN_BLOCK;
  return false;
}

static int bseq_forward(nn_module *m, nn_tensor *x, nn_tensor **out) {
  nn_tensor *cur = nn_tensor_retain(x), *kin = NULL; /* kin: block mask of cur's zeroed units */
  int64_t kin_bs = 1;
  int rc = NN_OK;
  for (int i = 0; !rc && i < m->n_children; i++) {
    nn_module *c = m->children[i];
    nn_tensor *next = NULL;
    if (m->training && is_linear(c) && cur->ndim == 2) {
      int j = i + 1;
      while (j < m->n_children && is_elementwise(m->children[j])) j++;
      nn_module *d = j < m->n_children && m->children[j]->training && is_block_drop(m->children[j])
                         ? m->children[j]
                         : NULL;
      if (d || kin) {
        nn_tensor *gm = NULL, *y = NULL;
        int64_t bs = 1;
        nn_tensor *w = c->params[0].t, *b = c->n_params > 1 ? c->params[1].t : NULL;
        if (d) rc = drop_prepare(d, cur->shape[0], w->shape[0], cur->storage->device, &gm, &bs);
        if (!rc) rc = nn_block_linear(&y, cur, w, b, kin, kin_bs, gm, bs);
        for (int k = i + 1; !rc && k < j; k++) { /* the activations */
          nn_tensor *z = NULL;
          rc = nn_module_forward(m->children[k], y, &z);
          nn_tensor_free(y);
          y = z;
        }
        if (!rc && d) {
          rc = drop_apply(d, &next, y, gm, bs);
          nn_tensor_free(y);
          y = NULL;
        } else {
          next = y;
        }
        nn_tensor_free(kin);
        kin = d ? gm : NULL;
        if (!d) nn_tensor_free(gm);
        kin_bs = bs;
        i = d ? j : j - 1;
        nn_tensor_free(cur);
        cur = next;
        if (rc) {
          nn_tensor_free(y);
          cur = NULL;
        }
        continue;
      }
    }
    nn_tensor_free(kin);
    kin = NULL;
    rc = nn_module_forward(c, cur, &next);
    nn_tensor_free(cur);
    cur = next;
  }
  nn_tensor_free(kin);
  if (rc) {
    nn_tensor_free(cur);
    return rc;
  }
  *out = cur;
  return NN_OK;
}

static const nn_module_i bseq_vt = {"BlockSequential", bseq_forward, nn_module_chain_shape, NULL,
                                    NULL};

int nn_block_sequential_new(nn_module **out, int n, nn_module *const *children) {
  return nn_module_new_chain(out, &bseq_vt, n, children);
}
