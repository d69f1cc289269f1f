/*
 * MQTT topic names and topic filters (MQTT 3.1.1 and 5.0, section 4.7): validation,
 * matching, and the two questions an access rule asks of a subscription filter
 * (does the rule cover it, does it intersect it). The one implementation behind the
 * broker core (core/mqtt/topic.cpp) and the bundled plugins (acl, certauth).
 *
 * Header-only C99: static inline functions, no global state, no allocation, no
 * recursion. Strings are spans (pointer, length) so C strings and C++ string_views
 * both use them without a copy; no NUL terminator is read. A span of length 0 may
 * have a NULL pointer.
 *
 * The rules, as the specification states them:
 *  - '/' separates levels; a level may be empty: "a//b" has "a", "", "b"; "/" has "", "".
 *  - Topic names and filters are at least one byte long [MQTT-4.7.3-1]: the empty
 *    string is neither. (UTF-8 well-formedness, which excludes U+0000
 *    [MQTT-4.7.3-2], and the 65535-byte limit [MQTT-4.7.3-3] are the codec's.)
 *  - A topic name has no '+' or '#' [MQTT-4.7.1-1].
 *  - In a filter, '+' is a whole level [MQTT-4.7.1-3] and matches exactly one level,
 *    an empty one too ("+/+" matches "/finance"); '#' is the whole last level
 *    [MQTT-4.7.1-2] and matches its parent level and any number of levels below
 *    ("a/#" matches "a", "a/b", "a/b/c").
 *  - A filter whose first level is '+' or '#' matches no topic name starting with '$'
 *    [MQTT-4.7.2-1].
 *  Consequence of the last three: "/#" matches every topic of two levels or more whose
 *  first level is empty, not its parent "" (no topic); "#" matches every topic not
 *  starting with '$'.
 *
 * Unless a function says otherwise, its arguments must be valid (a topic name, a
 * filter, as the two validation functions define them). On invalid arguments the
 * answer is unspecified, but every function still reads only within its spans and
 * returns.
 *
 * test/unit/mqtt_topic_test.cpp checks every function against a naive reference, by
 * brute force.
 */
#ifndef MQGATE_MQTT_TOPIC_H
#define MQGATE_MQTT_TOPIC_H

#include <stddef.h>
#include <string.h>

/* ---- levels ---------------------------------------------------------------------- */

/* Walks the '/'-separated levels of a topic name or filter, empty ones included. */
typedef struct mqtt_topic_levels {
  const char* next; /* start of the next level */
  const char* end;  /* one past the string's last byte */
  int done;         /* the last level was returned */
} mqtt_topic_levels;

/* Starts a walk over s[0, n). s must not be NULL (n may be 0: one empty level). */
static inline void mqtt_topic_levels_init(mqtt_topic_levels* it, const char* s, size_t n) {
  it->next = s;
  it->end = s + n;
  it->done = 0;
}

/* Stores the next level in *level, *len and returns 1; returns 0 when there is none
 * (with *len 0 and *level at the end, so nothing is left unset). */
static inline int mqtt_topic_next_level(mqtt_topic_levels* it, const char** level, size_t* len) {
  const char* p = it->next;
  if (it->done) {
    *level = it->end;
    *len = 0;
    return 0;
  }
  /* A plain loop: levels are short, and a call to memchr per level costs more. */
  while (p < it->end && *p != '/')
    p++;
  *level = it->next;
  *len = (size_t)(p - it->next);
  if (p == it->end)
    it->done = 1;
  else
    it->next = p + 1;
  return 1;
}

static inline int mqtt_topic_is_plus(const char* level, size_t len) {
  return len == 1 && level[0] == '+';
}

static inline int mqtt_topic_is_hash(const char* level, size_t len) {
  return len == 1 && level[0] == '#';
}

/* Whether the first level of the (non-empty) filter f[0, n) is '+' or '#': such a
 * filter matches no topic starting with '$' [MQTT-4.7.2-1]. */
static inline int mqtt_topic_first_is_wildcard(const char* f, size_t n) {
  return (f[0] == '+' || f[0] == '#') && (n == 1 || f[1] == '/');
}

/* A placeholder in a filter's literal levels: each occurrence of `name` in such a level
 * stands for `value`, compared byte for byte. A '+', '#' or '/' in the value is an
 * ordinary byte, never a wildcard or a separator (so a value with '/' matches no topic
 * level). `name` is at least one byte, without '/', '+' or '#'; neither pointer is
 * NULL. certauth's "{device_id}" is one: the filter need not be copied to substitute
 * it. */
