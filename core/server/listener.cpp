#include "server/listener.hpp"

#include <algorithm>

#include "base/log.hpp"
#include "server/connection.hpp"
#include "server/server.hpp"
#include "transport/tls/tls.hpp"
#include "transport/websocket_layer.hpp"

namespace mqgate {

Listener::Listener(Server& server, const ListenerConfig& config)
    : server_(server), config_(config) {
  if (config_.websocket) {
    websocket_.path = config_.websocket->path;
    websocket_.origins = config_.websocket->origins;
  }
}

Listener::~Listener() = default;

bool Listener::load_tls(size_t workers, Errors& errors) {
  if (!config_.tls) return true;
  tls_ = TlsGeneration::load(config_, workers, errors);
  if (tls_) LOG_INFO("listener \"%s\": TLS %s", config_.name.c_str(), tls_->summary().c_str());
  return tls_ != nullptr;
}

bool Listener::check_tls(const ListenerConfig& config, Errors& errors) {
  return !config.tls || TlsGeneration::load(config, 1, errors) != nullptr;
}

ListenerConfig Listener::http_tls_config(const HttpConfig& http) {
  ListenerConfig l;
  l.name = "[http]";
  l.bind = http.bind;
  l.tls = http.tls;
  return l;
}

bool Listener::can_reload_tls(const ListenerConfig& fresh) const {
  if (!config_.tls) return false;
  if (!fresh.tls) {
    LOG_ERROR("reload: listener \"%s\": ssl cannot be turned off without a restart; keeping TLS",
              config_.name.c_str());
    return false;
  }
  return true;
}

std::shared_ptr<const TlsGeneration> Listener::install_tls(
    std::shared_ptr<const TlsGeneration> generation, const ListenerConfig& fresh) {
  tls_.swap(generation);
  config_.tls = fresh.tls;
  LOG_INFO("reload: listener \"%s\": TLS %s (live connections keep theirs)", config_.name.c_str(),
           tls_->summary().c_str());
  return generation;
}

std::unique_ptr<transport::Stack> Listener::make_transport(transport::LayerEvents& events) {
  if (!tls_ && !config_.websocket) return nullptr;
  auto stack = std::make_unique<transport::Stack>();
  if (tls_) {
    TlsWorkers& workers = *server_.tls_workers();
    stack->push(std::make_unique<TlsSession>(&tls_, workers.next_worker(), workers, events,
                                             server_.read_buffer(), server_.read_buffer_size()));
  }
  if (config_.websocket) {
    // Frames stream through (nothing is buffered per frame), so the limit only refuses
    // absurd lengths: a few whole packets' worth, as clients may batch them.
    const size_t max_frame =
        std::max<size_t>(size_t{4} * server_.broker().limits().max_packet_size, 1 << 20);
    stack->push(
        std::make_unique<transport::WebSocketLayer>(websocket_, max_frame, websocket_counts_));
  }
  return stack;
}

bool Listener::start(Errors& errors) {
  sockaddr_storage addr{};
  int rc =
      config_.ipv6
          ? uv_ip6_addr(config_.host.c_str(), config_.port, reinterpret_cast<sockaddr_in6*>(&addr))
          : uv_ip4_addr(config_.host.c_str(), config_.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc == 0) rc = uv_tcp_init(server_.loop(), &handle_);
  if (rc == 0) {
    handle_.data = this;
    initialised_ = true;
    // IPv6 listeners are IPv6-only, so "[::]:1883" and "0.0.0.0:1883" can coexist.
    rc = uv_tcp_bind(&handle_, reinterpret_cast<sockaddr*>(&addr),
                     config_.ipv6 ? UV_TCP_IPV6ONLY : 0);
  }
  if (rc == 0) rc = uv_listen(stream(), SOMAXCONN, on_connection);
  if (rc != 0) {
    errors.push_back("listener \"" + config_.name + "\": cannot listen on " + config_.bind + ": " +
                     uv_strerror(rc));
    return false;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  rc = uv_tcp_getsockname(&handle_, reinterpret_cast<sockaddr*>(&bound), &len);
  if (rc != 0) {
    // Only the log line (and port 0's actual port) need it: the listener works.
    LOG_WARN("listener \"%s\": cannot read the bound address: %s", config_.name.c_str(),
             uv_strerror(rc));
    bound_port_ = config_.port;
  } else {
    bound_port_ =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  LOG_INFO("listener \"%s\" listening on %s port %u (%s)", config_.name.c_str(),
           config_.host.c_str(), bound_port_,
           config_.websocket ? (config_.tls ? "wss" : "ws") : (config_.tls ? "mqtts" : "mqtt"));
  return true;
}

void Listener::stop() {
  if (!initialised_) return;
  initialised_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), nullptr);
}

void Listener::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (status < 0) {
    LOG_WARN("listener \"%s\": accept error: %s", self->config_.name.c_str(), uv_strerror(status));
    return;
  }
  if (self->server_.shutting_down()) return;
  if (self->config_.max_connections != 0 &&
      self->active_connections >= self->config_.max_connections) {
    if (self->refuse_connection())
      LOG_WARN("listener \"%s\": max_connections (%u) reached; connection refused",
               self->config_.name.c_str(), self->config_.max_connections);
    return;
  }
  // Handshakes queue for the workers: beyond tls_max_pending_handshakes a flood of
  // ClientHellos would only make every client, honest ones too, wait past its timeout.
  // Refused before any byte is read: a refusal costs the loop an accept and a close.
  TlsWorkers* workers = self->server_.tls_workers();
  if (self->config_.tls && !workers->has_room()) {
    if (self->refuse_connection()) {
      self->server_.broker().count_tls_refused();
      workers->refused(self->server_.now_ms());
    }
    return;
  }
  Connection::accept(self->server_, *self);
}

bool Listener::refuse_connection() {
  uv_tcp_t* reject = new uv_tcp_t;
  const int rc = uv_tcp_init(server_.loop(), reject);
  if (rc != 0) {
    LOG_WARN("listener \"%s\": cannot refuse a connection: %s", config_.name.c_str(),
             uv_strerror(rc));
    delete reject;
    return false;
  }
  const bool accepted = uv_accept(stream(), reinterpret_cast<uv_stream_t*>(reject)) == 0;
  uv_close(reinterpret_cast<uv_handle_t*>(reject),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  return accepted;
}

}  // namespace mqgate
