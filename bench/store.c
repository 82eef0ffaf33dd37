/* bench/store.c: opening and closing the result store: directories, WAL, the schema and its
 * migrations, repair of runs left RUNNING by dead processes, error wording, the prepared
 * statement cache. Writes are in store_log.c, reads in store_query.c. */
#include "store_int.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Schema ---------------------------------------------------------------------------
 * MIGRATIONS[v] takes a store from user_version v to v + 1; a later schema appends an entry
 * (ALTER TABLE ... ADD COLUMN ...) and bumps WB_STORE_SCHEMA_VERSION. Each runs inside the
 * same BEGIN IMMEDIATE transaction as the user_version update, so a crash leaves the old
 * version intact. */
static const char *const MIGRATIONS[WB_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE experiments("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY,"
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(id),"
    "  parent_id INTEGER REFERENCES runs(id),"
    "  name TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL CHECK (status IN ('RUNNING','FINISHED','FAILED','KILLED')),"
    "  start_ms INTEGER NOT NULL,"
    "  end_ms INTEGER,"
    "  script TEXT, script_sha256 TEXT, git_commit TEXT, git_dirty INTEGER,"
    "  host TEXT, cpu_model TEXT, threads INTEGER, device TEXT, wb_version TEXT,"
    "  seed INTEGER, peak_rss_kb INTEGER, wall_s REAL, pid INTEGER, error TEXT"
    ") STRICT;"
    "CREATE INDEX runs_experiment ON runs(experiment_id, start_ms);"
    "CREATE INDEX runs_parent ON runs(parent_id);"
    "CREATE INDEX runs_status ON runs(status);"
    "CREATE TABLE params("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, key)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE metrics("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  timestamp_ms INTEGER NOT NULL,"
    "  value REAL," /* NULL when is_nan: SQLite turns a bound NaN into NULL anyway */
    "  is_nan INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1))"
    ") STRICT;"
    "CREATE INDEX metrics_run_key_step ON metrics(run_id, key, step);"
    "CREATE TABLE latest_metrics("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  timestamp_ms INTEGER NOT NULL,"
    "  value REAL,"
    "  is_nan INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (run_id, key)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE tags("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, key)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE artifacts("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL,"
    "  kind TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX artifacts_run ON artifacts(run_id);",
};

static const char *const STMT_SQL[STMT_COUNT] = {
    [STMT_METRIC_INSERT] = "INSERT INTO metrics(run_id, key, step, timestamp_ms, value, is_nan)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    /* >=: among rows at the same step the last written is the final one */
    [STMT_LATEST_UPSERT] = "INSERT INTO latest_metrics(run_id, key, step, timestamp_ms, value,"
                           " is_nan) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                           " ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step,"
                           " timestamp_ms = excluded.timestamp_ms, value = excluded.value,"
                           " is_nan = excluded.is_nan WHERE excluded.step >= latest_metrics.step",
    /* IMMEDIATE: take the write lock at BEGIN, where the busy handler waits for it; a
     * deferred transaction that upgrades later fails at once with SQLITE_BUSY in WAL mode */
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_RUN_STATUS] = "SELECT status FROM runs WHERE id = ?1",
    [STMT_PARAM_INSERT] = "INSERT INTO params(run_id, key, value) VALUES (?1, ?2, ?3)"
                          " ON CONFLICT (run_id, key) DO NOTHING",
    [STMT_PARAM_GET] = "SELECT value FROM params WHERE run_id = ?1 AND key = ?2",
    [STMT_TAG_UPSERT] = "INSERT INTO tags(run_id, key, value) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    [STMT_ARTIFACT_INSERT] = "INSERT INTO artifacts(run_id, path, kind, created_ms)"
                             " VALUES (?1, ?2, ?3, ?4)",
};

/* ---- Small helpers -------------------------------------------------------------------- */

volatile int store_fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { store_fork_gen++; }
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, on_fork_child); }

int store_fork_err(wb_store *s) {
  return store_err(s, WB_ERR_STATE,
                   "this handle was opened by process %lld and inherited across fork(); a "
                   "child process opens its own store",
                   (long long)s->owner_pid);
}

int64_t store_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t store_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy_msg(char *err, size_t errlen, const char *msg) {
  if (err && errlen > 0) snprintf(err, errlen, "%s", msg);
}

