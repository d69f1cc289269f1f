// core/mqtt5: what the broker keeps and encodes per MQTT 5.0 connection, tested on its
// own (the broker's flows are in broker_test and test/integration/test_mqtt5.py).
#include <doctest/doctest.h>

#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

using namespace mqgate;
using namespace std::string_literals;
namespace reason = codec::reason;

namespace {

// A Client without a transport: output stays in out_, close() is only recorded. At
// level 5 it has the state a 5.0 CONNECT with these limits leaves.
class BareClient final : public Client {
 public:
  explicit BareClient(uint8_t level, uint32_t max_packet_size = 0, uint16_t receive_maximum = 65535)
      : Client(nullptr, "127.0.0.1:1") {
    protocol_level = level;
    state = State::kConnected;
    if (level == codec::kProtocolLevel5) {
      mqtt5::ClientState s;
      s.max_packet_size = max_packet_size;
      s.receive_maximum = receive_maximum;
      set_v5(std::move(s));
    }
  }
  std::string& bytes() { return out_; }

 protected:
  void schedule_flush() override {}
  void on_close_requested() override {}
  void on_resume_requested() override {}
};

BareClient v5_client(uint32_t max_packet_size = 0, uint16_t receive_maximum = 65535) {
  return BareClient(codec::kProtocolLevel5, max_packet_size, receive_maximum);
}

codec::Publish aliased(std::string_view topic, uint16_t alias) {
  codec::Publish p;
  p.topic = topic;
  p.props.topic_alias = alias;
  return p;
}

// Decodes property bytes without a length prefix, as a PUBLISH would carry them.
codec::Properties decode_bare(const std::string& bytes, std::string& storage) {
  storage.clear();
  codec::write_varint(storage, static_cast<uint32_t>(bytes.size()));
  storage += bytes;
  std::string_view view(storage);
  codec::Properties out;
  REQUIRE(codec::decode_properties(view, codec::PropertyContext::kPublish, out).error ==
          codec::PropertyError::kNone);
  REQUIRE(view.empty());
  return out;
}

// The identifiers of the properties in `bytes` (no length prefix), in wire order.
std::vector<uint8_t> property_ids(const std::string& bytes) {
  std::string storage;
  codec::Properties props = decode_bare(bytes, storage);  // validates the layout
  (void)props;
  std::vector<uint8_t> ids;
  std::string_view in(bytes);
  while (!in.empty()) {
    const auto id = static_cast<codec::PropertyId>(in[0]);
    ids.push_back(static_cast<uint8_t>(in[0]));
    in.remove_prefix(1);
    auto skip_string = [&] {
      const size_t n = (uint8_t(in[0]) << 8) | uint8_t(in[1]);
      in.remove_prefix(2 + n);
    };
    switch (id) {
      case codec::PropertyId::kPayloadFormatIndicator:
        in.remove_prefix(1);
        break;
      case codec::PropertyId::kMessageExpiryInterval:
        in.remove_prefix(4);
        break;
      case codec::PropertyId::kSubscriptionIdentifier: {
        uint32_t v = 0;
        REQUIRE(codec::read_varint(in, v));
        break;
      }
      case codec::PropertyId::kUserProperty:
        skip_string();
        skip_string();
        break;
      default:  // the UTF-8 / binary ones a PUBLISH forwards
        skip_string();
        break;
    }
  }
  return ids;
}

}  // namespace

TEST_CASE("resolve_topic_alias: no alias leaves the PUBLISH alone") {
  mqtt5::ClientState s;
  codec::Publish p;
  p.topic = "a/b";
  CHECK(mqtt5::resolve_topic_alias(s, p) == reason::kSuccess);
  CHECK(p.topic == "a/b");
  CHECK(s.topic_aliases.empty());
}

