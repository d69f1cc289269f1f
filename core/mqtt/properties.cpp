#include "mqtt/properties.hpp"

#include <type_traits>

#include "base/utf8.hpp"
#include "mqtt/topic.hpp"

namespace mqgate::codec {

namespace {

enum class Kind : uint8_t { kByte, kTwoByte, kFourByte, kVarint, kUtf8, kBinary, kUtf8Pair };

// Bit per PropertyContext.
constexpr uint32_t bit(PropertyContext c) {
  return 1u << static_cast<unsigned>(c);
}
using C = PropertyContext;
constexpr uint32_t kAcks = bit(C::kPuback);
constexpr uint32_t kEvery = bit(C::kConnect) | bit(C::kConnack) | bit(C::kPublish) | kAcks |
                            bit(C::kSubscribe) | bit(C::kSuback) | bit(C::kUnsubscribe) |
                            bit(C::kUnsuback) | bit(C::kDisconnect) | bit(C::kAuth) | bit(C::kWill);

struct Definition {
  Kind kind = Kind::kByte;
  uint32_t contexts = 0;  // 0: not a property
};

// The table of section 2.2.2.2.
constexpr Definition definition(uint32_t id) {
  switch (static_cast<PropertyId>(id)) {
    case PropertyId::kPayloadFormatIndicator:
      return {Kind::kByte, bit(C::kPublish) | bit(C::kWill)};
    case PropertyId::kMessageExpiryInterval:
      return {Kind::kFourByte, bit(C::kPublish) | bit(C::kWill)};
    case PropertyId::kContentType:
      return {Kind::kUtf8, bit(C::kPublish) | bit(C::kWill)};
    case PropertyId::kResponseTopic:
      return {Kind::kUtf8, bit(C::kPublish) | bit(C::kWill)};
    case PropertyId::kCorrelationData:
      return {Kind::kBinary, bit(C::kPublish) | bit(C::kWill)};
    case PropertyId::kSubscriptionIdentifier:
      return {Kind::kVarint, bit(C::kPublish) | bit(C::kSubscribe)};
    case PropertyId::kSessionExpiryInterval:
      return {Kind::kFourByte, bit(C::kConnect) | bit(C::kConnack) | bit(C::kDisconnect)};
    case PropertyId::kAssignedClientIdentifier:
      return {Kind::kUtf8, bit(C::kConnack)};
    case PropertyId::kServerKeepAlive:
      return {Kind::kTwoByte, bit(C::kConnack)};
    case PropertyId::kAuthenticationMethod:
      return {Kind::kUtf8, bit(C::kConnect) | bit(C::kConnack) | bit(C::kAuth)};
    case PropertyId::kAuthenticationData:
      return {Kind::kBinary, bit(C::kConnect) | bit(C::kConnack) | bit(C::kAuth)};
    case PropertyId::kRequestProblemInformation:
      return {Kind::kByte, bit(C::kConnect)};
    case PropertyId::kWillDelayInterval:
      return {Kind::kFourByte, bit(C::kWill)};
    case PropertyId::kRequestResponseInformation:
      return {Kind::kByte, bit(C::kConnect)};
    case PropertyId::kResponseInformation:
      return {Kind::kUtf8, bit(C::kConnack)};
    case PropertyId::kServerReference:
      return {Kind::kUtf8, bit(C::kConnack) | bit(C::kDisconnect)};
    case PropertyId::kReasonString:
      return {Kind::kUtf8, bit(C::kConnack) | kAcks | bit(C::kSuback) | bit(C::kUnsuback) |
                               bit(C::kDisconnect) | bit(C::kAuth)};
    case PropertyId::kReceiveMaximum:
      return {Kind::kTwoByte, bit(C::kConnect) | bit(C::kConnack)};
    case PropertyId::kTopicAliasMaximum:
      return {Kind::kTwoByte, bit(C::kConnect) | bit(C::kConnack)};
    case PropertyId::kTopicAlias:
      return {Kind::kTwoByte, bit(C::kPublish)};
    case PropertyId::kMaximumQoS:
      return {Kind::kByte, bit(C::kConnack)};
    case PropertyId::kRetainAvailable:
      return {Kind::kByte, bit(C::kConnack)};
    case PropertyId::kUserProperty:
      return {Kind::kUtf8Pair, kEvery};
    case PropertyId::kMaximumPacketSize:
      return {Kind::kFourByte, bit(C::kConnect) | bit(C::kConnack)};
    case PropertyId::kWildcardSubscriptionAvailable:
      return {Kind::kByte, bit(C::kConnack)};
    case PropertyId::kSubscriptionIdentifierAvailable:
      return {Kind::kByte, bit(C::kConnack)};
    case PropertyId::kSharedSubscriptionAvailable:
      return {Kind::kByte, bit(C::kConnack)};
  }
  return {};
}

bool read_u16(std::string_view& in, uint16_t& v) {
  if (in.size() < 2) return false;
  v = static_cast<uint16_t>(static_cast<uint8_t>(in[0]) << 8 | static_cast<uint8_t>(in[1]));
  in.remove_prefix(2);
  return true;
}

bool read_u32(std::string_view& in, uint32_t& v) {
  if (in.size() < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i)
    v = v << 8 | static_cast<uint8_t>(in[static_cast<size_t>(i)]);
  in.remove_prefix(4);
  return true;
}

bool read_binary(std::string_view& in, std::string_view& v) {
  uint16_t n;
  if (!read_u16(in, n) || in.size() < n) return false;
  v = in.substr(0, n);
  in.remove_prefix(n);
  return true;
}

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_binary(std::string& out, std::string_view v) {
  put_u16(out, static_cast<uint16_t>(v.size()));
  out.append(v);
}

// Calls visit(id, value) for every property set in `p`, in identifier order.
template <typename Visit>
void for_each_property(const Properties& p, Visit&& visit) {
  auto one = [&](PropertyId id, const auto& opt) {
    if (opt) visit(id, *opt);
  };
  one(PropertyId::kPayloadFormatIndicator, p.payload_format_indicator);
  one(PropertyId::kMessageExpiryInterval, p.message_expiry_interval);
  one(PropertyId::kContentType, p.content_type);
  one(PropertyId::kResponseTopic, p.response_topic);
  one(PropertyId::kCorrelationData, p.correlation_data);
  for (uint32_t id : p.subscription_identifiers)
    visit(PropertyId::kSubscriptionIdentifier, id);
  one(PropertyId::kSessionExpiryInterval, p.session_expiry_interval);
  one(PropertyId::kAssignedClientIdentifier, p.assigned_client_identifier);
  one(PropertyId::kServerKeepAlive, p.server_keep_alive);
  one(PropertyId::kAuthenticationMethod, p.authentication_method);
  one(PropertyId::kAuthenticationData, p.authentication_data);
  one(PropertyId::kRequestProblemInformation, p.request_problem_information);
  one(PropertyId::kWillDelayInterval, p.will_delay_interval);
  one(PropertyId::kRequestResponseInformation, p.request_response_information);
  one(PropertyId::kResponseInformation, p.response_information);
  one(PropertyId::kServerReference, p.server_reference);
  one(PropertyId::kReasonString, p.reason_string);
  one(PropertyId::kReceiveMaximum, p.receive_maximum);
  one(PropertyId::kTopicAliasMaximum, p.topic_alias_maximum);
  one(PropertyId::kTopicAlias, p.topic_alias);
  one(PropertyId::kMaximumQoS, p.maximum_qos);
  one(PropertyId::kRetainAvailable, p.retain_available);
  for (const auto& kv : p.user_properties)
    visit(PropertyId::kUserProperty, kv);
  one(PropertyId::kMaximumPacketSize, p.maximum_packet_size);
  one(PropertyId::kWildcardSubscriptionAvailable, p.wildcard_subscription_available);
  one(PropertyId::kSubscriptionIdentifierAvailable, p.subscription_identifier_available);
  one(PropertyId::kSharedSubscriptionAvailable, p.shared_subscription_available);
}

void encode_value(std::string& out, PropertyId id, uint8_t v) {
  (void)id;
  out.push_back(static_cast<char>(v));
}
void encode_value(std::string& out, PropertyId id, uint16_t v) {
  (void)id;
  put_u16(out, v);
}
void encode_value(std::string& out, PropertyId id, uint32_t v) {
  if (id == PropertyId::kSubscriptionIdentifier)
    write_varint(out, v);
  else
    put_u32(out, v);
}
void encode_value(std::string& out, PropertyId, std::string_view v) {
  put_binary(out, v);
}
void encode_value(std::string& out, PropertyId,
                  const std::pair<std::string_view, std::string_view>& kv) {
  put_binary(out, kv.first);
  put_binary(out, kv.second);
}

void encode_body(std::string& out, const Properties& p) {
  for_each_property(p, [&](PropertyId id, const auto& v) {
    out.push_back(static_cast<char>(id));
    encode_value(out, id, v);
  });
}

}  // namespace

bool read_varint(std::string_view& in, uint32_t& value) {
  value = 0;
  for (int i = 0; i < 4; ++i) {
    if (in.empty()) return false;
    const auto b = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    value |= uint32_t{b & 0x7fu} << (7 * i);
    // A last byte of 0 after others is a longer encoding than needed [MQTT-1.5.5-1].
    if ((b & 0x80) == 0) return i == 0 || b != 0;
  }
  return false;  // a fifth byte would be needed
}

void write_varint(std::string& out, uint32_t value) {
  do {
    uint8_t b = value & 0x7f;
    value >>= 7;
    if (value) b |= 0x80;
    out.push_back(static_cast<char>(b));
  } while (value);
}

size_t varint_size(uint32_t value) {
  return value < 128 ? 1 : value < 16384 ? 2 : value < 2097152 ? 3 : 4;
}

PropertyResult decode_properties(std::string_view& in, PropertyContext context, Properties& out) {
  auto malformed = [](const char* what) { return PropertyResult{PropertyError::kMalformed, what}; };
  auto protocol = [](const char* what) {
    return PropertyResult{PropertyError::kProtocolError, what};
  };
  uint32_t length;
  if (!read_varint(in, length)) return malformed("property length");
  if (length > in.size()) return malformed("property length beyond the packet");
  std::string_view block = in.substr(0, length);
  in.remove_prefix(length);
  while (!block.empty()) {
    // Identifiers are variable byte integers, but "in this version of the specification
    // all of the Property Identifiers are one byte long" (2.2.2.2): a continuation bit
    // starts an identifier of 128 or more, or a longer encoding of a small one, none of
    // them defined. (Read as a varint and cast, 257 passed for 0x01.)
    const auto id = static_cast<uint8_t>(block[0]);
    block.remove_prefix(1);
    if (id & 0x80) return malformed("property identifier over one byte");
    const Definition def = definition(id);
    if (def.contexts == 0) return malformed("unknown property identifier");
    if ((def.contexts & bit(context)) == 0) return malformed("property not allowed in this packet");
    uint8_t byte = 0;
    uint16_t two = 0;
    uint32_t four = 0;
    std::string_view text, text2;
    switch (def.kind) {
      case Kind::kByte:
        if (block.empty()) return malformed("truncated property");
        byte = static_cast<uint8_t>(block[0]);
        block.remove_prefix(1);
        break;
      case Kind::kTwoByte:
        if (!read_u16(block, two)) return malformed("truncated property");
        break;
      case Kind::kFourByte:
        if (!read_u32(block, four)) return malformed("truncated property");
        break;
      case Kind::kVarint:
        if (!read_varint(block, four)) return malformed("subscription identifier");
        break;
      case Kind::kUtf8:
        if (!read_binary(block, text)) return malformed("truncated property");
        if (!is_valid_mqtt_utf8(text)) return malformed("property string is not valid UTF-8");
        break;
      case Kind::kBinary:
        if (!read_binary(block, text)) return malformed("truncated property");
        break;
      case Kind::kUtf8Pair:
        if (!read_binary(block, text) || !read_binary(block, text2))
          return malformed("truncated property");
        if (!is_valid_mqtt_utf8(text) || !is_valid_mqtt_utf8(text2))
          return malformed("user property is not valid UTF-8");
        break;
    }
    auto once = [&](auto& slot, auto value) {
      if (slot) return false;
      slot = value;
      return true;
    };
    bool ok = true;
    switch (static_cast<PropertyId>(id)) {
      case PropertyId::kPayloadFormatIndicator:
        if (byte > 1) return protocol("payload format indicator is not 0 or 1");
        ok = once(out.payload_format_indicator, byte);
        break;
      case PropertyId::kMessageExpiryInterval:
        ok = once(out.message_expiry_interval, four);
        break;
      case PropertyId::kContentType:
        ok = once(out.content_type, text);
        break;
      case PropertyId::kResponseTopic:
        // A topic name: a receiver publishes to it [MQTT-3.3.2-14, MQTT-3.1.3-11].
        if (!is_valid_topic_name(text)) return protocol("response topic is not a topic name");
        ok = once(out.response_topic, text);
        break;
      case PropertyId::kCorrelationData:
        ok = once(out.correlation_data, text);
        break;
      case PropertyId::kSubscriptionIdentifier:
        if (four == 0) return protocol("subscription identifier 0");
        if (context == PropertyContext::kSubscribe && !out.subscription_identifiers.empty())
          return protocol("property given twice");
        out.subscription_identifiers.push_back(four);
        break;
      case PropertyId::kSessionExpiryInterval:
        ok = once(out.session_expiry_interval, four);
        break;
      case PropertyId::kAssignedClientIdentifier:
        ok = once(out.assigned_client_identifier, text);
        break;
      case PropertyId::kServerKeepAlive:
        ok = once(out.server_keep_alive, two);
        break;
      case PropertyId::kAuthenticationMethod:
        ok = once(out.authentication_method, text);
        break;
      case PropertyId::kAuthenticationData:
        ok = once(out.authentication_data, text);
        break;
      case PropertyId::kRequestProblemInformation:
        if (byte > 1) return protocol("request problem information is not 0 or 1");
        ok = once(out.request_problem_information, byte);
        break;
      case PropertyId::kWillDelayInterval:
        ok = once(out.will_delay_interval, four);
        break;
      case PropertyId::kRequestResponseInformation:
        if (byte > 1) return protocol("request response information is not 0 or 1");
        ok = once(out.request_response_information, byte);
        break;
      case PropertyId::kResponseInformation:
        ok = once(out.response_information, text);
        break;
      case PropertyId::kServerReference:
        ok = once(out.server_reference, text);
        break;
      case PropertyId::kReasonString:
        ok = once(out.reason_string, text);
        break;
      case PropertyId::kReceiveMaximum:
        if (two == 0) return protocol("receive maximum 0");
        ok = once(out.receive_maximum, two);
        break;
      case PropertyId::kTopicAliasMaximum:
        ok = once(out.topic_alias_maximum, two);
        break;
      case PropertyId::kTopicAlias:
        if (two == 0) return protocol("topic alias 0");
        ok = once(out.topic_alias, two);
        break;
      case PropertyId::kMaximumQoS:
        if (byte > 1) return protocol("maximum QoS is not 0 or 1");
        ok = once(out.maximum_qos, byte);
        break;
      case PropertyId::kRetainAvailable:
        if (byte > 1) return protocol("retain available is not 0 or 1");
        ok = once(out.retain_available, byte);
        break;
      case PropertyId::kUserProperty:
        out.user_properties.emplace_back(text, text2);
        break;
      case PropertyId::kMaximumPacketSize:
        if (four == 0) return protocol("maximum packet size 0");
        ok = once(out.maximum_packet_size, four);
        break;
      case PropertyId::kWildcardSubscriptionAvailable:
        if (byte > 1) return protocol("wildcard subscription available is not 0 or 1");
        ok = once(out.wildcard_subscription_available, byte);
        break;
      case PropertyId::kSubscriptionIdentifierAvailable:
        if (byte > 1) return protocol("subscription identifier available is not 0 or 1");
        ok = once(out.subscription_identifier_available, byte);
        break;
      case PropertyId::kSharedSubscriptionAvailable:
        if (byte > 1) return protocol("shared subscription available is not 0 or 1");
        ok = once(out.shared_subscription_available, byte);
        break;
    }
    if (!ok) return protocol("property given twice");
  }
  return {};
}

void encode_properties(std::string& out, const Properties& props) {
  std::string body;
  encode_body(body, props);
  write_varint(out, static_cast<uint32_t>(body.size()));
  out += body;
}

size_t encoded_properties_size(const Properties& props) {
  size_t n = 0;
  for_each_property(props, [&](PropertyId id, const auto& v) {
    using V = std::decay_t<decltype(v)>;
    n += 1;
    if constexpr (std::is_same_v<V, uint8_t>)
      n += 1;
    else if constexpr (std::is_same_v<V, uint16_t>)
      n += 2;
    else if constexpr (std::is_same_v<V, uint32_t>)
      n += id == PropertyId::kSubscriptionIdentifier ? varint_size(v) : 4;
    else if constexpr (std::is_same_v<V, std::string_view>)
      n += 2 + v.size();
    else
      n += 4 + v.first.size() + v.second.size();
  });
  return varint_size(static_cast<uint32_t>(n)) + n;
}

}  // namespace mqgate::codec
