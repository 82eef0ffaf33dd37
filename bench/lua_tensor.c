/* bench/lua_tensor.c: tensors in Lua: the wb.Tensor userdata, constructors, methods and the
 * tensor functions of the wb table (every op of nn/ops_*.h that works on tensors), grad mode,
 * options tables and wb.memory_kb.
 * Positions are 1-based, contents 0-based (see wb_lua.h): dims and slice starts are converted
 * once here; index tensors, labels and argmax results pass through unchanged. */
#include "backend.h"
#include "wb_lua.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the userdata */

typedef struct {
  nn_tensor *t;
} ltensor;

void wb_lua_pushtensor(lua_State *L, nn_tensor *t) {
  ltensor *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->t = NULL; /* closed until the reference is stored: a failing setmetatable cannot leak */
  luaL_setmetatable(L, WB_TENSOR_MT);
  u->t = t;
  /* Lua sees only a pointer-sized userdata; pace the collector by the tensor's memory instead,
   * so that a training loop allocating new tensors every step runs at flat memory. Only new
   * storage counts (a view adds no memory). Each step is told the storage's size in KiB, so the
   * collector finishes a cycle (and frees the dead tensors) after about as many KiB of tensors as
   * its pause allows on top of the Lua heap; test_memory.lua checks the result. */
  if (t->storage->refcount == 1) {
    size_t kb = t->storage->nbytes >> 10;
    if (kb) lua_gc(L, LUA_GCSTEP, (int)(kb > 1 << 20 ? 1 << 20 : kb));
  }
}

nn_tensor *wb_lua_totensor(lua_State *L, int idx) {
  ltensor *u = luaL_testudata(L, idx, WB_TENSOR_MT);
  if (u && !u->t) luaL_argerror(L, idx, "tensor has been closed"); /* a tensor, but unusable */
  return u ? u->t : NULL;
}

nn_tensor *wb_lua_checktensor(lua_State *L, int idx) {
  ltensor *u = luaL_testudata(L, idx, WB_TENSOR_MT);
  if (!u) luaL_typeerror(L, idx, "tensor");
  if (!u->t) luaL_argerror(L, idx, "tensor has been closed");
  return u->t;
}

int wb_lua_nnerror(lua_State *L) { return luaL_error(L, "%s", nn_errmsg()); }

#define CHECK_NN(L, call)                                                                          \
  do {                                                                                             \
    if ((call) != NN_OK) return wb_lua_nnerror(L);                                                 \
  } while (0)

/* Pushes *o, or raises the core's error when rc says the call failed (*o is then NULL). o is a
 * pointer so that a call like ret1(L, nn_exp(&o, t), &o) reads o after nn_exp has set it. */
static int ret1(lua_State *L, int rc, nn_tensor **o) {
  if (rc) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, *o);
  return 1;
}

/* Pushes values and indices (both set together by the core, or both NULL on error). */
static int ret2(lua_State *L, int rc, nn_tensor **v, nn_tensor **i) {
  if (rc) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, *v);
  wb_lua_pushtensor(L, *i);
  return 2;
}

static int ltensor_gc(lua_State *L) {
  ltensor *u = luaL_checkudata(L, 1, WB_TENSOR_MT);
  nn_tensor_free(u->t);
  u->t = NULL;
  return 0;
}

int wb_lua_checkdim(lua_State *L, int arg, int ndim) {
  lua_Integer d = luaL_checkinteger(L, arg);
  int n = ndim ? ndim : 1;
  if (d >= 1 && d <= n) return (int)d - 1;
  if (d < 0 && d >= -n) return (int)(d + n);
  return luaL_argerror(
      L, arg,
      lua_pushfstring(L, "dim %d out of range for a %d-dim tensor (use 1..%d or -%d..-1)", (int)d,
                      ndim, n, n));
}

/* An optional dim: def (0-based) when the argument is none or nil. */
static int optdim(lua_State *L, int arg, int ndim, int def) {
  return lua_isnoneornil(L, arg) ? def : wb_lua_checkdim(L, arg, ndim);
}

int wb_lua_checkshape(lua_State *L, int idx, int64_t *shape) {
  int n = 0;
  if (lua_istable(L, idx)) {
    n = (int)luaL_len(L, idx);
    if (n > NN_MAX_DIMS) luaL_argerror(L, idx, "too many dims");
    for (int i = 0; i < n; i++) {
      lua_geti(L, idx, i + 1);
      if (!lua_isinteger(L, -1) &&
          !(lua_isnumber(L, -1) && lua_tonumber(L, -1) == floor(lua_tonumber(L, -1))))
        luaL_argerror(L, idx, "shape entries must be integers");
      shape[i] = (int64_t)lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
    return n;
  }
  int top = lua_gettop(L);
  for (int i = idx; i <= top && lua_isnumber(L, i); i++) {
    if (n == NN_MAX_DIMS) luaL_argerror(L, i, "too many dims");
    shape[n++] = (int64_t)luaL_checkinteger(L, i);
  }
  return n;
}

/* ---------------------------------------------------------------- devices */

/* The device of new tensors made from Lua (wb.zeros, wb.tensor, numbers used as operands of a
 * tensor op without a tensor to follow): "cpu" until wb.device("cuda"). Process-wide, like the
 * core's default generator. */
static nn_device default_dev = {NN_DEVICE_CPU, 0};

static const char *device_str(nn_device d, char *buf, size_t n) {
  if (d.type == NN_DEVICE_CPU || d.index == 0)
    snprintf(buf, n, "%s", nn_device_name(d.type));
  else
    snprintf(buf, n, "%s:%d", nn_device_name(d.type), d.index);
  return buf;
}

/* Parses a device name and checks that it is available; raises an argument error naming the
 * valid forms, or the device and why it is missing. */
static nn_device check_device(lua_State *L, int arg, const char *s) {
  nn_device d;
  if (nn_device_parse(&d, s)) luaL_argerror(L, arg, nn_errmsg());
  if (d.type != NN_DEVICE_CPU && !nn_backend_get(d.type))
    luaL_argerror(L, arg,
                  lua_pushfstring(L,
                                  "device %s is not available (wb was built without %s support, "
                                  "or no %s device was found); available: cpu",
                                  s, nn_device_name(d.type), nn_device_name(d.type)));
  if (d.index != 0)
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "device %s: only device 0 of %s is supported", s,
                                  nn_device_name(d.type)));
  return d;
}

/* wb.device() -> the default device's name; wb.device(name) sets it and returns the previous */
static int lwb_device(lua_State *L) {
  char b[32];
  lua_pushstring(L, device_str(default_dev, b, sizeof b));
  if (!lua_isnoneornil(L, 1)) default_dev = check_device(L, 1, luaL_checkstring(L, 1));
  return 1;
}

/* wb.device_available(name) -> boolean (no error for a missing device; bad names still raise) */
static int lwb_device_available(lua_State *L) {
  nn_device d;
  if (nn_device_parse(&d, luaL_checkstring(L, 1))) return luaL_argerror(L, 1, nn_errmsg());
  lua_pushboolean(L, d.type == NN_DEVICE_CPU || (nn_backend_get(d.type) != NULL && d.index == 0));
  return 1;
}

/* wb.set_deterministic(on) / wb.set_allow_tf32(on): the core's switches; return the previous */
static int lwb_set_deterministic(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, nn_get_deterministic());
  nn_set_deterministic(lua_toboolean(L, 1));
  return 1;
}

