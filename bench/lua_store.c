/* bench/lua_store.c: reading the result store from Lua, and writing reports.
 *
 *   wb.store.path()                          the database this script records to
 *   wb.store.runs { experiment =, status = } array of runs (tables), oldest first
 *   wb.store.run(id)                         one run with params, tags, final metrics and
 *                                            artifacts; nil, msg when there is no such run
 *   wb.store.history(id, key)                { steps = {...}, values = {...} } of one metric
 *   wb.report { experiment = "name" or {...}, out = "results/report.html" }
 *                                            writes the HTML report and its Markdown twin
 *                                            (same name, .md); returns both paths
 * Values as stored: times in epoch ms, a NaN metric as NaN (0/0), unknown fields nil.
 */
#include "host.h"
#include "report.h"
#include "wb_lua.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static void set_str(lua_State *L, const char *key, const char *value) {
  if (!value || !*value) return;
  lua_pushstring(L, value);
  lua_setfield(L, -2, key);
}

static void set_int(lua_State *L, const char *key, int64_t value) {
  lua_pushinteger(L, value);
  lua_setfield(L, -2, key);
}

static void push_run(lua_State *L, const wb_run *r) {
  lua_createtable(L, 0, 24);
  set_int(L, "id", r->id);
  set_str(L, "experiment", r->info.experiment);
  set_str(L, "name", r->info.name);
  if (r->info.parent_id) set_int(L, "parent_id", r->info.parent_id);
  set_str(L, "status", wb_run_status_name(r->status));
  set_int(L, "start_ms", r->start_ms);
  if (r->end_ms) set_int(L, "end_ms", r->end_ms);
  if (r->wall_s >= 0) {
    lua_pushnumber(L, r->wall_s);
    lua_setfield(L, -2, "wall_s");
  }
  if (r->peak_rss_kb >= 0) set_int(L, "peak_rss_kb", r->peak_rss_kb);
  set_str(L, "script", r->info.script);
  set_str(L, "script_sha256", r->info.script_sha256);
  set_str(L, "git_commit", r->info.git_commit);
  if (r->info.git_dirty >= 0) {
    lua_pushboolean(L, r->info.git_dirty);
    lua_setfield(L, -2, "git_dirty");
  }
  set_str(L, "host", r->info.host);
  set_str(L, "cpu_model", r->info.cpu_model);
  if (r->info.threads) set_int(L, "threads", r->info.threads);
  set_str(L, "device", r->info.device);
  set_str(L, "wb_version", r->info.wb_version);
  if (r->info.has_seed) set_int(L, "seed", r->info.seed);
  if (r->info.pid) set_int(L, "pid", r->info.pid);
  set_str(L, "error", r->error);
}

static int lwb_store_path(lua_State *L) {
  lua_pushstring(L, wb_store_path(wb_lua_run_store(L)));
  return 1;
}

static int lwb_store_runs(lua_State *L) {
  wb_store *s = wb_lua_run_store(L);
  const char *experiment = NULL;
  wb_run_status st = WB_RUN_ANY;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "experiment");
    experiment = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "status");
    if (!lua_isnil(L, -1)) {
      char err[256];
      if (wb_run_status_parse(&st, luaL_checkstring(L, -1), err, sizeof err) != WB_OK)
        return luaL_error(L, "wb.store.runs: %s", err);
    }
  }
  wb_run_list *list = NULL;
  if (wb_store_runs_list(s, experiment, st, &list) != WB_OK)
    return luaL_error(L, "wb.store.runs: %s", wb_store_errmsg(s));
  /* only a memory error can interrupt the copy (and would leak the list) */
  lua_createtable(L, (int)list->n, 0);
  for (int64_t i = 0; i < list->n; i++) {
    push_run(L, &list->runs[i]);
    lua_rawseti(L, -2, i + 1);
  }
  wb_run_list_free(list);
  return 1;
}

