/* Mosquitto ACL files (see aclfile.h and docs/acl.md). */
#define _GNU_SOURCE /* memmem */
#include "aclfile.h"

#include "../common/bounded_read.h"
#include "../common/line_file.h"
#include "../common/mqtt_topic.h"

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
static int unsafe_value(const char* v, int slash_ok) {
  return *v == '\0' || strpbrk(v, slash_ok ? "+#" : "+#/") != NULL;
}

/* The value a pattern level stands for: %u, %c, %i; NULL for any other level. */
static const char* subst_value(const char* l, size_t n, const char* u, const char* c,
                               const char* id) {
  if (n != 2 || l[0] != '%') return NULL;
  return l[1] == 'u' ? u : l[1] == 'c' ? c : l[1] == 'i' ? id : NULL;
}

/* Pattern f[0, flen) with %u, %c, %i replaced: in `small` (cap bytes) when it fits, so a
 * check needs no allocation in the common case, else malloc'd (the caller frees what
 * is not `small`); NULL when out of memory. *len: the result's length. */
static char* substitute(const char* f, size_t flen, const char* u, const char* c, const char* id,
                        char* small, size_t cap, size_t* len) {
  mqtt_topic_levels it;
  const char* l;
  size_t n, total = 0;
  char *out, *p;
  mqtt_topic_levels_init(&it, f, flen);
  while (mqtt_topic_next_level(&it, &l, &n)) {
    const char* v = subst_value(l, n, u, c, id);
    total += (v ? strlen(v) : n) + 1;
  }
  total--; /* no '/' after the last level */
  out = total < cap ? small : malloc(total + 1);
  if (out == NULL) return NULL;
  p = out;
  mqtt_topic_levels_init(&it, f, flen);
  while (mqtt_topic_next_level(&it, &l, &n)) {
    const char* v = subst_value(l, n, u, c, id);
    size_t vn = v ? strlen(v) : n;
    if (l != f) *p++ = '/'; /* not p != out: the first level may be empty ("/a/%u") */
    memcpy(p, v ? v : l, vn);
    p += vn;
  }
  *p = '\0';
  *len = total;
  return out;
}

enum { PAT_SKIP, PAT_UNSAFE, PAT_USE };

/* Whether a pattern applies to the client: PAT_SKIP without a value for a %u, %c or %i it
 * uses (as Mosquitto); PAT_UNSAFE with a value that would change the rule's shape
 * (mqgate: '/' or an empty value would move the rule to another subtree). */
static int pattern_use(const struct rule* rule, const char* username, const char* client_id,
                       const char* identity) {
  if ((rule->subst & SUB_U) && username == NULL) return PAT_SKIP;
  if ((rule->subst & SUB_I) && identity == NULL) return PAT_SKIP;
  if ((rule->subst & SUB_C) && client_id == NULL) return PAT_SKIP;
  if (((rule->subst & SUB_U) && unsafe_value(username, 0)) ||
      ((rule->subst & SUB_C) && unsafe_value(client_id, 0)) ||
      ((rule->subst & SUB_I) && unsafe_value(identity, 1)))
    return PAT_UNSAFE;
  return PAT_USE;
}

