/* bench/lua_run.c: experiments and runs in Lua, and the host side of `wb run` (host.h).
 *
 *   local run <close> = wb.experiment { name = "mnist", params = opt }
 *   run:log(step, { ["train/loss"] = loss })   run:tag(k, v)   run:artifact(path [, kind])
 *   run:finish([status [, error]])   run:id()   run:status()   run:sweep(points, fn)
 *
 * wb.experiment{name = experiment (default "default"), params = {...}, run_name = (default: the
 * script's file name without .lua), tags = {...}} begins a run. Its params are every wb.args
 * option, then the given params (which win), as text (wb_lua_value_text); its seed is the
 * integer param "seed", or else the default generator's seed at that moment, added as param
 * "seed". Recorded with it: script path and SHA-256, git commit and dirty flag of the script's
 * repository, host, CPU model, threads, device "cpu", wb version, and tag wb.command; at the
 * end, wall time and peak resident memory.
 *
 * A run is a wb.Run userdata: created closed (id 0), then begun in the store. Until it ends it
 * is anchored in the registry table OPEN_RUNS, so the collector cannot take it and the host can
 * end it when the script stops: __close ends it FINISHED, or FAILED with the error object the
 * scope exits with (KILLED when a signal caused the exit); a run never closed is ended by
 * wb_lua_run_detach with the script's outcome.
 *
 * Interrupts (Lua's lua.c idea): SIGINT/SIGTERM set a flag and install a count hook that raises
 * "interrupted by SIGINT" at the next Lua instruction; the hook stays installed, so a pcall in
 * the script cannot swallow the interrupt. C functions of the run side check the flag too.
 * os.exit(code) in a script unwinds the same way (runs end, metrics are flushed), then the
 * host exits with code: FINISHED for 0 (or true), FAILED "os.exit(code)" otherwise.
 *
 * Sweeps: run:sweep(points, fn) makes one child run per point (parent_id = run), seeds the
 * default generator with the point's seed (or the run's) and calls fn(point, child). A point
 * whose fn raises an error is recorded FAILED and the sweep goes on. Resuming: the earlier
 * sweep parents are the runs of the same experiment with the same script path (as given), the
 * same parent and exactly the same params as this run; a point that has a FINISHED child under
 * one of them (wb_store_sweep_find: the child's params include the point's values as text) is
 * skipped. So re-running a killed sweep with the same command finishes only what is missing.
 * A child's params are the parent's overridden by the point's; its name is "k1=v1,k2=v2" (keys
 * sorted). The default generator is restored after the sweep. run:sweep returns {ran =,
 * skipped =, failed =, runs = {child run id per point, the earlier run for a skipped one}}.
 */
#include "host.h"
#include "wb_lua.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WB_RUN_MT "wb.Run"
#define OPEN_RUNS "wb.open_runs"         /* registry: set of run userdata still RUNNING */
#define ARGS_RESOLVED "wb.args.resolved" /* registry: name -> value of every wb.args option */

static wb_host default_host;
static wb_host *host = &default_host;
static wb_store *store; /* opened on first use, closed by wb_lua_run_detach */
static lua_State *main_L;
static volatile sig_atomic_t interrupted;
static char help_stop; /* its address is the help stop raised by wb.args under --help */
static char exit_stop; /* its address is raised by os.exit(code), whose code is kept here */
static int exit_code;
static int exiting; /* os.exit was called: the exit stop is raised again until the host has it */
static struct {
  int probed, have, dirty;
  char commit[64];
} git;

wb_host *wb_lua_run_host(void) { return host; }

/* ---------------------------------------------------------------- interrupts and errors */

static const char *signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

int wb_lua_run_interrupted(void) { return interrupted; }

int wb_lua_run_check_interrupt(lua_State *L) {
  if (interrupted) return luaL_error(L, "interrupted by %s", signal_name(interrupted));
  return 0;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  wb_lua_run_check_interrupt(L);
  if (exiting) {
    lua_pushlightuserdata(L, &exit_stop);
    lua_error(L);
  }
}

