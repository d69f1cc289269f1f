// The broker: MQTT semantics across clients and sessions. It receives decoded packets
// from the server's connections, keeps sessions in a SessionStore, routes publications
// through the Router, and asks AuthHooks before letting anyone in or anything through.
// It never touches sockets: output goes into Client::out(); closing and holding or
// resuming a client's input are requests (Client::close, hold_input, resume_input) that
// the server carries out after the broker call returns. Nothing calls back into the
// broker while one of its calls runs: debug builds assert it at every entry point.
//
// The code is split by MQTT verb: broker.cpp (packets in, decisions back, slices),
// connect.cpp, enhanced_auth.cpp, publish.cpp, subscribe.cpp, acks.cpp, retained.cpp,
// lifecycle.cpp (open, close, wills, timeouts, expiry), flow.cpp, session_expiry.cpp,
// shared.cpp, durability.cpp.
#pragma once

#include <cassert>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "broker/flow_control.hpp"
#include "broker/router.hpp"
#include "broker/session.hpp"
#include "broker/session_store.hpp"
#include "broker/shared_subscriptions.hpp"
#include "client/client.hpp"
#include "cluster/outbound.hpp"
#include "config/config.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/packet.hpp"
#include "plugin/auth.hpp"

namespace mqgate {

class Persistence;
namespace store {
struct State;
struct WillRecord;
}

struct BrokerStats {
  uint64_t messages_received = 0;  // PUBLISH packets received
  uint64_t bytes_received = 0;     // all bytes read from clients (after TLS)
  uint64_t bytes_sent = 0;         // all bytes handed to transports (before TLS)
  uint64_t publish_denied = 0;     // PUBLISHes an auth plugin refused
  uint64_t deliveries_denied = 0;  // deliveries the plugins' RECEIVE answer withheld
  uint64_t delivery_checks = 0;    // RECEIVE questions asked about live deliveries
  uint64_t connections_total = 0;  // accepted network connections, ever
  uint64_t clients_connected = 0;  // CONNACK 0 sent, not yet closed
  uint64_t clients_maximum = 0;
  uint64_t tls_handshakes_refused = 0;      // TLS connections closed: tls_max_pending_handshakes
  uint64_t subscriptions_refused = 0;       // filters over max_subscriptions_per_client
  uint64_t retained_refused = 0;            // retained messages over the store's caps
  uint64_t store_refused = 0;  // PUBLISHes refused: the persistence store could not take them
  uint64_t connects_identity_mismatch = 0;  // CONNACK 2: the client id is another identity's
  uint64_t connects_session_limit = 0;      // CONNACK 3: max_persistent_sessions reached
  DeliveryStats delivery;                   // PUBLISH packets sent, dropped
  uint64_t slow_subscribers_disconnected = 0;  // slow_subscriber = "disconnect" applied
  uint64_t messages_dropped_offline = 0;  // of messages_dropped: offline sessions' queues full
  uint64_t claimed_taken = 0;             // PUBLISHes to plugin-claimed topics the plugin took
  uint64_t claimed_refused = 0;           // ... that the plugin refused
  uint64_t private_sent = 0;              // plugins' messages for one connection, delivered
  uint64_t private_dropped = 0;           // ... dropped: client gone, or no subscription matches
};

class Broker {
 public:
  Broker(const LimitsConfig& limits, AuthHooks& hooks,
         std::unique_ptr<SessionStore> store = std::make_unique<MemorySessionStore>());
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // --- from transports ---------------------------------------------------------------
  void on_open(Client& client, uint64_t now_ms);
  // A complete packet. `now_ms` is the loop time.
  void on_packet(Client& client, codec::Packet& packet, uint64_t now_ms);
  // The client's bytes broke the protocol. Answers CONNACK 1 for an unsupported protocol
  // level (packet carries protocol name and level then), and closes the client.
  void on_decode_error(Client& client, codec::DecodeError error, const codec::FixedHeader* header,
                       const codec::Packet* partial);
  // The client announced a packet bigger than max_packet_size.
  void on_oversized_packet(Client& client, const codec::FixedHeader& header);
  // Called exactly once when a client is closed (by itself, by us, or by the network),
  // by the transport, after the broker call that asked for the close has returned.
  void on_closed(Client& client, const char* reason, uint64_t now_ms = 0);
  // --- long work, in slices --------------------------------------------------------
  // Work too big for one packet's turn (retained messages for a wide filter, expired
  // sessions) waits here; the server calls run_slice() once per loop iteration while
  // has_work(), so I/O is polled between slices. Returns whether anything moved (work
  // paced by a slow client may have to wait for its output to drain).
  bool has_work() const;
  bool run_slice(uint64_t now_ms);
  // A fan-out is in progress: transports hold further packets until it is done, so no
  // publication overtakes another and the backlog stays one message per fan-out.
  bool congested() const { return !fanouts_.empty(); }
  // One slice's budget: trie nodes visited, messages delivered, sessions expired.
  static constexpr size_t kSliceBudget = 4096;
  // Once a second: queues the expiry of offline persistent sessions whose time came
  // (their own Session Expiry Interval for 5.0, limits.session_expiry for 3.1.1) and
  // the delayed wills that are due (done by run_slice).
  void check_expiry(uint64_t now_ms);
  // Closes the client if it broke its keep-alive or never sent CONNECT in time.
  void check_timeouts(Client& client, uint64_t now_ms);
  // An auth plugin owes a decision about the client's last packet: its next packets
  // wait (Client::hold) until the decision arrives (AuthHooks' sink).
  bool awaiting_decision(const Client& client) const {
    return awaiting_.count(client.conn_id()) != 0;
  }

