/* bench/report_svg.c: the report's plots as inline SVG: line plots (learning curves with
 * optional bands) and bar charts with error bars (see report_int.h).
 *
 * Layout (pixels): a W x H canvas, the plot area [PL, PR] x [PT, H - PB], the legend in a
 * column right of the plot area. The canvas grows downwards when the legend needs more room.
 * Long series are reduced to their envelope (min and max per chunk of steps, gaps kept).
 * Values beyond +/-1e300 are treated like inf (not plotted), so that spans never overflow.
 */
#include "report_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { W = 820, H_MIN = 360, PL = 72, PR = 590, PT = 40, PB = 52, LEG_X = 604, LEG_DY = 18 };
enum { LEG_CHARS = 28, MAX_TICKS = 16 };
/* A series longer than MAX_POINTS is drawn through its envelope over REDUCE_CHUNKS chunks (the
 * plot is ~520 px wide), so a run that logged a million steps gives a small SVG. */
enum { MAX_POINTS = 2000, REDUCE_CHUNKS = 1000 };

/* Okabe & Ito's colour-blind-safe set (yellow left out: unreadable on white), then darker
 * fill-ins, so neighbouring groups stay distinguishable. */
static const char *const PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                      "#56B4E9", "#000000", "#8C564B", "#7F7F7F", "#6A3D9A"};
enum { N_PALETTE = sizeof PALETTE / sizeof PALETTE[0] };

const char *wb_report_colour(int i) {
  if (i < 0) return "#999999";
  return PALETTE[i % N_PALETTE];
}

static int plottable(double v) { return isfinite(v) && fabs(v) <= 1e300; }

/* An axis: data range widened to whole ticks. */
typedef struct axis {
  double lo, hi, step;
  int integer; /* ticks at whole numbers only (steps) */
} axis;

/* Fits an axis to [lo, hi] (lo > hi: no data) with about 5 ticks of 1, 2 or 5 x 10^k. */
static void axis_fit(axis *a, double lo, double hi, int integer) {
  if (!(lo <= hi)) {
    lo = 0;
    hi = 1;
  }
  if (lo == hi) {
    double d = integer ? 1 : (lo == 0 ? 1 : fabs(lo) * 0.1);
    lo -= d;
    hi += d;
  }
  double raw = (hi - lo) / 5;
  double mag = pow(10, floor(log10(raw)));
  double f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  if (integer && step < 1) step = 1;
  a->lo = floor(lo / step) * step;
  a->hi = ceil(hi / step) * step;
  if (a->hi <= a->lo) a->hi = a->lo + step; /* rounding at the edge of precision */
  a->step = step;
  a->integer = integer;
}

/* Maps v on axis a to a pixel between p0 (at lo) and p1 (at hi). Halved operands keep the
 * subtraction finite for any plottable values. */
static double axis_map(const axis *a, double v, double p0, double p1) {
  double t = (v * 0.5 - a->lo * 0.5) / (a->hi * 0.5 - a->lo * 0.5);
  return p0 + t * (p1 - p0);
}

/* A tick label with just enough significant digits to tell ticks apart. */
static const char *tick_label(char *buf, const axis *a, double v) {
  if (fabs(v) < a->step * 1e-9) v = 0; /* 1e-17 from rounding is 0 */
  if (a->step >= 1 && fabs(v) < 1e7 && v == floor(v)) {
    snprintf(buf, 32, "%.0f", v);
  } else {
    double m = fmax(fabs(a->lo), fabs(a->hi));
    int sig = (int)(floor(log10(m)) - floor(log10(a->step))) + 1;
    if (sig < 1) sig = 1;
    if (sig > 17) sig = 17;
    snprintf(buf, 32, "%.*g", sig, v);
  }
  return buf;
}

/* Number of ticks of a (bounded: the loop cannot run away on odd ranges). */
static int axis_ticks(const axis *a) {
  double k = floor((a->hi - a->lo) / a->step + 0.5);
  if (!(k >= 0)) return 0;
  return k + 1 > MAX_TICKS ? MAX_TICKS : (int)k + 1;
}

