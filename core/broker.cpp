#include "broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "codec/encoder.hpp"
#include "codec/utf8.hpp"

namespace mqgate {

using codec::ConnackCode;
using codec::PacketType;

Broker::Broker(const LimitsConfig& limits, AuthHooks& hooks, std::unique_ptr<SessionStore> store)
    : hooks_(hooks), sessions_(std::move(store)), rng_(std::random_device{}()) {
  set_limits(limits);
}

Broker::~Broker() = default;

void Broker::set_limits(const LimitsConfig& limits) {
  limits_ = limits;
  session_limits_.max_inflight = limits.max_inflight_messages;
  session_limits_.max_queued = limits.max_queued_messages;
}

void Broker::on_open(Client& client, uint64_t now_ms) {
  client.last_rx_ms = now_ms;  // before CONNECT: when the connection was accepted
  stats_.connections_total++;
  CLIENT_LOG(log::Level::kDebug, client, "new connection");
}

void Broker::protocol_violation(Client& client, const char* what) {
  CLIENT_LOG(log::Level::kWarning, client, "protocol violation: %s; closing", what);
  client.close("protocol violation");
}

void Broker::on_decode_error(Client& client, codec::DecodeError error,
                             const codec::FixedHeader* header, const codec::Packet* partial) {
  if (error == codec::DecodeError::kUnsupportedProtocolLevel && partial != nullptr &&
      client.state == Client::State::kAwaitConnect) {
    const auto& c = std::get<codec::Connect>(*partial);
    CLIENT_LOG(log::Level::kInfo, client,
               "refused: protocol %s level %u is not supported (MQTT 3.1 and 3.1.1 are)",
               log::quote(c.protocol_name, 16).c_str(), c.protocol_level);
    codec::encode_connack(client.out(), false, ConnackCode::kUnacceptableProtocolVersion);
    client.close("unsupported protocol level");
    return;
  }
  CLIENT_LOG(log::Level::kWarning, client, "malformed %s packet: %s; closing",
             header ? codec::packet_type_name(header->type) : "", codec::describe(error));
  client.close("malformed packet");
}

void Broker::on_oversized_packet(Client& client, const codec::FixedHeader& header) {
  CLIENT_LOG(log::Level::kWarning, client,
             "%s packet of %zu bytes is over max_packet_size (%" PRIu32 "); closing",
             codec::packet_type_name(header.type), header.packet_length(), limits_.max_packet_size);
  client.close("packet too large");
}

void Broker::on_packet(Client& client, codec::Packet& packet, uint64_t now_ms) {
  if (client.state == Client::State::kClosing) return;
  if (auto* connect = std::get_if<codec::Connect>(&packet)) {
    if (client.state != Client::State::kAwaitConnect) {
      protocol_violation(client, "second CONNECT on one connection");  // [MQTT-3.1.0-2]
      return;
    }
    handle_connect(client, *connect, now_ms);
    return;
  }
  if (client.state != Client::State::kConnected) {
    protocol_violation(client, "first packet is not CONNECT");  // [MQTT-3.1.0-1]
    return;
  }
  std::visit(
      [&](auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, codec::Publish>) {
          handle_publish(client, p);
        } else if constexpr (std::is_same_v<T, codec::Ack>) {
          handle_ack(client, p);
        } else if constexpr (std::is_same_v<T, codec::Subscribe>) {
          handle_subscribe(client, p);
        } else if constexpr (std::is_same_v<T, codec::Unsubscribe>) {
          handle_unsubscribe(client, p);
        } else if constexpr (std::is_same_v<T, codec::Pingreq>) {
          codec::encode_pingresp(client.out());
        } else if constexpr (std::is_same_v<T, codec::Disconnect>) {
          client.graceful = true;
          client.will = MessagePtr();  // [MQTT-3.14.4-3]
          client.close("client sent DISCONNECT");
        }
      },
      packet);
}

std::string Broker::generate_client_id() {
  for (;;) {
    char id[32];
    snprintf(id, sizeof id, "mqgate-%016" PRIx64, static_cast<uint64_t>(rng_()));
    if (sessions_->find(id) == nullptr) return id;
  }
}

void Broker::refuse_connect(Client& client, ConnackCode code, const char* reason) {
  CLIENT_LOG(log::Level::kInfo, client, "refused (CONNACK %u): %s", static_cast<unsigned>(code),
             reason);
  codec::encode_connack(client.out(), false, code);  // [MQTT-3.2.2-4]
  client.close("connection refused");
}

