/* bench/store_query.c: reading the result store for the CLI: run lists, one run's details,
 * metric series, final values per experiment, grouped comparisons, sweep lookups. Results are
 * malloc'd structs whose strings live in one arena (struct wb_mem) freed with the result. */
#include "store_int.h"

#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

/* ---- Arena ---------------------------------------------------------------------------- */

struct mem_chunk {
  struct mem_chunk *next;
  size_t used, cap;
  max_align_t data[]; /* cap bytes, aligned for any type */
};

struct wb_mem {
  struct mem_chunk *chunks;
  void **owned; /* malloc'd blocks handed over with store_mem_adopt */
  size_t n_owned, cap_owned;
};

struct wb_mem *store_mem_new(void) {
  return calloc(1, sizeof(struct wb_mem));
}

void store_mem_free(struct wb_mem *m) {
  if (!m) return;
  for (struct mem_chunk *c = m->chunks, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
  free(m->owned);
  free(m);
}

void *store_mem_alloc(struct wb_mem *m, size_t size) {
  const size_t align = alignof(max_align_t);
  size = (size + align - 1) / align * align;
  if (size == 0) size = align;
  struct mem_chunk *c = m->chunks;
  if (!c || c->cap - c->used < size) {
    size_t cap = size > 16384 ? size : 16384;
    c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->used = 0;
    c->cap = cap;
    c->next = m->chunks;
    m->chunks = c;
  }
  void *p = (char *)c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

const char *store_mem_strdup(struct wb_mem *m, const char *str) {
  if (!str) str = "";
  size_t n = strlen(str) + 1;
  char *p = store_mem_alloc(m, n);
  if (p) memcpy(p, str, n);
  return p;
}

int store_mem_adopt(struct wb_mem *m, void *p) {
  if (!p) return 0;
  if (m->n_owned == m->cap_owned) {
    size_t cap = m->cap_owned ? 2 * m->cap_owned : 8;
    void **owned = realloc(m->owned, cap * sizeof *owned);
    if (!owned) {
      free(p);
      return -1;
    }
    m->owned = owned;
    m->cap_owned = cap;
  }
  m->owned[m->n_owned++] = p;
  return 0;
}

void *store_vec_push(store_vec *v) {
  if (v->n == v->cap) {
    int64_t cap = v->cap ? 2 * v->cap : 16;
    void *data = realloc(v->data, (size_t)cap * v->elem);
    if (!data) return NULL;
    v->data = data;
    v->cap = cap;
  }
  void *p = (char *)v->data + (size_t)v->n++ * v->elem;
  memset(p, 0, v->elem);
  return p;
}

/* ---- Reading rows --------------------------------------------------------------------- */

/* The columns read_run expects, in order, from runs r joined with experiments e. */
#define RUN_COLUMNS                                                                                \
  "r.id, r.experiment_id, e.name, r.parent_id, r.name, r.status, r.start_ms, r.end_ms,"            \
  " r.script, r.script_sha256, r.git_commit, r.git_dirty, r.host, r.cpu_model, r.threads,"         \
  " r.device, r.wb_version, r.seed, r.peak_rss_kb, r.wall_s, r.pid, r.error"                       \
  " FROM runs r JOIN experiments e ON e.id = r.experiment_id"

static const char *col_str(struct wb_mem *m, sqlite3_stmt *st, int i, int *oom) {
  const char *p = store_mem_strdup(m, (const char *)sqlite3_column_text(st, i));
  if (!p) *oom = 1;
  return p;
}

/* Fills *r from a row of RUN_COLUMNS; strings go to m. Returns 0, or -1 when out of memory. */
static int read_run(sqlite3_stmt *st, struct wb_mem *m, wb_run *r) {
  int oom = 0;
  memset(r, 0, sizeof *r);
  r->id = sqlite3_column_int64(st, 0);
  r->experiment_id = sqlite3_column_int64(st, 1);
  r->info.experiment = col_str(m, st, 2, &oom);
  r->info.parent_id = sqlite3_column_int64(st, 3);
  r->info.name = col_str(m, st, 4, &oom);
  wb_run_status status = WB_RUN_RUNNING;
  wb_run_status_parse(&status, (const char *)sqlite3_column_text(st, 5), NULL, 0);
  r->status = status;
  r->start_ms = sqlite3_column_int64(st, 6);
  r->end_ms = sqlite3_column_int64(st, 7);
  r->info.script = col_str(m, st, 8, &oom);
  r->info.script_sha256 = col_str(m, st, 9, &oom);
  r->info.git_commit = col_str(m, st, 10, &oom);
  r->info.git_dirty = sqlite3_column_type(st, 11) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 11);
  r->info.host = col_str(m, st, 12, &oom);
  r->info.cpu_model = col_str(m, st, 13, &oom);
  r->info.threads = sqlite3_column_int(st, 14);
  r->info.device = col_str(m, st, 15, &oom);
  r->info.wb_version = col_str(m, st, 16, &oom);
  r->info.has_seed = sqlite3_column_type(st, 17) != SQLITE_NULL;
  r->info.seed = sqlite3_column_int64(st, 17);
  r->peak_rss_kb = sqlite3_column_type(st, 18) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 18);
  r->wall_s = sqlite3_column_type(st, 19) == SQLITE_NULL ? -1.0 : sqlite3_column_double(st, 19);
  r->info.pid = sqlite3_column_int64(st, 20);
  r->error = col_str(m, st, 21, &oom);
  return oom ? -1 : 0;
}

