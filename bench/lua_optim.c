/* bench/lua_optim.c: wb.optim: the wb.Optimizer userdata (SGD, Adam, AdamW, RMSprop over
 * nn/optim.h) with parameter groups, learning rates, state snapshots, and gradient clipping.
 *
 * The core optimizer borrows its parameter tensors; the userdata keeps a reference to each so
 * that the parameters outlive it even when the model is collected first. Group numbers in Lua
 * are 1-based. */
#include "module.h"
#include "optim.h"
#include "wb_lua.h"

#include <stdlib.h>
#include <string.h>

#define WB_OPTIM_MT "wb.Optimizer"

typedef struct {
  nn_optim *o;
  int n;              /* parameters referenced */
  nn_tensor **params; /* owned references (malloc'd array) */
} loptim;

static void loptim_release(loptim *u) {
  nn_optim_free(u->o);
  u->o = NULL;
  for (int i = 0; i < u->n; i++) nn_tensor_free(u->params[i]);
  free(u->params);
  u->params = NULL;
  u->n = 0;
}

static int loptim_gc(lua_State *L) {
  loptim_release(luaL_checkudata(L, 1, WB_OPTIM_MT));
  return 0;
}

static loptim *checkoptim(lua_State *L, int idx) {
  loptim *u = luaL_checkudata(L, idx, WB_OPTIM_MT);
  if (!u->o) luaL_argerror(L, idx, "optimizer has been closed");
  return u;
}

nn_optim *wb_lua_checkoptim(lua_State *L, int idx) { return checkoptim(L, idx)->o; }

/* ---------------------------------------------------------------- options */

static const char *const sgd_known[] = {"lr",       "momentum",     "dampening",
                                        "nesterov", "weight_decay", NULL};
static const char *const adam_known[] = {"lr",  "betas",        "beta1", "beta2",
                                         "eps", "weight_decay", NULL};
static const char *const rms_known[] = {"lr",       "alpha",    "eps", "weight_decay",
                                        "momentum", "centered", NULL};
/* the same lists with "params", for group tables */
static const char *const sgd_group[] = {"params",   "lr",           "momentum", "dampening",
                                        "nesterov", "weight_decay", NULL};
static const char *const adam_group[] = {"params", "lr",  "betas",        "beta1",
                                         "beta2",  "eps", "weight_decay", NULL};
static const char *const rms_group[] = {"params",       "lr",       "alpha",    "eps",
                                        "weight_decay", "momentum", "centered", NULL};

/* Reads the options table at idx over base (the kind's defaults, or the constructor's options for
 * a group) after checking its keys. */
static nn_optim_opts read_opts(lua_State *L, int idx, nn_optim_kind kind, nn_optim_opts base,
                               bool group) {
  const char *name = nn_optim_kind_name(kind);
  const char *const *known = kind == NN_OPTIM_SGD ? (group ? sgd_group : sgd_known)
                             : kind == NN_OPTIM_ADAM || kind == NN_OPTIM_ADAMW
                                 ? (group ? adam_group : adam_known)
                                 : (group ? rms_group : rms_known);
  wb_lua_checkopts(L, idx, name, known);
  nn_optim_opts o = base;
  o.lr = wb_lua_optnumber(L, idx, "lr", o.lr);
  o.weight_decay = wb_lua_optnumber(L, idx, "weight_decay", o.weight_decay);
  o.momentum = wb_lua_optnumber(L, idx, "momentum", o.momentum);
  o.dampening = wb_lua_optnumber(L, idx, "dampening", o.dampening);
  o.nesterov = wb_lua_optboolean(L, idx, "nesterov", o.nesterov);
  o.eps = wb_lua_optnumber(L, idx, "eps", o.eps);
  o.alpha = wb_lua_optnumber(L, idx, "alpha", o.alpha);
  o.centered = wb_lua_optboolean(L, idx, "centered", o.centered);
  o.beta1 = wb_lua_optnumber(L, idx, "beta1", o.beta1);
  o.beta2 = wb_lua_optnumber(L, idx, "beta2", o.beta2);
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "betas");
    if (!lua_isnil(L, -1)) {
      if (!lua_istable(L, -1) || luaL_len(L, -1) != 2)
        luaL_error(L, "%s: betas must be a pair {beta1, beta2}", name);
      lua_geti(L, -1, 1);
      lua_geti(L, -2, 2);
      if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1))
        luaL_error(L, "%s: betas must be numbers", name);
      o.beta1 = lua_tonumber(L, -2);
      o.beta2 = lua_tonumber(L, -1);
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  return o;
}

/* ---------------------------------------------------------------- construction */

