/* bench/lua_nn.c: wb.nn: the wb.Module userdata, layer constructors in PyTorch's vocabulary,
 * layers from the C registry by name (wb.nn.layer, and wb.nn.<Name> through __index), and the
 * functional ops and losses.
 * Positions are 1-based (Flatten's dims); layer options keep PyTorch's names and layouts. */
#include "gyro_dropout.h"
#include "module.h"
#include "wb_lua.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the userdata */

typedef struct {
  nn_module *m;
} lmodule;

void wb_lua_pushmodule(lua_State *L, nn_module *m) {
  lmodule *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->m = NULL; /* closed until the reference is stored */
  luaL_setmetatable(L, WB_MODULE_MT);
  u->m = m;
}

nn_module *wb_lua_tomodule(lua_State *L, int idx) {
  lmodule *u = luaL_testudata(L, idx, WB_MODULE_MT);
  return u ? u->m : NULL;
}

nn_module *wb_lua_checkmodule(lua_State *L, int idx) {
  lmodule *u = luaL_testudata(L, idx, WB_MODULE_MT);
  if (!u) luaL_typeerror(L, idx, "module");
  if (!u->m) luaL_argerror(L, idx, "module has been closed");
  return u->m;
}

static int lmodule_gc(lua_State *L) {
  lmodule *u = luaL_checkudata(L, 1, WB_MODULE_MT);
  nn_module_free(u->m);
  u->m = NULL;
  return 0;
}

/* Pushes the new module m, or raises the core's error (m is then NULL). */
static int retm(lua_State *L, int rc, nn_module **m) {
  if (rc) return wb_lua_nnerror(L);
  wb_lua_pushmodule(L, *m);
  return 1;
}

static int rett(lua_State *L, int rc, nn_tensor **t) {
  if (rc) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, *t);
  return 1;
}

/* ---------------------------------------------------------------- module methods */

static int lnn_module_forward(lua_State *L) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  nn_tensor *x = wb_lua_checktensor(L, 2), *o = NULL;
  return rett(L, nn_module_forward(m, x, &o), &o);
}

/* named lists: params (which 0), buffers (1) */
static int push_named(lua_State *L, bool buffers, bool named) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  lua_newtable(L);
  nn_named *l = NULL;
  int n = 0;
  if (buffers ? nn_module_buffers(m, &l, &n) : nn_module_parameters(m, &l, &n))
    return wb_lua_nnerror(L);
  for (int i = 0; i < n; i++) {
    wb_lua_pushtensor(L, nn_tensor_retain(l[i].t));
    if (named)
      lua_setfield(L, -2, l[i].name);
    else
      lua_rawseti(L, -2, i + 1);
  }
  nn_named_list_free(l, n);
  return 1;
}

static int lnn_module_parameters(lua_State *L) { return push_named(L, false, false); }
static int lnn_module_named_parameters(lua_State *L) { return push_named(L, false, true); }
static int lnn_module_buffers(lua_State *L) { return push_named(L, true, false); }
static int lnn_module_named_buffers(lua_State *L) { return push_named(L, true, true); }

/* m:train(on?) (default true); returns m */
static int lnn_module_train(lua_State *L) {
  nn_module_train(wb_lua_checkmodule(L, 1), lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2));
  lua_settop(L, 1);
  return 1;
}

static int lnn_module_evaluate(lua_State *L) {
  nn_module_train(wb_lua_checkmodule(L, 1), false);
  lua_settop(L, 1);
  return 1;
}

static int lnn_module_is_training(lua_State *L) {
  lua_pushboolean(L, wb_lua_checkmodule(L, 1)->training);
  return 1;
}

/* m:zero_grad(set_to_none?): drops the grads by default; grads that share memory (flat buffers)
 * are zeroed in place */
static int lnn_module_zero_grad(lua_State *L) {
  nn_module_zero_grad(wb_lua_checkmodule(L, 1), lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2));
  return 0;
}

/* m:flat() -> params, grads: the flat float32 vectors that the parameters and grads now view */
static int lnn_module_flatten(lua_State *L) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  nn_tensor *p = NULL, *g = NULL;
  if (nn_module_flatten(m, &p, &g)) return wb_lua_nnerror(L);
  wb_lua_pushtensor(L, p);
  wb_lua_pushtensor(L, g);
  return 2;
}

/* m:to("cuda") / m:to("cpu"): moves parameters and buffers (the same tensor objects, so an
 * optimizer built on m:parameters() keeps working; build it after the move); returns m */
static int lnn_module_to(lua_State *L) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  const char *s = luaL_checkstring(L, 2);
  nn_device d;
  if (nn_device_parse(&d, s)) return luaL_argerror(L, 2, nn_errmsg());
  if (nn_module_to(m, d)) return wb_lua_nnerror(L);
  lua_settop(L, 1);
  return 1;
}

