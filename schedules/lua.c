/* schedules/lua.c: the Lua face of schedules.h, `require "wb.schedules"` (also wb.schedules once
 * required).
 *
 *   local schedules = require "wb.schedules"
 *   local s = schedules.rex { base_lr = 0.1, total_steps = 1000, d = 0.5, warmup = 50, min_lr = 0 }
 *   s(0) --> 0.1 / 51 (warm-up)   s(50) --> 0.1   s(1000) --> 0
 *   for step = 0, 999 do s:apply(opt, step); ... opt:step() end
 *
 * One constructor per row of schedules_table (schedules.<name>{opts}), plus schedules.new(name,
 * opts); an unknown name, as a field or an argument, is an error listing the known ones.
 * Options: base_lr and total_steps (required), min_lr, warmup (steps) or warmup_frac (fraction
 * of the budget), every (sampling period in steps), milestones (list; multistep), and the
 * profile's knobs (numbers; integers for integer knobs; booleans for boolean knobs).
 *
 * A schedule is a wb.Schedule userdata holding a schedules_sched (created closed, released by
 * __gc and __close): s(step) / s:lr(step), s:fraction(step), s:apply(opt, step), s:observe(metric)
 * (plateau), s:rescale(total_steps), s:curve(n?), s:name(), s:total_steps(), s:options(),
 * s:state() (plateau), tostring(s). Steps are the schedule's own 0 .. total_steps (not shifted:
 * step 0 is the first update).
 */
#include "optim.h"
#include "schedules.h"
#include "wb_lua.h"

#include <math.h>
#include <string.h>

#define WB_SCHEDULE_MT "wb.Schedule"

typedef struct {
  schedules_sched *s;
} lsched;

static lsched *checksched(lua_State *L, int idx) {
  lsched *u = luaL_checkudata(L, idx, WB_SCHEDULE_MT);
  if (!u->s) luaL_argerror(L, idx, "schedule has been closed");
  return u;
}

/* Pushes a closed schedule userdata; the caller stores the schedule in it. */
static lsched *newsched(lua_State *L) {
  lsched *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->s = NULL;
  luaL_setmetatable(L, WB_SCHEDULE_MT);
  return u;
}

static int lsched_gc(lua_State *L) {
  lsched *u = luaL_checkudata(L, 1, WB_SCHEDULE_MT);
  schedules_sched_free(u->s);
  u->s = NULL;
  return 0;
}

/* Raises "unknown schedule 'x'; known schedules: ..." unless name is in the table. */
static const schedules_info *checkinfo(lua_State *L, const char *name) {
  const schedules_info *info;
  char err[640];
  if (schedules_lookup(&info, name, err, sizeof err) != SCHEDULES_OK) luaL_error(L, "%s", err);
  return info;
}

/* ---------------------------------------------------------------- construction */

static const char *const common_opts[] = {"base_lr",     "total_steps", "min_lr", "warmup",
                                          "warmup_frac", "every",       NULL};

/* Builds the schedule of row info from the options table at idx and pushes it. */
static int push_new(lua_State *L, const schedules_info *info, int idx) {
  const char *fn = info->name;
  const char *known[16];
  int n = 0;
  for (int i = 0; common_opts[i]; i++) known[n++] = common_opts[i];
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && info->knobs[i].name; i++)
    known[n++] = info->knobs[i].name;
  if (info->flags & SCHEDULES_MILESTONES) known[n++] = "milestones";
  known[n] = NULL;
  luaL_checktype(L, idx, LUA_TTABLE);
  wb_lua_checkopts(L, idx, fn, known);
  lua_getfield(L, idx, "base_lr");
  lua_getfield(L, idx, "total_steps");
  if (lua_isnil(L, -2) || lua_isnil(L, -1))
    return luaL_error(L, "%s: base_lr and total_steps are required", fn);
  lua_pop(L, 2);
  schedules_opts o;
  schedules_opts_init(&o, info, wb_lua_optnumber(L, idx, "base_lr", 0),
                      wb_lua_optinteger(L, idx, "total_steps", 0));
  o.min_lr = wb_lua_optnumber(L, idx, "min_lr", 0);
  o.every = wb_lua_optinteger(L, idx, "every", 1);
  lua_getfield(L, idx, "warmup");
  int has_warmup = !lua_isnil(L, -1);
  lua_pop(L, 1);
  o.warmup = wb_lua_optinteger(L, idx, "warmup", 0);
  double frac = wb_lua_optnumber(L, idx, "warmup_frac", -1);
  if (frac != -1) {
    if (has_warmup) return luaL_error(L, "%s: give warmup (steps) or warmup_frac, not both", fn);
    if (!(frac >= 0 && frac < 1))
      return luaL_error(L, "%s: warmup_frac must be in [0, 1) (got %f)", fn, frac);
    o.warmup_frac = frac;
    o.warmup = llround(frac * (double)o.total_steps);
  }
  char err[512];
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && info->knobs[i].name; i++) {
    const schedules_knob *k = &info->knobs[i];
    double v = k->flags & SCHEDULES_KNOB_BOOL ? wb_lua_optboolean(L, idx, k->name, k->def != 0)
               : k->flags & SCHEDULES_KNOB_INT
                   ? (double)wb_lua_optinteger(L, idx, k->name, (lua_Integer)k->def)
                   : wb_lua_optnumber(L, idx, k->name, k->def);
    if (schedules_opts_set(&o, info, k->name, v, err, sizeof err)) return luaL_error(L, "%s", err);
  }
  if (info->flags & SCHEDULES_MILESTONES) {
    int t = lua_getfield(L, idx, "milestones");
    if (t != LUA_TNIL) {
      if (t != LUA_TTABLE) return luaL_error(L, "%s: milestones must be a list of fractions", fn);
      lua_Integer len = luaL_len(L, -1);
      if (len > SCHEDULES_MAX_MILESTONES)
        return luaL_error(L, "%s: at most %d milestones", fn, SCHEDULES_MAX_MILESTONES);
      o.n_milestones = (int)len;
      for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, -1, i);
        int isnum;
        o.milestones[i - 1] = lua_tonumberx(L, -1, &isnum);
        if (!isnum) return luaL_error(L, "%s: milestone %d is not a number", fn, (int)i);
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lsched *u = newsched(L);
  if (schedules_sched_new(&u->s, info, &o, err, sizeof err)) return luaL_error(L, "%s", err);
  return 1;
}

