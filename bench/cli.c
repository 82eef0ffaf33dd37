/* bench/cli.c: the result-store commands of the wb program: runs, show, export, report (host.h).
 * Each takes the arguments after its name and returns the exit code: 0, 1 for a failure
 * (the store's message printed), 2 for a usage error. */
#include "host.h"
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int wb_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return 0;
  if (a[n] == '=') {
    *value = a + n + 1;
    return 1;
  }
  if (a[n] != '\0') return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "wb %s: %s needs a value\n", cmd, name);
    return -1;
  }
  *value = argv[++*i];
  return 1;
}

wb_store *wb_cli_open(const char *cmd, const char *path) {
  if (!path) path = WB_STORE_DEFAULT_PATH;
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "wb %s: no result store at %s (%s); run a script first or pass --db PATH\n",
            cmd, path, strerror(errno));
    return NULL;
  }
  wb_store_options o = {0};
  const char *bt = getenv("WB_BUSY_TIMEOUT_MS");
  if (bt && *bt) o.busy_timeout_ms = atoi(bt);
  wb_store *s = NULL;
  char err[1024];
  if (wb_store_open_opts(&s, path, &o, err, sizeof err) != WB_OK) {
    fprintf(stderr, "wb %s: %s\n", cmd, err);
    return NULL;
  }
  return s;
}

static int unexpected(const char *cmd, const char *arg) {
  fprintf(stderr, "wb %s: unexpected argument '%s' (`wb %s --help` lists the options)\n", cmd, arg,
          cmd);
  return 2;
}

/* ---------------------------------------------------------------- wb runs */

/* Copies the first line of s into buf, cut to width characters with "..." when longer. */
static const char *cut(char *buf, size_t n, const char *s, int width) {
  size_t len = strcspn(s, "\r\n");
  if ((int)len > width && width > 3) {
    snprintf(buf, n, "%.*s...", width - 3, s);
  } else {
    snprintf(buf, n, "%.*s", (int)len, s);
  }
  return buf;
}

int wb_cmd_runs(int argc, char **argv) {
  const char *db = NULL, *experiment = NULL, *status_name = NULL;
  for (int i = 0; i < argc; i++) {
    int r;
    if ((r = wb_cli_opt("runs", argc, argv, &i, "--db", &db)) ||
        (r = wb_cli_opt("runs", argc, argv, &i, "--experiment", &experiment)) ||
        (r = wb_cli_opt("runs", argc, argv, &i, "--status", &status_name))) {
      if (r < 0) return 2;
      continue;
    }
    return unexpected("runs", argv[i]);
  }
  wb_run_status status = WB_RUN_ANY;
  char err[256];
  if (status_name && wb_run_status_parse(&status, status_name, err, sizeof err) != WB_OK) {
    fprintf(stderr, "wb runs: %s\n", err);
    return 2;
  }
  wb_store *s = wb_cli_open("runs", db);
  if (!s) return 1;
  wb_run_list *list = NULL;
  if (wb_store_runs_list(s, experiment, status, &list) != WB_OK) {
    fprintf(stderr, "wb runs: %s\n", wb_store_errmsg(s));
    wb_store_close(s);
    return 1;
  }
  /* column widths from the content */
  int w_exp = 10, w_name = 4;
  for (int64_t i = 0; i < list->n; i++) {
    int e = (int)strlen(list->runs[i].info.experiment), n = (int)strlen(list->runs[i].info.name);
    if (e > w_exp) w_exp = e > 24 ? 24 : e;
    if (n > w_name) w_name = n > 32 ? 32 : n;
  }
  printf("%5s  %-*s  %-*s  %-8s  %-19s  %8s  %6s  %s\n", "ID", w_exp, "EXPERIMENT", w_name, "NAME",
         "STATUS", "STARTED", "TIME", "PARENT", "ERROR");
  for (int64_t i = 0; i < list->n; i++) {
    const wb_run *r = &list->runs[i];
    char started[32], dur[32], parent[24] = "-", e[64], n[64], msg[64];
    wb_host_fmt_time(started, sizeof started, r->start_ms);
    wb_host_fmt_duration(dur, sizeof dur,
                         r->wall_s >= 0 ? r->wall_s
                         : r->end_ms    ? (double)(r->end_ms - r->start_ms) / 1e3
                                        : -1);
    if (r->info.parent_id) snprintf(parent, sizeof parent, "%lld", (long long)r->info.parent_id);
    printf("%5lld  %-*s  %-*s  %-8s  %-19s  %8s  %6s  %s\n", (long long)r->id, w_exp,
           cut(e, sizeof e, r->info.experiment, w_exp), w_name,
           cut(n, sizeof n, r->info.name, w_name), wb_run_status_name(r->status), started, dur,
           parent, cut(msg, sizeof msg, r->error, 60));
  }
  if (list->n == 0)
    printf("(no runs%s%s)\n", experiment ? " in experiment " : "", experiment ? experiment : "");
  wb_run_list_free(list);
  wb_store_close(s);
  return 0;
}