/* Appends the tensors of the list at idx (or of the module at idx) to the userdata's references;
 * returns the index of the first one. */
static int add_params(lua_State *L, loptim *u, int idx, const char *name) {
  idx = lua_absindex(L, idx);
  nn_module *m = wb_lua_tomodule(L, idx);
  if (m) {
    lua_getfield(L, idx, "parameters");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    lua_replace(L, idx);
  }
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: params must be a list of tensors, a module, or a list of groups", name);
  int n = (int)luaL_len(L, idx), first = u->n;
  nn_tensor **p = realloc(u->params, (size_t)(u->n + n + 1) * sizeof *p);
  if (!p) luaL_error(L, "%s: out of memory", name);
  u->params = p;
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    nn_tensor *t = wb_lua_totensor(L, -1);
    if (!t)
      luaL_error(L, "%s: params entry %d is a %s, not a tensor", name, i + 1, luaL_typename(L, -1));
    u->params[u->n++] = nn_tensor_retain(t); /* owned by the userdata from here on */
    lua_pop(L, 1);
  }
  return first;
}

/* true when the list at idx holds group tables ({params=...}) rather than tensors */
static bool is_group_list(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || wb_lua_tomodule(L, idx)) return false;
  lua_geti(L, idx, 1);
  bool g = lua_istable(L, -1) && !wb_lua_totensor(L, -1);
  lua_pop(L, 1);
  return g;
}

/* wb.optim.<Kind>(params, {opts}): params is a list of tensors, a module, or a list of group
 * tables {params=..., lr=..., ...} whose options override the constructor's */
static int optim_new(lua_State *L, nn_optim_kind kind) {
  const char *name = nn_optim_kind_name(kind);
  luaL_checkany(L, 1);
  lua_settop(L, 2);
  nn_optim_opts base = read_opts(L, 2, kind, nn_optim_defaults(kind), false);
  loptim *u = lua_newuserdatauv(L, sizeof *u,
                                0); /* closed first: every reference it takes is freed by __gc */
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, WB_OPTIM_MT);
  int ud = lua_gettop(L);
  if (!is_group_list(L, 1)) {
    int first = add_params(L, u, 1, name);
    if (nn_optim_new(&u->o, kind, u->n - first, u->params + first, &base)) return wb_lua_nnerror(L);
  } else {
    int ng = (int)luaL_len(L, 1);
    for (int g = 1; g <= ng; g++) {
      lua_geti(L, 1, g);
      int gt = lua_gettop(L);
      if (!lua_istable(L, gt))
        luaL_error(L, "%s: group %d is a %s, not a table", name, g, luaL_typename(L, gt));
      nn_optim_opts o = read_opts(L, gt, kind, base, true);
      lua_getfield(L, gt, "params");
      if (lua_isnil(L, -1)) luaL_error(L, "%s: group %d has no params", name, g);
      int first = add_params(L, u, -1, name);
      int gi, rc;
      if (!u->o)
        rc = nn_optim_new(&u->o, kind, u->n - first, u->params + first, &o);
      else
        rc = nn_optim_add_group(u->o, u->n - first, u->params + first, &o, &gi);
      if (rc) return wb_lua_nnerror(L);
      lua_settop(L, ud);
    }
    if (!u->o) luaL_error(L, "%s: empty list of groups", name);
  }
  lua_settop(L, ud);
  return 1;
}

static int lnn_optim_sgd(lua_State *L) { return optim_new(L, NN_OPTIM_SGD); }
static int lnn_optim_adam(lua_State *L) { return optim_new(L, NN_OPTIM_ADAM); }
static int lnn_optim_adamw(lua_State *L) { return optim_new(L, NN_OPTIM_ADAMW); }
static int lnn_optim_rmsprop(lua_State *L) { return optim_new(L, NN_OPTIM_RMSPROP); }

/* ---------------------------------------------------------------- methods */

static int lnn_optim_step(lua_State *L) {
  if (nn_optim_step(checkoptim(L, 1)->o)) return wb_lua_nnerror(L);
  return 0;
}

/* opt:zero_grad(set_to_none?): drops the grads by default (PyTorch's default; the next backward
 * stores its gradient without an add); grads that share memory (flat buffers) are zeroed in place
 */
static int lnn_optim_zero_grad(lua_State *L) {
  nn_optim_zero_grad(checkoptim(L, 1)->o, lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2));
  return 0;
}

static int checkgroup(lua_State *L, int arg, nn_optim *o) {
  lua_Integer g = luaL_checkinteger(L, arg);
  int n = nn_optim_num_groups(o);
  if (g < 1 || g > n)
    luaL_argerror(L, arg, lua_pushfstring(L, "group %d out of range (1..%d)", (int)g, n));
  return (int)g - 1;
}

