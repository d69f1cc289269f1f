// conn: connection rate. N connectors each loop TCP connect -> (TLS handshake) ->
// CONNECT -> CONNACK -> DISCONNECT -> close, for a duration or a total count. With
// --resume every connector resumes the TLS session of its previous connection.
#include <algorithm>
#include <cinttypes>
#include <map>

#include "harness.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt5_client.hpp"

namespace mqgate::bench {
namespace {

struct ConnShared {
  std::atomic<bool> running{true};
  std::atomic<uint64_t> started{0};
  uint64_t limit = 0;  // --count; 0: none
};

// Per worker: counters the main thread reads, the latency histogram it reads after stop.
struct ConnWorkerStats {
  Counter ok;
  Counter full;
  Counter resumed;
  Counter slow_closes;  // the broker did not close within 2 s of DISCONNECT
  Failures failures;
  Histogram latency;
};

class Connector final : public Conn {
 public:
  Connector(Worker& w, Harness& h, ConnShared& shared, ConnWorkerStats& stats, int id)
      : Conn(w), harness_(h), shared_(shared), stats_(stats), id_(id) {}

  void next() {
    if (!shared_.running.load(std::memory_order_relaxed)) return;
    if (shared_.limit && shared_.started.fetch_add(1, std::memory_order_relaxed) >= shared_.limit)
      return;
    active_ = true;
    open(harness_.options().resume ? saved_.get() : nullptr);
  }

  bool active() const { return active_; }

  void check_timeout(uint64_t now, uint64_t timeout_ns) {
    if (closed()) return;
    if (awaiting_peer_close()) {
      // Connected and counted; the broker just has not closed after DISCONNECT.
      if (now - connack_ns_ > 2'000'000'000) {
        stats_.slow_closes.add();
        close();
      }
    } else if (now - opened_at_ns() > timeout_ns) {
      fail(Fail::kTimeout, "no CONNACK in time");
    }
  }

 protected:
  void on_established() override {
    harness_.encode_connect(out(),
                            harness_.client_id("c", static_cast<uint64_t>(id_), iteration_++));
  }

  void on_packet(const codec::FixedHeader& h, std::string_view body) override {
    const mqtt5::ConnackResult connack =
        mqtt5::read_connack(harness_.options().mqtt_version, h, body);
    if (!connack.well_formed) {
      fail(Fail::kProtocol, connack.error);
      return;
    }
    if (connack.code != 0) {
      fail(Fail::kRefused, "CONNACK return code " + std::to_string(static_cast<int>(connack.code)));
      return;
    }
    connack_ns_ = now_ns();
    stats_.latency.add(connack_ns_ - opened_at_ns());
    stats_.ok.add();
    if (tls::Session* s = tls_session()) {
      if (s->resumed())
        stats_.resumed.add();
      else
        stats_.full.add();
      if (harness_.options().resume) saved_ = s->save();
    }
    codec::encode_disconnect(out());
    close_after_peer();
  }

  void on_failed(Fail kind, const std::string& detail) override {
    stats_.failures.record(kind, detail);
  }

  void on_closed() override {
    active_ = false;
    next();
  }

