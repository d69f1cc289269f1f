// FlowControl (core/broker/flow_control.hpp) on its own, with real Sessions and fake
// clients: what its header promises, through its public API only (the tables behind
// it may be re-keyed; these tests should not notice).
#include <doctest/doctest.h>

#include <algorithm>
#include <new>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define MQGATE_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MQGATE_TEST_ASAN 1
#endif
#endif
#ifdef MQGATE_TEST_ASAN
// The sanitizer runtime's own count (GCC ships no <sanitizer/allocator_interface.h>).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#else
#include <malloc.h>
#endif

#include "broker/flow_control.hpp"
#include "broker/session.hpp"
#include "fake_client.hpp"

using namespace mqgate;
using namespace mqgate::test;
using Policy = ListenerConfig::SlowSubscriber;

namespace {

// set_limits() halves these for the high-water marks and halves again for the low ones:
// held past 4 queued messages (released at 2), past 2000 queued bytes (at 1000), past
// 1000 unsent bytes (at 500).
LimitsConfig small_limits() {
  LimitsConfig l;
  l.max_queued_messages = 8;
  l.max_queued_bytes = 4000;
  l.max_outgoing_bytes = 2000;
  return l;
}

// A connected client and its session (publisher, subscriber or both). The broker never
// hears of the session: FlowControl is driven by hand, as the broker would.
struct Peer {
  Peer(Broker& broker, const ListenerConfig* listener, std::string id, const SessionLimits& sl,
       DeliveryStats& stats)
      : client(broker, listener), session(std::move(id), true) {
    session.attach(&client, sl, stats);
    client.session = &session;
  }
  ~Peer() { client.session = nullptr; }  // the broker must not detach it on close

  // Takes what the client was sent (its socket drained), noting the QoS 1 ids to ack.
  void read_output() {
    for (const OutPacket& p : client.take())
      if (p.type == codec::PacketType::kPublish && p.qos == 1) unacked.push_back(p.packet_id);
  }

  FakeClient client;
  Session session;
  std::vector<uint16_t> unacked;
};

// One place in memory for a Peer after another: a new connection at a closed one's
// address, as the allocator may well arrange.
class PeerSlot {
 public:
  PeerSlot() = default;
  PeerSlot(const PeerSlot&) = delete;
  PeerSlot& operator=(const PeerSlot&) = delete;
  ~PeerSlot() { reset(); }
  Peer& emplace(Broker& broker, const ListenerConfig* listener, std::string id,
                const SessionLimits& sl, DeliveryStats& stats) {
    reset();
    peer_ = new (storage_) Peer(broker, listener, std::move(id), sl, stats);
    return *peer_;
  }
  void reset() {
    if (peer_ != nullptr) peer_->~Peer();
    peer_ = nullptr;
  }

 private:
  alignas(Peer) unsigned char storage_[sizeof(Peer)];
  Peer* peer_ = nullptr;
};

struct Fixture {
  LimitsConfig limits = small_limits();
  AllowAllHooks hooks;
  Broker broker{limits, hooks};  // only what FakeClient needs: FlowControl stands alone
  ListenerConfig listener;
  FlowControl flow;
  SessionLimits sl{1, 1000};  // a window of 1: every further QoS 1 message is queued
  DeliveryStats stats;
  uint64_t now = 10000;

  Fixture() { flow.set_limits(limits); }

  Peer peer(std::string id, const ListenerConfig* l = nullptr) {
    return Peer(broker, l ? l : &listener, std::move(id), sl, stats);
  }

  // `to` is given one message of QoS `qos` from `from` (null: a will, $SYS, retained),
  // and FlowControl is told, as Broker::after_delivery does.
  void give(Peer& to, Client* from, uint8_t qos = 1, size_t payload_size = 1) {
    to.session.deliver(Message::create("t", std::string(payload_size, 'p'), qos, false), qos, false,
                       sl, 1 << 30, stats);
    flow.after_delivery(to.session, from, qos, now);
  }
  // Gives QoS 1 messages until `queued` wait in `to`'s queue.
  void fill(Peer& to, Client* from, size_t queued) {
    while (to.session.queued_count() < queued)
      give(to, from);
  }
  // The subscriber acknowledges its message in flight (the next one is sent and read);
  // FlowControl is told, as the broker does on an ack, unless `tell` is false.
  void ack(Peer& sub, bool tell = true) {
    sub.read_output();
    REQUIRE(!sub.unacked.empty());
    const uint16_t id = sub.unacked.front();
    sub.unacked.erase(sub.unacked.begin());
    REQUIRE(sub.session.on_puback(id, sl, stats));
    sub.read_output();
    if (tell) flow.check_drained(sub.session);
  }
  void drain_to(Peer& sub, size_t queued) {
    while (sub.session.queued_count() > queued)
      ack(sub);
  }

