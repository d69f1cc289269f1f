#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "fake_client.hpp"

using namespace mqgate;
using namespace mqgate::test;
using codec::PacketType;

namespace {

struct Fixture {
  LimitsConfig limits;
  ListenerConfig listener;
  AllowAllHooks allow;
  std::unique_ptr<Broker> broker;

  explicit Fixture(LimitsConfig l = {}, AuthHooks* hooks = nullptr) : limits(l) {
    listener.name = "default";
    broker = std::make_unique<Broker>(limits, hooks ? *hooks : allow);
  }

  std::unique_ptr<FakeClient> connect(std::string_view id, bool clean = true,
                                      std::optional<codec::Will> will = std::nullopt) {
    auto c = std::make_unique<FakeClient>(*broker, &listener);
    c->feed(connect_packet(id, clean, 60, will));
    auto out = c->take();
    REQUIRE(out.size() >= 1);
    REQUIRE(out[0].type == PacketType::kConnack);
    REQUIRE(out[0].body[1] == 0);
    return c;
  }
};

uint8_t connack_code(std::vector<OutPacket>& out) {
  REQUIRE(!out.empty());
  REQUIRE(out[0].type == PacketType::kConnack);
  return static_cast<uint8_t>(out[0].body[1]);
}

}  // namespace

TEST_CASE("CONNECT accepted; session present only when resuming") {
  Fixture f;
  FakeClient c(*f.broker, &f.listener);
  c.feed(connect_packet("dev", false));
  auto out = c.take();
  CHECK(connack_code(out) == 0);
  CHECK(out[0].body[0] == 0);  // no session yet
  CHECK(c.state == Client::State::kConnected);
  CHECK(f.broker->stats().clients_connected == 1);
  c.close("bye");
  CHECK(f.broker->stats().clients_connected == 0);
  CHECK(f.broker->sessions().size() == 1);  // persistent

  FakeClient again(*f.broker, &f.listener);
  again.feed(connect_packet("dev", false));
  out = again.take();
  CHECK(out[0].body[0] == 1);  // session present

  FakeClient clean(*f.broker, &f.listener);
  clean.feed(connect_packet("dev2", true));
  out = clean.take();
  CHECK(out[0].body[0] == 0);
}

TEST_CASE("client identifiers: generated, rejected when empty without clean session, too long") {
  LimitsConfig l;
  l.max_client_id_length = 30;
  Fixture f(l);
  FakeClient gen(*f.broker, &f.listener);
  gen.feed(connect_packet("", true));
  auto out = gen.take();
  CHECK(connack_code(out) == 0);
  CHECK(gen.client_id().rfind("mqgate-", 0) == 0);

  FakeClient persistent(*f.broker, &f.listener);
  persistent.feed(connect_packet("", false));
  out = persistent.take();
  CHECK(connack_code(out) == 2);
  CHECK(persistent.closed);

  FakeClient v31(*f.broker, &f.listener);
  v31.feed(connect_packet("", true, 60, std::nullopt, std::nullopt, 3));
  out = v31.take();
  CHECK(connack_code(out) == 2);

  FakeClient longid(*f.broker, &f.listener);
  longid.feed(connect_packet(std::string(31, 'x')));
  out = longid.take();
  CHECK(connack_code(out) == 2);
  CHECK(longid.closed);
}

TEST_CASE("unsupported protocol level gets CONNACK 1; non-CONNECT first and second CONNECT close") {
  Fixture f;
  FakeClient v5(*f.broker, &f.listener);
  v5.feed(connect_packet("x", true, 60, std::nullopt, std::nullopt, 5));
  auto out = v5.take();
  CHECK(connack_code(out) == 0);  // MQTT 5.0 is spoken
  CHECK(!v5.closed);

  FakeClient v6(*f.broker, &f.listener);
  v6.feed(connect_packet("y", true, 60, std::nullopt, std::nullopt, 6));
  out = v6.take();
  CHECK(connack_code(out) == 1);
  CHECK(v6.closed);

  FakeClient early(*f.broker, &f.listener);
  early.feed(publish_packet("a", "b"));
  CHECK(early.closed);
  CHECK(early.take().empty());

  auto twice = f.connect("twice");
  twice->feed(connect_packet("twice"));
  CHECK(twice->closed);
}

TEST_CASE("QoS 0/1/2 flows and downgrade to the subscription's QoS") {
  Fixture f;
  auto sub = f.connect("sub");
  auto pub = f.connect("pub");
  sub->feed(subscribe_packet(1, {{"t/1", 1}}));
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kSuback);
  CHECK(out[0].body == std::string("\x00\x01\x01", 3));

  pub->feed(publish_packet("t/1", "q2", 2, false, 10));
  out = pub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPubrec);
  CHECK(out[0].packet_id == 10);
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].qos == 1);  // downgraded
  CHECK(out[0].payload == "q2");
  CHECK_FALSE(out[0].retain);
  const uint16_t id = out[0].packet_id;

  // A resend of the same QoS 2 message before PUBREL is not delivered again.
  pub->feed(publish_packet("t/1", "q2", 2, false, 10, true));
  CHECK(pub->take()[0].type == PacketType::kPubrec);
  CHECK(sub->take().empty());
  pub->feed(ack_packet(PacketType::kPubrel, 10));
  out = pub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPubcomp);
  // PUBREL for an unknown id is still answered.
  pub->feed(ack_packet(PacketType::kPubrel, 99));
  CHECK(pub->take()[0].type == PacketType::kPubcomp);

  sub->feed(ack_packet(PacketType::kPuback, id));
  CHECK(f.broker->sessions().find("sub")->inflight_count() == 0);

  pub->feed(publish_packet("t/1", "q1", 1, false, 11));
  CHECK(pub->take()[0].type == PacketType::kPuback);
  pub->feed(publish_packet("t/1", "q0", 0));
  CHECK(pub->take().empty());
  out = sub->take();
  REQUIRE(out.size() == 2);
  CHECK(out[0].qos == 1);
  CHECK(out[1].qos == 0);
}