bool Broker::too_deep(Client& client, std::string_view topic) {
  // Levels are '/' + 1. Deep topics are legal MQTT, but the router walks them level by
  // level: cap them (as Mosquitto does) so no client can exhaust the stack.
  const size_t levels = static_cast<size_t>(std::count(topic.begin(), topic.end(), '/')) + 1;
  if (levels <= limits_.max_topic_levels) return false;
  CLIENT_LOG(log::Level::kWarning, client, "topic with %zu levels is over max_topic_levels (%u); closing",
             levels, limits_.max_topic_levels);
  client.close("topic too deep");
  return true;
}

void Broker::handle_connect(Client& client, codec::Connect& c, uint64_t now_ms) {
  if (c.will && too_deep(client, c.will->topic)) return;
  client.protocol_level = c.protocol_level;
  client.keepalive = c.keepalive;
  client.last_rx_ms = now_ms;
  if (c.username) client.set_username(*c.username);

  std::string id(c.client_id);
  if (id.empty()) {
    // 3.1 requires 1-23 characters; 3.1.1 lets the server assign one, but only to a
    // clean session [MQTT-3.1.3-7, -8].
    if (c.protocol_level == codec::kProtocolLevel31 || !c.clean_session) {
      refuse_connect(client, ConnackCode::kIdentifierRejected,
                     c.clean_session ? "empty client id (MQTT 3.1 requires one)"
                                     : "empty client id with clean session 0");
      return;
    }
    id = generate_client_id();
  } else if (id.size() > limits_.max_client_id_length) {
    client.set_client_id(id.substr(0, 64));
    refuse_connect(client, ConnackCode::kIdentifierRejected,
                   ("client id of " + std::to_string(id.size()) +
                    " bytes is over max_client_id_length (" +
                    std::to_string(limits_.max_client_id_length) + ")")
                       .c_str());
    return;
  }
  client.set_client_id(id);

  AuthResult auth = hooks_.authenticate(client, c);
  if (!auth.allowed) {
    refuse_connect(client, ConnackCode::kNotAuthorized,
                   ("not authorised: " + auth.reason).c_str());
    return;
  }
  if (!auth.assigned_client_id.empty() && c.client_id.empty()) {
    if (auth.assigned_client_id.size() > limits_.max_client_id_length ||
        !codec::is_valid_mqtt_utf8(auth.assigned_client_id)) {
      refuse_connect(client, ConnackCode::kIdentifierRejected,
                     "the client id an auth plugin assigned is not valid UTF-8 or too long");
      return;
    }
    id = auth.assigned_client_id;
    client.set_client_id(id);
  }
  if (c.will) client.will = Message::create(c.will->topic, c.will->payload, c.will->qos, c.will->retain);

  Session* session = sessions_->find(id);
  if (session != nullptr && session->client() != nullptr) {
    // Takeover [MQTT-3.1.4-2]: the older connection goes, with its will.
    Client* old = session->client();
    CLIENT_LOG(log::Level::kInfo, *old, "session taken over by a new connection from %s",
               client.peer().c_str());
    old->close("session taken over");
    session = sessions_->find(id);  // closing a clean session destroyed it
  }
  if (session != nullptr && (c.clean_session || session->clean())) {
    destroy_session(session);  // [MQTT-3.1.2-6]
    session = nullptr;
  }
  const bool present = session != nullptr;
  if (session == nullptr) session = sessions_->create(id, c.clean_session);
  session->set_clean(c.clean_session);

  client.session = session;
  client.state = Client::State::kConnected;
  stats_.clients_connected++;
  stats_.clients_maximum = std::max(stats_.clients_maximum, stats_.clients_connected);
  codec::encode_connack(client.out(), present, ConnackCode::kAccepted);
  CLIENT_LOG(log::Level::kInfo, client,
             "connected (protocol level %u, clean session %d, keepalive %u s, session present %d%s%s)",
             c.protocol_level, c.clean_session ? 1 : 0, c.keepalive, present ? 1 : 0,
             client.username() ? ", username " : "",
             client.username() ? log::quote(*client.username(), 64).c_str() : "");
  session->attach(&client, session_limits_, stats_.delivery);
  hooks_.on_connected(client, present);
}

