#include "harness.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstring>
#include <thread>

#include "mqtt/encoder.hpp"
#include "mqtt5_client.hpp"

namespace mqgate::bench {

namespace {

double wall_seconds() {
  return static_cast<double>(now_ns()) / 1e9;
}

// CPU seconds of one of our own threads, by kernel thread id.
double tid_cpu_seconds(int tid) {
  return std::max(0.0, stat_file_cpu_seconds("/proc/self/task/" + std::to_string(tid) + "/stat"));
}

}  // namespace

void Failures::record(Fail kind, const std::string& detail) {
  by_kind[static_cast<int>(kind)].add();
  details[std::string(fail_name(kind)) + ": " + detail]++;
}

uint64_t Failures::total() const {
  uint64_t n = 0;
  for (const auto& c : by_kind)
    n += c.get();
  return n;
}

void FailureReport::add(const Failures& f) {
  for (int k = 0; k < kFailKinds; k++) {
    by_kind[k] += f.by_kind[k].get();
    total += f.by_kind[k].get();
  }
  for (const auto& [d, n] : f.details)
    details[d] += n;
}

void FailureReport::json(Json& j) const {
  j.begin("failures");
  j.field("total", total);
  for (int k = 0; k < kFailKinds; k++)
    j.field(fail_name(static_cast<Fail>(k)), by_kind[k]);
  j.end();
}

void FailureReport::print(FILE* f) const {
  std::fprintf(f, "  failures    %" PRIu64, total);
  for (int k = 0; k < kFailKinds; k++)
    if (by_kind[k]) std::fprintf(f, "  %s %" PRIu64, fail_name(static_cast<Fail>(k)), by_kind[k]);
  std::fprintf(f, "\n");
}

void FailureReport::print_details(FILE* f) const {
  std::vector<std::pair<uint64_t, std::string>> most;
  for (const auto& [d, n] : details)
    most.emplace_back(n, d);
  std::sort(most.begin(), most.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < most.size() && i < 5; i++)
    std::fprintf(f, "  failure: %s (x%" PRIu64 ")\n", most[i].second.c_str(), most[i].first);
}

Harness::Harness(const Options& options) : options_(options) {
  std::string error;
  make_target(options_.host, options_.port, target_, error);  // validated by main()
  target_.ws_path = options_.ws_path;
  if (options_.sub_port) {
    make_target(options_.host, options_.sub_port, sub_target_, error);  // validated by main()
    sub_target_.ws_path = options_.ws_path;
  }
  if (options_.tls) tls_ = std::make_shared<tls::Settings>(options_.tls_settings);
  const int threads = options_.threads > 0
                          ? options_.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; i++)
    workers_.push_back(std::make_unique<Worker>(i, target_, tls_));
  start_wall_ = wall_seconds();
}

Harness::~Harness() {
  stop();
}

