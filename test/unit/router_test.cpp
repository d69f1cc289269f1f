#include <doctest/doctest.h>

#include <functional>
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

namespace {

// The sliced walk, `budget` units per slice; also checks every slice stays in budget.
std::vector<std::string> retained_sliced(const Router& r, std::string_view filter, size_t budget,
                                         size_t* slices = nullptr,
                                         const std::function<void()>& between = nullptr) {
  std::vector<std::string> out;
  Router::RetainedCursor cursor;
  size_t n = 0;
  for (;;) {
    size_t left = budget;
    const bool done = r.retained_matching(filter, cursor, left,
                                          [&](const MessagePtr& m) { out.emplace_back(m->topic()); });
    ++n;
    REQUIRE(n < 100000);
    if (done) break;
    CHECK(left == 0);
    if (between) between();
  }
  if (slices) *slices = n;
  return out;
}

}  // namespace

TEST_CASE("sliced retained walk: same messages, once each, whatever the budget") {
  Router r;
  const char* topics[] = {"a",     "a/b",   "a/b/c", "a/c",   "a/b/d",   "b/x",   "b/y/z",
                          "$SYS/v", "$x/a", "/",     "//",    "/a",      "c/a/b", "c/b/b",
                          "c/b",   "a/+x",  "z",     "a/b/c/d/e/f"};
  for (const char* t : topics) r.retain(Message::create(t, "p", 0, true));
  const char* filters[] = {"#",   "a/#",  "+",     "+/+",   "a/+/c", "+/b/#", "$SYS/#", "$x/+",
                           "/#",  "+/#",  "c/+/b", "a/b/c", "nope",  "a/b/c/#", "+/+/+/+/+/+"};
  for (const char* f : filters) {
    const std::set<std::string> whole = retained_topics(r, f);
    for (size_t budget : {1, 2, 3, 5, 100}) {
      auto got = retained_sliced(r, f, budget);
      CHECK_MESSAGE(std::set<std::string>(got.begin(), got.end()) == whole, f, " budget ", budget);
      CHECK_MESSAGE(got.size() == whole.size(), f, " budget ", budget, ": a message came twice");
    }
  }
}

TEST_CASE("sliced retained walk: a big store takes many slices; changes between slices are safe") {
  Router r;
  for (int i = 0; i < 3000; ++i)
    r.retain(Message::create("t/" + std::to_string(i % 30) + "/" + std::to_string(i), "p", 0, true));
  size_t slices = 0;
  auto got = retained_sliced(r, "#", 100, &slices);
  CHECK(got.size() == 3000);
  CHECK(slices > 30);
  // Clearing and adding messages (and whole branches) while a walk is paused: nothing
  // visited twice, nothing that stayed put is missed, no crash.
  int step = 0;
  auto churn = [&] {
    ++step;
    r.retain(Message::create("t/" + std::to_string(step % 30) + "/" + std::to_string(step), "", 0, true));
    r.retain(Message::create("t/new/" + std::to_string(step), "p", 0, true));
  };
  got = retained_sliced(r, "t/#", 50, nullptr, churn);
  std::set<std::string> unique(got.begin(), got.end());
  CHECK(unique.size() == got.size());
  for (int i = 1000; i < 3000; ++i) {
    const std::string t = "t/" + std::to_string(i % 30) + "/" + std::to_string(i);
    if (i > step) CHECK_MESSAGE(unique.count(t) == 1, t);
  }
}

TEST_CASE("retained store caps: count and bytes, replacing and clearing always fit") {
  Router r;
  CHECK(r.retain(Message::create("a", "12345", 0, true), 2, 100) == Router::RetainResult::kStored);
  CHECK(r.retain(Message::create("b", "12345", 0, true), 2, 100) == Router::RetainResult::kStored);
  CHECK(r.retained_bytes() == 12);
  CHECK(r.retain(Message::create("c", "1", 0, true), 2, 100) == Router::RetainResult::kRefused);
  CHECK(r.retained_count() == 2);
  CHECK(retained_topics(r, "#") == std::set<std::string>{"a", "b"});
  // Replacing within the byte budget is fine, beyond it is refused and keeps the old one.
  CHECK(r.retain(Message::create("a", std::string(80, 'x'), 0, true), 2, 100) ==
        Router::RetainResult::kStored);
  CHECK(r.retain(Message::create("b", std::string(80, 'x'), 0, true), 2, 100) ==
        Router::RetainResult::kRefused);
  r.retained_matching("b", [](const MessagePtr& m) { CHECK(m->payload() == "12345"); });
  CHECK(r.retain(Message::create("a", "", 0, true), 2, 100) == Router::RetainResult::kCleared);
  CHECK(r.retained_count() == 1);
  CHECK(r.retained_bytes() == 6);
  CHECK(r.retain(Message::create("c", "1", 0, true), 2, 100) == Router::RetainResult::kStored);
}
