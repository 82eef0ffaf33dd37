/* bench/report.c: the report generator (see report.h): reads the result store through its
 * public API (store.h) and writes one self-contained HTML file (inline CSS, inline SVG, a few
 * lines of inline JavaScript to sort tables; nothing fetched from the network) and a
 * GitHub-flavoured Markdown file with the same tables.
 *
 * Per experiment: a summary, the groups (runs with equal params other than "seed"), final
 * metrics per group (bar chart with 95% CI error bars, and a table with mean, std, CI, min,
 * max; the store's wb_store_compare does the statistics), learning curves of every metric
 * logged at more than one step (one plot per run, one per group with a mean +/- std band), the
 * runs, the final values per run, the errors of failed runs and the runs' metadata.
 * Metric keys are ordered eval/... first, then by key.
 */
#define _POSIX_C_SOURCE 200809L
#include "report.h"
#include "report_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Data of one experiment ------------------------------------------------------------ */

typedef struct rgroup {
  char *key;     /* canonical form of the params other than seed: k \x1f v \x1e ... */
  char *label;   /* all its params: "lr=0.1, opt=sgd", or "(no params)" */
  char *name;    /* "2: lr=0.1": its number and the params that differ between groups (all of
                  * them when there is one group), for legends and tables */
  int64_t first; /* its first run (index into the run list) */
} rgroup;

typedef struct rexp {
  const char *name; /* owned by list */
  wb_run_list *list;
  wb_run_detail **det; /* (list->n) */
  char **tooltip;      /* (list->n) "run 7 (FAILED): lr=0.1, seed=4" */
  int *group;          /* (list->n) index into groups */
  int n_groups;
  rgroup *groups;
  int n_keys;
  const char **keys; /* metric keys, eval/... first; strings owned by det */
} rexp;

typedef struct rctx {
  wb_store *s;
  wb_rbuf html, md;
  char *err;
  size_t errlen;
  int rc;
} rctx;

static int fail(rctx *c, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (c->err && c->errlen) vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
  c->rc = rc;
  return rc;
}

static int nomem(rctx *c) { return fail(c, WB_ERR_NOMEM, "out of memory"); }

static char *dup_buf(wb_rbuf *b) {
  if (b->oom) {
    wb_rbuf_free(b);
    return NULL;
  }
  if (!b->p) return calloc(1, 1);
  char *p = b->p;
  b->p = NULL;
  b->n = b->cap = 0;
  return p;
}

/* Writes a param value so that "k=v, k2=v2" stays unambiguous: quoted, CSV-style, when it
 * holds , " = or edge spaces, or is empty. */
static void put_value(wb_rbuf *b, const char *v) {
  size_t n = strlen(v);
  int quote = n == 0 || strpbrk(v, ",\"=") || v[0] == ' ' || v[n - 1] == ' ';
  if (!quote) {
    wb_rbuf_put(b, v);
    return;
  }
  wb_rbuf_put(b, "\"");
  for (const char *p = v; *p; p++) {
    wb_rbuf_putn(b, p, 1);
    if (*p == '"') wb_rbuf_putn(b, p, 1); /* doubled */
  }
  wb_rbuf_put(b, "\"");
}

/* "k=v, k2=v2" of params (raw text: escaped when written out); skip names a key left out. */
static void put_params(wb_rbuf *b, const wb_kv *kv, int64_t n, const char *skip) {
  int first = 1;
  for (int64_t i = 0; i < n; i++) {
    if (skip && !strcmp(kv[i].key, skip)) continue;
    if (!first) wb_rbuf_put(b, ", ");
    first = 0;
    wb_rbuf_put(b, kv[i].key);
    wb_rbuf_put(b, "=");
    put_value(b, kv[i].value);
  }
}

/* The canonical group key of params without seed (params are sorted by key). */
static char *group_key(const wb_kv *kv, int64_t n) {
  wb_rbuf b = {0};
  for (int64_t i = 0; i < n; i++) {
    if (!strcmp(kv[i].key, "seed")) continue;
    wb_rbuf_put(&b, kv[i].key);
    wb_rbuf_put(&b, "\x1f");
    wb_rbuf_put(&b, kv[i].value);
    wb_rbuf_put(&b, "\x1e");
  }
  return dup_buf(&b);
}

static int find_group(const rexp *e, const char *key) {
  for (int g = 0; g < e->n_groups; g++)
    if (!strcmp(e->groups[g].key, key)) return g;
  return -1;
}

/* eval/... first, then by key. */
static int key_cmp(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  int ex = !strncmp(x, "eval/", 5), ey = !strncmp(y, "eval/", 5);
  if (ex != ey) return ey - ex;
  return strcmp(x, y);
}

static void rexp_free(rexp *e) {
  if (!e->list) return;
  if (e->det)
    for (int64_t i = 0; i < e->list->n; i++) wb_run_detail_free(e->det[i]);
  if (e->tooltip)
    for (int64_t i = 0; i < e->list->n; i++) free(e->tooltip[i]);
  for (int g = 0; g < e->n_groups; g++) {
    free(e->groups[g].key);
    free(e->groups[g].label);
    free(e->groups[g].name);
  }
  free(e->det);
  free(e->tooltip);
  free(e->group);
  free(e->groups);
  free(e->keys);
  wb_run_list_free(e->list);
  memset(e, 0, sizeof *e);
}

static int rexp_name_groups(rctx *c, rexp *e);

