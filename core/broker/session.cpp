#include "broker/session.hpp"

#include <algorithm>

#include "client/client.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/topic.hpp"

namespace mqgate {

const std::string& Session::owner() const {
  static const std::string kNone;
  return owner_ ? *owner_ : kNone;
}

struct Session::ReceiveMemo {
  static constexpr size_t kEntries = 8;
  static constexpr size_t kMaxTopic = 256;  // longer topics are asked about every time
  struct Entry {
    const Subscription* sub = nullptr;
    uint16_t epoch = 0;
    bool allowed = false;
    std::string topic;
  };
  std::array<Entry, kEntries> entries;
  static size_t slot(const Subscription* sub, std::string_view topic) {
    return (std::hash<std::string_view>{}(topic) ^ reinterpret_cast<uintptr_t>(sub)) % kEntries;
  }
};

Session::SubscriptionSet::SubscriptionSet() = default;
Session::SubscriptionSet::~SubscriptionSet() = default;

bool Session::add_subscription(std::string_view filter, uint8_t qos, uint8_t flags, uint32_t id,
                               uint8_t check) {
  if (!subscriptions_) subscriptions_ = std::make_unique<SubscriptionSet>();
  SubscriptionSet& set = *subscriptions_;
  if (flags != 0 || id != 0) has_options_ = true;
  set.memo.reset();  // answers about the old subscription do not hold for the new one
  if (check != 0) set.checked++;
  auto it = set.map.find(filter);
  const bool added = it == set.map.end();
  if (added) {
    set.map.emplace(std::string(filter), Subscription{qos, flags, check, id});
  } else {
    if (it->second.check != 0) set.checked--;
    it->second = {qos, flags, check, id};
  }
  has_checks_ = set.checked > 0;
  return added;
}

void Session::set_delivery_check(std::string_view filter, uint8_t check) {
  if (!subscriptions_) return;
  auto it = subscriptions_->map.find(filter);
  if (it == subscriptions_->map.end() || it->second.check == check) return;
  if (it->second.check != 0) subscriptions_->checked--;
  if (check != 0) subscriptions_->checked++;
  it->second.check = check;
  has_checks_ = subscriptions_->checked > 0;
}

std::optional<bool> Session::remembered(const Subscription* sub, std::string_view topic,
                                        uint16_t epoch) const {
  if (!subscriptions_ || !subscriptions_->memo) return std::nullopt;
  const ReceiveMemo::Entry& e = subscriptions_->memo->entries[ReceiveMemo::slot(sub, topic)];
  if (e.sub != sub || e.epoch != epoch || e.topic != topic) return std::nullopt;
  return e.allowed;
}

void Session::remember(const Subscription* sub, std::string_view topic, uint16_t epoch,
                       bool allowed) {
  if (!subscriptions_ || topic.size() > ReceiveMemo::kMaxTopic) return;
  if (!subscriptions_->memo) subscriptions_->memo = std::make_unique<ReceiveMemo>();
  ReceiveMemo::Entry& e = subscriptions_->memo->entries[ReceiveMemo::slot(sub, topic)];
  e.sub = sub;
  e.epoch = epoch;
  e.allowed = allowed;
  e.topic.assign(topic);
}

void Session::forget_answers() {
  if (subscriptions_) subscriptions_->memo.reset();
}

Session::Delivery Session::match_options(std::string_view topic, bool own) const {
  return match_checked(topic, own, false,
                       [](const std::string&, const Subscription&) { return true; });
}

uint32_t Session::subscription_id(std::string_view filter) const {
  const Subscription* sub = find_subscription(filter);
  return sub ? sub->id : 0;
}

bool Session::remove_subscription(std::string_view filter) {
  if (!subscriptions_) return false;
  SubscriptionSet& set = *subscriptions_;
  auto it = set.map.find(filter);
  if (it == set.map.end()) return false;
  if (it->second.check != 0) set.checked--;
  set.memo.reset();  // its address may be a new subscription's next
  set.map.erase(it);
  has_checks_ = set.checked > 0;
  if (set.map.empty()) subscriptions_.reset();
  return true;
}

bool Session::begin_incoming_qos2(uint16_t packet_id, const SessionLimits& limits) {
  auto& ids = flow().incoming_qos2;
  auto it = std::lower_bound(ids.begin(), ids.end(), packet_id);
  if (it != ids.end() && *it == packet_id) return false;
  ids.insert(it, packet_id);
  if (SessionJournal* j = journal(limits)) j->put_incoming(*this, packet_id);
  return true;
}

void Session::end_incoming_qos2(uint16_t packet_id, const SessionLimits& limits) {
  if (!flow_) return;
  auto& ids = flow_->incoming_qos2;
  auto it = std::lower_bound(ids.begin(), ids.end(), packet_id);
  if (it == ids.end() || *it != packet_id) return;
  ids.erase(it);
  if (SessionJournal* j = journal(limits)) j->remove_incoming(*this, packet_id);
}

void Session::journal_put(SessionJournal* j, const Outgoing& o, bool new_entry) {
  j->put_outgoing(*this, o.seq, o.msg.get(), o.qos, o.retain, o.packet_id,
                  static_cast<SessionJournal::OutState>(static_cast<uint8_t>(o.state) + 1),
                  new_entry);
}

void Session::restore_outgoing(MessagePtr msg, uint32_t seq, uint8_t qos, bool retain,
                               uint16_t packet_id, SessionJournal::OutState state) {
  Flow& f = flow();
  f.last_seq = std::max(f.last_seq, seq);
  if (state == SessionJournal::OutState::kQueued) {
    f.queued_bytes += queued_size(*msg);
    // Restored: checked again before it is sent (the rules may have changed meanwhile).
    f.queue.push_back({std::move(msg), seq, qos, 1, retain, 0});
    f.unchecked++;
    return;
  }
  f.inflight.push_back({std::move(msg), seq, packet_id, qos, retain,
                        static_cast<OutState>(static_cast<uint8_t>(state) - 1), 0});
  // New identifiers continue after the restored ones (none is reused while in flight).
  last_packet_id_ = std::max(last_packet_id_, packet_id);
}

uint16_t Session::next_packet_id() {
  // Identifiers in flight are at most max_inflight (<= 65535), so a free one exists.
  const auto& inflight = flow().inflight;
  for (;;) {
    if (++last_packet_id_ == 0) last_packet_id_ = 1;
    const uint16_t id = last_packet_id_;
    if (std::none_of(inflight.begin(), inflight.end(),
                     [id](const Outgoing& o) { return o.packet_id == id; }))
      return id;
  }
}

namespace {
// The Message Expiry Interval left (s, rounded up) of a 5.0 message; false if it passed.
bool expiry_left(const Message& m, uint64_t now_ms, std::optional<uint32_t>& left) {
  if (!m.expires()) return true;
  const uint64_t at = m.expires_at_ms();
  // An interval of 0 still reaches the subscribers it is delivered to at once (onward
  // delivery has started [MQTT-3.3.2-5]), not those it has to wait for.
  if (at < now_ms) return false;
  left = static_cast<uint32_t>(std::min<uint64_t>((at - now_ms + 999) / 1000, UINT32_MAX));
  return true;
}
}  // namespace

void Session::send_publish(const Outgoing& o, bool dup, DeliveryStats& stats, uint64_t now_ms) {
  std::string& out = client_->out();
  const size_t before = out.size();
  std::optional<uint32_t> left;
  // A resend of a message that expired in flight still completes (with 1 s left).
  if (!expiry_left(*o.msg, now_ms, left)) left = 1;
  mqtt5::encode_publish(*client_, out, o.msg->topic(), o.msg->payload(), o.msg->props(), o.qos,
                        o.retain, dup, o.packet_id, left);
  stats.messages_sent++;
  stats.bytes_sent += out.size() - before;
}

void Session::deliver_qos0(std::string_view topic, std::string_view payload, bool retain,
                           size_t max_backlog, DeliveryStats& stats, std::string_view props,
                           std::optional<uint32_t> expiry) {
  if (client_ == nullptr || client_->pending_output() > max_backlog) {
    stats.messages_dropped++;
    (client_ == nullptr ? stats.dropped_qos0_offline : stats.dropped_qos0_backlog)++;
    return;
  }
  if (!mqtt5::fits(*client_, topic, payload.size(), 0, props, expiry)) {
    stats.messages_dropped++;
    stats.dropped_too_large++;
    return;
  }
  std::string& out = client_->out();
  const size_t before = out.size();
  mqtt5::encode_publish(*client_, out, topic, payload, props, 0, retain, false, 0, expiry);
  stats.messages_sent++;
  stats.bytes_sent += out.size() - before;
}

void Session::deliver(const MessagePtr& msg, uint8_t qos, bool retain, const SessionLimits& limits,
                      size_t max_backlog, DeliveryStats& stats, uint16_t share, bool unchecked) {
  std::optional<uint32_t> left;
  if (!expiry_left(*msg, limits.now_ms, left)) {
    stats.messages_dropped++;
    stats.dropped_expired++;
    return;
  }
  if (qos == 0) {
    deliver_qos0(msg->topic(), msg->payload(), retain, max_backlog, stats, msg->props(), left);
    return;
  }
  if (client_ != nullptr && too_large(*msg, qos, stats)) return;
  Flow& f = flow();
  SessionJournal* j = journal(limits);
  // In order: straight into the window only if nothing is queued ahead of it.
  if (client_ != nullptr && queued_count() == 0 &&
      f.inflight.size() < mqtt5::send_window(client_, limits.max_inflight)) {
    const uint16_t id = next_packet_id();
    f.inflight.push_back({msg, ++f.last_seq, id, qos, retain,
                          qos == 1 ? OutState::kAwaitPuback : OutState::kAwaitPubrec, share});
    if (j) journal_put(j, f.inflight.back(), true);
    stats.inflight_now++;
    send_publish(f.inflight.back(), false, stats, limits.now_ms);
    return;
  }
  const uint64_t size = queued_size(*msg);
  if (queued_count() >= limits.max_queued || f.queued_bytes + size > limits.max_queued_bytes) {
    stats.messages_dropped++;
    stats.dropped_queue_full++;
    return;
  }
  compact_queue(f);
  f.queued_bytes += size;
  f.queue.push_back({msg, ++f.last_seq, qos, unchecked && client_ == nullptr, retain, share});
  if (f.queue.back().unchecked) f.unchecked++;
  if (j)
    j->put_outgoing(*this, f.last_seq, msg.get(), qos, retain, 0, SessionJournal::OutState::kQueued,
                    true);
  stats.queued_now++;
}

bool Session::too_large(const Message& msg, uint8_t qos, DeliveryStats& stats) const {
  // Over the client's Maximum Packet Size: the spec has it dropped for this client as if
  // delivered [MQTT-3.1.2-25].
  // (The expiry property is counted at its largest: 5 bytes.)
  if (mqtt5::fits(*client_, msg.topic(), msg.payload().size(), qos, msg.props(),
                  msg.expires() ? std::optional<uint32_t>(0) : std::nullopt))
    return false;
  stats.messages_dropped++;
  stats.dropped_too_large++;
  return true;
}

void Session::compact_queue(Flow& f) {
  // Popped entries sit before queue_head. Drop them once they are at least half the
  // vector: a client that acknowledges one message per message queued never empties
  // the queue, and without this the vector would grow forever (amortised O(1)).
  if (f.queue_head == 0) return;
  if (f.queue_head == f.queue.size()) {
    f.queue.clear();
  } else if (f.queue_head >= 32 && f.queue_head * 2 >= f.queue.size()) {
    f.queue.erase(f.queue.begin(), f.queue.begin() + static_cast<ptrdiff_t>(f.queue_head));
    if (f.queue.capacity() > 64 && f.queue.size() * 4 < f.queue.capacity()) f.queue.shrink_to_fit();
  } else {
    return;
  }
  f.queue_head = 0;
}

Session::Outgoing* Session::find_inflight(uint16_t packet_id, OutState state) {
  if (!flow_) return nullptr;
  for (auto& o : flow_->inflight)
    if (o.packet_id == packet_id && o.state == state) return &o;
  return nullptr;
}

void Session::erase_inflight(Outgoing* o, const SessionLimits& limits) {
  if (o->unsent) flow_->unsent--;
  if (SessionJournal* j = journal(limits)) {
    j->remove_outgoing(*this, o->seq);
    if (o->msg) j->release_message(*o->msg);
  }
  auto& inflight = flow_->inflight;
  inflight.erase(inflight.begin() + (o - inflight.data()));
}

void Session::resend_inflight(const SessionLimits& limits, DeliveryStats& stats, bool pubrels) {
  Flow& f = *flow_;
  const uint32_t window = mqtt5::send_window(client_, limits.max_inflight);
  uint32_t outstanding = static_cast<uint32_t>(f.inflight.size()) - f.unsent;
  for (size_t i = 0; i < f.inflight.size();) {
    Outgoing& o = f.inflight[i];
    if (pubrels && o.state == OutState::kAwaitPubcomp)
      codec::encode_ack(client_->out(), codec::PacketType::kPubrel, o.packet_id);
    if (!o.unsent || outstanding >= window) {
      if (!pubrels && (f.unsent == 0 || outstanding >= window)) break;
      i++;
      continue;
    }
    o.unsent = false;
    f.unsent--;
    // Too large for this connection's Maximum Packet Size: done with, as for a new
    // message [MQTT-3.1.2-25].
    if (too_large(*o.msg, o.qos, stats)) {
      erase_inflight(&o, limits);
      stats.inflight_now--;
      continue;
    }
    send_publish(o, true, stats, limits.now_ms);
    outstanding++;
    i++;
  }
}

void Session::fill_window(const SessionLimits& limits, DeliveryStats& stats) {
  if (client_ == nullptr || !flow_) return;
  Flow& f = *flow_;
  if (f.unsent > 0) resend_inflight(limits, stats, false);
  const uint32_t window = mqtt5::send_window(client_, limits.max_inflight);
  while (f.queue_head < f.queue.size() && f.inflight.size() < window) {
    Queued& q = f.queue[f.queue_head++];
    f.queued_bytes -= queued_size(*q.msg);
    std::optional<uint32_t> left;
    const bool expired = !expiry_left(*q.msg, limits.now_ms, left);
    if (expired) {
      stats.messages_dropped++;
      stats.dropped_expired++;
    }
    if (expired || too_large(*q.msg, q.qos, stats)) {
      if (SessionJournal* j = journal(limits)) {
        j->remove_outgoing(*this, q.seq);
        j->release_message(*q.msg);
      }
      q.msg = MessagePtr();
      stats.queued_now--;
      continue;
    }
    const uint16_t id = next_packet_id();
    f.inflight.push_back({std::move(q.msg), q.seq, id, q.qos, q.retain,
                          q.qos == 1 ? OutState::kAwaitPuback : OutState::kAwaitPubrec, q.share});
    if (SessionJournal* j = journal(limits)) journal_put(j, f.inflight.back(), false);
    stats.queued_now--;
    stats.inflight_now++;
    send_publish(f.inflight.back(), false, stats, limits.now_ms);
  }
  compact_queue(f);
  if (f.queue.empty() && f.queue.capacity() > 64) f.queue.shrink_to_fit();
  // A session with nothing in flight or queued gives its flow state back.
  if (f.inflight.empty() && f.queue.empty() && f.incoming_qos2.empty()) flow_.reset();
}

bool Session::on_puback(uint16_t packet_id, const SessionLimits& limits, DeliveryStats& stats) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPuback);
  if (o == nullptr) return false;
  erase_inflight(o, limits);
  stats.inflight_now--;
  fill_window(limits, stats);
  return true;
}