TEST_CASE("QoS 2 outgoing: PUBREC -> PUBREL -> PUBCOMP") {
  Fixture f;
  auto sub = f.connect("sub");
  auto pub = f.connect("pub");
  sub->feed(subscribe_packet(1, {{"t", 2}}));
  sub->take();
  pub->feed(publish_packet("t", "x", 2, false, 1));
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].qos == 2);
  sub->feed(ack_packet(PacketType::kPubrec, out[0].packet_id));
  auto rel = sub->take();
  REQUIRE(rel.size() == 1);
  CHECK(rel[0].type == PacketType::kPubrel);
  CHECK(rel[0].flags == 2);
  sub->feed(ack_packet(PacketType::kPubcomp, out[0].packet_id));
  CHECK(f.broker->sessions().find("sub")->inflight_count() == 0);
}

TEST_CASE("overlapping subscriptions deliver once at the highest QoS") {
  Fixture f;
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"a/#", 0}, {"a/b", 2}, {"+/b", 1}}));
  sub->take();
  auto pub = f.connect("pub");
  pub->feed(publish_packet("a/b", "x", 2, false, 5));
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].qos == 2);
}

TEST_CASE("retained messages: delivered on subscribe with RETAIN, live copies without") {
  Fixture f;
  auto pub = f.connect("pub");
  pub->feed(publish_packet("r/1", "kept", 1, true, 1));
  pub->take();
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"r/+", 2}}));
  auto out = sub->take();
  REQUIRE(out.size() == 2);
  CHECK(out[0].type == PacketType::kSuback);  // SUBACK first
  CHECK(out[1].retain);
  CHECK(out[1].qos == 1);  // min(message QoS, granted QoS)
  CHECK(out[1].payload == "kept");
  sub->feed(ack_packet(PacketType::kPuback, out[1].packet_id));

  pub->feed(publish_packet("r/1", "live", 0, true));
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK_FALSE(out[0].retain);

  // An empty retained payload clears, and is forwarded to current subscribers.
  pub->feed(publish_packet("r/1", "", 0, true));
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload.empty());
  CHECK(f.broker->router().retained_count() == 0);

  // Re-subscribing re-sends retained messages.
  pub->feed(publish_packet("r/2", "again", 0, true));
  sub->take();
  sub->feed(subscribe_packet(2, {{"r/+", 0}}));
  out = sub->take();
  REQUIRE(out.size() == 2);
  CHECK(out[1].retain);
}

TEST_CASE("will: published on abnormal close, not after DISCONNECT") {
  Fixture f;
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"will/#", 1}}));
  sub->take();
  auto a = f.connect("a", true, codec::Will{"will/a", "a-died", 1, true});
  a->close("network error");
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].topic == "will/a");
  CHECK(out[0].qos == 1);
  CHECK(f.broker->router().retained_count() == 1);

  auto b = f.connect("b", true, codec::Will{"will/b", "b-died", 0, false});
  b->feed(std::string("\xe0\x00", 2));
  CHECK(b->closed);
  CHECK(sub->take().empty());
}

TEST_CASE("session takeover closes the old connection and keeps the session") {
  Fixture f;
  auto first = f.connect("dup", false, codec::Will{"w", "first-will", 0, false});
  first->feed(subscribe_packet(1, {{"t", 1}}));
  first->take();
  auto watcher = f.connect("watcher");
  watcher->feed(subscribe_packet(1, {{"w", 0}}));
  watcher->take();

  FakeClient second(*f.broker, &f.listener);
  second.feed(connect_packet("dup", false));
  CHECK(first->closed);
  auto out = second.take();
  CHECK(connack_code(out) == 0);
  CHECK(out[0].body[0] == 1);  // the session survived the takeover
  CHECK(watcher->take().size() == 1);  // the old connection's will

  auto pub = f.connect("pub");
  pub->feed(publish_packet("t", "to-second", 1, false, 3));
  out = second.take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == "to-second");
}

namespace {
// Records disconnections, and whether the broker was told while a client's close() was
// still on the stack (it must not be: closing is a request).
struct RecordingHooks final : AuthHooks {
  AuthResult authenticate(const Client&, const codec::Connect&) override { return {}; }
  AuthResult authorize(const Client&, std::string_view, AuthAction, uint8_t, bool) override {
    return {};
  }
  void on_connected(const Client&, bool) override {}
  void on_disconnected(const Client& c, const char* reason) override {
    disconnects.push_back(c.client_id() + ": " + reason);
  }
  std::vector<std::string> disconnects;
};
}  // namespace

TEST_CASE("close is a request: the broker hears of it once, after the call that asked") {
  RecordingHooks hooks;
  Fixture f({}, &hooks);
  auto watcher = f.connect("watcher");
  watcher->feed(subscribe_packet(1, {{"w", 0}}));
  watcher->take();

  // Outside any dispatch, a close is reported at once.
  auto a = f.connect("a");
  a->close("network error");
  CHECK(hooks.disconnects == std::vector<std::string>{"a: network error"});

  // A clean session taken over: the old connection goes with its will and its session,
  // the new one gets a fresh session, and the old's own report changes nothing.
  auto first = f.connect("dup", true, codec::Will{"w", "first-will", 0, false});
  first->feed(subscribe_packet(1, {{"t", 1}}));
  first->take();
  FakeClient second(*f.broker, &f.listener);
  second.feed(connect_packet("dup", true));
  CHECK(first->closed);
  CHECK(first->close_reason == "session taken over");
  auto out = second.take();
  CHECK(connack_code(out) == 0);
  CHECK(out[0].body[0] == 0);          // session present 0: the clean session went with the old
  CHECK(watcher->take().size() == 1);  // the old connection's will
  CHECK(f.broker->stats().clients_connected == 2);
  CHECK(hooks.disconnects.size() == 2);
  CHECK(hooks.disconnects.back() == "dup: session taken over");
  first.reset();
  CHECK(hooks.disconnects.size() == 2);

  // A refusal's CONNACK is queued before the close; nothing after it is dispatched.
  FakeClient refused(*f.broker, &f.listener);
  refused.feed(connect_packet("", false) + publish_packet("a", "b"));
  CHECK(refused.closed);
  CHECK(refused.close_reason == "connection refused");
  out = refused.take();
  REQUIRE(out.size() == 1);
  CHECK(connack_code(out) == 2);
  CHECK(hooks.disconnects.size() == 2);  // it never connected
}

