// A client's network connection on the event loop: reads bytes from a libuv TCP
// handle, cuts them into packets with the codec, hands packets to the broker, and
// writes the client's output back out, batched once per loop iteration.
//
// Memory per idle connection is kept small on purpose: reads land in one loop-wide
// buffer and only the tail of a packet that has not fully arrived is copied into the
// connection (`partial_`), so an idle connection holds no read buffer at all.
#pragma once

#include <uv.h>

#include <string>
#include <string_view>

#include "client.hpp"
#include "codec/decoder.hpp"
#include "tls.hpp"

namespace mqgate {

class Server;
class Listener;

class Connection final : public Client, public TlsSessionOwner {
 public:
  // Creates a connection for a socket accepted on `server_handle`; on failure returns
  // nullptr (the socket is already closed and the reason logged).
  static Connection* accept(Server& server, Listener& listener);

  void close(const char* reason) override;
  // A plugin's deferred decision: hold input (in order) until hold(false).
  void hold(bool on) override;
  size_t pending_output() const override {
    return out_.size() + write_in_flight_ + (tls_ && !tls_->busy() ? tls_->wire().size() : 0);
  }

  // Called by the server once per loop iteration for connections with pending output.
  void flush();
  // The broker is no longer congested: process the packets held meanwhile, read again.
  void resume_input();
  // Closes the socket now, whatever is still queued (shutdown, stuck writers).
  void force_close();
  bool closing() const { return closing_; }
  Listener& listener_ref() { return listener_; }
  // The TLS session, for TLS listeners (nullptr on plain ones).
  TlsSession* tls_session() { return tls_.get(); }
  uint64_t closing_since_ms() const { return closing_since_ms_; }

  // Intrusive links, owned by Server.
  Connection* prev = nullptr;
  Connection* next = nullptr;
  bool in_dirty_list = false;
  bool in_held_list = false;

 protected:
  void schedule_flush() override;

 private:
  Connection(Listener& listener, std::string peer);
  // The server is the loop's data: no per-connection pointer to it.
  Server& server() const;
  ~Connection() override;

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* handle);

  void process(std::string_view data);
  // Keeps `data` unprocessed and stops reading until resume_input().
  void hold_input(std::string_view data);
  void feed_tls(std::string_view ciphertext);
  bool on_tls_progress() override;
  void on_tls_handshake_done(const std::string& error) override;
  // Decodes and dispatches one whole packet; false if the connection is closing.
  bool dispatch(const codec::FixedHeader& header, std::string_view packet);
  void begin_uv_close();
  void pause_reading_if_backlogged();

  Listener& listener_;
  uv_tcp_t handle_;
  std::unique_ptr<TlsSession> tls_;
  std::string partial_;          // bytes of a packet not yet complete
  std::string held_;             // bytes after partial_ not processed while input is held
  size_t write_in_flight_ = 0;   // bytes handed to uv_write, not yet completed
  uint64_t closing_since_ms_ = 0;
  bool closing_ = false;
  bool uv_closing_ = false;
  bool write_pending_ = false;
  bool read_paused_ = false;  // backpressure: output backlog over max_outgoing_bytes
  bool input_held_ = false;   // the broker is congested (a fan-out in slices)
  bool auth_held_ = false;    // the broker awaits a plugin's decision about us
};

}  // namespace mqgate
