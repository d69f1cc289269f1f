#include "http/endpoint.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "base/log.hpp"
#include "http/metrics_text.hpp"

namespace mqgate::http {

// One connection's life: reading its request head, writing the answer, then draining
// what the client still sends until it closes (closing a socket with unread input
// resets it, and the client could lose the answer). The timer bounds each phase. Over
// HTTPS its channel reports handshake steps and hands request bytes up.
struct Endpoint::Exchange final : Channel::Events {
  explicit Exchange(const Limits& limits) : parser(limits) {}
  bool on_channel_output() override {
    endpoint->write_tls_output(this);
    return !closed;
  }
  void on_channel_ready(const std::string& error) override;
  bool on_channel_bytes(std::string_view bytes) override {
    endpoint->on_request_bytes(this, bytes);
    return !closed && phase == Phase::kReading;
  }
  // kAnswering: the head is read and a console handler owes the answer.
  enum class Phase : uint8_t { kReading, kAnswering, kWriting, kDraining };
  Endpoint* endpoint = nullptr;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  uv_shutdown_t shutdown;
  RequestParser parser;
  std::string response;
  std::string peer;
  std::string addr;      // the peer's IP address, for the per-address limit
  size_t drained = 0;    // bytes read and thrown away after the head
  size_t tls_read = 0;   // HTTPS: encrypted bytes read before the answer
  int handles_open = 0;  // tcp and timer: freed when both are closed
  uint64_t serial = 0;
  Phase phase = Phase::kReading;
  bool peer_eof = false;  // the client closed its side while the answer was being written
  bool closed = false;
  Exchange* prev = nullptr;
  Exchange* next = nullptr;
  std::unique_ptr<Channel> tls;  // HTTPS only
  char buffer[2048];
};

void Endpoint::Exchange::on_channel_ready(const std::string& error) {
  if (closed) return;
  if (!error.empty()) {
    LOG_INFO("http: %s: %s; closing", peer.c_str(), error.c_str());
    endpoint->write_tls_output(this);  // the alert
    endpoint->finish(this);
    return;
  }
  std::string why;
  // What arrived with or after the client's Finished: the request, perhaps whole.
  if (!tls->input({}, why)) {
    LOG_DEBUG("http: %s: %s; closing", peer.c_str(), why.c_str());
    endpoint->close(this);
    return;
  }
  endpoint->write_tls_output(this);
}

// Same time whether or not a prefix matches: the token is a secret.
bool equal_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// "Bearer <token>", the scheme case-insensitively (RFC 9110 11.1).
bool bearer_matches(const std::string* header, const std::string& token) {
  if (header == nullptr || header->size() < 7) return false;
  static constexpr std::string_view kScheme = "bearer ";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = (*header)[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return false;
  }
  return equal_secret(std::string_view(*header).substr(kScheme.size()), token);
}

namespace {

// What a client may send after its request head before it is cut off.
constexpr size_t kMaxDrainBytes = 64 * 1024;
// HTTPS: the encrypted bytes a client may send before its request is answered (the
// handshake, a client certificate chain, the head): records that decrypt to nothing
// (empty records, renegotiation attempts) must not keep a connection busy forever.
constexpr size_t kMaxTlsRequestBytes = 64 * 1024;
// HTTPS: what may wait in the socket's write queue (handshake flights, alerts) for a
// client that does not read; beyond, the connection closes.
constexpr size_t kMaxTlsWriteQueueBytes = 64 * 1024;

// "ip:port" ("[ip]:port"); `address` gets the IP alone.
std::string peer_name(uv_tcp_t* tcp, std::string& address) {
  sockaddr_storage addr;
  int len = sizeof addr;
  char ip[INET6_ADDRSTRLEN] = "?";
  address = "?";
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    uv_ip6_name(a, ip, sizeof ip);
    address = ip;
    return std::string("[") + ip + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&addr);
  uv_ip4_name(a, ip, sizeof ip);
  address = ip;
  return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
}

template <typename T>
Endpoint::Exchange* owner(T* handle) {
  return static_cast<Endpoint::Exchange*>(handle->data);
}

void on_handle_closed(uv_handle_t* h) {
  Endpoint::Exchange* x = owner(h);
  if (--x->handles_open == 0) delete x;
}

// Idle: no request being answered. Nothing sent yet or a partial head (the client is
// slow, or holds a place), or the answer already sent and only the client's close awaited.
bool is_idle(const Endpoint::Exchange* x) {
  return !x->closed && x->phase != Endpoint::Exchange::Phase::kWriting &&
         x->phase != Endpoint::Exchange::Phase::kAnswering;
}

bool is_console_path(const std::string& path) {
  return path.starts_with("/api/") || path == "/console" || path.starts_with("/console/");
}

// Bytes waiting in the socket (a peek, nothing consumed).
bool has_unread_input(Endpoint::Exchange* x) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&x->tcp), &fd) != 0) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

}  // namespace

