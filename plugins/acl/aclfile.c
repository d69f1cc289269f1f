/* Mosquitto ACL files (see aclfile.h and docs/acl.md). */
#define _GNU_SOURCE /* memmem */
#include "aclfile.h"

#include "../common/bounded_read.h"
#include "../common/line_file.h"
#include "../common/mqtt_topic.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum { R_DENY = 0 }; /* rule access: 0 deny, else ACL_READ|ACL_WRITE bits */
enum { SUB_U = 1, SUB_C = 2, SUB_I = 4 };

struct rule {
  int access;
  int subst; /* SUB_* used by a pattern */
  char* filter;
  size_t len; /* of filter */
  size_t line;
};

struct rules {
  struct rule* v;
  size_t n, cap;
};

struct user {
  char* name;
  size_t line; /* of its "user" line */
  struct rules rules;
};

struct aclfile {
  struct rules anon;
  int has_anon;
  struct user* users; /* sorted by name after parsing */
  size_t nusers, capusers;
  struct rules patterns;
};

/* ---- topics ---------------------------------------------------------------------- */

/* The C-string forms of plugins/common/mqtt_topic.h, for aclfile.h's users. */

int acl_filter_valid(const char* s) {
  return mqtt_topic_filter_valid(s, strlen(s));
}

int acl_topic_matches(const char* filter, const char* topic) {
  return mqtt_topic_matches(filter, strlen(filter), topic, strlen(topic));
}

int filter_covers(const char* rule, const char* sub) {
  return mqtt_topic_covers(rule, strlen(rule), sub, strlen(sub));
}

int filter_intersects(const char* a, const char* b) {
  return mqtt_topic_intersects(a, strlen(a), b, strlen(b));
}

/* ---- parsing ----------------------------------------------------------------------- */

static void rules_free(struct rules* r) {
  size_t i;
  for (i = 0; i < r->n; i++) free(r->v[i].filter);
  free(r->v);
}

void aclfile_free(aclfile* acl) {
  size_t i;
  if (acl == NULL) return;
  rules_free(&acl->anon);
  rules_free(&acl->patterns);
  for (i = 0; i < acl->nusers; i++) {
    free(acl->users[i].name);
    rules_free(&acl->users[i].rules);
  }
  free(acl->users);
  free(acl);
}

static int rules_add(struct rules* r, int access, int subst, const char* f, size_t flen,
                     size_t line) {
  struct rule rule;
  if (r->n == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 8;
    struct rule* nv = realloc(r->v, ncap * sizeof *nv);
    if (nv == NULL) return -1;
    r->v = nv;
    r->cap = ncap;
  }
  rule.access = access;
  rule.subst = subst;
  rule.line = line;
  rule.filter = malloc(flen + 1);
  if (rule.filter == NULL) return -1;
  memcpy(rule.filter, f, flen);
  rule.filter[flen] = '\0';
  rule.len = flen;
  r->v[r->n++] = rule;
  return 0;
}

static int word_is(const char* p, size_t n, const char* w) {
  return strlen(w) == n && memcmp(p, w, n) == 0;
}

static int cmp_user(const void* a, const void* b) {
  return strcmp(((const struct user*)a)->name, ((const struct user*)b)->name);
}

/* by name, then by the line of the first rule's "user" line (kept in .line) */
static int cmp_user_line(const void* a, const void* b) {
  const struct user* x = a;
  const struct user* y = b;
  int c = strcmp(x->name, y->name);
  if (c != 0) return c;
  return x->line < y->line ? -1 : x->line > y->line;
}

/* A user named on several "user" lines gets all their rules (as Mosquitto): sort the
 * blocks by name and line, and append each repeat's rules to the first block. */
static int merge_users(aclfile* acl) {
  size_t i, out = 0;
  if (acl->nusers > 1) qsort(acl->users, acl->nusers, sizeof *acl->users, cmp_user_line);
  /* On failure every entry is either whole or zeroed, so aclfile_free stays right. */
  for (i = 0; i < acl->nusers; i++) {
    struct user* u = &acl->users[i];
    if (out > 0 && strcmp(acl->users[out - 1].name, u->name) == 0) {
      struct rules* dst = &acl->users[out - 1].rules;
      if (dst->n + u->rules.n > dst->cap) {
        size_t ncap = dst->n + u->rules.n;
        struct rule* nv = realloc(dst->v, ncap * sizeof *nv);
        if (nv == NULL) return -1;
        dst->v = nv;
        dst->cap = ncap;
      }
      if (u->rules.n > 0) memcpy(dst->v + dst->n, u->rules.v, u->rules.n * sizeof *u->rules.v);
      dst->n += u->rules.n;
      free(u->rules.v);
      free(u->name);
      memset(u, 0, sizeof *u);
    } else {
      if (out != i) {
        acl->users[out] = *u;
        memset(u, 0, sizeof *u);
      }
      out++;
    }
  }
  acl->nusers = out;
  return 0;
}

