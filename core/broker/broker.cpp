#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "base/utf8.hpp"
#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::ConnackCode;
using codec::PacketType;
namespace reason = codec::reason;

namespace {
bool is_v5(const Client& client) {
  return client.protocol_level == codec::kProtocolLevel5;
}
}  // namespace

Broker::Broker(const LimitsConfig& limits, AuthHooks& hooks, std::unique_ptr<SessionStore> store)
    : hooks_(hooks), sessions_(std::move(store)), rng_(std::random_device{}()) {
  set_limits(limits);
  hooks_.set_decision_sink([this](const Client& client, AuthResult result) {
    on_decided(const_cast<Client&>(client), std::move(result));
  });
}

Broker::~Broker() {
  hooks_.set_decision_sink(nullptr);
}

void Broker::await(Client& client, Awaiting a) {
  awaiting_.insert_or_assign(&client, std::move(a));
  client.hold(true);
}

void Broker::on_decided(Client& client, AuthResult result) {
  auto it = awaiting_.find(&client);
  if (it == awaiting_.end()) return;
  Awaiting a = std::move(it->second);
  awaiting_.erase(it);
  if (auto* c = std::get_if<ConnectState>(&a.state)) {
    if (result.continue_auth) {
      continue_connect_auth(client, std::move(*c), result);
    } else {
      if (mqtt5::ClientState* v5 = client.v5())
        v5->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
      finish_connect(client, *c, std::move(result));
    }
  } else if (std::get_if<ReauthState>(&a.state)) {
    reauth_decided(client, result);
  } else if (auto* p = std::get_if<PublishState>(&a.state)) {
    finish_publish(client, *p, result);
  } else if (auto* s = std::get_if<SubscribeState>(&a.state)) {
    subscribe_decided(client, *s, result);
    s->next++;
    const Progress progress = continue_subscribe(client, *s);
    if (progress != Progress::kDone) {
      park_subscribe(client, std::move(*s), progress);  // another filter deferred, or sliced
      return;
    }
    finish_subscribe(client, *s);
  }
  // The packets that arrived meanwhile, in order (may await again, or wait for a
  // congested subscriber).
  if (client.state != Client::State::kClosing && !awaiting_decision(client) && !flow_.holds(client))
    client.hold(false);
}

void Broker::set_limits(const LimitsConfig& limits) {
  limits_ = limits;
  session_limits_.max_inflight = limits.max_inflight_messages;
  session_limits_.max_queued = limits.max_queued_messages;
  session_limits_.max_queued_bytes = limits.max_queued_bytes;
  flow_.set_limits(limits);
}

void Broker::on_open(Client& client, uint64_t now_ms) {
  client.last_rx_ms = now_ms;  // before CONNECT: when the connection was accepted
  stats_.connections_total++;
  CLIENT_LOG(log::Level::kDebug, client, "new connection");
}

void Broker::protocol_violation(Client& client, const char* what, uint8_t reason_code) {
  CLIENT_LOG(log::Level::kWarning, client, "protocol violation: %s; closing", what);
  mqtt5::disconnect(client, reason_code, "protocol violation", what);
}

void Broker::on_decode_error(Client& client, codec::DecodeError error,
                             const codec::FixedHeader* header, const codec::Packet* partial) {
  const auto* connect = partial ? std::get_if<codec::Connect>(partial) : nullptr;
  if (connect != nullptr && client.state == Client::State::kAwaitConnect &&
      error == codec::DecodeError::kUnsupportedProtocolLevel) {
    const auto& c = *connect;
    CLIENT_LOG(log::Level::kInfo, client,
               "refused: protocol %s level %u is not supported (MQTT 3.1, 3.1.1 and 5.0 are)",
               log::quote(c.protocol_name, 16).c_str(), c.protocol_level);
    codec::encode_connack(client.out(), false, ConnackCode::kUnacceptableProtocolVersion);
    client.close("unsupported protocol level");
    return;
  }
  CLIENT_LOG(log::Level::kWarning, client, "malformed %s packet: %s; closing",
             header ? codec::packet_type_name(header->type) : "", codec::describe(error));
  if (connect != nullptr && client.state == Client::State::kAwaitConnect &&
      connect->protocol_level == codec::kProtocolLevel5) {
    // A 5.0 CONNECT that breaks the rules: CONNACK with the reason [MQTT-3.1.4-1].
    codec::encode_connack_v5(client.out(), false, codec::disconnect_reason(error), {});
    client.close("malformed packet");
    return;
  }
  mqtt5::disconnect(client, codec::disconnect_reason(error), "malformed packet");
}

void Broker::on_oversized_packet(Client& client, const codec::FixedHeader& header) {
  CLIENT_LOG(log::Level::kWarning, client,
             "%s packet of %zu bytes is over max_packet_size (%" PRIu32 "); closing",
             codec::packet_type_name(header.type), header.packet_length(), limits_.max_packet_size);
  mqtt5::disconnect(client, reason::kPacketTooLarge, "packet too large");
}

