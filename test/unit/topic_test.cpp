#include <doctest/doctest.h>

#include "topic.hpp"

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