/* Reads everything about experiment name except metric series. */
static int rexp_load(rctx *c, rexp *e, const char *name) {
  memset(e, 0, sizeof *e);
  int rc = wb_store_runs_list(c->s, name, WB_RUN_ANY, &e->list);
  if (rc) return fail(c, rc, "experiment '%s': %s", name, wb_store_errmsg(c->s));
  e->name = name;
  int64_t n = e->list->n;
  if (n == 0) return WB_OK; /* the caller reports it */
  e->det = calloc((size_t)n, sizeof *e->det);
  e->tooltip = calloc((size_t)n, sizeof *e->tooltip);
  e->group = calloc((size_t)n, sizeof *e->group);
  e->groups = calloc((size_t)n, sizeof *e->groups);
  if (!e->det || !e->tooltip || !e->group || !e->groups) return nomem(c);
  int64_t n_keys = 0;
  for (int64_t i = 0; i < n; i++) {
    const wb_run *r = &e->list->runs[i];
    rc = wb_store_run_get(c->s, r->id, &e->det[i]);
    if (rc)
      return fail(c, rc, "run %lld of experiment '%s': %s", (long long)r->id, name,
                  wb_store_errmsg(c->s));
    const wb_run_detail *d = e->det[i];
    n_keys += d->n_metrics;
    char *key = group_key(d->params, d->n_params);
    if (!key) return nomem(c);
    int g = find_group(e, key);
    if (g < 0) {
      wb_rbuf lb = {0};
      put_params(&lb, d->params, d->n_params, "seed");
      if (lb.n == 0) wb_rbuf_put(&lb, "(no params)");
      g = e->n_groups++;
      e->groups[g].key = key;
      e->groups[g].label = dup_buf(&lb);
      e->groups[g].first = i;
      if (!e->groups[g].label) return nomem(c);
    } else {
      free(key);
    }
    e->group[i] = g;
    wb_rbuf tb = {0};
    wb_rbuf_printf(&tb, "run %lld", (long long)r->id);
    if (r->info.name[0]) wb_rbuf_printf(&tb, " \"%s\"", r->info.name);
    wb_rbuf_printf(&tb, " (%s): ", wb_run_status_name(r->status));
    put_params(&tb, d->params, d->n_params, NULL);
    if (!(e->tooltip[i] = dup_buf(&tb))) return nomem(c);
  }
  e->keys = malloc((size_t)(n_keys ? n_keys : 1) * sizeof *e->keys);
  if (!e->keys) return nomem(c);
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < e->det[i]->n_metrics; k++)
      e->keys[e->n_keys++] = e->det[i]->metrics[k].key;
  qsort(e->keys, (size_t)e->n_keys, sizeof *e->keys, key_cmp);
  int u = 0;
  for (int k = 0; k < e->n_keys; k++)
    if (u == 0 || strcmp(e->keys[u - 1], e->keys[k])) e->keys[u++] = e->keys[k];
  e->n_keys = u;
  return rexp_name_groups(c, e);
}

/* The value of param key in a sorted list, or NULL. */
static const char *param_of(const wb_kv *kv, int64_t n, const char *key) {
  for (int64_t i = 0; i < n; i++)
    if (!strcmp(kv[i].key, key)) return kv[i].value;
  return NULL;
}

/* Names the groups by the params whose values differ between groups (present in one group
 * and missing in another counts as differing), so that legends stay short and tell groups
 * apart: two groups always differ in at least one such param. */
static int rexp_name_groups(rctx *c, rexp *e) {
  for (int g = 0; g < e->n_groups; g++) {
    const wb_run_detail *d = e->det[e->groups[g].first];
    wb_rbuf nb = {0};
    wb_rbuf_printf(&nb, "%d: ", g + 1);
    size_t start = nb.n;
    for (int64_t i = 0; i < d->n_params && e->n_groups > 1; i++) {
      const char *k = d->params[i].key, *v = d->params[i].value;
      if (!strcmp(k, "seed")) continue;
      int differs = 0;
      for (int h = 0; h < e->n_groups && !differs; h++) {
        const wb_run_detail *o = e->det[e->groups[h].first];
        const char *w = param_of(o->params, o->n_params, k);
        differs = !w || strcmp(v, w);
      }
      if (!differs) continue;
      if (nb.n > start) wb_rbuf_put(&nb, ", ");
      wb_rbuf_put(&nb, k);
      wb_rbuf_put(&nb, "=");
      put_value(&nb, v);
    }
    if (nb.n == start) wb_rbuf_put(&nb, e->groups[g].label);
    if (!(e->groups[g].name = dup_buf(&nb))) return nomem(c);
  }
  return WB_OK;
}

/* The final value of key in a run's details, or NULL. */
static const wb_metric_final *final_of(const wb_run_detail *d, const char *key) {
  for (int64_t i = 0; i < d->n_metrics; i++)
    if (!strcmp(d->metrics[i].key, key)) return &d->metrics[i];
  return NULL;
}

/* ---- Table cells --------------------------------------------------------------------- */

static void html_num_cell(wb_rbuf *h, double v) {
  char a[32], b[32];
  wb_rbuf_printf(h, "<td class=\"num\" data-v=\"%s\">%s</td>", wb_report_fmt_key(a, v),
                 wb_report_fmt(b, v));
}

static void md_num_cell(wb_rbuf *m, double v) {
  char a[32];
  wb_rbuf_printf(m, " %s |", wb_report_fmt(a, v));
}

static void html_text_cell(wb_rbuf *h, const char *s) {
  wb_rbuf_put(h, "<td>");
  wb_rbuf_html(h, s);
  wb_rbuf_put(h, "</td>");
}

static void md_text_cell(wb_rbuf *m, const char *s) {
  wb_rbuf_put(m, " ");
  wb_rbuf_md(m, s);
  wb_rbuf_put(m, " |");
}

/* Opens a sortable table with the given header cells in both outputs. */
static void table_open(rctx *c, const char *const *cols, int n) {
  wb_rbuf_put(&c->html, "<table class=\"sortable\"><thead><tr>");
  wb_rbuf_put(&c->md, "\n|");
  for (int i = 0; i < n; i++) {
    wb_rbuf_put(&c->html, "<th>");
    wb_rbuf_html(&c->html, cols[i]);
    wb_rbuf_put(&c->html, "</th>");
    md_text_cell(&c->md, cols[i]);
  }
  wb_rbuf_put(&c->html, "</tr></thead><tbody>\n");
  wb_rbuf_put(&c->md, "\n|");
  for (int i = 0; i < n; i++) wb_rbuf_put(&c->md, "---|");
  wb_rbuf_put(&c->md, "\n");
}

