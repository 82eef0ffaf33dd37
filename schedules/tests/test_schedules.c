/* schedules/tests/test_schedules.c: every profile at its start, middle and end against its
 * closed form (written out here independently of schedules.c); monotonicity and range over the
 * whole budget; warm-up, minimum lr, sampling rates, budget rescaling; reduce-on-plateau's rule;
 * option errors and unknown names. Ends with "N passed, N failed". */
#include "schedules.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (cond) {                                                                                    \
      passed++;                                                                                    \
    } else {                                                                                       \
      failed++;                                                                                    \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
    }                                                                                              \
  } while (0)

/* lr values are a few double operations from the closed form: 1e-12 relative is ample, and
 * far below any difference a wrong formula makes */
static int near(double a, double b) { return fabs(a - b) <= 1e-12 * (1 + fabs(b)); }

static const double PI = 3.14159265358979323846;

/* A schedule of row name with defaults over T steps from base_lr 0.1, or NULL (a failed CHECK). */
static schedules_sched *make(const char *name, int64_t T, const schedules_opts *over) {
  const schedules_info *info = schedules_find(name);
  CHECK(info != NULL, "no row %s", name);
  if (!info) return NULL;
  schedules_opts o;
  if (over)
    o = *over;
  else
    schedules_opts_init(&o, info, 0.1, T);
  schedules_sched *s = NULL;
  char err[256] = "";
  int rc = schedules_sched_new(&s, info, &o, err, sizeof err);
  CHECK(rc == SCHEDULES_OK && s, "%s: %s", name, err);
  return s;
}

/* The profiles' closed forms at z with default knobs. */
static double closed(const char *name, double z) {
  if (!strcmp(name, "constant") || !strcmp(name, "plateau")) return 1;
  if (!strcmp(name, "step")) return pow(0.1, floor(z * 3 + 1e-9));
  if (!strcmp(name, "multistep")) return z >= 0.75 ? 0.01 : z >= 0.5 ? 0.1 : 1;
  if (!strcmp(name, "exponential")) return pow(0.01, z);
  if (!strcmp(name, "linear")) return 1 - z;
  if (!strcmp(name, "cosine")) return (1 + cos(PI * z)) / 2;
  if (!strcmp(name, "onecycle")) {
    double lo = 1.0 / 25, end = lo / 1e4;
    return z < 0.3 ? lo + (1 - lo) * (1 - cos(PI * z / 0.3)) / 2
                   : end + (1 - end) * (1 + cos(PI * (z - 0.3) / 0.7)) / 2;
  }
  if (!strcmp(name, "poly")) return (1 - z) * (1 - z);
  if (!strcmp(name, "invsqrt")) return 1 / sqrt(1 + z / 0.05);
  if (!strcmp(name, "rex")) return (1 - z) / (1 - 0.5 * z);
  return NAN;
}

static void test_closed_forms(void) {
  int n_rows = 0;
  for (const schedules_info *p = schedules_table; p->name; p++, n_rows++) {
    CHECK(!isnan(closed(p->name, 0.5)), "row %s has no closed form in this test", p->name);
    schedules_sched *s = make(p->name, 1000, NULL);
    if (!s) continue;
    /* start, middle, end, and the points either side of step and one-cycle boundaries */
    const int64_t steps[] = {0, 1, 299, 300, 333, 334, 500, 666, 667, 750, 999, 1000};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
      double z = steps[i] / 1000.0, want = 0.1 * closed(p->name, z);
      double got = schedules_sched_lr(s, steps[i]);
      CHECK(near(got, want), "%s at step %lld: %.17g, want %.17g", p->name, (long long)steps[i],
            got, want);
    }
    schedules_sched_free(s);
  }
  CHECK(n_rows == 11, "11 profiles, got %d", n_rows);
  /* boundaries that are exact in rationals but not in binary: z = 1/3, 2/3 over T = 300 */
  schedules_sched *st = make("step", 300, NULL);
  if (st) {
    CHECK(near(schedules_sched_lr(st, 99), 0.1) && near(schedules_sched_lr(st, 100), 0.01) &&
              near(schedules_sched_lr(st, 199), 0.01) && near(schedules_sched_lr(st, 200), 0.001),
          "step decays at 1/3 and 2/3 exactly");
    schedules_sched_free(st);
  }
  /* hand values: the paper's REX at the middle is 2/3; d = 0 is linear; d = 0.9 */
  const schedules_info *rex = schedules_find("rex");
  schedules_opts o;
  schedules_opts_init(&o, rex, 1.0, 10);
  CHECK(near(schedules_rex_profile(0.5, &o), 2.0 / 3.0), "rex(0.5)");
  o.knob[0] = 0;
  for (int t = 0; t <= 10; t++)
    CHECK(near(schedules_rex_profile(t / 10.0, &o), 1 - t / 10.0), "rex d=0 is linear at %d", t);
  o.knob[0] = 0.9;
  CHECK(near(schedules_rex_profile(0.5, &o), 0.5 / 0.55), "rex d=0.9 at 0.5");
  CHECK(near(schedules_rex_profile(1, &o), 0), "rex d=0.9 ends at 0");
}

