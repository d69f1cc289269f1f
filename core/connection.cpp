#include "connection.hpp"

#include <cstring>

#include "broker.hpp"
#include "listener.hpp"
#include "server.hpp"

namespace mqgate {

namespace {

std::string peer_name(uv_tcp_t* handle) {
  sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getpeername(handle, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    uv_ip6_name(a, ip, sizeof ip);
    return std::string("[") + ip + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&addr);
  uv_ip4_name(a, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
}

// A write handed to libuv: owns its bytes until the write completes.
struct WriteRequest {
  uv_write_t req;
  std::string data;
  size_t offset;
};

}  // namespace

Connection::Connection(Listener& listener, std::string peer)
    : Client(&listener.config(), std::move(peer)), listener_(listener) {}

Server& Connection::server() const { return *static_cast<Server*>(handle_.loop->data); }

Connection::~Connection() = default;

Connection* Connection::accept(Server& server, Listener& listener) {
  auto* conn = new Connection(listener, std::string());
  uv_tcp_init(server.loop(), &conn->handle_);
  conn->handle_.data = conn;
  int rc = uv_accept(listener.stream(), reinterpret_cast<uv_stream_t*>(&conn->handle_));
  if (rc != 0) {
    LOG_WARN("listener \"%s\": accept failed: %s", listener.config().name.c_str(), uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->handle_),
             [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
    return nullptr;
  }
  conn->set_peer(peer_name(&conn->handle_));
  uv_tcp_nodelay(&conn->handle_, 1);
  if (listener.tls_generation()) {
    TlsWorkers& workers = *server.tls_workers();
    conn->tls_ = std::make_unique<TlsSession>(&listener.tls_generation(), workers.next_worker(),
                                              workers, *conn);
  }
  listener.active_connections++;
  server.add_connection(conn);
  server.broker().on_open(*conn, server.now_ms());
  rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&conn->handle_), on_alloc, on_read);
  if (rc != 0) conn->close(uv_strerror(rc));
  return conn;
}

void Connection::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(handle->data);
  buf->base = self->server().read_buffer();
  buf->len = self->server().read_buffer_size();
}

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread > 0) {
    const std::string_view data(buf->base, static_cast<size_t>(nread));
    if (self->tls_) {
      self->feed_tls(data);
    } else {
      self->server().broker().stats().bytes_received += static_cast<uint64_t>(nread);
      self->process(data);
    }
    return;
  }
  if (nread == UV_EOF) {
    self->close(self->state == State::kConnected ? "connection closed by the client without DISCONNECT"
                                                 : "connection closed by the client");
  } else if (nread < 0) {
    self->close(uv_strerror(static_cast<int>(nread)));
  }
}

void Connection::feed_tls(std::string_view ciphertext) {
  std::string error;
  const bool ok = tls_->feed(
      ciphertext,
      [this](std::string_view plain) {
        server().broker().stats().bytes_received += plain.size();
        process(plain);
        return !closing_;
      },
      server().read_buffer(), server().read_buffer_size(), error);
  if (!ok && !closing_) {
    CLIENT_LOG(log::Level::kInfo, *this, "%s; closing", error.c_str());
    close(error.c_str());
  }
  if (tls_->established()) flush();  // e.g. a close_notify answer, or nothing
}

bool Connection::on_tls_progress() {
  flush();
  return !closing_;
}

void Connection::on_tls_handshake_done(const std::string& error) {
  if (!error.empty()) {
    CLIENT_LOG(log::Level::kInfo, *this, "%s; closing", error.c_str());
    flush();  // the alert
    close("TLS handshake failed");
    return;
  }
  set_tls(tls_->take_peer_info());
  CLIENT_LOG(log::Level::kDebug, *this, "TLS established (%s, %s, %zu client certificate%s)",
             tls()->version.c_str(), tls()->cipher.c_str(), tls()->chain.size(),
             tls()->chain.size() == 1 ? "" : "s");
  feed_tls({});  // records that arrived with or after the handshake
  // Only the handshake's scratch strings: trimming the record buffers now would cost
  // page faults on the CONNECT/CONNACK that follow (the idle sweep does it later).
  if (tls_) tls_->release_idle_buffers(false);
}

