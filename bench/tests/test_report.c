/* bench/tests/test_report.c: the report generator (bench/report.h) over a store built here
 * with the store API: two groups x three seeds with a NaN in a curve and a NaN final, a FAILED
 * run with a hostile error string, params with commas and quotes. Checks escaping in HTML,
 * SVG and Markdown, the group table's numbers against hand-computed means and CIs, one <svg>
 * per expected plot, NaN handling, that the HTML fetches nothing, and clean errors.
 * Ends with "N passed, N failed".
 *
 *   bench_test_report              run the tests in a temporary directory (removed after)
 *   bench_test_report --keep DIR   also leave DIR/wb.sqlite, DIR/report.html, DIR/report.md
 *                                  (for bench/tests/e2e_report_chromium.sh)
 */
#define _GNU_SOURCE
#include "report.h"
#include "report_int.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (cond) {                                                                                    \
      passed++;                                                                                    \
    } else {                                                                                       \
      failed++;                                                                                    \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
    }                                                                                              \
  } while (0)

#define OK(s, call)                                                                                \
  do {                                                                                             \
    int rc_ = (call);                                                                              \
    CHECK(rc_ == WB_OK, "%s returned %s: %s", #call, wb_store_code_name(rc_), wb_store_errmsg(s)); \
  } while (0)

static char dir[512];

static const char *tpath(const char *name) {
  static char bufs[8][640];
  static int i;
  char *b = bufs[i++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
  return b;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (p) p[n] = '\0';
  fclose(f);
  return p;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static int near(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return fabs(a - b) <= 1e-9 * fmax(1, fabs(b));
}

/* ---- Test data --------------------------------------------------------------------------- */

#define EXP "mnist <sweep> & \"q\""
#define EXP_HTML "mnist &lt;sweep&gt; &amp; &quot;q&quot;"
#define NOTE "a, \"b\" <c>"
/* how the report names a group: its number and the params that differ between groups (not
 * batch, the same in all), values quoted CSV-style when they hold , or " */
#define LABEL_A_HTML "1: lr=0.1, note=&quot;a, &quot;&quot;b&quot;&quot; &lt;c&gt;&quot;"
#define LABEL_B_HTML "2: lr=0.01, note=plain"
#define LABEL_A_MD "1: lr=0.1, note=\"a, \"\"b\"\" &lt;c&gt;\""
#define LABEL_B_MD "2: lr=0.01, note=plain"
/* the params of a run of group 1, as the runs table writes them (without the seed) */
#define PARAMS_A_MD "batch=128, lr=0.1, note=\"a, \"\"b\"\" &lt;c&gt;\""
#define HOSTILE "<script>alert(1)</script> & | x\nline 2"

static const double ACC[2][3] = {{0.80, 0.82, 0.87}, {0.70, 0.71, 0.75}}; /* final eval/acc */
static const double XY[2][3] = {{1, 2, 3}, {4, 5, NAN}};                  /* eval/x|y, step 10 */

static int64_t begin(wb_store *s, const char *exp, const char *name, int64_t seed) {
  wb_run_info info = {.experiment = exp,
                      .name = name,
                      .script = "scripts/sweep.lua",
                      .git_commit = "abc1234",
                      .git_dirty = 1,
                      .host = "testhost",
                      .cpu_model = "Test CPU <x86>",
                      .threads = 4,
                      .device = "cpu",
                      .wb_version = "0.1.0-test",
                      .has_seed = 1,
                      .seed = seed};
  int64_t id = 0;
  OK(s, wb_store_run_begin(s, &info, &id));
  return id;
}

/* Experiment EXP: runs 1-6 (groups lr=0.1 and lr=0.01, seeds 1-3), run 7 FAILED; experiment
 * "other": run 8 with one point; "diverged": run 9 whose curve is all NaN and inf; "long": run 10
 * with 20,000 steps. */
static int build_store(const char *path) {
  char err[512];
  wb_store *s = NULL;
  int rc = wb_store_open(&s, path, err, sizeof err);
  CHECK(rc == WB_OK, "open %s: %s", path, err);
  if (rc) return rc;
  const char *lrs[2] = {"0.1", "0.01"};
  for (int g = 0; g < 2; g++)
    for (int k = 0; k < 3; k++) {
      char seed[8];
      snprintf(seed, sizeof seed, "%d", k + 1);
      int64_t id = begin(s, EXP, "sweep point", k + 1);
      OK(s, wb_store_param_set(s, id, "lr", lrs[g]));
      OK(s, wb_store_param_set(s, id, "note", g == 0 ? NOTE : "plain"));
      OK(s, wb_store_param_set(s, id, "batch", "128"));
      OK(s, wb_store_param_set(s, id, "seed", seed));
      for (int step = 0; step <= 4; step++) {
        double v = (g == 0 ? 1.0 : 2.0) / (step + 1) + 0.01 * (k + 1);
        if (g == 0 && k == 1 && step == 3) v = NAN; /* a gap in one curve */
        OK(s, wb_store_metric_log(s, id, "train/loss", step, v));
      }
      OK(s, wb_store_metric_log(s, id, "eval/acc", 2, ACC[g][k] - 0.1));
      OK(s, wb_store_metric_log(s, id, "eval/acc", 4, ACC[g][k]));
      OK(s, wb_store_metric_log(s, id, "eval/x|y", 10, XY[g][k]));
      if (g == 0 && k == 0) OK(s, wb_store_tag_set(s, id, "comment", "<b>bold</b> | pipe"));
      OK(s, wb_store_run_end(s, id, WB_RUN_FINISHED, NULL, 12.5, 2048));
    }
  int64_t id = begin(s, EXP, "<script>alert(2)</script>", 4);
  OK(s, wb_store_param_set(s, id, "lr", "0.1"));
  OK(s, wb_store_param_set(s, id, "note", NOTE));
  OK(s, wb_store_param_set(s, id, "batch", "128"));
  OK(s, wb_store_param_set(s, id, "seed", "4"));
  OK(s, wb_store_metric_log(s, id, "train/loss", 0, 1.5));
  OK(s, wb_store_metric_log(s, id, "train/loss", 1, 1.2));
  OK(s, wb_store_metric_log(s, id, "eval/acc", 2, 0.5)); /* a lone point: a dot */
  OK(s, wb_store_run_end(s, id, WB_RUN_FAILED, HOSTILE, 0.25, -1));

  id = begin(s, "other", "single", 1);
  OK(s, wb_store_metric_log(s, id, "train/loss", 0, 0.5));
  OK(s, wb_store_run_end(s, id, WB_RUN_FINISHED, NULL, 75, -1));

  id = begin(s, "diverged", "boom", 1);
  OK(s, wb_store_metric_log(s, id, "train/loss", 0, NAN));
  OK(s, wb_store_metric_log(s, id, "train/loss", 1, INFINITY));
  OK(s, wb_store_metric_log(s, id, "train/loss", 2, NAN));
  OK(s, wb_store_run_end(s, id, WB_RUN_FINISHED, NULL, 4000, -1));

  id = begin(s, "long", "every step", 1);
  int bad = 0;
  for (int step = 0; step < 20000; step++)
    bad |= wb_store_metric_log(s, id, "train/loss", step, step == 10000 ? NAN : sin(step / 500.0));
  CHECK(bad == WB_OK, "logging 20,000 steps: %s", wb_store_errmsg(s));
  OK(s, wb_store_run_end(s, id, WB_RUN_FINISHED, NULL, 1, -1));
  wb_store_close(s);
  return WB_OK;
}

/* ---- Reading the HTML tables -------------------------------------------------------------- */

/* The data-v numbers of row `row` (0-based) of the first table after marker, and its first
 * cell's text. Returns how many numbers were read, -1 when the row is missing. */
static int table_row(const char *doc, const char *marker, int row, char *first, size_t nfirst,
                     double *v, int maxv) {
  const char *p = strstr(doc, marker);
  if (!p || !(p = strstr(p, "<tbody>"))) return -1;
  const char *end = strstr(p, "</table>");
  for (int i = 0; i <= row; i++)
    if (!(p = strstr(p + 1, "<tr>")) || p > end) return -1;
  const char *rend = strstr(p, "</tr>");
  const char *c = strstr(p, "<td>");
  first[0] = '\0';
  if (c && c < rend) {
    c += 4;
    const char *ce = strstr(c, "</td>");
    size_t n = (size_t)(ce - c) < nfirst - 1 ? (size_t)(ce - c) : nfirst - 1;
    memcpy(first, c, n);
    first[n] = '\0';
  }
  int n = 0;
  for (const char *q = p; (q = strstr(q, "data-v=\"")) && q < rend && n < maxv; q++)
    v[n++] = strtod(q + 8, NULL);
  return n;
}

/* The text between the n-th (0-based) "<svg" and its "</svg>" (static copy), or "". */
static const char *svg_at(const char *doc, int n) {
  static char buf[1 << 16];
  const char *p = doc;
  for (int i = 0; i <= n; i++)
    if (!(p = strstr(i ? p + 1 : p, "<svg"))) return "";
  const char *e = strstr(p, "</svg>");
  size_t len = e ? (size_t)(e - p) : 0;
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, p, len);
  buf[len] = '\0';
  return buf;
}

/* ---- Tests -------------------------------------------------------------------------------- */

static void test_escaping_helpers(void) {
  wb_rbuf b = {0};
  wb_rbuf_html(&b, "<a href=\"x\">'&'</a>\x01");
  CHECK(b.p && !strcmp(b.p, "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt; "), "html: %s",
        b.p);
  wb_rbuf_free(&b);
  wb_rbuf_md(&b, "a|b\nc\r\\ *x* <y> & `z`");
  CHECK(b.p && !strcmp(b.p, "a\\|b<br>c\\\\ \\*x\\* &lt;y&gt; &amp; \\`z\\`"), "md: %s", b.p);
  wb_rbuf_free(&b);
  /* truncation never cuts a UTF-8 character: "é" is 2 bytes */
  wb_rbuf_html_trunc(&b, "\xc3\xa9\xc3\xa9\xc3\xa9<", 2);
  CHECK(b.p && !strcmp(b.p, "\xc3\xa9\xc3\xa9\xe2\x80\xa6"), "trunc: %s", b.p);
  wb_rbuf_free(&b);
  wb_rbuf_html_trunc(&b, "ab<", 3);
  CHECK(b.p && !strcmp(b.p, "ab&lt;"), "trunc exact: %s", b.p);
  wb_rbuf_free(&b);
  char num[32];
  CHECK(!strcmp(wb_report_fmt(num, NAN), "NaN"), "%s", num);
  CHECK(!strcmp(wb_report_fmt(num, -INFINITY), "-inf"), "%s", num);
  CHECK(!strcmp(wb_report_fmt(num, -0.0), "0"), "%s", num);
  CHECK(!strcmp(wb_report_fmt_key(num, INFINITY), "Infinity"), "%s", num);
}

/* Checks the group row `row` of metric table `marker` against hand-computed statistics. */
static void check_group_row(const char *html, const char *marker, int row, const char *label,
                            double n_runs, double n_nan, double mean, double sd, double ci,
                            double mn, double mx) {
  char first[512];
  double v[16];
  int n = table_row(html, marker, row, first, sizeof first, v, 16);
  CHECK(n == 9, "%s row %d: %d numbers", marker, row, n);
  if (n != 9) return;
  CHECK(!strcmp(first, label), "%s row %d label '%s'", marker, row, first);
  double want[9] = {n_runs, n_nan, mean, sd, ci, mean - ci, mean + ci, mn, mx};
  const char *names[9] = {"runs", "NaN", "mean", "std", "ci", "lo", "hi", "min", "max"};
  for (int k = 0; k < 9; k++)
    CHECK(near(v[k], want[k]), "%s row %d %s: %.17g, want %.17g", marker, row, names[k], v[k],
          want[k]);
}

/* The expected Markdown row of a group table, numbers as the report prints them (%.6g). */
static void md_row(char *buf, size_t n, const char *label, int runs, int nan, double mean,
                   double sd, double ci, double mn, double mx) {
  char f[9][32];
  double v[7] = {mean, sd, ci, mean - ci, mean + ci, mn, mx};
  for (int k = 0; k < 7; k++) wb_report_fmt(f[k], v[k]);
  snprintf(buf, n, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", label, runs, nan, f[0],
           f[1], f[2], f[3], f[4], f[5], f[6]);
}

static void test_report(const char *db, const char *html_path, const char *md_path) {
  char err[512];
  wb_store *s = NULL;
  if (wb_store_open(&s, db, err, sizeof err) != WB_OK) {
    CHECK(0, "open: %s", err);
    return;
  }
  const char *exps[] = {EXP};
  int rc = wb_report_write(s, exps, 1, html_path, md_path, err, sizeof err);
  CHECK(rc == WB_OK, "report: %s %s", wb_store_code_name(rc), err);
  wb_store_close(s);
  char *html = slurp(html_path), *md = slurp(md_path);
  CHECK(html && md, "report files missing");
  if (!html || !md) {
    free(html);
    free(md);
    return;
  }

  /* self-contained and escaped */
  CHECK(!strstr(html, "http://") && !strstr(html, "https://"), "network reference in HTML");
  CHECK(!strstr(html, "<link") && !strstr(html, " src="), "external resource in HTML");
  CHECK(!strstr(html, "<script>alert") && !strstr(md, "<script>alert"), "raw hostile string");
  CHECK(!strstr(html, "<c>") && !strstr(html, "<b>bold") && !strstr(html, "<x86>"),
        "raw user markup in HTML");
  CHECK(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; | x\nline 2"), "error in HTML");
  CHECK(strstr(md, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\| x<br>line 2"), "error in MD");
  CHECK(strstr(html, "<h2 id=\"x1\">Experiment: " EXP_HTML "</h2>"), "experiment heading");
  CHECK(strstr(html, "&lt;b&gt;bold&lt;/b&gt; | pipe"), "tag in HTML");
  CHECK(strstr(md, "comment=&lt;b&gt;bold&lt;/b&gt; \\| pipe"), "tag in MD");
  CHECK(count(html, "<script>") == 1, "one script (the sorter): %d", count(html, "<script>"));

  /* plots: bars for eval/acc, eval/x|y, train/loss; curves (per run, per group) for eval/acc
   * and train/loss; eval/x|y was logged at one step only */
  CHECK(count(html, "<svg") == 7 && count(html, "</svg>") == 7, "%d svgs", count(html, "<svg"));
  const char *bars_acc = svg_at(html, 0);
  CHECK(strstr(bars_acc, "eval/acc: final value per group"), "first plot is the eval/acc bars");
  CHECK(strstr(bars_acc, "<title>" LABEL_A_HTML "</title>"), "group name escaped in SVG legend");
  CHECK(strstr(bars_acc, ">" LABEL_B_HTML "</text>"), "short group name not truncated");
  /* the groups table lists every param but the seed; names only those that differ */
  CHECK(strstr(md, "| 1 | " PARAMS_A_MD " | 1, 2, 3, 7 |\n"), "MD groups table");
  CHECK(!strstr(html, "<td>1: batch") && !strstr(bars_acc, "batch"), "constant param in names");
  CHECK(count(bars_acc, "<rect x=") >= 2 + 2, "bars and legend swatches");
  const char *curve_acc = svg_at(html, 3);
  CHECK(strstr(curve_acc, "eval/acc: per run"), "fourth plot is the eval/acc curves");
  CHECK(count(curve_acc, "<circle") >= 1, "the FAILED run's lone eval/acc point is a dot");
  CHECK(strstr(curve_acc, "stroke-dasharray"), "a dashed legend entry for FAILED runs");
  const char *curve_loss = svg_at(html, 5);
  CHECK(strstr(curve_loss, "train/loss: per run"), "sixth plot is train/loss per run");
  /* 7 runs; the NaN at step 3 splits one curve into a line (steps 0-2) and a dot (step 4) */
  CHECK(count(curve_loss, "<polyline") == 7, "%d polylines", count(curve_loss, "<polyline"));
  CHECK(count(curve_loss, "<circle") == 1, "%d dots", count(curve_loss, "<circle"));
  const char *band_loss = svg_at(html, 6);
  CHECK(strstr(band_loss, "mean \xc2\xb1 std per group"), "band plot title");
  CHECK(count(band_loss, "<polygon") == 2, "one band per group: %d", count(band_loss, "<polygon"));
  CHECK(strstr(band_loss, "<title>2: lr=0.01, note=plain (n=3)</title>"),
        "band legend names the group and counts its FINISHED runs");
  for (int i = 0; i < 7; i++) {
    const char *g = svg_at(html, i);
    CHECK(!strstr(g, "nan") && !strstr(g, "inf") && !strstr(g, "NaN,"), "NaN coordinate in plot %d",
          i);
  }

  /* the group tables against hand-computed statistics: t(0.975, 2) = 4.302652730,
   * t(0.975, 1) = 12.706204736 */
  double sa = sqrt(0.0026 / 2), sb = sqrt(0.0014 / 2);
  double ca = 4.302652730 * sa / sqrt(3), cb = 4.302652730 * sb / sqrt(3);
  check_group_row(html, "<h4>eval/acc</h4>", 0, LABEL_A_HTML, 3, 0, 0.83, sa, ca, 0.80, 0.87);
  check_group_row(html, "<h4>eval/acc</h4>", 1, LABEL_B_HTML, 3, 0, 0.72, sb, cb, 0.70, 0.75);
  double sx = sqrt(0.5), cx = 12.706204736 * sx / sqrt(2);
  check_group_row(html, "<h4>eval/x|y</h4>", 0, LABEL_A_HTML, 3, 0, 2, 1, 4.302652730 / sqrt(3), 1,
                  3);
  check_group_row(html, "<h4>eval/x|y</h4>", 1, LABEL_B_HTML, 3, 1, 4.5, sx, cx, 4, 5);
  /* eval/... first, then by key */
  const char *h_acc = strstr(html, "<h4>eval/acc</h4>"), *h_xy = strstr(html, "<h4>eval/x|y</h4>"),
             *h_loss = strstr(html, "<h4>train/loss</h4>");
  CHECK(h_acc && h_xy && h_loss && h_acc < h_xy && h_xy < h_loss, "metric order");
  /* per-run finals: the NaN final shows as NaN */
  CHECK(strstr(html, "<td class=\"num\" data-v=\"NaN\">NaN</td>"), "NaN cell");

  /* Markdown: the same tables */
  char row[1024];
  md_row(row, sizeof row, LABEL_A_MD, 3, 0, 0.83, sa, ca, 0.80, 0.87);
  CHECK(strstr(md, row), "MD row missing: %s", row);
  md_row(row, sizeof row, LABEL_B_MD, 3, 1, 4.5, sx, cx, 4, 5);
  CHECK(strstr(md, row), "MD row missing: %s", row);
  CHECK(strstr(md, "\n#### eval/x\\|y\n"), "MD metric heading escaped");
  CHECK(strstr(md, "| group | runs | NaN | mean | std | 95% CI ± | CI low | CI high | min | max |\n"
                   "|---|---|---|---|---|---|---|---|---|---|\n"),
        "MD group table header");
  CHECK(strstr(md,
               "| 7 | &lt;script&gt;alert(2)&lt;/script&gt; | FAILED | " PARAMS_A_MD
               ", seed=4 |  | 250 ms | &lt;script&gt;alert(1)&lt;/script&gt; &amp; \\| x … |\n"),
        "MD runs row of the FAILED run");
  CHECK(strstr(md, "| 1 | sweep point | FINISHED | " PARAMS_A_MD ", seed=1 |"), "MD runs row 1");
  CHECK(strstr(md, "| 6 | FINISHED | 0.75 | NaN | 0.43 |\n"), "MD finals row of run 6");
  CHECK(strstr(md, "| 7 | FAILED | 0.5 | - | 1.2 |\n"), "MD finals row of run 7");
  CHECK(strstr(md, "| abc1234 (dirty) | testhost | Test CPU &lt;x86&gt; | 4 | cpu | 0.1.0-test |"),
        "MD metadata row");
  CHECK(count(md, "\n|---|") == 8, "MD tables: %d", count(md, "\n|---|"));
  /* every table row has as many cells as its header */
  for (const char *p = md; (p = strstr(p, "\n|")); p++) {
    const char *e = strchr(p + 1, '\n');
    int cells = 0;
    for (const char *q = p + 1; q < e; q++)
      if (*q == '|' && q[-1] != '\\') cells++;
    static int want;
    if (!strncmp(p, "\n|---", 5) || (e && !strncmp(e, "\n|---", 5))) {
      if (e && !strncmp(e, "\n|---", 5)) want = cells;
      continue;
    }
    CHECK(cells == want, "MD row with %d separators, header %d: %.80s", cells, want, p + 1);
  }
  free(html);
  free(md);
}

static void test_all_experiments(const char *db) {
  char err[512];
  wb_store *s = NULL;
  if (wb_store_open(&s, db, err, sizeof err) != WB_OK) return;
  int rc = wb_report_write(s, NULL, 0, tpath("all.html"), NULL, err, sizeof err);
  CHECK(rc == WB_OK, "report of all: %s", err);
  char *html = slurp(tpath("all.html"));
  CHECK(html && access(tpath("all.md"), F_OK) != 0, "HTML only");
  if (html) {
    /* EXP 7; other: a single point, a bar only; diverged: curves of nothing finite, 2 + 1;
     * long: 2 + 1 */
    CHECK(count(html, "<svg") == 7 + 1 + 3 + 3, "%d svgs", count(html, "<svg"));
    CHECK(strstr(html, "<h2 id=\"x2\">Experiment: other</h2>"), "second experiment");
    CHECK(strstr(html, "no finite values to plot"), "all-NaN curve note");
    CHECK(count(html, "<section") == 4, "four sections");
    const char *d = strstr(html, "Experiment: diverged");
    CHECK(d && strstr(d, "<td class=\"num\" data-v=\"4000\">1h 06m 40s</td>"), "duration");
    CHECK(d && !strstr(d, "nan") && !strstr(d, "points=\"\""), "no NaN coordinates, no empty line");
    /* 20,000 points are drawn through their envelope: small, and the NaN gap stays */
    const char *l = strstr(html, "Experiment: long");
    CHECK(l && strlen(l) < 150000, "long series section: %zu bytes", l ? strlen(l) : 0);
    const char *lp = l ? strstr(l, "train/loss: per run") : NULL;
    const char *le = lp ? strstr(lp, "</svg>") : NULL;
    int np = 0;
    for (const char *q = lp; q && (q = strstr(q, "<polyline")) && q < le; q++) np++;
    CHECK(np == 2, "long series: %d polylines (one gap)", np);
    /* the envelope keeps the extremes: the axis spans -1..1 */
    const char *t0 = lp ? strstr(lp, ">-1</text>") : NULL,
               *t1 = lp ? strstr(lp, ">1</text>") : NULL;
    CHECK(t0 && t1 && t0 < le && t1 < le, "long series: axis -1..1");
  }
  free(html);

  /* Markdown only, one experiment */
  const char *other[] = {"other"};
  rc = wb_report_write(s, other, 1, NULL, tpath("other.md"), err, sizeof err);
  CHECK(rc == WB_OK, "report of other: %s", err);
  char *md = slurp(tpath("other.md"));
  CHECK(md && strstr(md, "## Experiment: other") && !strstr(md, "mnist"), "other.md");
  CHECK(md && strstr(md, "| 1: (no params) | 1 | 0 | 0.5 | \xe2\x80\x93 | \xe2\x80\x93 | "
                         "\xe2\x80\x93 | \xe2\x80\x93 | 0.5 | 0.5 |"),
        "single run: std and CI undefined, shown as a dash (not NaN, which marks diverged values)");
  CHECK(md && strstr(md, "| 1m 15s |"), "duration in minutes");
  free(md);
  wb_store_close(s);
}

static void test_errors(const char *db) {
  char err[512];
  wb_store *s = NULL;
  if (wb_store_open(&s, db, err, sizeof err) != WB_OK) return;
  const char *missing[] = {"other", "nope"};
  int rc = wb_report_write(s, missing, 2, tpath("x.html"), tpath("x.md"), err, sizeof err);
  CHECK(rc == WB_ERR_NOTFOUND && strstr(err, "'nope'") && strstr(err, "'other'"),
        "missing experiment: %s %s", wb_store_code_name(rc), err);
  CHECK(access(tpath("x.html"), F_OK) != 0 && access(tpath("x.md"), F_OK) != 0,
        "no file written for a failed report");
  rc = wb_report_write(s, NULL, 0, NULL, NULL, err, sizeof err);
  CHECK(rc == WB_ERR_ARG && strstr(err, "path"), "no output: %s", err);
  const char *empty[] = {""};
  rc = wb_report_write(s, empty, 1, tpath("x.html"), NULL, err, sizeof err);
  CHECK(rc == WB_ERR_ARG, "empty name: %s", err);
  rc = wb_report_write(s, NULL, 0, tpath("no/such/dir/r.html"), NULL, err, sizeof err);
  CHECK(rc == WB_ERR_IO && strstr(err, "no/such/dir/r.html"), "unwritable: %s", err);
  wb_store_close(s);

  /* a store with no runs; an experiment whose only run logged nothing */
  s = NULL;
  if (wb_store_open(&s, tpath("empty.sqlite"), err, sizeof err) != WB_OK) return;
  rc = wb_report_write(s, NULL, 0, tpath("e.html"), NULL, err, sizeof err);
  CHECK(rc == WB_ERR_NOTFOUND && strstr(err, "no runs"), "empty store: %s", err);
  wb_run_info info = {.experiment = "bare"};
  int64_t id = 0;
  OK(s, wb_store_run_begin(s, &info, &id));
  rc = wb_report_write(s, NULL, 0, tpath("bare.html"), tpath("bare.md"), err, sizeof err);
  CHECK(rc == WB_OK, "bare: %s", err);
  char *html = slurp(tpath("bare.html"));
  CHECK(html && count(html, "<svg") == 0 && strstr(html, "No metric was logged"), "bare report");
  CHECK(html && strstr(html, "<td class=\"st-RUNNING\">RUNNING</td>"), "RUNNING run listed");
  free(html);
  wb_store_close(s);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

int main(int argc, char **argv) {
  const char *keep = NULL;
  if (argc == 3 && !strcmp(argv[1], "--keep")) {
    keep = argv[2];
  } else if (argc != 1) {
    fprintf(stderr, "usage: %s [--keep DIR]\n", argv[0]);
    return 2;
  }
  if (keep) {
    snprintf(dir, sizeof dir, "%s", keep);
    mkdir(dir, 0755);
    remove(tpath("wb.sqlite"));
    remove(tpath("wb.sqlite-wal"));
    remove(tpath("wb.sqlite-shm"));
  } else {
    snprintf(dir, sizeof dir, "/tmp/wb_test_report_XXXXXX");
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      return 1;
    }
  }
  test_escaping_helpers();
  if (build_store(tpath("wb.sqlite")) == WB_OK) {
    test_report(tpath("wb.sqlite"), tpath("report.html"), tpath("report.md"));
    test_all_experiments(tpath("wb.sqlite"));
    test_errors(tpath("wb.sqlite"));
  }
  if (!keep) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
