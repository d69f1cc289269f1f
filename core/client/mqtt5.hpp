// MQTT 5.0 specifics the broker decides per connection: what a 5.0 client announced in
// its CONNECT, and how packets to it are encoded (properties, reason codes). 3.1.1
// connections never allocate any of this (Client::v5() is null for them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "client/outbound_aliases.hpp"
#include "mqtt/message.hpp"
#include "mqtt/packet.hpp"

namespace mqgate {

class Client;

namespace mqtt5 {

// What a 5.0 client's CONNECT asked for (3.1.2.11).
struct ClientState {
  uint32_t session_expiry = 0;   // seconds; 0: the session ends with the connection
  uint32_t max_packet_size = 0;  // 0: no limit but the protocol's
  uint16_t receive_maximum = 65535;
  uint16_t topic_alias_maximum = 0;  // aliases the client accepts
  bool request_problem_info = true;
  bool request_response_info = false;  // Response Information wanted in CONNACK
  // (The CONNECT's User Properties are not kept: only the plugins read them, during
  // authentication.)
  // Inbound topic aliases (3.3.2.3.4): alias - 1 -> topic, grown as the client sets them;
  // their topics' bytes, against kTopicAliasBytes.
  std::vector<std::string> topic_aliases;
  size_t topic_alias_bytes = 0;
  // Outbound topic aliases, when the client accepts some (null otherwise).
  std::unique_ptr<OutboundAliases> outbound_aliases;
  // Enhanced authentication (4.12): the CONNECT's method (empty: none), whether an
  // exchange is in progress, since when, and how many AUTH 0x18 the broker sent in it.
  enum class AuthExchange : uint8_t { kNone, kConnecting, kReauthenticating };
  std::string auth_method;
  AuthExchange auth_exchange = AuthExchange::kNone;
  uint8_t auth_rounds = 0;
  uint64_t auth_started_ms = 0;
  // Reason Strings of PUBACK/PUBREC not sent yet (a plugin's denial), by packet id.
  std::vector<std::pair<uint16_t, std::string>> ack_reason_strings;
  // The will's Will Delay Interval (s) and Message Expiry Interval (3.1.3.2).
  uint32_t will_delay = 0;
  std::optional<uint32_t> will_expiry;
};

// Round trips (AUTH 0x18 sent) one enhanced authentication may take.
inline constexpr uint8_t kMaxAuthRounds = 16;

// Whether a Reason String may go to `client` in a packet of `packet_size` bytes without
// it: valid UTF-8, at most 256 bytes, within the client's Maximum Packet Size
// [MQTT-3.1.2-25] and, unless `always` (CONNACK, DISCONNECT), allowed by its Request
// Problem Information [MQTT-3.1.2-29].
bool may_send_reason_string(const Client& client, std::string_view text, size_t packet_size,
                            bool always);

// The nearest MQTT 3.1.1 CONNACK return code for an MQTT 5 CONNACK reason code.
codec::ConnackCode nearest_connack_code(uint8_t reason_code);

// An AUTH packet to a 5.0 client with its authentication method and `data`.
void encode_auth(const Client& client, std::string& out, uint8_t reason_code,
                 const std::optional<std::string>& data);

// Topic aliases a client may set (CONNACK Topic Alias Maximum): bounds the table above.
inline constexpr uint16_t kTopicAliasMaximum = 16;

// The most bytes of topics a client's inbound aliases may hold: a table of
// kTopicAliasMaximum topics of up to 65,535 bytes each would cost a megabyte a connection.
constexpr size_t kTopicAliasBytes = 64 * 1024;
// Resolves the Topic Alias of an inbound PUBLISH: records topic -> alias, or fills an
// empty topic from the table. Returns 0, or the DISCONNECT reason code: 0x94 for an alias
// of 0 or over the maximum, 0x82 for an unknown alias without a topic, 0x97 (quota
// exceeded) when the aliases' topics would hold more than kTopicAliasBytes.
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
  uint16_t server_keep_alive = 0;       // sent when non-zero: the keep-alive that applies
  std::string_view auth_method;         // enhanced authentication: the client's method
  const std::optional<std::string>* auth_data = nullptr;  // and the plugin's final data
  std::string_view response_information;                  // Request Response Information
  // Leave out what may go (Topic Alias Maximum, Response Information): for a client
  // whose Maximum Packet Size the whole CONNACK would exceed.
  bool minimal = false;
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
// (encoded property bytes) behind their length, and a topic alias when the client
// accepts them (which is why the client is not const: its alias table learns the topic).
// `publish_size` and `fits` count the topic in full, an upper bound for an aliased one.
void encode_publish(Client& client, std::string& out, std::string_view topic,
                    std::string_view payload, std::string_view props, uint8_t qos, bool retain,
                    bool dup, uint16_t packet_id, std::optional<uint32_t> expiry = std::nullopt);
// Whether a SUBACK or UNSUBACK with `codes` reason codes and no properties is within the
// client's Maximum Packet Size [MQTT-3.1.2-25] (always for 3.1.1, which sets none).
bool reason_list_fits(const Client& client, size_t codes);
// PUBACK/PUBREC/PUBREL/PUBCOMP: with `reason` for a 5.0 client, plain otherwise.
void encode_ack(const Client& client, std::string& out, codec::PacketType type, uint16_t packet_id,
                uint8_t reason);

// How many QoS 1/2 PUBLISHes may await an acknowledgement from `client`: the broker's
// window, or the client's Receive Maximum if smaller.
uint32_t send_window(const Client* client, uint32_t broker_window);

// A server DISCONNECT with `reason`, for a connected 5.0 client only (3.1.1 has no
// such packet: those connections are just closed). Then closes it with `why` (logged).
// The DISCONNECT says why in a Reason String: `text`, or `why` when null.
void disconnect(Client& client, uint8_t reason, const char* why, const char* text = nullptr);

}  // namespace mqtt5
}  // namespace mqgate
