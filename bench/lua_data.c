/* bench/lua_data.c: wb.data (datasets, minibatches, augmentations, corruptions, synthetic sets)
 * and wb.metrics (accuracy, nll) over nn/data.h.
 *
 * Shape letters: N samples, B batch, C channels, H, W image size, K classes.
 * Class labels stay 0-based (they are data). Seeds: where a seed option is absent, one is drawn
 * from the global generator, so wb.manual_seed makes a whole script reproducible. */
#include "module.h"
#include "wb_lua.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WB_DATASET_MT "wb.Dataset"
#define WB_BATCHER_MT "wb.Batcher"

/* ---------------------------------------------------------------- userdata */

/* A dataset. User value 1 is a table of epoch counters keyed by batch seed (see :batches). */
typedef struct {
  nn_dataset *d;
} ldataset;

typedef struct {
  nn_batcher *b;
} lbatcher;

static void pushdataset(lua_State *L, nn_dataset *d) {
  ldataset *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->d = NULL; /* closed until the reference is stored */
  luaL_setmetatable(L, WB_DATASET_MT);
  u->d = d;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
}

static nn_dataset *checkdataset(lua_State *L, int idx) {
  ldataset *u = luaL_testudata(L, idx, WB_DATASET_MT);
  if (!u) luaL_typeerror(L, idx, "dataset");
  if (!u->d) luaL_argerror(L, idx, "dataset has been closed");
  return u->d;
}

static int ldataset_gc(lua_State *L) {
  ldataset *u = luaL_checkudata(L, 1, WB_DATASET_MT);
  nn_dataset_free(u->d);
  u->d = NULL;
  return 0;
}

static int lbatcher_gc(lua_State *L) {
  lbatcher *u = luaL_checkudata(L, 1, WB_BATCHER_MT);
  nn_batcher_free(u->b);
  u->b = NULL;
  return 0;
}

static int retd(lua_State *L, int rc, nn_dataset **d) {
  if (rc) return wb_lua_nnerror(L);
  pushdataset(L, *d);
  return 1;
}

static int rett(lua_State *L, int rc, nn_tensor **t) {
  if (rc) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, *t);
  return 1;
}

/* A seed: the option key of the table at opts, else drawn from the global generator. */
static uint64_t optseed(lua_State *L, int opts, bool *given) {
  lua_Integer s = wb_lua_optinteger(L, opts, "seed", -1);
  if (given) *given = s >= 0;
  if (s >= 0) return (uint64_t)s;
  return nn_rng_below(nn_default_rng(), (uint64_t)1 << 53);
}

/* ---------------------------------------------------------------- loading and wrapping */

/* wb.data.fashion_mnist{split="train"|"test", dir=} */
static int lnn_fashion_mnist_load(lua_State *L) {
  static const char *const known[] = {"split", "dir", NULL};
  wb_lua_checkopts(L, 1, "fashion_mnist", known);
  const char *split = wb_lua_optstring(L, 1, "split", "train");
  const char *dir = wb_lua_optstring(L, 1, "dir", NULL);
  nn_dataset *d = NULL;
  return retd(L, nn_fashion_mnist_load(&d, dir, split), &d);
}

