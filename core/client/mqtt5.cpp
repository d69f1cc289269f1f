#include "client/mqtt5.hpp"

#include <algorithm>

#include "base/utf8.hpp"
#include "client/client.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate::mqtt5 {

using codec::ConnackCode;
namespace reason = codec::reason;

ClientState client_state(const codec::Properties& props) {
  ClientState s;
  s.session_expiry = props.session_expiry_interval.value_or(0);
  s.max_packet_size = props.maximum_packet_size.value_or(0);
  s.receive_maximum = props.receive_maximum.value_or(65535);
  s.topic_alias_maximum = props.topic_alias_maximum.value_or(0);
  if (s.topic_alias_maximum > 0)
    s.outbound_aliases = std::make_unique<OutboundAliases>(s.topic_alias_maximum);
  s.request_problem_info = props.request_problem_information.value_or(1) != 0;
  s.request_response_info = props.request_response_information.value_or(0) != 0;
  return s;
}

namespace {
// A UTF-8 string or binary data property: identifier (all used here fit one byte), then
// the value with its two-byte length.
void put_string_property(std::string& out, codec::PropertyId id, std::string_view value) {
  out.push_back(static_cast<char>(id));
  out.push_back(static_cast<char>(value.size() >> 8));
  out.push_back(static_cast<char>(value.size() & 0xFF));
  out.append(value);
}
// A variable byte integer (at most 4 bytes) into `p`; returns its length.
size_t put_varint(char* p, uint32_t value) {
  size_t n = 0;
  do {
    uint8_t b = value & 0x7f;
    value >>= 7;
    if (value) b |= 0x80;
    p[n++] = static_cast<char>(b);
  } while (value);
  return n;
}
void put_string(std::string& out, std::string_view value) {
  out.push_back(static_cast<char>(value.size() >> 8));
  out.push_back(static_cast<char>(value.size() & 0xFF));
  out.append(value);
}
}  // namespace

// On every 5.0 PUBLISH: encoded here directly, in identifier order as encode_properties
// would, without copying the Properties (and their user properties) first.
std::string forwarded_properties(const codec::Properties& in) {
  std::string out;
  if (!in.payload_format_indicator && !in.content_type && !in.response_topic &&
      !in.correlation_data && in.user_properties.empty())
    return out;  // most PUBLISHes: nothing travels
  if (in.payload_format_indicator) {
    out.push_back(static_cast<char>(codec::PropertyId::kPayloadFormatIndicator));
    out.push_back(static_cast<char>(*in.payload_format_indicator));
  }
  if (in.content_type) put_string_property(out, codec::PropertyId::kContentType, *in.content_type);
  if (in.response_topic)
    put_string_property(out, codec::PropertyId::kResponseTopic, *in.response_topic);
  if (in.correlation_data)
    put_string_property(out, codec::PropertyId::kCorrelationData, *in.correlation_data);
  for (const auto& [key, value] : in.user_properties) {
    out.push_back(static_cast<char>(codec::PropertyId::kUserProperty));
    put_string(out, key);
    put_string(out, value);
  }
  return out;
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
    std::string& slot = table[alias - 1];
    const size_t bytes = state.topic_alias_bytes - slot.size() + publish.topic.size();
    if (bytes > kTopicAliasBytes) return reason::kQuotaExceeded;
    state.topic_alias_bytes = bytes;
    slot.assign(publish.topic);
    if (slot.capacity() > 2 * slot.size() + 64) slot.shrink_to_fit();  // a long one replaced
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
  // Maximum QoS is absent: QoS 2 is supported. The topic aliases a client may set.
  if (!info.minimal) p.topic_alias_maximum = kTopicAliasMaximum;
  // Retain, Wildcard, Subscription Identifier and Shared Subscription Available are
  // absent: absent means available (3.2.2.3.5, .11, .12, .13), and the CONNACK stays
  // small for clients with a small Maximum Packet Size.
  if (info.maximum_packet_size != 0) p.maximum_packet_size = info.maximum_packet_size;
  if (!info.assigned_client_id.empty()) p.assigned_client_identifier = info.assigned_client_id;
  if (info.server_keep_alive != 0) p.server_keep_alive = info.server_keep_alive;
  if (!info.auth_method.empty()) p.authentication_method = info.auth_method;
  if (info.auth_data != nullptr && *info.auth_data) p.authentication_data = **info.auth_data;
  if (!info.response_information.empty() && !info.minimal)
    p.response_information = info.response_information;
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

void encode_publish(Client& client, std::string& out, std::string_view topic,
                    std::string_view payload, std::string_view props, uint8_t qos, bool retain,
                    bool dup, uint16_t packet_id, std::optional<uint32_t> expiry) {
  if (client.protocol_level != codec::kProtocolLevel5) {
    codec::encode_publish(out, topic, payload, qos, retain, dup, packet_id);
    return;
  }
  OutboundAliases::Use alias;
  const ClientState& state = *client.v5();
  // The alias property (3 bytes, and up to 2 more of length) must not take the packet
  // over the client's Maximum Packet Size [MQTT-3.1.2-24]: near it, no alias. Nor on
  // QoS 2: MQTT.js 5 emits a QoS 2 message from the packet it stored, whose topic is
  // still the empty one an alias left (the message would arrive without its topic).
  if (OutboundAliases* aliases = state.outbound_aliases.get();
      aliases && qos < 2 &&
      (state.max_packet_size == 0 ||
       publish_size(codec::kProtocolLevel5, topic, payload.size(), qos, props, expiry) + 5 <=
           state.max_packet_size)) {
    alias = aliases->use(topic);
    if (alias.alias != 0 && !alias.with_topic) topic = {};
  }
  const size_t prop_len = props.size() + (expiry ? 5 : 0) + (alias.alias != 0 ? 3 : 0);
  const size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) +
                           codec::varint_size(static_cast<uint32_t>(prop_len)) + prop_len +
                           payload.size();
  out.reserve(out.size() + 5 + remaining);
  // The small fields go through a stack buffer, so each part is one append (this runs
  // once per delivery).
  char head[1 + 4 + 2];
  size_t n = 0;
  head[n++] = static_cast<char>(0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 1 : 0));
  n += put_varint(head + n, static_cast<uint32_t>(remaining));
  head[n++] = static_cast<char>(topic.size() >> 8);
  head[n++] = static_cast<char>(topic.size() & 0xFF);
  out.append(head, n);
  out.append(topic);
  char mid[2 + 4 + 5 + 3];  // id, property length, expiry, alias
  n = 0;
  if (qos > 0) {
    mid[n++] = static_cast<char>(packet_id >> 8);
    mid[n++] = static_cast<char>(packet_id & 0xFF);
  }
  n += put_varint(mid + n, static_cast<uint32_t>(prop_len));
  if (expiry) {
    // The interval left, in place of the publisher's [MQTT-3.3.2-6].
    mid[n++] = static_cast<char>(codec::PropertyId::kMessageExpiryInterval);
    for (int shift = 24; shift >= 0; shift -= 8)
      mid[n++] = static_cast<char>((*expiry >> shift) & 0xFF);
  }
  if (alias.alias != 0) {
    mid[n++] = static_cast<char>(codec::PropertyId::kTopicAlias);
    mid[n++] = static_cast<char>(alias.alias >> 8);
    mid[n++] = static_cast<char>(alias.alias & 0xFF);
  }
  out.append(mid, n);
  out.append(props);
  out.append(payload);
}

