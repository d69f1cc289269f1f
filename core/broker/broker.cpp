// The broker's front door: packets in (dispatched by type to the files of their verb),
// plugins' deferred decisions back, and the sliced work run between I/O polls.
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::ConnackCode;
namespace reason = codec::reason;

Broker::Broker(const LimitsConfig& limits, AuthHooks& hooks, std::unique_ptr<SessionStore> store)
    : hooks_(hooks), sessions_(std::move(store)), rng_(std::random_device{}()) {
  set_limits(limits);
  hooks_.set_decision_sink([this](const Client& client, AuthResult result) {
    on_decided(client.conn_id(), std::move(result));
  });
  hooks_.set_private_sink(
      [this](Client* client, PrivateMessage message) { send_private(client, std::move(message)); });
}

Broker::~Broker() {
  hooks_.set_decision_sink(nullptr);
  hooks_.set_private_sink(nullptr);
}

void Broker::await(Client& client, Awaiting a) {
  a.client = &client;
  awaiting_.insert_or_assign(client.conn_id(), std::move(a));
  client.hold_input();
}

void Broker::on_decided(ConnId id, AuthResult result) {
  MQGATE_BROKER_ENTRY();
  auto it = awaiting_.find(id);
  if (it == awaiting_.end()) return;  // closed meanwhile (the host forgets its decisions then)
  Awaiting a = std::move(it->second);
  awaiting_.erase(it);
  Client& client = *a.client;
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
  resume_if_free(client);
}

void Broker::resume_if_free(Client& client) {
  // The packets that arrived meanwhile, in order (they may await again, or wait for a
  // congested subscriber), once nothing else holds them.
  if (client.state != Client::State::kClosing && !awaiting_decision(client) && !flow_.holds(client))
    client.resume_input();
}

void Broker::set_limits(const LimitsConfig& limits) {
  MQGATE_BROKER_ENTRY();
  limits_ = limits;
  session_limits_.max_inflight = limits.max_inflight_messages;
  session_limits_.max_queued = limits.max_queued_messages;
  session_limits_.max_queued_bytes = limits.max_queued_bytes;
  flow_.set_limits(limits);
}

void Broker::protocol_violation(Client& client, const char* what, uint8_t reason_code) {
  CLIENT_LOG(log::Level::kWarning, client, "protocol violation: %s; closing", what);
  mqtt5::disconnect(client, reason_code, "protocol violation", what);
}

void Broker::on_decode_error(Client& client, codec::DecodeError error,
                             const codec::FixedHeader* header, const codec::Packet* partial) {
  MQGATE_BROKER_ENTRY();
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
  MQGATE_BROKER_ENTRY();
  CLIENT_LOG(log::Level::kWarning, client,
             "%s packet of %zu bytes is over max_packet_size (%" PRIu32 "); closing",
             codec::packet_type_name(header.type), header.packet_length(), limits_.max_packet_size);
  mqtt5::disconnect(client, reason::kPacketTooLarge, "packet too large");
}

void Broker::on_packet(Client& client, codec::Packet& packet, uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  now_ms_ = std::max(now_ms_, now_ms);
  session_limits_.now_ms = now_ms_;
  if (client.state == Client::State::kClosing || client.close_requested()) return;
  if (awaiting_decision(client)) {
    // Client::hold_input() was ignored: better a closed client than packets reordered.
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
    if (client.state != Client::State::kAwaitConnect || auth_exchanges_.count(client.conn_id()) != 0) {
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

bool Broker::run_slice(uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
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
    const auto [id, serial] = retained_order_.front();
    retained_order_.pop_front();
    auto it = retained_jobs_.find(id);
    if (it == retained_jobs_.end() || it->second.serial != serial) continue;  // closed, done
    size_t share = std::min(budget, kSliceBudget / 4);
    const size_t before = share;
    const bool done = run_retained_job(*it->second.client, it->second, share);
    progress |= share != before;
    budget -= before - share;
    if (done) retained_jobs_.erase(it);
    else retained_order_.push_back({id, serial});
  }
  // Subscriptions decided again after a reload: a quarter of a slice (each question may
  // be an ACL search), as a sliced SUBSCRIBE gets half; deliveries are checked meanwhile.
  if (!redecision_order_.empty() && budget > 0) {
    budget -= std::min(budget, run_redecisions(std::min(budget, kSliceBudget / 4)));
    progress = true;
  }
  if (budget > 0 && expiry_due_) {
    expiry_due_ = expire_sessions(now_ms, budget);
    progress = true;
  }
  return progress;
}

bool Broker::has_work() const {
  return !fanouts_.empty() || !sliced_subscribes_.empty() || !retained_jobs_.empty() ||
         !redecision_order_.empty() || expiry_due_;
}

}  // namespace mqgate