/* A metric value as logged: NaN where is_nan. */
static double col_value(sqlite3_stmt *st, int value_col, int is_nan_col) {
  if (sqlite3_column_int(st, is_nan_col)) return NAN;
  return sqlite3_column_double(st, value_col);
}

static int prepare(wb_store *s, const char *sql, sqlite3_stmt **st, const char *what) {
  int r = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
  return r == SQLITE_OK ? WB_OK : store_sqlite_err(s, r, what);
}

/* Reads (key, value) rows of st (bound by the caller) into a new kv array adopted by m. */
static int read_kvs(wb_store *s, sqlite3_stmt *st, struct wb_mem *m, wb_kv **out, int64_t *n,
                    const char *what) {
  store_vec v = {.elem = sizeof(wb_kv)};
  int r, oom = 0;
  while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    wb_kv *kv = store_vec_push(&v);
    if (!kv) {
      oom = 1;
      break;
    }
    kv->key = col_str(m, st, 0, &oom);
    kv->value = col_str(m, st, 1, &oom);
    if (oom) break;
  }
  sqlite3_reset(st);
  if (oom || store_mem_adopt(m, v.data) != 0) {
    if (oom) free(v.data);
    return store_err(s, WB_ERR_NOMEM, "%s: out of memory", what);
  }
  if (r != SQLITE_DONE && r != SQLITE_ROW) return store_sqlite_err(s, r, what);
  *out = v.data;
  *n = v.n;
  return WB_OK;
}

/* Reads (key, step, timestamp_ms, value, is_nan) rows of st into a wb_metric_final array. */
static int read_finals(wb_store *s, sqlite3_stmt *st, struct wb_mem *m, wb_metric_final **out,
                       int64_t *n, const char *what) {
  store_vec v = {.elem = sizeof(wb_metric_final)};
  int r, oom = 0;
  while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    wb_metric_final *f = store_vec_push(&v);
    if (!f) {
      oom = 1;
      break;
    }
    f->key = col_str(m, st, 0, &oom);
    f->step = sqlite3_column_int64(st, 1);
    f->timestamp_ms = sqlite3_column_int64(st, 2);
    f->value = col_value(st, 3, 4);
    f->is_nan = sqlite3_column_int(st, 4) != 0;
    if (oom) break;
  }
  sqlite3_reset(st);
  if (oom || store_mem_adopt(m, v.data) != 0) {
    if (oom) free(v.data);
    return store_err(s, WB_ERR_NOMEM, "%s: out of memory", what);
  }
  if (r != SQLITE_DONE && r != SQLITE_ROW) return store_sqlite_err(s, r, what);
  *out = v.data;
  *n = v.n;
  return WB_OK;
}