Endpoint::Endpoint(uv_loop_t* loop, Options options, Callbacks callbacks)
    : loop_(loop), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

Endpoint::~Endpoint() {
  stop();
}

bool Endpoint::start(std::string& error) {
  sockaddr_storage addr{};
  int rc = options_.ipv6 ? uv_ip6_addr(options_.host.c_str(), options_.port,
                                       reinterpret_cast<sockaddr_in6*>(&addr))
                         : uv_ip4_addr(options_.host.c_str(), options_.port,
                                       reinterpret_cast<sockaddr_in*>(&addr));
  if (rc == 0) rc = uv_tcp_init(loop_, &handle_);
  if (rc != 0) {
    error = options_.host + ": " + uv_strerror(rc);
    return false;
  }
  handle_.data = this;
  listening_ = true;
  uv_timer_init(loop_, &pressure_timer_);  // cannot fail
  pressure_timer_.data = this;
  pressure_timer_open_ = true;
  rc = uv_tcp_bind(&handle_, reinterpret_cast<const sockaddr*>(&addr),
                   options_.ipv6 ? UV_TCP_IPV6ONLY : 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&handle_), 64, on_connection);
  if (rc != 0) {
    error = "cannot listen on " + options_.host + " port " + std::to_string(options_.port) +
            ": " + uv_strerror(rc);
    stop();
    return false;
  }
  sockaddr_storage bound;
  int len = sizeof bound;
  if (uv_tcp_getsockname(&handle_, reinterpret_cast<sockaddr*>(&bound), &len) == 0)
    bound_port_ =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  else
    bound_port_ = options_.port;
  LOG_INFO("http endpoint listening on %s port %u, %s (/metrics%s, /healthz%s)",
           options_.host.c_str(), bound_port_, options_.channel ? "HTTPS" : "plain HTTP",
           options_.bearer_token.empty() ? "" : " with a bearer token",
           callbacks_.console ? ", the console: /api/v1/, /console/" : "");
  return true;
}

void Endpoint::stop() {
  if (listening_) {
    listening_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle_), nullptr);
  }
  if (pressure_timer_open_) {
    pressure_timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&pressure_timer_), nullptr);
  }
  while (exchanges_ != nullptr)
    close(exchanges_);
}

void Endpoint::close(Exchange* x) {
  if (x->closed) return;
  x->closed = true;
  if (x->prev)
    x->prev->next = x->next;
  else
    exchanges_ = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = nullptr;
  open_--;
  if (open_ < options_.max_connections) crowded_ = false;
  if (!x->addr.empty()) {
    auto it = per_address_.find(x->addr);
    if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
  }
  // A handshake step a worker runs now finishes first; the channel then deletes itself.
  if (x->tls) x->tls.release()->abandon();
  // A pending write or shutdown gets its callback (cancelled) before the handle's close
  // callback: the exchange is still there for it.
  uv_close(reinterpret_cast<uv_handle_t*>(&x->timer), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&x->tcp), on_handle_closed);
}

void Endpoint::on_timeout(uv_timer_t* t) {
  Exchange* e = owner(t);
  if (e->phase == Exchange::Phase::kReading) {
    LOG_DEBUG("http: %s: no whole request head in time; 408", e->peer.c_str());
    if (e->tls && !e->tls->ready()) {
      e->endpoint->close(e);  // still in its TLS handshake: nothing can be said
      return;
    }
    e->endpoint->respond(e, 408, response(408, "text/plain; charset=utf-8", "timeout\n"));
  } else if (e->phase == Exchange::Phase::kAnswering) {
    LOG_WARN("http: %s: %s: no answer within request_timeout; 503", e->peer.c_str(),
             log::quote(e->parser.request().path, 100).c_str());
    e->endpoint->respond(e, 503, response(503, "application/json", "{\"error\":\"timeout\"}"));
  } else {
    e->endpoint->close(e);  // not reading the answer, or not closing after it
  }
}

uint32_t Endpoint::per_address_limit() const {
  const uint32_t max = options_.max_connections;
  if (options_.max_connections_per_address != 0)
    return std::min(options_.max_connections_per_address, max);
  return max >= 4 ? max / 2 : max;
}

