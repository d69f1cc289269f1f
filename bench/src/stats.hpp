// Counting and timing for the load generator: a mergeable latency histogram, per-thread
// counters the progress reporter may read from another thread, and CPU clocks.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace mqgate::bench {

// Nanoseconds on the monotonic clock (uv_hrtime's clock, comparable across threads).
uint64_t now_ns();

// A log-linear histogram of nanosecond values: 64 sub-buckets per power of two, so a
// percentile is off by at most 1/64 (1.6 %) of its value. Constant size, cheap to add
// to, mergeable across threads. Not thread-safe: one per thread, merged at the end.
class Histogram {
 public:
  Histogram();
  void add(uint64_t value_ns);
  void merge(const Histogram& other);
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const {
    return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0;
  }
  // The value below which `fraction` (0..1) of the samples lie (the bucket's midpoint).
  uint64_t percentile(double fraction) const;

 private:
  static constexpr int kSubBits = 6;
  static constexpr uint64_t kSub = 1u << kSubBits;
  static size_t index(uint64_t v);
  static uint64_t value_at(size_t index);

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

// A counter written by one thread and read by others (progress output): relaxed atomics
// on their own cache line, so the writer pays no more than a plain increment.
struct alignas(64) Counter {
  std::atomic<uint64_t> value{0};
  void add(uint64_t n = 1) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return value.load(std::memory_order_relaxed); }
};

// CPU seconds (user + system) consumed so far by this process / the calling thread.
double process_cpu_seconds();
double thread_cpu_seconds();
// CPU seconds (utime + stime) in a /proc/.../stat file; negative if unreadable.
double stat_file_cpu_seconds(const std::string& path);
// CPU seconds of another process from /proc/<pid>/stat; negative if unreadable.
double pid_cpu_seconds(int pid);
// CPU seconds the whole machine spent busy (all cores, /proc/stat); negative if unknown.
double machine_busy_seconds();
// Resident set size in bytes from /proc/<pid>/status (VmRSS); negative if unreadable.
long long pid_rss_bytes(int pid);

// Minimal JSON output: a flat writer that the modes use for --json.
class Json {
 public:
  Json& begin(const char* key = nullptr);  // opens an object (named inside an object)
  Json& end();
  Json& field(const char* key, double v);
  Json& field(const char* key, uint64_t v);
  Json& field(const char* key, int64_t v);
  Json& field(const char* key, int v) { return field(key, static_cast<int64_t>(v)); }
  Json& field(const char* key, bool v);
  Json& field(const char* key, const std::string& v);
  Json& field(const char* key, const char* v) { return field(key, std::string(v)); }
  // Latency percentiles of a histogram, in microseconds: {count, p50, p90, p99, max, mean}.
  Json& latency(const char* key, const Histogram& h);
  const std::string& str() const { return out_; }

 private:
  void key(const char* k);
  std::string out_;
  std::vector<bool> first_;
};

// "1.23 ms", "456 us": a duration in nanoseconds for human-readable output.
std::string format_ns(uint64_t ns);

}  // namespace mqgate::bench