/* ---- Run lists ------------------------------------------------------------------------ */

int wb_store_runs_list(wb_store *s, const char *experiment, wb_run_status status,
                       wb_run_list **out) {
  if (out) *out = NULL;
  STORE_ENTER(s);
  if (!out) return store_err(s, WB_ERR_ARG, "listing runs: out must be given");
  if (status != WB_RUN_ANY && !wb_run_status_name(status))
    return store_err(s, WB_ERR_ARG, "listing runs: unknown status %d", (int)status);
  sqlite3_stmt *st = NULL;
  int rc = prepare(s,
                   "SELECT " RUN_COLUMNS " WHERE (?1 IS NULL OR e.name = ?1)"
                   " AND (?2 IS NULL OR r.status = ?2) ORDER BY r.start_ms, r.id",
                   &st, "listing runs");
  if (rc != WB_OK) return rc;
  if (experiment) sqlite3_bind_text(st, 1, experiment, -1, SQLITE_STATIC);
  if (status != WB_RUN_ANY) sqlite3_bind_text(st, 2, wb_run_status_name(status), -1, SQLITE_STATIC);
  wb_run_list *l = calloc(1, sizeof *l);
  struct wb_mem *m = store_mem_new();
  store_vec v = {.elem = sizeof(wb_run)};
  int r = SQLITE_NOMEM;
  if (l && m) {
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
      wb_run *run = store_vec_push(&v);
      if (!run || read_run(st, m, run) != 0) {
        r = SQLITE_NOMEM;
        break;
      }
    }
  }
  sqlite3_finalize(st);
  if (r == SQLITE_DONE) {
    if (store_mem_adopt(m, v.data) != 0) {
      r = SQLITE_NOMEM;
    } else {
      l->n = v.n;
      l->runs = v.data;
      l->mem_ = m;
      *out = l;
      return WB_OK;
    }
  } else {
    free(v.data);
  }
  store_mem_free(m);
  free(l);
  return store_sqlite_err(s, r, "listing runs");
}

void wb_run_list_free(wb_run_list *l) {
  if (!l) return;
  store_mem_free(l->mem_);
  free(l);
}

/* ---- One run -------------------------------------------------------------------------- */

