// The cluster as the server sees it: owns the NATS link, turns the broker's interest
// into NATS subscriptions (interest.hpp, subject.hpp), encodes outbound messages
// (envelope.hpp) and decodes, checks and de-duplicates inbound ones. Runs on the loop.
//
// De-duplication: a node subscribed to overlapping subjects ("a.*" and "a.b") gets one
// NATS message once per matching subscription; every copy comes off the socket next
// to the others in the publisher's order, and the single delivery thread keeps that
// order (link.hpp), so a copy is recognised by its sequence: not above the last one
// seen from its origin. The message then goes once through the local router, which
// gives each local session one copy at the best QoS of its filters, as on one node.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cluster/gossip.hpp"
#include "cluster/interest.hpp"
#include "cluster/jetstream.hpp"
#include "cluster/link.hpp"
#include "cluster/outbound.hpp"
#include "config/config.hpp"

namespace mqgate::cluster {

class Bridge final : public Outbound {
 public:
  struct Stats {
    uint64_t sent = 0;               // messages published to NATS (QoS 1/2: to JetStream)
    uint64_t received = 0;           // messages from NATS handed to the broker
    uint64_t dropped_down = 0;       // QoS 0 not sent: NATS unavailable
    uint64_t dropped_too_long = 0;   // topic too long for a NATS subject
    uint64_t dropped_malformed = 0;  // from NATS, not a message of ours
    uint64_t duplicates = 0;         // copies of one message through overlapping subjects
    uint64_t not_wanted = 0;         // not sent: no other node has a matching filter
  };

  Bridge(uv_loop_t* loop, const ClusterConfig& config);
  ~Bridge() override;

  // `ready` is called on the loop when inbound messages wait (call drain()).
  bool start(std::function<void()> ready, std::string& error);
  void stop();
  // Shutting down: tells the other nodes at once (they stop sending to this one).
  void leave();

  // Outbound (from the broker).
  uint64_t publish(const OutboundMessage& msg) override;
  bool backlogged() const override { return js_ && js_->full(); }
  uint64_t add_interest(std::string_view filter) override;
  void remove_interest(std::string_view filter) override;
  uint64_t settled() const override { return gossip_.settled(); }

  // The control messages waiting (interest of other nodes, acknowledgements), a slice
  // of them, taken whether or not the broker is congested; true if more wait.
  bool drain_control();
  static constexpr size_t kControlSlice = 4096;

  // Hands up to `max` inbound messages to `fn`; returns whether more wait. The
  // JetStream deliveries among them are acknowledged with ack(take_acks()) once the
  // broker has them (after the store's barrier, when it wrote).
  bool drain(size_t max, const std::function<void(const InboundMessage&)>& fn);
  std::vector<std::string> take_acks() { return std::exchange(acks_, {}); }
  void ack(const std::vector<std::string>& replies);
  // JetStream's answers: the tickets (Outbound::publish) completed, (ticket, stored).
  std::vector<std::pair<uint64_t, bool>> take_stored();
  const JetStream* jetstream() const { return js_.get(); }

  bool connected() const { return link_ && link_->connected(); }
  const ClusterConfig& config() const { return config_; }
  const Stats& stats() const { return stats_; }
  const Link::Stats* link_stats() const { return link_ ? &link_->stats() : nullptr; }
  size_t interest_filters() const { return interest_.size(); }
  const Gossip& gossip() const { return gossip_; }
  size_t queued() const { return link_ ? link_->queued() : 0; }

 private:
  void subscribe_filter(const std::string& filter);
  void on_state(bool up);
  void send_control();
  static void on_tick(uv_timer_t* timer);
  uint64_t now_ms() const { return uv_now(loop_); }

  uv_loop_t* loop_;
  const ClusterConfig config_;
  const std::string prefix_;
  const uint64_t instance_;
  uint64_t sequence_ = 0;
  std::unique_ptr<Link> link_;
  std::unique_ptr<JetStream> js_;
  uint64_t js_sequence_ = 0;             // QoS 1/2 through JetStream: tickets, Msg-Ids
  std::vector<std::string_view> nodes_;  // publish()'s scratch
  std::vector<std::string> acks_;        // deliveries handed to the broker
  std::deque<Link::Reply> replies_;
  std::function<void()> ready_;
  Interest interest_;
  Gossip gossip_;
  uv_timer_t* tick_ = nullptr;  // the gossip's clock (freed by its close callback)
  __natsSubscription* control_subs_[2] = {nullptr, nullptr};  // broadcast, own subject
  uint64_t reported_settled_ = 0;  // settled() as the broker last heard it
  std::deque<std::string> control_batch_;
  // The NATS subscriptions of each filter (empty until the first connection).
  std::unordered_map<std::string, std::vector<__natsSubscription*>> subs_;
  std::unordered_map<uint64_t, uint64_t> last_sequence_;  // by origin instance
  std::string buffer_;                                    // the envelope being built
  std::deque<Link::Received> batch_;
  Stats stats_;
  bool logged_malformed_ = false, logged_too_long_ = false;
};

}  // namespace mqgate::cluster