  std::vector<Client*> resumable() { return flow.take_resumable(); }
};

using Clients = std::vector<Client*>;

}  // namespace

TEST_CASE_FIXTURE(Fixture,
                  "a subscriber past its high-water mark of queued messages holds the "
                  "publisher; at the mark it does not") {
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 4);  // at the mark
  CHECK_FALSE(flow.active());
  CHECK_FALSE(flow.is_congested(sub.session));
  CHECK_FALSE(flow.holds(pub.client));
  CHECK_FALSE(pub.client.input_held());
  give(sub, &pub.client);  // 5 queued: past it
  REQUIRE(sub.session.queued_count() == 5);
  CHECK(flow.active());
  CHECK(flow.is_congested(sub.session));
  CHECK(flow.holds(pub.client));
  CHECK(pub.client.input_held());  // Client::hold_input()
  CHECK(flow.congested_count() == 1);
  CHECK(flow.held_count() == 1);
  CHECK_FALSE(flow.holds(sub.client));
  CHECK_FALSE(flow.has_resumable());
}

TEST_CASE_FIXTURE(Fixture, "unsent bytes past the high-water mark hold the publisher") {
  Peer pub = peer("pub"), sub = peer("sub");
  // QoS 0 messages of 306 bytes the subscriber does not read: 918 bytes unsent (under
  // the mark of 1000), then 1224.
  const size_t packet = publish_packet("t", std::string(300, 'p')).size();
  REQUIRE(3 * packet <= 1000);
  REQUIRE(4 * packet > 1000);
  for (int i = 0; i < 3; ++i)
    give(sub, &pub.client, 0, 300);
  REQUIRE(sub.client.pending_output() == 3 * packet);
  CHECK_FALSE(flow.holds(pub.client));
  CHECK_FALSE(flow.active());
  give(sub, &pub.client, 0, 300);
  REQUIRE(sub.client.pending_output() == 4 * packet);
  CHECK(flow.is_congested(sub.session));
  CHECK(flow.holds(pub.client));
  // Its socket takes everything: released (Broker::on_output_drained calls this).
  sub.read_output();
  flow.check_drained(sub.session);
  CHECK_FALSE(flow.active());
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture, "queued bytes past the high-water mark hold the publisher") {
  Peer pub = peer("pub"), sub = peer("sub");
  // 601 bytes (topic and payload) per message; the first goes into the window.
  give(sub, &pub.client, 1, 600);
  for (int i = 0; i < 3; ++i)
    give(sub, &pub.client, 1, 600);
  sub.read_output();
  REQUIRE(sub.session.queued_bytes() == 1803);
  CHECK_FALSE(flow.holds(pub.client));
  give(sub, &pub.client, 1, 600);  // 2404 bytes in 4 messages: under the count's mark
  REQUIRE(sub.session.queued_count() == 4);
  CHECK(flow.is_congested(sub.session));
  CHECK(flow.holds(pub.client));
  ack(sub);  // 1803 bytes
  CHECK(flow.holds(pub.client));
  ack(sub);  // 1202
  CHECK(flow.holds(pub.client));
  ack(sub);  // 601: at most 1000 bytes and 2 messages queued
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture, "held until the low-water mark, then resumed once") {
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  // Under the high-water mark but over the low one: still held.
  ack(sub);
  ack(sub);
  REQUIRE(sub.session.queued_count() == 3);
  CHECK(flow.holds(pub.client));
  CHECK(flow.is_congested(sub.session));
  CHECK_FALSE(flow.has_resumable());
  CHECK(resumable().empty());
  // At the low-water mark: its publisher is resumable, the subscriber is no longer
  // congested.
  ack(sub);
  REQUIRE(sub.session.queued_count() == 2);
  CHECK_FALSE(flow.holds(pub.client));
  CHECK_FALSE(flow.is_congested(sub.session));
  CHECK_FALSE(flow.active());
  CHECK(flow.has_resumable());
  CHECK(resumable() == Clients{&pub.client});
  CHECK_FALSE(flow.has_resumable());
  CHECK(resumable().empty());
  CHECK(flow.held_count() == 0);
  // Between the marks, a new delivery does not make it congested again.
  give(sub, &pub.client);
  give(sub, &pub.client);
  REQUIRE(sub.session.queued_count() == 4);
  CHECK_FALSE(flow.active());
  CHECK_FALSE(flow.holds(pub.client));
}

