#include "client/outbound_aliases.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>

using mqgate::OutboundAliases;

namespace {
// What a client learns from the wire: alias -> topic, as 3.3.2.3.4 has it.
struct ClientView {
  std::map<uint16_t, std::string> table;
  std::string receive(const std::string& topic, OutboundAliases::Use u) {
    if (u.alias == 0) return topic;
    if (u.with_topic) {
      table[u.alias] = topic;
      return topic;
    }
    REQUIRE(table.count(u.alias) == 1);
    return table[u.alias];
  }
};
}  // namespace

TEST_CASE("the first PUBLISH of a topic sets an alias, later ones use it alone") {
  OutboundAliases a(10);
  auto first = a.use("sensors/1/temp");
  CHECK(first.alias == 1);
  CHECK(first.with_topic);
  auto again = a.use("sensors/1/temp");
  CHECK(again.alias == 1);
  CHECK_FALSE(again.with_topic);
  auto other = a.use("sensors/2/temp");
  CHECK(other.alias == 2);
  CHECK(other.with_topic);
}

TEST_CASE("no alias past what the client accepts or for topics too short to gain") {
  OutboundAliases none(0);
  CHECK(none.use("some/topic").alias == 0);
  OutboundAliases a(1);
  CHECK(a.use("abc").alias == 0);  // 3 bytes: the alias would cost as much
  CHECK(a.use(std::string(OutboundAliases::kMaxTopic + 1, 'x')).alias == 0);
  CHECK(a.use("a/b/c").alias == 1);
}

TEST_CASE("aliases never exceed the client's maximum nor the broker's") {
  OutboundAliases small(3);
  OutboundAliases big(65535);
  for (int i = 0; i < 1000; i++) {
    const std::string t = "topic/" + std::to_string(i);
    auto u = small.use(t);
    CHECK(u.alias >= 1);
    CHECK(u.alias <= 3);
    auto v = big.use(t);
    CHECK(v.alias <= OutboundAliases::kMaxAliases);
  }
  CHECK(small.size() == 3);
  CHECK(big.size() == OutboundAliases::kMaxAliases);
}

TEST_CASE("a topic in steady use keeps its alias while one-off topics take turns") {
  OutboundAliases a(4);
  ClientView client;
  uint16_t hot = 0;
  for (int i = 0; i < 200; i++) {
    auto u = a.use("hot/topic");
    CHECK(client.receive("hot/topic", u) == "hot/topic");
    if (i == 0) hot = u.alias;
    if (i > 0) {
      CHECK(u.alias == hot);
      CHECK_FALSE(u.with_topic);
    }
    const std::string cold = "cold/" + std::to_string(i);
    CHECK(client.receive(cold, a.use(cold)) == cold);
  }
}

TEST_CASE("the byte budget bounds what is kept") {
  OutboundAliases a(OutboundAliases::kMaxAliases);
  ClientView client;
  size_t aliased = 0;
  for (int i = 0; i < 200; i++) {
    std::string t(1000, 'a');
    t += std::to_string(i);
    auto u = a.use(t);
    if (u.alias) aliased++;
    CHECK(client.receive(t, u) == t);
  }
  CHECK(aliased > 0);
  CHECK(a.size() <= OutboundAliases::kMaxBytes / 1000);
}

TEST_CASE("whatever the sequence, the client always resolves the right topic") {
  OutboundAliases a(5);
  ClientView client;
  uint32_t seed = 12345;
  for (int i = 0; i < 5000; i++) {
    seed = seed * 1103515245u + 12345u;
    const std::string t = "t/" + std::to_string((seed >> 16) % 9);
    CHECK(client.receive(t, a.use(t)) == t);
  }
}