bool Session::on_pubrec(uint16_t packet_id, const SessionLimits& limits) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPubrec);
  if (o == nullptr) {
    // A PUBREC resent after we already moved on still wants its PUBREL.
    if (find_inflight(packet_id, OutState::kAwaitPubcomp) == nullptr) return false;
  } else {
    // (Also one not resent yet: the client had it from the connection before.)
    if (o->unsent) {
      o->unsent = false;
      flow_->unsent--;
    }
    o->state = OutState::kAwaitPubcomp;
    if (SessionJournal* j = journal(limits)) {
      const MessagePtr body = std::move(o->msg);
      journal_put(j, *o, false);
      j->release_message(*body);
    }
    o->msg = MessagePtr();  // the payload is no longer needed
  }
  return true;  // the broker answers PUBREL (once the new state is durable)
}

bool Session::on_pubcomp(uint16_t packet_id, const SessionLimits& limits, DeliveryStats& stats) {
  Outgoing* o = find_inflight(packet_id, OutState::kAwaitPubcomp);
  if (o == nullptr) return false;
  erase_inflight(o, limits);
  stats.inflight_now--;
  fill_window(limits, stats);
  return true;
}

void Session::drop_queued(Queued& q, const SessionLimits& limits, DeliveryStats& stats) {
  Flow& f = *flow_;
  f.queued_bytes -= queued_size(*q.msg);
  if (SessionJournal* j = journal(limits)) {
    j->remove_outgoing(*this, q.seq);
    j->release_message(*q.msg);
  }
  q.msg = MessagePtr();
  stats.queued_now--;
}