static int lwb_set_allow_tf32(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, nn_get_allow_tf32());
  nn_set_allow_tf32(lua_toboolean(L, 1));
  return 1;
}

/* wb.set_winograd(on): Winograd convolutions on the CPU (nn/tensor.h); returns the previous */
static int lwb_set_winograd(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, nn_get_winograd());
  nn_set_winograd(lua_toboolean(L, 1));
  return 1;
}

/* t moved to dev (the reference is consumed); raises on error */
static nn_tensor *moved(lua_State *L, nn_tensor *t, nn_device dev) {
  if (t->storage->device.type == dev.type) return t;
  nn_tensor *o = NULL;
  int rc = nn_to_device(&o, t, dev);
  nn_tensor_free(t);
  if (rc) wb_lua_nnerror(L);
  return o;
}

/* A CPU copy of t for reading values (t itself, retained, when it is on the CPU). */
static nn_tensor *host_copy(lua_State *L, nn_tensor *t) {
  if (t->storage->device.type == NN_DEVICE_CPU) return nn_tensor_retain(t);
  nn_tensor *h = NULL;
  bool prev = nn_set_grad_enabled(false);
  int rc = nn_to_device(&h, t, nn_cpu);
  nn_set_grad_enabled(prev);
  if (rc) wb_lua_nnerror(L);
  return h;
}

/* ---------------------------------------------------------------- options tables */

void wb_lua_checkopts(lua_State *L, int idx, const char *fn, const char *const *known) {
  if (lua_isnoneornil(L, idx)) return;
  idx = lua_absindex(L, idx);
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: options are named (key = value); got a %s key", fn, luaL_typename(L, -1));
    else
      for (int j = 0; known[j] && !ok; j++) ok = !strcmp(known[j], lua_tostring(L, -1));
    if (!ok) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int j = 0; known[j]; j++) {
        if (j) luaL_addstring(&b, ", ");
        luaL_addstring(&b, known[j]);
      }
      luaL_pushresult(&b);
      luaL_error(L, "%s: unknown option \"%s\"; known options: %s", fn, lua_tostring(L, -2),
                 lua_tostring(L, -1));
    }
  }
}

/* Pushes t[key] for an options table at idx (nil when there is no table); returns its type. */
static int optfield(lua_State *L, int idx, const char *key) {
  if (!lua_istable(L, idx)) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  return lua_getfield(L, idx, key);
}

static int opterror(lua_State *L, const char *key, const char *want) {
  return luaL_error(L, "option \"%s\": %s expected, got %s", key, want, luaL_typename(L, -1));
}

