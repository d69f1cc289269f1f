/* Mosquitto password files (see pwfile.h and docs/passwd.md). */
#define _DEFAULT_SOURCE
#include "pwfile.h"

#include "../common/bounded_read.h"
#include "../common/line_file.h"

#include <errno.h>
#include <limits.h>
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/sha512.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct pw_entry {
  char* username;
  size_t line;
  pw_hash hash;
};

struct pwfile {
  struct pw_entry* entries; /* sorted by username */
  size_t count;
  pw_hash dummy;    /* for unknown users: a typical entry's parameters */
  size_t costliest; /* index of the most expensive entry (count if none) */
};

/* What one verification of h costs, in PBKDF2 iterations ($6$: one SHA-512, ~0). */
static unsigned long hash_cost(const pw_hash* h) {
  return h->type == PW_SHA512_PBKDF2 ? h->iterations : 0;
}

static int cmp_cost(const void* a, const void* b) {
  unsigned long x = *(const unsigned long*)a, y = *(const unsigned long*)b;
  return x < y ? -1 : x > y;
}

static int is_b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

/* Strict base64 (RFC 4648 alphabet, optional '=' padding, no whitespace). */
static int b64_decode(const char* s, size_t len, unsigned char* out, size_t outmax,
                      size_t* outlen) {
  size_t i, pad = 0, data = len;
  char buf[PW_MAX_SALT_BYTES * 2 + 8];
  while (data > 0 && s[data - 1] == '=') {
    data--;
    pad++;
  }
  if (len == 0 || pad > 2) return -1;
  for (i = 0; i < data; i++)
    if (!is_b64_char((unsigned char)s[i])) return -1;
  if (data % 4 == 1) return -1;
  if (pad > 0 && len % 4 != 0) return -1;
  /* mbedTLS wants padding: add it back. */
  if (data + 4 > sizeof buf) return -1;
  memcpy(buf, s, data);
  while (data % 4 != 0) buf[data++] = '=';
  if (mbedtls_base64_decode(out, outmax, outlen, (const unsigned char*)buf, data) != 0)
    return -1;
  return 0;
}

static size_t b64_encode(const unsigned char* in, size_t len, char* out, size_t outmax) {
  size_t olen = 0;
  if (mbedtls_base64_encode((unsigned char*)out, outmax, &olen, in, len) != 0) return 0;
  return olen;
}

int pw_hash_parse(const char* text, size_t len, pw_hash* out, char* err, size_t errlen) {
  const char* end = text + len;
  const char* p;
  const char* fields[4];
  size_t flen[4];
  size_t n = 0, want, olen = 0;
  memset(out, 0, sizeof *out);
  if (len < 3 || text[0] != '$') {
    line_file_set_err(err, errlen,
                      "password is not a hash (\"$7$...\" or \"$6$...\"): plain text? "
                      "(mosquitto_passwd -U hashes such files)");
    return -1;
  }
  /* split the rest at '$' */
  p = text + 1;
  while (p <= end && n < 4) {
    const char* q = memchr(p, '$', (size_t)(end - p));
    if (q == NULL) q = end;
    fields[n] = p;
    flen[n] = (size_t)(q - p);
    n++;
    p = q + 1;
  }
  if (p <= end) {
    line_file_set_err(err, errlen, "too many '$' fields in the password hash");
    return -1;
  }
  if (flen[0] == 1 && fields[0][0] == '7') {
    out->type = PW_SHA512_PBKDF2;
    want = 4;
  } else if (flen[0] == 1 && fields[0][0] == '6') {
    out->type = PW_SHA512;
    want = 3;
  } else {
    line_file_set_err(err, errlen,
                      "unknown hash type \"$%.*s$\" (known: $7$ sha512-pbkdf2, $6$ sha512)",
                      (int)(flen[0] > 16 ? 16 : flen[0]), fields[0]);
    return -1;
  }
  if (n != want) {
    line_file_set_err(err, errlen, "$%d$ hash needs %zu '$'-separated fields, found %zu",
                      (int)out->type, want, n);
    return -1;
  }
  if (out->type == PW_SHA512_PBKDF2) {
    unsigned long it = 0;
    size_t i;
    if (flen[1] == 0 || flen[1] > 10) {
      line_file_set_err(err, errlen, "bad iteration count \"%.*s\"",
                        (int)(flen[1] > 12 ? 12 : flen[1]), fields[1]);
      return -1;
    }
    for (i = 0; i < flen[1]; i++) {
      if (fields[1][i] < '0' || fields[1][i] > '9') {
        line_file_set_err(err, errlen, "bad iteration count \"%.*s\"", (int)flen[1], fields[1]);
        return -1;
      }
      it = it * 10 + (unsigned long)(fields[1][i] - '0');
    }
    if (it < PW_MIN_ITERATIONS || it > PW_MAX_ITERATIONS) {
      line_file_set_err(err, errlen,
                        "iteration count %lu out of range %u..%u (the cap keeps one "
                        "login from costing seconds of CPU)",
                        it, PW_MIN_ITERATIONS, PW_MAX_ITERATIONS);
      return -1;
    }
    out->iterations = (unsigned)it;
  }
  {
    const char* salt = fields[want - 2];
    size_t slen = flen[want - 2];
    const char* hash = fields[want - 1];
    size_t hlen = flen[want - 1];
    if (slen > (PW_MAX_SALT_BYTES * 4 + 2) / 3 + 2 ||
        b64_decode(salt, slen, out->salt, sizeof out->salt, &olen) != 0 || olen == 0) {
      line_file_set_err(err, errlen, "bad base64 salt");
      return -1;
    }
    if (olen != PW_SALT_BYTES) {
      /* Mosquitto 2.0 drops such an entry ("Unable to decode password salt") */
      line_file_set_err(err, errlen, "salt is %zu bytes; Mosquitto accepts only %u", olen,
                        PW_SALT_BYTES);
      return -1;
    }
    out->salt_len = olen;
    {
      unsigned char h[PW_HASH_BYTES + 8];
      if (hlen > 92 || b64_decode(hash, hlen, h, sizeof h, &olen) != 0) {
        line_file_set_err(err, errlen, "bad base64 hash");
        return -1;
      }
      if (olen != PW_HASH_BYTES) {
        line_file_set_err(err, errlen, "hash is %zu bytes, SHA-512 needs %u", olen, PW_HASH_BYTES);
        return -1;
      }
      memcpy(out->hash, h, PW_HASH_BYTES);
    }
  }
  return 0;
}

