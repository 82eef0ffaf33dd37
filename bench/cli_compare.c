/* bench/cli_compare.c: `wb compare`: a metric's final values summarized per group of runs.
 *
 * The runs are the FINISHED runs of one experiment that logged the metric and pass --where.
 * Groups: equal values of the --group-by params, or (without --group-by) equal params apart
 * from seed, shown by the params that vary. Per group: n, mean, sample standard deviation and
 * the 95% confidence interval of the mean, mean +/- t(0.975, n-1) * std / sqrt(n)
 * (wb_stats_compute); runs whose final value is NaN are counted apart.
 *
 * --where language: COND {(',' | 'and') COND}, COND = PARAM OP VALUE, OP in = == != < <= > >=,
 * VALUE a bare word or a quoted string ('...' or "..."). Both sides numbers: compared as
 * numbers ("0.10" = "0.1"); otherwise as text. A run without PARAM fails the condition unless
 * OP is !=. */
#include "host.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- --where */

enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };

typedef struct cond {
  char key[128];
  int op;
  char value[256];
} cond;

static int is_key_char(int c) { return isalnum(c) || (c && strchr("_./:-", c)); }

/* Parses expr into conds (at most max). Returns the count, or -1 with a message in err. */
static int where_parse(const char *expr, cond *conds, int max, char *err, size_t errlen) {
  const char *p = expr;
  int n = 0;
  for (;;) {
    while (isspace((unsigned char)*p)) p++;
    if (n == max) {
      snprintf(err, errlen, "more than %d conditions", max);
      return -1;
    }
    cond *c = &conds[n];
    const char *k = p;
    while (is_key_char((unsigned char)*p)) p++;
    if (p == k || (size_t)(p - k) >= sizeof c->key) {
      snprintf(err, errlen, "expected a param name at position %d of '%s'", (int)(k - expr) + 1,
               expr);
      return -1;
    }
    snprintf(c->key, sizeof c->key, "%.*s", (int)(p - k), k);
    while (isspace((unsigned char)*p)) p++;
    static const struct {
      const char *text;
      int op;
    } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE},
               {"=", OP_EQ},  {"<", OP_LT},  {">", OP_GT}};
    int found = 0;
    for (int i = 0; i < 7 && !found; i++) {
      size_t len = strlen(ops[i].text);
      if (!strncmp(p, ops[i].text, len)) c->op = ops[i].op, p += len, found = 1;
    }
    if (!found) {
      snprintf(err, errlen, "expected one of = == != < <= > >= after '%s' in '%s'", c->key, expr);
      return -1;
    }
    while (isspace((unsigned char)*p)) p++;
    const char *v = p;
    size_t vlen;
    if (*p == '\'' || *p == '"') {
      const char *close = strchr(p + 1, *p);
      if (!close) {
        snprintf(err, errlen, "unterminated quote in '%s'", expr);
        return -1;
      }
      v = p + 1;
      vlen = (size_t)(close - v);
      p = close + 1;
    } else {
      while (*p && !isspace((unsigned char)*p) && *p != ',') p++;
      vlen = (size_t)(p - v);
      if (vlen == 0) {
        snprintf(err, errlen, "expected a value after '%s' in '%s'", c->key, expr);
        return -1;
      }
    }
    if (vlen >= sizeof c->value) {
      snprintf(err, errlen, "value of '%s' too long", c->key);
      return -1;
    }
    snprintf(c->value, sizeof c->value, "%.*s", (int)vlen, v);
    n++;
    while (isspace((unsigned char)*p)) p++;
    if (!*p) return n;
    if (*p == ',') {
      p++;
    } else if (!strncasecmp(p, "and", 3) && (isspace((unsigned char)p[3]))) {
      p += 3;
    } else {
      snprintf(err, errlen, "expected ',' or 'and' before '%s' in '%s'", p, expr);
      return -1;
    }
  }
}

static int as_number(const char *s, double *v) {
  char *end;
  if (!*s) return 0;
  *v = strtod(s, &end);
  return *end == '\0';
}

static const char *param_of(const wb_final_run *r, const char *key) {
  for (int64_t i = 0; i < r->n_params; i++)
    if (!strcmp(r->params[i].key, key)) return r->params[i].value;
  return NULL;
}