static int lnn_module_num_params(lua_State *L) {
  lua_pushinteger(L, nn_module_num_params(wb_lua_checkmodule(L, 1)));
  return 1;
}

static int lnn_module_type(lua_State *L) {
  lua_pushstring(L, wb_lua_checkmodule(L, 1)->vt->type);
  return 1;
}

static int children(lua_State *L, bool named) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  lua_createtable(L, named ? 0 : m->n_children, named ? m->n_children : 0);
  for (int i = 0; i < m->n_children; i++) {
    wb_lua_pushmodule(L, nn_module_retain(m->children[i]));
    if (named)
      lua_setfield(L, -2, m->child_names[i]);
    else
      lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int lnn_module_children(lua_State *L) { return children(L, false); }
static int lnn_module_named_children(lua_State *L) { return children(L, true); }

static void push_shape(lua_State *L, const nn_shape_info *s) {
  lua_createtable(L, s->ndim, 0);
  for (int d = 0; d < s->ndim; d++) {
    lua_pushinteger(L, s->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
}

static void push_stat(lua_State *L, const nn_layer_stat *r) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, r->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, r->type);
  lua_setfield(L, -2, "type");
  push_shape(L, &r->out);
  lua_setfield(L, -2, "shape");
  lua_pushinteger(L, r->out.flops);
  lua_setfield(L, -2, "flops");
  lua_pushinteger(L, r->params);
  lua_setfield(L, -2, "params");
}

/* m:stats(input_shape) -> {rows..., total = row}: per leaf layer name, type, output shape,
 * forward FLOPs and parameter count, for an input of the given shape (batch dim included) */
static int lnn_module_stats(lua_State *L) {
  nn_module *m = wb_lua_checkmodule(L, 1);
  int64_t shape[NN_MAX_DIMS];
  luaL_checktype(L, 2, LUA_TTABLE);
  int nd = wb_lua_checkshape(L, 2, shape);
  nn_layer_stat *rows = NULL, total;
  int n = 0;
  /* the rows array is copied into a userdata so that a memory error while building the Lua
   * tables cannot leak it */
  if (nn_module_stats(m, nd, shape, &rows, &n, &total)) return wb_lua_nnerror(L);
  nn_layer_stat *r = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *r, 0);
  if (n) memcpy(r, rows, (size_t)n * sizeof *r);
  free(rows);
  lua_createtable(L, n, 1);
  for (int i = 0; i < n; i++) {
    push_stat(L, &r[i]);
    lua_rawseti(L, -2, i + 1);
  }
  push_stat(L, &total);
  lua_setfield(L, -2, "total");
  return 1;
}

/* ---- printing ---- */

static void describe(luaL_Buffer *b, nn_module *m, int depth) {
  char d[256];
  luaL_addstring(b, m->vt->type);
  luaL_addchar(b, '(');
  if (m->vt->describe) {
    d[0] = 0;
    m->vt->describe(m, d, sizeof d);
    luaL_addstring(b, d);
  }
  if (m->n_children) {
    luaL_addchar(b, '\n');
    for (int i = 0; i < m->n_children; i++) {
      for (int k = 0; k <= depth; k++) luaL_addstring(b, "  ");
      luaL_addchar(b, '(');
      luaL_addstring(b, m->child_names[i]);
      luaL_addstring(b, "): ");
      describe(b, m->children[i], depth + 1);
      luaL_addchar(b, '\n');
    }
    for (int k = 0; k < depth; k++) luaL_addstring(b, "  ");
  }
  luaL_addchar(b, ')');
}