/* schedules.<name>{opts}: the row is the upvalue */
static int lschedules_sched_new_row(lua_State *L) {
  return push_new(L, lua_touserdata(L, lua_upvalueindex(1)), 1);
}

/* schedules.new(name, {opts}) */
static int lschedules_sched_new(lua_State *L) {
  const schedules_info *info = checkinfo(L, luaL_checkstring(L, 1));
  return push_new(L, info, 2);
}

/* ---------------------------------------------------------------- the table */

/* schedules.names() -> {"constant", ...} in table order */
static int lschedules_names(lua_State *L) {
  lua_newtable(L);
  int i = 0;
  for (const schedules_info *p = schedules_table; p->name; p++) {
    lua_pushstring(L, p->name);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* schedules.info(name) -> {name=, formula=, monotone=, ends_at_0=, metric=, milestones=,
 * knobs = {{name=, default=, lo=, hi=, integer=, boolean=, doc=}, ...}} */
static int lschedules_info(lua_State *L) {
  const schedules_info *p = checkinfo(L, luaL_checkstring(L, 1));
  lua_createtable(L, 0, 7);
  lua_pushstring(L, p->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, p->formula);
  lua_setfield(L, -2, "formula");
  lua_pushboolean(L, p->flags & SCHEDULES_MONOTONE);
  lua_setfield(L, -2, "monotone");
  lua_pushboolean(L, p->flags & SCHEDULES_ENDS_AT_0);
  lua_setfield(L, -2, "ends_at_0");
  lua_pushboolean(L, p->flags & SCHEDULES_METRIC);
  lua_setfield(L, -2, "metric");
  lua_pushboolean(L, p->flags & SCHEDULES_MILESTONES);
  lua_setfield(L, -2, "milestones");
  lua_newtable(L);
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && p->knobs[i].name; i++) {
    const schedules_knob *k = &p->knobs[i];
    lua_createtable(L, 0, 7);
    lua_pushstring(L, k->name);
    lua_setfield(L, -2, "name");
    if (k->flags & SCHEDULES_KNOB_BOOL)
      lua_pushboolean(L, k->def != 0);
    else if (k->flags & SCHEDULES_KNOB_INT)
      lua_pushinteger(L, (lua_Integer)k->def);
    else
      lua_pushnumber(L, k->def);
    lua_setfield(L, -2, "default");
    lua_pushnumber(L, k->lo);
    lua_setfield(L, -2, "lo");
    lua_pushnumber(L, k->hi);
    lua_setfield(L, -2, "hi");
    lua_pushboolean(L, k->flags & SCHEDULES_KNOB_INT);
    lua_setfield(L, -2, "integer");
    lua_pushboolean(L, k->flags & SCHEDULES_KNOB_BOOL);
    lua_setfield(L, -2, "boolean");
    lua_pushstring(L, k->doc);
    lua_setfield(L, -2, "doc");
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "knobs");
  return 1;
}

/* wb.schedules.<unknown> */
static int lschedules_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  char names[512];
  schedules_names(names, sizeof names);
  return luaL_error(L, "wb.schedules: unknown schedule '%s'; known schedules: %s", k ? k : "?",
                    names);
}