static void test_shapes(void) {
  for (const schedules_info *p = schedules_table; p->name; p++) {
    schedules_sched *s = make(p->name, 1000, NULL);
    if (!s) continue;
    int in_range = 1, monotone = 1, rises = 0;
    for (int64_t t = 0; t <= 1000; t++) {
      double f = schedules_sched_fraction(s, t);
      in_range &= f >= 0 && f <= 1;
      if (t > 0) {
        double prev = schedules_sched_lr(s, t - 1), cur = schedules_sched_lr(s, t);
        monotone &= cur <= prev;
        rises |= cur > prev;
      }
    }
    CHECK(in_range, "%s: f outside [0, 1]", p->name);
    if (p->flags & SCHEDULES_MONOTONE) CHECK(monotone, "%s: not non-increasing", p->name);
    if (!strcmp(p->name, "onecycle")) CHECK(rises, "onecycle rises first");
    if (p->flags & SCHEDULES_ENDS_AT_0)
      CHECK(schedules_sched_lr(s, 1000) == 0, "%s: lr(T) = %g", p->name,
            schedules_sched_lr(s, 1000));
    CHECK(near(schedules_sched_lr(s, 0), 0.1 * closed(p->name, 0)), "%s: lr(0)", p->name);
    /* steps outside the budget are clamped */
    CHECK(schedules_sched_lr(s, -5) == schedules_sched_lr(s, 0), "%s: clamp below", p->name);
    CHECK(schedules_sched_lr(s, 5000) == schedules_sched_lr(s, 1000), "%s: clamp above", p->name);
    schedules_sched_free(s);
  }
  /* REX is monotone for every d in [0, 1) */
  const schedules_info *rex = schedules_find("rex");
  const double ds[] = {0, 0.25, 0.5, 0.9, 0.99};
  for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) {
    schedules_opts o;
    schedules_opts_init(&o, rex, 1.0, 500);
    o.knob[0] = ds[i];
    schedules_sched *s = make("rex", 0, &o);
    if (!s) continue;
    int mono = 1;
    for (int t = 1; t <= 500; t++) mono &= schedules_sched_lr(s, t) <= schedules_sched_lr(s, t - 1);
    CHECK(mono, "rex d=%g monotone", ds[i]);
    /* REX lies above linear: (1 - z)/(1 - d z) >= 1 - z */
    CHECK(schedules_sched_lr(s, 250) >= 0.5, "rex d=%g above linear", ds[i]);
    schedules_sched_free(s);
  }
}