  // --- flow control (flow_control.hpp) ---------------------------------------------
  // Some subscriber is over its high-water mark (its output may have drained: tell
  // on_output_drained after writes).
  bool flow_active() const { return flow_.active(); }
  // The client's output backlog shrank (a write completed).
  void on_output_drained(Client& client);
  // Resumes the publishers whose subscribers drained. Called by the server outside any
  // broker call (it dispatches their held packets); returns whether any was resumed.
  bool release_flow_holds();
  // Each sweep: applies slow_subscriber policies, releases subscribers that drained.
  void check_flow(uint64_t now_ms);
  const FlowControl& flow() const { return flow_; }

  // --- the plugins' rules ---------------------------------------------------------------
  // The plugins took new options (SIGHUP): every subscription's deliveries are checked
  // under the new rules at once, until its SUBSCRIBE has been decided again (in slices,
  // for each connected client; offline sessions when their client is back).
  void rules_reloaded();
  // Reloads so far, counting from 1: subscriptions decided under older rules are stale.
  uint16_t rules_epoch() const { return rules_epoch_; }

  // --- from inside the broker ($SYS) --------------------------------------------------
  void publish_internal(std::string_view topic, std::string_view payload, bool retain);

  // --- the cluster (docs/cluster.md) -----------------------------------------------------
  // From now on locally-originated messages (clients' and wills, not $SYS) go to
  // `cluster` once each, and so do the filters of local subscriptions (not $share ones:
  // shared subscriptions stay per node for now). Before anything connects or is restored.
  void set_cluster(cluster::Outbound* cluster) { cluster_ = cluster; }
  // A message published on another node: delivered to matching local subscribers only
  // (never back to the cluster, never stored as retained, not to shared groups).
  void on_cluster_message(const cluster::InboundMessage& msg, uint64_t now_ms);
  // The cluster's settled() moved on: SUBACKs that waited for other nodes to know their
  // new filters (cluster/outbound.hpp) go out.
  void on_cluster_settled(uint64_t settled);
  // The cluster stored a message it gave a ticket for (Outbound::publish), or gave up:
  // the publisher's PUBACK/PUBREC held for it goes, in order (given up: 5.0 a refusal
  // with a Reason String, 3.1.1 the connection is closed unacknowledged). Publishers
  // held while the cluster was backlogged are resumed once it is not.
  void on_cluster_stored(uint64_t ticket, bool stored);
  // Runs `done` once everything written to the store so far is durable (at once without
  // persistence): the cluster acknowledges the deliveries it handed over then.
  void when_stored(std::function<void(bool ok)> done);
  // Changes written to the store so far: whether a call changed it (the count moved).
  uint64_t store_changes() const;

  // --- configuration and introspection --------------------------------------------------
  void set_limits(const LimitsConfig& limits);
  void set_session_owner(Config::SessionOwner rule) { session_owner_ = rule; }
  // MQTT 5.0 Response Information (Config::response_information).
  void set_response_information(std::string text) { response_information_ = std::move(text); }
  size_t persistent_sessions() const { return persistent_sessions_; }
  // From now on closing clients do not publish wills (the whole broker is going away).
  void begin_shutdown() { shutting_down_ = true; }
  const LimitsConfig& limits() const { return limits_; }
  const BrokerStats& stats() const { return stats_; }
  // Connected clients with a certificate whose notAfter (seconds since the epoch) falls
  // in an hour that began at or before `t`: for /metrics' expiry windows, counted over
  // the distinct hours (a few thousand at most for 90 days), not over the clients.
  size_t certificates_expiring_by(int64_t t) const {
    size_t n = 0;
    for (auto it = certificate_expiry_.begin();
         it != certificate_expiry_.end() && it->first <= hour_of(t); ++it)
      n += it->second;
    return n;
  }
  size_t certificates_connected() const { return certificates_connected_; }
  // The plugins' own counters (api->register_counter), for $SYS.
  std::vector<PluginCounter> plugin_counters() const { return hooks_.plugin_counters(); }
  // The transports' one way into the statistics (they never write them directly).
  void count_received(size_t bytes) { stats_.bytes_received += bytes; }
  void count_sent(size_t bytes) { stats_.bytes_sent += bytes; }
  void count_tls_refused() { stats_.tls_handshakes_refused++; }
  const Router& router() const { return router_; }
  // Work waiting, for GET /metrics (each O(1)).
  size_t pending_fanouts() const { return fanouts_.size(); }
  size_t pending_retained_jobs() const { return retained_jobs_.size(); }
  size_t pending_decisions() const { return awaiting_.size(); }
  SessionStore& sessions() { return *sessions_; }
  // An operator deletes an offline persistent session (the console): as if it expired
  // now (its delayed will goes). False if `client_id` has none, or its client is online.
  bool remove_offline_session(std::string_view client_id, const std::string& who);

