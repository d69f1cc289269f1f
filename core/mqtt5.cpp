#include "mqtt5.hpp"

#include <algorithm>

#include "client.hpp"
#include "codec/encoder.hpp"

namespace mqgate::mqtt5 {

using codec::ConnackCode;
namespace reason = codec::reason;

ClientState client_state(const codec::Properties& props) {
  ClientState s;
  s.session_expiry = props.session_expiry_interval.value_or(0);
  s.max_packet_size = props.maximum_packet_size.value_or(0);
  s.receive_maximum = props.receive_maximum.value_or(65535);
  s.topic_alias_maximum = props.topic_alias_maximum.value_or(0);
  s.request_problem_info = props.request_problem_information.value_or(1) != 0;
  s.user_properties.reserve(props.user_properties.size());
  for (const auto& [k, v] : props.user_properties)
    s.user_properties.emplace_back(k, v);
  return s;
}

std::string forwarded_properties(const codec::Properties& in) {
  codec::Properties p;
  p.payload_format_indicator = in.payload_format_indicator;
  p.content_type = in.content_type;
  p.response_topic = in.response_topic;
  p.correlation_data = in.correlation_data;
  p.user_properties = in.user_properties;
  std::string block;
  codec::encode_properties(block, p);
  // Drop the length prefix: the message keeps the bytes, each PUBLISH adds its own.
  std::string_view view(block);
  uint32_t length = 0;
  codec::read_varint(view, length);
  return std::string(view);
}

MessagePtr with_subscription_ids(const Message& msg, std::span<const uint32_t> ids) {
  std::string props(msg.props());
  for (uint32_t id : ids) {
    props.push_back(static_cast<char>(codec::PropertyId::kSubscriptionIdentifier));
    codec::write_varint(props, id);
  }
  return Message::create(
      msg.topic(), msg.payload(), msg.qos(), msg.retain(), props,
      msg.expires() ? std::optional<uint64_t>(msg.expires_at_ms()) : std::nullopt);
}

uint8_t connack_reason(ConnackCode code) {
  switch (code) {
    case ConnackCode::kAccepted:
      return reason::kSuccess;
    case ConnackCode::kUnacceptableProtocolVersion:
      return reason::kUnsupportedProtocolVersion;
    case ConnackCode::kIdentifierRejected:
      return reason::kClientIdentifierNotValid;
    case ConnackCode::kServerUnavailable:
      return reason::kServerUnavailable;
    case ConnackCode::kBadUsernameOrPassword:
      return reason::kBadUserNameOrPassword;
    case ConnackCode::kNotAuthorized:
      return reason::kNotAuthorized;
  }
  return reason::kUnspecifiedError;
}

uint8_t resolve_topic_alias(ClientState& state, codec::Publish& publish) {
  if (!publish.props.topic_alias) return reason::kSuccess;
  const uint16_t alias = *publish.props.topic_alias;
  if (alias == 0 || alias > kTopicAliasMaximum)
    return reason::kTopicAliasInvalid;  // [MQTT-3.3.2-8, -9]
  auto& table = state.topic_aliases;
  if (!publish.topic.empty()) {
    if (table.size() < alias) table.resize(alias);
    table[alias - 1].assign(publish.topic);
    return reason::kSuccess;
  }
  if (table.size() < alias || table[alias - 1].empty()) return reason::kProtocolError;
  publish.topic = table[alias - 1];
  return reason::kSuccess;
}

void encode_connack(std::string& out, bool session_present, const ConnackInfo& info) {
  codec::Properties p;
  if (info.session_expiry_differs) p.session_expiry_interval = info.session_expiry;
  if (info.receive_maximum != 65535) p.receive_maximum = info.receive_maximum;
  // Maximum QoS is absent: QoS 2 is supported. The broker sends no topic aliases (the
  // client's Topic Alias Maximum is not used) but accepts some.
  p.topic_alias_maximum = kTopicAliasMaximum;
  p.retain_available = 1;
  if (info.maximum_packet_size != 0) p.maximum_packet_size = info.maximum_packet_size;
  if (!info.assigned_client_id.empty()) p.assigned_client_identifier = info.assigned_client_id;
  p.wildcard_subscription_available = 1;
  p.subscription_identifier_available = 1;
  p.shared_subscription_available = 1;
  codec::encode_connack_v5(out, session_present, reason::kSuccess, p);
}

size_t publish_size(uint8_t protocol_level, std::string_view topic, size_t payload_size,
                    uint8_t qos, std::string_view props, std::optional<uint32_t> expiry) {
  size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) + payload_size;
  if (protocol_level == codec::kProtocolLevel5) {
    const size_t length = props.size() + (expiry ? 5 : 0);
    remaining += codec::varint_size(static_cast<uint32_t>(length)) + length;
  }
  return 1 + codec::remaining_length_size(remaining) + remaining;
}

bool fits(const Client& client, std::string_view topic, size_t payload_size, uint8_t qos,
          std::string_view props, std::optional<uint32_t> expiry) {
  const ClientState* s = client.v5();
  if (s == nullptr || s->max_packet_size == 0) return true;
  return publish_size(client.protocol_level, topic, payload_size, qos, props, expiry) <=
         s->max_packet_size;
}

void encode_publish(const Client& client, std::string& out, std::string_view topic,
                    std::string_view payload, std::string_view props, uint8_t qos, bool retain,
                    bool dup, uint16_t packet_id, std::optional<uint32_t> expiry) {
  if (client.protocol_level != codec::kProtocolLevel5) {
    codec::encode_publish(out, topic, payload, qos, retain, dup, packet_id);
    return;
  }
  const size_t prop_len = props.size() + (expiry ? 5 : 0);
  const size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) +
                           codec::varint_size(static_cast<uint32_t>(prop_len)) + prop_len +
                           payload.size();
  out.reserve(out.size() + 5 + remaining);
  out.push_back(static_cast<char>(0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 1 : 0)));
  codec::write_varint(out, static_cast<uint32_t>(remaining));
  out.push_back(static_cast<char>(topic.size() >> 8));
  out.push_back(static_cast<char>(topic.size() & 0xFF));
  out.append(topic);
  if (qos > 0) {
    out.push_back(static_cast<char>(packet_id >> 8));
    out.push_back(static_cast<char>(packet_id & 0xFF));
  }
  codec::write_varint(out, static_cast<uint32_t>(prop_len));
  if (expiry) {
    // The interval left, in place of the publisher's [MQTT-3.3.2-6].
    out.push_back(static_cast<char>(codec::PropertyId::kMessageExpiryInterval));
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((*expiry >> shift) & 0xFF));
  }
  out.append(props);
  out.append(payload);
}

void encode_ack(const Client& client, std::string& out, codec::PacketType type, uint16_t packet_id,
                uint8_t reason_code) {
  if (client.protocol_level == codec::kProtocolLevel5)
    codec::encode_ack_v5(out, type, packet_id, reason_code);
  else
    codec::encode_ack(out, type, packet_id);
}

uint32_t send_window(const Client* client, uint32_t broker_window) {
  const ClientState* s = client ? client->v5() : nullptr;
  return s ? std::min<uint32_t>(broker_window, s->receive_maximum) : broker_window;
}

void disconnect(Client& client, uint8_t reason_code, const char* why) {
  if (client.protocol_level == codec::kProtocolLevel5 &&
      client.state == Client::State::kConnected && !client.close_requested())
    codec::encode_disconnect_v5(client.out(), reason_code);
  client.close(why);
}

}  // namespace mqgate::mqtt5