TEST_CASE("resolve_topic_alias: 0 and over the maximum are invalid [MQTT-3.3.2-8, -9]") {
  mqtt5::ClientState s;
  auto zero = aliased("a", 0);
  CHECK(mqtt5::resolve_topic_alias(s, zero) == reason::kTopicAliasInvalid);
  auto over = aliased("a", mqtt5::kTopicAliasMaximum + 1);
  CHECK(mqtt5::resolve_topic_alias(s, over) == reason::kTopicAliasInvalid);
  auto max = aliased("a", 0xFFFF);
  CHECK(mqtt5::resolve_topic_alias(s, max) == reason::kTopicAliasInvalid);
  CHECK(s.topic_aliases.empty());  // nothing recorded on error
  // Without a topic too: the range is checked before the table.
  auto zero_empty = aliased("", 0);
  CHECK(mqtt5::resolve_topic_alias(s, zero_empty) == reason::kTopicAliasInvalid);
}

TEST_CASE("resolve_topic_alias: the maximum itself is usable, and the table grows to it only") {
  mqtt5::ClientState s;
  auto set = aliased("last", mqtt5::kTopicAliasMaximum);
  CHECK(mqtt5::resolve_topic_alias(s, set) == reason::kSuccess);
  CHECK(s.topic_aliases.size() == mqtt5::kTopicAliasMaximum);
  auto use = aliased("", mqtt5::kTopicAliasMaximum);
  CHECK(mqtt5::resolve_topic_alias(s, use) == reason::kSuccess);
  CHECK(use.topic == "last");
}

TEST_CASE("resolve_topic_alias: the aliases' topics hold at most kTopicAliasBytes (issue 22)") {
  mqtt5::ClientState s;
  // Sixteen aliases of 64 KiB topics would be a megabyte a connection.
  const std::string big(mqtt5::kTopicAliasBytes / 2, 't');
  auto a1 = aliased(big, 1), a2 = aliased(big, 2);
  CHECK(mqtt5::resolve_topic_alias(s, a1) == reason::kSuccess);
  CHECK(mqtt5::resolve_topic_alias(s, a2) == reason::kSuccess);
  auto a3 = aliased("x", 3);
  CHECK(mqtt5::resolve_topic_alias(s, a3) == reason::kQuotaExceeded);
  CHECK(s.topic_alias_bytes == mqtt5::kTopicAliasBytes);
  // Replacing one frees its bytes: the budget counts what is held, not what was sent.
  auto r1 = aliased("short", 1);
  CHECK(mqtt5::resolve_topic_alias(s, r1) == reason::kSuccess);
  CHECK(mqtt5::resolve_topic_alias(s, a3) == reason::kSuccess);
  CHECK(s.topic_alias_bytes == big.size() + 5 + 1);
  CHECK(s.topic_aliases[0].capacity() < 1024);  // the long topic's memory went too
}

TEST_CASE("resolve_topic_alias: set, use, replace; unknown aliases are a protocol error") {
  mqtt5::ClientState s;
  // Never set: 0x82 (3.3.4: the receiver has no mapping).
  auto unknown = aliased("", 1);
  CHECK(mqtt5::resolve_topic_alias(s, unknown) == reason::kProtocolError);

  auto set3 = aliased("t/three", 3);
  CHECK(mqtt5::resolve_topic_alias(s, set3) == reason::kSuccess);
  CHECK(set3.topic == "t/three");  // a PUBLISH that sets an alias keeps its topic

  // Inside the table but never set (the slots below 3 exist, empty).
  auto hole = aliased("", 2);
  CHECK(mqtt5::resolve_topic_alias(s, hole) == reason::kProtocolError);
  auto beyond = aliased("", 4);
  CHECK(mqtt5::resolve_topic_alias(s, beyond) == reason::kProtocolError);

  auto use = aliased("", 3);
  CHECK(mqtt5::resolve_topic_alias(s, use) == reason::kSuccess);
  CHECK(use.topic == "t/three");

  // A topic with a known alias replaces the mapping [MQTT-3.3.2-12 / 3.3.2.3.4].
  auto replace = aliased("t/new", 3);
  CHECK(mqtt5::resolve_topic_alias(s, replace) == reason::kSuccess);
  auto again = aliased("", 3);
  CHECK(mqtt5::resolve_topic_alias(s, again) == reason::kSuccess);
  CHECK(again.topic == "t/new");

  // The table owns its topics: the PUBLISH's bytes may go away.
  {
    std::string transient = "owned/topic";
    auto set1 = aliased(transient, 1);
    CHECK(mqtt5::resolve_topic_alias(s, set1) == reason::kSuccess);
    transient.assign(transient.size(), 'x');
  }
  auto use1 = aliased("", 1);
  CHECK(mqtt5::resolve_topic_alias(s, use1) == reason::kSuccess);
  CHECK(use1.topic == "owned/topic");
}

