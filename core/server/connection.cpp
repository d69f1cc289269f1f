#include "server/connection.hpp"

#include <cstring>

#include "broker/broker.hpp"
#include "server/listener.hpp"
#include "server/server.hpp"

namespace mqgate {

namespace {

std::string peer_name(uv_tcp_t* handle) {
  sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getpeername(handle, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    if (uv_ip6_name(a, ip, sizeof ip) != 0) return "?";
    return std::string("[") + ip + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&addr);
  if (uv_ip4_name(a, ip, sizeof ip) != 0) return "?";
  return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
}

// A write handed to libuv: owns its bytes until the write completes.
struct WriteRequest {
  uv_write_t req;
  std::string data;
  size_t offset;
};

}  // namespace

// A lingering close (finish_close): the write side's shutdown request, and what the
// log line at the end says.
struct Connection::Linger final : Client::CloseState {
  uv_shutdown_t req;
  uint64_t since_ms = 0;
  uint64_t last_input_ms = 0;
  uint64_t dropped = 0;  // bytes read while lingering, never looked at
};

Connection::Connection(Listener& listener, std::string peer)
    : Client(&listener.config(), std::move(peer)) {}

Server& Connection::server() const {
  return *static_cast<Server*>(handle_.loop->data);
}

Listener& Connection::listener_ref() {
  return server().listener_at(listener()->index);
}

Connection::~Connection() = default;

Connection* Connection::accept(Server& server, Listener& listener) {
  auto* conn = new Connection(listener, std::string());
  int rc = uv_tcp_init(server.loop(), &conn->handle_);
  if (rc != 0) {
    // Not a handle yet: nothing to close. The pending socket stays in the backlog until
    // the next accept.
    LOG_WARN("listener \"%s\": cannot create a TCP handle: %s", listener.config().name.c_str(),
             uv_strerror(rc));
    delete conn;
    return nullptr;
  }
  conn->handle_.data = conn;
  rc = uv_accept(listener.stream(), reinterpret_cast<uv_stream_t*>(&conn->handle_));
  if (rc != 0) {
    LOG_WARN("listener \"%s\": accept failed: %s", listener.config().name.c_str(), uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->handle_),
             [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
    return nullptr;
  }
  conn->set_peer(peer_name(&conn->handle_));
  rc = uv_tcp_nodelay(&conn->handle_, 1);
  if (rc != 0)  // still a working connection, only slower for small packets
    CLIENT_LOG(log::Level::kWarning, *conn, "cannot set TCP_NODELAY: %s", uv_strerror(rc));
  conn->transport_ = listener.make_transport(*conn);
  listener.active_connections++;
  server.add_connection(conn);
  server.broker().on_open(*conn, server.now_ms());
  conn->update_reading();
  server.carry_out_requests();
  return conn;
}

void Connection::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(handle->data);
  buf->base = self->server().read_buffer();
  buf->len = self->server().read_buffer_size();
}

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (self->lingering_) {
    self->on_linger_read(nread);
    return;
  }
  if (nread > 0) {
    const std::string_view data(buf->base, static_cast<size_t>(nread));
    if (self->transport_)
      self->feed_transport(data);
    else
      self->on_bytes(data);
  } else if (nread == UV_EOF) {
    self->no_linger_ = true;  // nothing more can arrive: closing cannot reset
    self->close(self->state == State::kConnected
                    ? "connection closed by the client without DISCONNECT"
                    : "connection closed by the client");
  } else if (nread < 0) {
    self->no_linger_ = true;
    self->close(uv_strerror(static_cast<int>(nread)));
  }
  // The dispatch is over: the broker hears of the closes it asked for.
  self->server().carry_out_requests();
}

void Connection::feed_transport(std::string_view bytes) {
  std::string error;
  if (!transport_->input(bytes, *this, error) && !close_requested()) {
    CLIENT_LOG(log::Level::kInfo, *this, "%s; closing", error.c_str());
    close(error.c_str());
  }
  // Answers the layers owe the peer (a close_notify, a pong, the upgrade response), and
  // what the broker answered meanwhile.
  if (!transport_->busy()) flush();
}

bool Connection::on_layer_output(transport::StreamLayer&) {
  flush();
  return !close_requested();
}

