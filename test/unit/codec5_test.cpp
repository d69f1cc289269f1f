// MQTT 5.0 packets in the codec: properties and reason codes on every packet, AUTH,
// subscription options, and the Malformed Packet / Protocol Error distinction.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

using namespace mqgate::codec;
using namespace std::string_literals;

namespace {

DecodeError decode5(const std::string& bytes, Packet& out) {
  HeaderResult h = parse_fixed_header(bytes);
  if (h.status == HeaderStatus::kError) return h.error;
  REQUIRE(h.status == HeaderStatus::kComplete);
  REQUIRE(bytes.size() == h.header.packet_length());
  return decode_body(h.header, std::string_view(bytes).substr(h.header.header_length),
                     kProtocolLevel5, out);
}

// A packet of `type`/`flags` around `body`.
std::string packet(uint8_t first, const std::string& body) {
  std::string out(1, static_cast<char>(first));
  size_t n = body.size();
  do {
    uint8_t d = n & 0x7f;
    n >>= 7;
    if (n) d |= 0x80;
    out.push_back(static_cast<char>(d));
  } while (n);
  return out + body;
}

std::string str(std::string_view s) {
  return std::string{static_cast<char>(s.size() >> 8), static_cast<char>(s.size() & 0xff)} +
         std::string(s);
}

Connect v5_connect() {
  Connect c;
  c.protocol_name = "MQTT";
  c.protocol_level = kProtocolLevel5;
  c.clean_session = true;
  c.keepalive = 30;
  c.client_id = "dev-5";
  return c;
}

}  // namespace

TEST_CASE("MQTT 5 CONNECT: properties, will properties, a password without a username") {
  Connect c = v5_connect();
  c.props.session_expiry_interval = 3600;
  c.props.receive_maximum = 10;
  c.props.maximum_packet_size = 65536;
  c.props.topic_alias_maximum = 5;
  c.props.request_problem_information = 0;
  c.props.authentication_method = "SCRAM-SHA-256";
  c.props.authentication_data = "n,,n=user,r=abc";
  c.props.user_properties = {{"region", "eu"}, {"region", "us"}};
  Will w;
  w.topic = "status/dev-5";
  w.payload = "gone";
  w.qos = 1;
  w.props.will_delay_interval = 30;
  w.props.payload_format_indicator = 1;
  w.props.content_type = "text/plain";
  c.will = w;
  c.password = "secret";
  std::string bytes;
  encode_connect(bytes, c);
  Packet p;
  REQUIRE(decode5(bytes, p) == DecodeError::kNone);
  const Connect& d = std::get<Connect>(p);
  CHECK(d.protocol_level == 5);
  CHECK(d.props.session_expiry_interval == 3600u);
  CHECK(d.props.receive_maximum == 10);
  CHECK(d.props.maximum_packet_size == 65536u);
  CHECK(d.props.topic_alias_maximum == 5);
  CHECK(d.props.request_problem_information == 0);
  CHECK(d.props.authentication_method == "SCRAM-SHA-256");
  CHECK(d.props.authentication_data == "n,,n=user,r=abc");
  REQUIRE(d.props.user_properties.size() == 2);
  CHECK(d.props.user_properties[1].second == "us");  // in order, duplicates kept
  REQUIRE(d.will);
  CHECK(d.will->props.will_delay_interval == 30u);
  CHECK(d.will->props.content_type == "text/plain");
  CHECK(d.will->payload == "gone");
  CHECK_FALSE(d.username);
  CHECK(d.password == "secret");

  // The same password without username is refused at level 4 [MQTT-3.1.2-22].
  Connect c4 = c;
  c4.protocol_level = kProtocolLevel311;
  c4.will.reset();
  std::string b4;
  encode_connect(b4, c4);
  CHECK(decode_body(parse_fixed_header(b4).header, std::string_view(b4).substr(2), 0, p) ==
        DecodeError::kInvalidConnectFlags);
}