 private:
  Harness& harness_;
  ConnShared& shared_;
  ConnWorkerStats& stats_;
  int id_;
  uint64_t iteration_ = 0;
  uint64_t connack_ns_ = 0;
  bool active_ = false;
  std::unique_ptr<tls::SavedSession> saved_;
};

}  // namespace

int run_conn(const Options& o) {
  Harness h(o);
  ConnShared shared;
  shared.limit = o.count;
  const size_t nworkers = h.workers().size();
  std::vector<std::unique_ptr<ConnWorkerStats>> stats;
  std::vector<std::vector<std::unique_ptr<Connector>>> connectors(nworkers);
  for (size_t i = 0; i < nworkers; i++)
    stats.push_back(std::make_unique<ConnWorkerStats>());
  for (int c = 0; c < o.connectors; c++) {
    const size_t wi = static_cast<size_t>(c) % nworkers;
    connectors[wi].push_back(std::make_unique<Connector>(h.worker(wi), h, shared, *stats[wi], c));
  }
  const auto timeout_ns = static_cast<uint64_t>(o.connect_timeout * 1e9);
  for (size_t wi = 0; wi < nworkers; wi++) {
    auto* list = &connectors[wi];
    h.worker(wi).tick_hook = [list, timeout_ns] {
      const uint64_t now = now_ns();
      for (auto& c : *list)
        c->check_timeout(now, timeout_ns);
    };
  }
  if (!h.start()) return kExitSetup;

  auto ok = [&] { return sum_over(stats, [](const ConnWorkerStats& s) { return s.ok.get(); }); };
  auto failures = [&] {
    return sum_over(stats, [](const ConnWorkerStats& s) { return s.failures.total(); });
  };
  auto all_idle = [&] {
    bool idle = true;
    for (size_t wi = 0; wi < nworkers; wi++)
      h.worker(wi).run_sync([&] {
        for (auto& c : connectors[wi])
          if (c->active() || !c->closed()) idle = false;
      });
    return idle;
  };

  if (!o.quiet)
    std::fprintf(stderr, "conn: %d connectors on %zu threads -> %s%s%s, %s\n", o.connectors,
                 nworkers, o.host.c_str(), o.tls ? " (mTLS" : "",
                 o.tls ? (o.resume ? ", resumed)" : ", full handshakes)") : "",
                 o.count ? (std::to_string(o.count) + " connections").c_str()
                         : (std::to_string(o.duration) + " s").c_str());
  h.mark_begin();
  for (size_t wi = 0; wi < nworkers; wi++)
    h.worker(wi).post([&, wi] {
      for (auto& c : connectors[wi])
        c->next();
    });

  uint64_t last_ok = 0, last_fail = 0;
  auto progress = [&](double elapsed, double dt) {
    const uint64_t n = ok(), f = failures();
    char b[256];
    std::snprintf(b, sizeof b,
                  "[%5.1fs] %8.0f conn/s  total %" PRIu64 "  failures %" PRIu64 " (+%" PRIu64
                  ")  %s",
                  elapsed, static_cast<double>(n - last_ok) / dt, n, f, f - last_fail,
                  h.cpu_progress().c_str());
    last_ok = n;
    last_fail = f;
    return std::string(b);
  };
  uint64_t measured = 0;
  bool timed_out = false;
  if (o.count) {
    // Until every connection has been attempted and finished.
    const double limit = o.max_time > 0 ? o.max_time : 600;
    timed_out = !h.wait(
        limit, [&] { return shared.started.load() >= o.count && all_idle(); }, progress);
    h.mark_end();
    measured = ok();
  } else {
    h.wait(o.duration, nullptr, progress);
    measured = ok();
    h.mark_end();
  }
  shared.running = false;
  // Abandon what is in flight: those connections count neither way.
  for (size_t wi = 0; wi < nworkers; wi++)
    h.worker(wi).post([&, wi] {
      for (auto& c : connectors[wi])
        c->close();
    });
  h.wait(10, all_idle, nullptr);
  h.stop();

  Histogram latency;
  uint64_t full = 0, resumed = 0, slow_closes = 0;
  FailureReport failed;
  for (auto& s : stats) {
    latency.merge(s->latency);
    full += s->full.get();
    resumed += s->resumed.get();
    slow_closes += s->slow_closes.get();
    failed.add(s->failures);
  }
  const double window = h.window_seconds();
  const double rate = window > 0 ? static_cast<double>(measured) / window : 0;

  if (o.json) {
    Json j;
    j.begin();
    j.field("mode", "conn");
    j.field("target", o.host + ":" + std::to_string(o.port));
    j.field("tls", !o.tls ? "none" : o.resume ? "resumed" : "full");
    if (o.tls) j.field("tls_library", tls::library_name(o.tls_settings.library));
    j.field("connectors", o.connectors);
    j.field("duration_s", window);
    j.field("connections", measured);
    j.field("rate", rate);
    j.begin("handshakes");
    j.field("full", full);
    j.field("resumed", resumed);
    j.end();
    failed.json(j);
    j.latency("latency_us", latency);
    j.field("slow_closes", slow_closes);
    h.json_resources(j, measured);
    j.field("timed_out", timed_out);
    j.end();
    std::printf("%s\n", j.str().c_str());
  } else {
    std::printf("conn summary (%s, %s)\n", (o.host + ":" + std::to_string(o.port)).c_str(),
                !o.tls     ? "plain"
                : o.resume ? "mTLS, resumed sessions"
                           : "mTLS, full handshakes");
    std::printf("  connections %" PRIu64 " in %.2f s: %.0f connections/s (%d connectors)\n",
                measured, window, rate, o.connectors);
    if (o.tls)
      std::printf("  handshakes  %" PRIu64 " full, %" PRIu64 " resumed (%s client)\n", full,
                  resumed, tls::library_name(o.tls_settings.library));
    std::printf("  latency     p50 %s  p90 %s  p99 %s  max %s (TCP connect to CONNACK)\n",
                format_ns(latency.percentile(0.5)).c_str(),
                format_ns(latency.percentile(0.9)).c_str(),
                format_ns(latency.percentile(0.99)).c_str(), format_ns(latency.max()).c_str());
    failed.print(stdout);
    h.print_resources(stdout, measured, "connection");
  }
  failed.print_details(stderr);
  if (o.tls && o.resume && measured > static_cast<uint64_t>(o.connectors) && resumed * 2 < measured)
    std::fprintf(stderr,
                 "mqgate-bench: warning: only %" PRIu64 " of %" PRIu64
                 " handshakes resumed a session: the broker does not seem to support resumption\n",
                 resumed, measured);
  if (slow_closes)
    std::fprintf(stderr,
                 "mqgate-bench: note: %" PRIu64
                 " times the broker did not close within 2 s of DISCONNECT\n",
                 slow_closes);
  if (timed_out) std::fprintf(stderr, "mqgate-bench: gave up waiting (--max-time)\n");
  connectors.clear();
  return failed.total || timed_out ? kExitFailures : kExitOk;
}

}  // namespace mqgate::bench
