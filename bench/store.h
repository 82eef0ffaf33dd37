/* bench/store.h: wb's result store, MLflow's tracking schema in one SQLite file.
 *
 * Tables (STRICT, WAL journal, foreign keys on, schema version in PRAGMA user_version):
 *   experiments(id, name UNIQUE, created_ms)
 *   runs(id, experiment_id, parent_id, name, status, start_ms, end_ms, script, script_sha256,
 *        git_commit, git_dirty, host, cpu_model, threads, device, wb_version, seed,
 *        peak_rss_kb, wall_s, pid, error)          status: RUNNING FINISHED FAILED KILLED
 *   params(run_id, key, value)                      written once per run
 *   metrics(run_id, key, step, timestamp_ms, value, is_nan)
 *   latest_metrics(run_id, key, step, timestamp_ms, value, is_nan)
 *                                                   the row at the largest step of each
 *                                                   (run, key), kept by every flush (MLflow's
 *                                                   latest_metrics), so "final value" queries
 *                                                   never scan a run's whole history
 *   tags(run_id, key, value)                        mutable; system tags live under "wb."
 *   artifacts(run_id, path, kind, created_ms)
 * Times are Unix epoch milliseconds. SQLite stores a NaN double as NULL, so a NaN metric is
 * stored as value NULL with is_nan = 1 (a diverged run stays visible); +/-inf are stored as
 * they are.
 *
 * Conventions (SQLite's): functions that can fail return int, WB_OK (0) or a negative WB_ERR_*;
 * the message, naming the database path and what failed, is kept on the handle and read with
 * wb_store_errmsg(). Out-parameters are zeroed on entry and set only on success. A handle is
 * used by one thread at a time, and never across fork(): a child process opens its own (calls
 * on an inherited handle return WB_ERR_STATE, and wb_store_close in the child only frees
 * memory, leaving the parent's buffered rows to the parent).
 * Several processes may open one file at once; writers wait for each other up to the busy
 * timeout (5 s by default) before a call returns WB_ERR_BUSY.
 *
 * Query results are malloc'd structs freed with their own _free function (NULL is a no-op).
 * Every string inside a result (const char *) lives in the result's own storage and stays
 * valid until that result is freed; the store handle may be closed before then.
 */
#ifndef WB_STORE_H
#define WB_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. */
enum {
  WB_OK = 0,
  WB_ERR_ARG = -1,       /* invalid argument: NULL handle, empty key, unknown status name */
  WB_ERR_NOMEM = -2,     /* out of memory */
  WB_ERR_IO = -3,        /* cannot create a directory, open or write a file, disk full */
  WB_ERR_READONLY = -4,  /* the file or its directory cannot be written */
  WB_ERR_NOTDB = -5,     /* the file is not a database, or a database that is not a wb store */
  WB_ERR_CORRUPT = -6,   /* the database is malformed (e.g. truncated) */
  WB_ERR_BUSY = -7,      /* another process held a lock for longer than the busy timeout */
  WB_ERR_SCHEMA = -8,    /* written by a newer wb whose schema this build does not know */
  WB_ERR_NOTFOUND = -9,  /* no run with that id */
  WB_ERR_CONFLICT = -10, /* a param written again with a different value */
  WB_ERR_STATE = -11,    /* the call does not fit the state: a run ended twice, a handle
                          * inherited across fork() */
  WB_ERR_DB = -12,       /* any other SQLite error */
};

/* The schema version this build writes (PRAGMA user_version). */
#define WB_STORE_SCHEMA_VERSION 1
/* Where the wb program keeps its results unless told otherwise. */
#define WB_STORE_DEFAULT_PATH "results/wb.sqlite"

typedef struct wb_store wb_store;

/* Returns the name of a result code ("WB_ERR_BUSY"), or "WB_ERR_?" for an unknown code. */
const char *wb_store_code_name(int code);

/* ---- Opening and closing ------------------------------------------------------------ */

typedef struct wb_store_options {
  int busy_timeout_ms; /* how long a call waits for another process's lock; <= 0: 5000 */
  int read_only;       /* open without writing anything: no directory creation, schema
                        * creation or stale-run repair; every write call fails READONLY */
  int flush_rows;      /* buffered metric rows that trigger a write; <= 0: 256 */
  int flush_ms;        /* age of the oldest buffered row that triggers a write; <= 0: 1000 */
} wb_store_options;

/* Opens (creating if needed) the result store at path with default options. Same as
 * wb_store_open_opts(out, path, NULL, err, errlen). */
