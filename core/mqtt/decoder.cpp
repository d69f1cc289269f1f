#include "mqtt/decoder.hpp"

#include "base/utf8.hpp"
#include "mqtt/topic.hpp"

namespace mqgate::codec {

const char* describe(DecodeError error) {
  switch (error) {
#define MQGATE_XX(name, text) \
  case DecodeError::name:     \
    return text;
    MQGATE_DECODE_ERROR_MAP(MQGATE_XX)
#undef MQGATE_XX
  }
  return "unknown decode error";
}

uint8_t disconnect_reason(DecodeError error) {
  switch (error) {
    case DecodeError::kNone:
      return reason::kSuccess;
    case DecodeError::kUnexpectedPacketType:
    case DecodeError::kZeroPacketId:
    case DecodeError::kPropertyProtocolError:
    case DecodeError::kMissingTopic:
    case DecodeError::kUnsupportedProtocolLevel:
    case DecodeError::kInvalidProtocolName:
      return reason::kProtocolError;
    case DecodeError::kInvalidTopicName:
      return reason::kTopicNameInvalid;
    case DecodeError::kInvalidTopicFilter:
      return reason::kTopicFilterInvalid;
    case DecodeError::kPayloadFormatInvalid:
      return reason::kPayloadFormatInvalid;
    default:
      return reason::kMalformedPacket;
  }
}

const char* packet_type_name(PacketType type) {
  static constexpr const char* kNames[] = {"RESERVED",  "CONNECT",  "CONNACK",     "PUBLISH",
                                           "PUBACK",    "PUBREC",   "PUBREL",      "PUBCOMP",
                                           "SUBSCRIBE", "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
                                           "PINGREQ",   "PINGRESP", "DISCONNECT",  "AUTH"};
  return kNames[static_cast<uint8_t>(type) & 0x0F];
}

HeaderResult parse_fixed_header(std::string_view data) {
  HeaderResult r{HeaderStatus::kIncomplete, {}, DecodeError::kNone};
  if (data.empty()) return r;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t type = p[0] >> 4;
  const uint8_t flags = p[0] & 0x0F;
  // 15 is AUTH in MQTT 5 and reserved before: decode_body, which knows the level, decides.
  if (type == 0) return {HeaderStatus::kError, {}, DecodeError::kReservedPacketType};

  uint32_t length = 0;
  size_t i = 1;
  for (int shift = 0;; shift += 7, ++i) {
    if (i >= data.size()) return r;  // need more bytes
    if (i > 4) return {HeaderStatus::kError, {}, DecodeError::kMalformedRemainingLength};
    length |= uint32_t{p[i] & 0x7Fu} << shift;
    if ((p[i] & 0x80) == 0) break;
  }
  // A multi-byte length with a zero final byte is a non-minimal encoding; the spec's
  // algorithm accepts it, so do we (Mosquitto does too).
  r.status = HeaderStatus::kComplete;
  r.header = FixedHeader{static_cast<PacketType>(type), flags, length, static_cast<uint8_t>(i + 1)};
  return r;
}

namespace {

// Reads big-endian fields and length-prefixed strings from a packet body.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool u8(uint8_t& v) {
    if (data_.size() < 1) return false;
    v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool u16(uint16_t& v) {
    if (data_.size() < 2) return false;
    v = static_cast<uint16_t>((uint8_t(data_[0]) << 8) | uint8_t(data_[1]));
    data_.remove_prefix(2);
    return true;
  }
  // Two-byte length followed by that many bytes.
  bool bytes(std::string_view& v) {
    uint16_t len;
    if (!u16(len) || data_.size() < len) return false;
    v = data_.substr(0, len);
    data_.remove_prefix(len);
    return true;
  }
  // The MQTT 5 property block at this point.
  DecodeError properties(PropertyContext context, Properties& props) {
    const PropertyResult r = decode_properties(data_, context, props);
    if (r.error == PropertyError::kNone) return DecodeError::kNone;
    return r.error == PropertyError::kMalformed ? DecodeError::kMalformedProperties
                                                : DecodeError::kPropertyProtocolError;
  }
  std::string_view rest() {
    auto r = data_;
    data_ = {};
    return r;
  }
  bool empty() const { return data_.empty(); }

