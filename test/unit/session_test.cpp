#include <doctest/doctest.h>

#include "broker/session.hpp"
#include "fake_client.hpp"

using namespace mqgate;
using namespace mqgate::test;

TEST_CASE("packet identifiers skip those in flight and wrap past 0") {
  LimitsConfig limits;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  ListenerConfig listener;
  FakeClient client(broker, &listener);
  Session s("id", false);
  SessionLimits sl{3, 100};
  DeliveryStats stats;
  s.attach(&client, sl, stats);
  auto msg = Message::create("t", "p", 1, false);
  for (int i = 0; i < 70000; ++i) {
    s.deliver(msg, 1, false, sl, 1 << 30, stats);
    auto out = client.take();
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].packet_id != 0);
    REQUIRE(s.on_puback(out[0].packet_id, sl, stats));
  }
  CHECK(s.inflight_count() == 0);
}

TEST_CASE("QoS 0 is dropped for an offline session and past the backlog limit") {
  Session s("id", false);
  DeliveryStats stats;
  s.deliver_qos0("t", "p", false, 100, stats);
  CHECK(stats.messages_dropped == 1);
  SessionLimits sl;
  s.deliver(Message::create("t", "p", 1, false), 1, false, sl, 100, stats);
  CHECK(s.queued_count() == 1);
}

TEST_CASE("subscription list replaces QoS and removes") {
  Session s("id", true);
  CHECK(s.add_subscription("a", 0));
  CHECK_FALSE(s.add_subscription("a", 2));
  REQUIRE(s.subscription_count() == 1);
  s.for_each_subscription([](const std::string& filter, uint8_t qos) {
    CHECK(filter == "a");
    CHECK(qos == 2);
  });
  CHECK(s.remove_subscription("a"));
  CHECK_FALSE(s.remove_subscription("a"));
}

TEST_CASE("a queue that never empties is compacted: ack one, queue one, forever") {
  LimitsConfig limits;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  ListenerConfig listener;
  FakeClient client(broker, &listener);
  Session s("id", false);
  SessionLimits sl{1, 1000};
  DeliveryStats stats;
  s.attach(&client, sl, stats);
  auto msg = Message::create("t", "p", 1, false);
  for (int i = 0; i < 10; ++i) s.deliver(msg, 1, false, sl, 1 << 30, stats);
  size_t peak = 0;
  for (int i = 0; i < 200000; ++i) {
    auto out = client.take();
    REQUIRE(out.size() == 1);
    REQUIRE(s.on_puback(out[0].packet_id, sl, stats));
    s.deliver(msg, 1, false, sl, 1 << 30, stats);
    peak = std::max(peak, s.queue_capacity());
  }
  CHECK(s.queued_count() == 9);
  CHECK(stats.messages_dropped == 0);
  CHECK(peak <= 64);
}

TEST_CASE("offline sessions come out in expiry order, whatever order they were listed in") {
  std::vector<std::unique_ptr<Session>> sessions;
  OfflineSessions offline;
  // Expiry times out of order, with ties; then some removed and some rescheduled.
  const uint64_t due[] = {50, 10, 40, 10, 30, 70, 20, 60, 0, 90};
  for (size_t i = 0; i < std::size(due); ++i) {
    sessions.push_back(std::make_unique<Session>("s" + std::to_string(i), false));
    offline.schedule(sessions.back().get(), due[i]);
  }
  offline.remove(sessions[2].get());          // 40
  offline.remove(sessions[2].get());          // a no-op: not listed any more
  offline.schedule(sessions[9].get(), 5);     // 90 -> 5
  offline.schedule(sessions[8].get(), 100);   // 0 -> 100
  std::vector<uint64_t> order;
  while (!offline.empty()) {
    Session* s = offline.front();
    order.push_back(s->expires_at_ms());
    offline.remove(s);
  }
  CHECK(order == std::vector<uint64_t>{5, 10, 10, 20, 30, 50, 60, 70, 100});
}