int wb_store_open(wb_store **out, const char *path, char *err, size_t errlen);

/* Opens the result store at path. *out is set to NULL on entry and to the new handle on
 * success; the caller closes it with wb_store_close(). path is copied. Unless
 * opts->read_only, the parent directories of path are created, the file is created if
 * missing, switched to WAL and brought to WB_STORE_SCHEMA_VERSION (older schemas are
 * migrated in one transaction), and every run still RUNNING that was started on this host by
 * a process that no longer exists (pid dead, or the pid now belongs to another process) is
 * marked FAILED with error "process <pid> ended without finishing the run (crash or kill
 * -9)" and end_ms = its last logged timestamp (start_ms when nothing was logged).
 * On failure there is no handle, so the message, naming path, is written to err (errlen bytes,
 * always terminated; err may be NULL when errlen is 0). Errors:
 *   WB_ERR_ARG       out or path NULL or empty
 *   WB_ERR_IO        a parent directory cannot be created (e.g. a parent is a regular file)
 *   WB_ERR_READONLY  the file or its directory is not writable (and not opts->read_only)
 *   WB_ERR_NOTDB     "file is not a wb result store (not a database)", or a SQLite
 *                    database holding other tables
 *   WB_ERR_CORRUPT   "database disk image is malformed" (a truncated or damaged file)
 *   WB_ERR_BUSY      another process held a lock for longer than the busy timeout
 *   WB_ERR_SCHEMA    the file was written by a newer wb
 *   WB_ERR_NOMEM */
int wb_store_open_opts(wb_store **out, const char *path, const wb_store_options *opts, char *err,
                       size_t errlen);

/* Writes buffered metrics, then closes the handle. NULL is a no-op. The write cannot report
 * a failure (rows that cannot be written within the busy timeout are lost): a caller that
 * must know calls wb_store_flush() first. In a process forked from the opener it only frees
 * memory. */
void wb_store_close(wb_store *s);

/* The message of the last failed call on s ("" after a success on a fresh handle). Owned by
 * s, valid until the next call on s. NULL s gives a fixed message. */
const char *wb_store_errmsg(wb_store *s);

/* The path s was opened with (owned by s). */
const char *wb_store_path(wb_store *s);

/* ---- Runs --------------------------------------------------------------------------- */

typedef enum wb_run_status {
  WB_RUN_ANY = -1, /* only as a filter in wb_store_runs_list */
  WB_RUN_RUNNING = 0,
  WB_RUN_FINISHED = 1,
  WB_RUN_FAILED = 2,
  WB_RUN_KILLED = 3,
} wb_run_status;

/* "RUNNING", "FINISHED", "FAILED", "KILLED"; NULL for anything else. */
const char *wb_run_status_name(wb_run_status st);
/* Parses a status name (case-insensitive) into *out. Unknown names give WB_ERR_ARG and, in
 * err, a message listing the valid names. */
int wb_run_status_parse(wb_run_status *out, const char *name, char *err, size_t errlen);

/* What a run records about itself. Strings are borrowed (copied by wb_store_run_begin);
 * NULL or "" means unknown unless noted. */
typedef struct wb_run_info {
  const char *experiment;    /* experiment name; NULL or "": "default" */
  const char *name;          /* run name, free text */
  int64_t parent_id;         /* sweep parent run id; 0: none */
  const char *script;        /* script path as given */
  const char *script_sha256; /* hex digest of the script's bytes */
  const char *git_commit;
  int git_dirty;          /* 1 dirty, 0 clean; recorded only with a git_commit */
  const char *host;       /* NULL or "": gethostname() */
  const char *cpu_model;  /* NULL or "": "model name" from /proc/cpuinfo */
  int threads;            /* worker threads; 0: unknown */
  const char *device;     /* "cpu", "cuda:0 (NVIDIA H100)", ... */
  const char *wb_version; /* NULL or "": this build's version */
  int has_seed;           /* seed is recorded only when has_seed != 0 */
  int64_t seed;
  int64_t pid; /* the process that runs it; 0: getpid() */
} wb_run_info;

/* Starts a run: creates the experiment if it is new, inserts the run as RUNNING with
 * start_ms = now, and tags it "wb.proc" = "<boot id>:<process start time>" of info->pid so
 * that a reused pid is not mistaken for the live run. *run_id is set to 0 on entry and to the
 * new run's id on success. Errors: WB_ERR_ARG (s, info or run_id NULL), WB_ERR_NOTFOUND
 * (parent_id names no run), WB_ERR_BUSY, WB_ERR_READONLY, WB_ERR_IO, WB_ERR_DB. */
