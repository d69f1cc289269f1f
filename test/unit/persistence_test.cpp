// core/persistence + the broker's hooks: which store mutations a persistent session's
// traffic makes, and acknowledgements held until the journal says they are durable.
#include <doctest/doctest.h>

#include <memory>

#include "broker/broker.hpp"
#include "broker/persistence.hpp"
#include "cluster/outbound.hpp"
#include "fake_client.hpp"

using namespace mqgate;
using namespace mqgate::test;
using codec::PacketType;
using Kind = store::Mutation::Kind;

namespace {

// Records mutations; barriers complete when the test says so.
class RecordingJournal final : public store::Journal {
 public:
  void add(store::Mutation m) override { mutations.push_back(std::move(m)); }
  void barrier(std::function<void(bool)> done) override { barriers.push_back(std::move(done)); }
  void flush() override {}
  std::optional<uint64_t> room() const override { return room_left; }
  void complete(bool ok) {
    auto waiting = std::move(barriers);
    barriers.clear();
    for (auto& b : waiting)
      b(ok);
  }
  std::vector<Kind> kinds() {
    std::vector<Kind> k;
    for (auto& m : mutations)
      k.push_back(m.kind);
    mutations.clear();
    return k;
  }
  std::vector<store::Mutation> mutations;
  std::vector<std::function<void(bool)>> barriers;
  std::optional<uint64_t> room_left;
};

struct Fixture {
  LimitsConfig limits;
  ListenerConfig listener;
  AllowAllHooks allow;
  RecordingJournal journal;
  Persistence persistence{journal, 1};
  Broker broker{limits, allow};
  Fixture() {
    listener.name = "default";
    broker.set_persistence(&persistence);
  }
  std::unique_ptr<FakeClient> connect(std::string_view id, bool clean) {
    auto c = std::make_unique<FakeClient>(broker, &listener);
    c->feed(connect_packet(id, clean));
    auto out = c->take();
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].type == PacketType::kConnack);
    return c;
  }
};

}  // namespace

TEST_CASE("a persistent session's queue is journaled; a clean session's is not") {
  RecordingJournal j;
  Persistence p(j, 1);
  SessionLimits sl{10, 100, &p};
  DeliveryStats stats;
  Session clean("c", true), kept("k", false), other("o", false);
  auto msg = Message::create("t", "payload", 1, false);
  clean.deliver(msg, 1, false, sl, 1 << 20, stats);
  CHECK(j.kinds().empty());

  kept.deliver(msg, 1, false, sl, 1 << 20, stats);
  other.deliver(msg, 1, false, sl, 1 << 20, stats);
  // One body for both entries.
  CHECK(j.kinds() == std::vector<Kind>{Kind::kPutMessage, Kind::kPutOutgoing, Kind::kPutOutgoing});

  LimitsConfig limits;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  ListenerConfig listener;
  FakeClient client(broker, &listener);
  kept.attach(&client, sl, stats);
  REQUIRE(j.mutations.size() == 1);
  CHECK(j.mutations[0].kind == Kind::kPutOutgoing);
  CHECK(j.mutations[0].outgoing.state == store::OutgoingRecord::State::kAwaitPuback);
  auto out = client.take();
  REQUIRE(out.size() == 1);
  CHECK(j.mutations[0].outgoing.packet_id == out[0].packet_id);
  j.kinds();
  REQUIRE(kept.on_puback(out[0].packet_id, sl, stats));
  CHECK(j.kinds() == std::vector<Kind>{Kind::kRemoveOutgoing});  // `other` still holds the body
  p.remove_session(other);
  CHECK(j.kinds() == std::vector<Kind>{Kind::kRemoveMessage, Kind::kRemoveSession});
}

TEST_CASE("QoS 2 outgoing: PUBREC drops the body, PUBCOMP the entry") {
  RecordingJournal j;
  Persistence p(j, 1);
  SessionLimits sl{10, 100, &p};
  DeliveryStats stats;
  LimitsConfig limits;
  AllowAllHooks hooks;
  Broker broker(limits, hooks);
  ListenerConfig listener;
  FakeClient client(broker, &listener);
  Session s("k", false);
  s.attach(&client, sl, stats);
  s.deliver(Message::create("t", "p", 2, false), 2, false, sl, 1 << 20, stats);
  auto out = client.take();
  REQUIRE(out.size() == 1);
  j.kinds();
  REQUIRE(s.on_pubrec(out[0].packet_id, sl));
  REQUIRE(j.mutations.size() == 2);
  CHECK(j.mutations[0].outgoing.state == store::OutgoingRecord::State::kAwaitPubcomp);
  CHECK(j.mutations[0].outgoing.message_id == 0);
  CHECK(j.mutations[1].kind == Kind::kRemoveMessage);
  j.kinds();
  REQUIRE(s.on_pubcomp(out[0].packet_id, sl, stats));
  CHECK(j.kinds() == std::vector<Kind>{Kind::kRemoveOutgoing});
}

