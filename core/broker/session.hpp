// The session knows MQTT state: a client's subscriptions, the QoS 1/2 messages in
// flight in both directions, and the messages queued for it. It outlives the network
// connection when the client asked for a persistent session (clean session 0).
//
// Outgoing flow per message: queued -> in flight (PUBLISH sent) -> acknowledged.
// The in-flight window bounds how many QoS 1/2 messages await an ack; what does not
// fit is queued, in order, up to a bound; past the bound the newest is dropped (and
// counted), as Mosquitto does.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/router.hpp"
#include "broker/session_certificate.hpp"
#include "mqtt/message.hpp"
#include "mqtt/topic.hpp"

namespace mqgate {

class Client;
class Session;

// What a persistent session tells about every change of its durable state (queued and
// in-flight messages, incoming QoS 2 ids); persistence.cpp turns that into store
// mutations. Clean sessions never call it.
class SessionJournal {
 public:
  // Same values as store::OutgoingRecord::State.
  enum class OutState : uint8_t {
    kQueued = 0,
    kAwaitPuback = 1,
    kAwaitPubrec = 2,
    kAwaitPubcomp = 3
  };
  virtual ~SessionJournal() = default;
  // A new entry (`msg` gains a durable reference) or a changed one (same seq).
  // `msg` is null once PUBREC arrived.
  virtual void put_outgoing(const Session& s, uint32_t seq, const Message* msg, uint8_t qos,
                            bool retain, uint16_t packet_id, OutState state, bool new_entry) = 0;
  virtual void remove_outgoing(const Session& s, uint32_t seq) = 0;
  // An entry no longer needs `msg` (PUBREC, or the entry's removal).
  virtual void release_message(const Message& msg) = 0;
  virtual void put_incoming(const Session& s, uint16_t packet_id) = 0;
  virtual void remove_incoming(const Session& s, uint16_t packet_id) = 0;
};

struct SessionLimits {
  uint32_t max_inflight = 20;
  uint32_t max_queued = 1000;
  SessionJournal* journal = nullptr;  // persistence on: where persistent sessions report
  uint64_t now_ms = 0;                // loop time (MQTT 5 Message Expiry)
  uint64_t max_queued_bytes = 64ull << 20;  // of queued messages (Session::queued_bytes)
};

// Counters a session reports to the broker's statistics.
struct DeliveryStats {
  uint64_t messages_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t messages_dropped = 0;      // all of the reasons below
  uint64_t dropped_qos0_offline = 0;  // QoS 0 for a session without a client
  uint64_t dropped_qos0_backlog = 0;  // QoS 0 to a client over max_outgoing_bytes
  uint64_t dropped_queue_full = 0;    // QoS 1/2 beyond max_queued_messages
  uint64_t dropped_too_large = 0;     // over a 5.0 client's Maximum Packet Size
  uint64_t dropped_expired = 0;       // 5.0 Message Expiry passed before delivery
  // QoS 1/2 messages of every session, now: sent and unacknowledged, and waiting
  // behind them. Kept up to date as they move (Broker::destroy_session takes a
  // removed session's share out), so reading them costs nothing.
  uint64_t inflight_now = 0;
  uint64_t queued_now = 0;
  // Drops for want of room (offline, backlog, queue full), not those the protocol asks
  // for (too large for the client, expired): only these make a drop episode.
  uint64_t congestion_drops() const {
    return messages_dropped - dropped_too_large - dropped_expired;
  }
};

class Session : public RouteTarget {
 public:
  // A subscription: granted QoS and the MQTT 5 options (3.8.3.1). 8 bytes, as the
  // padded QoS byte alone was.
  struct Subscription {
    uint8_t qos = 0;
    uint8_t flags = 0;  // kNoLocal | kRetainAsPublished
    uint8_t check = 0;  // how the plugins check its deliveries: a DeliveryCheck
    uint32_t id = 0;    // Subscription Identifier; 0: none
  };
  static constexpr uint8_t kNoLocal = 1;
  static constexpr uint8_t kRetainAsPublished = 2;
  // filter -> subscription. Hashed: one SUBSCRIBE may carry tens of thousands of filters.
  using Subscriptions =
      std::unordered_map<std::string, Subscription, detail::StringHash, std::equal_to<>>;