  // --- persistence (broker_persistence.cpp) -------------------------------------------
  // From now on persistent sessions, their queues and retained messages are journaled,
  // and QoS 1/2 acknowledgements wait for durability. Before anything connects.
  void set_persistence(Persistence* persistence);
  // Rebuilds the state loaded from the store (before listening). `now_ms`: loop time;
  // `wall_ms`: wall clock (session expiry is stored as absolute time).
  void restore(store::State& state, uint64_t now_ms, int64_t wall_ms);

 private:
  // Every public entry point starts with MQGATE_BROKER_ENTRY(): in debug builds it asserts
  // that no other broker call is running (nothing below calls back into the broker from
  // inside one of its calls; docs/architecture.md).
  class EntryCheck {
   public:
    explicit EntryCheck(bool& running) : running_(running) {
      assert(!running_ && "the broker was re-entered from below during one of its calls");
      running_ = true;
    }
    ~EntryCheck() { running_ = false; }
    EntryCheck(const EntryCheck&) = delete;
    EntryCheck& operator=(const EntryCheck&) = delete;

   private:
    bool& running_;
  };
  bool running_ = false;  // a broker call is running (checked in debug builds only)

  static bool is_v5(const Client& client) {
    return client.protocol_level == codec::kProtocolLevel5;
  }
  void handle_connect(Client& client, codec::Connect& connect, uint64_t now_ms);
  // What handle_connect keeps while the plugins decide.
  struct ConnectState {
    bool clean_session = false;  // 5.0: Clean Start
    bool keep_session = false;   // the session outlives the connection
    bool client_id_empty = false;
    uint8_t protocol_level = 0;
    uint16_t keepalive = 0;
    std::string id;
    MessagePtr will;
    std::optional<std::string> auth_data;  // 5.0 enhanced authentication: for the CONNACK
  };
  void finish_connect(Client& client, ConnectState& c, AuthResult auth);
  // --- MQTT 5.0 enhanced authentication (4.12) ---------------------------------------------
  // A client's AUTH packet: continues its exchange, or starts a re-authentication.
  void handle_auth(Client& client, const codec::Auth& auth, uint64_t now_ms);
  // A plugin continues a CONNECT's exchange: AUTH 0x18 to the client, then wait for its
  // AUTH (ConnectState kept in auth_exchanges_).
  void continue_connect_auth(Client& client, ConnectState c, const AuthResult& auth);
  // A step of a CONNECT's or a re-authentication's exchange was decided.
  void auth_step_decided(Client& client, AuthResult auth);
  void reauth_decided(Client& client, const AuthResult& auth);
  // Ends an exchange that broke the rules or ran out of time or rounds.
  void fail_auth_exchange(Client& client, const char* why, uint8_t reason_code);
  bool may_continue_auth(Client& client, const std::optional<std::string>& data);
  // A re-authentication waiting for a plugin's deferred decision.
  struct ReauthState {};
  std::unordered_map<ConnId, ConnectState> auth_exchanges_;
  // CONNACK refusing a client the plugins denied: their MQTT 5 reason code and string for
  // 5.0 clients, the nearest 3.1.1 code otherwise.
  void refuse_denied(Client& client, const AuthResult& auth);
  void encode_connack_v5(Client& client, bool present, const ConnectState& c);
  // The Receive Maximum announced to 5.0 clients: incoming QoS 2 messages awaiting PUBREL.
  uint16_t broker_receive_maximum() const;
  void handle_disconnect(Client& client, const codec::Disconnect& d);
  struct PublishState {
    std::string topic, payload;
    // A topic a plugin claimed: it goes to the plugin, with the 5.0 properties it gets.
    bool claimed = false;
    std::optional<ClaimedProperties> claimed_props;
    std::string props;  // 5.0: the forwarded properties (mqtt5::forwarded_properties)
    std::optional<uint64_t> expires_at_ms;  // 5.0 Message Expiry (loop time)
    uint16_t packet_id = 0;
    uint8_t qos = 0;
    bool retain = false;
  };
  void finish_publish(Client& client, const PublishState& p, const AuthResult& auth);
  // --- broker-owned topics a plugin claimed (claimed.cpp) ------------------------------
  // An allowed PUBLISH to a claimed topic: to its plugin (never routed), acknowledged
  // with the plugin's answer; a refused 3.x QoS 1/2 one closes the client unacknowledged.
  void take_claimed(Client& client, std::string_view topic, std::string_view payload, uint8_t qos,
                    uint16_t packet_id, const ClaimedProperties* props);
  static ClaimedProperties claimed_properties(const codec::Properties& props);
  // A plugin's message for one connection (api->send_to_client); `client` null: gone.
  void send_private(Client* client, PrivateMessage message);
  struct SubscribeState {
    uint16_t packet_id = 0;
    std::vector<std::pair<std::string, uint8_t>> topics;
    size_t next = 0;  // the next filter to decide
    std::vector<uint8_t> codes;
    size_t over_limit = 0;
    bool v5 = false;                       // SUBACK with 5.0 reason codes
    std::vector<uint8_t> retain_handling;  // 5.0: per filter
    std::vector<uint8_t> options;          // 5.0: per filter, Session::kNoLocal | ...
    uint32_t subscription_id = 0;          // 5.0: 0 for none
    std::vector<size_t> no_retained;       // 5.0: filters granted without retained messages
    bool sliced = false;                   // waits for its next slice (not for a plugin's decision)
    bool durable = false;  // persistence: its subscriptions are on disk (SUBACK may go)
    std::string reason_string;  // 5.0: the first denying plugin's, for the SUBACK
    uint16_t asked_epoch = 0;   // the rules_epoch_ the current filter was asked under
    uint64_t cluster_wait = 0;  // [cluster]: SUBACK once the cluster's settled() reaches it
    bool waits_for_cluster = false;  // in awaiting_ for that (decided, not for a plugin)
  };
  // Decides filters from s.next on, at most `budget` of them (a SUBSCRIBE may carry
  // tens of thousands: the rest waits for the next slice, the client held meanwhile).
  enum class Progress : uint8_t { kDone, kDeferred, kSliced };
  Progress continue_subscribe(Client& client, SubscribeState& s, size_t budget = kSliceBudget);
  // What to do with a SUBSCRIBE that is not done: wait for a plugin or for a slice.
  void park_subscribe(Client& client, SubscribeState s, Progress progress);
  size_t run_sliced_subscribes(size_t budget);
  void subscribe_decided(Client& client, SubscribeState& s, const AuthResult& auth);
  void finish_subscribe(Client& client, SubscribeState& s);
  // A deferred decision about a client arrived (AuthHooks' sink).
  void on_decided(ConnId client, AuthResult result);
  // Resumes the client's input unless a decision, a slice or flow control still holds it.
  void resume_if_free(Client& client);
  struct Awaiting {
    std::variant<ConnectState, PublishState, SubscribeState, ReauthState> state;
    Client* client = nullptr;  // valid while the entry exists (on_closed erases it)
  };
  // Keeps `a` until the decision (or the next slice), the client's input held meanwhile.
  void await(Client& client, Awaiting a);
  std::unordered_map<ConnId, Awaiting> awaiting_;
  // Clients whose SUBSCRIBE waits in awaiting_ for its next slice (not for a plugin).
  std::deque<ConnId> sliced_subscribes_;
  // CONNACK refusing the client: `code` for 3.1/3.1.1, `v5_reason` (0: the nearest to
  // `code`) for 5.0; then closes it.
  void refuse_connect(Client& client, codec::ConnackCode code, const char* why,
                      uint8_t v5_reason = 0);
  void encode_refusal(Client& client, codec::ConnackCode code, uint8_t v5_reason);
  void handle_publish(Client& client, codec::Publish& publish);
  void handle_subscribe(Client& client, const codec::Subscribe& subscribe);
  void handle_unsubscribe(Client& client, const codec::Unsubscribe& unsubscribe);
  void handle_ack(Client& client, const codec::Ack& ack);
  // Closes the client (5.0: DISCONNECT with `reason_code` first).
  void protocol_violation(Client& client, const char* what,
                          uint8_t reason_code = codec::reason::kProtocolError);
  // Closes the client if `topic` has more than max_topic_levels levels.
  bool too_deep(Client& client, std::string_view topic);
  bool apply_max_keepalive(Client& client, uint16_t requested);