static void svg_open(wb_rbuf *b, int h, const char *title) {
  wb_rbuf_printf(b,
                 "<svg class=\"plot\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "role=\"img\" aria-label=\"",
                 W, h, W, h);
  wb_rbuf_html(b, title);
  wb_rbuf_printf(b, "\"><rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>", W, h);
  wb_rbuf_printf(b, "<text x=\"%d\" y=\"22\" class=\"title\">", PL);
  wb_rbuf_html_trunc(b, title, 80);
  wb_rbuf_put(b, "</text>");
}

/* Grid, axes, ticks and axis labels for plot area [PL, PR] x [PT, yb]. */
static void svg_axes(wb_rbuf *b, const axis *ax, const axis *ay, int yb, const char *xlabel,
                     const char *ylabel) {
  char lab[32];
  int nt = axis_ticks(ay);
  for (int i = 0; i < nt; i++) {
    double v = ay->lo + i * ay->step;
    double y = axis_map(ay, v, yb, PT);
    wb_rbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", PL, PR,
                   y, y);
    wb_rbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%s</text>",
                   PL - 6, y + 4, tick_label(lab, ay, v));
  }
  if (ax) {
    nt = axis_ticks(ax);
    for (int i = 0; i < nt; i++) {
      double v = ax->lo + i * ax->step;
      double x = axis_map(ax, v, PL, PR);
      wb_rbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" class=\"axis\"/>", x, x,
                     yb, yb + 5);
      wb_rbuf_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%s</text>",
                     x, yb + 18, tick_label(lab, ax, v));
    }
  }
  wb_rbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" class=\"axis\"/>", PL, PR, yb,
                 yb);
  wb_rbuf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" class=\"axis\"/>", PL, PL, PT,
                 yb);
  if (xlabel) {
    wb_rbuf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\">",
                   (PL + PR) / 2, yb + 38);
    wb_rbuf_html_trunc(b, xlabel, 60);
    wb_rbuf_put(b, "</text>");
  }
  if (ylabel) {
    int cy = (PT + yb) / 2;
    wb_rbuf_printf(b,
                   "<text x=\"16\" y=\"%d\" class=\"label\" text-anchor=\"middle\" "
                   "transform=\"rotate(-90 16 %d)\">",
                   cy, cy);
    wb_rbuf_html_trunc(b, ylabel, 40);
    wb_rbuf_put(b, "</text>");
  }
}

/* A legend entry: a short line (or a square for bars) in the colour, then the label. */
static void svg_legend_entry(wb_rbuf *b, int i, const char *label, int colour, int dashed,
                             int square) {
  int y = PT + 6 + i * LEG_DY;
  const char *c = wb_report_colour(colour);
  if (square)
    wb_rbuf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"10\" fill=\"%s\"/>", LEG_X + 4,
                   y - 5, c);
  else
    wb_rbuf_printf(b,
                   "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" "
                   "stroke-width=\"2.5\"%s/>",
                   LEG_X, LEG_X + 22, y, y, c, dashed ? " stroke-dasharray=\"6 4\"" : "");
  wb_rbuf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"legend\"><title>", LEG_X + 28, y + 4);
  wb_rbuf_html(b, label);
  wb_rbuf_put(b, "</title>");
  wb_rbuf_html_trunc(b, label, LEG_CHARS);
  wb_rbuf_put(b, "</text>");
}

static int canvas_height(int n_legend) {
  int need = PT + 6 + n_legend * LEG_DY + PB;
  return need > H_MIN ? need : H_MIN;
}

static void svg_note(wb_rbuf *b, int yb, const char *note) {
  wb_rbuf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"note\" text-anchor=\"middle\">%s</text>",
                 (PL + PR) / 2, (PT + yb) / 2, note);
}

