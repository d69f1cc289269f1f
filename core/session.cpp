#include "session.hpp"

#include <algorithm>

#include "client.hpp"
#include "codec/encoder.hpp"

namespace mqgate {

bool Session::add_subscription(std::string_view filter, uint8_t qos) {
  for (auto& s : subscriptions_) {
    if (s.filter == filter) {
      s.qos = qos;
      return false;
    }
  }
  subscriptions_.push_back({std::string(filter), qos});
  return true;
}

bool Session::remove_subscription(std::string_view filter) {
  auto it = std::find_if(subscriptions_.begin(), subscriptions_.end(),
                         [&](const Subscription& s) { return s.filter == filter; });
  if (it == subscriptions_.end()) return false;
  subscriptions_.erase(it);
  return true;
}

uint16_t Session::next_packet_id() {
  // Identifiers in flight are at most max_inflight (<= 65535), so a free one exists.
  for (;;) {
    if (++last_packet_id_ == 0) last_packet_id_ = 1;
    const uint16_t id = last_packet_id_;
    if (std::none_of(inflight_.begin(), inflight_.end(),
                     [id](const Outgoing& o) { return o.packet_id == id; }))
      return id;
  }
}

void Session::send_publish(const Outgoing& o, bool dup, DeliveryStats& stats) {
  std::string& out = client_->out();
  const size_t before = out.size();
  codec::encode_publish(out, o.msg->topic(), o.msg->payload(), o.qos, o.retain, dup, o.packet_id);
  stats.messages_sent++;
  stats.bytes_sent += out.size() - before;
}

void Session::deliver_qos0(std::string_view topic, std::string_view payload, bool retain,
                           size_t max_backlog, DeliveryStats& stats) {
  if (client_ == nullptr || client_->pending_output() > max_backlog) {
    stats.messages_dropped++;
    return;
  }
  std::string& out = client_->out();
  const size_t before = out.size();
  codec::encode_publish(out, topic, payload, 0, retain, false, 0);
  stats.messages_sent++;
  stats.bytes_sent += out.size() - before;
}

void Session::deliver(const MessagePtr& msg, uint8_t qos, bool retain, const SessionLimits& limits,
                      size_t max_backlog, DeliveryStats& stats) {
  if (qos == 0) {
    deliver_qos0(msg->topic(), msg->payload(), retain, max_backlog, stats);
    return;
  }
  // In order: straight into the window only if nothing is queued ahead of it.
  if (client_ != nullptr && queued_count() == 0 && inflight_.size() < limits.max_inflight) {
    inflight_.push_back({msg, next_packet_id(), qos, retain,
                         qos == 1 ? OutState::kAwaitPuback : OutState::kAwaitPubrec});
    send_publish(inflight_.back(), false, stats);
    return;
  }
  if (queued_count() >= limits.max_queued) {
    stats.messages_dropped++;
    return;
  }
  if (queue_head_ > 0 && queue_head_ == queue_.size()) {
    queue_.clear();
    queue_head_ = 0;
  }
  queue_.push_back({msg, qos, retain});
}

Session::Outgoing* Session::find_inflight(uint16_t packet_id, OutState state) {
  for (auto& o : inflight_)
    if (o.packet_id == packet_id && o.state == state) return &o;
  return nullptr;
}

void Session::erase_inflight(Outgoing* o) { inflight_.erase(inflight_.begin() + (o - inflight_.data())); }

void Session::fill_window(DeliveryStats& stats) {
  if (client_ == nullptr || limits_ == nullptr) return;
  while (queue_head_ < queue_.size() && inflight_.size() < limits_->max_inflight) {
    Queued& q = queue_[queue_head_++];
    inflight_.push_back({std::move(q.msg), next_packet_id(), q.qos, q.retain,
                         q.qos == 1 ? OutState::kAwaitPuback : OutState::kAwaitPubrec});
    send_publish(inflight_.back(), false, stats);
  }
  if (queue_head_ == queue_.size()) {
    queue_.clear();
    queue_head_ = 0;
    if (queue_.capacity() > 64) queue_.shrink_to_fit();
  }
}

bool Session::on_puback(uint16_t packet_id, DeliveryStats& stats) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPuback);
  if (o == nullptr) return false;
  erase_inflight(o);
  fill_window(stats);
  return true;
}

bool Session::on_pubrec(uint16_t packet_id) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPubrec);
  if (o == nullptr) {
    // A PUBREC resent after we already moved on still wants its PUBREL.
    if (find_inflight(packet_id, OutState::kAwaitPubcomp) == nullptr) return false;
  } else {
    o->state = OutState::kAwaitPubcomp;
    o->msg = MessagePtr();  // the payload is no longer needed
  }
  if (client_ != nullptr) codec::encode_ack(client_->out(), codec::PacketType::kPubrel, packet_id);
  return true;
}

bool Session::on_pubcomp(uint16_t packet_id, DeliveryStats& stats) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPubcomp);
  if (o == nullptr) return false;
  erase_inflight(o);
  fill_window(stats);
  return true;
}

void Session::attach(Client* client, const SessionLimits& limits, DeliveryStats& stats) {
  client_ = client;
  limits_ = &limits;
  for (const Outgoing& o : inflight_) {
    if (o.state == OutState::kAwaitPubcomp) {
      codec::encode_ack(client_->out(), codec::PacketType::kPubrel, o.packet_id);
    } else {
      send_publish(o, true, stats);
    }
  }
  fill_window(stats);
}

}  // namespace mqgate
