// The node's one connection to NATS, driven by the event loop: cnats's libuv adapter
// reads and writes its socket on the loop, and what cnats does on its own threads
// (message delivery, reconnects, connection events) only touches the hand-off below,
// which wakes the loop with a uv_async. Nothing of the broker runs on a NATS thread.
//
// Connecting never blocks the loop on an unreachable server: each URL is first reached
// with a non-blocking TCP connect on the loop (uv_getaddrinfo, uv_tcp_connect), and
// only a server that answered gets cnats's (short) handshake. Until one does, the link
// retries with a backoff (1 s doubling to 10 s). Once connected, cnats reconnects by
// itself (no limit, 1 s apart plus jitter) and re-sends the subscriptions.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

struct __natsConnection;
struct __natsSubscription;
struct __natsOptions;
struct __natsMsg;

namespace mqgate::cluster {

class Link {
 public:
  // A message as NATS delivered it, waiting for the loop.
  struct Received {
    std::string subject;
    std::string data;
    std::string reply;  // a JetStream delivery's ack subject (empty for core NATS)
  };
  // An answer to one of this node's requests (JetStream acks and API replies).
  struct Reply {
    std::string subject;
    std::string data;
    std::string status;  // a header-only status message ("503": no responders)
  };
  struct Stats {
    std::atomic<uint64_t> dropped_qos0{0};   // inbound queue full
    std::atomic<uint64_t> dropped_qos12{0};  // inbound queue full (JetStream delivers it again)
    std::atomic<uint64_t> slow_consumer{0};  // NATS dropped ours (cnats's pending limits)
    std::atomic<uint64_t> dropped_control{0};  // control queue full
    std::atomic<uint64_t> dropped_replies{0};  // reply queue full (the publish is retried)
    uint64_t reconnects = 0;                 // connections regained after a loss
  };
  struct Callbacks {
    std::function<void()> inbound;       // messages wait in the queue (take them)
    std::function<void(bool up)> state;  // connected now (true) or lost (false)
  };

  Link(uv_loop_t* loop, const ClusterConfig& config, Callbacks callbacks);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Sets up the options and starts connecting; false with `error` if the options cannot
  // be made (bad TLS files: named in the message).
  bool start(std::string& error);
  // Closes the connection (idempotent). The loop must run afterwards for the adapter's
  // handles to close.
  void stop();
  // A stopped link's reachability checks still finishing (their callbacks free them):
  // a server that stops before its loop ran them lets the loop run until they are done.
  static bool probes_pending();

  bool connected() const { return connected_; }
  // The node is stopping: a lost connection is expected now (logged at INFO, not WARN).
  void set_leaving() { leaving_ = true; }
  // On the loop. False if the message could not be buffered (NATS gone, buffers full).
  bool publish(const std::string& subject, std::string_view data);
  // A subscription delivering into the queue, or null (not connected yet: call again
  // from the state callback; or refused: logged).
  __natsSubscription* subscribe(const std::string& subject);
  // The same for the cluster's control subjects (gossip.hpp): their own queue, never
  // behind a backlog of messages; past kMaxControlBytes they are dropped (counted: the
  // gossip recovers from a lost one by itself).
  __natsSubscription* subscribe_control(const std::string& subject);
  size_t take_control(std::deque<std::string>& out, size_t max);
  static constexpr uint64_t kMaxControlBytes = 64u << 20;
  static constexpr uint64_t kControlOverhead = 64;  // per queued message
  void unsubscribe(__natsSubscription* sub);
  // JetStream (jetstream.hpp): a publish whose answer comes on `reply`, with a
  // Nats-Msg-Id header when `msg_id` is not empty. False if it could not be buffered.
  bool publish_request(const std::string& subject, const std::string& reply,
                       const std::string& msg_id, std::string_view data);
  // The subscription of this node's reply subjects (a wildcard): answers wait in their
  // own queue (bounded like the control one: only a hostile publisher fills it).
  __natsSubscription* subscribe_replies(const std::string& subject);
  size_t take_replies(std::deque<Reply>& out, size_t max);
  // A JetStream consumer's deliver subject: its messages join the inbound queue with
  // their ack subjects (a delivery dropped there is redelivered by JetStream).
  __natsSubscription* subscribe_deliveries(const std::string& subject);
  // Moves up to `max` waiting messages into `out`; returns how many remain.
  size_t take(std::deque<Received>& out, size_t max);
  size_t queued() const;
  const Stats& stats() const { return stats_; }

 private:
  struct Probe;
  void probe_next();
  static void start_tcp(Probe* p, const sockaddr* addr);
  void probe_done(bool reachable);
  void connect_now();
  void retry_later();
  void on_wakeup();
  // On the loop after cnats's events: `lost` if a disconnection was reported since.
  void check_state(bool lost);
  struct Hooks;  // cnats's callbacks (on its threads)
  using Handler = void (*)(__natsConnection*, __natsSubscription*, __natsMsg*, void*);
  __natsSubscription* subscribe_with(const std::string& subject, Handler handler, bool unlimited);
  friend struct Hooks;

  uv_loop_t* loop_;
  const ClusterConfig config_;
  Callbacks callbacks_;
  __natsOptions* options_ = nullptr;
  __natsConnection* conn_ = nullptr;
  bool connected_ = false;
  bool stopped_ = false;
  bool leaving_ = false;
  bool started_ = false;
  // Connecting: which URL is probed, the retry timer and its backoff.
  size_t next_url_ = 0;
  Probe* probe_ = nullptr;  // in flight (it outlives a stop() until its callbacks ran)
  uv_timer_t* retry_timer_ = nullptr;
  uint64_t backoff_ms_ = 1000;
  bool warned_unreachable_ = false;
  std::string last_connect_error_;
  // The hand-off from cnats's threads.
  uv_async_t* wakeup_ = nullptr;
  mutable std::mutex mutex_;
  std::deque<Received> inbox_;      // guarded by mutex_
  uint64_t inbox_bytes_ = 0;        // guarded by mutex_
  std::deque<std::string> control_;  // guarded by mutex_
  uint64_t control_bytes_ = 0;       // guarded by mutex_
  std::deque<Reply> replies_;        // guarded by mutex_
  uint64_t reply_bytes_ = 0;         // guarded by mutex_
  bool alive_ = true;               // guarded by mutex_: false once stopped (no more wake-ups)
  std::atomic<int> events_{0};      // connection events since the loop last looked
  std::atomic<int> last_error_{0};  // an async error cnats reported (natsStatus)
  void wake();                      // from any thread
  // Drops are logged once when they start and once when the queue has drained.
  uint64_t drops_seen_ = 0;
  bool dropping_ = false;
  Stats stats_;
};

}  // namespace mqgate::cluster
