#include <doctest/doctest.h>

#include <string>

#include "base/utf8.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

using namespace mqgate::codec;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

// Decodes one whole packet from `bytes`; returns the error.
DecodeError decode(const std::string& bytes, Packet& out, uint8_t level = 4) {
  HeaderResult h = parse_fixed_header(bytes);
  if (h.status == HeaderStatus::kError) return h.error;
  REQUIRE(h.status == HeaderStatus::kComplete);
  REQUIRE(bytes.size() == h.header.packet_length());
  return decode_body(h.header, std::string_view(bytes).substr(h.header.header_length), level, out);
}

std::string connect_bytes(const Connect& c) {
  std::string out;
  encode_connect(out, c);
  return out;
}

Connect basic_connect() {
  Connect c;
  c.protocol_name = "MQTT";
  c.protocol_level = 4;
  c.clean_session = true;
  c.keepalive = 60;
  c.client_id = "dev-1";
  return c;
}

}  // namespace

TEST_CASE("remaining length: every size class parses, a fifth length byte is malformed") {
  for (size_t len : {0ul, 1ul, 127ul, 128ul, 16383ul, 16384ul, 2097151ul, 2097152ul, 268435455ul}) {
    std::string out;
    // PUBLISH header alone is enough to test the length field.
    out.push_back('\x30');
    size_t v = len;
    do {
      uint8_t d = v & 0x7F;
      v >>= 7;
      if (v) d |= 0x80;
      out.push_back(static_cast<char>(d));
    } while (v);
    HeaderResult h = parse_fixed_header(out);
    REQUIRE(h.status == HeaderStatus::kComplete);
    CHECK(h.header.remaining_length == len);
    CHECK(h.header.header_length == 1 + remaining_length_size(len));
    // Any prefix is incomplete, never an error.
    for (size_t n = 0; n < out.size(); ++n)
      CHECK(parse_fixed_header(std::string_view(out).substr(0, n)).status == HeaderStatus::kIncomplete);
  }
  CHECK(parse_fixed_header("\x30\xff\xff\xff\xff\x01"s).status == HeaderStatus::kError);
  CHECK(parse_fixed_header("\x30\xff\xff\xff\xff\x01"s).error == DecodeError::kMalformedRemainingLength);
  CHECK(parse_fixed_header("\x00\x00"s).error == DecodeError::kReservedPacketType);
  // 15 is AUTH in MQTT 5: the header parses; the body's decoder refuses it below level 5.
  CHECK(parse_fixed_header("\xf0\x00"s).status == HeaderStatus::kComplete);
  Packet p;
  CHECK(decode_body(parse_fixed_header("\xf0\x00"s).header, "", kProtocolLevel311, p) ==
        DecodeError::kReservedPacketType);
}

TEST_CASE("CONNECT round trip with will, username and password") {
  Connect c = basic_connect();
  c.will = Will{"status/dev-1", "gone", 1, true};
  c.username = "alice";
  c.password = "s\0cret"sv;
  Packet p;
  const std::string bytes = connect_bytes(c);  // the packet's views point into it
  REQUIRE(decode(bytes, p) == DecodeError::kNone);
  auto& d = std::get<Connect>(p);
  CHECK(d.client_id == "dev-1");
  CHECK(d.keepalive == 60);
  CHECK(d.clean_session);
  REQUIRE(d.will);
  CHECK(d.will->topic == "status/dev-1");
  CHECK(d.will->payload == "gone");
  CHECK(d.will->qos == 1);
  CHECK(d.will->retain);
  CHECK(*d.username == "alice");
  CHECK(*d.password == "s\0cret"sv);
}

TEST_CASE("CONNECT: protocol name and level") {
  Packet p;
  Connect c = basic_connect();
  c.protocol_name = "MQIsdp";
  c.protocol_level = 3;
  CHECK(decode(connect_bytes(c), p) == DecodeError::kNone);

  c.protocol_level = 4;  // MQIsdp is level 3 only
  CHECK(decode(connect_bytes(c), p) == DecodeError::kUnsupportedProtocolLevel);

  c = basic_connect();
  c.protocol_level = 6;
  const std::string v6 = connect_bytes(c);
  CHECK(decode(v6, p) == DecodeError::kUnsupportedProtocolLevel);
  CHECK(std::get<Connect>(p).protocol_level == 6);  // kept for the CONNACK 1 answer

  c.protocol_name = "MQTX";
  c.protocol_level = 4;
  CHECK(decode(connect_bytes(c), p) == DecodeError::kInvalidProtocolName);
}