int wb_store_run_get(wb_store *s, int64_t run_id, wb_run_detail **out) {
  if (out) *out = NULL;
  STORE_ENTER(s);
  if (!out) return store_err(s, WB_ERR_ARG, "reading a run: out must be given");
  int rc = s->read_only ? WB_OK : wb_store_flush(s);
  if (rc != WB_OK) return rc;
  wb_run_detail *d = calloc(1, sizeof *d);
  struct wb_mem *m = store_mem_new();
  if (!d || !m) {
    free(d);
    store_mem_free(m);
    return store_err(s, WB_ERR_NOMEM, "reading a run: out of memory");
  }
  d->mem_ = m;
  /* one read transaction, so the run and its rows are one consistent snapshot */
  rc = store_exec(s, "BEGIN", "reading a run");
  sqlite3_stmt *st = NULL;
  if (rc == WB_OK) rc = prepare(s, "SELECT " RUN_COLUMNS " WHERE r.id = ?1", &st, "reading a run");
  if (rc == WB_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
      if (read_run(st, m, &d->run) != 0)
        rc = store_err(s, WB_ERR_NOMEM, "reading a run: out of memory");
    } else if (r == SQLITE_DONE) {
      rc = store_err(s, WB_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
    } else {
      rc = store_sqlite_err(s, r, "reading a run");
    }
    sqlite3_finalize(st);
    st = NULL;
  }
  if (rc == WB_OK)
    rc = prepare(s, "SELECT key, value FROM params WHERE run_id = ?1 ORDER BY key", &st,
                 "reading params");
  if (rc == WB_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    rc = read_kvs(s, st, m, &d->params, &d->n_params, "reading params");
    sqlite3_finalize(st);
    st = NULL;
  }
  if (rc == WB_OK)
    rc = prepare(s, "SELECT key, value FROM tags WHERE run_id = ?1 ORDER BY key", &st,
                 "reading tags");
  if (rc == WB_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    rc = read_kvs(s, st, m, &d->tags, &d->n_tags, "reading tags");
    sqlite3_finalize(st);
    st = NULL;
  }
  if (rc == WB_OK)
    rc = prepare(s,
                 "SELECT key, step, timestamp_ms, value, is_nan FROM latest_metrics"
                 " WHERE run_id = ?1 ORDER BY key",
                 &st, "reading metrics");
  if (rc == WB_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    rc = read_finals(s, st, m, &d->metrics, &d->n_metrics, "reading metrics");
    sqlite3_finalize(st);
    st = NULL;
  }
  if (rc == WB_OK)
    rc = prepare(s,
                 "SELECT path, kind, created_ms FROM artifacts WHERE run_id = ?1"
                 " ORDER BY created_ms, rowid",
                 &st, "reading artifacts");
  if (rc == WB_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    store_vec v = {.elem = sizeof(wb_artifact)};
    int r, oom = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
      wb_artifact *a = store_vec_push(&v);
      if (!a) {
        oom = 1;
        break;
      }
      a->path = col_str(m, st, 0, &oom);
      a->kind = col_str(m, st, 1, &oom);
      a->created_ms = sqlite3_column_int64(st, 2);
    }
    if (oom) {
      free(v.data);
      rc = store_err(s, WB_ERR_NOMEM, "reading artifacts: out of memory");
    } else if (r != SQLITE_DONE) {
      free(v.data);
      rc = store_sqlite_err(s, r, "reading artifacts");
    } else if (store_mem_adopt(m, v.data) != 0) {
      rc = store_err(s, WB_ERR_NOMEM, "reading artifacts: out of memory");
    } else {
      d->artifacts = v.data;
      d->n_artifacts = v.n;
    }
    sqlite3_finalize(st);
  }
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL); /* ends the read transaction */
  if (rc != WB_OK) {
    wb_run_detail_free(d);
    return rc;
  }
  *out = d;
  return WB_OK;
}

void wb_run_detail_free(wb_run_detail *d) {
  if (!d) return;
  store_mem_free(d->mem_);
  free(d);
}

/* ---- Metric series -------------------------------------------------------------------- */

void wb_metric_series_free(wb_metric_series *m) {
  if (!m) return;
  free(m->step);
  free(m->timestamp_ms);
  free(m->value);
  free(m);
}

int wb_store_metric_series(wb_store *s, int64_t run_id, const char *key, wb_metric_series **out) {
  if (out) *out = NULL;
  STORE_ENTER(s);
  if (!key || !out)
    return store_err(s, WB_ERR_ARG, "reading a metric series: key and out must be given");
  int rc = s->read_only ? WB_OK : wb_store_flush(s);
  if (rc == WB_OK) rc = store_run_check(s, run_id, NULL);
  if (rc != WB_OK) return rc;
  sqlite3_stmt *st = NULL;
  /* (run_id, key, step) index, rowid last in it: rows come out in order with no sort */
  rc = prepare(s,
               "SELECT step, timestamp_ms, value, is_nan FROM metrics"
               " WHERE run_id = ?1 AND key = ?2 ORDER BY step, rowid",
               &st, "reading a metric series");
  if (rc != WB_OK) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  wb_metric_series *m = calloc(1, sizeof *m);
  int64_t cap = 0;
  int r = m ? SQLITE_OK : SQLITE_NOMEM;
  while (r == SQLITE_OK && (r = sqlite3_step(st)) == SQLITE_ROW) {
    r = SQLITE_OK;
    if (m->n == cap) {
      cap = cap ? 2 * cap : 256;
      int64_t *step = realloc(m->step, (size_t)cap * sizeof *step);
      if (step) m->step = step;
      int64_t *ts = realloc(m->timestamp_ms, (size_t)cap * sizeof *ts);
      if (ts) m->timestamp_ms = ts;
      double *value = realloc(m->value, (size_t)cap * sizeof *value);
      if (value) m->value = value;
      if (!step || !ts || !value) {
        r = SQLITE_NOMEM;
        break;
      }
    }
    m->step[m->n] = sqlite3_column_int64(st, 0);
    m->timestamp_ms[m->n] = sqlite3_column_int64(st, 1);
    m->value[m->n] = col_value(st, 2, 3);
    m->n++;
  }
  sqlite3_finalize(st);
  if (r != SQLITE_DONE) {
    wb_metric_series_free(m);
    return store_sqlite_err(s, r, "reading a metric series");
  }
  *out = m;
  return WB_OK;
}