Endpoint::Exchange* Endpoint::oldest_idle(const Exchange* except, const std::string* addr) const {
  // The list is newest first: walk it back from the oldest. One whose request has
  // arrived but is not read yet (this loop iteration will) is passed over if another is
  // idle: a client that has just connected and asked is not evicted for a flood.
  Exchange* last = exchanges_;
  while (last != nullptr && last->next != nullptr)
    last = last->next;
  Exchange* fallback = nullptr;
  for (Exchange* e = last; e != nullptr; e = e->prev) {
    if (e == except || !is_idle(e) || (addr != nullptr && e->addr != *addr)) continue;
    if (e->phase != Exchange::Phase::kReading || !has_unread_input(e)) return e;
    if (fallback == nullptr) fallback = e;
  }
  return fallback;
}

void Endpoint::note_pressure() {
  episode_events_++;
  if (in_episode_) return;
  in_episode_ = true;
  episode_seen_ = episode_events_;
  episode_evicted_ = episode_refused_ = 0;
  LOG_WARN(
      "http: connections limited (max_connections %u, %u per address): the oldest idle "
      "ones are closed for new ones; heads get %u ms while all places are taken",
      options_.max_connections, per_address_limit(), options_.crowded_timeout_ms);
  if (!pressure_timer_open_) return;
  uv_timer_start(
      &pressure_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Endpoint*>(t->data);
        if (self->episode_events_ != self->episode_seen_) {
          self->episode_seen_ = self->episode_events_;
          return;  // still going
        }
        self->in_episode_ = false;
        uv_timer_stop(t);
        LOG_INFO(
            "http: connections no longer limited: %llu idle ones evicted, %llu refused "
            "(none idle)",
            static_cast<unsigned long long>(self->episode_evicted_),
            static_cast<unsigned long long>(self->episode_refused_));
      },
      1000, 1000);
}

void Endpoint::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Endpoint*>(server->data);
  if (status != 0) {
    LOG_WARN("http: accept failed: %s", uv_strerror(status));
    return;
  }
  auto* x = new Exchange(self->options_.limits);
  x->endpoint = self;
  x->serial = ++self->next_serial_;
  const int rc = uv_tcp_init(self->loop_, &x->tcp);
  if (rc != 0) {
    LOG_WARN("http: cannot accept a connection: %s", uv_strerror(rc));
    delete x;
    return;
  }
  uv_timer_init(self->loop_, &x->timer);  // cannot fail
  x->tcp.data = x->timer.data = x;
  x->handles_open = 2;
  x->next = self->exchanges_;
  if (self->exchanges_) self->exchanges_->prev = x;
  self->exchanges_ = x;
  self->open_++;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&x->tcp)) != 0) {
    self->close(x);
    return;
  }
  x->peer = peer_name(&x->tcp, x->addr);
  const uint32_t from_addr = ++self->per_address_[x->addr];  // close() counts it down
  if (self->options_.channel) {
    x->tls = self->options_.channel(*x);
    if (!x->tls) {  // no room for another handshake (the factory says so)
      self->close(x);
      return;
    }
  }
  Exchange* victim = nullptr;
  const char* why = nullptr;
  if (from_addr > self->per_address_limit()) {
    victim = self->oldest_idle(x, &x->addr);
    why = "connections from this address";
  } else if (self->open_ > self->options_.max_connections) {
    victim = self->oldest_idle(x, nullptr);
    why = "connections open";
  }
  if (why != nullptr) {
    self->note_pressure();
    if (victim == nullptr) {
      self->refused_++;
      self->episode_refused_++;
      LOG_DEBUG("http: %s: too many %s, none idle; closed", x->peer.c_str(), why);
      self->close(x);  // over the limit and nothing to evict: closed at once, no answer
      return;
    }
    self->evicted_++;
    self->episode_evicted_++;
    LOG_DEBUG("http: %s: too many %s; the oldest idle one (%s) closed", x->peer.c_str(), why,
              victim->peer.c_str());
    self->close(victim);
  }
  uint32_t timeout = self->options_.request_timeout_ms;
  if (self->crowded_) {
    // Every place was already taken before this one: heads get the short time.
    timeout = std::min(timeout, self->options_.crowded_timeout_ms);
  } else if (self->open_ >= self->options_.max_connections) {
    // The pool has just filled: whoever is still reading its head gets the short time too.
    self->crowded_ = true;
    timeout = std::min(timeout, self->options_.crowded_timeout_ms);
    for (Exchange* e = self->exchanges_; e != nullptr; e = e->next)
      if (e != x && e->phase == Exchange::Phase::kReading &&
          uv_timer_get_due_in(&e->timer) > self->options_.crowded_timeout_ms)
        uv_timer_start(&e->timer, on_timeout, self->options_.crowded_timeout_ms, 0);
  }
  uv_timer_start(&x->timer, on_timeout, timeout, 0);
  const int read_rc = uv_read_start(
      reinterpret_cast<uv_stream_t*>(&x->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        Exchange* e = owner(h);
        *buf = uv_buf_init(e->buffer, sizeof e->buffer);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        Exchange* e = owner(s);
        Endpoint* ep = e->endpoint;
        if (e->closed || n == 0) return;
        if (n < 0) {
          if (e->phase == Exchange::Phase::kWriting) {
            // The client half-closed after its request: the answer is still written.
            uv_read_stop(s);
            e->peer_eof = true;
            return;
          }
          ep->close(e);
          return;
        }
        if (e->phase != Exchange::Phase::kReading) {
          e->drained += static_cast<size_t>(n);
          if (e->drained > kMaxDrainBytes) ep->close(e);
          return;
        }
        const std::string_view bytes(buf->base, static_cast<size_t>(n));
        if (!e->tls) {
          ep->on_request_bytes(e, bytes);
          return;
        }
        e->tls_read += bytes.size();
        if (e->tls_read > kMaxTlsRequestBytes) {
          LOG_DEBUG("http: %s: more than %zu encrypted bytes without a request; closing",
                    e->peer.c_str(), kMaxTlsRequestBytes);
          ep->close(e);
          return;
        }
        std::string why;
        if (!e->tls->input(bytes, why)) {
          LOG_DEBUG("http: %s: %s; closing", e->peer.c_str(), why.c_str());
          ep->close(e);
          return;
        }
        if (!e->closed && e->tls->available()) ep->write_tls_output(e);
      });
  if (read_rc != 0) self->close(x);
}

