// MQTT control packets as the codec sees them: plain structs over borrowed bytes.
//
// Decoded packets hold std::string_views into the buffer they were decoded from; they
// are valid only as long as that buffer. The codec is pure (no I/O, no allocation
// beyond the SUBSCRIBE/UNSUBSCRIBE lists and user properties) and carries the protocol
// level through: MQTT 5 packets carry properties and reason codes in the same structs
// (empty / 0 for 3.1 and 3.1.1).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include "mqtt/properties.hpp"

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
  kAuth = 15,  // MQTT 5 only
};

const char* packet_type_name(PacketType type);

// Protocol levels on the wire (CONNECT variable header).
inline constexpr uint8_t kProtocolLevel31 = 3;   // "MQIsdp"
inline constexpr uint8_t kProtocolLevel311 = 4;  // "MQTT"
inline constexpr uint8_t kProtocolLevel5 = 5;    // "MQTT"

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
  Properties props{};  // MQTT 5 will properties
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
  Properties props{};                        // MQTT 5
};

struct Publish {
  std::string_view topic;
  std::string_view payload;
  uint16_t packet_id = 0;  // 0 for QoS 0
  uint8_t qos = 0;
  bool retain = false;
  bool dup = false;
  Properties props{};  // MQTT 5 (the topic may then be empty, with a Topic Alias)
};

// PUBACK, PUBREC, PUBREL, PUBCOMP: a packet identifier (and in MQTT 5 a reason code
// and properties).
struct Ack {
  PacketType type;
  uint16_t packet_id = 0;
  uint8_t reason_code = 0;  // MQTT 5; 0 (Success) when absent
  Properties props{};
};

struct SubscribeTopic {
  std::string_view filter;
  uint8_t qos = 0;
  // MQTT 5 subscription options (3.8.3.1).
  bool no_local = false;
  bool retain_as_published = false;
  uint8_t retain_handling = 0;  // 0: send retained on subscribe; 1: only if new; 2: never
};

struct Subscribe {
  uint16_t packet_id = 0;
  std::vector<SubscribeTopic> topics;
  Properties props{};  // MQTT 5
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  std::vector<std::string_view> filters;
  Properties props{};  // MQTT 5
};

struct Pingreq {};
struct Disconnect {
  uint8_t reason_code = 0;  // MQTT 5; 0 (Normal disconnection) when absent
  Properties props{};
};
// MQTT 5 enhanced authentication (3.15).
struct Auth {
  uint8_t reason_code = 0;  // 0x00 Success, 0x18 Continue authentication, 0x19 Re-authenticate
  Properties props{};
};

// Packets the server receives. (Server-to-client packets are only encoded.)
using Packet =
    std::variant<Connect, Publish, Ack, Subscribe, Unsubscribe, Pingreq, Disconnect, Auth>;

// MQTT 5 reason codes (2.4), the ones the broker sends or checks.
namespace reason {
inline constexpr uint8_t kSuccess = 0x00;
inline constexpr uint8_t kGrantedQos1 = 0x01;
inline constexpr uint8_t kGrantedQos2 = 0x02;
inline constexpr uint8_t kDisconnectWithWill = 0x04;
inline constexpr uint8_t kNoMatchingSubscribers = 0x10;
inline constexpr uint8_t kNoSubscriptionExisted = 0x11;
inline constexpr uint8_t kContinueAuthentication = 0x18;
inline constexpr uint8_t kReauthenticate = 0x19;
inline constexpr uint8_t kUnspecifiedError = 0x80;
inline constexpr uint8_t kMalformedPacket = 0x81;
inline constexpr uint8_t kProtocolError = 0x82;
inline constexpr uint8_t kImplementationSpecificError = 0x83;
inline constexpr uint8_t kUnsupportedProtocolVersion = 0x84;
inline constexpr uint8_t kClientIdentifierNotValid = 0x85;
inline constexpr uint8_t kBadUserNameOrPassword = 0x86;
inline constexpr uint8_t kNotAuthorized = 0x87;
inline constexpr uint8_t kServerUnavailable = 0x88;
inline constexpr uint8_t kServerBusy = 0x89;
inline constexpr uint8_t kBanned = 0x8A;
inline constexpr uint8_t kServerShuttingDown = 0x8B;
inline constexpr uint8_t kBadAuthenticationMethod = 0x8C;
inline constexpr uint8_t kKeepAliveTimeout = 0x8D;
inline constexpr uint8_t kSessionTakenOver = 0x8E;
inline constexpr uint8_t kTopicFilterInvalid = 0x8F;
inline constexpr uint8_t kTopicNameInvalid = 0x90;
inline constexpr uint8_t kPacketIdentifierInUse = 0x91;
inline constexpr uint8_t kPacketIdentifierNotFound = 0x92;
inline constexpr uint8_t kReceiveMaximumExceeded = 0x93;
inline constexpr uint8_t kTopicAliasInvalid = 0x94;
inline constexpr uint8_t kPacketTooLarge = 0x95;
inline constexpr uint8_t kMessageRateTooHigh = 0x96;
inline constexpr uint8_t kQuotaExceeded = 0x97;
inline constexpr uint8_t kAdministrativeAction = 0x98;
inline constexpr uint8_t kPayloadFormatInvalid = 0x99;
inline constexpr uint8_t kRetainNotSupported = 0x9A;
inline constexpr uint8_t kQosNotSupported = 0x9B;
inline constexpr uint8_t kUseAnotherServer = 0x9C;
inline constexpr uint8_t kServerMoved = 0x9D;
inline constexpr uint8_t kSharedSubscriptionsNotSupported = 0x9E;
inline constexpr uint8_t kConnectionRateExceeded = 0x9F;
inline constexpr uint8_t kMaximumConnectTime = 0xA0;
inline constexpr uint8_t kSubscriptionIdentifiersNotSupported = 0xA1;
inline constexpr uint8_t kWildcardSubscriptionsNotSupported = 0xA2;
}  // namespace reason

}  // namespace mqgate::codec
