// Retained messages: the store's caps, and the retained messages owed to a client after
// SUBSCRIBE, delivered in slices paced by the client.
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"
#include "store/journal.hpp"

namespace mqgate {

void Broker::store_retained(const MessagePtr& msg, const Client* source) {
  // One the store cannot take is not kept (QoS 1/2 ones were refused before routing).
  const uint64_t bytes = store::message_bytes(msg->topic(), msg->payload(), msg->props());
  if (!msg->payload().empty() && !store_fits(bytes)) {
    stats_.retained_refused++;
    stats_.store_refused++;
    log_store_full(source, msg->topic(), bytes);
    return;
  }
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

void Broker::queue_retained(Client& client, std::string_view filter, uint8_t granted_qos) {
  auto [it, created] = retained_jobs_.try_emplace(client.conn_id());
  RetainedJob& job = it->second;
  if (created) {
    job.client = &client;
    job.serial = ++retained_serial_;
    retained_order_.push_back({client.conn_id(), job.serial});
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

}  // namespace mqgate