static void on_signal(int sig) {
  if (!interrupted) interrupted = sig;
  /* lua_sethook is safe in a signal handler (lua.c does the same) */
  if (main_L) lua_sethook(main_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void set_handlers(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  /* a second signal kills the process at once (the store marks the run FAILED on next open) */
  sa.sa_flags = handler == SIG_DFL ? 0 : SA_RESETHAND;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int wb_lua_run_is_help(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == &help_stop;
}

int wb_lua_run_raise_help(lua_State *L) {
  lua_pushlightuserdata(L, &help_stop);
  return lua_error(L);
}

int wb_lua_run_exit_code(lua_State *L, int idx) {
  if (!lua_islightuserdata(L, idx) || lua_touserdata(L, idx) != &exit_stop) return -1;
  return exit_code;
}

/* os.exit([code [, close]]) in a script: unwinds like an error so that runs end and the store
 * is flushed; the host then exits with code (true: 0, false: 1). */
static int los_exit(lua_State *L) {
  if (lua_isboolean(L, 1))
    exit_code = lua_toboolean(L, 1) ? 0 : 1;
  else
    exit_code = (int)luaL_optinteger(L, 1, 0);
  /* like an interrupt, a pcall in the script cannot stop the exit */
  exiting = 1;
  lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  if (main_L && main_L != L) /* called in a coroutine: the main thread stops too */
    lua_sethook(main_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  lua_pushlightuserdata(L, &exit_stop);
  return lua_error(L);
}

int wb_lua_traceback(lua_State *L) {
  if (wb_lua_run_is_help(L, 1) || wb_lua_run_exit_code(L, 1) >= 0) return 1;
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* ---------------------------------------------------------------- the store */

wb_store *wb_lua_run_store(lua_State *L) {
  if (store) return store;
  const char *path = host->db_path && *host->db_path ? host->db_path : WB_STORE_DEFAULT_PATH;
  wb_store_options o = {0};
  const char *bt = getenv("WB_BUSY_TIMEOUT_MS");
  if (bt && *bt) o.busy_timeout_ms = atoi(bt);
  char err[1024];
  if (wb_store_open_opts(&store, path, &o, err, sizeof err) != WB_OK) {
    store = NULL;
    luaL_error(L, "%s", err);
    return NULL; /* not reached: luaL_error does not return */
  }
  return store;
}

/* ---------------------------------------------------------------- value text */

const char *wb_lua_value_text(lua_State *L, int idx) {
  char buf[64];
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
    else
      wb_host_fmt_number(buf, sizeof buf, lua_tonumber(L, idx));
    return lua_pushstring(L, buf);
  case LUA_TBOOLEAN:
    return lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
  case LUA_TSTRING:
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1);
  default:
    return NULL;
  }
}

static int kv_cmp(const void *a, const void *b) {
  return strcmp(((const wb_kv *)a)->key, ((const wb_kv *)b)->key);
}

/* Pushes a table key -> text of the entries of the table at t (string keys only; values as
 * wb_lua_value_text), and above it a scratch userdata holding the entries as wb_kv sorted by
 * key, pointing into the table's strings (valid while the table is on the stack). what names
 * the caller in error messages. */

static wb_kv *push_kvs(lua_State *L, int t, int64_t *n_out, const char *what) {
  t = lua_absindex(L, t);
  lua_newtable(L);
  int texts = lua_gettop(L);
  int64_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s: keys must be strings (got a %s key)", what, luaL_typename(L, -2));
    if (!wb_lua_value_text(L, -1))
      luaL_error(L, "%s: %s must be a number, boolean or string (got a %s)", what,
                 lua_tostring(L, -2), luaL_typename(L, -1));
    lua_pushvalue(L, -3);
    lua_insert(L, -2);
    lua_rawset(L, texts);
    lua_pop(L, 1);
    n++;
  }
  wb_kv *kv = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *kv, 0);
  int64_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, texts)) {
    kv[i].key = lua_tostring(L, -2);
    kv[i].value = lua_tostring(L, -1);
    i++;
    lua_pop(L, 1);
  }
  qsort(kv, (size_t)n, sizeof *kv, kv_cmp);
  *n_out = n;
  return kv;
}