/* ---- Finals and comparisons ----------------------------------------------------------- */

int wb_store_finals(wb_store *s, const char *experiment, const char *metric, wb_finals **out) {
  if (out) *out = NULL;
  STORE_ENTER(s);
  if (!experiment || !out)
    return store_err(s, WB_ERR_ARG, "reading final values: experiment and out must be given");
  int rc = s->read_only ? WB_OK : wb_store_flush(s);
  if (rc != WB_OK) return rc;
  wb_finals *f = calloc(1, sizeof *f);
  struct wb_mem *m = store_mem_new();
  if (!f || !m) {
    free(f);
    store_mem_free(m);
    return store_err(s, WB_ERR_NOMEM, "reading final values: out of memory");
  }
  f->mem_ = m;
  sqlite3_stmt *runs = NULL, *params = NULL, *finals = NULL;
  store_vec v = {.elem = sizeof(wb_final_run)};
  rc = store_exec(s, "BEGIN", "reading final values");
  if (rc == WB_OK)
    rc = prepare(s,
                 "SELECT r.id, r.name, r.status FROM runs r JOIN experiments e"
                 " ON e.id = r.experiment_id WHERE e.name = ?1 ORDER BY r.start_ms, r.id",
                 &runs, "reading final values");
  if (rc == WB_OK)
    rc = prepare(s, "SELECT key, value FROM params WHERE run_id = ?1 ORDER BY key", &params,
                 "reading params");
  if (rc == WB_OK)
    rc = prepare(s,
                 "SELECT key, step, timestamp_ms, value, is_nan FROM latest_metrics"
                 " WHERE run_id = ?1 AND (?2 IS NULL OR key = ?2) ORDER BY key",
                 &finals, "reading final values");
  if (rc == WB_OK) {
    sqlite3_bind_text(runs, 1, experiment, -1, SQLITE_STATIC);
    if (metric) sqlite3_bind_text(finals, 2, metric, -1, SQLITE_STATIC);
    int r, oom = 0;
    while (rc == WB_OK && (r = sqlite3_step(runs)) == SQLITE_ROW) {
      wb_final_run *fr = store_vec_push(&v);
      if (!fr) {
        oom = 1;
        break;
      }
      fr->run_id = sqlite3_column_int64(runs, 0);
      fr->name = col_str(m, runs, 1, &oom);
      wb_run_status status = WB_RUN_RUNNING;
      wb_run_status_parse(&status, (const char *)sqlite3_column_text(runs, 2), NULL, 0);
      fr->status = status;
      if (oom) break;
      sqlite3_bind_int64(params, 1, fr->run_id);
      rc = read_kvs(s, params, m, &fr->params, &fr->n_params, "reading params");
      sqlite3_bind_int64(finals, 1, fr->run_id);
      if (rc == WB_OK)
        rc = read_finals(s, finals, m, &fr->metrics, &fr->n_metrics, "reading final values");
    }
    if (oom)
      rc = store_err(s, WB_ERR_NOMEM, "reading final values: out of memory");
    else if (rc == WB_OK && r != SQLITE_DONE)
      rc = store_sqlite_err(s, r, "reading final values");
  }
  sqlite3_finalize(runs);
  sqlite3_finalize(params);
  sqlite3_finalize(finals);
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc == WB_OK && store_mem_adopt(m, v.data) != 0) {
    v.data = NULL;
    rc = store_err(s, WB_ERR_NOMEM, "reading final values: out of memory");
  }
  if (rc != WB_OK) {
    free(v.data); /* not adopted on any failure path that reaches here with data */
    wb_finals_free(f);
    return rc;
  }
  f->n = v.n;
  f->runs = v.data;
  *out = f;
  return WB_OK;
}

