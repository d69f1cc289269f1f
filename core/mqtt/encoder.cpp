#include "mqtt/encoder.hpp"

namespace mqgate::codec {
namespace {

void put_u8(std::string& out, uint8_t v) {
  out.push_back(static_cast<char>(v));
}

void put_u16(std::string& out, uint16_t v) {
  const char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)};
  out.append(b, 2);
}

void put_string(std::string& out, std::string_view s) {
  put_u16(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}

void put_fixed_header(std::string& out, uint8_t first_byte, size_t remaining) {
  char b[5];
  size_t n = 0;
  b[n++] = static_cast<char>(first_byte);
  do {
    uint8_t digit = remaining & 0x7F;
    remaining >>= 7;
    if (remaining > 0) digit |= 0x80;
    b[n++] = static_cast<char>(digit);
  } while (remaining > 0);
  out.append(b, n);
}

uint8_t first_byte(PacketType type, uint8_t flags = 0) {
  return static_cast<uint8_t>((static_cast<uint8_t>(type) << 4) | flags);
}

const Properties kNoProperties;

size_t props_size(const Properties* props) {
  return encoded_properties_size(props ? *props : kNoProperties);
}

bool has_properties(const Properties* props) {
  return props != nullptr && encoded_properties_size(*props) > 1;
}

// A packet of a reason code then properties, both optional when Success and empty
// (DISCONNECT, AUTH).
void encode_reason_packet(std::string& out, PacketType type, uint8_t reason_code,
                          const Properties* props) {
  if (reason_code == 0 && !has_properties(props)) {
    put_fixed_header(out, first_byte(type), 0);
    return;
  }
  put_fixed_header(out, first_byte(type), 1 + props_size(props));
  put_u8(out, reason_code);
  encode_properties(out, props ? *props : kNoProperties);
}

// SUBACK and UNSUBACK in MQTT 5: packet id, properties, a reason code per filter.
void encode_reason_list(std::string& out, PacketType type, uint16_t packet_id,
                        std::span<const uint8_t> reason_codes, const Properties* props) {
  put_fixed_header(out, first_byte(type), 2 + props_size(props) + reason_codes.size());
  put_u16(out, packet_id);
  encode_properties(out, props ? *props : kNoProperties);
  out.append(reinterpret_cast<const char*>(reason_codes.data()), reason_codes.size());
}

}  // namespace

size_t publish_packet_size(std::string_view topic, size_t payload_size, uint8_t qos,
                           const Properties* props) {
  const size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) +
                           (props ? encoded_properties_size(*props) : 0) + payload_size;
  return 1 + remaining_length_size(remaining) + remaining;
}

void encode_connack(std::string& out, bool session_present, ConnackCode code) {
  const char b[4] = {static_cast<char>(first_byte(PacketType::kConnack)), 2,
                     static_cast<char>(session_present ? 1 : 0), static_cast<char>(code)};
  out.append(b, 4);
}

void encode_publish(std::string& out, std::string_view topic, std::string_view payload, uint8_t qos,
                    bool retain, bool dup, uint16_t packet_id) {
  const size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) + payload.size();
  out.reserve(out.size() + 5 + remaining);
  const uint8_t flags = static_cast<uint8_t>((dup ? 0x08 : 0) | (qos << 1) | (retain ? 1 : 0));
  put_fixed_header(out, first_byte(PacketType::kPublish, flags), remaining);
  put_string(out, topic);
  if (qos > 0) put_u16(out, packet_id);
  out.append(payload);
}

void encode_publish(std::string& out, std::string_view topic, std::string_view payload, uint8_t qos,
                    bool retain, bool dup, uint16_t packet_id, const Properties& props) {
  const size_t props_bytes = encoded_properties_size(props);
  const size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) + props_bytes + payload.size();
  out.reserve(out.size() + 5 + remaining);
  const uint8_t flags = static_cast<uint8_t>((dup ? 0x08 : 0) | (qos << 1) | (retain ? 1 : 0));
  put_fixed_header(out, first_byte(PacketType::kPublish, flags), remaining);
  put_string(out, topic);
  if (qos > 0) put_u16(out, packet_id);
  encode_properties(out, props);
  out.append(payload);
}

void encode_connack_v5(std::string& out, bool session_present, uint8_t reason_code,
                       const Properties& props) {
  put_fixed_header(out, first_byte(PacketType::kConnack), 2 + encoded_properties_size(props));
  put_u8(out, session_present ? 1 : 0);
  put_u8(out, reason_code);
  encode_properties(out, props);
}

void encode_ack_v5(std::string& out, PacketType type, uint16_t packet_id, uint8_t reason_code,
                   const Properties* props) {
  const uint8_t flags = type == PacketType::kPubrel ? 0x02 : 0;
  if (!has_properties(props)) {
    if (reason_code == 0) {
      encode_ack(out, type, packet_id);
      return;
    }
    put_fixed_header(out, first_byte(type, flags), 3);
    put_u16(out, packet_id);
    put_u8(out, reason_code);
    return;
  }
  put_fixed_header(out, first_byte(type, flags), 3 + props_size(props));
  put_u16(out, packet_id);
  put_u8(out, reason_code);
  encode_properties(out, *props);
}

void encode_suback_v5(std::string& out, uint16_t packet_id, std::span<const uint8_t> reason_codes,
                      const Properties* props) {
  encode_reason_list(out, PacketType::kSuback, packet_id, reason_codes, props);
}

