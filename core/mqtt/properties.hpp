// MQTT 5.0 properties (OASIS MQTT 5.0, section 2.2.2): the property block of a packet
// (or of a will), decoded into a struct of borrowed views and encoded back. Pure.
//
// Decoding checks what the specification makes a Malformed Packet (0x81: a truncated or
// over-long block, a variable byte integer over four bytes, an identifier over one byte
// or not defined for this packet, invalid UTF-8) apart from what it makes a Protocol
// Error (0x82: a property given twice, a value out of its range such as a Receive
// Maximum of 0).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mqgate::codec {

enum class PropertyId : uint8_t {
  kPayloadFormatIndicator = 0x01,
  kMessageExpiryInterval = 0x02,
  kContentType = 0x03,
  kResponseTopic = 0x08,
  kCorrelationData = 0x09,
  kSubscriptionIdentifier = 0x0B,
  kSessionExpiryInterval = 0x11,
  kAssignedClientIdentifier = 0x12,
  kServerKeepAlive = 0x13,
  kAuthenticationMethod = 0x15,
  kAuthenticationData = 0x16,
  kRequestProblemInformation = 0x17,
  kWillDelayInterval = 0x18,
  kRequestResponseInformation = 0x19,
  kResponseInformation = 0x1A,
  kServerReference = 0x1C,
  kReasonString = 0x1F,
  kReceiveMaximum = 0x21,
  kTopicAliasMaximum = 0x22,
  kTopicAlias = 0x23,
  kMaximumQoS = 0x24,
  kRetainAvailable = 0x25,
  kUserProperty = 0x26,
  kMaximumPacketSize = 0x27,
  kWildcardSubscriptionAvailable = 0x28,
  kSubscriptionIdentifierAvailable = 0x29,
  kSharedSubscriptionAvailable = 0x2A,
};

// Where a property block stands: each property is defined for some of these only.
enum class PropertyContext : uint8_t {
  kConnect,
  kConnack,
  kPublish,
  kPuback,  // also PUBREC, PUBREL, PUBCOMP
  kSubscribe,
  kSuback,
  kUnsubscribe,
  kUnsuback,
  kDisconnect,
  kAuth,
  kWill,
};

struct Properties {
  std::optional<uint8_t> payload_format_indicator;
  std::optional<uint32_t> message_expiry_interval;
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;
  std::optional<std::string_view> correlation_data;
  std::vector<uint32_t> subscription_identifiers;  // PUBLISH: several; SUBSCRIBE: one
  std::optional<uint32_t> session_expiry_interval;
  std::optional<std::string_view> assigned_client_identifier;
  std::optional<uint16_t> server_keep_alive;
  std::optional<std::string_view> authentication_method;
  std::optional<std::string_view> authentication_data;
  std::optional<uint8_t> request_problem_information;
  std::optional<uint32_t> will_delay_interval;
  std::optional<uint8_t> request_response_information;
  std::optional<std::string_view> response_information;
  std::optional<std::string_view> server_reference;
  std::optional<std::string_view> reason_string;
  std::optional<uint16_t> receive_maximum;
  std::optional<uint16_t> topic_alias_maximum;
  std::optional<uint16_t> topic_alias;
  std::optional<uint8_t> maximum_qos;
  std::optional<uint8_t> retain_available;
  std::vector<std::pair<std::string_view, std::string_view>> user_properties;  // in order
  std::optional<uint32_t> maximum_packet_size;
  std::optional<uint8_t> wildcard_subscription_available;
  std::optional<uint8_t> subscription_identifier_available;
  std::optional<uint8_t> shared_subscription_available;
};

enum class PropertyError : uint8_t {
  kNone = 0,
  kMalformed = 0x81,      // reason code Malformed Packet
  kProtocolError = 0x82,  // reason code Protocol Error
};

struct PropertyResult {
  PropertyError error = PropertyError::kNone;
  const char* what = "";  // for the log
};

// Reads a property block (its variable-byte-integer length, then the properties) from
// the front of `in`, advancing it. Views in `out` point into `in`'s bytes.
PropertyResult decode_properties(std::string_view& in, PropertyContext context, Properties& out);

// Appends the block (length, then each property present) to `out`. Only what is set
// is written, in identifier order; user properties in their order.
void encode_properties(std::string& out, const Properties& props);
// The block's size on the wire (length prefix included), for Maximum Packet Size checks.
size_t encoded_properties_size(const Properties& props);

// Variable byte integers (1.5.5): at most 4 bytes, up to 268,435,455; reading refuses
// an encoding longer than needed.
bool read_varint(std::string_view& in, uint32_t& value);
void write_varint(std::string& out, uint32_t value);
size_t varint_size(uint32_t value);

}  // namespace mqgate::codec