void wb_finals_free(wb_finals *f) {
  if (!f) return;
  store_mem_free(f->mem_);
  free(f);
}

static int ignored(const char *key, const char *const *ignore_keys) {
  for (int i = 0; ignore_keys[i]; i++)
    if (strcmp(key, ignore_keys[i]) == 0) return 1;
  return 0;
}

/* Do runs a and b have the same params, leaving out ignored keys? Both are sorted by key. */
static int same_params(const wb_final_run *a, const wb_final_run *b,
                       const char *const *ignore_keys) {
  int64_t i = 0, j = 0;
  for (;;) {
    while (i < a->n_params && ignored(a->params[i].key, ignore_keys)) i++;
    while (j < b->n_params && ignored(b->params[j].key, ignore_keys)) j++;
    if (i == a->n_params || j == b->n_params) return i == a->n_params && j == b->n_params;
    if (strcmp(a->params[i].key, b->params[j].key) != 0 ||
        strcmp(a->params[i].value, b->params[j].value) != 0)
      return 0;
    i++, j++;
  }
}

int wb_store_compare(wb_store *s, const char *experiment, const char *metric,
                     const char *const *ignore_keys, wb_compare **out) {
  if (out) *out = NULL;
  STORE_ENTER(s);
  if (!experiment || !metric || !out)
    return store_err(s, WB_ERR_ARG, "comparing runs: experiment, metric and out must be given");
  static const char *const default_ignore[] = {"seed", NULL};
  if (!ignore_keys) ignore_keys = default_ignore;
  wb_finals *f = NULL;
  int rc = wb_store_finals(s, experiment, metric, &f);
  if (rc != WB_OK) return rc;

  wb_compare *c = calloc(1, sizeof *c);
  struct wb_mem *m = store_mem_new();
  /* group g's first run is rep[g]; member[i] is run i's group (-1: left out) */
  int64_t *member = malloc((size_t)(f->n + 1) * sizeof *member);
  int64_t *rep = malloc((size_t)(f->n + 1) * sizeof *rep);
  double *x = malloc((size_t)(f->n + 1) * sizeof *x);
  int oom = !c || !m || !member || !rep || !x;
  int64_t n_groups = 0;
  for (int64_t i = 0; !oom && i < f->n; i++) {
    const wb_final_run *run = &f->runs[i];
    member[i] = -1;
    if (run->status != WB_RUN_FINISHED || run->n_metrics == 0) continue;
    int64_t g = 0;
    while (g < n_groups && !same_params(&f->runs[rep[g]], run, ignore_keys)) g++;
    if (g == n_groups) rep[n_groups++] = i;
    member[i] = g;
  }
  if (!oom) {
    c->mem_ = m;
    c->metric = store_mem_strdup(m, metric);
    c->groups = store_mem_alloc(m, (size_t)(n_groups ? n_groups : 1) * sizeof *c->groups);
    oom = !c->metric || !c->groups;
  }
  for (int64_t g = 0; !oom && g < n_groups; g++) {
    wb_compare_group *grp = &c->groups[g];
    const wb_final_run *first = &f->runs[rep[g]];
    int64_t n_kept = 0, n_runs = 0;
    for (int64_t j = 0; j < first->n_params; j++)
      n_kept += !ignored(first->params[j].key, ignore_keys);
    for (int64_t i = 0; i < f->n; i++) n_runs += member[i] == g;
    grp->params = store_mem_alloc(m, (size_t)(n_kept ? n_kept : 1) * sizeof *grp->params);
    grp->run_ids = store_mem_alloc(m, (size_t)n_runs * sizeof *grp->run_ids);
    if (!grp->params || !grp->run_ids) {
      oom = 1;
      break;
    }
    for (int64_t j = 0; j < first->n_params; j++) {
      if (ignored(first->params[j].key, ignore_keys)) continue;
      wb_kv *kv = &grp->params[grp->n_params++];
      kv->key = store_mem_strdup(m, first->params[j].key);
      kv->value = store_mem_strdup(m, first->params[j].value);
      if (!kv->key || !kv->value) oom = 1;
    }
    int64_t n_x = 0;
    for (int64_t i = 0; i < f->n; i++) {
      if (member[i] != g) continue;
      const wb_metric_final *fin = &f->runs[i].metrics[0];
      grp->run_ids[grp->n_runs++] = f->runs[i].run_id;
      if (fin->is_nan || isnan(fin->value))
        grp->n_nan++;
      else
        x[n_x++] = fin->value;
    }
    wb_stats_compute(&grp->stats, x, n_x);
  }
  if (c) c->n_groups = n_groups;
  free(member);
  free(rep);
  free(x);
  wb_finals_free(f);
  if (oom) {
    if (!c || !c->mem_) store_mem_free(m);
    wb_compare_free(c);
    return store_err(s, WB_ERR_NOMEM, "comparing runs: out of memory");
  }
  *out = c;
  return WB_OK;
}

