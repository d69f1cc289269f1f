// One MQTT network connection as the broker logic sees it: identity, protocol state
// and the bytes waiting to be written. The server's Connection (server/connection.cpp:
// TCP, TLS, WebSocket) derives from it and carries out its requests: flush the output,
// close, hold and resume input. The broker and sessions never touch sockets, so they
// can be unit tested with a fake (test/unit/fake_client.hpp).
//
// Closing and resuming input are requests, never calls back into the broker: the
// server carries them out after the broker call that asked has returned
// (docs/architecture.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/log.hpp"
#include "base/peer_info.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/message.hpp"

namespace mqgate {

class Session;
struct ListenerConfig;

// A connection's number, never reused in the process's life. The broker keys what it
// keeps about a connection by it, so a late answer (a plugin's decision, a disk write)
// can never be taken for a later connection that got the same address.
using ConnId = uint64_t;

class Client {
 public:
  enum class State : uint8_t {
    kAwaitConnect,  // accepted, no CONNECT yet
    kConnected,     // CONNACK 0 sent
    kClosing,       // closing: ignore further input, flush what is queued
  };

  Client(const ListenerConfig* listener, std::string peer)
      : conn_id_(++last_conn_id_), listener_(listener), peer_(std::move(peer)) {}
  virtual ~Client() { clear_plugin_data(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- identity (stable for the connection's life; used in every log line) ---------
  ConnId conn_id() const { return conn_id_; }
  const std::string& peer() const { return peer_; }
  const ListenerConfig* listener() const { return listener_; }
  const std::string& client_id() const { return client_id_; }
  void set_client_id(std::string id) { client_id_ = std::move(id); }
  const std::string* username() const {
    return extras_ && extras_->has_username ? &extras_->username : nullptr;
  }
  void set_username(std::string_view u) {
    extras().username.assign(u);
    extras().has_username = true;
  }
  // What a 5.0 client announced (null for 3.1 and 3.1.1 clients).
  const mqtt5::ClientState* v5() const { return extras_ ? extras_->v5.get() : nullptr; }
  mqtt5::ClientState* v5() { return extras_ ? extras_->v5.get() : nullptr; }
  void set_v5(mqtt5::ClientState state) {
    extras().v5 = std::make_unique<mqtt5::ClientState>(std::move(state));
  }
  const TlsPeerInfo* tls() const { return extras_ ? extras_->tls.get() : nullptr; }
  void set_tls(std::unique_ptr<TlsPeerInfo> tls) { extras().tls = std::move(tls); }

  // --- protocol state -----------------------------------------------------------------
  // (The small fields share one word: an idle connection's memory is a budget.)
  State state = State::kAwaitConnect;
  uint8_t protocol_level = 0;  // 0 until CONNECT
  bool clean_session = false;  // the CONNECT's flag
  bool graceful = false;       // DISCONNECT received: no will
  uint16_t keepalive = 0;      // seconds; 0 disables the check

 protected:
  bool flush_pending_ : 1 = false;
  bool close_requested_ : 1 = false;
  bool input_held_ : 1 = false;

 public:
  uint64_t last_rx_ms = 0;        // loop time of the last complete packet (or of accept)
  uint64_t partial_since_ms = 0;  // loop time a packet started arriving; 0: none pending
  MessagePtr will;                // published on an abnormal close
  Session* session = nullptr;
  // While a session is bound: the identity that owns it (the plugins' client_identity).
  // The session holds the string; the broker sets both pointers together.
  const std::string* identity = nullptr;

  // --- plugin data: one slot per plugin instance (mqgate_host_api.client_set_data) --
  void set_plugin_data(const void* plugin, void* data, void (*free_fn)(void*));
  void* plugin_data(const void* plugin) const;
  // Frees every slot; done when the client goes away.
  void clear_plugin_data();
  // The plugin host's memory of the last PUBLISH its plugins allowed for good (the same
  // answer for the same topic, QoS and retain flag, until the rules of `generation`
  // change). One per client; short topics only.
  static constexpr size_t kMaxRememberedTopic = 256;
  bool publish_allowed_before(std::string_view topic, uint8_t qos, bool retain,
                              uint64_t generation) const {
    if (!extras_ || extras_->allowed_generation != generation) return false;
    const Extras& e = *extras_;
    return e.allowed_qos == qos && e.allowed_retain == retain && e.allowed_topic == topic;
  }
  void remember_publish_allowed(std::string_view topic, uint8_t qos, bool retain,
                                uint64_t generation) {
    if (topic.size() > kMaxRememberedTopic) return;
    Extras& e = extras();
    e.allowed_topic.assign(topic);
    e.allowed_qos = qos;
    e.allowed_retain = retain;
    e.allowed_generation = generation;
  }
  void forget_publish_allowed() {
    if (extras_) extras_->allowed_generation = 0;
  }

  // --- output -------------------------------------------------------------------------
  // Packets are encoded straight into this buffer; the transport writes it out once
  // per loop iteration (so a burst of packets costs one system call).
  std::string& out() {
    if (!flush_pending_) {
      flush_pending_ = true;
      schedule_flush();
    }
    return out_;
  }
  // Bytes accepted but not yet written to the socket (our buffer + the kernel-bound
  // write in progress). A slow reader's backlog; QoS 0 is dropped beyond a limit.
  virtual size_t pending_output() const { return out_.size(); }

  // Asks the transport to close the connection after flushing what is queued;
  // `reason` is logged. Safe to call more than once (the first reason wins). Closing
  // is a request, never a call back into the broker: the transport reports it once,
  // through Broker::on_closed(), after the broker call that asked has returned. So the
  // broker can close any client (a takeover's older connection, say) from inside its
  // own code without being re-entered.
  void close(const char* reason) {
    if (close_requested_) return;
    close_requested_ = true;
    extras().close_reason = reason;
    on_close_requested();
  }
  bool close_requested() const { return close_requested_; }
  const char* close_reason() const {
    return extras_ && close_requested_ ? extras_->close_reason.c_str() : "";
  }
  // Loop time the transport noted when the close was requested (0 before that).
  uint64_t close_requested_ms() const {
    return extras_ && close_requested_ ? extras_->close_requested_ms : 0;
  }

  // --- input, held and resumed at the broker's request ----------------------------------
  // Hand the broker no more of this client's packets for now (a plugin's decision or the
  // next slice of its SUBSCRIBE is pending, or a subscriber it publishes to is
  // congested): the transport keeps them, in order, and stops reading once it holds
  // some. Takes effect before the next packet.
  void hold_input() { input_held_ = true; }
  // The broker can take this client's packets again. A request, like close(): what was
  // kept is dispatched by the server after the broker call that asked has returned.
  void resume_input() {
    if (!input_held_) return;
    input_held_ = false;
    on_resume_requested();
  }
  bool input_held() const { return input_held_; }

 protected:
  virtual void schedule_flush() = 0;
  // close() was called the first time: stop reading and arrange for the report.
  virtual void on_close_requested() = 0;
  // resume_input() was called: arrange for the kept packets to be dispatched.
  virtual void on_resume_requested() = 0;
  void set_peer(std::string peer) { peer_ = std::move(peer); }
  // From on_close_requested(): kept beside the reason, in what only closing connections
  // allocate.
  void set_close_requested_ms(uint64_t ms) { extras().close_requested_ms = ms; }
  // What the transport keeps about a connection only while it closes (the server's
  // lingering close, server/connection.cpp), in what only closing connections allocate.
  struct CloseState {
    virtual ~CloseState() = default;
  };
  CloseState* close_state() const { return extras_ ? extras_->close_state.get() : nullptr; }
  void set_close_state(std::unique_ptr<CloseState> state) {
    extras().close_state = std::move(state);
  }
  std::string out_;

 private:
  struct PluginSlot {
    const void* plugin;
    void* data;
    void (*free_fn)(void*);
  };
  // What most connections never need, allocated on first use (an idle connection's
  // memory is a budget: see docs/operations.md, "Performance").
  struct Extras {
    std::string username;
    bool has_username = false;
    std::unique_ptr<TlsPeerInfo> tls;
    std::vector<PluginSlot> plugin_slots;
    std::string close_reason;  // only closing connections allocate this
    uint64_t close_requested_ms = 0;
    std::unique_ptr<CloseState> close_state;
    std::unique_ptr<mqtt5::ClientState> v5;
    std::string allowed_topic;  // publish_allowed_before()
    uint64_t allowed_generation = 0;
    uint8_t allowed_qos = 0;
    bool allowed_retain = false;
  };
  Extras& extras() {
    if (!extras_) extras_ = std::make_unique<Extras>();
    return *extras_;
  }

  static inline ConnId last_conn_id_ = 0;  // the loop's thread only
  ConnId conn_id_;
  const ListenerConfig* listener_;
  std::string peer_;
  std::string client_id_;
  std::unique_ptr<Extras> extras_;
};

}  // namespace mqgate

namespace mqgate {

// Logs one line about a client: `client="id" peer=addr listener=name: message`.
void client_log(log::Level level, const Client& client, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace mqgate

#define CLIENT_LOG(lvl, client, ...)                                                 \
  do {                                                                               \
    if (::mqgate::log::enabled(lvl)) ::mqgate::client_log(lvl, client, __VA_ARGS__); \
  } while (0)
