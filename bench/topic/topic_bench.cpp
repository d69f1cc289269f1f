// topic_bench: the shared topic matcher (plugins/common/mqtt_topic.h) against the three
// it replaced, on the calls made per message: the core's topic_matches (sessions with
// MQTT 5 subscription options, shared-subscription retagging, the plugin API's
// topic_matches), its validation (the decoder, every PUBLISH and SUBSCRIBE) and
// filter_covers (the plugin API); the acl plugin's matcher (every publish and delivery
// it checks); certauth's pattern matcher (every publish of a restricted device).
// The old implementations are frozen below as they were before the merge.
//
// Not part of the build; from the top of the tree:
//   g++ -O2 -std=c++20 -Iplugins -Icore bench/topic/topic_bench.cpp core/mqtt/topic.cpp
//       -o /tmp/topic_bench && /tmp/topic_bench
// Instructions rather than time (a loaded machine): build with -DTOPIC_BENCH_REPS=500 and
// run `valgrind --tool=callgrind /tmp/topic_bench <line> before|after` for each side.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mqtt_topic.h"
#include "mqtt/topic.hpp"

namespace old_core {  // core/mqtt/topic.cpp before the merge

using mqgate::TopicLevels;

bool is_valid_topic_name(std::string_view topic) {
  return !topic.empty() && topic.find_first_of("+#") == std::string_view::npos;
}

bool is_valid_topic_filter(std::string_view filter) {
  if (filter.empty()) return false;
  TopicLevels levels(filter);
  std::string_view level;
  bool last_was_hash = false;
  while (levels.next(level)) {
    if (last_was_hash) return false;
    if (level.find_first_of("+#") != std::string_view::npos) {
      if (level.size() != 1) return false;
      last_was_hash = level[0] == '#';
    }
  }
  return true;
}

bool topic_matches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() &&
      (filter[0] == '+' || filter[0] == '#'))
    return false;
  TopicLevels f(filter), t(topic);
  std::string_view fl, tl;
  while (f.next(fl)) {
    if (fl == "#") return true;
    if (!t.next(tl)) return false;
    if (fl != "+" && fl != tl) return false;
  }
  return !t.next(tl);
}

bool filter_covers(std::string_view pattern, std::string_view filter) {
  const bool pattern_wild = !pattern.empty() && (pattern[0] == '+' || pattern[0] == '#');
  if (pattern_wild && !filter.empty() && filter[0] == '$') return false;
  TopicLevels p(pattern), f(filter);
  std::string_view pl, fl;
  for (size_t level = 0;; ++level) {
    const bool has_p = p.next(pl);
    const bool has_f = f.next(fl);
    if (!has_p) return !has_f;
    if (pl == "#") return true;
    if (!has_f) return false;
    if (fl == "#") {
      if (level == 0 && pl == "+" && p.next(pl) && pl == "#") return !p.next(pl);
      return false;
    }
    if (pl == "+") continue;
    if (fl == "+" || pl != fl) return false;
  }
}

}  // namespace old_core

