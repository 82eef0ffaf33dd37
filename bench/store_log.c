/* bench/store_log.c: writing to the result store: run begin/end, params, tags, artifacts, and
 * the metric buffer (rows kept in memory and written in one transaction per batch through
 * reused prepared statements, so a per-step log call costs well under a microsecond plus a
 * few microseconds per row when its batch is written). */
#include "store_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef WB_VERSION_STRING
#define WB_VERSION_STRING "unknown"
#endif

static int check_writable(wb_store *s, const char *what) {
  if (s->read_only)
    return store_err(s, WB_ERR_READONLY, "%s: the store was opened read-only", what);
  return WB_OK;
}

int store_run_check(wb_store *s, int64_t run_id, wb_run_status *status) {
  int rc = WB_OK;
  sqlite3_stmt *st = store_stmt(s, STMT_RUN_STATUS, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  int r = sqlite3_step(st);
  if (r == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    wb_run_status parsed = WB_RUN_RUNNING;
    wb_run_status_parse(&parsed, name, NULL, 0);
    if (status) *status = parsed;
  } else if (r == SQLITE_DONE) {
    rc = store_err(s, WB_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
  } else {
    rc = store_sqlite_err(s, r, "reading a run");
  }
  sqlite3_reset(st); /* release the read snapshot */
  return rc;
}

/* The "model name" line of /proc/cpuinfo, or "" . */
static void cpu_model(char *buf, size_t buflen) {
  buf[0] = '\0';
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) != 0) continue;
    char *colon = strchr(line, ':');
    if (!colon) continue;
    colon++;
    while (*colon == ' ' || *colon == '\t') colon++;
    colon[strcspn(colon, "\n")] = '\0';
    snprintf(buf, buflen, "%s", colon);
    break;
  }
  fclose(f);
}

/* Steps a one-shot statement to completion; returns the SQLite code (SQLITE_DONE mapped to
 * SQLITE_OK) and finalizes it. */
static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
  return rc;
}

