#include <doctest/doctest.h>

#include <set>

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
  SessionLimits sl{4, 100};
  DeliveryStats stats;
  s.attach(&client, sl, stats);
  auto msg = Message::create("t", "p", 1, false);
  // These stay in flight (never acknowledged) while every other message is acknowledged
  // before the next is sent; twice round the identifier space, the two low ones and one
  // in the middle have to be skipped each time, and 0 is never used.
  const std::set<uint16_t> kept_ids = {1, 2, 40000};
  std::set<uint16_t> in_flight;
  uint16_t expected = 1;
  for (int i = 0; i < 2 * 65536; ++i) {
    s.deliver(msg, 1, false, sl, 1 << 30, stats);
    auto out = client.take();
    REQUIRE(out.size() == 1);
    const uint16_t id = out[0].packet_id;
    REQUIRE(id == expected);
    REQUIRE(in_flight.count(id) == 0);
    if (kept_ids.count(id) != 0) {
      in_flight.insert(id);
    } else {
      REQUIRE(s.on_puback(id, sl, stats));
    }
    // The next identifier: the following one, past 0 and those still in flight.
    do {
      ++expected;
    } while (expected == 0 || in_flight.count(expected) != 0);
  }
  CHECK(in_flight == kept_ids);
  CHECK(s.inflight_count() == kept_ids.size());
}

TEST_CASE("QoS 0 is dropped for an offline session and past the backlog limit") {
  SUBCASE("offline: QoS 0 dropped, QoS 1 queued") {
    Session s("id", false);
    DeliveryStats stats;
    s.deliver_qos0("t", "p", false, 100, stats);
    CHECK(stats.messages_dropped == 1);
    CHECK(stats.dropped_qos0_offline == 1);
    SessionLimits sl;
    s.deliver(Message::create("t", "p", 1, false), 1, false, sl, 100, stats);
    CHECK(s.queued_count() == 1);
    CHECK(stats.messages_dropped == 1);
  }
  SUBCASE("online: QoS 0 goes out until the unsent output is over the limit, QoS 1 waits") {
    LimitsConfig limits;
    AllowAllHooks hooks;
    Broker broker(limits, hooks);
    ListenerConfig listener;
    FakeClient client(broker, &listener);
    Session s("id", false);
    SessionLimits sl{1, 100};
    DeliveryStats stats;
    s.attach(&client, sl, stats);
    const std::string payload(40, 'x');
    const size_t packet = publish_packet("t", payload).size();  // 45 bytes
    const size_t max_backlog = 2 * packet;
    // 0, 45 and 90 bytes unsent (90: at the limit, not over it): sent.
    for (int i = 0; i < 3; ++i)
      s.deliver_qos0("t", payload, false, max_backlog, stats);
    CHECK(client.pending_output() == 3 * packet);
    CHECK(stats.messages_sent == 3);
    CHECK(stats.messages_dropped == 0);
    // 135 bytes unsent, over the limit: dropped and counted as such, nothing written.
    s.deliver_qos0("t", payload, false, max_backlog, stats);
    s.deliver(Message::create("t", payload, 0, false), 0, false, sl, max_backlog, stats);
    CHECK(client.pending_output() == 3 * packet);
    CHECK(stats.messages_dropped == 2);
    CHECK(stats.dropped_qos0_backlog == 2);
    CHECK(stats.dropped_qos0_offline == 0);
    // QoS 1 is never dropped for the backlog: it goes into the window, then the queue.
    s.deliver(Message::create("t", payload, 1, false), 1, false, sl, max_backlog, stats);
    s.deliver(Message::create("t", payload, 1, false), 1, false, sl, max_backlog, stats);
    CHECK(s.inflight_count() == 1);
    CHECK(s.queued_count() == 1);
    CHECK(stats.messages_dropped == 2);
    // Once the client has read its output, QoS 0 goes out again.
    auto out = client.take();
    CHECK(out.size() == 4);
    s.deliver_qos0("t", payload, false, max_backlog, stats);
    out = client.take();
    REQUIRE(out.size() == 1);
    CHECK(out[0].qos == 0);
    CHECK(out[0].payload == payload);
    CHECK(stats.messages_dropped == 2);
  }
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
    sessions.push_back(
        std::make_unique<Session>(std::string("s").append(std::to_string(i)), false));
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