namespace old_acl {  // plugins/acl/aclfile.c before the merge (a malloc'd split per call)

struct lv {
  const char* p;
  size_t n;
};

size_t split(const char* s, lv** out) {
  size_t count = 1, i = 0;
  const char* c;
  for (c = s; *c; c++)
    if (*c == '/') count++;
  *out = static_cast<lv*>(malloc(count * sizeof **out));
  if (*out == nullptr) return 0;
  (*out)[0].p = s;
  for (c = s;; c++) {
    if (*c == '/' || *c == '\0') {
      (*out)[i].n = static_cast<size_t>(c - (*out)[i].p);
      if (*c == '\0') break;
      i++;
      (*out)[i].p = c + 1;
    }
  }
  return count;
}

int is_plus(const lv* l) {
  return l->n == 1 && l->p[0] == '+';
}
int is_hash(const lv* l) {
  return l->n == 1 && l->p[0] == '#';
}
int is_wild(const lv* l) {
  return is_plus(l) || is_hash(l);
}
int lv_eq(const lv* a, const lv* b) {
  return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

int acl_topic_matches(const char* filter, const char* topic) {
  lv *f = nullptr, *t = nullptr;
  size_t nf = split(filter, &f), nt = split(topic, &t), i;
  int result = 0;
  if (f == nullptr || t == nullptr) goto out;
  if (is_wild(&f[0]) && topic[0] == '$') goto out;
  for (i = 0;; i++) {
    if (i < nf && is_hash(&f[i])) {
      result = 1;
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

}  // namespace old_acl

namespace old_certauth {  // plugins/certauth/certauth.c before the merge

constexpr size_t kPlaceholderLen = 11;  // "{device_id}"
enum { LVL_LITERAL, LVL_TEMPLATE, LVL_PLUS, LVL_HASH };
struct level {
  int kind;
  const char* s;
  size_t len;
};
struct pattern {
  const char* text;  // static storage: the levels point into it
  std::vector<level> levels;
};

pattern compile(const char* src) {
  pattern p;
  p.text = src;
  const char* start = src;
  for (size_t i = 0; i <= std::strlen(src); i++) {
    if (src[i] != '/' && src[i] != '\0') continue;
    level l{LVL_LITERAL, start, static_cast<size_t>(src + i - start)};
    if (l.len == 1 && l.s[0] == '#')
      l.kind = LVL_HASH;
    else if (l.len == 1 && l.s[0] == '+')
      l.kind = LVL_PLUS;
    else if (memchr(l.s, '{', l.len))
      l.kind = LVL_TEMPLATE;
    p.levels.push_back(l);
    start = src + i + 1;
  }
  return p;
}

struct levels {
  const char* p;
  int done;
};

int next_level(levels* it, const char** s, size_t* n) {
  const char* slash;
  if (it->done) return 0;
  slash = strchr(it->p, '/');
  *s = it->p;
  if (slash != nullptr) {
    *n = static_cast<size_t>(slash - it->p);
    it->p = slash + 1;
  } else {
    *n = strlen(it->p);
    it->done = 1;
  }
  return 1;
}

int level_equals(const level* l, const char* s, size_t n, const char* id, size_t id_len) {
  size_t i = 0, j = 0;
  if (l->kind == LVL_LITERAL) return n == l->len && memcmp(s, l->s, n) == 0;
  while (i < l->len) {
    if (l->s[i] == '{') {
      if (n - j < id_len || memcmp(s + j, id, id_len) != 0) return 0;
      j += id_len;
      i += kPlaceholderLen;
    } else {
      if (j >= n || s[j] != l->s[i]) return 0;
      i++;
      j++;
    }
  }
  return j == n;
}

int pattern_matches(const pattern* pt, const char* topic, const char* id, size_t id_len) {
  levels it{topic, 0};
  const char* s;
  size_t n, i = 0;
  if (topic[0] == '$' && !pt->levels.empty() &&
      (pt->levels[0].kind == LVL_PLUS || pt->levels[0].kind == LVL_HASH))
    return 0;
  for (;;) {
    int has = next_level(&it, &s, &n);
    if (i == pt->levels.size()) return !has;
    const level* l = &pt->levels[i];
    if (l->kind == LVL_HASH) return 1;
    if (!has) return 0;
    if (l->kind != LVL_PLUS && !level_equals(l, s, n, id, id_len)) return 0;
    i++;
  }
}

}  // namespace old_certauth

namespace new_certauth {  // plugins/certauth/certauth.c now

struct pattern {
  const char* text;
  size_t len;
  int has_placeholder;
};

}  // namespace new_certauth

#ifndef TOPIC_BENCH_REPS
#define TOPIC_BENCH_REPS 20000  // calls per round: every pair, this many times
#endif

namespace {

volatile long sink;
const char* only_what = nullptr;  // argv[1]: run only the lines containing it
int only_side = 0;                // argv[2]: 1 "before", 2 "after" only (for callgrind)

// ns per call: the best of 7 rounds of `calls` calls.
double time_ns(size_t calls, const std::function<long()>& round) {
  double best = 1e18;
  for (int r = 0; r < 7; r++) {
    auto t0 = std::chrono::steady_clock::now();
    sink = sink + round();
    auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / calls);
  }
  return best;
}

void report(const char* what, size_t calls, const std::function<long()>& before,
            const std::function<long()>& after) {
  if (only_what != nullptr && std::strstr(what, only_what) == nullptr) return;
  const double b = only_side == 2 ? 0 : time_ns(calls, before);
  const double a = only_side == 1 ? 0 : time_ns(calls, after);
  std::printf("%-52s %8.1f ns %8.1f ns  %5.2fx\n", what, b, a, b / a);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) only_what = argv[1];
  if (argc > 2) only_side = std::strcmp(argv[2], "before") == 0 ? 1 : 2;
  // A fleet's topics: short levels, a few deep ones, a $SYS one, one long topic.
  std::vector<std::string> topics = {
      "devices/d0042/sensors/temp", "devices/d0042/sensors/humidity/avg",
      "devices/d0043/status",       "fleet/truck7/status",
      "$SYS/broker/uptime",         "a",
  };
  std::string long_topic;
  for (int i = 0; i < 12; i++)
    long_topic += (i ? "/" : "") + std::string("level-name-") + char('a' + i);
  topics.push_back(long_topic);
  std::vector<std::string> filters = {
      "devices/+/sensors/#",
      "devices/d0042/sensors/temp",
      "devices/d0042/#",
      "+/+/+/+",
      "#",
      "fleet/+/status",
      "$SYS/#",
      "devices/d0043/+",
      long_topic.substr(0, 60) + "/#",
  };
  const size_t reps = TOPIC_BENCH_REPS;
  const size_t pairs = topics.size() * filters.size();

  std::printf("%-52s %11s %11s  %6s\n", "", "before", "after", "speed-up");
  auto each_pair = [&](auto fn) {
    return [&, fn]() {
      long hits = 0;
      for (size_t r = 0; r < reps; r++)
        for (const auto& f : filters)
          for (const auto& t : topics)
            hits += fn(f, t);
      return hits;
    };
  };
  auto each_filter_pair = [&](auto fn) {
    return [&, fn]() {
      long hits = 0;
      for (size_t r = 0; r < reps; r++)
        for (const auto& p : filters)
          for (const auto& f : filters)
            hits += fn(p, f);
      return hits;
    };
  };
  auto each = [&](const std::vector<std::string>& strings, auto fn) {
    return [&, fn]() {
      long n = 0;
      for (size_t r = 0; r < reps; r++)
        for (const auto& s : strings)
          n += fn(s);
      return n;
    };
  };
  using S = const std::string&;
  report("core topic_matches (sessions, shared, plugin API)", reps * pairs,
         each_pair([](S f, S t) { return old_core::topic_matches(f, t); }),
         each_pair([](S f, S t) { return mqgate::topic_matches(f, t); }));
  report("core filter_covers (plugin API)", reps * filters.size() * filters.size(),
         each_filter_pair([](S p, S f) { return old_core::filter_covers(p, f); }),
         each_filter_pair([](S p, S f) { return mqgate::filter_covers(p, f); }));
  report("core is_valid_topic_name (decoder, every PUBLISH)", reps * topics.size(),
         each(topics, [](S t) { return old_core::is_valid_topic_name(t); }),
         each(topics, [](S t) { return mqgate::is_valid_topic_name(t); }));
  report("core is_valid_topic_filter (decoder, SUBSCRIBE)", reps * filters.size(),
         each(filters, [](S f) { return old_core::is_valid_topic_filter(f); }),
         each(filters, [](S f) { return mqgate::is_valid_topic_filter(f); }));
  report("acl: topic matching (every checked publish/delivery)", reps * pairs,
         each_pair([](S f, S t) { return old_acl::acl_topic_matches(f.c_str(), t.c_str()); }),
         each_pair([](S f, S t) {
           // as acl_check does it now: the topic's strlen once, the rule's length kept
           return mqtt_topic_matches(f.data(), f.size(), t.c_str(), std::strlen(t.c_str()));
         }));

  // certauth: a device's publishes against its allowed_topics
  const char* const patterns[] = {"devices/{device_id}/#", "fleet/{device_id}/+/status",
                                  "broadcast/#", "pre-{device_id}-x/y"};
  std::vector<old_certauth::pattern> compiled;
  std::vector<new_certauth::pattern> checked;
  for (const char* p : patterns) {
    compiled.push_back(old_certauth::compile(p));
    checked.push_back({p, std::strlen(p), std::strchr(p, '{') != nullptr});
  }
  const char* id = "d0042";
  report(
      "certauth: publish checked against allowed_topics", reps * topics.size() * checked.size(),
      [&]() {
        long hits = 0;
        for (size_t r = 0; r < reps; r++)
          for (const auto& t : topics) {
            const size_t id_len = std::strlen(id);  // per check, as certauth did
            for (const auto& p : compiled)
              hits += old_certauth::pattern_matches(&p, t.c_str(), id, id_len);
          }
        return hits;
      },
      [&]() {
        long hits = 0;
        for (size_t r = 0; r < reps; r++)
          for (const auto& t : topics) {
            // per check, as certauth does: the id's and the topic's length
            const mqtt_topic_placeholder device = {"{device_id}", 11, id, std::strlen(id)};
            const size_t tn = std::strlen(t.c_str());
            for (const auto& p : checked)
              hits += mqtt_topic_matches_with(p.text, p.len, t.c_str(), tn,
                                              p.has_placeholder ? &device : nullptr);
          }
        return hits;
      });
  return 0;
}