void Broker::on_closed(Client& client, const char* reason, uint64_t now_ms) {
  if (client.state != Client::State::kConnected) {
    CLIENT_LOG(log::Level::kDebug, client, "connection closed before CONNECT completed (%s)",
               reason);
    client.state = Client::State::kClosing;
    return;
  }
  client.state = Client::State::kClosing;
  if (!client.graceful && client.will && !shutting_down_) publish_will(client);
  client.will = MessagePtr();
  Session* session = client.session;
  client.session = nullptr;
  session->detach(now_ms);
  if (session->clean()) destroy_session(session);
  stats_.clients_connected--;
  hooks_.on_disconnected(client, reason);
  client.clear_plugin_data();
  CLIENT_LOG(log::Level::kInfo, client, "disconnected (%s)", reason);
}

void Broker::expire_sessions(uint64_t now_ms) {
  if (limits_.session_expiry == 0) return;
  const uint64_t max_age = uint64_t{limits_.session_expiry} * 1000;
  std::vector<Session*> expired;
  sessions_->for_each([&](Session& s) {
    if (s.client() == nullptr && now_ms - s.offline_since_ms() >= max_age) expired.push_back(&s);
  });
  for (Session* s : expired) {
    LOG_INFO("session of client %s expired after %u s offline (session_expiry)",
             log::quote(s->client_id()).c_str(), limits_.session_expiry);
    destroy_session(s);
  }
}

void Broker::check_timeouts(Client& client, uint64_t now_ms) {
  if (client.state == Client::State::kAwaitConnect) {
    if (now_ms - client.last_rx_ms >= uint64_t{limits_.connect_timeout} * 1000) {
      CLIENT_LOG(log::Level::kInfo, client, "no CONNECT within connect_timeout (%u s); closing",
                 limits_.connect_timeout);
      client.close("connect timeout");
    }
    return;
  }
  if (client.state != Client::State::kConnected || client.keepalive == 0) return;
  // One and a half keep-alive periods without a packet [MQTT-3.1.2-24].
  if ((now_ms - client.last_rx_ms) * 2 > uint64_t{client.keepalive} * 3000) {
    CLIENT_LOG(log::Level::kInfo, client, "keep-alive of %u s expired; closing", client.keepalive);
    client.close("keep-alive timeout");
  }
}

void Broker::publish_will(Client& client) {
  const MessagePtr& will = client.will;
  AuthResult auth = hooks_.authorize(client, will->topic(), AuthAction::kPublish, will->qos(),
                                     will->retain());
  if (!auth.allowed) {
    stats_.publish_denied++;
    CLIENT_LOG(log::Level::kInfo, client, "will to %s denied: %s", log::quote(will->topic()).c_str(),
               auth.reason.c_str());
    return;
  }
  CLIENT_LOG(log::Level::kDebug, client, "publishing will to %s", log::quote(will->topic()).c_str());
  route(will->topic(), will->payload(), will->qos(), will->retain());
}

void Broker::handle_publish(Client& client, const codec::Publish& p) {
  if (too_deep(client, p.topic)) return;
  stats_.messages_received++;
  Session& session = *client.session;
  if (p.qos == 2 && !session.begin_incoming_qos2(p.packet_id)) {
    // A resend of a QoS 2 message we already have: acknowledge, don't deliver twice.
    codec::encode_ack(client.out(), PacketType::kPubrec, p.packet_id);
    return;
  }
  AuthResult auth = hooks_.authorize(client, p.topic, AuthAction::kPublish, p.qos, p.retain);
  if (auth.allowed) {
    route(p.topic, p.payload, p.qos, p.retain);
  } else {
    stats_.publish_denied++;
    CLIENT_LOG(log::Level::kInfo, client, "publish to %s denied (not forwarded): %s",
               log::quote(p.topic).c_str(), auth.reason.c_str());
  }
  // 3.1.1 has no negative acknowledgement: a denied QoS 1/2 message is still acked.
  if (p.qos == 1) codec::encode_ack(client.out(), PacketType::kPuback, p.packet_id);
  if (p.qos == 2) codec::encode_ack(client.out(), PacketType::kPubrec, p.packet_id);
}

