/* bench/report_int.h: internals of the report generator (report.c, report_text.c,
 * report_svg.c); not a public API.
 *
 * The report is built in memory (wb_rbuf) and written to its files only when complete, so a
 * report that fails half-way leaves no half-written file behind. Every user string (names,
 * params, tags, errors, metric keys) goes through an escaping writer: wb_rbuf_html for HTML
 * and the SVG text inside it, wb_rbuf_md for Markdown table cells.
 */
#ifndef WB_REPORT_INT_H
#define WB_REPORT_INT_H

#include <stddef.h>
#include <stdint.h>

/* A growable text buffer. Out of memory sets oom and drops further writes: callers check oom
 * once at the end instead of after every write. */
typedef struct wb_rbuf {
  char *p; /* NUL-terminated when n > 0 */
  size_t n, cap;
  int oom;
} wb_rbuf;

void wb_rbuf_free(wb_rbuf *b);
void wb_rbuf_putn(wb_rbuf *b, const char *s, size_t n);
void wb_rbuf_put(wb_rbuf *b, const char *s);
void wb_rbuf_printf(wb_rbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* s with & < > " ' as entities, and C0 control characters other than tab and newline as
 * spaces (so that attribute values and SVG <text> stay well formed). NULL writes nothing. */
void wb_rbuf_html(wb_rbuf *b, const char *s);
/* At most max_chars UTF-8 characters of s (a multi-byte character is never cut), with "…"
 * appended when s was longer, HTML-escaped. */
void wb_rbuf_html_trunc(wb_rbuf *b, const char *s, int max_chars);
/* s as the text of a GitHub-flavoured Markdown table cell: \ | ` * _ [ ] ~ backslash-escaped,
 * < > & as entities (no raw HTML reaches the renderer), newlines as <br>, CR and other
 * control characters dropped or made spaces. NULL writes nothing. */
void wb_rbuf_md(wb_rbuf *b, const char *s);

/* A number for display: "%.6g", "NaN", "inf", "-inf". buf holds at least 32 bytes. */
const char *wb_report_fmt(char *buf, double v);
/* A number for a sort key (data-v attribute): "%.17g", "NaN", "Infinity", "-Infinity" (what
 * JavaScript's Number() parses). buf holds at least 32 bytes. */
const char *wb_report_fmt_key(char *buf, double v);

/* ---- Plots (report_svg.c) ---------------------------------------------------------- */

/* The fixed palette (colour-blind friendly first): wb_report_colour(i) cycles through it. */
const char *wb_report_colour(int i);

/* One line of a line plot: points (x[i], y[i]); a non-finite y is a gap; a point with no
 * finite neighbour is drawn as a dot. With lo and hi, a band from lo to hi is shaded under
 * the line (where both are finite). */
typedef struct wb_plot_series {
  const char *tooltip; /* raw text (escaped by the plotter), shown on hover; may be NULL */
  int colour;          /* palette index */
  int dashed;
  int64_t n;
  const int64_t *x; /* (n) increasing steps */
  const double *y;  /* (n) */
  const double *lo; /* (n) or NULL */
  const double *hi; /* (n) or NULL */
} wb_plot_series;

typedef struct wb_plot_legend {
  const char *label; /* raw text */
  int colour;        /* palette index; < 0: grey */
  int dashed;
} wb_plot_legend;

typedef struct wb_plot {
  const char *title;  /* raw text */
  const char *xlabel; /* raw text */
  const char *ylabel; /* raw text */
  int n_series;
  const wb_plot_series *series;
  int n_legend;
  const wb_plot_legend *legend;
} wb_plot;

/* Appends one <svg> line plot (axes with ticks and labels, legend on the right). Never fails
 * on odd data: all-NaN series give an empty plot with a note, a single point a dot. */
void wb_svg_lines(wb_rbuf *b, const wb_plot *p);

/* One bar of a bar chart: mean with an error bar of +/- err (none when err is not finite);
 * a non-finite mean is written as text instead of a bar. */
typedef struct wb_plot_bar {
  const char *label; /* raw text, in the legend */
  int colour;
  double mean, err;
  int64_t n; /* sample size, written under the bar */
} wb_plot_bar;

/* Appends one <svg> bar chart, the y axis starting at zero. */
void wb_svg_bars(wb_rbuf *b, const char *title, const char *ylabel, const wb_plot_bar *bars, int n);

#endif