static void table_close(rctx *c) {
  wb_rbuf_put(&c->html, "</tbody></table>\n");
  wb_rbuf_put(&c->md, "\n");
}

/* A heading in both outputs (level 2..4), text escaped; id (HTML) may be NULL. */
static void heading(rctx *c, int level, const char *id, const char *prefix, const char *text) {
  wb_rbuf_printf(&c->html, "<h%d", level);
  if (id) wb_rbuf_printf(&c->html, " id=\"%s\"", id);
  wb_rbuf_put(&c->html, ">");
  wb_rbuf_html(&c->html, prefix);
  wb_rbuf_html(&c->html, text);
  wb_rbuf_printf(&c->html, "</h%d>\n", level);
  wb_rbuf_put(&c->md, "\n");
  for (int i = 0; i < level; i++) wb_rbuf_put(&c->md, "#");
  wb_rbuf_put(&c->md, " ");
  wb_rbuf_md(&c->md, prefix);
  wb_rbuf_md(&c->md, text);
  wb_rbuf_put(&c->md, "\n");
}

/* A paragraph of fixed (trusted) text in both outputs. */
static void para(rctx *c, const char *html, const char *md) {
  wb_rbuf_printf(&c->html, "<p class=\"note\">%s</p>\n", html);
  wb_rbuf_printf(&c->md, "\n%s\n", md);
}

static void fmt_duration(char *buf, size_t n, double s) {
  if (!(s >= 0)) {
    snprintf(buf, n, "-");
  } else if (s < 1) {
    snprintf(buf, n, "%.0f ms", s * 1000);
  } else if (s < 60) {
    snprintf(buf, n, "%.2f s", s);
  } else {
    long long t = (long long)(s + 0.5);
    if (t >= 3600)
      snprintf(buf, n, "%lldh %02lldm %02llds", t / 3600, t / 60 % 60, t % 60);
    else
      snprintf(buf, n, "%lldm %02llds", t / 60, t % 60);
  }
}

static double run_seconds(const wb_run *r) {
  if (r->wall_s >= 0) return r->wall_s;
  if (r->end_ms > 0) return (double)(r->end_ms - r->start_ms) / 1000.0;
  return NAN;
}

static void fmt_time_ms(char *buf, size_t n, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (ms <= 0 || !gmtime_r(&t, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm))
    snprintf(buf, n, "-");
}

/* ---- Sections -------------------------------------------------------------------------- */

static void section_summary(rctx *c, const rexp *e) {
  int64_t count[4] = {0};
  for (int64_t i = 0; i < e->list->n; i++) {
    int st = e->list->runs[i].status;
    if (st >= 0 && st < 4) count[st]++;
  }
  char line[256];
  snprintf(line, sizeof line,
           "%lld runs: %lld FINISHED, %lld FAILED, %lld KILLED, %lld RUNNING; %d groups of runs "
           "with equal params other than seed; %d metrics.",
           (long long)e->list->n, (long long)count[WB_RUN_FINISHED],
           (long long)count[WB_RUN_FAILED], (long long)count[WB_RUN_KILLED],
           (long long)count[WB_RUN_RUNNING], e->n_groups, e->n_keys);
  para(c, line, line);

  static const char *const cols[] = {"group", "params other than seed", "runs"};
  table_open(c, cols, 3);
  for (int g = 0; g < e->n_groups; g++) {
    wb_rbuf ids = {0};
    int64_t k = 0;
    for (int64_t i = 0; i < e->list->n; i++)
      if (e->group[i] == g)
        wb_rbuf_printf(&ids, "%s%lld", k++ ? ", " : "", (long long)e->list->runs[i].id);
    wb_rbuf_printf(&c->html,
                   "<tr><td data-v=\"%d\"><span class=\"swatch\" style=\"background:%s\">"
                   "</span>%d</td>",
                   g + 1, wb_report_colour(g), g + 1);
    html_text_cell(&c->html, e->groups[g].label);
    html_text_cell(&c->html, ids.p ? ids.p : "");
    wb_rbuf_put(&c->html, "</tr>\n");
    wb_rbuf_printf(&c->md, "| %d |", g + 1);
    md_text_cell(&c->md, e->groups[g].label);
    md_text_cell(&c->md, ids.p ? ids.p : "");
    wb_rbuf_put(&c->md, "\n");
    if (ids.oom) c->html.oom = 1;
    wb_rbuf_free(&ids);
  }
  table_close(c);
}