aclfile* aclfile_parse(const char* name, const char* data, size_t len, char* err,
                       size_t errlen) {
  aclfile* acl = calloc(1, sizeof *acl);
  line_file lf;
  const char* line;
  size_t b, e, we;
  int more;
  long cur = -1; /* current user index, -1: before any user line */
  if (acl == NULL) goto oom;
  if (line_file_init(&lf, name, data, len, ACL_MAX_FILE_BYTES, ACL_MAX_LINE_BYTES, err, errlen) !=
      0)
    goto fail;
  while ((more = line_file_next(&lf, &line, &b, &e, err, errlen)) > 0) {
    if (line[b] == '#') continue; /* Mosquitto: '#' first; leading blanks are skipped too */
    we = b;
    while (we < e && !line_file_is_blank(line[we]))
      we++;
    if (word_is(line + b, we - b, "user")) {
      size_t ub = we;
      struct user* u;
      while (ub < e && line_file_is_blank(line[ub]))
        ub++;
      if (ub == e) {
        line_file_err(&lf, err, errlen, "\"user\" without a username");
        goto fail;
      }
      { /* one block per "user" line; repeats are merged at the end */
        if (acl->nusers == acl->capusers) {
          size_t ncap = acl->capusers ? acl->capusers * 2 : 8;
          struct user* nu = realloc(acl->users, ncap * sizeof *nu);
          if (nu == NULL) goto oom;
          acl->users = nu;
          acl->capusers = ncap;
        }
        u = &acl->users[acl->nusers];
        memset(u, 0, sizeof *u);
        u->name = malloc(e - ub + 1);
        if (u->name == NULL) goto oom;
        memcpy(u->name, line + ub, e - ub);
        u->name[e - ub] = '\0';
        u->line = lf.lineno;
        acl->nusers++;
      }
      cur = (long)(u - acl->users);
    } else if (word_is(line + b, we - b, "topic") || word_is(line + b, we - b, "pattern")) {
      int pattern = word_is(line + b, we - b, "pattern");
      int access = ACL_READ | ACL_WRITE, subst = 0, keyword = 0;
      size_t fb = we, k;
      while (fb < e && line_file_is_blank(line[fb]))
        fb++;
      if (fb < e) {
        size_t ke = fb;
        while (ke < e && !line_file_is_blank(line[ke]))
          ke++;
        if (word_is(line + fb, ke - fb, "read")) {
          access = ACL_READ;
          keyword = 1;
        } else if (word_is(line + fb, ke - fb, "write")) {
          access = ACL_WRITE;
          keyword = 1;
        } else if (word_is(line + fb, ke - fb, "readwrite")) {
          keyword = 1;
        } else if (word_is(line + fb, ke - fb, "deny")) {
          access = R_DENY;
          keyword = 1;
        }
        if (keyword) {
          fb = ke;
          while (fb < e && line_file_is_blank(line[fb]))
            fb++;
        }
      }
      if (fb == e) {
        line_file_err(&lf, err, errlen, "%s without a topic", pattern ? "pattern" : "topic");
        goto fail;
      }
      for (k = fb; k < e; k++) {
        if (!keyword && line_file_is_blank(line[k])) {
          line_file_err(&lf, err, errlen,
                        "unknown access \"%.*s\" (read, write, readwrite or deny; a topic "
                        "with a space needs one of them first)",
                        (int)((k - fb) > 32 ? 32 : (k - fb)), line + fb);
          goto fail;
        }
      }
      {
        const char* f = line + fb;
        const size_t flen = e - fb;
        const int ok = mqtt_topic_filter_valid(f, flen);
        if (ok && pattern) {
          /* %u, %c, %i must each be a whole level (mosquitto-conf(5)) */
          mqtt_topic_levels it;
          const char* l;
          size_t n;
          mqtt_topic_levels_init(&it, f, flen);
          while (mqtt_topic_next_level(&it, &l, &n)) {
            if (n == 2 && l[0] == '%' && l[1] == 'u')
              subst |= SUB_U;
            else if (n == 2 && l[0] == '%' && l[1] == 'c')
              subst |= SUB_C;
            else if (n == 2 && l[0] == '%' && l[1] == 'i')
              subst |= SUB_I;
            else if (memchr(l, '%', n) != NULL &&
                     (memmem(l, n, "%u", 2) || memmem(l, n, "%c", 2) || memmem(l, n, "%i", 2))) {
              line_file_err(&lf, err, errlen,
                            "%%u, %%c and %%i must be the whole level in a pattern (\"%.*s\")",
                            (int)(n > 64 ? 64 : n), l);
              goto fail;
            }
          }
        }
        if (!ok) {
          line_file_err(&lf, err, errlen,
                        "invalid topic filter \"%.*s\" ('#' only as the last level, '+' and "
                        "'#' alone in their level)",
                        (int)(flen > 64 ? 64 : flen), f);
          goto fail;
        }
      }
      {
        struct rules* r = pattern ? &acl->patterns
                          : cur < 0 ? &acl->anon
                                    : &acl->users[cur].rules;
        if (!pattern && cur < 0) acl->has_anon = 1;
        if (rules_add(r, access, subst, line + fb, e - fb, lf.lineno) != 0) goto oom;
      }
    } else {
      line_file_err(&lf, err, errlen, "unknown keyword \"%.*s\" (topic, pattern or user)",
                    (int)((we - b) > 32 ? 32 : (we - b)), line + b);
      goto fail;
    }
  }
  if (more < 0) goto fail;
  if (merge_users(acl) != 0) goto oom;
  return acl;
oom:
  line_file_set_err(err, errlen, "%s: out of memory", name);
fail:
  aclfile_free(acl);
  return NULL;
}

aclfile* aclfile_load(const char* path, char* err, size_t errlen) {
  size_t len = 0;
  aclfile* acl;
  char* buf = bounded_read(path, ACL_MAX_FILE_BYTES, &len, err, errlen);
  if (buf == NULL) return NULL;
  acl = aclfile_parse(path, buf, len, err, errlen);
  free(buf);
  return acl;
}

/* ---- decisions --------------------------------------------------------------------- */

enum { NO_MATCH = 0, ALLOW = 1, DENY = 2 };

/* The topic (or filter) being decided. */
struct query {
  const char* topic;
  size_t len;
  int access;
};

/* Does rule filter f match the topic (or, for ACL_SUBSCRIBE: cover / intersect the
 * filter)? */
static int rule_hits(const char* f, size_t flen, const struct query* q, int deny) {
  if (q->access != ACL_SUBSCRIBE) return mqtt_topic_matches(f, flen, q->topic, q->len);
  return deny ? mqtt_topic_intersects(f, flen, q->topic, q->len)
              : mqtt_topic_covers(f, flen, q->topic, q->len);
}

