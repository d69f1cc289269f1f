#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/router.hpp"
#include "broker/session.hpp"
#include "broker/shared_subscriptions.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/topic.hpp"

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

// --- shared subscriptions ($share/<ShareName>/<filter>) ---------------------------------

TEST_CASE("shared filters: ShareName and filter parts, and the invalid forms") {
  SharedFilter p;
  CHECK(parse_shared_filter("a/b", p) == ShareParse::kNotShared);
  CHECK(parse_shared_filter("$sharex/g/t", p) == ShareParse::kNotShared);
  REQUIRE(parse_shared_filter("$share/g/a/+/#", p) == ShareParse::kValid);
  CHECK(p.share == "g");
  CHECK(p.filter == "a/+/#");
  REQUIRE(parse_shared_filter("$share/g//", p) == ShareParse::kValid);  // filter "/"
  CHECK(p.filter == "/");
  // [MQTT-4.8.2-1], [MQTT-4.8.2-2]
  for (const char* bad : {"$share/", "$share/g", "$share//t", "$share/+/t", "$share/#", "$share/g/",
                          "$share/a+/t", "$share/#/t"})
    CHECK_MESSAGE(parse_shared_filter(bad, p) == ShareParse::kInvalid, bad);
}

TEST_CASE("shared groups: identity is (ShareName, filter); a group goes with its last member") {
  SharedSubscriptions sh;
  Session a("a", true), b("b", true);
  SharedFilter g1, g2;
  REQUIRE(parse_shared_filter("$share/g1/t/+", g1) == ShareParse::kValid);
  REQUIRE(parse_shared_filter("$share/g2/t/+", g2) == ShareParse::kValid);
  CHECK(sh.empty());
  CHECK(sh.subscribe(&a, "$share/g1/t/+", g1, 1) == SharedSubscriptions::AddResult::kAdded);
  CHECK(sh.subscribe(&a, "$share/g1/t/+", g1, 2) == SharedSubscriptions::AddResult::kReplaced);
  CHECK(sh.subscribe(&b, "$share/g1/t/+", g1, 0) == SharedSubscriptions::AddResult::kAdded);
  CHECK(sh.subscribe(&b, "$share/g2/t/+", g2, 0) == SharedSubscriptions::AddResult::kAdded);
  CHECK(sh.group_count() == 2);
  const auto& m = sh.matches("t/x");
  REQUIRE(m.size() == 2);  // each group once
  CHECK(sh.matches("u/x").empty());
  CHECK(sh.matches("t").empty());
  const auto* grp = sh.find("$share/g1/t/+");
  REQUIRE(grp != nullptr);
  REQUIRE(grp->members.size() == 2);
  CHECK(grp->members[0].qos == 2);
  const uint16_t id = grp->id;
  CHECK(sh.group(id) == grp);
  CHECK(sh.unsubscribe(&a, "$share/g1/t/+", g1) == id);
  CHECK(sh.unsubscribe(&a, "$share/g1/t/+", g1) == 0);
  CHECK(sh.unsubscribe(&b, "$share/g1/t/+", g1) == id);
  CHECK(sh.group(id) == nullptr);
  CHECK(sh.find("$share/g1/t/+") == nullptr);
  CHECK(sh.matches("t/x").size() == 1);
  CHECK(sh.unsubscribe(&b, "$share/g2/t/+", g2) != 0);
  CHECK(sh.empty());
  CHECK(sh.matches("t/x").empty());
}