/* opt:set_lr(lr, group?): every group, or the given one (1-based) */
static int lnn_optim_set_lr(lua_State *L) {
  nn_optim *o = checkoptim(L, 1)->o;
  double lr = luaL_checknumber(L, 2);
  if (!(lr >= 0)) luaL_argerror(L, 2, "learning rate must be >= 0");
  if (lua_isnoneornil(L, 3))
    nn_optim_set_lr(o, lr);
  else
    nn_optim_group_opts(o, checkgroup(L, 3, o))->lr = lr;
  return 0;
}

/* opt:get_lr(group=1) */
static int lnn_optim_get_lr(lua_State *L) {
  nn_optim *o = checkoptim(L, 1)->o;
  int g = lua_isnoneornil(L, 2) ? 0 : checkgroup(L, 2, o);
  lua_pushnumber(L, nn_optim_get_lr(o, g));
  return 1;
}

static int lnn_optim_num_groups(lua_State *L) {
  lua_pushinteger(L, nn_optim_num_groups(checkoptim(L, 1)->o));
  return 1;
}

static int lnn_optim_steps(lua_State *L) {
  lua_pushinteger(L, nn_optim_steps(checkoptim(L, 1)->o));
  return 1;
}

static int lnn_optim_kind(lua_State *L) {
  lua_pushstring(L, nn_optim_kind_name(nn_optim_kind_of(checkoptim(L, 1)->o)));
  return 1;
}

/* opt:state() -> {kind=, step=, lr={per group}, buffers={["<i>.<name>"]=tensor}}: a snapshot
 * (the tensors are copies; <i> is the 0-based parameter number, as in checkpoints) */
static int lnn_optim_state(lua_State *L) {
  nn_optim *o = checkoptim(L, 1)->o;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, nn_optim_kind_name(nn_optim_kind_of(o)));
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, nn_optim_steps(o));
  lua_setfield(L, -2, "step");
  int ng = nn_optim_num_groups(o);
  lua_createtable(L, ng, 0);
  for (int g = 0; g < ng; g++) {
    lua_pushnumber(L, nn_optim_get_lr(o, g));
    lua_rawseti(L, -2, g + 1);
  }
  lua_setfield(L, -2, "lr");
  lua_newtable(L);
  nn_named *l = NULL;
  int n = 0;
  if (nn_optim_state(o, &l, &n)) return wb_lua_nnerror(L);
  int rc = NN_OK;
  for (int i = 0; i < n && !rc; i++) {
    if (!strcmp(l[i].name, "step")) continue;
    nn_tensor *c = NULL;
    rc = nn_clone(&c, l[i].t);
    if (!rc) {
      wb_lua_pushtensor(L, c);
      lua_setfield(L, -2, l[i].name);
    }
  }
  nn_named_list_free(l, n);
  if (rc) return wb_lua_nnerror(L);
  lua_setfield(L, -2, "buffers");
  return 1;
}

/* opt:load_state(state): restores a snapshot of opt:state() (same kind, parameter count and
 * shapes); nothing changes when a check fails */
static int lnn_optim_load_state(lua_State *L) {
  nn_optim *o = checkoptim(L, 1)->o;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  const char *kind = nn_optim_kind_name(nn_optim_kind_of(o));
  if (lua_getfield(L, 2, "kind") == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind))
    luaL_error(L, "load_state: the state is %s's, the optimizer is %s", lua_tostring(L, -1), kind);
  lua_pop(L, 1);
  lua_Integer step = wb_lua_optinteger(L, 2, "step", 0);
  if (lua_getfield(L, 2, "buffers") != LUA_TTABLE)
    luaL_error(L, "load_state: the state has no buffers table");
  int bt = lua_gettop(L);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, bt)) {
    n++;
    lua_pop(L, 1);
  }
  nn_named *l = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *l, 0);
  int k = 0;
  lua_pushnil(L);
  while (lua_next(L, bt)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "load_state: buffer names must be strings");
    l[k].name = (char *)lua_tostring(L, -2); /* referenced by the table */
    l[k].t = wb_lua_totensor(L, -1);
    if (!l[k].t) luaL_error(L, "load_state: buffer \"%s\" is not a tensor", l[k].name);
    k++;
    lua_pop(L, 1);
  }
  /* group learning rates are checked before anything is written */
  int ng = nn_optim_num_groups(o);
  double lrs[64];
  int nlr = 0;
  if (lua_getfield(L, 2, "lr") == LUA_TTABLE) {
    nlr = (int)luaL_len(L, -1);
    if (nlr != ng) luaL_error(L, "load_state: the state has %d groups, the optimizer %d", nlr, ng);
    if (nlr > 64) nlr = 64;
    for (int g = 0; g < nlr; g++) {
      lua_geti(L, -1, g + 1);
      lrs[g] = luaL_checknumber(L, -1);
      lua_pop(L, 1);
    }
  }
  if (nn_optim_load_state(o, k, l, step)) return wb_lua_nnerror(L);
  for (int g = 0; g < nlr; g++) nn_optim_group_opts(o, g)->lr = lrs[g];
  return 0;
}