void Connection::on_layer_ready(transport::StreamLayer& layer, const std::string& error) {
  if (!error.empty()) {
    CLIENT_LOG(log::Level::kInfo, *this, "%s; closing", error.c_str());
    flush();  // the alert
    close((std::string(layer.name()) + " handshake failed").c_str());
    server().carry_out_requests();
    return;
  }
  if (std::unique_ptr<TlsPeerInfo> info = layer.take_peer_info()) {
    set_tls(std::move(info));
    CLIENT_LOG(log::Level::kDebug, *this, "TLS established (%s, %s, %zu client certificate%s)",
               tls()->version.c_str(), tls()->cipher.c_str(), tls()->chain.size(),
               tls()->chain.size() == 1 ? "" : "s");
  }
  feed_transport({});  // what arrived with or after the handshake
  // Only the handshake's scratch strings: trimming the record buffers now would cost
  // page faults on the CONNECT/CONNACK that follow (the idle sweep does it later).
  if (transport_) transport_->release_idle_buffers(false);
  server().carry_out_requests();
}

void Connection::update_reading() {
  // Read unless something holds the input back: bytes kept while input is held for
  // the broker (one read's worth at most; with nothing kept, reading goes on, so a
  // client that hangs up while it waits is noticed), an output backlog, a close. A
  // lingering close reads (and drops) everything.
  const bool held_bytes = framer_.held() && framer_.buffered() > 0;
  const bool want =
      !uv_closing_ && (lingering_ || (!held_bytes && !read_paused_ && !close_requested()));
  if (want == reading_) return;
  const int rc = want ? uv_read_start(reinterpret_cast<uv_stream_t*>(&handle_), on_alloc, on_read)
                      : uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle_));
  if (rc == 0) {
    reading_ = want;
    return;
  }
  CLIENT_LOG(log::Level::kWarning, *this, "cannot %s reading: %s%s", want ? "start" : "stop",
             uv_strerror(rc), want ? "; closing" : "");
  if (want && lingering_)
    end_linger(uv_strerror(rc));
  else if (want)
    close(uv_strerror(rc));
}

void Connection::park_input() {
  framer_.hold();
  partial_since_ms = 0;  // waiting on the broker is not the client's delay
  update_reading();
  // Waiting for a congestion to end: the server dispatches it when the broker can take
  // it. Held by the broker: resume_input() queues it (on_resume_requested).
  if (!input_held()) server().queue_dispatch(this);
}

void Connection::on_resume_requested() {
  // Nothing kept: the next packets simply flow.
  if (framer_.held() && !close_requested()) server().queue_dispatch(this);
}

void Connection::dispatch_held() {
  // Held again by the broker since it was queued: its resume_input() queues it again.
  if (!framer_.held() || close_requested() || input_held()) return;
  framer_.resume();
  update_reading();
  dispatch_packets();
}

bool Connection::on_bytes(std::string_view data) {
  if (close_requested()) return false;
  server().broker().count_received(data.size());
  framer_.feed(data);
  dispatch_packets();
  return !close_requested();
}

void Connection::dispatch_packets() {
  Broker& broker = server().broker();
  while (!close_requested()) {
    if (!framer_.held() && (broker.congested() || input_held())) {
      // A big fan-out is going out in slices, or the broker holds this client's input:
      // the next packets wait.
      park_input();
    }
    const codec::Framer::Frame f = framer_.next(broker.limits().max_packet_size);
    if (f.status == codec::Framer::Status::kPacket) {
      dispatch(f.header, f.packet);
      continue;
    }
    if (f.status == codec::Framer::Status::kError) {
      broker.on_decode_error(*this, f.error, nullptr, nullptr);
    } else if (f.status == codec::Framer::Status::kOversized) {
      broker.on_oversized_packet(*this, f.header);
    }
    break;
  }
  update_reading();  // bytes kept while held stop the reading
  if (!framer_.partial()) {
    partial_since_ms = 0;
  } else if (partial_since_ms == 0 && !read_paused_) {
    partial_since_ms = server().now_ms();  // the packet_timeout clock starts
  }
}

void Connection::dispatch(const codec::FixedHeader& header, std::string_view packet) {
  codec::Packet decoded;
  const std::string_view body = packet.substr(header.header_length);
  codec::DecodeError err = codec::decode_body(header, body, protocol_level, decoded);
  if (err != codec::DecodeError::kNone) {
    server().broker().on_decode_error(*this, err, &header, &decoded);
    return;
  }
  // Keep-alive counts whole control packets [MQTT-3.1.2-24]: trickled bytes don't.
  last_rx_ms = server().now_ms();
  partial_since_ms = 0;  // the next packet's clock starts when its first bytes stay
  server().broker().on_packet(*this, decoded, last_rx_ms);
}