/* ---------------------------------------------------------------- schedule methods */

static int64_t checkstep(lua_State *L, int arg, const schedules_sched *s) {
  lua_Integer step = luaL_checkinteger(L, arg);
  int64_t T = schedules_sched_opts(s)->total_steps;
  if (step < 0 || step > T)
    luaL_argerror(
        L, arg,
        lua_pushfstring(L, "step %I is outside 0 .. total_steps (%I)", step, (lua_Integer)T));
  return step;
}

/* s(step), s:lr(step) */
static int lschedules_sched_lr(lua_State *L) {
  lsched *u = checksched(L, 1);
  lua_pushnumber(L, schedules_sched_lr(u->s, checkstep(L, 2, u->s)));
  return 1;
}

/* s:fraction(step): f(z) times the plateau scale (the ramp during warm-up) */
static int lschedules_sched_fraction(lua_State *L) {
  lsched *u = checksched(L, 1);
  lua_pushnumber(L, schedules_sched_fraction(u->s, checkstep(L, 2, u->s)));
  return 1;
}

/* s:apply(opt, step) -> lr: sets every group of the optimizer to the lr at step */
static int lschedules_sched_apply(lua_State *L) {
  lsched *u = checksched(L, 1);
  nn_optim *o = wb_lua_checkoptim(L, 2);
  double lr = schedules_sched_lr(u->s, checkstep(L, 3, u->s));
  nn_optim_set_lr(o, lr);
  lua_pushnumber(L, lr);
  return 1;
}

/* s:observe(metric) -> reduced (boolean) */
static int lschedules_sched_observe(lua_State *L) {
  lsched *u = checksched(L, 1);
  double m = luaL_checknumber(L, 2);
  int reduced;
  char err[256];
  if (schedules_sched_observe(u->s, m, &reduced, err, sizeof err)) return luaL_error(L, "%s", err);
  lua_pushboolean(L, reduced);
  return 1;
}

/* s:rescale(total_steps) -> a new schedule over that budget */
static int lschedules_sched_rescale(lua_State *L) {
  lsched *u = checksched(L, 1);
  lua_Integer T = luaL_checkinteger(L, 2);
  lsched *v = newsched(L);
  char err[512];
  if (schedules_sched_rescale(&v->s, u->s, T, err, sizeof err)) return luaL_error(L, "%s", err);
  return 1;
}