double wb_lua_optnumber(lua_State *L, int idx, const char *key, double def) {
  idx = lua_absindex(L, idx);
  int t = optfield(L, idx, key);
  double v = def;
  if (t != LUA_TNIL) {
    if (!lua_isnumber(L, -1)) opterror(L, key, "number");
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

lua_Integer wb_lua_optinteger(lua_State *L, int idx, const char *key, lua_Integer def) {
  idx = lua_absindex(L, idx);
  int t = optfield(L, idx, key);
  lua_Integer v = def;
  if (t != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok) opterror(L, key, "integer");
  }
  lua_pop(L, 1);
  return v;
}

int wb_lua_optboolean(lua_State *L, int idx, const char *key, int def) {
  idx = lua_absindex(L, idx);
  int t = optfield(L, idx, key);
  int v = def;
  if (t != LUA_TNIL) {
    if (t != LUA_TBOOLEAN) opterror(L, key, "boolean");
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

const char *wb_lua_optstring(lua_State *L, int idx, const char *key, const char *def) {
  idx = lua_absindex(L, idx);
  int t = optfield(L, idx, key);
  const char *v = def;
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING) opterror(L, key, "string");
    v = lua_tostring(L, -1); /* still referenced by the table, which the caller holds */
  }
  lua_pop(L, 1);
  return v;
}

/* ---------------------------------------------------------------- dtypes and data */

static nn_dtype check_dtype_name(lua_State *L, int arg, const char *s) {
  if (!strcmp(s, "float32") || !strcmp(s, "float")) return NN_DTYPE_F32;
  if (!strcmp(s, "float64") || !strcmp(s, "double")) return NN_DTYPE_F64;
  if (!strcmp(s, "int64") || !strcmp(s, "long")) return NN_DTYPE_I64;
  return (nn_dtype)luaL_argerror(
      L, arg,
      lua_pushfstring(
          L, "unknown dtype \"%s\"; known dtypes: float32 (float), float64 (double), int64 (long)",
          s));
}

/* dtype option from the table at idx (field "dtype"), default def */
static nn_dtype opt_dtype(lua_State *L, int idx, nn_dtype def) {
  if (!lua_istable(L, idx)) return def;
  lua_getfield(L, idx, "dtype");
  nn_dtype dt = def;
  if (!lua_isnil(L, -1)) dt = check_dtype_name(L, idx, luaL_checkstring(L, -1));
  lua_pop(L, 1);
  return dt;
}

/* device option from the table at idx (field "device"), default: the default device */
static nn_device opt_device(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return default_dev;
  lua_getfield(L, idx, "device");
  nn_device d = default_dev;
  if (!lua_isnil(L, -1)) d = check_device(L, idx, luaL_checkstring(L, -1));
  lua_pop(L, 1);
  return d;
}

/* Infers the shape of a nested table of numbers. */
static int nested_shape(lua_State *L, int idx, int64_t *shape, int depth) {
  if (depth >= NN_MAX_DIMS) return luaL_error(L, "tensor: nesting deeper than %d", NN_MAX_DIMS);
  int64_t n = (int64_t)luaL_len(L, idx);
  shape[depth] = n;
  if (n == 0) return depth + 1;
  lua_geti(L, idx, 1);
  int nd = depth + 1;
  if (lua_istable(L, -1))
    nd = nested_shape(L, lua_gettop(L), shape, depth + 1);
  else if (!lua_isnumber(L, -1))
    luaL_error(L, "tensor: entries must be numbers or tables of numbers");
  lua_pop(L, 1);
  return nd;
}

static void nested_fill(lua_State *L, int idx, nn_tensor *t, int depth, int64_t *pos) {
  int64_t n = (int64_t)luaL_len(L, idx);
  if (n != t->shape[depth])
    luaL_error(L, "tensor: ragged nested table (dim %d has %d and %d entries)", depth + 1,
               (int)t->shape[depth], (int)n);
  for (int64_t i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    if (depth + 1 < t->ndim) {
      if (!lua_istable(L, -1)) luaL_error(L, "tensor: ragged nested table at dim %d", depth + 2);
      nested_fill(L, lua_gettop(L), t, depth + 1, pos);
    } else {
      if (!lua_isnumber(L, -1)) luaL_error(L, "tensor: entries must be numbers");
      nn_tensor_set_flat(t, (*pos)++, lua_tonumber(L, -1));
    }
    lua_pop(L, 1);
  }
}

nn_tensor *wb_lua_astensor(lua_State *L, int idx, nn_dtype dt) {
  nn_tensor *t = wb_lua_totensor(L, idx);
  if (t) return nn_tensor_retain(t);
  if (lua_isnumber(L, idx)) {
    if (nn_tensor_full(&t, 0, NULL, lua_tonumber(L, idx), dt, nn_cpu)) wb_lua_nnerror(L);
    return t;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  idx = lua_absindex(L, idx);
  int64_t shape[NN_MAX_DIMS];
  int nd = nested_shape(L, idx, shape, 0);
  if (nn_tensor_empty(&t, nd, shape, dt, nn_cpu)) wb_lua_nnerror(L);
  /* the tensor goes on the stack first so that an error while filling does not leak it */
  wb_lua_pushtensor(L, t);
  int64_t pos = 0;
  nested_fill(L, idx, t, 0, &pos);
  nn_tensor_retain(t);
  lua_pop(L, 1);
  return t;
}

/* A borrowed operand at idx: a tensor, or a number made into a 0-dim tensor of like's dtype
 * (float32 when like is NULL) that is left on the stack (so the collector owns it). */
static nn_tensor *operand(lua_State *L, int idx, const nn_tensor *like) {
  nn_tensor *t = wb_lua_totensor(L, idx);
  if (t) return t;
  if (!lua_isnumber(L, idx)) luaL_typeerror(L, idx, "tensor or number");
  if (nn_tensor_full(&t, 0, NULL, lua_tonumber(L, idx), like ? like->dtype : NN_DTYPE_F32,
                     like ? like->storage->device : default_dev))
    wb_lua_nnerror(L);
  wb_lua_pushtensor(L, t);
  return t;
}

/* ---------------------------------------------------------------- constructors */

static int lnn_tensor_from_data(lua_State *L) {
  nn_dtype dt = opt_dtype(L, 2, NN_DTYPE_F32);
  nn_device dev = opt_device(L, 2);
  nn_tensor *t = wb_lua_astensor(L, 1, dt);
  if (t->dtype != dt) {
    nn_tensor *c = NULL;
    int rc = nn_to_dtype(&c, t, dt);
    nn_tensor_free(t);
    if (rc) return wb_lua_nnerror(L);
    t = c;
  }
  t = moved(L, t, dev);
  wb_lua_pushtensor(L, t);
  return 1;
}

static int filled(lua_State *L, double v, int mode) { /* mode 0 full, 1 randn, 2 rand */
  int64_t shape[NN_MAX_DIMS];
  int nd = wb_lua_checkshape(L, 1, shape);
  int oi = lua_istable(L, 1) ? 2 : lua_gettop(L);
  nn_dtype dt = opt_dtype(L, oi, NN_DTYPE_F32);
  nn_device dev = opt_device(L, oi);
  nn_tensor *t = NULL;
  int rc = nn_tensor_empty(&t, nd, shape, dt, dev);
  if (!rc) {
    if (mode == 0)
      rc = nn_fill_(t, v);
    else if (mode == 1)
      rc = nn_normal_(t, 0.0, 1.0, NULL);
    else if (mode == 2)
      rc = nn_uniform_(t, 0.0, 1.0, NULL);
  }
  if (rc) {
    nn_tensor_free(t);
    return wb_lua_nnerror(L);
  }
  wb_lua_pushtensor(L, t);
  return 1;
}

static int lnn_tensor_zeros(lua_State *L) { return filled(L, 0.0, 0); }
static int lnn_tensor_ones(lua_State *L) { return filled(L, 1.0, 0); }
static int lnn_randn(lua_State *L) { return filled(L, 0.0, 1); }
static int lnn_rand(lua_State *L) { return filled(L, 0.0, 2); }

static int lnn_tensor_full(lua_State *L) {
  double v = luaL_checknumber(L, 2);
  lua_remove(L, 2);
  return filled(L, v, 0);
}

static int like(lua_State *L, double v) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  return ret1(L, nn_tensor_full(&o, t->ndim, t->shape, v, t->dtype, t->storage->device), &o);
}
static int lnn_tensor_zeros_like(lua_State *L) { return like(L, 0.0); }
static int lnn_tensor_ones_like(lua_State *L) { return like(L, 1.0); }

static int lnn_tensor_arange(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  nn_dtype dt = opt_dtype(L, 2, NN_DTYPE_F32);
  nn_device dev = opt_device(L, 2);
  nn_tensor *t = NULL;
  if (nn_tensor_arange(&t, n, dt)) return wb_lua_nnerror(L);
  t = moved(L, t, dev);
  wb_lua_pushtensor(L, t);
  return 1;
}

static int lnn_randperm(lua_State *L) {
  nn_tensor *t = NULL;
  if (nn_randperm(&t, luaL_checkinteger(L, 1), NULL)) return wb_lua_nnerror(L);
  t = moved(L, t, default_dev);
  wb_lua_pushtensor(L, t);
  return 1;
}

static int lnn_categorical(lua_State *L) {
  nn_tensor *o = NULL;
  nn_tensor *p = wb_lua_checktensor(L, 1);
  return ret1(L, nn_categorical(&o, p, luaL_optinteger(L, 2, 1), NULL), &o);
}

static int lnn_manual_seed(lua_State *L) {
  nn_manual_seed((uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

/* ---------------------------------------------------------------- grad mode */

static int lnn_set_grad_enabled(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, nn_set_grad_enabled(lua_toboolean(L, 1)));
  return 1;
}

static int lnn_is_grad_enabled(lua_State *L) {
  lua_pushboolean(L, nn_is_grad_enabled());
  return 1;
}

/* wb.no_grad(fn, ...): fn(...) with grad mode off; the mode is restored even when fn errors
 * (the error is raised again). Returns fn's results. */
static int lwb_no_grad(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int base = lua_gettop(L);
  bool prev = nn_set_grad_enabled(false);
  int rc = lua_pcall(L, base - 1, LUA_MULTRET, 0);
  nn_set_grad_enabled(prev);
  if (rc != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

/* ---------------------------------------------------------------- memory */

/* Resident memory of the process in KiB (/proc/self/statm), or nil, msg where unavailable. */
static int lwb_memory_kb(lua_State *L) {
  FILE *f = fopen("/proc/self/statm", "r");
  long long size = 0, resident = 0;
  int ok = f && fscanf(f, "%lld %lld", &size, &resident) == 2;
  if (f) fclose(f);
  if (!ok) {
    lua_pushnil(L);
    lua_pushliteral(L, "memory_kb: /proc/self/statm is not readable");
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)(resident * (sysconf(_SC_PAGESIZE) / 1024)));
  return 1;
}

/* ---------------------------------------------------------------- inspection */

static int ltensor_shape(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushinteger(L, t->shape[wb_lua_checkdim(L, 2, t->ndim)]);
    return 1;
  }
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, t->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
  return 1;
}

static int ltensor_numel(lua_State *L) {
  lua_pushinteger(L, nn_tensor_numel(wb_lua_checktensor(L, 1)));
  return 1;
}

static int ltensor_dim(lua_State *L) {
  lua_pushinteger(L, wb_lua_checktensor(L, 1)->ndim);
  return 1;
}

static int ltensor_len(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  if (t->ndim == 0) return luaL_error(L, "#: a 0-dim tensor has no length (use :numel())");
  lua_pushinteger(L, t->shape[0]);
  return 1;
}

static int ltensor_dtype(lua_State *L) {
  lua_pushstring(L, nn_dtype_name(wb_lua_checktensor(L, 1)->dtype));
  return 1;
}

static int ltensor_is_contiguous(lua_State *L) {
  lua_pushboolean(L, nn_tensor_is_contiguous(wb_lua_checktensor(L, 1)));
  return 1;
}

static int ltensor_item(lua_State *L) {
  double v;
  nn_tensor *t = wb_lua_checktensor(L, 1);
  CHECK_NN(L, nn_tensor_item(t, &v));
  if (t->dtype == NN_DTYPE_I64)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, v);
  return 1;
}

static void push_nested(lua_State *L, nn_tensor *h, int depth, int64_t *pos) {
  if (depth == h->ndim) {
    double v = nn_tensor_get_flat(h, (*pos)++);
    if (h->dtype == NN_DTYPE_I64)
      lua_pushinteger(L, (lua_Integer)v);
    else
      lua_pushnumber(L, v);
    return;
  }
  lua_createtable(L, (int)h->shape[depth], 0);
  for (int64_t i = 0; i < h->shape[depth]; i++) {
    push_nested(L, h, depth + 1, pos);
    lua_rawseti(L, -2, i + 1);
  }
}

/* Nested Lua tables of the values (a number for a 0-dim tensor). */
static int ltensor_totable(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  luaL_checkstack(L, t->ndim + 4, "totable");
  nn_tensor *h = host_copy(L, t);
  wb_lua_pushtensor(L, h); /* owned by the collector while the table is built */
  int64_t pos = 0;
  push_nested(L, h, 0, &pos);
  return 1;
}

static int ltensor_tostring(lua_State *L) {
  ltensor *u = luaL_checkudata(L, 1, WB_TENSOR_MT);
  if (!u->t) {
    lua_pushliteral(L, "tensor(closed)");
    return 1;
  }
  nn_tensor *t = u->t;
  char b[160], sh[128];
  bool on_dev = t->storage->device.type != NN_DEVICE_CPU;
  if (on_dev) {
    t = host_copy(L, t);
    wb_lua_pushtensor(L, t); /* the collector owns the copy */
  }
  luaL_Buffer buf;
  luaL_buffinit(L, &buf);
  int64_t n = nn_tensor_numel(t);
  luaL_addstring(&buf, "tensor(");
  if (n > 0) {
    int64_t show = n <= 16 ? n : 6;
    luaL_addstring(&buf, "[");
    for (int64_t i = 0; i < show; i++) {
      double v = nn_tensor_get_flat(t, i);
      if (t->dtype == NN_DTYPE_I64)
        snprintf(b, sizeof b, i ? ", %lld" : "%lld", (long long)v);
      else
        snprintf(b, sizeof b, i ? ", %.6g" : "%.6g", v);
      luaL_addstring(&buf, b);
    }
    if (show < n) {
      snprintf(b, sizeof b, ", ... (%lld more)", (long long)(n - show));
      luaL_addstring(&buf, b);
    }
    luaL_addstring(&buf, "], ");
  }
  snprintf(b, sizeof b, "shape=%s, dtype=%s", nn_shape_str(t, sh, sizeof sh),
           nn_dtype_name(t->dtype));
  luaL_addstring(&buf, b);
  if (on_dev) {
    char dn[32];
    snprintf(b, sizeof b, ", device=%s", device_str(u->t->storage->device, dn, sizeof dn));
    luaL_addstring(&buf, b);
  }
  if (t->requires_grad) luaL_addstring(&buf, ", requires_grad=true");
  luaL_addstring(&buf, ")");
  luaL_pushresult(&buf);
  return 1;
}

/* ---------------------------------------------------------------- autograd */

static int ltensor_backward(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  nn_tensor *g = lua_isnoneornil(L, 2) ? NULL : wb_lua_checktensor(L, 2);
  CHECK_NN(L, nn_backward(t, g));
  return 0;
}

static int ltensor_grad(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  if (!t->grad) {
    lua_pushnil(L);
    return 1;
  }
  wb_lua_pushtensor(L, nn_tensor_retain(t->grad));
  return 1;
}

static int ltensor_zero_grad(lua_State *L) {
  nn_tensor_zero_grad(wb_lua_checktensor(L, 1), lua_toboolean(L, 2));
  return 0;
}

static int ltensor_requires_grad(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  if (lua_isnone(L, 2)) {
    lua_pushboolean(L, t->requires_grad);
    return 1;
  }
  CHECK_NN(L, nn_tensor_set_requires_grad(t, lua_toboolean(L, 2)));
  lua_settop(L, 1);
  return 1; /* chainable: x = wb.randn{3}:requires_grad(true) */
}

/* ---------------------------------------------------------------- arithmetic */

typedef int (*binop_fn)(nn_tensor **, nn_tensor *, nn_tensor *);

static int arith(lua_State *L, binop_fn fn, int code) {
  nn_tensor *a = wb_lua_totensor(L, 1), *b = wb_lua_totensor(L, 2), *o = NULL;
  int rc;
  if (a && b) {
    rc = fn(&o, a, b);
  } else if (a) {
    double s = luaL_checknumber(L, 2);
    switch (code) {
    case 0:
      rc = nn_add_scalar(&o, a, s);
      break;
    case 1:
      rc = nn_add_scalar(&o, a, -s);
      break;
    case 2:
      rc = nn_mul_scalar(&o, a, s);
      break;
    default:
      rc = nn_mul_scalar(&o, a, 1.0 / s);
      break;
    }
  } else {
    double s = luaL_checknumber(L, 1);
    b = wb_lua_checktensor(L, 2);
    switch (code) {
    case 0:
      rc = nn_add_scalar(&o, b, s);
      break;
    case 1:
      rc = nn_rsub_scalar(&o, b, s);
      break;
    case 2:
      rc = nn_mul_scalar(&o, b, s);
      break;
    default:
      rc = nn_rdiv_scalar(&o, b, s);
      break;
    }
  }
  return ret1(L, rc, &o);
}

static int lnn_add(lua_State *L) { return arith(L, nn_add, 0); }
static int lnn_sub(lua_State *L) { return arith(L, nn_sub, 1); }
static int lnn_mul(lua_State *L) { return arith(L, nn_mul, 2); }
static int lnn_div(lua_State *L) { return arith(L, nn_div, 3); }

/* a ^ b: tensor ^ number, tensor ^ tensor, number ^ tensor */
static int lnn_pow(lua_State *L) {
  lua_settop(L, 2); /* scratch values go above the arguments */
  nn_tensor *a = wb_lua_totensor(L, 1), *o = NULL;
  if (a && lua_type(L, 2) == LUA_TNUMBER)
    return ret1(L, nn_pow_scalar(&o, a, lua_tonumber(L, 2)), &o);
  nn_tensor *b = wb_lua_totensor(L, 2);
  if (!a && !b) luaL_typeerror(L, 1, "tensor");
  a = operand(L, 1, b);
  b = operand(L, 2, a);
  return ret1(L, nn_pow(&o, a, b), &o);
}

/* two-operand ops with a tensor or number second operand */
static int lnn_maximum(lua_State *L) {
  lua_settop(L, 2); /* scratch values go above the arguments */
  nn_tensor *a = wb_lua_checktensor(L, 1), *b = operand(L, 2, a), *o = NULL;
  return ret1(L, nn_maximum(&o, a, b), &o);
}

static int lnn_minimum(lua_State *L) {
  lua_settop(L, 2); /* scratch values go above the arguments */
  nn_tensor *a = wb_lua_checktensor(L, 1), *b = operand(L, 2, a), *o = NULL;
  return ret1(L, nn_minimum(&o, a, b), &o);
}

typedef int (*cmp_fn)(nn_tensor **, nn_tensor *, nn_tensor *);
typedef int (*cmps_fn)(nn_tensor **, nn_tensor *, double);

static int compare(lua_State *L, cmp_fn f, cmps_fn fs) {
  nn_tensor *a = wb_lua_checktensor(L, 1), *o = NULL;
  if (lua_type(L, 2) == LUA_TNUMBER) return ret1(L, fs(&o, a, lua_tonumber(L, 2)), &o);
  return ret1(L, f(&o, a, wb_lua_checktensor(L, 2)), &o);
}

static int lnn_eq(lua_State *L) { return compare(L, nn_eq, nn_eq_scalar); }
static int lnn_ne(lua_State *L) { return compare(L, nn_ne, nn_ne_scalar); }
static int lnn_gt(lua_State *L) { return compare(L, nn_gt, nn_gt_scalar); }
static int lnn_ge(lua_State *L) { return compare(L, nn_ge, nn_ge_scalar); }
static int lnn_lt(lua_State *L) { return compare(L, nn_lt, nn_lt_scalar); }
static int lnn_le(lua_State *L) { return compare(L, nn_le, nn_le_scalar); }

/* wb.where(cond, a, b): a and b tensors or numbers */
static int lnn_where(lua_State *L) {
  lua_settop(L, 3); /* scratch values go above the arguments */
  nn_tensor *c = wb_lua_checktensor(L, 1), *o = NULL;
  nn_tensor *ta = wb_lua_totensor(L, 2), *tb = wb_lua_totensor(L, 3);
  nn_tensor *a = operand(L, 2, tb), *b = operand(L, 3, ta ? ta : a);
  return ret1(L, nn_where(&o, c, a, b), &o);
}

/* x:where(cond, other): PyTorch's Tensor.where, = wb.where(cond, x, other) */
static int ltensor_where(lua_State *L) {
  lua_settop(L, 3); /* scratch values go above the arguments */
  nn_tensor *x = wb_lua_checktensor(L, 1), *c = wb_lua_checktensor(L, 2), *o = NULL;
  nn_tensor *y = operand(L, 3, x);
  return ret1(L, nn_where(&o, c, x, y), &o);
}

static int lnn_masked_fill(lua_State *L) {
  nn_tensor *a = wb_lua_checktensor(L, 1), *m = wb_lua_checktensor(L, 2), *o = NULL;
  return ret1(L, nn_masked_fill(&o, a, m, luaL_checknumber(L, 3)), &o);
}

/* x:clamp(lo, hi): nil for a one-sided clamp */
static int lnn_clamp(lua_State *L) {
  nn_tensor *a = wb_lua_checktensor(L, 1), *o = NULL;
  double lo = luaL_optnumber(L, 2, -INFINITY), hi = luaL_optnumber(L, 3, INFINITY);
  if (lua_isnoneornil(L, 2) && lua_isnoneornil(L, 3)) luaL_argerror(L, 2, "clamp needs lo or hi");
  return ret1(L, nn_clamp(&o, a, lo, hi), &o);
}

/* ---------------------------------------------------------------- unary ops */

#define UNARY(lname, expr)                                                                         \
  static int lname(lua_State *L) {                                                                 \
    nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;                                            \
    return ret1(L, expr, &o);                                                                      \
  }

UNARY(lnn_neg, nn_neg(&o, t))
UNARY(lnn_exp, nn_exp(&o, t))
UNARY(lnn_log, nn_log(&o, t))
UNARY(lnn_sqrt, nn_sqrt(&o, t))
UNARY(lnn_rsqrt, nn_rsqrt(&o, t))
UNARY(lnn_abs, nn_abs(&o, t))
UNARY(lnn_relu, nn_relu(&o, t))
UNARY(lnn_tanh, nn_tanh(&o, t))
UNARY(lnn_sigmoid, nn_sigmoid(&o, t))
UNARY(lnn_leaky_relu, nn_leaky_relu(&o, t, luaL_optnumber(L, 2, 0.01)))
UNARY(lnn_contiguous, nn_contiguous(&o, t))
UNARY(lnn_clone, nn_clone(&o, t))
UNARY(lnn_detach, nn_detach(&o, t))
UNARY(lnn_global_avg_pool2d, nn_global_avg_pool2d(&o, t))

/* x:gelu{approximate="tanh"} (default "none": the exact erf form) */
static int lnn_gelu(lua_State *L) {
  static const char *const known[] = {"approximate", NULL};
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  wb_lua_checkopts(L, 2, "gelu", known);
  const char *ap = wb_lua_optstring(L, 2, "approximate", "none");
  if (strcmp(ap, "none") && strcmp(ap, "tanh"))
    luaL_argerror(L, 2, lua_pushfstring(L, "unknown approximate \"%s\"; known: none, tanh", ap));
  return ret1(L, nn_gelu(&o, t, !strcmp(ap, "tanh")), &o);
}

/* x:softplus{beta=1, threshold=20} */
static int lnn_softplus(lua_State *L) {
  static const char *const known[] = {"beta", "threshold", NULL};
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  wb_lua_checkopts(L, 2, "softplus", known);
  double beta = wb_lua_optnumber(L, 2, "beta", 1.0), th = wb_lua_optnumber(L, 2, "threshold", 20.0);
  return ret1(L, nn_softplus(&o, t, beta, th), &o);
}

/* x:to(dtype) or x:to(device): "float32" ... or "cpu", "cuda" (a differentiable copy) */
static int lnn_to(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  const char *s = luaL_checkstring(L, 2);
  static const char *const dts[] = {"float32", "float", "float64", "double", "int64", "long", NULL};
  for (int k = 0; dts[k]; k++)
    if (!strcmp(s, dts[k])) return ret1(L, nn_to_dtype(&o, t, check_dtype_name(L, 2, s)), &o);
  nn_device d;
  if (nn_device_parse(&d, s))
    return luaL_argerror(
        L, 2,
        lua_pushfstring(L,
                        "unknown dtype or device \"%s\"; dtypes: float32 (float), "
                        "float64 (double), int64 (long); devices: cpu, cuda, cuda:N",
                        s));
  d = check_device(L, 2, s);
  return ret1(L, nn_to_device(&o, t, d), &o);
}

/* x:device() -> "cpu" or "cuda" */
static int ltensor_device(lua_State *L) {
  char b[32];
  lua_pushstring(L, device_str(wb_lua_checktensor(L, 1)->storage->device, b, sizeof b));
  return 1;
}

UNARY(lnn_float, nn_to_dtype(&o, t, NN_DTYPE_F32))
UNARY(lnn_double, nn_to_dtype(&o, t, NN_DTYPE_F64))
UNARY(lnn_long, nn_to_dtype(&o, t, NN_DTYPE_I64))

/* ---------------------------------------------------------------- matrix products */

static int lnn_matmul(lua_State *L) {
  nn_tensor *o = NULL;
  nn_tensor *a = wb_lua_checktensor(L, 1), *b = wb_lua_checktensor(L, 2);
  return ret1(L, nn_matmul(&o, a, b), &o);
}

/* ---------------------------------------------------------------- reductions */

/* Bit mask of the dims in the table at arg (1-based / negative entries). */
static unsigned dims_mask(lua_State *L, int arg, int ndim) {
  unsigned mask = 0;
  int n = (int)luaL_len(L, arg);
  for (int i = 1; i <= n; i++) {
    lua_geti(L, arg, i);
    mask |= 1u << wb_lua_checkdim(L, lua_gettop(L), ndim);
    lua_pop(L, 1);
  }
  return mask;
}

/* sum / mean: (dim?, keepdim?) where dim is a number or a table of dims */
static int reduce_sm(lua_State *L, bool mean) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  bool keep = lua_toboolean(L, 3);
  int rc;
  if (lua_istable(L, 2) || (lua_isnoneornil(L, 2) && keep)) {
    unsigned mask = lua_istable(L, 2) ? dims_mask(L, 2, t->ndim) : (1u << t->ndim) - 1;
    rc = mean ? nn_mean_dims(&o, t, mask, keep) : nn_sum_dims(&o, t, mask, keep);
  } else if (lua_isnoneornil(L, 2)) {
    rc = mean ? nn_mean_all(&o, t) : nn_sum_all(&o, t);
  } else {
    int d = wb_lua_checkdim(L, 2, t->ndim);
    rc = mean ? nn_mean(&o, t, d, keep) : nn_sum(&o, t, d, keep);
  }
  return ret1(L, rc, &o);
}

static int lnn_sum(lua_State *L) { return reduce_sm(L, false); }
static int lnn_mean(lua_State *L) { return reduce_sm(L, true); }

/* x:sum_to_size{...}: x summed down to a shape it broadcasts to (the gradient of a broadcast) */
static int lnn_sum_to_shape(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int64_t shape[NN_MAX_DIMS];
  int nd = wb_lua_checkshape(L, 2, shape);
  return ret1(L, nn_sum_to_shape(&o, t, nd, shape), &o);
}

/* x:var(dim?, keepdim?, {correction=1}) */
static int lnn_var(lua_State *L) {
  static const char *const known[] = {"correction", NULL};
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  bool keep = lua_toboolean(L, 3);
  wb_lua_checkopts(L, 4, "var", known);
  int corr = (int)wb_lua_optinteger(L, 4, "correction", 1);
  int rc;
  if (lua_isnoneornil(L, 2) || lua_istable(L, 2)) {
    unsigned mask = lua_istable(L, 2) ? dims_mask(L, 2, t->ndim) : (1u << t->ndim) - 1;
    rc = nn_var_dims(&o, t, mask, keep, corr);
  } else {
    rc = nn_var(&o, t, wb_lua_checkdim(L, 2, t->ndim), keep, corr);
  }
  return ret1(L, rc, &o);
}

/* x:max() -> 0-dim value; x:max(dim, keepdim?) -> values, indices (0-based) */
static int reduce_mm(lua_State *L, bool ismax) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *v = NULL, *i = NULL;
  if (lua_isnoneornil(L, 2)) return ret1(L, ismax ? nn_max_all(&v, t) : nn_min_all(&v, t), &v);
  int d = wb_lua_checkdim(L, 2, t->ndim);
  bool keep = lua_toboolean(L, 3);
  return ret2(L, ismax ? nn_max(&v, &i, t, d, keep) : nn_min(&v, &i, t, d, keep), &v, &i);
}

