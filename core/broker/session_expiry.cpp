// MQTT 5 session lifetime: each session's own Session Expiry Interval (3.1.2.11.2) and
// wills that wait for their Will Delay Interval (3.1.3.2.2). Kept apart from broker.cpp's
// packet handling, which only calls these.
#include <algorithm>

#include "broker/broker.hpp"
#include "broker/persistence.hpp"

namespace mqgate {

uint32_t Broker::applied_session_expiry(uint32_t requested) const {
  if (limits_.session_expiry == 0) return requested;
  return std::min(requested, limits_.session_expiry);
}

uint32_t Broker::session_expiry_of(const Session& session) const {
  if (session.protocol_level() == codec::kProtocolLevel5) return session.expiry_interval();
  return limits_.session_expiry == 0 ? Session::kNeverExpires : limits_.session_expiry;
}

void Broker::note_session_expiry(const Client& client, Session& session) {
  session.set_protocol_level(client.protocol_level);
  if (const mqtt5::ClientState* v5 = client.v5())
    session.set_expiry_interval(applied_session_expiry(v5->session_expiry));
}

void Broker::schedule_session_expiry(Session& session, uint64_t now_ms) {
  const uint32_t seconds = session_expiry_of(session);
  if (seconds == Session::kNeverExpires) {
    offline_.remove(&session);
    return;
  }
  offline_.schedule(&session, now_ms + uint64_t{seconds} * 1000);
}

bool Broker::delay_will(Client& client, Session& session, uint64_t now_ms) {
  const mqtt5::ClientState* v5 = client.v5();
  if (v5 == nullptr || v5->will_delay == 0) return false;
  const MessagePtr& will = client.will;
  // Authorised as the connection goes (the client's identity is known now, not later).
  AuthResult auth = authorize_publish(client, will->topic(), will->qos(), will->retain());
  if (!auth.allowed) {
    stats_.publish_denied++;
    CLIENT_LOG(log::Level::kInfo, client, "will to %s denied: %s",
               log::quote(will->topic()).c_str(), auth.reason.c_str());
    return true;
  }
  cancel_delayed_will(session);
  DelayedWill& w = delayed_wills_[&session];
  w.msg = will;
  w.due_ms = now_ms + uint64_t{v5->will_delay} * 1000;
  w.expiry = v5->will_expiry;
  w.client_id = session.client_id();
  will_order_.emplace(w.due_ms, &session);
  if (persistence_ && !session.clean()) persistence_->put_will(session, *will, w.due_ms, w.expiry);
  CLIENT_LOG(log::Level::kDebug, client, "will to %s delayed by %u s",
             log::quote(will->topic()).c_str(), v5->will_delay);
  return true;
}

void Broker::cancel_delayed_will(Session& session) {
  auto it = delayed_wills_.find(&session);
  if (it == delayed_wills_.end()) return;
  will_order_.erase({it->second.due_ms, &session});
  delayed_wills_.erase(it);
  if (persistence_ && !session.clean()) persistence_->remove_will(session);
  LOG_DEBUG("client %s came back: its delayed will is not sent",
            log::quote(session.client_id()).c_str());
}

void Broker::publish_delayed_will(const Session& session, const char* why) {
  auto it = delayed_wills_.find(&session);
  if (it == delayed_wills_.end()) return;
  DelayedWill w = std::move(it->second);
  delayed_wills_.erase(it);
  will_order_.erase({w.due_ms, &session});
  if (persistence_ && !session.clean()) persistence_->remove_will(session);
  if (shutting_down_) return;
  LOG_DEBUG("publishing the delayed will of client %s to %s (%s)", log::quote(w.client_id).c_str(),
            log::quote(w.msg->topic()).c_str(), why);
  route_will(w.msg, w.expiry);
}

bool Broker::publish_due_wills(uint64_t now_ms, size_t& budget) {
  while (!will_order_.empty() && will_order_.begin()->first <= now_ms) {
    if (budget == 0) return true;
    --budget;
    publish_delayed_will(*will_order_.begin()->second, "its Will Delay Interval passed");
  }
  return false;
}

void Broker::route_will(const MessagePtr& will, std::optional<uint32_t> expiry) {
  std::optional<uint64_t> expires_at;
  if (expiry) expires_at = now_ms_ + uint64_t{*expiry} * 1000;
  route(will->topic(), will->payload(), will->qos(), will->retain(), false, nullptr, will->props(),
        nullptr, expires_at);
}

void Broker::track_retained_expiry(const Message& msg) {
  const std::string_view topic = msg.topic();
  auto it = retained_expiry_of_.find(std::string(topic));
  if (it != retained_expiry_of_.end()) {  // replaced or cleared: its old expiry is moot
    retained_expiry_.erase({it->second, it->first});
    if (!msg.expires() || msg.payload().empty()) {
      retained_expiry_of_.erase(it);
      return;
    }
    it->second = msg.expires_at_ms();
    retained_expiry_.emplace(it->second, it->first);
    return;
  }
  if (!msg.expires() || msg.payload().empty()) return;
  retained_expiry_of_.emplace(std::string(topic), msg.expires_at_ms());
  retained_expiry_.emplace(msg.expires_at_ms(), std::string(topic));
}

bool Broker::expire_retained(uint64_t now_ms, size_t& budget) {
  while (!retained_expiry_.empty() && retained_expiry_.begin()->first <= now_ms) {
    if (budget == 0) return true;
    --budget;
    auto node = retained_expiry_.extract(retained_expiry_.begin());
    const std::string& topic = node.value().second;
    retained_expiry_of_.erase(topic);
    const Message* m = router_.retained_message(topic);
    if (m == nullptr || !m->expires() || m->expires_at_ms() > now_ms) continue;
    // Cleared like an empty retained PUBLISH would [MQTT-3.3.2-5: not delivered after].
    router_.retain(Message::create(topic, {}, 0, true));
    if (persistence_) persistence_->remove_retained(topic);
    LOG_DEBUG("retained message on %s expired: removed", log::quote(topic).c_str());
  }
  return false;
}

}  // namespace mqgate