/* ---------------------------------------------------------------- wb show */

int wb_cmd_show(int argc, char **argv) {
  const char *db = NULL, *id_text = NULL;
  for (int i = 0; i < argc; i++) {
    int r = wb_cli_opt("show", argc, argv, &i, "--db", &db);
    if (r < 0) return 2;
    if (r) continue;
    if (id_text || argv[i][0] == '-') return unexpected("show", argv[i]);
    id_text = argv[i];
  }
  if (!id_text) {
    fprintf(stderr, "wb show: missing run id (usage: wb show RUN; `wb runs` lists them)\n");
    return 2;
  }
  char *end;
  errno = 0;
  long long id = strtoll(id_text, &end, 10);
  if (errno || *end || end == id_text || id <= 0) {
    fprintf(stderr, "wb show: '%s' is not a run id (a positive integer)\n", id_text);
    return 2;
  }
  wb_store *s = wb_cli_open("show", db);
  if (!s) return 1;
  wb_run_detail *d = NULL;
  if (wb_store_run_get(s, id, &d) != WB_OK) {
    fprintf(stderr, "wb show: %s\n", wb_store_errmsg(s));
    wb_store_close(s);
    return 1;
  }
  const wb_run *r = &d->run;
  char buf[64], buf2[64];
  printf("run %lld: %s / %s\n", (long long)r->id, r->info.experiment, r->info.name);
  printf("  status      %s\n", wb_run_status_name(r->status));
  if (r->info.parent_id) printf("  parent      %lld\n", (long long)r->info.parent_id);
  wb_host_fmt_time(buf, sizeof buf, r->start_ms);
  wb_host_fmt_time(buf2, sizeof buf2, r->end_ms);
  printf("  started     %s\n  ended       %s\n", buf, buf2);
  wb_host_fmt_duration(buf, sizeof buf, r->wall_s);
  printf("  wall time   %s\n", buf);
  if (r->peak_rss_kb >= 0) printf("  peak memory %.1f MiB\n", (double)r->peak_rss_kb / 1024.0);
  if (*r->info.script)
    printf("  script      %s%s%s%s\n", r->info.script, *r->info.script_sha256 ? " (sha256 " : "",
           r->info.script_sha256, *r->info.script_sha256 ? ")" : "");
  if (*r->info.git_commit)
    printf("  git         %s%s\n", r->info.git_commit, r->info.git_dirty == 1 ? " (dirty)" : "");
  if (*r->info.host) printf("  host        %s\n", r->info.host);
  if (*r->info.cpu_model)
    printf("  cpu         %s, %d threads\n", r->info.cpu_model, r->info.threads);
  if (*r->info.device) printf("  device      %s\n", r->info.device);
  if (r->info.has_seed) printf("  seed        %lld\n", (long long)r->info.seed);
  if (*r->info.wb_version) printf("  wb version  %s\n", r->info.wb_version);
  if (r->info.pid) printf("  pid         %lld\n", (long long)r->info.pid);
  printf("params:%s\n", d->n_params ? "" : " (none)");
  for (int64_t i = 0; i < d->n_params; i++)
    printf("  %-24s %s\n", d->params[i].key, d->params[i].value);
  printf("metrics (final value, at step):%s\n", d->n_metrics ? "" : " (none)");
  for (int64_t i = 0; i < d->n_metrics; i++) {
    const wb_metric_final *m = &d->metrics[i];
    if (m->is_nan)
      snprintf(buf, sizeof buf, "nan");
    else
      wb_host_fmt_number(buf, sizeof buf, m->value);
    printf("  %-24s %-24s step %lld\n", m->key, buf, (long long)m->step);
  }
  printf("tags:%s\n", d->n_tags ? "" : " (none)");
  for (int64_t i = 0; i < d->n_tags; i++) printf("  %-24s %s\n", d->tags[i].key, d->tags[i].value);
  printf("artifacts:%s\n", d->n_artifacts ? "" : " (none)");
  for (int64_t i = 0; i < d->n_artifacts; i++)
    printf("  %s%s%s%s\n", d->artifacts[i].path, *d->artifacts[i].kind ? " (" : "",
           d->artifacts[i].kind, *d->artifacts[i].kind ? ")" : "");
  if (*r->error) printf("error:\n  %s\n", r->error);
  wb_run_detail_free(d);
  wb_store_close(s);
  return 0;
}