/* "lr=0.1,seed=2" from sorted entries: a sweep child's name. Pushes it. */
static const char *push_label(lua_State *L, const wb_kv *kv, int64_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int64_t i = 0; i < n; i++) {
    if (i) luaL_addchar(&b, ',');
    luaL_addstring(&b, kv[i].key);
    luaL_addchar(&b, '=');
    luaL_addstring(&b, kv[i].value);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* ---------------------------------------------------------------- the run userdata */

typedef struct lrun {
  int64_t id; /* 0: closed (never begun) */
  int open;   /* 1 while RUNNING in the store */
  wb_run_status status;
  double t0; /* monotonic start, for wall_s */
  int64_t seed;
} lrun;

static lrun *checkrun(lua_State *L, int idx) { return luaL_checkudata(L, idx, WB_RUN_MT); }

static lrun *checkopen(lua_State *L, int idx, const char *what) {
  lrun *r = checkrun(L, idx);
  if (!r->open)
    luaL_error(L, "%s: run %d has ended (%s)", what, (int)r->id,
               r->id ? wb_run_status_name(r->status) : "never begun");
  return r;
}

/* The experiment name of the run userdata at idx (for messages; borrowed from its uservalue). */
static const char *run_name(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  lua_getfield(L, -1, "experiment");
  const char *name = lua_tostring(L, -1);
  lua_pop(L, 2); /* the string stays referenced by the uservalue */
  return name ? name : "?";
}

/* Text of an error object for the store's error column (pushes it). */
static const char *error_text(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return lua_pushstring(L, "error (no message)");
  if (wb_lua_run_is_help(L, idx)) return lua_pushstring(L, "stopped by --help");
  if (wb_lua_run_exit_code(L, idx) >= 0) return lua_pushfstring(L, "os.exit(%d)", exit_code);
  return luaL_tolstring(L, idx, NULL);
}

/* Ends run r (the userdata at idx) with st and msg and removes it from OPEN_RUNS. Returns the
 * store's code; the message is in wb_store_errmsg(store). */
static int end_run(lua_State *L, int idx, lrun *r, wb_run_status st, const char *msg) {
  if (!r->open) return WB_OK;
  idx = lua_absindex(L, idx);
  r->open = 0;
  r->status = st;
  int rc = wb_store_run_end(store, r->id, st, msg, wb_host_mono() - r->t0, -1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, OPEN_RUNS) == LUA_TTABLE) {
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  return rc;
}

static void probe_git(void) {
  if (git.probed) return;
  git.probed = 1;
  if (!host->script) return;
  char dir[4096];
  wb_host_dirname(host->script, dir, sizeof dir);
  git.have = wb_host_git(dir, git.commit, sizeof git.commit, &git.dirty) == 0;
}

/* Begins a run and pushes its userdata. params is the index of a table key -> text (written
 * as the run's params); tags (0: none) a table of extra tags. */
static lrun *push_run(lua_State *L, const char *experiment, const char *name, int64_t parent_id,
                      int params, int tags, int64_t seed) {
  params = lua_absindex(L, params);
  if (tags) tags = lua_absindex(L, tags);
  wb_store *s = wb_lua_run_store(L);
  lrun *r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r); /* closed until the store has begun it */
  luaL_setmetatable(L, WB_RUN_MT);
  int ud = lua_gettop(L);
  lua_createtable(L, 0, 3); /* uservalue: what a sweep needs to make children */
  lua_pushstring(L, experiment);
  lua_setfield(L, -2, "experiment");
  lua_pushvalue(L, params);
  lua_setfield(L, -2, "params");
  lua_setiuservalue(L, ud, 1);

  probe_git();
  wb_run_info info = {
      .experiment = experiment,
      .name = name,
      .parent_id = parent_id,
      .script = host->script,
      .script_sha256 = host->script_sha256,
      .git_commit = git.have ? git.commit : NULL,
      .git_dirty = git.dirty,
      .threads = nn_get_num_threads(),
      .device = "cpu",
      .wb_version = WB_VERSION_STRING,
      .has_seed = 1,
      .seed = seed,
  };
  int64_t id = 0;
  if (wb_store_run_begin(s, &info, &id) != WB_OK) luaL_error(L, "%s", wb_store_errmsg(s));
  r->id = id;
  r->open = 1;
  r->status = WB_RUN_RUNNING;
  r->t0 = wb_host_mono();
  r->seed = seed;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, OPEN_RUNS);
  lua_pushvalue(L, ud);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  /* from here an error leaves the run open and anchored: the host ends it FAILED */
  lua_pushnil(L);
  while (lua_next(L, params)) {
    if (wb_store_param_set(s, id, lua_tostring(L, -2), lua_tostring(L, -1)) != WB_OK)
      luaL_error(L, "%s", wb_store_errmsg(s));
    lua_pop(L, 1);
  }
  if (host->command && wb_store_tag_set(s, id, "wb.command", host->command) != WB_OK)
    luaL_error(L, "%s", wb_store_errmsg(s));
  /* the BLAS kernels behind every matrix product: timings depend on them */
  if (wb_store_tag_set(s, id, "wb.blas", nn_blas_core()) != WB_OK)
    luaL_error(L, "%s", wb_store_errmsg(s));
  if (tags) {
    int64_t n;
    wb_kv *kv = push_kvs(L, tags, &n, "wb.experiment: tags");
    for (int64_t i = 0; i < n; i++)
      if (wb_store_tag_set(s, id, kv[i].key, kv[i].value) != WB_OK)
        luaL_error(L, "%s", wb_store_errmsg(s));
    lua_pop(L, 2);
  }
  lua_settop(L, ud);
  return r;
}