TEST_CASE_FIXTURE(Fixture, "nobody is held by its own subscription, nor by a will or $SYS") {
  Peer sub = peer("sub");
  fill(sub, &sub.client, 5);
  CHECK(flow.is_congested(sub.session));
  CHECK_FALSE(flow.holds(sub.client));
  give(sub, nullptr);
  CHECK(flow.is_congested(sub.session));
  CHECK(flow.held_count() == 0);
  give(sub, &sub.client);
  CHECK_FALSE(sub.client.input_held());
}

TEST_CASE_FIXTURE(Fixture,
                  "a client whose own session is congested is never held (its acks "
                  "must be read)") {
  Peer pub = peer("pub"), sub = peer("sub"), other = peer("other");
  fill(pub, &other.client, 5);  // pub is a congested subscriber too
  REQUIRE(flow.is_congested(pub.session));
  REQUIRE(flow.holds(other.client));
  fill(sub, &pub.client, 6);
  CHECK(flow.is_congested(sub.session));
  CHECK_FALSE(flow.holds(pub.client));
  // Once its own queue drained, it is held like anyone else.
  drain_to(pub, 2);
  REQUIRE_FALSE(flow.is_congested(pub.session));
  CHECK(resumable() == Clients{&other.client});
  give(sub, &pub.client);
  CHECK(flow.holds(pub.client));
}

TEST_CASE_FIXTURE(Fixture,
                  "a held client whose own session becomes congested is released, "
                  "and only once") {
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  fill(pub, nullptr, 5);  // now pub's subscribers wait for its acks
  REQUIRE(flow.is_congested(pub.session));
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
  // Its edge in sub's list is stale: sub draining resumes nobody.
  drain_to(sub, 2);
  CHECK_FALSE(flow.is_congested(sub.session));
  CHECK(resumable().empty());
  CHECK(flow.held_count() == 0);
}

TEST_CASE_FIXTURE(Fixture, "a publisher waiting on two subscribers resumes when both drained") {
  Peer pub = peer("pub"), sub1 = peer("sub1"), sub2 = peer("sub2");
  fill(sub1, &pub.client, 5);
  fill(sub2, &pub.client, 5);
  give(sub1, &pub.client);  // (a fake keeps feeding: more messages while held)
  give(sub2, &pub.client);
  REQUIRE(flow.congested_count() == 2);
  REQUIRE(flow.holds(pub.client));
  CHECK(flow.held_count() == 1);
  drain_to(sub1, 2);
  CHECK_FALSE(flow.is_congested(sub1.session));
  CHECK(flow.holds(pub.client));
  CHECK(resumable().empty());
  drain_to(sub2, 2);
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture, "two publishers on one subscriber resume together") {
  Peer pub1 = peer("pub1"), pub2 = peer("pub2"), sub = peer("sub");
  fill(sub, &pub1.client, 5);
  give(sub, &pub2.client);
  REQUIRE(flow.holds(pub1.client));
  REQUIRE(flow.holds(pub2.client));
  CHECK(flow.held_count() == 2);
  drain_to(sub, 2);
  Clients r = resumable();
  CHECK(r.size() == 2);
  CHECK(std::count(r.begin(), r.end(), &pub1.client) == 1);
  CHECK(std::count(r.begin(), r.end(), &pub2.client) == 1);
}

TEST_CASE_FIXTURE(Fixture, "a closed publisher is neither held nor resumed") {
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  flow.forget_client(pub.client);
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(flow.held_count() == 0);
  CHECK(flow.is_congested(sub.session));  // the subscriber is still slow
  drain_to(sub, 2);
  CHECK(resumable().empty());

  SUBCASE("also when it was resumable already") {
    fill(sub, &pub.client, 5);
    REQUIRE(flow.holds(pub.client));
    drain_to(sub, 2);
    REQUIRE(flow.has_resumable());
    flow.forget_client(pub.client);
    CHECK(resumable().empty());
  }
  SUBCASE("a client closing is not held any more") {
    pub.client.close("going");
    fill(sub, &pub.client, 6);
    CHECK_FALSE(flow.holds(pub.client));
  }
}

