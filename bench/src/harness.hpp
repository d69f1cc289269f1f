// What every mode shares: the options, the workers, the measurement window with the
// CPU time the generator and the broker spent in it, and the once-a-second progress line.
#pragma once

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mqtt/packet.hpp"
#include "net.hpp"
#include "stats.hpp"

namespace mqgate::bench {

struct Options {
  std::string mode;
  std::string host = "127.0.0.1";
  std::string ws_path;  // non-empty: MQTT over WebSocket (--ws)
  int port = 1883;
  int threads = 0;       // 0: one per core
  double duration = 10;  // seconds of load (conn, pubsub without --count)
  uint64_t count = 0;    // conn: connections in all; pubsub: messages per publisher
  double warmup = 0;     // seconds excluded from rates and latencies
  double max_time = 0;   // hard limit for the whole run; 0: derived from the others
  bool json = false;
  bool quiet = false;
  int broker_pid = 0;
  // More processes of the same broker (a cluster's nodes and servers): their CPU time is
  // added to broker_pid's (--broker-pids).
  std::vector<int> extra_broker_pids;
  std::string client_prefix;
  int keepalive = 60;
  std::optional<std::string> username;  // sent in every CONNECT when set
  std::optional<std::string> password;
  // MQTT version of every connection: 4 (3.1.1) or 5 (mqtt5_client.hpp).
  uint8_t mqtt_version = 4;
  // 5.0 PUBLISH properties (pubsub): Content Type, user properties in order.
  std::optional<std::string> content_type;
  std::vector<std::pair<std::string, std::string>> user_properties;

  // TLS
  bool tls = false;
  tls::Settings tls_settings;
  bool resume = false;

  // conn
  int connectors = 4;
  double connect_timeout = 10;

  // pubsub
  int publishers = 1;
  int subscribers = 1;
  int sub_port = 0;  // non-zero: subscribers connect to this port (same host), e.g. another
                     // node of a cluster than the publishers'
  int topics = 1;
  int qos = 0;
  size_t payload = 64;
  double rate = 0;  // total messages per second over all publishers; 0: as fast as possible
  int window = 1000;
  bool persistent = false;  // clean session 0 for publishers and subscribers (durable state)
  double drain_timeout = 10;
  // Seconds between the last SUBACK and the publishers' start: a cluster spreads a new
  // subscription's interest to the other nodes asynchronously (--settle).
  double settle = 0;
  // Overload scenarios: publishers write as fast as TCP takes them (QoS 1/2: at most
  // --window unacknowledged), ignoring deliveries; subscribers read at most sub_rate
  // msg/s each (0: as fast as they can); the first stall_subscribers never read after
  // their SUBACK (their fate is reported apart from the others').
  bool open_loop = false;
  double sub_rate = 0;
  int stall_subscribers = 0;
  // Non-empty: subscribers subscribe to $share/<shared>/<topic>, one group per topic;
  // each message is owed once to its group, not to each subscriber.
  std::string shared;
  // Appended to every subscription filter: "/#" subscribes to <topic>/#, which receives the
  // same messages through a wildcard filter (bench/compare --acl: a filter a deny rule can
  // touch without matching the topic itself).
  std::string filter_suffix;

  // idle
  int connections = 1000;
  int concurrency = 64;
  double hold = 3;
};

// One worker's failed connection attempts: by kind (read from any thread) and with
// their details ("kind: detail" -> count; written and read on the worker's thread, or
// after it stopped).
struct Failures {
  Counter by_kind[kFailKinds];
  std::map<std::string, uint64_t> details;

  void record(Fail kind, const std::string& detail);
  uint64_t total() const;
};

// The failures of all workers, summed once they have stopped.
struct FailureReport {
  uint64_t by_kind[kFailKinds] = {};
  uint64_t total = 0;
  std::map<std::string, uint64_t> details;

  void add(const Failures& f);
  void json(Json& j) const;           // "failures": {"total": n, "<kind>": n, ...}
  void print(FILE* f) const;          // "  failures    n  <kind> n ..."
  void print_details(FILE* f) const;  // the five most common details
};

// Sums `field(stats)` over the workers' statistics (relaxed counters: any thread).
template <typename Stats, typename Field>
uint64_t sum_over(const std::vector<std::unique_ptr<Stats>>& per_worker, Field field) {
  uint64_t n = 0;
  for (const auto& s : per_worker)
    n += field(*s);
  return n;
}

// Workers plus accounting. A mode creates one, starts it, marks the measured window
// and reports resources next to its own figures.
class Harness {
 public:
  explicit Harness(const Options& options);
  ~Harness();

  const Options& options() const { return options_; }
  std::vector<std::unique_ptr<Worker>>& workers() { return workers_; }
  Worker& worker(size_t i) { return *workers_[i % workers_.size()]; }
  // --sub-port: where subscribers connect (null: the workers' target).
  const Target* sub_target() const { return options_.sub_port ? &sub_target_ : nullptr; }

  // Starts the worker threads; false (with a message on stderr) if TLS setup fails.
  bool start();
  // Stops and joins the workers (every connection must be closed).
  void stop();

  // The measured window: CPU of the generator (process and each worker thread) and of
  // the broker between begin and end.
  void mark_begin();
  void mark_end();
  double window_seconds() const { return end_wall_ - begin_wall_; }
  double since_begin() const;

  // Polls `done` every 10 ms until it is true or `seconds` pass (false then), printing
  // `progress(elapsed, interval)` once a second on stderr unless --quiet. `elapsed`
  // counts from the call.
  bool wait(double seconds, const std::function<bool()>& done,
            const std::function<std::string(double elapsed, double interval)>& progress);
  // True once the hard time limit (--max-time) has passed.
  bool out_of_time() const;

  // "gen cpu 87% (max thread 61%), broker cpu 99%" for progress lines (since the last
  // call).
  std::string cpu_progress();
  // Resource figures of the measured window; `ops` (connections, deliveries) gives the
  // broker's CPU time per operation, a figure the generator's own limits cannot cap.
  void json_resources(Json& j, uint64_t ops = 0) const;
  void print_resources(FILE* f, uint64_t ops = 0, const char* op = "op") const;

  // MQTT helpers.
  std::string client_id(const char* role, uint64_t a, uint64_t b = UINT64_MAX) const;
  void encode_connect(std::string& out, const std::string& client_id, bool clean = true) const;

 private:
  struct Sample {
    double wall = 0;
    double process_cpu = 0;
    double broker_cpu = -1;
    double machine_busy = -1;
    std::vector<double> thread_cpu;
  };
  Sample sample() const;
  // CPU seconds of everything but the generator and the broker between two samples.
  static double others_cpu(const Sample& a, const Sample& b);

  Options options_;
  Target target_;
  Target sub_target_;
  std::shared_ptr<tls::Settings> tls_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<int> tids_;
  double start_wall_ = 0;
  double begin_wall_ = 0, end_wall_ = 0;
  Sample begin_, end_, last_progress_;
};

// Exit codes: 0 all good, 1 failures or lost/unordered messages, 2 bad usage or setup.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailures = 1;
inline constexpr int kExitSetup = 2;

int run_conn(const Options& options);
int run_pubsub(const Options& options);
int run_idle(const Options& options);

}  // namespace mqgate::bench
