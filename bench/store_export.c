/* bench/store_export.c: the whole store (or one experiment) as CSV (RFC 4180, long form) or
 * as one JSON document, with the escaping both formats need for hostile strings. */
#include "store_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Escaping ------------------------------------------------------------------------- */

int wb_csv_write_field(FILE *f, const char *str) {
  if (!str) return 0;
  if (!strpbrk(str, ",\"\r\n")) return fputs(str, f) < 0 ? -1 : 0;
  if (fputc('"', f) == EOF) return -1;
  for (const char *p = str; *p; p++) {
    if (*p == '"' && fputc('"', f) == EOF) return -1;
    if (fputc(*p, f) == EOF) return -1;
  }
  return fputc('"', f) == EOF ? -1 : 0;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates, at most
 * U+10FFFF), or 0 when p does not start one. */
static int utf8_len(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xe0 && p[1] < 0xa0) return 0;  /* overlong */
    if (p[0] == 0xed && p[1] >= 0xa0) return 0; /* UTF-16 surrogate */
    return 3;
  }
  if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xf0 && p[1] < 0x90) return 0;  /* overlong */
    if (p[0] == 0xf4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
}

int wb_json_write_string(FILE *f, const char *str) {
  if (!str) return fputs("null", f) < 0 ? -1 : 0;
  if (fputc('"', f) == EOF) return -1;
  const unsigned char *p = (const unsigned char *)str;
  while (*p) {
    int n = utf8_len(p);
    int bad = 0;
    switch (*p) {
    case '"':
      bad = fputs("\\\"", f) < 0;
      break;
    case '\\':
      bad = fputs("\\\\", f) < 0;
      break;
    case '\n':
      bad = fputs("\\n", f) < 0;
      break;
    case '\r':
      bad = fputs("\\r", f) < 0;
      break;
    case '\t':
      bad = fputs("\\t", f) < 0;
      break;
    case '\b':
      bad = fputs("\\b", f) < 0;
      break;
    case '\f':
      bad = fputs("\\f", f) < 0;
      break;
    /* HTML-significant: "</script>" in a string must not end an inlined <script> */
    case '<':
      bad = fputs("\\u003c", f) < 0;
      break;
    case '>':
      bad = fputs("\\u003e", f) < 0;
      break;
    case '&':
      bad = fputs("\\u0026", f) < 0;
      break;
    default:
      if (*p < 0x20) {
        bad = fprintf(f, "\\u%04x", *p) < 0;
      } else if (n == 0) {
        bad = fputs("\\ufffd", f) < 0;
        n = 1;
      } else {
        bad = fwrite(p, 1, (size_t)n, f) != (size_t)n;
      }
    }
    if (bad) return -1;
    p += n > 0 ? n : 1;
  }
  return fputc('"', f) == EOF ? -1 : 0;
}

/* ---- Shared walk over runs ------------------------------------------------------------ */

/* Per-run statements, prepared once per export. */
typedef struct export_stmts {
  sqlite3_stmt *params, *tags, *metrics, *artifacts;
} export_stmts;

static int export_prepare(wb_store *s, export_stmts *e) {
  static const char *const sql[4] = {
      "SELECT key, value FROM params WHERE run_id = ?1 ORDER BY key",
      "SELECT key, value FROM tags WHERE run_id = ?1 ORDER BY key",
      "SELECT key, step, timestamp_ms, value, is_nan FROM metrics WHERE run_id = ?1"
      " ORDER BY key, step, rowid",
      "SELECT path, kind, created_ms FROM artifacts WHERE run_id = ?1 ORDER BY created_ms, rowid",
  };
  sqlite3_stmt **out[4] = {&e->params, &e->tags, &e->metrics, &e->artifacts};
  for (int i = 0; i < 4; i++) {
    int r = sqlite3_prepare_v2(s->db, sql[i], -1, out[i], NULL);
    if (r != SQLITE_OK) return store_sqlite_err(s, r, "exporting");
  }
  return WB_OK;
}

