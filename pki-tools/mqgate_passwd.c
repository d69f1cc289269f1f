/* mqgate_passwd: manages Mosquitto password files, with mosquitto_passwd's usage
 * (docs/passwd.md). Files are rewritten atomically (temp file, fsync, rename) with mode
 * 0600; comments, blank lines and the order of the other users are kept. Passwords are
 * never echoed or printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "pwfile.h"

static const char* prog = "mqgate_passwd";
static char g_temp[PATH_MAX + 32]; /* removed on error or signal */

static void usage(FILE* out) {
  fprintf(out,
          "mqgate_passwd manages Mosquitto password files (mosquitto_passwd's usage).\n\n"
          "Usage: mqgate_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] "
          "passwordfile username\n"
          "       mqgate_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b "
          "passwordfile username password\n"
          "       mqgate_passwd [-H ...] [-I iterations] -U passwordfile\n"
          " -b : batch mode: the password is the last argument (visible to other users "
          "in ps).\n"
          " -c : create a new password file, replacing any existing one.\n"
          " -D : delete the username rather than adding/updating its password.\n"
          " -H : hash: sha512-pbkdf2 (default, $7$) or sha512 ($6$, Mosquitto 1.x).\n"
          " -I : PBKDF2 iterations, %u..%u (default %u, as mosquitto_passwd 2.0).\n"
          " -U : hash every plain-text password of an existing file.\n"
          "Without -b the password is asked twice (not echoed on a terminal; read as two\n"
          "lines from standard input otherwise). Files are written with mode 0600 (0640 when\n"
          "root edits a group-readable file: its owner and group are kept).\n",
          PW_MIN_ITERATIONS, PW_MAX_ITERATIONS, PW_DEFAULT_ITERATIONS);
}

static void die(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: error: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (g_temp[0]) unlink(g_temp);
  exit(1);
}

static void on_signal(int sig) {
  if (g_temp[0]) unlink(g_temp);
  signal(sig, SIG_DFL);
  raise(sig);
}

/* ---- the file as lines ------------------------------------------------------------- */

struct buf {
  char* p;
  size_t n, cap;
};

static void buf_add(struct buf* b, const char* s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t nc = (b->cap ? b->cap : 4096);
    while (nc < b->n + n + 1) nc *= 2;
    b->p = realloc(b->p, nc);
    if (b->p == NULL) die("out of memory");
    b->cap = nc;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static char* read_file(const char* path, size_t* len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  struct buf b = {0};
  char chunk[65536];
  if (fd < 0) die("%s: %s", path, strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) die("%s: not a regular file", path);
  for (;;) {
    ssize_t r = read(fd, chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("%s: %s", path, strerror(errno));
    if (r == 0) break;
    if (b.n + (size_t)r > PW_MAX_FILE_BYTES) die("%s: file is over %u bytes", path, PW_MAX_FILE_BYTES);
    buf_add(&b, chunk, (size_t)r);
  }
  close(fd);
  if (b.p == NULL) buf_add(&b, "", 0);
  *len = b.n;
  return b.p;
}

/* username of a "user:..." line (not blank, not a comment), trimmed; 0 if none */
static int line_user(const char* line, size_t n, const char** u, size_t* un) {
  size_t b = 0, e;
  const char* c;
  while (b < n && (line[b] == ' ' || line[b] == '\t' || line[b] == '\r')) b++;
  if (b == n || line[0] == '#') return 0;
  c = memchr(line + b, ':', n - b);
  if (c == NULL) return 0;
  e = (size_t)(c - line);
  while (e > b && (line[e - 1] == ' ' || line[e - 1] == '\t')) e--;
  *u = line + b;
  *un = e - b;
  return 1;
}

static void write_atomic(const char* path, const char* data, size_t len) {
  char target[PATH_MAX], dir[PATH_MAX];
  struct stat st;
  int have_old, fd, dfd;
  size_t off = 0;
  char* slash;
  /* write through a symlink to its target, as an in-place rewrite would */
  if (realpath(path, target) == NULL) {
    if (errno != ENOENT) die("%s: %s", path, strerror(errno));
    if (strlen(path) >= sizeof target) die("%s: path too long", path);
    strcpy(target, path);
  }
  have_old = stat(target, &st) == 0;
  strcpy(dir, target);
  slash = strrchr(dir, '/');
  if (slash == NULL)
    strcpy(dir, ".");
  else if (slash == dir)
    dir[1] = '\0';
  else
    *slash = '\0';
  if (snprintf(g_temp, sizeof g_temp, "%s.tmp.XXXXXX", target) >= (int)sizeof g_temp)
    die("%s: path too long", path);
  fd = mkstemp(g_temp);
  if (fd < 0) {
    g_temp[0] = '\0';
    die("cannot create a temporary file next to %s: %s", target, strerror(errno));
  }
  if (fchmod(fd, 0600) != 0) die("%s: chmod: %s", g_temp, strerror(errno));
  /* root editing a broker-owned file keeps its owner, so the broker can still read it; and
   * its group's read bit (root:mqgate 0640, the Debian package's /etc/mqgate/passwd), set
   * only once the group is the old one */
  if (have_old && geteuid() == 0) {
    if (fchown(fd, st.st_uid, st.st_gid) != 0) die("%s: chown: %s", g_temp, strerror(errno));
    if ((st.st_mode & S_IRGRP) && fchmod(fd, 0640) != 0)
      die("%s: chmod: %s", g_temp, strerror(errno));
  }
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die("%s: write: %s", g_temp, strerror(errno));
    off += (size_t)w;
  }
  if (fsync(fd) != 0) die("%s: fsync: %s", g_temp, strerror(errno));
  if (close(fd) != 0) die("%s: close: %s", g_temp, strerror(errno));
  if (rename(g_temp, target) != 0) die("cannot replace %s: %s", target, strerror(errno));
  g_temp[0] = '\0';
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
}

/* ---- passwords --------------------------------------------------------------------- */

static size_t read_line(char* out, size_t max, int fd) {
  size_t n = 0;
  int too_long = 0;
  for (;;) {
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || c == '\n') break;
    if (n + 1 < max)
      out[n++] = c;
    else
      too_long = 1;
  }
  if (n > 0 && out[n - 1] == '\r') n--;
  out[n] = '\0';
  if (too_long) {
    explicit_bzero(out, max);
    die("password longer than %u bytes", PW_MAX_PASSWORD);
  }
  return n;
}