void Connection::hold_input(std::string_view data) {
  // After partial_ (an incomplete packet, if any), in arrival order.
  held_.append(data);
  partial_since_ms = 0;  // waiting on the broker is not the client's delay
  if (input_held_) return;
  input_held_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle_));
  if (!auth_held_) server().hold_input(this);  // else hold(false) resumes it
}

void Connection::hold(bool on) {
  if (auth_held_ == on) return;
  auth_held_ = on;
  if (on || !input_held_ || closing_) return;
  if (server().broker().congested())
    server().hold_input(this);  // resumed with the others
  else
    resume_input();
}

void Connection::resume_input() {
  if (!input_held_ || closing_ || auth_held_) return;
  input_held_ = false;
  if (!read_paused_) uv_read_start(reinterpret_cast<uv_stream_t*>(&handle_), on_alloc, on_read);
  std::string held;
  held.swap(held_);
  process(held);
}

void Connection::process(std::string_view data) {
  if (input_held_) {
    hold_input(data);  // e.g. TLS plaintext decrypted from bytes read before the hold
    return;
  }
  const uint32_t limit = server().broker().limits().max_packet_size;
  // First finish a packet whose start arrived earlier.
  while (!partial_.empty() && !data.empty() && !closing_) {
    codec::HeaderResult h = codec::parse_fixed_header(partial_);
    if (h.status == codec::HeaderStatus::kIncomplete) {
      partial_.push_back(data[0]);  // the length field is at most 4 more bytes
      data.remove_prefix(1);
      continue;
    }
    if (h.status == codec::HeaderStatus::kError) {
      server().broker().on_decode_error(*this, h.error, nullptr, nullptr);
      return;
    }
    if (h.header.packet_length() > limit) {
      server().broker().on_oversized_packet(*this, h.header);
      return;
    }
    const size_t take = std::min(h.header.packet_length() - partial_.size(), data.size());
    partial_.append(data.substr(0, take));
    data.remove_prefix(take);
    if (partial_.size() == h.header.packet_length()) {
      std::string packet;
      packet.swap(partial_);  // dispatch may run long; keep the member empty meanwhile
      if (!dispatch(h.header, packet)) return;
    }
  }
  // Then whole packets straight from the read buffer.
  while (!data.empty() && !closing_) {
    if (server().broker().congested() || auth_held_) {
      // A big fan-out is going out in slices, or a plugin's decision about this client
      // is pending: the next packets wait for it.
      hold_input(data);
      return;
    }
    codec::HeaderResult h = codec::parse_fixed_header(data);
    if (h.status == codec::HeaderStatus::kError) {
      server().broker().on_decode_error(*this, h.error, nullptr, nullptr);
      return;
    }
    if (h.status == codec::HeaderStatus::kComplete) {
      if (h.header.packet_length() > limit) {
        server().broker().on_oversized_packet(*this, h.header);
        return;
      }
      if (data.size() >= h.header.packet_length()) {
        if (!dispatch(h.header, data.substr(0, h.header.packet_length()))) return;
        data.remove_prefix(h.header.packet_length());
        continue;
      }
      // Grow with the bytes that actually arrive: a header alone must not make us
      // reserve max_packet_size.
      partial_.reserve(std::min<size_t>(h.header.packet_length(), 64 * 1024));
    }
    partial_.assign(data);  // keep the incomplete tail
    break;
  }
  if (partial_.empty()) {
    partial_since_ms = 0;
    if (partial_.capacity() > 4096) std::string().swap(partial_);
  } else if (partial_since_ms == 0) {
    partial_since_ms = server().now_ms();  // the packet_timeout clock starts
  }
}

bool Connection::dispatch(const codec::FixedHeader& header, std::string_view packet) {
  codec::Packet decoded;
  const std::string_view body = packet.substr(header.header_length);
  codec::DecodeError err = codec::decode_body(header, body, protocol_level, decoded);
  if (err != codec::DecodeError::kNone) {
    server().broker().on_decode_error(*this, err, &header, &decoded);
    return false;
  }
  // Keep-alive counts whole control packets [MQTT-3.1.2-24]: trickled bytes don't.
  last_rx_ms = server().now_ms();
  partial_since_ms = 0;  // the next packet's clock starts when its first bytes stay
  server().broker().on_packet(*this, decoded, last_rx_ms);
  return !closing_;
}