void Endpoint::on_request_bytes(Exchange* e, std::string_view bytes) {
  if (e->closed || e->phase != Exchange::Phase::kReading) return;
  size_t consumed = 0;
  switch (e->parser.feed(bytes, consumed)) {
    case ParseStatus::kIncomplete:
      return;
    case ParseStatus::kError: {
      const int status = e->parser.error_status();
      LOG_DEBUG("http: %s: bad request: %s; %d", e->peer.c_str(), e->parser.error_reason().c_str(),
                status);
      respond(e, status,
              response(status, "text/plain; charset=utf-8", e->parser.error_reason() + "\n"));
      return;
    }
    case ParseStatus::kComplete: {
      requests_++;
      if (callbacks_.console && is_console_path(e->parser.request().path)) {
        answer_later(e);
        return;
      }
      int status = 0;
      std::string r = answer(e->parser.request(), status);
      LOG_DEBUG("http: %s: %s %s -> %d", e->peer.c_str(), e->parser.request().method.c_str(),
                log::quote(e->parser.request().path, 100).c_str(), status);
      respond(e, status, std::move(r));
      return;
    }
  }
}

void Endpoint::write_tls_output(Exchange* x) {
  if (x->closed || !x->tls || !x->tls->available() || x->tls->wire().empty()) return;
  struct Write {
    uv_write_t req;
    std::string bytes;
    Exchange* x;
  };
  auto* w = new Write;
  w->bytes.swap(x->tls->wire());
  w->x = x;
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  // A close cancels the write: its callback runs before the exchange is freed.
  const int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&x->tcp), &buf, 1,
                          [](uv_write_t* req, int status) {
                            auto* done = static_cast<Write*>(req->data);
                            Exchange* e = done->x;
                            delete done;
                            if (status < 0 && !e->closed) e->endpoint->close(e);
                          });
  if (rc != 0) {
    delete w;
    close(x);
    return;
  }
  if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&x->tcp)) >
      kMaxTlsWriteQueueBytes) {
    LOG_DEBUG("http: %s: does not read what it is sent (more than %zu bytes queued); closing",
              x->peer.c_str(), kMaxTlsWriteQueueBytes);
    close(x);
  }
}

void Endpoint::finish(Exchange* e) {
  if (e->closed) return;
  if (e->tls) {
    e->tls->shutdown();  // close_notify
    write_tls_output(e);
    if (e->closed) return;
  }
  e->phase = Exchange::Phase::kDraining;  // the running timer closes it at the latest
  e->shutdown.data = e;
  const int rc = uv_shutdown(&e->shutdown, reinterpret_cast<uv_stream_t*>(&e->tcp),
                             [](uv_shutdown_t* req, int st) {
                               Exchange* e2 = static_cast<Exchange*>(req->data);
                               if (st < 0 && !e2->closed) e2->endpoint->close(e2);
                             });
  if (rc != 0) close(e);
}

