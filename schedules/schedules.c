/* schedules/schedules.c: the schedule table, the profiles, options, reduce-on-plateau and the
 * schedule object. The formulas are in schedules.h; REX is equation (1) of Chen, Wolfe and
 * Kyrillidis, "REX: Revisiting Budgeted Training with an Improved Schedule", MLSys 2022.
 */
#include "schedules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

struct schedules_sched {
  const schedules_info *info;
  schedules_opts opts;
  schedules_plateau plateau; /* used when info->flags & SCHEDULES_METRIC */
};

static int fail(int code, char *err, size_t err_size, const char *fmt, ...) {
  if (err && err_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---------------------------------------------------------------- profiles */

/* Boundaries such as z = 2/3 with step_size 1/3 are computed in floating point; a z within
 * 1e-9 of a boundary counts as past it, so that t / n == m exactly in rationals always does. */
#define BOUNDARY_EPS 1e-9

double schedules_constant_profile(double z, const schedules_opts *o) {
  (void)z, (void)o;
  return 1.0;
}

double schedules_step_profile(double z, const schedules_opts *o) {
  double step_size = o->knob[0], gamma = o->knob[1];
  return pow(gamma, floor(z / step_size + BOUNDARY_EPS));
}

double schedules_multistep_profile(double z, const schedules_opts *o) {
  double gamma = o->knob[0], f = 1.0;
  for (int i = 0; i < o->n_milestones; i++)
    if (z + BOUNDARY_EPS >= o->milestones[i]) f *= gamma;
  return f;
}

double schedules_exponential_profile(double z, const schedules_opts *o) {
  return pow(o->knob[0], z);
}

double schedules_linear_profile(double z, const schedules_opts *o) {
  (void)o;
  return 1.0 - z;
}

double schedules_cosine_profile(double z, const schedules_opts *o) {
  (void)o;
  return 0.5 * (1.0 + cos(M_PI * z));
}

double schedules_onecycle_profile(double z, const schedules_opts *o) {
  double p = o->knob[0], start = 1.0 / o->knob[1], end = start / o->knob[2];
  if (z < p) return start + (1.0 - start) * 0.5 * (1.0 - cos(M_PI * z / p));
  return end + (1.0 - end) * 0.5 * (1.0 + cos(M_PI * (z - p) / (1.0 - p)));
}

double schedules_poly_profile(double z, const schedules_opts *o) {
  return pow(1.0 - z, o->knob[0]);
}

double schedules_invsqrt_profile(double z, const schedules_opts *o) {
  return 1.0 / sqrt(1.0 + z / o->knob[0]);
}

double schedules_plateau_profile(double z, const schedules_opts *o) {
  (void)z, (void)o;
  return 1.0;
}

double schedules_rex_profile(double z, const schedules_opts *o) {
  double d = o->knob[0];
  return (1.0 - z) / (1.0 - d * z); /* d < 1, so the denominator is >= 1 - d > 0 */
}

/* ---------------------------------------------------------------- the table */

#define M SCHEDULES_MONOTONE
#define Z SCHEDULES_ENDS_AT_0
#define LO SCHEDULES_KNOB_LO_OPEN
#define HI SCHEDULES_KNOB_HI_OPEN

const schedules_info schedules_table[] = {
    {"constant", schedules_constant_profile, "1", M, {{NULL}}},
    {"step",
     schedules_step_profile,
     "gamma^floor(z / step_size)",
     M,
     {{"step_size", 1.0 / 3.0, 0, 1, LO, "decay period as a fraction of the budget"},
      {"gamma", 0.1, 0, 1, 0, "factor per decay"},
      {NULL}}},
    {"multistep",
     schedules_multistep_profile,
     "gamma^(number of milestones <= z)",
     M | SCHEDULES_MILESTONES,
     {{"gamma", 0.1, 0, 1, 0, "factor per milestone"}, {NULL}}},
    {"exponential",
     schedules_exponential_profile,
     "gamma^z",
     M,
     {{"gamma", 0.01, 0, 1, LO, "f(1): the factor over the whole budget"}, {NULL}}},
    {"linear", schedules_linear_profile, "1 - z", M | Z, {{NULL}}},
    {"cosine", schedules_cosine_profile, "(1 + cos(pi z)) / 2", M | Z, {{NULL}}},
    {"onecycle",
     schedules_onecycle_profile,
     "cosine from 1/div_factor up to 1 over pct_start, then down to "
     "1/(div_factor final_div_factor)",
     0,
     {{"pct_start", 0.3, 0, 1, LO | HI, "fraction of the budget spent going up"},
      {"div_factor", 25, 1, HUGE_VAL, 0, "f(0) = 1 / div_factor"},
      {"final_div_factor", 1e4, 1, HUGE_VAL, 0, "f(1) = 1 / (div_factor final_div_factor)"},
      {NULL}}},
    {"poly",
     schedules_poly_profile,
     "(1 - z)^power",
     M | Z,
     {{"power", 2, 0, HUGE_VAL, LO, "exponent (1: linear)"}, {NULL}}},
    {"invsqrt",
     schedules_invsqrt_profile,
     "1 / sqrt(1 + z / tau)",
     M,
     {{"tau", 0.05, 0, HUGE_VAL, LO, "time scale as a fraction of the budget"}, {NULL}}},
    {"plateau",
     schedules_plateau_profile,
     "1, times factor at each plateau of the metric",
     M | SCHEDULES_METRIC,
     {{"factor", 0.1, 0, 1, HI, "lr factor at each reduction"},
      {"patience", 10, 0, 1e9, SCHEDULES_KNOB_INT, "observations without improvement tolerated"},
      {"threshold", 1e-4, 0, 1, HI, "relative improvement that counts"},
      {"cooldown", 0, 0, 1e9, SCHEDULES_KNOB_INT, "observations ignored after a reduction"},
      {"maximize", 0, 0, 1, SCHEDULES_KNOB_BOOL, "true: higher metrics are better"},
      {NULL}}},
    {"rex",
     schedules_rex_profile,
     "(1 - z) / (1 - d z)",
     M | Z,
     {{"d", 0.5, 0, 1, HI, "0.5: the paper's REX; 0: linear; 0.9: a public variant"}, {NULL}}},
    {NULL, NULL, NULL, 0, {{NULL}}},
};

#undef M
#undef Z
#undef LO
#undef HI

const schedules_info *schedules_find(const char *name) {
  for (const schedules_info *p = schedules_table; name && p->name; p++)
    if (!strcmp(p->name, name)) return p;
  return NULL;
}

size_t schedules_names(char *buf, size_t buf_size) {
  size_t len = 0;
  if (buf && buf_size) buf[0] = '\0';
  for (const schedules_info *p = schedules_table; p->name; p++) {
    const char *sep = p == schedules_table ? "" : ", ";
    int n = snprintf(buf && len < buf_size ? buf + len : NULL,
                     buf && len < buf_size ? buf_size - len : 0, "%s%s", sep, p->name);
    len += (size_t)n;
  }
  return len;
}

int schedules_lookup(const schedules_info **out, const char *name, char *err, size_t err_size) {
  *out = schedules_find(name);
  if (*out) return SCHEDULES_OK;
  char names[512];
  schedules_names(names, sizeof names);
  return fail(SCHEDULES_ERR_NAME, err, err_size, "unknown schedule '%s'; known schedules: %s",
              name ? name : "(null)", names);
}

int schedules_knob_index(const schedules_info *info, const char *name) {
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && info->knobs[i].name; i++)
    if (!strcmp(info->knobs[i].name, name)) return i;
  return -1;
}

/* ---------------------------------------------------------------- options */

void schedules_opts_init(schedules_opts *o, const schedules_info *info, double base_lr,
                         int64_t total_steps) {
  memset(o, 0, sizeof *o);
  o->base_lr = base_lr;
  o->total_steps = total_steps;
  o->warmup_frac = -1;
  o->every = 1;
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && info->knobs[i].name; i++)
    o->knob[i] = info->knobs[i].def;
  if (info->flags & SCHEDULES_MILESTONES) {
    o->n_milestones = 2;
    o->milestones[0] = 0.5;
    o->milestones[1] = 0.75;
  }
}

