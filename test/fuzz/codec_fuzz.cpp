// libFuzzer target: the codec must never crash, hang or read out of bounds on any
// input, and whatever it accepts must encode back to an equivalent packet.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

using namespace mqgate::codec;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Re-encodes an accepted packet (in the layout of `level`: MQTT 5 has properties and
// reason codes) and checks it decodes to the same fields.
void round_trip(const FixedHeader& header, const Packet& packet, uint8_t level) {
  const bool v5 = level == kProtocolLevel5;
  std::string out;
  if (auto* p = std::get_if<Publish>(&packet)) {
    if (v5)
      encode_publish(out, p->topic, p->payload, p->qos, p->retain, p->dup, p->packet_id, p->props);
    else
      encode_publish(out, p->topic, p->payload, p->qos, p->retain, p->dup, p->packet_id);
  } else if (auto* c = std::get_if<Connect>(&packet)) {
    encode_connect(out, *c);
    level = 0;  // a CONNECT carries its own level
  } else if (auto* s = std::get_if<Subscribe>(&packet)) {
    if (v5)
      encode_subscribe_v5(out, s->packet_id, s->topics, &s->props);
    else
      encode_subscribe(out, s->packet_id, s->topics);
  } else if (auto* u = std::get_if<Unsubscribe>(&packet)) {
    if (v5)
      encode_unsubscribe_v5(out, u->packet_id, u->filters, &u->props);
    else
      encode_unsubscribe(out, u->packet_id, u->filters);
  } else if (auto* a = std::get_if<Ack>(&packet)) {
    if (v5)
      encode_ack_v5(out, a->type, a->packet_id, a->reason_code, &a->props);
    else
      encode_ack(out, a->type, a->packet_id);
  } else if (auto* d = std::get_if<Disconnect>(&packet); d && v5) {
    encode_disconnect_v5(out, d->reason_code, &d->props);
  } else if (auto* au = std::get_if<Auth>(&packet)) {
    encode_auth(out, au->reason_code, &au->props);
  } else {
    return;
  }
  HeaderResult h = parse_fixed_header(out);
  check(h.status == HeaderStatus::kComplete && h.header.type == header.type);
  check(h.header.packet_length() == out.size());
  Packet again;
  check(decode_body(h.header, std::string_view(out).substr(h.header.header_length), level, again) ==
        DecodeError::kNone);
  if (auto* p = std::get_if<Publish>(&packet)) {
    auto& q = std::get<Publish>(again);
    check(p->topic == q.topic && p->payload == q.payload && p->qos == q.qos &&
          p->packet_id == q.packet_id && p->retain == q.retain && p->dup == q.dup);
    check(p->props.topic_alias == q.props.topic_alias &&
          p->props.user_properties == q.props.user_properties &&
          p->props.correlation_data == q.props.correlation_data);
  } else if (auto* a = std::get_if<Ack>(&packet)) {
    auto& b = std::get<Ack>(again);
    check(a->packet_id == b.packet_id && a->reason_code == b.reason_code &&
          a->props.reason_string == b.props.reason_string);
  } else if (auto* s = std::get_if<Subscribe>(&packet)) {
    auto& t = std::get<Subscribe>(again);
    check(s->topics.size() == t.topics.size());
    for (size_t i = 0; i < s->topics.size(); ++i)
      check(s->topics[i].filter == t.topics[i].filter && s->topics[i].qos == t.topics[i].qos &&
            s->topics[i].no_local == t.topics[i].no_local &&
            s->topics[i].retain_handling == t.topics[i].retain_handling);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  // The first byte may pick MQTT 5 for packets before any CONNECT says which.
  uint8_t level = 0;
  if (!rest.empty() && rest[0] == '5') {
    level = kProtocolLevel5;
    rest.remove_prefix(1);
  }
  while (!rest.empty()) {
    HeaderResult h = parse_fixed_header(rest);
    if (h.status != HeaderStatus::kComplete) break;
    if (rest.size() < h.header.packet_length()) break;
    Packet p;
    DecodeError err = decode_body(
        h.header, rest.substr(h.header.header_length, h.header.remaining_length), level, p);
    if (err == DecodeError::kNone) {
      round_trip(h.header, p, level);
      if (auto* c = std::get_if<Connect>(&p)) level = c->protocol_level;
    }
    check(describe(err) != nullptr);
    rest.remove_prefix(h.header.packet_length());
  }
  return 0;
}
