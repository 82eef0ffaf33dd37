/* bench/lua_checkpoint.c: wb.save and wb.load: one-file checkpoints of a model, its optimizer,
 * the global random generator and the script's own values, over nn/checkpoint.h (atomic save,
 * verified load that changes nothing unless every check passes). */
#include "checkpoint.h"
#include "wb_lua.h"

#include <string.h>

#define WB_CKPT_MT "wb.CheckpointEntries"

/* A checkpoint's entries held while they are turned into Lua values (freed by __gc). */
typedef struct {
  nn_ckpt *c;
} lckpt;

static int lckpt_gc(lua_State *L) {
  lckpt *u = luaL_checkudata(L, 1, WB_CKPT_MT);
  nn_ckpt_free(u->c);
  u->c = NULL;
  return 0;
}

static lckpt *new_lckpt(lua_State *L) {
  lckpt *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->c = NULL;
  if (luaL_newmetatable(L, WB_CKPT_MT)) {
    lua_pushcfunction(L, lckpt_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return u;
}

/* The optional module / optimizer option key of the table at opts. */
static nn_module *optmodule(lua_State *L, int opts, const char *key) {
  lua_getfield(L, opts, key);
  nn_module *m = lua_isnil(L, -1) ? NULL : wb_lua_tomodule(L, -1);
  if (!lua_isnil(L, -1) && !m)
    luaL_error(L, "option \"%s\": module expected, got %s", key, luaL_typename(L, -1));
  lua_pop(L, 1); /* still referenced by the options table */
  return m;
}

static nn_optim *optoptim(lua_State *L, int opts, const char *key) {
  if (lua_getfield(L, opts, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  nn_optim *o = wb_lua_checkoptim(L, lua_gettop(L));
  lua_pop(L, 1);
  return o;
}

/* wb.save(path, {model=, optim=, rng=false, extra={name=value}}): extra values are integers,
 * numbers, strings or tensors; the file is replaced atomically */
static int lwb_save(lua_State *L) {
  static const char *const known[] = {"model", "optim", "rng", "extra", NULL};
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  wb_lua_checkopts(L, 2, "save", known);
  nn_module *m = optmodule(L, 2, "model");
  if (!m) luaL_error(L, "save: the model option is required");
  nn_optim *o = optoptim(L, 2, "optim");
  bool rng = wb_lua_optboolean(L, 2, "rng", 0);
  lckpt *u = new_lckpt(L); /* index 3: owns the extra entries until the end */
  if (nn_ckpt_new(&u->c)) return wb_lua_nnerror(L);
  if (lua_getfield(L, 2, "extra") != LUA_TNIL) { /* index 4 */
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "save: extra keys must be strings");
      const char *k = lua_tostring(L, -2);
      int rc;
      nn_tensor *t = wb_lua_totensor(L, -1);
      if (t)
        rc = nn_ckpt_put_tensor(u->c, k, t);
      else if (lua_isinteger(L, -1))
        rc = nn_ckpt_put_int(u->c, k, lua_tointeger(L, -1));
      else if (lua_type(L, -1) == LUA_TNUMBER)
        rc = nn_ckpt_put_float(u->c, k, lua_tonumber(L, -1));
      else if (lua_type(L, -1) == LUA_TSTRING)
        rc = nn_ckpt_put_str(u->c, k, lua_tostring(L, -1));
      else
        return luaL_error(
            L, "save: extra \"%s\" is a %s; extra values are integers, numbers, strings or tensors",
            k, luaL_typename(L, -1));
      if (rc) return wb_lua_nnerror(L);
      lua_pop(L, 1);
    }
  }
  if (nn_checkpoint_save(path, m, o, rng ? nn_default_rng() : NULL, u->c)) return wb_lua_nnerror(L);
  return 0;
}

/* Pushes a table of the "extra." entries of c. */
static void push_extra(lua_State *L, const nn_ckpt *c) {
  lua_newtable(L);
  for (int i = 0; i < nn_ckpt_count(c); i++) {
    const char *name = nn_ckpt_name(c, i);
    if (strncmp(name, "extra.", 6)) continue;
    nn_tensor *t = nn_ckpt_tensor(c, name);
    const char *s;
    int64_t iv;
    double fv;
    if (t)
      wb_lua_pushtensor(L, nn_tensor_retain(t));
    else if ((s = nn_ckpt_str(c, name)))
      lua_pushstring(L, s);
    else if (nn_ckpt_int(c, name, &iv) == NN_OK)
      lua_pushinteger(L, (lua_Integer)iv);
    else if (nn_ckpt_float(c, name, &fv) == NN_OK)
      lua_pushnumber(L, fv);
    else
      continue;
    lua_setfield(L, -2, name + 6);
  }
  nn_clearerr();
}

/* wb.load(path, {model=, optim=, rng=false}) -> the extra table. Restores the model (and the
 * optimizer and global generator when given) only when the whole file checks out; without a
 * model only the extra values are read. */
static int lwb_load(lua_State *L) {
  static const char *const known[] = {"model", "optim", "rng", NULL};
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 2);
  wb_lua_checkopts(L, 2, "load", known);
  nn_module *m = NULL;
  nn_optim *o = NULL;
  bool rng = false;
  if (lua_istable(L, 2)) {
    m = optmodule(L, 2, "model");
    o = optoptim(L, 2, "optim");
    rng = wb_lua_optboolean(L, 2, "rng", 0);
  }
  if ((o || rng) && !m)
    luaL_error(L, "load: restoring an optimizer or the generator needs the model option too");
  lckpt *u = new_lckpt(L);
  int rc = m ? nn_checkpoint_load(path, m, o, rng ? nn_default_rng() : NULL, &u->c)
             : nn_ckpt_load(&u->c, path);
  if (rc) return wb_lua_nnerror(L);
  push_extra(L, u->c);
  return 1;
}

static const luaL_Reg ckpt_funcs[] = {
    {"save", lwb_save},
    {"load", lwb_load},
    {NULL, NULL},
};

void wb_lua_open_checkpoint(lua_State *L) { luaL_setfuncs(L, ckpt_funcs, 0); }