static int check_knob(const schedules_knob *k, const char *schedule, double v, char *err,
                      size_t err_size) {
  int bad = !(v >= k->lo && v <= k->hi) || ((k->flags & SCHEDULES_KNOB_LO_OPEN) && v == k->lo) ||
            ((k->flags & SCHEDULES_KNOB_HI_OPEN) && v == k->hi);
  if (bad)
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: %s = %g is outside %c%g, %g%c", schedule,
                k->name, v, k->flags & SCHEDULES_KNOB_LO_OPEN ? '(' : '[', k->lo, k->hi,
                k->flags & SCHEDULES_KNOB_HI_OPEN ? ')' : ']');
  if ((k->flags & (SCHEDULES_KNOB_INT | SCHEDULES_KNOB_BOOL)) && v != floor(v))
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: %s must be %s (got %g)", schedule, k->name,
                k->flags & SCHEDULES_KNOB_BOOL ? "0 or 1" : "an integer", v);
  return SCHEDULES_OK;
}

int schedules_opts_set(schedules_opts *o, const schedules_info *info, const char *name,
                       double value, char *err, size_t err_size) {
  int i = schedules_knob_index(info, name);
  if (i < 0) {
    char known[256] = "";
    size_t len = 0;
    for (int j = 0; j < SCHEDULES_MAX_KNOBS && info->knobs[j].name && len < sizeof known; j++)
      len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", j ? ", " : "",
                              info->knobs[j].name);
    return fail(SCHEDULES_ERR_NAME, err, err_size, "%s: unknown knob '%s'; its knobs: %s",
                info->name, name, known[0] ? known : "none");
  }
  int rc = check_knob(&info->knobs[i], info->name, value, err, err_size);
  if (rc == SCHEDULES_OK) o->knob[i] = value;
  return rc;
}