/* Mosquitto's acl__check_single: deny rules first (any match denies), then the first
 * rule granting the access allows; nothing: denied. */
static int check_list(const struct rules* r, const struct query* q) {
  int want = q->access == ACL_SUBSCRIBE ? ACL_READ : q->access;
  size_t i;
  for (i = 0; i < r->n; i++)
    if (r->v[i].access == R_DENY && rule_hits(r->v[i].filter, r->v[i].len, q, 1)) return DENY;
  for (i = 0; i < r->n; i++)
    if ((r->v[i].access & want) && rule_hits(r->v[i].filter, r->v[i].len, q, 0)) return ALLOW;
  return NO_MATCH;
}

/* A value unsafe to substitute: empty, or holding a level separator or wildcard. */
static int unsafe_value(const char* v) {
  return *v == '\0' || strpbrk(v, "+#/") != NULL;
}

/* %i is substituted escaped, so that it stays one level whatever it holds: '%', '/',
 * '+' and '#' become "%25", "%2F", "%2B" and "%23" (percent-encoding, so one-to-one:
 * two identities never give the same level, and no identity gives a wildcard). */
static const char ID_ESCAPED[] = "%/+#";

static size_t escaped_len(const char* v) {
  size_t n = 0;
  for (; *v; v++) n += strchr(ID_ESCAPED, *v) ? 3 : 1;
  return n;
}

static char* escape_into(char* p, const char* v) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *v; v++) {
    if (strchr(ID_ESCAPED, *v)) {
      *p++ = '%';
      *p++ = hex[(unsigned char)*v >> 4];
      *p++ = hex[(unsigned char)*v & 15];
    } else {
      *p++ = *v;
    }
  }
  return p;
}

/* The value a pattern level stands for: %u, %c, %i; NULL for any other level. *esc:
 * whether it is substituted escaped (%i). */
static const char* subst_value(const char* l, size_t n, const char* u, const char* c,
                               const char* id, int* esc) {
  *esc = 0;
  if (n != 2 || l[0] != '%') return NULL;
  if (l[1] == 'i') {
    *esc = 1;
    return id;
  }
  return l[1] == 'u' ? u : l[1] == 'c' ? c : NULL;
}

/* The length of pattern f[0, flen) with %u, %c, %i replaced. */
static size_t subst_len(const char* f, size_t flen, const char* u, const char* c, const char* id) {
  mqtt_topic_levels it;
  const char* l;
  size_t n, total = 0;
  int esc;
  mqtt_topic_levels_init(&it, f, flen);
  while (mqtt_topic_next_level(&it, &l, &n)) {
    const char* v = subst_value(l, n, u, c, id, &esc);
    total += (v ? (esc ? escaped_len(v) : strlen(v)) : n) + 1;
  }
  return total - 1; /* no '/' after the last level */
}

/* Pattern f[0, flen) with %u, %c, %i replaced, into out (subst_len bytes and a NUL);
 * returns its length. */
static size_t subst_into(char* out, const char* f, size_t flen, const char* u, const char* c,
                         const char* id) {
  mqtt_topic_levels it;
  const char* l;
  size_t n;
  int esc;
  char* p = out;
  mqtt_topic_levels_init(&it, f, flen);
  while (mqtt_topic_next_level(&it, &l, &n)) {
    const char* v = subst_value(l, n, u, c, id, &esc);
    if (l != f) *p++ = '/'; /* not p != out: the first level may be empty ("/a/%u") */
    if (v && esc) {
      p = escape_into(p, v);
    } else {
      size_t vn = v ? strlen(v) : n;
      memcpy(p, v ? v : l, vn);
      p += vn;
    }
  }
  *p = '\0';
  return (size_t)(p - out);
}

/* Pattern f[0, flen) with %u, %c, %i replaced: in `small` (cap bytes) when it fits, so a
 * check needs no allocation in the common case, else malloc'd (the caller frees what
 * is not `small`); NULL when out of memory. *len: the result's length. */
static char* substitute(const char* f, size_t flen, const char* u, const char* c, const char* id,
                        char* small, size_t cap, size_t* len) {
  const size_t total = subst_len(f, flen, u, c, id);
  char* out = total < cap ? small : malloc(total + 1);
  if (out == NULL) return NULL;
  subst_into(out, f, flen, u, c, id);
  *len = total;
  return out;
}

enum { PAT_SKIP, PAT_UNSAFE, PAT_USE };

/* The values the client has for %u, %c, %i (SUB_* bits), and in *unsafe those unsafe to
 * substitute: a value with '/' (or empty) would move a rule to another subtree; %i is
 * escaped instead (its '/', '+', '#' never reach the rule), unsafe only when empty. */
static int pattern_values(const char* username, const char* client_id, const char* identity,
                          int* unsafe) {
  *unsafe = (username && unsafe_value(username) ? SUB_U : 0) |
            (client_id && unsafe_value(client_id) ? SUB_C : 0) |
            (identity && *identity == '\0' ? SUB_I : 0);
  return (username ? SUB_U : 0) | (client_id ? SUB_C : 0) | (identity ? SUB_I : 0);
}

/* Whether a pattern applies to the client (pattern_values' answers): PAT_SKIP without a
 * value for a %u, %c or %i it uses (as Mosquitto); PAT_UNSAFE with a value that would
 * change the rule's shape (mqgate). */
static int pattern_use(const struct rule* rule, int have, int unsafe) {
  if (rule->subst & ~have) return PAT_SKIP;
  if (rule->subst & unsafe) return PAT_UNSAFE;
  return PAT_USE;
}

