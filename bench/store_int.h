/* bench/store_int.h: internals shared by the store's files (store.c opens and maps errors,
 * store_log.c writes runs and metrics, store_query.c reads, store_export.c writes CSV/JSON,
 * store_stats.c summarizes). Not installed, not for callers. */
#ifndef WB_STORE_INT_H
#define WB_STORE_INT_H

#include "store.h"

#include <sqlite3.h>
#include <stdarg.h>

/* Prepared statements, prepared on first use with SQLITE_PREPARE_PERSISTENT and reused until
 * close; the SQL lives in store.c's table, in this order. */
enum store_stmt_id {
  STMT_METRIC_INSERT,
  STMT_LATEST_UPSERT,
  STMT_BEGIN,
  STMT_COMMIT,
  STMT_ROLLBACK,
  STMT_RUN_STATUS,
  STMT_PARAM_INSERT,
  STMT_PARAM_GET,
  STMT_TAG_UPSERT,
  STMT_ARTIFACT_INSERT,
  STMT_COUNT
};

/* A metric row waiting in memory; its key is at keys + key_off. */
typedef struct store_pending {
  int64_t run_id;
  size_t key_off;
  int64_t step;
  int64_t timestamp_ms;
  double value;
} store_pending;

struct wb_store {
  sqlite3 *db;
  char *path;
  char errmsg[2048];
  int read_only;
  int busy_timeout_ms;
  int flush_rows;
  int flush_ms;
  sqlite3_stmt *stmt[STMT_COUNT];
  /* metric buffer */
  store_pending *rows;
  int64_t n_rows, cap_rows;
  char *keys; /* NUL-terminated keys of the pending rows, back to back */
  size_t keys_len, keys_cap;
  int64_t oldest_mono_ms; /* monotonic time the oldest pending row was logged */
  int64_t retry_mono_ms;  /* no automatic flush before this time (after a failed one) */
  int64_t known_run_id;   /* the last run id checked to exist (0: none) */
  int fork_gen;           /* store_fork_gen when opened: differs in a forked child */
  int64_t owner_pid;
};

/* Bumped in every child process by a pthread_atfork handler: a handle whose fork_gen
 * differs was inherited across fork(), and SQLite connections must not be (the child would
 * also write the parent's buffered rows a second time). */
extern volatile int store_fork_gen;
int store_fork_err(wb_store *s);

/* First line of every public call on a handle: NULL and inherited handles are refused. */
#define STORE_ENTER(s)                                                                             \
  do {                                                                                             \
    if (!(s)) return WB_ERR_ARG;                                                                   \
    if ((s)->fork_gen != store_fork_gen) return store_fork_err(s);                                 \
  } while (0)

/* The largest number of rows the metric buffer holds while writes keep failing. */
#define STORE_MAX_PENDING (1 << 20)

/* Wall-clock and monotonic time in milliseconds. */
int64_t store_now_ms(void);
int64_t store_mono_ms(void);

/* Formats the handle's error message ("<path>: ...") and returns code. */
int store_err(wb_store *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps a SQLite result code rc of the operation `what` to a WB_ERR_* code and sets the
 * handle's message from it: busy, locked, not a database, corrupt and read-only get their own
 * wording naming the path. Returns the WB code. */
int store_sqlite_err(wb_store *s, int rc, const char *what);

/* Returns the reset prepared statement id (bindings cleared), or NULL with the error set
 * (then *rc holds the WB code). */
sqlite3_stmt *store_stmt(wb_store *s, enum store_stmt_id id, int *rc);

/* Runs one SQL text with no result rows (BEGIN IMMEDIATE, COMMIT, ...). Returns a WB code. */
int store_exec(wb_store *s, const char *sql, const char *what);

/* Binds a text, or NULL when str is NULL or "". */
int store_bind_text_or_null(sqlite3_stmt *st, int i, const char *str);

/* Checks that run_id names a run; WB_OK, WB_ERR_NOTFOUND or a read error. *status receives
 * the run's status when status is not NULL. */
int store_run_check(wb_store *s, int64_t run_id, wb_run_status *status);

/* "<boot id>:<start time in clock ticks since boot>" of pid, or "" when /proc cannot tell
 * (another OS, a pid that does not exist). A pid reused after a crash has a different start
 * time; a pid from before a reboot has a different boot id. */
void store_proc_identity(int64_t pid, char *buf, size_t buflen);

/* ---- Result memory: one arena per query result -------------------------------------- */

struct wb_mem;
struct wb_mem *store_mem_new(void);
void store_mem_free(struct wb_mem *m);
/* size bytes aligned for any type, zeroed; NULL when out of memory. */
void *store_mem_alloc(struct wb_mem *m, size_t size);
/* A copy of str ("" for NULL) in m; NULL when out of memory. */
const char *store_mem_strdup(struct wb_mem *m, const char *str);
/* Hands a malloc'd block to m, which frees it with itself. Returns 0, or -1 (and frees p)
 * when out of memory. */
int store_mem_adopt(struct wb_mem *m, void *p);

/* A growable array of elem bytes per item, malloc'd; adopted by an arena when complete. */
typedef struct store_vec {
  void *data;
  int64_t n, cap;
  size_t elem;
} store_vec;
/* Pointer to a new zeroed item at the end, or NULL when out of memory. */
void *store_vec_push(store_vec *v);

#endif /* WB_STORE_INT_H */
