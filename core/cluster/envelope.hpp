// The bytes a node publishes to NATS for one MQTT message (the topic travels as the
// subject, subject.hpp): a small binary header, then the payload untouched.
//
//   u8  version (1)
//   u8  flags: bits 0-1 QoS, bit 2 RETAIN, bit 3 an expiry follows
//   u64 origin instance (random per process start), u64 sequence (per instance, from 1)
//   [u32 Message Expiry Interval left, seconds]
//   u16 length + origin node name, u16 length + origin client id (No Local)
//   u32 length + MQTT 5 properties forwarded to subscribers (property bytes, no length
//       prefix: Payload Format Indicator, Content Type, Response Topic, Correlation
//       Data, User Properties)
//   payload: the rest
//
// Integers are big-endian. decode() checks everything (a NATS message may come from
// anyone able to publish on our subjects): lengths, flags, and that the properties are
// a well-formed block of only those five kinds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mqgate::cluster {

struct Envelope {
  uint8_t qos = 0;
  bool retain = false;
  std::optional<uint32_t> expiry_s;  // Message Expiry Interval left
  uint64_t instance = 0;
  uint64_t sequence = 0;
  std::string_view node;
  std::string_view client_id;
  std::string_view props;
  std::string_view payload;
};

inline constexpr uint8_t kEnvelopeVersion = 1;

void encode_envelope(std::string& out, const Envelope& e);
// Views in `e` point into `data`. nullopt: `why` says what is wrong (for the log).
bool decode_envelope(std::string_view data, Envelope& e, const char*& why);
// The QoS of an encoded envelope, read without decoding it (0 if too short): what the
// inbound queue's drop policy needs on a NATS thread.
inline uint8_t envelope_qos(std::string_view data) {
  return data.size() >= 2 ? static_cast<uint8_t>(data[1] & 3) : 0;
}

}  // namespace mqgate::cluster