static int check_patterns(const aclfile* acl, const char* username, const char* client_id,
                          const char* identity, const struct query* q) {
  const struct rules* r = &acl->patterns;
  int want = q->access == ACL_SUBSCRIBE ? ACL_READ : q->access;
  int pass, have, unsafe;
  size_t i;
  /* Mosquitto: a username or client id with '+' or '#' gets nothing from patterns */
  if ((username && strpbrk(username, "+#")) || (client_id && strpbrk(client_id, "+#")))
    return DENY;
  have = pattern_values(username, client_id, identity, &unsafe);
  for (pass = 0; pass < 2; pass++) { /* deny rules first, then the others */
    for (i = 0; i < r->n; i++) {
      const struct rule* rule = &r->v[i];
      int deny = rule->access == R_DENY;
      char small[256];
      char* f;
      size_t flen = rule->len;
      int hit, use;
      if (deny != (pass == 0)) continue;
      if (!deny && !(rule->access & want)) continue;
      use = pattern_use(rule, have, unsafe);
      if (use == PAT_SKIP) continue;
      if (use == PAT_UNSAFE) {
        if (deny) return DENY; /* cannot tell what it meant to deny: deny */
        continue;              /* cannot grant */
      }
      f = rule->subst ? substitute(rule->filter, rule->len, username, client_id, identity, small,
                                   sizeof small, &flen)
                      : rule->filter;
      if (f == NULL) return DENY;
      hit = rule_hits(f, flen, q, deny);
      if (f != rule->filter && f != small) free(f);
      if (hit) return deny ? DENY : ALLOW;
    }
  }
  return NO_MATCH;
}

/* The client's own list: "user <username>", or the rules before any "user" line for an
 * anonymous client; NULL if the file has none. */
static const struct rules* own_list(const aclfile* acl, const char* username) {
  struct user key;
  const struct user* u;
  if (username == NULL) return acl->has_anon ? &acl->anon : NULL;
  key.name = (char*)username;
  u = acl->nusers ? bsearch(&key, acl->users, acl->nusers, sizeof key, cmp_user) : NULL;
  return u ? &u->rules : NULL;
}

int acl_check(const aclfile* acl, const char* username, const char* client_id,
              const char* identity, const char* topic, int access) {
  const struct rules* list;
  struct query q;
  if (acl == NULL || topic == NULL) return 0;
  if (access != ACL_READ && access != ACL_WRITE && access != ACL_SUBSCRIBE) return 0;
  q.topic = topic;
  q.len = strlen(topic);
  q.access = access;
  if (access == ACL_SUBSCRIBE ? !mqtt_topic_filter_valid(topic, q.len)
                              : !mqtt_topic_name_valid(topic, q.len))
    return 0;
  /* Mosquitto: nobody publishes to $SYS */
  if (access == ACL_WRITE && strncmp(topic, "$SYS", 4) == 0) return 0;
  list = own_list(acl, username);
  /* Mosquitto 2.0: the client's own list first, where a deny is final; if it neither
   * allows nor denies, the patterns */
  if (list) {
    int r = check_list(list, &q);
    if (r != NO_MATCH) return r == ALLOW;
  }
  if (acl->patterns.n == 0) return 0;
  return check_patterns(acl, username, client_id, identity, &q) == ALLOW;
}

/* ---- how much of a subscription is readable ------------------------------------------ */

/* acl_subscribe_reach asks two questions of a filter: is some topic it matches readable,
 * is some topic it matches not? Each comes down to "is there a topic that every filter
 * of a set P matches and no filter of a set N does" (topic_escapes), answered by a
 * depth-first search over the topic's levels. At each level the values fall in few
 * classes: each literal the live filters name there, and "any other value" (no filter
 * tells two such values apart, and later levels do not depend on this one). A value
 * starting with '$' needs no class of its own at the first level: P always holds the
 * subscription's filter, which matches such a topic only through a literal, and a
 * positive literal there is the only value tried. The search keeps its own stack (a
 * hostile filter has thousands of levels) and runs on a budget of steps: out of steps,
 * the answer is "don't know", and the caller says SOME, which is always safe.
 *
 * What a call costs. Before the questions, each rule of the client's list and each
 * pattern that applies is related to the filter once (does it meet it, cover it, match
 * its generic topic: relate), walking the rule's levels against the filter's, split
 * once: linear in the bytes of the rules, as acl_check is at worst, and never rules
 * times the filter's length. Whether the generic topic is readable then answers one of
 * the two questions, so only the other is searched. Everything after that runs on the
 * budget, charged as it is done: relating a negative rule to the other positive (a read
 * rule, a deny pattern), each cursor set, stepped or compared, each frame. A step is a
 * level of one filter looked at, plus one per 64 bytes scanned or compared (levels are
 * found by hand for 16 bytes, by memchr beyond; a cursor remembers its level's length),
 * so no step hides more than a few nanoseconds. The question stops at its first charge
 * past its budget (ACL_REACH_STEPS, in aclfile.h, with what it was measured to cost); a
 * charge is at most a frame's cursors or a level. */

struct span {
  const char* s;
  size_t len;
};

/* A filter split into its levels: level i is s[start[i], start[i + 1] - 1). */
struct split {
  const char* s;
  size_t len;
  size_t n;            /* levels */
  size_t* start;       /* n + 1 offsets; start[n] = len + 1 */
  unsigned char* kind; /* n: K_LITERAL, K_PLUS, K_HASH */
  size_t cap;          /* of start and kind */
};

enum { K_LITERAL, K_PLUS, K_HASH };

/* The end of the level starting at p (which is at most e): the next '/', or e. */
static const char* level_end(const char* p, const char* e) {
  const char* const stop = e - p > 16 ? p + 16 : e;
  const char* q;
  for (q = p; q < stop; q++)
    if (*q == '/') return q;
  if (q == e) return e;
  q = memchr(q, '/', (size_t)(e - q));
  return q ? q : e;
}

/* Splits s[0, len) into sp (its array kept for the next split): 1; 0 if out of memory,
 * -1 if that would take more than max steps. *work: a step per level and per 64 bytes. */