int schedules_opts_check(const schedules_opts *o, const schedules_info *info, char *err,
                         size_t err_size) {
  const char *s = info->name;
  if (!(o->base_lr > 0) || !isfinite(o->base_lr))
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: base_lr must be > 0 (got %g)", s,
                o->base_lr);
  if (!(o->min_lr >= 0 && o->min_lr <= o->base_lr))
    return fail(SCHEDULES_ERR_ARG, err, err_size,
                "%s: min_lr must be in [0, base_lr] = [0, %g] (got %g)", s, o->base_lr, o->min_lr);
  if (o->total_steps < 1)
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: total_steps must be >= 1 (got %lld)", s,
                (long long)o->total_steps);
  if (o->warmup < 0 || o->warmup >= o->total_steps)
    return fail(SCHEDULES_ERR_ARG, err, err_size,
                "%s: warmup must be in [0, total_steps) = [0, %lld) steps (got %lld)", s,
                (long long)o->total_steps, (long long)o->warmup);
  if (o->warmup_frac >= 1)
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: warmup_frac must be in [0, 1) (got %g)", s,
                o->warmup_frac);
  if (o->every < 1)
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: every must be >= 1 step (got %lld)", s,
                (long long)o->every);
  for (int i = 0; i < SCHEDULES_MAX_KNOBS && info->knobs[i].name; i++) {
    int rc = check_knob(&info->knobs[i], s, o->knob[i], err, err_size);
    if (rc) return rc;
  }
  if (info->flags & SCHEDULES_MILESTONES) {
    if (o->n_milestones < 0 || o->n_milestones > SCHEDULES_MAX_MILESTONES)
      return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: at most %d milestones (got %d)", s,
                  SCHEDULES_MAX_MILESTONES, o->n_milestones);
    for (int i = 0; i < o->n_milestones; i++) {
      double m = o->milestones[i], prev = i ? o->milestones[i - 1] : 0;
      if (!(m > prev && m <= 1))
        return fail(SCHEDULES_ERR_ARG, err, err_size,
                    "%s: milestones are increasing fractions of the budget in (0, 1] "
                    "(milestone %d is %g)",
                    s, i + 1, m);
    }
  } else if (o->n_milestones) {
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: this profile takes no milestones", s);
  }
  return SCHEDULES_OK;
}

/* ---------------------------------------------------------------- reduce-on-plateau */

void schedules_plateau_init(schedules_plateau *p, double factor, int64_t patience, double threshold,
                            int64_t cooldown, int maximize) {
  memset(p, 0, sizeof *p);
  p->factor = factor;
  p->patience = patience;
  p->threshold = threshold;
  p->cooldown = cooldown;
  p->maximize = maximize != 0;
  p->scale = 1.0;
  p->best = maximize ? -HUGE_VAL : HUGE_VAL;
}