/* Parses the text at the top as an int64 seed; 1 on success. */
static int text_seed(lua_State *L, int idx, int64_t *seed) {
  const char *t = lua_tostring(L, idx);
  if (!t) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(t, &end, 10);
  if (errno || end == t || *end) return 0;
  *seed = v;
  return 1;
}

static const char *const experiment_fields[] = {"name", "params", "run_name", "tags", NULL};

static void check_fields(lua_State *L, int t, const char *what, const char *const *known) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; known[i] && !ok; i++) ok = !strcmp(lua_tostring(L, -2), known[i]);
    if (!ok) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int i = 0; known[i]; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, known[i]);
      }
      luaL_pushresult(&b);
      luaL_error(L, "%s: unknown field '%s'; known fields: %s", what,
                 lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : luaL_typename(L, -3),
                 lua_tostring(L, -1));
    }
    lua_pop(L, 1);
  }
}

static const char *script_stem(lua_State *L) {
  if (!host->script) return lua_pushstring(L, "");
  const char *base = strrchr(host->script, '/');
  base = base ? base + 1 : host->script;
  size_t n = strlen(base);
  if (n > 4 && !strcmp(base + n - 4, ".lua")) n -= 4;
  return lua_pushlstring(L, base, n);
}

static int lwb_experiment(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_fields(L, 1, "wb.experiment", experiment_fields);
  if (host->script && !host->args_called) {
    if (host->help) {
      printf("%s declares no options (wb.args)\n", host->script);
      return wb_lua_run_raise_help(L);
    }
    if (host->n_opts > 0)
      return luaL_error(L,
                        "wb.experiment: option --%s was given but the script declares no "
                        "options (call wb.args{...} before wb.experiment)",
                        host->opts[0].name);
  }
  lua_getfield(L, 1, "name");
  const char *experiment = luaL_optstring(L, -1, "default");
  if (!*experiment) return luaL_error(L, "wb.experiment: name must not be empty");
  lua_getfield(L, 1, "run_name");
  const char *name = lua_isnil(L, -1) ? script_stem(L) : luaL_checkstring(L, -1);
  /* params: every wb.args option, then the given params (which win), as text */
  lua_newtable(L);
  int merged = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, ARGS_RESOLVED) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, merged);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "params");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "params to be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, merged);
    }
  }
  lua_pop(L, 1);
  int64_t n;
  push_kvs(L, merged, &n, "wb.experiment: params");
  lua_pop(L, 1); /* the sorted array; the text table stays */
  int texts = lua_gettop(L);
  /* the seed: the "seed" param, else the default generator's seed (recorded as a param) */
  int64_t seed = 0;
  lua_getfield(L, texts, "seed");
  if (lua_isnil(L, -1) || !text_seed(L, -1, &seed)) {
    if (!lua_isnil(L, -1))
      return luaL_error(L, "wb.experiment: param seed must be an integer (got %s)",
                        lua_tostring(L, -1));
    seed = (int64_t)nn_default_rng()->seed;
    lua_pushfstring(L, "%I", (lua_Integer)seed);
    lua_setfield(L, texts, "seed");
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "tags");
  int tags = 0;
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "tags to be a table");
    tags = lua_gettop(L);
  }
  push_run(L, experiment, name, 0, texts, tags, seed);
  return 1;
}