bool reason_list_fits(const Client& client, size_t codes) {
  const ClientState* s = client.v5();
  if (s == nullptr || s->max_packet_size == 0) return true;
  const size_t remaining = 2 + 1 + codes;  // packet id, property length 0, the codes
  return 1 + codec::remaining_length_size(remaining) + remaining <= s->max_packet_size;
}

void encode_ack(const Client& client, std::string& out, codec::PacketType type, uint16_t packet_id,
                uint8_t reason_code) {
  if (client.protocol_level == codec::kProtocolLevel5)
    codec::encode_ack_v5(out, type, packet_id, reason_code);
  else
    codec::encode_ack(out, type, packet_id);
}

bool may_send_reason_string(const Client& client, std::string_view text, size_t packet_size,
                            bool always) {
  const ClientState* s = client.v5();
  if (s == nullptr || text.empty() || text.size() > 256 || !codec::is_valid_mqtt_utf8(text))
    return false;
  if (!always && !s->request_problem_info) return false;
  // The property (1 + 2 + n bytes) and at most 2 more bytes of lengths.
  return s->max_packet_size == 0 || packet_size + 5 + text.size() <= s->max_packet_size;
}

ConnackCode nearest_connack_code(uint8_t reason_code) {
  switch (reason_code) {
    case reason::kUnsupportedProtocolVersion:
      return ConnackCode::kUnacceptableProtocolVersion;
    case reason::kClientIdentifierNotValid:
      return ConnackCode::kIdentifierRejected;
    case reason::kServerUnavailable:
    case reason::kServerBusy:
      return ConnackCode::kServerUnavailable;
    case reason::kBadUserNameOrPassword:
    case reason::kBadAuthenticationMethod:
      return ConnackCode::kBadUsernameOrPassword;
  }
  return ConnackCode::kNotAuthorized;
}

void encode_auth(const Client& client, std::string& out, uint8_t reason_code,
                 const std::optional<std::string>& data) {
  codec::Properties p;
  const ClientState* s = client.v5();
  if (s != nullptr && !s->auth_method.empty()) p.authentication_method = s->auth_method;
  if (data) p.authentication_data = *data;
  codec::encode_auth(out, reason_code, &p);
}

uint32_t send_window(const Client* client, uint32_t broker_window) {
  const ClientState* s = client ? client->v5() : nullptr;
  return s ? std::min<uint32_t>(broker_window, s->receive_maximum) : broker_window;
}

void disconnect(Client& client, uint8_t reason_code, const char* why, const char* text) {
  if (client.protocol_level == codec::kProtocolLevel5 &&
      client.state == Client::State::kConnected && !client.close_requested()) {
    // DISCONNECT may carry a Reason String whatever Request Problem Information says
    // [MQTT-3.1.2-29].
    const std::string_view reason_string = text != nullptr ? text : why;
    codec::Properties props;
    if (may_send_reason_string(client, reason_string, 4, true)) props.reason_string = reason_string;
    // (A bare DISCONNECT, 4 bytes, fits any connected client: its CONNACK was bigger.)
    codec::encode_disconnect_v5(client.out(), reason_code, &props);
  }
  client.close(why);
}

}  // namespace mqgate::mqtt5