/* The polyline segments and lone dots of one series. */
static void svg_series_line(wb_rbuf *b, const wb_plot_series *s, const axis *ax, const axis *ay,
                            int yb) {
  const char *c = wb_report_colour(s->colour);
  int64_t i = 0;
  while (i < s->n) {
    if (!plottable(s->y[i])) {
      i++;
      continue;
    }
    int64_t j = i;
    while (j < s->n && plottable(s->y[j])) j++;
    if (j - i == 1) {
      wb_rbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>",
                     axis_map(ax, (double)s->x[i], PL, PR), axis_map(ay, s->y[i], yb, PT), c);
    } else {
      wb_rbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"", c,
                     s->dashed ? " stroke-dasharray=\"6 4\"" : "");
      for (int64_t k = i; k < j; k++)
        wb_rbuf_printf(b, "%s%.1f,%.1f", k > i ? " " : "", axis_map(ax, (double)s->x[k], PL, PR),
                       axis_map(ay, s->y[k], yb, PT));
      wb_rbuf_put(b, "\"/>");
    }
    i = j;
  }
}

/* The shaded band of one series: one polygon per stretch where lo and hi are plottable. */
static void svg_series_band(wb_rbuf *b, const wb_plot_series *s, const axis *ax, const axis *ay,
                            int yb) {
  const char *c = wb_report_colour(s->colour);
  int64_t i = 0;
#define BAND_OK(k) (plottable(s->lo[k]) && plottable(s->hi[k]))
  while (i < s->n) {
    if (!BAND_OK(i)) {
      i++;
      continue;
    }
    int64_t j = i;
    while (j < s->n && BAND_OK(j)) j++;
    if (j - i == 1) {
      double x = axis_map(ax, (double)s->x[i], PL, PR);
      wb_rbuf_printf(b,
                     "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                     "stroke-opacity=\"0.4\" stroke-width=\"6\"/>",
                     x, x, axis_map(ay, s->lo[i], yb, PT), axis_map(ay, s->hi[i], yb, PT), c);
    } else {
      wb_rbuf_printf(b, "<polygon fill=\"%s\" fill-opacity=\"0.18\" stroke=\"none\" points=\"", c);
      for (int64_t k = i; k < j; k++)
        wb_rbuf_printf(b, "%.1f,%.1f ", axis_map(ax, (double)s->x[k], PL, PR),
                       axis_map(ay, s->hi[k], yb, PT));
      for (int64_t k = j - 1; k >= i; k--)
        wb_rbuf_printf(b, "%.1f,%.1f%s", axis_map(ax, (double)s->x[k], PL, PR),
                       axis_map(ay, s->lo[k], yb, PT), k > i ? " " : "");
      wb_rbuf_put(b, "\"/>");
    }
    i = j;
  }
#undef BAND_OK
}

/* A reduced copy of a long series: per chunk of consecutive points, the lowest and the
 * highest plottable y in step order, lo and hi as the chunk's extremes, then a gap (NaN)
 * when the chunk held a non-plottable value. Returns 0 on success, -1 when out of memory
 * (the caller then draws the series as it is). */
typedef struct reduced {
  wb_plot_series s;
  int64_t *x;
  double *y, *lo, *hi;
} reduced;