TEST_CASE("shared groups: round robin skips members that cannot take a message") {
  SharedSubscriptions sh;
  Session a("a", true), b("b", true), c("c", true);
  SharedFilter f;
  REQUIRE(parse_shared_filter("$share/g/t", f) == ShareParse::kValid);
  for (Session* s : {&a, &b, &c})
    sh.subscribe(s, "$share/g/t", f, 1);
  auto& g = *static_cast<SharedSubscriptions::Group*>(sh.matches("t").front());
  auto all = [](const SharedSubscriptions::Member&) { return true; };
  std::vector<Session*> order;
  for (int i = 0; i < 6; ++i)
    order.push_back(sh.choose(g, nullptr, all)->session);
  CHECK(order == std::vector<Session*>{&a, &b, &c, &a, &b, &c});
  // b cannot take it: a and c alternate.
  auto not_b = [&](const SharedSubscriptions::Member& m) { return m.session != &b; };
  order.clear();
  for (int i = 0; i < 4; ++i)
    order.push_back(sh.choose(g, nullptr, not_b)->session);
  CHECK(order == std::vector<Session*>{&a, &c, &a, &c});
  // Nobody can: round robin anyway, never the excluded one.
  auto none = [](const SharedSubscriptions::Member&) { return false; };
  order.clear();
  for (int i = 0; i < 4; ++i)
    order.push_back(sh.choose(g, &a, none)->session);
  CHECK(order == std::vector<Session*>{&b, &c, &b, &c});
  // Only the excluded member: nobody.
  sh.unsubscribe(&b, "$share/g/t", f);
  sh.unsubscribe(&c, "$share/g/t", f);
  CHECK(sh.choose(g, &a, all) == nullptr);
  CHECK(sh.choose(g, nullptr, all)->session == &a);
}

TEST_CASE("shared groups: ids of gone groups are reused") {
  SharedSubscriptions sh;
  Session a("a", true);
  SharedFilter f1, f2, f3;
  parse_shared_filter("$share/g/1", f1);
  parse_shared_filter("$share/g/2", f2);
  parse_shared_filter("$share/g/3", f3);
  sh.subscribe(&a, "$share/g/1", f1, 0);
  sh.subscribe(&a, "$share/g/2", f2, 0);
  const uint16_t id1 = sh.find("$share/g/1")->id;
  CHECK(id1 != 0);
  CHECK(sh.find("$share/g/2")->id != id1);
  sh.unsubscribe(&a, "$share/g/1", f1);
  sh.subscribe(&a, "$share/g/3", f3, 0);
  CHECK(sh.find("$share/g/3")->id == id1);
}

TEST_CASE("shared groups: a member's messages taken back are the unacknowledged ones") {
  Session s("m", true);
  SessionLimits limits;
  DeliveryStats stats;
  // Offline: queued. Two through group 7, one through no group, one through group 9.
  auto msg = [](const char* p) { return Message::create("t", p, 1, false); };
  s.deliver(msg("a"), 1, false, limits, 0, stats, 7);
  s.deliver(msg("b"), 1, false, limits, 0, stats, 0);
  s.deliver(msg("c"), 1, false, limits, 0, stats, 9);
  s.deliver(msg("d"), 1, false, limits, 0, stats, 7);
  CHECK(stats.queued_now == 4);
  auto taken = s.take_shared([](uint16_t id) { return id == 7; }, stats);
  REQUIRE(taken.size() == 2);
  CHECK(taken[0].msg->payload() == "a");
  CHECK(taken[1].msg->payload() == "d");
  CHECK(s.queued_count() == 2);
  CHECK(stats.queued_now == 2);
  s.untag_shared(9);
  CHECK(s.take_shared([](uint16_t) { return true; }, stats).empty());
  // Taking nothing leaves every message where it was, in order.
  std::string left;
  s.for_each_held_message([&](const Message& m) { left += m.payload(); });
  CHECK(left == "bc");
  CHECK(s.queued_count() == 2);
}

TEST_CASE("a moved message loses the Subscription Identifiers of its former member") {
  const MessagePtr plain = Message::create("t", "p", 1, false);
  CHECK(without_subscription_ids(plain).get() == plain.get());
  codec::Properties p;
  p.content_type = "text/plain";
  p.user_properties.emplace_back("k", "v");
  const MessagePtr m = Message::create("t", "p", 1, true, mqtt5::forwarded_properties(p), 12345);
  const uint32_t ids[] = {5, 300};
  const MessagePtr with = mqtt5::with_subscription_ids(*m, ids);
  CHECK(with->props() != m->props());
  const MessagePtr back = without_subscription_ids(with);
  CHECK(back->props() == m->props());
  CHECK(back->payload() == "p");
  CHECK(back->retain());
  CHECK(back->expires_at_ms() == 12345);
}
