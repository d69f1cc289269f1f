// The broker's side of durable state: turns changes of persistent sessions, their
// queues and the retained messages into store mutations, in order, through the
// store::Journal interface (SQLite today, anything that applies batches in order and
// reports durability in order tomorrow). It runs on the loop and never touches the disk:
// the journal's writer thread does.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "broker/session.hpp"
#include "mqtt/message.hpp"
#include "store/journal.hpp"

namespace mqgate {

class Persistence final : public SessionJournal {
 public:
  // `next_message_id`: the first free durable message id (from the loaded state).
  Persistence(store::Journal& journal, uint64_t next_message_id)
      : journal_(journal), next_message_id_(next_message_id) {}

  // How many changes were handed to the journal so far: a PUBLISH that moved it needs a
  // barrier before its acknowledgement.
  uint64_t changes() const { return changes_; }
  // `done(ok)` on the loop once every change so far is durable (or could not be stored).
  void barrier(std::function<void(bool ok)> done) { journal_.barrier(std::move(done)); }
  // Bytes the store can still take under its cap (nullopt: no cap); see Journal::room().
  std::optional<uint64_t> room() const { return journal_.room(); }

  // --- clock -------------------------------------------------------------------------------
  // Times are stored as wall-clock ms (a restart honours them), kept as loop time in
  // memory: the broker tells the two clocks apart once, at start-up.
  // A store may hold any 64-bit value (a damaged or hand-edited file): conversions
  // saturate rather than overflow.
  void set_clock(uint64_t loop_ms, int64_t wall_ms) {
    const int64_t loop = loop_ms > uint64_t{INT64_MAX} ? INT64_MAX : static_cast<int64_t>(loop_ms);
    if (__builtin_sub_overflow(wall_ms, loop, &wall_minus_loop_)) wall_minus_loop_ = INT64_MIN;
  }
  int64_t wall_of(uint64_t loop_ms) const {
    const int64_t loop = loop_ms > uint64_t{INT64_MAX} ? INT64_MAX : static_cast<int64_t>(loop_ms);
    int64_t wall;
    if (__builtin_add_overflow(loop, wall_minus_loop_, &wall))
      return wall_minus_loop_ > 0 ? INT64_MAX : INT64_MIN;
    return wall;
  }
  uint64_t loop_of(int64_t wall_ms) const {
    int64_t loop;
    if (__builtin_sub_overflow(wall_ms, wall_minus_loop_, &loop))
      return wall_minus_loop_ < 0 ? uint64_t{INT64_MAX} : 0;
    return loop > 0 ? static_cast<uint64_t>(loop) : 0;
  }

  // --- sessions (persistent ones only; the broker checks) ------------------------------
  // `expires_at_ms`: wall-clock ms the session expires if still offline; 0: online or never.
  // A 5.0 session also keeps its protocol level and Session Expiry Interval.
  void put_session(const Session& s, int64_t expires_at_ms);
  // Also its subscriptions, queue and incoming ids; releases the message bodies it held.
  void remove_session(const Session& s);
  void remove_session_record(const std::string& client_id);  // one loaded, then dropped
  // `options`, `id`: MQTT 5 subscription options (Session::kNoLocal...) and identifier.
  void put_subscription(const Session& s, std::string_view filter, uint8_t qos, uint8_t options = 0,
                        uint32_t id = 0);
  void remove_subscription(const Session& s, std::string_view filter);

  // --- retained messages ----------------------------------------------------------------
  void put_retained(const Message& msg);
  void remove_retained(std::string_view topic);

  // --- delayed wills (MQTT 5 Will Delay Interval) ---------------------------------------
  // `due_at_ms`: loop time; `expiry`: the will's Message Expiry Interval.
  void put_will(const Session& s, const Message& will, uint64_t due_at_ms,
                std::optional<uint32_t> expiry);
  void remove_will(const Session& s) { remove_will_record(s.client_id()); }
  void remove_will_record(const std::string& client_id);

  // --- loading ---------------------------------------------------------------------------
  // `had_props`: the body has MQTT 5 properties (stored apart) to remove with it.
  void remove_message_record(uint64_t id, bool had_props = false);
  void remove_outgoing_record(const std::string& client_id, uint64_t seq);

  // --- SessionJournal ---------------------------------------------------------------------
  void put_outgoing(const Session& s, uint32_t seq, const Message* msg, uint8_t qos, bool retain,
                    uint16_t packet_id, OutState state, bool new_entry) override;
  void remove_outgoing(const Session& s, uint32_t seq) override;
  void release_message(const Message& msg) override;
  void put_incoming(const Session& s, uint16_t packet_id) override;
  void remove_incoming(const Session& s, uint16_t packet_id) override;

 private:
  void add(store::Mutation&& m) {
    ++changes_;
    journal_.add(std::move(m));
  }

  store::Journal& journal_;
  uint64_t next_message_id_;
  uint64_t changes_ = 0;
  int64_t wall_minus_loop_ = 0;
};

}  // namespace mqgate