static int series_reduce(reduced *r, const wb_plot_series *in) {
  int64_t k = (in->n + REDUCE_CHUNKS - 1) / REDUCE_CHUNKS, cap = 3 * REDUCE_CHUNKS + 3;
  r->s = *in;
  r->x = malloc((size_t)cap * sizeof *r->x);
  r->y = malloc((size_t)cap * sizeof *r->y);
  r->lo = in->lo ? malloc((size_t)cap * sizeof *r->lo) : NULL;
  r->hi = in->hi ? malloc((size_t)cap * sizeof *r->hi) : NULL;
  if (!r->x || !r->y || (in->lo && !r->lo) || (in->hi && !r->hi)) {
    free(r->x), free(r->y), free(r->lo), free(r->hi);
    return -1;
  }
  int64_t m = 0;
  for (int64_t c0 = 0; c0 < in->n && m + 3 <= cap; c0 += k) {
    int64_t c1 = c0 + k < in->n ? c0 + k : in->n, imin = -1, imax = -1;
    int gap = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = c0; i < c1; i++) {
      if (!plottable(in->y[i])) {
        gap = 1;
        continue;
      }
      if (imin < 0 || in->y[i] < in->y[imin]) imin = i;
      if (imax < 0 || in->y[i] > in->y[imax]) imax = i;
      if (in->lo && plottable(in->lo[i])) lo = fmin(lo, in->lo[i]);
      if (in->hi && plottable(in->hi[i])) hi = fmax(hi, in->hi[i]);
    }
    int64_t pts[2] = {imin < imax ? imin : imax, imin < imax ? imax : imin};
    for (int j = 0; j < 2 && imin >= 0; j++) {
      if (j == 1 && pts[1] == pts[0]) break;
      r->x[m] = in->x[pts[j]];
      r->y[m] = in->y[pts[j]];
      if (r->lo) r->lo[m] = lo <= hi ? lo : NAN;
      if (r->hi) r->hi[m] = lo <= hi ? hi : NAN;
      m++;
    }
    if (gap) {
      r->x[m] = in->x[c1 - 1];
      r->y[m] = NAN;
      if (r->lo) r->lo[m] = NAN;
      if (r->hi) r->hi[m] = NAN;
      m++;
    }
  }
  r->s.n = m;
  r->s.x = r->x;
  r->s.y = r->y;
  r->s.lo = r->lo;
  r->s.hi = r->hi;
  return 0;
}

static void reduced_free(reduced *r) {
  free(r->x);
  free(r->y);
  free(r->lo);
  free(r->hi);
}

static void svg_lines_draw(wb_rbuf *b, const wb_plot *p);

void wb_svg_lines(wb_rbuf *b, const wb_plot *p) {
  int n_long = 0;
  for (int k = 0; k < p->n_series; k++) n_long += p->series[k].n > MAX_POINTS;
  reduced *red = n_long ? calloc((size_t)p->n_series, sizeof *red) : NULL;
  wb_plot_series *ser = n_long ? calloc((size_t)p->n_series, sizeof *ser) : NULL;
  if (!red || !ser) {
    free(red);
    free(ser);
    svg_lines_draw(b, p);
    return;
  }
  char *ok = calloc((size_t)p->n_series, 1);
  for (int k = 0; k < p->n_series; k++) {
    ser[k] = p->series[k];
    if (ok && p->series[k].n > MAX_POINTS && series_reduce(&red[k], &p->series[k]) == 0) {
      ok[k] = 1;
      ser[k] = red[k].s;
    }
  }
  wb_plot q = *p;
  q.series = ser;
  svg_lines_draw(b, &q);
  for (int k = 0; k < p->n_series; k++)
    if (ok && ok[k]) reduced_free(&red[k]);
  free(ok);
  free(red);
  free(ser);
}

static void svg_lines_draw(wb_rbuf *b, const wb_plot *p) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (int k = 0; k < p->n_series; k++) {
    const wb_plot_series *s = &p->series[k];
    for (int64_t i = 0; i < s->n; i++) {
      double v[3] = {s->y[i], s->lo ? s->lo[i] : NAN, s->hi ? s->hi[i] : NAN};
      for (int j = 0; j < 3; j++) {
        if (!plottable(v[j])) continue;
        ylo = fmin(ylo, v[j]);
        yhi = fmax(yhi, v[j]);
        xlo = fmin(xlo, (double)s->x[i]);
        xhi = fmax(xhi, (double)s->x[i]);
      }
    }
  }
  int h = canvas_height(p->n_legend), yb = h - PB;
  axis ax, ay;
  axis_fit(&ax, xlo, xhi, 1);
  axis_fit(&ay, ylo, yhi, 0);
  svg_open(b, h, p->title);
  svg_axes(b, &ax, &ay, yb, p->xlabel, p->ylabel);
  if (!(ylo <= yhi)) svg_note(b, yb, "no finite values to plot");
  for (int k = 0; k < p->n_series; k++) { /* bands first, so that every line stays on top */
    const wb_plot_series *s = &p->series[k];
    if (s->lo && s->hi) svg_series_band(b, s, &ax, &ay, yb);
  }
  for (int k = 0; k < p->n_series; k++) {
    const wb_plot_series *s = &p->series[k];
    wb_rbuf_put(b, "<g>");
    if (s->tooltip) {
      wb_rbuf_put(b, "<title>");
      wb_rbuf_html(b, s->tooltip);
      wb_rbuf_put(b, "</title>");
    }
    svg_series_line(b, s, &ax, &ay, yb);
    wb_rbuf_put(b, "</g>");
  }
  for (int i = 0; i < p->n_legend; i++)
    svg_legend_entry(b, i, p->legend[i].label, p->legend[i].colour, p->legend[i].dashed, 0);
  wb_rbuf_put(b, "</svg>\n");
}

