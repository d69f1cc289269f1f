// libFuzzer target: the codec must never crash, hang or read out of bounds on any
// input, and whatever it accepts must encode back to an equivalent packet.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "codec/decoder.hpp"
#include "codec/encoder.hpp"

using namespace mqgate::codec;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Re-encodes an accepted packet and checks it decodes to the same fields.
void round_trip(const FixedHeader& header, const Packet& packet) {
  std::string out;
  if (auto* p = std::get_if<Publish>(&packet)) {
    encode_publish(out, p->topic, p->payload, p->qos, p->retain, p->dup, p->packet_id);
  } else if (auto* c = std::get_if<Connect>(&packet)) {
    encode_connect(out, *c);
  } else if (auto* s = std::get_if<Subscribe>(&packet)) {
    encode_subscribe(out, s->packet_id, s->topics);
  } else if (auto* u = std::get_if<Unsubscribe>(&packet)) {
    encode_unsubscribe(out, u->packet_id, u->filters);
  } else if (auto* a = std::get_if<Ack>(&packet)) {
    encode_ack(out, a->type, a->packet_id);
  } else {
    return;
  }
  HeaderResult h = parse_fixed_header(out);
  check(h.status == HeaderStatus::kComplete && h.header.type == header.type);
  check(h.header.packet_length() == out.size());
  Packet again;
  check(decode_body(h.header, std::string_view(out).substr(h.header.header_length), 4, again) ==
        DecodeError::kNone);
  if (auto* p = std::get_if<Publish>(&packet)) {
    auto& q = std::get<Publish>(again);
    check(p->topic == q.topic && p->payload == q.payload && p->qos == q.qos &&
          p->packet_id == q.packet_id && p->retain == q.retain && p->dup == q.dup);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  uint8_t level = 0;
  while (!rest.empty()) {
    HeaderResult h = parse_fixed_header(rest);
    if (h.status != HeaderStatus::kComplete) break;
    if (rest.size() < h.header.packet_length()) break;
    Packet p;
    DecodeError err = decode_body(h.header, rest.substr(h.header.header_length, h.header.remaining_length), level, p);
    if (err == DecodeError::kNone) {
      round_trip(h.header, p);
      if (auto* c = std::get_if<Connect>(&p)) level = c->protocol_level;
    }
    check(describe(err) != nullptr);
    rest.remove_prefix(h.header.packet_length());
  }
  return 0;
}