static int lwb_store_run(lua_State *L) {
  wb_store *s = wb_lua_run_store(L);
  lua_Integer id = luaL_checkinteger(L, 1);
  wb_run_detail *d = NULL;
  int rc = wb_store_run_get(s, id, &d);
  if (rc == WB_ERR_NOTFOUND) {
    luaL_pushfail(L);
    lua_pushstring(L, wb_store_errmsg(s));
    return 2;
  }
  if (rc != WB_OK) return luaL_error(L, "wb.store.run: %s", wb_store_errmsg(s));
  push_run(L, &d->run);
  lua_createtable(L, 0, (int)d->n_params);
  for (int64_t i = 0; i < d->n_params; i++) {
    lua_pushstring(L, d->params[i].value);
    lua_setfield(L, -2, d->params[i].key);
  }
  lua_setfield(L, -2, "params");
  lua_createtable(L, 0, (int)d->n_tags);
  for (int64_t i = 0; i < d->n_tags; i++) {
    lua_pushstring(L, d->tags[i].value);
    lua_setfield(L, -2, d->tags[i].key);
  }
  lua_setfield(L, -2, "tags");
  lua_createtable(L, 0, (int)d->n_metrics);
  for (int64_t i = 0; i < d->n_metrics; i++) {
    lua_pushnumber(L, d->metrics[i].is_nan ? NAN : d->metrics[i].value);
    lua_setfield(L, -2, d->metrics[i].key);
  }
  lua_setfield(L, -2, "metrics");
  lua_createtable(L, (int)d->n_artifacts, 0);
  for (int64_t i = 0; i < d->n_artifacts; i++) {
    lua_createtable(L, 0, 3);
    set_str(L, "path", d->artifacts[i].path);
    set_str(L, "kind", d->artifacts[i].kind);
    set_int(L, "created_ms", d->artifacts[i].created_ms);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "artifacts");
  wb_run_detail_free(d);
  return 1;
}

static int lwb_store_history(lua_State *L) {
  wb_store *s = wb_lua_run_store(L);
  lua_Integer id = luaL_checkinteger(L, 1);
  const char *key = luaL_checkstring(L, 2);
  wb_metric_series *m = NULL;
  if (wb_store_metric_series(s, id, key, &m) != WB_OK)
    return luaL_error(L, "wb.store.history: %s", wb_store_errmsg(s));
  lua_createtable(L, 0, 2);
  lua_createtable(L, (int)m->n, 0);
  for (int64_t i = 0; i < m->n; i++) {
    lua_pushinteger(L, m->step[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "steps");
  lua_createtable(L, (int)m->n, 0);
  for (int64_t i = 0; i < m->n; i++) {
    lua_pushnumber(L, m->value[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "values");
  wb_metric_series_free(m);
  return 1;
}

/* wb.report{experiment = "e" or {"e1", "e2"} (nil: all), out = "results/report.html"} */
static int lwb_report(lua_State *L) {
  if (lua_isnoneornil(L, 1))
    lua_newtable(L);
  else
    luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "experiment") && strcmp(k, "out"))
      return luaL_error(L, "wb.report: unknown field '%s'; known fields: experiment, out", k);
    lua_pop(L, 1);
  }
  const char *names[64];
  int n = 0;
  lua_getfield(L, 1, "experiment"); /* 2 */
  if (lua_isstring(L, 2)) {
    names[n++] = lua_tostring(L, 2);
  } else if (lua_istable(L, 2)) {
    lua_Integer len = luaL_len(L, 2);
    if (len > 64) return luaL_error(L, "wb.report: more than 64 experiments");
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, 2, i); /* anchored by the table */
      if (!lua_isstring(L, -1)) return luaL_error(L, "wb.report: experiment names are strings");
      names[n++] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, 2)) {
    return luaL_error(L, "wb.report: experiment must be a name or a list of names");
  }
  lua_getfield(L, 1, "out"); /* 3 */
  const char *html = luaL_optstring(L, 3, "results/report.html");
  size_t len = strlen(html);
  if (len > 5 && !strcmp(html + len - 5, ".html"))
    lua_pushfstring(L, "%s.md", lua_pushlstring(L, html, len - 5));
  else
    lua_pushfstring(L, "%s.md", html);
  const char *md = lua_tostring(L, -1);
  wb_store *s = wb_lua_run_store(L);
  if (wb_store_flush(s) != WB_OK) return luaL_error(L, "wb.report: %s", wb_store_errmsg(s));
  if (wb_host_make_parents(html) != 0)
    return luaL_error(L, "wb.report: cannot create the directory of %s: %s", html, strerror(errno));
  char err[1024] = "";
  if (wb_report_write(s, names, n, html, md, err, sizeof err) != WB_OK)
    return luaL_error(L, "wb.report: %s", err);
  lua_pushstring(L, html);
  lua_pushstring(L, md);
  return 2;
}

static const luaL_Reg store_funcs[] = {
    {"path", lwb_store_path},
    {"runs", lwb_store_runs},
    {"run", lwb_store_run},
    {"history", lwb_store_history},
    {NULL, NULL},
};

void wb_lua_open_store(lua_State *L) {
  luaL_newlib(L, store_funcs);
  lua_setfield(L, -2, "store");
  lua_pushcfunction(L, lwb_report);
  lua_setfield(L, -2, "report");
}
