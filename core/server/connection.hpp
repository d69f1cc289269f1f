// A client's network connection on the event loop: reads bytes from a libuv TCP
// handle, passes them up through the listener's transport layers (TLS, WebSocket: see
// transport/stream_layer.hpp), cuts what comes out into packets with the codec, hands
// packets to the broker, and writes the client's output back down, batched once per
// loop iteration.
//
// Memory per idle connection is kept small on purpose: reads land in one loop-wide
// buffer and only the tail of a packet that has not fully arrived is copied into the
// connection (by its codec::Framer), so an idle connection holds no read buffer at all.
//
// A close the broker asks for after queuing a last packet (a DISCONNECT with a reason
// code, a refusing CONNACK, TLS's close_notify, a WebSocket close frame) lingers: once
// that output is written the write side is shut down (FIN), and what the client still
// sends is read and dropped, unparsed, until it closes too, sends nothing for
// Server::kLingerQuietMs, or Server::kLingerMs pass. Closing with unread input would make
// the kernel reset the connection, and a client still sending could lose the last packet
// before reading it.
#pragma once

#include <uv.h>

#include <string>
#include <string_view>

#include "client/client.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/framer.hpp"
#include "transport/stack.hpp"

namespace mqgate {

class Server;
class Listener;

class Connection final : public Client, transport::Receiver, transport::LayerEvents {
 public:
  // Creates a connection for a socket accepted on `listener`; on failure returns
  // nullptr (the socket is already closed and the reason logged).
  static Connection* accept(Server& server, Listener& listener);

  size_t pending_output() const override {
    return out_.size() + write_in_flight_ + (transport_ ? transport_->pending_output() : 0);
  }

  // Called by the server once per loop iteration for connections with pending output.
  void flush();
  // Called by the server (Server::carry_out_requests), never from inside a broker call:
  // dispatches the packets kept while the broker could not take them, and reads again.
  void dispatch_held();
  // Closes the socket now, whatever is still queued (shutdown, stuck writers).
  void force_close();
  // Tells the broker that close() was requested (once), then flushes and closes the
  // socket. Called by the server after the dispatch that requested it returned.
  void report_close();
  bool closing() const { return close_requested(); }
  // The last output is written, the write side shut down: input is read and dropped
  // until the client closes or end_linger().
  bool lingering() const { return lingering_; }
  uint64_t linger_since_ms() const;
  // The loop time of the last bytes read while lingering (linger_since_ms() if none).
  uint64_t linger_last_input_ms() const;
  // Stops lingering and closes the socket; `why` is logged.
  void end_linger(const char* why);
  Listener& listener_ref();
  // The transport layers above TCP (nullptr on plain TCP listeners).
  transport::Stack* transport() { return transport_.get(); }
  uint64_t closing_since_ms() const { return close_requested_ms(); }

 protected:
  void schedule_flush() override;
  void on_close_requested() override;
  void on_resume_requested() override;

 private:
  Connection(Listener& listener, std::string peer);
  // Through the loop's data, and the listener through the server: no pointers of its
  // own (an idle connection's memory is a budget).
  Server& server() const;
  ~Connection() override;

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* handle);
  static void on_shutdown(uv_shutdown_t* req, int status);

  // A lingering close's state (only closing connections allocate it).
  struct Linger;
  Linger* linger() const;
  // The output of a reported close is written: lingers (see above), or closes the
  // socket at once when the client is gone, nothing was written since the close was
  // requested, or Server::kMaxLingering connections linger already.
  void finish_close();
  // What a read brings while lingering: dropped; the end of the stream ends the linger.
  void on_linger_read(ssize_t nread);

  // Bytes of the MQTT stream (from the socket, or from the top transport layer).
  bool on_bytes(std::string_view data) override;
  // Cuts what the framer has into packets and dispatches them, until it needs more
  // bytes, the broker is congested or holds this client's input, or the connection
  // closes.
  void dispatch_packets();
  // Keeps the input unprocessed and stops reading until dispatch_held().
  void park_input();
  // Starts or stops reading the socket to match the state.
  void update_reading();
  // Bytes from the socket through the transport layers.
  void feed_transport(std::string_view bytes);
  bool on_layer_output(transport::StreamLayer& layer) override;
  void on_layer_ready(transport::StreamLayer& layer, const std::string& error) override;
  // Decodes and dispatches one whole packet.
  void dispatch(const codec::FixedHeader& header, std::string_view packet);
  void begin_uv_close();
  void pause_reading_if_backlogged();

  uv_tcp_t handle_;
  std::unique_ptr<transport::Stack> transport_;
  codec::Framer framer_;        // input not yet dispatched (a partial packet, held bytes)
  size_t write_in_flight_ = 0;  // bytes handed to uv_write, not yet completed
  bool close_reported_ : 1 = false;  // the broker was told (Broker::on_closed)
  bool uv_closing_ : 1 = false;
  bool write_pending_ : 1 = false;
  bool read_paused_ : 1 = false;  // backpressure: output backlog over max_outgoing_bytes
  bool reading_ : 1 = false;      // libuv reads the socket (update_reading keeps it right)
  bool wrote_after_close_ : 1 = false;  // bytes went out after close() (a last packet)
  bool no_linger_ : 1 = false;          // the client closed or failed, or the close is forced
  bool lingering_ : 1 = false;          // see lingering()

 public:
  // Owned by Server. Declared last, next to the flags above, so that all the flags
  // share one word (an idle connection's memory is a budget).
  bool in_dirty_list : 1 = false;
  bool in_held_list : 1 = false;
  bool in_close_list : 1 = false;
  Connection* prev = nullptr;  // intrusive list of live connections
  Connection* next = nullptr;
};

}  // namespace mqgate