TEST_CASE(
    "MQTT 5 CONNECT: bad properties are malformed or protocol errors, and the level survives") {
  // A will payload announced as UTF-8 that is not.
  Connect c = v5_connect();
  Will w;
  w.topic = "t";
  w.payload = "\xff\xfe";
  w.props.payload_format_indicator = 1;
  c.will = w;
  std::string bytes;
  encode_connect(bytes, c);
  Packet p;
  CHECK(decode5(bytes, p) == DecodeError::kPayloadFormatInvalid);
  CHECK(std::get<Connect>(p).protocol_level == 5);  // the answer is an MQTT 5 CONNACK

  // Receive Maximum given twice: Protocol Error. A property block longer than the packet:
  // Malformed. A property that CONNECT cannot carry (Topic Alias): Malformed.
  const std::string head = str("MQTT") + "\x05\x02\x00\x1e"s;
  CHECK(decode5(packet(0x10, head + "\x06\x21\x00\x05\x21\x00\x06"s + str("x")), p) ==
        DecodeError::kPropertyProtocolError);
  CHECK(decode5(packet(0x10, head + "\x09\x21\x00\x05"s + str("x")), p) ==
        DecodeError::kMalformedProperties);
  CHECK(decode5(packet(0x10, head + "\x03\x23\x00\x01"s + str("x")), p) ==
        DecodeError::kMalformedProperties);
  CHECK(disconnect_reason(DecodeError::kPropertyProtocolError) == reason::kProtocolError);
  CHECK(disconnect_reason(DecodeError::kMalformedProperties) == reason::kMalformedPacket);

  // A 3.1.1-shaped CONNECT (no property block) at level 5 is malformed, level kept.
  const std::string no_props = packet(0x10, head + str("v5client"));
  CHECK(decode5(no_props, p) != DecodeError::kNone);
  CHECK(std::get<Connect>(p).protocol_level == 5);
}

TEST_CASE("MQTT 5 PUBLISH: properties round trip; topic aliases; what a client must not send") {
  const std::string correlation("\x00\x01\x02", 3);
  Properties props;
  props.topic_alias = 3;
  props.response_topic = "replies/dev-5";
  props.correlation_data = correlation;
  props.message_expiry_interval = 60;
  props.content_type = "application/json";
  props.user_properties = {{"a", "1"}, {"b", "2"}};
  std::string bytes;
  encode_publish(bytes, "cmd/dev-5", "{}", 1, true, false, 7, props);
  CHECK(bytes.size() == publish_packet_size("cmd/dev-5", 2, 1, &props));
  Packet p;
  REQUIRE(decode5(bytes, p) == DecodeError::kNone);
  const Publish& d = std::get<Publish>(p);
  CHECK(d.topic == "cmd/dev-5");
  CHECK(d.packet_id == 7);
  CHECK(d.payload == "{}");
  CHECK(d.props.topic_alias == 3);
  CHECK(d.props.correlation_data == std::string("\x00\x01\x02", 3));
  CHECK(d.props.user_properties.size() == 2);

  // An empty topic stands for its alias; without one it is a Protocol Error.
  Properties alias;
  alias.topic_alias = 3;
  bytes.clear();
  encode_publish(bytes, "", "x", 0, false, false, 0, alias);
  REQUIRE(decode5(bytes, p) == DecodeError::kNone);
  CHECK(std::get<Publish>(p).topic.empty());
  bytes.clear();
  encode_publish(bytes, "", "x", 0, false, false, 0, Properties{});
  CHECK(decode5(bytes, p) == DecodeError::kMissingTopic);
  CHECK(disconnect_reason(DecodeError::kMissingTopic) == reason::kProtocolError);
  // A Subscription Identifier is the server's to send [MQTT-3.3.4-6].
  Properties sub_id;
  sub_id.subscription_identifiers = {5};
  bytes.clear();
  encode_publish(bytes, "t", "x", 0, false, false, 0, sub_id);
  CHECK(decode5(bytes, p) == DecodeError::kPropertyProtocolError);
  // Payload Format Indicator 1 with bytes that are not UTF-8.
  Properties utf8;
  utf8.payload_format_indicator = 1;
  bytes.clear();
  encode_publish(bytes, "t", "ok \xc3\xa9", 0, false, false, 0, utf8);
  CHECK(decode5(bytes, p) == DecodeError::kNone);
  bytes.clear();
  encode_publish(bytes, "t", "bad \xc3", 0, false, false, 0, utf8);
  CHECK(decode5(bytes, p) == DecodeError::kPayloadFormatInvalid);
  CHECK(disconnect_reason(DecodeError::kPayloadFormatInvalid) == reason::kPayloadFormatInvalid);
  // Wildcards in a topic name are still invalid.
  bytes.clear();
  encode_publish(bytes, "a/+", "x", 0, false, false, 0, Properties{});
  CHECK(decode5(bytes, p) == DecodeError::kInvalidTopicName);
}