void wb_compare_free(wb_compare *c) {
  if (!c) return;
  store_mem_free(c->mem_);
  free(c);
}

/* ---- Sweeps --------------------------------------------------------------------------- */

int wb_store_sweep_find(wb_store *s, int64_t parent_id, const wb_kv *params, int64_t n_params,
                        int64_t *run_id) {
  if (run_id) *run_id = 0;
  STORE_ENTER(s);
  if (!run_id || n_params < 0 || (n_params > 0 && !params))
    return store_err(s, WB_ERR_ARG, "finding a sweep point: params and run_id must be given");
  for (int64_t i = 0; i < n_params; i++)
    if (!params[i].key || !params[i].value)
      return store_err(s, WB_ERR_ARG, "finding a sweep point: param %lld has no key or value",
                       (long long)i);
  sqlite3_stmt *kids = NULL, *get = NULL;
  int rc = store_exec(s, "BEGIN", "finding a sweep point");
  if (rc == WB_OK)
    rc = prepare(s,
                 "SELECT id FROM runs WHERE parent_id = ?1 AND status = 'FINISHED'"
                 " ORDER BY start_ms DESC, id DESC",
                 &kids, "finding a sweep point");
  if (rc == WB_OK)
    rc = prepare(s, "SELECT 1 FROM params WHERE run_id = ?1 AND key = ?2 AND value = ?3", &get,
                 "finding a sweep point");
  if (rc == WB_OK) {
    sqlite3_bind_int64(kids, 1, parent_id);
    int r;
    while ((r = sqlite3_step(kids)) == SQLITE_ROW) {
      int64_t id = sqlite3_column_int64(kids, 0);
      int match = 1;
      for (int64_t i = 0; match && i < n_params; i++) {
        sqlite3_bind_int64(get, 1, id);
        sqlite3_bind_text(get, 2, params[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_text(get, 3, params[i].value, -1, SQLITE_STATIC);
        int g = sqlite3_step(get);
        sqlite3_reset(get);
        if (g == SQLITE_DONE) {
          match = 0;
        } else if (g != SQLITE_ROW) {
          r = g;
          break;
        }
      }
      if (r != SQLITE_ROW) break;
      if (match) {
        *run_id = id;
        r = SQLITE_DONE;
        break;
      }
    }
    if (r != SQLITE_DONE) rc = store_sqlite_err(s, r, "finding a sweep point");
  }
  sqlite3_finalize(kids);
  sqlite3_finalize(get);
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != WB_OK) *run_id = 0;
  return rc;
}
