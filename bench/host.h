/* bench/host.h: the wb program's host, internal to bench/: what `wb run` (main.c) hands to the
 * run side of the Lua face (lua_run.c, lua_args.c, lua_progress.c, lua_store.c), the store
 * commands (cli.c, cli_compare.c), and small system helpers (host.c).
 *
 * One `wb run` process runs one script in one Lua state, so the run side keeps its state
 * (the host description, the result store handle opened on first use, the interrupt flag) in
 * file statics of lua_run.c, set by wb_lua_run_attach before the script starts. */
#ifndef WB_HOST_H
#define WB_HOST_H

#include "store.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#ifndef WB_VERSION_STRING
#define WB_VERSION_STRING "0.0.0"
#endif

/* One value given for a script option: `--name value` on the command line or a member of the
 * --config JSON object. Later entries override earlier ones (the config file's come first). */
typedef struct wb_host_opt {
  const char *name;
  const char *value;  /* text; JSON numbers and booleans converted by wb_host_fmt_number/"true" */
  const char *origin; /* "the command line" or "config FILE", for error messages */
  int is_flag;        /* `--name` with no value: true for a boolean option, an error otherwise */
} wb_host_opt;

/* What `wb run` tells the Lua side. Strings are borrowed and must outlive the Lua state. */
typedef struct wb_host {
  const char *db_path;       /* NULL: WB_STORE_DEFAULT_PATH */
  const char *script;        /* the script path as given; NULL outside `wb run` */
  const char *script_sha256; /* hex digest of the script's bytes; NULL or "": unknown */
  const char *command;       /* the command line, recorded as tag wb.command; may be NULL */
  int help;                  /* --help given: wb.args prints the options and stops the script */
  int n_opts;
  const wb_host_opt *opts; /* (n_opts) */
  int args_called;         /* set by wb.args: the options were resolved */
} wb_host;

/* ---- lua_run.c ---------------------------------------------------------------------- */

/* Before the script runs: remembers h (it must outlive L) and installs the SIGINT/SIGTERM
 * handler that makes the running script raise "interrupted by SIGINT". */
void wb_lua_run_attach(lua_State *L, wb_host *h);
/* After the script: ends every run still open with status (FINISHED, FAILED or KILLED) and
 * error (may be NULL), restores the default signal handlers and closes the result store.
 * Returns 0, or -1 when a run could not be ended (the reason printed on stderr). */
int wb_lua_run_detach(lua_State *L, wb_run_status status, const char *error);
/* Is the value at idx the "help" stop that wb.args raises after printing the options? */
int wb_lua_run_is_help(lua_State *L, int idx);
/* The code of the os.exit(code) stop at idx, or -1 when the value is not that stop. */
int wb_lua_run_exit_code(lua_State *L, int idx);
/* Raises the help stop (never returns). */
int wb_lua_run_raise_help(lua_State *L);
/* The signal that interrupted the script (SIGINT, SIGTERM), or 0. */
int wb_lua_run_interrupted(void);
/* Raises "interrupted by SIGINT" when a signal has arrived; returns 0 otherwise. Checked by the
 * run side's C functions, so a script spending its time in C calls still stops promptly. */
int wb_lua_run_check_interrupt(lua_State *L);
/* The result store, opened on first use (the host's db_path); raises a Lua error naming the
 * problem when it cannot be opened. Borrowed. */
wb_store *wb_lua_run_store(lua_State *L);
/* The host description (never NULL: a default one outside `wb run`). */
wb_host *wb_lua_run_host(void);
/* Message handler for lua_pcall: appends a traceback to a string error; passes the help stop
 * through unchanged; converts other error objects with tostring. */
int wb_lua_traceback(lua_State *L);

/* The other parts of the run face; each adds its fields to the wb table at the top. */
void wb_lua_open_args(lua_State *L);     /* wb.args, wb.grid (lua_args.c) */
void wb_lua_open_progress(lua_State *L); /* wb.progress (lua_progress.c) */
void wb_lua_open_store(lua_State *L);    /* wb.store.runs/run/history, wb.report (lua_store.c) */

/* Text of a Lua value for params, tags and sweep points: integers as %lld, other numbers in the
 * shortest form that reads back to the same double ("0.1", not "0.10000000000000001"),
 * booleans as true/false, strings as they are. Returns NULL (nothing pushed) for other types;
 * otherwise pushes the text and returns it. */
const char *wb_lua_value_text(lua_State *L, int idx);

/* ---- host.c ------------------------------------------------------------------------- */

/* Shortest "%.{15,16,17}g" form of v that reads back to v; "inf", "-inf", "nan" otherwise. */
void wb_host_fmt_number(char *buf, size_t n, double v);
/* The git commit (40 hex digits) of the repository holding dir and whether its work tree has
 * changes (`git status --porcelain` not empty). Returns 0, or -1 when dir is not in a git
 * repository or git is not installed (nothing printed). */
int wb_host_git(const char *dir, char *commit, size_t n, int *dirty);
/* The directory part of path into buf ("." when there is none). */
void wb_host_dirname(const char *path, char *buf, size_t n);
/* Creates the missing parent directories of the file path (mkdir -p of its directory).
 * Returns 0, or -1 with errno set. */
int wb_host_make_parents(const char *path);
/* Seconds from a monotonic clock. */
double wb_host_mono(void);
/* Formats epoch milliseconds as local "YYYY-MM-DD HH:MM:SS" ("-" for 0). */
void wb_host_fmt_time(char *buf, size_t n, int64_t ms);
/* Formats a duration in seconds as "850ms", "12.3s", "4m05s", "2h13m" ("-" when < 0). */
void wb_host_fmt_duration(char *buf, size_t n, double s);

/* ---- commands (cli.c, cli_compare.c): argv after the command name; return the exit code ---- */
/* Prints the usage text of command name to f (main.c); -1 for an unknown command. */
int wb_cli_usage(const char *name, FILE *f);
/* Opens the store at path (NULL: the default) for a command; a missing file is an error (the
 * commands never create an empty store). Prints the reason and returns NULL on failure. */
wb_store *wb_cli_open(const char *cmd, const char *path);
/* Reads option argv[*i] of a command: returns 1 and sets *value when argv[*i] is --name VALUE
 * or --name=VALUE (advancing *i past the value), 0 when it is another argument, and -1 with a
 * message printed when the value is missing. */
int wb_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value);
int wb_cmd_runs(int argc, char **argv);
int wb_cmd_show(int argc, char **argv);
int wb_cmd_export(int argc, char **argv);
int wb_cmd_report(int argc, char **argv);
int wb_cmd_compare(int argc, char **argv);

#endif