TEST_CASE("persistent session: offline QoS 1/2 queued, QoS 0 not, in-flight resent with DUP") {
  Fixture f;
  auto sub = f.connect("p", false);
  sub->feed(subscribe_packet(1, {{"t", 2}}));
  sub->take();
  auto pub = f.connect("pub");
  pub->feed(publish_packet("t", "unacked", 1, false, 1));
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  const uint16_t unacked_id = out[0].packet_id;
  sub->close("network error");

  pub->feed(publish_packet("t", "q0", 0));
  pub->feed(publish_packet("t", "q1", 1, false, 2));
  pub->feed(publish_packet("t", "q2", 2, false, 3));

  FakeClient back(*f.broker, &f.listener);
  back.feed(connect_packet("p", false));
  out = back.take();
  REQUIRE(out.size() == 4);
  CHECK(out[0].body[0] == 1);
  CHECK(out[1].payload == "unacked");
  CHECK(out[1].dup);
  CHECK(out[1].packet_id == unacked_id);
  CHECK(out[2].payload == "q1");
  CHECK_FALSE(out[2].dup);
  CHECK(out[3].payload == "q2");
  CHECK(out[3].qos == 2);
}

TEST_CASE("in-flight window and queue bound") {
  LimitsConfig l;
  l.max_inflight_messages = 2;
  l.max_queued_messages = 3;
  Fixture f(l);
  auto sub = f.connect("s");
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  sub->take();
  auto pub = f.connect("pub");
  for (int i = 0; i < 7; ++i) pub->feed(publish_packet("t", std::to_string(i), 1, false, static_cast<uint16_t>(i + 1)));
  auto out = sub->take();
  REQUIRE(out.size() == 2);  // the window
  CHECK(out[0].payload == "0");
  CHECK(out[1].payload == "1");
  CHECK(f.broker->stats().delivery.messages_dropped == 2);  // 7 - 2 in flight - 3 queued
  CHECK(f.broker->stats().delivery.dropped_queue_full == 2);
  CHECK(f.broker->stats().delivery.inflight_now == 2);
  CHECK(f.broker->stats().delivery.queued_now == 3);
  sub->feed(ack_packet(PacketType::kPuback, out[0].packet_id));
  auto next = sub->take();
  REQUIRE(next.size() == 1);
  CHECK(next[0].payload == "2");  // in order
  sub->feed(ack_packet(PacketType::kPuback, out[1].packet_id));
  sub->feed(ack_packet(PacketType::kPuback, next[0].packet_id));
  auto rest = sub->take();
  REQUIRE(rest.size() == 2);
  CHECK(rest[0].payload == "3");
  CHECK(rest[1].payload == "4");
  CHECK(f.broker->stats().delivery.inflight_now == 2);
  CHECK(f.broker->stats().delivery.queued_now == 0);
  // A clean session goes with its messages: they leave the totals with it.
  sub->close("network error");
  CHECK(f.broker->stats().delivery.inflight_now == 0);
  CHECK(f.broker->stats().delivery.queued_now == 0);
}

TEST_CASE("drop reasons and queue totals follow a persistent session offline and back") {
  Fixture f;
  auto sub = f.connect("s", false);
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  sub->take();
  sub->close("network error");
  auto pub = f.connect("pub");
  pub->feed(publish_packet("t", "q0", 0));
  pub->feed(publish_packet("t", "q1", 1, false, 2));
  const auto& d = f.broker->stats().delivery;
  CHECK(d.dropped_qos0_offline == 1);
  CHECK(d.dropped_qos0_backlog == 0);
  CHECK(d.queued_now == 1);
  CHECK(d.inflight_now == 0);
  FakeClient back(*f.broker, &f.listener);
  back.feed(connect_packet("s", false));
  auto out = back.take();
  REQUIRE(out.size() == 2);  // CONNACK, the queued PUBLISH
  CHECK(d.queued_now == 0);
  CHECK(d.inflight_now == 1);
  back.feed(ack_packet(PacketType::kPuback, out[1].packet_id));
  CHECK(d.inflight_now == 0);
  CHECK(d.messages_dropped == 1);
}

TEST_CASE("keep-alive and connect timeouts") {
  Fixture f;
  auto check_timeouts = [&](FakeClient& c, uint64_t now_ms) {
    FakeClient::Call call;  // the close is reported after the sweep, as by the server
    f.broker->check_timeouts(c, now_ms);
  };
  FakeClient idle(*f.broker, &f.listener);
  check_timeouts(idle, 9000);
  CHECK_FALSE(idle.closed);
  check_timeouts(idle, 10000);
  CHECK(idle.closed);

  FakeClient c(*f.broker, &f.listener);
  c.feed(connect_packet("k", true, 2), 0);
  check_timeouts(c, 3000);
  CHECK_FALSE(c.closed);
  check_timeouts(c, 3001);
  CHECK(c.closed);
}