TEST_CASE("PUBACKs wait for the barrier, in order; a failed store sends none") {
  Fixture f;
  auto sub = f.connect("sub", false);
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  f.journal.complete(true);  // the SUBACK
  CHECK(sub->take().size() == 1);
  sub->close("offline");
  auto pub = f.connect("pub", true);
  f.journal.kinds();
  pub->feed(publish_packet("t", "one", 1, false, 1));
  pub->feed(publish_packet("nobody/listens", "two", 1, false, 2));  // not stored, but ordered
  CHECK(pub->take().empty());
  CHECK(f.journal.barriers.size() == 2);
  f.journal.complete(true);
  auto out = pub->take();
  REQUIRE(out.size() == 2);
  CHECK((out[0].type == PacketType::kPuback && out[0].packet_id == 1));
  CHECK((out[1].type == PacketType::kPuback && out[1].packet_id == 2));

  // Nothing held: an unstored message is acknowledged at once.
  pub->feed(publish_packet("nobody/listens", "three", 1, false, 3));
  out = pub->take();
  REQUIRE(out.size() == 1);

  pub->feed(publish_packet("t", "four", 1, false, 4));
  f.journal.complete(false);
  CHECK(pub->take().empty());
}

TEST_CASE("incoming QoS 2 of a persistent session: PUBREC and PUBCOMP once durable") {
  Fixture f;
  auto pub = f.connect("pub", false);
  f.journal.kinds();
  pub->feed(publish_packet("t", "x", 2, false, 7));
  CHECK(f.journal.kinds() == std::vector<Kind>{Kind::kPutIncoming});
  CHECK(pub->take().empty());
  f.journal.complete(true);
  auto out = pub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPubrec);
  pub->feed(ack_packet(PacketType::kPubrel, 7));
  CHECK(f.journal.kinds() == std::vector<Kind>{Kind::kRemoveIncoming});
  CHECK(pub->take().empty());
  f.journal.complete(true);
  out = pub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPubcomp);
}

TEST_CASE(
    "a persistent session's SUBACK, and the retained messages after it, wait for durability") {
  Fixture f;
  auto pub = f.connect("pub", true);
  pub->feed(publish_packet("r", "retained", 0, true));
  auto sub = f.connect("sub", false);
  f.journal.kinds();
  sub->feed(subscribe_packet(1, {{"r", 1}}));
  CHECK(f.journal.kinds() == std::vector<Kind>{Kind::kPutSubscription});
  CHECK(sub->take().empty());
  pub->feed(publish_packet("r", "live", 0, false));  // a live message may come first
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == "live");
  f.journal.complete(true);
  out = sub->take();
  REQUIRE(out.size() == 2);
  CHECK(out[0].type == PacketType::kSuback);
  CHECK((out[1].type == PacketType::kPublish && out[1].payload == "retained" && out[1].retain));

  std::string unsubscribe;
  const std::string_view filters[] = {"r"};
  codec::encode_unsubscribe(unsubscribe, 2, filters);
  sub->feed(unsubscribe);
  CHECK(sub->take().empty());
  f.journal.complete(true);
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kUnsuback);
}

