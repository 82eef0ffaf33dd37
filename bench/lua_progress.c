/* bench/lua_progress.c: progress lines for training loops.
 *
 *   local bar <close> = wb.progress { total = n_steps, label = "epoch 1", batch = 128 }
 *   bar:update(step, { loss = l })   -- step counts from 1 to total
 *   bar:close()
 *
 * On a terminal (stderr is a tty) one line is redrawn in place at most 10 times a second:
 * label, step/total, percent, the given values, samples/s (steps/s without batch) and the ETA.
 * Elsewhere (a log file, CI) a plain line is printed every `every` steps when given, otherwise
 * every 5% of total and at least every 10 s, and at the last step. mode = "tty" or "plain"
 * forces one of the two. Lines go to stderr, so stdout stays the script's own.
 */
#include "host.h"
#include "wb_lua.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WB_PROGRESS_MT "wb.Progress"

typedef struct lprogress {
  int64_t total; /* 0: unknown */
  int64_t every; /* plain mode: print every this many steps; 0: 5% / 10 s */
  int64_t batch; /* samples per step; 0: show steps/s */
  int tty;
  int closed;
  int64_t step, first_step, printed_step;
  double t0, t_printed;
  char label[64];
  char values[192]; /* "loss 0.4321  acc 0.91" from the last update */
} lprogress;

static lprogress *checkprogress(lua_State *L) { return luaL_checkudata(L, 1, WB_PROGRESS_MT); }

static void fmt_eta(char *buf, size_t n, double s) {
  if (!(s >= 0) || isinf(s)) {
    snprintf(buf, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t < 3600)
    snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
}

static void print_line(lprogress *p, double now, int final) {
  char line[512], eta[32], rate[48] = "";
  int len = 0;
  double dt = now - p->t0;
  double steps_per_s = dt > 0 ? (double)(p->step - p->first_step) / dt : 0;
  if (*p->label) len += snprintf(line + len, sizeof line - (size_t)len, "%s  ", p->label);
  if (p->total > 0)
    len += snprintf(line + len, sizeof line - (size_t)len, "%lld/%lld (%3d%%)", (long long)p->step,
                    (long long)p->total, (int)(100.0 * (double)p->step / (double)p->total));
  else
    len += snprintf(line + len, sizeof line - (size_t)len, "step %lld", (long long)p->step);
  if (*p->values) len += snprintf(line + len, sizeof line - (size_t)len, "  %s", p->values);
  if (steps_per_s > 0) {
    if (p->batch > 0)
      snprintf(rate, sizeof rate, "  %.0f samples/s", steps_per_s * (double)p->batch);
    else
      snprintf(rate, sizeof rate, "  %.1f steps/s", steps_per_s);
    len += snprintf(line + len, sizeof line - (size_t)len, "%s", rate);
  }
  if (final) {
    wb_host_fmt_duration(eta, sizeof eta, dt);
    len += snprintf(line + len, sizeof line - (size_t)len, "  done in %s", eta);
  } else if (p->total > 0 && steps_per_s > 0) {
    fmt_eta(eta, sizeof eta, (double)(p->total - p->step) / steps_per_s);
    len += snprintf(line + len, sizeof line - (size_t)len, "  ETA %s", eta);
  }
  if (p->tty)
    fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
  else
    fprintf(stderr, "%s\n", line);
  fflush(stderr);
  p->printed_step = p->step;
  p->t_printed = now;
}

static int lwb_progress(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  static const char *const fields[] = {"total", "every", "label", "batch", "mode", NULL};
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int ok = 0;
    for (int i = 0; fields[i] && !ok; i++)
      ok = lua_type(L, -2) == LUA_TSTRING && !strcmp(lua_tostring(L, -2), fields[i]);
    if (!ok)
      return luaL_error(L,
                        "wb.progress: unknown field '%s'; known fields: total, every, "
                        "label, batch, mode",
                        luaL_tolstring(L, -2, NULL));
    lua_pop(L, 1);
  }
  lprogress *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->closed = 1;
  luaL_setmetatable(L, WB_PROGRESS_MT);
  lua_getfield(L, 1, "total");
  p->total = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "every");
  p->every = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "batch");
  p->batch = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "label");
  snprintf(p->label, sizeof p->label, "%s", luaL_optstring(L, -1, ""));
  lua_getfield(L, 1, "mode");
  const char *mode = luaL_optstring(L, -1, "auto");
  if (!strcmp(mode, "auto"))
    p->tty = isatty(STDERR_FILENO);
  else if (!strcmp(mode, "tty") || !strcmp(mode, "plain"))
    p->tty = !strcmp(mode, "tty");
  else
    return luaL_error(L, "wb.progress: unknown mode '%s'; known modes: auto, tty, plain", mode);
  lua_pop(L, 5);
  if (p->total < 0 || p->every < 0 || p->batch < 0)
    return luaL_error(L, "wb.progress: total, every and batch must not be negative");
  p->t0 = p->t_printed = wb_host_mono();
  p->closed = 0;
  return 1;
}