TEST_CASE("persistent sessions expire after session_expiry offline, and only offline") {
  LimitsConfig l;
  l.session_expiry = 60;
  Fixture f(l);
  FakeClient a(*f.broker, &f.listener);
  a.feed(connect_packet("gone", false), 0);
  a.take();
  a.close("network error");  // offline at t=0 (FakeClient passes no time)
  FakeClient b(*f.broker, &f.listener);
  b.feed(connect_packet("online", false), 0);
  f.broker->check_expiry(59000);
  CHECK_FALSE(f.broker->has_work());
  CHECK(f.broker->sessions().size() == 2);
  f.broker->check_expiry(60000);
  REQUIRE(f.broker->has_work());
  f.broker->run_slice(60000);
  CHECK_FALSE(f.broker->has_work());
  CHECK(f.broker->sessions().size() == 1);
  CHECK(f.broker->sessions().find("online") != nullptr);
}

TEST_CASE("session expiry in slices: many expired sessions never all in one slice") {
  LimitsConfig l;
  l.session_expiry = 1;
  Fixture f(l);
  for (int i = 0; i < 20000; ++i) {
    FakeClient a(*f.broker, &f.listener);
    a.feed(connect_packet(std::string("s").append(std::to_string(i)), false), 0);
    a.close("network error");
  }
  CHECK(f.broker->persistent_sessions() == 20000);
  // A session that came back is not expired, wherever it sits in the offline order.
  FakeClient back(*f.broker, &f.listener);
  back.feed(connect_packet("s7", false), 0);
  f.broker->check_expiry(1000);
  int slices = 0;
  while (f.broker->has_work()) {
    const size_t before = f.broker->sessions().size();
    CHECK(f.broker->run_slice(1000));
    CHECK(before - f.broker->sessions().size() <= Broker::kSliceBudget);
    ++slices;
  }
  CHECK(slices >= 20000 / static_cast<int>(Broker::kSliceBudget));
  CHECK(f.broker->sessions().size() == 1);
  CHECK(f.broker->sessions().find("s7") != nullptr);
  CHECK(f.broker->persistent_sessions() == 1);
}

namespace {
struct DenyingHooks final : AuthHooks {
  AuthResult authenticate(const Client& c, const codec::Connect&) override {
    if (c.client_id() == "bad") return AuthResult::deny("test says no");
    return {};
  }
  AuthResult authorize(const Client&, std::string_view topic, AuthAction action, uint8_t, bool) override {
    if (topic.rfind("secret", 0) == 0) return AuthResult::deny("secret");
    (void)action;
    return {};
  }
  void on_connected(const Client&, bool) override { connected++; }
  void on_disconnected(const Client&, const char*) override { disconnected++; }
  int connected = 0, disconnected = 0;
};
}  // namespace

TEST_CASE("auth hooks: CONNACK 5, SUBACK 0x80 per filter, denied PUBLISH acked but not forwarded") {
  DenyingHooks hooks;
  Fixture f({}, &hooks);
  FakeClient bad(*f.broker, &f.listener);
  bad.feed(connect_packet("bad"));
  auto out = bad.take();
  CHECK(connack_code(out) == 5);
  CHECK(bad.closed);
  CHECK(hooks.connected == 0);

  auto sub = f.connect("sub");
  CHECK(hooks.connected == 1);
  sub->feed(subscribe_packet(1, {{"secret/x", 1}, {"#", 1}}));
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].body == std::string("\x00\x01\x80\x01", 4));

  auto pub = f.connect("pub");
  pub->feed(publish_packet("secret/x", "no", 1, false, 4));
  out = pub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPuback);
  CHECK(sub->take().empty());
  CHECK(f.broker->stats().publish_denied == 1);
  sub->close("x");
  CHECK(hooks.disconnected == 1);
}

TEST_CASE("a fan-out bigger than a slice goes out in slices, in order, and congests input") {
  Fixture f;
  const size_t n = Broker::kSliceBudget * 2 + 100;
  std::vector<std::unique_ptr<FakeClient>> subs;
  for (size_t i = 0; i < n; ++i) {
    subs.push_back(f.connect(std::string("s").append(std::to_string(i))));
    subs.back()->feed(subscribe_packet(1, {{"fan/#", 1}}));
    subs.back()->take();
  }
  auto pub = f.connect("pub");
  pub->feed(publish_packet("fan/1", "one", 1, false, 1));
  CHECK(f.broker->congested());
  size_t got_now = 0;
  for (auto& s : subs) got_now += s->take().size();
  CHECK(got_now == Broker::kSliceBudget);
  // While congested, a will (a route the transports cannot hold) queues behind.
  auto dying = f.connect("dying", true, codec::Will{"fan/2", "two", 1, false});
  dying->close("network error");
  // A subscriber whose clean session goes away mid fan-out gets nothing, and nothing
  // breaks (its session is kept until the fan-out is done).
  subs[n - 1]->close("network error");
  int slices = 0;
  while (f.broker->has_work()) {
    f.broker->run_slice(0);
    ++slices;
  }
  CHECK_FALSE(f.broker->congested());
  CHECK(slices >= 2);
  for (size_t i = 0; i + 1 < n; ++i) {
    auto out = subs[i]->take();
    if (i < Broker::kSliceBudget) {
      REQUIRE(out.size() == 1);
      CHECK(out[0].payload == "two");
    } else {
      REQUIRE(out.size() == 2);  // "one" first, then the will
      CHECK(out[0].payload == "one");
      CHECK(out[1].payload == "two");
    }
  }
}