 private:
  std::string_view data_;
};

// Reads a UTF-8 string field; sets `error` when it is truncated or not valid UTF-8.
bool read_string(Reader& r, std::string_view& v, DecodeError& error) {
  if (!r.bytes(v)) {
    error = DecodeError::kTruncated;
    return false;
  }
  if (!is_valid_mqtt_utf8(v)) {
    error = DecodeError::kInvalidUtf8;
    return false;
  }
  return true;
}

DecodeError decode_connect_fields(std::string_view body, Connect& c) {
  Reader r(body);
  DecodeError err = DecodeError::kNone;
  if (!r.bytes(c.protocol_name) || !r.u8(c.protocol_level)) return DecodeError::kTruncated;
  const bool mqtt = c.protocol_name == "MQTT";
  const bool v31 = c.protocol_name == "MQIsdp";
  if (!mqtt && !v31) return DecodeError::kInvalidProtocolName;
  if ((mqtt && c.protocol_level != kProtocolLevel311 && c.protocol_level != kProtocolLevel5) ||
      (v31 && c.protocol_level != kProtocolLevel31)) {
    return DecodeError::kUnsupportedProtocolLevel;
  }
  const bool v5 = c.protocol_level == kProtocolLevel5;
  uint8_t flags;
  if (!r.u8(flags) || !r.u16(c.keepalive)) return DecodeError::kTruncated;
  const bool has_username = flags & 0x80;
  const bool has_password = flags & 0x40;
  const bool will_retain = flags & 0x20;
  const uint8_t will_qos = (flags >> 3) & 0x03;
  const bool has_will = flags & 0x04;
  c.clean_session = flags & 0x02;                              // Clean Start in MQTT 5
  if (flags & 0x01) return DecodeError::kInvalidConnectFlags;  // [MQTT-3.1.2-3]
  if (!has_will && (will_qos != 0 || will_retain))
    return DecodeError::kInvalidConnectFlags;          // [MQTT-3.1.2-11, -13, -15]
  if (will_qos == 3) return DecodeError::kInvalidQos;  // [MQTT-3.1.2-14]
  // 3.1.1 forbids a password without a username [MQTT-3.1.2-22]; MQTT 5 allows it.
  if (has_password && !has_username && !v5) return DecodeError::kInvalidConnectFlags;
  if (v5 && (err = r.properties(PropertyContext::kConnect, c.props)) != DecodeError::kNone)
    return err;

  if (!read_string(r, c.client_id, err)) return err;
  if (has_will) {
    Will w;
    w.qos = will_qos;
    w.retain = will_retain;
    if (v5 && (err = r.properties(PropertyContext::kWill, w.props)) != DecodeError::kNone)
      return err;
    if (!read_string(r, w.topic, err)) return err;
    if (!is_valid_topic_name(w.topic)) return DecodeError::kInvalidTopicName;
    if (!r.bytes(w.payload)) return DecodeError::kTruncated;
    if (w.props.payload_format_indicator == 1 && !is_valid_utf8_payload(w.payload))
      return DecodeError::kPayloadFormatInvalid;
    c.will = std::move(w);
  }
  if (has_username) {
    std::string_view u;
    if (!read_string(r, u, err)) return err;
    c.username = u;
  }
  if (has_password) {
    std::string_view p;
    if (!r.bytes(p)) return DecodeError::kTruncated;
    c.password = p;
  }
  if (!r.empty()) return DecodeError::kTrailingBytes;
  return DecodeError::kNone;
}

// On error too, `out` holds what was read (protocol name and level at least), so the
// caller can answer in the client's protocol version [MQTT-3.1.2-2].
DecodeError decode_connect(std::string_view body, Packet& out) {
  Connect c;
  const DecodeError err = decode_connect_fields(body, c);
  out = std::move(c);
  return err;
}

DecodeError decode_publish(uint8_t flags, std::string_view body, bool v5, Packet& out) {
  Publish p;
  p.dup = flags & 0x08;
  p.qos = (flags >> 1) & 0x03;
  p.retain = flags & 0x01;
  if (p.qos == 3) return DecodeError::kInvalidQos;          // [MQTT-3.3.1-4]
  if (p.qos == 0 && p.dup) return DecodeError::kDupOnQos0;  // [MQTT-3.3.1-2]
  Reader r(body);
  DecodeError err = DecodeError::kNone;
  if (!read_string(r, p.topic, err)) return err;
  // MQTT 5: an empty topic name stands for the one a Topic Alias maps to (checked below).
  if (!(v5 && p.topic.empty()) && !is_valid_topic_name(p.topic))
    return DecodeError::kInvalidTopicName;  // [MQTT-3.3.2-2]
  if (p.qos > 0) {
    if (!r.u16(p.packet_id)) return DecodeError::kTruncated;
    if (p.packet_id == 0) return DecodeError::kZeroPacketId;  // [MQTT-2.3.1-1]
  }
  if (v5) {
    if ((err = r.properties(PropertyContext::kPublish, p.props)) != DecodeError::kNone) return err;
    if (p.topic.empty() && !p.props.topic_alias)
      return DecodeError::kMissingTopic;  // [MQTT-3.3.2-8]
    // A client never sends Subscription Identifiers [MQTT-3.3.4-6].
    if (!p.props.subscription_identifiers.empty()) return DecodeError::kPropertyProtocolError;
  }
  p.payload = r.rest();
  if (p.props.payload_format_indicator == 1 && !is_valid_utf8_payload(p.payload))
    return DecodeError::kPayloadFormatInvalid;  // [MQTT-3.3.2-4]: the receiver may check
  out = std::move(p);
  return DecodeError::kNone;
}

// The reason codes a client may send in each acknowledgement (3.4.2.1, 3.5.2.1, 3.6.2.1,
// 3.7.2.1).
bool valid_ack_reason(PacketType type, uint8_t code) {
  if (type == PacketType::kPubrel || type == PacketType::kPubcomp)
    return code == reason::kSuccess || code == reason::kPacketIdentifierNotFound;
  switch (code) {
    case reason::kSuccess:
    case reason::kNoMatchingSubscribers:
    case reason::kUnspecifiedError:
    case reason::kImplementationSpecificError:
    case reason::kNotAuthorized:
    case reason::kTopicNameInvalid:
    case reason::kPacketIdentifierInUse:
    case reason::kQuotaExceeded:
    case reason::kPayloadFormatInvalid:
      return true;
    default:
      return false;
  }
}

DecodeError decode_ack(PacketType type, std::string_view body, bool v5, Packet& out) {
  Reader r(body);
  Ack a{type, 0};
  if (!r.u16(a.packet_id)) return DecodeError::kTruncated;
  if (v5 && !r.empty()) {
    // 3.4.2.1: without a reason code (remaining length 2) it is 0x00 Success; without
    // properties (remaining length 3) there are none.
    if (!r.u8(a.reason_code)) return DecodeError::kTruncated;
    if (!valid_ack_reason(type, a.reason_code)) return DecodeError::kInvalidReasonCode;
    if (!r.empty()) {
      const DecodeError err = r.properties(PropertyContext::kPuback, a.props);
      if (err != DecodeError::kNone) return err;
    }
  }
  if (!r.empty()) return DecodeError::kTrailingBytes;
  if (a.packet_id == 0) return DecodeError::kZeroPacketId;
  out = std::move(a);
  return DecodeError::kNone;
}

DecodeError decode_subscribe(std::string_view body, bool v5, Packet& out) {
  Reader r(body);
  Subscribe s;
  DecodeError err = DecodeError::kNone;
  if (!r.u16(s.packet_id)) return DecodeError::kTruncated;
  if (s.packet_id == 0) return DecodeError::kZeroPacketId;
  if (v5) {
    if ((err = r.properties(PropertyContext::kSubscribe, s.props)) != DecodeError::kNone)
      return err;
    if (s.props.subscription_identifiers.size() > 1) return DecodeError::kPropertyProtocolError;
    if (!s.props.subscription_identifiers.empty() && s.props.subscription_identifiers[0] == 0)
      return DecodeError::kPropertyProtocolError;  // 3.8.2.1.2: 1 to 268,435,455
  }
  if (r.empty()) return DecodeError::kEmptyPayloadList;  // [MQTT-3.8.3-3]
  while (!r.empty()) {
    SubscribeTopic t;
    if (!read_string(r, t.filter, err)) return err;
    uint8_t options;
    if (!r.u8(options)) return DecodeError::kTruncated;
    // 3.1.1: only the QoS bits [MQTT-3.8.3-4]; MQTT 5: QoS, No Local, Retain As
    // Published, Retain Handling (3 is not a value), and two reserved bits [MQTT-3.8.3-5].
    if (options & (v5 ? 0xC0 : 0xFC)) return DecodeError::kInvalidSubscribeOptions;
    if ((options & 0x03) == 3) return DecodeError::kInvalidQos;
    t.qos = options & 0x03;
    if (v5) {
      t.no_local = options & 0x04;
      t.retain_as_published = options & 0x08;
      t.retain_handling = (options >> 4) & 0x03;
      if (t.retain_handling == 3) return DecodeError::kInvalidSubscribeOptions;
    }
    if (!is_valid_topic_filter(t.filter)) return DecodeError::kInvalidTopicFilter;
    s.topics.push_back(t);
  }
  out = std::move(s);
  return DecodeError::kNone;
}

DecodeError decode_unsubscribe(std::string_view body, bool v5, Packet& out) {
  Reader r(body);
  Unsubscribe u;
  DecodeError err = DecodeError::kNone;
  if (!r.u16(u.packet_id)) return DecodeError::kTruncated;
  if (u.packet_id == 0) return DecodeError::kZeroPacketId;
  if (v5 && (err = r.properties(PropertyContext::kUnsubscribe, u.props)) != DecodeError::kNone)
    return err;
  if (r.empty()) return DecodeError::kEmptyPayloadList;  // [MQTT-3.10.3-2]
  while (!r.empty()) {
    std::string_view filter;
    if (!read_string(r, filter, err)) return err;
    if (!is_valid_topic_filter(filter)) return DecodeError::kInvalidTopicFilter;
    u.filters.push_back(filter);
  }
  out = std::move(u);
  return DecodeError::kNone;
}

// DISCONNECT reason codes a client may send (3.14.2.1).
bool valid_client_disconnect_reason(uint8_t code) {
  switch (code) {
    case reason::kSuccess:
    case reason::kDisconnectWithWill:
    case reason::kUnspecifiedError:
    case reason::kMalformedPacket:
    case reason::kProtocolError:
    case reason::kImplementationSpecificError:
    case reason::kTopicNameInvalid:
    case reason::kReceiveMaximumExceeded:
    case reason::kTopicAliasInvalid:
    case reason::kPacketTooLarge:
    case reason::kMessageRateTooHigh:
    case reason::kQuotaExceeded:
    case reason::kAdministrativeAction:
    case reason::kPayloadFormatInvalid:
      return true;
    default:
      return false;
  }
}

// DISCONNECT and AUTH in MQTT 5: an optional reason code, then optional properties.
template <typename T>
DecodeError decode_reason_and_properties(std::string_view body, PropertyContext context,
                                         bool (*valid)(uint8_t), Packet& out) {
  Reader r(body);
  T t;
  if (!r.empty()) {
    r.u8(t.reason_code);
    if (!valid(t.reason_code)) return DecodeError::kInvalidReasonCode;
    if (!r.empty()) {
      const DecodeError err = r.properties(context, t.props);
      if (err != DecodeError::kNone) return err;
    }
  }
  if (!r.empty()) return DecodeError::kTrailingBytes;
  out = std::move(t);
  return DecodeError::kNone;
}

bool valid_auth_reason(uint8_t code) {
  return code == reason::kSuccess || code == reason::kContinueAuthentication ||
         code == reason::kReauthenticate;
}

}  // namespace

