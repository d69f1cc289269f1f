#include <doctest/doctest.h>

#include <string>

#include "mqtt/properties.hpp"

using namespace mqgate::codec;

namespace {

std::string block(const std::string& body) {
  std::string out;
  write_varint(out, static_cast<uint32_t>(body.size()));
  return out + body;
}

PropertyResult decode(const std::string& bytes, PropertyContext c, Properties& p) {
  std::string_view in = bytes;
  return decode_properties(in, c, p);
}

}  // namespace

TEST_CASE("variable byte integers: boundaries, and never a fifth byte") {
  for (uint32_t v : {0u, 127u, 128u, 16383u, 16384u, 2097151u, 2097152u, 268435455u}) {
    std::string s;
    write_varint(s, v);
    CHECK(s.size() == varint_size(v));
    std::string_view in = s;
    uint32_t back = 0;
    REQUIRE(read_varint(in, back));
    CHECK(back == v);
    CHECK(in.empty());
  }
  std::string_view five = "\xff\xff\xff\xff\x01";
  uint32_t v;
  CHECK_FALSE(read_varint(five, v));
  std::string_view cut = "\x80";
  CHECK_FALSE(read_varint(cut, v));
}

TEST_CASE("a PUBLISH's properties round-trip, user properties in order, several subscription ids") {
  Properties p;
  p.payload_format_indicator = 1;
  p.message_expiry_interval = 3600;
  p.content_type = "application/json";
  p.response_topic = "reply/to/me";
  p.correlation_data = std::string_view("\x00\x01\x02", 3);
  p.subscription_identifiers = {1, 300, 268435455};
  p.topic_alias = 7;
  p.user_properties = {{"b", "2"}, {"a", "1"}, {"b", "3"}};
  std::string wire;
  encode_properties(wire, p);
  CHECK(wire.size() == encoded_properties_size(p));
  wire += "payload";
  std::string_view in = wire;
  Properties back;
  REQUIRE(decode_properties(in, PropertyContext::kPublish, back).error == PropertyError::kNone);
  CHECK(in == "payload");
  CHECK(back.payload_format_indicator == 1);
  CHECK(back.message_expiry_interval == 3600u);
  CHECK(back.content_type == "application/json");
  CHECK(back.correlation_data->size() == 3);
  CHECK(back.subscription_identifiers == std::vector<uint32_t>{1, 300, 268435455});
  CHECK(back.topic_alias == 7);
  REQUIRE(back.user_properties.size() == 3);
  CHECK(back.user_properties[0].first == "b");
  CHECK(back.user_properties[1].first == "a");
  CHECK(back.user_properties[2].second == "3");
}

TEST_CASE("a CONNACK's properties round-trip") {
  Properties p;
  p.session_expiry_interval = 0xffffffff;
  p.receive_maximum = 100;
  p.maximum_qos = 1;
  p.retain_available = 1;
  p.maximum_packet_size = 1 << 20;
  p.assigned_client_identifier = "mqgate-00ff";
  p.topic_alias_maximum = 10;
  p.reason_string = "ok";
  p.wildcard_subscription_available = 1;
  p.subscription_identifier_available = 1;
  p.shared_subscription_available = 1;
  p.server_keep_alive = 30;
  p.response_information = "resp/";
  p.server_reference = "other:1883";
  p.authentication_method = "SCRAM-SHA-256";
  p.authentication_data = "r=abc";
  std::string wire;
  encode_properties(wire, p);
  CHECK(wire.size() == encoded_properties_size(p));
  Properties back;
  REQUIRE(decode(wire, PropertyContext::kConnack, back).error == PropertyError::kNone);
  CHECK(back.session_expiry_interval == 0xffffffffu);
  CHECK(back.server_keep_alive == 30);
  CHECK(back.authentication_method == "SCRAM-SHA-256");
  // The same block is not a valid CONNECT block (Maximum QoS is CONNACK-only).
  Properties in_connect;
  CHECK(decode(wire, PropertyContext::kConnect, in_connect).error == PropertyError::kMalformed);
}