static void test_warmup_min(void) {
  const char *names[] = {"rex", "cosine", "linear", "poly", "step", "onecycle", "constant"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const schedules_info *info = schedules_find(names[i]);
    schedules_opts o;
    schedules_opts_init(&o, info, 0.2, 1100);
    o.warmup = 100;
    o.min_lr = 0.01;
    schedules_sched *s = make(names[i], 0, &o);
    if (!s) continue;
    int ok = 1;
    for (int64_t t = 0; t < 100; t++) ok &= near(schedules_sched_lr(s, t), 0.2 * (t + 1) / 101.0);
    CHECK(ok, "%s: linear warm-up (s + 1) / (W + 1)", names[i]);
    CHECK(schedules_sched_lr(s, 99) < schedules_sched_lr(s, 100) || !strcmp(names[i], "onecycle"),
          "%s: warm-up ends below base", names[i]);
    /* after warm-up: min + (base - min) f((s - W) / (T - W)) */
    ok = 1;
    for (int64_t t = 100; t <= 1100; t += 50)
      ok &= near(schedules_sched_lr(s, t), 0.01 + 0.19 * closed(names[i], (t - 100) / 1000.0));
    CHECK(ok, "%s: profile over the budget after warm-up, lifted to min_lr", names[i]);
    int above = 1;
    for (int64_t t = 100; t <= 1100; t++) above &= schedules_sched_lr(s, t) >= 0.01 - 1e-15;
    CHECK(above, "%s: never below min_lr after warm-up", names[i]);
    if (info->flags & SCHEDULES_ENDS_AT_0)
      CHECK(near(schedules_sched_lr(s, 1100), 0.01), "%s: lr(T) = min_lr", names[i]);
    CHECK(near(schedules_sched_lr(s, 100), 0.01 + 0.19 * closed(names[i], 0)),
          "%s: lr(W) is the profile's start", names[i]);
    schedules_sched_free(s);
  }
}

static void test_sampling(void) {
  /* every epoch: 10 epochs of 37 steps; within an epoch the lr holds at f(e / E) */
  const char *names[] = {"rex", "cosine", "exponential", "invsqrt"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const schedules_info *info = schedules_find(names[i]);
    schedules_opts o;
    schedules_opts_init(&o, info, 1.0, 370);
    o.every = 37;
    schedules_sched *s = make(names[i], 0, &o);
    if (!s) continue;
    int ok = 1, changes = 0;
    for (int64_t t = 0; t <= 370; t++) {
      ok &= near(schedules_sched_lr(s, t), closed(names[i], (t / 37) / 10.0));
      if (t > 0) changes += schedules_sched_lr(s, t) != schedules_sched_lr(s, t - 1);
    }
    CHECK(ok, "%s: sampled every epoch", names[i]);
    CHECK(changes == 10, "%s: 10 changes over 10 epochs, got %d", names[i], changes);
    schedules_sched_free(s);
  }
  /* every k iterations with a warm-up: the ramp is per step, the sampling counts from W */
  const schedules_info *rex = schedules_find("rex");
  schedules_opts o;
  schedules_opts_init(&o, rex, 1.0, 105);
  o.warmup = 5;
  o.every = 10;
  schedules_sched *s = make("rex", 0, &o);
  if (s) {
    CHECK(near(schedules_sched_lr(s, 4), 5 / 6.0), "ramp per step under sampling");
    CHECK(near(schedules_sched_lr(s, 5), 1) && near(schedules_sched_lr(s, 14), 1),
          "first sample holds for k steps");
    CHECK(near(schedules_sched_lr(s, 15), closed("rex", 0.1)), "second sample at W + k");
    schedules_sched_free(s);
  }
}

static void test_rescale(void) {
  char err[256];
  for (const schedules_info *p = schedules_table; p->name; p++) {
    schedules_opts o;
    schedules_opts_init(&o, p, 0.5, 200);
    o.warmup = 20;
    o.min_lr = 0.05;
    schedules_sched *s = make(p->name, 0, &o), *r = NULL;
    if (!s) continue;
    int rc = schedules_sched_rescale(&r, s, 600, err, sizeof err);
    CHECK(rc == SCHEDULES_OK && r, "%s rescale: %s", p->name, err);
    if (!r) {
      schedules_sched_free(s);
      continue;
    }
    CHECK(schedules_sched_opts(r)->warmup == 60, "%s: warm-up scaled to 60, got %lld", p->name,
          (long long)schedules_sched_opts(r)->warmup);
    int ok = 1;
    for (int64_t t = 20; t <= 200; t++)
      ok &= schedules_sched_lr(r, 3 * t) == schedules_sched_lr(s, t);
    CHECK(ok, "%s: lr_600(3 s) == lr_200(s) after warm-up", p->name);
    schedules_sched_free(r);
    /* a shorter budget: 10% of it */
    rc = schedules_sched_rescale(&r, s, 20, err, sizeof err);
    CHECK(rc == SCHEDULES_OK && schedules_sched_opts(r)->warmup == 2, "%s: 10%% budget", p->name);
    ok = 1;
    for (int64_t t = 2; r && t <= 20; t++)
      ok &= schedules_sched_lr(r, t) == schedules_sched_lr(s, 10 * t);
    CHECK(ok, "%s: lr_20(s) == lr_200(10 s)", p->name);
    schedules_sched_free(r);
    schedules_sched_free(s);
  }
  /* warmup_frac is kept exactly */
  const schedules_info *cos_ = schedules_find("cosine");
  schedules_opts o;
  schedules_opts_init(&o, cos_, 1, 1000);
  o.warmup_frac = 0.05;
  o.warmup = 50;
  schedules_sched *s = make("cosine", 0, &o), *r = NULL;
  if (s) {
    schedules_sched_rescale(&r, s, 333, err, sizeof err);
    CHECK(r && schedules_sched_opts(r)->warmup == 17, "warmup_frac 0.05 of 333 is 17");
    schedules_sched_free(r);
    CHECK(schedules_sched_rescale(&r, s, 0, err, sizeof err) == SCHEDULES_ERR_ARG && !r,
          "rescale to 0 steps");
    schedules_sched_free(s);
  }
}

