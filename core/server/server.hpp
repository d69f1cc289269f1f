// The server owns the event loop and wires everything to it: listeners, the broker,
// signals (SIGINT/SIGTERM stop, SIGHUP reloads), the keep-alive sweep, $SYS
// publishing, and the end-of-iteration flush of every connection with output.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/deferred.hpp"
#include "broker/broker.hpp"
#include "cluster/bridge.hpp"
#include "config/config.hpp"
#include "console/host.hpp"
#include "plugin/auth.hpp"

namespace mqgate {

class Connection;
class Listener;
class LoopLag;
class Persistence;
namespace store {
class SqliteJournal;
}
class SysTopics;
namespace http {
class Endpoint;
}
namespace console {
class Console;
}
// TLS stays behind server.cpp (mbedTLS, threads): only pointers here.
class TlsGeneration;
class TlsWorkers;

class Server final : public console::Host {
 public:
  Server(Config config, AuthHooks& hooks);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener. On failure logs why and returns false (nothing listens).
  bool start();
  // Runs the loop until stopped by a signal; returns the process exit code.
  int run();

  // --- for connections and listeners ----------------------------------------------
  uv_loop_t* loop() { return &loop_; }
  Broker& broker() { return broker_; }
  const Config& config() const { return config_; }
  uint64_t now_ms() { return uv_now(&loop_); }
  bool shutting_down() const { return shutting_down_; }
  // One loop-wide read buffer: every read lands here first.
  char* read_buffer() { return read_buffer_.get(); }
  size_t read_buffer_size() const { return kReadBufferSize; }
  // The listener of ListenerConfig::index `index` (listeners are made in configuration
  // order and live as long as the server).
  Listener& listener_at(size_t index) { return *listeners_[index]; }
  void add_connection(Connection* c);
  void remove_connection(Connection* c);
  void mark_dirty(Connection* c);
  // A connection keeps packets the broker could not take (it was congested, or it
  // resumed the client's input): carry_out_requests() dispatches them once it can.
  void queue_dispatch(Connection* c);
  // A connection's close was requested (Client::close): carry_out_requests() tells the
  // broker.
  void queue_close_report(Connection* c);
  // Carries out what broker calls requested of connections: reports closes
  // (Broker::on_closed) and dispatches kept input, in the order requested, until none is
  // left or the broker is congested. Called after every call into the broker from the
  // loop (a read, a decision, a slice, a sweep...), never from inside one: this is how
  // the broker acts on connections without being re-entered.
  void carry_out_requests();
  // Lingering closes (Connection::finish_close): the write side shut down after the last
  // packet, the client's input read and dropped until it closes, for at most kLingerMs,
  // or until nothing has come for kLingerQuietMs (a client that is not sending loses
  // nothing to a close: what it has not read yet is still delivered; a dead one never
  // closes), both ended by the sweep, so up to kSweepIntervalMs later; and at most
  // kMaxLingering at once (more close at once, as without lingering): each holds a
  // socket, and a flood of clients provoking disconnects must not run the process out of
  // file descriptors.
  static constexpr uint64_t kLingerMs = 2000;
  static constexpr uint64_t kLingerQuietMs = 500;
  static constexpr size_t kMaxLingering = 1024;
  bool may_linger() const { return lingering_ < kMaxLingering; }
  size_t lingering() const { return lingering_; }
  void linger_started() { ++lingering_; }
  void linger_ended() { --lingering_; }
  // The TLS handshake threads (nullptr when no listener uses TLS).
  TlsWorkers* tls_workers() { return tls_workers_.get(); }

  // Reload hook: later subsystems (TLS material, plugins) register here.
  using ReloadHook = std::function<void(const Config& new_config)>;
  void on_reload(ReloadHook hook) { reload_hooks_.push_back(std::move(hook)); }
  // GET /healthz: every listener is listening (started, not shutting down).
  bool healthy() const { return started_ && !shutting_down_; }
  // GET /healthz's further lines: the cluster's state with [cluster] (a node without
  // NATS still serves its local clients: it stays healthy, and says so).
  std::string health_detail() const;
  // GET /metrics: the exposition text (bounded work; see metrics.hpp).
  std::string metrics_text();

  // --- the console (console/host.hpp; console_host.cpp) ----------------------------------
  Broker& console_broker() override { return broker_; }
  const Config& console_config() const override { return config_; }
  uint64_t console_now_ms() override { return now_ms(); }
  void write_broker(console::Json& out) override;
  void console_disconnect(Client& client, const char* why) override;
  void reload_listener_tls(const std::string& name, std::function<void(bool ok)> then) override;
  size_t disconnect_certificate(const std::string& issuer_raw, const std::string& serial_raw,
                                const char* why) override;

  // Called about once a second with the loop time.
  using TickHook = std::function<void(uint64_t now_ms)>;
  void on_tick(TickHook hook) { tick_hooks_.push_back(std::move(hook)); }

 private:
  static constexpr size_t kReadBufferSize = 64 * 1024;
  static constexpr uint64_t kSweepIntervalMs = 250;
  static constexpr uint64_t kCloseGraceMs = 5000;  // flush time for a closing connection
  static constexpr uint64_t kTlsIdleTrimMs = 2000;  // idle time before TLS buffers are trimmed
  static constexpr int kFlowRounds = 8;             // flow-control resumes per loop iteration