static int where_match(const wb_final_run *r, const cond *conds, int n) {
  for (int i = 0; i < n; i++) {
    const char *have = param_of(r, conds[i].key);
    if (!have) {
      if (conds[i].op != OP_NE) return 0;
      continue;
    }
    double a, b;
    int cmp;
    if (as_number(have, &a) && as_number(conds[i].value, &b))
      cmp = a < b ? -1 : a > b ? 1 : 0;
    else
      cmp = strcmp(have, conds[i].value);
    int ok;
    switch (conds[i].op) {
    case OP_EQ:
      ok = cmp == 0;
      break;
    case OP_NE:
      ok = cmp != 0;
      break;
    case OP_LT:
      ok = cmp < 0;
      break;
    case OP_LE:
      ok = cmp <= 0;
      break;
    case OP_GT:
      ok = cmp > 0;
      break;
    default:
      ok = cmp >= 0;
      break;
    }
    if (!ok) return 0;
  }
  return 1;
}

/* ---------------------------------------------------------------- grouping */

typedef struct group {
  int64_t first; /* index of its first run */
  int64_t n_runs, n_nan;
  double *x; /* (n_runs) final values that are not NaN */
  int64_t n_x;
  wb_stats stats;
} group;

static const wb_metric_final *final_of(const wb_final_run *r, const char *metric) {
  for (int64_t i = 0; i < r->n_metrics; i++)
    if (!strcmp(r->metrics[i].key, metric)) return &r->metrics[i];
  return NULL;
}

static const char *value_or_none(const wb_final_run *r, const char *key) {
  const char *v = param_of(r, key);
  return v ? v : "(none)";
}

static int same_group(const wb_final_run *a, const wb_final_run *b, char **keys, int n_keys) {
  for (int k = 0; k < n_keys; k++)
    if (strcmp(value_or_none(a, keys[k]), value_or_none(b, keys[k]))) return 0;
  return 1;
}

static void fmt(char *buf, size_t n, double v) {
  if (isnan(v))
    snprintf(buf, n, "-");
  else
    snprintf(buf, n, "%.6g", v);
}