DecodeError decode_body(const FixedHeader& header, std::string_view body, uint8_t protocol_level,
                        Packet& out) {
  // 3.1 and 3.1.1 share every packet layout; MQTT 5 adds properties and reason codes.
  const bool v5 = protocol_level == kProtocolLevel5;
  const uint8_t flags = header.flags;
  switch (header.type) {
    case PacketType::kConnect:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      return decode_connect(body, out);
    case PacketType::kPublish:
      return decode_publish(flags, body, v5, out);
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubcomp:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      return decode_ack(header.type, body, v5, out);
    case PacketType::kPubrel:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.6.1-1]
      return decode_ack(header.type, body, v5, out);
    case PacketType::kSubscribe:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.8.1-1]
      return decode_subscribe(body, v5, out);
    case PacketType::kUnsubscribe:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.10.1-1]
      return decode_unsubscribe(body, v5, out);
    case PacketType::kPingreq:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      if (!body.empty()) return DecodeError::kTrailingBytes;
      out = Pingreq{};
      return DecodeError::kNone;
    case PacketType::kDisconnect:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      if (v5)
        return decode_reason_and_properties<Disconnect>(body, PropertyContext::kDisconnect,
                                                        valid_client_disconnect_reason, out);
      if (!body.empty()) return DecodeError::kTrailingBytes;
      out = Disconnect{};
      return DecodeError::kNone;
    case PacketType::kAuth:
      if (!v5) return DecodeError::kReservedPacketType;
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.15.1-1]
      return decode_reason_and_properties<Auth>(body, PropertyContext::kAuth, valid_auth_reason,
                                                out);
    case PacketType::kConnack:
    case PacketType::kSuback:
    case PacketType::kUnsuback:
    case PacketType::kPingresp:
      return DecodeError::kUnexpectedPacketType;
  }
  return DecodeError::kReservedPacketType;
}

}  // namespace mqgate::codec