  // Stores (if retained) and delivers a publication to every matching session.
  // `internal`: the broker's own ($SYS), not subject to the retained store's caps.
  // `source`: the publishing client, held if a subscriber is congested (none for wills
  // and $SYS). `props`: 5.0 properties forwarded to 5.0 subscribers. `origin`: the
  // publisher's session (No Local). `expires_at_ms`: 5.0 Message Expiry (loop time).
  // Returns whether any subscription matched (here or on another node) and the ticket of
  // the copy given to the cluster (0: none to wait for); the caller's acknowledgement waits
  // for that ticket only when this call really routed its message.
  struct Routed {
    bool matched = false;
    uint64_t cluster_ticket = 0;
    explicit operator bool() const { return matched; }
  };
  Routed route(std::string_view topic, std::string_view payload, uint8_t qos, bool retain,
               bool internal = false, Client* source = nullptr, std::string_view props = {},
               const Session* origin = nullptr,
               std::optional<uint64_t> expires_at_ms = std::nullopt);
  void store_retained(const MessagePtr& msg, const Client* source = nullptr);
  // route()'s delivery to this node's sessions (`shared`: and shared groups).
  bool deliver_local(std::string_view topic, std::string_view payload, uint8_t qos, MessagePtr& msg,
                     Client* source, const Session* origin, bool shared);
  uint64_t send_to_cluster(std::string_view topic, std::string_view payload, uint8_t qos,
                           bool retain, std::string_view props, const Session* origin,
                           std::optional<uint64_t> expires_at_ms);
  // The plugins' decision on a PUBLISH or will, after the broker's own rules.
  AuthResult authorize_publish(const Client& client, std::string_view topic, uint8_t qos,
                               bool retain);
  void set_session_clean(Session& session, bool clean);
  // Retained messages owed to a client for the filters it subscribed to.
  struct RetainedJob {
    Client* client = nullptr;         // valid while the job exists (closing erases it)
    uint64_t serial = 0;              // its turn in retained_order_ (not an earlier job's)
    std::deque<std::string> filters;  // waiting, in SUBSCRIBE order
    std::unordered_map<std::string, uint8_t> pending_qos;  // filter -> QoS, for those
    std::string current;                                   // being walked ("" between filters)
    uint8_t current_qos = 0;
    Router::RetainedCursor cursor;
  };
  // The rest of a publication's delivery, for fan-outs too big for one slice.
  struct FanoutJob {
    MessagePtr msg;
    const Session* origin = nullptr;  // the publisher's (No Local): compared, never used
    uint8_t qos = 0;  // the publication's QoS (each target gets min(qos, its QoS))
    std::vector<std::pair<Session*, uint8_t>> targets;
    size_t next = 0;
    Client* source = nullptr;  // the publisher (on_closed nulls it if it closes first)
  };
  void deliver_routed(Session& session, uint8_t sub_qos, std::string_view topic,
                      std::string_view payload, uint8_t qos, MessagePtr& msg, Client* source,
                      const Session* origin);
  // deliver_routed for a session with MQTT 5 subscription options (No Local, Retain As
  // Published, Subscription Identifiers).
  void deliver_with_options(Session& session, uint8_t q, std::string_view topic,
                            std::string_view payload, uint8_t qos, MessagePtr& msg,
                            const Session* origin);
  // After one delivery: drop accounting (per-session episodes) and backpressure.
  // `dropped_before`: stats_.delivery.congestion_drops() before the delivery.
  void after_delivery(Session& session, uint8_t qos, uint64_t dropped_before, Client* source);