static int split_levels(struct split* sp, const char* s, size_t len, long max, long* work) {
  const char* const e = s + len;
  const char* p = s;
  size_t n = 0;
  sp->s = s;
  sp->len = len;
  for (;;) {
    const char* q = level_end(p, e);
    if (n + 2 > sp->cap) {
      size_t cap = sp->cap ? sp->cap * 2 : 64;
      size_t* v = realloc(sp->start, cap * sizeof *v);
      unsigned char* k;
      if (v == NULL) return 0;
      sp->start = v;
      if ((k = realloc(sp->kind, cap)) == NULL) return 0;
      sp->kind = k;
      sp->cap = cap;
    }
    sp->kind[n] = q - p != 1 ? K_LITERAL : *p == '+' ? K_PLUS : *p == '#' ? K_HASH : K_LITERAL;
    sp->start[n++] = (size_t)(p - s);
    if ((long)n > max) {
      *work += (long)n;
      return -1;
    }
    if (q == e) break;
    p = q + 1;
  }
  sp->start[n] = len + 1;
  sp->n = n;
  *work += (long)(n + len / 64);
  return 1;
}

enum { MEETS = 1, COVERS = 2, GENERIC = 4 };

/* How filter a[0, an) stands to the split filter g: MEETS if some topic matches both
 * (mqtt_topic_intersects), COVERS if a matches every topic g matches (mqtt_topic_covers,
 * a the pattern), GENERIC if a matches g's generic topic (g with a value no filter names
 * for each '+', and for a '#' one level of it), in one walk over a's levels with g's at
 * hand by index; -1 if that would take more than max steps. *work gets the steps taken:
 * one per level of a, and one per 32 bytes of it (found, then compared).
 *
 * Level by level while both have one and neither is '#': two literals must be equal
 * (else none of the three), a literal of a against '+' of g only meets. Where that
 * ends, the rules for '#', for the end of either, and for the first level. COVERS
 * implies GENERIC, which implies MEETS. */
static int relate(const char* a, size_t an, const struct split* g, long max, long* work) {
  const char* const ae = a + an;
  const size_t* const start = g->start;
  const unsigned char* const kind = g->kind;
  const char* al = a;
  size_t i, off = 0, aln = 0;
  int covers = 1, generic = 1, meets, has_a, has_b, a_hash = 0, b_hash = 0;
  int empty_m = 0; /* a topic both match has an empty first level */
  int empty_c = 0; /* g's first level is empty */
  if ((g->s[0] == '$' && mqtt_topic_first_is_wildcard(a, an)) ||
      (a[0] == '$' && mqtt_topic_first_is_wildcard(g->s, g->len))) {
    *work += 1;
    return 0;
  }
  for (i = 0; off <= an && i < g->n; i++) {
    const int k = kind[i];
    al = a + off;
    if ((long)(i + off / 32) >= max) {
      *work += (long)(i + 1 + off / 32);
      return -1;
    }
    if (off < an && (al[0] == '+' || al[0] == '#') && (off + 1 == an || al[1] == '/')) {
      aln = 1;
      if (al[0] == '#') {
        a_hash = 1;
        break;
      }
      if (k == K_HASH) {
        b_hash = 1;
        break;
      } /* '+' meets and covers any level but '#' */
    } else {
      aln = (size_t)(level_end(al, ae) - al);
      if (k == K_HASH) {
        b_hash = 1;
        break;
      }
      if (k == K_PLUS) {
        covers = generic = 0; /* a literal is not every value, nor the one none names */
      } else {
        const char* bl = g->s + start[i];
        if (aln != start[i + 1] - 1 - start[i] ||
            (aln > 0 && (al[0] != bl[0] || memcmp(al + 1, bl + 1, aln - 1) != 0))) {
          *work += (long)(i + 1 + off / 32);
          return 0;
        }
      }
    }
    if (i == 0) {
      empty_c = start[1] - 1 == start[0];
      empty_m = aln == 0 || empty_c; /* '+' is never empty */
    }
    off += aln + 1;
  }
  *work += (long)(i + 1 + (off < an ? off : an) / 32);
  has_a = off <= an;
  has_b = i < g->n;
  if (!a_hash && !b_hash) { /* one side has no level left: is the other's '#'? */
    if (has_a) {
      al = a + off;
      aln = (size_t)(level_end(al, ae) - al);
      a_hash = aln == 1 && al[0] == '#';
    } else if (has_b) {
      b_hash = kind[i] == K_HASH;
    }
  }
  /* A '#' takes every depth from its level on: the other side meets it unless it ends
   * right there with a first level forced empty ("" is no topic). */
  if (a_hash || b_hash)
    meets = !((a_hash ? !has_b : !has_a) && i == 1 && empty_m);
  else
    meets = !has_a && !has_b;
  if (!meets) return 0;
  /* A '#' of a matches the rest of the generic topic, even none; a '#' of g is one more
   * level of it, then its end. */
  if (!a_hash && b_hash && has_a)
    generic =
        generic && aln == 1 && al[0] == '+' && (an - off == 1 || (an - off == 3 && al[2] == '#'));
  else if (!a_hash)
    generic = generic && !has_a && !has_b;
  if (covers && !a_hash) {
    if (!has_a || !has_b)
      covers = !has_a && !has_b;
    else /* g's '#' matches its parent too: a must have "+/#" there, unless that is "" */
      covers = (i == 0 || (i == 1 && empty_c)) && aln == 1 && al[0] == '+' && an - off == 3 &&
               al[2] == '#';
  }
  return MEETS | (covers ? COVERS : 0) | (generic ? GENERIC : 0);
}

/* A filter during the search, at the level starting at off, n bytes long; off == len + 1:
 * no level left (it matches only if the topic ends). */
struct cursor {
  const struct span* f;
  size_t off;
  size_t n;
};

#define NOT_FORCED ((size_t)-1)