/* Bar chart and table of the final values of key per group. */
static int section_finals(rctx *c, const rexp *e, const char *key) {
  wb_compare *cmp = NULL;
  int rc = wb_store_compare(c->s, e->name, key, NULL, &cmp);
  if (rc)
    return fail(c, rc, "comparing '%s' in experiment '%s': %s", key, e->name,
                wb_store_errmsg(c->s));
  heading(c, 4, NULL, "", key);
  if (cmp->n_groups == 0) {
    para(c, "No FINISHED run logged this metric.", "No FINISHED run logged this metric.");
    wb_compare_free(cmp);
    return WB_OK;
  }
  wb_plot_bar *bars = calloc((size_t)cmp->n_groups, sizeof *bars);
  char **labels = calloc((size_t)cmp->n_groups, sizeof *labels);
  if (!bars || !labels) {
    free(bars);
    free(labels);
    wb_compare_free(cmp);
    return nomem(c);
  }
  for (int64_t i = 0; i < cmp->n_groups; i++) {
    const wb_compare_group *g = &cmp->groups[i];
    char *gk = group_key(g->params, g->n_params);
    int gi = gk ? find_group(e, gk) : -1;
    free(gk);
    wb_rbuf lb = {0};
    if (gi >= 0) {
      wb_rbuf_put(&lb, e->groups[gi].name);
    } else { /* cannot happen while both group by params without seed; still readable */
      put_params(&lb, g->params, g->n_params, NULL);
      if (lb.n == 0) wb_rbuf_put(&lb, "(no params)");
    }
    labels[i] = dup_buf(&lb);
    bars[i] = (wb_plot_bar){labels[i] ? labels[i] : "?", gi >= 0 ? gi : (int)i, g->stats.mean,
                            g->stats.ci95, g->stats.n};
  }
  wb_rbuf title = {0};
  wb_rbuf_printf(&title, "%s: final value per group (mean, 95%% CI)", key);
  wb_rbuf_put(&c->html, "<figure>");
  wb_svg_bars(&c->html, title.p ? title.p : key, key, bars, (int)cmp->n_groups);
  wb_rbuf_put(&c->html,
              "<figcaption>Bar: mean of the final value (the value at the last step) over the "
              "group's FINISHED runs; NaN finals are left out and counted in the table. Error "
              "bar: 95% confidence interval of the mean, t(0.975, n&minus;1)&middot;s/&radic;n "
              "(none when n &lt; 2; std and CI show &ndash; then).</figcaption></figure>\n");
  wb_rbuf_free(&title);

  static const char *const cols[] = {"group",    "runs",   "NaN",     "mean", "std",
                                     "95% CI ±", "CI low", "CI high", "min",  "max"};
  table_open(c, cols, 10);
  for (int64_t i = 0; i < cmp->n_groups; i++) {
    const wb_compare_group *g = &cmp->groups[i];
    const wb_stats *st = &g->stats;
    double v[9] = {(double)g->n_runs,   (double)g->n_nan,    st->mean, st->std, st->ci95,
                   st->mean - st->ci95, st->mean + st->ci95, st->min,  st->max};
    wb_rbuf_put(&c->html, "<tr>");
    html_text_cell(&c->html, bars[i].label);
    wb_rbuf_put(&c->md, "|");
    md_text_cell(&c->md, bars[i].label);
    for (int k = 0; k < 9; k++) {
      if (k >= 3 && k <= 6 && st->n < 2) { /* undefined for one value: a dash, not NaN */
        html_text_cell(&c->html, "\xe2\x80\x93");
        md_text_cell(&c->md, "\xe2\x80\x93");
        continue;
      }
      html_num_cell(&c->html, v[k]);
      md_num_cell(&c->md, v[k]);
    }
    wb_rbuf_put(&c->html, "</tr>\n");
    wb_rbuf_put(&c->md, "\n");
  }
  table_close(c);
  for (int64_t i = 0; i < cmp->n_groups; i++) free(labels[i]);
  free(labels);
  free(bars);
  wb_compare_free(cmp);
  return WB_OK;
}

/* Values of runs sel[0..n_sel-1] at each step of the union of their steps: mean and
 * mean +/- std (std of n - 1; NaN where fewer than two runs have a value). */
typedef struct band {
  int64_t n;
  int64_t *x;
  double *mean, *lo, *hi;
} band;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static void band_free(band *b) {
  free(b->x);
  free(b->mean);
  free(b->lo);
  free(b->hi);
  memset(b, 0, sizeof *b);
}

static int band_compute(band *b, wb_metric_series *const *series, const int64_t *sel,
                        int64_t n_sel) {
  memset(b, 0, sizeof *b);
  int64_t total = 0;
  for (int64_t k = 0; k < n_sel; k++) total += series[sel[k]]->n;
  b->x = malloc((size_t)(total ? total : 1) * sizeof *b->x);
  b->mean = malloc((size_t)(total ? total : 1) * sizeof *b->mean);
  b->lo = malloc((size_t)(total ? total : 1) * sizeof *b->lo);
  b->hi = malloc((size_t)(total ? total : 1) * sizeof *b->hi);
  int64_t *pos = calloc((size_t)(n_sel ? n_sel : 1), sizeof *pos);
  double *vals = malloc((size_t)(n_sel ? n_sel : 1) * sizeof *vals);
  if (!b->x || !b->mean || !b->lo || !b->hi || !pos || !vals) {
    free(pos);
    free(vals);
    band_free(b);
    return WB_ERR_NOMEM;
  }
  for (int64_t k = 0, t = 0; k < n_sel; k++)
    for (int64_t i = 0; i < series[sel[k]]->n; i++) b->x[t++] = series[sel[k]]->step[i];
  qsort(b->x, (size_t)total, sizeof *b->x, cmp_i64);
  int64_t u = 0;
  for (int64_t i = 0; i < total; i++)
    if (u == 0 || b->x[u - 1] != b->x[i]) b->x[u++] = b->x[i];
  b->n = u;
  for (int64_t j = 0; j < u; j++) {
    int64_t nv = 0;
    for (int64_t k = 0; k < n_sel; k++) {
      const wb_metric_series *m = series[sel[k]];
      while (pos[k] < m->n && m->step[pos[k]] < b->x[j]) pos[k]++;
      double v = NAN;
      int has = 0;
      for (; pos[k] < m->n && m->step[pos[k]] == b->x[j]; pos[k]++) {
        v = m->value[pos[k]]; /* several rows at one step: the last written counts */
        has = 1;
      }
      if (has && isfinite(v)) vals[nv++] = v;
    }
    wb_stats st;
    wb_stats_compute(&st, vals, nv);
    b->mean[j] = st.mean;
    b->lo[j] = st.mean - st.std; /* NaN (no band) unless two runs have a value */
    b->hi[j] = st.mean + st.std;
  }
  free(pos);
  free(vals);
  return WB_OK;
}

/* Learning curves of key: one plot per run, one per group. Nothing when key was logged at
 * a single step in every run (its bar chart says it all). */