TEST_CASE("MQTT 5 acknowledgements: short forms, reason codes, properties") {
  Packet p;
  // Remaining length 2: Success.
  REQUIRE(decode5("\x40\x02\x00\x09"s, p) == DecodeError::kNone);
  CHECK(std::get<Ack>(p).reason_code == 0);
  // Remaining length 3: a reason code, no properties.
  REQUIRE(decode5("\x50\x03\x00\x09\x10"s, p) == DecodeError::kNone);
  CHECK(std::get<Ack>(p).type == PacketType::kPubrec);
  CHECK(std::get<Ack>(p).reason_code == reason::kNoMatchingSubscribers);
  // A reason code PUBACK cannot carry; one PUBREL cannot carry.
  CHECK(decode5("\x40\x03\x00\x09\x05"s, p) == DecodeError::kInvalidReasonCode);
  CHECK(decode5("\x62\x03\x00\x09\x10"s, p) == DecodeError::kInvalidReasonCode);
  REQUIRE(decode5("\x62\x03\x00\x09\x92"s, p) == DecodeError::kNone);

  // The encoder: short when it can be, the reason string when there is one.
  std::string out;
  encode_ack_v5(out, PacketType::kPuback, 9, 0);
  CHECK(out == "\x40\x02\x00\x09"s);
  out.clear();
  encode_ack_v5(out, PacketType::kPubrel, 9, reason::kPacketIdentifierNotFound);
  CHECK(out == "\x62\x03\x00\x09\x92"s);
  out.clear();
  Properties why;
  why.reason_string = "quota";
  encode_ack_v5(out, PacketType::kPuback, 9, reason::kQuotaExceeded, &why);
  REQUIRE(decode5(out, p) == DecodeError::kNone);
  CHECK(std::get<Ack>(p).reason_code == reason::kQuotaExceeded);
  CHECK(std::get<Ack>(p).props.reason_string == "quota");
}

TEST_CASE("MQTT 5 SUBSCRIBE: subscription options and the subscription identifier") {
  std::vector<SubscribeTopic> topics(2);
  topics[0].filter = "a/#";
  topics[0].qos = 1;
  topics[0].no_local = true;
  topics[0].retain_as_published = true;
  topics[0].retain_handling = 2;
  topics[1].filter = "$share/g/b";
  topics[1].qos = 2;
  Properties props;
  props.subscription_identifiers = {42};
  props.user_properties = {{"k", "v"}};
  std::string bytes;
  encode_subscribe_v5(bytes, 3, topics, &props);
  Packet p;
  REQUIRE(decode5(bytes, p) == DecodeError::kNone);
  const Subscribe& s = std::get<Subscribe>(p);
  REQUIRE(s.topics.size() == 2);
  CHECK(s.topics[0].no_local);
  CHECK(s.topics[0].retain_as_published);
  CHECK(s.topics[0].retain_handling == 2);
  CHECK(s.topics[1].qos == 2);
  CHECK(s.props.subscription_identifiers == std::vector<uint32_t>{42});

  const std::string head = "\x00\x03\x00"s;  // packet id 3, no properties
  CHECK(decode5(packet(0x82, head + str("a") + "\x30"s), p) ==
        DecodeError::kInvalidSubscribeOptions);  // RH 3
  CHECK(decode5(packet(0x82, head + str("a") + "\x40"s), p) ==
        DecodeError::kInvalidSubscribeOptions);  // reserved
  CHECK(decode5(packet(0x82, head + str("a") + "\x03"s), p) == DecodeError::kInvalidQos);
  // Subscription Identifier 0, or two of them: Protocol Error.
  CHECK(decode5(packet(0x82, "\x00\x03\x02\x0b\x00"s + str("a") + "\x00"s), p) ==
        DecodeError::kPropertyProtocolError);
  CHECK(decode5(packet(0x82, "\x00\x03\x04\x0b\x01\x0b\x02"s + str("a") + "\x00"s), p) ==
        DecodeError::kPropertyProtocolError);
  // 3.1.1 keeps its rule: any bit above the QoS is reserved.
  CHECK(decode_body(parse_fixed_header(packet(0x82, "\x00\x03"s + str("a") + "\x04"s)).header,
                    "\x00\x03"s + str("a") + "\x04"s, kProtocolLevel311,
                    p) == DecodeError::kInvalidSubscribeOptions);

  std::string out;
  const uint8_t codes[] = {reason::kGrantedQos1, reason::kNotAuthorized};
  encode_suback_v5(out, 3, codes);
  CHECK(out == "\x90\x05\x00\x03\x00\x01\x87"s);
}