const char *wb_store_code_name(int code) {
  switch (code) {
  case WB_OK:
    return "WB_OK";
  case WB_ERR_ARG:
    return "WB_ERR_ARG";
  case WB_ERR_NOMEM:
    return "WB_ERR_NOMEM";
  case WB_ERR_IO:
    return "WB_ERR_IO";
  case WB_ERR_READONLY:
    return "WB_ERR_READONLY";
  case WB_ERR_NOTDB:
    return "WB_ERR_NOTDB";
  case WB_ERR_CORRUPT:
    return "WB_ERR_CORRUPT";
  case WB_ERR_BUSY:
    return "WB_ERR_BUSY";
  case WB_ERR_SCHEMA:
    return "WB_ERR_SCHEMA";
  case WB_ERR_NOTFOUND:
    return "WB_ERR_NOTFOUND";
  case WB_ERR_CONFLICT:
    return "WB_ERR_CONFLICT";
  case WB_ERR_STATE:
    return "WB_ERR_STATE";
  case WB_ERR_DB:
    return "WB_ERR_DB";
  default:
    return "WB_ERR_?";
  }
}

int store_err(wb_store *s, int code, const char *fmt, ...) {
  int n = snprintf(s->errmsg, sizeof s->errmsg, "%s: ", s->path);
  if (n < 0 || (size_t)n >= sizeof s->errmsg) return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errmsg + n, sizeof s->errmsg - (size_t)n, fmt, ap);
  va_end(ap);
  return code;
}

int store_sqlite_err(wb_store *s, int rc, const char *what) {
  const char *detail = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return store_err(s, WB_ERR_BUSY,
                     "%s: database is locked: another process holds a lock on it "
                     "(waited %d ms)",
                     what, s->busy_timeout_ms);
  case SQLITE_NOTADB:
    return store_err(s, WB_ERR_NOTDB, "file is not a wb result store (not a database)");
  case SQLITE_CORRUPT:
    return store_err(s, WB_ERR_CORRUPT, "database disk image is malformed (found while %s)", what);
  case SQLITE_READONLY:
    return store_err(s, WB_ERR_READONLY, "%s: the database is read-only (%s)", what, detail);
  case SQLITE_NOMEM:
    return store_err(s, WB_ERR_NOMEM, "%s: out of memory", what);
  case SQLITE_CANTOPEN:
  case SQLITE_IOERR:
  case SQLITE_FULL:
  case SQLITE_PERM:
    return store_err(s, WB_ERR_IO, "%s: %s", what, detail);
  default:
    return store_err(s, WB_ERR_DB, "%s: %s", what, detail);
  }
}

sqlite3_stmt *store_stmt(wb_store *s, enum store_stmt_id id, int *rc) {
  sqlite3_stmt *st = s->stmt[id];
  if (st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
  }
  int r = sqlite3_prepare_v3(s->db, STMT_SQL[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
  if (r != SQLITE_OK) {
    *rc = store_sqlite_err(s, r, "preparing a statement");
    return NULL;
  }
  s->stmt[id] = st;
  return st;
}

int store_exec(wb_store *s, const char *sql, const char *what) {
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? WB_OK : store_sqlite_err(s, rc, what);
}

int store_bind_text_or_null(sqlite3_stmt *st, int i, const char *str) {
  if (!str || !*str) return sqlite3_bind_null(st, i);
  return sqlite3_bind_text(st, i, str, -1, SQLITE_TRANSIENT);
}

/* Reads one integer from a single-row query. */
static int query_int(wb_store *s, const char *sql, int64_t *out, const char *what) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  int wrc = rc == SQLITE_OK ? WB_OK : store_sqlite_err(s, rc, what);
  sqlite3_finalize(st);
  return wrc;
}

/* ---- Directories ---------------------------------------------------------------------- */

/* mkdir -p of the directory part of path. */
static int make_parents(const char *path, char *err, size_t errlen) {
  size_t len = strlen(path);
  char *p = malloc(len + 1);
  if (!p) {
    copy_msg(err, errlen, "out of memory");
    return WB_ERR_NOMEM;
  }
  memcpy(p, path, len + 1);
  int rc = WB_OK;
  for (char *c = p + 1; *c; c++) {
    if (*c != '/') continue;
    *c = '\0';
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      int e = errno;
      struct stat sb;
      if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        if (err && errlen)
          snprintf(err, errlen, "%s: cannot create directory %s: %s", path, p, strerror(e));
        rc = (e == EACCES || e == EROFS) ? WB_ERR_READONLY : WB_ERR_IO;
        break;
      }
    } else {
      /* mkdir said EEXIST (or made it): the name must be a directory to hold the file */
      struct stat sb;
      if (stat(p, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        if (err && errlen)
          snprintf(err, errlen, "%s: cannot create directory %s: it is a file, not a directory",
                   path, p);
        rc = WB_ERR_IO;
        break;
      }
    }
    *c = '/';
  }
  free(p);
  return rc;
}