  Session(std::string client_id, bool clean, std::shared_ptr<const std::string> owner = nullptr)
      : client_id_(std::move(client_id)), owner_(std::move(owner)), clean_(clean) {}

  const std::string& client_id() const { return client_id_; }
  // The identity that created the session (AuthResult::identity): only the same
  // identity may take it over or resume it.
  const std::string& owner() const;
  void set_owner(std::shared_ptr<const std::string> owner) { owner_ = std::move(owner); }
  // A persistent session's client certificate, as its client last connected (null: none).
  const std::shared_ptr<const SessionCertificate>& certificate() const { return certificate_; }
  void set_certificate(std::shared_ptr<const SessionCertificate> c) { certificate_ = std::move(c); }
  bool clean() const { return clean_; }
  void set_clean(bool clean) { clean_ = clean; }
  // Destroyed, but still referenced by a fan-out in progress: deliver nothing to it.
  bool removed() const { return removed_; }
  void mark_removed() { removed_ = true; }
  Client* client() const { return client_; }

  // --- subscriptions (the router holds the index; this is the session's own list) ----
  // Returns true if the filter is new. `flags`, `id`: MQTT 5 options (replaced too).
  // `check`: how the plugins check its deliveries (a DeliveryCheck).
  bool add_subscription(std::string_view filter, uint8_t qos, uint8_t flags = 0, uint32_t id = 0,
                        uint8_t check = 0);
  bool remove_subscription(std::string_view filter);
  bool has_subscription(std::string_view filter) const {
    return subscriptions_ && subscriptions_->map.find(filter) != subscriptions_->map.end();
  }
  size_t subscription_count() const { return subscriptions_ ? subscriptions_->map.size() : 0; }
  // Calls fn(filter, qos) for every subscription.
  template <typename Fn>
  void for_each_subscription(Fn&& fn) const {
    if (subscriptions_)
      for (const auto& [filter, sub] : subscriptions_->map)
        fn(filter, sub.qos);
  }

  // Some subscription has MQTT 5 options or an identifier: deliveries look them up.
  bool has_options() const { return has_options_; }
  // What the options of the subscriptions matching `topic` say about one delivery:
  // skip it (every match is No Local and the message is the session's own), keep its
  // RETAIN flag (Retain As Published), the Subscription Identifiers to send. Walks the
  // session's own filters: only for sessions with options.
  struct Delivery {
    bool skip = false;
    bool retain_as_published = false;
    std::vector<uint32_t> ids;
    uint8_t qos = 0;  // the highest granted QoS of the matches that apply
  };
  Delivery match_options(std::string_view topic, bool own) const;
  // The Subscription Identifier of `filter` (0: none).
  uint32_t subscription_id(std::string_view filter) const;
  // The subscription to `filter` (exactly), or null.
  const Subscription* find_subscription(std::string_view filter) const {
    if (!subscriptions_) return nullptr;
    auto it = subscriptions_->map.find(filter);
    return it == subscriptions_->map.end() ? nullptr : &it->second;
  }