static void export_finalize(export_stmts *e) {
  sqlite3_finalize(e->params);
  sqlite3_finalize(e->tags);
  sqlite3_finalize(e->metrics);
  sqlite3_finalize(e->artifacts);
}

/* Begins an export: flushes, opens a read transaction (one consistent snapshot), lists the
 * runs and prepares the per-run statements. */
static int export_begin(wb_store *s, const char *experiment, FILE *f, wb_run_list **runs,
                        export_stmts *e) {
  memset(e, 0, sizeof *e);
  *runs = NULL;
  if (!f) return store_err(s, WB_ERR_ARG, "exporting: no output file");
  int rc = s->read_only ? WB_OK : wb_store_flush(s);
  if (rc == WB_OK) rc = store_exec(s, "BEGIN", "exporting");
  if (rc != WB_OK) return rc;
  rc = wb_store_runs_list(s, experiment, WB_RUN_ANY, runs);
  if (rc == WB_OK) rc = export_prepare(s, e);
  return rc;
}

static int export_end(wb_store *s, int rc, FILE *f, wb_run_list *runs, export_stmts *e) {
  export_finalize(e);
  wb_run_list_free(runs);
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc == WB_OK && (fflush(f) != 0 || ferror(f)))
    rc = store_err(s, WB_ERR_IO, "exporting: writing the output failed");
  return rc;
}

/* ---- CSV ------------------------------------------------------------------------------ */

static void csv_i64(FILE *f, int64_t v, int present) {
  if (present) fprintf(f, "%" PRId64, v);
}

/* experiment,run_id,run_name,parent_id,status,start_ms,end_ms,kind, */
static void csv_prefix(FILE *f, const wb_run *r, const char *kind) {
  wb_csv_write_field(f, r->info.experiment);
  fprintf(f, ",%" PRId64 ",", r->id);
  wb_csv_write_field(f, r->info.name);
  fputc(',', f);
  csv_i64(f, r->info.parent_id, r->info.parent_id != 0);
  fprintf(f, ",%s,%" PRId64 ",", wb_run_status_name(r->status), r->start_ms);
  csv_i64(f, r->end_ms, r->status != WB_RUN_RUNNING);
  fprintf(f, ",%s,", kind);
}

/* Rows of kind from a (key, value) statement. */
static int csv_kvs(wb_store *s, FILE *f, const wb_run *r, sqlite3_stmt *st, const char *kind) {
  int x;
  sqlite3_bind_int64(st, 1, r->id);
  while ((x = sqlite3_step(st)) == SQLITE_ROW) {
    csv_prefix(f, r, kind);
    wb_csv_write_field(f, (const char *)sqlite3_column_text(st, 0));
    fputs(",,,", f);
    wb_csv_write_field(f, (const char *)sqlite3_column_text(st, 1));
    fputs(",\r\n", f);
  }
  sqlite3_reset(st);
  return x == SQLITE_DONE ? WB_OK : store_sqlite_err(s, x, "exporting");
}