struct frame {
  size_t base;       /* its cursors: cur[base, base + npos + nneg), positives first */
  size_t npos, nneg; /* filters the topic must still match / still avoid */
  size_t depth;      /* levels of the topic so far */
  size_t next;       /* 0: not yet looked at; else 1 + the class to try next */
  size_t forced;     /* a positive with a literal here: its value is the only one worth a try */
  int single_empty;  /* the topic so far is one empty level: "" is no topic, it cannot end */
};

struct search {
  struct cursor* cur;
  size_t capcur;
  struct frame* fr;
  size_t capfr;
  struct split other; /* the second positive, split to relate the negatives to it */
  long left;          /* steps */
};

/* Steps, and one per 64 bytes looked at; 0 once the budget is spent. */
static int spend(struct search* s, size_t steps, size_t bytes) {
  s->left -= (long)(steps + bytes / 64);
  return s->left >= 0;
}

static int reserve_cur(struct search* s, size_t n) {
  struct cursor* v;
  size_t cap = s->capcur ? s->capcur : 64;
  if (n <= s->capcur) return 1;
  while (cap < n)
    cap *= 2;
  v = realloc(s->cur, cap * sizeof *v);
  if (v == NULL) return 0;
  s->cur = v;
  s->capcur = cap;
  return 1;
}

static int reserve_fr(struct search* s, size_t n) {
  struct frame* v;
  size_t cap = s->capfr ? s->capfr : 16;
  if (n <= s->capfr) return 1;
  while (cap < n)
    cap *= 2;
  v = realloc(s->fr, cap * sizeof *v);
  if (v == NULL) return 0;
  s->fr = v;
  s->capfr = cap;
  return 1;
}

/* Moves the cursor to offset off of its filter and finds that level's end; *bytes
 * counts what was looked at. */
static void cursor_at(struct cursor* c, size_t off, size_t* bytes) {
  c->off = off;
  c->n = 0;
  if (off <= c->f->len) {
    const char* p = c->f->s + off;
    c->n = (size_t)(level_end(p, c->f->s + c->f->len) - p);
    *bytes += c->n;
  }
}

/* The cursor's level in *l, *n; 0 if it has none left. */
static int cursor_level(const struct cursor* c, const char** l, size_t* n) {
  if (c->off > c->f->len) return 0;
  *l = c->f->s + c->off;
  *n = c->n;
  return 1;
}

static int is_wild(const char* l, size_t n) {
  return n == 1 && (l[0] == '+' || l[0] == '#');
}

/* A class of values for the topic's next level: one literal, or any value no filter
 * names. */
struct cls {
  const char* s;
  size_t n;
  int literal;
  int dollar; /* at the first level, starting with '$' */
};

enum { DIES, ABSORBED, ADVANCES };

/* What the filter does when the topic's level `depth` is a value of class k: no longer
 * matches, matches whatever follows ('#'), or goes on to its next level. *bytes counts
 * what was looked at. */
static int step(struct cursor* c, const struct cls* k, size_t depth, size_t* bytes) {
  const char* l;
  size_t n;
  if (!cursor_level(c, &l, &n)) return DIES; /* the topic is longer */
  if (is_wild(l, n)) {
    if (depth == 0 && k->dollar) return DIES; /* [MQTT-4.7.2-1] */
    if (l[0] == '#') return ABSORBED;
  } else if (!k->literal || k->n != n) {
    return DIES;
  } else {
    *bytes += n;
    if (memcmp(k->s, l, n) != 0) return DIES;
  }
  cursor_at(c, c->off + n + 1, bytes); /* past the '/', or to len + 1 after the last level */
  return ADVANCES;
}

/* Whether the filter matches the topic ending before its current level: no level left,
 * or '#' (which matches its parent too). */
static int matches_end(const struct cursor* c) {
  const char* l;
  size_t n;
  return !cursor_level(c, &l, &n) || (n == 1 && l[0] == '#');
}

/* The next class frame f tries, in *k: 1, or 0 when none is left, -1 out of steps.
 * Classes: 1 + i for the literal of cursor i (the first cursor naming it), or with a
 * forced positive only its literal; before them (next == 1) any other value, except
 * when forced. */
static int next_class(struct search* s, struct frame* f, struct cls* k) {
  const struct cursor* c = s->cur + f->base;
  const size_t n = f->npos + f->nneg;
  for (;;) {
    const size_t id = f->next++;
    const char* l;
    size_t ln, i, j;
    int dup = 0;
    if (f->forced != NOT_FORCED) {
      if (id > 1) return 0;
      i = f->forced;
    } else if (id == 1) {
      k->s = "";
      k->n = 0;
      k->literal = 0;
      k->dollar = 0;
      return 1;
    } else {
      i = id - 2;
      if (i >= n) return 0;
    }
    if (!cursor_level(&c[i], &l, &ln) || is_wild(l, ln)) continue;
    for (j = 0; j < i && !dup && f->forced == NOT_FORCED; j++) {
      const char* l2;
      size_t ln2;
      if (!spend(s, 1, ln)) return -1;
      dup = cursor_level(&c[j], &l2, &ln2) && ln2 == ln && memcmp(l, l2, ln) == 0;
    }
    if (dup) continue;
    k->s = l;
    k->n = ln;
    k->literal = 1;
    k->dollar = f->depth == 0 && ln > 0 && l[0] == '$';
    return 1;
  }
}

/* 1 if some topic is matched by every filter of pos[0, npos) (1 or 2) and by none of
 * neg[0, nneg), 0 if none is, -1 if the steps or the memory ran out. The callers ask
 * many such questions with the same pos[0] and know already that pos[0] meets pos[1],
 * that every negative meets pos[0], and that none covers it. */