int schedules_plateau_observe(schedules_plateau *p, double metric) {
  /* torch.optim.lr_scheduler.ReduceLROnPlateau.step, threshold_mode "rel" */
  int better = p->maximize ? metric > p->best * (1.0 + p->threshold)
                           : metric < p->best * (1.0 - p->threshold);
  p->n_observed++;
  if (better) {
    p->best = metric;
    p->n_bad = 0;
  } else {
    p->n_bad++;
  }
  if (p->cooldown_left > 0) {
    p->cooldown_left--;
    p->n_bad = 0;
  }
  if (p->n_bad > p->patience) {
    p->scale *= p->factor;
    p->cooldown_left = p->cooldown;
    p->n_bad = 0;
    p->n_reductions++;
    return 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- schedules */

static void plateau_from_opts(schedules_sched *s) {
  const double *k = s->opts.knob;
  schedules_plateau_init(&s->plateau, k[0], (int64_t)k[1], k[2], (int64_t)k[3], k[4] != 0);
}

int schedules_sched_new(schedules_sched **out, const schedules_info *info, const schedules_opts *o,
                        char *err, size_t err_size) {
  *out = NULL;
  int rc = schedules_opts_check(o, info, err, err_size);
  if (rc) return rc;
  schedules_sched *s = calloc(1, sizeof *s);
  if (!s) return fail(SCHEDULES_ERR_NOMEM, err, err_size, "%s: out of memory", info->name);
  s->info = info;
  s->opts = *o;
  if (info->flags & SCHEDULES_METRIC) plateau_from_opts(s);
  *out = s;
  return SCHEDULES_OK;
}

void schedules_sched_free(schedules_sched *s) { free(s); }

double schedules_sched_fraction(const schedules_sched *s, int64_t step) {
  const schedules_opts *o = &s->opts;
  if (step < 0) step = 0;
  if (step > o->total_steps) step = o->total_steps;
  if (step < o->warmup) return (double)(step + 1) / (double)(o->warmup + 1);
  int64_t n = o->total_steps - o->warmup, t = step - o->warmup;
  t = t / o->every * o->every;
  double f = s->info->profile((double)t / (double)n, o);
  if (s->info->flags & SCHEDULES_METRIC) f *= s->plateau.scale;
  return f;
}

double schedules_sched_lr(const schedules_sched *s, int64_t step) {
  const schedules_opts *o = &s->opts;
  if (step < 0) step = 0;
  if (step > o->total_steps) step = o->total_steps;
  double f = schedules_sched_fraction(s, step);
  if (step < o->warmup) return o->base_lr * f; /* the ramp starts from 0, not from min_lr */
  return o->min_lr + (o->base_lr - o->min_lr) * f;
}

int schedules_sched_observe(schedules_sched *s, double metric, int *reduced, char *err,
                            size_t err_size) {
  if (reduced) *reduced = 0;
  if (!(s->info->flags & SCHEDULES_METRIC))
    return fail(SCHEDULES_ERR_STATE, err, err_size,
                "%s: not metric-driven (only plateau is fed a metric)", s->info->name);
  int r = schedules_plateau_observe(&s->plateau, metric);
  if (reduced) *reduced = r;
  return SCHEDULES_OK;
}

int schedules_sched_rescale(schedules_sched **out, const schedules_sched *s, int64_t total_steps,
                            char *err, size_t err_size) {
  *out = NULL;
  schedules_opts o = s->opts;
  if (total_steps < 1)
    return fail(SCHEDULES_ERR_ARG, err, err_size, "%s: total_steps must be >= 1 (got %lld)",
                s->info->name, (long long)total_steps);
  o.total_steps = total_steps;
  if (o.warmup_frac >= 0)
    o.warmup = llround(o.warmup_frac * (double)total_steps);
  else
    o.warmup = llround((double)s->opts.warmup * (double)total_steps / (double)s->opts.total_steps);
  if (o.warmup >= total_steps) o.warmup = total_steps - 1;
  return schedules_sched_new(out, s->info, &o, err, err_size);
}

const schedules_info *schedules_sched_info(const schedules_sched *s) { return s->info; }
const schedules_opts *schedules_sched_opts(const schedules_sched *s) { return &s->opts; }
const schedules_plateau *schedules_sched_plateau(const schedules_sched *s) {
  return s->info->flags & SCHEDULES_METRIC ? &s->plateau : NULL;
}