/* Collects "key value" pairs of the table at idx, sorted by key, into p->values. */
static void set_values(lua_State *L, lprogress *p, int idx) {
  const char *keys[8];
  double vals[8];
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "progress:update: values must be {name = number, ...}");
    if (n < 8) {
      int j = n++;
      for (; j > 0 && strcmp(keys[j - 1], lua_tostring(L, -2)) > 0; j--)
        keys[j] = keys[j - 1], vals[j] = vals[j - 1];
      keys[j] = lua_tostring(L, -2); /* anchored by the table at idx */
      vals[j] = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
  }
  int len = 0;
  p->values[0] = '\0';
  for (int i = 0; i < n && len < (int)sizeof p->values; i++)
    len += snprintf(p->values + len, sizeof p->values - (size_t)len, "%s%s %.4g", i ? "  " : "",
                    keys[i], vals[i]);
}

static int lprogress_update(lua_State *L) {
  wb_lua_run_check_interrupt(L);
  lprogress *p = checkprogress(L);
  if (p->closed) return luaL_error(L, "progress:update: the progress line has been closed");
  lua_Integer step = luaL_checkinteger(L, 2);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    set_values(L, p, 3);
  }
  if (p->first_step == 0 && p->step == 0) p->first_step = step - 1 > 0 ? step - 1 : 0;
  p->step = step;
  double now = wb_host_mono();
  int last = p->total > 0 && step >= p->total;
  int due;
  if (p->tty) {
    due = last || now - p->t_printed >= 0.1;
  } else if (p->every > 0) {
    due = last || step % p->every == 0;
  } else {
    int64_t stride = p->total > 0 ? (p->total + 19) / 20 : 0;
    due = last || (stride > 0 && step - p->printed_step >= stride) || now - p->t_printed >= 10;
  }
  if (due && step != p->printed_step) print_line(p, now, 0);
  return 0;
}

static int lprogress_close(lua_State *L) {
  lprogress *p = checkprogress(L);
  if (p->closed) return 0;
  p->closed = 1;
  if (p->tty ? p->step > 0 : p->step != p->printed_step) print_line(p, wb_host_mono(), 1);
  return 0;
}

/* Collected without a close: forget it quietly (a line at a random moment would mislead). */
static int lprogress_gc(lua_State *L) {
  checkprogress(L)->closed = 1;
  return 0;
}

static const luaL_Reg progress_methods[] = {
    {"update", lprogress_update},
    {"close", lprogress_close},
    {NULL, NULL},
};

static const luaL_Reg progress_meta[] = {
    {"__close", lprogress_close},
    {"__gc", lprogress_gc},
    {NULL, NULL},
};

static const luaL_Reg progress_funcs[] = {
    {"progress", lwb_progress},
    {NULL, NULL},
};

void wb_lua_open_progress(lua_State *L) {
  if (luaL_newmetatable(L, WB_PROGRESS_MT)) {
    luaL_setfuncs(L, progress_meta, 0);
    luaL_newlib(L, progress_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, progress_funcs, 0);
}