  // --- checking deliveries (the plugins' RECEIVE question, asked by the broker) -------
  // The subscriptions were all decided under the plugins' rules of `epoch` (the broker
  // counts reloads). A session whose subscriptions were decided under older rules (or,
  // restored from the store, never) has every delivery checked until they are again.
  bool decided_at(uint16_t epoch) const { return !subscriptions_ || decided_epoch_ == epoch; }
  void mark_decided(uint16_t epoch) { decided_epoch_ = epoch; }
  // Some delivery needs a RECEIVE answer first: a subscription asks for checks, or the
  // subscriptions are not decided under the rules of `epoch`. (Read per delivery: only
  // the session's own bytes.)
  bool checks_deliveries(uint16_t epoch) const {
    return has_checks_ || (subscriptions_ && decided_epoch_ != epoch);
  }
  void set_delivery_check(std::string_view filter, uint8_t check);
  // A RECEIVE answer remembered for subscription `sub` and `topic` under the rules of
  // `epoch` (kCheckPerTopic subscriptions), or none. A few per session, short topics only:
  // the memory stays small whatever the topics.
  std::optional<bool> remembered(const Subscription* sub, std::string_view topic,
                                 uint16_t epoch) const;
  void remember(const Subscription* sub, std::string_view topic, uint16_t epoch, bool allowed);
  // Drops every remembered answer (the broker's epochs come round).
  void forget_answers();
  // Like match_options, for a session that checks deliveries: each matching subscription
  // that asks for checks (`all`: every matching one) counts only if
  // allow(filter, subscription) says so. Walks the session's own filters.
  template <typename Allow>
  Delivery match_checked(std::string_view topic, bool own, bool all, Allow&& allow) const {
    Delivery d;
    if (!subscriptions_) return d;
    bool any = false;
    for (const auto& [filter, sub] : subscriptions_->map) {
      if (own && (sub.flags & kNoLocal)) continue;  // [MQTT-3.8.3-3]
      if (!topic_matches(filter, topic)) continue;
      if ((all || sub.check != 0) && !allow(filter, sub)) continue;
      any = true;
      d.qos = std::max(d.qos, sub.qos);
      if (sub.flags & kRetainAsPublished) d.retain_as_published = true;
      if (sub.id != 0) d.ids.push_back(sub.id);
    }
    d.skip = !any;
    return d;
  }
  // Queued messages routed while the client was offline through subscriptions whose
  // deliveries are checked: each is kept if keep(message) says so, else dropped (and
  // removed from the store). Returns how many were dropped.
  template <typename Keep>
  size_t check_queued(Keep&& keep, const SessionLimits& limits, DeliveryStats& stats) {
    if (!flow_ || flow_->unchecked == 0) return 0;
    Flow& f = *flow_;
    size_t kept = f.queue_head, dropped = 0;
    for (size_t i = f.queue_head; i < f.queue.size(); ++i) {
      Queued& q = f.queue[i];
      if (q.unchecked) {
        q.unchecked = 0;
        if (!keep(*q.msg)) {
          drop_queued(q, limits, stats);
          ++dropped;
          continue;
        }
      }
      if (kept != i) f.queue[kept] = std::move(q);
      ++kept;
    }
    f.queue.erase(f.queue.begin() + static_cast<ptrdiff_t>(kept), f.queue.end());
    f.unchecked = 0;
    return dropped;
  }
  // Every queued message waits for check_queued() (the session has another owner now).
  void uncheck_queued() {
    if (!flow_) return;
    Flow& f = *flow_;
    for (size_t i = f.queue_head; i < f.queue.size(); ++i)
      if (!f.queue[i].unchecked) {
        f.queue[i].unchecked = 1;
        f.unchecked++;
      }
  }
  // --- outgoing ----------------------------------------------------------------------
  // Delivers `msg` at `qos` (already downgraded to the subscription's QoS). `retain` is
  // the RETAIN flag to send: 1 only for retained messages sent because of a new
  // subscription [MQTT-3.3.1-8, -9]. QoS 0 goes out at once if online (dropped when
  // offline or when the client's output backlog is over `max_backlog`).
  // QoS 1/2 messages are queued while offline or when the window is full.
  // `share`: the id of the shared subscription group it came through (0: none); such
  // QoS 1/2 entries can be taken back (take_shared) when the client goes away.
  // `unchecked`: routed through a subscription whose deliveries are checked while the
  // session has no client; queued so, it waits for check_queued().
  void deliver(const MessagePtr& msg, uint8_t qos, bool retain, const SessionLimits& limits,
               size_t max_backlog, DeliveryStats& stats, uint16_t share = 0,
               bool unchecked = false);
  // QoS 0 fast path: sends an already-validated publish without creating a Message.
  // `props`: MQTT 5 properties for a 5.0 client (Message::props()).
  // `expiry`: 5.0 Message Expiry Interval left.
  void deliver_qos0(std::string_view topic, std::string_view payload, bool retain,
                    size_t max_backlog, DeliveryStats& stats, std::string_view props = {},
                    std::optional<uint32_t> expiry = std::nullopt);
  // PUBACK / PUBREC / PUBCOMP from the client. Return false for an unknown identifier.
  // After on_pubrec() returns true the caller sends PUBREL.
  bool on_puback(uint16_t packet_id, const SessionLimits& limits, DeliveryStats& stats);
  bool on_pubrec(uint16_t packet_id, const SessionLimits& limits);
  bool on_pubcomp(uint16_t packet_id, const SessionLimits& limits, DeliveryStats& stats);