static int lnn_module_tostring(lua_State *L) {
  lmodule *u = luaL_checkudata(L, 1, WB_MODULE_MT);
  if (!u->m) {
    lua_pushliteral(L, "module(closed)");
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  describe(&b, u->m, 0);
  char s[64];
  snprintf(s, sizeof s, "\n(%lld parameters)", (long long)nn_module_num_params(u->m));
  if (u->m->n_children) luaL_addstring(&b, s);
  luaL_pushresult(&b);
  return 1;
}

/* m:summary(input_shape): a table of the layers with output shapes, FLOPs and parameters */
static int lnn_module_summary(lua_State *L) {
  lnn_module_stats(L);
  int t = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char line[256], sh[96];
  snprintf(line, sizeof line, "%-24s %-16s %-20s %14s %12s\n", "layer", "type", "output", "flops",
           "params");
  luaL_addstring(&b, line);
  int n = (int)luaL_len(L, t);
  for (int i = 0; i <= n; i++) {
    if (i < n)
      lua_geti(L, t, i + 1);
    else
      lua_getfield(L, t, "total");
    lua_getfield(L, -1, "shape");
    size_t k = 0;
    int nd = (int)luaL_len(L, -1);
    k += (size_t)snprintf(sh + k, sizeof sh - k, "(");
    for (int d = 1; d <= nd && k < sizeof sh; d++) {
      lua_geti(L, -1, d);
      k += (size_t)snprintf(sh + k, sizeof sh - k, d > 1 ? ", %lld" : "%lld",
                            (long long)lua_tointeger(L, -1));
      lua_pop(L, 1);
    }
    if (k < sizeof sh) snprintf(sh + k, sizeof sh - k, ")");
    lua_pop(L, 1);
    lua_getfield(L, -1, "name");
    lua_getfield(L, -2, "type");
    lua_getfield(L, -3, "flops");
    lua_getfield(L, -4, "params");
    snprintf(line, sizeof line, "%-24s %-16s %-20s %14lld %12lld\n", lua_tostring(L, -4),
             lua_tostring(L, -3), sh, (long long)lua_tointeger(L, -2),
             (long long)lua_tointeger(L, -1));
    lua_pop(L, 5);
    luaL_addstring(&b, line);
  }
  luaL_pushresult(&b);
  return 1;
}

/* ---------------------------------------------------------------- layer constructors */

/* An int or an (h, w) pair from a number or a table {h, w}. */
static void checkpair(lua_State *L, int idx, const char *what, int *p) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int ok;
    p[0] = p[1] = (int)lua_tointegerx(L, idx, &ok);
    if (!ok) luaL_error(L, "%s must be an integer or a pair {h, w}", what);
    return;
  }
  if (!lua_istable(L, idx) || luaL_len(L, idx) != 2)
    luaL_error(L, "%s must be an integer or a pair {h, w}", what);
  for (int i = 0; i < 2; i++) {
    lua_geti(L, idx, i + 1);
    int ok;
    p[i] = (int)lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "%s must be an integer or a pair {h, w}", what);
    lua_pop(L, 1);
  }
}

/* Option key of the table at opts as a pair; def when absent. */
static void optpair(lua_State *L, int opts, const char *key, int def, int *p) {
  p[0] = p[1] = def;
  if (!lua_istable(L, opts)) return;
  lua_getfield(L, opts, key);
  if (!lua_isnil(L, -1)) checkpair(L, lua_gettop(L), key, p);
  lua_pop(L, 1);
}

/* wb.nn.Linear(in, out, {bias=true}) */
static int lnn_linear_new(lua_State *L) {
  static const char *const known[] = {"bias", NULL};
  lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
  wb_lua_checkopts(L, 3, "Linear", known);
  nn_module *m = NULL;
  return retm(L, nn_linear_new(&m, in, out, wb_lua_optboolean(L, 3, "bias", 1)), &m);
}

/* wb.nn.Conv2d(in, out, k, {stride=1, padding=0, dilation=1, groups=1, bias=true}); k, stride,
 * padding and dilation are integers or {h, w} pairs */
static int lnn_conv2d_new(lua_State *L) {
  static const char *const known[] = {"stride", "padding", "dilation", "groups", "bias", NULL};
  lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
  int k[2];
  luaL_checkany(L, 3);
  checkpair(L, 3, "Conv2d kernel size", k);
  wb_lua_checkopts(L, 4, "Conv2d", known);
  nn_conv2d_opts o;
  optpair(L, 4, "stride", 1, o.stride);
  optpair(L, 4, "padding", 0, o.padding);
  optpair(L, 4, "dilation", 1, o.dilation);
  o.groups = (int)wb_lua_optinteger(L, 4, "groups", 1);
  nn_module *m = NULL;
  return retm(L, nn_conv2d_new(&m, in, out, k[0], k[1], &o, wb_lua_optboolean(L, 4, "bias", 1)),
              &m);
}

static int batchnorm(lua_State *L, int dims) {
  static const char *const known[] = {"eps", "momentum", "affine", NULL};
  lua_Integer c = luaL_checkinteger(L, 1);
  wb_lua_checkopts(L, 2, dims == 2 ? "BatchNorm1d" : "BatchNorm2d", known);
  nn_module *m = NULL;
  double eps = wb_lua_optnumber(L, 2, "eps", 1e-5), mom = wb_lua_optnumber(L, 2, "momentum", 0.1);
  return retm(L, nn_batchnorm_new(&m, c, dims, eps, mom, wb_lua_optboolean(L, 2, "affine", 1)), &m);
}

/* wb.nn.BatchNorm1d(c, {eps=1e-5, momentum=0.1, affine=true}), BatchNorm2d likewise */
static int lnn_batchnorm1d_new(lua_State *L) { return batchnorm(L, 2); }
static int lnn_batchnorm2d_new(lua_State *L) { return batchnorm(L, 4); }