static int topic_escapes(struct search* s, const struct span* pos, size_t npos,
                         const struct span* neg, size_t nneg) {
  size_t i, top, nfr = 1, bytes = 0;
  if (s->left < 0 || !reserve_cur(s, npos + nneg) || !reserve_fr(s, 1)) return -1;
  for (i = 0; i < npos; i++) {
    s->cur[i].f = &pos[i];
    cursor_at(&s->cur[i], 0, &bytes);
  }
  if (npos == 2) { /* only the negatives that meet the other positive count */
    long work = 0;
    const int split = split_levels(&s->other, pos[1].s, pos[1].len, s->left, &work);
    s->left -= work;
    if (split != 1) return -1;
  }
  if (!spend(s, npos, bytes)) return -1;
  top = npos;
  for (i = 0; i < nneg; i++) {
    bytes = 0;
    if (npos == 2) {
      long work = 0;
      const int rel = relate(neg[i].s, neg[i].len, &s->other, s->left, &work);
      s->left -= work;
      if (rel < 0) return -1;
      if (rel & COVERS) return 0;
      if (!(rel & MEETS)) continue;
    }
    s->cur[top].f = &neg[i];
    cursor_at(&s->cur[top], 0, &bytes);
    top++;
    if (!spend(s, 1, bytes)) return -1;
  }
  if (top == npos) return 1; /* the positives meet, and nothing is in the way */
  s->fr[0].base = 0;
  s->fr[0].npos = npos;
  s->fr[0].nneg = top - npos;
  s->fr[0].depth = 0;
  s->fr[0].next = 0;
  s->fr[0].single_empty = 0;
  while (nfr > 0) {
    struct frame* f = &s->fr[nfr - 1];
    const size_t n = f->npos + f->nneg;
    size_t np = 0, nn = 0;
    int feasible = 1, r;
    struct cls k;
    struct cursor* c;
    bytes = 0;
    if (f->next == 0) { /* first visit: can the topic end here? */
      c = s->cur + f->base;
      if (!spend(s, n + 1, 0)) return -1;
      if (n == 0) return 1; /* every positive took '#', no negative left */
      if (f->nneg == 0 && f->npos == 1 && !f->single_empty) return 1; /* any of its topics */
      if (f->depth > 0 && !f->single_empty) {
        int ends = 1;
        for (i = 0; i < n && ends; i++)
          ends = matches_end(&c[i]) == (i < f->npos);
        if (ends) return 1;
      }
      f->forced = NOT_FORCED;
      for (i = 0; i < f->npos && f->forced == NOT_FORCED; i++) {
        const char* l;
        size_t ln;
        if (cursor_level(&c[i], &l, &ln) && !is_wild(l, ln)) f->forced = i;
      }
      f->next = 1;
    }
    r = next_class(s, f, &k);
    if (r < 0) return -1;
    if (r == 0) {
      nfr--;
      continue;
    }
    /* the child's cursors go right above the frame's, the top of the stack */
    if (!reserve_cur(s, f->base + 2 * n) || !spend(s, n, 0)) return -1;
    c = s->cur + f->base;
    for (i = 0; i < n && feasible; i++) {
      struct cursor x = c[i];
      int what = step(&x, &k, f->depth, &bytes);
      if (i < f->npos) {
        if (what == DIES) feasible = 0;
        if (what == ADVANCES) c[n + np++] = x;
      } else {
        if (what == ABSORBED) feasible = 0;
        if (what == ADVANCES) c[n + np + nn++] = x;
      }
    }
    if (!spend(s, 0, bytes)) return -1;
    if (!feasible) continue;
    if (!reserve_fr(s, nfr + 1)) return -1;
    f = &s->fr[nfr - 1];
    s->fr[nfr].base = f->base + n;
    s->fr[nfr].npos = np;
    s->fr[nfr].nneg = nn;
    s->fr[nfr].depth = f->depth + 1;
    s->fr[nfr].next = 0;
    s->fr[nfr].single_empty = f->depth == 0 && k.literal && k.n == 0;
    nfr++;
  }
  return 0;
}

/* A growing array of spans. */
struct spans {
  struct span* v;
  size_t n, cap;
};

static int push(struct spans* a, const char* s, size_t len) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    struct span* v = realloc(a->v, cap * sizeof *v);
    if (v == NULL) return 0;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n].s = s;
  a->v[a->n++].len = len;
  return 1;
}

/* Some topic of f matched by a read rule of reads[0, nreads) and by none of
 * denies[0, ndenies) (of which one covers f if `covered`): 1, 0, or -1 (don't know). */
static int readable_through(struct search* s, const struct span* f, const struct span* reads,
                            size_t nreads, const struct span* denies, size_t ndenies, int covered) {
  size_t i;
  if (covered) return 0;
  for (i = 0; i < nreads; i++) {
    struct span pos[2];
    int r;
    pos[0] = *f;
    pos[1] = reads[i];
    r = topic_escapes(s, pos, 2, denies, ndenies);
    if (r != 0) return r; /* once out of steps, every later question is too */
  }
  return 0;
}

/* The steps a question spent, into *cost. */
static void count_steps(acl_reach_cost* cost, const struct search* s, long budget) {
  cost->steps += (unsigned long)(budget - s->left);
  if (s->left < 0) cost->out_of_steps = 1;
}

