/* bench/report_text.c: the report's text buffer, HTML and Markdown escaping, and number
 * formatting (see report_int.h). */
#include "report_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wb_rbuf_free(wb_rbuf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* Makes room for extra more bytes plus the terminating NUL; 0 on success. */
static int reserve(wb_rbuf *b, size_t extra) {
  if (b->oom) return -1;
  if (b->n + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->n + extra + 1) {
    if (cap > ((size_t)-1) / 2) {
      b->oom = 1;
      return -1;
    }
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

void wb_rbuf_putn(wb_rbuf *b, const char *s, size_t n) {
  if (!n || reserve(b, n)) return;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

void wb_rbuf_put(wb_rbuf *b, const char *s) {
  if (s) wb_rbuf_putn(b, s, strlen(s));
}

void wb_rbuf_printf(wb_rbuf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (len < 0) return;
  if ((size_t)len < sizeof small) {
    wb_rbuf_putn(b, small, (size_t)len);
    return;
  }
  if (reserve(b, (size_t)len)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)len;
}

/* Escapes one byte for HTML into b. */
static void html_byte(wb_rbuf *b, unsigned char c) {
  switch (c) {
  case '&':
    wb_rbuf_put(b, "&amp;");
    break;
  case '<':
    wb_rbuf_put(b, "&lt;");
    break;
  case '>':
    wb_rbuf_put(b, "&gt;");
    break;
  case '"':
    wb_rbuf_put(b, "&quot;");
    break;
  case '\'':
    wb_rbuf_put(b, "&#39;");
    break;
  default:
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
      wb_rbuf_putn(b, " ", 1);
    else
      wb_rbuf_putn(b, (const char *)&c, 1);
  }
}

void wb_rbuf_html(wb_rbuf *b, const char *s) {
  if (!s) return;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) html_byte(b, *p);
}

void wb_rbuf_html_trunc(wb_rbuf *b, const char *s, int max_chars) {
  if (!s) return;
  const unsigned char *p = (const unsigned char *)s;
  int chars = 0;
  while (*p) {
    /* a UTF-8 lead byte starts a character; continuation bytes (10xxxxxx) belong to it */
    if ((*p & 0xc0) != 0x80) {
      if (chars == max_chars) {
        wb_rbuf_put(b, "\xe2\x80\xa6"); /* U+2026 HORIZONTAL ELLIPSIS */
        return;
      }
      chars++;
    }
    html_byte(b, *p++);
  }
}

void wb_rbuf_md(wb_rbuf *b, const char *s) {
  if (!s) return;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    switch (c) {
    case '\\':
    case '|':
    case '`':
    case '*':
    case '_':
    case '[':
    case ']':
    case '~':
      wb_rbuf_putn(b, "\\", 1);
      wb_rbuf_putn(b, (const char *)&c, 1);
      break;
    case '<':
      wb_rbuf_put(b, "&lt;");
      break;
    case '>':
      wb_rbuf_put(b, "&gt;");
      break;
    case '&':
      wb_rbuf_put(b, "&amp;");
      break;
    case '\n':
      wb_rbuf_put(b, "<br>");
      break;
    case '\r':
      break;
    default:
      if (c < 0x20 || c == 0x7f)
        wb_rbuf_putn(b, " ", 1);
      else
        wb_rbuf_putn(b, (const char *)&c, 1);
    }
  }
}

const char *wb_report_fmt(char *buf, double v) {
  if (isnan(v))
    strcpy(buf, "NaN");
  else if (isinf(v))
    strcpy(buf, v > 0 ? "inf" : "-inf");
  else
    snprintf(buf, 32, "%.6g", v == 0 ? 0.0 : v); /* no "-0" */
  return buf;
}

const char *wb_report_fmt_key(char *buf, double v) {
  if (isnan(v))
    strcpy(buf, "NaN");
  else if (isinf(v))
    strcpy(buf, v > 0 ? "Infinity" : "-Infinity");
  else
    snprintf(buf, 32, "%.17g", v);
  return buf;
}