std::string Endpoint::answer(const Request& request, int& status) const {
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    status = 405;
    return response(405, "text/plain; charset=utf-8", "only GET and HEAD\n", {"Allow: GET, HEAD"});
  }
  std::string r;
  if (request.path == "/metrics") {
    if (!options_.bearer_token.empty() &&
        !bearer_matches(request.header("authorization"), options_.bearer_token)) {
      status = 401;
      return response(401, "text/plain; charset=utf-8", "a bearer token is needed\n",
                      {"WWW-Authenticate: Bearer realm=\"mqgate\""});
    }
    status = 200;
    r = response(200, MetricsText::kContentType, callbacks_.metrics ? callbacks_.metrics() : "",
                 {"Cache-Control: no-store"});
  } else if (request.path == "/healthz") {
    const bool ok = callbacks_.healthy && callbacks_.healthy();
    status = ok ? 200 : 503;
    std::string body = ok ? "ok\n" : "not listening\n";
    if (callbacks_.health_detail) body += callbacks_.health_detail();
    r = response(status, "text/plain; charset=utf-8", body, {"Cache-Control: no-store"});
  } else {
    status = 404;
    return response(404, "text/plain; charset=utf-8", "only /metrics and /healthz\n");
  }
  if (head) r.resize(r.find("\r\n\r\n") + 4);  // the same head, no body
  return r;
}

Endpoint::Exchange* Endpoint::find(uint64_t serial) const {
  for (Exchange* e = exchanges_; e != nullptr; e = e->next)
    if (e->serial == serial) return e;
  return nullptr;
}

void Endpoint::answer_later(Exchange* x) {
  x->phase = Exchange::Phase::kAnswering;
  const Request& request = x->parser.request();
  std::weak_ptr<Endpoint*> alive = alive_;
  const uint64_t serial = x->serial;
  callbacks_.console(request, x->peer, x->tls ? x->tls->peer() : nullptr,
                     [alive, serial](int status, std::string resp) {
                       auto self = alive.lock();
                       if (!self) return;
                       Endpoint* ep = *self;
                       Exchange* e = ep->find(serial);
                       if (e == nullptr || e->phase != Exchange::Phase::kAnswering)
                         return;  // gone, or 503 sent
                       LOG_DEBUG("http: %s: %s %s -> %d", e->peer.c_str(),
                                 e->parser.request().method.c_str(),
                                 log::quote(e->parser.request().path, 100).c_str(), status);
                       ep->respond(e, status, std::move(resp));
                     });
}

void Endpoint::respond(Exchange* x, int status, std::string resp) {
  if (x->closed ||
      (x->phase != Exchange::Phase::kReading && x->phase != Exchange::Phase::kAnswering))
    return;
  if (x->tls) {
    // Every HTTPS answer tells the browser to use HTTPS only for this host (a year).
    const size_t status_line_end = resp.find("\r\n");
    if (status_line_end != std::string::npos)
      resp.insert(status_line_end + 2, "Strict-Transport-Security: max-age=31536000\r\n");
    std::string why;
    if (!x->tls->ready() || !x->tls->available() || !x->tls->send(resp, why)) {
      close(x);  // no TLS to say it in
      return;
    }
    x->tls->wire().swap(resp);  // the answer's records, ahead of close_notify
    x->tls->wire().clear();
  }
  responses_[status]++;
  x->phase = Exchange::Phase::kWriting;
  x->response = std::move(resp);
  // The same time again for the client to read the answer.
  uv_timer_start(
      &x->timer, [](uv_timer_t* t) { owner(t)->endpoint->close(owner(t)); },
      options_.request_timeout_ms, 0);
  x->write.data = x;
  uv_buf_t buf = uv_buf_init(x->response.data(), static_cast<unsigned>(x->response.size()));
  const int rc = uv_write(
      &x->write, reinterpret_cast<uv_stream_t*>(&x->tcp), &buf, 1, [](uv_write_t* w, int status) {
        Exchange* e = static_cast<Exchange*>(w->data);
        if (e->closed) return;
        Endpoint* ep = e->endpoint;
        std::string().swap(e->response);
        if (status < 0 || e->peer_eof) {
          ep->close(e);
          return;
        }
        // Our side is done (FIN); wait for the client's until the timer.
        ep->finish(e);
      });
  if (rc != 0) close(x);
}

}  // namespace mqgate::http
