/*
 * The skeleton of the bundled plugins' line-oriented files (Mosquitto password and ACL
 * files): a size cap on the whole file, then line by line, each line capped and free
 * of NUL bytes, blank lines skipped, and every complaint written as
 * "<file>:<line>: <what>". Each parser keeps its own syntax (comments included: the two
 * formats differ there). Reading the file itself is bounded_read.h's.
 *
 * Header-only C99 (static functions), so each library that includes it stays a single
 * object with no shared link dependency.
 */
#ifndef MQGATE_LINE_FILE_H
#define MQGATE_LINE_FILE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
#define LINE_FILE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define LINE_FILE_PRINTF(fmt, args)
#endif

/* printf into err (at most errlen bytes, NUL included); nothing when err is NULL or
 * errlen 0. */
static inline void line_file_set_err(char* err, size_t errlen, const char* fmt, ...)
    LINE_FILE_PRINTF(3, 4);
static inline void line_file_set_err(char* err, size_t errlen, const char* fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0) return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* A blank, as both formats trim them: space, tab, and the '\r' of a CRLF file. */
static inline int line_file_is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

typedef struct line_file {
  const char* name; /* the file's name in messages */
  const char* data; /* the whole file, len bytes */
  size_t len;
  size_t pos;        /* where the next line starts */
  size_t lineno;     /* of the line last returned, from 1 */
  unsigned max_line; /* bytes in a line, its newline not counted */
} line_file;

/* Starts reading data[0, len) named `name`. Returns 0, or -1 with "<name>: file is over
 * <max_file> bytes" in err. */
static inline int line_file_init(line_file* lf, const char* name, const char* data, size_t len,
                                 unsigned max_file, unsigned max_line, char* err,
                                 size_t errlen) {
  lf->name = name;
  lf->data = data;
  lf->len = len;
  lf->pos = 0;
  lf->lineno = 0;
  lf->max_line = max_line;
  if (len > max_file) {
    line_file_set_err(err, errlen, "%s: file is over %u bytes", name, max_file);
    return -1;
  }
  return 0;
}

/* Writes "<name>:<line>: " and then the message into err, for the line last returned. */
static inline void line_file_err(const line_file* lf, char* err, size_t errlen,
                                 const char* fmt, ...) LINE_FILE_PRINTF(4, 5);
static inline void line_file_err(const line_file* lf, char* err, size_t errlen,
                                 const char* fmt, ...) {
  va_list ap;
  int n;
  if (err == NULL || errlen == 0) return;
  n = snprintf(err, errlen, "%s:%zu: ", lf->name, lf->lineno);
  if (n < 0 || (size_t)n >= errlen) return; /* cut inside the prefix already */
  va_start(ap, fmt);
  vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

/* Moves to the next line that is not blank. Returns 1 with *line its first byte and
 * [*b, *e) the part of it between leading and trailing blanks (never empty); 0 at the
 * end of the data; -1 with "<name>:<line>: ..." in err for a line longer than max_line
 * or one holding a NUL byte. Lines end at '\n'; the last one needs none. */
static inline int line_file_next(line_file* lf, const char** line, size_t* b, size_t* e,
                                 char* err, size_t errlen) {
  *line = NULL; /* set on every path: callers read them only after a 1 */
  *b = *e = 0;
  while (lf->pos < lf->len) {
    const char* start = lf->data + lf->pos;
    const char* nl = (const char*)memchr(start, '\n', lf->len - lf->pos);
    size_t llen = nl ? (size_t)(nl - start) : lf->len - lf->pos;
    size_t lb = 0, le = llen;
    lf->pos += llen + (nl ? 1 : 0);
    lf->lineno++;
    if (llen > lf->max_line) {
      line_file_err(lf, err, errlen, "line longer than %u bytes", lf->max_line);
      return -1;
    }
    if (memchr(start, '\0', llen) != NULL) {
      line_file_err(lf, err, errlen, "NUL byte in line");
      return -1;
    }
    while (lb < le && line_file_is_blank(start[lb])) lb++;
    while (le > lb && line_file_is_blank(start[le - 1])) le--;
    if (lb == le) continue;
    *line = start;
    *b = lb;
    *e = le;
    return 1;
  }
  return 0;
}

#endif