static int section_curves(rctx *c, const rexp *e, const char *key, int *drawn) {
  int64_t n = e->list->n;
  *drawn = 0;
  wb_metric_series **ser = calloc((size_t)n, sizeof *ser);
  wb_plot_series *ps = calloc((size_t)n, sizeof *ps);
  wb_plot_legend *leg = calloc((size_t)e->n_groups + 1, sizeof *leg);
  band *bands = calloc((size_t)e->n_groups, sizeof *bands);
  char **glabels = calloc((size_t)e->n_groups, sizeof *glabels);
  int64_t *sel = calloc((size_t)n, sizeof *sel);
  int rc = WB_OK;
  if (!ser || !ps || !leg || !bands || !glabels || !sel) {
    rc = nomem(c);
    goto done;
  }
  int64_t smin = INT64_MAX, smax = INT64_MIN;
  for (int64_t i = 0; i < n; i++) {
    rc = wb_store_metric_series(c->s, e->list->runs[i].id, key, &ser[i]);
    if (rc) {
      fail(c, rc, "reading '%s' of run %lld: %s", key, (long long)e->list->runs[i].id,
           wb_store_errmsg(c->s));
      goto done;
    }
    if (ser[i]->n) {
      if (ser[i]->step[0] < smin) smin = ser[i]->step[0];
      if (ser[i]->step[ser[i]->n - 1] > smax) smax = ser[i]->step[ser[i]->n - 1];
    }
  }
  if (!(smin < smax)) goto done;
  *drawn = 1;

  /* per run, coloured by group; FAILED and KILLED runs dashed */
  int n_ps = 0, n_leg = 0, any_dashed = 0;
  char *in_plot = calloc((size_t)e->n_groups, 1);
  if (!in_plot) {
    rc = nomem(c);
    goto done;
  }
  for (int64_t i = 0; i < n; i++) {
    if (!ser[i]->n) continue;
    wb_run_status st = e->list->runs[i].status;
    int dashed = st == WB_RUN_FAILED || st == WB_RUN_KILLED;
    any_dashed |= dashed;
    in_plot[e->group[i]] = 1;
    ps[n_ps++] = (wb_plot_series){e->tooltip[i], e->group[i],   dashed, ser[i]->n,
                                  ser[i]->step,  ser[i]->value, NULL,   NULL};
  }
  for (int g = 0; g < e->n_groups; g++)
    if (in_plot[g]) leg[n_leg++] = (wb_plot_legend){e->groups[g].name, g, 0};
  free(in_plot);
  if (any_dashed) leg[n_leg++] = (wb_plot_legend){"FAILED or KILLED run", -1, 1};
  wb_rbuf title = {0};
  wb_rbuf_printf(&title, "%s: per run", key);
  wb_rbuf_put(&c->html, "<figure>");
  wb_svg_lines(&c->html, &(wb_plot){title.p ? title.p : key, "step", key, n_ps, ps, n_leg, leg});
  wb_rbuf_put(&c->html,
              "<figcaption>Each line is one run, coloured by its group; dashed: FAILED or "
              "KILLED runs; gaps: NaN or infinite values; a lone point is a dot. Hover a line "
              "for its run.</figcaption></figure>\n");
  wb_rbuf_free(&title);

  /* per group: mean line and mean +/- std band over the group's FINISHED runs */
  n_ps = n_leg = 0;
  for (int g = 0; g < e->n_groups; g++) {
    int64_t n_sel = 0;
    for (int64_t i = 0; i < n; i++)
      if (e->group[i] == g && e->list->runs[i].status == WB_RUN_FINISHED && ser[i]->n)
        sel[n_sel++] = i;
    if (!n_sel) continue;
    if (band_compute(&bands[g], ser, sel, n_sel)) {
      rc = nomem(c);
      goto done;
    }
    wb_rbuf lb = {0};
    wb_rbuf_printf(&lb, "%s (n=%lld)", e->groups[g].name, (long long)n_sel);
    if (!(glabels[g] = dup_buf(&lb))) {
      rc = nomem(c);
      goto done;
    }
    ps[n_ps++] = (wb_plot_series){glabels[g],    g,           0,          bands[g].n, bands[g].x,
                                  bands[g].mean, bands[g].lo, bands[g].hi};
    leg[n_leg++] = (wb_plot_legend){glabels[g], g, 0};
  }
  wb_rbuf_printf(&title, "%s: mean \xc2\xb1 std per group", key);
  wb_rbuf_put(&c->html, "<figure>");
  wb_svg_lines(&c->html, &(wb_plot){title.p ? title.p : key, "step", key, n_ps, ps, n_leg, leg});
  wb_rbuf_put(&c->html,
              "<figcaption>Line: mean over the group's FINISHED runs at each step (NaN values "
              "left out); band: mean &plusmn; one sample standard deviation (n&minus;1) across "
              "those runs, none where a single run has a value. n: runs in the "
              "group.</figcaption></figure>\n");
  wb_rbuf_free(&title);
done:
  if (ser)
    for (int64_t i = 0; i < n; i++) wb_metric_series_free(ser[i]);
  if (bands)
    for (int g = 0; g < e->n_groups; g++) band_free(&bands[g]);
  if (glabels)
    for (int g = 0; g < e->n_groups; g++) free(glabels[g]);
  free(ser);
  free(ps);
  free(leg);
  free(bands);
  free(glabels);
  free(sel);
  return rc;
}

/* The first line of s, at most max bytes (cut at a UTF-8 character boundary). */
static char *first_line(const char *s, size_t max) {
  size_t n = strcspn(s, "\r\n");
  int cut = s[n] != '\0';
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
    cut = 1;
  }
  wb_rbuf b = {0};
  wb_rbuf_putn(&b, s, n);
  if (cut) wb_rbuf_put(&b, " \xe2\x80\xa6");
  return dup_buf(&b);
}

