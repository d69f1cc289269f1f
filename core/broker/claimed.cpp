// Broker-owned topics a plugin claimed (ABI 2.5, "Broker-owned topics" in
// mqgate_plugin.h): PUBLISHes to them go to the plugin instead of the router, and the
// plugin's answers go to one connection only, through that client's own subscription.
#include "broker/broker.hpp"

#include "client/mqtt5.hpp"

namespace mqgate {

using codec::PacketType;
namespace reason = codec::reason;

void Broker::take_claimed(Client& client, std::string_view topic, std::string_view payload,
                          uint8_t qos, uint16_t packet_id, const ClaimedProperties* props) {
  ClaimedMessage m;
  m.topic = topic;
  m.payload = payload;
  m.qos = qos;
  m.props = props;
  // Never routed, never retained: the plugin alone gets it.
  const AuthResult r = hooks_.take_message(client, m);
  uint8_t ack_reason = reason::kSuccess;
  if (r.allowed) {
    stats_.claimed_taken++;
  } else {
    stats_.claimed_refused++;
    CLIENT_LOG(log::Level::kInfo, client, "message to %s refused: %s", log::quote(topic).c_str(),
               r.reason.c_str());
    if (qos > 0 && !client.v5()) {
      // 3.x cannot say no (as for a message the store cannot take): closed unacknowledged.
      if (qos == 2 && client.session) client.session->end_incoming_qos2(packet_id, session_limits_);
      mqtt5::disconnect(client, r.reason_code, "refused by a plugin", r.reason.c_str());
      return;
    }
    ack_reason = r.reason_code;
    if (qos > 0 && mqtt5::may_send_reason_string(client, r.reason_string, 5, false))
      client.v5()->ack_reason_strings.emplace_back(packet_id, r.reason_string);
  }
  if (qos == 0) return;
  const PacketType type = qos == 1 ? PacketType::kPuback : PacketType::kPubrec;
  // Behind this client's messages still waiting to be routed, in order.
  if (route_when_durable(client, topic, {}, qos, false, packet_id, false, {}, std::nullopt,
                         ack_reason))
    return;
  acknowledge(client, type, packet_id, false, ack_reason);
}

ClaimedProperties Broker::claimed_properties(const codec::Properties& in) {
  ClaimedProperties out;
  if (in.response_topic) out.response_topic.emplace(*in.response_topic);
  if (in.correlation_data) out.correlation_data.emplace(*in.correlation_data);
  if (in.content_type) out.content_type.emplace(*in.content_type);
  for (const auto& [name, value] : in.user_properties)
    out.user_properties.emplace_back(name, value);
  return out;
}

void Broker::send_private(Client* client, PrivateMessage m) {
  MQGATE_BROKER_ENTRY();
  if (client == nullptr || client->state != Client::State::kConnected || !client->session) {
    stats_.private_dropped++;
    LOG_DEBUG("plugin \"%s\": message on %s for a connection that is gone; dropped",
              m.plugin.c_str(), log::quote(m.topic).c_str());
    return;
  }
  Session& session = *client->session;
  // Only through the client's own subscription: it asked for what it gets.
  const Session::Delivery d = session.match_options(m.topic, false);
  if (session.subscription_count() == 0 || d.skip) {  // (no subscriptions: d is empty)
    stats_.private_dropped++;
    CLIENT_LOG(log::Level::kDebug, *client,
               "plugin \"%s\": message on %s dropped: no subscription of the client matches",
               m.plugin.c_str(), log::quote(m.topic).c_str());
    return;
  }
  std::string props;
  if (client->v5()) {
    codec::Properties p;
    if (m.correlation_data) p.correlation_data = *m.correlation_data;  // views of `m`
    if (m.content_type) p.content_type = *m.content_type;
    for (const auto& [name, value] : m.user_properties)
      p.user_properties.emplace_back(name, value);
    props = mqtt5::forwarded_properties(p);
  }
  const uint8_t q = std::min(m.qos, d.qos);
  MessagePtr msg = Message::create(m.topic, m.payload, q, false, props);
  stats_.private_sent++;
  session.deliver(msg, q, false, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
}

}  // namespace mqgate