int acl_subscribe_reach_cost(const aclfile* acl, const char* username, const char* client_id,
                             const char* identity, const char* filter, long budget,
                             acl_reach_cost* cost) {
  const struct rules* list;
  struct span f;
  struct split fs;
  struct spans denies = {NULL, 0, 0}; /* those meeting f: own deny rules, then deny patterns */
  struct spans reads = {NULL, 0, 0};  /* own read rules, then read patterns */
  char* subst = NULL;                 /* the substituted patterns, one after the other */
  size_t nod, npd, nor, npr, i, substlen = 0, used = 0;
  int own_read = 0, own_deny = 0, pattern_read = 0, pattern_deny = 0; /* relate's bits, or'd */
  int patterns, ret = ACL_REACH_SOME, r, have, unsafe, generic_readable;
  long setup = 0;
  struct search s;
  acl_reach_cost none;
  if (cost == NULL) cost = &none;
  memset(cost, 0, sizeof *cost);
  if (acl == NULL || filter == NULL) return ACL_REACH_NONE;
  f.s = filter;
  f.len = strlen(filter);
  if (!mqtt_topic_filter_valid(f.s, f.len)) return ACL_REACH_NONE;
  memset(&s, 0, sizeof s);
  memset(&fs, 0, sizeof fs);
  list = own_list(acl, username);
  /* as check_patterns: a username or client id with '+' or '#' gets nothing from them */
  patterns = acl->patterns.n > 0 && !(username && strpbrk(username, "+#")) &&
             !(client_id && strpbrk(client_id, "+#"));
  have = pattern_values(username, client_id, identity, &unsafe);
  if (split_levels(&fs, f.s, f.len, LONG_MAX, &setup) != 1) goto done;

  /* Only rules that meet the filter can decide any of its topics. */
  for (i = 0; list && i < list->n; i++) {
    const struct rule* rule = &list->v[i];
    int rel;
    if (rule->access != R_DENY && !(rule->access & ACL_READ)) continue;
    rel = relate(rule->filter, rule->len, &fs, LONG_MAX, &setup);
    if (!(rel & MEETS)) continue;
    if (!push(rule->access == R_DENY ? &denies : &reads, rule->filter, rule->len)) goto done;
    if (rule->access == R_DENY)
      own_deny |= rel;
    else
      own_read |= rel;
  }
  nod = denies.n;
  nor = reads.n;
  /* The patterns as check_patterns applies them; the substituted ones in one block. */
  for (i = 0; patterns && i < acl->patterns.n; i++) {
    const struct rule* rule = &acl->patterns.v[i];
    if (rule->subst && (rule->access == R_DENY || (rule->access & ACL_READ)) &&
        pattern_use(rule, have, unsafe) == PAT_USE)
      substlen += subst_len(rule->filter, rule->len, username, client_id, identity) + 1;
  }
  if (substlen > 0 && (subst = malloc(substlen)) == NULL) goto done;
  for (i = 0; patterns && i < acl->patterns.n; i++) {
    const struct rule* rule = &acl->patterns.v[i];
    const int deny = rule->access == R_DENY;
    struct span p;
    int use, rel;
    if (!deny && !(rule->access & ACL_READ)) continue;
    use = pattern_use(rule, have, unsafe);
    if (use == PAT_SKIP) continue;
    if (use == PAT_UNSAFE) {
      if (deny) patterns = 0; /* such a deny pattern denies every topic */
      continue;
    }
    p.s = rule->filter;
    p.len = rule->len;
    if (rule->subst) {
      p.s = subst + used;
      p.len = subst_into(subst + used, rule->filter, rule->len, username, client_id, identity);
      used += p.len + 1;
    }
    rel = relate(p.s, p.len, &fs, LONG_MAX, &setup);
    if (!(rel & MEETS)) continue;
    if (!push(deny ? &denies : &reads, p.s, p.len)) goto done;
    if (deny)
      pattern_deny |= rel;
    else
      pattern_read |= rel;
  }
  npd = denies.n - nod;
  npr = reads.n - nor;
  if (!patterns) npd = npr = 0, pattern_deny = pattern_read = 0;

  /* One topic decides one of the questions outright: the filter's generic topic (a value
   * no rule names for each '+', one such level for a '#'), which a rule matches only
   * where it has a wildcard or the filter's own literal (relate's GENERIC). Readable, it
   * rules NONE out; unreadable, ALL. So only the other question is searched. */
  generic_readable =
      !(own_deny & GENERIC) &&
      ((own_read & GENERIC) || (patterns && !(pattern_deny & GENERIC) && (pattern_read & GENERIC)));

  s.left = budget;
  if (generic_readable) {
    /* ALL: no topic of the filter is unreadable. Its own list has no deny for any of
     * them, and none escapes both its own read rules and (when the patterns apply) the
     * read patterns not undone by a deny pattern. */
    int all = nod == 0;
    if (all && !(own_read & COVERS)) {
      if (!patterns) {
        all = topic_escapes(&s, &f, 1, reads.v, nor) == 0;
      } else {
        for (i = 0; i < npd && all; i++) { /* denied by a pattern, read by no own rule */
          struct span pos[2];
          pos[0] = f;
          pos[1] = denies.v[nod + i];
          all = topic_escapes(&s, pos, 2, reads.v, nor) == 0;
        }
        if (all && !(pattern_read & COVERS))
          all = topic_escapes(&s, &f, 1, reads.v, nor + npr) == 0;
      }
    }
    if (all) ret = ACL_REACH_ALL;
  } else {
    /* NONE: no topic of the filter is readable. One would be read by an own rule and not
     * denied by the own list, or read by a pattern and denied by neither. */
    r = readable_through(&s, &f, reads.v, nor, denies.v, nod, own_deny & COVERS);
    if (r == 0 && patterns)
      r = readable_through(&s, &f, npr ? reads.v + nor : NULL, npr, denies.v, nod + npd,
                           (own_deny | pattern_deny) & COVERS);
    if (r == 0) ret = ACL_REACH_NONE;
  }
  count_steps(cost, &s, budget);
done:
  cost->setup = (unsigned long)setup;
  free(subst);
  free(denies.v);
  free(reads.v);
  free(fs.start);
  free(fs.kind);
  free(s.cur);
  free(s.fr);
  free(s.other.start);
  free(s.other.kind);
  return ret;
}

int acl_subscribe_reach(const aclfile* acl, const char* username, const char* client_id,
                        const char* identity, const char* filter) {
  return acl_subscribe_reach_cost(acl, username, client_id, identity, filter, ACL_REACH_STEPS,
                                  NULL);
}
