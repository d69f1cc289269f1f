// A connection's life around its packets: opening, DISCONNECT, closing (wills, the
// session kept offline or destroyed), keep-alive and connect timeouts, session expiry.
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"

namespace mqgate {

namespace reason = codec::reason;

void Broker::on_open(Client& client, uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  client.last_rx_ms = now_ms;  // before CONNECT: when the connection was accepted
  stats_.connections_total++;
  CLIENT_LOG(log::Level::kDebug, client, "new connection");
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

void Broker::count_certificate(const Client& client, int delta) {
  const TlsPeerInfo* tls = client.tls();
  if (tls == nullptr || tls->chain_der.empty()) return;
  const int64_t hour = hour_of(tls->not_after);
  if (delta > 0) {
    certificate_expiry_[hour]++;
    certificates_connected_++;
    return;
  }
  auto it = certificate_expiry_.find(hour);
  if (it == certificate_expiry_.end()) return;
  if (--it->second == 0) certificate_expiry_.erase(it);
  certificates_connected_--;
}

void Broker::on_closed(Client& client, const char* reason, uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  awaiting_.erase(client.conn_id());
  auth_exchanges_.erase(client.conn_id());
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
  awaiting_.erase(client.conn_id());  // a decision that arrives now is moot (also on takeover)
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
  retained_jobs_.erase(client.conn_id());
  redecisions_.erase(client.conn_id());
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
  count_certificate(client, -1);
  hooks_.on_disconnected(client, reason);
  client.clear_plugin_data();
  CLIENT_LOG(log::Level::kInfo, client, "disconnected (%s)", reason);
  return kept;
}

void Broker::check_expiry(uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  note_expiry_due(now_ms);
}

void Broker::note_expiry_due(uint64_t now_ms) {
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

bool Broker::remove_offline_session(std::string_view client_id, const std::string& who) {
  MQGATE_BROKER_ENTRY();
  Session* s = sessions_->find(client_id);
  if (s == nullptr || s->removed() || s->client() != nullptr || s->clean()) return false;
  LOG_INFO("session of client %s deleted by %s (%zu subscriptions, %zu queued)",
           log::quote(s->client_id()).c_str(), log::quote(who).c_str(), s->subscription_count(),
           s->queued_count());
  destroy_session(s);
  return true;
}

void Broker::check_timeouts(Client& client, uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
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
  // QoS 2 messages of its client that wait for the disk are still routed, with nobody's
  // No Local to honour (see RouteQueue::origin).
  for (auto& entry : route_queues_)
    if (entry.second.origin == session) entry.second.origin = nullptr;
  std::unique_ptr<Session> gone = sessions_->remove(session);
  if (gone && !fanouts_.empty()) {
    gone->mark_removed();  // a fan-out in progress still points at it
    graveyard_.push_back(std::move(gone));
  }
}

}  // namespace mqgate
