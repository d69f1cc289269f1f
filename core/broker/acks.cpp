// PUBACK, PUBREC, PUBREL, PUBCOMP from clients, and the Reason Strings of the broker's
// own acknowledgements.
#include "broker/broker.hpp"

#include <algorithm>

#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::PacketType;

void Broker::handle_ack(Client& client, const codec::Ack& ack) {
  Session& session = *client.session;
  bool known = true;
  switch (ack.type) {
    case PacketType::kPuback:
      known = session.on_puback(ack.packet_id, session_limits_, stats_.delivery);
      flow_.check_drained(session);
      break;
    case PacketType::kPubrec: {
      // PUBREL only once "PUBREC received" is durable: after a PUBREL the client may
      // forget the id, and a restarted broker must not send the PUBLISH again.
      const uint64_t changes = store_changes();
      known = session.on_pubrec(ack.packet_id, session_limits_);
      if (known && ack.reason_code >= 0x80) {
        // 5.0: the receiver refused it; the exchange ends here, without PUBREL [4.3.3].
        session.on_pubcomp(ack.packet_id, session_limits_, stats_.delivery);
      } else if (known) {
        acknowledge(client, PacketType::kPubrel, ack.packet_id, store_changes() != changes);
      }
    } break;
    case PacketType::kPubcomp:
      known = session.on_pubcomp(ack.packet_id, session_limits_, stats_.delivery);
      flow_.check_drained(session);
      break;
    case PacketType::kPubrel:
      // Always answered with PUBCOMP [MQTT-3.6.4-1], even for an unknown identifier: the client may
      // be resending after a reconnect.
      // Once the id's removal is durable: a PUBCOMP tells the client it may reuse it.
      {
        const uint64_t changes = store_changes();
        session.end_incoming_qos2(ack.packet_id, session_limits_);
        acknowledge(client, PacketType::kPubcomp, ack.packet_id, store_changes() != changes);
      }
      break;
    default:
      break;
  }
  if (!known)
    CLIENT_LOG(log::Level::kDebug, client, "%s for unknown packet id %u ignored",
               codec::packet_type_name(ack.type), ack.packet_id);
}

bool Broker::send_ack_reason_string(Client& client, PacketType type, uint16_t packet_id,
                                    uint8_t reason_code) {
  mqtt5::ClientState* s = client.v5();
  if (s == nullptr || s->ack_reason_strings.empty() ||
      (type != PacketType::kPuback && type != PacketType::kPubrec))
    return false;
  auto& pending = s->ack_reason_strings;
  auto it = std::find_if(pending.begin(), pending.end(),
                         [&](const auto& e) { return e.first == packet_id; });
  if (it == pending.end()) return false;
  const std::string text = std::move(it->second);
  pending.erase(it);
  codec::Properties props;
  props.reason_string = text;
  codec::encode_ack_v5(client.out(), type, packet_id, reason_code, &props);
  return true;
}

}  // namespace mqgate