int wb_store_run_begin(wb_store *s, const wb_run_info *info, int64_t *run_id) {
  if (run_id) *run_id = 0;
  STORE_ENTER(s);
  if (!info || !run_id)
    return store_err(s, WB_ERR_ARG, "wb_store_run_begin: info and run_id must be given");
  int rc = check_writable(s, "starting a run");
  if (rc != WB_OK) return rc;

  char host[256] = "", cpu[256] = "", proc[128] = "";
  const char *experiment = info->experiment && *info->experiment ? info->experiment : "default";
  const char *h = info->host;
  if (!h || !*h) {
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    h = host;
  }
  const char *c = info->cpu_model;
  if (!c || !*c) {
    cpu_model(cpu, sizeof cpu);
    c = cpu;
  }
  const char *ver = info->wb_version && *info->wb_version ? info->wb_version : WB_VERSION_STRING;
  int64_t pid = info->pid > 0 ? info->pid : (int64_t)getpid();
  store_proc_identity(pid, proc, sizeof proc);
  int64_t now = store_now_ms();

  if ((rc = store_exec(s, "BEGIN IMMEDIATE", "starting a run")) != WB_OK) return rc;
  sqlite3_stmt *st = NULL;
  int64_t exp_id = 0, id = 0;
  int r = sqlite3_prepare_v2(s->db,
                             "INSERT INTO experiments(name, created_ms) VALUES (?1, ?2)"
                             " ON CONFLICT (name) DO NOTHING",
                             -1, &st, NULL);
  if (r == SQLITE_OK) {
    sqlite3_bind_text(st, 1, experiment, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    r = step_done(st);
  }
  sqlite3_finalize(st);
  st = NULL;
  if (r == SQLITE_OK)
    r = sqlite3_prepare_v2(s->db, "SELECT id FROM experiments WHERE name = ?1", -1, &st, NULL);
  if (r == SQLITE_OK) {
    sqlite3_bind_text(st, 1, experiment, -1, SQLITE_STATIC);
    if ((r = sqlite3_step(st)) == SQLITE_ROW) {
      exp_id = sqlite3_column_int64(st, 0);
      r = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  st = NULL;
  if (r == SQLITE_OK && info->parent_id != 0) {
    rc = store_run_check(s, info->parent_id, NULL);
    if (rc != WB_OK) {
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
      if (rc == WB_ERR_NOTFOUND)
        store_err(s, rc, "starting a run: parent run %lld does not exist",
                  (long long)info->parent_id);
      return rc;
    }
  }
  if (r == SQLITE_OK)
    r = sqlite3_prepare_v2(s->db,
                           "INSERT INTO runs(experiment_id, parent_id, name, status, start_ms,"
                           " script, script_sha256, git_commit, git_dirty, host, cpu_model,"
                           " threads, device, wb_version, seed, pid)"
                           " VALUES (?1, ?2, ?3, 'RUNNING', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                           " ?12, ?13, ?14, ?15)",
                           -1, &st, NULL);
  if (r == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, exp_id);
    if (info->parent_id != 0) sqlite3_bind_int64(st, 2, info->parent_id);
    sqlite3_bind_text(st, 3, info->name ? info->name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    store_bind_text_or_null(st, 5, info->script);
    store_bind_text_or_null(st, 6, info->script_sha256);
    store_bind_text_or_null(st, 7, info->git_commit);
    if (info->git_commit && *info->git_commit && (info->git_dirty == 0 || info->git_dirty == 1))
      sqlite3_bind_int(st, 8, info->git_dirty);
    store_bind_text_or_null(st, 9, h);
    store_bind_text_or_null(st, 10, c);
    if (info->threads > 0) sqlite3_bind_int(st, 11, info->threads);
    store_bind_text_or_null(st, 12, info->device);
    store_bind_text_or_null(st, 13, ver);
    if (info->has_seed) sqlite3_bind_int64(st, 14, info->seed);
    sqlite3_bind_int64(st, 15, pid);
    r = step_done(st);
    id = sqlite3_last_insert_rowid(s->db);
  }
  sqlite3_finalize(st);
  st = NULL;
  if (r == SQLITE_OK && proc[0]) {
    r = sqlite3_prepare_v2(s->db, "INSERT INTO tags(run_id, key, value) VALUES (?1, 'wb.proc', ?2)",
                           -1, &st, NULL);
    if (r == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, id);
      sqlite3_bind_text(st, 2, proc, -1, SQLITE_STATIC);
      r = step_done(st);
    }
    sqlite3_finalize(st);
  }
  if (r == SQLITE_OK) r = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (r != SQLITE_OK) {
    rc = store_sqlite_err(s, r, "starting a run");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  *run_id = id;
  s->known_run_id = id;
  return WB_OK;
}

int wb_store_run_end(wb_store *s, int64_t run_id, wb_run_status status, const char *error,
                     double wall_s, int64_t peak_rss_kb) {
  STORE_ENTER(s);
  if (status != WB_RUN_FINISHED && status != WB_RUN_FAILED && status != WB_RUN_KILLED)
    return store_err(s, WB_ERR_ARG, "ending run %lld: status must be FINISHED, FAILED or KILLED",
                     (long long)run_id);
  int rc = check_writable(s, "ending a run");
  if (rc == WB_OK) rc = wb_store_flush(s);
  if (rc != WB_OK) return rc;
  wb_run_status cur = WB_RUN_RUNNING;
  if ((rc = store_run_check(s, run_id, &cur)) != WB_OK) return rc;
  if (cur != WB_RUN_RUNNING)
    return store_err(s, WB_ERR_STATE, "ending run %lld: it is already %s", (long long)run_id,
                     wb_run_status_name(cur));
  if (peak_rss_kb < 0) {
    struct rusage ru;
    peak_rss_kb = getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss : 0; /* KiB on Linux */
  }
  int64_t now = store_now_ms();
  sqlite3_stmt *st = NULL;
  int r =
      sqlite3_prepare_v2(s->db,
                         "UPDATE runs SET status = ?2, end_ms = ?3, error = ?4, peak_rss_kb = ?5,"
                         " wall_s = CASE WHEN ?6 < 0 THEN (?3 - start_ms) / 1000.0 ELSE ?6 END"
                         " WHERE id = ?1 AND status = 'RUNNING'",
                         -1, &st, NULL);
  if (r == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_text(st, 2, wb_run_status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    store_bind_text_or_null(st, 4, error);
    sqlite3_bind_int64(st, 5, peak_rss_kb);
    sqlite3_bind_double(st, 6, isfinite(wall_s) ? wall_s : -1.0);
    r = step_done(st);
  }
  sqlite3_finalize(st);
  if (r != SQLITE_OK) return store_sqlite_err(s, r, "ending a run");
  if (sqlite3_changes(s->db) == 0) /* another process ended it between check and update */
    return store_err(s, WB_ERR_STATE, "ending run %lld: it is no longer RUNNING",
                     (long long)run_id);
  return WB_OK;
}

/* Shared by param/tag/artifact: argument checks and the run's existence. */
static int check_kv(wb_store *s, int64_t run_id, const char *key, const char *value,
                    const char *what) {
  if (!key || !*key || !value)
    return store_err(s, WB_ERR_ARG, "%s: key must be non-empty and value given", what);
  int rc = check_writable(s, what);
  if (rc == WB_OK) rc = store_run_check(s, run_id, NULL);
  return rc;
}

int wb_store_param_set(wb_store *s, int64_t run_id, const char *key, const char *value) {
  STORE_ENTER(s);
  int rc = check_kv(s, run_id, key, value, "setting a param");
  if (rc != WB_OK) return rc;
  sqlite3_stmt *st = store_stmt(s, STMT_PARAM_INSERT, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, value, -1, SQLITE_STATIC);
  int r = step_done(st);
  sqlite3_reset(st);
  if (r != SQLITE_OK) return store_sqlite_err(s, r, "setting a param");
  if (sqlite3_changes(s->db) == 1) return WB_OK;
  /* the key was already there: the same value is fine, another value is a conflict */
  if (!(st = store_stmt(s, STMT_PARAM_GET, &rc))) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  r = sqlite3_step(st);
  if (r == SQLITE_ROW) {
    const char *old = (const char *)sqlite3_column_text(st, 0);
    if (!old || strcmp(old, value) != 0)
      rc = store_err(s, WB_ERR_CONFLICT,
                     "param '%s' of run %lld is already '%s'; params are written once per run "
                     "(tried '%s')",
                     key, (long long)run_id, old ? old : "", value);
  } else {
    rc = store_sqlite_err(s, r == SQLITE_DONE ? SQLITE_INTERNAL : r, "reading a param");
  }
  sqlite3_reset(st);
  return rc;
}

int wb_store_tag_set(wb_store *s, int64_t run_id, const char *key, const char *value) {
  STORE_ENTER(s);
  int rc = check_kv(s, run_id, key, value, "setting a tag");
  if (rc != WB_OK) return rc;
  sqlite3_stmt *st = store_stmt(s, STMT_TAG_UPSERT, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, value, -1, SQLITE_STATIC);
  int r = step_done(st);
  sqlite3_reset(st);
  return r == SQLITE_OK ? WB_OK : store_sqlite_err(s, r, "setting a tag");
}

int wb_store_artifact_add(wb_store *s, int64_t run_id, const char *path, const char *kind) {
  STORE_ENTER(s);
  int rc = check_kv(s, run_id, path, kind ? kind : "", "adding an artifact");
  if (rc != WB_OK) return rc;
  sqlite3_stmt *st = store_stmt(s, STMT_ARTIFACT_INSERT, &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, run_id);
  sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, kind ? kind : "", -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, store_now_ms());
  int r = step_done(st);
  sqlite3_reset(st);
  return r == SQLITE_OK ? WB_OK : store_sqlite_err(s, r, "adding an artifact");
}

/* ---- Metrics -------------------------------------------------------------------------- */

int wb_store_metric_log(wb_store *s, int64_t run_id, const char *key, int64_t step, double value) {
  STORE_ENTER(s);
  if (!key || !*key) return store_err(s, WB_ERR_ARG, "logging a metric: key must be non-empty");
  int rc;
  if (s->read_only) return check_writable(s, "logging a metric");
  if (run_id != s->known_run_id) {
    if ((rc = store_run_check(s, run_id, NULL)) != WB_OK) return rc;
    s->known_run_id = run_id;
  }
  if (s->n_rows >= STORE_MAX_PENDING)
    return store_err(s, WB_ERR_NOMEM,
                     "logging metric '%s': %d rows wait to be written and writes keep failing; "
                     "this value was dropped",
                     key, STORE_MAX_PENDING);
  size_t klen = strlen(key) + 1;
  if (s->n_rows == s->cap_rows) {
    int64_t cap = s->cap_rows ? 2 * s->cap_rows : 256;
    store_pending *rows = realloc(s->rows, (size_t)cap * sizeof *rows);
    if (!rows) return store_err(s, WB_ERR_NOMEM, "logging a metric: out of memory");
    s->rows = rows;
    s->cap_rows = cap;
  }
  if (s->keys_len + klen > s->keys_cap) {
    size_t cap = s->keys_cap ? 2 * s->keys_cap : 4096;
    while (cap < s->keys_len + klen) cap *= 2;
    char *keys = realloc(s->keys, cap);
    if (!keys) return store_err(s, WB_ERR_NOMEM, "logging a metric: out of memory");
    s->keys = keys;
    s->keys_cap = cap;
  }
  memcpy(s->keys + s->keys_len, key, klen);
  s->rows[s->n_rows++] = (store_pending){run_id, s->keys_len, step, store_now_ms(), value};
  s->keys_len += klen;
  int64_t mono = store_mono_ms();
  if (s->n_rows == 1) s->oldest_mono_ms = mono;
  if ((s->n_rows >= s->flush_rows || mono - s->oldest_mono_ms >= s->flush_ms) &&
      mono >= s->retry_mono_ms)
    return wb_store_flush(s);
  return WB_OK;
}

static int bind_metric(sqlite3_stmt *st, const store_pending *p, const char *key) {
  sqlite3_bind_int64(st, 1, p->run_id);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, p->step);
  sqlite3_bind_int64(st, 4, p->timestamp_ms);
  if (isnan(p->value)) {
    sqlite3_bind_null(st, 5);
    sqlite3_bind_int(st, 6, 1);
  } else {
    sqlite3_bind_double(st, 5, p->value);
    sqlite3_bind_int(st, 6, 0);
  }
  int rc = step_done(st);
  sqlite3_reset(st);
  return rc;
}

int wb_store_flush(wb_store *s) {
  STORE_ENTER(s);
  if (s->n_rows == 0) return WB_OK;
  int rc = WB_OK;
  sqlite3_stmt *begin = store_stmt(s, STMT_BEGIN, &rc);
  sqlite3_stmt *ins = begin ? store_stmt(s, STMT_METRIC_INSERT, &rc) : NULL;
  sqlite3_stmt *up = ins ? store_stmt(s, STMT_LATEST_UPSERT, &rc) : NULL;
  sqlite3_stmt *commit = up ? store_stmt(s, STMT_COMMIT, &rc) : NULL;
  if (!commit) return rc;
  int r = step_done(begin);
  sqlite3_reset(begin);
  int in_txn = r == SQLITE_OK;
  for (int64_t i = 0; r == SQLITE_OK && i < s->n_rows; i++)
    r = bind_metric(ins, &s->rows[i], s->keys + s->rows[i].key_off);
  /* latest_metrics needs only the row at the largest step of each key (the last written
   * among equals): walk the batch backwards and skip rows that a later row supersedes, so a
   * batch of 256 steps of 4 keys costs 4 upserts, not 256 */
  struct {
    int64_t run_id, step;
    const char *key;
  } seen[32];
  int n_seen = 0;
  for (int64_t i = s->n_rows - 1; r == SQLITE_OK && i >= 0; i--) {
    const store_pending *p = &s->rows[i];
    const char *key = s->keys + p->key_off;
    int j = 0;
    while (j < n_seen && (seen[j].run_id != p->run_id || strcmp(seen[j].key, key) != 0)) j++;
    if (j < n_seen && seen[j].step >= p->step) continue;
    r = bind_metric(up, p, key);
    if (j < n_seen) {
      seen[j].step = p->step;
    } else if (n_seen < 32) { /* beyond 32 keys per batch the rest are simply upserted */
      seen[n_seen].run_id = p->run_id;
      seen[n_seen].step = p->step;
      seen[n_seen++].key = key;
    }
  }
  if (r == SQLITE_OK) {
    r = step_done(commit);
    sqlite3_reset(commit);
  }
  if (r == SQLITE_OK) {
    s->n_rows = 0;
    s->keys_len = 0;
    s->retry_mono_ms = 0;
    return WB_OK;
  }
  int64_t n = s->n_rows;
  rc = store_sqlite_err(s, r, "writing metrics");
  if (in_txn) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  if (rc == WB_ERR_BUSY || rc == WB_ERR_IO) {
    /* keep the rows; the next automatic attempt waits flush_ms so logging stays fast */
    s->retry_mono_ms = store_mono_ms() + s->flush_ms;
    return rc;
  }
  size_t len = strlen(s->errmsg);
  snprintf(s->errmsg + len, sizeof s->errmsg - len, " (%lld buffered metric rows dropped)",
           (long long)n);
  s->n_rows = 0;
  s->keys_len = 0;
  s->known_run_id = 0;
  return rc;
}
