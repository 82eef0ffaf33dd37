/* bench/main.c: the wb program: `wb run SCRIPT.lua` and the result-store commands.
 *
 * Exit codes: 0 success; 1 a failure (script error, store error); 2 a usage error (unknown
 * command or option, missing argument); 130 / 143 a script stopped by SIGINT / SIGTERM, its run
 * recorded KILLED with everything logged so far. */
#include "host.h"
#include "nn.h"
#include "sha256.h"
#include "wb_lua.h"

#include <cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
  const char *usage;
} command;

static int cmd_run(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const command commands[] = {
    {"run", cmd_run, "run an experiment script",
     "usage: wb run SCRIPT.lua [--name value ...] [--config FILE.json] [--db PATH]\n"
     "       wb run SCRIPT.lua --help      the script's options and their defaults\n"
     "\n"
     "Runs a Lua script. The script declares its options with wb.args{name = default, ...};\n"
     "--name value (or --name=value; a bare --name for a boolean) overrides a default, and\n"
     "--config FILE.json sets options from a JSON object (the command line wins over it).\n"
     "Values are converted to the default's type. Runs are recorded in the result store\n"
     "(--db, default " WB_STORE_DEFAULT_PATH "). Ctrl-C stops the script and records its run\n"
     "KILLED with what it logged (exit 130; 143 for SIGTERM). WB_BUSY_TIMEOUT_MS sets how long\n"
     "to wait for another process's lock on the database (default 5000).\n"},
    {"runs", wb_cmd_runs, "list runs",
     "usage: wb runs [--experiment E] [--status S] [--db PATH]\n"
     "\n"
     "Lists runs, oldest first: id, experiment, name, status, start, duration, parent, error.\n"
     "S is RUNNING, FINISHED, FAILED or KILLED.\n"},
    {"show", wb_cmd_show, "show one run",
     "usage: wb show RUN [--db PATH]\n"
     "\n"
     "Shows what was recorded for run RUN (its id): status, times, script and git commit,\n"
     "machine, params, final metric values, tags, artifacts and error.\n"},
    {"compare", wb_cmd_compare, "compare a metric across groups of runs",
     "usage: wb compare --experiment E --metric M [--group-by PARAM ...] [--where EXPR]\n"
     "                  [--format text|csv] [--db PATH]\n"
     "\n"
     "Mean, standard deviation, count and 95% confidence interval (Student's t) of the final\n"
     "value of metric M over the FINISHED runs of experiment E, per group. Groups: runs with\n"
     "equal values of the --group-by params (repeat the option or separate names by commas);\n"
     "without --group-by, runs whose params are all equal apart from seed. Runs whose final\n"
     "value is NaN are counted in the nan column and left out of the statistics.\n"
     "--where keeps the runs whose params satisfy every condition of EXPR: conditions\n"
     "PARAM OP VALUE with OP one of = == != < <= > >=, joined by ',' or ' and ', e.g.\n"
     "  --where 'lr=0.1'   --where 'model!=mlp, budget<0.5'   --where \"opt = 'adam' and lr >= "
     "1e-3\"\n"
     "Values compare as numbers when both sides are numbers, otherwise as text; a run without\n"
     "the param fails every condition on it except !=.\n"},
    {"report", wb_cmd_report, "write an HTML and a Markdown report",
     "usage: wb report [--experiment E ...] [-o FILE.html] [--db PATH]\n"
     "\n"
     "Writes a self-contained HTML report of the experiments (all when none is named) to FILE\n"
     "(default results/report.html) and its Markdown twin beside it (FILE with .md).\n"},
    {"export", wb_cmd_export, "export runs as CSV or JSON",
     "usage: wb export [--format csv|json] [--experiment E] [-o FILE] [--db PATH]\n"
     "\n"
     "Writes every run (of experiment E) with params, tags, artifacts and all metric values,\n"
     "as long-form CSV (default) or one JSON document, to FILE or standard output.\n"},
    {"version", cmd_version, "print the version", "usage: wb version\n"},
    {"help", cmd_help, "help on a command", "usage: wb help [COMMAND]\n"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static const command *find_command(const char *name) {
  for (int i = 0; i < N_COMMANDS; i++)
    if (!strcmp(commands[i].name, name)) return &commands[i];
  return NULL;
}

static void print_commands(FILE *f) {
  fprintf(f, "usage: wb COMMAND [ARGS]\n\ncommands:\n");
  for (int i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n`wb help COMMAND` or `wb COMMAND --help` describes a command.\n");
}

int wb_cli_usage(const char *name, FILE *f) {
  const command *c = find_command(name);
  if (c) fputs(c->usage, f);
  return c ? 0 : -1;
}

static int cmd_version(int argc, char **argv) {
  (void)argv;
  if (argc > 0 && strcmp(argv[0], "--help") && strcmp(argv[0], "-h")) {
    fprintf(stderr, "wb version: unexpected argument '%s'\n", argv[0]);
    return 2;
  }
  printf("wb %s (%s, SQLite store schema %d)\n", WB_VERSION_STRING, LUA_RELEASE,
         WB_STORE_SCHEMA_VERSION);
  return 0;
}

static int cmd_help(int argc, char **argv) {
  if (argc == 0) {
    print_commands(stdout);
    return 0;
  }
  if (wb_cli_usage(argv[0], stdout) != 0) {
    fprintf(stderr, "wb help: unknown command '%s'\n", argv[0]);
    print_commands(stderr);
    return 2;
  }
  return 0;
}

/* ---------------------------------------------------------------- wb run */

typedef struct run_args {
  const char *script, *db, *config;
  int help;
  int n_opts, cap_opts;
  wb_host_opt *opts;
  char **owned; /* strings allocated here (config values), freed at the end */
  int n_owned, cap_owned;
} run_args;

static char *own(run_args *a, char *s) {
  if (!s) return NULL;
  if (a->n_owned == a->cap_owned) {
    int cap = a->cap_owned ? 2 * a->cap_owned : 16;
    char **p = realloc(a->owned, (size_t)cap * sizeof *p);
    if (!p) {
      free(s);
      return NULL;
    }
    a->owned = p, a->cap_owned = cap;
  }
  return a->owned[a->n_owned++] = s;
}

static int add_opt(run_args *a, const char *name, const char *value, const char *origin,
                   int is_flag) {
  if (a->n_opts == a->cap_opts) {
    int cap = a->cap_opts ? 2 * a->cap_opts : 16;
    wb_host_opt *p = realloc(a->opts, (size_t)cap * sizeof *p);
    if (!p) return -1;
    a->opts = p, a->cap_opts = cap;
  }
  a->opts[a->n_opts++] = (wb_host_opt){name, value, origin, is_flag};
  return 0;
}

static char *dup_n(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n), d[n] = '\0';
  return d;
}

/* Reads the --config JSON object into options. Returns 0, or 1 with the reason printed. */
static int read_config(run_args *a) {
  FILE *f = fopen(a->config, "rb");
  if (!f) {
    fprintf(stderr, "wb run: cannot open config %s: %s\n", a->config, strerror(errno));
    return 1;
  }
  char *text = NULL;
  size_t len = 0, cap = 0, got;
  char buf[8192];
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    if (len + got + 1 > cap) {
      cap = 2 * (len + got + 1);
      char *p = realloc(text, cap);
      if (!p) {
        free(text);
        fclose(f);
        fprintf(stderr, "wb run: out of memory reading %s\n", a->config);
        return 1;
      }
      text = p;
    }
    memcpy(text + len, buf, got);
    len += got;
  }
  fclose(f);
  if (!text) text = calloc(1, 1);
  if (!text) return 1;
  text[len] = '\0';
  cJSON *root = cJSON_Parse(text);
  int rc = 0;
  size_t n_origin = strlen(a->config) + 8;
  char *origin = own(a, malloc(n_origin));
  if (origin) snprintf(origin, n_origin, "config %s", a->config);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    int line = 1;
    for (const char *p = text; at && p < at && *p; p++) line += *p == '\n';
    fprintf(stderr, "wb run: config %s is not valid JSON (near line %d)\n", a->config, line);
    rc = 1;
  } else if (!cJSON_IsObject(root)) {
    fprintf(stderr, "wb run: config %s must hold a JSON object {\"name\": value, ...}\n",
            a->config);
    rc = 1;
  }
  for (cJSON *m = root && !rc ? root->child : NULL; m && !rc; m = m->next) {
    char num[64];
    const char *v = NULL;
    if (cJSON_IsString(m)) {
      v = m->valuestring;
    } else if (cJSON_IsNumber(m)) {
      wb_host_fmt_number(num, sizeof num, m->valuedouble);
      v = num;
    } else if (cJSON_IsBool(m)) {
      v = cJSON_IsTrue(m) ? "true" : "false";
    } else {
      fprintf(stderr, "wb run: config %s: option %s must be a number, string or boolean\n",
              a->config, m->string);
      rc = 1;
      break;
    }
    char *name = own(a, dup_n(m->string, strlen(m->string)));
    char *value = own(a, dup_n(v, strlen(v)));
    if (!name || !value || !origin || add_opt(a, name, value, origin, 0) != 0) {
      fprintf(stderr, "wb run: out of memory\n");
      rc = 1;
    }
  }
  cJSON_Delete(root);
  free(text);
  return rc;
}

/* Parses `SCRIPT [options]`. Returns -1 to go on, or an exit code. */
static int parse_run_args(run_args *a, int argc, char **argv) {
  if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
    wb_cli_usage("run", argc < 1 ? stderr : stdout);
    return argc < 1 ? 2 : 0;
  }
  a->script = argv[0];
  /* the command line's script options come after the config file's: collect them aside */
  run_args cli = {0};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      a->help = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
      fprintf(stderr, "wb run: unexpected argument '%s' (options are --name value)\n", arg);
      free(cli.opts);
      return 2;
    }
    const char *name = arg + 2, *eq = strchr(name, '=');
    char *owned_name = NULL;
    const char *value = NULL;
    if (eq) {
      owned_name = own(a, dup_n(name, (size_t)(eq - name)));
      if (!owned_name) {
        fprintf(stderr, "wb run: out of memory\n");
        free(cli.opts);
        return 1;
      }
      name = owned_name;
      value = eq + 1;
    } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
      value = argv[++i];
    }
    if (!strcmp(name, "db") || !strcmp(name, "config")) {
      if (!value || !*value) {
        fprintf(stderr, "wb run: --%s needs a value\n", name);
        free(cli.opts);
        return 2;
      }
      *(!strcmp(name, "db") ? &a->db : &a->config) = value;
      continue;
    }
    if (add_opt(&cli, name, value ? value : "true", "the command line", !value) != 0) {
      fprintf(stderr, "wb run: out of memory\n");
      free(cli.opts);
      return 1;
    }
  }
  int rc = -1;
  if (a->config && read_config(a) != 0) rc = 2;
  for (int i = 0; rc < 0 && i < cli.n_opts; i++)
    if (add_opt(a, cli.opts[i].name, cli.opts[i].value, cli.opts[i].origin, cli.opts[i].is_flag))
      rc = 1;
  free(cli.opts);
  return rc;
}