static int section_runs(rctx *c, const rexp *e) {
  static const char *const cols[] = {"run",  "name",     "status", "params",
                                     "tags", "duration", "error"};
  table_open(c, cols, 7);
  for (int64_t i = 0; i < e->list->n; i++) {
    const wb_run *r = &e->list->runs[i];
    const wb_run_detail *d = e->det[i];
    wb_rbuf params = {0}, tags = {0};
    put_params(&params, d->params, d->n_params, NULL);
    for (int64_t k = 0, first = 1; k < d->n_tags; k++) {
      if (!strncmp(d->tags[k].key, "wb.", 3)) continue; /* system tags: see metadata */
      if (!first) wb_rbuf_put(&tags, ", ");
      first = 0;
      wb_rbuf_put(&tags, d->tags[k].key);
      wb_rbuf_put(&tags, "=");
      put_value(&tags, d->tags[k].value);
    }
    char *err = first_line(r->error, 160);
    if (params.oom || tags.oom || !err) {
      wb_rbuf_free(&params);
      wb_rbuf_free(&tags);
      free(err);
      return nomem(c);
    }
    const char *st = wb_run_status_name(r->status);
    double secs = run_seconds(r);
    char dur[64], key[32];
    fmt_duration(dur, sizeof dur, secs);
    wb_rbuf_printf(&c->html, "<tr><td class=\"num\" data-v=\"%lld\">%lld</td>", (long long)r->id,
                   (long long)r->id);
    html_text_cell(&c->html, r->info.name);
    wb_rbuf_printf(&c->html, "<td class=\"st-%s\">%s</td>", st, st);
    html_text_cell(&c->html, params.p ? params.p : "");
    html_text_cell(&c->html, tags.p ? tags.p : "");
    wb_rbuf_printf(&c->html, "<td class=\"num\" data-v=\"%s\">%s</td>",
                   wb_report_fmt_key(key, secs), dur);
    html_text_cell(&c->html, err);
    wb_rbuf_put(&c->html, "</tr>\n");
    wb_rbuf_printf(&c->md, "| %lld |", (long long)r->id);
    md_text_cell(&c->md, r->info.name);
    md_text_cell(&c->md, st);
    md_text_cell(&c->md, params.p ? params.p : "");
    md_text_cell(&c->md, tags.p ? tags.p : "");
    md_text_cell(&c->md, dur);
    md_text_cell(&c->md, err);
    wb_rbuf_put(&c->md, "\n");
    wb_rbuf_free(&params);
    wb_rbuf_free(&tags);
    free(err);
  }
  table_close(c);
  return WB_OK;
}

static int section_run_finals(rctx *c, const rexp *e) {
  const char **cols = malloc((size_t)(e->n_keys + 2) * sizeof *cols);
  if (!cols) return nomem(c);
  cols[0] = "run";
  cols[1] = "status";
  for (int k = 0; k < e->n_keys; k++) cols[k + 2] = e->keys[k];
  table_open(c, cols, e->n_keys + 2);
  free(cols);
  for (int64_t i = 0; i < e->list->n; i++) {
    const wb_run *r = &e->list->runs[i];
    const char *st = wb_run_status_name(r->status);
    wb_rbuf_printf(&c->html, "<tr><td class=\"num\" data-v=\"%lld\">%lld</td>", (long long)r->id,
                   (long long)r->id);
    wb_rbuf_printf(&c->html, "<td class=\"st-%s\">%s</td>", st, st);
    wb_rbuf_printf(&c->md, "| %lld | %s |", (long long)r->id, st);
    for (int k = 0; k < e->n_keys; k++) {
      const wb_metric_final *f = final_of(e->det[i], e->keys[k]);
      if (f) {
        html_num_cell(&c->html, f->is_nan ? NAN : f->value);
        md_num_cell(&c->md, f->is_nan ? NAN : f->value);
      } else {
        wb_rbuf_put(&c->html, "<td class=\"num\" data-v=\"\">-</td>");
        wb_rbuf_put(&c->md, " - |");
      }
    }
    wb_rbuf_put(&c->html, "</tr>\n");
    wb_rbuf_put(&c->md, "\n");
  }
  table_close(c);
  return WB_OK;
}

static void section_errors(rctx *c, const rexp *e) {
  int any = 0;
  for (int64_t i = 0; i < e->list->n; i++) any |= e->list->runs[i].error[0] != '\0';
  if (!any) return;
  heading(c, 3, NULL, "", "Errors");
  static const char *const cols[] = {"run", "status", "error"};
  table_open(c, cols, 3);
  for (int64_t i = 0; i < e->list->n; i++) {
    const wb_run *r = &e->list->runs[i];
    if (!r->error[0]) continue;
    const char *st = wb_run_status_name(r->status);
    wb_rbuf_printf(&c->html,
                   "<tr><td class=\"num\" data-v=\"%lld\">%lld</td><td class=\"st-%s\">%s</td>"
                   "<td><pre>",
                   (long long)r->id, (long long)r->id, st, st);
    wb_rbuf_html(&c->html, r->error);
    wb_rbuf_put(&c->html, "</pre></td></tr>\n");
    wb_rbuf_printf(&c->md, "| %lld | %s |", (long long)r->id, st);
    md_text_cell(&c->md, r->error);
    wb_rbuf_put(&c->md, "\n");
  }
  table_close(c);
}

static void section_metadata(rctx *c, const rexp *e) {
  static const char *const cols[] = {"run",        "started", "script",        "git commit",
                                     "host",       "CPU",     "threads",       "device",
                                     "wb version", "seed",    "peak RSS (MiB)"};
  table_open(c, cols, 11);
  for (int64_t i = 0; i < e->list->n; i++) {
    const wb_run *r = &e->list->runs[i];
    const wb_run_info *in = &r->info;
    char started[64], git[160], threads[32], seed[32], rss[32];
    fmt_time_ms(started, sizeof started, r->start_ms);
    snprintf(git, sizeof git, "%.120s%s", in->git_commit,
             in->git_commit[0] && in->git_dirty == 1 ? " (dirty)" : "");
    snprintf(threads, sizeof threads, in->threads > 0 ? "%d" : "-", in->threads);
    if (in->has_seed)
      snprintf(seed, sizeof seed, "%lld", (long long)in->seed);
    else
      snprintf(seed, sizeof seed, "-");
    if (r->peak_rss_kb >= 0)
      snprintf(rss, sizeof rss, "%.1f", (double)r->peak_rss_kb / 1024.0);
    else
      snprintf(rss, sizeof rss, "-");
    const char *cells[11] = {NULL,    started,    in->script,     git,  in->host, in->cpu_model,
                             threads, in->device, in->wb_version, seed, rss};
    wb_rbuf_printf(&c->html, "<tr><td class=\"num\" data-v=\"%lld\">%lld</td>", (long long)r->id,
                   (long long)r->id);
    wb_rbuf_printf(&c->md, "| %lld |", (long long)r->id);
    for (int k = 1; k < 11; k++) {
      if (k == 1) { /* a date that wraps reads badly */
        wb_rbuf_printf(&c->html, "<td class=\"nw\">%s</td>", started);
        md_text_cell(&c->md, started);
        continue;
      }
      html_text_cell(&c->html, cells[k][0] ? cells[k] : "-");
      md_text_cell(&c->md, cells[k][0] ? cells[k] : "-");
    }
    wb_rbuf_put(&c->html, "</tr>\n");
    wb_rbuf_put(&c->md, "\n");
  }
  table_close(c);
}

