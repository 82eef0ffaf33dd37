/* bench/lua_args.c: a script's options and sweep grids.
 *
 *   local opt = wb.args { lr = 0.05, epochs = 2, model = "mlp", verbose = false }
 *   local opt = wb.args({ lr = 0.05 }, { doc = { lr = "learning rate" }, argv = { "--lr", "0.1" }
 * }) local points = wb.grid { lr = { 0.1, 0.01 }, seed = { 1, 2, 3 } }
 *
 * wb.args declares the options with their defaults and returns the resolved values: the
 * defaults, overridden by the --config JSON file, overridden by the command line (or, when
 * given, by opts.argv instead of both). A value is converted to its default's type: integer,
 * number, boolean (true/false, yes/no, on/off, 1/0; a bare `--flag` is true) or string; a value
 * that does not convert is an error naming the option and the type. `--batch-size` matches the
 * option batch_size. An option that was not declared is an error listing the declared ones;
 * reading an undeclared field of the returned table is an error too (a typo is not a nil).
 * Every resolved option is recorded as a param of the runs the script starts. Under
 * `wb run SCRIPT --help`, wb.args prints the options and their defaults and stops the script.
 *
 * wb.grid(spec [, {order = {...}}]) is the Cartesian product of spec's lists (a value that is
 * not a table is a list of one) as an array of points {name = value}. Order: the keys in
 * opts.order first, the others after them in alphabetical order; the first key varies slowest
 * and the last fastest (like nested loops, or Python's itertools.product over the keys).
 */
#include "host.h"
#include "wb_lua.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARGS_RESOLVED "wb.args.resolved"
#define ARGS_MT "wb.Args"

/* Pushes a sorted array of the string keys of the table at t. */
static int push_sorted_keys(lua_State *L, int t) {
  t = lua_absindex(L, t);
  lua_newtable(L);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, ++n);
  }
  /* insertion sort: option lists are short */
  for (int i = 2; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    int j = i - 1;
    for (; j >= 1; j--) {
      lua_rawgeti(L, -2, j);
      int gt = strcmp(lua_tostring(L, -1), lua_tostring(L, -2)) > 0;
      if (!gt) {
        lua_pop(L, 1);
        break;
      }
      lua_rawseti(L, -3, j + 1);
    }
    lua_rawseti(L, -2, j + 1);
  }
  return n;
}

/* Pushes "--a, --b, --c" from the sorted key array at idx. */
static const char *push_option_list(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) luaL_addstring(&b, ", ");
    luaL_addstring(&b, "--");
    lua_rawgeti(L, idx, i);
    luaL_addvalue(&b);
  }
  if (n == 0) luaL_addstring(&b, "(none)");
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

static const char *type_of_default(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    return lua_isinteger(L, idx) ? "integer" : "number";
  case LUA_TBOOLEAN:
    return "boolean";
  case LUA_TSTRING:
    return "string";
  default:
    return NULL;
  }
}

/* Converts text to the type of the default at def and pushes it; returns 0 when it does not
 * convert. is_flag: `--name` with no value. */
static int coerce(lua_State *L, int def, const char *text, int is_flag) {
  char *end;
  switch (lua_type(L, def)) {
  case LUA_TBOOLEAN:
    if (is_flag) {
      lua_pushboolean(L, 1);
      return 1;
    }
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (int i = 0; i < 4; i++) {
      if (!strcasecmp(text, yes[i])) {
        lua_pushboolean(L, 1);
        return 1;
      }
      if (!strcasecmp(text, no[i])) {
        lua_pushboolean(L, 0);
        return 1;
      }
    }
    return 0;
  case LUA_TNUMBER: {
    if (is_flag) return 0;
    while (isspace((unsigned char)*text)) text++;
    if (!*text) return 0;
    if (lua_isinteger(L, def)) {
      errno = 0;
      long long v = strtoll(text, &end, 10);
      if (!errno && !*end) {
        lua_pushinteger(L, v);
        return 1;
      }
      double d = strtod(text, &end); /* "1e3" is the integer 1000 */
      if (*end || d != floor(d) || !(fabs(d) < 9.2e18)) return 0;
      lua_pushinteger(L, (lua_Integer)d);
      return 1;
    }
    double d = strtod(text, &end);
    if (*end) return 0;
    lua_pushnumber(L, d);
    return 1;
  }
  case LUA_TSTRING:
    if (is_flag) return 0;
    lua_pushstring(L, text);
    return 1;
  default:
    return 0;
  }
}