void Broker::route(std::string_view topic, std::string_view payload, uint8_t qos, bool retain) {
  MessagePtr msg;
  if (retain) {
    msg = Message::create(topic, payload, qos, true);
    router_.retain(msg);
  }
  const size_t backlog = limits_.max_outgoing_bytes;
  router_.match(topic, [&](RouteTarget* target, uint8_t sub_qos) {
    auto* session = static_cast<Session*>(target);
    const uint8_t q = std::min(qos, sub_qos);  // [MQTT-3.8.4-6]
    if (q == 0) {
      // Forwarded copies carry RETAIN 0 [MQTT-3.3.1-9].
      session->deliver_qos0(topic, payload, false, backlog, stats_.delivery);
      return;
    }
    if (!msg) msg = Message::create(topic, payload, qos, retain);
    session->deliver(msg, q, false, session_limits_, backlog, stats_.delivery);
  });
}

void Broker::publish_internal(std::string_view topic, std::string_view payload, bool retain) {
  route(topic, payload, 0, retain);
}

void Broker::send_retained(Client& client, Session& session, std::string_view filter,
                           uint8_t granted_qos) {
  router_.retained_matching(filter, [&](const MessagePtr& msg) {
    const uint8_t q = std::min(msg->qos(), granted_qos);
    AuthResult auth = hooks_.authorize(client, msg->topic(), AuthAction::kSubscribe, q, true);
    if (!auth.allowed) {
      CLIENT_LOG(log::Level::kDebug, client, "retained message on %s withheld: %s",
                 log::quote(msg->topic()).c_str(), auth.reason.c_str());
      return;
    }
    session.deliver(msg, q, true, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
  });
}

void Broker::handle_subscribe(Client& client, const codec::Subscribe& s) {
  for (const auto& t : s.topics)
    if (too_deep(client, t.filter)) return;
  Session& session = *client.session;
  std::vector<uint8_t> codes;
  codes.reserve(s.topics.size());
  for (const auto& t : s.topics) {
    AuthResult auth = hooks_.authorize(client, t.filter, AuthAction::kSubscribe, t.qos, false);
    if (!auth.allowed) {
      CLIENT_LOG(log::Level::kInfo, client, "subscription to %s denied: %s",
                 log::quote(t.filter).c_str(), auth.reason.c_str());
      codes.push_back(codec::kSubackFailure);
      continue;
    }
    router_.subscribe(&session, t.filter, t.qos);
    session.add_subscription(t.filter, t.qos);
    codes.push_back(t.qos);
    CLIENT_LOG(log::Level::kDebug, client, "subscribed to %s (QoS %u)", log::quote(t.filter).c_str(),
               t.qos);
  }
  codec::encode_suback(client.out(), s.packet_id, codes);
  // Retained messages follow the SUBACK, for every filter granted (again, when a
  // subscription is replaced [MQTT-3.8.4-3]).
  for (size_t i = 0; i < s.topics.size(); ++i) {
    if (codes[i] != codec::kSubackFailure) send_retained(client, session, s.topics[i].filter, codes[i]);
  }
}

void Broker::handle_unsubscribe(Client& client, const codec::Unsubscribe& u) {
  for (auto filter : u.filters)
    if (too_deep(client, filter)) return;
  Session& session = *client.session;
  for (auto filter : u.filters) {
    router_.unsubscribe(&session, filter);
    session.remove_subscription(filter);
  }
  codec::encode_ack(client.out(), PacketType::kUnsuback, u.packet_id);  // [MQTT-3.10.4-5]
}

void Broker::handle_ack(Client& client, const codec::Ack& ack) {
  Session& session = *client.session;
  bool known = true;
  switch (ack.type) {
    case PacketType::kPuback:
      known = session.on_puback(ack.packet_id, session_limits_, stats_.delivery);
      break;
    case PacketType::kPubrec:
      known = session.on_pubrec(ack.packet_id);
      break;
    case PacketType::kPubcomp:
      known = session.on_pubcomp(ack.packet_id, session_limits_, stats_.delivery);
      break;
    case PacketType::kPubrel:
      // Always answered, even for an unknown identifier [MQTT-4.3.3-?]: the client may
      // be resending after a reconnect.
      session.end_incoming_qos2(ack.packet_id);
      codec::encode_ack(client.out(), PacketType::kPubcomp, ack.packet_id);
      break;
    default:
      break;
  }
  if (!known)
    CLIENT_LOG(log::Level::kDebug, client, "%s for unknown packet id %u ignored",
               codec::packet_type_name(ack.type), ack.packet_id);
}

void Broker::destroy_session(Session* session) {
  for (const auto& sub : session->subscriptions()) router_.unsubscribe(session, sub.filter);
  sessions_->remove(session);
}

}  // namespace mqgate
