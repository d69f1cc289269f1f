// plugins/common/mqtt_topic.h, the one topic matcher of the core (core/mqtt/topic.cpp)
// and the plugins (acl, certauth), against a naive reference written from the
// specification's words: validation on random strings, matching on every pair of a
// random filter and a universe topic, covers and intersects on every pair of random
// filters by brute force over that universe.
//
// The random filters come from a fixed seed (printed with every failure); set
// MQGATE_TOPIC_SEED to try another.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/mqtt_topic.h"
#include "mqtt/topic.hpp"

namespace {

// ---- the reference ----------------------------------------------------------------

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> levels;
  size_t start = 0;
  for (;;) {
    size_t slash = s.find('/', start);
    if (slash == std::string::npos) {
      levels.push_back(s.substr(start));
      return levels;
    }
    levels.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

// [MQTT-4.7.3-1] at least one character; [MQTT-4.7.1-1] no wildcard in a topic name.
bool ref_name_valid(const std::string& t) {
  return !t.empty() && t.find('+') == std::string::npos && t.find('#') == std::string::npos;
}

// [MQTT-4.7.3-1]; [MQTT-4.7.1-3] '+' occupies a whole level; [MQTT-4.7.1-2] '#' on its
// own or after a '/', and the last character.
bool ref_filter_valid(const std::string& f) {
  if (f.empty()) return false;
  const auto levels = split(f);
  for (size_t i = 0; i < levels.size(); i++) {
    const std::string& l = levels[i];
    if (l.find('+') != std::string::npos && l != "+") return false;
    if (l.find('#') != std::string::npos && (l != "#" || i + 1 != levels.size())) return false;
  }
  return true;
}

// Filter levels f[i..] against topic levels t[j..], recursively: '#' takes zero or more
// levels (zero: the parent), '+' exactly one, a literal an equal one.
bool ref_match_levels(const std::vector<std::string>& f, size_t i,
                      const std::vector<std::string>& t, size_t j) {
  if (i == f.size()) return j == t.size();
  if (f[i] == "#")
    return ref_match_levels(f, i + 1, t, j) || (j < t.size() && ref_match_levels(f, i, t, j + 1));
  if (j == t.size()) return false;
  return (f[i] == "+" || f[i] == t[j]) && ref_match_levels(f, i + 1, t, j + 1);
}

// [MQTT-4.7.2-1]: a filter starting with a wildcard matches no topic starting with '$'.
bool ref_matches(const std::vector<std::string>& f, const std::string& topic,
                 const std::vector<std::string>& t) {
  if (topic[0] == '$' && (f[0] == "+" || f[0] == "#")) return false;
  return ref_match_levels(f, 0, t, 0);
}

// A filter level for the placeholder tests: its text, and whether it is literal even
// when it reads "+" or "#" (a level that held the placeholder).
struct RefLevel {
  std::string text;
  bool literal;
};

// The filter's levels with each "{d}" replaced by `value`; such levels stay literal.
std::vector<RefLevel> ref_substitute(const std::string& f, const std::string& value) {
  std::vector<RefLevel> out;
  for (std::string level : split(f)) {
    bool held = false;
    for (size_t at; (at = level.find("{d}")) != std::string::npos; held = true)
      level.replace(at, 3, value);
    out.push_back({level, held || (level != "+" && level != "#")});
  }
  return out;
}

bool ref_match_levels(const std::vector<RefLevel>& f, size_t i, const std::vector<std::string>& t,
                      size_t j) {
  if (i == f.size()) return j == t.size();
  if (!f[i].literal && f[i].text == "#")
    return ref_match_levels(f, i + 1, t, j) || (j < t.size() && ref_match_levels(f, i, t, j + 1));
  if (j == t.size()) return false;
  return ((!f[i].literal && f[i].text == "+") || f[i].text == t[j]) &&
         ref_match_levels(f, i + 1, t, j + 1);
}

bool ref_matches(const std::vector<RefLevel>& f, const std::string& topic,
                 const std::vector<std::string>& t) {
  if (topic[0] == '$' && !f[0].literal) return false;
  return ref_match_levels(f, 0, t, 0);
}

// Every string of 1..depth levels over `levels` with '#' only last, and valid as `valid`
// says.
std::vector<std::string> all_strings(const std::vector<std::string>& levels, size_t depth,
                                     bool (*valid)(const std::string&)) {
  std::vector<std::string> out, frontier = {""};
  for (size_t d = 1; d <= depth; d++) {
    std::vector<std::string> next;
    for (const auto& prefix : frontier) {
      if (d > 1 && (prefix == "#" || prefix.ends_with("/#"))) continue;
      for (const auto& level : levels)
        next.push_back(d == 1 ? level : prefix + "/" + level);
    }
    for (const auto& s : next)
      if (valid(s)) out.push_back(s);
    frontier = std::move(next);
  }
  return out;
}

// ---- the universe -----------------------------------------------------------------

// Filters are built from these levels, at most kFilterDepth of them ('#' only last).
const std::vector<std::string> kFilterLevels = {"", "a", "b", "$x", "+", "#"};
constexpr size_t kFilterDepth = 5;

// Topics: every string of 1..kFilterDepth + 1 levels over the filters' literals and
// "z" (the empty topic excepted). Why that is every topic that can tell two filters
// apart (matched by one and not the other, or by both):
//  - A filter looks at a topic level only to compare it with its own literal at that
//    position, and at the first level also to see whether it starts with '$'. So a
//    level equal to no literal behaves like "z"; except a first level starting with '$'
//    and equal to no literal, which no filter here matches (a wildcard skips it, a
//    literal differs), so leaving it out loses no witness.
//  - A topic deeper than both filters is matched by a filter only through its '#',
//    which decides by the levels before it. Cut after kFilterDepth + 1 levels, such a
//    topic stays deeper than both filters and keeps its answers; and having two levels
//    at least, it does not become the empty topic.
constexpr size_t kTopicDepth = kFilterDepth + 1;
const std::vector<std::string> kTopicLevels = {"", "a", "b", "$x", "z"};

std::vector<std::string> all_topics() {
  std::vector<std::string> out, frontier = {""};
  for (size_t depth = 1; depth <= kTopicDepth; depth++) {
    std::vector<std::string> next;
    for (const auto& prefix : frontier)
      for (const auto& level : kTopicLevels)
        next.push_back(depth == 1 ? level : prefix + "/" + level);
    for (const auto& t : next)
      if (!t.empty()) out.push_back(t);
    frontier = std::move(next);
  }
  return out;
}

uint64_t seed() {
  const char* env = std::getenv("MQGATE_TOPIC_SEED");
  return env ? std::strtoull(env, nullptr, 0) : 20240611;
}

std::string random_filter(std::mt19937_64& rng) {
  for (;;) {
    const size_t depth = 1 + rng() % kFilterDepth;
    std::string f;
    for (size_t i = 0; i < depth; i++) {
      const std::string& level = kFilterLevels[rng() % kFilterLevels.size()];
      f += (i ? "/" : "") + level;
      if (level == "#") break;  // '#' ends a filter
    }
    if (!f.empty()) return f;  // "" is no filter
  }
}

using Bits = std::vector<uint64_t>;

bool m(const char* f, const char* t) {
  return mqtt_topic_matches(f, std::strlen(f), t, std::strlen(t)) != 0;
}
bool covers(const std::string& p, const std::string& f) {
  return mqtt_topic_covers(p.data(), p.size(), f.data(), f.size()) != 0;
}
bool intersects(const std::string& a, const std::string& b) {
  return mqtt_topic_intersects(a.data(), a.size(), b.data(), b.size()) != 0;
}

}  // namespace

TEST_CASE("validation agrees with the reference on random strings") {
  const uint64_t s = seed();
  INFO("seed ", s, " (MQGATE_TOPIC_SEED)");
  std::mt19937_64 rng(s);
  const char alphabet[] = {'a', '/', '+', '#', '$', '\0'};
  size_t names = 0, filters = 0;
  for (int n = 0; n < 20000; n++) {
    std::string str;
    const size_t len = rng() % 7;
    for (size_t i = 0; i < len; i++)
      str += alphabet[rng() % sizeof alphabet];
    INFO("string \"", str, "\" (", str.size(), " bytes)");
    const bool name = ref_name_valid(str), filter = ref_filter_valid(str);
    CHECK((mqtt_topic_name_valid(str.data(), str.size()) != 0) == name);
    CHECK((mqtt_topic_filter_valid(str.data(), str.size()) != 0) == filter);
    CHECK(mqgate::is_valid_topic_name(str) == name);
    CHECK(mqgate::is_valid_topic_filter(str) == filter);
    names += name;
    filters += filter;
  }
  CHECK(names > 1000);
  CHECK(filters > names);
  // The empty string_view has no buffer: nothing may be read from it.
  CHECK_FALSE(mqtt_topic_name_valid(nullptr, 0));
  CHECK_FALSE(mqtt_topic_filter_valid(nullptr, 0));
  CHECK_FALSE(mqtt_topic_matches(nullptr, 0, "a", 1));
  CHECK_FALSE(mqtt_topic_covers("#", 1, nullptr, 0));
  CHECK_FALSE(mqtt_topic_intersects(nullptr, 0, "#", 1));
}

TEST_CASE("matches, covers and intersects agree with the reference, by brute force") {
  const uint64_t s = seed();
  INFO("seed ", s, " (MQGATE_TOPIC_SEED)");
  std::mt19937_64 rng(s);

  const std::vector<std::string> topics = all_topics();
  std::vector<std::vector<std::string>> topic_levels;
  for (const auto& t : topics) {
    REQUIRE(ref_name_valid(t));
    topic_levels.push_back(split(t));
  }

  // The cases the three old matchers disagreed on, then random filters.
  std::set<std::string> seen;
  std::vector<std::string> filters;
  for (const char* f : {"#", "/#", "+/#", "+/+/#", "/+/#", "+", "/", "$x/#", "+/$x"})
    if (seen.insert(f).second) filters.push_back(f);
  while (filters.size() < 400) {
    std::string f = random_filter(rng);
    if (seen.insert(f).second) filters.push_back(f);
  }

  // matches: every filter against every topic of the universe
  const size_t words = (topics.size() + 63) / 64;
  std::vector<Bits> matched(filters.size(), Bits(words, 0));
  size_t match_checks = 0, match_hits = 0;
  for (size_t i = 0; i < filters.size(); i++) {
    const std::string& f = filters[i];
    INFO("filter ", f);
    REQUIRE(ref_filter_valid(f));
    REQUIRE(mqtt_topic_filter_valid(f.data(), f.size()));
    const auto fl = split(f);
    for (size_t t = 0; t < topics.size(); t++) {
      const bool want = ref_matches(fl, topics[t], topic_levels[t]);
      const bool got =
          mqtt_topic_matches(f.data(), f.size(), topics[t].data(), topics[t].size()) != 0;
      if (got != want) FAIL_CHECK("matches(", f, ", ", topics[t], ") should be ", want);
      if (want) matched[i][t / 64] |= uint64_t{1} << (t % 64);
      match_checks++;
      match_hits += want;
    }
  }

  // covers and intersects: every ordered pair of filters
  size_t pairs = 0, covering = 0, intersecting = 0;
  for (size_t p = 0; p < filters.size(); p++) {
    for (size_t f = 0; f < filters.size(); f++) {
      bool cover = true, meet = false;
      for (size_t w = 0; w < words; w++) {
        if (matched[f][w] & ~matched[p][w]) cover = false;
        if (matched[f][w] & matched[p][w]) meet = true;
      }
      if (covers(filters[p], filters[f]) != cover)
        FAIL_CHECK("covers(", filters[p], ", ", filters[f], ") should be ", cover);
      if (intersects(filters[p], filters[f]) != meet)
        FAIL_CHECK("intersects(", filters[p], ", ", filters[f], ") should be ", meet);
      // The core's C++ API is the header's
      if (mqgate::filter_covers(filters[p], filters[f]) != cover)
        FAIL_CHECK("mqgate::filter_covers(", filters[p], ", ", filters[f], ") should be ", cover);
      pairs++;
      covering += cover;
      intersecting += meet;
    }
  }
  MESSAGE("seed ", s, ": ", filters.size(), " filters, ", topics.size(), " topics, ", match_checks,
          " matches (", match_hits, " true), ", pairs, " pairs (", covering, " covering, ",
          intersecting, " intersecting)");
  // Not vacuous: every answer occurs often.
  CHECK(match_hits > 10000);
  CHECK(covering > 2 * filters.size());
  CHECK(intersecting > 10 * filters.size());
  CHECK(pairs - intersecting > 10 * filters.size());
  // Every valid filter matches some topic (so covers is never vacuously true).
  for (size_t i = 0; i < filters.size(); i++) {
    bool any = false;
    for (uint64_t w : matched[i])
      any = any || w != 0;
    CHECK_MESSAGE(any, filters[i]);
  }
}

TEST_CASE("a placeholder stands for its value, literally, by brute force") {
  // Patterns: up to 3 levels over a, the empty level, '+', '#', "{d}" (a whole level) and
  // "b{d}" (part of one); subscription filters: the same without "{d}"; topics: up to 4
  // levels over every literal the patterns can become (values below) and "z", "$x" (the
  // argument of the test above: a topic level equal to no literal is like "z").
  const auto patterns = all_strings({"a", "", "+", "#", "{d}", "b{d}"}, 3, ref_filter_valid);
  const auto filters = all_strings({"a", "", "+", "#", "ba", "b"}, 3, ref_filter_valid);
  const auto topics = all_strings({"a", "", "b", "ba", "z", "$x"}, 4,
                                  [](const std::string& t) { return ref_name_valid(t); });
  std::vector<std::vector<std::string>> topic_levels;
  for (const auto& t : topics)
    topic_levels.push_back(split(t));
  std::vector<Bits> filter_matched;
  const size_t words = (topics.size() + 63) / 64;
  for (const auto& f : filters) {
    Bits b(words, 0);
    const auto fl = split(f);
    for (size_t t = 0; t < topics.size(); t++)
      if (ref_matches(fl, topics[t], topic_levels[t])) b[t / 64] |= uint64_t{1} << (t % 64);
    filter_matched.push_back(b);
  }
  size_t matched = 0, covered = 0;
  // "+" and "#" must stay literal; "/" matches no level; "" is an empty piece.
  for (const std::string value : {"a", "", "+", "#", "/", "$x"}) {
    const mqtt_topic_placeholder ph = {"{d}", 3, value.data(), value.size()};
    for (const auto& p : patterns) {
      const auto pl = ref_substitute(p, value);
      Bits mine(words, 0);
      for (size_t t = 0; t < topics.size(); t++) {
        const bool want = ref_matches(pl, topics[t], topic_levels[t]);
        if (want) mine[t / 64] |= uint64_t{1} << (t % 64);
        matched += want;
        if ((mqtt_topic_matches_with(p.data(), p.size(), topics[t].data(), topics[t].size(), &ph) !=
             0) != want)
          FAIL_CHECK("matches_with(", p, " {d}=", value, ", ", topics[t], ") should be ", want);
      }
      for (size_t f = 0; f < filters.size(); f++) {
        bool want = true;
        for (size_t w = 0; w < words; w++)
          if (filter_matched[f][w] & ~mine[w]) want = false;
        covered += want;
        if ((mqtt_topic_covers_with(p.data(), p.size(), filters[f].data(), filters[f].size(),
                                    &ph) != 0) != want)
          FAIL_CHECK("covers_with(", p, " {d}=", value, ", ", filters[f], ") should be ", want);
      }
    }
  }
  MESSAGE(patterns.size(), " patterns, ", filters.size(), " filters, ", topics.size(),
          " topics: ", matched, " matches, ", covered, " covering pairs");
  CHECK(matched > 1000);
  CHECK(covered > 1000);
}

TEST_CASE("the core's C++ API answers from the header") {
  for (const char* f : {"#", "+/#", "a/+", "$x/#", "/#"})
    for (const char* t : {"a", "a/b", "$x", "$x/y", "/", "/a"})
      CHECK(mqgate::topic_matches(f, t) == m(f, t));
}

TEST_CASE("the cases the three old matchers disagreed on") {
  // "/#" matches every topic of two levels or more with an empty first level; its parent
  // would be "", which is not a topic [MQTT-4.7.3-1]. "+/+/#" matches all of those.
  CHECK(mqgate::filter_covers("+/+/#", "/#"));  // the core said no
  CHECK(covers("+/+/#", "/#"));
  CHECK(covers("/+/#", "/#"));
  CHECK_FALSE(covers("/+", "/#"));   // "/a/b"
  CHECK_FALSE(covers("+/+", "/#"));  // "/a/b"
  // "#" matches every topic not starting with '$', each of one level or more: "+/#"
  // covers it (certauth said no), "+/+/#" does not ("a").
  CHECK(covers("+/#", "#"));
  CHECK_FALSE(covers("+/+/#", "#"));
  CHECK_FALSE(intersects("/#", "+"));  // the only candidate is ""
  CHECK(intersects("/#", "/"));        // "/": two empty levels
  CHECK(intersects("/#", "+/+"));      // "/a"
}