bool Harness::start() {
  try {
    for (auto& w : workers_) {
      w->start();
      int tid = 0;
      w->run_sync([&] { tid = static_cast<int>(syscall(SYS_gettid)); });
      tids_.push_back(tid);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mqgate-bench: TLS setup failed: %s\n", e.what());
    for (auto& w : workers_)
      w->stop();
    return false;
  }
  last_progress_ = sample();
  return true;
}

void Harness::stop() {
  for (auto& w : workers_)
    w->stop();
}

Harness::Sample Harness::sample() const {
  Sample s;
  s.wall = wall_seconds();
  s.process_cpu = process_cpu_seconds();
  s.broker_cpu = pid_cpu_seconds(options_.broker_pid);
  for (int pid : options_.extra_broker_pids) {
    const double c = pid_cpu_seconds(pid);
    s.broker_cpu = s.broker_cpu < 0 || c < 0 ? -1 : s.broker_cpu + c;
  }
  s.machine_busy = machine_busy_seconds();
  for (int tid : tids_)
    s.thread_cpu.push_back(tid_cpu_seconds(tid));
  return s;
}

double Harness::others_cpu(const Sample& a, const Sample& b) {
  if (a.machine_busy < 0 || b.machine_busy < 0) return 0;
  double others = (b.machine_busy - a.machine_busy) - (b.process_cpu - a.process_cpu);
  if (a.broker_cpu >= 0 && b.broker_cpu >= 0) others -= b.broker_cpu - a.broker_cpu;
  return std::max(0.0, others);
}

void Harness::mark_begin() {
  begin_ = sample();
  begin_wall_ = begin_.wall;
}

void Harness::mark_end() {
  end_ = sample();
  end_wall_ = end_.wall;
}

double Harness::since_begin() const {
  return wall_seconds() - begin_wall_;
}

bool Harness::out_of_time() const {
  return options_.max_time > 0 && wall_seconds() - start_wall_ > options_.max_time;
}

bool Harness::wait(double seconds, const std::function<bool()>& done,
                   const std::function<std::string(double, double)>& progress) {
  const double start = wall_seconds();
  double last = start;
  for (;;) {
    if (done && done()) return true;
    const double now = wall_seconds();
    if (now - start >= seconds || out_of_time()) return false;
    if (now - last >= 1.0) {
      if (progress && !options_.quiet) {
        const std::string line = progress(now - start, now - last);
        if (!line.empty()) std::fprintf(stderr, "%s\n", line.c_str());
      }
      last = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Harness::cpu_progress() {
  const Sample now = sample();
  const double dt = now.wall - last_progress_.wall;
  char b[160];
  if (dt <= 0) return "";
  double max_thread = 0;
  for (size_t i = 0; i < now.thread_cpu.size() && i < last_progress_.thread_cpu.size(); i++)
    max_thread = std::max(max_thread, now.thread_cpu[i] - last_progress_.thread_cpu[i]);
  int n = std::snprintf(b, sizeof b, "gen cpu %3.0f%% (max thread %3.0f%%)",
                        100 * (now.process_cpu - last_progress_.process_cpu) / dt,
                        100 * max_thread / dt);
  if (now.broker_cpu >= 0 && last_progress_.broker_cpu >= 0)
    n += std::snprintf(b + n, sizeof b - static_cast<size_t>(n), ", broker cpu %3.0f%%",
                       100 * (now.broker_cpu - last_progress_.broker_cpu) / dt);
  std::snprintf(b + n, sizeof b - static_cast<size_t>(n), ", others %3.0f%%",
                100 * others_cpu(last_progress_, now) / dt);
  last_progress_ = now;
  return b;
}

void Harness::json_resources(Json& j, uint64_t ops) const {
  const double wall = end_.wall - begin_.wall;
  double max_thread = 0;
  for (size_t i = 0; i < end_.thread_cpu.size() && i < begin_.thread_cpu.size(); i++)
    max_thread = std::max(max_thread, end_.thread_cpu[i] - begin_.thread_cpu[i]);
  j.begin("generator");
  j.field("threads", static_cast<int>(workers_.size()));
  j.field("wall_s", wall);
  j.field("cpu_s", end_.process_cpu - begin_.process_cpu);
  j.field("cpu_pct", wall > 0 ? 100 * (end_.process_cpu - begin_.process_cpu) / wall : 0.0);
  j.field("max_thread_cpu_pct", wall > 0 ? 100 * max_thread / wall : 0.0);
  j.end();
  j.begin("broker");
  j.field("pid", options_.broker_pid);
  if (!options_.extra_broker_pids.empty())
    j.field("processes", static_cast<int>(1 + options_.extra_broker_pids.size()));
  if (options_.broker_pid > 0 && begin_.broker_cpu >= 0 && end_.broker_cpu >= 0) {
    j.field("cpu_s", end_.broker_cpu - begin_.broker_cpu);
    j.field("cpu_pct", wall > 0 ? 100 * (end_.broker_cpu - begin_.broker_cpu) / wall : 0.0);
    if (ops)
      j.field("cpu_us_per_op",
              1e6 * (end_.broker_cpu - begin_.broker_cpu) / static_cast<double>(ops));
  }
  j.end();
  j.field("cores", static_cast<int>(std::thread::hardware_concurrency()));
  // Other processes' CPU in the window: a busy machine makes every figure smaller.
  j.field("others_cpu_pct", wall > 0 ? 100 * others_cpu(begin_, end_) / wall : 0.0);
}

void Harness::print_resources(FILE* f, uint64_t ops, const char* op) const {
  const double wall = end_.wall - begin_.wall;
  if (wall <= 0) return;
  double max_thread = 0;
  for (size_t i = 0; i < end_.thread_cpu.size() && i < begin_.thread_cpu.size(); i++)
    max_thread = std::max(max_thread, end_.thread_cpu[i] - begin_.thread_cpu[i]);
  std::fprintf(
      f,
      "  generator   %.2f s CPU in %.2f s wall: %.0f%% of one core (%zu threads, busiest %.0f%%)\n",
      end_.process_cpu - begin_.process_cpu, wall,
      100 * (end_.process_cpu - begin_.process_cpu) / wall, workers_.size(),
      100 * max_thread / wall);
  if (options_.broker_pid > 0 && begin_.broker_cpu >= 0 && end_.broker_cpu >= 0)
    std::fprintf(
        f, "  broker      pid %d%s: %.2f s CPU, %.0f%% of one core; %.2f us CPU per %s\n",
        options_.broker_pid,
        options_.extra_broker_pids.empty()
            ? ""
            : (" + " + std::to_string(options_.extra_broker_pids.size()) + " more").c_str(),
        end_.broker_cpu - begin_.broker_cpu, 100 * (end_.broker_cpu - begin_.broker_cpu) / wall,
        ops ? 1e6 * (end_.broker_cpu - begin_.broker_cpu) / static_cast<double>(ops) : 0.0, op);
  std::fprintf(f, "  machine     %u cores; other processes used %.0f%% of one core meanwhile\n",
               std::thread::hardware_concurrency(), 100 * others_cpu(begin_, end_) / wall);
}

std::string Harness::client_id(const char* role, uint64_t a, uint64_t b) const {
  // Appended piecewise: GCC 12 warns (-Wrestrict, falsely) about operator+ chains here.
  std::string id = options_.client_prefix;
  id += '-';
  id += role;
  id += std::to_string(a);
  if (b != UINT64_MAX) {
    id += '-';
    id += std::to_string(b);
  }
  return id;
}

void Harness::encode_connect(std::string& out, const std::string& client_id, bool clean) const {
  codec::Connect c;
  c.protocol_name = "MQTT";
  c.protocol_level = options_.mqtt_version;  // 4 (3.1.1) or 5
  c.clean_session = clean;
  c.keepalive = static_cast<uint16_t>(options_.keepalive);
  c.client_id = client_id;
  if (options_.username) c.username = *options_.username;
  if (options_.password) c.password = *options_.password;
  // 5.0: a persistent session asks for a session expiry of one hour (a session otherwise
  // ends with the connection [MQTT-3.1.2-23]).
  if (c.protocol_level == codec::kProtocolLevel5 && !clean) c.props.session_expiry_interval = 3600;
  codec::encode_connect(out, c);
}

}  // namespace mqgate::bench