void encode_unsuback_v5(std::string& out, uint16_t packet_id, std::span<const uint8_t> reason_codes,
                        const Properties* props) {
  encode_reason_list(out, PacketType::kUnsuback, packet_id, reason_codes, props);
}

void encode_disconnect_v5(std::string& out, uint8_t reason_code, const Properties* props) {
  encode_reason_packet(out, PacketType::kDisconnect, reason_code, props);
}

void encode_auth(std::string& out, uint8_t reason_code, const Properties* props) {
  encode_reason_packet(out, PacketType::kAuth, reason_code, props);
}

void encode_ack(std::string& out, PacketType type, uint16_t packet_id) {
  const uint8_t flags = type == PacketType::kPubrel ? 0x02 : 0;
  const char b[4] = {static_cast<char>(first_byte(type, flags)), 2,
                     static_cast<char>(packet_id >> 8), static_cast<char>(packet_id & 0xFF)};
  out.append(b, 4);
}

void encode_suback(std::string& out, uint16_t packet_id, std::span<const uint8_t> return_codes) {
  put_fixed_header(out, first_byte(PacketType::kSuback), 2 + return_codes.size());
  put_u16(out, packet_id);
  out.append(reinterpret_cast<const char*>(return_codes.data()), return_codes.size());
}

void encode_pingresp(std::string& out) {
  put_u8(out, first_byte(PacketType::kPingresp));
  put_u8(out, 0);
}

void encode_connect(std::string& out, const Connect& c) {
  const bool v5 = c.protocol_level == kProtocolLevel5;
  size_t remaining = 2 + c.protocol_name.size() + 1 + 1 + 2 + 2 + c.client_id.size();
  if (v5) remaining += encoded_properties_size(c.props);
  uint8_t flags = c.clean_session ? 0x02 : 0;
  if (c.will) {
    remaining += 2 + c.will->topic.size() + 2 + c.will->payload.size();
    if (v5) remaining += encoded_properties_size(c.will->props);
    flags |= static_cast<uint8_t>(0x04 | (c.will->qos << 3) | (c.will->retain ? 0x20 : 0));
  }
  if (c.username) {
    remaining += 2 + c.username->size();
    flags |= 0x80;
  }
  if (c.password) {
    remaining += 2 + c.password->size();
    flags |= 0x40;
  }
  put_fixed_header(out, first_byte(PacketType::kConnect), remaining);
  put_string(out, c.protocol_name);
  put_u8(out, c.protocol_level);
  put_u8(out, flags);
  put_u16(out, c.keepalive);
  if (v5) encode_properties(out, c.props);
  put_string(out, c.client_id);
  if (c.will) {
    if (v5) encode_properties(out, c.will->props);
    put_string(out, c.will->topic);
    put_string(out, c.will->payload);
  }
  if (c.username) put_string(out, *c.username);
  if (c.password) put_string(out, *c.password);
}

void encode_subscribe(std::string& out, uint16_t packet_id,
                      std::span<const SubscribeTopic> topics) {
  size_t remaining = 2;
  for (const auto& t : topics)
    remaining += 2 + t.filter.size() + 1;
  put_fixed_header(out, first_byte(PacketType::kSubscribe, 0x02), remaining);
  put_u16(out, packet_id);
  for (const auto& t : topics) {
    put_string(out, t.filter);
    put_u8(out, t.qos);
  }
}

void encode_subscribe_v5(std::string& out, uint16_t packet_id,
                         std::span<const SubscribeTopic> topics, const Properties* props) {
  size_t remaining = 2 + props_size(props);
  for (const auto& t : topics)
    remaining += 2 + t.filter.size() + 1;
  put_fixed_header(out, first_byte(PacketType::kSubscribe, 0x02), remaining);
  put_u16(out, packet_id);
  encode_properties(out, props ? *props : kNoProperties);
  for (const auto& t : topics) {
    put_string(out, t.filter);
    put_u8(out,
           static_cast<uint8_t>(t.qos | (t.no_local ? 0x04 : 0) |
                                (t.retain_as_published ? 0x08 : 0) | (t.retain_handling << 4)));
  }
}

void encode_unsubscribe_v5(std::string& out, uint16_t packet_id,
                           std::span<const std::string_view> filters, const Properties* props) {
  size_t remaining = 2 + props_size(props);
  for (auto f : filters)
    remaining += 2 + f.size();
  put_fixed_header(out, first_byte(PacketType::kUnsubscribe, 0x02), remaining);
  put_u16(out, packet_id);
  encode_properties(out, props ? *props : kNoProperties);
  for (auto f : filters)
    put_string(out, f);
}

void encode_unsubscribe(std::string& out, uint16_t packet_id,
                        std::span<const std::string_view> filters) {
  size_t remaining = 2;
  for (auto f : filters)
    remaining += 2 + f.size();
  put_fixed_header(out, first_byte(PacketType::kUnsubscribe, 0x02), remaining);
  put_u16(out, packet_id);
  for (auto f : filters)
    put_string(out, f);
}

void encode_pingreq(std::string& out) {
  put_u8(out, first_byte(PacketType::kPingreq));
  put_u8(out, 0);
}

void encode_disconnect(std::string& out) {
  put_u8(out, first_byte(PacketType::kDisconnect));
  put_u8(out, 0);
}

}  // namespace mqgate::codec