int wb_cmd_compare(int argc, char **argv) {
  const char *db = NULL, *experiment = NULL, *metric = NULL, *where = NULL, *format = "text";
  char **keys = calloc((size_t)argc + 64, sizeof *keys);
  int n_keys = 0, rc = 2;
  wb_store *s = NULL;
  wb_finals *f = NULL;
  group *groups = NULL;
  double *xs = NULL;
  int64_t *member = NULL;
  if (!keys) return 1;
  for (int i = 0; i < argc; i++) {
    int r;
    const char *g;
    if ((r = wb_cli_opt("compare", argc, argv, &i, "--db", &db)) ||
        (r = wb_cli_opt("compare", argc, argv, &i, "--experiment", &experiment)) ||
        (r = wb_cli_opt("compare", argc, argv, &i, "--metric", &metric)) ||
        (r = wb_cli_opt("compare", argc, argv, &i, "--where", &where)) ||
        (r = wb_cli_opt("compare", argc, argv, &i, "--format", &format))) {
      if (r < 0) goto done;
      continue;
    }
    if ((r = wb_cli_opt("compare", argc, argv, &i, "--group-by", &g))) {
      if (r < 0) goto done;
      /* "a,b" or repeated options */
      for (const char *p = g; *p;) {
        size_t len = strcspn(p, ",");
        if (len && n_keys < argc + 63) {
          keys[n_keys] = malloc(len + 1);
          if (!keys[n_keys]) {
            rc = 1;
            goto done;
          }
          snprintf(keys[n_keys++], len + 1, "%.*s", (int)len, p);
        }
        p += len + (p[len] == ',');
      }
      continue;
    }
    fprintf(stderr,
            "wb compare: unexpected argument '%s' (`wb compare --help` lists the options)\n",
            argv[i]);
    goto done;
  }
  if (!experiment || !metric) {
    fprintf(stderr, "wb compare: --experiment and --metric are required\n");
    goto done;
  }
  int csv = !strcmp(format, "csv");
  if (!csv && strcmp(format, "text")) {
    fprintf(stderr, "wb compare: unknown format '%s'; formats: text, csv\n", format);
    goto done;
  }
  cond conds[32];
  int n_conds = 0;
  if (where) {
    char err[512];
    n_conds = where_parse(where, conds, 32, err, sizeof err);
    if (n_conds < 0) {
      fprintf(stderr, "wb compare: --where: %s\n", err);
      goto done;
    }
  }
  rc = 1;
  s = wb_cli_open("compare", db);
  if (!s) goto done;
  if (wb_store_finals(s, experiment, NULL, &f) != WB_OK) {
    fprintf(stderr, "wb compare: %s\n", wb_store_errmsg(s));
    goto done;
  }
  if (f->n == 0) {
    fprintf(stderr, "wb compare: experiment '%s' has no runs\n", experiment);
    goto done;
  }
  /* select the runs */
  member = malloc((size_t)f->n * sizeof *member);
  xs = malloc((size_t)f->n * sizeof *xs);
  groups = calloc((size_t)f->n, sizeof *groups);
  if (!member || !xs || !groups) goto oom;
  int64_t n_unfinished = 0, n_nometric = 0, n_filtered = 0, n_sel = 0;
  for (int64_t i = 0; i < f->n; i++) {
    const wb_final_run *r = &f->runs[i];
    member[i] = -1;
    if (r->status != WB_RUN_FINISHED) {
      n_unfinished++;
    } else if (!final_of(r, metric)) {
      n_nometric++;
    } else if (!where_match(r, conds, n_conds)) {
      n_filtered++;
    } else {
      member[i] = 0;
      n_sel++;
    }
  }
  if (n_sel == 0) {
    fprintf(stderr, "wb compare: no FINISHED run of '%s' has metric '%s'%s", experiment, metric,
            n_filtered ? " and passes --where" : "");
    /* name the metrics that exist, so a typo is easy to see */
    int shown = 0;
    for (int64_t i = 0; i < f->n; i++)
      for (int64_t j = 0; j < f->runs[i].n_metrics; j++) {
        const char *k = f->runs[i].metrics[j].key;
        int seen = 0;
        for (int64_t a = 0; a <= i && !seen; a++)
          for (int64_t b = 0; b < f->runs[a].n_metrics && !seen; b++)
            seen = (a < i || b < j) && !strcmp(f->runs[a].metrics[b].key, k);
        if (!seen) fprintf(stderr, "%s%s", shown++ ? ", " : "; metrics logged: ", k);
      }
    fprintf(stderr, "\n");
    goto done;
  }
  if (n_keys == 0) {
    /* group by every param but seed; show the ones that vary */
    int64_t first = -1;
    for (int64_t i = 0; i < f->n && first < 0; i++)
      if (member[i] >= 0) first = i;
    for (int64_t i = 0; i < f->n; i++) {
      if (member[i] < 0) continue;
      const wb_final_run *r = &f->runs[i];
      for (int64_t j = 0; j < r->n_params; j++) {
        const char *k = r->params[j].key;
        if (!strcmp(k, "seed")) continue;
        int have = 0;
        for (int a = 0; a < n_keys && !have; a++) have = !strcmp(keys[a], k);
        if (have) continue;
        int varies = 0;
        for (int64_t b = 0; b < f->n && !varies; b++)
          if (member[b] >= 0)
            varies = strcmp(value_or_none(&f->runs[b], k), value_or_none(&f->runs[first], k)) != 0;
        if (varies && n_keys < argc + 63) {
          keys[n_keys] = strdup(k);
          if (!keys[n_keys]) goto oom;
          n_keys++;
        }
      }
    }
  } else {
    for (int k = 0; k < n_keys; k++) {
      int have = 0;
      for (int64_t i = 0; i < f->n && !have; i++)
        have = member[i] >= 0 && param_of(&f->runs[i], keys[k]);
      if (!have) {
        fprintf(stderr,
                "wb compare: --group-by %s: no selected run has that param; params:", keys[k]);
        int64_t i = 0;
        while (member[i] < 0) i++;
        for (int64_t j = 0; j < f->runs[i].n_params; j++)
          fprintf(stderr, "%s %s", j ? "," : "", f->runs[i].params[j].key);
        fprintf(stderr, "\n");
        goto done;
      }
    }
  }
  /* group */
  int64_t n_groups = 0;
  for (int64_t i = 0; i < f->n; i++) {
    if (member[i] < 0) continue;
    int64_t g = 0;
    while (g < n_groups && !same_group(&f->runs[groups[g].first], &f->runs[i], keys, n_keys)) g++;
    if (g == n_groups) groups[n_groups++].first = i;
    member[i] = g;
    groups[g].n_runs++;
  }
  {
    double *next = xs;
    for (int64_t g = 0; g < n_groups; g++) {
      groups[g].x = next;
      next += groups[g].n_runs;
    }
  }
  for (int64_t i = 0; i < f->n; i++) {
    if (member[i] < 0) continue;
    group *g = &groups[member[i]];
    const wb_metric_final *m = final_of(&f->runs[i], metric);
    if (m->is_nan || isnan(m->value))
      g->n_nan++;
    else
      g->x[g->n_x++] = m->value;
  }
  for (int64_t g = 0; g < n_groups; g++)
    wb_stats_compute(&groups[g].stats, groups[g].x, groups[g].n_x);

  /* print */
  static const char *const cols[] = {"n", "mean", "std", "ci95", "ci_low", "ci_high", "nan"};
  int width[64 + 8];
  int nk = n_keys > 64 ? 64 : n_keys;
  for (int k = 0; k < nk; k++) {
    width[k] = (int)strlen(keys[k]);
    for (int64_t g = 0; g < n_groups; g++) {
      int w = (int)strlen(value_or_none(&f->runs[groups[g].first], keys[k]));
      if (w > width[k]) width[k] = w;
    }
  }
  if (!csv)
    printf("%s: %s, final values of %lld FINISHED runs in %lld groups\n", experiment, metric,
           (long long)n_sel, (long long)n_groups);
  for (int k = 0; k < nk; k++) {
    if (csv)
      printf("%s%s", k ? "," : "", keys[k]);
    else
      printf("%-*s  ", width[k], keys[k]);
  }
  if (nk == 0 && !csv) printf("%-5s  ", "group");
  for (int c = 0; c < 7; c++) {
    if (csv)
      printf("%s%s", nk || c ? "," : "", cols[c]);
    else
      printf(c == 0 ? "%4s" : c == 6 ? "  %4s" : "  %12s", cols[c]);
  }
  printf(csv ? "\r\n" : "\n");
  for (int64_t g = 0; g < n_groups; g++) {
    const wb_final_run *r = &f->runs[groups[g].first];
    const wb_stats *st = &groups[g].stats;
    char mean[32], sd[32], ci[32], lo[32], hi[32];
    fmt(mean, sizeof mean, st->mean);
    fmt(sd, sizeof sd, st->std);
    fmt(ci, sizeof ci, st->ci95);
    fmt(lo, sizeof lo, st->mean - st->ci95);
    fmt(hi, sizeof hi, st->mean + st->ci95);
    for (int k = 0; k < nk; k++) {
      if (csv) {
        if (k) putchar(',');
        wb_csv_write_field(stdout, value_or_none(r, keys[k]));
      } else {
        printf("%-*s  ", width[k], value_or_none(r, keys[k]));
      }
    }
    if (nk == 0 && !csv) printf("%-5s  ", "all");
    if (csv)
      printf("%s%lld,%s,%s,%s,%s,%s,%lld\r\n", nk ? "," : "", (long long)st->n, mean, sd, ci, lo,
             hi, (long long)groups[g].n_nan);
    else
      printf("%4lld  %12s  %12s  %12s  %12s  %12s  %4lld\n", (long long)st->n, mean, sd, ci, lo, hi,
             (long long)groups[g].n_nan);
  }
  if (!csv && (n_unfinished || n_nometric || n_filtered))
    printf("left out: %lld not FINISHED, %lld without %s, %lld by --where\n",
           (long long)n_unfinished, (long long)n_nometric, metric, (long long)n_filtered);
  rc = 0;
  goto done;
oom:
  fprintf(stderr, "wb compare: out of memory\n");
  rc = 1;
done:
  for (int k = 0; k < n_keys; k++) free(keys[k]);
  free(keys);
  free(groups);
  free(xs);
  free(member);
  wb_finals_free(f);
  wb_store_close(s);
  return rc;
}