/* ---------------------------------------------------------------- run methods */

static int lrun_id(lua_State *L) {
  lua_pushinteger(L, checkrun(L, 1)->id);
  return 1;
}

static int lrun_status(lua_State *L) {
  lrun *r = checkrun(L, 1);
  lua_pushstring(L, r->id ? wb_run_status_name(r->status) : "CLOSED");
  return 1;
}

/* run:log(step, {key = value, ...}): values are numbers (NaN and inf kept), booleans (1/0) or
 * one-element tensors. */
static int lrun_log(lua_State *L) {
  wb_lua_run_check_interrupt(L);
  lrun *r = checkopen(L, 1, "run:log");
  lua_Integer step = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      return luaL_error(L, "run:log: metric keys must be strings (got a %s key)",
                        luaL_typename(L, -2));
    const char *key = lua_tostring(L, -2);
    double v;
    nn_tensor *t;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      v = lua_tonumber(L, -1);
    } else if (lua_isboolean(L, -1)) {
      v = lua_toboolean(L, -1);
    } else if ((t = wb_lua_totensor(L, -1)) != NULL) {
      if (nn_tensor_numel(t) != 1)
        return luaL_error(L,
                          "run:log: %s is a tensor of %d elements; log a number or a "
                          "one-element tensor",
                          key, (int)nn_tensor_numel(t));
      if (nn_tensor_item(t, &v) != NN_OK) return wb_lua_nnerror(L);
    } else {
      return luaL_error(L, "run:log: %s must be a number (got a %s)", key, luaL_typename(L, -1));
    }
    if (wb_store_metric_log(store, r->id, key, step, v) != WB_OK)
      return luaL_error(L, "run:log: %s", wb_store_errmsg(store));
    lua_pop(L, 1);
  }
  return 0;
}

static int lrun_tag(lua_State *L) {
  lrun *r = checkrun(L, 1);
  if (!r->id) return luaL_error(L, "run:tag: the run was never begun");
  const char *key = luaL_checkstring(L, 2);
  const char *value = wb_lua_value_text(L, 3);
  if (!value) return luaL_typeerror(L, 3, "number, boolean or string");
  if (wb_store_tag_set(store, r->id, key, value) != WB_OK)
    return luaL_error(L, "run:tag: %s", wb_store_errmsg(store));
  return 0;
}

static int lrun_artifact(lua_State *L) {
  lrun *r = checkrun(L, 1);
  if (!r->id) return luaL_error(L, "run:artifact: the run was never begun");
  const char *path = luaL_checkstring(L, 2);
  const char *kind = luaL_optstring(L, 3, "");
  if (wb_store_artifact_add(store, r->id, path, kind) != WB_OK)
    return luaL_error(L, "run:artifact: %s", wb_store_errmsg(store));
  return 0;
}

/* run:finish([status [, error]]): status FINISHED (default), FAILED or KILLED. */
static int lrun_finish(lua_State *L) {
  lrun *r = checkopen(L, 1, "run:finish");
  wb_run_status st = WB_RUN_FINISHED;
  if (!lua_isnoneornil(L, 2)) {
    char err[256];
    if (wb_run_status_parse(&st, luaL_checkstring(L, 2), err, sizeof err) != WB_OK ||
        st == WB_RUN_RUNNING)
      return luaL_argerror(L, 2, "status must be FINISHED, FAILED or KILLED");
  }
  const char *msg = luaL_optstring(L, 3, NULL);
  if (end_run(L, 1, r, st, msg) != WB_OK)
    return luaL_error(L, "run:finish: %s", wb_store_errmsg(store));
  return 0;
}

