// What the broker's durable state is made of, as records, and the journal it writes them
// through. The broker keeps its state in memory (sessions, queues, retained messages) and
// tells the journal every change, in order; the journal makes the changes durable in
// batches on a thread of its own and says when everything up to a point is on disk. A
// PUBACK waits for that point. At start-up the journal's backend hands the whole state
// back, before the broker listens.
//
// The interface knows nothing of SQLite: a distributed backend implements the same
// calls (apply batches in order, report durability in order, load everything).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqgate::store {

// A persistent session (clean session 0) and what it owns.
struct SessionRecord {
  std::string client_id;
  std::string owner;          // the identity that created it
  int64_t expires_at_ms = 0;  // wall-clock ms when it expires if still offline; 0: never
  uint16_t last_packet_id = 0;
  // MQTT 5 (stored only for 5.0 sessions; a 3.1.1 row does not grow): the protocol level
  // and the session's own Session Expiry Interval (s).
  uint8_t protocol_level = 4;
  std::optional<uint32_t> expiry_interval{};
  // The client certificate chain its client last connected with (DER, leaf first,
  // concatenated; bounded by the broker) and that connection's listener: the console
  // shows and revokes it while the session is offline. Empty: none.
  std::string cert_listener{};
  std::string cert_chain{};
};

struct SubscriptionRecord {
  std::string client_id;
  std::string filter;
  uint8_t qos = 0;
  uint8_t options = 0;           // MQTT 5: Session::kNoLocal | kRetainAsPublished
  uint32_t subscription_id = 0;  // MQTT 5: 0 for none
};

// A message body, shared by every queue entry that refers to it.
struct MessageRecord {
  uint64_t id = 0;  // the broker's durable message id
  std::string topic;
  std::string payload;
  uint8_t qos = 0;
  int64_t expires_at_ms = 0;  // 0: never (MQTT 5 message expiry, wall-clock ms)
  std::string props{};        // MQTT 5 forwarded properties (Message::props()); "" for none
                              // (kRemoveMessage: non-empty if it had some to remove)
};

// One outgoing QoS 1/2 message of a session: queued, or in flight with its packet id.
struct OutgoingRecord {
  enum class State : uint8_t { kQueued = 0, kAwaitPuback = 1, kAwaitPubrec = 2, kAwaitPubcomp = 3 };
  std::string client_id;
  uint64_t seq = 0;         // order within the session
  uint64_t message_id = 0;  // 0 once PUBREC arrived (the body is no longer needed)
  uint8_t qos = 1;
  bool retain = false;     // the RETAIN flag to send
  uint16_t packet_id = 0;  // 0 while queued
  State state = State::kQueued;
};

// A QoS 2 PUBLISH received and acknowledged with PUBREC, awaiting PUBREL: its packet
// id must survive a restart so a resend is not delivered twice.
struct IncomingQos2Record {
  std::string client_id;
  uint16_t packet_id = 0;
};

struct RetainedRecord {
  std::string topic;
  std::string payload;
  uint8_t qos = 0;
  int64_t expires_at_ms = 0;  // 0: never (MQTT 5 message expiry, wall-clock ms)
  std::string props{};        // MQTT 5 forwarded properties; "" for none
};

// An MQTT 5 will waiting for its Will Delay Interval (3.1.3.2.2): published at
// `due_at_ms` (wall clock) or when its session ends, whichever comes first.
struct WillRecord {
  std::string client_id;  // its session's
  std::string topic;
  std::string payload;
  uint8_t qos = 0;
  bool retain = false;
  int64_t due_at_ms = 0;
  std::string props;                        // forwarded will properties
  std::optional<uint32_t> expiry_interval;  // the will's Message Expiry Interval (s)
};

