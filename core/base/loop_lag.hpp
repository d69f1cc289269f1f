// How late the event loop is: a timer asks to run every kIntervalMs, and whatever
// delay it sees beyond that is work (or blocking) that held the loop up. One timer, a
// few arithmetic operations per tick; read by GET /metrics.
#pragma once

#include <uv.h>

#include <cstdint>

namespace mqgate {

class LoopLag {
 public:
  static constexpr uint64_t kIntervalMs = 100;
  static constexpr uint64_t kWindowMs = 10000;  // max_seconds() looks this far back (at least)

  explicit LoopLag(uv_loop_t* loop);
  bool start();
  // Closes the timer (shutdown); the loop must run its close callback before the
  // object goes.
  void stop();

  double last_seconds() const { return static_cast<double>(last_ns_) / 1e9; }
  // The largest lag seen in the current window or the previous one.
  double max_seconds() const;
  double total_seconds() const { return static_cast<double>(total_ns_) / 1e9; }
  uint64_t samples() const { return samples_; }

 private:
  static void on_timer(uv_timer_t* timer);
  void arm();

  uv_timer_t timer_;
  bool running_ = false;
  uint64_t armed_ns_ = 0;  // uv_hrtime() when the timer was last started
  uint64_t last_ns_ = 0;
  uint64_t total_ns_ = 0;
  uint64_t samples_ = 0;
  uint64_t window_start_ns_ = 0;
  uint64_t window_max_ns_ = 0;
  uint64_t previous_max_ns_ = 0;
};

}  // namespace mqgate