  static void on_signal(uv_signal_t* handle, int signum);
  static void on_check(uv_check_t* handle);
  // Before the loop polls: what this iteration's timer callbacks ($SYS, the sweep, the
  // plugins' tick) asked of connections is carried out and flushed, not left until the
  // poll returns (which, on a quiet broker, is the next timer).
  static void on_prepare(uv_prepare_t* handle);
  static void on_idle(uv_idle_t* handle);
  // Keeps the broker's sliced work (Broker::run_slice) going, one slice per iteration.
  void schedule_slices();
  static void on_sweep(uv_timer_t* handle);
  void flush_dirty();
  void sweep();
  void reload();
  void begin_shutdown(const char* why);
  // systemd (base/sd_notify.hpp): STATUS= when the summary changed; WATCHDOG=1 pings.
  void notify_status(const char* prefix = nullptr);
  static void on_watchdog(uv_timer_t* handle);
  std::string last_status_;
  uv_timer_t watchdog_timer_;
  // [persistence]: opens the store, loads it into the broker (before listening).
  bool open_store();
  // SIGHUP's TLS part: loads the new material on libuv's thread pool (TlsReload), then
  // installs it on the loop. A SIGHUP during a load waits for it, then loads once more.
  struct TlsReload;
  void reload_tls(const Config& fresh);
  // False if nothing was started (no listener to reload, or the thread pool refused).
  bool start_tls_reload(const std::vector<ListenerConfig>& fresh);
  // The console's reload_listener_tls callbacks: of the reload running, and of the one
  // waiting for it. Each gets whether its listener's new material was installed.
  using TlsReloadDone = std::pair<std::string, std::function<void(bool)>>;
  std::vector<TlsReloadDone> tls_reload_done_, tls_reload_done_waiting_;
  void tls_reload_finished(const std::vector<std::string>& installed);
  void finish_tls_reload(TlsReload& reload);
  void disconnect_revoked(Listener& listener, const TlsGeneration& generation);
  void free_retired_tls();
  void check_tls_health(uint64_t now_ms);
  // [http]'s TLS material as the listeners': one load running, the latest SIGHUP's
  // waiting for it (an older load finishing last must not win).
  void reload_http_tls(const HttpConfig& fresh);
  bool start_http_tls_reload(const ListenerConfig& fresh);
  // The [http] endpoint, if configured; false (logged) if it cannot listen.
  bool start_http();
  void reload_http(const Config& fresh);
  // [cluster]: messages from other nodes into the broker, a budget at a time, while it
  // is not congested (then the check handle tries again).
  void drain_cluster();
  static void on_cluster_idle(uv_idle_t* handle);

  Config config_;
  uv_loop_t loop_;
  AuthHooks& hooks_;
  // Declared before the broker, which holds a pointer to it: destroyed after it.
  std::unique_ptr<cluster::Bridge> cluster_;
  uv_idle_t cluster_idle_;  // active while inbound messages wait beyond one budget
  Broker broker_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<uint64_t> accepted_;  // connections accepted, by listener index (metrics)
  std::unique_ptr<http::Endpoint> http_;
  std::shared_ptr<const TlsGeneration> http_tls_;  // [http] ssl: what new handshakes use
  std::unique_ptr<console::Console> console_;  // [http] console = true
  void reload_console(const HttpConfig& fresh);
  std::unique_ptr<LoopLag> lag_;
  bool started_ = false;
  uint64_t started_ms_ = 0;
  std::unique_ptr<SysTopics> sys_;
  std::unique_ptr<TlsWorkers> tls_workers_;
  std::unique_ptr<DeferredQueue> deferred_;  // plugins' decisions from other threads
  std::unique_ptr<store::SqliteJournal>
      journal_;  // [persistence]; its completions come through deferred_
  std::unique_ptr<Persistence> persistence_;
  uint64_t last_stale_crl_log_ms_ = 0;
  bool tls_reload_running_ = false;
  std::optional<std::vector<ListenerConfig>> tls_reload_waiting_;  // latest SIGHUP's listeners
  bool http_tls_reload_running_ = false;
  std::optional<ListenerConfig> http_tls_reload_waiting_;  // latest SIGHUP's [http]
  // Generations replaced by a reload, until no connection uses them (then freed off the loop).
  std::vector<std::shared_ptr<const TlsGeneration>> retired_tls_;
  std::unique_ptr<char[]> read_buffer_;
  Connection* connections_ = nullptr;  // all live connections (intrusive list)
  std::vector<Connection*> dirty_;     // connections with output to flush
  std::vector<Connection*> held_;      // connections with input to dispatch (FIFO)
  std::vector<Connection*> closes_;    // close requested, broker not told yet
  size_t lingering_ = 0;               // connections lingering (in connections_ still)
  void report_closes();
  void dispatch_held_inputs();
  std::vector<ReloadHook> reload_hooks_;
  std::vector<TickHook> tick_hooks_;
  uint64_t last_tick_ms_ = 0;
  uv_signal_t sigint_, sigterm_, sighup_;
  uv_check_t check_;
  uv_prepare_t prepare_;
  uv_idle_t idle_;  // active while the broker has runnable sliced work
  // The last slice moved nothing (paced by slow clients): retry when clients send
  // something (bytes_received moved) or at the next sweep.
  bool slices_blocked_ = false;
  uint64_t blocked_at_bytes_received_ = 0;
  uv_timer_t sweep_timer_;
  bool shutting_down_ = false;
  uint64_t shutdown_started_ms_ = 0;
};

}  // namespace mqgate