/* wb.nn.LayerNorm(n or {d1, d2, ...}, {eps=1e-5, affine=true}): the trailing normalised shape */
static int lnn_layernorm_new(lua_State *L) {
  static const char *const known[] = {"eps", "affine", NULL};
  int64_t shape[NN_MAX_DIMS];
  int nd;
  if (lua_istable(L, 1))
    nd = wb_lua_checkshape(L, 1, shape);
  else {
    shape[0] = luaL_checkinteger(L, 1);
    nd = 1;
  }
  wb_lua_checkopts(L, 2, "LayerNorm", known);
  nn_module *m = NULL;
  double eps = wb_lua_optnumber(L, 2, "eps", 1e-5);
  return retm(L, nn_layernorm_new(&m, nd, shape, eps, wb_lua_optboolean(L, 2, "affine", 1)), &m);
}

/* wb.nn.Dropout(p=0.5) */
static int lnn_dropout_new(lua_State *L) {
  nn_module *m = NULL;
  return retm(L, nn_dropout_new(&m, luaL_optnumber(L, 1, 0.5)), &m);
}

/* wb.nn.Embedding(num, dim) */
static int lnn_embedding_new(lua_State *L) {
  nn_module *m = NULL;
  lua_Integer n = luaL_checkinteger(L, 1), d = luaL_checkinteger(L, 2);
  return retm(L, nn_embedding_new(&m, n, d), &m);
}

static int act(lua_State *L, nn_act kind, double param) {
  nn_module *m = NULL;
  return retm(L, nn_activation_new(&m, kind, param), &m);
}

static int lnn_relu_new(lua_State *L) { return act(L, NN_ACT_RELU, 0); }
static int lnn_tanh_new(lua_State *L) { return act(L, NN_ACT_TANH, 0); }
static int lnn_sigmoid_new(lua_State *L) { return act(L, NN_ACT_SIGMOID, 0); }
/* wb.nn.LeakyReLU(slope=0.01) */
static int lnn_leaky_relu_new(lua_State *L) {
  return act(L, NN_ACT_LEAKY_RELU, luaL_optnumber(L, 1, 0.01));
}

/* wb.nn.GELU{approximate="none"|"tanh"} */
static int lnn_gelu_new(lua_State *L) {
  static const char *const known[] = {"approximate", NULL};
  wb_lua_checkopts(L, 1, "GELU", known);
  const char *ap = wb_lua_optstring(L, 1, "approximate", "none");
  if (strcmp(ap, "none") && strcmp(ap, "tanh"))
    luaL_argerror(L, 1, lua_pushfstring(L, "unknown approximate \"%s\"; known: none, tanh", ap));
  return act(L, NN_ACT_GELU, !strcmp(ap, "tanh"));
}

/* wb.nn.Softplus(beta=1) or Softplus{beta=1} (threshold 20, PyTorch's default) */
static int lnn_softplus_new(lua_State *L) {
  static const char *const known[] = {"beta", NULL};
  if (lua_istable(L, 1)) {
    wb_lua_checkopts(L, 1, "Softplus", known);
    return act(L, NN_ACT_SOFTPLUS, wb_lua_optnumber(L, 1, "beta", 1.0));
  }
  return act(L, NN_ACT_SOFTPLUS, luaL_optnumber(L, 1, 1.0));
}

static int pool(lua_State *L, bool max) {
  static const char *const known[] = {"stride", "padding", NULL};
  lua_Integer k = luaL_checkinteger(L, 1);
  wb_lua_checkopts(L, 2, max ? "MaxPool2d" : "AvgPool2d", known);
  int s = (int)wb_lua_optinteger(L, 2, "stride", 0), p = (int)wb_lua_optinteger(L, 2, "padding", 0);
  nn_module *m = NULL;
  return retm(L, max ? nn_maxpool2d_new(&m, (int)k, s, p) : nn_avgpool2d_new(&m, (int)k, s, p), &m);
}

/* wb.nn.MaxPool2d(k, {stride=k, padding=0}), AvgPool2d likewise */
static int lnn_maxpool2d_new(lua_State *L) { return pool(L, true); }
static int lnn_avgpool2d_new(lua_State *L) { return pool(L, false); }

static int lnn_global_avgpool2d_new(lua_State *L) {
  nn_module *m = NULL;
  return retm(L, nn_global_avgpool2d_new(&m), &m);
}

/* A 1-based or negative Lua dim (no tensor to check against yet) -> the C convention. */
static int lua_dim(lua_State *L, int arg, int def) {
  if (lua_isnoneornil(L, arg)) return def;
  lua_Integer d = luaL_checkinteger(L, arg);
  if (d == 0) luaL_argerror(L, arg, "dims are 1-based (or negative, from the end); 0 is not a dim");
  return d > 0 ? (int)d - 1 : (int)d;
}