void wb_svg_bars(wb_rbuf *b, const char *title, const char *ylabel, const wb_plot_bar *bars,
                 int n) {
  double lo = 0, hi = 0; /* bars start at zero */
  for (int i = 0; i < n; i++) {
    double m = bars[i].mean, e = plottable(bars[i].err) ? fabs(bars[i].err) : 0;
    if (!plottable(m)) continue;
    lo = fmin(lo, m - e);
    hi = fmax(hi, m + e);
  }
  if (!plottable(hi - lo)) lo = hi = 0;
  int h = canvas_height(n), yb = h - PB;
  axis ay;
  axis_fit(&ay, lo, hi, 0);
  svg_open(b, h, title);
  svg_axes(b, NULL, &ay, yb, "group", ylabel);
  double slot = n > 0 ? (double)(PR - PL) / n : 0;
  double bw = fmin(slot * 0.6, 80);
  double y0 = axis_map(&ay, 0, yb, PT);
  char num[32];
  for (int i = 0; i < n; i++) {
    const wb_plot_bar *r = &bars[i];
    const char *c = wb_report_colour(r->colour);
    double cx = PL + slot * (i + 0.5);
    wb_rbuf_put(b, "<g><title>");
    wb_rbuf_html(b, r->label);
    wb_rbuf_printf(b, ": %s", wb_report_fmt(num, r->mean));
    if (isfinite(r->err)) wb_rbuf_printf(b, " \xc2\xb1 %s", wb_report_fmt(num, r->err));
    wb_rbuf_printf(b, " (n=%lld)</title>", (long long)r->n);
    double top = y0;
    if (plottable(r->mean)) {
      double ym = axis_map(&ay, r->mean, yb, PT);
      wb_rbuf_printf(b,
                     "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                     "fill-opacity=\"0.85\"/>",
                     cx - bw / 2, fmin(ym, y0), bw, fabs(ym - y0), c);
      top = fmin(ym, y0);
      if (plottable(r->err) && r->err > 0) {
        double e1 = axis_map(&ay, r->mean + r->err, yb, PT);
        double e0 = axis_map(&ay, r->mean - r->err, yb, PT);
        wb_rbuf_printf(b,
                       "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" "
                       "stroke=\"#222222\" stroke-width=\"1.5\" fill=\"none\"/>",
                       cx, e0, e1, cx - 6, e1, cx + 6, cx - 6, e0, cx + 6);
        top = fmin(top, fmin(e0, e1));
      }
    }
    wb_rbuf_printf(b,
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"value\" text-anchor=\"middle\" "
                   "fill=\"%s\">%s</text>",
                   cx, top - 5, plottable(r->mean) ? "#222222" : c, wb_report_fmt(num, r->mean));
    wb_rbuf_printf(b,
                   "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">n=%lld</text>",
                   cx, yb + 18, (long long)r->n);
    wb_rbuf_put(b, "</g>");
  }
  for (int i = 0; i < n; i++) svg_legend_entry(b, i, bars[i].label, bars[i].colour, 0, 1);
  wb_rbuf_put(b, "</svg>\n");
}
