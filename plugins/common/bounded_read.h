/*
 * Reading a whole configuration file (a password or ACL file) with a size cap, for the
 * bundled plugins' parsers. Header-only (static), so each library that includes it
 * stays a single object with no shared link dependency.
 */
#ifndef MQGATE_BOUNDED_READ_H
#define MQGATE_BOUNDED_READ_H

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* For an open error: " (not readable by user mqgate)" when the broker runs as a user
 * (it dropped root, docs/operations.md) who may not read the file; "" otherwise. */
static const char* bounded_read_hint(int err, char* buf, size_t len) {
  struct passwd pw, *found = NULL;
  char names[1024];
  uid_t uid = geteuid();
  if ((err != EACCES && err != EPERM) || uid == 0) return "";
  if (getpwuid_r(uid, &pw, names, sizeof names, &found) == 0 && found != NULL)
    snprintf(buf, len, " (not readable by user %s)", pw.pw_name);
  else
    snprintf(buf, len, " (not readable by uid %lu)", (unsigned long)uid);
  return buf;
}

/* Reads the regular file `path`, at most `max` bytes, into a malloc'd buffer with a
 * NUL after the last byte, and sets *len. On failure returns NULL and writes
 * "<path>: <why>" into err (not a regular file, over the cap, changed while read, an
 * I/O error, out of memory). A file that grows while it is read is refused rather
 * than read half. */
static char *bounded_read(const char *path, size_t max, size_t *len, char *err, size_t errlen) {
  struct stat st;
  char *buf;
  size_t got = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    char hint[128];
    int e = errno;
    snprintf(err, errlen, "%s: %s%s", path, strerror(e), bounded_read_hint(e, hint, sizeof hint));
    return NULL;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    close(fd);
    return NULL;
  }
  if ((unsigned long long)st.st_size > max) {
    snprintf(err, errlen, "%s: file is over %lu bytes", path, (unsigned long)max);
    close(fd);
    return NULL;
  }
  buf = (char *)malloc((size_t)st.st_size + 1);
  if (buf == NULL) {
    snprintf(err, errlen, "%s: out of memory", path);
    close(fd);
    return NULL;
  }
  for (;;) {
    /* Room for one byte more than the size: reading it means the file grew. */
    ssize_t r = read(fd, buf + got, (size_t)st.st_size + 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
      free(buf);
      close(fd);
      return NULL;
    }
    if (r == 0) break;
    got += (size_t)r;
    if (got > (size_t)st.st_size) {
      snprintf(err, errlen, "%s: file changed while being read", path);
      free(buf);
      close(fd);
      return NULL;
    }
  }
  close(fd);
  buf[got] = '\0';
  *len = got;
  return buf;
}

#endif
