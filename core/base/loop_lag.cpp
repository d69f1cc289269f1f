#include "base/loop_lag.hpp"

#include <algorithm>

namespace mqgate {

LoopLag::LoopLag(uv_loop_t* loop) {
  uv_timer_init(loop, &timer_);  // cannot fail
  timer_.data = this;
}

bool LoopLag::start() {
  running_ = true;
  window_start_ns_ = uv_hrtime();
  arm();
  return uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) != 0;
}

void LoopLag::stop() {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) return;
  running_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

double LoopLag::max_seconds() const {
  return static_cast<double>(std::max(window_max_ns_, previous_max_ns_)) / 1e9;
}

void LoopLag::arm() {
  armed_ns_ = uv_hrtime();
  // One-shot, re-armed from the callback: a repeating timer would be rescheduled from
  // the loop's cached time and hide part of the lag.
  uv_timer_start(&timer_, on_timer, kIntervalMs, 0);
}

void LoopLag::on_timer(uv_timer_t* timer) {
  auto* self = static_cast<LoopLag*>(timer->data);
  const uint64_t now = uv_hrtime();
  const uint64_t due = self->armed_ns_ + kIntervalMs * 1000000;
  // libuv's timers have millisecond resolution: a lag under a millisecond is noise.
  const uint64_t lag = now > due + 1000000 ? now - due : 0;
  self->last_ns_ = lag;
  self->total_ns_ += lag;
  self->samples_++;
  if (now - self->window_start_ns_ >= kWindowMs * 1000000) {
    self->previous_max_ns_ = self->window_max_ns_;
    self->window_max_ns_ = 0;
    self->window_start_ns_ = now;
  }
  self->window_max_ns_ = std::max(self->window_max_ns_, lag);
  if (self->running_) self->arm();
}

}  // namespace mqgate