  // --- shared subscriptions: messages that move to another member ------------------
  // A QoS 1/2 message given to this session through a shared subscription group.
  struct Taken {
    MessagePtr msg;
    uint32_t seq;
    uint8_t qos;
    bool retain;
    uint16_t share;  // the group's id
  };
  // Takes out the queued entries (never sent), and the QoS 1 ones sent and not yet
  // acknowledged, that came through a group for which `wanted(share)` holds. A QoS 2
  // message once sent stays: its delivery is completed with this client or not at all
  // [MQTT-4.8.2-4, -5]. The store still holds them until release_taken(): the caller
  // delivers them elsewhere first, so a crash in between never loses one.
  template <typename Wanted>
  std::vector<Taken> take_shared(Wanted&& wanted, DeliveryStats& stats) {
    std::vector<Taken> taken;
    if (!flow_) return taken;
    Flow& f = *flow_;
    auto take = [&](uint16_t share) { return share != 0 && wanted(share); };
    for (size_t i = 0; i < f.inflight.size();) {
      Outgoing& o = f.inflight[i];
      if (o.state == OutState::kAwaitPuback && take(o.share)) {
        taken.push_back({std::move(o.msg), o.seq, o.qos, o.retain, o.share});
        if (o.unsent) f.unsent--;
        f.inflight.erase(f.inflight.begin() + static_cast<ptrdiff_t>(i));
        stats.inflight_now--;
      } else {
        ++i;
      }
    }
    // The queue is compacted in place: what stays keeps its order.
    size_t kept = f.queue_head;
    for (size_t i = f.queue_head; i < f.queue.size(); ++i) {
      Queued& q = f.queue[i];
      if (take(q.share)) {
        f.queued_bytes -= queued_size(*q.msg);
        taken.push_back({std::move(q.msg), q.seq, q.qos, q.retain, q.share});
        stats.queued_now--;
      } else {
        if (kept != i) f.queue[kept] = std::move(q);
        ++kept;
      }
    }
    f.queue.erase(f.queue.begin() + static_cast<ptrdiff_t>(kept), f.queue.end());
    return taken;
  }
  // Removes what take_shared() took from the store (persistent sessions).
  void release_taken(const std::vector<Taken>& taken, const SessionLimits& limits);
  // Entries of group `share` are no longer tagged with it (the session left the group,
  // whose id may be reused).
  void untag_shared(uint16_t share);
  // Tags the restored entries whose message `group_of(msg)` says came through a group
  // (its id; 0: none): after a restart, they can move again.
  template <typename GroupOf>
  void retag_shared(GroupOf&& group_of) {
    if (!flow_) return;
    for (auto& o : flow_->inflight)
      if (o.msg) o.share = group_of(*o.msg);
    for (size_t i = flow_->queue_head; i < flow_->queue.size(); ++i)
      flow_->queue[i].share = group_of(*flow_->queue[i].msg);
  }

  // --- incoming QoS 2 -------------------------------------------------------------------
  // Records a QoS 2 PUBLISH; false if that identifier is already awaiting PUBREL
  // (a resend: acknowledge again, do not deliver again).
  bool begin_incoming_qos2(uint16_t packet_id, const SessionLimits& limits);
  void end_incoming_qos2(uint16_t packet_id, const SessionLimits& limits);

  // --- persistence: restoring the state loaded at start-up, and letting it go -----
  void restore_outgoing(MessagePtr msg, uint32_t seq, uint8_t qos, bool retain, uint16_t packet_id,
                        SessionJournal::OutState state);
  void restore_incoming_qos2(uint16_t packet_id) {
    begin_incoming_qos2(packet_id, SessionLimits{});
  }
  // Calls fn(msg) for every message body a queued or in-flight entry holds.
  template <typename Fn>
  void for_each_held_message(Fn&& fn) const {
    if (!flow_) return;
    for (const auto& o : flow_->inflight)
      if (o.msg) fn(*o.msg);
    for (size_t i = flow_->queue_head; i < flow_->queue.size(); ++i)
      fn(*flow_->queue[i].msg);
  }

