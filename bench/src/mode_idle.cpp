// idle: opens N connections (plain or TLS, CONNECT done), holds them, and reports how
// much the broker's resident memory grew per connection (--broker-pid).
#include <sys/resource.h>

#include <cinttypes>
#include <map>
#include <thread>

#include "harness.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt5_client.hpp"

namespace mqgate::bench {
namespace {

struct IdleWorker;

struct IdleStats {
  Counter established;
  Failures failures;
  Histogram latency;
};

class IdleConn final : public Conn {
 public:
  IdleConn(Worker& w, Harness& h, IdleStats& stats, IdleWorker& owner, uint64_t id)
      : Conn(w), harness_(h), stats_(stats), owner_(owner), id_(id) {}

  bool settled() const { return done_; }
  bool up() const { return up_ && established(); }

  void check_timeout(uint64_t now, uint64_t timeout_ns) {
    if (!done_ && !closed() && now - opened_at_ns() > timeout_ns)
      fail(Fail::kTimeout, "no CONNACK in time");
  }

 protected:
  void on_established() override { harness_.encode_connect(out(), harness_.client_id("i", id_)); }

  void on_packet(const codec::FixedHeader& h, std::string_view body) override {
    if (up_) {
      if (h.type != codec::PacketType::kPingresp)
        fail(Fail::kProtocol, "unexpected packet on an idle connection");
      return;
    }
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
    up_ = true;
    stats_.latency.add(now_ns() - opened_at_ns());
    stats_.established.add();
    settle();
  }

  void on_failed(Fail kind, const std::string& detail) override {
    stats_.failures.record(kind, detail);
    settle();
  }

 private:
  void settle();

  Harness& harness_;
  IdleStats& stats_;
  IdleWorker& owner_;
  uint64_t id_;
  bool up_ = false;
  bool done_ = false;
};

// A worker's share of the connections, opened a few at a time.
struct IdleWorker {
  std::vector<std::unique_ptr<IdleConn>> conns;
  size_t next = 0;
  size_t in_progress = 0;
  size_t concurrency = 1;
  bool opening = false;  // set when the run starts, after the broker's RSS is read
  bool refilling = false;

  void refill() {
    if (refilling) return;  // an open() that fails at once settles inside the loop
    refilling = true;
    while (opening && next < conns.size() && in_progress < concurrency) {
      in_progress++;
      conns[next++]->open();
    }
    refilling = false;
  }
};

void IdleConn::settle() {
  if (done_) return;
  done_ = true;
  owner_.in_progress--;
  owner_.refill();
}

// Makes room for the sockets: raises the soft descriptor limit to the hard one.
bool enough_descriptors(int connections, std::string& error) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  const rlim_t need = static_cast<rlim_t>(connections) + 64;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
    error = "--connections " + std::to_string(connections) + " needs " + std::to_string(need) +
            " file descriptors; the limit is " + std::to_string(rl.rlim_cur) + " (ulimit -n)";
    return false;
  }
  return true;
}

}  // namespace