int pw_hash_format(const pw_hash* h, char* out, size_t outlen) {
  char salt[PW_MAX_SALT_BYTES * 2], hash[PW_HASH_BYTES * 2];
  size_t s = b64_encode(h->salt, h->salt_len, salt, sizeof salt);
  size_t k = b64_encode(h->hash, PW_HASH_BYTES, hash, sizeof hash);
  int n;
  if (s == 0 || k == 0) return -1;
  if (h->type == PW_SHA512_PBKDF2)
    n = snprintf(out, outlen, "$7$%u$%.*s$%.*s", h->iterations, (int)s, salt, (int)k, hash);
  else
    n = snprintf(out, outlen, "$6$%.*s$%.*s", (int)s, salt, (int)k, hash);
  return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

static int compute(pw_type type, unsigned iterations, const unsigned char* salt, size_t salt_len,
                   const char* password, size_t pwlen, unsigned char out[PW_HASH_BYTES]) {
  if (type == PW_SHA512_PBKDF2) {
    mbedtls_md_context_t md;
    int rc;
    mbedtls_md_init(&md);
    rc = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA512), 1);
    if (rc == 0)
      rc = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char*)password, pwlen, salt, salt_len,
                                     iterations, PW_HASH_BYTES, out);
    mbedtls_md_free(&md);
    return rc == 0 ? 0 : -1;
  } else {
    mbedtls_sha512_context c;
    int rc;
    mbedtls_sha512_init(&c);
    rc = mbedtls_sha512_starts_ret(&c, 0);
    if (rc == 0) rc = mbedtls_sha512_update_ret(&c, (const unsigned char*)password, pwlen);
    if (rc == 0) rc = mbedtls_sha512_update_ret(&c, salt, salt_len);
    if (rc == 0) rc = mbedtls_sha512_finish_ret(&c, out);
    mbedtls_sha512_free(&c);
    return rc == 0 ? 0 : -1;
  }
}

int pw_hash_make(pw_type type, unsigned iterations, const char* password, size_t pwlen,
                 pw_hash* out, char* err, size_t errlen) {
  size_t got = 0;
  memset(out, 0, sizeof *out);
  if (type != PW_SHA512 && type != PW_SHA512_PBKDF2) {
    line_file_set_err(err, errlen, "unknown hash type");
    return -1;
  }
  if (type == PW_SHA512_PBKDF2 &&
      (iterations < PW_MIN_ITERATIONS || iterations > PW_MAX_ITERATIONS)) {
    line_file_set_err(err, errlen, "iteration count %u out of range %u..%u", iterations,
                      PW_MIN_ITERATIONS, PW_MAX_ITERATIONS);
    return -1;
  }
  if (pwlen > PW_MAX_PASSWORD) {
    line_file_set_err(err, errlen, "password longer than %u bytes", PW_MAX_PASSWORD);
    return -1;
  }
  out->type = type;
  out->iterations = type == PW_SHA512_PBKDF2 ? iterations : 0;
  out->salt_len = PW_SALT_BYTES;
  while (got < PW_SALT_BYTES) {
    ssize_t r = getrandom(out->salt + got, PW_SALT_BYTES - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      line_file_set_err(err, errlen, "getrandom: %s", strerror(errno));
      return -1;
    }
    got += (size_t)r;
  }
  if (compute(type, out->iterations, out->salt, out->salt_len, password, pwlen, out->hash) != 0) {
    line_file_set_err(err, errlen, "mbedTLS hash failed");
    return -1;
  }
  return 0;
}

