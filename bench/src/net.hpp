// The generator's plumbing: one libuv loop per worker thread, and MQTT client
// connections (TCP, optionally TLS) that batch their output once per loop iteration.
//
// Every connection belongs to one worker and is only touched on that worker's thread;
// the main thread talks to workers with post() and reads their atomic counters.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mqtt/decoder.hpp"
#include "tls.hpp"
#include "ws_client.hpp"

namespace mqgate::bench {

// Where the broker listens: a loopback address only.
struct Target {
  sockaddr_storage addr{};
  std::string text;  // "127.0.0.1:1883", "[::1]:1883"
  std::string ws_path;  // non-empty: MQTT over WebSocket, upgrading this path
};

// Parses host and port; only 127.0.0.1, ::1 and localhost are accepted, so the
// generator can never load anything but this machine.
bool make_target(const std::string& host, int port, Target& out, std::string& error);

// Why a connection failed.
enum class Fail : uint8_t { kConnect, kTls, kRefused, kClosed, kTimeout, kProtocol };
inline constexpr int kFailKinds = 6;
const char* fail_name(Fail kind);

class Worker {
 public:
  Worker(int index, const Target& target, std::shared_ptr<const tls::Settings> tls);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread; throws if its TLS context cannot be made (bad files).
  void start();
  // Runs `fn` on the worker's thread (from any thread).
  void post(std::function<void()> fn);
  // Runs `fn` on the worker's thread and waits for it.
  void run_sync(std::function<void()> fn);
  // From any thread: calls the wake hook soon on the worker's thread (coalesced).
  void wake();
  // Stops the loop once everything posted so far has run, and joins the thread. Every
  // connection must be closed by then.
  void stop();

  int index() const { return index_; }
  uv_loop_t* loop() { return &loop_; }
  const Target& target() const { return target_; }
  tls::Context* tls() { return tls_.get(); }
  char* read_buffer() { return read_buffer_.get(); }
  static constexpr size_t kReadBufferSize = 256 * 1024;
  // CPU seconds the thread used; valid after stop().
  double cpu_seconds() const { return cpu_seconds_; }

  // Hooks, set before start(): called every 100 ms; after a wake(); repeatedly while
  // busy (an idle handle keeps the loop from blocking).
  std::function<void()> tick_hook;
  std::function<void()> wake_hook;
  std::function<void()> busy_hook;
  void set_busy(bool busy);

  // Connections with output to flush at the end of this loop iteration.
  void add_dirty(class Conn* c) { dirty_.push_back(c); }
  void remove_dirty(class Conn* c);

 private:
  void thread_main();
  static void on_async(uv_async_t* h);
  static void on_check(uv_check_t* h);
  static void on_tick(uv_timer_t* h);
  static void on_idle(uv_idle_t* h);

  int index_;
  Target target_;
  std::shared_ptr<const tls::Settings> tls_settings_;
  std::unique_ptr<tls::Context> tls_;
  std::unique_ptr<char[]> read_buffer_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_check_t check_{};
  uv_timer_t tick_{};
  uv_idle_t idle_{};
  bool busy_ = false;
  std::vector<Conn*> dirty_;
  std::vector<Conn*> flushing_;
  std::mutex mutex_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> wake_requested_{false};
  std::thread thread_;
  std::string start_error_;
  double cpu_seconds_ = 0;
};

// One MQTT client connection. Subclasses react to packets; the base does TCP, TLS,
// framing and write batching. A Conn can be opened again after it has closed.
class Conn {
 public:
  explicit Conn(Worker& worker);
  virtual ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  Worker& worker() { return worker_; }
  // Where open() connects: the worker's target unless set_target() gave another (it must
  // outlive the connection), e.g. the subscribers' node of a cluster (--sub-port).
  const Target& target() const { return target_ ? *target_ : worker_.target(); }
  void set_target(const Target* target) { target_ = target; }