int run_idle(const Options& o) {
  std::string error;
  if (!enough_descriptors(o.connections, error)) {
    std::fprintf(stderr, "mqgate-bench: %s\n", error.c_str());
    return kExitSetup;
  }
  Harness h(o);
  const size_t nw = h.workers().size();
  std::vector<std::unique_ptr<IdleStats>> stats;
  std::vector<std::unique_ptr<IdleWorker>> iw;
  for (size_t i = 0; i < nw; i++) {
    stats.push_back(std::make_unique<IdleStats>());
    iw.push_back(std::make_unique<IdleWorker>());
    iw.back()->concurrency = std::max<size_t>(1, static_cast<size_t>(o.concurrency) / nw);
  }
  for (int c = 0; c < o.connections; c++) {
    const size_t wi = static_cast<size_t>(c) % nw;
    iw[wi]->conns.push_back(
        std::make_unique<IdleConn>(h.worker(wi), h, *stats[wi], *iw[wi], static_cast<uint64_t>(c)));
  }
  const auto timeout_ns = static_cast<uint64_t>(o.connect_timeout * 1e9);
  for (size_t wi = 0; wi < nw; wi++) {
    IdleWorker* w = iw[wi].get();
    h.worker(wi).tick_hook = [w, timeout_ns] {
      const uint64_t now = now_ns();
      for (size_t i = 0; i < w->next; i++)
        w->conns[i]->check_timeout(now, timeout_ns);
      w->refill();
    };
  }
  if (!h.start()) return kExitSetup;

  auto established = [&] {
    return sum_over(stats, [](const IdleStats& s) { return s.established.get(); });
  };
  auto failures = [&] {
    return sum_over(stats, [](const IdleStats& s) { return s.failures.total(); });
  };

  // The broker's memory before: after a moment with no load.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long long rss_before = pid_rss_bytes(o.broker_pid);
  if (!o.quiet)
    std::fprintf(stderr, "idle: opening %d %s connections to %s (%d at a time)%s\n", o.connections,
                 o.tls ? "TLS" : "plain", o.host.c_str(), o.concurrency,
                 rss_before >= 0
                     ? (", broker RSS " + std::to_string(rss_before / 1024) + " KiB").c_str()
                     : "");
  h.mark_begin();
  for (size_t wi = 0; wi < nw; wi++)
    h.worker(wi).post([w = iw[wi].get()] {
      w->opening = true;
      w->refill();
    });
  uint64_t last = 0;
  const double limit = o.max_time > 0 ? o.max_time : 540;
  const bool all = h.wait(
      limit, [&] { return established() + failures() >= static_cast<uint64_t>(o.connections); },
      [&](double elapsed, double dt) {
        const uint64_t n = established();
        char b[256];
        std::snprintf(b, sizeof b,
                      "[%5.1fs] %6" PRIu64 " connected (%6.0f/s)  failures %" PRIu64
                      "  broker RSS %lld KiB  %s",
                      elapsed, n, static_cast<double>(n - last) / dt, failures(),
                      pid_rss_bytes(o.broker_pid) / 1024, h.cpu_progress().c_str());
        last = n;
        return std::string(b);
      });
  h.mark_end();
  const double open_seconds = h.window_seconds();
  // Hold them; then measure.
  h.wait(o.hold, nullptr, nullptr);
  uint64_t still_up = 0;
  for (size_t wi = 0; wi < nw; wi++)
    h.worker(wi).run_sync([&] {
      for (auto& c : iw[wi]->conns)
        if (c->up()) still_up++;
    });
  const long long rss_after = pid_rss_bytes(o.broker_pid);
  const uint64_t n = established();

  // Close them all (DISCONNECT), then look at the broker once more.
  for (size_t wi = 0; wi < nw; wi++)
    h.worker(wi).post([w = iw[wi].get()] {
      w->opening = false;
      for (auto& c : w->conns) {
        if (c->up()) codec::encode_disconnect(c->out());
        c->close_gracefully();
      }
    });
  h.wait(
      60,
      [&] {
        bool closed = true;
        for (size_t wi = 0; wi < nw; wi++)
          h.worker(wi).run_sync([&] {
            for (auto& c : iw[wi]->conns)
              if (!c->closed()) closed = false;
          });
        return closed;
      },
      nullptr);
  h.stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const long long rss_closed = pid_rss_bytes(o.broker_pid);

  Histogram latency;
  FailureReport failed;
  for (auto& s : stats) {
    latency.merge(s->latency);
    failed.add(s->failures);
  }
  const bool have_rss = rss_before >= 0 && rss_after >= 0 && n > 0;
  const double per_conn =
      have_rss ? static_cast<double>(rss_after - rss_before) / static_cast<double>(n) : 0;
  const uint64_t dropped = n - std::min(n, still_up);

  if (o.json) {
    Json j;
    j.begin();
    j.field("mode", "idle");
    j.field("target", o.host + ":" + std::to_string(o.port));
    j.field("tls", o.tls);
    if (o.tls) j.field("tls_library", tls::library_name(o.tls_settings.library));
    j.field("connections", static_cast<uint64_t>(o.connections));
    j.field("established", n);
    j.field("dropped_while_held", dropped);
    j.field("open_s", open_seconds);
    j.field("open_rate", open_seconds > 0 ? static_cast<double>(n) / open_seconds : 0.0);
    j.field("rss_before", static_cast<int64_t>(rss_before));
    j.field("rss_after", static_cast<int64_t>(rss_after));
    j.field("rss_after_close", static_cast<int64_t>(rss_closed));
    if (have_rss) j.field("bytes_per_connection", per_conn);
    failed.json(j);
    j.latency("latency_us", latency);
    h.json_resources(j);
    j.end();
    std::printf("%s\n", j.str().c_str());
  } else {
    std::printf("idle summary (%s, %s)\n", (o.host + ":" + std::to_string(o.port)).c_str(),
                o.tls ? "TLS" : "plain");
    std::printf("  connections %" PRIu64 " of %d established in %.2f s; %" PRIu64
                " dropped while held %.1f s\n",
                n, o.connections, open_seconds, dropped, o.hold);
    if (have_rss)
      std::printf(
          "  broker RSS  %lld KiB before, %lld KiB with them, %lld KiB after closing: %.2f KiB per "
          "connection\n",
          rss_before / 1024, rss_after / 1024, rss_closed / 1024, per_conn / 1024);
    else
      std::printf("  broker RSS  unknown (give --broker-pid)\n");
    std::printf("  latency     p50 %s  p99 %s (connect to CONNACK)\n",
                format_ns(latency.percentile(0.5)).c_str(),
                format_ns(latency.percentile(0.99)).c_str());
    failed.print(stdout);
  }
  failed.print_details(stderr);
  iw.clear();
  return failed.total || dropped || !all ? kExitFailures : kExitOk;
}

}  // namespace mqgate::bench