typedef struct mqtt_topic_placeholder {
  const char* name;
  size_t name_len;
  const char* value;
  size_t value_len;
} mqtt_topic_placeholder;

/* Whether a placeholder's name starts at f[i] (f has n bytes). */
static inline int mqtt_topic_placeholder_at(const mqtt_topic_placeholder* ph, const char* f,
                                            size_t i, size_t n) {
  return f[i] == ph->name[0] && n - i >= ph->name_len && memcmp(f + i, ph->name, ph->name_len) == 0;
}

/* Whether the literal filter level fl[0, fln), its placeholder (if ph) replaced by the
 * value, equals the level l[0, ln) of a topic or of another filter. */
static inline int mqtt_topic_literal_equal(const char* fl, size_t fln, const char* l, size_t ln,
                                           const mqtt_topic_placeholder* ph) {
  size_t i = 0, j = 0;
  if (ph == NULL) return fln == ln && memcmp(fl, l, fln) == 0;
  while (i < fln) {
    if (mqtt_topic_placeholder_at(ph, fl, i, fln)) {
      if (ln - j < ph->value_len || memcmp(l + j, ph->value, ph->value_len) != 0) return 0;
      i += ph->name_len;
      j += ph->value_len;
    } else {
      if (j == ln || l[j] != fl[i]) return 0;
      i++;
      j++;
    }
  }
  return j == ln;
}

/* ---- validation ------------------------------------------------------------------ */

/* 1 if t[0, n) is a topic name: at least one byte, no '+' or '#'; else 0. */
static inline int mqtt_topic_name_valid(const char* t, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (t[i] == '+' || t[i] == '#') return 0;
  return 1;
}

/* 1 if f[0, n) is a topic filter: at least one byte; '+' only as a whole level; '#'
 * only as the whole last level; else 0. */
static inline int mqtt_topic_filter_valid(const char* f, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    const int level_start = i == 0 || f[i - 1] == '/';
    const int level_end = i + 1 == n || f[i + 1] == '/';
    if (f[i] == '+' && !(level_start && level_end)) return 0;
    if (f[i] == '#' && !(level_start && i + 1 == n)) return 0;
  }
  return 1;
}

/* ---- matching --------------------------------------------------------------------- */

/* 1 if filter f[0, fn) matches topic name t[0, tn), else 0 (also when either is empty).
 * With ph, the placeholder in the filter's literal levels compares as its value; '+',
 * '#' and the '$' rule are the filter's own. */
static inline int mqtt_topic_matches_with(const char* f, size_t fn, const char* t, size_t tn,
                                          const mqtt_topic_placeholder* ph) {
  /* One pass over both strings, a level of each at a time (no level iterator: this is
   * the call made per message, and levels are short). */
  size_t i = 0, j = 0; /* the start of the current level in f, in t */
  int topic_ended = 0; /* t has no level left for the current filter level */
  if (fn == 0 || tn == 0) return 0;
  if (t[0] == '$' && mqtt_topic_first_is_wildcard(f, fn)) return 0;
  for (;;) {
    if (i < fn && f[i] == '#') return 1; /* this level on, and the parent */
    if (topic_ended) return 0;
    if (i < fn && f[i] == '+') { /* a whole level: any one topic level */
      i++;
      while (j < tn && t[j] != '/')
        j++;
    } else { /* a literal: byte for byte, up to the '/' of both */
      while (i < fn && f[i] != '/') {
        if (ph != NULL && mqtt_topic_placeholder_at(ph, f, i, fn)) {
          size_t k;
          for (k = 0; k < ph->value_len; k++, j++)
            if (j == tn || t[j] != ph->value[k] || t[j] == '/') return 0;
          i += ph->name_len;
        } else {
          if (j == tn || t[j] != f[i]) return 0;
          i++;
          j++;
        }
      }
      if (j < tn && t[j] != '/') return 0;
    }
    /* f[i] and t[j] are each a '/' or the end */
    if (j == tn)
      topic_ended = 1;
    else
      j++;
    if (i == fn) return topic_ended; /* the topic must end with the filter */
    i++;
  }
}

/* 1 if filter f[0, fn) matches topic name t[0, tn), else 0. */
static inline int mqtt_topic_matches(const char* f, size_t fn, const char* t, size_t tn) {
  return mqtt_topic_matches_with(f, fn, t, tn, NULL);
}