/* wb.data.dataset(x, y, {n_classes=0}): wraps tensors (n_classes 0: regression) */
static int lnn_dataset_new(lua_State *L) {
  static const char *const known[] = {"n_classes", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *y = wb_lua_checktensor(L, 2);
  wb_lua_checkopts(L, 3, "dataset", known);
  nn_dataset *d = NULL;
  return retd(L, nn_dataset_new(&d, x, y, (int)wb_lua_optinteger(L, 3, "n_classes", 0)), &d);
}

/* ---------------------------------------------------------------- dataset methods */

static int ldataset_size(lua_State *L) {
  lua_pushinteger(L, checkdataset(L, 1)->n);
  return 1;
}

static int ldataset_n_classes(lua_State *L) {
  lua_pushinteger(L, checkdataset(L, 1)->n_classes);
  return 1;
}

static int ldataset_x(lua_State *L) {
  wb_lua_pushtensor(L, nn_tensor_retain(checkdataset(L, 1)->x));
  return 1;
}

static int ldataset_y(lua_State *L) {
  wb_lua_pushtensor(L, nn_tensor_retain(checkdataset(L, 1)->y));
  return 1;
}

static int ldataset_tostring(lua_State *L) {
  ldataset *u = luaL_checkudata(L, 1, WB_DATASET_MT);
  if (!u->d) {
    lua_pushliteral(L, "dataset(closed)");
    return 1;
  }
  char xs[96], ys[96];
  lua_pushfstring(L, "dataset(n=%I, x=%s %s, y=%s %s, classes=%d)", (lua_Integer)u->d->n,
                  nn_shape_str(u->d->x, xs, sizeof xs), nn_dtype_name(u->d->x->dtype),
                  nn_shape_str(u->d->y, ys, sizeof ys), nn_dtype_name(u->d->y->dtype),
                  u->d->n_classes);
  return 1;
}

/* ds:class_counts() -> counts with counts[c + 1] the number of samples of class c */
static int lnn_dataset_class_counts(lua_State *L) {
  nn_dataset *d = checkdataset(L, 1);
  int64_t *c = lua_newuserdatauv(L, (size_t)(d->n_classes > 0 ? d->n_classes : 1) * sizeof *c, 0);
  if (nn_dataset_class_counts(d, c)) return wb_lua_nnerror(L);
  lua_createtable(L, d->n_classes, 0);
  for (int i = 0; i < d->n_classes; i++) {
    lua_pushinteger(L, c[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* ds:split(n_val, {seed=, stratified=false}) -> train, val */
static int lnn_dataset_split(lua_State *L) {
  static const char *const known[] = {"seed", "stratified", NULL};
  nn_dataset *d = checkdataset(L, 1), *tr = NULL, *va = NULL;
  lua_Integer nv = luaL_checkinteger(L, 2);
  wb_lua_checkopts(L, 3, "split", known);
  uint64_t seed = optseed(L, 3, NULL);
  if (nn_dataset_split(&tr, &va, d, nv, seed, wb_lua_optboolean(L, 3, "stratified", 0)))
    return wb_lua_nnerror(L);
  pushdataset(L, tr);
  pushdataset(L, va);
  return 2;
}

/* ds:subset(idx): idx an int64 tensor of 0-based sample indices */
static int lnn_dataset_subset(lua_State *L) {
  nn_dataset *d = checkdataset(L, 1), *o = NULL;
  nn_tensor *idx = wb_lua_totensor(L, 2);
  if (!idx)
    luaL_argerror(
        L, 2,
        "int64 tensor of 0-based sample indices expected (wb.tensor({...}, {dtype=\"int64\"}))");
  return retd(L, nn_dataset_subset(&o, d, idx), &o);
}

/* ds:classes({c1, c2, ...}, {relabel=false}): the samples of those classes (0-based labels) */
static int lnn_dataset_select_classes(lua_State *L) {
  static const char *const known[] = {"relabel", NULL};
  nn_dataset *d = checkdataset(L, 1), *o = NULL;
  luaL_checktype(L, 2, LUA_TTABLE);
  wb_lua_checkopts(L, 3, "classes", known);
  bool relabel = wb_lua_optboolean(L, 3, "relabel", 0);
  int k = (int)luaL_len(L, 2);
  int64_t *cls = lua_newuserdatauv(L, (size_t)(k ? k : 1) * sizeof *cls, 0);
  for (int i = 0; i < k; i++) {
    lua_geti(L, 2, i + 1);
    int ok;
    cls[i] = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_argerror(L, 2, "classes must be integers (0-based labels)");
    lua_pop(L, 1);
  }
  return retd(L, nn_dataset_select_classes(&o, d, cls, k, relabel), &o);
}

/* ds:kshot(k, {seed=}): k random samples of every class */
static int lnn_dataset_kshot(lua_State *L) {
  static const char *const known[] = {"seed", NULL};
  nn_dataset *d = checkdataset(L, 1), *o = NULL;
  lua_Integer k = luaL_checkinteger(L, 2);
  wb_lua_checkopts(L, 3, "kshot", known);
  return retd(L, nn_dataset_kshot(&o, d, k, optseed(L, 3, NULL)), &o);
}

/* ds:stats() -> mean, std: per-channel float32 (C) tensors */
static int lnn_dataset_channel_stats(lua_State *L) {
  nn_tensor *m = NULL, *s = NULL;
  if (nn_dataset_channel_stats(&m, &s, checkdataset(L, 1))) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, m);
  wb_lua_pushtensor(L, s);
  return 2;
}

/* A per-channel float32 (C) tensor from a tensor, a number (C values alike) or a list, left on
 * the stack; borrowed. */
static nn_tensor *channel_arg(lua_State *L, int arg, int64_t c) {
  nn_tensor *t = wb_lua_totensor(L, arg);
  if (t) return t;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    if (nn_tensor_full(&t, 1, &c, lua_tonumber(L, arg), NN_DTYPE_F32, nn_cpu)) wb_lua_nnerror(L);
  } else if (lua_istable(L, arg)) {
    t = wb_lua_astensor(L, arg, NN_DTYPE_F32);
  } else {
    luaL_typeerror(L, arg, "tensor, number or list of numbers");
  }
  wb_lua_pushtensor(L, t);
  return t;
}

static int64_t channels(const nn_tensor *x) { return x->ndim >= 2 ? x->shape[1] : 1; }

/* ds:normalize(mean?, std?) -> new dataset; without arguments, the dataset's own statistics */
static int lnn_dataset_normalize(lua_State *L) {
  nn_dataset *d = checkdataset(L, 1), *o = NULL;
  lua_settop(L, 3);
  if (lua_isnil(L, 2) && lua_isnil(L, 3)) {
    lua_settop(L, 1);
    lnn_dataset_channel_stats(L);
  }
  nn_tensor *m = channel_arg(L, 2, channels(d->x)), *s = channel_arg(L, 3, channels(d->x));
  return retd(L, nn_dataset_normalize(&o, d, m, s), &o);
}

/* ---- minibatches ---- */

static int batch_iter(lua_State *L) {
  lbatcher *u = lua_touserdata(L, lua_upvalueindex(1));
  if (!u->b) return 0;
  nn_tensor *x = NULL, *y = NULL;
  int rc = nn_batcher_next(u->b, &x, &y);
  if (rc < 0) return wb_lua_nnerror(L);
  if (rc == 0) { /* end of the epoch: let go of the batcher's buffers now */
    nn_batcher_free(u->b);
    u->b = NULL;
    return 0;
  }
  wb_lua_pushtensor(L, x);
  wb_lua_pushtensor(L, y);
  return 2;
}

/* ds:batches{size=64, shuffle=false, seed=, drop_last=false}: a generic-for iterator of x, y.
 * Each call is one epoch. Epochs of one seed are numbered per dataset: the first :batches call
 * with seed s shuffles with the permutation of (s, epoch 0), the next with (s, epoch 1), and so
 * on, so repeated epochs differ and a rerun of the script repeats them exactly. Without a seed a
 * shuffling dataset draws one from the global generator at its first shuffled :batches call and
 * keeps it; batches in order draw nothing, so evaluating never moves the generator. Breaking
 * out of the loop closes the iterator (its 4th value is a to-be-closed batcher). */
static int lnn_batcher_new(lua_State *L) {
  static const char *const known[] = {"size", "shuffle", "seed", "drop_last", NULL};
  nn_dataset *d = checkdataset(L, 1);
  lua_settop(L, 2);
  wb_lua_checkopts(L, 2, "batches", known);
  nn_batcher_opts o = {0};
  o.batch_size = wb_lua_optinteger(L, 2, "size", 64);
  o.shuffle = wb_lua_optboolean(L, 2, "shuffle", 0);
  o.drop_last = wb_lua_optboolean(L, 2, "drop_last", 0);
  lua_getiuservalue(L, 1, 1); /* 3: epoch counters */
  lua_Integer s = wb_lua_optinteger(L, 2, "seed", -1);
  if (s < 0 && !o.shuffle) s = 0; /* in order: no randomness, and nothing drawn */
  if (s < 0) {                    /* the dataset's own seed, drawn once */
    if (lua_getfield(L, 3, "default_seed") != LUA_TNUMBER) {
      lua_pushinteger(L, (lua_Integer)nn_rng_below(nn_default_rng(), (uint64_t)1 << 53));
      lua_setfield(L, 3, "default_seed");
    }
    lua_pop(L, 1);
    lua_getfield(L, 3, "default_seed");
    s = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  o.seed = (uint64_t)s;
  lua_geti(L, 3, s);
  lua_Integer epoch = lua_tointeger(L, -1); /* 0 when absent */
  lua_pop(L, 1);
  lua_pushinteger(L, epoch + 1);
  lua_seti(L, 3, s);

  lbatcher *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->b = NULL;
  luaL_setmetatable(L, WB_BATCHER_MT);
  if (nn_batcher_new(&u->b, d, &o)) return wb_lua_nnerror(L);
  nn_batcher_set_epoch(u->b, epoch);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, batch_iter, 1); /* iterator, state nil, control nil, closing value */
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  return 4;
}

/* ---------------------------------------------------------------- augmentations */

/* The generator of an augmentation: a fresh one seeded by the seed option (so the same seed gives
 * the same output), else the global generator (advanced by the call). */
static nn_rng *aug_rng(lua_State *L, int opts, nn_rng *local, const char *fn) {
  static const char *const known[] = {"seed", NULL};
  wb_lua_checkopts(L, opts, fn, known);
  lua_Integer s = wb_lua_optinteger(L, opts, "seed", -1);
  if (s < 0) return nn_default_rng();
  nn_rng_init(local, (uint64_t)s, 0);
  return local;
}

static int lnn_data_hflip(lua_State *L) {
  nn_tensor *o = NULL;
  return rett(L, nn_data_hflip(&o, wb_lua_checktensor(L, 1)), &o);
}

/* wb.data.translate(x, dy, dx) */
static int lnn_data_translate(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  return rett(L, nn_data_translate(&o, x, luaL_checkinteger(L, 2), luaL_checkinteger(L, 3)), &o);
}

/* wb.data.rotate(x, degrees) (counter-clockwise) */
static int lnn_data_rotate(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  return rett(L, nn_data_rotate(&o, x, luaL_checknumber(L, 2)), &o);
}

/* wb.data.random_hflip(x, p=0.5, {seed=}) */
static int lnn_data_random_hflip(lua_State *L) {
  nn_rng local;
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  double p = luaL_optnumber(L, 2, 0.5);
  nn_rng *r = aug_rng(L, 3, &local, "random_hflip");
  return rett(L, nn_data_random_hflip(&o, x, p, r), &o);
}

/* wb.data.random_crop(x, pad, {seed=}) */
static int lnn_data_random_crop(lua_State *L) {
  nn_rng local;
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  int pad = (int)luaL_checkinteger(L, 2);
  nn_rng *r = aug_rng(L, 3, &local, "random_crop");
  return rett(L, nn_data_random_crop(&o, x, pad, r), &o);
}

/* wb.data.random_rotate(x, max_degrees, {seed=}) */
static int lnn_data_random_rotate(lua_State *L) {
  nn_rng local;
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  double deg = luaL_checknumber(L, 2);
  nn_rng *r = aug_rng(L, 3, &local, "random_rotate");
  return rett(L, nn_data_random_rotate(&o, x, deg, r), &o);
}

/* wb.data.normalize(x, mean, std): per channel (dim 2) */
static int lnn_data_normalize(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  lua_settop(L, 3);
  nn_tensor *m = channel_arg(L, 2, channels(x)), *s = channel_arg(L, 3, channels(x));
  return rett(L, nn_data_normalize(&o, x, m, s), &o);
}

/* wb.data.corrupt(x, name, severity, {seed=}) */
static int lnn_data_corrupt(lua_State *L) {
  static const char *const known[] = {"seed", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  nn_corruption kind;
  if (nn_data_corruption_from_name(&kind, luaL_checkstring(L, 2))) return wb_lua_nnerror(L);
  lua_Integer sev = luaL_checkinteger(L, 3);
  wb_lua_checkopts(L, 4, "corrupt", known);
  return rett(L, nn_data_corrupt(&o, x, kind, (int)sev, optseed(L, 4, NULL)), &o);
}

/* wb.data.corruptions() -> the corruption names */
static int lnn_data_corruption_names(lua_State *L) {
  lua_createtable(L, NN_CORRUPT_COUNT, 0);
  for (int i = 0; i < NN_CORRUPT_COUNT; i++) {
    lua_pushstring(L, nn_data_corruption_name((nn_corruption)i));
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* wb.data.fashion_mnist_class(c) -> the English name of class c (0-based) */
static int lnn_fashion_mnist_class_name(lua_State *L) {
  lua_pushstring(L, nn_fashion_mnist_class_name((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* ---------------------------------------------------------------- synthetic sets */

/* wb.data.regression1d{n=1000, lo=-4, hi=4, noise=0.1, seed=} */
static int lnn_data_regression1d(lua_State *L) {
  static const char *const known[] = {"n", "lo", "hi", "noise", "seed", NULL};
  wb_lua_checkopts(L, 1, "regression1d", known);
  nn_dataset *d = NULL;
  lua_Integer n = wb_lua_optinteger(L, 1, "n", 1000);
  double lo = wb_lua_optnumber(L, 1, "lo", -4), hi = wb_lua_optnumber(L, 1, "hi", 4);
  double noise = wb_lua_optnumber(L, 1, "noise", 0.1);
  return retd(L, nn_data_regression1d(&d, n, lo, hi, noise, optseed(L, 1, NULL)), &d);
}

/* wb.data.blobs{n=1000, k=3, d=2, std=1, seed=} */
static int lnn_data_blobs(lua_State *L) {
  static const char *const known[] = {"n", "k", "d", "std", "seed", NULL};
  wb_lua_checkopts(L, 1, "blobs", known);
  nn_dataset *d = NULL;
  lua_Integer n = wb_lua_optinteger(L, 1, "n", 1000), k = wb_lua_optinteger(L, 1, "k", 3);
  lua_Integer dim = wb_lua_optinteger(L, 1, "d", 2);
  double std = wb_lua_optnumber(L, 1, "std", 1.0);
  return retd(L, nn_data_blobs(&d, n, (int)k, (int)dim, std, optseed(L, 1, NULL)), &d);
}

/* wb.data.two_moons{n=1000, noise=0.1, seed=} */
static int lnn_data_two_moons(lua_State *L) {
  static const char *const known[] = {"n", "noise", "seed", NULL};
  wb_lua_checkopts(L, 1, "two_moons", known);
  nn_dataset *d = NULL;
  lua_Integer n = wb_lua_optinteger(L, 1, "n", 1000);
  double noise = wb_lua_optnumber(L, 1, "noise", 0.1);
  return retd(L, nn_data_two_moons(&d, n, noise, optseed(L, 1, NULL)), &d);
}

/* ---------------------------------------------------------------- metrics */

/* Training flags of m and its descendants, depth first, saved so that an evaluation can put the
 * model in eval mode and restore exactly what it found (a frozen BatchNorm stays frozen). */
static int count_modules(const nn_module *m) {
  int n = 1;
  for (int i = 0; i < m->n_children; i++) n += count_modules(m->children[i]);
  return n;
}

static void save_modes(const nn_module *m, bool *f, int *k) {
  f[(*k)++] = m->training;
  for (int i = 0; i < m->n_children; i++) save_modes(m->children[i], f, k);
}

static void restore_modes(nn_module *m, const bool *f, int *k) {
  m->training = f[(*k)++];
  for (int i = 0; i < m->n_children; i++) restore_modes(m->children[i], f, k);
}

/* Runs the model over a dataset in eval mode without grad: the number of correct argmax
 * predictions (want_nll false) or the summed cross-entropy (true). */
static int evaluate(nn_module *m, const nn_dataset *d, int64_t batch, bool want_nll, double *out) {
  *out = 0;
  nn_batcher *b = NULL;
  nn_batcher_opts o = {batch, false, false, 0};
  int rc = nn_batcher_new(&b, d, &o);
  if (rc) return rc;
  int nm = count_modules(m), k = 0;
  bool *modes = malloc((size_t)nm * sizeof *modes);
  if (!modes) {
    nn_batcher_free(b);
    return nn_seterr(NN_ERR_NOMEM, "metrics: out of memory");
  }
  save_modes(m, modes, &k);
  nn_module_train(m, false);
  bool grad = nn_set_grad_enabled(false);
  nn_tensor *x = NULL, *y = NULL;
  /* batches go to the model's device (that of its first parameter) */
  nn_named *pl = NULL;
  int np = 0;
  nn_device dev = nn_cpu;
  if (nn_module_parameters(m, &pl, &np) == NN_OK && np > 0) dev = pl[0].t->storage->device;
  nn_named_list_free(pl, np);
  while ((rc = nn_batcher_next(b, &x, &y)) == 1) {
    nn_tensor *logits = NULL, *r = NULL, *xd = NULL, *yd = NULL;
    rc = nn_to_device(&xd, x, dev);
    if (!rc) rc = nn_to_device(&yd, y, dev);
    if (!rc) {
      nn_tensor_free(x);
      nn_tensor_free(y);
      x = xd;
      y = yd;
      xd = yd = NULL;
    }
    nn_tensor_free(xd);
    nn_tensor_free(yd);
    if (!rc) rc = nn_module_forward(m, x, &logits);
    if (!rc && logits->ndim != 2)
      rc =
          nn_seterr(NN_ERR_SHAPE, "metrics: the model's output has %d dims; (B, K) logits expected",
                    logits->ndim);
    if (!rc && want_nll) {
      rc = nn_cross_entropy(&r, logits, y, NN_REDUCTION_SUM);
      double v = 0;
      if (!rc) rc = nn_tensor_item(r, &v);
      *out += v;
    } else if (!rc) {
      rc = nn_argmax(&r, logits, 1, false);
      int64_t *p = NULL, *l = NULL;
      if (!rc) {
        p = malloc((size_t)y->shape[0] * sizeof *p);
        l = malloc((size_t)y->shape[0] * sizeof *l);
        if (!p || !l) rc = nn_seterr(NN_ERR_NOMEM, "metrics: out of memory");
      }
      if (!rc) rc = nn_tensor_to_host(r, NN_DTYPE_I64, p); /* device results come back here */
      if (!rc) rc = nn_tensor_to_host(y, NN_DTYPE_I64, l);
      for (int64_t i = 0; !rc && i < y->shape[0]; i++) *out += p[i] == l[i];
      free(p);
      free(l);
    }
    nn_tensor_free(r);
    nn_tensor_free(logits);
    nn_tensor_free(x);
    nn_tensor_free(y);
    x = y = NULL;
    if (rc) break;
  }
  nn_set_grad_enabled(grad);
  k = 0;
  restore_modes(m, modes, &k);
  free(modes);
  nn_batcher_free(b);
  return rc < 0 ? rc : NN_OK;
}

static int metric(lua_State *L, bool nll) {
  static const char *const known[] = {"batch", NULL};
  nn_module *m = wb_lua_checkmodule(L, 1);
  nn_dataset *d = checkdataset(L, 2);
  wb_lua_checkopts(L, 3, nll ? "nll" : "accuracy", known);
  lua_Integer batch = wb_lua_optinteger(L, 3, "batch", 256);
  if (d->n_classes <= 0)
    return luaL_error(L, "%s: the dataset has no classes (a regression set)",
                      nll ? "nll" : "accuracy");
  double v;
  if (evaluate(m, d, batch, nll, &v)) return wb_lua_nnerror(L);
  lua_pushnumber(L, d->n ? v / (double)d->n : NAN);
  return 1;
}

/* wb.metrics.accuracy(model, dataset, {batch=256}) -> fraction of correct argmax predictions, or
 * wb.metrics.accuracy(logits (B, K), labels (B)) */
static int lwb_metrics_accuracy(lua_State *L) {
  nn_tensor *logits = wb_lua_totensor(L, 1);
  if (!logits) return metric(L, false);
  nn_tensor *y = wb_lua_checktensor(L, 2), *p = NULL, *eq = NULL, *s = NULL;
  double v = 0;
  int rc = nn_argmax(&p, logits, -1, false);
  if (!rc) rc = nn_eq(&eq, p, y);
  if (!rc) rc = nn_mean_all(&s, eq);
  if (!rc) rc = nn_tensor_item(s, &v);
  nn_tensor_free(p);
  nn_tensor_free(eq);
  nn_tensor_free(s);
  if (rc) return wb_lua_nnerror(L);
  lua_pushnumber(L, v);
  return 1;
}

/* wb.metrics.nll(model, dataset, {batch=256}) -> mean negative log-likelihood (cross-entropy) */
static int lwb_metrics_nll(lua_State *L) { return metric(L, true); }

/* ---------------------------------------------------------------- registration */

static const luaL_Reg dataset_methods[] = {
    {"size", ldataset_size},
    {"n_classes", ldataset_n_classes},
    {"x", ldataset_x},
    {"y", ldataset_y},
    {"class_counts", lnn_dataset_class_counts},
    {"batches", lnn_batcher_new},
    {"split", lnn_dataset_split},
    {"subset", lnn_dataset_subset},
    {"classes", lnn_dataset_select_classes},
    {"kshot", lnn_dataset_kshot},
    {"stats", lnn_dataset_channel_stats},
    {"normalize", lnn_dataset_normalize},
    {NULL, NULL},
};

static const luaL_Reg dataset_meta[] = {
    {"__gc", ldataset_gc},
    {"__close", ldataset_gc},
    {"__len", ldataset_size},
    {"__tostring", ldataset_tostring},
    {NULL, NULL},
};

static const luaL_Reg data_funcs[] = {
    {"fashion_mnist", lnn_fashion_mnist_load},
    {"fashion_mnist_class", lnn_fashion_mnist_class_name},
    {"dataset", lnn_dataset_new},
    {"hflip", lnn_data_hflip},
    {"translate", lnn_data_translate},
    {"rotate", lnn_data_rotate},
    {"random_hflip", lnn_data_random_hflip},
    {"random_crop", lnn_data_random_crop},
    {"random_rotate", lnn_data_random_rotate},
    {"normalize", lnn_data_normalize},
    {"corrupt", lnn_data_corrupt},
    {"corruptions", lnn_data_corruption_names},
    {"regression1d", lnn_data_regression1d},
    {"blobs", lnn_data_blobs},
    {"two_moons", lnn_data_two_moons},
    {NULL, NULL},
};

static const luaL_Reg metrics_funcs[] = {
    {"accuracy", lwb_metrics_accuracy},
    {"nll", lwb_metrics_nll},
    {NULL, NULL},
};

void wb_lua_open_data(lua_State *L) {
  luaL_newmetatable(L, WB_DATASET_MT);
  luaL_setfuncs(L, dataset_meta, 0);
  luaL_newlib(L, dataset_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, WB_BATCHER_MT);
  lua_pushcfunction(L, lbatcher_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lbatcher_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_newlib(L, data_funcs);
  lua_setfield(L, -2, "data");
  luaL_newlib(L, metrics_funcs);
  lua_setfield(L, -2, "metrics");
}