static int check_patterns(const aclfile* acl, const char* username, const char* client_id,
                          const char* identity, const struct query* q) {
  const struct rules* r = &acl->patterns;
  int want = q->access == ACL_SUBSCRIBE ? ACL_READ : q->access;
  int pass;
  size_t i;
  /* Mosquitto: a username or client id with '+' or '#' gets nothing from patterns */
  if ((username && strpbrk(username, "+#")) || (client_id && strpbrk(client_id, "+#")))
    return DENY;
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
      use = pattern_use(rule, username, client_id, identity);
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
 * the answer is "don't know", and the caller says SOME, which is always safe. */

/* Per question; a step is a filter looked at on one level. Measured (-O2): a filter of
 * 200 '+' levels against 200 deny rules that branch at every level runs out in about
 * 0.08 ms (two questions), so a SUBSCRIBE slice of 2,048 such filters holds the loop
 * under 0.2 s even under that pathological file; ordinary files need a few hundred. */
#define REACH_STEPS 5000L

struct span {
  const char* s;
  size_t len;
};

/* A filter during the search, at the level starting at off; off == len + 1: no level
 * left (it matches only if the topic ends). */
struct cursor {
  const struct span* f;
  size_t off;
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
  long left; /* steps */
};

/* One step, and one per 64 bytes looked at; 0 once the budget is spent. */
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

/* The cursor's level in *l, *n; 0 if it has none left. */
static int cursor_level(const struct cursor* c, const char** l, size_t* n) {
  const char* p;
  const char* e;
  if (c->off > c->f->len) return 0;
  p = c->f->s + c->off;
  e = memchr(p, '/', c->f->len - c->off);
  *l = p;
  *n = e ? (size_t)(e - p) : c->f->len - c->off;
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
  *bytes += n;
  if (is_wild(l, n)) {
    if (depth == 0 && k->dollar) return DIES; /* [MQTT-4.7.2-1] */
    if (l[0] == '#') return ABSORBED;
  } else if (!k->literal || k->n != n || memcmp(k->s, l, n) != 0) {
    return DIES;
  }
  c->off += n + 1; /* past the '/', or to len + 1 after the last level */
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
  size_t i, j, top, nfr = 1;
  if (!reserve_cur(s, npos + nneg) || !reserve_fr(s, 1)) return -1;
  for (i = 0; i < npos; i++) {
    s->cur[i].f = &pos[i];
    s->cur[i].off = 0;
  }
  top = npos;
  for (i = 0; i < nneg; i++) { /* only the negatives that meet the other positive count */
    int meets = 1;
    for (j = 1; j < npos && meets; j++) {
      if (!spend(s, 1, neg[i].len + pos[j].len)) return -1;
      meets = mqtt_topic_intersects(neg[i].s, neg[i].len, pos[j].s, pos[j].len);
      if (meets && mqtt_topic_covers(neg[i].s, neg[i].len, pos[j].s, pos[j].len)) return 0;
    }
    if (meets) {
      s->cur[top].f = &neg[i];
      s->cur[top].off = 0;
      top++;
    }
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
    size_t np = 0, nn = 0, bytes = 0;
    int feasible = 1, r;
    struct cls k;
    struct cursor* c;
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
    if (!reserve_cur(s, f->base + 2 * n)) return -1;
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
    if (!spend(s, n, bytes)) return -1;
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

static int any_covers(const struct span* v, size_t n, const struct span* f) {
  size_t i;
  for (i = 0; i < n; i++)
    if (mqtt_topic_covers(v[i].s, v[i].len, f->s, f->len)) return 1;
  return 0;
}

/* Some topic of f matched by a read rule of reads[0, nreads) and by none of
 * denies[0, ndenies): 1, 0, or -1 (don't know). */
static int readable_through(struct search* s, const struct span* f, const struct span* reads,
                            size_t nreads, const struct span* denies, size_t ndenies) {
  size_t i;
  int unknown = 0;
  if (any_covers(denies, ndenies, f)) return 0;
  for (i = 0; i < nreads; i++) {
    struct span pos[2];
    int r;
    pos[0] = *f;
    pos[1] = reads[i];
    r = topic_escapes(s, pos, 2, denies, ndenies);
    if (r == 1) return 1;
    if (r < 0) unknown = 1;
  }
  return unknown ? -1 : 0;
}

int acl_subscribe_reach(const aclfile* acl, const char* username, const char* client_id,
                        const char* identity, const char* filter) {
  const struct rules* list;
  struct span f;
  struct span* denies = NULL; /* own deny rules, then deny patterns */
  struct span* reads = NULL;  /* own read rules, then read patterns */
  char** owned = NULL;        /* substituted patterns */
  size_t nod = 0, npd = 0, nor = 0, npr = 0, nowned = 0, cap, i;
  int patterns, ret = ACL_REACH_SOME, r;
  struct search s;
  if (acl == NULL || filter == NULL) return ACL_REACH_NONE;
  f.s = filter;
  f.len = strlen(filter);
  if (!mqtt_topic_filter_valid(f.s, f.len)) return ACL_REACH_NONE;
  memset(&s, 0, sizeof s);
  list = own_list(acl, username);
  /* as check_patterns: a username or client id with '+' or '#' gets nothing from them */
  patterns = acl->patterns.n > 0 && !(username && strpbrk(username, "+#")) &&
             !(client_id && strpbrk(client_id, "+#"));
  cap = (list ? list->n : 0) + acl->patterns.n + 1;
  denies = malloc(cap * sizeof *denies);
  reads = malloc(cap * sizeof *reads);
  owned = malloc(cap * sizeof *owned);
  if (denies == NULL || reads == NULL || owned == NULL) goto done;
  /* Only rules that meet the filter can decide any of its topics. */
  for (i = 0; list && i < list->n; i++) {
    const struct rule* rule = &list->v[i];
    if (rule->access != R_DENY && !(rule->access & ACL_READ)) continue;
    if (!mqtt_topic_intersects(rule->filter, rule->len, f.s, f.len)) continue;
    if (rule->access == R_DENY) {
      denies[nod].s = rule->filter;
      denies[nod++].len = rule->len;
    } else {
      reads[nor].s = rule->filter;
      reads[nor++].len = rule->len;
    }
  }
  /* The patterns as check_patterns applies them. */
  for (i = 0; patterns && i < acl->patterns.n; i++) {
    const struct rule* rule = &acl->patterns.v[i];
    const int deny = rule->access == R_DENY;
    struct span p;
    int use;
    if (!deny && !(rule->access & ACL_READ)) continue;
    use = pattern_use(rule, username, client_id, identity);
    if (use == PAT_SKIP) continue;
    if (use == PAT_UNSAFE) {
      if (deny) patterns = 0; /* such a deny pattern denies every topic */
      continue;
    }
    p.s = rule->filter;
    p.len = rule->len;
    if (rule->subst) {
      char* sub =
          substitute(rule->filter, rule->len, username, client_id, identity, NULL, 0, &p.len);
      if (sub == NULL) goto done;
      owned[nowned++] = sub;
      p.s = sub;
    }
    if (!mqtt_topic_intersects(p.s, p.len, f.s, f.len)) continue;
    if (deny)
      denies[nod + npd++] = p;
    else
      reads[nor + npr++] = p;
  }
  if (!patterns) npd = npr = 0;

  /* ALL: no topic of the filter is unreadable. Its own list has no deny for any of them,
   * and none escapes both its own read rules and (when the patterns apply) the read
   * patterns not undone by a deny pattern. */
  s.left = REACH_STEPS;
  if (nod == 0) {
    int all = 1;
    if (!any_covers(reads, nor, &f)) {
      if (!patterns) {
        all = topic_escapes(&s, &f, 1, reads, nor) == 0;
      } else {
        for (i = 0; i < npd && all; i++) { /* denied by a pattern, read by no own rule */
          struct span pos[2];
          pos[0] = f;
          pos[1] = denies[nod + i];
          all = topic_escapes(&s, pos, 2, reads, nor) == 0;
        }
        if (all && !any_covers(reads + nor, npr, &f))
          all = topic_escapes(&s, &f, 1, reads, nor + npr) == 0;
      }
    }
    if (all) {
      ret = ACL_REACH_ALL;
      goto done;
    }
  }

  /* NONE: no topic of the filter is readable. One would be read by an own rule and not
   * denied by the own list, or read by a pattern and denied by neither. */
  s.left = REACH_STEPS;
  r = readable_through(&s, &f, reads, nor, denies, nod);
  if (r == 0 && patterns) r = readable_through(&s, &f, reads + nor, npr, denies, nod + npd);
  if (r == 0) ret = ACL_REACH_NONE;
done:
  for (i = 0; i < nowned; i++)
    free(owned[i]);
  free(owned);
  free(denies);
  free(reads);
  free(s.cur);
  free(s.fr);
  return ret;
}