  // --- checking deliveries (receive.cpp) ---------------------------------------------
  // deliver_routed for a session whose deliveries the plugins check (some subscription
  // asks for it, or they were decided under older rules): only the matching
  // subscriptions whose RECEIVE answer allows count. An offline session queues the
  // message unchecked; it is checked when the client is back (check_resumed).
  void deliver_checked(Session& session, uint8_t q, std::string_view topic,
                       std::string_view payload, uint8_t qos, MessagePtr& msg,
                       const Session* origin);
  // The RECEIVE answer for one live delivery through `filter` (remembered per topic
  // when the subscription allows it). `stale`: asked because of a reload.
  bool receive_allowed(Session& session, Client& client, const std::string& filter,
                       const Session::Subscription& sub, std::string_view topic, uint8_t qos,
                       bool stale);
  // A persistent session's client is back: its queued messages routed unchecked while
  // it was offline are checked now (before anything is sent), and its subscriptions,
  // when decided under older rules, are decided again.
  void check_resumed(Client& client, Session& session);
  // The SUBSCRIBE question again for every subscription of a client, after a reload.
  struct Redecision {
    Client* client = nullptr;          // valid while the entry exists (closing erases it)
    std::vector<std::string> filters;  // a snapshot of the session's, at its first turn
    size_t next = 0;
    uint16_t epoch = 0;  // the rules it decides under (the snapshot is retaken if they change)
  };
  void queue_redecision(Client& client);
  size_t run_redecisions(size_t budget);
  // The subscription's check after its SUBSCRIBE was asked again (deferrable 0).
  uint8_t redecide(Client& client, std::string_view filter, uint8_t qos);
  uint16_t rules_epoch_ = 1;  // 0: never (Session::decided_at)
  std::unordered_map<ConnId, Redecision> redecisions_;
  std::deque<ConnId> redecision_order_;
  // Messages dropped for one session, logged once when dropping starts and once when it
  // ends (with the count), not per message.
  struct DropEpisode {
    uint64_t count = 0;
    uint64_t since_ms = 0;
  };
  void note_drop(Session& session, uint8_t qos);
  void end_drop_episode(const Session& session, const char* why);
  std::unordered_map<const Session*, DropEpisode> drop_episodes_;
  FlowControl flow_;
  // Delivers up to `budget` fan-out copies; returns how many it did.
  size_t run_fanouts(size_t budget);
  void queue_retained(Client& client, std::string_view filter, uint8_t granted_qos);
  bool retained_job_blocked(const Client& client) const;
  // Runs `job` until `budget` is spent or the client's output is full; true when done.
  bool run_retained_job(Client& client, RetainedJob& job, size_t& budget);
  // check_expiry's work (restore() needs it too).
  void note_expiry_due(uint64_t now_ms);
  // Removes expired sessions within `budget`; true if expired ones remain.
  bool expire_sessions(uint64_t now_ms, size_t& budget);
  void publish_will(Client& client);