static int lnn_max(lua_State *L) { return reduce_mm(L, true); }
static int lnn_min(lua_State *L) { return reduce_mm(L, false); }

/* x:argmax(dim?, keepdim?): 0-based positions; without dim, the position in the flattened x */
static int reduce_arg(lua_State *L, bool ismax) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  if (lua_isnoneornil(L, 2)) {
    nn_tensor *f = NULL;
    int64_t all = -1;
    int rc = nn_reshape(&f, t, 1, &all);
    if (!rc) rc = ismax ? nn_argmax(&o, f, 0, false) : nn_argmin(&o, f, 0, false);
    nn_tensor_free(f);
    return ret1(L, rc, &o);
  }
  int d = wb_lua_checkdim(L, 2, t->ndim);
  bool keep = lua_toboolean(L, 3);
  return ret1(L, ismax ? nn_argmax(&o, t, d, keep) : nn_argmin(&o, t, d, keep), &o);
}

static int lnn_argmax(lua_State *L) { return reduce_arg(L, true); }
static int lnn_argmin(lua_State *L) { return reduce_arg(L, false); }

/* x:softmax(dim?) (dim defaults to -1, the last) */
static int lnn_softmax(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  return ret1(L, nn_softmax(&o, t, optdim(L, 2, t->ndim, t->ndim ? t->ndim - 1 : 0)), &o);
}

