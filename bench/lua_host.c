/* bench/lua_host.c: the Lua state of the wb program: standard libraries, `require "wb"` and the
 * research modules' openers (generated table, Lua's linit.c idea). */
#include "wb_lua.h"

#include <string.h>
#include <sys/time.h>

static int lwb_time(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec * 1e-6);
  return 1;
}

static int lnn_set_num_threads(lua_State *L) {
  nn_set_num_threads((int)luaL_checkinteger(L, 1));
  return 0;
}

static int lnn_get_num_threads(lua_State *L) {
  lua_pushinteger(L, nn_get_num_threads());
  return 1;
}

static const luaL_Reg wb_funcs[] = {
    {"time", lwb_time},
    {"set_num_threads", lnn_set_num_threads},
    {"get_num_threads", lnn_get_num_threads},
    {NULL, NULL},
};

/* wb.<module> for a research module not yet required: requires "wb.<module>" on first use. */
static int lwb_index(lua_State *L) {
  const char *k = luaL_checkstring(L, 2);
  for (const wb_lua_opener *o = wb_lua_openers; o->name; o++)
    if (!strcmp(o->name + 3, k)) { /* o->name is "wb.<module>" */
      lua_getglobal(L, "require");
      lua_pushstring(L, o->name);
      lua_call(L, 1, 1);
      lua_pushvalue(L, -1);
      lua_setfield(L, 1, k); /* cache it in the wb table */
      return 1;
    }
  return 0;
}

int luaopen_wb(lua_State *L) {
  luaL_newlib(L, wb_funcs);
  wb_lua_open_tensor(L);
  wb_lua_open_nn(L);
  wb_lua_open_optim(L);
  wb_lua_open_data(L);
  wb_lua_open_checkpoint(L);
  wb_lua_open_run(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lwb_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}

void wb_lua_openlibs(lua_State *L) {
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_wb);
  lua_setfield(L, -2, "wb");
  for (const wb_lua_opener *o = wb_lua_openers; o->name; o++) {
    lua_pushcfunction(L, o->open);
    lua_setfield(L, -2, o->name);
  }
  lua_pop(L, 1);
}