static int ct_equal(const unsigned char* a, const unsigned char* b, size_t n) {
  volatile unsigned char d = 0;
  size_t i;
  for (i = 0; i < n; i++) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

int pw_hash_verify(const pw_hash* h, const char* password, size_t pwlen) {
  unsigned char out[PW_HASH_BYTES];
  if (password == NULL || pwlen > PW_MAX_PASSWORD) return 0;
  if (compute(h->type, h->iterations, h->salt, h->salt_len, password, pwlen, out) != 0) return 0;
  return ct_equal(out, h->hash, PW_HASH_BYTES);
}

int pw_username_check(const char* name, char* err, size_t errlen) {
  size_t len = strlen(name), i;
  if (len == 0) {
    line_file_set_err(err, errlen, "empty username");
    return -1;
  }
  if (len > PW_MAX_USERNAME) {
    line_file_set_err(err, errlen, "username longer than %u bytes", PW_MAX_USERNAME);
    return -1;
  }
  if (name[0] == '#') {
    line_file_set_err(err, errlen, "username starts with '#' (a comment in the file)");
    return -1;
  }
  if (name[0] == ' ' || name[0] == '\t' || name[len - 1] == ' ' || name[len - 1] == '\t') {
    line_file_set_err(err, errlen, "username starts or ends with a blank (Mosquitto trims them)");
    return -1;
  }
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c == ':') {
      line_file_set_err(err, errlen, "username contains ':'");
      return -1;
    }
    if (c < 0x20 || c == 0x7f) {
      line_file_set_err(err, errlen, "username contains a control character");
      return -1;
    }
  }
  return 0;
}

static int cmp_entry(const void* a, const void* b) {
  const struct pw_entry* x = a;
  const struct pw_entry* y = b;
  int c = strcmp(x->username, y->username);
  if (c != 0) return c;
  return x->line < y->line ? -1 : x->line > y->line;
}

void pwfile_free(pwfile* f) {
  size_t i;
  if (f == NULL) return;
  for (i = 0; i < f->count; i++) free(f->entries[i].username);
  free(f->entries);
  free(f);
}