int wb_store_export_csv(wb_store *s, const char *experiment, FILE *f) {
  STORE_ENTER(s);
  wb_run_list *runs = NULL;
  export_stmts e;
  int rc = export_begin(s, experiment, f, &runs, &e);
  if (rc == WB_OK)
    fputs("experiment,run_id,run_name,parent_id,status,start_ms,end_ms,kind,key,step,"
          "timestamp_ms,value,is_nan\r\n",
          f);
  for (int64_t i = 0; rc == WB_OK && i < runs->n; i++) {
    const wb_run *r = &runs->runs[i];
    csv_prefix(f, r, "run");
    fputs(",,,", f);
    wb_csv_write_field(f, r->error);
    fputs(",\r\n", f);
    rc = csv_kvs(s, f, r, e.params, "param");
    if (rc == WB_OK) rc = csv_kvs(s, f, r, e.tags, "tag");
    if (rc != WB_OK) break;
    int x;
    sqlite3_bind_int64(e.artifacts, 1, r->id);
    while ((x = sqlite3_step(e.artifacts)) == SQLITE_ROW) {
      csv_prefix(f, r, "artifact");
      wb_csv_write_field(f, (const char *)sqlite3_column_text(e.artifacts, 0));
      fprintf(f, ",,%" PRId64 ",", (int64_t)sqlite3_column_int64(e.artifacts, 2));
      wb_csv_write_field(f, (const char *)sqlite3_column_text(e.artifacts, 1));
      fputs(",\r\n", f);
    }
    sqlite3_reset(e.artifacts);
    if (x != SQLITE_DONE) {
      rc = store_sqlite_err(s, x, "exporting");
      break;
    }
    sqlite3_bind_int64(e.metrics, 1, r->id);
    while ((x = sqlite3_step(e.metrics)) == SQLITE_ROW) {
      csv_prefix(f, r, "metric");
      wb_csv_write_field(f, (const char *)sqlite3_column_text(e.metrics, 0));
      fprintf(f, ",%" PRId64 ",%" PRId64 ",", (int64_t)sqlite3_column_int64(e.metrics, 1),
              (int64_t)sqlite3_column_int64(e.metrics, 2));
      int is_nan = sqlite3_column_int(e.metrics, 4) != 0;
      double v = sqlite3_column_double(e.metrics, 3);
      if (is_nan)
        ;
      else if (isinf(v))
        fputs(v > 0 ? "inf" : "-inf", f);
      else
        fprintf(f, "%.17g", v);
      fprintf(f, ",%d\r\n", is_nan);
    }
    sqlite3_reset(e.metrics);
    if (x != SQLITE_DONE) rc = store_sqlite_err(s, x, "exporting");
  }
  return export_end(s, rc, f, runs, &e);
}

/* ---- JSON ----------------------------------------------------------------------------- */

static void json_key(FILE *f, const char *key) {
  wb_json_write_string(f, key);
  fputc(':', f);
}

/* "key":"text" or "key":null for "" */
static void json_text_field(FILE *f, const char *key, const char *value) {
  fputc(',', f);
  json_key(f, key);
  wb_json_write_string(f, value && *value ? value : NULL);
}

static void json_int_field(FILE *f, const char *key, int64_t v, int present) {
  fputc(',', f);
  json_key(f, key);
  if (present)
    fprintf(f, "%" PRId64, v);
  else
    fputs("null", f);
}

/* A finite double as JSON, or null with a flag. */
static void json_value(FILE *f, double v, int is_nan) {
  if (is_nan || isnan(v))
    fputs("\"value\":null,\"is_nan\":true", f);
  else if (isinf(v))
    fprintf(f, "\"value\":null,\"is_inf\":%d", v > 0 ? 1 : -1);
  else
    fprintf(f, "\"value\":%.17g", v);
}

static int json_kvs(wb_store *s, FILE *f, int64_t run_id, sqlite3_stmt *st, const char *name) {
  int x, first = 1;
  fputc(',', f);
  json_key(f, name);
  fputc('{', f);
  sqlite3_bind_int64(st, 1, run_id);
  while ((x = sqlite3_step(st)) == SQLITE_ROW) {
    if (!first) fputc(',', f);
    first = 0;
    json_key(f, (const char *)sqlite3_column_text(st, 0));
    wb_json_write_string(f, (const char *)sqlite3_column_text(st, 1));
  }
  sqlite3_reset(st);
  fputc('}', f);
  return x == SQLITE_DONE ? WB_OK : store_sqlite_err(s, x, "exporting");
}

