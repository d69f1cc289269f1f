#include "broker/flow_control.hpp"

#include <algorithm>
#include <cinttypes>

#include "broker/session.hpp"
#include "client/client.hpp"

namespace mqgate {

void FlowControl::set_limits(const LimitsConfig& limits) {
  high_queued_ = limits.max_queued_messages / 2;
  low_queued_ = limits.max_queued_messages / 4;
  high_queued_bytes_ = limits.max_queued_bytes / 2;
  low_queued_bytes_ = limits.max_queued_bytes / 4;
  // Bytes: half the limit, but at most 256 KiB: that is already thousands of small
  // messages (plenty to keep a socket busy between resumes), and a 1 -> 50 fan-out must
  // not park 50 x 2 MiB in the broker.
  high_bytes_ = std::min<size_t>(limits.max_outgoing_bytes / 2, kMaxHighBytes);
  low_bytes_ = high_bytes_ / 2;
}

bool FlowControl::over_high(const Session& session) const {
  // queued_count() first: it is inline; pending_output() is a virtual call.
  return session.queued_count() > high_queued_ || session.queued_bytes() > high_queued_bytes_ ||
         session.client()->pending_output() > high_bytes_;
}

bool FlowControl::below_low(const Session& session) const {
  const Client* c = session.client();
  return c == nullptr ||
         (session.queued_count() <= low_queued_ && session.queued_bytes() <= low_queued_bytes_ &&
          c->pending_output() <= low_bytes_);
}

void FlowControl::after_delivery(Session& session, Client* source, uint8_t qos, uint64_t now_ms) {
  Client* subscriber = session.client();
  if (subscriber == nullptr || !over_high(session)) return;
  auto [it, created] = congested_.try_emplace(&session);
  Congestion& c = it->second;
  if (created) {
    c.since_ms = now_ms;
    // Its own acknowledgements must be read from now on (see the header).
    if (holds(*subscriber)) release_client(*subscriber);
  }
  if (source == nullptr || source == subscriber) return;  // nobody to hold / no self-deadlock
  if (c.shedding && qos == 0) return;                     // drop_qos0: these no longer wait
  if (source->close_requested() || congested_.count(source->session) != 0) return;
  auto [b, fresh] = blocked_.try_emplace(source->conn_id());
  if (fresh) {
    b->second.client = source;
    b->second.ticket = ++next_ticket_;
  }
  // Stale edges (publishers closed or released early) are dropped once they are the
  // majority: the list stays within twice the clients that can wait, plus a little.
  if (c.waiters.size() >= 64 && c.waiters.size() >= 2 * blocked_.size()) drop_stale(c);
  c.waiters.push_back({source->conn_id(), b->second.ticket});
  if (b->second.waits++ == 0) source->hold_input();
}

void FlowControl::forget_client(const Client& client) {
  if (!blocked_.empty()) blocked_.erase(client.conn_id());
}

bool FlowControl::holds(const Client& client) const {
  if (blocked_.empty()) return false;
  auto it = blocked_.find(client.conn_id());
  return it != blocked_.end() && it->second.waits > 0;
}

void FlowControl::check_drained_slow(const Session& session) {
  auto it = congested_.find(&session);
  if (it == congested_.end() || !below_low(session)) return;
  end_congestion(session, it->second);
  congested_.erase(it);
}

void FlowControl::end_congestion(const Session& session, Congestion& c) {
  release_waiters(c);
  if (c.shedding && session.client() != nullptr)
    CLIENT_LOG(log::Level::kInfo, *session.client(),
               "slow subscriber caught up: %" PRIu64
               " QoS 0 messages to it were dropped "
               "(slow_subscriber = \"drop_qos0\")",
               c.shed);
}

void FlowControl::forget_session(const Session& session) {
  if (congested_.empty()) return;
  auto it = congested_.find(&session);
  if (it == congested_.end()) return;
  end_congestion(session, it->second);
  congested_.erase(it);
}

void FlowControl::release_waiters(Congestion& c) {
  for (const Waiter& w : c.waiters) {
    auto b = blocked_.find(w.client);
    if (b == blocked_.end() || b->second.ticket != w.ticket || b->second.waits == 0) continue;
    if (--b->second.waits == 0) resumable_.push_back(w);
  }
  c.waiters.clear();
  c.waiters.shrink_to_fit();
}

bool FlowControl::live(const Waiter& w) const {
  auto b = blocked_.find(w.client);
  return b != blocked_.end() && b->second.ticket == w.ticket && b->second.waits > 0;
}

void FlowControl::drop_stale(Congestion& c) {
  std::erase_if(c.waiters, [this](const Waiter& w) { return !live(w); });
}

void FlowControl::release_client(const Client& client) {
  auto b = blocked_.find(client.conn_id());
  if (b == blocked_.end() || b->second.waits == 0) return;
  // A new ticket makes its edges in other subscribers' lists stale.
  b->second.ticket = ++next_ticket_;
  b->second.waits = 0;
  resumable_.push_back({client.conn_id(), b->second.ticket});
}

void FlowControl::count_shed(const Session& session) {
  auto it = congested_.find(&session);
  if (it != congested_.end()) it->second.shed++;
}

std::vector<Client*> FlowControl::take_resumable() {
  std::vector<Client*> out;
  for (const Waiter& w : resumable_) {
    auto b = blocked_.find(w.client);
    // Gone (closed), held again since (waits > 0), or already taken.
    if (b == blocked_.end() || b->second.ticket != w.ticket || b->second.waits != 0) continue;
    out.push_back(b->second.client);
    blocked_.erase(b);
  }
  resumable_.clear();
  if (resumable_.capacity() > 1024) resumable_.shrink_to_fit();
  return out;
}

std::vector<Client*> FlowControl::check_policies(uint64_t now_ms) {
  std::vector<Client*> disconnect;
  for (auto it = congested_.begin(); it != congested_.end();) {
    const Session& session = *it->first;
    Congestion& c = it->second;
    if (below_low(session)) {  // drained without an ack or a write telling us
      end_congestion(session, c);
      it = congested_.erase(it);
      continue;
    }
    ++it;
    Client* client = session.client();
    const ListenerConfig* l = client->listener();
    const auto policy = l ? l->slow_subscriber : ListenerConfig::SlowSubscriber::kDisconnect;
    const uint64_t grace_ms = uint64_t{l ? l->slow_subscriber_grace : 5} * 1000;
    if (c.policy_applied || policy == ListenerConfig::SlowSubscriber::kWait ||
        now_ms - c.since_ms < grace_ms)
      continue;
    // Only a subscriber that actually holds someone up gets the policy.
    const size_t waiting = static_cast<size_t>(std::count_if(
        c.waiters.begin(), c.waiters.end(), [this](const Waiter& w) { return live(w); }));
    if (waiting == 0) continue;
    c.policy_applied = true;
    const double seconds = static_cast<double>(now_ms - c.since_ms) / 1000.0;
    if (policy == ListenerConfig::SlowSubscriber::kDisconnect) {
      CLIENT_LOG(log::Level::kWarning, *client,
                 "slow subscriber: %zu messages queued and %zu bytes unsent, over its high-water "
                 "mark for %.1f s while %zu publisher%s waited; disconnecting (slow_subscriber = "
                 "\"disconnect\", slow_subscriber_grace = %u s)",
                 session.queued_count(), client->pending_output(), seconds, waiting,
                 waiting == 1 ? "" : "s", l ? l->slow_subscriber_grace : 5u);
      disconnect.push_back(client);
    } else {
      CLIENT_LOG(
          log::Level::kWarning, *client,
          "slow subscriber: %zu messages queued and %zu bytes unsent, over its high-water "
          "mark for %.1f s while %zu publisher%s waited; dropping QoS 0 messages to it until "
          "it catches up (slow_subscriber = \"drop_qos0\"); QoS 1 and 2 still wait",
          session.queued_count(), client->pending_output(), seconds, waiting,
          waiting == 1 ? "" : "s");
      c.shedding = true;
      // Publishers go on; those whose QoS 1/2 messages reach it are held again.
      release_waiters(c);
    }
  }
  return disconnect;
}

size_t FlowControl::held_count() const {
  return static_cast<size_t>(std::count_if(blocked_.begin(), blocked_.end(),
                                           [](const auto& b) { return b.second.waits > 0; }));
}

}  // namespace mqgate