/* s:curve(n?) -> steps, lrs: every step 0 .. T, or n >= 2 evenly spaced steps (rounded) */
static int lschedules_sched_curve(lua_State *L) {
  lsched *u = checksched(L, 1);
  int64_t T = schedules_sched_opts(u->s)->total_steps;
  lua_Integer n = luaL_optinteger(L, 2, T + 1);
  luaL_argcheck(L, n >= 2, 2, "at least 2 points");
  lua_createtable(L, n > 1 << 20 ? 0 : (int)n, 0);
  lua_createtable(L, n > 1 << 20 ? 0 : (int)n, 0);
  for (lua_Integer i = 0; i < n; i++) {
    int64_t step = llround((double)i * (double)T / (double)(n - 1));
    lua_pushinteger(L, step);
    lua_rawseti(L, -3, i + 1);
    lua_pushnumber(L, schedules_sched_lr(u->s, step));
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

static int lschedules_sched_name(lua_State *L) {
  lua_pushstring(L, schedules_sched_info(checksched(L, 1)->s)->name);
  return 1;
}

static int lschedules_sched_total_steps(lua_State *L) {
  lua_pushinteger(L, schedules_sched_opts(checksched(L, 1)->s)->total_steps);
  return 1;
}

/* s:options() -> {name=, base_lr=, min_lr=, total_steps=, warmup=, every=, <knob>=, milestones=} */
static int lschedules_sched_options(lua_State *L) {
  const schedules_sched *s = checksched(L, 1)->s;
  const schedules_info *p = schedules_sched_info(s);
  const schedules_opts *o = schedules_sched_opts(s);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, p->name);
  lua_setfield(L, -2, "name");
  lua_pushnumber(L, o->base_lr);
  lua_setfield(L, -2, "base_lr");
  lua_pushnumber(L, o->min_lr);
  lua_setfield(L, -2, "min_lr");
  lua_pushinteger(L, o->total_steps);
  lua_setfield(L, -2, "total_steps");
  lua_pushinteger(L, o->warmup);
  lua_setfield(L, -2, "warmup");
  if (o->warmup_frac >= 0) {
    lua_pushnumber(L, o->warmup_frac);
    lua_setfield(L, -2, "warmup_frac");
  }
  lua_pushinteger(L, o->every);
  lua_setfield(L, -2, "every");
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && p->knobs[i].name; i++) {
    if (p->knobs[i].flags & SCHEDULES_KNOB_BOOL)
      lua_pushboolean(L, o->knob[i] != 0);
    else if (p->knobs[i].flags & SCHEDULES_KNOB_INT)
      lua_pushinteger(L, (lua_Integer)o->knob[i]);
    else
      lua_pushnumber(L, o->knob[i]);
    lua_setfield(L, -2, p->knobs[i].name);
  }
  if (p->flags & SCHEDULES_MILESTONES) {
    lua_createtable(L, o->n_milestones, 0);
    for (int i = 0; i < o->n_milestones; i++) {
      lua_pushnumber(L, o->milestones[i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "milestones");
  }
  return 1;
}

/* s:state() -> {scale=, best=, bad=, observed=, reductions=} for plateau; nil otherwise */
static int lschedules_sched_state(lua_State *L) {
  const schedules_plateau *p = schedules_sched_plateau(checksched(L, 1)->s);
  if (!p) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 5);
  lua_pushnumber(L, p->scale);
  lua_setfield(L, -2, "scale");
  lua_pushnumber(L, p->best);
  lua_setfield(L, -2, "best");
  lua_pushinteger(L, p->n_bad);
  lua_setfield(L, -2, "bad");
  lua_pushinteger(L, p->n_observed);
  lua_setfield(L, -2, "observed");
  lua_pushinteger(L, p->n_reductions);
  lua_setfield(L, -2, "reductions");
  return 1;
}

/* "wb.Schedule rex{base_lr=0.1, min_lr=0, total_steps=1000, warmup=0, every=1, d=0.5}" */
static int lschedules_sched_tostring(lua_State *L) {
  lsched *u = luaL_checkudata(L, 1, WB_SCHEDULE_MT);
  if (!u->s) {
    lua_pushliteral(L, "wb.Schedule (closed)");
    return 1;
  }
  const schedules_info *p = schedules_sched_info(u->s);
  const schedules_opts *o = schedules_sched_opts(u->s);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "wb.Schedule %s{base_lr=%f, min_lr=%f, total_steps=%I, warmup=%I, every=%I",
                  p->name, o->base_lr, o->min_lr, (lua_Integer)o->total_steps,
                  (lua_Integer)o->warmup, (lua_Integer)o->every);
  luaL_addvalue(&b);
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && p->knobs[i].name; i++) {
    lua_pushfstring(L, ", %s=%f", p->knobs[i].name, o->knob[i]);
    luaL_addvalue(&b);
  }
  for (int i = 0; i < o->n_milestones; i++) {
    lua_pushfstring(L, "%s%f", i ? ", " : ", milestones={", o->milestones[i]);
    luaL_addvalue(&b);
  }
  if (o->n_milestones) luaL_addchar(&b, '}');
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  return 1;
}

/* __call(s, step) */
static int lsched_call(lua_State *L) { return lschedules_sched_lr(L); }

static const luaL_Reg sched_methods[] = {
    {"lr", lschedules_sched_lr},
    {"fraction", lschedules_sched_fraction},
    {"apply", lschedules_sched_apply},
    {"observe", lschedules_sched_observe},
    {"rescale", lschedules_sched_rescale},
    {"curve", lschedules_sched_curve},
    {"name", lschedules_sched_name},
    {"total_steps", lschedules_sched_total_steps},
    {"options", lschedules_sched_options},
    {"state", lschedules_sched_state},
    {NULL, NULL},
};

static const luaL_Reg sched_meta[] = {
    {"__call", lsched_call},
    {"__gc", lsched_gc},
    {"__close", lsched_gc},
    {"__tostring", lschedules_sched_tostring},
    {NULL, NULL},
};

static const luaL_Reg schedules_funcs[] = {
    {"new", lschedules_sched_new},
    {"names", lschedules_names},
    {"info", lschedules_info},
    {NULL, NULL},
};

int luaopen_wb_schedules(lua_State *L) {
  if (luaL_newmetatable(L, WB_SCHEDULE_MT)) {
    luaL_setfuncs(L, sched_meta, 0);
    luaL_newlib(L, sched_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, schedules_funcs);
  for (const schedules_info *p = schedules_table; p->name; p++) {
    lua_pushlightuserdata(L, (void *)p);
    lua_pushcclosure(L, lschedules_sched_new_row, 1);
    lua_setfield(L, -2, p->name);
  }
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lschedules_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  /* wb.schedules too, so that `require "wb.schedules"` once makes it reachable from wb */
  luaL_requiref(L, "wb", luaopen_wb, 0);
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "schedules");
  }
  lua_pop(L, 1);
  return 1;
}