void Connection::schedule_flush() { server().mark_dirty(this); }

void Connection::pause_reading_if_backlogged() {
  // Backpressure: a client that does not read what we send (acks, mostly; deliveries
  // are bounded elsewhere) is not read from until its backlog drains.
  if (read_paused_ || closing_ || pending_output() <= server().broker().limits().max_outgoing_bytes) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle_));
  read_paused_ = true;
  partial_since_ms = 0;  // we are not reading: not the client's delay
  CLIENT_LOG(log::Level::kDebug, *this, "not reading: %zu bytes wait to be written", pending_output());
}

void Connection::flush() {
  flush_pending_ = false;
  if (uv_closing_) return;
  if (write_pending_) {  // written when the pending write completes
    pause_reading_if_backlogged();
    return;
  }
  std::string* wire = &out_;
  if (tls_) {
    if (tls_->busy()) return;  // a worker owns the TLS buffers; flushed when it is done
    if (!out_.empty() && tls_->established()) {
      server().broker().stats().bytes_sent += out_.size();
      std::string error;
      if (!tls_->encrypt(out_, error)) {
        CLIENT_LOG(log::Level::kWarning, *this, "%s; closing", error.c_str());
        force_close();
        return;
      }
    }
    wire = &tls_->wire();
  } else {
    server().broker().stats().bytes_sent += out_.size();
  }
  if (wire->empty()) {
    if (closing_ && out_.empty()) begin_uv_close();
    return;
  }
  uv_buf_t buf = uv_buf_init(wire->data(), static_cast<unsigned>(wire->size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&handle_), &buf, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    wire->clear();
    force_close();
    return;
  }
  if (static_cast<size_t>(n) == wire->size()) {
    wire->clear();
    if (wire->capacity() > 64 * 1024) std::string().swap(*wire);
    if (closing_) begin_uv_close();
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
    if (!self->closing_) self->close(uv_strerror(status));
    self->force_close();
    return;
  }
  self->flush();  // what accumulated meanwhile, or the deferred close
  if (self->read_paused_ && !self->closing_ && !self->uv_closing_ &&
      self->pending_output() <= self->server().broker().limits().max_outgoing_bytes / 2) {
    self->read_paused_ = false;
    if (!self->partial_.empty() && !self->input_held_) self->partial_since_ms = self->server().now_ms();
    if (!self->input_held_) uv_read_start(reinterpret_cast<uv_stream_t*>(&self->handle_), on_alloc, on_read);
  }
}

void Connection::close(const char* reason) {
  if (closing_) return;
  closing_ = true;
  closing_since_ms_ = server().now_ms();
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle_));
  server().broker().on_closed(*this, reason, server().now_ms());
  if (tls_ && tls_->connection_closing())
    CLIENT_LOG(log::Level::kDebug, *this, "TLS handshake job dropped before a worker ran it");
  // Whatever is queued (a CONNACK with a refusal, say) goes out first, then TLS's
  // close_notify.
  if (tls_ && !tls_->busy()) {
    std::string error;
    if (!out_.empty() && tls_->established()) tls_->encrypt(out_, error);
    tls_->close_notify();
  }
  flush();
}

void Connection::force_close() {
  if (!closing_) close("closed by the broker");
  begin_uv_close();
}

void Connection::begin_uv_close() {
  if (uv_closing_) return;
  uv_closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), on_close);
}

void Connection::on_close(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  self->listener_.active_connections--;
  self->server().remove_connection(self);
  if (self->tls_ && self->tls_->busy()) {
    // A worker still runs this session's handshake step: the session deletes itself
    // and this connection when the step comes back.
    TlsSession* session = self->tls_.release();
    session->abandon([self] { delete self; });
    return;
  }
  delete self;
}

}  // namespace mqgate