/* __close(run, err): FINISHED on a normal exit, FAILED (KILLED after a signal) on an error. */
static int lrun_close(lua_State *L) {
  lrun *r = checkrun(L, 1);
  if (!r->open) return 0;
  int failed = !lua_isnoneornil(L, 2) && wb_lua_run_exit_code(L, 2) != 0;
  wb_run_status st = !failed ? WB_RUN_FINISHED : interrupted ? WB_RUN_KILLED : WB_RUN_FAILED;
  const char *msg = failed ? error_text(L, 2) : NULL;
  if (end_run(L, 1, r, st, msg) != WB_OK) {
    if (!failed) return luaL_error(L, "ending run %d: %s", (int)r->id, wb_store_errmsg(store));
    /* an error is already on its way out: report this one without replacing it */
    fprintf(stderr, "wb: ending run %d: %s\n", (int)r->id, wb_store_errmsg(store));
  } else if (failed) {
    fprintf(stderr, "wb: run %d (%s) ended %s\n", (int)r->id, run_name(L, 1),
            wb_run_status_name(st));
  }
  return 0;
}

/* The collector reaches an open run only when the state closes without wb_lua_run_detach. */
static int lrun_gc(lua_State *L) {
  lrun *r = checkrun(L, 1);
  if (r->open && store) {
    r->open = 0;
    wb_store_run_end(store, r->id, WB_RUN_FAILED, "the Lua state was closed with the run open",
                     wb_host_mono() - r->t0, -1);
  }
  return 0;
}

static int lrun_tostring(lua_State *L) {
  lrun *r = checkrun(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_getfield(L, -1, "experiment");
  lua_pushfstring(L, "wb.Run(%I, %s, %s)", (lua_Integer)r->id,
                  lua_isstring(L, -1) ? lua_tostring(L, -1) : "?",
                  r->id ? wb_run_status_name(r->status) : "CLOSED");
  return 1;
}

/* ---------------------------------------------------------------- sweeps */

/* Pushes an array of the ids of earlier sweep parents matching run p (see the file header),
 * newest first. */
static void push_prev_parents(lua_State *L, lrun *p, const char *experiment, int params) {
  lua_newtable(L);
  wb_run_list *list = NULL;
  wb_run_detail *self = NULL;
  int rc = wb_store_run_get(store, p->id, &self);
  if (rc == WB_OK) rc = wb_store_runs_list(store, experiment, WB_RUN_ANY, &list);
  int64_t n_found = 0, n_self = 0;
  lua_pushnil(L);
  while (lua_next(L, params)) {
    lua_pop(L, 1);
    n_self++;
  }
  for (int64_t i = list ? list->n - 1 : -1; rc == WB_OK && i >= 0; i--) {
    const wb_run *c = &list->runs[i];
    if (c->id == p->id || c->info.parent_id != self->run.info.parent_id ||
        strcmp(c->info.script, host->script ? host->script : "") != 0)
      continue;
    wb_run_detail *d = NULL;
    rc = wb_store_run_get(store, c->id, &d);
    if (rc != WB_OK) break;
    int same = d->n_params == n_self;
    for (int64_t j = 0; same && j < d->n_params; j++) {
      lua_getfield(L, params, d->params[j].key);
      same = lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), d->params[j].value);
      lua_pop(L, 1);
    }
    wb_run_detail_free(d);
    if (same) {
      lua_pushinteger(L, c->id);
      lua_rawseti(L, -2, ++n_found);
    }
  }
  wb_run_list_free(list);
  wb_run_detail_free(self);
  if (rc != WB_OK) luaL_error(L, "run:sweep: %s", wb_store_errmsg(store));
}