int wb_store_run_begin(wb_store *s, const wb_run_info *info, int64_t *run_id);

/* Ends a RUNNING run: writes buffered metrics first, then sets status (FINISHED, FAILED or
 * KILLED), end_ms = now, error (NULL: none), wall_s (< 0: end_ms - start_ms) and peak_rss_kb
 * (< 0: this process's peak resident set, getrusage). Errors: WB_ERR_ARG (status RUNNING or
 * unknown), WB_ERR_NOTFOUND, WB_ERR_STATE (the run is not RUNNING: ended twice, or marked
 * FAILED by a stale-run repair), and the write errors of wb_store_flush. */
int wb_store_run_end(wb_store *s, int64_t run_id, wb_run_status status, const char *error,
                     double wall_s, int64_t peak_rss_kb);

/* Records param key = value for a run. Params are written once: writing the same value
 * again is a no-op (WB_OK), a different value gives WB_ERR_CONFLICT and a message with both
 * values. key and value are copied. Errors: WB_ERR_ARG (NULL or empty key, NULL value),
 * WB_ERR_NOTFOUND, WB_ERR_CONFLICT, WB_ERR_BUSY, WB_ERR_READONLY, WB_ERR_DB. */
int wb_store_param_set(wb_store *s, int64_t run_id, const char *key, const char *value);

/* Sets tag key = value for a run, replacing an earlier value. Errors as wb_store_param_set
 * without WB_ERR_CONFLICT. */
int wb_store_tag_set(wb_store *s, int64_t run_id, const char *key, const char *value);

/* Records that a run produced the file at path (kind: "checkpoint", "report", ...; NULL:
 * ""), with created_ms = now. The file itself is not copied. Errors as wb_store_tag_set. */
int wb_store_artifact_add(wb_store *s, int64_t run_id, const char *path, const char *kind);

/* ---- Metrics ------------------------------------------------------------------------ */

/* Logs metric key = value at step for a run, with timestamp_ms = now. The row is buffered in
 * memory and written, with all other buffered rows, in one transaction through a reused
 * prepared statement when opts.flush_rows rows are waiting or the oldest waiting row is
 * opts.flush_ms old (checked on each call: there is no background thread), and at
 * wb_store_flush, wb_store_run_end and wb_store_close. A buffered call costs well under a
 * microsecond and the batch write a few microseconds per row, so logging every training step
 * is cheap (bench/tests/test_store.c prints the figure). The first log to a run id checks
 * that the run exists
 * (WB_ERR_NOTFOUND). value may be NaN or +/-inf. key is copied.
 * If the write that this call triggers fails (WB_ERR_BUSY, WB_ERR_IO), the rows, this one
 * included, stay buffered and are written by a later call; the next automatic attempt waits
 * flush_ms. Errors: WB_ERR_ARG, WB_ERR_NOTFOUND, the errors of wb_store_flush, WB_ERR_NOMEM
 * (more than 1,048,576 rows could not be written: this row is dropped). */
int wb_store_metric_log(wb_store *s, int64_t run_id, const char *key, int64_t step, double value);

/* Writes all buffered metric rows in one transaction. On WB_ERR_BUSY or WB_ERR_IO the rows
 * stay buffered for a later attempt; on any other error (a run deleted meanwhile) the batch is
 * dropped and the message says how many rows were lost. Returns WB_OK when nothing waits. */
int wb_store_flush(wb_store *s);

/* ---- Queries ------------------------------------------------------------------------ */

typedef struct wb_kv {
  const char *key;
  const char *value;
} wb_kv;

/* One run as stored. info's strings are "" where unknown; info.pid, threads and seed are 0
 * where unknown (has_seed says whether seed is set), info.git_dirty is -1; end_ms is 0 while
 * RUNNING; wall_s and peak_rss_kb are -1 where unknown (while RUNNING, or for a run whose
 * process died). */
typedef struct wb_run {
  int64_t id;
  int64_t experiment_id;
  wb_run_info info;
  wb_run_status status;
  int64_t start_ms, end_ms;
  double wall_s;
  int64_t peak_rss_kb;
  const char *error; /* "" when none */
} wb_run;

typedef struct wb_run_list {
  int64_t n;
  wb_run *runs;        /* (n), by start time then id */
  struct wb_mem *mem_; /* private */
} wb_run_list;