/* wb.nn.Flatten(start=2, end=-1): 1-based dims; the default keeps the batch dim */
static int lnn_flatten_new(lua_State *L) {
  nn_module *m = NULL;
  int a = lua_dim(L, 1, 1), b = lua_dim(L, 2, -1);
  return retm(L, nn_flatten_new(&m, a, b), &m);
}

/* The modules of the list at arg, in a collector-owned array. */
static nn_module **module_list(lua_State *L, int arg, int *n) {
  *n = (int)luaL_len(L, arg);
  nn_module **ms = lua_newuserdatauv(L, (size_t)(*n ? *n : 1) * sizeof *ms, 0);
  for (int i = 0; i < *n; i++) {
    lua_geti(L, arg, i + 1);
    ms[i] = wb_lua_tomodule(L, -1);
    if (!ms[i])
      luaL_argerror(
          L, arg,
          lua_pushfstring(L, "entry %d is a %s, not a module", i + 1, luaL_typename(L, -1)));
    lua_pop(L, 1);
  }
  return ms;
}

/* wb.nn.Sequential{m1, m2, ...} (or Sequential(m1, m2, ...)) */
static int lnn_sequential_new(lua_State *L) {
  if (!lua_istable(L, 1)) { /* varargs: pack them */
    int n = lua_gettop(L);
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, i);
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, 1);
  }
  lua_settop(L, 1);
  int n;
  nn_module **ms = module_list(L, 1, &n), *m = NULL;
  return retm(L, nn_sequential_new(&m, n, ms), &m);
}

/* wb.nn.BlockSequential{m1, m2, ...}: a Sequential that runs Linear -> activation -> block-wise
 * dropout -> Linear chains on block-sparse products while training (nn/gyro_dropout.h) */
static int lnn_block_sequential_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  int n;
  nn_module **ms = module_list(L, 1, &n), *m = NULL;
  return retm(L, nn_block_sequential_new(&m, n, ms), &m);
}

/* wb.nn.Residual(body, shortcut?): body(x) + (shortcut or identity)(x) */
static int lnn_residual_new(lua_State *L) {
  nn_module *body = wb_lua_checkmodule(L, 1), *sc = NULL, *m = NULL;
  if (!lua_isnoneornil(L, 2)) sc = wb_lua_checkmodule(L, 2);
  return retm(L, nn_residual_new(&m, body, sc), &m);
}

/* ---- layers from the registry ---- */

/* wb.nn.layer(name, {opts}): any registered layer type; options are handed to its C constructor
 * unchanged (numbers; booleans as 1/0; strings) */
static int lnn_layer_new(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int n = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      n++;
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 2);
  nn_opt *o = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *o, 0);
  int k = 0;
  if (n) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, 2, "option names must be strings");
      o[k].key = lua_tostring(L, -2); /* the strings stay referenced by the options table */
      o[k].str = NULL;
      o[k].num = 0;
      switch (lua_type(L, -1)) {
      case LUA_TNUMBER:
        o[k].num = lua_tonumber(L, -1);
        break;
      case LUA_TBOOLEAN:
        o[k].num = lua_toboolean(L, -1);
        break;
      case LUA_TSTRING:
        o[k].str = lua_tostring(L, -1);
        break;
      default:
        luaL_argerror(
            L, 2,
            lua_pushfstring(L, "option \"%s\" is a %s; options are numbers, booleans or strings",
                            o[k].key, luaL_typename(L, -1)));
      }
      k++;
      lua_pop(L, 1);
    }
  }
  nn_module *m = NULL;
  return retm(L, nn_layer_new(&m, name, k, o), &m);
}

/* closure for wb.nn.<Name> of a registered layer: upvalue 1 is the name */
static int lnn_layer_by_name(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  return lnn_layer_new(L);
}

/* wb.nn.layers(): the registered layer type names */
static int lnn_layer_names(lua_State *L) {
  int n;
  const char *const *names = nn_layer_names(&n);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* __index of wb.nn: registered layer names resolve to constructors; anything else is an error
 * listing the known layer types */
static int lnn_index(lua_State *L) {
  const char *key = luaL_checkstring(L, 2);
  int n;
  const char *const *names = nn_layer_names(&n);
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], key)) {
      lua_pushvalue(L, 2);
      lua_pushcclosure(L, lnn_layer_by_name, 1);
      return 1;
    }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; i < n; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, names[i]);
  }
  luaL_addstring(&b, ", Sequential, Residual");
  luaL_pushresult(&b);
  return luaL_error(L, "wb.nn has no layer or function \"%s\"; known layer types: %s", key,
                    lua_tostring(L, -1));
}