TEST_CASE("CONNECT: invalid flag combinations are rejected") {
  Packet p;
  std::string bytes = connect_bytes(basic_connect());
  const size_t flags_at = 2 + 6 + 1;  // header(2) + "MQTT"(6) + level(1)
  REQUIRE(static_cast<uint8_t>(bytes[flags_at]) == 0x02);

  auto with_flags = [&](uint8_t flags) {
    std::string b = bytes;
    b[flags_at] = static_cast<char>(flags);
    return decode(b, p);
  };
  CHECK(with_flags(0x03) == DecodeError::kInvalidConnectFlags);  // reserved bit
  CHECK(with_flags(0x02 | 0x08) == DecodeError::kInvalidConnectFlags);  // will QoS, no will
  CHECK(with_flags(0x02 | 0x20) == DecodeError::kInvalidConnectFlags);  // will retain, no will
  CHECK(with_flags(0x02 | 0x40) == DecodeError::kInvalidConnectFlags);  // password, no username
  CHECK(with_flags(0x02 | 0x04 | 0x18) == DecodeError::kInvalidQos);     // will QoS 3
  CHECK(with_flags(0x02 | 0x80) == DecodeError::kTruncated);            // username flag, no field
}

TEST_CASE("CONNECT: will topic must be a valid topic name") {
  Packet p;
  Connect c = basic_connect();
  c.will = Will{"status/#", "x", 0, false};
  CHECK(decode(connect_bytes(c), p) == DecodeError::kInvalidTopicName);
}

TEST_CASE("CONNECT: trailing bytes and bad header flags") {
  Packet p;
  std::string b = connect_bytes(basic_connect());
  b.push_back('x');
  b[1] = static_cast<char>(b[1] + 1);
  CHECK(decode(b, p) == DecodeError::kTrailingBytes);
  b = connect_bytes(basic_connect());
  b[0] = '\x11';
  CHECK(decode(b, p) == DecodeError::kInvalidFixedHeaderFlags);
}

TEST_CASE("PUBLISH round trip for every QoS, retain and dup") {
  for (uint8_t qos = 0; qos <= 2; ++qos) {
    for (bool retain : {false, true}) {
      std::string out;
      const bool dup = qos > 0;
      encode_publish(out, "a/b/c", "payload\0bytes"sv, qos, retain, dup, qos ? 4242 : 0);
      CHECK(out.size() == publish_packet_size("a/b/c", 13, qos));
      Packet p;
      REQUIRE(decode(out, p) == DecodeError::kNone);
      auto& d = std::get<Publish>(p);
      CHECK(d.topic == "a/b/c");
      CHECK(d.payload == "payload\0bytes"sv);
      CHECK(d.qos == qos);
      CHECK(d.retain == retain);
      CHECK(d.dup == dup);
      CHECK(d.packet_id == (qos ? 4242 : 0));
    }
  }
}

TEST_CASE("PUBLISH: protocol violations") {
  Packet p;
  std::string out;
  encode_publish(out, "a/b", "x", 1, false, false, 0);
  CHECK(decode(out, p) == DecodeError::kZeroPacketId);

  out.clear();
  encode_publish(out, "a/+", "x", 0, false, false, 0);
  CHECK(decode(out, p) == DecodeError::kInvalidTopicName);
  out.clear();
  encode_publish(out, "a/#", "x", 0, false, false, 0);
  CHECK(decode(out, p) == DecodeError::kInvalidTopicName);
  out.clear();
  encode_publish(out, "", "x", 0, false, false, 0);
  CHECK(decode(out, p) == DecodeError::kInvalidTopicName);

  out.clear();
  encode_publish(out, "a", "x", 0, false, false, 0);
  out[0] = '\x36';  // QoS 3
  CHECK(decode(out, p) == DecodeError::kInvalidQos);
  out[0] = '\x38';  // DUP on QoS 0
  CHECK(decode(out, p) == DecodeError::kDupOnQos0);

  out.clear();
  encode_publish(out, "a\xc0\x80"s, "x", 0, false, false, 0);  // overlong NUL
  CHECK(decode(out, p) == DecodeError::kInvalidUtf8);

  CHECK(decode("\x30\x01\x00"s, p) == DecodeError::kTruncated);  // topic length cut
}