/* run:sweep(points, fn) -> {ran =, skipped =, failed =, runs = {child id per point}} */
static int lrun_sweep(lua_State *L) {
  lrun *p = checkopen(L, 1, "run:sweep");
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_getiuservalue(L, 1, 1);
  lua_getfield(L, 4, "experiment");
  const char *experiment = lua_tostring(L, 5);
  lua_getfield(L, 4, "params");
  int parent_params = 6;
  push_prev_parents(L, p, experiment, parent_params);
  int prev = 7;
  lua_Integer n_prev = luaL_len(L, prev);
  if (n_prev > 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (lua_Integer k = 1; k <= n_prev; k++) {
      lua_geti(L, prev, k);
      if (k > 1) luaL_addchar(&b, ',');
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    wb_store_tag_set(store, p->id, "wb.sweep_resumes", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 4);
  int result = lua_gettop(L);
  lua_newtable(L);
  int runs = lua_gettop(L);
  int ran = 0, skipped = 0, failed = 0;
  lua_Integer n_points = luaL_len(L, 2);
  nn_rng saved_rng = *nn_default_rng(); /* restored after the sweep: seeding points is local */
  for (lua_Integer i = 1; i <= n_points; i++) {
    int base = lua_gettop(L);
    if (lua_geti(L, 2, i) != LUA_TTABLE)
      return luaL_error(L, "run:sweep: point %d is a %s, not a table", (int)i,
                        luaL_typename(L, -1));
    int point = base + 1;
    int64_t n_kv;
    char what[64];
    snprintf(what, sizeof what, "run:sweep: point %d", (int)i);
    wb_kv *kv = push_kvs(L, point, &n_kv, what);
    int point_texts = point + 1;
    const char *label = push_label(L, kv, n_kv);
    int64_t found = 0;
    for (lua_Integer k = 1; k <= n_prev && !found; k++) {
      lua_geti(L, prev, k);
      int64_t parent = lua_tointeger(L, -1);
      lua_pop(L, 1);
      if (wb_store_sweep_find(store, parent, kv, n_kv, &found) != WB_OK)
        return luaL_error(L, "run:sweep: %s", wb_store_errmsg(store));
    }
    if (found) {
      fprintf(stderr, "wb: sweep point %d/%d (%s) already FINISHED as run %lld: skipped\n", (int)i,
              (int)n_points, label, (long long)found);
      skipped++;
      lua_pushinteger(L, found);
      lua_rawseti(L, runs, i);
      lua_settop(L, base);
      continue;
    }
    /* the child's params: the parent's, overridden by the point's */
    lua_newtable(L);
    int child_params = lua_gettop(L);
    for (int src = parent_params; src; src = src == parent_params ? point_texts : 0) {
      lua_pushnil(L);
      while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, child_params);
      }
    }
    int64_t seed = p->seed;
    lua_getfield(L, point_texts, "seed");
    if (!lua_isnil(L, -1) && !text_seed(L, -1, &seed))
      return luaL_error(L, "run:sweep: point %d: seed must be an integer (got %s)", (int)i,
                        lua_tostring(L, -1));
    lua_pop(L, 1);
    push_run(L, experiment, label, p->id, child_params, 0, seed);
    int child = lua_gettop(L);
    lrun *c = checkrun(L, child);
    /* every point starts from its own seed, so a resumed sweep computes what a whole one would */
    nn_manual_seed((uint64_t)seed);
    lua_pushcfunction(L, wb_lua_traceback);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, point);
    lua_pushvalue(L, child);
    int rc = lua_pcall(L, 2, 0, child + 1);
    if (rc == LUA_OK) {
      if (end_run(L, child, c, WB_RUN_FINISHED, NULL) != WB_OK)
        return luaL_error(L, "run:sweep: %s", wb_store_errmsg(store));
      ran++;
    } else if (interrupted || wb_lua_run_is_help(L, -1) || wb_lua_run_exit_code(L, -1) >= 0) {
      int code = wb_lua_run_exit_code(L, -1);
      const char *msg = code == 0 ? NULL : error_text(L, -1);
      end_run(L, child, c,
              interrupted ? WB_RUN_KILLED
              : code == 0 ? WB_RUN_FINISHED
                          : WB_RUN_FAILED,
              msg);
      if (msg) lua_pop(L, 1);
      return lua_error(L); /* the interrupt goes on to the host */
    } else {
      const char *msg = error_text(L, -1);
      int was_open = c->open;
      if (was_open && end_run(L, child, c, WB_RUN_FAILED, msg) != WB_OK)
        return luaL_error(L, "run:sweep: %s", wb_store_errmsg(store));
      size_t line = strcspn(msg, "\n");
      fprintf(stderr, "wb: sweep point %d/%d (%s) failed as run %lld: %.*s\n", (int)i,
              (int)n_points, label, (long long)c->id, (int)line, msg);
      failed++;
    }
    lua_pushinteger(L, c->id);
    lua_rawseti(L, runs, i);
    lua_settop(L, base);
  }
  *nn_default_rng() = saved_rng;
  char summary[128];
  snprintf(summary, sizeof summary, "%d points: %d ran, %d skipped, %d failed", (int)n_points, ran,
           skipped, failed);
  if (wb_store_tag_set(store, p->id, "wb.sweep", summary) != WB_OK)
    return luaL_error(L, "run:sweep: %s", wb_store_errmsg(store));
  lua_pushvalue(L, runs);
  lua_setfield(L, result, "runs");
  lua_pushinteger(L, ran);
  lua_setfield(L, result, "ran");
  lua_pushinteger(L, skipped);
  lua_setfield(L, result, "skipped");
  lua_pushinteger(L, failed);
  lua_setfield(L, result, "failed");
  lua_settop(L, result);
  return 1;
}