static int lnn_optim_tostring(lua_State *L) {
  loptim *u = luaL_checkudata(L, 1, WB_OPTIM_MT);
  if (!u->o) {
    lua_pushliteral(L, "optimizer(closed)");
    return 1;
  }
  const nn_optim_opts *o = nn_optim_group_opts(u->o, 0);
  nn_optim_kind k = nn_optim_kind_of(u->o);
  if (k == NN_OPTIM_SGD)
    lua_pushfstring(L, "SGD(lr=%f, momentum=%f, weight_decay=%f, nesterov=%s", o->lr, o->momentum,
                    o->weight_decay, o->nesterov ? "true" : "false");
  else if (k == NN_OPTIM_RMSPROP)
    lua_pushfstring(L, "RMSprop(lr=%f, alpha=%f, eps=%f, momentum=%f, weight_decay=%f", o->lr,
                    o->alpha, o->eps, o->momentum, o->weight_decay);
  else
    lua_pushfstring(L, "%s(lr=%f, betas={%f, %f}, eps=%f, weight_decay=%f", nn_optim_kind_name(k),
                    o->lr, o->beta1, o->beta2, o->eps, o->weight_decay);
  lua_pushfstring(L, "%s; %d groups, %d parameters)", lua_tostring(L, -1),
                  nn_optim_num_groups(u->o), u->n);
  return 1;
}

/* wb.optim.clip_grad_norm(params or module, max_norm) -> the global L2 norm before clipping */
static int lnn_clip_grad_norm(lua_State *L) {
  lua_settop(L, 2);
  double max_norm = luaL_checknumber(L, 2);
  if (wb_lua_tomodule(L, 1)) {
    lua_getfield(L, 1, "parameters");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_replace(L, 1);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  nn_tensor **ts = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ts, 0);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    ts[i] = wb_lua_totensor(L, -1);
    if (!ts[i]) luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is not a tensor", i + 1));
    lua_pop(L, 1);
  }
  double norm = 0;
  if (nn_clip_grad_norm(&norm, n, ts, max_norm)) return wb_lua_nnerror(L);
  lua_pushnumber(L, norm);
  return 1;
}

/* ---------------------------------------------------------------- registration */

static const luaL_Reg optim_methods[] = {
    {"step", lnn_optim_step},
    {"zero_grad", lnn_optim_zero_grad},
    {"set_lr", lnn_optim_set_lr},
    {"get_lr", lnn_optim_get_lr},
    {"num_groups", lnn_optim_num_groups},
    {"steps", lnn_optim_steps},
    {"kind", lnn_optim_kind},
    {"state", lnn_optim_state},
    {"load_state", lnn_optim_load_state},
    {NULL, NULL},
};

static const luaL_Reg optim_meta[] = {
    {"__gc", loptim_gc},
    {"__close", loptim_gc},
    {"__tostring", lnn_optim_tostring},
    {NULL, NULL},
};

static const luaL_Reg optim_funcs[] = {
    {"SGD", lnn_optim_sgd},
    {"Adam", lnn_optim_adam},
    {"AdamW", lnn_optim_adamw},
    {"RMSprop", lnn_optim_rmsprop},
    {"RMSProp", lnn_optim_rmsprop},
    {"clip_grad_norm", lnn_clip_grad_norm},
    {NULL, NULL},
};

/* __index of wb.optim: an unknown name is an error listing the optimizers */
static int loptim_index(lua_State *L) {
  return luaL_error(
      L,
      "wb.optim has no optimizer or function \"%s\"; known: SGD, Adam, AdamW, RMSprop (RMSProp), "
      "clip_grad_norm",
      luaL_tolstring(L, 2, NULL));
}

void wb_lua_open_optim(lua_State *L) {
  luaL_newmetatable(L, WB_OPTIM_MT);
  luaL_setfuncs(L, optim_meta, 0);
  luaL_newlib(L, optim_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, optim_funcs);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, loptim_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "optim");
}
