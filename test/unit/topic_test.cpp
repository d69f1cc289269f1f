#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mqtt/topic.hpp"

using mqgate::filter_covers;

using mqgate::is_valid_topic_filter;
using mqgate::is_valid_topic_name;
using mqgate::topic_matches;

TEST_CASE("topic names") {
  CHECK(is_valid_topic_name("a"));
  CHECK(is_valid_topic_name("/"));
  CHECK(is_valid_topic_name("a//b"));
  CHECK(is_valid_topic_name("$SYS/x"));
  CHECK_FALSE(is_valid_topic_name(""));
  CHECK_FALSE(is_valid_topic_name("a/+"));
  CHECK_FALSE(is_valid_topic_name("a#"));
}

TEST_CASE("topic filters") {
  for (const char* ok : {"#", "+", "a/#", "a/+/b", "+/+", "/+", "+/", "a//#", "$SYS/#", "a"})
    CHECK_MESSAGE(is_valid_topic_filter(ok), ok);
  for (const char* bad : {"", "a/#/b", "a#", "#a", "a/b#", "a+", "+a/b", "a/+b", "##", "#/"})
    CHECK_MESSAGE(!is_valid_topic_filter(bad), bad);
}

TEST_CASE("matching, as the specification's examples say") {
  struct Case {
    const char* filter;
    const char* topic;
    bool match;
  };
  const Case cases[] = {
      {"sport/tennis/player1/#", "sport/tennis/player1", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
      {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
      {"sport/#", "sport", true},
      {"#", "anything/at/all", true},
      {"sport/tennis/+", "sport/tennis/player1", true},
      {"sport/tennis/+", "sport/tennis/player1/ranking", false},
      {"sport/+", "sport", false},
      {"sport/+", "sport/", true},
      {"+/+", "/finance", true},
      {"/+", "/finance", true},
      {"+", "/finance", false},
      {"a/b", "a/b", true},
      {"a/b", "a/B", false},
      {"a/b", "a/b/", false},
      {"#", "$SYS/uptime", false},
      {"+/uptime", "$SYS/uptime", false},
      {"$SYS/#", "$SYS/uptime", true},
      {"$SYS/+", "$SYS/uptime", true},
      {"a/+/#", "a/b", true},
      {"a//b", "a//b", true},
      {"a/+/b", "a//b", true},
  };
  for (const Case& c : cases) {
    INFO(c.filter, " vs ", c.topic);
    CHECK(topic_matches(c.filter, c.topic) == c.match);
  }
}

namespace {

// Every string over `levels` with 1..max_depth levels; `last_only` levels only last,
// `first_only` levels only first.
std::vector<std::string> all_strings(const std::vector<std::string>& levels, size_t max_depth,
                                     const std::vector<std::string>& last_only,
                                     const std::vector<std::string>& first_only) {
  std::vector<std::vector<std::string>> by_depth = {{""}};
  std::vector<std::string> out;
  for (size_t d = 1; d <= max_depth; ++d) {
    std::vector<std::string> next;
    for (const auto& prefix : by_depth.back()) {
      auto add = [&](const std::string& level) {
        next.push_back(d == 1 ? level : prefix + "/" + level);
      };
      for (const auto& l : levels)
        add(l);
      if (d == 1)
        for (const auto& l : first_only)
          add(l);
      for (const auto& l : last_only)
        out.push_back(d == 1 ? l : prefix + "/" + l);
    }
    out.insert(out.end(), next.begin(), next.end());
    by_depth.push_back(std::move(next));
  }
  return out;
}

}  // namespace

TEST_CASE("filter_covers agrees with a brute-force oracle over a topic universe") {
  // Topics: levels a, b, c (c stands for "any other name"), '' (empty level) and a
  // first level "$s"; deep enough to tell '#' from a run of '+'.
  std::vector<std::string> topics;
  for (auto& t : all_strings({"a", "b", "c", ""}, 4, {}, {"$s"}))
    if (is_valid_topic_name(t)) topics.push_back(t);
  // Filters and patterns: a, b, + and '$s' (first), '#' (last), up to 3 levels.
  const auto filters = all_strings({"a", "b", "+"}, 3, {"#"}, {"$s"});
  std::vector<std::vector<bool>> matched(filters.size());
  for (size_t i = 0; i < filters.size(); ++i) {
    REQUIRE(is_valid_topic_filter(filters[i]));
    for (const auto& t : topics)
      matched[i].push_back(topic_matches(filters[i], t));
  }
  size_t covered = 0;
  for (size_t p = 0; p < filters.size(); ++p) {
    for (size_t f = 0; f < filters.size(); ++f) {
      bool oracle = true;
      for (size_t t = 0; t < topics.size() && oracle; ++t)
        if (matched[f][t] && !matched[p][t]) oracle = false;
      INFO("pattern ", filters[p], " filter ", filters[f]);
      CHECK(filter_covers(filters[p], filters[f]) == oracle);
      covered += oracle;
    }
  }
  CHECK(covered > filters.size());  // more than the diagonal
}

TEST_CASE("filter_covers: the documented cases") {
  CHECK(filter_covers("a/#", "a"));
  CHECK(filter_covers("a/#", "a/+/b"));
  CHECK(filter_covers("a/+", "a/+"));
  CHECK_FALSE(filter_covers("a/b", "a/+"));
  CHECK_FALSE(filter_covers("a/+", "a/#"));
  CHECK(filter_covers("+/#", "#"));
  CHECK_FALSE(filter_covers("+/+/#", "#"));
  CHECK_FALSE(filter_covers("#", "$SYS/x"));
  CHECK(filter_covers("$SYS/#", "$SYS/x"));
  CHECK(filter_covers("#", "+/x"));
}