TEST_CASE("resolve_topic_alias: each connection has its own table") {
  mqtt5::ClientState a, b;
  auto set = aliased("only/a", 1);
  CHECK(mqtt5::resolve_topic_alias(a, set) == reason::kSuccess);
  auto use_b = aliased("", 1);
  CHECK(mqtt5::resolve_topic_alias(b, use_b) == reason::kProtocolError);
}

TEST_CASE("client_state: defaults for absent properties (3.1.2.11)") {
  codec::Properties none;
  mqtt5::ClientState s = mqtt5::client_state(none);
  CHECK(s.session_expiry == 0);
  CHECK(s.max_packet_size == 0);
  CHECK(s.receive_maximum == 65535);
  CHECK(s.topic_alias_maximum == 0);
  CHECK(s.request_problem_info);
  CHECK(s.topic_aliases.empty());
}

TEST_CASE("client_state: what the CONNECT said (its User Properties are not kept)") {
  std::string k1 = "region", v1 = "eu", k2 = "region", v2 = "us";  // the plugins read these
  codec::Properties p;
  p.session_expiry_interval = 0xFFFFFFFF;
  p.maximum_packet_size = 128;
  p.receive_maximum = 1;
  p.topic_alias_maximum = 7;
  p.request_problem_information = 0;
  p.user_properties = {{k1, v1}, {k2, v2}};
  mqtt5::ClientState s = mqtt5::client_state(p);
  CHECK(s.session_expiry == 0xFFFFFFFF);
  CHECK(s.max_packet_size == 128);
  CHECK(s.receive_maximum == 1);
  CHECK(s.topic_alias_maximum == 7);
  CHECK_FALSE(s.request_problem_info);
  p.request_problem_information = 1;
  CHECK(mqtt5::client_state(p).request_problem_info);
}

TEST_CASE("forwarded_properties: empty when nothing travels") {
  codec::Properties p;
  CHECK(mqtt5::forwarded_properties(p).empty());
  // What is per hop or per connection never travels [MQTT-3.3.2-7, 3.3.4-6].
  p.topic_alias = 3;
  p.message_expiry_interval = 60;  // re-encoded per delivery with the time left
  p.subscription_identifiers = {5};
  CHECK(mqtt5::forwarded_properties(p).empty());
}

TEST_CASE("forwarded_properties: identifier order, user properties in their order and kept twice") {
  codec::Properties p;
  // Set in a scrambled order: the output order is the encoder's, not this one.
  p.user_properties = {{"z", "1"}, {"a", "2"}, {"z", "3"}};
  const std::string correlation = "\x00\x01\xff"s;
  p.correlation_data = correlation;
  p.response_topic = "reply/here";
  p.content_type = "application/json";
  p.payload_format_indicator = 1;
  p.topic_alias = 9;
  const std::string bytes = mqtt5::forwarded_properties(p);
  CHECK(property_ids(bytes) == std::vector<uint8_t>{0x01, 0x03, 0x08, 0x09, 0x26, 0x26, 0x26});
  std::string storage;
  codec::Properties back = decode_bare(bytes, storage);
  CHECK(back.payload_format_indicator == std::optional<uint8_t>(1));
  CHECK(back.content_type == std::optional<std::string_view>("application/json"));
  CHECK(back.response_topic == std::optional<std::string_view>("reply/here"));
  CHECK(back.correlation_data == std::optional<std::string_view>("\x00\x01\xff"s));
  REQUIRE(back.user_properties.size() == 3);
  CHECK(back.user_properties[0].first == "z");
  CHECK(back.user_properties[0].second == "1");
  CHECK(back.user_properties[1].first == "a");
  CHECK(back.user_properties[2].second == "3");
  CHECK_FALSE(back.topic_alias);
}