void Session::release_taken(const std::vector<Taken>& taken, const SessionLimits& limits) {
  SessionJournal* j = journal(limits);
  if (j == nullptr) return;
  for (const Taken& t : taken) {
    j->remove_outgoing(*this, t.seq);
    if (t.msg) j->release_message(*t.msg);
  }
}

void Session::untag_shared(uint16_t share) {
  if (!flow_) return;
  for (auto& o : flow_->inflight)
    if (o.share == share) o.share = 0;
  for (size_t i = flow_->queue_head; i < flow_->queue.size(); ++i)
    if (flow_->queue[i].share == share) flow_->queue[i].share = 0;
}

void Session::attach(Client* client, const SessionLimits& limits, DeliveryStats& stats) {
  client_ = client;
  if (!flow_ || client->close_requested()) return;  // (refused after all: nothing to send)
  // Unacknowledged PUBLISHes go again, in order, but no more than this connection's
  // window allows [MQTT-3.3.4-9]; the rest wait for its acknowledgements. PUBRELs all go,
  // in their places among them.
  Flow& f = *flow_;
  f.unsent = 0;
  for (Outgoing& o : f.inflight) {
    o.unsent = o.state != OutState::kAwaitPubcomp;
    if (o.unsent) f.unsent++;
  }
  resend_inflight(limits, stats, true);
  fill_window(limits, stats);
}

}  // namespace mqgate