static size_t ask(const char* prompt, char* out, size_t max) {
  struct termios old, quiet;
  int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
  size_t n;
  if (tty) { /* echo off before the prompt: what is typed after it is neither shown nor lost */
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  fputs(prompt, stderr);
  fflush(stderr);
  n = read_line(out, max, STDIN_FILENO);
  if (tty)
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
  else
    fputc('\n', stderr);
  return n;
}

static size_t get_password(char* pw, size_t max) {
  char* again = malloc(max);
  size_t n, m;
  if (again == NULL) die("out of memory");
  n = ask("Password: ", pw, max);
  m = ask("Reenter password: ", again, max);
  if (n != m || memcmp(pw, again, n) != 0) {
    explicit_bzero(again, max);
    explicit_bzero(pw, max);
    free(again);
    die("passwords do not match");
  }
  explicit_bzero(again, max);
  free(again);
  if (n == 0) die("empty password");
  return n;
}

static void make_line(struct buf* out, const char* user, pw_type type, unsigned it,
                      const char* pw, size_t pwlen) {
  pw_hash h;
  char text[256], err[PW_ERR_LEN];
  if (pw_hash_make(type, it, pw, pwlen, &h, err, sizeof err) != 0) die("%s", err);
  if (pw_hash_format(&h, text, sizeof text) != 0) die("cannot format the hash");
  buf_add(out, user, strlen(user));
  buf_add(out, ":", 1);
  buf_add(out, text, strlen(text));
  buf_add(out, "\n", 1);
  explicit_bzero(&h, sizeof h);
}

static unsigned parse_iterations(const char* s) {
  char* end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (*s < '0' || *s > '9' || *end || errno || v < PW_MIN_ITERATIONS || v > PW_MAX_ITERATIONS)
    die("-I: iterations must be a number from %u to %u, got \"%s\"", PW_MIN_ITERATIONS,
        PW_MAX_ITERATIONS, s);
  return (unsigned)v;
}

/* -U: every "user:password" line whose password is not a hash gets hashed */
static void update_plain(const char* path, pw_type type, unsigned it) {
  size_t len, pos = 0, lineno = 0, hashed = 0;
  char* data = read_file(path, &len);
  struct buf out = {0};
  char err[PW_ERR_LEN];
  pwfile* check;
  while (pos < len) {
    const char* line = data + pos;
    const char* nl = memchr(line, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - line) : len - pos;
    const char* u;
    size_t un;
    pos += n + (nl ? 1 : 0);
    lineno++;
    if (n > PW_MAX_LINE_BYTES) die("%s:%zu: line longer than %u bytes", path, lineno, PW_MAX_LINE_BYTES);
    if (line_user(line, n, &u, &un)) {
      const char* pb = memchr(line, ':', n) + 1;
      size_t pn = (size_t)(line + n - pb);
      pw_hash h;
      char* user = strndup(u, un);
      if (user == NULL) die("out of memory");
      if (pn > 0 && pb[pn - 1] == '\r') pn--;
      if (pw_username_check(user, err, sizeof err) != 0) die("%s:%zu: %s", path, lineno, err);
      if (pn >= 3 && pb[0] == '$' && (pb[1] == '6' || pb[1] == '7') && pb[2] == '$') {
        /* already hashed: kept, if it is a valid hash (else it would be hashed again) */
        if (pw_hash_parse(pb, pn, &h, err, sizeof err) != 0)
          die("%s:%zu: %s (file left unchanged)", path, lineno, err);
        buf_add(&out, line, n);
        buf_add(&out, "\n", 1);
      } else {
        if (pn == 0) die("%s:%zu: user \"%s\" has an empty password", path, lineno, user);
        make_line(&out, user, type, it, pb, pn);
        hashed++;
      }
      free(user);
    } else {
      buf_add(&out, line, n);
      buf_add(&out, "\n", 1);
    }
  }
  check = pwfile_parse(path, out.p ? out.p : "", out.n, err, sizeof err);
  if (check == NULL) die("%s", err);
  pwfile_free(check);
  write_atomic(path, out.p ? out.p : "", out.n);
  explicit_bzero(data, len);
  free(data);
  free(out.p);
  fprintf(stderr, "%s: %zu password%s hashed\n", prog, hashed, hashed == 1 ? "" : "s");
}

int main(int argc, char** argv) {
  int opt, create = 0, del = 0, batch = 0, update = 0;
  pw_type type = PW_SHA512_PBKDF2;
  unsigned it = PW_DEFAULT_ITERATIONS;
  const char *path, *user;
  char err[PW_ERR_LEN];
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    usage(stdout);
    return 0;
  }
  while ((opt = getopt(argc, argv, "+bcDH:I:U")) != -1) {
    switch (opt) {
      case 'b': batch = 1; break;
      case 'c': create = 1; break;
      case 'D': del = 1; break;
      case 'U': update = 1; break;
      case 'I': it = parse_iterations(optarg); break;
      case 'H':
        if (!strcmp(optarg, "sha512-pbkdf2"))
          type = PW_SHA512_PBKDF2;
        else if (!strcmp(optarg, "sha512"))
          type = PW_SHA512;
        else
          die("-H: unknown hash \"%s\" (sha512-pbkdf2 or sha512)", optarg);
        break;
      default: usage(stderr); return 2;
    }
  }
  if (create + del + update > 1) {
    fprintf(stderr, "%s: error: -c, -D and -U exclude each other\n", prog);
    return 2;
  }
  if (update) {
    if (batch || argc - optind != 1) {
      usage(stderr);
      return 2;
    }
    update_plain(argv[optind], type, it);
    return 0;
  }
  if ((del && batch) || argc - optind != (batch ? 3 : 2)) {
    usage(stderr);
    return 2;
  }
  path = argv[optind];
  user = argv[optind + 1];
  if (pw_username_check(user, err, sizeof err) != 0) die("%s", err);
  /* Accepted, as mosquitto_passwd does, but such a name cannot be one topic level: the
   * acl plugin gives it no %u pattern ('/'), or no pattern at all ('+', '#'). */
  if (!del && strpbrk(user, "/+#"))
    fprintf(stderr,
            "%s: warning: username \"%s\" contains '/', '+' or '#': ACL patterns with %%u "
            "will grant it nothing%s (see docs/acl.md)\n",
            prog, user, strpbrk(user, "+#") ? ", nor any other pattern" : "");
  {
    char* pw = NULL;
    size_t pwlen = 0, len = 0, pos = 0, lineno = 0;
    char* data = NULL;
    struct buf out = {0};
    int found = 0;
    if (!create) {
      pwfile* f;
      data = read_file(path, &len);
      f = pwfile_parse(path, data, len, err, sizeof err);
      if (f == NULL) die("%s (file left unchanged)", err);
      found = pwfile_find(f, user) != (size_t)-1;
      pwfile_free(f);
      if (del && !found) die("user \"%s\" not found in %s", user, path);
    }
    if (!del) {
      if (batch) {
        pw = argv[optind + 2];
        pwlen = strlen(pw);
        if (pwlen == 0) die("empty password");
        if (pwlen > PW_MAX_PASSWORD) die("password longer than %u bytes", PW_MAX_PASSWORD);
      } else {
        pw = malloc(PW_MAX_PASSWORD + 2);
        if (pw == NULL) die("out of memory");
        pwlen = get_password(pw, PW_MAX_PASSWORD + 2);
      }
    }
    /* keep every other line as it is; replace, drop or append this user's */
    while (pos < len) {
      const char* line = data + pos;
      const char* nl = memchr(line, '\n', len - pos);
      size_t n = nl ? (size_t)(nl - line) : len - pos;
      const char* u;
      size_t un;
      pos += n + (nl ? 1 : 0);
      lineno++;
      if (line_user(line, n, &u, &un) && un == strlen(user) && !memcmp(u, user, un)) {
        if (!del) make_line(&out, user, type, it, pw, pwlen);
        continue;
      }
      buf_add(&out, line, n);
      buf_add(&out, "\n", 1);
    }
    if (!del && !found) make_line(&out, user, type, it, pw, pwlen);
    if (pw && !batch) {
      explicit_bzero(pw, PW_MAX_PASSWORD + 2);
      free(pw);
    }
    write_atomic(path, out.p ? out.p : "", out.n);
    free(data);
    free(out.p);
  }
  return 0;
}