  // --- connection -------------------------------------------------------------------
  // Attaches a connected client: resends everything unacknowledged (PUBLISH with DUP,
  // PUBREL) with the original identifiers [MQTT-4.4.0-1], PUBLISHes only as many as its
  // window allows (the rest as acknowledgements come), then fills the window.
  void attach(Client* client, const SessionLimits& limits, DeliveryStats& stats);
  void detach(uint64_t now_ms) {
    client_ = nullptr;
    offline_since_ms_ = now_ms;
  }
  // Loop time the client went away (meaningful while client() is null).
  uint64_t offline_since_ms() const { return offline_since_ms_; }
  // Loop time the current client connected (meaningful while client() is set; the console).
  uint64_t online_since_ms() const { return online_since_ms_; }
  void set_online_since(uint64_t now_ms) { online_since_ms_ = now_ms; }
  // Loop time an offline session expires (meaningful while in OfflineSessions).
  uint64_t expires_at_ms() const { return expires_at_ms_; }

  // --- MQTT 5 session state ---------------------------------------------------------
  // The protocol level of the client that last had it (4: 3.1.1, 5: MQTT 5).
  uint8_t protocol_level() const { return protocol_level_; }
  void set_protocol_level(uint8_t level) { protocol_level_ = level; }
  // A 5.0 session's Session Expiry Interval (s), as applied (capped by the broker);
  // kNeverExpires: kept forever. 3.1.1 sessions use the broker's session_expiry instead.
  static constexpr uint32_t kNeverExpires = 0xFFFFFFFFu;
  uint32_t expiry_interval() const { return expiry_interval_; }
  void set_expiry_interval(uint32_t seconds) { expiry_interval_ = seconds; }

  size_t inflight_count() const { return flow_ ? flow_->inflight.size() : 0; }
  size_t incoming_qos2_count() const { return flow_ ? flow_->incoming_qos2.size() : 0; }
  size_t queued_count() const { return flow_ ? flow_->queue.size() - flow_->queue_head : 0; }
  // Bytes of the queued messages' topics, payloads and properties.
  uint64_t queued_bytes() const { return flow_ ? flow_->queued_bytes : 0; }
  static uint64_t queued_size(const Message& m) {
    return m.topic().size() + m.payload().size() + m.props().size();
  }
  // Slots the queue holds, live or popped (memory; for tests).
  size_t queue_capacity() const { return flow_ ? flow_->queue.capacity() : 0; }

 private:
  enum class OutState : uint8_t { kAwaitPuback, kAwaitPubrec, kAwaitPubcomp };
  struct Outgoing {
    MessagePtr msg;  // released once PUBREC arrives (only the id is needed after)
    uint32_t seq;    // order within the session (persistence's key)
    uint16_t packet_id;
    uint8_t qos;
    bool retain;
    OutState state;
    uint16_t share;  // shared subscription group (0: none); in the padding
    // Sent on an earlier connection and not yet again on this one: a resumed client may
    // have a smaller Receive Maximum than it had (see resend_inflight).
    bool unsent = false;
  };
  struct Queued {
    MessagePtr msg;
    uint32_t seq;
    uint8_t qos : 2;
    uint8_t unchecked : 1;  // waits for check_queued() before it may be sent
    bool retain;
    uint16_t share;  // shared subscription group (0: none); in the padding
  };
  static_assert(sizeof(Outgoing) == 24 && sizeof(Queued) == 16,
                "the group tag costs no memory per message");