TEST_CASE_FIXTURE(Fixture,
                  "an edge left by an early release does not resume the client held "
                  "again elsewhere") {
  Peer pub = peer("pub"), sub1 = peer("sub1"), sub2 = peer("sub2");
  fill(sub1, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  // Released early: its own session became congested.
  fill(pub, nullptr, 5);
  REQUIRE(resumable() == Clients{&pub.client});
  drain_to(pub, 2);
  // Held again, by another subscriber.
  fill(sub2, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  // The first subscriber's edge is stale: its draining must not let pub go.
  drain_to(sub1, 2);
  CHECK(flow.holds(pub.client));
  CHECK(resumable().empty());
  drain_to(sub2, 2);
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture,
                  "an edge of a closed publisher does not touch a new client at the "
                  "same address") {
  Peer sub1 = peer("sub1"), sub2 = peer("sub2");
  PeerSlot slot;
  Peer* pub = &slot.emplace(broker, &listener, "old", sl, stats);
  Client* const address = &pub->client;
  fill(sub1, &pub->client, 5);
  REQUIRE(flow.holds(pub->client));
  flow.forget_client(pub->client);
  slot.reset();
  pub = &slot.emplace(broker, &listener, "new", sl, stats);
  REQUIRE(&pub->client == address);
  CHECK_FALSE(flow.holds(pub->client));
  fill(sub2, &pub->client, 5);
  REQUIRE(flow.holds(pub->client));
  drain_to(sub1, 2);  // the old client's edge
  CHECK(flow.holds(pub->client));
  CHECK(resumable().empty());
  drain_to(sub2, 2);
  CHECK(resumable() == Clients{&pub->client});
}

TEST_CASE_FIXTURE(Fixture, "take_resumable skips a client held again before it was taken") {
  Peer pub = peer("pub"), sub1 = peer("sub1"), sub2 = peer("sub2");
  fill(sub1, &pub.client, 5);
  fill(sub2, nullptr, 5);
  drain_to(sub1, 2);
  REQUIRE(flow.has_resumable());
  give(sub2, &pub.client);  // held again before the server resumed it
  CHECK(flow.holds(pub.client));
  CHECK(resumable().empty());
  CHECK(flow.holds(pub.client));
  drain_to(sub2, 2);
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture,
                  "forget_session: a subscriber that lost its client lets its "
                  "publishers go") {
  Peer pub = peer("pub"), sub = peer("sub"), idle = peer("idle");
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  flow.forget_session(idle.session);  // not congested: nothing happens
  CHECK(flow.holds(pub.client));
  CHECK(flow.is_congested(sub.session));
  flow.forget_session(sub.session);
  sub.session.detach(now);
  CHECK_FALSE(flow.is_congested(sub.session));
  CHECK_FALSE(flow.active());
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
  // Offline, its queue grows without holding anybody.
  give(sub, &pub.client);
  CHECK_FALSE(flow.active());
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(flow.check_policies(now + 60000).empty());
}

TEST_CASE_FIXTURE(Fixture,
                  "slow_subscriber = disconnect: once, after its grace, and only while "
                  "a publisher waits") {
  listener.slow_subscriber = Policy::kDisconnect;
  listener.slow_subscriber_grace = 2;
  Peer pub = peer("pub"), sub = peer("sub");
  const uint64_t since = now;
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  CHECK(flow.check_policies(since + 1999).empty());
  SUBCASE("past its grace") {
    CHECK(flow.check_policies(since + 2001) == Clients{&sub.client});
    CHECK(flow.check_policies(since + 9000).empty());  // told once
    CHECK(flow.holds(pub.client));  // until the broker closes it (forget_session)
  }
  SUBCASE("nobody waits any more") {
    flow.forget_client(pub.client);
    CHECK(flow.check_policies(since + 9000).empty());
    CHECK(flow.is_congested(sub.session));
  }
  SUBCASE("drained in time") {
    drain_to(sub, 2);
    CHECK(flow.check_policies(since + 9000).empty());
  }
}

TEST_CASE_FIXTURE(Fixture, "the grace is the subscriber's listener's") {
  ListenerConfig quick, patient;
  quick.slow_subscriber_grace = 1;
  patient.slow_subscriber_grace = 10;
  Peer pub = peer("pub"), fast_out = peer("a", &quick), slow_out = peer("b", &patient);
  fill(fast_out, &pub.client, 5);
  fill(slow_out, &pub.client, 5);
  CHECK(flow.check_policies(now + 1001) == Clients{&fast_out.client});
  CHECK(flow.check_policies(now + 9999).empty());
  CHECK(flow.check_policies(now + 10001) == Clients{&slow_out.client});
}

TEST_CASE_FIXTURE(Fixture,
                  "slow_subscriber = drop_qos0: publishers go on, QoS 0 to it is shed, "
                  "QoS 1 still waits") {
  listener.slow_subscriber = Policy::kDropQos0;
  listener.slow_subscriber_grace = 1;
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  REQUIRE(flow.holds(pub.client));
  CHECK_FALSE(flow.sheds_qos0(sub.session));
  CHECK(flow.check_policies(now + 999).empty());
  CHECK_FALSE(flow.sheds_qos0(sub.session));
  CHECK(flow.check_policies(now + 1001).empty());  // nobody is disconnected
  CHECK(flow.sheds_qos0(sub.session));
  CHECK(flow.is_congested(sub.session));
  CHECK_FALSE(flow.holds(pub.client));
  CHECK(resumable() == Clients{&pub.client});
  // QoS 0 for it is dropped (the broker asks sheds_qos0 and counts): it holds nobody.
  flow.after_delivery(sub.session, &pub.client, 0, now + 1002);
  flow.count_shed(sub.session);
  CHECK_FALSE(flow.holds(pub.client));
  // QoS 1 and 2 still wait for it.
  give(sub, &pub.client, 1);
  CHECK(flow.holds(pub.client));
  drain_to(sub, 2);
  CHECK_FALSE(flow.sheds_qos0(sub.session));
  CHECK(resumable() == Clients{&pub.client});
}

TEST_CASE_FIXTURE(Fixture, "slow_subscriber = wait: held for as long as it takes") {
  listener.slow_subscriber = Policy::kWait;
  listener.slow_subscriber_grace = 1;
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  CHECK(flow.check_policies(now + 3600 * 1000).empty());
  CHECK_FALSE(flow.sheds_qos0(sub.session));
  CHECK(flow.holds(pub.client));
}

TEST_CASE_FIXTURE(Fixture, "check_policies releases a subscriber that drained unnoticed") {
  listener.slow_subscriber = Policy::kWait;
  Peer pub = peer("pub"), sub = peer("sub");
  fill(sub, &pub.client, 5);
  while (sub.session.queued_count() > 1)
    ack(sub, false);  // nobody called check_drained
  REQUIRE(flow.is_congested(sub.session));
  CHECK(flow.check_policies(now + 1).empty());
  CHECK_FALSE(flow.is_congested(sub.session));
  CHECK_FALSE(flow.active());
  CHECK(resumable() == Clients{&pub.client});
}

namespace {
// Bytes the process has allocated and not freed.
size_t heap_in_use() {
#ifdef MQGATE_TEST_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  return mallinfo2().uordblks;
#endif
}
}  // namespace

TEST_CASE_FIXTURE(Fixture, "stale edges of a long-congested subscriber are compacted") {
  // A subscriber that stays congested while publisher after publisher is held by it and
  // closes: each leaves a stale edge in its list. The header promises the list stays
  // within about twice the clients that can wait; there is no accessor for it, so the
  // heap is measured instead (40,000 kept edges would be over 600 KB).
  listener.slow_subscriber = Policy::kWait;
  Peer sub = peer("sub");
  fill(sub, nullptr, 5);
  auto one_publisher = [&] {
    Peer pub = peer("pub");
    flow.after_delivery(sub.session, &pub.client, 1, now);
    REQUIRE(flow.holds(pub.client));
    flow.forget_client(pub.client);
  };
  for (int i = 0; i < 1000; ++i)
    one_publisher();  // every table at its working size
  const size_t before = heap_in_use();
  for (int i = 0; i < 40000; ++i)
    one_publisher();
  const size_t after = heap_in_use();
  MESSAGE("heap growth over 40,000 stale edges: ", after > before ? after - before : 0, " bytes");
  CHECK(after < before + 64 * 1024);
  CHECK(flow.held_count() == 0);
  CHECK(flow.is_congested(sub.session));
}