static void test_plateau(void) {
  schedules_plateau p;
  schedules_plateau_init(&p, 0.1, 2, 1e-4, 0, 0);
  /* 1.0 (best), then three non-improving values: bad 1, 2, 3 > patience 2 -> reduce */
  CHECK(!schedules_plateau_observe(&p, 1.0), "first value is the best");
  CHECK(!schedules_plateau_observe(&p, 0.99995), "below the relative threshold: bad 1");
  CHECK(!schedules_plateau_observe(&p, 1.2), "bad 2");
  CHECK(schedules_plateau_observe(&p, 1.0), "bad 3 > patience: reduced");
  CHECK(near(p.scale, 0.1) && p.n_reductions == 1 && p.n_bad == 0, "scale 0.1");
  CHECK(!schedules_plateau_observe(&p, 0.5), "an improvement resets");
  CHECK(p.best == 0.5, "best kept");
  /* NaN never improves */
  CHECK(!schedules_plateau_observe(&p, NAN) && !schedules_plateau_observe(&p, NAN) &&
            schedules_plateau_observe(&p, NAN),
        "NaN counts as bad");
  CHECK(near(p.scale, 0.01), "two reductions");
  /* cooldown: bad observations during it are not counted */
  schedules_plateau_init(&p, 0.5, 0, 0, 2, 0);
  schedules_plateau_observe(&p, 1);
  CHECK(schedules_plateau_observe(&p, 1), "patience 0: the first bad one reduces");
  CHECK(!schedules_plateau_observe(&p, 1) && !schedules_plateau_observe(&p, 1), "cooldown 2");
  CHECK(schedules_plateau_observe(&p, 1), "reduces again after the cooldown");
  /* maximize */
  schedules_plateau_init(&p, 0.1, 1, 0, 0, 1);
  schedules_plateau_observe(&p, 0.5);
  CHECK(!schedules_plateau_observe(&p, 0.6) && !schedules_plateau_observe(&p, 0.4) &&
            schedules_plateau_observe(&p, 0.6),
        "maximize: higher is better");
  /* through a schedule: the scale multiplies the profile */
  const schedules_info *info = schedules_find("plateau");
  schedules_opts o;
  schedules_opts_init(&o, info, 0.1, 100);
  o.min_lr = 0.001;
  char err[256];
  CHECK(schedules_opts_set(&o, info, "patience", 0, err, sizeof err) == SCHEDULES_OK, "%s", err);
  schedules_sched *s = make("plateau", 0, &o);
  if (s) {
    int reduced = -1;
    CHECK(schedules_sched_observe(s, 2.0, &reduced, err, sizeof err) == SCHEDULES_OK && !reduced,
          "first");
    CHECK(schedules_sched_observe(s, 2.0, &reduced, err, sizeof err) == SCHEDULES_OK && reduced,
          "reduced");
    CHECK(near(schedules_sched_lr(s, 50), 0.001 + 0.099 * 0.1), "lr = min + (base - min) 0.1");
    CHECK(schedules_sched_plateau(s)->n_reductions == 1, "state readable");
    schedules_sched *r = NULL;
    schedules_sched_rescale(&r, s, 200, err, sizeof err);
    CHECK(r && near(schedules_sched_lr(r, 0), 0.1), "rescale starts the rule afresh");
    schedules_sched_free(r);
    schedules_sched_free(s);
  }
  s = make("rex", 100, NULL);
  if (s) {
    int reduced = -1;
    CHECK(schedules_sched_observe(s, 1, &reduced, err, sizeof err) == SCHEDULES_ERR_STATE &&
              reduced == 0 && strstr(err, "not metric-driven"),
          "observe on rex: %s", err);
    CHECK(schedules_sched_plateau(s) == NULL, "no plateau state on rex");
    schedules_sched_free(s);
  }
}