  // --- MQTT 5 session expiry and delayed wills (broker_session5.cpp) -------------------
  // The Session Expiry Interval a 5.0 client gets for `requested`: capped by the
  // broker's session_expiry when that is set (Session::kNeverExpires: forever).
  uint32_t applied_session_expiry(uint32_t requested) const;
  // How long `session` is kept offline (s; Session::kNeverExpires: forever).
  uint32_t session_expiry_of(const Session& session) const;
  // A connected client's session: its protocol level and (5.0) expiry interval.
  void note_session_expiry(const Client& client, Session& session);
  // Lists an offline session to expire `session_expiry_of` from `now_ms`.
  void schedule_session_expiry(Session& session, uint64_t now_ms);
  // The will of a 5.0 client with a Will Delay Interval whose session outlives the
  // connection waits (authorised now, published later); false if it goes now.
  bool delay_will(Client& client, Session& session, uint64_t now_ms);
  // The client came back to its session in time: its delayed will is not sent
  // [MQTT-3.1.3-9].
  void cancel_delayed_will(Session& session);
  // Publishes the session's delayed will, if any (its delay passed or the session ends).
  void publish_delayed_will(const Session& session, const char* why);
  // Publishes the delayed wills due by `now_ms` within `budget`; true if more are due.
  bool publish_due_wills(uint64_t now_ms, size_t& budget);
  // Routes a will: `expiry`, its Message Expiry Interval, counts from now.
  void route_will(const MessagePtr& will, std::optional<uint32_t> expiry);
  struct DelayedWill {
    MessagePtr msg;
    uint64_t due_ms = 0;  // loop time
    std::optional<uint32_t> expiry;
    std::string client_id;  // for the log line
  };
  // At most one per session (bounded like the session count; each under max_packet_size).
  std::unordered_map<const Session*, DelayedWill> delayed_wills_;
  std::set<std::pair<uint64_t, const Session*>> will_order_;  // by due time
  // Retained messages with a Message Expiry, removed from the store (and disk) once it
  // passes, so they do not pile up: topic -> expiry, and the same ordered by expiry.
  void track_retained_expiry(const Message& msg);
  // Removes the retained messages expired by `now_ms` within `budget`; true if more are.
  bool expire_retained(uint64_t now_ms, size_t& budget);
  std::unordered_map<std::string, uint64_t> retained_expiry_of_;
  std::set<std::pair<uint64_t, std::string>> retained_expiry_;
  // Lets a connected client go: its will, its session (kept offline or destroyed).
  // Returns whether the session was kept.
  bool detach_client(Client& client, const char* reason, uint64_t now_ms);
  void destroy_session(Session* session);
  std::string generate_client_id();

  // --- shared subscriptions (broker_shared.cpp) -----------------------------------------
  // Adds / removes a subscription in the index it belongs to: the router, or the shared
  // groups for `$share/<ShareName>/<filter>`. index_subscribe is false when a new group
  // would pass SharedSubscriptions::kMaxGroups.
  // `cluster_wait` (if given) is raised to what the SUBACK must wait for in a cluster.
  bool index_subscribe(Session& session, std::string_view filter, uint8_t qos,
                       uint64_t* cluster_wait = nullptr);
  bool index_unsubscribe(Session& session, std::string_view filter);
  // A `$share/` filter that breaks [MQTT-4.8.2-1]/[MQTT-4.8.2-2]: its SUBACK code is
  // pushed (0x8F; 3.1.1: 0x80) and true returned.
  bool refuse_invalid_share(Client& client, SubscribeState& s, std::string_view filter);
  // Gives `msg` (the publication, QoS `qos`) to one member of each shared group matching
  // `topic`; creates `msg` if null. Returns whether any group matched.
  bool route_shared(std::string_view topic, std::string_view payload, uint8_t qos, MessagePtr& msg,
                    Client* source);
  // The member to give a message of QoS `qos` to, never `exclude` (see
  // SharedSubscriptions::choose); null if there is none.
  SharedSubscriptions::Member* choose_member(SharedSubscriptions::Group& group, uint8_t qos,
                                             const Session* exclude);
  // choose_member for a message on `topic`, among the members that may receive it (null
  // if the one it would fall back to may not).
  SharedSubscriptions::Member* choose_receiving_member(SharedSubscriptions::Group& group,
                                                       uint8_t qos, std::string_view topic,
                                                       const Session* exclude = nullptr);
  // Online, not congested, and (QoS 1/2) with room in its window and nothing queued.
  bool member_usable(const Session& session, uint8_t qos) const;
  // The member's subscription `filter` (of its group) lets it receive a message on
  // `topic` (receive.cpp).
  bool member_may_receive(Session& session, const std::string& filter, std::string_view topic,
                          uint8_t qos);
  void deliver_shared(SharedSubscriptions::Group& group, SharedSubscriptions::Member& member,
                      uint8_t qos, const MessagePtr& msg, Client* source);
  // `session`'s client went away (or its session ends: `session_ends`): its messages of
  // shared subscriptions that are queued, or QoS 1 and unacknowledged, move to other
  // members of their groups (online ones, unless the session ends), in the store too.
  void move_shared_messages(Session& session, bool session_ends);
  // After restore(): tags the restored messages of shared subscriptions with their group.
  void retag_shared_messages(Session& session);
  SharedSubscriptions shared_;

