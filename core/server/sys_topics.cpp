#include "server/sys_topics.hpp"

#include <cinttypes>
#include <cstdio>
#include <string>

#include "base/version.hpp"
#include "broker/broker.hpp"

namespace mqgate {

SysTopics::SysTopics(uv_loop_t* loop, Broker& broker, uint32_t interval_s)
    : broker_(broker), started_ms_(uv_now(loop)), loop_(loop) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  set_interval(interval_s);
}

SysTopics::~SysTopics() = default;

void SysTopics::set_interval(uint32_t interval_s) {
  interval_s_ = interval_s;
  uv_timer_stop(&timer_);
  if (interval_s == 0) return;
  publish_now();
  uv_timer_start(&timer_, on_timer, uint64_t{interval_s} * 1000, uint64_t{interval_s} * 1000);
}

void SysTopics::stop() {
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void SysTopics::on_timer(uv_timer_t* timer) { static_cast<SysTopics*>(timer->data)->publish_now(); }

void SysTopics::publish_now() {
  const BrokerStats& s = broker_.stats();
  auto put = [&](const char* topic, uint64_t value) {
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64, value);
    broker_.publish_internal(topic, text, true);
  };
  broker_.publish_internal("$SYS/broker/version", "mqgate " MQGATE_VERSION, true);
  const uint64_t uptime_s = (uv_now(loop_) - started_ms_) / 1000;
  broker_.publish_internal("$SYS/broker/uptime", std::to_string(uptime_s) + " seconds", true);
  put("$SYS/broker/clients/connected", s.clients_connected);
  put("$SYS/broker/clients/maximum", s.clients_maximum);
  put("$SYS/broker/clients/total", broker_.sessions().size());
  put("$SYS/broker/connections/total", s.connections_total);
  put("$SYS/broker/messages/received", s.messages_received);
  put("$SYS/broker/messages/sent", s.delivery.messages_sent);
  put("$SYS/broker/publish/messages/dropped", s.delivery.messages_dropped);
  put("$SYS/broker/publish/messages/dropped/offline", s.messages_dropped_offline);
  put("$SYS/broker/clients/slow disconnected", s.slow_subscribers_disconnected);
  put("$SYS/broker/flow/publishers held", broker_.flow().held_count());
  put("$SYS/broker/flow/subscribers congested", broker_.flow().congested_count());
  put("$SYS/broker/publish/messages/denied", s.publish_denied);
  put("$SYS/broker/deliveries/denied", s.deliveries_denied);
  put("$SYS/broker/bytes/received", s.bytes_received);
  put("$SYS/broker/bytes/sent", s.bytes_sent);
  put("$SYS/broker/subscriptions/count", broker_.router().subscription_count());
  put("$SYS/broker/retained messages/count", broker_.router().retained_count());
  put("$SYS/broker/retained messages/refused", s.retained_refused);
  put("$SYS/broker/store/refused", s.store_refused);
  put("$SYS/broker/subscriptions/refused", s.subscriptions_refused);
  put("$SYS/broker/connections/refused/identity", s.connects_identity_mismatch);
  put("$SYS/broker/connections/refused/session limit", s.connects_session_limit);
  put("$SYS/broker/connections/refused/tls handshakes", s.tls_handshakes_refused);
  for (const PluginCounter& c : broker_.plugin_counters())
    put(("$SYS/broker/plugins/" + c.plugin + "/" + c.name).c_str(), c.value);
}

}  // namespace mqgate