/* Prints the declared options (sorted keys at keys, defaults at defs, docs at docs or 0). */
static void print_help(lua_State *L, int defs, int keys, int docs) {
  wb_host *h = wb_lua_run_host();
  printf("usage: wb run %s [--name value ...] [--config FILE.json] [--db PATH]\n\n",
         h->script ? h->script : "SCRIPT.lua");
  lua_Integer n = luaL_len(L, keys);
  printf(n ? "options (default, type):\n" : "the script declares no options\n");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, keys, i);
    const char *name = lua_tostring(L, -1);
    lua_getfield(L, defs, name);
    const char *type = type_of_default(L, -1);
    const char *text = wb_lua_value_text(L, -1);
    char left[256];
    const char *q = lua_type(L, -2) == LUA_TSTRING ? "\"" : "";
    snprintf(left, sizeof left, "--%s %s%s%s", name, q, text, q);
    const char *doc = NULL;
    if (docs) {
      lua_getfield(L, docs, name);
      doc = lua_tostring(L, -1);
      lua_pop(L, 1); /* the string stays in the doc table */
    }
    if (doc)
      printf("  %-28s %-8s  %s\n", left, type, doc);
    else
      printf("  %-28s %s\n", left, type);
    lua_pop(L, 3);
  }
  printf("\n--config FILE.json sets options from a JSON object; the command line wins over it.\n");
  fflush(stdout);
}

/* Finds the declared option for a given name ("batch-size" matches batch_size); pushes the
 * declared name or returns 0 with nothing pushed. */
static int find_option(lua_State *L, int defs, const char *given) {
  char name[256];
  snprintf(name, sizeof name, "%s", given);
  for (int pass = 0; pass < 2; pass++) {
    if (lua_getfield(L, defs, name) != LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushstring(L, name);
      return 1;
    }
    lua_pop(L, 1);
    for (char *c = name; *c; c++)
      if (*c == '-') *c = '_';
  }
  return 0;
}

static int largs_index(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "keys");
  const char *known = push_option_list(L, -1);
  return luaL_error(L, "wb.args: no option '%s' was declared; declared options: %s",
                    luaL_tolstring(L, 2, NULL), known);
}

/* Applies one given option (name, text, is_flag, origin) to the resolved table res. */
static void apply(lua_State *L, int defs, int keys, int res, const char *name, const char *text,
                  int is_flag, const char *origin) {
  if (!find_option(L, defs, name)) {
    const char *known = push_option_list(L, keys);
    luaL_error(L, "unknown option --%s (from %s); the script's options are: %s", name, origin,
               known);
  }
  const char *declared = lua_tostring(L, -1);
  lua_getfield(L, defs, declared);
  if (!coerce(L, lua_gettop(L), text, is_flag)) {
    if (is_flag)
      luaL_error(L, "option --%s (from %s) needs a value (%s)", name, origin,
                 type_of_default(L, -1));
    luaL_error(L, "option --%s (from %s): expected %s %s, got \"%s\"", name, origin,
               lua_isinteger(L, -1) ? "an" : "a", type_of_default(L, -1), text);
  }
  lua_setfield(L, res, declared);
  lua_pop(L, 2);
}

static const char *const args_fields[] = {"argv", "doc", NULL};

static int lwb_args(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int has_opts = !lua_isnoneornil(L, 2);
  if (has_opts) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int docs = 0, argv = 0;
  if (has_opts) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, args_fields[0]) && strcmp(k, args_fields[1]))
        return luaL_error(L,
                          "wb.args: unknown field '%s' in the second argument; known "
                          "fields: argv, doc",
                          k);
      lua_pop(L, 1);
    }
    lua_getfield(L, 2, "doc");
    if (!lua_isnil(L, -1)) {
      luaL_argexpected(L, lua_istable(L, -1), 2, "doc to be a table");
      docs = lua_gettop(L);
    }
    lua_getfield(L, 2, "argv");
    if (!lua_isnil(L, -1)) {
      luaL_argexpected(L, lua_istable(L, -1), 2, "argv to be a table of strings");
      argv = lua_gettop(L);
    }
  }
  /* check the declarations */
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      return luaL_error(L, "wb.args: option names must be strings (got a %s key)",
                        luaL_typename(L, -2));
    if (!type_of_default(L, -1))
      return luaL_error(L,
                        "wb.args: the default of %s must be a number, boolean or string "
                        "(got a %s)",
                        lua_tostring(L, -2), luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  push_sorted_keys(L, 1);
  int keys = lua_gettop(L);
  wb_host *h = wb_lua_run_host();
  if (!argv && h->help) {
    print_help(L, 1, keys, docs);
    return wb_lua_run_raise_help(L);
  }
  /* resolve: defaults, then the given values in order */
  lua_newtable(L);
  int res = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, res);
  }
  if (argv) {
    lua_Integer n = luaL_len(L, argv);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, argv, i);
      const char *a = lua_tostring(L, -1);
      if (!a || strncmp(a, "--", 2) != 0 || !a[2])
        return luaL_error(L, "wb.args: argv[%d] should be an option --name (got %s)", (int)i,
                          a ? a : luaL_typename(L, -1));
      const char *eq = strchr(a, '=');
      if (eq) {
        lua_pushlstring(L, a + 2, (size_t)(eq - a - 2));
        apply(L, 1, keys, res, lua_tostring(L, -1), eq + 1, 0, "argv");
        lua_pop(L, 2);
        continue;
      }
      const char *value = NULL;
      if (i < n) {
        lua_geti(L, argv, i + 1);
        const char *next = lua_tostring(L, -1);
        if (next && strncmp(next, "--", 2) != 0) value = next, i++;
      } else {
        lua_pushnil(L);
      }
      apply(L, 1, keys, res, a + 2, value ? value : "", !value, "argv");
      lua_pop(L, 2);
    }
  } else {
    for (int i = 0; i < h->n_opts; i++)
      apply(L, 1, keys, res, h->opts[i].name, h->opts[i].value, h->opts[i].is_flag,
            h->opts[i].origin);
    h->args_called = 1;
  }
  /* record for the params of the runs to come */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, ARGS_RESOLVED);
  lua_pushnil(L);
  while (lua_next(L, res)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_pop(L, 1);
  /* reading an undeclared option is an error */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, keys);
  lua_setfield(L, -2, "keys");
  lua_pushcfunction(L, largs_index);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, ARGS_MT);
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, res);
  lua_settop(L, res);
  return 1;
}