TEST_CASE("store times far in the past or future clamp instead of overflowing") {
  RecordingJournal journal;
  Persistence p{journal, 1};
  // Wall clock ahead of the loop clock (the usual case) and behind it.
  for (int64_t wall : {int64_t{1'700'000'000'000}, int64_t{-5}}) {
    p.set_clock(1'000, wall);
    CHECK(p.loop_of(INT64_MAX) > 0);
    CHECK(p.loop_of(INT64_MIN) == 0);
    CHECK(p.wall_of(UINT64_MAX) > INT64_MAX - 2000);
  }
  p.set_clock(UINT64_MAX, INT64_MIN);  // absurd clocks too
  CHECK(p.loop_of(INT64_MAX) > 0);
  CHECK(p.wall_of(0) < 0);
}

TEST_CASE("a QoS 2 message whose packet id could not be stored is neither routed nor acked") {
  Fixture f;
  auto live = f.connect("live", true);
  live->feed(subscribe_packet(1, {{"q2/#", 2}}));
  live->take();
  auto pub = f.connect("pub", false);
  f.journal.kinds();
  pub->feed(publish_packet("q2/x", "exactly once", 2, false, 5));
  CHECK(f.journal.kinds() == std::vector<Kind>{Kind::kPutIncoming});
  f.journal.complete(false);
  CHECK(pub->take().empty());   // no PUBREC: the publisher sends it again
  CHECK(live->take().empty());  // and nobody got this copy
}

TEST_CASE("a PUBLISH the store cannot take is refused alone, before routing") {
  Fixture f;
  auto sub = f.connect("sub", false);
  sub->feed(subscribe_packet(1, {{"q/#", 1}}));
  f.journal.complete(true);
  sub->take();
  auto live = f.connect("live", true);
  live->feed(subscribe_packet(1, {{"clean/#", 1}}));
  live->take();
  auto pub = f.connect("pub", true);
  f.journal.room_left = 1000;
  f.journal.kinds();
  // 3.1.1 cannot say no: closed, unacknowledged, nothing journaled or delivered.
  pub->feed(publish_packet("q/x", std::string(2000, 'x'), 1, false, 1));
  CHECK(f.journal.kinds().empty());
  CHECK(pub->closed);
  CHECK(sub->take().empty());
  // What fits, or needs no store (only a clean session matches), goes through.
  auto pub2 = f.connect("pub2", true);
  pub2->feed(publish_packet("clean/x", std::string(2000, 'x'), 1, false, 2));
  auto out = pub2->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPuback);
  CHECK(live->take().size() == 1);
  pub2->feed(publish_packet("q/x", "small", 1, false, 3));
  CHECK(f.journal.kinds() == std::vector<Kind>{Kind::kPutMessage, Kind::kPutOutgoing});
  f.journal.complete(true);
  out = pub2->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].packet_id == 3);
  // A retained QoS 0 message that cannot fit is delivered live but not kept.
  pub2->feed(publish_packet("clean/r", std::string(2000, 'r'), 0, true));
  CHECK(f.journal.kinds().empty());
  CHECK(live->take().size() == 1);
  CHECK(f.broker.stats().store_refused == 2);
}

namespace {

// Every QoS 1/2 message is wanted by another node: its acknowledgement waits for a ticket.
struct TicketCluster final : cluster::Outbound {
  uint64_t next = 1;
  uint64_t publish(const cluster::OutboundMessage& m) override { return m.qos != 0 ? next++ : 0; }
  bool backlogged() const override { return false; }
  uint64_t add_interest(std::string_view) override { return 0; }
  void remove_interest(std::string_view) override {}
  uint64_t settled() const override { return 0; }
};

}  // namespace

TEST_CASE("cluster: a QoS 2 resend behind a pending store does not wait for a will's ticket") {
  Fixture f;
  TicketCluster cluster;
  f.broker.set_cluster(&cluster);
  auto stored = [&](uint64_t ticket) {
    FakeClient::Call call;  // as the server calls it
    f.broker.on_cluster_stored(ticket, true);
  };
  auto pub = f.connect("pub", false);
  pub->feed(publish_packet("t", "x", 2, false, 7));
  pub->feed(publish_packet("t", "x", 2, false, 7, true));  // its resend, behind it
  REQUIRE(f.journal.barriers.size() == 2);
  auto barriers = std::move(f.journal.barriers);
  f.journal.barriers.clear();
  barriers[0](true);  // the message is routed: ticket 1
  // A will routed meanwhile (ticket 2, no client waits for it), stored at once.
  auto w = std::make_unique<FakeClient>(f.broker, &f.listener);
  w->feed(connect_packet("w", true, 60, codec::Will{"w/gone", "bye", 1, false}));
  w->close("network error");
  stored(2);
  barriers[1](true);  // the resend: not routed again, so no ticket of its own
  CHECK(pub->take().empty());
  stored(1);
  f.journal.complete(true);  // the PUBRECs' own barrier
  auto out = pub->take();
  REQUIRE(out.size() == 2);
  CHECK((out[0].type == PacketType::kPubrec && out[0].packet_id == 7));
  CHECK((out[1].type == PacketType::kPubrec && out[1].packet_id == 7));
  pub->close("bye");
  f.broker.set_cluster(nullptr);
}
