// CONNECT: the broker's own checks, the plugins' decision, session takeover and
// resumption, CONNACK (3.1.1 return codes, 5.0 properties and reason codes).
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "base/utf8.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::ConnackCode;
namespace reason = codec::reason;

std::string Broker::generate_client_id() {
  for (;;) {
    char id[32];
    snprintf(id, sizeof id, "mqgate-%016" PRIx64, static_cast<uint64_t>(rng_()));
    if (sessions_->find(id) == nullptr) return id;
  }
}

void Broker::encode_refusal(Client& client, ConnackCode code, uint8_t v5_reason) {
  if (is_v5(client))
    codec::encode_connack_v5(client.out(), false,
                             v5_reason != 0 ? v5_reason : mqtt5::connack_reason(code), {});
  else
    codec::encode_connack(client.out(), false, code);  // [MQTT-3.2.2-4]
}

void Broker::refuse_connect(Client& client, ConnackCode code, const char* why, uint8_t v5_reason) {
  if (is_v5(client))
    CLIENT_LOG(log::Level::kInfo, client, "refused (CONNACK 0x%02x): %s",
               v5_reason != 0 ? v5_reason : mqtt5::connack_reason(code), why);
  else
    CLIENT_LOG(log::Level::kInfo, client, "refused (CONNACK %u): %s", static_cast<unsigned>(code),
               why);
  if (is_v5(client)) {
    // The CONNACK says why in a Reason String (allowed whatever Request Problem
    // Information says [MQTT-3.1.2-29]).
    codec::Properties props;
    if (mqtt5::may_send_reason_string(client, why, 8, true)) props.reason_string = why;
    codec::encode_connack_v5(client.out(), false,
                             v5_reason != 0 ? v5_reason : mqtt5::connack_reason(code), props);
  } else {
    encode_refusal(client, code, v5_reason);
  }
  client.close("connection refused");
}