  // QoS 1/2 state, allocated on first use: most sessions of an idle broker never
  // need it, and an idle connection's memory is a budget.
  struct Flow {
    std::vector<Outgoing> inflight;  // in send order
    // FIFO of queued messages: queue[queue_head..] are live (amortised O(1) pops).
    std::vector<Queued> queue;
    size_t queue_head = 0;
    std::vector<uint16_t> incoming_qos2;  // ids of QoS 2 PUBLISHes awaiting PUBREL
    uint32_t last_seq = 0;  // entries' order; restarts with an empty flow (store empty too)
    uint32_t unsent = 0;    // inflight entries marked `unsent`
    uint64_t queued_bytes = 0;  // queue[queue_head..]'s messages (queued_size)
    uint32_t unchecked = 0;     // queued entries marked `unchecked` (at most)
  };
  // The subscriptions, and what checking their deliveries needs.
  struct ReceiveMemo;
  struct SubscriptionSet {
    SubscriptionSet();
    ~SubscriptionSet();
    Subscriptions map;
    uint32_t checked = 0;               // subscriptions with check != kCheckNone
    std::unique_ptr<ReceiveMemo> memo;  // see remembered()
  };
  void drop_queued(Queued& q, const SessionLimits& limits, DeliveryStats& stats);
  SessionJournal* journal(const SessionLimits& limits) const {
    return clean_ ? nullptr : limits.journal;
  }
  void journal_put(SessionJournal* j, const Outgoing& o, bool new_entry);
  Flow& flow() {
    if (!flow_) flow_ = std::make_unique<Flow>();
    return *flow_;
  }

  uint16_t next_packet_id();
  void send_publish(const Outgoing& o, bool dup, DeliveryStats& stats, uint64_t now_ms);
  void fill_window(const SessionLimits& limits, DeliveryStats& stats);
  // Resends `unsent` in-flight PUBLISHes, in order, while the client's window has room;
  // with `pubrels`, also every PUBREL owed, in its place.
  void resend_inflight(const SessionLimits& limits, DeliveryStats& stats, bool pubrels);
  // Over the (online) client's Maximum Packet Size: counted as dropped.
  bool too_large(const Message& msg, uint8_t qos, DeliveryStats& stats) const;
  static void compact_queue(Flow& f);
  Outgoing* find_inflight(uint16_t packet_id, OutState state);
  void erase_inflight(Outgoing* o, const SessionLimits& limits);

  std::string client_id_;
  std::shared_ptr<const std::string> owner_;
  std::shared_ptr<const SessionCertificate> certificate_;
  Client* client_ = nullptr;
  uint64_t offline_since_ms_ = 0;
  bool clean_;
  bool removed_ = false;
  bool has_options_ = false;
  uint8_t protocol_level_ : 4 = 4;
  uint8_t has_checks_ : 1 = 0;  // subscriptions_->checked > 0
  uint16_t last_packet_id_ = 0;
  uint16_t decided_epoch_ = 0;  // see decided_at(); 0: never (restored from the store)
  std::unique_ptr<SubscriptionSet> subscriptions_;  // allocated on the first subscription
  std::unique_ptr<Flow> flow_;

  // OfflineSessions' bookkeeping (as many bytes as the FIFO's links were).
  friend class OfflineSessions;
  static constexpr uint32_t kNotListed = 0xFFFFFFFFu;
  uint64_t expires_at_ms_ = 0;
  uint64_t online_since_ms_ = 0;
  uint32_t offline_index_ = kNotListed;  // position in OfflineSessions' heap
  uint32_t expiry_interval_ = 0;
};

// Persistent sessions without a client that expire, ordered by when they do (each
// session has its own Session Expiry Interval in MQTT 5): a binary min-heap indexed
// from the sessions, so adding, removing and taking the first cost O(log n) and no
// allocation beyond the heap's vector.
class OfflineSessions {
 public:
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  // The session that expires first.
  Session* front() const { return heap_.front(); }
  // Lists `s` (again) to expire at loop time `expires_at_ms`.
  void schedule(Session* s, uint64_t expires_at_ms);
  void remove(Session* s);  // a no-op for a session not listed

 private:
  void place(uint32_t i, Session* s) {
    heap_[i] = s;
    s->offline_index_ = i;
  }
  void sift_up(uint32_t i);
  void sift_down(uint32_t i);
  std::vector<Session*> heap_;
};

}  // namespace mqgate
