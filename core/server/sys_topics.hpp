// $SYS/broker/... statistics, published as retained QoS 0 messages every
// `sys_interval` seconds (names as Mosquitto's, so existing dashboards work).
#pragma once

#include <uv.h>

#include <cstdint>

namespace mqgate {

class Broker;

class SysTopics {
 public:
  SysTopics(uv_loop_t* loop, Broker& broker, uint32_t interval_s);
  ~SysTopics();
  // Changes the interval (0 stops publishing); used on reload.
  void set_interval(uint32_t interval_s);
  void stop();
  void publish_now();

 private:
  static void on_timer(uv_timer_t* timer);

  Broker& broker_;
  uv_timer_t timer_;
  uint64_t started_ms_;
  uint32_t interval_s_ = 0;
  uv_loop_t* loop_;
};

}  // namespace mqgate