TEST_CASE("MQTT 5 UNSUBSCRIBE, DISCONNECT and AUTH") {
  std::string bytes;
  const std::string_view filters[] = {"a/b"};
  Properties props;
  props.user_properties = {{"why", "done"}};
  encode_unsubscribe_v5(bytes, 4, filters, &props);
  Packet p;
  REQUIRE(decode5(bytes, p) == DecodeError::kNone);
  CHECK(std::get<Unsubscribe>(p).filters.size() == 1);
  CHECK(std::get<Unsubscribe>(p).props.user_properties.size() == 1);
  std::string out;
  const uint8_t codes[] = {reason::kNoSubscriptionExisted};
  encode_unsuback_v5(out, 4, codes);
  CHECK(out == "\xb0\x04\x00\x04\x00\x11"s);

  // DISCONNECT: empty means Normal; 0x04 keeps the will; a code only servers send is refused.
  REQUIRE(decode5("\xe0\x00"s, p) == DecodeError::kNone);
  CHECK(std::get<Disconnect>(p).reason_code == 0);
  REQUIRE(decode5("\xe0\x01\x04"s, p) == DecodeError::kNone);
  CHECK(std::get<Disconnect>(p).reason_code == reason::kDisconnectWithWill);
  CHECK(decode5("\xe0\x01\x8e"s, p) == DecodeError::kInvalidReasonCode);
  REQUIRE(decode5("\xe0\x07\x00\x05\x11\x00\x00\x00\x3c"s, p) == DecodeError::kNone);
  CHECK(std::get<Disconnect>(p).props.session_expiry_interval == 60u);
  CHECK(decode_body(parse_fixed_header("\xe0\x01\x04"s).header, "\x04", kProtocolLevel311, p) ==
        DecodeError::kTrailingBytes);

  Properties why;
  why.reason_string = "session taken over";
  out.clear();
  encode_disconnect_v5(out, reason::kSessionTakenOver, &why);
  CHECK(out.substr(0, 3) == "\xe0\x17\x8e"s);
  out.clear();
  encode_disconnect_v5(out, 0);
  CHECK(out == "\xe0\x00"s);

  // AUTH exists only in MQTT 5, with 0x00, 0x18 or 0x19.
  Properties auth;
  auth.authentication_method = "SCRAM-SHA-256";
  auth.authentication_data = "c=biws,r=abc";
  out.clear();
  encode_auth(out, reason::kContinueAuthentication, &auth);
  REQUIRE(decode5(out, p) == DecodeError::kNone);
  CHECK(std::get<Auth>(p).reason_code == reason::kContinueAuthentication);
  CHECK(std::get<Auth>(p).props.authentication_data == "c=biws,r=abc");
  CHECK(decode5("\xf0\x01\x87"s, p) == DecodeError::kInvalidReasonCode);
  CHECK(decode5("\xf1\x00"s, p) == DecodeError::kInvalidFixedHeaderFlags);
  CHECK(decode_body(parse_fixed_header("\xf0\x00"s).header, "", kProtocolLevel311, p) ==
        DecodeError::kReservedPacketType);
}

TEST_CASE("MQTT 5 CONNACK from the encoder") {
  Properties props;
  props.receive_maximum = 100;
  props.assigned_client_identifier = "mqgate-1";
  props.retain_available = 1;
  std::string out;
  encode_connack_v5(out, true, 0, props);
  // Fixed header, flags (session present), reason, then the property block.
  CHECK(out.substr(0, 4) ==
        "\x20"s + static_cast<char>(2 + encoded_properties_size(props)) + "\x01\x00"s);
  std::string_view rest = std::string_view(out).substr(4);
  Properties back;
  REQUIRE(decode_properties(rest, PropertyContext::kConnack, back).error == PropertyError::kNone);
  CHECK(back.receive_maximum == 100);
  CHECK(back.assigned_client_identifier == "mqgate-1");
  CHECK(rest.empty());
}
