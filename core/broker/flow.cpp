// Flow control as the broker drives it (flow_control.hpp keeps the tables): after each
// delivery, drop episodes, drained outputs, releasing held publishers, slow-subscriber
// policies.
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

namespace mqgate {

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
  MQGATE_BROKER_ENTRY();
  if (client.session != nullptr && client.state == Client::State::kConnected)
    flow_.check_drained(*client.session);
}

bool Broker::release_flow_holds() {
  MQGATE_BROKER_ENTRY();
  if (!flow_.has_resumable()) return false;
  for (Client* c : flow_.take_resumable()) {
    if (c->state != Client::State::kConnected || c->close_requested() || awaiting_decision(*c) ||
        cluster_held_.count(c->conn_id()) != 0)
      continue;  // closing, or a plugin's decision or the cluster resumes it
    c->resume_input();
  }
  return true;
}

void Broker::check_flow(uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  now_ms_ = std::max(now_ms_, now_ms);
  if (!flow_.active()) return;
  for (Client* c : flow_.check_policies(now_ms)) {
    stats_.slow_subscribers_disconnected++;
    c->close("slow subscriber");
  }
}

}  // namespace mqgate
