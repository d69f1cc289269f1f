// The listener knows sockets: it binds one configured address and accepts
// connections on it, enforcing the listener's connection limit and, for TLS, the
// limit on handshakes in progress. It also knows which transport layers (TLS,
// WebSocket) its connections' bytes go through, and builds them for each.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "transport/stack.hpp"
#include "transport/websocket.hpp"
#include "transport/websocket_layer.hpp"

namespace mqgate {

class Server;
class TlsGeneration;  // tls.hpp (mbedTLS) stays behind listener.cpp

class Listener {
 public:
  Listener(Server& server, const ListenerConfig& config);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Loads the TLS material (TLS listeners only; `workers` handshake threads). On
  // failure returns false; `errors` says why, naming the listener, the key and the file.
  bool load_tls(size_t workers, Errors& errors);
  // `mqgate --check`: whether `config`'s TLS material loads; if not, `errors` says why.
  static bool check_tls(const ListenerConfig& config, Errors& errors);
  // [http]'s TLS as a listener's, named "[http]" (for TlsGeneration::load's messages).
  static ListenerConfig http_tls_config(const HttpConfig& http);
  // Binds and listens. On failure returns false; `errors` says why, naming the listener.
  bool start(Errors& errors);
  // SIGHUP, on the loop, before the new material is loaded (off the loop): whether
  // `fresh` (this listener's new table) can be applied; logs why not.
  bool can_reload_tls(const ListenerConfig& fresh) const;
  // SIGHUP, back on the loop: new handshakes use `generation`, loaded from `fresh`.
  // Returns the previous generation.
  std::shared_ptr<const TlsGeneration> install_tls(std::shared_ptr<const TlsGeneration> generation,
                                                   const ListenerConfig& fresh);
  // The transport layers of a new connection, bottom first (nullptr for plain TCP).
  // `events` hears of their asynchronous progress (TLS handshakes).
  std::unique_ptr<transport::Stack> make_transport(transport::LayerEvents& events);
  // Stops accepting (shutdown). Existing connections are not touched.
  void stop();

  const ListenerConfig& config() const { return config_; }
  // The server its connections live in (their context: loop, broker, read buffer).
  Server& server() const { return server_; }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }
  uint16_t bound_port() const { return bound_port_; }
  // The TLS generation new connections use (nullptr for plain listeners). A reference
  // to the listener's own pointer: TLS sessions keep it to see later reloads.
  const std::shared_ptr<const TlsGeneration>& tls_generation() const { return tls_; }
  // What its WebSocket connections did (zeros on other listeners).
  const transport::WebSocketCounts& websocket_counts() const { return websocket_counts_; }
  uint32_t active_connections = 0;

 private:
  static void on_connection(uv_stream_t* server, int status);
  // Accepts the pending connection and closes it at once, so the client sees a refusal
  // rather than a hang. Returns whether there was one to accept.
  bool refuse_connection();

  Server& server_;
  ListenerConfig config_;
  uv_tcp_t handle_;
  uint16_t bound_port_ = 0;
  std::shared_ptr<const TlsGeneration> tls_;
  ws::HandshakeSettings websocket_;  // used when config_.websocket is set
  transport::WebSocketCounts websocket_counts_;
  bool initialised_ = false;
};

}  // namespace mqgate