TEST_CASE("SUBSCRIBE / UNSUBSCRIBE") {
  Packet p;
  std::string out;
  SubscribeTopic topics[] = {{"a/+", 1}, {"#", 2}, {"x", 0}};
  encode_subscribe(out, 7, topics);
  REQUIRE(decode(out, p) == DecodeError::kNone);
  auto& s = std::get<Subscribe>(p);
  CHECK(s.packet_id == 7);
  REQUIRE(s.topics.size() == 3);
  CHECK(s.topics[1].filter == "#");
  CHECK(s.topics[1].qos == 2);

  out.clear();
  SubscribeTopic bad[] = {{"a/#/b", 0}};
  encode_subscribe(out, 7, bad);
  CHECK(decode(out, p) == DecodeError::kInvalidTopicFilter);

  out.clear();
  SubscribeTopic q3[] = {{"a", 3}};
  encode_subscribe(out, 7, q3);
  CHECK(decode(out, p) == DecodeError::kInvalidQos);
  out.back() = '\x41';
  CHECK(decode(out, p) == DecodeError::kInvalidSubscribeOptions);

  CHECK(decode("\x82\x02\x00\x01"s, p) == DecodeError::kEmptyPayloadList);
  CHECK(decode("\x80\x02\x00\x01"s, p) == DecodeError::kInvalidFixedHeaderFlags);
  CHECK(decode("\x82\x02\x00\x00"s, p) == DecodeError::kZeroPacketId);

  out.clear();
  std::string_view filters[] = {"a/b", "c/#"};
  encode_unsubscribe(out, 9, filters);
  REQUIRE(decode(out, p) == DecodeError::kNone);
  CHECK(std::get<Unsubscribe>(p).filters.size() == 2);
  CHECK(decode("\xa2\x02\x00\x01"s, p) == DecodeError::kEmptyPayloadList);
  CHECK(decode("\xa0\x02\x00\x01"s, p) == DecodeError::kInvalidFixedHeaderFlags);
}

TEST_CASE("acks, PINGREQ, DISCONNECT and server-only packets") {
  Packet p;
  std::string out;
  encode_ack(out, PacketType::kPubrel, 5);
  CHECK(static_cast<uint8_t>(out[0]) == 0x62);
  REQUIRE(decode(out, p) == DecodeError::kNone);
  CHECK(std::get<Ack>(p).type == PacketType::kPubrel);
  CHECK(decode("\x60\x02\x00\x05"s, p) == DecodeError::kInvalidFixedHeaderFlags);  // PUBREL 0000
  CHECK(decode("\x42\x02\x00\x05"s, p) == DecodeError::kInvalidFixedHeaderFlags);  // PUBACK 0010
  CHECK(decode("\x40\x03\x00\x05\x00"s, p) == DecodeError::kTrailingBytes);
  CHECK(decode("\xc0\x00"s, p) == DecodeError::kNone);
  CHECK(decode("\xc0\x01\x00"s, p) == DecodeError::kTrailingBytes);
  CHECK(decode("\xe0\x00"s, p) == DecodeError::kNone);
  CHECK(decode("\xe2\x00"s, p) == DecodeError::kInvalidFixedHeaderFlags);
  CHECK(decode("\x20\x02\x00\x00"s, p) == DecodeError::kUnexpectedPacketType);  // CONNACK
  CHECK(decode("\xd0\x00"s, p) == DecodeError::kUnexpectedPacketType);          // PINGRESP
}

TEST_CASE("server packets encode as the specification lays them out") {
  std::string out;
  encode_connack(out, true, ConnackCode::kAccepted);
  CHECK(out == "\x20\x02\x01\x00"s);
  out.clear();
  uint8_t codes[] = {0, 1, 0x80};
  encode_suback(out, 0x1234, codes);
  CHECK(out == "\x90\x05\x12\x34\x00\x01\x80"s);
  out.clear();
  encode_pingresp(out);
  CHECK(out == "\xd0\x00"s);
  out.clear();
  encode_ack(out, PacketType::kUnsuback, 1);
  CHECK(out == "\xb0\x02\x00\x01"s);
}

TEST_CASE("UTF-8 validation") {
  CHECK(is_valid_mqtt_utf8(""));
  CHECK(is_valid_mqtt_utf8("plain/ascii/topic/longer/than/eight"));
  CHECK(is_valid_mqtt_utf8("\xc3\xbc\xe2\x82\xac\xf0\x9f\x99\x82"));  // ü € 🙂
  CHECK_FALSE(is_valid_mqtt_utf8("a\0b"sv));
  CHECK_FALSE(is_valid_mqtt_utf8("abcdefgh\0ijk"sv));  // NUL inside the fast path
  CHECK_FALSE(is_valid_mqtt_utf8("\xc0\x80"));          // overlong NUL
  CHECK_FALSE(is_valid_mqtt_utf8("\xe0\x80\xaf"));      // overlong '/'
  CHECK_FALSE(is_valid_mqtt_utf8("\xed\xa0\x80"));      // surrogate U+D800
  CHECK_FALSE(is_valid_mqtt_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(is_valid_mqtt_utf8("\x80"));              // lone continuation
  CHECK_FALSE(is_valid_mqtt_utf8("\xe2\x82"));          // truncated
  CHECK_FALSE(is_valid_mqtt_utf8("\xff"));
}
