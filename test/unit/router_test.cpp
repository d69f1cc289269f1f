#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "router.hpp"
#include "topic.hpp"

using namespace mqgate;

namespace {

std::map<RouteTarget*, uint8_t> match_all(Router& r, std::string_view topic) {
  std::map<RouteTarget*, uint8_t> out;
  r.match(topic, [&](RouteTarget* t, uint8_t qos) {
    CHECK_MESSAGE(out.count(t) == 0, "a target was reported twice");
    out[t] = qos;
  });
  return out;
}

std::set<std::string> retained_topics(const Router& r, std::string_view filter) {
  std::set<std::string> out;
  r.retained_matching(filter, [&](const MessagePtr& m) { out.insert(std::string(m->topic())); });
  return out;
}

}  // namespace

TEST_CASE("overlapping subscriptions are reported once, at the highest QoS") {
  Router r;
  RouteTarget a, b;
  r.subscribe(&a, "x/#", 0);
  r.subscribe(&a, "x/y", 2);
  r.subscribe(&a, "x/+", 1);
  r.subscribe(&b, "x/y", 1);
  auto m = match_all(r, "x/y");
  REQUIRE(m.size() == 2);
  CHECK(m[&a] == 2);
  CHECK(m[&b] == 1);
  CHECK(r.subscription_count() == 4);
}

TEST_CASE("subscribe again replaces the QoS; unsubscribe prunes") {
  Router r;
  RouteTarget a;
  CHECK(r.subscribe(&a, "p/q", 0));
  CHECK_FALSE(r.subscribe(&a, "p/q", 2));
  CHECK(match_all(r, "p/q")[&a] == 2);
  CHECK(r.subscription_count() == 1);
  CHECK(r.unsubscribe(&a, "p/q"));
  CHECK_FALSE(r.unsubscribe(&a, "p/q"));
  CHECK_FALSE(r.unsubscribe(&a, "never/there"));
  CHECK(match_all(r, "p/q").empty());
  CHECK(r.subscription_count() == 0);
}

TEST_CASE("'$' topics and leading wildcards") {
  Router r;
  RouteTarget all, plus, sys;
  r.subscribe(&all, "#", 0);
  r.subscribe(&plus, "+/broker/uptime", 0);
  r.subscribe(&sys, "$SYS/#", 0);
  auto m = match_all(r, "$SYS/broker/uptime");
  CHECK(m.size() == 1);
  CHECK(m.count(&sys) == 1);
  m = match_all(r, "x/broker/uptime");
  CHECK(m.size() == 2);
}

TEST_CASE("the trie agrees with topic_matches on random filters and topics") {
  std::mt19937 rng(12345);
  const char* levels[] = {"a", "b", "", "$x", "c"};
  auto random_topic = [&](bool filter) {
    std::string s;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      if (i) s += '/';
      const unsigned pick = rng() % (filter ? 7 : 5);
      if (filter && pick == 5) s += '+';
      else if (filter && pick == 6) {
        s += '#';
        break;
      } else s += levels[pick];
    }
    return s.empty() ? std::string("a") : s;  // "" is neither a topic nor a filter
  };
  Router r;
  std::vector<RouteTarget> targets(200);
  std::vector<std::pair<RouteTarget*, std::string>> subs;
  for (auto& t : targets) {
    std::string f = random_topic(true);
    REQUIRE(is_valid_topic_filter(f));
    r.subscribe(&t, f, static_cast<uint8_t>(rng() % 3));
    subs.emplace_back(&t, f);
  }
  for (int i = 0; i < 500; ++i) {
    std::string topic = random_topic(false);
    std::set<RouteTarget*> expected;
    for (auto& [t, f] : subs)
      if (topic_matches(f, topic)) expected.insert(t);
    std::set<RouteTarget*> got;
    for (auto& [t, q] : match_all(r, topic)) got.insert(t);
    INFO("topic ", topic);
    CHECK(got == expected);
  }
  for (auto& [t, f] : subs) CHECK(r.unsubscribe(t, f));
  CHECK(r.subscription_count() == 0);
}

TEST_CASE("retained store: set, replace, clear and wildcard lookup") {
  Router r;
  r.retain(Message::create("a/b", "1", 0, true));
  r.retain(Message::create("a/c", "2", 1, true));
  r.retain(Message::create("a", "3", 0, true));
  r.retain(Message::create("$SYS/x", "4", 0, true));
  r.retain(Message::create("a/b/c", "5", 0, true));
  CHECK(r.retained_count() == 5);
  CHECK(retained_topics(r, "a/+") == std::set<std::string>{"a/b", "a/c"});
  CHECK(retained_topics(r, "a/#") == std::set<std::string>{"a", "a/b", "a/c", "a/b/c"});
  CHECK(retained_topics(r, "#") == std::set<std::string>{"a", "a/b", "a/c", "a/b/c"});
  CHECK(retained_topics(r, "+") == std::set<std::string>{"a"});
  CHECK(retained_topics(r, "$SYS/#") == std::set<std::string>{"$SYS/x"});
  CHECK(retained_topics(r, "a/b") == std::set<std::string>{"a/b"});

  r.retain(Message::create("a/b", "new", 0, true));
  CHECK(r.retained_count() == 5);
  r.retained_matching("a/b", [](const MessagePtr& m) { CHECK(m->payload() == "new"); });

  r.retain(Message::create("a/b", "", 0, true));  // empty payload clears
  CHECK(r.retained_count() == 4);
  CHECK(retained_topics(r, "a/b").empty());
  CHECK(retained_topics(r, "a/b/c") == std::set<std::string>{"a/b/c"});
  r.retain(Message::create("nothing/here", "", 0, true));  // clearing nothing is fine
  CHECK(r.retained_count() == 4);
}