/* ---------------------------------------------------------------- wb.grid */

static int lwb_grid(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  /* key order: opts.order, then the rest sorted */
  push_sorted_keys(L, 1);
  int sorted = 3;
  lua_newtable(L);
  int order = 4;
  int n_keys = 0;
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "order"))
        return luaL_error(L,
                          "wb.grid: unknown field '%s' in the second argument; known "
                          "fields: order",
                          luaL_tolstring(L, -2, NULL));
      lua_pop(L, 1);
    }
    if (lua_getfield(L, 2, "order") != LUA_TNIL) {
      luaL_argexpected(L, lua_istable(L, -1), 2, "order to be a list of keys");
      lua_Integer n = luaL_len(L, -1);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        if (!lua_isstring(L, -1) || lua_getfield(L, 1, lua_tostring(L, -1)) == LUA_TNIL)
          return luaL_error(L, "wb.grid: order names '%s', which is not a key of the grid",
                            luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
        for (int j = 1; j <= n_keys; j++) {
          lua_rawgeti(L, order, j);
          if (lua_rawequal(L, -1, -2))
            return luaL_error(L, "wb.grid: order names '%s' twice", lua_tostring(L, -2));
          lua_pop(L, 1);
        }
        lua_rawseti(L, order, ++n_keys);
      }
    }
    lua_pop(L, 1);
  }
  lua_Integer n_sorted = luaL_len(L, sorted);
  for (lua_Integer i = 1; i <= n_sorted; i++) {
    lua_rawgeti(L, sorted, i);
    int seen = 0;
    for (int j = 1; j <= n_keys && !seen; j++) {
      lua_rawgeti(L, order, j);
      seen = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    if (seen)
      lua_pop(L, 1);
    else
      lua_rawseti(L, order, ++n_keys);
  }
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      return luaL_error(L, "wb.grid: keys must be strings (got a %s key)", luaL_typename(L, -2));
    lua_pop(L, 1);
  }
  /* lists: a non-table value is a list of one */
  lua_newtable(L);
  int lists = lua_gettop(L);
  double total = 1;
  lua_Integer len[64];
  if (n_keys > 64) return luaL_error(L, "wb.grid: more than 64 keys");
  for (int k = 1; k <= n_keys; k++) {
    lua_rawgeti(L, order, k);
    lua_gettable(L, 1);
    if (!lua_istable(L, -1)) {
      lua_createtable(L, 1, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
    }
    len[k - 1] = luaL_len(L, -1);
    if (len[k - 1] == 0) {
      lua_rawgeti(L, order, k);
      return luaL_error(L, "wb.grid: %s has no values", lua_tostring(L, -1));
    }
    total *= (double)len[k - 1];
    lua_rawseti(L, lists, k);
  }
  if (total > 1e7) return luaL_error(L, "wb.grid: %.0f points is too many (limit 10^7)", total);
  lua_Integer n_points = (lua_Integer)total;
  lua_createtable(L, (int)n_points, 0);
  int out = lua_gettop(L);
  for (lua_Integer p = 0; p < n_points; p++) {
    lua_createtable(L, 0, n_keys);
    lua_Integer rest = p;
    for (int k = n_keys; k >= 1; k--) { /* the last key varies fastest */
      lua_Integer idx = rest % len[k - 1];
      rest /= len[k - 1];
      lua_rawgeti(L, order, k);
      lua_rawgeti(L, lists, k);
      lua_rawgeti(L, -1, idx + 1);
      lua_remove(L, -2);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, out, p + 1);
  }
  return 1;
}

static const luaL_Reg args_funcs[] = {
    {"args", lwb_args},
    {"grid", lwb_grid},
    {NULL, NULL},
};

void wb_lua_open_args(lua_State *L) { luaL_setfuncs(L, args_funcs, 0); }