  // Connects to target(), then does the TLS handshake if the worker has TLS;
  // on_established() or on_failed() follows.
  void open(const tls::SavedSession* resume = nullptr);
  // Plaintext MQTT bytes to send: append to out(); they go out at the end of the loop
  // iteration (or at flush()).
  std::string& out() {
    if (state_ != State::kIdle) mark_dirty();
    return out_;
  }
  void flush();
  // For the worker: the connection left the dirty list.
  void flush_from_worker() {
    dirty_ = false;
    flush();
  }
  // Sends what is queued (and a TLS close_notify), then closes.
  void close_gracefully();
  // Sends what is queued (and a TLS close_notify), then waits for the broker to close
  // (as it does after DISCONNECT) before closing: the broker's side then holds the
  // TIME_WAIT state, which spares the generator's kernel a long ephemeral-port search
  // on every connect. The peer's close is not a failure.
  void close_after_peer();
  bool awaiting_peer_close() const { return expect_eof_; }
  // Closes at once; on_closed() follows. Harmless if already closing or closed.
  void close();

  bool established() const { return state_ == State::kOpen; }
  // Stops or restarts reading the socket (a deliberately slow or stalled reader).
  void set_reading(bool on);
  bool closed() const { return state_ == State::kIdle; }
  // Bytes queued or being written.
  size_t pending_output() const {
    return out_.size() + wire_.size() + (writing_.size() - writing_offset_);
  }
  tls::Session* tls_session() { return tls_.get(); }
  uint64_t opened_at_ns() const { return opened_at_ns_; }

 protected:
  virtual void on_established() = 0;
  virtual void on_packet(const codec::FixedHeader& header, std::string_view body) = 0;
  // Called once per failed attempt, before the connection closes.
  virtual void on_failed(Fail kind, const std::string& detail) = 0;
  // The handle is closed: the Conn may be opened again or destroyed.
  virtual void on_closed() {}
  // All output has been written (publishers use it to refill).
  virtual void on_drained() {}
  // After each batch of bytes read has been processed.
  virtual void on_read_done() {}

  // Reports a failure (once) and closes.
  void fail(Fail kind, const std::string& detail);

 private:
  enum class State : uint8_t { kIdle, kConnecting, kHandshake, kUpgrade, kOpen, kClosing };

  static void on_connect(uv_connect_t* req, int status);
  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* handle);

  void mark_dirty() {
    if (!dirty_) {
      dirty_ = true;
      worker_.add_dirty(this);
    }
  }
  void received(std::string_view data);
  void continue_handshake();
  // TCP (and TLS) is up: upgrade to WebSocket if asked, else the connection is open.
  void transport_ready();
  void upgrade_received(std::string_view data);
  // Plaintext from the broker: WebSocket frames or MQTT bytes.
  void plaintext(std::string_view data);
  void process(std::string_view data);
  size_t parse(std::string_view data);
  // Encrypts what out() holds and queues a close_notify (TLS only); false if the
  // connection had to be closed instead.
  bool seal_output();
  void start_write();
  void begin_close();
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }

  Worker& worker_;
  const Target* target_ = nullptr;  // null: the worker's
  State state_ = State::kIdle;
  bool dirty_ = false;
  bool failed_ = false;
  bool close_after_write_ = false;
  bool expect_eof_ = false;
  uv_tcp_t handle_{};
  uv_connect_t connect_req_{};
  uv_write_t write_req_{};
  std::unique_ptr<tls::Session> tls_;
  std::string out_;      // plaintext not yet handed to TLS / the socket
  std::string wire_;     // bytes for the socket, waiting for the write in flight
  std::string writing_;  // bytes of the write in flight
  size_t writing_offset_ = 0;
  bool write_in_flight_ = false;
  std::string in_;     // the start of a packet that has not fully arrived
  std::string plain_;  // decrypted bytes (TLS)
  std::unique_ptr<ws::ServerFrames> ws_;  // WebSocket targets
  std::string ws_in_;     // the upgrade response so far; MQTT bytes out of frames
  std::string ws_frame_;  // out() wrapped in a frame
  uint64_t opened_at_ns_ = 0;
};

}  // namespace mqgate::bench