static int report_experiment(rctx *c, const rexp *e, int idx) {
  char id[32];
  snprintf(id, sizeof id, "x%d", idx + 1);
  wb_rbuf_printf(&c->html, "<section class=\"experiment\">\n");
  heading(c, 2, id, "Experiment: ", e->name);
  section_summary(c, e);

  heading(c, 3, NULL, "", "Final metrics per group");
  para(c,
       "Runs with equal params other than <code>seed</code> form a group; statistics over the "
       "group's FINISHED runs (NaN finals counted apart). 95% CI: t(0.975, n&minus;1)&middot;"
       "s/&radic;n. Click a column header to sort.",
       "Runs with equal params other than seed form a group; statistics over the group's "
       "FINISHED runs (NaN finals counted apart). 95% CI: t(0.975, n-1)·s/√n.");
  for (int k = 0; k < e->n_keys; k++)
    if (section_finals(c, e, e->keys[k])) return c->rc;

  heading(c, 3, NULL, "", "Learning curves");
  int any = 0;
  for (int k = 0; k < e->n_keys; k++) {
    int drawn = 0;
    if (section_curves(c, e, e->keys[k], &drawn)) return c->rc;
    any |= drawn;
  }
  if (!any)
    para(c, "No metric was logged at more than one step.",
         "No metric was logged at more than one step.");
  else
    wb_rbuf_put(&c->md, "\n(Learning curves are plotted in the HTML report.)\n");

  heading(c, 3, NULL, "", "Runs");
  if (section_runs(c, e)) return c->rc;
  heading(c, 3, NULL, "", "Final values per run");
  if (section_run_finals(c, e)) return c->rc;
  section_errors(c, e);
  heading(c, 3, NULL, "", "Run metadata");
  section_metadata(c, e);
  wb_rbuf_put(&c->html, "</section>\n");
  return WB_OK;
}

/* ---- Document ----------------------------------------------------------------------------- */