TEST_CASE("with_subscription_ids: a copy with the ids appended, the original untouched") {
  codec::Properties p;
  p.content_type = "text/plain";
  const std::string props = mqtt5::forwarded_properties(p);
  MessagePtr msg = Message::create("s/t", "payload", 1, true, props, uint64_t{123456});
  const uint32_t ids[] = {1, 127, 128, 16383, 16384, 268435455};  // every varint width
  MessagePtr copy = mqtt5::with_subscription_ids(*msg, ids);
  CHECK(copy.get() != msg.get());
  CHECK(copy->topic() == "s/t");
  CHECK(copy->payload() == "payload");
  CHECK(copy->qos() == 1);
  CHECK(copy->retain());
  CHECK(copy->expires());
  CHECK(copy->expires_at_ms() == 123456);
  CHECK(msg->props() == props);
  CHECK(copy->props().substr(0, props.size()) == props);
  std::string storage;
  codec::Properties back = decode_bare(std::string(copy->props()), storage);
  CHECK(back.content_type == std::optional<std::string_view>("text/plain"));
  CHECK(back.subscription_identifiers == std::vector<uint32_t>(std::begin(ids), std::end(ids)));
}

TEST_CASE("with_subscription_ids: no ids, no properties, no expiry") {
  MessagePtr msg = Message::create("t", "", 0, false);
  MessagePtr same = mqtt5::with_subscription_ids(*msg, {});
  CHECK(same->props().empty());
  CHECK_FALSE(same->expires());
  CHECK_FALSE(same->retain());
  const uint32_t one[] = {42};
  MessagePtr with = mqtt5::with_subscription_ids(*msg, one);
  CHECK(with->props() == "\x0b\x2a"s);
  CHECK_FALSE(with->expires());
}

TEST_CASE("connack_reason maps every 3.1.1 return code") {
  using codec::ConnackCode;
  CHECK(mqtt5::connack_reason(ConnackCode::kAccepted) == reason::kSuccess);
  CHECK(mqtt5::connack_reason(ConnackCode::kUnacceptableProtocolVersion) ==
        reason::kUnsupportedProtocolVersion);
  CHECK(mqtt5::connack_reason(ConnackCode::kIdentifierRejected) ==
        reason::kClientIdentifierNotValid);
  CHECK(mqtt5::connack_reason(ConnackCode::kServerUnavailable) == reason::kServerUnavailable);
  CHECK(mqtt5::connack_reason(ConnackCode::kBadUsernameOrPassword) ==
        reason::kBadUserNameOrPassword);
  CHECK(mqtt5::connack_reason(ConnackCode::kNotAuthorized) == reason::kNotAuthorized);
}

