/* bench/report.h: reports over the result store: one self-contained HTML file (inline SVG, no
 * network fetches) and a Markdown twin with the same tables.
 *
 * What a report holds, per experiment (runs are read through store.h, never from logs):
 *   - a summary (runs per status) and the groups: runs with equal params other than "seed"
 *     form a group (as wb_store_compare groups them), numbered 1, 2, ... and named by the params
 *     that differ between groups ("2: lr=0.1");
 *   - final metrics per group, for every metric key (eval/... keys first, then by key): a bar
 *     chart of the group means with 95% confidence intervals as error bars, and a table of
 *     runs, NaN finals, mean, std, CI half-width, CI bounds, min and max over the group's
 *     FINISHED runs (wb_store_compare; NaN finals are counted, not averaged);
 *   - learning curves of every metric logged at more than one step: one plot with a line per
 *     run (coloured by group, FAILED and KILLED runs dashed) and one with each group's mean and
 *     a mean +/- one standard deviation band across its FINISHED runs at each step. NaN and
 *     infinite values are gaps, a lone point is a dot; series longer than 2,000 points are
 *     drawn through their per-chunk min/max envelope;
 *   - the runs (id, name, status, params, user tags, duration, first line of the error), the
 *     final value of every metric per run, the full error text of failed runs, and the runs'
 *     metadata (start, script, git commit, host, CPU, threads, device, wb version, seed, peak
 *     memory).
 * The HTML has inline CSS, one inline SVG per plot and a few lines of JavaScript that sort a
 * table when a header is clicked; it references nothing outside itself. The Markdown file
 * (GitHub-flavoured) has the same tables and headings, without plots. Every string that
 * comes from the store (names, params, tags, errors, metric keys) is escaped: HTML entities in
 * HTML and SVG text; in Markdown, \ | ` * _ [ ] ~ backslash-escaped, < > & as entities and
 * newlines as <br>. Numbers are printed with 6 significant digits, NaN as "NaN".
 */
#ifndef WB_REPORT_H
#define WB_REPORT_H

#include "store.h"

/* Writes the report of experiments[0..n-1] (every experiment with runs, in order of its first
 * run, when n == 0) to html_path and md_path; either may be NULL, not both. Everything is
 * read and built in memory first, so a report that fails while reading writes nothing; each
 * file is then written to "<path>.tmp" and renamed into place, so no reader ever sees half a
 * file (when the Markdown file cannot be written, the HTML file is already in place). The
 * parent directories must exist. Metrics still buffered on s are read too (the store flushes
 * before queries).
 * Returns WB_OK, or a code with a message in err (errlen bytes, always terminated; err may be
 * NULL when errlen is 0):
 *   WB_ERR_ARG       s NULL, n < 0, experiments NULL with n > 0, an empty name, or both
 *                    paths NULL
 *   WB_ERR_NOTFOUND  a named experiment has no runs (or does not exist; the message lists the
 *                    experiments that have runs), or n == 0 and the store holds no runs
 *   WB_ERR_IO        a file cannot be written (the message names it)
 *   WB_ERR_NOMEM, and the store's read errors (WB_ERR_BUSY, WB_ERR_CORRUPT, WB_ERR_DB). */
int wb_report_write(wb_store *s, const char *const *experiments, int n, const char *html_path,
                    const char *md_path, char *err, size_t errlen);

#endif