/* Lists runs, oldest first. experiment NULL: all experiments; status WB_RUN_ANY: any status.
 * *out is NULL on entry, a list (possibly empty) on success, freed with wb_run_list_free.
 * Errors: WB_ERR_ARG, WB_ERR_NOMEM, WB_ERR_BUSY, WB_ERR_CORRUPT, WB_ERR_DB. An experiment that
 * does not exist gives an empty list. */
int wb_store_runs_list(wb_store *s, const char *experiment, wb_run_status status,
                       wb_run_list **out);
void wb_run_list_free(wb_run_list *l);

/* The last value of a metric: the row at the largest step (among rows logged at that same
 * step, the last written). value is NaN when is_nan. */
typedef struct wb_metric_final {
  const char *key;
  int64_t step;
  int64_t timestamp_ms;
  double value;
  int is_nan;
} wb_metric_final;

typedef struct wb_artifact {
  const char *path;
  const char *kind;
  int64_t created_ms;
} wb_artifact;

/* One run with everything recorded about it. Arrays are sorted by key (artifacts by time). */
typedef struct wb_run_detail {
  wb_run run;
  int64_t n_params;
  wb_kv *params; /* (n_params) */
  int64_t n_tags;
  wb_kv *tags; /* (n_tags) */
  int64_t n_metrics;
  wb_metric_final *metrics; /* (n_metrics) final value of each metric key */
  int64_t n_artifacts;
  wb_artifact *artifacts; /* (n_artifacts) */
  struct wb_mem *mem_;    /* private */
} wb_run_detail;

/* Reads one run's details. Metrics still buffered on s are written first, so a run sees its
 * own logs. *out is NULL on entry. Errors: WB_ERR_NOTFOUND, WB_ERR_NOMEM, WB_ERR_BUSY,
 * WB_ERR_CORRUPT, WB_ERR_DB. Free with wb_run_detail_free. */
int wb_store_run_get(wb_store *s, int64_t run_id, wb_run_detail **out);
void wb_run_detail_free(wb_run_detail *d);

/* A run's series for one metric key, by step (equal steps in write order). */
typedef struct wb_metric_series {
  int64_t n;
  int64_t *step;         /* (n) */
  int64_t *timestamp_ms; /* (n) */
  double *value;         /* (n) NaN where the logged value was NaN */
} wb_metric_series;

/* Reads the series of metric key of a run (flushing s first). An unknown key gives an empty
 * series; an unknown run WB_ERR_NOTFOUND. Free with wb_metric_series_free. */
int wb_store_metric_series(wb_store *s, int64_t run_id, const char *key, wb_metric_series **out);
void wb_metric_series_free(wb_metric_series *m);

/* The final metric values of every run of an experiment, with the runs' params, for
 * comparison tables. */
typedef struct wb_final_run {
  int64_t run_id;
  const char *name;
  wb_run_status status;
  int64_t n_params;
  wb_kv *params; /* (n_params) sorted by key */
  int64_t n_metrics;
  wb_metric_final *metrics; /* (n_metrics) sorted by key; only key `metric` if one was asked */
} wb_final_run;

typedef struct wb_finals {
  int64_t n;
  wb_final_run *runs;  /* (n) oldest first */
  struct wb_mem *mem_; /* private */
} wb_finals;

/* Reads the runs of experiment (any status) with their params and the final value of each
 * metric (of metric only, when metric is not NULL). Free with wb_finals_free. Errors:
 * WB_ERR_ARG (experiment NULL), WB_ERR_NOMEM, WB_ERR_BUSY, WB_ERR_CORRUPT, WB_ERR_DB. */
int wb_store_finals(wb_store *s, const char *experiment, const char *metric, wb_finals **out);
void wb_finals_free(wb_finals *f);

/* Summary statistics of a sample. */
typedef struct wb_stats {
  int64_t n; /* values summarized */
  double mean;
  double std;  /* sample standard deviation (n - 1 denominator); NaN when n < 2 */
  double ci95; /* half-width of the 95% confidence interval of the mean,
                * t(0.975, n-1) * std / sqrt(n); NaN when n < 2 */
  double min, max;
} wb_stats;

/* Summarizes x[0..n-1] into *out (all NaN with n = 0 when n <= 0). The caller removes NaNs
 * first if it wants them out. Two-pass mean and variance for accuracy. */
void wb_stats_compute(wb_stats *out, const double *x, int64_t n);

/* The 0.975 quantile of Student's t with df degrees of freedom (the 95% two-sided critical
 * value): a table to 9 decimals for df 1..30, a Cornish-Fisher expansion around the normal
 * 1.959964 beyond (within 1e-7 there, tending to the normal value). NaN for df < 1. */
