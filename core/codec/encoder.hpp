// Packets -> bytes. Each function appends one complete packet to `out`.
//
// Server-to-client packets are what the broker sends; the client-side ones (CONNECT,
// SUBSCRIBE, ...) serve the benchmark client, the fuzzer's seed corpus and the tests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "codec/packet.hpp"

namespace mqgate::codec {

// Bytes a remaining-length field needs for `length` (1..4).
inline size_t remaining_length_size(size_t length) {
  return length < 128 ? 1 : length < 16384 ? 2 : length < 2097152 ? 3 : 4;
}

// Total encoded size of a PUBLISH, to check limits before encoding.
size_t publish_packet_size(std::string_view topic, size_t payload_size, uint8_t qos);

void encode_connack(std::string& out, bool session_present, ConnackCode code);
void encode_publish(std::string& out, std::string_view topic, std::string_view payload,
                    uint8_t qos, bool retain, bool dup, uint16_t packet_id);
// PUBACK, PUBREC, PUBREL (with its 0010 flags), PUBCOMP, UNSUBACK.
void encode_ack(std::string& out, PacketType type, uint16_t packet_id);
void encode_suback(std::string& out, uint16_t packet_id, std::span<const uint8_t> return_codes);
void encode_pingresp(std::string& out);

// Client side.
void encode_connect(std::string& out, const Connect& connect);
void encode_subscribe(std::string& out, uint16_t packet_id,
                      std::span<const SubscribeTopic> topics);
void encode_unsubscribe(std::string& out, uint16_t packet_id,
                        std::span<const std::string_view> filters);
void encode_pingreq(std::string& out);
void encode_disconnect(std::string& out);

}  // namespace mqgate::codec