void Connection::schedule_flush() {
  server().mark_dirty(this);
}

void Connection::pause_reading_if_backlogged() {
  // Backpressure: a client that does not read what we send (acks, mostly; deliveries
  // are bounded elsewhere) is not read from until its backlog drains.
  if (read_paused_ || close_requested() ||
      pending_output() <= server().broker().limits().max_outgoing_bytes)
    return;
  read_paused_ = true;
  update_reading();
  partial_since_ms = 0;  // we are not reading: not the client's delay
  CLIENT_LOG(log::Level::kDebug, *this, "not reading: %zu bytes wait to be written",
             pending_output());
}

void Connection::flush() {
  flush_pending_ = false;
  if (uv_closing_) return;
  if (lingering_) {  // the write side is shut down (the broker writes to closed clients
    out_.clear();    // no more; this is only a safety net)
    return;
  }
  if (write_pending_) {  // written when the pending write completes
    pause_reading_if_backlogged();
    return;
  }
  std::string* wire = &out_;
  const size_t app_bytes = out_.size();
  if (transport_) {
    std::string error;
    wire = transport_->output(out_, error);
    if (wire == nullptr) {
      if (error.empty()) return;  // a worker owns a layer; flushed when it is done
      CLIENT_LOG(log::Level::kWarning, *this, "%s; closing", error.c_str());
      force_close();
      return;
    }
  }
  server().broker().count_sent(app_bytes - (wire == &out_ ? 0 : out_.size()));
  // The socket closes only once the broker has been told (report_close()).
  if (wire->empty()) {
    if (close_reported_ && out_.empty()) finish_close();
    return;
  }
  if (close_requested()) wrote_after_close_ = true;  // a last packet, or a goodbye
  uv_buf_t buf = uv_buf_init(wire->data(), static_cast<unsigned>(wire->size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&handle_), &buf, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    CLIENT_LOG(log::Level::kDebug, *this, "write failed: %s", uv_strerror(n));
    wire->clear();
    force_close();
    return;
  }
  if (static_cast<size_t>(n) == wire->size()) {
    wire->clear();
    if (wire->capacity() > 64 * 1024) std::string().swap(*wire);
    if (close_reported_) finish_close();
    return;
  }
  // The kernel took part of it: hand the rest to libuv, which writes when it can.
  auto* w = new WriteRequest;
  w->data.swap(*wire);
  w->offset = static_cast<size_t>(n);
  w->req.data = this;
  write_in_flight_ = w->data.size() - w->offset;
  write_pending_ = true;
  uv_buf_t rest = uv_buf_init(w->data.data() + w->offset, static_cast<unsigned>(write_in_flight_));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&handle_), &rest, 1, on_write);
  if (rc != 0) {
    CLIENT_LOG(log::Level::kDebug, *this, "write failed: %s", uv_strerror(rc));
    delete w;
    write_pending_ = false;
    write_in_flight_ = 0;
    force_close();
  }
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteRequest*>(req);
  auto* self = static_cast<Connection*>(req->data);
  delete w;
  self->write_pending_ = false;
  self->write_in_flight_ = 0;
  if (status != 0) {
    if (!self->close_requested()) self->close(uv_strerror(status));
    self->force_close();
    return;
  }
  self->flush();  // what accumulated meanwhile, or the deferred close
  self->server().broker().on_output_drained(*self);  // may end a subscriber's congestion
  if (self->read_paused_ && !self->close_requested() && !self->uv_closing_ &&
      self->pending_output() <= self->server().broker().limits().max_outgoing_bytes / 2) {
    self->read_paused_ = false;
    if (!self->framer_.held()) {
      if (self->framer_.partial()) self->partial_since_ms = self->server().now_ms();
      self->update_reading();
      self->server().carry_out_requests();
    }
  }
}

void Connection::on_close_requested() {
  // Only stop reading here: the broker may be in the middle of a call about this
  // client (or another one, on a takeover), so it is told later, by report_close().
  set_close_requested_ms(server().now_ms());
  update_reading();
  server().queue_close_report(this);
}