/* The directory part of path in buf ("." when none). */
static void dir_of(const char *path, char *buf, size_t buflen) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(buf, buflen, ".");
  } else if (slash == path) {
    snprintf(buf, buflen, "/");
  } else {
    snprintf(buf, buflen, "%.*s", (int)(slash - path), path);
  }
}

/* ---- Process identity: is the process that started a run still that process? -------- */

void store_proc_identity(int64_t pid, char *buf, size_t buflen) {
  buf[0] = '\0';
  char boot[64] = "";
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (!f) return;
  if (!fgets(boot, sizeof boot, f)) boot[0] = '\0';
  fclose(f);
  boot[strcspn(boot, "\n")] = '\0';
  char statpath[64];
  snprintf(statpath, sizeof statpath, "/proc/%lld/stat", (long long)pid);
  f = fopen(statpath, "r");
  if (!f) return;
  char line[1024];
  size_t n = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  line[n] = '\0';
  /* the command name (field 2) may hold spaces and ')': fields resume after the last ')' */
  char *p = strrchr(line, ')');
  if (!p) return;
  p++;
  /* after ')' come field 3 (state) ... field 22 (starttime): skip 19 fields */
  for (int field = 3; field < 22 && p; field++) {
    while (*p == ' ') p++;
    p = strchr(p, ' ');
  }
  if (!p) return;
  while (*p == ' ') p++;
  unsigned long long start = strtoull(p, NULL, 10);
  snprintf(buf, buflen, "%s:%llu", boot, start);
}

static int pid_alive(int64_t pid) {
  if (pid <= 0 || pid > 0x7fffffff) return 0;
  return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Marks runs left RUNNING on this host by processes that are gone as FAILED. */
static int repair_stale_runs(wb_store *s) {
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) != 0) return WB_OK; /* cannot tell: leave them */
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT r.id, r.pid, (SELECT value FROM tags t WHERE"
                              " t.run_id = r.id AND t.key = 'wb.proc') FROM runs r"
                              " WHERE r.status = 'RUNNING' AND r.host = ?1 AND r.pid > 0",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return store_sqlite_err(s, rc, "looking for stale runs");
  sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
  int64_t stale_ids[64], stale_pids[64];
  int n_stale = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0), pid = sqlite3_column_int64(st, 1);
    const char *recorded = (const char *)sqlite3_column_text(st, 2);
    int dead = !pid_alive(pid);
    if (!dead && recorded && *recorded) {
      char now[128];
      store_proc_identity(pid, now, sizeof now);
      dead = now[0] && strcmp(now, recorded) != 0; /* the pid was reused */
    }
    if (!dead) continue;
    if (n_stale == 64) break; /* a later open repairs the rest */
    stale_ids[n_stale] = id;
    stale_pids[n_stale++] = pid;
  }
  int wrc = (rc == SQLITE_DONE || rc == SQLITE_ROW)
                ? WB_OK
                : store_sqlite_err(s, rc, "looking for stale runs");
  sqlite3_finalize(st);
  if (wrc != WB_OK || n_stale == 0) return wrc;

  if ((wrc = store_exec(s, "BEGIN IMMEDIATE", "marking stale runs FAILED")) != WB_OK) return wrc;
  rc = sqlite3_prepare_v2(s->db,
                          "UPDATE runs SET status = 'FAILED', error = ?2, end_ms = coalesce("
                          "(SELECT max(timestamp_ms) FROM latest_metrics WHERE run_id = ?1),"
                          " start_ms) WHERE id = ?1 AND status = 'RUNNING'",
                          -1, &st, NULL);
  for (int i = 0; rc == SQLITE_OK && i < n_stale; i++) {
    char msg[128];
    snprintf(msg, sizeof msg, "process %lld ended without finishing the run (crash or kill -9)",
             (long long)stale_pids[i]);
    sqlite3_bind_int64(st, 1, stale_ids[i]);
    sqlite3_bind_text(st, 2, msg, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    wrc = store_sqlite_err(s, rc, "marking stale runs FAILED");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  }
  return wrc;
}

/* ---- Schema setup --------------------------------------------------------------------- */

