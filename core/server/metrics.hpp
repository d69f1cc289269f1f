// GET /metrics: the broker's numbers in the Prometheus text format. Reads counters
// that are kept up to date where things happen; the work per scrape is bounded by
// the configuration (listeners, plugins), never by the number of clients.
// docs/metrics.md lists every metric (a test keeps the two in step).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mqgate {

class AuthHooks;
class Broker;
class Listener;
class LoopLag;
class TlsWorkers;
namespace http {
class Endpoint;
}
namespace cluster {
class Bridge;
}

// What the server shows; everything but `broker` and `listeners` may be absent.
struct MetricsSources {
  Broker& broker;
  const std::vector<std::unique_ptr<Listener>>& listeners;
  const std::vector<uint64_t>& accepted;  // connections accepted, by listener index
  const AuthHooks& hooks;
  const LoopLag* lag = nullptr;
  const TlsWorkers* tls_workers = nullptr;
  const http::Endpoint* http = nullptr;
  size_t held_connections = 0;       // input held while the broker is congested
  size_t lingering_connections = 0;  // closing: the last packet written, input dropped
  uint64_t uptime_ms = 0;
  const cluster::Bridge* cluster = nullptr;  // [cluster]
};

std::string render_metrics(const MetricsSources& sources);

}  // namespace mqgate