double wb_stats_t975(int64_t df);

typedef struct wb_compare_group {
  int64_t n_params;
  wb_kv *params;  /* (n_params) the params that define the group, sorted by key */
  wb_stats stats; /* over the runs whose final value is not NaN */
  int64_t n_nan;  /* runs whose final value is NaN (diverged): excluded from stats, shown */
  int64_t n_runs;
  int64_t *run_ids; /* (n_runs) */
} wb_compare_group;

typedef struct wb_compare {
  const char *metric;
  int64_t n_groups;
  wb_compare_group *groups; /* (n_groups) in order of each group's first run */
  struct wb_mem *mem_;      /* private */
} wb_compare;

/* Groups the FINISHED runs of experiment that logged metric by their params, leaving out
 * the keys in ignore_keys (a NULL-terminated list; NULL means { "seed", NULL }, so repeats
 * that differ only by seed form one group), and summarizes each group's final values of
 * metric. Runs that never logged metric are left out. Free with wb_compare_free. Errors:
 * WB_ERR_ARG (experiment or metric NULL), WB_ERR_NOMEM, and the read errors. */
int wb_store_compare(wb_store *s, const char *experiment, const char *metric,
                     const char *const *ignore_keys, wb_compare **out);
void wb_compare_free(wb_compare *c);

/* Finds a FINISHED child run of sweep run parent_id whose params include every params[i]
 * (key present with exactly that text; the child may have more params), so re-running a
 * sweep skips finished points. Values compare as text: write them the same way both times.
 * *run_id is 0 on entry and stays 0 when no child matches (that is WB_OK); with several
 * matches, the newest. Errors: WB_ERR_ARG, the read errors. */
int wb_store_sweep_find(wb_store *s, int64_t parent_id, const wb_kv *params, int64_t n_params,
                        int64_t *run_id);

/* ---- Export ------------------------------------------------------------------------- */

/* Writes every run (of experiment, or all when NULL) to f as CSV (RFC 4180: fields holding a
 * comma, quote, CR or LF are quoted, quotes doubled; rows end in "\r\n"), in long form with
 * header
 *   experiment,run_id,run_name,parent_id,status,start_ms,end_ms,kind,key,step,timestamp_ms,value,is_nan
 * and one row per recorded thing, by kind:
 *   run       one per run; value holds the run's error text (empty when none)
 *   param     key, value (text)
 *   tag       key, value (text)
 *   artifact  key = path, timestamp_ms = created_ms, value = the artifact's kind
 *   metric    key, step, timestamp_ms, value (%.17g, "inf" or "-inf"; empty when NaN), is_nan
 * Runs oldest first, metric rows by key then step. Empty fields are unknown. Buffered metrics
 * are flushed first, and the export reads one consistent snapshot. Errors: WB_ERR_ARG (f
 * NULL), WB_ERR_IO (writing f failed), the read errors. */
int wb_store_export_csv(wb_store *s, const char *experiment, FILE *f);

/* Writes the same content to f as one JSON document:
 *   {"format":"wb-results","schema":1,"runs":[{"id":1,"experiment":"...","name":"...",
 *    "parent_id":null,"status":"FINISHED","start_ms":..,"end_ms":..,"script":..,...,
 *    "error":null,"params":{"k":"v"},"tags":{..},
 *    "metrics":{"train/loss":[{"step":0,"timestamp_ms":..,"value":0.5}, ...]},
 *    "artifacts":[{"path":"..","kind":"..","created_ms":..}]}]}
 * A NaN value is written as "value":null,"is_nan":true; +/-inf as "value":null,"is_inf":1 or
 * -1 (JSON has no such numbers). Strings are escaped as by wb_json_write_string. Errors as
 * wb_store_export_csv. */
int wb_store_export_json(wb_store *s, const char *experiment, FILE *f);

/* Writes str as one CSV field (quoted when it holds , " CR or LF). NULL writes nothing.
 * Returns 0, or -1 when writing f failed. */
int wb_csv_write_field(FILE *f, const char *str);

/* Writes str as a JSON string literal: quote, backslash and control characters escaped
 * (\n \r \t \b \f, others \u00XX), '<' '>' '&' as \u003c \u003e \u0026 so the output can be
 * inlined in an HTML <script>, and each byte that is not valid UTF-8 replaced by \ufffd.
 * NULL writes null. Returns 0, or -1 when writing f failed. */
int wb_json_write_string(FILE *f, const char *str);

#ifdef __cplusplus
}
#endif

#endif /* WB_STORE_H */
