/* schedules/schedules.h: learning-rate schedules as profiles over the training budget, with REX.
 *
 * The framing of Chen, Wolfe and Kyrillidis, "REX: Revisiting Budgeted Training with an Improved
 * Schedule" (MLSys 2022), section 3: a schedule is a profile f: [0, 1] -> [0, 1] over the
 * fraction z = t / T of the training budget, sampled at a rate (every iteration, every epoch,
 * every k iterations). A schedule of T steps with W warm-up steps, sampling period k, base
 * learning rate base_lr and floor min_lr gives, at step s (0 <= s <= T):
 *
 *   s <  W:  lr = base_lr * (s + 1) / (W + 1)                     (linear warm-up, never 0)
 *   s >= W:  t = s - W, n = T - W, t_k = floor(t / k) * k,  z = t_k / n
 *            lr = min_lr + (base_lr - min_lr) * f(z) * scale      (scale: reduce-on-plateau's
 *                                                                   factor; 1 for the others)
 *
 * So lr(W) = base_lr, and lr(T) = min_lr for the profiles with f(1) = 0 (linear, cosine, poly,
 * REX). Changing the budget T rescales the schedule: the same profile over the new z.
 *
 * The profiles (z in [0, 1]; the knobs and their defaults are in the schedule table):
 *   constant     1
 *   step         gamma^floor(z / step_size)                  step_size 1/3, gamma 0.1
 *   multistep    gamma^(number of milestones m with z >= m)  milestones {0.5, 0.75}, gamma 0.1
 *   exponential  gamma^z (gamma is f(1))                     gamma 0.01
 *   linear       1 - z
 *   cosine       (1 + cos(pi z)) / 2
 *   onecycle     PyTorch's OneCycleLR (two cosine phases): from 1/div_factor up to 1 over
 *                pct_start, then down to 1/(div_factor * final_div_factor)
 *                                                            pct_start 0.3, div_factor 25,
 *                                                            final_div_factor 1e4
 *   poly         (1 - z)^power                               power 2 (power 1 is linear)
 *   invsqrt      1 / sqrt(1 + z / tau)                       tau 0.05
 *   plateau      1, times a factor that PyTorch's ReduceLROnPlateau rule lowers when the metric
 *                fed to schedules_sched_observe stops improving
 *                                                            factor 0.1, patience 10,
 *                                                            threshold 1e-4 (relative),
 *                                                            cooldown 0, maximize 0
 *   rex          (1 - z) / (1 - d z)                         d 0.5 (the paper's); d = 0 is
 *                                                            linear, d = 0.9 a public variant
 *
 * Adding a schedule: a profile function and one row in schedules_table (schedules.c). The Lua
 * face (schedules/lua.c) makes wb.schedules.<name>{...} from each row, its knobs included.
 *
 * Errors: functions that can fail return SCHEDULES_OK (0) or a negative SCHEDULES_ERR_*, and
 * write a message naming the problem into the caller's err buffer (err_size bytes; err may be
 * NULL). Out-parameters are NULL unless the call succeeded. Nothing here allocates except
 * schedules_sched_new and schedules_sched_rescale.
 */
#ifndef SCHEDULES_H
#define SCHEDULES_H

#include <stddef.h>
#include <stdint.h>

enum {
  SCHEDULES_OK = 0,
  SCHEDULES_ERR_NAME = -1,  /* unknown schedule or knob name (the message lists the known) */
  SCHEDULES_ERR_ARG = -2,   /* a value out of its range (the message names it and the range) */
  SCHEDULES_ERR_NOMEM = -3, /* out of memory */
  SCHEDULES_ERR_STATE = -4, /* observe on a schedule that is not metric-driven */
};

#define SCHEDULES_MAX_KNOBS 6
#define SCHEDULES_MAX_MILESTONES 16

/* Knob flags. */
enum {
  SCHEDULES_KNOB_INT = 1,     /* an integer value */
  SCHEDULES_KNOB_BOOL = 2,    /* 0 or 1 (a boolean in Lua) */
  SCHEDULES_KNOB_LO_OPEN = 4, /* the lower bound is excluded */
  SCHEDULES_KNOB_HI_OPEN = 8, /* the upper bound is excluded */
};