pwfile* pwfile_parse(const char* name, const char* data, size_t len, char* err, size_t errlen) {
  pwfile* f = calloc(1, sizeof *f);
  size_t cap = 0, i;
  char why[PW_ERR_LEN];
  line_file lf;
  const char* line;
  size_t b, e, colon;
  int more;
  if (f == NULL) goto oom;
  if (line_file_init(&lf, name, data, len, PW_MAX_FILE_BYTES, PW_MAX_LINE_BYTES, err, errlen) != 0)
    goto fail;
  while ((more = line_file_next(&lf, &line, &b, &e, err, errlen)) > 0) {
    if (line[0] == '#') continue; /* comment, as Mosquitto: '#' in column 1 */
    {
      const char* c = memchr(line + b, ':', e - b);
      if (c == NULL && line[b] == '#') continue; /* an indented comment */
      if (c == NULL) {
        line_file_err(&lf, err, errlen, "expected \"username:hash\", found no ':'");
        goto fail;
      }
      colon = (size_t)(c - line);
    }
    {
      size_t ue = colon, hb = colon + 1;
      struct pw_entry ent;
      while (ue > b && line_file_is_blank(line[ue - 1]))
        ue--;
      while (hb < e && line_file_is_blank(line[hb]))
        hb++;
      if (ue == b) {
        line_file_err(&lf, err, errlen, "empty username");
        goto fail;
      }
      if (ue - b > PW_MAX_USERNAME) {
        line_file_err(&lf, err, errlen, "username longer than %u bytes", PW_MAX_USERNAME);
        goto fail;
      }
      for (i = b; i < ue; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch == 0x7f) {
          line_file_err(&lf, err, errlen, "control character in username");
          goto fail;
        }
      }
      if (hb == e) {
        line_file_err(&lf, err, errlen, "user has no password hash");
        goto fail;
      }
      if (memchr(line + hb, ':', e - hb) != NULL) {
        line_file_err(&lf, err, errlen, "more than one ':' (usernames cannot contain ':')");
        goto fail;
      }
      if (pw_hash_parse(line + hb, e - hb, &ent.hash, why, sizeof why) != 0) {
        line_file_err(&lf, err, errlen, "%s", why);
        goto fail;
      }
      ent.line = lf.lineno;
      ent.username = malloc(ue - b + 1);
      if (ent.username == NULL) goto oom;
      memcpy(ent.username, line + b, ue - b);
      ent.username[ue - b] = '\0';
      if (f->count == cap) {
        size_t ncap = cap ? cap * 2 : 16;
        struct pw_entry* ne = realloc(f->entries, ncap * sizeof *ne);
        if (ne == NULL) {
          free(ent.username);
          goto oom;
        }
        f->entries = ne;
        cap = ncap;
      }
      f->entries[f->count++] = ent;
    }
  }
  if (more < 0) goto fail;
  if (f->count > 0) qsort(f->entries, f->count, sizeof *f->entries, cmp_entry);
  for (i = 1; i < f->count; i++) {
    if (strcmp(f->entries[i - 1].username, f->entries[i].username) == 0) {
      line_file_set_err(err, errlen, "%s:%zu: duplicate user \"%.64s\" (first on line %zu)", name,
                        f->entries[i].line, f->entries[i].username, f->entries[i - 1].line);
      goto fail;
    }
  }
  /* The dummy for unknown users costs what the median entry costs, not the most
   * expensive one: one costly entry must not make every unknown name cost that much
   * CPU (the plugin hides the difference in time with its answer floor). */
  f->costliest = f->count;
  memset(&f->dummy, 0, sizeof f->dummy);
  f->dummy.type = PW_SHA512_PBKDF2;
  f->dummy.iterations = PW_DEFAULT_ITERATIONS;
  f->dummy.salt_len = PW_SALT_BYTES;
  if (f->count > 0) {
    unsigned long* costs = malloc(f->count * sizeof *costs);
    unsigned long median;
    if (costs == NULL) goto oom;
    for (i = 0; i < f->count; i++) {
      costs[i] = hash_cost(&f->entries[i].hash);
      if (f->costliest == f->count || costs[i] > hash_cost(&f->entries[f->costliest].hash))
        f->costliest = i;
    }
    qsort(costs, f->count, sizeof *costs, cmp_cost);
    median = costs[(f->count - 1) / 2]; /* the lower one of an even count */
    free(costs);
    for (i = 0; i < f->count; i++) {
      if (hash_cost(&f->entries[i].hash) == median) {
        f->dummy = f->entries[i].hash;
        break;
      }
    }
  }
  return f;
oom:
  line_file_set_err(err, errlen, "%s: out of memory", name);
fail:
  pwfile_free(f);
  return NULL;
}

pwfile* pwfile_load(const char* path, char* err, size_t errlen) {
  size_t len = 0;
  pwfile* f;
  char* buf = bounded_read(path, PW_MAX_FILE_BYTES, &len, err, errlen);
  if (buf == NULL) return NULL;
  f = pwfile_parse(path, buf, len, err, errlen);
  free(buf);
  return f;
}

size_t pwfile_count(const pwfile* f) {
  return f->count;
}

const pw_hash* pwfile_dummy(const pwfile* f) {
  return &f->dummy;
}

size_t pwfile_costliest(const pwfile* f) {
  return f->costliest < f->count ? f->costliest : (size_t)-1;
}

size_t pwfile_line(const pwfile* f, size_t i) {
  return i < f->count ? f->entries[i].line : 0;
}

const char* pwfile_username(const pwfile* f, size_t i) {
  return i < f->count ? f->entries[i].username : NULL;
}

const pw_hash* pwfile_hash(const pwfile* f, size_t i) {
  return i < f->count ? &f->entries[i].hash : NULL;
}

size_t pwfile_find(const pwfile* f, const char* username) {
  size_t lo = 0, hi = f->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->entries[mid].username, username);
    if (c == 0) return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (size_t)-1;
}

int pwfile_check(const pwfile* f, const char* username, const char* password, size_t pwlen) {
  size_t i;
  static const char nobody[] = "\x01mqgate-dummy\x01";
  if (f == NULL) return 0;
  i = username ? pwfile_find(f, username) : (size_t)-1;
  if (i == (size_t)-1 || password == NULL) {
    /* a typical entry's work (pwfile_dummy); the result is thrown away */
    (void)pw_hash_verify(&f->dummy, password ? password : nobody,
                         password ? pwlen : sizeof nobody - 1);
    return 0;
  }
  return pw_hash_verify(&f->entries[i].hash, password, pwlen);
}
