#include "stats.hpp"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mqgate::bench {

uint64_t now_ns() {
  return uv_hrtime();
}

Histogram::Histogram() : buckets_((64 - kSubBits + 1) * kSub, 0) {}

size_t Histogram::index(uint64_t v) {
  if (v < kSub) return static_cast<size_t>(v);
  const int msb = 63 - std::countl_zero(v);
  const int shift = msb - kSubBits;
  return static_cast<size_t>((shift + 1) * kSub + ((v >> shift) - kSub));
}

uint64_t Histogram::value_at(size_t index) {
  if (index < kSub) return index;
  const int shift = static_cast<int>(index / kSub) - 1;
  const uint64_t base = (kSub + index % kSub) << shift;
  return base + ((uint64_t{1} << shift) >> 1);
}

void Histogram::add(uint64_t v) {
  buckets_[index(v)]++;
  count_++;
  sum_ += v;
  min_ = std::min(min_, v);
  max_ = std::max(max_, v);
}

void Histogram::merge(const Histogram& other) {
  for (size_t i = 0; i < buckets_.size(); i++)
    buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t Histogram::percentile(double fraction) const {
  if (count_ == 0) return 0;
  const auto rank = static_cast<uint64_t>(fraction * static_cast<double>(count_ - 1)) + 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); i++) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(value_at(i), min_, max_);
  }
  return max_;
}

namespace {
double timespec_s(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
}
}  // namespace

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return timespec_s(ru.ru_utime) + timespec_s(ru.ru_stime);
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double stat_file_cpu_seconds(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (!std::getline(f, line)) return -1;
  // The command name (field 2) may hold spaces: fields after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Field 3 is the state; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && rest >> field; i++) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double pid_cpu_seconds(int pid) {
  if (pid <= 0) return -1;
  return stat_file_cpu_seconds("/proc/" + std::to_string(pid) + "/stat");
}

double machine_busy_seconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                     steal = 0;
  if (!(f >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) ||
      cpu != "cpu")
    return -1;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

long long pid_rss_bytes(int pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "NNN kB"
  }
  return -1;
}

void Json::key(const char* k) {
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
  if (k) {
    out_ += '"';
    out_ += k;
    out_ += "\":";
  }
}

Json& Json::begin(const char* k) {
  key(k);
  out_ += '{';
  first_.push_back(true);
  return *this;
}

Json& Json::end() {
  out_ += '}';
  first_.pop_back();
  return *this;
}

Json& Json::field(const char* k, double v) {
  key(k);
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", v);
  out_ += b;
  return *this;
}

Json& Json::field(const char* k, uint64_t v) {
  key(k);
  out_ += std::to_string(v);
  return *this;
}

Json& Json::field(const char* k, int64_t v) {
  key(k);
  out_ += std::to_string(v);
  return *this;
}

Json& Json::field(const char* k, bool v) {
  key(k);
  out_ += v ? "true" : "false";
  return *this;
}

Json& Json::field(const char* k, const std::string& v) {
  key(k);
  out_ += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out_ += '\\';
      out_ += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out_ += b;
    } else {
      out_ += c;
    }
  }
  out_ += '"';
  return *this;
}

Json& Json::latency(const char* k, const Histogram& h) {
  begin(k);
  field("count", h.count());
  field("p50", static_cast<double>(h.percentile(0.50)) / 1e3);
  field("p90", static_cast<double>(h.percentile(0.90)) / 1e3);
  field("p99", static_cast<double>(h.percentile(0.99)) / 1e3);
  field("max", static_cast<double>(h.max()) / 1e3);
  field("mean", h.mean() / 1e3);
  return end();
}

std::string format_ns(uint64_t ns) {
  char b[32];
  if (ns < 10'000)
    std::snprintf(b, sizeof b, "%.2f us", static_cast<double>(ns) / 1e3);
  else if (ns < 1'000'000)
    std::snprintf(b, sizeof b, "%.0f us", static_cast<double>(ns) / 1e3);
  else if (ns < 10'000'000'000ull)
    std::snprintf(b, sizeof b, "%.2f ms", static_cast<double>(ns) / 1e6);
  else
    std::snprintf(b, sizeof b, "%.1f s", static_cast<double>(ns) / 1e9);
  return b;
}

}  // namespace mqgate::bench
