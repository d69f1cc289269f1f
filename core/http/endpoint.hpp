// The operators' HTTP endpoint: GET /metrics (Prometheus text format) and GET /healthz,
// and, when a console handler is given, whatever it answers under /api/ and /console/. It knows
// sockets and HTTP; what the numbers are and whether the broker is healthy come from the callbacks
// it is given. Every request is bounded (head size, header count, time to send it and to read the
// answer, connections at once) and answered once, then closed.
//
// HTTPS: each connection gets a Channel (the server's TLS, whose handshakes run on the TLS
// worker threads, never on the loop); the endpoint only moves bytes through it.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "base/peer_info.hpp"
#include "http/channel.hpp"
#include "http/request.hpp"

namespace mqgate::http {

// Same time whether or not a prefix matches (tokens, CSRF tokens: secrets).
bool equal_secret(std::string_view a, std::string_view b);
// `header` (an Authorization value, may be null) is "Bearer <token>".
bool bearer_matches(const std::string* header, const std::string& token);

// A whole HTTP response (http::response) with its status; called at most once, now or
// later from the loop. It does nothing if the connection has gone meanwhile.
using Reply = std::function<void(int status, std::string response)>;

class Endpoint {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // an IP literal
    uint16_t port = 0;               // 0: any free port (bound_port() says which)
    bool ipv6 = false;
    std::string bearer_token;  // non-empty: /metrics needs "Authorization: Bearer <it>"
    // When this many are open, a new connection evicts the oldest idle one (no request
    // being answered: nothing sent yet, a partial head, or an answer already sent); only
    // if none is idle is the new one closed at once. One address holds at most half of
    // them (pools under 4: all); beyond, its own oldest idle connection is evicted.
    uint32_t max_connections = 32;
    uint32_t max_connections_per_address = 0;  // 0: the half (or all) above
    // To send the whole request head, and again to read the whole answer: a client
    // that trickles its head (slowloris) or never reads is closed.
    uint32_t request_timeout_ms = 10000;
    // While every place is taken, a connection still reading its head has at most this
    // long (from then) before it is answered 408.
    uint32_t crowded_timeout_ms = 1000;
    Limits limits;
    // Set: HTTPS, each connection through a channel it makes.
    ChannelFactory channel;
  };
  struct Callbacks {
    std::function<std::string()> metrics;  // the exposition text
    std::function<bool()> healthy;         // 200 when true, 503 when not
    std::function<std::string()> health_detail;  // more lines for /healthz's body (or "")
    // Requests whose path starts with /api/ or /console (any method): `peer` is
    // "ip:port"; `tls` what the client proved over HTTPS (its certificate chain: may be
    // empty), null over plain HTTP. Both live until the reply. Unset: those paths are 404
    // like any other.
    std::function<void(const Request& request, const std::string& peer, const TlsPeerInfo* tls,
                       Reply reply)>
        console;
  };

  Endpoint(uv_loop_t* loop, Options options, Callbacks callbacks);
  // stop() must have run, and the loop must have run the close callbacks, before the
  // endpoint is destroyed (its handles live inside it).
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Binds and listens; false with `error` on failure.
  bool start(std::string& error);
  // Stops listening and closes every open connection (shutdown).
  void stop();
  // SIGHUP: a new token (empty: none) for the next requests.
  void set_token(std::string token) { options_.bearer_token = std::move(token); }
  uint16_t bound_port() const { return bound_port_; }
  uint64_t requests() const { return requests_; }  // whole request heads answered
  // Answers sent, by status code (a handful of codes: bounded).
  const std::map<int, uint64_t>& responses() const { return responses_; }
  uint64_t refused() const { return refused_; }  // closed at once: max_connections
  uint64_t evicted() const { return evicted_; }  // idle connections closed for new ones
  uint32_t open_connections() const { return open_; }

  struct Exchange;  // one connection: its socket, parser and timer (endpoint.cpp)

 private:
  static void on_connection(uv_stream_t* server, int status);
  std::string answer(const Request& request, int& status) const;
  // Hands a console request to its handler; the answer comes through a Reply.
  void answer_later(Exchange* x);
  Exchange* find(uint64_t serial) const;
  // Sends `resp` (status `status`), then closes; the timer bounds the write.
  void respond(Exchange* x, int status, std::string resp);
  // Request bytes (decrypted over HTTPS): parsed, and answered once the head is whole.
  void on_request_bytes(Exchange* x, std::string_view bytes);
  // HTTPS: writes what the connection's channel has for the peer (a handshake flight,
  // an alert, close_notify).
  void write_tls_output(Exchange* x);
  // The answer is written: our side ends (close_notify over HTTPS, then FIN) and the
  // client's close is awaited until the timer.
  void finish(Exchange* x);
  // Closes the connection's handles; it is freed when both are closed.
  void close(Exchange* x);
  // The oldest idle connection other than `except` (from `addr` if not null), or null.
  Exchange* oldest_idle(const Exchange* except, const std::string* addr) const;
  static void on_timeout(uv_timer_t* t);
  // A pressure episode: logged when it starts and once when it ends (quiet for a second).
  void note_pressure();
  uint32_t per_address_limit() const;

  uv_loop_t* loop_;
  Options options_;
  Callbacks callbacks_;
  uv_tcp_t handle_;
  bool listening_ = false;
  uint16_t bound_port_ = 0;
  uint32_t open_ = 0;
  uint64_t requests_ = 0;
  uint64_t refused_ = 0;
  std::map<int, uint64_t> responses_;
  Exchange* exchanges_ = nullptr;                // open connections, newest first
  std::map<std::string, uint32_t> per_address_;  // open connections by peer address
  uint64_t evicted_ = 0;
  uint64_t next_serial_ = 0;  // names exchanges for Replies that come later
  // Replies hold a weak pointer to this: after the endpoint is gone they do nothing.
  std::shared_ptr<Endpoint*> alive_ = std::make_shared<Endpoint*>(this);
  bool crowded_ = false;  // every place taken: heads get crowded_timeout_ms
  // The pressure episode (evictions and refusals): its timer and counts.
  uv_timer_t pressure_timer_;
  bool pressure_timer_open_ = false;
  bool in_episode_ = false;
  uint64_t episode_events_ = 0;  // evictions and refusals since the episode started
  uint64_t episode_seen_ = 0;    // episode_events_ at the last tick
  uint64_t episode_evicted_ = 0;
  uint64_t episode_refused_ = 0;
};

}  // namespace mqgate::http