static int migrate(wb_store *s) {
  int64_t version = 0;
  int rc = query_int(s, "PRAGMA user_version", &version, "reading the schema version");
  if (rc != WB_OK) return rc;
  if (version > WB_STORE_SCHEMA_VERSION)
    return store_err(s, WB_ERR_SCHEMA,
                     "written by a newer wb (schema version %lld; this wb knows up to %d)",
                     (long long)version, WB_STORE_SCHEMA_VERSION);
  if (version == WB_STORE_SCHEMA_VERSION) return WB_OK;
  if (s->read_only) {
    if (version == 0) return store_err(s, WB_ERR_NOTDB, "file is not a wb result store (empty)");
    return store_err(s, WB_ERR_SCHEMA,
                     "schema version %lld is older than this wb's %d and the store is opened"
                     " read-only, so it cannot be migrated",
                     (long long)version, WB_STORE_SCHEMA_VERSION);
  }
  if ((rc = store_exec(s, "BEGIN IMMEDIATE", "creating the schema")) != WB_OK) return rc;
  /* another process may have migrated while we waited for the lock: read again */
  rc = query_int(s, "PRAGMA user_version", &version, "reading the schema version");
  if (rc == WB_OK && version == 0) {
    int64_t n_tables = 0;
    rc = query_int(s, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                   &n_tables, "reading the schema");
    if (rc == WB_OK && n_tables > 0)
      rc = store_err(s, WB_ERR_NOTDB,
                     "file is not a wb result store (a SQLite database holding other tables)");
  }
  for (int64_t v = version; rc == WB_OK && v < WB_STORE_SCHEMA_VERSION; v++)
    rc = store_exec(s, MIGRATIONS[v], "creating the schema");
  if (rc == WB_OK) {
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", WB_STORE_SCHEMA_VERSION);
    rc = store_exec(s, sql, "setting the schema version");
  }
  if (rc == WB_OK) rc = store_exec(s, "COMMIT", "creating the schema");
  if (rc != WB_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

/* Switches to WAL (readers never block the writer, and a commit is one append). The switch
 * needs a moment of exclusive access; with several processes opening a fresh file at once
 * it may find a lock the busy handler does not wait on, so retry until the busy timeout. */
static int set_wal(wb_store *s) {
  int64_t deadline = store_mono_ms() + s->busy_timeout_ms;
  for (;;) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int is_wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (is_wal) return WB_OK;
    if (rc == SQLITE_ROW || (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
      if (store_mono_ms() >= deadline)
        return store_sqlite_err(s, SQLITE_BUSY, "switching to WAL journal mode");
      usleep(10000);
      continue;
    }
    return store_sqlite_err(s, rc, "switching to WAL journal mode");
  }
}

/* Turns a failure before a handle exists into an error for the caller's err buffer. */
static int open_fail(wb_store *s, int rc, char *err, size_t errlen) {
  copy_msg(err, errlen, s->errmsg);
  wb_store_close(s); /* nothing is buffered yet: this only releases */
  return rc;
}

int wb_store_open(wb_store **out, const char *path, char *err, size_t errlen) {
  return wb_store_open_opts(out, path, NULL, err, errlen);
}

int wb_store_open_opts(wb_store **out, const char *path, const wb_store_options *opts, char *err,
                       size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (out) *out = NULL;
  if (!out || !path || !*path) {
    copy_msg(err, errlen, "wb_store_open: out and path must be given");
    return WB_ERR_ARG;
  }
  wb_store_options o = {0};
  if (opts) o = *opts;
  int in_memory = strcmp(path, ":memory:") == 0;
  if (!o.read_only && !in_memory) {
    int rc = make_parents(path, err, errlen);
    if (rc != WB_OK) return rc;
  }
  wb_store *s = calloc(1, sizeof *s);
  if (s) s->path = strdup(path);
  if (!s || !s->path) {
    free(s);
    copy_msg(err, errlen, "out of memory");
    return WB_ERR_NOMEM;
  }
  pthread_once(&fork_once, install_fork_handler);
  s->fork_gen = store_fork_gen;
  s->owner_pid = getpid();
  s->read_only = o.read_only != 0;
  s->busy_timeout_ms = o.busy_timeout_ms > 0 ? o.busy_timeout_ms : 5000;
  s->flush_rows = o.flush_rows > 0 ? o.flush_rows : 256;
  s->flush_ms = o.flush_ms > 0 ? o.flush_ms : 1000;

  /* NOMUTEX: a handle is used by one thread at a time (store.h), so SQLite's per-call
   * mutex is pure cost on the logging path */
  int flags = SQLITE_OPEN_NOMUTEX |
              (s->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
  if (rc != SQLITE_OK) {
    char dir[1024];
    dir_of(path, dir, sizeof dir);
    if ((rc & 0xff) == SQLITE_CANTOPEN && !s->read_only && access(dir, W_OK) != 0)
      return open_fail(s,
                       store_err(s, WB_ERR_READONLY,
                                 "cannot create the database: directory %s is not writable", dir),
                       err, errlen);
    if ((rc & 0xff) == SQLITE_CANTOPEN)
      return open_fail(s,
                       store_err(s, WB_ERR_IO, "cannot open the database file: %s",
                                 access(path, F_OK) == 0 ? "permission denied" : "no such file"),
                       err, errlen);
    return open_fail(s, store_sqlite_err(s, rc, "opening"), err, errlen);
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, s->busy_timeout_ms);
  if (!s->read_only && sqlite3_db_readonly(s->db, "main") == 1)
    return open_fail(s,
                     store_err(s, WB_ERR_READONLY,
                               "the file is read-only (no write permission); open it "
                               "read-only to only read it"),
                     err, errlen);

  /* the first read: a file that is not a database or is damaged fails here */
  int64_t version = 0;
  rc = query_int(s, "PRAGMA user_version", &version, "reading the schema version");
  if (rc == WB_OK) rc = store_exec(s, "PRAGMA foreign_keys = ON", "enabling foreign keys");
  if (rc == WB_OK && !s->read_only && !in_memory) rc = set_wal(s);
  /* NORMAL in WAL: a commit is durable against a crash of the process, not against power
   * loss (fsync only at checkpoints), and never leaves the file corrupt */
  if (rc == WB_OK && !s->read_only)
    rc = store_exec(s, "PRAGMA synchronous = NORMAL", "setting synchronous");
  if (rc == WB_OK) rc = migrate(s);
  if (rc == WB_OK && !s->read_only) rc = repair_stale_runs(s);
  if (rc != WB_OK) {
    /* a read-only directory shows up here, when WAL needs its -wal and -shm files */
    char dir[1024];
    dir_of(path, dir, sizeof dir);
    if ((rc == WB_ERR_IO || rc == WB_ERR_READONLY) && !s->read_only && access(dir, W_OK) != 0)
      rc = store_err(s, WB_ERR_READONLY,
                     "cannot write the database: directory %s is not writable (WAL keeps its "
                     "-wal and -shm files beside the database)",
                     dir);
    return open_fail(s, rc, err, errlen);
  }
  *out = s;
  return WB_OK;
}

void wb_store_close(wb_store *s) {
  if (!s) return;
  if (s->fork_gen != store_fork_gen) {
    /* inherited across fork(): the connection belongs to the parent, which writes the
     * buffered rows itself; release only this process's copy of our memory (the SQLite
     * connection object is left alone, as SQLite requires) */
    free(s->rows);
    free(s->keys);
    free(s->path);
    free(s);
    return;
  }
  if (s->db && s->n_rows > 0) wb_store_flush(s);
  for (int i = 0; i < STMT_COUNT; i++) sqlite3_finalize(s->stmt[i]);
  if (s->db) sqlite3_close_v2(s->db);
  free(s->rows);
  free(s->keys);
  free(s->path);
  free(s);
}

const char *wb_store_errmsg(wb_store *s) { return s ? s->errmsg : "no result store (NULL handle)"; }

const char *wb_store_path(wb_store *s) { return s ? s->path : ""; }

/* ---- Status names ------------------------------------------------------------------- */

static const char *const STATUS_NAMES[] = {"RUNNING", "FINISHED", "FAILED", "KILLED"};

const char *wb_run_status_name(wb_run_status st) {
  return (st >= WB_RUN_RUNNING && st <= WB_RUN_KILLED) ? STATUS_NAMES[st] : NULL;
}

int wb_run_status_parse(wb_run_status *out, const char *name, char *err, size_t errlen) {
  if (out) *out = WB_RUN_ANY;
  if (err && errlen) err[0] = '\0';
  for (int i = 0; name && out && i < 4; i++) {
    const char *a = name, *b = STATUS_NAMES[i];
    while (*a && *b && toupper((unsigned char)*a) == *b) a++, b++;
    if (!*a && !*b) {
      *out = (wb_run_status)i;
      return WB_OK;
    }
  }
  if (err && errlen)
    snprintf(err, errlen, "unknown run status '%s' (valid: RUNNING, FINISHED, FAILED, KILLED)",
             name ? name : "(null)");
  return WB_ERR_ARG;
}