static void expect_bad(const char *name, schedules_opts o, const char *want) {
  const schedules_info *info = schedules_find(name);
  schedules_sched *s = (schedules_sched *)&o; /* must be reset to NULL on failure */
  char err[256] = "";
  int rc = schedules_sched_new(&s, info, &o, err, sizeof err);
  CHECK(rc == SCHEDULES_ERR_ARG && s == NULL && strstr(err, want), "%s: want '%s', got %d '%s'",
        name, want, rc, err);
  schedules_sched_free(rc == SCHEDULES_OK ? s : NULL);
}

static void test_errors(void) {
  const schedules_info *rex = schedules_find("rex"), *ms = schedules_find("multistep"),
                       *pl = schedules_find("plateau"), *info = NULL;
  char err[640] = "";
  CHECK(schedules_lookup(&info, "warmcos", err, sizeof err) == SCHEDULES_ERR_NAME && !info,
        "unknown name");
  for (const schedules_info *p = schedules_table; p->name; p++)
    CHECK(strstr(err, p->name) != NULL, "the error lists %s: %s", p->name, err);
  CHECK(strstr(err, "'warmcos'") != NULL, "names the unknown: %s", err);
  CHECK(schedules_lookup(&info, "rex", NULL, 0) == SCHEDULES_OK && info == rex, "lookup");
  char small[8];
  size_t need = schedules_names(small, sizeof small);
  CHECK(need > sizeof small && strlen(small) == sizeof small - 1, "names truncate, need %zu", need);
  CHECK(schedules_lookup(&info, "nope", NULL, 0) == SCHEDULES_ERR_NAME, "err may be NULL");

  schedules_opts o;
  schedules_opts_init(&o, rex, 0.1, 100);
  schedules_opts b = o;
  b.base_lr = 0;
  expect_bad("rex", b, "base_lr");
  b = o, b.min_lr = 0.2;
  expect_bad("rex", b, "min_lr");
  b = o, b.total_steps = 0;
  expect_bad("rex", b, "total_steps");
  b = o, b.warmup = 100;
  expect_bad("rex", b, "warmup");
  b = o, b.every = 0;
  expect_bad("rex", b, "every");
  b = o, b.knob[0] = 1;
  expect_bad("rex", b, "d = 1 is outside [0, 1)");
  b = o, b.n_milestones = 1;
  expect_bad("rex", b, "no milestones");
  CHECK(schedules_opts_set(&o, rex, "gamma", 0.5, err, sizeof err) == SCHEDULES_ERR_NAME &&
            strstr(err, "its knobs: d"),
        "unknown knob: %s", err);
  CHECK(schedules_opts_set(&o, rex, "d", -0.1, err, sizeof err) == SCHEDULES_ERR_ARG &&
            o.knob[0] == 0.5,
        "out of range leaves the knob: %s", err);
  schedules_opts m;
  schedules_opts_init(&m, ms, 0.1, 100);
  b = m, b.milestones[1] = 0.25;
  expect_bad("multistep", b, "increasing");
  b = m, b.milestones[1] = 1.5;
  expect_bad("multistep", b, "milestone 2");
  schedules_opts q;
  schedules_opts_init(&q, pl, 0.1, 100);
  CHECK(schedules_opts_set(&q, pl, "patience", 2.5, err, sizeof err) == SCHEDULES_ERR_ARG &&
            strstr(err, "integer"),
        "integer knob: %s", err);
  CHECK(schedules_opts_set(&q, pl, "maximize", 2, err, sizeof err) == SCHEDULES_ERR_ARG, "bool");
  schedules_sched_free(NULL);
}

int main(void) {
  test_closed_forms();
  test_shapes();
  test_warmup_min();
  test_sampling();
  test_rescale();
  test_plateau();
  test_errors();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