static int lnn_log_softmax(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  return ret1(L, nn_log_softmax(&o, t, optdim(L, 2, t->ndim, t->ndim ? t->ndim - 1 : 0)), &o);
}

/* x:topk(k, dim?, {largest=true, sorted=true}) -> values, indices */
static int lnn_topk(lua_State *L) {
  static const char *const known[] = {"largest", "sorted", NULL};
  nn_tensor *t = wb_lua_checktensor(L, 1), *v = NULL, *i = NULL;
  lua_Integer k = luaL_checkinteger(L, 2);
  int d = optdim(L, 3, t->ndim, t->ndim ? t->ndim - 1 : 0);
  wb_lua_checkopts(L, 4, "topk", known);
  bool largest = wb_lua_optboolean(L, 4, "largest", 1),
       sorted = wb_lua_optboolean(L, 4, "sorted", 1);
  return ret2(L, nn_topk(&v, &i, t, k, d, largest, sorted), &v, &i);
}

/* x:sort(dim?, descending?) -> values, indices; x:argsort(dim?, descending?) */
static int lnn_sort(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *v = NULL, *i = NULL;
  int d = optdim(L, 2, t->ndim, t->ndim ? t->ndim - 1 : 0);
  return ret2(L, nn_sort(&v, &i, t, d, lua_toboolean(L, 3)), &v, &i);
}