  // --- persistence hooks (broker_persistence.cpp) ---------------------------------------
  // Sends a PUBACK/PUBREC/PUBCOMP: at once, or, when `durable` (the packet changed the
  // store) or an earlier one of this client waits, once the journal says everything so
  // far is on disk, in order. Not sent at all if the store failed.
  // 5.0 clients get `reason` (PUBACK, PUBREC) or `codes` (UNSUBACK, one per filter).
  // `cluster_ticket`: the cluster must store the message first (on_cluster_stored).
  void acknowledge(Client& client, codec::PacketType type, uint16_t packet_id, bool durable,
                   uint8_t reason = 0, std::vector<uint8_t> codes = {},
                   uint64_t cluster_ticket = 0);
  void send_ack(Client& client, codec::PacketType type, uint16_t packet_id, uint8_t reason,
                const std::vector<uint8_t>& codes);
  // 5.0: a PUBACK/PUBREC that carries a plugin's Reason String (kept in the client's
  // state when it denied the PUBLISH); false if there is none for it.
  bool send_ack_reason_string(Client& client, codec::PacketType type, uint16_t packet_id,
                              uint8_t reason);
  void ack_durable(ConnId client, bool ok);
  // Sends the client's held acknowledgements from the front while nothing holds them.
  void release_held_acks(ConnId client);
  // The acknowledgement of a message the cluster has to store first: 5.0 a refusal, 3.1.1
  // the connection closed (both: never acknowledged as stored).
  void refuse_unstored(Client& client, codec::PacketType type, uint16_t packet_id);
  // The cluster is backlogged: `client` is not read until it is not (on_cluster_stored).
  void hold_for_cluster(Client& client);
  // A persistent session's SUBACK (and the retained messages after it) once its
  // subscriptions are durable; false if nothing needs to wait (finish it now).
  bool hold_subscribe(Client& client, SubscribeState& st);
  void forget_held_acks(const Client& client) {
    held_acks_.erase(client.conn_id());
    cluster_held_.erase(client.conn_id());
    route_queue_of_.erase(client.conn_id());  // its queued messages are still routed, in order
  }
  // A QoS 2 PUBLISH of a persistent session is routed only once its packet id is durable:
  // then a publisher that resends it after a crash before the commit is recognised and
  // nobody gets it twice [MQTT-4.3.3-2 across restarts]. The publisher's later messages
  // wait behind it, in order, and each is acknowledged after it is routed (once what the
  // routing changed is durable in turn), with `ack_reason` (5.0) unless nothing matched.
  // `deliver` false: only its acknowledgement waits its turn (a denied message, a
  // resend). Returns false if the caller routes and acknowledges now.
  // A QoS 1/2 PUBLISH that needs the store (retained, or a persistent session matches)
  // and does not fit under its max_bytes is refused on its own, before routing: 5.0 gets
  // 0x97 Quota exceeded, 3.x (no negative acknowledgement) is disconnected unacknowledged
  // and sends it again later. Never written, it cannot block the journal for everyone.
  // Returns true if it was refused.
  bool refuse_unstorable(Client& client, std::string_view topic, std::string_view payload,
                         std::string_view props, uint8_t qos, bool retain, uint16_t packet_id);
  // Whether a record of `bytes` fits in the store (always, without a cap).
  bool store_fits(uint64_t bytes) const;
  void log_store_full(const Client* client, std::string_view topic, uint64_t bytes);
  bool route_when_durable(Client& client, std::string_view topic, std::string_view payload,
                          uint8_t qos, bool retain, uint16_t packet_id, bool deliver,
                          std::string_view props, std::optional<uint64_t> expires_at_ms,
                          uint8_t ack_reason);
  void route_durable(uint64_t queue, bool ok);
  // Delayed wills loaded at start-up: waiting again, or published now if their session
  // ended while the broker was down.
  void restore_wills(std::vector<store::WillRecord>& wills);
  // A persistent session's record: online (never expires), or offline from now.
  void persist_session(const Session& session, bool online);
  struct HeldAcks {
    Client* client = nullptr;  // valid while the entry exists (on_closed erases it)
    struct Held {
      codec::PacketType type;
      uint16_t packet_id;
      std::shared_ptr<SubscribeState> subscribe;  // a SUBACK: the rest of the SUBSCRIBE
      uint8_t reason = 0;                         // 5.0
      std::vector<uint8_t> codes;                 // 5.0 UNSUBACK
      bool store_wait = false;                    // behind a store barrier (they complete in order)
      bool store_ok = true;                       // the barrier's result
      uint64_t cluster_ticket = 0;                // waits for the cluster to store the message
      bool cluster_failed = false;                // the cluster gave up on it
    };
    std::deque<Held> acks;
  };
  Persistence* persistence_ = nullptr;
  struct PendingRoute {
    std::string topic;
    std::string payload;
    uint8_t qos;
    bool retain;
    uint16_t packet_id;
    bool deliver;
    uint8_t ack_reason;  // 5.0: Success, or Not authorized for a denied one
    std::string props;   // 5.0
    std::optional<uint64_t> expires_at_ms;
  };
  struct RouteQueue {
    std::deque<PendingRoute> routes;
    size_t bytes = 0;
    ConnId publisher = 0;  // maybe gone: its client is the one route_queue_of_ still names
    // The publisher's session (No Local), compared, never used; destroy_session() nulls
    // it, so a later session at the same address is never taken for it.
    const Session* origin = nullptr;
  };
  std::unordered_map<uint64_t, RouteQueue> route_queues_;  // by queue id
  struct OpenRouteQueue {
    uint64_t queue = 0;
    Client* client = nullptr;  // valid while the entry exists (on_closed erases it)
  };
  std::unordered_map<ConnId, OpenRouteQueue> route_queue_of_;  // a client's open queue
  uint64_t next_route_queue_ = 0;
  std::unordered_map<ConnId, HeldAcks> held_acks_;