static const char CSS[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;"
    "max-width:1180px;padding:0 1em;color:#1b1b1b;background:#fff}"
    "h1{font-size:1.6em}h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}"
    "h4{margin-bottom:.3em;font-family:ui-monospace,monospace}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f2f2f2;cursor:pointer;user-select:none;white-space:nowrap}"
    "th::after{content:' \\2195';color:#999}th[aria-sort=ascending]::after{content:' \\2191'}"
    "th[aria-sort=descending]::after{content:' \\2193'}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    ".st-FAILED,.st-KILLED{color:#b00020;font-weight:600}.st-RUNNING{color:#8a6d00}"
    "td pre{margin:0;white-space:pre-wrap;max-width:60em}"
    ".swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:-.1em}"
    "figure{margin:.5em 0 1.5em}figcaption{font-size:.85em;color:#555;max-width:800px}"
    "svg.plot{max-width:100%;height:auto;border:1px solid #e4e4e4}"
    "svg .title{font-size:14px;font-weight:600;fill:#222}svg .tick{font-size:11px;fill:#444}"
    "svg .label{font-size:12px;fill:#222}svg .legend{font-size:11px;fill:#222}"
    "svg .value{font-size:11px}svg .note{font-size:13px;fill:#888}"
    "svg .grid{stroke:#e8e8e8;stroke-width:1}svg .axis{stroke:#444;stroke-width:1}"
    "p.note{color:#444}td.nw{white-space:nowrap}";

/* Sorts a table by the clicked column: numeric by data-v where present (NaN and empty
 * last), otherwise by text. */
static const char JS[] =
    "(function(){\n"
    "function key(r,i){var c=r.cells[i];if(!c)return{n:NaN,t:''};"
    "var v=c.getAttribute('data-v');"
    "if(v!==null)return{n:v===''?NaN:Number(v),t:null};return{n:NaN,t:c.textContent};}\n"
    "function cmp(a,b,asc){if(a.t===null&&b.t===null){var p=isNaN(a.n),q=isNaN(b.n);"
    "if(p||q)return p-q;var d=a.n<b.n?-1:a.n>b.n?1:0;return asc?d:-d;}"
    "var s=String(a.t===null?a.n:a.t).localeCompare(String(b.t===null?b.n:b.t),undefined,"
    "{numeric:true});return asc?s:-s;}\n"
    "var ths=document.querySelectorAll('table.sortable th');\n"
    "for(var k=0;k<ths.length;k++){ths[k].addEventListener('click',function(){\n"
    "var th=this,row=th.parentNode,i=Array.prototype.indexOf.call(row.children,th);\n"
    "var tb=th.closest('table').tBodies[0];\n"
    "var asc=th.getAttribute('aria-sort')!=='ascending';\n"
    "for(var j=0;j<row.children.length;j++)row.children[j].removeAttribute('aria-sort');\n"
    "th.setAttribute('aria-sort',asc?'ascending':'descending');\n"
    "var "
    "rows=Array.prototype.slice.call(tb.rows).map(function(r,n){return{r:r,k:key(r,i),n:n};});\n"
    "rows.sort(function(a,b){return cmp(a.k,b.k,asc)||a.n-b.n;});\n"
    "for(var j=0;j<rows.length;j++)tb.appendChild(rows[j].r);});}\n"
    "})();\n";

/* Writes text to path through a temporary file renamed into place, so that readers never
 * see half a report. */
static int write_file(rctx *c, const char *path, const wb_rbuf *b) {
  size_t n = strlen(path);
  char *tmp = malloc(n + 8);
  if (!tmp) return nomem(c);
  memcpy(tmp, path, n);
  memcpy(tmp + n, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    int e = errno;
    free(tmp);
    return fail(c, WB_ERR_IO, "cannot write %s: %s", path, strerror(e));
  }
  int ok = fwrite(b->p ? b->p : "", 1, b->n, f) == b->n;
  int e = errno;
  if (fclose(f) != 0 && ok) {
    ok = 0;
    e = errno;
  }
  if (ok && rename(tmp, path) != 0) {
    ok = 0;
    e = errno;
  }
  if (!ok) {
    remove(tmp);
    free(tmp);
    return fail(c, WB_ERR_IO, "cannot write %s: %s", path, strerror(e));
  }
  free(tmp);
  return WB_OK;
}

/* The distinct experiment names of all runs, in order of first run; strings owned by l. */
static int experiment_names(rctx *c, wb_run_list **l, const char ***names, int *n) {
  *names = NULL;
  *n = 0;
  int rc = wb_store_runs_list(c->s, NULL, WB_RUN_ANY, l);
  if (rc) return fail(c, rc, "listing runs: %s", wb_store_errmsg(c->s));
  *names = malloc((size_t)((*l)->n ? (*l)->n : 1) * sizeof **names);
  if (!*names) return nomem(c);
  for (int64_t i = 0; i < (*l)->n; i++) {
    const char *x = (*l)->runs[i].info.experiment;
    int seen = 0;
    for (int k = 0; k < *n && !seen; k++) seen = !strcmp((*names)[k], x);
    if (!seen) (*names)[(*n)++] = x;
  }
  return WB_OK;
}

int wb_report_write(wb_store *s, const char *const *experiments, int n, const char *html_path,
                    const char *md_path, char *err, size_t errlen) {
  rctx c = {.s = s, .err = err, .errlen = errlen};
  if (err && errlen) err[0] = '\0';
  if (!s || n < 0 || (n > 0 && !experiments) || (!html_path && !md_path))
    return fail(&c, WB_ERR_ARG,
                "needs a store, experiment names (or none for all) and an HTML or "
                "Markdown path");
  for (int i = 0; i < n; i++)
    if (!experiments[i] || !experiments[i][0]) return fail(&c, WB_ERR_ARG, "empty experiment name");

  wb_run_list *all = NULL;
  const char **names = NULL;
  int n_names = 0;
  rexp *exps = NULL;
  int n_exps = n;
  if (experiment_names(&c, &all, &names, &n_names)) goto done;
  if (n == 0) {
    if (n_names == 0) {
      fail(&c, WB_ERR_NOTFOUND, "the store %s holds no runs", wb_store_path(s));
      goto done;
    }
    experiments = names;
    n_exps = n_names;
  }
  exps = calloc((size_t)n_exps, sizeof *exps);
  if (!exps) {
    nomem(&c);
    goto done;
  }
  for (int i = 0; i < n_exps; i++) {
    if (rexp_load(&c, &exps[i], experiments[i])) goto done;
    if (exps[i].list->n == 0) {
      wb_rbuf known = {0};
      for (int k = 0; k < n_names; k++) wb_rbuf_printf(&known, "%s'%s'", k ? ", " : "", names[k]);
      fail(&c, WB_ERR_NOTFOUND, "experiment '%s' has no runs in %s (experiments with runs: %s)",
           experiments[i], wb_store_path(s), known.p ? known.p : "none");
      wb_rbuf_free(&known);
      goto done;
    }
  }

  char now[64];
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  fmt_time_ms(now, sizeof now, (int64_t)ts.tv_sec * 1000);
  wb_rbuf *h = &c.html;
  wb_rbuf_put(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                 "<title>wb report: ");
  for (int i = 0; i < n_exps; i++) {
    if (i) wb_rbuf_put(h, ", ");
    wb_rbuf_html(h, exps[i].name);
  }
  wb_rbuf_printf(h, "</title>\n<style>%s</style>\n</head><body>\n<h1>wb report</h1>\n", CSS);
  wb_rbuf_put(h, "<p class=\"note\">Store <code>");
  wb_rbuf_html(h, wb_store_path(s));
  wb_rbuf_printf(h, "</code>; generated %s.</p>\n<ul>\n", now);
  wb_rbuf_put(&c.md, "# wb report\n\nStore ");
  wb_rbuf_md(&c.md, wb_store_path(s));
  wb_rbuf_printf(&c.md, "; generated %s.\n", now);
  for (int i = 0; i < n_exps; i++) {
    wb_rbuf_printf(h, "<li><a href=\"#x%d\">", i + 1);
    wb_rbuf_html(h, exps[i].name);
    wb_rbuf_printf(h, "</a> (%lld runs)</li>\n", (long long)exps[i].list->n);
  }
  wb_rbuf_put(h, "</ul>\n");
  for (int i = 0; i < n_exps; i++)
    if (report_experiment(&c, &exps[i], i)) goto done;
  wb_rbuf_printf(h, "<script>\n%s</script>\n</body></html>\n", JS);
  if (c.html.oom || c.md.oom) {
    nomem(&c);
    goto done;
  }
  if (html_path && write_file(&c, html_path, &c.html)) goto done;
  if (md_path) write_file(&c, md_path, &c.md);
done:
  if (exps)
    for (int i = 0; i < n_exps; i++) rexp_free(&exps[i]);
  free(exps);
  free(names);
  wb_run_list_free(all);
  wb_rbuf_free(&c.html);
  wb_rbuf_free(&c.md);
  return c.rc;
}
