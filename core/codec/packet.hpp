// MQTT control packets as the codec sees them: plain structs over borrowed bytes.
//
// Decoded packets hold std::string_views into the buffer they were decoded from; they
// are valid only as long as that buffer. The codec is pure (no I/O, no allocation
// beyond the SUBSCRIBE/UNSUBSCRIBE lists) and carries the protocol level through, so a
// later MQTT 5 decoder can add properties without changing the callers' shape.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

namespace mqgate::codec {

enum class PacketType : uint8_t {
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
};

const char* packet_type_name(PacketType type);

// Protocol levels on the wire (CONNECT variable header).
inline constexpr uint8_t kProtocolLevel31 = 3;   // "MQIsdp"
inline constexpr uint8_t kProtocolLevel311 = 4;  // "MQTT"

// Largest value a remaining-length field can hold (4 bytes of 7 bits).
inline constexpr uint32_t kMaxRemainingLength = 268435455;

// CONNACK return codes (MQTT 3.1.1 section 3.2.2.3).
enum class ConnackCode : uint8_t {
  kAccepted = 0,
  kUnacceptableProtocolVersion = 1,
  kIdentifierRejected = 2,
  kServerUnavailable = 3,
  kBadUsernameOrPassword = 4,
  kNotAuthorized = 5,
};

inline constexpr uint8_t kSubackFailure = 0x80;

struct Will {
  std::string_view topic;
  std::string_view payload;
  uint8_t qos = 0;
  bool retain = false;
};

struct Connect {
  std::string_view protocol_name;
  uint8_t protocol_level = 0;
  bool clean_session = false;
  uint16_t keepalive = 0;
  std::string_view client_id;
  std::optional<Will> will;
  std::optional<std::string_view> username;
  std::optional<std::string_view> password;  // bytes, not necessarily UTF-8
};

struct Publish {
  std::string_view topic;
  std::string_view payload;
  uint16_t packet_id = 0;  // 0 for QoS 0
  uint8_t qos = 0;
  bool retain = false;
  bool dup = false;
};

// PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: a packet identifier and nothing else.
struct Ack {
  PacketType type;
  uint16_t packet_id = 0;
};

struct SubscribeTopic {
  std::string_view filter;
  uint8_t qos = 0;
};

struct Subscribe {
  uint16_t packet_id = 0;
  std::vector<SubscribeTopic> topics;
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  std::vector<std::string_view> filters;
};

struct Pingreq {};
struct Disconnect {};

// Packets the server receives. (Server-to-client packets are only encoded.)
using Packet = std::variant<Connect, Publish, Ack, Subscribe, Unsubscribe, Pingreq, Disconnect>;

}  // namespace mqgate::codec