void Broker::handle_connect(Client& client, codec::Connect& c, uint64_t now_ms) {
  client.protocol_level = c.protocol_level;
  const bool v5 = is_v5(client);
  if (v5) client.set_v5(mqtt5::client_state(c.props));
  if (c.will && too_deep(client, c.will->topic)) return;
  if (!apply_max_keepalive(client, c.keepalive)) return;
  client.last_rx_ms = now_ms;
  if (c.username) client.set_username(*c.username);
  if (v5 && c.props.authentication_data && !c.props.authentication_method) {
    refuse_connect(client, ConnackCode::kNotAuthorized,
                   "Authentication Data without an Authentication Method",
                   reason::kProtocolError);  // 3.1.2.11.10
    return;
  }
  if (v5 && c.props.authentication_method) {
    // Enhanced authentication [4.12]: only a method a plugin of this listener offers.
    if (!hooks_.offers_auth_method(client, *c.props.authentication_method)) {
      refuse_connect(client, ConnackCode::kNotAuthorized,
                     ("no plugin offers the authentication method " +
                      log::quote(*c.props.authentication_method, 64))
                         .c_str(),
                     reason::kBadAuthenticationMethod);
      return;
    }
    mqtt5::ClientState& s = *client.v5();
    s.auth_method.assign(*c.props.authentication_method);
    s.auth_exchange = mqtt5::ClientState::AuthExchange::kConnecting;
    s.auth_started_ms = now_ms;
  }

  std::string id(c.client_id);
  if (id.empty()) {
    // 3.1 requires 1-23 characters; 3.1.1 lets the server assign one, but only to a
    // clean session [MQTT-3.1.3-7, -8]; 5.0 to any [MQTT-3.1.3-6].
    if (c.protocol_level == codec::kProtocolLevel31 || (!v5 && !c.clean_session)) {
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
  client.clean_session = c.clean_session;

  ConnectState state;
  state.clean_session = c.clean_session;
  // 5.0: the session outlives the connection when it has an expiry interval.
  state.keep_session = v5 ? client.v5()->session_expiry != 0 : !c.clean_session;
  state.client_id_empty = c.client_id.empty();
  state.protocol_level = c.protocol_level;
  state.keepalive = c.keepalive;
  state.id = std::move(id);
  if (c.will)
    state.will = Message::create(c.will->topic, c.will->payload, c.will->qos, c.will->retain,
                                 v5 ? mqtt5::forwarded_properties(c.will->props) : std::string());
  if (c.will && v5) {
    client.v5()->will_delay = c.will->props.will_delay_interval.value_or(0);
    client.v5()->will_expiry = c.will->props.message_expiry_interval;
  }
  AuthResult auth = hooks_.authenticate(client, c);
  if (auth.pending) {
    await(client, Awaiting{std::move(state)});
    return;
  }
  if (auth.continue_auth) {
    continue_connect_auth(client, std::move(state), auth);
    return;
  }
  if (v5) client.v5()->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
  finish_connect(client, state, std::move(auth));
}

// max_keepalive bounds how long a silent connection is kept. A 5.0 client is told the
// keep-alive that applies instead (Server Keep Alive, [MQTT-3.2.2-21]); 3.x has no way to
// say so, so a client asking for more, or for none, is refused (as Mosquitto does).
bool Broker::apply_max_keepalive(Client& client, uint16_t requested) {
  const uint32_t max = limits_.max_keepalive;
  client.keepalive = requested;
  if (max == 0 || (requested != 0 && requested <= max)) return true;
  if (is_v5(client)) {
    client.keepalive = static_cast<uint16_t>(max);
    return true;
  }
  refuse_connect(client, ConnackCode::kIdentifierRejected,
                 ("keep-alive of " + std::to_string(requested) + " s (0: none) is over max_keepalive (" +
                  std::to_string(max) + " s)")
                     .c_str());
  return false;
}

void Broker::finish_connect(Client& client, ConnectState& c, AuthResult auth) {
  std::string& id = c.id;
  if (!auth.allowed) {
    refuse_denied(client, auth);
    return;
  }
  c.auth_data = std::move(auth.auth_data);
  if (!auth.assigned_client_id.empty() && c.client_id_empty) {
    if (auth.assigned_client_id.size() > limits_.max_client_id_length ||
        !codec::is_valid_mqtt_utf8(auth.assigned_client_id)) {
      refuse_connect(client, ConnackCode::kIdentifierRejected,
                     "the client id an auth plugin assigned is not valid UTF-8 or too long");
      return;
    }
    id = auth.assigned_client_id;
    client.set_client_id(id);
  }
  std::shared_ptr<const std::string> identity =
      auth.identity ? std::move(auth.identity) : anonymous_identity_;

  Session* session = sessions_->find(id);
  if (session != nullptr && session_owner_ == Config::SessionOwner::kIdentity &&
      session->owner() != *identity) {
    // A client id does not prove anything: only the identity that made a session may
    // take it over or resume it. The owner's connection and session stay untouched.
    stats_.connects_identity_mismatch++;
    CLIENT_LOG(log::Level::kWarning, client,
               "refused (CONNACK %s): client id belongs to a %s session of identity %s, this "
               "connection is identity %s",
               is_v5(client) ? "0x85" : "2", session->client() ? "connected" : "stored",
               log::quote(session->owner(), 200).c_str(), log::quote(*identity, 200).c_str());
    encode_refusal(client, ConnackCode::kIdentifierRejected, 0);
    client.close("client id owned by another identity");
    return;
  }
  const bool creates_persistent = c.keep_session && (session == nullptr || session->clean());
  if (creates_persistent && persistent_sessions_ >= limits_.max_persistent_sessions) {
    stats_.connects_session_limit++;
    CLIENT_LOG(log::Level::kError, client,
               "refused (CONNACK %s): %zu persistent sessions exist, max_persistent_sessions is %u",
               is_v5(client) ? "0x97" : "3", persistent_sessions_, limits_.max_persistent_sessions);
    encode_refusal(client, ConnackCode::kServerUnavailable, reason::kQuotaExceeded);
    client.close("too many persistent sessions");
    return;
  }
  if (c.will) client.will = std::move(c.will);

  if (session != nullptr && session->client() != nullptr) {
    // Takeover [MQTT-3.1.4-2]: the older connection goes, with its will.
    Client* old = session->client();
    CLIENT_LOG(log::Level::kInfo, *old, "session taken over by a new connection from %s",
               client.peer().c_str());
    // Closing is only a request the transport reports later: the broker lets the old
    // connection go now (its will, its session) and ignores that report.
    mqtt5::disconnect(*old, reason::kSessionTakenOver, "session taken over");
    if (!detach_client(*old, "session taken over", now_ms_)) session = nullptr;
  }
  if (session != nullptr && (c.clean_session || session->clean())) {
    destroy_session(session);  // [MQTT-3.1.2-6]
    session = nullptr;
  }
  const bool present = session != nullptr;
  if (present) cancel_delayed_will(*session);  // back in time [MQTT-3.1.3-9]
  if (present && session->owner() != *identity) {
    // Resumed by another identity (session_owner = "client_id"): what the plugins decided
    // for the one before does not hold for this one. Its subscriptions are decided again,
    // and what was queued for the one before is checked first (check_resumed).
    session->mark_decided(0);
    session->uncheck_queued();
  }
  if (session == nullptr) session = sessions_->create(id, true);
  set_session_clean(*session, !c.keep_session);
  session->set_owner(std::move(identity));

  client.session = session;
  client.identity = &session->owner();
  client.state = Client::State::kConnected;
  stats_.clients_connected++;
  count_certificate(client, +1);
  stats_.clients_maximum = std::max(stats_.clients_maximum, stats_.clients_connected);
  if (is_v5(client))
    encode_connack_v5(client, present, c);
  else
    codec::encode_connack(client.out(), present, ConnackCode::kAccepted);
  note_session_expiry(client, *session);
  CLIENT_LOG(log::Level::kInfo, client,
             "connected (protocol level %u, clean session %d, keepalive %u s, session present %d%s%s)",
             c.protocol_level, c.clean_session ? 1 : 0, c.keepalive, present ? 1 : 0,
             client.username() ? ", username " : "",
             client.username() ? log::quote(*client.username(), 64).c_str() : "");
  offline_.remove(session);
  if (!session->clean()) {  // kept for the console while the session is offline
    const TlsPeerInfo* tls = client.tls();
    session->set_certificate(
        tls && client.listener() ? SessionCertificate::of(client.listener()->name, *tls) : nullptr);
  }
  if (persistence_ && !session->clean()) persist_session(*session, true);
  if (present) check_resumed(client, *session);  // before anything queued is sent
  session->set_online_since(now_ms_);
  session->attach(&client, session_limits_, stats_.delivery);
  if (!drop_episodes_.empty()) end_drop_episode(*session, "until it reconnected");
  hooks_.on_connected(client, present);
}

void Broker::encode_connack_v5(Client& client, bool present, const ConnectState& c) {
  mqtt5::ConnackInfo info;
  info.receive_maximum = broker_receive_maximum();
  info.maximum_packet_size = limits_.max_packet_size;
  // A session lasts what the client asked for, at most the broker's session_expiry (when
  // set): a client asking for more is told the interval that applies [MQTT-3.2.2-21].
  const uint32_t requested = client.v5()->session_expiry;
  const uint32_t applied = applied_session_expiry(requested);
  if (requested != 0 && requested != applied) {
    info.session_expiry = applied;
    info.session_expiry_differs = true;
    client.v5()->session_expiry = applied;
  }
  if (c.client_id_empty) info.assigned_client_id = client.client_id();
  if (client.keepalive != c.keepalive) info.server_keep_alive = client.keepalive;
  info.auth_method = client.v5()->auth_method;  // the same method as the CONNECT's [4.12]
  info.auth_data = &c.auth_data;
  // Response Information only when asked for [MQTT-3.1.2-28] and configured.
  std::string response_information;
  if (client.v5()->request_response_info && !response_information_.empty()) {
    for (size_t i = 0; i < response_information_.size(); ++i) {
      if (response_information_[i] == '%' && i + 1 < response_information_.size() &&
          response_information_[i + 1] == 'c') {
        response_information += client.client_id();
        ++i;
      } else {
        response_information += response_information_[i];
      }
    }
    info.response_information = response_information;
  }
  // Never over the client's Maximum Packet Size [MQTT-3.1.2-24]: without the optional
  // properties if need be, else no CONNACK and the connection closes.
  std::string& out = client.out();
  const size_t before = out.size();
  const uint32_t max = client.v5()->max_packet_size;
  mqtt5::encode_connack(out, present, info);
  if (max != 0 && out.size() - before > max) {
    out.resize(before);
    info.minimal = true;
    mqtt5::encode_connack(out, present, info);
  }
  if (max != 0 && out.size() - before > max) {
    CLIENT_LOG(log::Level::kWarning, client,
               "CONNACK of %zu bytes is over the client's Maximum Packet Size (%u); closing",
               out.size() - before, max);
    out.resize(before);
    client.close("CONNACK over the client's Maximum Packet Size");
  }
}

uint16_t Broker::broker_receive_maximum() const {
  return static_cast<uint16_t>(std::min<uint32_t>(limits_.max_inflight_messages, 65535));
}

void Broker::refuse_denied(Client& client, const AuthResult& auth) {
  const std::string why = "not authorised: " + auth.reason;
  if (!is_v5(client)) {
    // The nearest 3.1.1 code of the plugin's 5.0 one; or its 3.1.1 choice (4 or 5).
    const ConnackCode code = auth.reason_code != 0 ? mqtt5::nearest_connack_code(auth.reason_code)
                             : auth.connack_code == 4 ? ConnackCode::kBadUsernameOrPassword
                                                      : ConnackCode::kNotAuthorized;
    refuse_connect(client, code, why.c_str());
    return;
  }
  const uint8_t code = auth.reason_code != 0    ? auth.reason_code
                       : auth.connack_code == 4 ? reason::kBadUserNameOrPassword
                                                : reason::kNotAuthorized;
  CLIENT_LOG(log::Level::kInfo, client, "refused (CONNACK 0x%02x): %s", code, why.c_str());
  codec::Properties props;
  // CONNACK may carry it whatever Request Problem Information says [MQTT-3.1.2-29].
  if (mqtt5::may_send_reason_string(client, auth.reason_string, 8, true))
    props.reason_string = auth.reason_string;
  codec::encode_connack_v5(client.out(), false, code, props);
  client.close("connection refused");
}

}  // namespace mqgate
