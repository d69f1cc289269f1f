/* Mosquitto ACL files (see aclfile.h and docs/acl.md). */
#define _GNU_SOURCE /* memmem */
#include "aclfile.h"

#include "../common/bounded_read.h"
#include "../common/line_file.h"

#include <stdlib.h>
#include <string.h>

enum { R_DENY = 0 }; /* rule access: 0 deny, else ACL_READ|ACL_WRITE bits */
enum { SUB_U = 1, SUB_C = 2, SUB_I = 4 };

struct rule {
  int access;
  int subst; /* SUB_* used by a pattern */
  char* filter;
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

/* ---- topic levels ------------------------------------------------------------------ */

struct lv {
  const char* p;
  size_t n;
};

/* Splits s at '/'; returns the count and a malloc'd array in *out (NULL on OOM). */
static size_t split(const char* s, struct lv** out) {
  size_t count = 1, i = 0;
  const char* c;
  for (c = s; *c; c++)
    if (*c == '/') count++;
  *out = malloc(count * sizeof **out);
  if (*out == NULL) return 0;
  (*out)[0].p = s;
  for (c = s;; c++) {
    if (*c == '/' || *c == '\0') {
      (*out)[i].n = (size_t)(c - (*out)[i].p);
      if (*c == '\0') break;
      i++;
      (*out)[i].p = c + 1;
    }
  }
  return count;
}

static int is_plus(const struct lv* l) {
  return l->n == 1 && l->p[0] == '+';
}
static int is_hash(const struct lv* l) {
  return l->n == 1 && l->p[0] == '#';
}
static int is_wild(const struct lv* l) {
  return is_plus(l) || is_hash(l);
}
static int lv_eq(const struct lv* a, const struct lv* b) {
  return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}
/* a first level that is a literal starting with '$' */
static int is_dollar(const struct lv* l) {
  return l->n > 0 && l->p[0] == '$';
}

int acl_filter_valid(const char* s) {
  const char* c;
  size_t start = 0, i = 0;
  if (*s == '\0') return 0;
  for (c = s;; c++, i++) {
    if (*c == '/' || *c == '\0') {
      size_t n = i - start;
      const char* lv = s + start;
      if (memchr(lv, '+', n) && !(n == 1)) return 0;
      if (memchr(lv, '#', n) && !(n == 1 && *c == '\0')) return 0;
      if (*c == '\0') break;
      start = i + 1;
    }
  }
  return 1;
}

int acl_topic_matches(const char* filter, const char* topic) {
  struct lv *f = NULL, *t = NULL;
  size_t nf = split(filter, &f), nt = split(topic, &t), i;
  int result = 0;
  if (f == NULL || t == NULL) goto out;
  if (is_wild(&f[0]) && topic[0] == '$') goto out;
  for (i = 0;; i++) {
    if (i < nf && is_hash(&f[i])) {
      result = 1; /* matches the parent level too: "a/#" matches "a" */
      break;
    }
    if (i == nf || i == nt) {
      result = (i == nf && i == nt);
      break;
    }
    if (!is_plus(&f[i]) && !lv_eq(&f[i], &t[i])) break;
  }
out:
  free(f);
  free(t);
  return result;
}

int filter_covers(const char* rule, const char* sub) {
  struct lv *r = NULL, *s = NULL;
  size_t nr = split(rule, &r), ns = split(sub, &s), i;
  int result = 0;
  if (r == NULL || s == NULL) goto out;
  /* a rule starting with a wildcard matches no '$' topic; sub may name one */
  if (is_wild(&r[0]) && is_dollar(&s[0])) goto out;
  for (i = 0;; i++) {
    if (i < nr && is_hash(&r[i])) {
      result = 1; /* everything from level i on, the parent included */
      break;
    }
    if (i == nr || i == ns) {
      result = (i == nr && i == ns);
      break;
    }
    if (is_hash(&s[i])) {
      /* sub matches its parent topic too, which r (needing one more level) does not;
       * unless that parent is the empty topic (no levels, or one empty level), which
       * is not a topic: then sub is really <prefix>/+/# */
      if (i == 0 || (i == 1 && s[0].n == 0))
        result = is_plus(&r[i]) && i + 1 < nr && is_hash(&r[i + 1]);
      break;
    }
    if (is_plus(&s[i])) {
      if (!is_plus(&r[i])) break; /* a literal never covers every value */
    } else if (!is_plus(&r[i]) && !lv_eq(&r[i], &s[i])) {
      break;
    }
  }
out:
  free(r);
  free(s);
  return result;
}

int filter_intersects(const char* a_s, const char* b_s) {
  struct lv *a = NULL, *b = NULL;
  size_t na = split(a_s, &a), nb = split(b_s, &b), i;
  int result = 0;
  if (a == NULL || b == NULL) goto out;
  if ((is_wild(&a[0]) && is_dollar(&b[0])) || (is_wild(&b[0]) && is_dollar(&a[0]))) goto out;
  for (i = 0;; i++) {
    if ((i < na && is_hash(&a[i])) || (i < nb && is_hash(&b[i]))) {
      /* If the other filter ends here, the only common topic is its own (i levels);
       * with one level forced to be empty that is the empty topic: not a topic. */
      int other_ends = (i < na && is_hash(&a[i])) ? (i == nb) : (i == na);
      int both_hash = i < na && i < nb && is_hash(&a[i]) && is_hash(&b[i]);
      result = 1;
      if (!both_hash && other_ends && i == 1 && (a[0].n == 0 || b[0].n == 0)) result = 0;
      break;
    }
    if (i == na || i == nb) {
      result = (i == na && i == nb);
      break;
    }
    if (!is_plus(&a[i]) && !is_plus(&b[i]) && !lv_eq(&a[i], &b[i])) break;
  }
out:
  free(a);
  free(b);
  return result;
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
        char* f = malloc(e - fb + 1);
        int ok;
        if (f == NULL) goto oom;
        memcpy(f, line + fb, e - fb);
        f[e - fb] = '\0';
        ok = acl_filter_valid(f);
        if (ok && pattern) {
          /* %u, %c, %i must each be a whole level (mosquitto-conf(5)) */
          struct lv* l = NULL;
          size_t n = split(f, &l), i;
          if (l == NULL) {
            free(f);
            goto oom;
          }
          for (i = 0; i < n && ok; i++) {
            if (l[i].n == 2 && l[i].p[0] == '%' && l[i].p[1] == 'u')
              subst |= SUB_U;
            else if (l[i].n == 2 && l[i].p[0] == '%' && l[i].p[1] == 'c')
              subst |= SUB_C;
            else if (l[i].n == 2 && l[i].p[0] == '%' && l[i].p[1] == 'i')
              subst |= SUB_I;
            else if (memchr(l[i].p, '%', l[i].n) != NULL &&
                     (memmem(l[i].p, l[i].n, "%u", 2) || memmem(l[i].p, l[i].n, "%c", 2) ||
                      memmem(l[i].p, l[i].n, "%i", 2))) {
              line_file_err(&lf, err, errlen,
                            "%%u, %%c and %%i must be the whole level in a pattern (\"%.*s\")",
                            (int)(l[i].n > 64 ? 64 : l[i].n), l[i].p);
              free(l);
              free(f);
              goto fail;
            }
          }
          free(l);
        }
        free(f);
        if (!ok) {
          line_file_err(&lf, err, errlen,
                        "invalid topic filter \"%.*s\" ('#' only as the last level, '+' and "
                        "'#' alone in their level)",
                        (int)((e - fb) > 64 ? 64 : (e - fb)), line + fb);
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

/* Does rule filter f match topic (or, for ACL_SUBSCRIBE: cover / intersect the filter)? */
static int rule_hits(const char* f, const char* topic, int access, int deny) {
  if (access == ACL_SUBSCRIBE) return deny ? filter_intersects(f, topic) : filter_covers(f, topic);
  return acl_topic_matches(f, topic);
}

/* Mosquitto's acl__check_single: deny rules first (any match denies), then the first
 * rule granting the access allows; nothing: denied. */
static int check_list(const struct rules* r, const char* topic, int access) {
  int want = access == ACL_SUBSCRIBE ? ACL_READ : access;
  size_t i;
  for (i = 0; i < r->n; i++)
    if (r->v[i].access == R_DENY && rule_hits(r->v[i].filter, topic, access, 1)) return DENY;
  for (i = 0; i < r->n; i++)
    if ((r->v[i].access & want) && rule_hits(r->v[i].filter, topic, access, 0)) return ALLOW;
  return NO_MATCH;
}

/* A value unsafe to substitute: empty, or holding a level separator or wildcard. */
static int unsafe_value(const char* v, int slash_ok) {
  return *v == '\0' || strpbrk(v, slash_ok ? "+#" : "+#/") != NULL;
}

static char* substitute(const char* f, const char* u, const char* c, const char* id) {
  struct lv* l = NULL;
  size_t n = split(f, &l), i, len = 0;
  char *out, *p;
  if (l == NULL) return NULL;
  for (i = 0; i < n; i++) {
    const char* v = NULL;
    if (l[i].n == 2 && l[i].p[0] == '%')
      v = l[i].p[1] == 'u' ? u : l[i].p[1] == 'c' ? c : l[i].p[1] == 'i' ? id : NULL;
    len += (v ? strlen(v) : l[i].n) + 1;
  }
  out = malloc(len + 1);
  if (out == NULL) {
    free(l);
    return NULL;
  }
  p = out;
  for (i = 0; i < n; i++) {
    const char* v = NULL;
    size_t vn;
    if (l[i].n == 2 && l[i].p[0] == '%')
      v = l[i].p[1] == 'u' ? u : l[i].p[1] == 'c' ? c : l[i].p[1] == 'i' ? id : NULL;
    vn = v ? strlen(v) : l[i].n;
    memcpy(p, v ? v : l[i].p, vn);
    p += vn;
    if (i + 1 < n) *p++ = '/';
  }
  *p = '\0';
  free(l);
  return out;
}

static int check_patterns(const aclfile* acl, const char* username, const char* client_id,
                          const char* identity, const char* topic, int access) {
  const struct rules* r = &acl->patterns;
  int want = access == ACL_SUBSCRIBE ? ACL_READ : access;
  int pass;
  size_t i;
  /* Mosquitto: a username or client id with '+' or '#' gets nothing from patterns */
  if ((username && strpbrk(username, "+#")) || (client_id && strpbrk(client_id, "+#")))
    return DENY;
  for (pass = 0; pass < 2; pass++) { /* deny rules first, then the others */
    for (i = 0; i < r->n; i++) {
      const struct rule* rule = &r->v[i];
      int deny = rule->access == R_DENY;
      char* f;
      int hit;
      if (deny != (pass == 0)) continue;
      if (!deny && !(rule->access & want)) continue;
      if ((rule->subst & SUB_U) && username == NULL) continue; /* as Mosquitto */
      if ((rule->subst & SUB_I) && identity == NULL) continue;
      if ((rule->subst & SUB_C) && client_id == NULL) continue;
      /* mqgate: '/' (or an empty value) would move the rule to another subtree */
      if (((rule->subst & SUB_U) && unsafe_value(username, 0)) ||
          ((rule->subst & SUB_C) && unsafe_value(client_id, 0)) ||
          ((rule->subst & SUB_I) && unsafe_value(identity, 1))) {
        if (deny) return DENY; /* cannot tell what it meant to deny: deny */
        continue;              /* cannot grant */
      }
      f = rule->subst ? substitute(rule->filter, username, client_id, identity) : rule->filter;
      if (f == NULL) return DENY;
      hit = rule_hits(f, topic, access, deny);
      if (rule->subst) free(f);
      if (hit) return deny ? DENY : ALLOW;
    }
  }
  return NO_MATCH;
}

int acl_check(const aclfile* acl, const char* username, const char* client_id,
              const char* identity, const char* topic, int access) {
  const struct rules* list = NULL;
  if (acl == NULL || topic == NULL) return 0;
  if (access != ACL_READ && access != ACL_WRITE && access != ACL_SUBSCRIBE) return 0;
  if (access == ACL_SUBSCRIBE ? !acl_filter_valid(topic) : (!*topic || strpbrk(topic, "+#")))
    return 0;
  /* Mosquitto: nobody publishes to $SYS */
  if (access == ACL_WRITE && strncmp(topic, "$SYS", 4) == 0) return 0;
  if (username == NULL) {
    if (acl->has_anon) list = &acl->anon;
  } else {
    struct user key;
    const struct user* u;
    key.name = (char*)username;
    u = acl->nusers ? bsearch(&key, acl->users, acl->nusers, sizeof key, cmp_user) : NULL;
    if (u) list = &u->rules;
  }
  /* Mosquitto 2.0: the client's own list first, where a deny is final; if it neither
   * allows nor denies, the patterns */
  if (list) {
    int r = check_list(list, topic, access);
    if (r != NO_MATCH) return r == ALLOW;
  }
  if (acl->patterns.n == 0) return 0;
  return check_patterns(acl, username, client_id, identity, topic, access) == ALLOW;
}