/* "wb run a.lua --lr 0.1" with arguments holding spaces or quotes single-quoted. */
static char *command_line(int argc, char **argv) {
  size_t n = 16;
  for (int i = 0; i < argc; i++) n += 4 * strlen(argv[i]) + 3;
  char *s = malloc(n), *p = s;
  if (!s) return NULL;
  p += sprintf(p, "wb run");
  for (int i = 0; i < argc; i++) {
    int plain = argv[i][0] != '\0';
    for (const char *c = argv[i]; *c && plain; c++)
      plain = !strchr(" \t\n'\"\\$`!*?;&|<>()[]{}#~", *c);
    *p++ = ' ';
    if (plain) {
      p += sprintf(p, "%s", argv[i]);
      continue;
    }
    *p++ = '\'';
    for (const char *c = argv[i]; *c; c++)
      p += *c == '\'' ? sprintf(p, "'\\''") : sprintf(p, "%c", *c);
    *p++ = '\'';
  }
  *p = '\0';
  return s;
}

/* Sets the script's `arg` table (as the lua program does) and puts its directory first on
 * package.path, so `require "helper"` finds helper.lua beside the script. */
static void prepare_state(lua_State *L, const char *script, int argc, char **argv) {
  lua_createtable(L, argc, 1);
  lua_pushstring(L, script);
  lua_rawseti(L, -2, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");
  char dir[4096];
  wb_host_dirname(script, dir, sizeof dir);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

static int cmd_run(int argc, char **argv) {
  run_args a = {0};
  int rc = parse_run_args(&a, argc, argv);
  char *command = NULL;
  char sha[65] = "";
  lua_State *L = NULL;
  if (rc >= 0) goto done;
  rc = 1;
  if (wb_sha256_file(a.script, sha) != 0) {
    fprintf(stderr, "wb run: cannot read script %s: %s\n", a.script, strerror(errno));
    goto done;
  }
  command = command_line(argc, argv);
  wb_host host = {
      .db_path = a.db,
      .script = a.script,
      .script_sha256 = sha,
      .command = command,
      .help = a.help,
      .n_opts = a.n_opts,
      .opts = a.opts,
  };
  L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "wb: cannot create a Lua state (out of memory)\n");
    goto done;
  }
  wb_lua_openlibs(L);
  prepare_state(L, a.script, argc, argv);
  wb_lua_run_attach(L, &host);
  lua_pushcfunction(L, wb_lua_traceback);
  int status = luaL_loadfile(L, a.script);
  if (status != LUA_OK) {
    /* a syntax error has no stack to trace: the message names file:line */
    fprintf(stderr, "wb: %s\n(the script did not start: syntax error)\n", lua_tostring(L, -1));
    wb_lua_run_detach(L, WB_RUN_FAILED, lua_tostring(L, -1));
    goto done;
  }
  status = lua_pcall(L, 0, 0, 1);
  int code;
  if (status == LUA_OK) {
    rc = 0;
    if (!host.args_called && host.n_opts > 0) {
      fprintf(stderr, "wb run: option --%s was given but %s declares no options (wb.args)\n",
              host.opts[0].name, a.script);
      rc = 2;
    } else if (!host.args_called && host.help) {
      printf("%s declares no options (wb.args)\n", a.script);
    }
    if (wb_lua_run_detach(L, WB_RUN_FINISHED, NULL) != 0) rc = 1;
  } else if (wb_lua_run_is_help(L, -1)) {
    wb_lua_run_detach(L, WB_RUN_FAILED, "stopped by --help");
    rc = 0;
  } else if ((code = wb_lua_run_exit_code(L, -1)) >= 0) {
    char msg[64];
    snprintf(msg, sizeof msg, "os.exit(%d)", code);
    int bad =
        wb_lua_run_detach(L, code == 0 ? WB_RUN_FINISHED : WB_RUN_FAILED, code == 0 ? NULL : msg);
    rc = code == 0 && bad ? 1 : code;
  } else if (wb_lua_run_interrupted()) {
    int sig = wb_lua_run_interrupted();
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    fprintf(stderr, "wb: interrupted by %s\n", name);
    char msg[64];
    snprintf(msg, sizeof msg, "interrupted by %s", name);
    wb_lua_run_detach(L, WB_RUN_KILLED, msg);
    rc = 128 + sig;
  } else {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "wb: %s\n", msg ? msg : "(error object is not a string)");
    wb_lua_run_detach(L, WB_RUN_FAILED, msg);
    rc = 1;
  }
done:
  if (L) lua_close(L);
  free(command);
  for (int i = 0; i < a.n_owned; i++) free(a.owned[i]);
  free(a.owned);
  free(a.opts);
  fflush(stdout);
  return rc;
}

int main(int argc, char **argv) {
  nn_blas_init(argv); /* may re-execute wb once with OpenBLAS settings (nn/tensor.h) */
  if (argc < 2) {
    print_commands(stderr);
    return 2;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--help") || !strcmp(name, "-h")) return cmd_help(0, NULL);
  if (!strcmp(name, "--version")) return cmd_version(0, NULL);
  const command *c = find_command(name);
  if (!c) {
    fprintf(stderr, "wb: unknown command '%s'; commands:", name);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, "\n(`wb help` describes them)\n");
    return 2;
  }
  if (c->fn != cmd_run && c->fn != cmd_help)
    for (int i = 2; i < argc; i++)
      if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
        fputs(c->usage, stdout);
        return 0;
      }
  return c->fn(argc - 2, argv + 2);
}
