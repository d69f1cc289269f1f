// Bytes -> packets. Pure: no I/O, no state beyond the arguments.
//
// A caller first parses the fixed header (which tells how many bytes the packet has),
// checks it against its size limit, waits until the whole packet is buffered, then
// decodes the body. Every rule the MQTT 3.1.1 and 5.0 specifications state about a
// packet's own bytes is checked here; what depends on connection state (a second CONNECT, a
// first packet that is not CONNECT) is the broker's (Broker::on_packet).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mqtt/packet.hpp"

namespace mqgate::codec {

#define MQGATE_DECODE_ERROR_MAP(XX)                                                   \
  XX(kNone, "no error")                                                               \
  XX(kMalformedRemainingLength, "malformed remaining length")                         \
  XX(kReservedPacketType, "reserved packet type")                                     \
  XX(kUnexpectedPacketType, "packet type a server never receives")                    \
  XX(kInvalidFixedHeaderFlags, "invalid fixed header flags")                          \
  XX(kTruncated, "packet shorter than its fields")                                    \
  XX(kTrailingBytes, "unexpected bytes after the packet's fields")                    \
  XX(kInvalidUtf8, "string is not valid UTF-8 (or contains U+0000)")                  \
  XX(kInvalidProtocolName, "unknown protocol name")                                   \
  XX(kUnsupportedProtocolLevel, "unsupported protocol level")                         \
  XX(kInvalidConnectFlags, "invalid CONNECT flags")                                   \
  XX(kInvalidQos, "QoS 3 is not a valid QoS")                                         \
  XX(kZeroPacketId, "packet identifier 0")                                            \
  XX(kDupOnQos0, "DUP flag set on a QoS 0 PUBLISH")                                   \
  XX(kInvalidTopicName, "invalid topic name (empty or with wildcards)")               \
  XX(kInvalidTopicFilter, "invalid topic filter")                                     \
  XX(kEmptyPayloadList, "SUBSCRIBE or UNSUBSCRIBE without any topic filter")          \
  XX(kInvalidSubscribeOptions, "reserved bits set in a SUBSCRIBE requested QoS byte") \
  XX(kMalformedProperties, "malformed properties")                                    \
  XX(kPropertyProtocolError, "a property repeated or out of its range")               \
  XX(kInvalidReasonCode, "a reason code not defined for this packet")                 \
  XX(kMissingTopic, "an empty topic name without a topic alias")                      \
  XX(kPayloadFormatInvalid, "payload announced as UTF-8 is not valid UTF-8")

enum class DecodeError : uint8_t {
#define MQGATE_XX(name, text) name,
  MQGATE_DECODE_ERROR_MAP(MQGATE_XX)
#undef MQGATE_XX
};

// A short human-readable description, for logs.
const char* describe(DecodeError error);
// The MQTT 5 reason code a server closes with (DISCONNECT) for a packet with `error`:
// Malformed Packet, Protocol Error, Topic Name invalid, Payload format invalid, ...
uint8_t disconnect_reason(DecodeError error);

struct FixedHeader {
  PacketType type{};
  uint8_t flags = 0;              // low nibble of the first byte
  uint32_t remaining_length = 0;  // bytes after the fixed header
  uint8_t header_length = 0;      // 2..5
  size_t packet_length() const { return header_length + size_t{remaining_length}; }
};

enum class HeaderStatus : uint8_t { kComplete, kIncomplete, kError };

struct HeaderResult {
  HeaderStatus status;
  FixedHeader header;
  DecodeError error = DecodeError::kNone;
};

// Parses the fixed header at the start of `data`. kIncomplete means more bytes are
// needed to know the length; kError means the stream is malformed (close it).
HeaderResult parse_fixed_header(std::string_view data);

// Decodes the body of a packet whose fixed header is `header`. `body` is exactly
// header.remaining_length bytes. `protocol_level` is the connection's level (0 before
// CONNECT, whose own level then decides); MQTT 5 layouts are used at level 5, and AUTH
// exists only there. On success `out` holds views into `body`.
//
// For CONNECT, `out` holds what was read even on error (protocol_name and
// protocol_level at least), so the caller can answer with CONNACK 1 to an unsupported
// level before closing [MQTT-3.1.2-2], or in MQTT 5 with a reason code.
DecodeError decode_body(const FixedHeader& header, std::string_view body, uint8_t protocol_level,
                        Packet& out);

}  // namespace mqgate::codec