TEST_CASE("retained messages for a wide filter come in slices paced by the client") {
  LimitsConfig l;
  l.max_queued_messages = 100000;
  Fixture f(l);
  auto pub = f.connect("pub");
  const int n = 20000;
  for (int i = 0; i < n; ++i) pub->feed(publish_packet("r/" + std::to_string(i), "v", 0, true));
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"r/#", 0}, {"#", 0}, {"r/#", 0}}));
  auto first = sub->take();
  REQUIRE(first.size() >= 1);
  CHECK(first[0].type == PacketType::kSuback);
  CHECK(first.size() < static_cast<size_t>(n));
  CHECK(f.broker->has_work());
  size_t total = first.size() - 1;
  while (f.broker->has_work()) {
    REQUIRE(f.broker->run_slice(0));
    auto out = sub->take();
    CHECK(out.size() <= Broker::kSliceBudget);
    total += out.size();
  }
  // Duplicate filters in one SUBSCRIBE are sent once; "#" and "r/#" each once.
  CHECK(total == 2 * static_cast<size_t>(n));
  // A client that closes mid-way drops its pending retained work.
  auto gone = f.connect("gone");
  gone->feed(subscribe_packet(1, {{"#", 0}}));
  CHECK(f.broker->has_work());
  gone->close("network error");
  CHECK_FALSE(f.broker->has_work());
}

TEST_CASE("retained messages: a client's earlier SUBSCRIBEs do not buy it more slices") {
  // Each SUBSCRIBE whose retained messages all go with its SUBACK leaves no turn behind
  // in the round robin: a client that sent many such SUBSCRIBEs, then one with a wide
  // filter, gets one share per slice like everyone else.
  LimitsConfig l;
  l.max_queued_messages = 100000;
  l.max_outgoing_bytes = 64u << 20;
  Fixture f(l);
  auto pub = f.connect("pub");
  const int n = 3 * static_cast<int>(Broker::kSliceBudget);
  for (int i = 0; i < n; ++i)
    pub->feed(publish_packet("w/" + std::to_string(i), "v", 0, true));
  auto greedy = f.connect("greedy");
  for (uint16_t id = 1; id <= 8; ++id)
    greedy->feed(subscribe_packet(id, {{"x", 0}}));
  CHECK(greedy->take().size() == 8);  // the SUBACKs
  CHECK_FALSE(f.broker->has_work());
  greedy->feed(subscribe_packet(9, {{"w/#", 0}}));
  auto other = f.connect("other");
  other->feed(subscribe_packet(1, {{"w/#", 0}}));
  const size_t greedy_first = greedy->take().size(), other_first = other->take().size();
  CHECK(greedy_first == other_first);  // SUBACK and the first share each
  REQUIRE(f.broker->has_work());
  REQUIRE(f.broker->run_slice(0));
  const size_t greedy_slice = greedy->take().size(), other_slice = other->take().size();
  CHECK(other_slice > 0);
  CHECK(greedy_slice == other_slice);
}

namespace {
// Defers every CONNECT, PUBLISH and SUBSCRIBE filter; the test decides through the sink.
struct DeferringHooks final : AuthHooks {
  AuthResult pending() {
    AuthResult r;
    r.pending = true;
    ++asked;
    return r;
  }
  AuthResult authenticate(const Client&, const codec::Connect&) override { return pending(); }
  AuthResult authorize(const Client&, std::string_view, AuthAction, uint8_t, bool) override {
    return {};
  }
  AuthResult check(const Client&, const AuthRequest& r) override {
    return r.may_defer ? pending() : AuthResult{};
  }
  void forget(const Client&) override { ++forgotten; }
  // As the deferred queue's callback and the server do: closes after the call.
  void decide(const Client& c, AuthResult r) {
    FakeClient::Call call;
    sink_(c, std::move(r));
  }
  void on_connected(const Client&, bool) override {}
  void on_disconnected(const Client&, const char*) override {}
  int asked = 0, forgotten = 0;
};
}  // namespace

TEST_CASE(
    "deferred decisions: CONNACK waits, CONNACK 4 on a bad-credentials deny, PUBACK and SUBACK "
    "wait") {
  DeferringHooks hooks;
  Fixture f({}, &hooks);
  FakeClient c(*f.broker, &f.listener);
  c.feed(connect_packet("later"));
  CHECK(c.take().empty());
  CHECK(f.broker->awaiting_decision(c));
  hooks.decide(c, AuthResult{});
  auto out = c.take();
  CHECK(connack_code(out) == 0);
  CHECK_FALSE(f.broker->awaiting_decision(c));

  c.feed(publish_packet("t", "x", 1, false, 9));
  CHECK(c.take().empty());
  hooks.decide(c, AuthResult::deny("no"));
  out = c.take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kPuback);
  CHECK(f.broker->stats().publish_denied == 1);

  c.feed(subscribe_packet(3, {{"a", 1}, {"b", 0}}));
  CHECK(c.take().empty());
  hooks.decide(c, AuthResult{});  // "a" granted; "b" is asked next
  CHECK(c.take().empty());
  hooks.decide(c, AuthResult::deny("not b"));
  out = c.take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].body == std::string("\x00\x03\x01\x80", 4));

  FakeClient bad(*f.broker, &f.listener);
  bad.feed(connect_packet("bad"));
  AuthResult deny = AuthResult::deny("unknown user");
  deny.connack_code = 4;
  hooks.decide(bad, deny);
  out = bad.take();
  CHECK(connack_code(out) == 4);
  CHECK(bad.closed);

  FakeClient gone(*f.broker, &f.listener);
  gone.feed(connect_packet("gone"));
  const int before = hooks.forgotten;
  gone.close("went away");
  CHECK(hooks.forgotten == before + 1);
  CHECK_FALSE(f.broker->awaiting_decision(gone));
  hooks.decide(gone, AuthResult{});  // too late: ignored
  CHECK(gone.take().empty());
}

TEST_CASE("deferred decisions: a transport that does not hold input gets its client closed") {
  DeferringHooks hooks;
  Fixture f({}, &hooks);
  FakeClient c(*f.broker, &f.listener);  // FakeClient ignores hold_input()
  c.feed(connect_packet("eager") + connect_packet("eager"));
  CHECK(c.closed);
  CHECK(c.close_reason == "internal error: input not held");
}