namespace mqgate {

void OfflineSessions::schedule(Session* s, uint64_t expires_at_ms) {
  remove(s);
  s->expires_at_ms_ = expires_at_ms;
  heap_.push_back(s);
  s->offline_index_ = static_cast<uint32_t>(heap_.size() - 1);
  sift_up(s->offline_index_);
}

void OfflineSessions::remove(Session* s) {
  const uint32_t i = s->offline_index_;
  if (i == Session::kNotListed) return;
  s->offline_index_ = Session::kNotListed;
  Session* last = heap_.back();
  heap_.pop_back();
  if (last == s) return;
  place(i, last);
  sift_up(i);
  sift_down(last->offline_index_);
}

void OfflineSessions::sift_up(uint32_t i) {
  Session* s = heap_[i];
  while (i > 0) {
    const uint32_t parent = (i - 1) / 2;
    if (heap_[parent]->expires_at_ms_ <= s->expires_at_ms_) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, s);
}

void OfflineSessions::sift_down(uint32_t i) {
  Session* s = heap_[i];
  const auto n = static_cast<uint32_t>(heap_.size());
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1]->expires_at_ms_ < heap_[child]->expires_at_ms_) ++child;
    if (s->expires_at_ms_ <= heap_[child]->expires_at_ms_) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, s);
}

}  // namespace mqgate