static int lnn_argsort(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = optdim(L, 2, t->ndim, t->ndim ? t->ndim - 1 : 0);
  return ret1(L, nn_argsort(&o, t, d, lua_toboolean(L, 3)), &o);
}

/* ---------------------------------------------------------------- indexing and joining */

static int lnn_gather(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = wb_lua_checkdim(L, 2, t->ndim);
  return ret1(L, nn_gather(&o, t, d, wb_lua_checktensor(L, 3)), &o);
}

static int lnn_index_select(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = wb_lua_checkdim(L, 2, t->ndim);
  return ret1(L, nn_index_select(&o, t, d, wb_lua_checktensor(L, 3)), &o);
}

static int lnn_scatter_add(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = wb_lua_checkdim(L, 2, t->ndim);
  nn_tensor *idx = wb_lua_checktensor(L, 3), *src = wb_lua_checktensor(L, 4);
  return ret1(L, nn_scatter_add(&o, t, d, idx, src), &o);
}

static int lnn_one_hot(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  return ret1(L, nn_one_hot(&o, t, luaL_checkinteger(L, 2)), &o);
}

/* The tensors of the list at arg, in an array owned by the collector (a userdata left on the
 * stack), so that an argument error while reading them leaks nothing. */
static nn_tensor **tensor_list(lua_State *L, int arg, int *n) {
  luaL_checktype(L, arg, LUA_TTABLE);
  *n = (int)luaL_len(L, arg);
  if (*n < 1) luaL_argerror(L, arg, "empty list of tensors");
  nn_tensor **ts = lua_newuserdatauv(L, (size_t)*n * sizeof *ts, 0);
  for (int i = 0; i < *n; i++) {
    lua_geti(L, arg, i + 1);
    ts[i] = wb_lua_totensor(L, -1);
    if (!ts[i]) luaL_argerror(L, arg, lua_pushfstring(L, "entry %d is not a tensor", i + 1));
    lua_pop(L, 1);
  }
  return ts;
}

/* wb.cat({a, b, ...}, dim?) (dim defaults to 1) */
static int lnn_concat(lua_State *L) {
  lua_settop(L, 2); /* scratch values go above the arguments */
  int n;
  nn_tensor **ts = tensor_list(L, 1, &n), *o = NULL;
  int d = optdim(L, 2, ts[0]->ndim, 0);
  return ret1(L, nn_concat(&o, n, ts, d), &o);
}