/* ---------------------------------------------------------------- functional ops and losses */

static nn_reduction check_reduction(lua_State *L, int opts, const char *fn) {
  static const char *const known[] = {"reduction", NULL};
  wb_lua_checkopts(L, opts, fn, known);
  const char *r = wb_lua_optstring(L, opts, "reduction", "mean");
  if (!strcmp(r, "mean")) return NN_REDUCTION_MEAN;
  if (!strcmp(r, "sum")) return NN_REDUCTION_SUM;
  if (!strcmp(r, "none")) return NN_REDUCTION_NONE;
  return (nn_reduction)luaL_error(
      L, "%s: unknown reduction \"%s\"; known reductions: mean, sum, none", fn, r);
}

/* wb.nn.cross_entropy(logits (N, C), labels, {reduction="mean"|"sum"|"none"}): labels int64 (N)
 * class indices (0-based), or float (N, C) class probabilities (soft targets) */
static int lnn_cross_entropy(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *y = wb_lua_checktensor(L, 2), *o = NULL;
  nn_reduction r = check_reduction(L, 3, "cross_entropy");
  if (y->dtype != NN_DTYPE_I64 && y->ndim == 2)
    return rett(L, nn_cross_entropy_soft(&o, x, y, r), &o);
  return rett(L, nn_cross_entropy(&o, x, y, r), &o);
}

/* wb.nn.nll_loss(logp (N, C), labels (N), {reduction=}) */
static int lnn_nll_loss(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *y = wb_lua_checktensor(L, 2), *o = NULL;
  nn_reduction r = check_reduction(L, 3, "nll_loss");
  return rett(L, nn_nll_loss(&o, x, y, r), &o);
}

/* wb.nn.mse_loss(a, b, {reduction=}) */
static int lnn_mse_loss(lua_State *L) {
  nn_tensor *a = wb_lua_checktensor(L, 1), *b = wb_lua_checktensor(L, 2), *o = NULL;
  nn_reduction r = check_reduction(L, 3, "mse_loss");
  return rett(L, nn_mse_loss(&o, a, b, r), &o);
}

/* wb.nn.dropout(x, p=0.5, {training=true}): inverted dropout with a Bernoulli(1-p) mask from the
 * global generator; the identity when not training or p == 0 */
static int lnn_dropout(lua_State *L) {
  static const char *const known[] = {"training", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL, *mask = NULL;
  double p = luaL_optnumber(L, 2, 0.5);
  wb_lua_checkopts(L, 3, "dropout", known);
  bool training = wb_lua_optboolean(L, 3, "training", 1);
  if (!(p >= 0 && p <= 1))
    return luaL_argerror(L, 2, lua_pushfstring(L, "p must be in [0, 1], got %f", p));
  if (!training || p == 0) {
    wb_lua_pushtensor(L, nn_tensor_retain(x));
    return 1;
  }
  int rc = nn_tensor_empty(&mask, x->ndim, x->shape, x->dtype, x->storage->device);
  if (!rc) rc = nn_bernoulli_(mask, 1.0 - p, NULL);
  if (!rc) rc = nn_dropout_mask(&o, x, mask, p < 1 ? 1.0 / (1.0 - p) : 0.0);
  nn_tensor_free(mask);
  return rett(L, rc, &o);
}

/* wb.nn.dropout_mask(x, mask, scale): x * mask * scale */
static int lnn_dropout_mask(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *m = wb_lua_checktensor(L, 2), *o = NULL;
  return rett(L, nn_dropout_mask(&o, x, m, luaL_checknumber(L, 3)), &o);
}

/* An optional tensor argument (nil allowed). */
static nn_tensor *opttensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : wb_lua_checktensor(L, arg);
}

/* wb.nn.linear(x, w (O, I), b?) */
static int lnn_linear(lua_State *L) {
  nn_tensor *x = wb_lua_checktensor(L, 1), *w = wb_lua_checktensor(L, 2), *b = opttensor(L, 3),
            *o = NULL;
  return rett(L, nn_linear(&o, x, w, b), &o);
}