// Everything, as loaded at start-up.
struct State {
  std::vector<SessionRecord> sessions;
  std::vector<SubscriptionRecord> subscriptions;
  std::vector<MessageRecord> messages;
  std::vector<OutgoingRecord> outgoing;  // per client, in seq order
  std::vector<IncomingQos2Record> incoming_qos2;
  std::vector<RetainedRecord> retained;
  std::vector<WillRecord> wills;
  uint64_t next_message_id = 1;
};

// One change. Mutations of one batch are applied in order, atomically.
struct Mutation {
  enum class Kind : uint8_t {
    kPutSession,          // session (replaces)
    kRemoveSession,       // session.client_id: also its subscriptions, queue, incoming
    kPutSubscription,     // subscription (replaces)
    kRemoveSubscription,  // subscription.client_id + filter
    kPutMessage,          // message
    kRemoveMessage,       // message.id
    kPutOutgoing,         // outgoing (replaces client_id + seq)
    kRemoveOutgoing,      // outgoing.client_id + seq
    kPutIncoming,         // incoming
    kRemoveIncoming,      // incoming.client_id + packet_id
    kPutRetained,         // retained (replaces the topic's)
    kRemoveRetained,      // retained.topic
    kPutWill,             // will (replaces the session's)
    kRemoveWill,          // will.client_id
  };
  Kind kind;
  SessionRecord session;
  SubscriptionRecord subscription;
  MessageRecord message;
  OutgoingRecord outgoing;
  IncomingQos2Record incoming;
  RetainedRecord retained;
  WillRecord will{};
  // A put that creates its row (no row with its key is on disk): a message body, an
  // incoming id, a new queue entry. Lets unwritten changes be compacted while the
  // store fails (compact_unwritten).
  bool creates = false;
};

// How durable an acknowledgement is.
enum class Durability : uint8_t {
  kSync,     // a commit is fsynced before its barrier completes (default: nothing acked is lost)
  kBatched,  // commits are written at once but fsynced every flush interval: a crash of
             // the machine (not of the broker) may lose the last interval
};

class Journal {
 public:
  virtual ~Journal() = default;
  // Queues a change (loop thread; cheap).
  virtual void add(Mutation m) = 0;
  // A barrier: `done(ok)` runs on the loop thread once every change added before it is
  // durable (ok = true), or could not be written (ok = false: disk full, I/O error;
  // the batch is retried with the next one, so later barriers may still succeed).
  // Barriers complete in the order they were made.
  virtual void barrier(std::function<void(bool ok)> done) = 0;
  // Blocks until everything queued is written (shutdown).
  virtual void flush() = 0;
  // Bytes the store can still take under its size cap, counting what is queued and not
  // yet written; nullopt when it has no cap (a full disk is only found by writing).
  // Lets the broker refuse one record that cannot fit, on its own, instead of letting it
  // fail every batch after it. Loop thread; cheap.
  virtual std::optional<uint64_t> room() const { return std::nullopt; }
};

// About what a change adds to the store, in bytes (rows, not pages): for room(). A row
// costs kRowBytes besides its strings (keys, integers, index entries).
constexpr uint64_t kRowBytes = 64;
uint64_t approx_bytes(const Mutation& m);
// The same for the records a broker is about to make: a message body or retained
// message, and one queue entry of a session.
inline uint64_t message_bytes(std::string_view topic, std::string_view payload,
                              std::string_view props) {
  return kRowBytes + topic.size() + payload.size() + props.size();
}
inline uint64_t queue_entry_bytes(std::string_view client_id) {
  return kRowBytes + client_id.size();
}

// Changes that could not be written yet (a full disk), compacted so that what waits is
// bounded by the state rather than by the traffic: a put followed by a removal of its row
// is dropped, and so is the removal when the put created the row; a retained message
// replaced or cleared before it was written is dropped too. Order is kept.
void compact_unwritten(std::vector<Mutation>& changes);

// How a journal hands completions back to the loop thread: `post` must be callable from
// any thread and run the function on the loop soon after.
using Poster = std::function<void(std::function<void()>)>;

}  // namespace mqgate::store
