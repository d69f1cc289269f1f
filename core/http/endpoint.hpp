// The operators' HTTP endpoint: GET /metrics (Prometheus text format) and GET /healthz,
// nothing else. It knows sockets and HTTP; what the numbers are and whether the broker
// is healthy come from the callbacks it is given. Every request is bounded (head size,
// header count, time to send it and to read the answer, connections at once) and
// answered once, then closed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "http/request.hpp"

namespace mqgate::http {

class Endpoint {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // an IP literal
    uint16_t port = 0;               // 0: any free port (bound_port() says which)
    bool ipv6 = false;
    std::string bearer_token;       // non-empty: /metrics needs "Authorization: Bearer <it>"
    uint32_t max_connections = 32;  // beyond: closed at once
    // To send the whole request head, and again to read the whole answer: a client
    // that trickles its head (slowloris) or never reads is closed.
    uint32_t request_timeout_ms = 10000;
    Limits limits;
  };
  struct Callbacks {
    std::function<std::string()> metrics;  // the exposition text
    std::function<bool()> healthy;         // 200 when true, 503 when not
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
  uint32_t open_connections() const { return open_; }

  struct Exchange;  // one connection: its socket, parser and timer (endpoint.cpp)

 private:
  static void on_connection(uv_stream_t* server, int status);
  std::string answer(const Request& request, int& status) const;
  // Sends `resp` (status `status`), then closes; the timer bounds the write.
  void respond(Exchange* x, int status, std::string resp);
  // Closes the connection's handles; it is freed when both are closed.
  void close(Exchange* x);

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
  Exchange* exchanges_ = nullptr;  // open connections, for stop()
};

}  // namespace mqgate::http
