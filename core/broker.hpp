// The broker: MQTT semantics across clients and sessions. It receives decoded packets
// from transports, keeps sessions in a SessionStore, routes publications through the
// Router, and asks AuthHooks before letting anyone in or anything through. It never
// touches sockets: output goes into Client::out(), closing through Client::close().
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "auth.hpp"
#include "client.hpp"
#include "codec/decoder.hpp"
#include "codec/packet.hpp"
#include "config.hpp"
#include "router.hpp"
#include "session.hpp"
#include "session_store.hpp"

namespace mqgate {

struct BrokerStats {
  uint64_t messages_received = 0;  // PUBLISH packets received
  uint64_t bytes_received = 0;     // all bytes read from clients (after TLS)
  uint64_t bytes_sent = 0;         // all bytes handed to transports (before TLS)
  uint64_t publish_denied = 0;     // PUBLISHes an auth plugin refused
  uint64_t connections_total = 0;  // accepted network connections, ever
  uint64_t clients_connected = 0;  // CONNACK 0 sent, not yet closed
  uint64_t clients_maximum = 0;
  uint64_t tls_handshakes_refused = 0;  // TLS connections closed: tls_max_pending_handshakes
  DeliveryStats delivery;          // PUBLISH packets sent, dropped
};

class Broker {
 public:
  Broker(const LimitsConfig& limits, AuthHooks& hooks,
         std::unique_ptr<SessionStore> store = std::make_unique<MemorySessionStore>());
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // --- from transports ---------------------------------------------------------------
  void on_open(Client& client, uint64_t now_ms);
  // A complete packet. `now_ms` is the loop time.
  void on_packet(Client& client, codec::Packet& packet, uint64_t now_ms);
  // The client's bytes broke the protocol. Answers CONNACK 1 for an unsupported protocol
  // level (packet carries protocol name and level then), and closes the client.
  void on_decode_error(Client& client, codec::DecodeError error, const codec::FixedHeader* header,
                       const codec::Packet* partial);
  // The client announced a packet bigger than max_packet_size.
  void on_oversized_packet(Client& client, const codec::FixedHeader& header);
  // Called exactly once when a client is closed (by itself, by us, or by the network).
  void on_closed(Client& client, const char* reason, uint64_t now_ms = 0);
  // Removes persistent sessions offline for longer than limits.session_expiry.
  void expire_sessions(uint64_t now_ms);
  // Closes the client if it broke its keep-alive or never sent CONNECT in time.
  void check_timeouts(Client& client, uint64_t now_ms);

  // --- from inside the broker ($SYS) --------------------------------------------------
  void publish_internal(std::string_view topic, std::string_view payload, bool retain);

  // --- configuration and introspection --------------------------------------------------
  void set_limits(const LimitsConfig& limits);
  // From now on closing clients do not publish wills (the whole broker is going away).
  void begin_shutdown() { shutting_down_ = true; }
  const LimitsConfig& limits() const { return limits_; }
  BrokerStats& stats() { return stats_; }
  const Router& router() const { return router_; }
  SessionStore& sessions() { return *sessions_; }

 private:
  void handle_connect(Client& client, codec::Connect& connect, uint64_t now_ms);
  void refuse_connect(Client& client, codec::ConnackCode code, const char* reason);
  void handle_publish(Client& client, const codec::Publish& publish);
  void handle_subscribe(Client& client, const codec::Subscribe& subscribe);
  void handle_unsubscribe(Client& client, const codec::Unsubscribe& unsubscribe);
  void handle_ack(Client& client, const codec::Ack& ack);
  void protocol_violation(Client& client, const char* what);
  // Closes the client if `topic` has more than max_topic_levels levels.
  bool too_deep(Client& client, std::string_view topic);

  // Stores (if retained) and delivers a publication to every matching session.
  void route(std::string_view topic, std::string_view payload, uint8_t qos, bool retain);
  void send_retained(Client& client, Session& session, std::string_view filter, uint8_t granted_qos);
  void publish_will(Client& client);
  void destroy_session(Session* session);
  std::string generate_client_id();

  LimitsConfig limits_;
  SessionLimits session_limits_;
  AuthHooks& hooks_;
  std::unique_ptr<SessionStore> sessions_;
  Router router_;
  BrokerStats stats_;
  std::mt19937_64 rng_;
  bool shutting_down_ = false;
};

}  // namespace mqgate