void Broker::on_packet(Client& client, codec::Packet& packet, uint64_t now_ms) {
  now_ms_ = std::max(now_ms_, now_ms);
  session_limits_.now_ms = now_ms_;
  if (client.state == Client::State::kClosing || client.close_requested()) return;
  if (awaiting_decision(client)) {
    // Client::hold(true) was ignored: better a closed client than packets reordered.
    CLIENT_LOG(log::Level::kError, client,
               "packet while a plugin's decision is pending (the transport does not hold "
               "input); closing");
    client.close("internal error: input not held");
    return;
  }
  if (auto* auth = std::get_if<codec::Auth>(&packet)) {
    handle_auth(client, *auth, now_ms);
    return;
  }
  if (auto* connect = std::get_if<codec::Connect>(&packet)) {
    if (client.state != Client::State::kAwaitConnect || auth_exchanges_.count(&client) != 0) {
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
          handle_disconnect(client, p);
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

void Broker::handle_disconnect(Client& client, const codec::Disconnect& d) {
  if (mqtt5::ClientState* v5 = client.v5()) {
    if (d.props.session_expiry_interval) {
      if (v5->session_expiry == 0 && *d.props.session_expiry_interval != 0) {
        // [MQTT-3.14.2-2]: a session that ends with the connection cannot be revived here.
        protocol_violation(client, "DISCONNECT sets a Session Expiry Interval after 0");
        return;
      }
      v5->session_expiry = *d.props.session_expiry_interval;  // 0: the session ends now
    }
    if (d.reason_code == reason::kDisconnectWithWill) {
      client.close("client sent DISCONNECT 0x04 (with will)");  // not graceful: the will goes
      return;
    }
  }
  client.graceful = true;
  client.will = MessagePtr();  // [MQTT-3.14.4-3]
  client.close("client sent DISCONNECT");
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

bool Broker::too_deep(Client& client, std::string_view topic) {
  // Levels are '/' + 1. Deep topics are legal MQTT, but the router walks them level by
  // level: cap them (as Mosquitto does) so no client can exhaust the stack.
  const size_t levels = static_cast<size_t>(std::count(topic.begin(), topic.end(), '/')) + 1;
  if (levels <= limits_.max_topic_levels) return false;
  CLIENT_LOG(log::Level::kWarning, client, "topic with %zu levels is over max_topic_levels (%u); closing",
             levels, limits_.max_topic_levels);
  // 5.0 clients are told: an administrative limit was exceeded.
  mqtt5::disconnect(client, reason::kQuotaExceeded, "topic too deep");
  return true;
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
  if (session == nullptr) session = sessions_->create(id, true);
  set_session_clean(*session, !c.keep_session);
  session->set_owner(std::move(identity));

  client.session = session;
  client.identity = &session->owner();
  client.state = Client::State::kConnected;
  stats_.clients_connected++;
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
  if (persistence_ && !session->clean()) persist_session(*session, true);
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

void Broker::on_closed(Client& client, const char* reason, uint64_t now_ms) {
  awaiting_.erase(&client);
  auth_exchanges_.erase(&client);
  forget_held_acks(client);
  hooks_.forget(client);  // a pending decision or request about it is moot
  flow_.forget_client(client);
  for (FanoutJob& job : fanouts_)  // a publisher that closes mid-fan-out holds nothing
    if (job.source == &client) job.source = nullptr;
  if (client.state == Client::State::kClosing) return;  // let go already (a takeover)
  if (client.state != Client::State::kConnected) {
    CLIENT_LOG(log::Level::kDebug, client, "connection closed before CONNECT completed (%s)",
               reason);
    client.state = Client::State::kClosing;
    return;
  }
  detach_client(client, reason, now_ms);
}

bool Broker::detach_client(Client& client, const char* reason, uint64_t now_ms) {
  client.state = Client::State::kClosing;
  awaiting_.erase(&client);  // a decision that arrives now is moot (also on takeover)
  hooks_.forget(client);
  forget_held_acks(client);
  Session* session = client.session;
  // A 5.0 client may end its session at DISCONNECT (Session Expiry Interval 0).
  const bool kept = !session->clean() && !(client.v5() && client.v5()->session_expiry == 0);
  // 5.0: a will with a delay waits while the session lives on [MQTT-3.1.3-9].
  if (!client.graceful && client.will && !shutting_down_ &&
      !(kept && delay_will(client, *session, now_ms)))
    publish_will(client);
  client.will = MessagePtr();
  retained_jobs_.erase(&client);
  flow_.forget_client(client);
  flow_.forget_session(*session);  // publishers waiting on it go on
  client.session = nullptr;
  client.identity = nullptr;
  session->detach(now_ms);
  // (Not at shutdown: every member is going, the messages stay where they are.)
  if (!shared_.empty() && !shutting_down_) move_shared_messages(*session, false);
  if (kept) {
    note_session_expiry(client, *session);  // DISCONNECT may have changed it
    schedule_session_expiry(*session, now_ms);
    if (persistence_) persist_session(*session, false);
  } else
    destroy_session(session);
  stats_.clients_connected--;
  hooks_.on_disconnected(client, reason);
  client.clear_plugin_data();
  CLIENT_LOG(log::Level::kInfo, client, "disconnected (%s)", reason);
  return kept;
}

void Broker::check_expiry(uint64_t now_ms) {
  expiry_due_ = (!offline_.empty() && offline_.front()->expires_at_ms() <= now_ms) ||
                (!will_order_.empty() && will_order_.begin()->first <= now_ms) ||
                (!retained_expiry_.empty() && retained_expiry_.begin()->first <= now_ms);
}

bool Broker::expire_sessions(uint64_t now_ms, size_t& budget) {
  // The first to expire first: the heap is ordered by expiry time.
  while (!offline_.empty()) {
    Session* s = offline_.front();
    if (s->expires_at_ms() > now_ms) break;
    if (budget == 0) return true;  // more next slice
    LOG_INFO("session of client %s expired after %" PRIu64 " s offline (%s)",
             log::quote(s->client_id()).c_str(), (now_ms - s->offline_since_ms()) / 1000,
             s->protocol_level() == codec::kProtocolLevel5 ? "Session Expiry Interval"
                                                           : "session_expiry");
    budget -= std::min(budget, 1 + s->subscription_count());
    destroy_session(s);  // its delayed will goes now [MQTT-3.1.3-9]
  }
  const bool more_wills = publish_due_wills(now_ms, budget);
  return expire_retained(now_ms, budget) || more_wills;
}

void Broker::check_timeouts(Client& client, uint64_t now_ms) {
  // A started packet must arrive whole in time, whatever the keep-alive (0 disables
  // that): a client trickling one byte a minute must not hold a buffer forever.
  if (client.partial_since_ms != 0 && client.state != Client::State::kClosing &&
      now_ms - client.partial_since_ms >= uint64_t{limits_.packet_timeout} * 1000) {
    CLIENT_LOG(log::Level::kInfo, client, "a packet did not arrive whole within packet_timeout (%u s); closing",
               limits_.packet_timeout);
    client.close("packet timeout");
    return;
  }
  if (awaiting_decision(client)) return;  // the plugins' auth_timeout bounds the wait
  // An enhanced authentication waiting for the client: the whole exchange has
  // connect_timeout (plugins' deferred steps aside, bounded by auth_timeout).
  if (const mqtt5::ClientState* v5 = client.v5();
      v5 != nullptr && v5->auth_exchange != mqtt5::ClientState::AuthExchange::kNone &&
      client.state != Client::State::kClosing &&
      now_ms - v5->auth_started_ms >= uint64_t{limits_.connect_timeout} * 1000) {
    fail_auth_exchange(client, "authentication exchange not finished within connect_timeout",
                       reason::kNotAuthorized);
    return;
  }
  // Held for a congested subscriber: its PINGREQs wait in our buffer, not its fault.
  if (flow_.holds(client)) return;
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
    mqtt5::disconnect(client, reason::kKeepAliveTimeout, "keep-alive timeout");
  }
}

void Broker::publish_will(Client& client) {
  const MessagePtr& will = client.will;
  AuthResult auth = authorize_publish(client, will->topic(), will->qos(), will->retain());
  if (!auth.allowed) {
    stats_.publish_denied++;
    CLIENT_LOG(log::Level::kInfo, client, "will to %s denied: %s", log::quote(will->topic()).c_str(),
               auth.reason.c_str());
    return;
  }
  CLIENT_LOG(log::Level::kDebug, client, "publishing will to %s", log::quote(will->topic()).c_str());
  route_will(will, client.v5() ? client.v5()->will_expiry : std::nullopt);
}

AuthResult Broker::authorize_publish(const Client& client, std::string_view topic, uint8_t qos,
                                     bool retain) {
  // '$' topics are the broker's ($SYS). MQTT 3.1.1 section 4.7.2: "The Server SHOULD
  // prevent Clients from using such Topic Names to exchange messages with other Clients."
  if (!topic.empty() && topic[0] == '$')
    return AuthResult::deny("topics starting with '$' are reserved for the broker");
  return hooks_.authorize(client, topic, AuthAction::kPublish, qos, retain);
}

void Broker::handle_publish(Client& client, codec::Publish& p) {
  const bool v5 = is_v5(client);
  if (v5) {
    // From here on the topic is the resolved one (ACL, plugins, routing).
    if (const uint8_t rc = mqtt5::resolve_topic_alias(*client.v5(), p)) {
      protocol_violation(client,
                         rc == reason::kTopicAliasInvalid
                             ? "topic alias 0 or over the Topic Alias Maximum"
                             : "topic alias never set, without a topic",
                         rc);
      return;
    }
  }
  if (too_deep(client, p.topic)) return;
  stats_.messages_received++;
  Session& session = *client.session;
  const uint64_t changes = store_changes();
  if (p.qos == 2 && !session.begin_incoming_qos2(p.packet_id, session_limits_)) {
    // A resend of a QoS 2 message we already have: acknowledge, don't deliver twice
    // (once its id is durable; behind the client's messages still waiting to be routed).
    if (route_when_durable(client, {}, {}, 2, false, p.packet_id, false, {}, std::nullopt,
                           reason::kSuccess))
      return;
    acknowledge(client, PacketType::kPubrec, p.packet_id, !session.clean());
    return;
  }
  if (v5 && p.qos == 2 && session.incoming_qos2_count() > broker_receive_maximum()) {
    session.end_incoming_qos2(p.packet_id, session_limits_);
    protocol_violation(client, "more QoS 2 messages unacknowledged than the Receive Maximum",
                       reason::kReceiveMaximumExceeded);  // [MQTT-3.3.4-8]
    return;
  }
  const std::string props = v5 ? mqtt5::forwarded_properties(p.props) : std::string();
  std::optional<uint64_t> expires_at;
  if (v5 && p.props.message_expiry_interval)
    expires_at = now_ms_ + uint64_t{*p.props.message_expiry_interval} * 1000;
  AuthResult auth;
  if (!p.topic.empty() && p.topic[0] == '$') {
    auth = authorize_publish(client, p.topic, p.qos, p.retain);  // refused by the broker
  } else {
    AuthRequest req;
    req.topic = p.topic;
    req.action = AuthAction::kPublish;
    req.qos = p.qos;
    req.retain = p.retain;
    req.may_defer = true;
    auth = hooks_.check(client, req);
  }
  PublishState state;
  state.packet_id = p.packet_id;
  state.qos = p.qos;
  state.retain = p.retain;
  if (auth.pending) {
    // Routed and acknowledged once decided; the client's next packets wait meanwhile.
    state.topic.assign(p.topic);
    state.payload.assign(p.payload);
    state.props = props;
    state.expires_at_ms = expires_at;
    await(client, Awaiting{std::move(state)});
    return;
  }
  uint8_t ack_reason = reason::kSuccess;
  if (auth.allowed) {
    // Routed and acknowledged later, in order (a QoS 2 message of a persistent session).
    if (route_when_durable(client, p.topic, p.payload, p.qos, p.retain, p.packet_id, true, props,
                           expires_at, reason::kSuccess))
      return;
    if (!route(p.topic, p.payload, p.qos, p.retain, false, &client, props, client.session, expires_at))
      ack_reason = reason::kNoMatchingSubscribers;
  } else {
    state.topic.assign(p.topic);
    finish_publish(client, state, auth);
    return;
  }
  const bool durable = store_changes() != changes;
  if (p.qos == 1) acknowledge(client, PacketType::kPuback, p.packet_id, durable, ack_reason);
  if (p.qos == 2) acknowledge(client, PacketType::kPubrec, p.packet_id, durable, ack_reason);
}

void Broker::finish_publish(Client& client, const PublishState& p, const AuthResult& auth) {
  const uint64_t changes = store_changes();
  uint8_t ack_reason = reason::kSuccess;
  if (!auth.allowed) {
    stats_.publish_denied++;
    ack_reason = auth.reason_code != 0 ? auth.reason_code : reason::kNotAuthorized;
    if (p.qos > 0 && client.v5() &&
        mqtt5::may_send_reason_string(client, auth.reason_string, 5, false))
      client.v5()->ack_reason_strings.emplace_back(p.packet_id, auth.reason_string);
    CLIENT_LOG(log::Level::kInfo, client, "publish to %s denied (not forwarded): %s",
               log::quote(p.topic).c_str(), auth.reason.c_str());
  }
  // Routed (if allowed) and acknowledged later, in order.
  if (route_when_durable(client, p.topic, p.payload, p.qos, p.retain, p.packet_id, auth.allowed,
                         p.props, p.expires_at_ms, ack_reason))
    return;
  if (auth.allowed && !route(p.topic, p.payload, p.qos, p.retain, false, &client, p.props,
                             client.session, p.expires_at_ms))
    ack_reason = reason::kNoMatchingSubscribers;
  // 3.1.1 has no negative acknowledgement: a denied QoS 1/2 message is still acked
  // (5.0: with Not authorized).
  // (A QoS 2 id of a persistent session was journaled when the PUBLISH arrived.)
  const bool durable =
      store_changes() != changes || (p.qos == 2 && client.session && !client.session->clean());
  if (p.qos == 1) acknowledge(client, PacketType::kPuback, p.packet_id, durable, ack_reason);
  if (p.qos == 2) acknowledge(client, PacketType::kPubrec, p.packet_id, durable, ack_reason);
}

bool Broker::route(std::string_view topic, std::string_view payload, uint8_t qos, bool retain,
                   bool internal, Client* source, std::string_view props, const Session* origin,
                   std::optional<uint64_t> expires_at_ms) {
  MessagePtr msg;
  if (retain || !props.empty() || expires_at_ms)
    msg = Message::create(topic, payload, qos, retain, props, expires_at_ms);
  if (retain) {
    if (internal) router_.retain(msg);  // the broker's own few $SYS topics are not capped
    else store_retained(msg);
  }
  const std::vector<RouteTarget*>& targets = router_.matches(topic);
  bool matched = !targets.empty();
  if (!shared_.empty() && route_shared(topic, payload, qos, msg, source)) matched = true;
  size_t inline_count = targets.size();
  if (!fanouts_.empty()) inline_count = 0;  // behind a fan-out in progress: keep the order
  else if (inline_count > kSliceBudget) inline_count = kSliceBudget;
  for (size_t i = 0; i < inline_count; ++i)
    deliver_routed(*static_cast<Session*>(targets[i]), targets[i]->match_qos, topic, payload, qos,
                   msg, source, origin);
  if (inline_count == targets.size()) return matched;
  // A fan-out too big for one slice: the rest goes out in later slices, and until it
  // has, no connection's next packet is read (congested()), so nothing overtakes it.
  FanoutJob job;
  job.msg = msg ? msg : Message::create(topic, payload, qos, false);
  job.qos = qos;
  job.source = source;
  job.origin = origin;
  job.targets.reserve(targets.size() - inline_count);
  for (size_t i = inline_count; i < targets.size(); ++i)
    job.targets.push_back({static_cast<Session*>(targets[i]), targets[i]->match_qos});
  fanouts_.push_back(std::move(job));
  return matched;
}

void Broker::deliver_routed(Session& session, uint8_t sub_qos, std::string_view topic,
                            std::string_view payload, uint8_t qos, MessagePtr& msg,
                            Client* source, const Session* origin) {
  const uint8_t q = std::min(qos, sub_qos);  // [MQTT-3.8.4-6]
  if (q == 0 && flow_.sheds_qos0(session)) {  // slow_subscriber = "drop_qos0" applied
    stats_.delivery.messages_dropped++;
    flow_.count_shed(session);
    return;
  }
  const uint64_t dropped_before = stats_.delivery.congestion_drops();
  if (session.has_options()) {
    deliver_with_options(session, q, topic, payload, qos, msg, origin);
  } else if (q == 0 && !(msg && msg->expires())) {
    // Forwarded copies carry RETAIN 0 [MQTT-3.3.1-9].
    session.deliver_qos0(topic, payload, false, limits_.max_outgoing_bytes, stats_.delivery,
                         msg ? msg->props() : std::string_view());
  } else {
    if (!msg) msg = Message::create(topic, payload, qos, false);
    session.deliver(msg, q, false, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
  }
  after_delivery(session, q, dropped_before, source);
}

void Broker::deliver_with_options(Session& session, uint8_t q, std::string_view topic,
                                  std::string_view payload, uint8_t qos, MessagePtr& msg,
                                  const Session* origin) {
  const Session::Delivery d = session.match_options(topic, &session == origin);
  if (d.skip) return;  // No Local: its own message [MQTT-3.8.3-3]
  // The router's QoS is the highest over every matching filter, also a No Local one
  // skipped here: the delivery takes the best of those that apply [MQTT-3.8.4-8].
  q = std::min(q, d.qos);
  if (!msg) msg = Message::create(topic, payload, qos, false);
  // Retain As Published: the publication's RETAIN flag, else 0 [MQTT-3.3.1-12, -13].
  const bool retain = d.retain_as_published && msg->retain();
  // Subscription Identifiers make this delivery's copy its own [MQTT-3.3.4-3].
  const MessagePtr copy = d.ids.empty() ? msg : mqtt5::with_subscription_ids(*msg, d.ids);
  session.deliver(copy, q, retain, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
}

size_t Broker::run_fanouts(size_t budget) {
  size_t spent = 0;
  while (!fanouts_.empty() && spent < budget) {
    FanoutJob& job = fanouts_.front();
    MessagePtr msg = job.msg;
    while (job.next < job.targets.size() && spent < budget) {
      auto [session, sub_qos] = job.targets[job.next++];
      ++spent;
      if (!session->removed())
        deliver_routed(*session, sub_qos, msg->topic(), msg->payload(), job.qos, msg, job.source,
                       job.origin);
    }
    if (job.next == job.targets.size()) fanouts_.pop_front();
  }
  if (fanouts_.empty()) graveyard_.clear();  // nothing points at them any more
  return spent;
}

void Broker::store_retained(const MessagePtr& msg) {
  const Router::RetainResult r =
      router_.retain(msg, limits_.max_retained_messages, limits_.max_retained_bytes);
  if (r != Router::RetainResult::kRefused) {
    retained_full_ = false;
    track_retained_expiry(*msg);
    if (persistence_) {
      if (r == Router::RetainResult::kStored)
        persistence_->put_retained(*msg);
      else
        persistence_->remove_retained(msg->topic());
    }
    return;
  }
  // Still forwarded to current subscribers; only not kept. Logged once per episode.
  stats_.retained_refused++;
  if (retained_full_) return;
  retained_full_ = true;
  LOG_WARN("retained message on %s not stored: the store holds %zu messages, %" PRIu64
           " bytes (max_retained_messages %" PRIu64 ", max_retained_bytes %" PRIu64
           "); further refusals are counted in $SYS/broker/retained messages/refused",
           log::quote(msg->topic()).c_str(), router_.capped_retained_count(), router_.capped_retained_bytes(),
           limits_.max_retained_messages, limits_.max_retained_bytes);
}

void Broker::publish_internal(std::string_view topic, std::string_view payload, bool retain) {
  route(topic, payload, 0, retain, true);
}

void Broker::queue_retained(Client& client, std::string_view filter, uint8_t granted_qos) {
  auto [it, created] = retained_jobs_.try_emplace(&client);
  RetainedJob& job = it->second;
  if (created) {
    job.serial = ++retained_serial_;
    retained_order_.push_back({&client, job.serial});
  }
  // A filter subscribed again before its turn is sent once, at the latest QoS.
  auto [pending, added] = job.pending_qos.try_emplace(std::string(filter), granted_qos);
  if (added) job.filters.push_back(std::string(filter));
  else pending->second = granted_qos;
}

bool Broker::retained_job_blocked(const Client& client) const {
  // Paced by the client: no more retained messages while it has not read half of what
  // it may hold, so a wide filter never turns into drops or a giant output buffer.
  const Session* session = client.session;
  return client.pending_output() > limits_.max_outgoing_bytes / 2 ||
         (session != nullptr && session->queued_count() > limits_.max_queued_messages / 2);
}

bool Broker::run_retained_job(Client& client, RetainedJob& job, size_t& budget) {
  Session& session = *client.session;
  while (budget > 0 && !retained_job_blocked(client)) {
    if (job.current.empty()) {
      if (job.filters.empty()) return true;
      job.current = std::move(job.filters.front());
      job.filters.pop_front();
      auto q = job.pending_qos.find(job.current);
      job.current_qos = q->second;
      job.pending_qos.erase(q);
      job.cursor.clear();
    }
    const bool done = router_.retained_matching(job.current, job.cursor, budget, [&](const MessagePtr& msg) {
      const uint8_t q = std::min(msg->qos(), job.current_qos);
      AuthRequest req;
      req.topic = msg->topic();
      req.action = AuthAction::kReceive;
      req.qos = q;
      req.retain = true;
      req.filter = job.current;
      AuthResult auth = hooks_.check(client, req);
      if (!auth.allowed) {
        CLIENT_LOG(log::Level::kDebug, client, "retained message on %s withheld: %s",
                   log::quote(msg->topic()).c_str(), auth.reason.c_str());
        return;
      }
      const uint32_t id = session.has_options() ? session.subscription_id(job.current) : 0;
      const MessagePtr copy = id == 0 ? msg : mqtt5::with_subscription_ids(*msg, {&id, 1});
      session.deliver(copy, q, true, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
    });
    if (done) job.current.clear();
  }
  return job.current.empty() && job.filters.empty();
}

bool Broker::run_slice(uint64_t now_ms) {
  now_ms_ = std::max(now_ms_, now_ms);
  session_limits_.now_ms = now_ms_;
  size_t budget = kSliceBudget;
  bool progress = false;
  // Fan-outs first: while one is in progress no connection is read.
  if (!fanouts_.empty()) {
    budget -= run_fanouts(budget);
    progress = true;
  }
  // SUBSCRIBEs with more filters than a slice.
  if (!sliced_subscribes_.empty() && budget > 0) {
    budget -= std::min(budget, run_sliced_subscribes(budget));
    progress = true;
  }
  // Retained deliveries, round robin over clients, a share of the budget each.
  for (size_t n = retained_order_.size(); n > 0 && budget > 0; --n) {
    auto [client, serial] = retained_order_.front();
    retained_order_.pop_front();
    auto it = retained_jobs_.find(client);
    if (it == retained_jobs_.end() || it->second.serial != serial) continue;  // closed
    size_t share = std::min(budget, kSliceBudget / 4);
    const size_t before = share;
    const bool done = run_retained_job(*client, it->second, share);
    progress |= share != before;
    budget -= before - share;
    if (done) retained_jobs_.erase(it);
    else retained_order_.push_back({client, serial});
  }
  if (budget > 0 && expiry_due_) {
    expiry_due_ = expire_sessions(now_ms, budget);
    progress = true;
  }
  return progress;
}

bool Broker::has_work() const {
  return !fanouts_.empty() || !sliced_subscribes_.empty() || !retained_jobs_.empty() || expiry_due_;
}

void Broker::handle_subscribe(Client& client, const codec::Subscribe& s) {
  for (const auto& t : s.topics) {
    if (too_deep(client, t.filter)) return;
    if (t.no_local && t.filter.starts_with("$share/")) {
      protocol_violation(client, "No Local on a shared subscription");  // [MQTT-3.8.3-4]
      return;
    }
  }
  SubscribeState state;
  state.packet_id = s.packet_id;
  state.v5 = is_v5(client);
  if (state.v5 && !s.props.subscription_identifiers.empty())
    state.subscription_id = s.props.subscription_identifiers.front();
  state.topics.reserve(s.topics.size());
  for (const auto& t : s.topics) {
    state.topics.emplace_back(std::string(t.filter), t.qos);
    if (state.v5) {
      state.retain_handling.push_back(t.retain_handling);
      state.options.push_back(
          static_cast<uint8_t>((t.no_local ? Session::kNoLocal : 0) |
                               (t.retain_as_published ? Session::kRetainAsPublished : 0)));
    }
  }
  state.codes.reserve(s.topics.size());
  const Progress progress = continue_subscribe(client, state);
  if (progress != Progress::kDone) {
    park_subscribe(client, std::move(state), progress);  // SUBACK once every filter is decided
    return;
  }
  finish_subscribe(client, state);
}

void Broker::park_subscribe(Client& client, SubscribeState s, Progress progress) {
  s.sliced = progress == Progress::kSliced;
  await(client, Awaiting{std::move(s)});
  if (progress == Progress::kSliced) sliced_subscribes_.push_back(&client);
}

size_t Broker::run_sliced_subscribes(size_t budget) {
  size_t spent = 0;
  for (size_t n = sliced_subscribes_.size(); n > 0 && spent < budget; --n) {
    Client* client = sliced_subscribes_.front();
    sliced_subscribes_.pop_front();
    auto it = awaiting_.find(client);
    if (it == awaiting_.end()) continue;  // closed meanwhile
    auto* s = std::get_if<SubscribeState>(&it->second.state);
    if (s == nullptr || !s->sliced) continue;  // another client at a reused address
    s->sliced = false;
    const size_t before = s->next;
    const Progress progress = continue_subscribe(*client, *s, std::min(budget - spent, kSliceBudget / 2));
    spent += std::max<size_t>(1, s->next - before);
    if (progress == Progress::kSliced) {
      s->sliced = true;
      sliced_subscribes_.push_back(client);
    } else if (progress == Progress::kDone) {
      SubscribeState done = std::move(*s);
      awaiting_.erase(it);
      finish_subscribe(*client, done);
      if (client->state != Client::State::kClosing && !awaiting_decision(*client) &&
          !flow_.holds(*client))
        client->hold(false);
    }
    // kDeferred: stays in awaiting_ until the plugin's decision (on_decided) arrives.
  }
  return spent;
}

Broker::Progress Broker::continue_subscribe(Client& client, SubscribeState& s, size_t budget) {
  Session& session = *client.session;
  for (; s.next < s.topics.size(); ++s.next) {
    if (budget-- == 0) return Progress::kSliced;
    const auto& [filter, qos] = s.topics[s.next];
    if (session.subscription_count() >= limits_.max_subscriptions_per_client &&
        !session.has_subscription(filter)) {
      ++s.over_limit;
      s.codes.push_back(s.v5 ? reason::kQuotaExceeded : codec::kSubackFailure);
      continue;
    }
    if (refuse_invalid_share(client, s, filter)) continue;
    AuthRequest req;
    // A shared subscription is authorised on its Topic Filter: it gets (some of) the
    // messages that filter would, so the same ACL rules apply.
    SharedFilter shared;
    req.topic = parse_shared_filter(filter, shared) == ShareParse::kValid ? shared.filter : filter;
    req.action = AuthAction::kSubscribe;
    req.qos = qos;
    req.may_defer = true;
    AuthResult auth = hooks_.check(client, req);
    if (auth.pending) return Progress::kDeferred;
    subscribe_decided(client, s, auth);
  }
  return Progress::kDone;
}

void Broker::subscribe_decided(Client& client, SubscribeState& s, const AuthResult& auth) {
  Session& session = *client.session;
  const auto& [filter, qos] = s.topics[s.next];
  if (!auth.allowed) {
    CLIENT_LOG(log::Level::kInfo, client, "subscription to %s denied: %s",
               log::quote(filter).c_str(), auth.reason.c_str());
    s.codes.push_back(s.v5 ? (auth.reason_code != 0 ? auth.reason_code : reason::kNotAuthorized)
                           : codec::kSubackFailure);
    if (s.v5 && s.reason_string.empty()) s.reason_string = auth.reason_string;
    return;
  }
  if (!index_subscribe(session, filter, qos)) {
    CLIENT_LOG(log::Level::kWarning, client,
               "subscription to %s refused: %zu shared subscription groups exist (the most "
               "there can be)",
               log::quote(filter).c_str(), SharedSubscriptions::kMaxGroups);
    s.codes.push_back(s.v5 ? reason::kQuotaExceeded : codec::kSubackFailure);
    return;
  }
  // No retained messages on a shared subscription (3.3.1.3: only "when a new Non-shared
  // Subscription is made").
  if (filter.starts_with("$share/")) s.no_retained.push_back(s.next);
  const bool added =
      s.v5 ? session.add_subscription(filter, qos, s.options[s.next], s.subscription_id)
           : session.add_subscription(filter, qos);
  if (s.v5) {
    // Retain Handling 1: retained messages only for a new subscription; 2: never.
    const uint8_t rh = s.retain_handling[s.next];
    if (rh == 2 || (rh == 1 && !added)) s.no_retained.push_back(s.next);
  }
  if (persistence_ && !session.clean()) {
    if (s.v5)
      persistence_->put_subscription(session, filter, qos, s.options[s.next], s.subscription_id);
    else
      persistence_->put_subscription(session, filter, qos);
  }
  s.codes.push_back(qos);
  CLIENT_LOG(log::Level::kDebug, client, "subscribed to %s (QoS %u)", log::quote(filter).c_str(),
             qos);
}

void Broker::finish_subscribe(Client& client, SubscribeState& st) {
  if (hold_subscribe(client, st)) return;  // SUBACK once the subscriptions are durable
  Session& session = *client.session;
  const std::vector<uint8_t>& codes = st.codes;
  const size_t over_limit = st.over_limit;
  if (over_limit > 0) {
    stats_.subscriptions_refused += over_limit;
    CLIENT_LOG(log::Level::kWarning, client,
               "%zu subscription%s refused (0x80): the client has %zu, max_subscriptions_per_client "
               "is %u",
               over_limit, over_limit == 1 ? "" : "s", session.subscription_count(),
               limits_.max_subscriptions_per_client);
  }
  if (st.v5 && mqtt5::may_send_reason_string(client, st.reason_string, 5 + codes.size(), false)) {
    codec::Properties props;
    props.reason_string = st.reason_string;
    codec::encode_suback_v5(client.out(), st.packet_id, codes, &props);
  } else if (st.v5)
    codec::encode_suback_v5(client.out(), st.packet_id, codes);
  else
    codec::encode_suback(client.out(), st.packet_id, codes);
  // Retained messages follow the SUBACK, for every filter granted (again, when a
  // subscription is replaced [MQTT-3.8.4-3]). A first slice goes at once; what a wide
  // filter matches beyond it is sent in later slices (run_slice), so one SUBSCRIBE
  // never holds the loop.
  for (size_t i = 0; i < st.topics.size(); ++i) {
    if (codes[i] < codec::kSubackFailure &&
        std::find(st.no_retained.begin(), st.no_retained.end(), i) == st.no_retained.end())
      queue_retained(client, st.topics[i].first, codes[i]);
  }
  auto job = retained_jobs_.find(&client);
  if (job == retained_jobs_.end()) return;
  size_t budget = kSliceBudget / 4;
  if (run_retained_job(client, job->second, budget)) retained_jobs_.erase(job);
}

void Broker::handle_unsubscribe(Client& client, const codec::Unsubscribe& u) {
  for (auto filter : u.filters)
    if (too_deep(client, filter)) return;
  Session& session = *client.session;
  std::vector<uint8_t> codes;  // 5.0: one per filter [MQTT-3.11.3-1]
  for (auto filter : u.filters) {
    index_unsubscribe(session, filter);
    const bool existed = session.remove_subscription(filter);
    if (existed && persistence_ && !session.clean())
      persistence_->remove_subscription(session, filter);
    if (is_v5(client)) codes.push_back(existed ? reason::kSuccess : reason::kNoSubscriptionExisted);
  }
  const bool durable = persistence_ && !session.clean();
  acknowledge(client, PacketType::kUnsuback, u.packet_id, durable, 0,
              std::move(codes));  // [MQTT-3.10.4-5]
}

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

void Broker::set_session_clean(Session& session, bool clean) {
  if (session.clean() == clean) return;
  if (clean) persistent_sessions_--;
  else persistent_sessions_++;
  session.set_clean(clean);
}

void Broker::destroy_session(Session* session) {
  offline_.remove(session);
  if (!drop_episodes_.empty()) end_drop_episode(*session, "until its session ended");
  if (!shared_.empty() && !shutting_down_) move_shared_messages(*session, true);
  session->for_each_subscription(
      [&](const std::string& filter, uint8_t) { index_unsubscribe(*session, filter); });
  if (!session->clean()) {
    persistent_sessions_--;
    if (persistence_) persistence_->remove_session(*session);
  }
  // Its messages leave the totals with it (a removed session is delivered nothing more).
  // Saturating: messages that reached a session some other way must not wrap them.
  auto& d = stats_.delivery;
  d.inflight_now -= std::min<uint64_t>(d.inflight_now, session->inflight_count());
  d.queued_now -= std::min<uint64_t>(d.queued_now, session->queued_count());
  // The session ends: a will still waiting for its delay goes now [MQTT-3.1.3-9].
  if (!delayed_wills_.empty()) publish_delayed_will(*session, "its session ended");
  std::unique_ptr<Session> gone = sessions_->remove(session);
  if (gone && !fanouts_.empty()) {
    gone->mark_removed();  // a fan-out in progress still points at it
    graveyard_.push_back(std::move(gone));
  }
}

// --- MQTT 5.0: plugins' refusals and enhanced authentication (4.12) ----------------------

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

// One more AUTH 0x18 of an exchange: within kMaxAuthRounds and the client's Maximum
// Packet Size, else the exchange fails (and false).
bool Broker::may_continue_auth(Client& client, const std::optional<std::string>& data) {
  mqtt5::ClientState& s = *client.v5();
  const size_t data_size = data ? data->size() : 0;
  if (s.auth_rounds >= mqtt5::kMaxAuthRounds) {
    fail_auth_exchange(client, "authentication exchange over 16 round trips",
                       reason::kNotAuthorized);
    return false;
  }
  if (s.max_packet_size != 0 && 16 + s.auth_method.size() + data_size > s.max_packet_size) {
    fail_auth_exchange(client, "authentication data over the client's Maximum Packet Size",
                       reason::kImplementationSpecificError);
    return false;
  }
  s.auth_rounds++;
  return true;
}

void Broker::continue_connect_auth(Client& client, ConnectState c, const AuthResult& auth) {
  if (!may_continue_auth(client, auth.auth_data)) return;
  mqtt5::ClientState& s = *client.v5();
  s.auth_exchange = mqtt5::ClientState::AuthExchange::kConnecting;
  auth_exchanges_.insert_or_assign(&client, std::move(c));
  CLIENT_LOG(log::Level::kDebug, client, "enhanced authentication: AUTH 0x18 (round %u)",
             s.auth_rounds);  // never the data
  mqtt5::encode_auth(client, client.out(), reason::kContinueAuthentication, auth.auth_data);
}

void Broker::fail_auth_exchange(Client& client, const char* why, uint8_t reason_code) {
  hooks_.forget(client);  // the plugin's exchange (or decision) is moot
  if (mqtt5::ClientState* s = client.v5())
    s->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
  auth_exchanges_.erase(&client);
  if (client.state == Client::State::kAwaitConnect) {
    refuse_connect(client, ConnackCode::kNotAuthorized, why, reason_code);
    return;
  }
  CLIENT_LOG(log::Level::kWarning, client, "re-authentication failed: %s; closing", why);
  mqtt5::disconnect(client, reason_code, why);
}

void Broker::handle_auth(Client& client, const codec::Auth& a, uint64_t now_ms) {
  using AuthExchange = mqtt5::ClientState::AuthExchange;
  mqtt5::ClientState* s = client.v5();
  const bool connecting = client.state == Client::State::kAwaitConnect;
  if (connecting && auth_exchanges_.count(&client) == 0) {
    protocol_violation(client, "AUTH before CONNECT");  // [MQTT-3.1.0-1]
    return;
  }
  // Protocol Errors: AUTH from a client that did not use enhanced authentication
  // [MQTT-4.12.0-7], with another method [MQTT-4.12.1-1], or out of turn.
  const char* error = nullptr;
  if (s == nullptr || s->auth_method.empty())
    error = "AUTH without enhanced authentication (no Authentication Method in CONNECT)";
  else if (!a.props.authentication_method || *a.props.authentication_method != s->auth_method)
    error = "AUTH with another Authentication Method than the CONNECT's";
  else if (a.reason_code == reason::kContinueAuthentication &&
           (s->auth_exchange == AuthExchange::kNone ||
            (connecting && !auth_exchanges_.count(&client))))
    error = "AUTH 0x18 while no authentication exchange is in progress";
  else if (a.reason_code == reason::kReauthenticate &&
           (connecting || s->auth_exchange != AuthExchange::kNone))
    error = "AUTH 0x19 before CONNACK or during another exchange";
  else if (a.reason_code == reason::kSuccess)
    error = "AUTH 0x00 (Success) from a client";
  if (error != nullptr) {
    if (connecting) {
      hooks_.forget(client);
      auth_exchanges_.erase(&client);
      refuse_connect(client, ConnackCode::kNotAuthorized, error, reason::kProtocolError);
    } else {
      protocol_violation(client, error);
    }
    return;
  }
  std::optional<std::string_view> data = a.props.authentication_data;
  AuthResult r;
  if (a.reason_code == reason::kReauthenticate) {
    s->auth_exchange = AuthExchange::kReauthenticating;
    s->auth_started_ms = now_ms;
    s->auth_rounds = 0;
    CLIENT_LOG(log::Level::kDebug, client, "re-authentication (method %s)",
               log::quote(s->auth_method, 64).c_str());
    r = hooks_.reauthenticate(client, s->auth_method, data);
  } else {
    r = hooks_.continue_auth(client, data);
  }
  auth_step_decided(client, std::move(r));
}

void Broker::auth_step_decided(Client& client, AuthResult r) {
  const bool connecting = client.state == Client::State::kAwaitConnect;
  if (!connecting) {
    if (r.pending)
      await(client, Awaiting{ReauthState{}});
    else
      reauth_decided(client, r);
    return;
  }
  auto it = auth_exchanges_.find(&client);
  if (it == auth_exchanges_.end()) return;  // cannot happen: handle_auth checked
  ConnectState c = std::move(it->second);
  auth_exchanges_.erase(it);
  if (r.pending) {
    await(client, Awaiting{std::move(c)});
  } else if (r.continue_auth) {
    continue_connect_auth(client, std::move(c), r);
  } else {
    client.v5()->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
    finish_connect(client, c, std::move(r));
  }
}

void Broker::reauth_decided(Client& client, const AuthResult& r) {
  mqtt5::ClientState& s = *client.v5();
  if (client.state != Client::State::kConnected) return;
  if (r.continue_auth) {
    if (!may_continue_auth(client, r.auth_data)) return;
    mqtt5::encode_auth(client, client.out(), reason::kContinueAuthentication, r.auth_data);
    return;
  }
  s.auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
  if (!r.allowed) {
    // DISCONNECT with the plugin's code, if one a server may send [4.12.1].
    static constexpr uint8_t kServerCodes[] = {0x80, 0x81, 0x82, 0x83, 0x87, 0x89,
                                               0x97, 0x98, 0x9C, 0x9D, 0x9F};
    uint8_t code = r.reason_code;
    if (std::find(std::begin(kServerCodes), std::end(kServerCodes), code) == std::end(kServerCodes))
      code = reason::kNotAuthorized;
    CLIENT_LOG(log::Level::kInfo, client, "re-authentication refused (DISCONNECT 0x%02x): %s", code,
               r.reason.c_str());
    codec::Properties props;
    if (mqtt5::may_send_reason_string(client, r.reason_string, 4, true))
      props.reason_string = r.reason_string;
    if (!client.close_requested()) codec::encode_disconnect_v5(client.out(), code, &props);
    client.close("re-authentication failed");
    return;
  }
  CLIENT_LOG(log::Level::kInfo, client, "re-authenticated");
  const size_t data_size = r.auth_data ? r.auth_data->size() : 0;
  if (s.max_packet_size != 0 && 16 + s.auth_method.size() + data_size > s.max_packet_size) {
    fail_auth_exchange(client, "authentication data over the client's Maximum Packet Size",
                       reason::kImplementationSpecificError);
    return;
  }
  mqtt5::encode_auth(client, client.out(), reason::kSuccess, r.auth_data);
}

// --- flow control and drop accounting ---------------------------------------------------

void Broker::after_delivery(Session& session, uint8_t qos, uint64_t dropped_before,
                            Client* source) {
  if (stats_.delivery.congestion_drops() != dropped_before) {
    note_drop(session, qos);
    return;
  }
  if (!drop_episodes_.empty()) end_drop_episode(session, "until its queue had room again");
  if (source != nullptr) flow_.after_delivery(session, source, qos, now_ms_);
}

void Broker::note_drop(Session& session, uint8_t qos) {
  // QoS 0 is not kept for offline clients (MQTT's rule, counted as dropped): no episode.
  Client* client = session.client();
  if (client == nullptr && qos == 0) return;
  if (client == nullptr) stats_.messages_dropped_offline++;
  auto [it, created] = drop_episodes_.try_emplace(&session);
  it->second.count++;
  if (!created) return;
  it->second.since_ms = now_ms_;
  if (client != nullptr) {
    CLIENT_LOG(log::Level::kWarning, *client,
               "dropping messages to this client: %zu queued (max_queued_messages %u), %zu bytes "
               "unsent (max_outgoing_bytes %u); the count follows when it has room again",
               session.queued_count(), limits_.max_queued_messages, client->pending_output(),
               limits_.max_outgoing_bytes);
  } else {
    LOG_WARN(
        "client %s (offline): dropping messages to its persistent session: %zu queued "
        "(max_queued_messages %u); the count follows when it has room again",
        log::quote(session.client_id()).c_str(), session.queued_count(),
        limits_.max_queued_messages);
  }
}

void Broker::end_drop_episode(const Session& session, const char* why) {
  auto it = drop_episodes_.find(&session);
  if (it == drop_episodes_.end()) return;
  const double seconds = static_cast<double>(now_ms_ - it->second.since_ms) / 1000.0;
  LOG_WARN("client %s: %" PRIu64 " message%s dropped over %.1f s (%s)",
           log::quote(session.client_id()).c_str(), it->second.count,
           it->second.count == 1 ? "" : "s", seconds, why);
  drop_episodes_.erase(it);
}

void Broker::on_output_drained(Client& client) {
  if (client.session != nullptr && client.state == Client::State::kConnected)
    flow_.check_drained(*client.session);
}

bool Broker::release_flow_holds() {
  if (!flow_.has_resumable()) return false;
  for (Client* c : flow_.take_resumable()) {
    if (c->state != Client::State::kConnected || c->close_requested() || awaiting_decision(*c))
      continue;  // closing, or a plugin's decision resumes it
    c->hold(false);
  }
  return true;
}

void Broker::check_flow(uint64_t now_ms) {
  now_ms_ = std::max(now_ms_, now_ms);
  if (!flow_.active()) return;
  for (Client* c : flow_.check_policies(now_ms)) {
    stats_.slow_subscribers_disconnected++;
    c->close("slow subscriber");
  }
}

}  // namespace mqgate