TEST_CASE("resuming input is a request: a decision asks for it, nothing is dispatched meanwhile") {
  DeferringHooks hooks;
  Fixture f({}, &hooks);
  FakeClient c(*f.broker, &f.listener);
  c.feed(connect_packet("later"));
  CHECK(c.input_held());  // held while the plugin decides
  CHECK(c.resumes == 0);
  hooks.decide(c, AuthResult{});
  CHECK_FALSE(c.input_held());
  CHECK(c.resumes == 1);  // asked once; the transport dispatches after the call returns
  c.take();
  // A resume with nothing held asks for nothing.
  c.resume_input();
  CHECK(c.resumes == 1);
}

#ifndef NDEBUG
namespace {
// A transport that dispatches its kept packets from inside resume_input(), as the
// connection once did: the broker is re-entered while on_decided() still runs.
class ReentrantClient final : public Client {
 public:
  ReentrantClient(Broker& broker, const ListenerConfig* listener)
      : Client(listener, "127.0.0.1:7"), broker_(broker) {
    broker_.on_open(*this, 0);
  }
  void dispatch(codec::Packet packet) { broker_.on_packet(*this, packet, 0); }

 protected:
  void schedule_flush() override { flush_pending_ = false; }
  void on_close_requested() override {}
  void on_resume_requested() override { dispatch(codec::Pingreq{}); }

 private:
  Broker& broker_;
};
}  // namespace

TEST_CASE("debug builds abort when the broker is re-entered from below") {
  fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child: its assertion message is expected, not interesting.
    freopen("/dev/null", "w", stderr);
    DeferringHooks hooks;
    Fixture f({}, &hooks);
    ReentrantClient c(*f.broker, &f.listener);
    codec::Packet connect;
    std::string bytes = connect_packet("reentrant");
    codec::HeaderResult h = codec::parse_fixed_header(bytes);
    codec::decode_body(h.header, std::string_view(bytes).substr(h.header.header_length), 0, connect);
    c.dispatch(connect);  // awaits the decision, input held
    hooks.decide(c, AuthResult{});  // on_decided -> resume_input -> on_packet: re-entered
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
}
#endif

TEST_CASE("a SUBSCRIBE with more filters than a slice is decided in slices, SUBACK at the end") {
  LimitsConfig l;
  l.max_subscriptions_per_client = 100000;
  Fixture f(l);
  auto sub = f.connect("many");
  std::vector<codec::SubscribeTopic> topics;
  std::vector<std::string> names;
  const size_t n = Broker::kSliceBudget * 3 + 10;
  names.reserve(n);
  for (size_t i = 0; i < n; ++i) names.push_back("f/" + std::to_string(i));
  for (size_t i = 0; i < n; ++i) topics.push_back({names[i], static_cast<uint8_t>(i % 3)});
  sub->feed(subscribe_packet(7, topics));
  CHECK(sub->take().empty());  // no SUBACK before every filter is decided
  CHECK(f.broker->has_work());
  int slices = 0;
  while (f.broker->has_work()) {
    REQUIRE(f.broker->run_slice(0));
    ++slices;
  }
  CHECK(slices >= 3);
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].type == PacketType::kSuback);
  REQUIRE(out[0].body.size() == 2 + n);
  for (size_t i = 0; i < n; ++i) CHECK(static_cast<uint8_t>(out[0].body[2 + i]) == i % 3);
  CHECK(f.broker->router().subscription_count() == n);
  // Messages flow to the new subscriptions.
  auto pub = f.connect("pub");
  pub->feed(publish_packet("f/" + std::to_string(n - 1), "last", 0, false));
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == "last");
}

TEST_CASE("flow control: a congested subscriber holds its publisher until it drains") {
  LimitsConfig l;
  l.max_inflight_messages = 1;
  l.max_queued_messages = 8;  // high water: more than 4 queued; low water: 2
  Fixture f(l);
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  sub->take();
  auto pub = f.connect("pub");
  for (uint16_t id = 1; id <= 5; ++id) pub->feed(publish_packet("t", "m", 1, false, id));
  CHECK_FALSE(pub->input_held());  // 1 in flight, 4 queued
  pub->feed(publish_packet("t", "m", 1, false, 6));
  CHECK(pub->input_held());  // 5 queued: delivered, then the publisher waits
  CHECK(f.broker->flow().held_count() == 1);
  CHECK(f.broker->stats().delivery.messages_dropped == 0);

  // Acknowledging moves the queue into the window; at 2 queued it has drained.
  uint16_t acked = 0;
  for (int i = 0; i < 3; ++i) {
    auto out = sub->take();
    REQUIRE(out.size() == 1);
    sub->feed(ack_packet(PacketType::kPuback, out[0].packet_id));
    ++acked;
    if (i < 2) {
      CHECK_FALSE(f.broker->release_flow_holds());
      CHECK(pub->input_held());
    }
  }
  CHECK(f.broker->release_flow_holds());
  CHECK_FALSE(pub->input_held());
  CHECK(f.broker->flow().congested_count() == 0);
}

