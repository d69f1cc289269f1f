// MQTT 5.0 specifics the broker decides per connection: what a 5.0 client announced in
// its CONNECT, and how packets to it are encoded (properties, reason codes). 3.1.1
// connections never allocate any of this (Client::v5() is null for them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/packet.hpp"
#include "message.hpp"

namespace mqgate {

class Client;

namespace mqtt5 {

// What a 5.0 client's CONNECT asked for (3.1.2.11).
struct ClientState {
  uint32_t session_expiry = 0;   // seconds; 0: the session ends with the connection
  uint32_t max_packet_size = 0;  // 0: no limit but the protocol's
  uint16_t receive_maximum = 65535;
  uint16_t topic_alias_maximum = 0;  // aliases the client accepts (the broker sends none)
  bool request_problem_info = true;
  std::vector<std::pair<std::string, std::string>> user_properties;  // in order
  // Inbound topic aliases (3.3.2.3.4): alias - 1 -> topic, grown as the client sets them.
  std::vector<std::string> topic_aliases;
  // The will's Will Delay Interval (s) and Message Expiry Interval (3.1.3.2).
  uint32_t will_delay = 0;
  std::optional<uint32_t> will_expiry;
};

// Topic aliases a client may set (CONNACK Topic Alias Maximum): bounds the table above.
inline constexpr uint16_t kTopicAliasMaximum = 16;

// Resolves the Topic Alias of an inbound PUBLISH: records topic -> alias, or fills an
// empty topic from the table. Returns 0, or the DISCONNECT reason code: 0x94 for an alias
// of 0 or over the maximum, 0x82 for an unknown alias without a topic.
uint8_t resolve_topic_alias(ClientState& state, codec::Publish& publish);

// The CONNECT's properties, validated by the codec, as kept for the connection.
ClientState client_state(const codec::Properties& props);

// The properties of an inbound PUBLISH that travel with the message to 5.0 subscribers,
// encoded (property bytes, no length prefix): Payload Format Indicator, Content Type,
// Response Topic, Correlation Data, user properties in order. Empty if none.
std::string forwarded_properties(const codec::Properties& props);

// A copy of `msg` whose properties also carry these Subscription Identifiers (for the
// one delivery they belong to).
MessagePtr with_subscription_ids(const Message& msg, std::span<const uint32_t> ids);

// The nearest MQTT 5 CONNACK reason code for a 3.1.1 return code.
uint8_t connack_reason(codec::ConnackCode code);

// What a successful CONNACK tells a 5.0 client about the broker (3.2.2.3).
struct ConnackInfo {
  uint16_t receive_maximum = 65535;  // QoS 1/2 PUBLISHes it may have unacknowledged
  uint32_t maximum_packet_size = 0;  // 0: none
  uint32_t session_expiry = 0;       // only sent when `session_expiry_differs`
  bool session_expiry_differs = false;
  std::string_view assigned_client_id;  // when the broker chose the id
};
void encode_connack(std::string& out, bool session_present, const ConnackInfo& info);

// Size on the wire of a PUBLISH to a client at `protocol_level`.
// `expiry`: a Message Expiry Interval to send (5.0), before `props`.
size_t publish_size(uint8_t protocol_level, std::string_view topic, size_t payload_size,
                    uint8_t qos, std::string_view props,
                    std::optional<uint32_t> expiry = std::nullopt);
// Whether a PUBLISH of that size may go to `client` (its Maximum Packet Size).
bool fits(const Client& client, std::string_view topic, size_t payload_size, uint8_t qos,
          std::string_view props, std::optional<uint32_t> expiry = std::nullopt);
// A PUBLISH in the client's protocol: 3.1.1 without properties, 5.0 with `props`
// (encoded property bytes) behind their length.
void encode_publish(const Client& client, std::string& out, std::string_view topic,
                    std::string_view payload, std::string_view props, uint8_t qos, bool retain,
                    bool dup, uint16_t packet_id, std::optional<uint32_t> expiry = std::nullopt);
// PUBACK/PUBREC/PUBREL/PUBCOMP: with `reason` for a 5.0 client, plain otherwise.
void encode_ack(const Client& client, std::string& out, codec::PacketType type, uint16_t packet_id,
                uint8_t reason);

// How many QoS 1/2 PUBLISHes may await an acknowledgement from `client`: the broker's
// window, or the client's Receive Maximum if smaller.
uint32_t send_window(const Client* client, uint32_t broker_window);

// A server DISCONNECT with `reason`, for a connected 5.0 client only (3.1.1 has no
// such packet: those connections are just closed). Then closes it with `why` (logged).
void disconnect(Client& client, uint8_t reason, const char* why);

}  // namespace mqtt5
}  // namespace mqgate