static const luaL_Reg run_methods[] = {
    {"log", lrun_log},       {"tag", lrun_tag}, {"artifact", lrun_artifact},
    {"finish", lrun_finish}, {"id", lrun_id},   {"status", lrun_status},
    {"sweep", lrun_sweep},   {NULL, NULL},
};

static const luaL_Reg run_meta[] = {
    {"__close", lrun_close},
    {"__gc", lrun_gc},
    {"__tostring", lrun_tostring},
    {NULL, NULL},
};

/* ---------------------------------------------------------------- host interface */

void wb_lua_run_attach(lua_State *L, wb_host *h) {
  host = h ? h : &default_host;
  main_L = L;
  interrupted = 0;
  exiting = 0;
  set_handlers(on_signal);
  if (lua_getglobal(L, "os") == LUA_TTABLE) {
    lua_pushcfunction(L, los_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
}

int wb_lua_run_detach(lua_State *L, wb_run_status status, const char *error) {
  int bad = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, OPEN_RUNS) == LUA_TTABLE) {
    int open = lua_gettop(L);
    /* collect first: end_run edits the table */
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, open)) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_rawseti(L, list, ++n);
    }
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, list, i);
      lrun *r = checkrun(L, -1);
      if (end_run(L, -1, r, status, error) != WB_OK) {
        fprintf(stderr, "wb: ending run %lld: %s\n", (long long)r->id, wb_store_errmsg(store));
        bad = 1;
      } else if (status != WB_RUN_FINISHED) {
        fprintf(stderr, "wb: run %lld (%s) ended %s\n", (long long)r->id, run_name(L, -1),
                wb_run_status_name(status));
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_sethook(L, NULL, 0, 0);
  set_handlers(SIG_DFL);
  main_L = NULL;
  if (store && wb_store_flush(store) != WB_OK) {
    fprintf(stderr, "wb: %s\n", wb_store_errmsg(store));
    bad = 1;
  }
  wb_store_close(store);
  store = NULL;
  return bad ? -1 : 0;
}

static const luaL_Reg run_funcs[] = {
    {"experiment", lwb_experiment},
    {NULL, NULL},
};

void wb_lua_open_run(lua_State *L) {
  if (luaL_newmetatable(L, WB_RUN_MT)) {
    luaL_setfuncs(L, run_meta, 0);
    luaL_newlib(L, run_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, run_funcs, 0);
  wb_lua_open_args(L);
  wb_lua_open_progress(L);
  wb_lua_open_store(L);
}
