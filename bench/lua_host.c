/* bench/lua_host.c: the Lua state of the wb program: standard libraries, `require "wb"` and the
 * research modules' openers (generated table, Lua's linit.c idea). */
#include "wb_lua.h"

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

int luaopen_wb(lua_State *L) {
  luaL_newlib(L, wb_funcs);
  wb_lua_open_tensor(L);
  wb_lua_open_nn(L);
  wb_lua_open_optim(L);
  wb_lua_open_data(L);
  wb_lua_open_checkpoint(L);
  wb_lua_open_run(L);
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