/* One knob of a profile: its name, default, inclusive range [lo, hi] (see the flags), meaning. */
typedef struct schedules_knob {
  const char *name;
  double def, lo, hi;
  int flags;
  const char *doc;
} schedules_knob;

/* Everything one schedule is made of. Fill it with schedules_opts_init (the profile's defaults),
 * then change what you need; schedules_sched_new checks it. */
typedef struct schedules_opts {
  double base_lr;      /* lr at f = 1 (after warm-up); > 0 */
  double min_lr;       /* lr at f = 0; 0 <= min_lr <= base_lr; default 0 */
  int64_t total_steps; /* T, the budget in steps, warm-up included; >= 1 */
  int64_t warmup;      /* W, linear warm-up steps; 0 <= W < T; default 0 */
  double warmup_frac;  /* if >= 0, W was given as this fraction of T (kept exact when the budget
                        * is rescaled); -1 when W was given in steps */
  int64_t every;       /* sampling period k in steps (1: every iteration, steps per epoch:
                        * every epoch); >= 1; default 1 */
  double knob[SCHEDULES_MAX_KNOBS]; /* the profile's knobs, in its row's order */
  int n_milestones;                 /* multistep: milestones as fractions of the budget, */
  double milestones[SCHEDULES_MAX_MILESTONES]; /* increasing, in (0, 1] */
} schedules_opts;

/* A profile: f(z) in [0, 1] for z in [0, 1], reading its knobs (o->knob, o->milestones). */
typedef double (*schedules_profile_fn)(double z, const schedules_opts *o);

/* Row flags. */
enum {
  SCHEDULES_MONOTONE = 1,   /* f is non-increasing in z */
  SCHEDULES_ENDS_AT_0 = 2,  /* f(1) = 0: lr(T) = min_lr */
  SCHEDULES_METRIC = 4,     /* metric-driven: schedules_sched_observe applies */
  SCHEDULES_MILESTONES = 8, /* reads o->milestones */
};

/* One row of the schedule table. */
typedef struct schedules_info {
  const char *name;                          /* "rex": also the Lua constructor wb.schedules.rex */
  schedules_profile_fn profile;              /* f(z) */
  const char *formula;                       /* f in words, for documentation and reports */
  int flags;                                 /* SCHEDULES_MONOTONE | ... */
  schedules_knob knobs[SCHEDULES_MAX_KNOBS]; /* terminated by a NULL name */
} schedules_info;

/* The schedule table, terminated by a row with a NULL name. */
extern const schedules_info schedules_table[];

/* ---- the profiles (closed forms; each reads only its own knobs) ---- */
double schedules_constant_profile(double z, const schedules_opts *o);
double schedules_step_profile(double z, const schedules_opts *o);      /* knob: step_size, gamma */
double schedules_multistep_profile(double z, const schedules_opts *o); /* gamma; milestones */
double schedules_exponential_profile(double z, const schedules_opts *o); /* gamma */
double schedules_linear_profile(double z, const schedules_opts *o);
double schedules_cosine_profile(double z, const schedules_opts *o);
double schedules_onecycle_profile(double z, const schedules_opts *o); /* pct_start, div_factor,
                                                                        final_div_factor */
double schedules_poly_profile(double z, const schedules_opts *o);     /* power */
double schedules_invsqrt_profile(double z, const schedules_opts *o);  /* tau */
double schedules_plateau_profile(double z, const schedules_opts *o);  /* 1 (scale applies) */
double schedules_rex_profile(double z, const schedules_opts *o);      /* d */

/* ---- the table ---- */

/* The row named name, or NULL. */
const schedules_info *schedules_find(const char *name);
/* Like schedules_find, but an unknown name is SCHEDULES_ERR_NAME with the message
 * "unknown schedule 'x'; known schedules: constant, step, ...". *out is NULL on error. */
int schedules_lookup(const schedules_info **out, const char *name, char *err, size_t err_size);
/* Writes the known names, ", "-separated, into buf (snprintf's rules); returns the length the
 * whole list needs. */
size_t schedules_names(char *buf, size_t buf_size);
/* The index of knob name in the row, or -1. */
int schedules_knob_index(const schedules_info *info, const char *name);

/* ---- options ---- */

/* Fills o with info's defaults for a schedule of total_steps steps from base_lr: min_lr 0, no
 * warm-up, sampled every step, the row's knob defaults (and milestones {0.5, 0.75} for a
 * profile that reads milestones). */
