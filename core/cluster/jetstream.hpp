// Durability of QoS 1/2 messages other nodes want (docs/cluster.md#durability): this
// node's use of JetStream, on the loop, through the link's requests (no cnats JetStream
// context: its calls block, and its async publish blocks at its pending limit).
//
// - Setup, on every (re)connection, as asynchronous requests to the JetStream API: the
//   stream MQGATE_<name> (work queue, file storage, [cluster] replicas, max_age,
//   max_bytes, discard new) on mqgate.<name>.q.>, and this node's one durable push
//   consumer "<node>" on mqgate.<name>.q.<node>.>, delivering to mqgate.<name>.d.<node>
//   with explicit acks and a bounded max_ack_pending. Idempotent: every node does it.
// - Publishing: one message per destination node on mqgate.<name>.q.<node>.<topic>, with
//   a Nats-Msg-Id (the stream's duplicate window drops a resend), its answer awaited on
//   this node's reply subject. No answer within kAttemptMs, or an error: sent again with
//   the same id, until [cluster] publish_timeout has passed: then the ticket fails. A
//   ticket (one per MQTT message) completes once every destination's publish has.
// - Deliveries to this node: acknowledged by the bridge once the broker has them (after
//   the store's barrier when it wrote); a redelivery already handed over (its ack lost)
//   is recognised by its stream sequence and only acknowledged again.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cluster/link.hpp"
#include "config/config.hpp"

namespace mqgate::cluster {

class JetStream {
 public:
  struct Stats {
    uint64_t published = 0;    // stored by JetStream (acknowledged publishes)
    uint64_t retries = 0;      // publishes sent again (no answer in time, or an error)
    uint64_t failures = 0;     // tickets given up (the MQTT publisher is refused)
    uint64_t received = 0;     // deliveries handed to the broker
    uint64_t redelivered = 0;  // deliveries JetStream made more than once
    uint64_t duplicates = 0;   // redeliveries of what this process had handed over already
  };
  static constexpr uint64_t kAttemptMs = 2000;  // one publish's wait for its answer
  static constexpr uint64_t kSetupRetryMs = 2000;
  static constexpr uint64_t kSetupGraceMs = 10000;  // setup failures logged after this
  // The consumer: unacknowledged deliveries JetStream sends again after kAckWaitS, and
  // at most kMaxAckPending of them to this node at a time.
  static constexpr uint64_t kAckWaitS = 10;
  static constexpr uint64_t kMaxAckPending = 16384;

  JetStream(Link& link, const ClusterConfig& config, uint64_t instance);

  // The connection came up: (re)subscribe and set up the stream and consumer.
  void connected(uint64_t now_ms);
  void disconnected() { ready_ = false; }
  // Before the link stops: its subscriptions go (what waits is not answered any more).
  void stop();
  // Retries, give-ups and setup retries; called every few hundred ms.
  void tick(uint64_t now_ms);

  // The subject a message on `topic_subject_tail` (the encoded topic, subject.hpp)
  // for `node` is published on.
  std::string subject_for(std::string_view node) const {
    return queue_prefix_ + std::string(node) + ".";
  }
  // Stores `data` once per subject; `ticket` completes (take_done) when all are stored
  // or one failed. Never blocks and always accepts: the caller holds its publisher
  // while full().
  void publish(uint64_t ticket, std::vector<std::string> subjects, std::string_view data,
               uint64_t now_ms);
  bool full() const { return pending_.size() >= config_.max_pending || bytes_ >= kMaxBytes; }
  size_t pending() const { return pending_.size(); }
  // Completed tickets: (ticket, stored).
  std::vector<std::pair<uint64_t, bool>> take_done() { return std::exchange(done_, {}); }
  bool has_done() const { return !done_.empty(); }

  // Answers from the link's reply queue.
  void on_reply(const Link::Reply& r, uint64_t now_ms);
  std::string reply_subscription() const { return inbox_ + ">"; }

  // Deliveries: the prefix of their subjects (before the encoded topic), whether one is
  // to be handed over (false: already handed over in this process, acked again here),
  // and its acknowledgement once the broker has it.
  const std::string& delivery_prefix() const { return own_prefix_; }
  bool accept_delivery(const std::string& reply);
  void ack(const std::string& reply);

  // The stream and this node's consumer are set up (/healthz, /metrics).
  bool ready() const { return ready_; }
  const Stats& stats() const { return stats_; }
  const std::string& stream() const { return stream_; }

 private:
  struct Pending {
    uint64_t ticket;
    std::string subject;
    std::string msg_id;
    std::shared_ptr<const std::string> data;  // shared by a message's destinations
    uint64_t first_ms;                        // first sent: the give-up clock
    uint64_t due_ms;                          // sent again from then
    bool sent;                                // buffered by the link (else: not yet)
  };
  struct Ticket {
    uint32_t remaining = 0;
    bool failed = false;
  };
  enum class Setup : uint8_t { kIdle, kStream, kStreamUpdate, kConsumer, kDone };
  static constexpr uint64_t kMaxBytes = 256ull << 20;  // envelopes kept for resending

  void send(uint64_t id, Pending& p, uint64_t now_ms);
  void finish(uint64_t id, bool stored);
  void request_setup(uint64_t now_ms);
  void request_stream(bool update, uint64_t now_ms);
  void request_consumer(uint64_t now_ms);
  void setup_request(Setup step, const std::string& subject, const std::string& body,
                     uint64_t now_ms);
  void on_setup_reply(const Link::Reply& r, uint64_t now_ms);
  // `absent`: no JetStream answered (logged at once; other failures after the grace).
  void setup_failed(const std::string& what, bool absent, uint64_t now_ms);

  Link& link_;
  const ClusterConfig config_;
  const std::string stream_;         // MQGATE_<name>
  const std::string queue_prefix_;   // mqgate.<name>.q.
  const std::string own_prefix_;     // mqgate.<name>.q.<node>.
  const std::string deliver_;        // mqgate.<name>.d.<node>
  const std::string inbox_;          // _INBOX.mqgate.<instance>.
  const std::string msg_id_prefix_;  // <node>-<instance>-
  bool ready_ = false;
  bool logged_setup_ = false;
  Setup setup_ = Setup::kIdle;
  uint64_t setup_due_ms_ = 0;   // a setup request's deadline, or the next try
  uint64_t setup_request_ = 0;  // the id of the setup request awaited
  __natsSubscription* replies_sub_ = nullptr;
  __natsSubscription* deliveries_sub_ = nullptr;
  // Publishes awaiting their answer, by request id (ids grow: the map's order is the
  // order they were (re)sent, so the oldest are first).
  std::map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 0;
  uint64_t bytes_ = 0;
  std::unordered_map<uint64_t, Ticket> tickets_;
  std::vector<std::pair<uint64_t, bool>> done_;
  // Stream sequences handed over lately (bounded): a redelivery among them is a duplicate.
  std::unordered_set<uint64_t> handed_;
  std::deque<uint64_t> handed_order_;
  static constexpr size_t kMaxHanded = 1u << 16;
  bool logged_failure_ = false;
  std::string last_error_;       // of the last publish JetStream refused
  uint64_t setup_since_ms_ = 0;  // the connection's time (the setup's grace period)
  Stats stats_;
};

// The JetStream answers' few fields, found without a JSON library: the error's
// description ("" when the answer is not an error) and a number field.
std::string jetstream_error(std::string_view json);
bool json_number(std::string_view json, std::string_view key, uint64_t& out);

}  // namespace mqgate::cluster