  LimitsConfig limits_;
  SessionLimits session_limits_;
  AuthHooks& hooks_;
  std::unique_ptr<SessionStore> sessions_;
  Router router_;
  BrokerStats stats_;
  std::mt19937_64 rng_;
  Config::SessionOwner session_owner_ = Config::SessionOwner::kIdentity;
  // Identity of clients whose auth hooks named none (AllowAllHooks in tests).
  std::shared_ptr<const std::string> anonymous_identity_ =
      std::make_shared<const std::string>("anonymous");
  size_t persistent_sessions_ = 0;  // sessions with clean session 0, online or not
  uint64_t now_ms_ = 0;  // the latest loop time seen (for work finished after a deferral)
  std::unordered_map<ConnId, RetainedJob> retained_jobs_;
  // Round robin: (client, job serial). A client's later job gets a new serial, so the
  // turns its earlier jobs left behind stay stale, never extra turns.
  std::deque<std::pair<ConnId, uint64_t>> retained_order_;
  uint64_t retained_serial_ = 0;
  std::deque<FanoutJob> fanouts_;
  std::vector<std::unique_ptr<Session>> graveyard_;  // removed while fan-outs held them
  OfflineSessions offline_;     // persistent sessions without a client, by expiry time
  bool expiry_due_ = false;     // an offline session expired, or a delayed will is due
  bool retained_full_ = false;  // a refusal was logged; reset by the next store
  uint64_t store_full_logged_ms_ = 0;  // loop time of the last store-full WARNING (0: none)
  bool shutting_down_ = false;
  std::string response_information_;  // 5.0; "%c": the client id
  cluster::Outbound* cluster_ = nullptr;  // set with [cluster]
  // The connected clients that presented a certificate, by the hour of its notAfter.
  static int64_t hour_of(int64_t t) { return t >= 0 ? t / 3600 : (t - 3599) / 3600; }
  void count_certificate(const Client& client, int delta);
  std::map<int64_t, size_t> certificate_expiry_;
  size_t certificates_connected_ = 0;
  // Clients whose SUBSCRIBE waits in awaiting_ for the cluster to know its filters.
  std::vector<ConnId> cluster_waits_;
  // The client each cluster ticket's acknowledgement belongs to, and publishers held
  // while the cluster is backlogged.
  std::unordered_map<uint64_t, ConnId> cluster_tickets_;
  std::unordered_map<ConnId, Client*> cluster_held_;
};

}  // namespace mqgate

#ifdef NDEBUG
#define MQGATE_BROKER_ENTRY() (void)0
#else
#define MQGATE_BROKER_ENTRY() const EntryCheck broker_entry_check_(running_)
#endif