TEST_CASE("encode_connack: the broker's capabilities, optional ones only when they apply") {
  auto decode = [](const std::string& bytes, codec::Properties& props) {
    codec::HeaderResult h = codec::parse_fixed_header(bytes);
    REQUIRE(h.status == codec::HeaderStatus::kComplete);
    REQUIRE(h.header.type == codec::PacketType::kConnack);
    REQUIRE(bytes.size() == h.header.packet_length());
    std::string_view body = std::string_view(bytes).substr(h.header.header_length);
    REQUIRE(body.size() >= 3);
    const bool present = body[0] == 1;
    CHECK(body[1] == 0);  // Success
    body.remove_prefix(2);
    REQUIRE(codec::decode_properties(body, codec::PropertyContext::kConnack, props).error ==
            codec::PropertyError::kNone);
    CHECK(body.empty());
    return present;
  };
  std::string plain;
  mqtt5::encode_connack(plain, false, {});
  codec::Properties p;
  CHECK_FALSE(decode(plain, p));
  CHECK_FALSE(p.receive_maximum);  // 65535 is the default: not sent
  CHECK_FALSE(p.maximum_packet_size);
  CHECK_FALSE(p.session_expiry_interval);
  CHECK_FALSE(p.assigned_client_identifier);
  CHECK_FALSE(p.maximum_qos);  // QoS 2 supported
  CHECK(p.topic_alias_maximum == std::optional<uint16_t>(mqtt5::kTopicAliasMaximum));
  // Absent means available: Retain, Wildcard, Subscription Identifier and Shared
  // Subscription Available are left out (the CONNACK stays small).
  CHECK_FALSE(p.retain_available);
  CHECK_FALSE(p.subscription_identifier_available);
  CHECK_FALSE(p.shared_subscription_available);

  mqtt5::ConnackInfo small;
  small.minimal = true;
  small.response_information = "r/";
  std::string minimal;
  mqtt5::encode_connack(minimal, false, small);
  codec::Properties m;
  CHECK_FALSE(decode(minimal, m));
  CHECK_FALSE(m.topic_alias_maximum);
  CHECK_FALSE(m.response_information);

  mqtt5::ConnackInfo info;
  info.receive_maximum = 100;
  info.maximum_packet_size = 4096;
  info.session_expiry = 0;
  info.session_expiry_differs = true;  // a 0 that differs from what was asked is sent
  info.assigned_client_id = "auto-1";
  std::string full;
  mqtt5::encode_connack(full, true, info);
  codec::Properties q;
  CHECK(decode(full, q));
  CHECK(q.receive_maximum == std::optional<uint16_t>(100));
  CHECK(q.maximum_packet_size == std::optional<uint32_t>(4096));
  CHECK(q.session_expiry_interval == std::optional<uint32_t>(0));
  CHECK(q.assigned_client_identifier == std::optional<std::string_view>("auto-1"));
}