void Connection::report_close() {
  if (!close_requested() || close_reported_) return;
  close_reported_ = true;
  server().broker().on_closed(*this, close_reason(), server().now_ms());
  framer_.clear();  // unread input is dropped
  partial_since_ms = 0;
  if (transport_) {
    if (transport_->drop_queued_work())
      CLIENT_LOG(log::Level::kDebug, *this, "TLS handshake job dropped before a worker ran it");
    // Whatever is queued (a CONNACK with a refusal, say) goes out first, then the
    // layers' goodbyes (a WebSocket close frame, TLS's close_notify).
    if (!transport_->busy()) {
      server().broker().count_sent(out_.size());
      std::string error;
      transport_->shutdown(out_, error);
      if (!error.empty())
        CLIENT_LOG(log::Level::kInfo, *this, "%s; the last packets are not sent", error.c_str());
    }
  }
  flush();
}

void Connection::force_close() {
  close("closed by the broker");
  no_linger_ = true;
  begin_uv_close();
}

Connection::Linger* Connection::linger() const {
  return static_cast<Linger*>(close_state());
}

uint64_t Connection::linger_since_ms() const {
  return lingering_ ? linger()->since_ms : 0;
}

uint64_t Connection::linger_last_input_ms() const {
  return lingering_ ? linger()->last_input_ms : 0;
}

void Connection::finish_close() {
  if (uv_closing_ || lingering_) return;
  // Nothing was written since the close was requested (a 3.1.1 client's protocol
  // error, say): no last packet to lose. The client closed or failed: nothing to wait
  // for.
  if (no_linger_ || !wrote_after_close_) {
    begin_uv_close();
    return;
  }
  Server& s = server();
  if (!s.may_linger()) {
    CLIENT_LOG(log::Level::kDebug, *this,
               "%zu closing connections linger already (the most); closing at once", s.lingering());
    begin_uv_close();
    return;
  }
  auto state = std::make_unique<Linger>();
  state->since_ms = state->last_input_ms = s.now_ms();
  const int rc = uv_shutdown(&state->req, reinterpret_cast<uv_stream_t*>(&handle_), on_shutdown);
  if (rc != 0) {  // the socket is not connected any more, most likely: nothing to wait for
    CLIENT_LOG(log::Level::kDebug, *this, "cannot shut down the write side: %s; closing",
               uv_strerror(rc));
    begin_uv_close();
    return;
  }
  set_close_state(std::move(state));
  lingering_ = true;
  // A lingering connection is no longer one of the listener's clients (max_connections),
  // only a socket the server holds, for a bounded time (Server::kLingerMs), and only so
  // many (Server::kMaxLingering).
  listener_ref().active_connections--;
  s.linger_started();
  update_reading();
}

void Connection::on_shutdown(uv_shutdown_t* req, int status) {
  // UV_ECANCELED: the socket is closing already (and its close callback comes after).
  if (status == 0 || status == UV_ECANCELED) return;
  auto* self = static_cast<Connection*>(req->handle->data);
  self->end_linger(uv_strerror(status));
}

void Connection::on_linger_read(ssize_t nread) {
  if (nread > 0) {
    Linger& l = *linger();
    l.dropped += static_cast<uint64_t>(nread);  // in the loop's read buffer: dropped
    l.last_input_ms = server().now_ms();
    return;
  }
  if (nread == 0) return;  // nothing this time (EAGAIN)
  end_linger(nread == UV_EOF ? "the client closed" : uv_strerror(static_cast<int>(nread)));
}

void Connection::end_linger(const char* why) {
  if (!lingering_ || uv_closing_) return;
  const Linger& l = *linger();
  CLIENT_LOG(log::Level::kDebug, *this,
             "socket closed after lingering %llu ms: %s (%llu bytes read and dropped)",
             static_cast<unsigned long long>(server().now_ms() - l.since_ms), why,
             static_cast<unsigned long long>(l.dropped));
  begin_uv_close();
}

void Connection::begin_uv_close() {
  if (uv_closing_) return;
  if (!close_reported_) {
    report_close();  // flushes, and comes back here
    if (uv_closing_) return;
  }
  uv_closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_close);
}

void Connection::on_close(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  if (self->lingering_)
    self->server().linger_ended();  // no longer counted as the listener's (finish_close)
  else
    self->listener_ref().active_connections--;
  self->server().remove_connection(self);
  if (self->transport_) {
    // A worker may still run a TLS handshake step: this connection is deleted when the
    // step comes back (at once if none runs).
    self->transport_->abandon([self] { delete self; });
    return;
  }
  delete self;
}

}  // namespace mqgate