TEST_CASE("flow control: a publisher that closes while held is forgotten, the others resumed") {
  LimitsConfig l;
  l.max_inflight_messages = 1;
  l.max_queued_messages = 8;  // high water: more than 4 queued; low water: 2
  Fixture f(l);
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  sub->take();
  auto gone = f.connect("gone");
  for (uint16_t id = 1; id <= 6; ++id)
    gone->feed(publish_packet("t", "m", 1, false, id));
  REQUIRE(gone->input_held());
  auto stays = f.connect("stays");
  stays->feed(publish_packet("t", "m", 1, false, 1));
  REQUIRE(stays->input_held());
  CHECK(f.broker->flow().held_count() == 2);
  gone.reset();  // closed while held (its edge in the subscriber's list stays, stale)
  CHECK(f.broker->flow().held_count() == 1);
  // The subscriber drains: only the publisher still there is resumed.
  for (int i = 0; i < 6 && f.broker->flow().congested_count() != 0; ++i) {
    auto out = sub->take();
    REQUIRE(out.size() == 1);
    sub->feed(ack_packet(PacketType::kPuback, out[0].packet_id));
  }
  CHECK(f.broker->release_flow_holds());
  CHECK_FALSE(stays->input_held());
  CHECK(stays->resumes == 1);
  CHECK(f.broker->flow().held_count() == 0);
}

TEST_CASE("flow control: a subscriber that goes away releases its publishers; none waits on itself") {
  LimitsConfig l;
  l.max_inflight_messages = 1;
  l.max_queued_messages = 4;  // high water: more than 2 queued
  Fixture f(l);
  auto sub = f.connect("sub");
  sub->feed(subscribe_packet(1, {{"t", 1}}));
  auto pub = f.connect("pub");
  for (uint16_t id = 1; id <= 4; ++id) pub->feed(publish_packet("t", "m", 1, false, id));
  CHECK(pub->input_held());
  sub->close("test");  // reported at once outside a feed
  CHECK(f.broker->release_flow_holds());
  CHECK_FALSE(pub->input_held());

  // A client subscribed to what it publishes is never held for itself.
  auto self = f.connect("self");
  self->feed(subscribe_packet(1, {{"s", 1}}));
  for (uint16_t id = 1; id <= 6; ++id) self->feed(publish_packet("s", "m", 1, false, id));
  CHECK_FALSE(self->input_held());
  CHECK(f.broker->flow().held_count() == 0);
}

namespace {

// Like an ACL with deny rules inside granted filters: every SUBSCRIBE is granted with
// checks per topic; a live RECEIVE is denied for the topics in `denied`.
struct PerTopicHooks final : AuthHooks {
  std::vector<std::string> denied;
  AuthResult authenticate(const Client&, const codec::Connect&) override { return {}; }
  AuthResult authorize(const Client&, std::string_view, AuthAction, uint8_t, bool) override {
    return {};
  }
  AuthResult check(const Client&, const AuthRequest& req) override {
    AuthResult r;
    if (req.action == AuthAction::kSubscribe) r.delivery_check = kCheckPerTopic;
    if (req.action != AuthAction::kReceive) return r;
    if (std::find(denied.begin(), denied.end(), req.topic) != denied.end())
      return AuthResult::deny("not readable");
    r.delivery_check = req.delivery_check;  // as the plugin host does: unchanged
    return r;
  }
  void on_connected(const Client&, bool) override {}
  void on_disconnected(const Client&, const char*) override {}
};

}  // namespace

TEST_CASE("delivery checks: an answer remembered before the reload count wrapped is not reused") {
  PerTopicHooks hooks;
  Fixture f({}, &hooks);
  auto sub = f.connect("sub");
  auto pub = f.connect("pub");
  sub->feed(subscribe_packet(1, {{"t/#", 0}}));
  sub->take();
  pub->feed(publish_packet("t/a", "1"));
  CHECK(sub->take().size() == 1);  // asked, allowed, remembered under the rules of epoch 1
  hooks.denied.push_back("t/a");
  // 65,535 reloads later the epoch is 1 again (each decides the subscriptions again).
  const log::Level level = log::level();
  log::set_level(log::Level::kError);
  for (int i = 0; i < 65535; ++i) f.broker->rules_reloaded();
  log::set_level(level);
  REQUIRE(f.broker->rules_epoch() == 1);
  while (f.broker->has_work()) f.broker->run_slice(0);
  pub->feed(publish_packet("t/a", "2"));
  CHECK(sub->take().empty());
  CHECK(f.broker->stats().deliveries_denied == 1);
}

namespace {

// What the broker hands the cluster, recorded.
struct FakeCluster : cluster::Outbound {
  std::vector<std::string> published;  // "topic qos retain client_id"
  std::map<std::string, int> interest;
  uint64_t ticket_next = 0;  // non-zero: QoS 1/2 messages wait for the cluster (tickets)
  bool backlog = false;
  uint64_t publish(const cluster::OutboundMessage& m) override {
    published.push_back(std::string(m.topic) + " " + std::to_string(m.qos) + " " +
                        (m.retain ? "r " : "- ") + std::string(m.client_id));
    return m.qos != 0 && ticket_next != 0 ? ticket_next++ : 0;
  }
  bool backlogged() const override { return backlog; }
  uint64_t wait_next = 0;  // non-zero: add_interest asks SUBACKs to wait for this
  uint64_t settled_at = 0;
  uint64_t add_interest(std::string_view filter) override {
    // As the bridge: only a filter new to the node waits.
    return ++interest[std::string(filter)] == 1 ? wait_next : 0;
  }
  uint64_t settled() const override { return settled_at; }
  void remove_interest(std::string_view filter) override {
    if (--interest[std::string(filter)] == 0) interest.erase(std::string(filter));
  }
};

}  // namespace