TEST_CASE("malformed blocks and protocol errors are told apart") {
  struct Case {
    std::string bytes;
    PropertyContext ctx;
    PropertyError expect;
  };
  const Case cases[] = {
      {"\x05\x01", PropertyContext::kPublish, PropertyError::kMalformed},                 // length beyond
      {block(std::string("\x01", 1)), PropertyContext::kPublish, PropertyError::kMalformed},  // truncated
      {block(std::string("\x02\x00\x00", 3)), PropertyContext::kPublish, PropertyError::kMalformed},
      {block(std::string("\x07\x00", 2)), PropertyContext::kPublish, PropertyError::kMalformed},  // unknown id
      {block(std::string("\x24\x01", 2)), PropertyContext::kPublish, PropertyError::kMalformed},  // CONNACK-only
      {block(std::string("\x11\x00\x00\x00\x01", 5)), PropertyContext::kPublish, PropertyError::kMalformed},
      {block(std::string("\x18\x00\x00\x00\x01", 5)), PropertyContext::kPublish, PropertyError::kMalformed},  // will-only
      {block(std::string("\x03\x00\x02\xc3\x28", 5)), PropertyContext::kPublish, PropertyError::kMalformed},  // bad UTF-8
      {block(std::string("\x03\x00\x01\x00", 4)), PropertyContext::kPublish, PropertyError::kMalformed},      // U+0000
      {block(std::string("\x26\x00\x01k\x00\x05v", 7)), PropertyContext::kPublish, PropertyError::kMalformed},
      {block(std::string("\x0b\xff\xff\xff\xff\x01", 6)), PropertyContext::kPublish, PropertyError::kMalformed},
      {block(std::string("\x01\x02", 2)), PropertyContext::kPublish, PropertyError::kProtocolError},   // PFI 2
      {block(std::string("\x01\x00\x01\x01", 4)), PropertyContext::kPublish, PropertyError::kProtocolError},  // twice
      {block(std::string("\x23\x00\x00", 3)), PropertyContext::kPublish, PropertyError::kProtocolError},  // alias 0
      {block(std::string("\x0b\x00", 2)), PropertyContext::kPublish, PropertyError::kProtocolError},     // sub id 0
      {block(std::string("\x0b\x01\x0b\x02", 4)), PropertyContext::kSubscribe, PropertyError::kProtocolError},
      {block(std::string("\x21\x00\x00", 3)), PropertyContext::kConnect, PropertyError::kProtocolError},  // recv max 0
      {block(std::string("\x27\x00\x00\x00\x00", 5)), PropertyContext::kConnect, PropertyError::kProtocolError},
      {block(std::string("\x17\x02", 2)), PropertyContext::kConnect, PropertyError::kProtocolError},
      {block(std::string("\x19\x05", 2)), PropertyContext::kConnect, PropertyError::kProtocolError},
      {block(std::string("\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02", 10)), PropertyContext::kConnect,
       PropertyError::kProtocolError},
  };
  int i = 0;
  for (const Case& c : cases) {
    Properties p;
    const PropertyResult r = decode(c.bytes, c.ctx, p);
    CHECK_MESSAGE(r.error == c.expect, "case ", i, ": ", r.what);
    ++i;
  }
  // User properties may repeat, also with the same name; an empty block is fine.
  Properties p;
  CHECK(decode(block(std::string("\x26\x00\x01k\x00\x01v\x26\x00\x01k\x00\x01w", 14)), PropertyContext::kPuback, p)
            .error == PropertyError::kNone);
  CHECK(p.user_properties.size() == 2);
  Properties empty;
  CHECK(decode(std::string("\x00", 1), PropertyContext::kDisconnect, empty).error == PropertyError::kNone);
}

TEST_CASE("a property identifier is one byte: longer encodings are malformed, not truncated") {
  // Section 2.2.2.2. 257 = 0x81 0x02 must not pass for 0x01 (Payload Format Indicator),
  // 0x126 = 0xA6 0x02 for 0x26 (user property); 0x81 0x00 is 0x01 in two bytes.
  const std::string cases[] = {
      block(std::string("\x81\x02\x01", 3)),
      block(std::string("\xa6\x02\x00\x01k\x00\x01v", 9)),
      block(std::string("\x81\x00\x01", 3)),
      block(std::string("\x80\x01\x01", 3)),  // 128
      block(std::string("\xff\xff\xff\x7f", 4)),
  };
  for (const auto ctx : {PropertyContext::kPublish, PropertyContext::kConnect}) {
    int i = 0;
    for (const std::string& bytes : cases) {
      Properties p;
      const PropertyResult r = decode(bytes, ctx, p);
      CHECK_MESSAGE(r.error == PropertyError::kMalformed, "case ", i, ": ", r.what);
      CHECK_FALSE(p.payload_format_indicator);
      CHECK(p.user_properties.empty());
      ++i;
    }
  }
}
