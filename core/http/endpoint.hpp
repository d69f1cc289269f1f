// The operators' HTTP endpoint: GET /metrics (Prometheus text format) and GET /healthz,
// nothing else. It knows sockets and HTTP; what the numbers are and whether the broker
// is healthy come from the callbacks it is given. Every request is bounded (head size,
// header count, time to send it, connections at once) and answered once, then closed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "http/request.hpp"

namespace mqgate::http {

class Endpoint {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // an IP literal
    uint16_t port = 0;               // 0: any free port (bound_port() says which)
    bool ipv6 = false;
    std::string bearer_token;        // non-empty: /metrics needs "Authorization: Bearer <it>"
    uint32_t max_connections = 32;   // beyond: closed at once
    uint32_t request_timeout_ms = 10000;  // to send the whole request head
  };
  struct Callbacks {
    std::function<std::string()> metrics;  // the exposition text
    std::function<bool()> healthy;         // 200 when true, 503 when not
  };

  Endpoint(uv_loop_t* loop, Options options, Callbacks callbacks);
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Binds and listens; false with `error` on failure.
  bool start(std::string& error);
  // Stops listening and closes open requests (shutdown).
  void stop();
  uint16_t bound_port() const { return bound_port_; }
  uint64_t requests() const { return requests_; }  // whole requests answered

  struct Exchange;  // one connection: its socket, parser and timer (endpoint.cpp)

 private:
  static void on_connection(uv_stream_t* server, int status);
  std::string answer(const Request& request) const;
  void finish(Exchange* x, std::string response);
  void unlink(Exchange* x);

  uv_loop_t* loop_;
  Options options_;
  Callbacks callbacks_;
  uv_tcp_t handle_;
  bool listening_ = false;
  uint16_t bound_port_ = 0;
  uint32_t open_ = 0;
  uint64_t requests_ = 0;
  Exchange* exchanges_ = nullptr;  // open connections, for stop()
};

}  // namespace mqgate::http