TEST_CASE("cluster: each local message goes out once; interest follows distinct filters") {
  Fixture f;
  FakeCluster fc;
  f.broker->set_cluster(&fc);
  auto a = f.connect("a");
  auto b = f.connect("b");
  a->feed(subscribe_packet(1, {{"x/+", 1}, {"x/#", 0}, {"$share/g/x/y", 1}}));
  b->feed(subscribe_packet(1, {{"x/+", 0}}));
  a->take();
  b->take();
  // Two distinct filters; the shared subscription stays on this node for now.
  CHECK(fc.interest == std::map<std::string, int>{{"x/#", 1}, {"x/+", 2}});
  b->feed(publish_packet("x/y", "m", 1, true, 5));
  CHECK(fc.published == std::vector<std::string>{"x/y 1 r b"});  // once, however many match
  f.broker->publish_internal("$SYS/broker/x", "1", false);       // the node's own: not sent
  CHECK(fc.published.size() == 1);
  std::string unsub;
  const std::string_view filters[] = {"x/+"};
  codec::encode_unsubscribe(unsub, 2, filters);
  a->feed(unsub);
  CHECK(fc.interest == std::map<std::string, int>{{"x/#", 1}, {"x/+", 1}});
  b->close("bye");  // a clean session ends: its subscriptions go
  a->close("bye");
  CHECK(fc.interest.empty());
  f.broker->set_cluster(nullptr);
}

TEST_CASE("cluster: a SUBACK for a new filter waits until the other nodes know it") {
  Fixture f;
  FakeCluster fc;
  f.broker->set_cluster(&fc);
  auto a = f.connect("a");
  fc.wait_next = 5;
  a->feed(subscribe_packet(1, {{"w/+", 1}}));
  CHECK(a->take().empty());
  CHECK(a->input_held());  // what the client sends next waits behind it
  {
    FakeClient::Call call;
    f.broker->on_cluster_settled(4);
  }
  CHECK(a->take().empty());
  fc.settled_at = 5;
  const int resumes = a->resumes;
  {
    FakeClient::Call call;
    f.broker->on_cluster_settled(5);
  }
  auto out = a->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].type == PacketType::kSuback);
  CHECK(a->resumes == resumes + 1);
  // A filter already held (another session's) does not wait.
  auto b = f.connect("b");
  fc.wait_next = 9;
  b->feed(subscribe_packet(1, {{"w/+", 0}}));
  auto out_b = b->take();
  REQUIRE(!out_b.empty());
  CHECK(out_b[0].type == PacketType::kSuback);
  // A client gone while it waits: nothing is sent, nothing breaks.
  auto c = f.connect("c");
  c->feed(subscribe_packet(1, {{"z/#", 0}}));
  c->close("bye");
  fc.settled_at = 9;
  {
    FakeClient::Call call;
    f.broker->on_cluster_settled(9);
  }
  a->close("bye");
  b->close("bye");
  f.broker->set_cluster(nullptr);
}

namespace {

// A broker with a FakeCluster whose stored messages the test reports.
struct StoredFixture {
  Fixture f;
  FakeCluster fc;
  StoredFixture() { f.broker->set_cluster(&fc); }
  ~StoredFixture() { f.broker->set_cluster(nullptr); }
  void stored(uint64_t ticket, bool ok) {
    FakeClient::Call call;  // as the server calls it
    f.broker->on_cluster_stored(ticket, ok);
  }
};

}  // namespace

TEST_CASE("cluster: a PUBACK waits until the cluster stored the message, in order") {
  StoredFixture sf;
  auto& [f, fc] = sf;
  auto pub = f.connect("pub");
  fc.ticket_next = 7;
  pub->feed(publish_packet("s/1", "a", 1, false, 1));  // ticket 7
  pub->feed(publish_packet("s/1", "b", 1, false, 2));  // ticket 8
  fc.ticket_next = 0;
  pub->feed(publish_packet("s/1", "c", 1, false, 3));  // nothing to wait for: behind them
  CHECK(pub->take().empty());
  sf.stored(8, true);  // out of order: 1 still holds 2 and 3
  CHECK(pub->take().empty());
  sf.stored(7, true);
  auto out = pub->take();
  REQUIRE(out.size() == 3);
  CHECK(out[0].packet_id == 1);
  CHECK(out[1].packet_id == 2);
  CHECK(out[2].packet_id == 3);
  // Not stored: a 3.1.1 publisher is closed without its PUBACK (it sends it again).
  fc.ticket_next = 9;
  pub->feed(publish_packet("s/1", "d", 1, false, 4));
  sf.stored(9, false);
  CHECK(pub->take().empty());
  CHECK(pub->closed);
  sf.stored(12345, true);  // unknown (its client gone): nothing happens
}

TEST_CASE("cluster: a backlogged cluster holds the publisher until it is not") {
  StoredFixture sf;
  auto& [f, fc] = sf;
  auto pub = f.connect("pub");
  fc.ticket_next = 1;
  fc.backlog = true;
  pub->feed(publish_packet("s/1", "a", 1, false, 1));
  CHECK(pub->input_held());
  const int resumes = pub->resumes;
  fc.backlog = false;
  sf.stored(1, true);
  CHECK(!pub->input_held());
  CHECK(pub->resumes == resumes + 1);
  CHECK(pub->take().size() == 1);
  pub->close("bye");
}

TEST_CASE("cluster: a message from another node reaches local subscribers only") {
  Fixture f;
  FakeCluster fc;
  f.broker->set_cluster(&fc);
  auto sub = f.connect("sub");
  auto twin = f.connect("pub-id");  // the publisher's client id on this node
  sub->feed(subscribe_packet(1, {{"r/#", 2}, {"r/+", 0}}));
  sub->take();
  cluster::InboundMessage m;
  m.topic = "r/1";
  m.payload = "hello";
  m.qos = 1;
  m.retain = true;
  m.client_id = "pub-id";
  f.broker->on_cluster_message(m, 0);
  auto out = sub->take();
  REQUIRE(out.size() == 1);  // once, at the best QoS of its filters capped by the message's
  CHECK(out[0].qos == 1);
  CHECK(out[0].payload == "hello");
  CHECK_FALSE(out[0].retain);                       // forwarded copies carry RETAIN 0 (3.1.1)
  CHECK(fc.published.empty());                      // never back to the cluster
  CHECK(f.broker->router().retained_count() == 0);  // not stored as retained here
  f.broker->set_cluster(nullptr);
}
