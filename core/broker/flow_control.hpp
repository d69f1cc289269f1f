// Backpressure from subscribers to publishers: a connected subscriber whose queue or
// unsent bytes pass a high-water mark holds the input of the publishers whose messages
// go to it (their next packets, PUBACKs included, wait in their framer and their TCP
// window) until it drains to a low-water mark. Nothing is dropped for an online
// subscriber; memory stays bounded because a publisher adds at most one message past
// the mark before it is held.
//
// Bookkeeping is in side tables keyed by session and by connection id (an idle
// connection's memory is a budget), touched only past the high-water mark: below it a
// delivery costs two comparisons. Edges are (publisher's connection id, ticket) pairs in
// the congested subscriber's list; a publisher counts the subscribers it waits on and
// resumes when the count is 0. An edge whose publisher closed (no entry for its id) or
// was released early (another ticket) is stale: it is skipped, never followed.
//
// Holding and resuming are requests (Client::hold_input, resume_input): the server
// dispatches a resumed publisher's packets after the broker call returns.
//
// Deadlock freedom: a held client's input also carries the acknowledgements that drain
// its own queue, so a client whose own session is congested is never held, and a held
// client whose session becomes congested is released. Every edge therefore points at a
// subscriber whose input is read.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "client/client.hpp"
#include "config/config.hpp"

namespace mqgate {

class Session;

class FlowControl {
 public:
  // High water: half of max_queued_messages (the hard limit where drops start) and half
  // of max_outgoing_bytes, at most kMaxHighBytes; low water: half of those.
  void set_limits(const LimitsConfig& limits);
  static constexpr size_t kMaxHighBytes = 256 * 1024;

  // Some subscriber is past its high-water mark (the only time anything below costs).
  bool active() const { return !congested_.empty(); }

  // `session` (connected) was just given a message of QoS `qos` published by `source`
  // (nullptr for wills, $SYS, retained): marks it congested past the high-water mark and
  // holds `source` (Client::hold_input) unless that would deadlock or the subscriber's
  // policy has let it go.
  void after_delivery(Session& session, Client* source, uint8_t qos, uint64_t now_ms);
  // The subscriber's backlog may have shrunk (an ack, a completed write): below the
  // low-water mark its publishers become resumable.
  void check_drained(const Session& session) {
    if (!congested_.empty()) check_drained_slow(session);
  }
  // The session lost its client (closed, taken over): it cannot push back any more.
  void forget_session(const Session& session);
  // The client is closing: it is no longer held, nor resumed.
  void forget_client(const Client& client);
  // Held for flow control (Client::resume_input must wait).
  bool holds(const Client& client) const;
  // QoS 0 messages to this subscriber are dropped (slow_subscriber = "drop_qos0" applied).
  bool sheds_qos0(const Session& session) const {
    if (congested_.empty()) return false;
    auto it = congested_.find(&session);
    return it != congested_.end() && it->second.shedding;
  }
  void count_shed(const Session& session);
  // The subscriber is past its high-water mark (shared subscriptions prefer others).
  bool is_congested(const Session& session) const {
    return !congested_.empty() && congested_.count(&session) != 0;
  }

  // Clients to resume now (their count reached 0); the caller calls
  // Client::resume_input unless something else still holds them. Takes them out.
  std::vector<Client*> take_resumable();
  bool has_resumable() const { return !resumable_.empty(); }

  // Once per sweep: subscribers that drained unnoticed are released; one past its
  // listener's slow_subscriber_grace with publishers waiting gets its policy. Returns the
  // clients to disconnect (the caller closes them).
  std::vector<Client*> check_policies(uint64_t now_ms);

  size_t congested_count() const { return congested_.size(); }
  size_t held_count() const;

 private:
  struct Waiter {
    ConnId client;
    uint64_t ticket;
  };
  struct Congestion {
    uint64_t since_ms = 0;
    std::vector<Waiter> waiters;
    uint64_t shed = 0;      // QoS 0 messages dropped while shedding
    bool shedding = false;  // drop_qos0 applied
    bool policy_applied = false;
  };
  struct Blocked {
    Client* client = nullptr;  // valid while the entry exists (forget_client erases it)
    uint32_t waits = 0;        // congested subscribers this client waits on
    uint64_t ticket = 0;
  };

  bool over_high(const Session& session) const;
  // The waiter still waits (its ticket is current and it is held).
  bool live(const Waiter& w) const;
  void drop_stale(Congestion& c);
  bool below_low(const Session& session) const;
  void check_drained_slow(const Session& session);
  // Counts down every live waiter of `c`; those at 0 become resumable.
  void release_waiters(Congestion& c);
  // Lets `client` go at once, whatever it waits on (its own session is congested).
  void release_client(const Client& client);
  void end_congestion(const Session& session, Congestion& c);

  size_t high_queued_ = 500, low_queued_ = 250;
  uint64_t high_queued_bytes_ = 32ull << 20, low_queued_bytes_ = 16ull << 20;
  size_t high_bytes_ = kMaxHighBytes, low_bytes_ = kMaxHighBytes / 2;
  std::unordered_map<const Session*, Congestion> congested_;
  std::unordered_map<ConnId, Blocked> blocked_;
  std::vector<Waiter> resumable_;
  uint64_t next_ticket_ = 0;
};

}  // namespace mqgate
