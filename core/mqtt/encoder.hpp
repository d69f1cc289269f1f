// Packets -> bytes. Each function appends one complete packet to `out`.
//
// Server-to-client packets are what the broker sends; the client-side ones (CONNECT,
// SUBSCRIBE, ...) serve the benchmark client, the fuzzer's seed corpus and the tests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "mqtt/packet.hpp"

namespace mqgate::codec {

// Bytes a remaining-length field needs for `length` (1..4).
inline size_t remaining_length_size(size_t length) {
  return length < 128 ? 1 : length < 16384 ? 2 : length < 2097152 ? 3 : 4;
}

// Total encoded size of a PUBLISH, to check limits before encoding; with `props` (MQTT 5,
// possibly empty) the property block counts too.
size_t publish_packet_size(std::string_view topic, size_t payload_size, uint8_t qos,
                           const Properties* props = nullptr);

void encode_connack(std::string& out, bool session_present, ConnackCode code);
void encode_publish(std::string& out, std::string_view topic, std::string_view payload, uint8_t qos,
                    bool retain, bool dup, uint16_t packet_id);
// PUBACK, PUBREC, PUBREL (with its 0010 flags), PUBCOMP, UNSUBACK.
void encode_ack(std::string& out, PacketType type, uint16_t packet_id);
void encode_suback(std::string& out, uint16_t packet_id, std::span<const uint8_t> return_codes);
void encode_pingresp(std::string& out);

// MQTT 5 forms. A PUBLISH with `props` (even empty) has the 5.0 layout.
void encode_publish(std::string& out, std::string_view topic, std::string_view payload, uint8_t qos,
                    bool retain, bool dup, uint16_t packet_id, const Properties& props);
void encode_connack_v5(std::string& out, bool session_present, uint8_t reason_code,
                       const Properties& props);
// PUBACK, PUBREC, PUBREL, PUBCOMP: the short forms when the reason is Success and there are
// no properties (3.4.2.1).
void encode_ack_v5(std::string& out, PacketType type, uint16_t packet_id, uint8_t reason_code,
                   const Properties* props = nullptr);
void encode_suback_v5(std::string& out, uint16_t packet_id, std::span<const uint8_t> reason_codes,
                      const Properties* props = nullptr);
void encode_unsuback_v5(std::string& out, uint16_t packet_id, std::span<const uint8_t> reason_codes,
                        const Properties* props = nullptr);
// DISCONNECT and AUTH: remaining length 0 for Success without properties.
void encode_disconnect_v5(std::string& out, uint8_t reason_code, const Properties* props = nullptr);
void encode_auth(std::string& out, uint8_t reason_code, const Properties* props = nullptr);

// Client side. A CONNECT at protocol level 5 carries its (and its will's) properties.
void encode_connect(std::string& out, const Connect& connect);
// MQTT 5 SUBSCRIBE (with each topic's options) and UNSUBSCRIBE.
void encode_subscribe_v5(std::string& out, uint16_t packet_id,
                         std::span<const SubscribeTopic> topics, const Properties* props = nullptr);
void encode_unsubscribe_v5(std::string& out, uint16_t packet_id,
                           std::span<const std::string_view> filters,
                           const Properties* props = nullptr);
void encode_subscribe(std::string& out, uint16_t packet_id, std::span<const SubscribeTopic> topics);
void encode_unsubscribe(std::string& out, uint16_t packet_id,
                        std::span<const std::string_view> filters);
void encode_pingreq(std::string& out);
void encode_disconnect(std::string& out);

}  // namespace mqgate::codec