/* wb.stack({a, b, ...}, dim?): the new dim is at position dim in 1..ndim+1 */
static int lnn_stack(lua_State *L) {
  lua_settop(L, 2); /* scratch values go above the arguments */
  int n;
  nn_tensor **ts = tensor_list(L, 1, &n), *o = NULL;
  int d = optdim(L, 2, ts[0]->ndim + 1, 0);
  return ret1(L, nn_stack(&o, n, ts, d), &o);
}

/* x:split(size, dim?) -> {pieces of size (the last smaller)}; x:split({s1, s2, ...}, dim?) */
static int lnn_split(lua_State *L) {
  lua_settop(L, 3); /* scratch values go above the arguments */
  nn_tensor *t = wb_lua_checktensor(L, 1);
  int d = optdim(L, 3, t->ndim, 0);
  int64_t len = t->ndim ? t->shape[d] : 1;
  int n;
  int64_t *sizes;
  if (lua_istable(L, 2)) {
    n = (int)luaL_len(L, 2);
    if (n < 1) luaL_argerror(L, 2, "empty list of sizes");
    sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
    for (int i = 0; i < n; i++) {
      lua_geti(L, 2, i + 1);
      int ok;
      sizes[i] = lua_tointegerx(L, -1, &ok);
      if (!ok) luaL_argerror(L, 2, "sizes must be integers");
      lua_pop(L, 1);
    }
  } else {
    lua_Integer s = luaL_checkinteger(L, 2);
    if (s < 1) luaL_argerror(L, 2, "split size must be >= 1");
    n = len ? (int)((len + s - 1) / s) : 1;
    sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
    for (int i = 0; i < n; i++) sizes[i] = (i + 1) * s <= len ? s : len - i * s;
  }
  nn_tensor **outs = lua_newuserdatauv(L, (size_t)n * sizeof *outs, 0);
  lua_createtable(L, n, 0); /* before the split: nothing below raises but a memory error */
  CHECK_NN(L, nn_split(outs, t, n, sizes, d));
  for (int i = 0; i < n; i++) {
    wb_lua_pushtensor(L, outs[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* ---------------------------------------------------------------- views */

static int lnn_reshape(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int64_t shape[NN_MAX_DIMS];
  int nd = wb_lua_checkshape(L, 2, shape);
  return ret1(L, nn_reshape(&o, t, nd, shape), &o);
}

static int lnn_view(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int64_t shape[NN_MAX_DIMS];
  int nd = wb_lua_checkshape(L, 2, shape);
  return ret1(L, nn_view(&o, t, nd, shape), &o);
}

static int lnn_transpose(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d0 = optdim(L, 2, t->ndim, 0), d1 = optdim(L, 3, t->ndim, 1);
  if (t->ndim < 2 && lua_isnoneornil(L, 2)) return ret1(L, nn_contiguous(&o, t), &o);
  return ret1(L, nn_transpose(&o, t, d0, d1), &o);
}

/* x:permute(3, 1, 2) or x:permute{3, 1, 2}: 1-based dims */
static int lnn_permute(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int perm[NN_MAX_DIMS];
  int n = lua_istable(L, 2) ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
  if (n != t->ndim)
    luaL_argerror(L, 2, lua_pushfstring(L, "permute needs %d dims, got %d", t->ndim, n));
  for (int i = 0; i < n; i++) {
    if (lua_istable(L, 2)) {
      lua_geti(L, 2, i + 1);
      perm[i] = wb_lua_checkdim(L, lua_gettop(L), t->ndim);
      lua_pop(L, 1);
    } else {
      perm[i] = wb_lua_checkdim(L, i + 2, t->ndim);
    }
  }
  return ret1(L, nn_permute(&o, t, perm), &o);
}

/* 1-based (or negative, from the end) position along a dim of size n -> 0-based */
static int64_t checkpos(lua_State *L, int arg, int64_t n) {
  lua_Integer p = luaL_checkinteger(L, arg);
  if (p >= 1 && p <= n + 1) return p - 1;
  if (p < 0 && p >= -n) return n + p;
  return luaL_argerror(
      L, arg,
      lua_pushfstring(L, "position %d out of range for a dim of size %d (use 1..%d or -%d..-1)",
                      (int)p, (int)n, (int)n, (int)n));
}

/* x:narrow(dim, start, length): start is 1-based */
static int lnn_narrow(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = wb_lua_checkdim(L, 2, t->ndim);
  int64_t start = checkpos(L, 3, t->shape[d]);
  return ret1(L, nn_narrow(&o, t, d, start, luaL_checkinteger(L, 4)), &o);
}

/* x:slice(dim, i, j?, step?): elements i..j inclusive (string.sub's rule: 1-based, negative from
 * the end, j defaults to -1), every step-th */
static int lnn_slice(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int d = wb_lua_checkdim(L, 2, t->ndim);
  int64_t n = t->shape[d];
  lua_Integer i = luaL_checkinteger(L, 3), j = luaL_optinteger(L, 4, -1),
              step = luaL_optinteger(L, 5, 1);
  if (step < 1) luaL_argerror(L, 5, "step must be >= 1");
  int64_t start = i > 0 ? i - 1 : (i == 0 ? 0 : n + i), stop = j >= 0 ? j : n + j + 1;
  if (start < 0) start = 0;
  if (stop > n) stop = n;
  if (stop < start) stop = start;
  return ret1(L, nn_slice(&o, t, d, start, stop, step), &o);
}

/* x:expand{...}: -1 keeps a dim's size */
static int lnn_expand(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int64_t shape[NN_MAX_DIMS];
  int nd = wb_lua_checkshape(L, 2, shape);
  for (int i = 0; i < nd; i++) {
    int src = i - (nd - t->ndim);
    if (shape[i] == -1 && src >= 0) shape[i] = t->shape[src];
  }
  return ret1(L, nn_expand(&o, t, nd, shape), &o);
}

/* x:unsqueeze(dim): the new dim's position, 1..ndim+1 (or -1 for a new last dim) */
static int lnn_unsqueeze(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  return ret1(L, nn_unsqueeze(&o, t, wb_lua_checkdim(L, 2, t->ndim + 1)), &o);
}

/* x:squeeze(dim?): without dim, every dim of size 1 is removed */
static int lnn_squeeze(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  if (!lua_isnoneornil(L, 2)) return ret1(L, nn_squeeze(&o, t, wb_lua_checkdim(L, 2, t->ndim)), &o);
  int64_t shape[NN_MAX_DIMS];
  int nd = 0;
  for (int d = 0; d < t->ndim; d++)
    if (t->shape[d] != 1) shape[nd++] = t->shape[d];
  return ret1(L, nn_reshape(&o, t, nd, shape), &o);
}

/* x:flatten(start?, end?): 1-based dims, all of them by default */
static int lnn_flatten(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1), *o = NULL;
  int a = optdim(L, 2, t->ndim, 0), b = optdim(L, 3, t->ndim, t->ndim ? t->ndim - 1 : 0);
  return ret1(L, nn_flatten(&o, t, a, b), &o);
}

/* ---------------------------------------------------------------- in place (not recorded) */

static int lnn_fill_(lua_State *L) {
  CHECK_NN(L, nn_fill_(wb_lua_checktensor(L, 1), luaL_checknumber(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int lnn_zero_(lua_State *L) {
  CHECK_NN(L, nn_fill_(wb_lua_checktensor(L, 1), 0.0));
  lua_settop(L, 1);
  return 1;
}

static int lnn_copy_(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  CHECK_NN(L, nn_copy_(t, wb_lua_checktensor(L, 2)));
  lua_settop(L, 1);
  return 1;
}

/* x:add_(y, alpha?): x += alpha * y (y a tensor broadcast to x, or a number) */
static int lnn_add_(lua_State *L) {
  lua_settop(L, 3); /* scratch values go above the arguments */
  nn_tensor *t = wb_lua_checktensor(L, 1);
  nn_tensor *x = operand(L, 2, t);
  CHECK_NN(L, nn_axpy_(t, luaL_optnumber(L, 3, 1.0), x));
  lua_settop(L, 1);
  return 1;
}

/* x:mul_(y): y a number or a tensor broadcast to x */
static int lnn_mul_(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER)
    CHECK_NN(L, nn_mul_scalar_(t, lua_tonumber(L, 2)));
  else
    CHECK_NN(L, nn_mul_(t, wb_lua_checktensor(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int lnn_uniform_(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  CHECK_NN(L, nn_uniform_(t, luaL_optnumber(L, 2, 0.0), luaL_optnumber(L, 3, 1.0), NULL));
  lua_settop(L, 1);
  return 1;
}

static int lnn_normal_(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  CHECK_NN(L, nn_normal_(t, luaL_optnumber(L, 2, 0.0), luaL_optnumber(L, 3, 1.0), NULL));
  lua_settop(L, 1);
  return 1;
}

static int lnn_bernoulli_(lua_State *L) {
  nn_tensor *t = wb_lua_checktensor(L, 1);
  CHECK_NN(L, nn_bernoulli_(t, luaL_optnumber(L, 2, 0.5), NULL));
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- registration */

/* Ops: methods of every tensor and functions of the wb table (wb.exp(x) == x:exp()). */
static const luaL_Reg tensor_ops[] = {
    {"add", lnn_add},
    {"sub", lnn_sub},
    {"mul", lnn_mul},
    {"div", lnn_div},
    {"pow", lnn_pow},
    {"neg", lnn_neg},
    {"exp", lnn_exp},
    {"log", lnn_log},
    {"sqrt", lnn_sqrt},
    {"rsqrt", lnn_rsqrt},
    {"abs", lnn_abs},
    {"clamp", lnn_clamp},
    {"relu", lnn_relu},
    {"leaky_relu", lnn_leaky_relu},
    {"tanh", lnn_tanh},
    {"sigmoid", lnn_sigmoid},
    {"gelu", lnn_gelu},
    {"softplus", lnn_softplus},
    {"maximum", lnn_maximum},
    {"minimum", lnn_minimum},
    {"eq", lnn_eq},
    {"ne", lnn_ne},
    {"gt", lnn_gt},
    {"ge", lnn_ge},
    {"lt", lnn_lt},
    {"le", lnn_le},
    {"masked_fill", lnn_masked_fill},
    {"matmul", lnn_matmul},
    {"sum", lnn_sum},
    {"mean", lnn_mean},
    {"var", lnn_var},
    {"sum_to_size", lnn_sum_to_shape},
    {"max", lnn_max},
    {"min", lnn_min},
    {"argmax", lnn_argmax},
    {"argmin", lnn_argmin},
    {"softmax", lnn_softmax},
    {"log_softmax", lnn_log_softmax},
    {"topk", lnn_topk},
    {"sort", lnn_sort},
    {"argsort", lnn_argsort},
    {"gather", lnn_gather},
    {"index_select", lnn_index_select},
    {"scatter_add", lnn_scatter_add},
    {"one_hot", lnn_one_hot},
    {"split", lnn_split},
    {"reshape", lnn_reshape},
    {"view", lnn_view},
    {"transpose", lnn_transpose},
    {"permute", lnn_permute},
    {"narrow", lnn_narrow},
    {"slice", lnn_slice},
    {"expand", lnn_expand},
    {"unsqueeze", lnn_unsqueeze},
    {"squeeze", lnn_squeeze},
    {"flatten", lnn_flatten},
    {"contiguous", lnn_contiguous},
    {"clone", lnn_clone},
    {"detach", lnn_detach},
    {"to", lnn_to},
    {"global_avg_pool2d", lnn_global_avg_pool2d},
    {NULL, NULL},
};

/* Methods only. */
static const luaL_Reg tensor_methods[] = {
    {"shape", ltensor_shape},
    {"size", ltensor_shape},
    {"numel", ltensor_numel},
    {"dim", ltensor_dim},
    {"dtype", ltensor_dtype},
    {"device", ltensor_device},
    {"is_contiguous", ltensor_is_contiguous},
    {"item", ltensor_item},
    {"totable", ltensor_totable},
    {"backward", ltensor_backward},
    {"grad", ltensor_grad},
    {"zero_grad", ltensor_zero_grad},
    {"requires_grad", ltensor_requires_grad},
    {"where", ltensor_where},
    {"t", lnn_transpose},
    {"float", lnn_float},
    {"double", lnn_double},
    {"long", lnn_long},
    {"fill_", lnn_fill_},
    {"zero_", lnn_zero_},
    {"copy_", lnn_copy_},
    {"add_", lnn_add_},
    {"mul_", lnn_mul_},
    {"uniform_", lnn_uniform_},
    {"normal_", lnn_normal_},
    {"bernoulli_", lnn_bernoulli_},
    {NULL, NULL},
};

static const luaL_Reg tensor_meta[] = {
    {"__gc", ltensor_gc},
    {"__close", ltensor_gc},
    {"__tostring", ltensor_tostring},
    {"__add", lnn_add},
    {"__sub", lnn_sub},
    {"__mul", lnn_mul},
    {"__div", lnn_div},
    {"__unm", lnn_neg},
    {"__pow", lnn_pow},
    {"__len", ltensor_len},
    {NULL, NULL},
};

static const luaL_Reg tensor_funcs[] = {
    {"tensor", lnn_tensor_from_data},
    {"zeros", lnn_tensor_zeros},
    {"ones", lnn_tensor_ones},
    {"full", lnn_tensor_full},
    {"zeros_like", lnn_tensor_zeros_like},
    {"ones_like", lnn_tensor_ones_like},
    {"randn", lnn_randn},
    {"rand", lnn_rand},
    {"arange", lnn_tensor_arange},
    {"randperm", lnn_randperm},
    {"categorical", lnn_categorical},
    {"manual_seed", lnn_manual_seed},
    {"where", lnn_where},
    {"cat", lnn_concat},
    {"concat", lnn_concat},
    {"stack", lnn_stack},
    {"no_grad", lwb_no_grad},
    {"set_grad_enabled", lnn_set_grad_enabled},
    {"is_grad_enabled", lnn_is_grad_enabled},
    {"memory_kb", lwb_memory_kb},
    {"device", lwb_device},
    {"device_available", lwb_device_available},
    {"set_deterministic", lwb_set_deterministic},
    {"set_winograd", lwb_set_winograd},
    {"set_allow_tf32", lwb_set_allow_tf32},
    {NULL, NULL},
};

void wb_lua_open_tensor(lua_State *L) {
  luaL_newmetatable(L, WB_TENSOR_MT);
  luaL_setfuncs(L, tensor_meta, 0);
  luaL_newlib(L, tensor_methods);
  luaL_setfuncs(L, tensor_ops, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, tensor_ops, 0);
  luaL_setfuncs(L, tensor_funcs, 0);
}
