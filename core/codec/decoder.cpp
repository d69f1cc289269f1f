#include "codec/decoder.hpp"

#include "codec/utf8.hpp"
#include "topic.hpp"

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

const char* packet_type_name(PacketType type) {
  static constexpr const char* kNames[] = {
      "RESERVED", "CONNECT", "CONNACK", "PUBLISH",     "PUBACK",   "PUBREC",   "PUBREL",     "PUBCOMP",
      "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "RESERVED"};
  return kNames[static_cast<uint8_t>(type) & 0x0F];
}

HeaderResult parse_fixed_header(std::string_view data) {
  HeaderResult r{HeaderStatus::kIncomplete, {}, DecodeError::kNone};
  if (data.empty()) return r;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t type = p[0] >> 4;
  const uint8_t flags = p[0] & 0x0F;
  if (type == 0 || type == 15) return {HeaderStatus::kError, {}, DecodeError::kReservedPacketType};

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

DecodeError decode_connect(std::string_view body, Packet& out) {
  Reader r(body);
  Connect c;
  DecodeError err = DecodeError::kNone;
  if (!r.bytes(c.protocol_name) || !r.u8(c.protocol_level)) return DecodeError::kTruncated;
  const bool v311 = c.protocol_name == "MQTT";
  const bool v31 = c.protocol_name == "MQIsdp";
  if (!v311 && !v31) return DecodeError::kInvalidProtocolName;
  if ((v311 && c.protocol_level != kProtocolLevel311) ||
      (v31 && c.protocol_level != kProtocolLevel31)) {
    out = c;
    return DecodeError::kUnsupportedProtocolLevel;
  }
  uint8_t flags;
  if (!r.u8(flags) || !r.u16(c.keepalive)) return DecodeError::kTruncated;
  const bool has_username = flags & 0x80;
  const bool has_password = flags & 0x40;
  const bool will_retain = flags & 0x20;
  const uint8_t will_qos = (flags >> 3) & 0x03;
  const bool has_will = flags & 0x04;
  c.clean_session = flags & 0x02;
  if (flags & 0x01) return DecodeError::kInvalidConnectFlags;  // [MQTT-3.1.2-3]
  if (!has_will && (will_qos != 0 || will_retain))
    return DecodeError::kInvalidConnectFlags;  // [MQTT-3.1.2-11, -13, -15]
  if (will_qos == 3) return DecodeError::kInvalidQos;  // [MQTT-3.1.2-14]
  if (has_password && !has_username) return DecodeError::kInvalidConnectFlags;  // [MQTT-3.1.2-22]

  if (!read_string(r, c.client_id, err)) return err;
  if (has_will) {
    Will w;
    w.qos = will_qos;
    w.retain = will_retain;
    if (!read_string(r, w.topic, err)) return err;
    if (!is_valid_topic_name(w.topic)) return DecodeError::kInvalidTopicName;
    if (!r.bytes(w.payload)) return DecodeError::kTruncated;
    c.will = w;
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
  out = c;
  return DecodeError::kNone;
}

DecodeError decode_publish(uint8_t flags, std::string_view body, Packet& out) {
  Publish p;
  p.dup = flags & 0x08;
  p.qos = (flags >> 1) & 0x03;
  p.retain = flags & 0x01;
  if (p.qos == 3) return DecodeError::kInvalidQos;           // [MQTT-3.3.1-4]
  if (p.qos == 0 && p.dup) return DecodeError::kDupOnQos0;  // [MQTT-3.3.1-2]
  Reader r(body);
  DecodeError err = DecodeError::kNone;
  if (!read_string(r, p.topic, err)) return err;
  if (!is_valid_topic_name(p.topic)) return DecodeError::kInvalidTopicName;  // [MQTT-3.3.2-2]
  if (p.qos > 0) {
    if (!r.u16(p.packet_id)) return DecodeError::kTruncated;
    if (p.packet_id == 0) return DecodeError::kZeroPacketId;  // [MQTT-2.3.1-1]
  }
  p.payload = r.rest();
  out = p;
  return DecodeError::kNone;
}

DecodeError decode_ack(PacketType type, std::string_view body, Packet& out) {
  Reader r(body);
  Ack a{type, 0};
  if (!r.u16(a.packet_id)) return DecodeError::kTruncated;
  if (!r.empty()) return DecodeError::kTrailingBytes;
  if (a.packet_id == 0) return DecodeError::kZeroPacketId;
  out = a;
  return DecodeError::kNone;
}

DecodeError decode_subscribe(std::string_view body, Packet& out) {
  Reader r(body);
  Subscribe s;
  DecodeError err = DecodeError::kNone;
  if (!r.u16(s.packet_id)) return DecodeError::kTruncated;
  if (s.packet_id == 0) return DecodeError::kZeroPacketId;
  if (r.empty()) return DecodeError::kEmptyPayloadList;  // [MQTT-3.8.3-3]
  while (!r.empty()) {
    SubscribeTopic t;
    if (!read_string(r, t.filter, err)) return err;
    uint8_t options;
    if (!r.u8(options)) return DecodeError::kTruncated;
    if (options & 0xFC) return DecodeError::kInvalidSubscribeOptions;  // [MQTT-3-8.3-4]
    if (options == 3) return DecodeError::kInvalidQos;
    if (!is_valid_topic_filter(t.filter)) return DecodeError::kInvalidTopicFilter;
    t.qos = options;
    s.topics.push_back(t);
  }
  out = std::move(s);
  return DecodeError::kNone;
}

DecodeError decode_unsubscribe(std::string_view body, Packet& out) {
  Reader r(body);
  Unsubscribe u;
  DecodeError err = DecodeError::kNone;
  if (!r.u16(u.packet_id)) return DecodeError::kTruncated;
  if (u.packet_id == 0) return DecodeError::kZeroPacketId;
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

}  // namespace

DecodeError decode_body(const FixedHeader& header, std::string_view body, uint8_t protocol_level,
                        Packet& out) {
  (void)protocol_level;  // 3.1 and 3.1.1 share every packet layout
  const uint8_t flags = header.flags;
  switch (header.type) {
    case PacketType::kConnect:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      return decode_connect(body, out);
    case PacketType::kPublish:
      return decode_publish(flags, body, out);
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubcomp:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      return decode_ack(header.type, body, out);
    case PacketType::kPubrel:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.6.1-1]
      return decode_ack(header.type, body, out);
    case PacketType::kSubscribe:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.8.1-1]
      return decode_subscribe(body, out);
    case PacketType::kUnsubscribe:
      if (flags != 0x02) return DecodeError::kInvalidFixedHeaderFlags;  // [MQTT-3.10.1-1]
      return decode_unsubscribe(body, out);
    case PacketType::kPingreq:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      if (!body.empty()) return DecodeError::kTrailingBytes;
      out = Pingreq{};
      return DecodeError::kNone;
    case PacketType::kDisconnect:
      if (flags != 0) return DecodeError::kInvalidFixedHeaderFlags;
      if (!body.empty()) return DecodeError::kTrailingBytes;
      out = Disconnect{};
      return DecodeError::kNone;
    case PacketType::kConnack:
    case PacketType::kSuback:
    case PacketType::kUnsuback:
    case PacketType::kPingresp:
      return DecodeError::kUnexpectedPacketType;
  }
  return DecodeError::kReservedPacketType;
}

}  // namespace mqgate::codec