TEST_CASE("publish_size equals the length encode_publish writes (random topics, payloads, props)") {
  std::mt19937 rng(20261201);
  auto pick = [&](size_t lo, size_t hi) {
    return std::uniform_int_distribution<size_t>(lo, hi)(rng);
  };
  BareClient v5 = v5_client();
  BareClient v4(4);
  // Sizes around the remaining-length and property-length varint steps (127, 16383) and
  // a payload over 2 MiB (a 4-byte remaining length).
  const size_t payload_sizes[] = {0, 1, 100, 120, 127, 128, 16000, 16383, 16384, 2100000};
  for (int i = 0; i < 400; ++i) {
    const std::string topic(pick(0, 300), static_cast<char>('a' + pick(0, 25)));
    const size_t payload_size = i < 40 ? payload_sizes[i % 10] : pick(0, 20000);
    const std::string payload(payload_size, 'p');
    codec::Properties p;
    if (pick(0, 1)) p.content_type = std::string_view("ct");
    if (pick(0, 1)) p.payload_format_indicator = 1;
    std::string big(pick(0, 20000), 'r');  // a long response topic crosses 127 and 16383
    if (pick(0, 1)) p.response_topic = big;
    std::vector<std::string> keys;
    for (size_t u = pick(0, 3); u > 0; --u)
      keys.push_back(std::string(pick(0, 80), 'k'));
    for (const auto& k : keys)
      p.user_properties.emplace_back(k, k);
    const std::string props = mqtt5::forwarded_properties(p);
    const auto qos = static_cast<uint8_t>(pick(0, 2));
    const std::optional<uint32_t> expiry =
        pick(0, 1) ? std::optional<uint32_t>(static_cast<uint32_t>(pick(0, 0xFFFFFFFF)))
                   : std::nullopt;
    const auto id = static_cast<uint16_t>(qos ? pick(1, 65535) : 0);
    const size_t topic_size = topic.size(), props_size = props.size();
    CAPTURE(i);
    CAPTURE(topic_size);
    CAPTURE(payload_size);
    CAPTURE(props_size);

    std::string& out5 = v5.bytes();
    out5.clear();
    mqtt5::encode_publish(v5, out5, topic, payload, props, qos, false, false, id, expiry);
    CHECK(out5.size() ==
          mqtt5::publish_size(codec::kProtocolLevel5, topic, payload.size(), qos, props, expiry));

    std::string& out4 = v4.bytes();
    out4.clear();
    mqtt5::encode_publish(v4, out4, topic, payload, props, qos, false, false, id, expiry);
    CHECK(out4.size() == mqtt5::publish_size(4, topic, payload.size(), qos, props, expiry));

    // The 5.0 bytes decode back to what was encoded, properties included.
    if (topic.empty()) continue;  // an empty topic needs an alias to be valid
    codec::HeaderResult h = codec::parse_fixed_header(out5);
    REQUIRE(h.status == codec::HeaderStatus::kComplete);
    REQUIRE(h.header.packet_length() == out5.size());
    codec::Packet decoded;
    REQUIRE(codec::decode_body(h.header, std::string_view(out5).substr(h.header.header_length),
                               codec::kProtocolLevel5, decoded) == codec::DecodeError::kNone);
    const auto& pub = std::get<codec::Publish>(decoded);
    CHECK(pub.topic == topic);
    CHECK(pub.payload.size() == payload.size());
    CHECK(pub.packet_id == id);
    CHECK(pub.props.message_expiry_interval == expiry);
    CHECK(pub.props.content_type == p.content_type);
    CHECK(pub.props.response_topic == p.response_topic);
    CHECK(pub.props.user_properties.size() == p.user_properties.size());
  }
}

TEST_CASE("fits: Maximum Packet Size at the exact boundary [MQTT-3.1.2-24]") {
  const std::string props = "\x03\x00\x02hi"s;  // Content Type "hi"
  const std::string topic = "a/b/c";
  const size_t payload = 200;
  const std::optional<uint32_t> expiry = 30;
  for (uint8_t qos = 0; qos <= 2; ++qos) {
    const size_t size =
        mqtt5::publish_size(codec::kProtocolLevel5, topic, payload, qos, props, expiry);
    CAPTURE(qos);
    CHECK(mqtt5::fits(v5_client(static_cast<uint32_t>(size)), topic, payload, qos, props, expiry));
    CHECK_FALSE(mqtt5::fits(v5_client(static_cast<uint32_t>(size - 1)), topic, payload, qos, props,
                            expiry));
    // The expiry property counts (5 bytes): without it the same limit has room.
    CHECK(mqtt5::fits(v5_client(static_cast<uint32_t>(size - 5)), topic, payload, qos, props));
  }
  // No limit: a 5.0 client that set none, and 3.1.1 clients (which cannot set one).
  CHECK(mqtt5::fits(v5_client(0), topic, 300000000, 2, props, expiry));
  CHECK(mqtt5::fits(BareClient(4), topic, 300000000, 2, props, expiry));
}

TEST_CASE("reason_list_fits: a SUBACK or UNSUBACK at the Maximum Packet Size [MQTT-3.1.2-25]") {
  // The sizes encode_suback_v5 and encode_unsuback_v5 write, across the remaining
  // length's second byte (127 and 128 bytes).
  for (size_t n : {1u, 15u, 16u, 50u, 123u, 124u, 125u, 300u}) {
    CAPTURE(n);
    const std::vector<uint8_t> codes(n, 1);
    std::string suback, unsuback;
    codec::encode_suback_v5(suback, 7, codes);
    codec::encode_unsuback_v5(unsuback, 7, codes);
    REQUIRE(suback.size() == unsuback.size());
    const auto size = static_cast<uint32_t>(suback.size());
    CHECK(mqtt5::reason_list_fits(v5_client(size), n));
    CHECK_FALSE(mqtt5::reason_list_fits(v5_client(size - 1), n));
    CHECK(mqtt5::reason_list_fits(v5_client(0), n));
    CHECK(mqtt5::reason_list_fits(BareClient(4), n));
  }
}