int wb_store_export_json(wb_store *s, const char *experiment, FILE *f) {
  STORE_ENTER(s);
  wb_run_list *runs = NULL;
  export_stmts e;
  int rc = export_begin(s, experiment, f, &runs, &e);
  if (rc == WB_OK)
    fprintf(f, "{\"format\":\"wb-results\",\"schema\":%d,\"runs\":[", WB_STORE_SCHEMA_VERSION);
  for (int64_t i = 0; rc == WB_OK && i < runs->n; i++) {
    const wb_run *r = &runs->runs[i];
    const wb_run_info *in = &r->info;
    fprintf(f, "%s\n{\"id\":%" PRId64, i ? "," : "", r->id);
    json_text_field(f, "experiment", in->experiment);
    fputc(',', f);
    json_key(f, "name");
    wb_json_write_string(f, in->name);
    json_int_field(f, "parent_id", in->parent_id, in->parent_id != 0);
    json_text_field(f, "status", wb_run_status_name(r->status));
    json_int_field(f, "start_ms", r->start_ms, 1);
    json_int_field(f, "end_ms", r->end_ms, r->status != WB_RUN_RUNNING);
    json_text_field(f, "script", in->script);
    json_text_field(f, "script_sha256", in->script_sha256);
    json_text_field(f, "git_commit", in->git_commit);
    fprintf(f, ",\"git_dirty\":%s", in->git_dirty < 0 ? "null" : in->git_dirty ? "true" : "false");
    json_text_field(f, "host", in->host);
    json_text_field(f, "cpu_model", in->cpu_model);
    json_int_field(f, "threads", in->threads, in->threads > 0);
    json_text_field(f, "device", in->device);
    json_text_field(f, "wb_version", in->wb_version);
    json_int_field(f, "seed", in->seed, in->has_seed);
    json_int_field(f, "peak_rss_kb", r->peak_rss_kb, r->peak_rss_kb >= 0);
    if (r->wall_s >= 0)
      fprintf(f, ",\"wall_s\":%.17g", r->wall_s);
    else
      fputs(",\"wall_s\":null", f);
    json_int_field(f, "pid", in->pid, in->pid > 0);
    json_text_field(f, "error", r->error);
    rc = json_kvs(s, f, r->id, e.params, "params");
    if (rc == WB_OK) rc = json_kvs(s, f, r->id, e.tags, "tags");
    if (rc != WB_OK) break;

    /* metrics grouped by key: rows arrive ordered by key, step */
    fputs(",\"metrics\":{", f);
    int x;
    char *prev = NULL;
    sqlite3_bind_int64(e.metrics, 1, r->id);
    while ((x = sqlite3_step(e.metrics)) == SQLITE_ROW) {
      const char *key = (const char *)sqlite3_column_text(e.metrics, 0);
      if (!prev || strcmp(prev, key) != 0) {
        if (prev) fputs("],", f);
        free(prev);
        prev = strdup(key);
        if (!prev) {
          x = SQLITE_NOMEM;
          break;
        }
        json_key(f, key);
        fputc('[', f);
      } else {
        fputc(',', f);
      }
      fprintf(f, "{\"step\":%" PRId64 ",\"timestamp_ms\":%" PRId64 ",",
              (int64_t)sqlite3_column_int64(e.metrics, 1),
              (int64_t)sqlite3_column_int64(e.metrics, 2));
      json_value(f, sqlite3_column_double(e.metrics, 3), sqlite3_column_int(e.metrics, 4));
      fputc('}', f);
    }
    sqlite3_reset(e.metrics);
    if (prev) fputc(']', f);
    free(prev);
    fputc('}', f);
    if (x != SQLITE_DONE) {
      rc = store_sqlite_err(s, x, "exporting");
      break;
    }

    fputs(",\"artifacts\":[", f);
    sqlite3_bind_int64(e.artifacts, 1, r->id);
    for (int n = 0; (x = sqlite3_step(e.artifacts)) == SQLITE_ROW; n++) {
      fputs(n ? ",{" : "{", f);
      json_key(f, "path");
      wb_json_write_string(f, (const char *)sqlite3_column_text(e.artifacts, 0));
      fputc(',', f);
      json_key(f, "kind");
      wb_json_write_string(f, (const char *)sqlite3_column_text(e.artifacts, 1));
      fprintf(f, ",\"created_ms\":%" PRId64 "}", (int64_t)sqlite3_column_int64(e.artifacts, 2));
    }
    sqlite3_reset(e.artifacts);
    fputs("]}", f);
    if (x != SQLITE_DONE) rc = store_sqlite_err(s, x, "exporting");
  }
  if (rc == WB_OK) fputs("\n]}\n", f);
  return export_end(s, rc, f, runs, &e);
}