/* ---------------------------------------------------------------- wb export */

int wb_cmd_export(int argc, char **argv) {
  const char *db = NULL, *experiment = NULL, *format = "csv", *out = NULL;
  for (int i = 0; i < argc; i++) {
    int r;
    if ((r = wb_cli_opt("export", argc, argv, &i, "--db", &db)) ||
        (r = wb_cli_opt("export", argc, argv, &i, "--experiment", &experiment)) ||
        (r = wb_cli_opt("export", argc, argv, &i, "--format", &format)) ||
        (r = wb_cli_opt("export", argc, argv, &i, "-o", &out)) ||
        (r = wb_cli_opt("export", argc, argv, &i, "--output", &out))) {
      if (r < 0) return 2;
      continue;
    }
    return unexpected("export", argv[i]);
  }
  int json = !strcmp(format, "json");
  if (!json && strcmp(format, "csv")) {
    fprintf(stderr, "wb export: unknown format '%s'; formats: csv, json\n", format);
    return 2;
  }
  wb_store *s = wb_cli_open("export", db);
  if (!s) return 1;
  FILE *f = !out ? stdout : wb_host_make_parents(out) == 0 ? fopen(out, "wb") : NULL;
  if (!f) {
    fprintf(stderr, "wb export: cannot write %s: %s\n", out, strerror(errno));
    wb_store_close(s);
    return 1;
  }
  int rc = json ? wb_store_export_json(s, experiment, f) : wb_store_export_csv(s, experiment, f);
  if (rc != WB_OK) fprintf(stderr, "wb export: %s\n", wb_store_errmsg(s));
  if (out && fclose(f) != 0 && rc == WB_OK) {
    fprintf(stderr, "wb export: writing %s: %s\n", out, strerror(errno));
    rc = WB_ERR_IO;
  }
  if (!out) fflush(stdout);
  wb_store_close(s);
  return rc == WB_OK ? 0 : 1;
}

/* ---------------------------------------------------------------- wb report */

int wb_cmd_report(int argc, char **argv) {
  const char *db = NULL, *out = "results/report.html";
  const char **names = calloc((size_t)argc + 1, sizeof *names);
  int n = 0;
  if (!names) return 1;
  for (int i = 0; i < argc; i++) {
    int r;
    const char *e;
    if ((r = wb_cli_opt("report", argc, argv, &i, "--db", &db)) ||
        (r = wb_cli_opt("report", argc, argv, &i, "-o", &out)) ||
        (r = wb_cli_opt("report", argc, argv, &i, "--output", &out))) {
      if (r < 0) goto usage;
      continue;
    }
    if ((r = wb_cli_opt("report", argc, argv, &i, "--experiment", &e))) {
      if (r < 0) goto usage;
      names[n++] = e;
      continue;
    }
    unexpected("report", argv[i]);
    goto usage;
  }
  size_t len = strlen(out);
  char *md = malloc(len + 4);
  if (!md) {
    free(names);
    return 1;
  }
  if (len > 5 && !strcmp(out + len - 5, ".html"))
    snprintf(md, len + 4, "%.*s.md", (int)(len - 5), out);
  else
    snprintf(md, len + 4, "%s.md", out);
  int rc = 1;
  wb_store *s = NULL;
  if (wb_host_make_parents(out) != 0)
    fprintf(stderr, "wb report: cannot create the directory of %s: %s\n", out, strerror(errno));
  else
    s = wb_cli_open("report", db);
  if (s) {
    char err[1024] = "";
    if (wb_report_write(s, names, n, out, md, err, sizeof err) != WB_OK) {
      fprintf(stderr, "wb report: %s\n", err);
    } else {
      printf("wrote %s and %s\n", out, md);
      rc = 0;
    }
    wb_store_close(s);
  }
  free(md);
  free(names);
  return rc;
usage:
  free(names);
  return 2;
}
