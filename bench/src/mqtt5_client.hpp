// The generator's MQTT 5.0 side (-V 5): CONNECT/CONNACK with properties, PUBLISH with a
// property block encoded once per run, acknowledgements with an explicit reason code, and
// SUBSCRIBE with options. The 3.1.1 paths do not go through here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mqtt/decoder.hpp"
#include "mqtt/packet.hpp"

namespace mqgate::bench {

struct Options;

namespace mqtt5 {

// What a CONNACK said, in either protocol version.
struct ConnackResult {
  bool well_formed = false;
  uint8_t code = 0;                  // 3.1.1 return code or 5.0 reason code (0: accepted)
  uint16_t receive_maximum = 65535;  // 5.0: how many QoS 1/2 PUBLISHes may be unacknowledged
  std::string error;                 // when not well formed
};
ConnackResult read_connack(uint8_t version, const codec::FixedHeader& h, std::string_view body);

// The property block (length prefix included) every PUBLISH of this run carries:
// --content-type and --user-property; one zero byte when none are given.
std::string publish_properties(const Options& o);

// A 5.0 PUBLISH with the pre-encoded `props_block`.
void encode_publish(std::string& out, std::string_view topic, std::string_view payload,
                    std::string_view props_block, uint8_t qos, uint16_t packet_id);

// PUBACK/PUBREC/PUBREL/PUBCOMP with an explicit reason code (0 Success), the long form.
void encode_ack(std::string& out, codec::PacketType type, uint16_t packet_id, uint8_t reason = 0);

// SUBSCRIBE to one filter at `qos` (No Local 0, Retain As Published 0, Retain Handling 0).
void encode_subscribe(std::string& out, uint16_t packet_id, std::string_view filter, uint8_t qos);
// The SUBACK's reason code for the one filter; nullopt if malformed.
std::optional<uint8_t> suback_reason(std::string_view body);

// The reason code of an acknowledgement (0 when omitted: 3.4.2.1).
inline uint8_t ack_reason(std::string_view body) {
  return body.size() >= 3 ? static_cast<uint8_t>(body[2]) : 0;
}

}  // namespace mqtt5
}  // namespace mqgate::bench