void schedules_opts_init(schedules_opts *o, const schedules_info *info, double base_lr,
                         int64_t total_steps);
/* Sets knob name of info's profile. SCHEDULES_ERR_NAME for a knob the profile does not have
 * (the message lists its knobs), SCHEDULES_ERR_ARG for a value outside the knob's range. */
int schedules_opts_set(schedules_opts *o, const schedules_info *info, const char *name,
                       double value, char *err, size_t err_size);
/* Checks every field of o against info (ranges above, knob ranges, integer knobs, milestones
 * increasing in (0, 1]). SCHEDULES_ERR_ARG with a message naming the first bad field. */
int schedules_opts_check(const schedules_opts *o, const schedules_info *info, char *err,
                         size_t err_size);

/* ---- reduce-on-plateau: a stateful rule fed a metric (PyTorch's ReduceLROnPlateau, relative
 * threshold mode) ---- */
typedef struct schedules_plateau {
  double factor;    /* scale *= factor at each reduction; in [0, 1) */
  double threshold; /* relative improvement that counts: m < best * (1 - threshold) (min) */
  int64_t patience; /* observations without improvement tolerated before a reduction */
  int64_t cooldown; /* observations after a reduction during which bad ones are not counted */
  int maximize;     /* 1: higher is better (accuracy); 0: lower is better (loss) */
  /* state */
  double scale;  /* starts at 1 */
  double best;   /* best metric so far (+inf or -inf before the first) */
  int64_t n_bad; /* observations since the last improvement */
  int64_t cooldown_left;
  int64_t n_observed, n_reductions;
} schedules_plateau;

/* Initialises caller-provided p (scale 1, nothing observed). No allocation; no deinit needed. */
void schedules_plateau_init(schedules_plateau *p, double factor, int64_t patience, double threshold,
                            int64_t cooldown, int maximize);
/* Feeds one metric value; returns 1 when it lowered the scale, else 0. A NaN never improves
 * (a diverging run is cut as PyTorch's rule cuts it). */
int schedules_plateau_observe(schedules_plateau *p, double metric);

/* ---- schedules ---- */
typedef struct schedules_sched schedules_sched;

/* A new schedule with profile info and options o (copied). SCHEDULES_ERR_ARG (message naming the
 * field) for bad options, SCHEDULES_ERR_NOMEM. Free with schedules_sched_free. */
int schedules_sched_new(schedules_sched **out, const schedules_info *info, const schedules_opts *o,
                        char *err, size_t err_size);
/* Frees s; NULL is a no-op. */
void schedules_sched_free(schedules_sched *s);
/* The learning rate at step (0 .. total_steps; values outside are clamped), by the formula at the
 * top of this file. Pure except for reduce-on-plateau's current scale. */
double schedules_sched_lr(const schedules_sched *s, int64_t step);
/* The profile value f(z) * scale at step (the warm-up ramp (s + 1) / (W + 1) during warm-up):
 * the lr as a fraction of the way from min_lr to base_lr. */
double schedules_sched_fraction(const schedules_sched *s, int64_t step);
/* Feeds a metric to a metric-driven schedule (reduce-on-plateau); *reduced (may be NULL) is 1
 * when the lr was lowered. SCHEDULES_ERR_STATE for a schedule whose profile is not
 * metric-driven. */
int schedules_sched_observe(schedules_sched *s, double metric, int *reduced, char *err,
                            size_t err_size);
/* The same schedule over a budget of total_steps steps: the profile, knobs, rate, base and min
 * lr unchanged; the warm-up scaled to the new budget (warmup_frac kept, or W * new / old rounded
 * to the nearest step); a plateau's state starts afresh. So lr_new(s * new / old) = lr_old(s)
 * wherever both are sampled. Errors as schedules_sched_new. */
int schedules_sched_rescale(schedules_sched **out, const schedules_sched *s, int64_t total_steps,
                            char *err, size_t err_size);
/* The profile's row and the options (borrowed; valid while s lives). */
const schedules_info *schedules_sched_info(const schedules_sched *s);
const schedules_opts *schedules_sched_opts(const schedules_sched *s);
/* The plateau rule's state (borrowed), or NULL for a schedule that is not metric-driven. */
const schedules_plateau *schedules_sched_plateau(const schedules_sched *s);

#endif