/* 1 if pattern p[0, pn) covers filter f[0, fn): every topic name f matches, p matches
 * too (f matches at least one, being valid); else 0. With ph, the placeholder in p's
 * literal levels compares as its value (f's levels are taken as they are).
 *
 * Level by level: a '#' in p covers the rest of f and f's parent; '+' in p covers any
 * one level of f except '#'; a literal covers only an equal literal. A '#' in f
 * matches its parent topic too, which a p still needing a level here does not match,
 * unless that parent is the empty string (f is "#" or "/#"), which is no topic: then
 * f's topics are those of "+/#" or "/+/#", which p covers if it has '+' then '#'
 * there. '$': a p starting with a wildcard covers no f starting with '$' (f's topics
 * all start with '$'); an f starting with a wildcard has no '$' topic. */
static inline int mqtt_topic_covers_with(const char* p, size_t pn, const char* f, size_t fn,
                                         const mqtt_topic_placeholder* ph) {
  mqtt_topic_levels pi, fi;
  const char *pl, *fl;
  size_t pln, fln, i;
  int first_empty = 0; /* f's first level is the empty literal */
  if (pn == 0 || fn == 0) return 0;
  if (f[0] == '$' && mqtt_topic_first_is_wildcard(p, pn)) return 0;
  mqtt_topic_levels_init(&pi, p, pn);
  mqtt_topic_levels_init(&fi, f, fn);
  for (i = 0;; i++) {
    const int has_p = mqtt_topic_next_level(&pi, &pl, &pln);
    const int has_f = mqtt_topic_next_level(&fi, &fl, &fln);
    if (has_p && mqtt_topic_is_hash(pl, pln)) return 1; /* f has at least i levels */
    if (!has_p || !has_f) return !has_p && !has_f;
    if (mqtt_topic_is_hash(fl, fln)) {
      if (i == 0 || (i == 1 && first_empty))
        return mqtt_topic_is_plus(pl, pln) && mqtt_topic_next_level(&pi, &pl, &pln) &&
               mqtt_topic_is_hash(pl, pln);
      return 0;
    }
    if (mqtt_topic_is_plus(fl, fln)) {
      if (!mqtt_topic_is_plus(pl, pln)) return 0; /* a literal is not every value */
    } else if (!mqtt_topic_is_plus(pl, pln) && !mqtt_topic_literal_equal(pl, pln, fl, fln, ph)) {
      return 0;
    }
    if (i == 0) first_empty = fln == 0;
  }
}

/* 1 if pattern p[0, pn) covers filter f[0, fn), else 0 (see mqtt_topic_covers_with). */
static inline int mqtt_topic_covers(const char* p, size_t pn, const char* f, size_t fn) {
  return mqtt_topic_covers_with(p, pn, f, fn, NULL);
}

/* 1 if some topic name is matched by both filters a[0, an) and b[0, bn), else 0.
 * Symmetric; covers(a, b) implies intersects(a, b).
 *
 * Level by level: two literals must be equal, '+' meets anything but is one level.
 * A '#' on one side takes every depth from its level on: the other side meets it
 * unless it ends right there with a first level forced empty ("+" against "/#"), where
 * the only common topic would be the empty string. '$':
 * a side starting with a wildcard meets no side starting with '$'. */
static inline int mqtt_topic_intersects(const char* a, size_t an, const char* b, size_t bn) {
  mqtt_topic_levels ai, bi;
  const char *al, *bl;
  size_t aln, bln, i;
  int first_empty = 0; /* a common topic's first level can only be empty */
  if (an == 0 || bn == 0) return 0;
  if ((a[0] == '$' && mqtt_topic_first_is_wildcard(b, bn)) ||
      (b[0] == '$' && mqtt_topic_first_is_wildcard(a, an)))
    return 0;
  mqtt_topic_levels_init(&ai, a, an);
  mqtt_topic_levels_init(&bi, b, bn);
  for (i = 0;; i++) {
    const int has_a = mqtt_topic_next_level(&ai, &al, &aln);
    const int has_b = mqtt_topic_next_level(&bi, &bl, &bln);
    const int a_hash = has_a && mqtt_topic_is_hash(al, aln);
    const int b_hash = has_b && mqtt_topic_is_hash(bl, bln);
    if (a_hash || b_hash) {
      /* The other side ends here: the common topics are its own, of i levels. */
      const int other_ends = a_hash ? !has_b : !has_a;
      return !(other_ends && i == 1 && first_empty);
    }
    if (!has_a || !has_b) return !has_a && !has_b;
    if (!mqtt_topic_is_plus(al, aln) && !mqtt_topic_is_plus(bl, bln) &&
        !mqtt_topic_literal_equal(al, aln, bl, bln, NULL))
      return 0;
    if (i == 0) first_empty = aln == 0 || bln == 0; /* '+' is never empty */
  }
}

#endif
