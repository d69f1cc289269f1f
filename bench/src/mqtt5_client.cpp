#include "mqtt5_client.hpp"

#include "harness.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/properties.hpp"

namespace mqgate::bench::mqtt5 {

ConnackResult read_connack(uint8_t version, const codec::FixedHeader& h, std::string_view body) {
  ConnackResult r;
  if (h.type != codec::PacketType::kConnack) {
    r.error = std::string("expected CONNACK, got ") + codec::packet_type_name(h.type);
    return r;
  }
  if (version != codec::kProtocolLevel5) {
    if (body.size() != 2) {
      r.error = "CONNACK of " + std::to_string(body.size()) + " bytes";
      return r;
    }
    r.code = static_cast<uint8_t>(body[1]);
    r.well_formed = true;
    return r;
  }
  if (body.size() < 3) {
    r.error = "MQTT 5 CONNACK of " + std::to_string(body.size()) + " bytes";
    return r;
  }
  r.code = static_cast<uint8_t>(body[1]);
  body.remove_prefix(2);
  codec::Properties props;
  const codec::PropertyResult pr =
      codec::decode_properties(body, codec::PropertyContext::kConnack, props);
  if (pr.error != codec::PropertyError::kNone || !body.empty()) {
    r.error = std::string("CONNACK properties: ") + (pr.what[0] ? pr.what : "trailing bytes");
    return r;
  }
  r.receive_maximum = props.receive_maximum.value_or(65535);
  r.well_formed = true;
  return r;
}

std::string publish_properties(const Options& o) {
  codec::Properties p;
  if (o.content_type) p.content_type = *o.content_type;
  for (const auto& [k, v] : o.user_properties)
    p.user_properties.emplace_back(k, v);
  std::string block;
  codec::encode_properties(block, p);
  return block;
}

void encode_publish(std::string& out, std::string_view topic, std::string_view payload,
                    std::string_view props_block, uint8_t qos, uint16_t packet_id) {
  const size_t remaining =
      2 + topic.size() + (qos > 0 ? 2 : 0) + props_block.size() + payload.size();
  out.push_back(static_cast<char>(0x30 | (qos << 1)));
  codec::write_varint(out, static_cast<uint32_t>(remaining));
  out.push_back(static_cast<char>(topic.size() >> 8));
  out.push_back(static_cast<char>(topic.size() & 0xFF));
  out.append(topic);
  if (qos > 0) {
    out.push_back(static_cast<char>(packet_id >> 8));
    out.push_back(static_cast<char>(packet_id & 0xFF));
  }
  out.append(props_block);
  out.append(payload);
}

void encode_ack(std::string& out, codec::PacketType type, uint16_t packet_id, uint8_t reason) {
  const uint8_t flags = type == codec::PacketType::kPubrel ? 0x02 : 0;
  const char b[5] = {static_cast<char>((static_cast<uint8_t>(type) << 4) | flags), 3,
                     static_cast<char>(packet_id >> 8), static_cast<char>(packet_id & 0xFF),
                     static_cast<char>(reason)};
  out.append(b, 5);
}

void encode_subscribe(std::string& out, uint16_t packet_id, std::string_view filter, uint8_t qos) {
  const codec::SubscribeTopic t{filter, qos};
  codec::encode_subscribe_v5(out, packet_id, std::span<const codec::SubscribeTopic>(&t, 1));
}

std::optional<uint8_t> suback_reason(std::string_view body) {
  if (body.size() < 3) return std::nullopt;
  body.remove_prefix(2);
  codec::Properties props;
  if (codec::decode_properties(body, codec::PropertyContext::kSuback, props).error !=
          codec::PropertyError::kNone ||
      body.size() != 1)
    return std::nullopt;
  return static_cast<uint8_t>(body[0]);
}

}  // namespace mqgate::bench::mqtt5