/* wb.nn.conv2d(x, w, b?, {stride=, padding=, dilation=, groups=}) */
static int lnn_conv2d(lua_State *L) {
  static const char *const known[] = {"stride", "padding", "dilation", "groups", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *w = wb_lua_checktensor(L, 2), *b = NULL, *o = NULL;
  int opts = 4;
  if (lua_istable(L, 3))
    opts = 3; /* conv2d(x, w, {opts}) */
  else
    b = opttensor(L, 3);
  wb_lua_checkopts(L, opts, "conv2d", known);
  nn_conv2d_opts co;
  optpair(L, opts, "stride", 1, co.stride);
  optpair(L, opts, "padding", 0, co.padding);
  optpair(L, opts, "dilation", 1, co.dilation);
  co.groups = (int)wb_lua_optinteger(L, opts, "groups", 1);
  return rett(L, nn_conv2d(&o, x, w, b, &co), &o);
}

static int pool_fn(lua_State *L, bool max) {
  static const char *const known_max[] = {"stride", "padding", NULL};
  static const char *const known_avg[] = {"stride", "padding", "count_include_pad", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  int k[2], s[2], p[2];
  luaL_checkany(L, 2);
  checkpair(L, 2, "kernel size", k);
  wb_lua_checkopts(L, 3, max ? "max_pool2d" : "avg_pool2d", max ? known_max : known_avg);
  optpair(L, 3, "stride", 0, s);
  if (!s[0]) s[0] = k[0], s[1] = k[1];
  optpair(L, 3, "padding", 0, p);
  if (max) return rett(L, nn_max_pool2d(&o, x, k, s, p), &o);
  bool cip = wb_lua_optboolean(L, 3, "count_include_pad", 1);
  return rett(L, nn_avg_pool2d(&o, x, k, s, p, cip), &o);
}

/* wb.nn.max_pool2d(x, k, {stride=k, padding=0}); avg_pool2d(x, k, {..., count_include_pad=true}) */
static int lnn_max_pool2d(lua_State *L) { return pool_fn(L, true); }
static int lnn_avg_pool2d(lua_State *L) { return pool_fn(L, false); }

/* the tensor option key of the table at opts, or NULL */
static nn_tensor *opttensorfield(lua_State *L, int opts, const char *key) {
  if (!lua_istable(L, opts)) return NULL;
  lua_getfield(L, opts, key);
  nn_tensor *t = NULL;
  if (!lua_isnil(L, -1)) {
    t = wb_lua_totensor(L, -1);
    if (!t) luaL_error(L, "option \"%s\": tensor expected, got %s", key, luaL_typename(L, -1));
  }
  lua_pop(L, 1); /* still referenced by the options table */
  return t;
}

/* wb.nn.batch_norm(x, running_mean?, running_var?, {weight=, bias=, training=false,
 * momentum=0.1, eps=1e-5}) (PyTorch's F.batch_norm) */
static int lnn_batch_norm(lua_State *L) {
  static const char *const known[] = {"weight", "bias", "training", "momentum", "eps", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *rm = opttensor(L, 2), *rv = opttensor(L, 3), *o = NULL;
  wb_lua_checkopts(L, 4, "batch_norm", known);
  nn_tensor *w = opttensorfield(L, 4, "weight"), *b = opttensorfield(L, 4, "bias");
  bool tr = wb_lua_optboolean(L, 4, "training", 0);
  double mom = wb_lua_optnumber(L, 4, "momentum", 0.1), eps = wb_lua_optnumber(L, 4, "eps", 1e-5);
  return rett(L, nn_batch_norm(&o, x, w, b, rm, rv, tr, mom, eps), &o);
}

/* wb.nn.layer_norm(x, n or {shape}, {weight=, bias=, eps=1e-5}): over the trailing dims */
static int lnn_layer_norm(lua_State *L) {
  static const char *const known[] = {"weight", "bias", "eps", NULL};
  nn_tensor *x = wb_lua_checktensor(L, 1), *o = NULL;
  int nd = 1;
  if (lua_istable(L, 2))
    nd = (int)luaL_len(L, 2);
  else
    luaL_checkinteger(L, 2);
  wb_lua_checkopts(L, 3, "layer_norm", known);
  nn_tensor *w = opttensorfield(L, 3, "weight"), *b = opttensorfield(L, 3, "bias");
  return rett(L, nn_layer_norm(&o, x, nd, w, b, wb_lua_optnumber(L, 3, "eps", 1e-5)), &o);
}

/* wb.nn.embedding(idx, weight) (PyTorch's F.embedding order) */
static int lnn_embedding(lua_State *L) {
  nn_tensor *idx = wb_lua_checktensor(L, 1), *w = wb_lua_checktensor(L, 2), *o = NULL;
  return rett(L, nn_embedding(&o, w, idx), &o);
}

/* wb.nn.init(t, scheme, {gain=, std=, a=}): in-place initialisation by name */
static int lnn_init_(lua_State *L) {
  static const char *const names[] = {"kaiming_normal", "kaiming_uniform", "xavier_normal",
                                      "xavier_uniform", "normal",          "uniform",
                                      "zeros",          "pytorch_default", NULL};
  static const char *const known[] = {"gain", "std", "a", NULL};
  nn_tensor *t = wb_lua_checktensor(L, 1);
  const char *scheme = luaL_checkstring(L, 2);
  int kind = 0;
  while (names[kind] && strcmp(names[kind], scheme)) kind++;
  if (!names[kind])
    luaL_argerror(L, 2,
                  lua_pushfstring(
                      L,
                      "unknown init scheme \"%s\"; known schemes: kaiming_normal, kaiming_uniform, "
                      "xavier_normal, xavier_uniform, normal, uniform, zeros, pytorch_default",
                      scheme));
  wb_lua_checkopts(L, 3, "init", known);
  double param = kind == NN_INIT_NORMAL    ? wb_lua_optnumber(L, 3, "std", 1.0)
                 : kind == NN_INIT_UNIFORM ? wb_lua_optnumber(L, 3, "a", 1.0)
                                           : wb_lua_optnumber(L, 3, "gain", 0.0);
  if (nn_init_(t, (nn_init)kind, param, NULL)) return wb_lua_nnerror(L);
  lua_settop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- registration */

static const luaL_Reg module_methods[] = {
    {"forward", lnn_module_forward},
    {"parameters", lnn_module_parameters},
    {"named_parameters", lnn_module_named_parameters},
    {"buffers", lnn_module_buffers},
    {"named_buffers", lnn_module_named_buffers},
    {"train", lnn_module_train},
    {"evaluate", lnn_module_evaluate},
    {"eval", lnn_module_evaluate},
    {"is_training", lnn_module_is_training},
    {"zero_grad", lnn_module_zero_grad},
    {"flat", lnn_module_flatten},
    {"to", lnn_module_to},
    {"stats", lnn_module_stats},
    {"summary", lnn_module_summary},
    {"num_params", lnn_module_num_params},
    {"children", lnn_module_children},
    {"named_children", lnn_module_named_children},
    {"type", lnn_module_type},
    {NULL, NULL},
};

static const luaL_Reg module_meta[] = {
    {"__gc", lmodule_gc},
    {"__close", lmodule_gc},
    {"__call", NULL}, /* set below: forward with the module as first argument */
    {"__tostring", lnn_module_tostring},
    {NULL, NULL},
};

static const luaL_Reg nn_funcs[] = {
    {"Linear", lnn_linear_new},
    {"Conv2d", lnn_conv2d_new},
    {"BatchNorm1d", lnn_batchnorm1d_new},
    {"BatchNorm2d", lnn_batchnorm2d_new},
    {"LayerNorm", lnn_layernorm_new},
    {"Dropout", lnn_dropout_new},
    {"Embedding", lnn_embedding_new},
    {"ReLU", lnn_relu_new},
    {"LeakyReLU", lnn_leaky_relu_new},
    {"GELU", lnn_gelu_new},
    {"Tanh", lnn_tanh_new},
    {"Sigmoid", lnn_sigmoid_new},
    {"Softplus", lnn_softplus_new},
    {"MaxPool2d", lnn_maxpool2d_new},
    {"AvgPool2d", lnn_avgpool2d_new},
    {"GlobalAvgPool2d", lnn_global_avgpool2d_new},
    {"Flatten", lnn_flatten_new},
    {"Sequential", lnn_sequential_new},
    {"BlockSequential", lnn_block_sequential_new},
    {"Residual", lnn_residual_new},
    {"layer", lnn_layer_new},
    {"layers", lnn_layer_names},
    {"cross_entropy", lnn_cross_entropy},
    {"nll_loss", lnn_nll_loss},
    {"mse_loss", lnn_mse_loss},
    {"dropout", lnn_dropout},
    {"dropout_mask", lnn_dropout_mask},
    {"linear", lnn_linear},
    {"conv2d", lnn_conv2d},
    {"max_pool2d", lnn_max_pool2d},
    {"avg_pool2d", lnn_avg_pool2d},
    {"batch_norm", lnn_batch_norm},
    {"layer_norm", lnn_layer_norm},
    {"embedding", lnn_embedding},
    {"init", lnn_init_},
    {NULL, NULL},
};

/* tensor functions of the wb table that wb.nn shares (PyTorch's torch.nn.functional names) */
static const char *const shared_funcs[] = {
    "relu",        "gelu",    "leaky_relu",        "tanh", "sigmoid", "softplus", "softmax",
    "log_softmax", "one_hot", "global_avg_pool2d", NULL};

void wb_lua_open_nn(lua_State *L) {
  luaL_newmetatable(L, WB_MODULE_MT);
  luaL_setfuncs(L, module_meta, 0);
  lua_pushcfunction(L, lnn_module_forward);
  lua_setfield(L, -2, "__call");
  luaL_newlib(L, module_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  luaL_newlib(L, nn_funcs); /* wb, nn */
  for (int i = 0; shared_funcs[i]; i++) {
    lua_getfield(L, -2, shared_funcs[i]);
    lua_setfield(L, -2, shared_funcs[i]);
  }
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lnn_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "nn");
}