TEST_CASE("may_send_reason_string: the SUBACK with it stays within the Maximum Packet Size") {
  const std::vector<uint8_t> codes(10, 0);
  const std::string text = "not allowed here";
  codec::Properties props;
  props.reason_string = text;
  std::string with;
  codec::encode_suback_v5(with, 1, codes, &props);
  for (uint32_t max = 10; max < with.size() + 8; ++max) {
    CAPTURE(max);
    const bool may = mqtt5::may_send_reason_string(v5_client(max), text, 5 + codes.size(), false);
    if (may) CHECK(with.size() <= max);
  }
  CHECK(mqtt5::may_send_reason_string(v5_client(static_cast<uint32_t>(with.size()) + 2), text,
                                      5 + codes.size(), false));
}

TEST_CASE("send_window: the smaller of the broker's window and the client's Receive Maximum") {
  CHECK(mqtt5::send_window(nullptr, 1000) == 1000);
  BareClient v4(4);
  CHECK(mqtt5::send_window(&v4, 1000) == 1000);
  BareClient small = v5_client(0, 10);
  CHECK(mqtt5::send_window(&small, 1000) == 10);
  CHECK(mqtt5::send_window(&small, 3) == 3);
  BareClient one = v5_client(0, 1);
  CHECK(mqtt5::send_window(&one, 1000) == 1);
  BareClient def = v5_client();  // 65535 when absent
  CHECK(mqtt5::send_window(&def, 1000) == 1000);
  CHECK(mqtt5::send_window(&def, 100000) == 65535);
}

TEST_CASE("encode_ack: a reason code for 5.0 clients, the plain 3.1.1 form otherwise") {
  BareClient v5 = v5_client();
  std::string out5;
  mqtt5::encode_ack(v5, out5, codec::PacketType::kPuback, 0x1234, reason::kNoMatchingSubscribers);
  CHECK(out5 == "\x40\x03\x12\x34\x10"s);
  BareClient v4(4);
  std::string out4;
  mqtt5::encode_ack(v4, out4, codec::PacketType::kPuback, 0x1234, reason::kNoMatchingSubscribers);
  CHECK(out4 == "\x40\x02\x12\x34"s);
}

TEST_CASE("disconnect: a DISCONNECT only to a connected 5.0 client, once") {
  BareClient v5 = v5_client();
  mqtt5::disconnect(v5, reason::kTopicAliasInvalid, "bad alias");
  CHECK(v5.close_requested());
  CHECK(std::string(v5.close_reason()) == "bad alias");
  // 0x94, then a Reason String (0x1F) saying why.
  const std::string expected = "\xe0\x0e\x94\x0c\x1f\x00\x09"s + "bad alias";
  CHECK(v5.bytes() == expected);
  mqtt5::disconnect(v5, reason::kProtocolError, "again");
  CHECK(v5.bytes() == expected);  // closing already: nothing more
  CHECK(std::string(v5.close_reason()) == "bad alias");

  BareClient v4(4);
  mqtt5::disconnect(v4, reason::kProtocolError, "3.1.1");
  CHECK(v4.close_requested());
  CHECK(v4.bytes().empty());

  BareClient early = v5_client();
  early.state = Client::State::kAwaitConnect;  // no CONNACK yet: no DISCONNECT either
  mqtt5::disconnect(early, reason::kProtocolError, "early");
  CHECK(early.close_requested());
  CHECK(early.bytes().empty());
}
