/* bench/host.c: small system helpers of the wb program (see host.h): number and time
 * formatting, the git state of the script's repository, a monotonic clock. */
#include "host.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void wb_host_fmt_number(char *buf, size_t n, double v) {
  if (isnan(v)) {
    snprintf(buf, n, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, n, v > 0 ? "inf" : "-inf");
    return;
  }
  /* 17 significant digits always round-trip a double; fewer read better when they suffice */
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

/* Runs cmd, reading at most n - 1 bytes of its output into out. Returns the exit status, or -1
 * when it could not run. */
static int run_capture(const char *cmd, char *out, size_t n) {
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t got = 0;
  int c;
  while ((c = fgetc(p)) != EOF)
    if (got + 1 < n) out[got++] = (char)c;
  out[got] = '\0';
  return pclose(p);
}

/* Appends s to buf single-quoted for sh ('it'\''s'). Returns -1 when it does not fit. */
static int sh_quote(char *buf, size_t n, const char *s) {
  size_t len = strlen(buf);
  if (len + 1 >= n) return -1;
  buf[len++] = '\'';
  for (; *s; s++) {
    const char *piece = *s == '\'' ? "'\\''" : NULL;
    size_t k = piece ? strlen(piece) : 1;
    if (len + k + 2 >= n) return -1;
    if (piece)
      memcpy(buf + len, piece, k);
    else
      buf[len] = *s;
    len += k;
  }
  buf[len++] = '\'';
  buf[len] = '\0';
  return 0;
}

int wb_host_git(const char *dir, char *commit, size_t n, int *dirty) {
  char cmd[4200] = "git -C ", out[256];
  if (n) commit[0] = '\0';
  *dirty = 0;
  if (sh_quote(cmd, sizeof cmd - 64, dir) != 0) return -1;
  size_t base = strlen(cmd);
  strcat(cmd, " rev-parse HEAD 2>/dev/null");
  if (run_capture(cmd, out, sizeof out) != 0) return -1;
  size_t len = 0;
  while (isxdigit((unsigned char)out[len])) len++;
  if (len < 40 || len + 1 > n) return -1;
  memcpy(commit, out, len);
  commit[len] = '\0';
  /* any line of `git status --porcelain` (modified, staged or untracked) makes the tree dirty */
  cmd[base] = '\0';
  strcat(cmd, " status --porcelain 2>/dev/null");
  char status[2];
  if (run_capture(cmd, status, sizeof status) == 0) *dirty = status[0] != '\0';
  return 0;
}

void wb_host_dirname(const char *path, char *buf, size_t n) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(buf, n, ".");
  } else if (slash == path) {
    snprintf(buf, n, "/");
  } else {
    snprintf(buf, n, "%.*s", (int)(slash - path), path);
  }
}

double wb_host_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void wb_host_fmt_time(char *buf, size_t n, int64_t ms) {
  if (ms <= 0) {
    snprintf(buf, n, "-");
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

void wb_host_fmt_duration(char *buf, size_t n, double s) {
  if (!(s >= 0)) {
    snprintf(buf, n, "-");
  } else if (s < 1) {
    snprintf(buf, n, "%.0fms", s * 1e3);
  } else if (s < 60) {
    snprintf(buf, n, "%.1fs", s);
  } else if (s < 3600) {
    long t = (long)s;
    snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  } else {
    long t = (long)(s / 60);
    snprintf(buf, n, "%ldh%02ldm", t / 60, t % 60);
  }
}

int wb_host_make_parents(const char *path) {
  char dir[4096];
  if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return -1;
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) return 0;
  *slash = '\0';
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return -1;
    *p = c;
    if (!c) return 0;
  }
}
