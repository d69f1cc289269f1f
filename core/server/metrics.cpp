#include "server/metrics.hpp"

#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "base/loop_lag.hpp"
#include "base/version.hpp"
#include "broker/broker.hpp"
#include "cluster/bridge.hpp"
#include "http/endpoint.hpp"
#include "http/metrics_text.hpp"
#include "plugin/auth.hpp"
#include "server/listener.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

namespace {

using http::MetricsText;
constexpr auto kCounter = MetricsText::Type::kCounter;
constexpr auto kGauge = MetricsText::Type::kGauge;

double wall_seconds() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

// Set when the program starts (static initialisation), near enough to its exec.
const double kProcessStart = wall_seconds();

// Resident memory from /proc/self/statm: a read of a kernel-made page, no disk. 0 if
// it cannot be read (the sample is then left out).
uint64_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

void broker_metrics(MetricsText& m, const MetricsSources& s) {
  Broker& b = s.broker;
  const BrokerStats& st = b.stats();
  m.family("mqgate_build_info", kGauge, "Always 1; the version is in the label.");
  m.sample(uint64_t{1}, {{"version", MQGATE_VERSION}});
  m.family("mqgate_uptime_seconds", kGauge, "Seconds since the broker started serving.");
  m.sample(static_cast<double>(s.uptime_ms) / 1000.0);
  m.family("mqgate_clients_connected", kGauge, "Clients connected now (CONNACK 0 sent).");
  m.sample(st.clients_connected);
  m.family("mqgate_clients_maximum", kGauge, "Most clients connected at once since the start.");
  m.sample(st.clients_maximum);
  m.family("mqgate_sessions", kGauge, "Sessions, online or offline.");
  m.sample(uint64_t{b.sessions().size()});
  m.family("mqgate_sessions_persistent", kGauge,
           "Persistent sessions (clean session 0), online or offline.");
  m.sample(uint64_t{b.persistent_sessions()});
  m.family("mqgate_connections", kCounter, "Network connections accepted.");
  m.sample(st.connections_total);
  m.family("mqgate_connections_refused", kCounter, "Connections refused, by reason.");
  m.sample(st.connects_identity_mismatch, {{"reason", "identity"}});
  m.sample(st.connects_session_limit, {{"reason", "session_limit"}});
  m.sample(st.tls_handshakes_refused, {{"reason", "tls_handshakes"}});
  m.family("mqgate_messages_received", kCounter, "PUBLISH packets received from clients.");
  m.sample(st.messages_received);
  m.family("mqgate_messages_sent", kCounter, "PUBLISH packets sent to clients.");
  m.sample(st.delivery.messages_sent);
  m.family("mqgate_messages_dropped", kCounter,
           "Messages not delivered to a subscriber, by reason.");
  m.sample(st.delivery.dropped_qos0_offline, {{"reason", "qos0_offline"}});
  m.sample(st.delivery.dropped_qos0_backlog, {{"reason", "qos0_backlog"}});
  m.sample(st.delivery.dropped_queue_full, {{"reason", "queue_full"}});
  m.sample(st.delivery.dropped_too_large, {{"reason", "too_large"}});
  m.sample(st.delivery.dropped_expired, {{"reason", "expired"}});
  m.family("mqgate_publish_denied", kCounter, "PUBLISHes an auth plugin refused.");
  m.sample(st.publish_denied);
  m.family("mqgate_deliveries_denied", kCounter,
           "Messages withheld from a subscriber by the plugins' RECEIVE answer.");
  m.sample(st.deliveries_denied);
  m.family("mqgate_delivery_checks", kCounter,
           "RECEIVE questions asked about live deliveries (answers remembered are not counted).");
  m.sample(st.delivery_checks);
  m.family("mqgate_bytes_received", kCounter, "Bytes read from clients (after TLS).");
  m.sample(st.bytes_received);
  m.family("mqgate_bytes_sent", kCounter, "Bytes written to clients (before TLS).");
  m.sample(st.bytes_sent);
  m.family("mqgate_subscriptions", kGauge, "Subscriptions of all sessions.");
  m.sample(uint64_t{b.router().subscription_count()});
  m.family("mqgate_subscriptions_refused", kCounter,
           "Filters refused over max_subscriptions_per_client.");
  m.sample(st.subscriptions_refused);
  m.family("mqgate_retained_messages", kGauge, "Retained messages stored.");
  m.sample(uint64_t{b.router().retained_count()});
  m.family("mqgate_retained_refused", kCounter, "Retained messages not stored (the store's caps).");
  m.sample(st.retained_refused);
  m.family("mqgate_store_refused", kCounter,
           "Messages refused because the persistence store's max_bytes could not take them.");
  m.sample(st.store_refused);

  m.family("mqgate_messages_inflight", kGauge,
           "QoS 1/2 messages sent and not yet acknowledged, all sessions.");
  m.sample(st.delivery.inflight_now);
  m.family("mqgate_messages_queued", kGauge,
           "QoS 1/2 messages waiting behind the in-flight window, all sessions.");
  m.sample(st.delivery.queued_now);
  m.family("mqgate_fanouts_pending", kGauge,
           "Publications whose delivery is being done in slices.");
  m.sample(uint64_t{b.pending_fanouts()});
  m.family("mqgate_retained_deliveries_pending", kGauge,
           "Clients with retained messages still to be sent.");
  m.sample(uint64_t{b.pending_retained_jobs()});
  m.family("mqgate_auth_pending", kGauge,
           "Clients waiting for a plugin's decision (or a sliced SUBSCRIBE).");
  m.sample(uint64_t{b.pending_decisions()});
  m.family("mqgate_connections_held", kGauge,
           "Connections whose input waits for the broker's congestion to end.");
  m.sample(uint64_t{s.held_connections});
  m.family("mqgate_connections_lingering", kGauge,
           "Closing connections whose last packet is written, read until the client closes.");
  m.sample(uint64_t{s.lingering_connections});
}

// Connected clients that presented a certificate, by the time left on it: disjoint
// windows, so a dashboard can stack them; five series whatever the fleet's size.
void certificate_expiry_metrics(MetricsText& m, const Broker& b) {
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  constexpr int64_t kDay = 86400;
  const size_t expired = b.certificates_expiring_by(now - 3600);  // (to the hour)
  const size_t by7 = b.certificates_expiring_by(now + 7 * kDay);
  const size_t by30 = b.certificates_expiring_by(now + 30 * kDay);
  const size_t by90 = b.certificates_expiring_by(now + 90 * kDay);
  const size_t all = b.certificates_connected();
  m.family("mqgate_clients_by_certificate_expiry", kGauge,
           "Connected clients that presented a certificate, by the time left on it (to the "
           "hour): expired, within 7 days, 7 to 30, 30 to 90, or later.");
  m.sample(uint64_t{expired}, {{"window", "expired"}});
  m.sample(uint64_t{by7 - expired}, {{"window", "7d"}});
  m.sample(uint64_t{by30 - by7}, {{"window", "30d"}});
  m.sample(uint64_t{by90 - by30}, {{"window", "90d"}});
  m.sample(uint64_t{all - by90}, {{"window", "later"}});
}

void listener_metrics(MetricsText& m, const MetricsSources& s) {
  m.family("mqgate_listener_connections", kGauge, "Connections open now, by listener.");
  for (const auto& l : s.listeners)
    m.sample(uint64_t{l->active_connections}, {{"listener", l->config().name}});
  m.family("mqgate_listener_connections_accepted", kCounter, "Connections accepted, by listener.");
  for (const auto& l : s.listeners) {
    const size_t i = l->config().index;
    m.sample(i < s.accepted.size() ? s.accepted[i] : 0, {{"listener", l->config().name}});
  }
  m.family("mqgate_tls_handshakes", kCounter,
           "TLS handshakes completed, by listener and kind (full or resumed).");
  for (const auto& l : s.listeners) {
    const auto& g = l->tls_generation();
    if (!g) continue;
    m.sample(g->counts().full, {{"listener", l->config().name}, {"kind", "full"}});
    m.sample(g->counts().resumed, {{"listener", l->config().name}, {"kind", "resumed"}});
  }
  m.family("mqgate_tls_handshake_failures", kCounter,
           "TLS handshakes that did not complete, by listener and reason.");
  for (const auto& l : s.listeners) {
    const auto& g = l->tls_generation();
    if (!g) continue;
    for (int r = 0; r < TlsHandshakeCounts::kFailureCount; ++r) {
      const auto why = static_cast<TlsHandshakeCounts::Failure>(r);
      m.sample(g->counts().failed[r],
               {{"listener", l->config().name}, {"reason", TlsHandshakeCounts::failure_name(why)}});
    }
  }
  m.family("mqgate_listener_certificate_expiry_timestamp_seconds", kGauge,
           "notAfter of the certificate each TLS listener serves, in seconds since the epoch.");
  for (const auto& l : s.listeners) {
    const auto& g = l->tls_generation();
    if (!g) continue;
    if (auto t = x509_time_to_epoch(g->served_chain().valid_to))
      m.sample(static_cast<double>(*t), {{"listener", l->config().name}});
  }
  m.family("mqgate_listener_crl_next_update_timestamp_seconds", kGauge,
           "nextUpdate of the CRL each TLS listener checks clients against, in seconds since "
           "the epoch (listeners without a CRL are left out).");
  for (const auto& l : s.listeners) {
    const auto& g = l->tls_generation();
    if (g && g->crl() != nullptr)
      m.sample(static_cast<double>(g->crl_next_update()), {{"listener", l->config().name}});
  }
  certificate_expiry_metrics(m, s.broker);
  m.family("mqgate_websocket_upgrades", kCounter,
           "WebSocket upgrade requests, by listener and result (upgraded, or refused with an HTTP "
           "error).");
  for (const auto& l : s.listeners) {
    if (!l->config().websocket) continue;
    m.sample(l->websocket_counts().upgraded,
             {{"listener", l->config().name}, {"result", "upgraded"}});
    m.sample(l->websocket_counts().refused,
             {{"listener", l->config().name}, {"result", "refused"}});
  }
  m.family("mqgate_websocket_protocol_errors", kCounter,
           "WebSocket connections closed for a bad frame, by listener.");
  for (const auto& l : s.listeners) {
    if (!l->config().websocket) continue;
    m.sample(l->websocket_counts().protocol_errors, {{"listener", l->config().name}});
  }
  m.family("mqgate_tls_handshakes_in_progress", kGauge,
           "TLS handshakes started and not finished (all listeners).");
  m.sample(uint64_t{s.tls_workers ? s.tls_workers->pending() : 0});
}

void auth_metrics(MetricsText& m, const MetricsSources& s) {
  using C = AuthDecisionCounts;
  m.family("mqgate_auth_decisions", kCounter, "Plugins' answers, by plugin, phase and verdict.");
  for (const C& c : s.hooks.decision_counts())
    for (int p = 0; p < C::kPhaseCount; ++p)
      for (int v = 0; v < C::kVerdictCount; ++v)
        m.sample(c.counts[p][v], {{"plugin", c.plugin},
                                  {"phase", C::phase_name(static_cast<C::Phase>(p))},
                                  {"verdict", C::verdict_name(static_cast<C::Verdict>(v))}});
}

void plugin_metrics(MetricsText& m, const MetricsSources& s) {
  const BrokerStats& st = s.broker.stats();
  m.family("mqgate_claimed_messages", kCounter,
           "PUBLISHes to topics a plugin claimed: taken or refused by the plugin.");
  m.sample(st.claimed_taken, {{"result", "taken"}});
  m.sample(st.claimed_refused, {{"result", "refused"}});
  m.family("mqgate_plugin_replies", kCounter,
           "Plugins' messages for one connection: sent, or dropped (gone, no subscription).");
  m.sample(st.private_sent, {{"result", "sent"}});
  m.sample(st.private_dropped, {{"result", "dropped"}});
  m.family("mqgate_plugin_events", kCounter, "Counters plugins registered, by plugin and counter.");
  for (const PluginCounter& c : s.hooks.plugin_counters())
    m.sample(c.value, {{"plugin", c.plugin}, {"counter", c.name}});
}

void loop_metrics(MetricsText& m, const MetricsSources& s) {
  if (s.lag) {
    m.family("mqgate_loop_lag_seconds", kGauge,
             "How late the event loop ran its latest 100 ms timer.");
    m.sample(s.lag->last_seconds());
    m.family("mqgate_loop_lag_max_seconds", kGauge,
             "The largest loop lag of the last 10 to 20 seconds.");
    m.sample(s.lag->max_seconds());
    m.family("mqgate_loop_lag_accumulated_seconds", kCounter,
             "Loop lag added up over every sample.");
    m.sample(s.lag->total_seconds());
    m.family("mqgate_loop_lag_samples", kCounter, "Loop lag samples taken (one per 100 ms timer).");
    m.sample(s.lag->samples());
  }
  if (s.http) {
    m.family("mqgate_http_responses", kCounter, "Answers of this HTTP endpoint, by status code.");
    for (const auto& [code, n] : s.http->responses()) {
      const std::string text = std::to_string(code);
      m.sample(n, {{"code", text}});
    }
    m.family("mqgate_http_connections_refused", kCounter,
             "HTTP connections closed at once: [http] max_connections open, none idle.");
    m.sample(s.http->refused());
    m.family("mqgate_http_connections_evicted", kCounter,
             "Idle HTTP connections closed to make room for a new one.");
    m.sample(s.http->evicted());
  }
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    const auto secs = [](const timeval& tv) {
      return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    m.family("process_cpu_seconds", kCounter, "User and system CPU time of the process.");
    m.sample(secs(ru.ru_utime) + secs(ru.ru_stime));
    m.family("process_max_resident_memory_bytes", kGauge, "Peak resident memory of the process.");
    m.sample(static_cast<uint64_t>(ru.ru_maxrss) * 1024);
  }
  if (const uint64_t rss = resident_bytes()) {
    m.family("process_resident_memory_bytes", kGauge, "Resident memory of the process.");
    m.sample(rss);
  }
  m.family("process_start_time_seconds", kGauge,
           "When the process started, in seconds since the epoch.");
  m.sample(kProcessStart);
}

// Always present (zeros without [cluster]), so a dashboard's queries exist on every node.
void cluster_metrics(MetricsText& m, const MetricsSources& s) {
  const cluster::Bridge* c = s.cluster;
  const cluster::Bridge::Stats none{};
  const cluster::Bridge::Stats& st = c ? c->stats() : none;
  const cluster::Link::Stats* ls = c ? c->link_stats() : nullptr;
  m.family("mqgate_cluster_connected", kGauge,
           "1 while this node is connected to NATS ([cluster]); 0 otherwise.");
  m.sample(uint64_t{c && c->connected() ? 1u : 0u});
  m.family("mqgate_cluster_interest_filters", kGauge,
           "Distinct filters of local subscriptions this node takes from NATS.");
  m.sample(uint64_t{c ? c->interest_filters() : 0});
  m.family("mqgate_cluster_inbound_queued", kGauge,
           "Messages from NATS waiting for the event loop.");
  m.sample(uint64_t{c ? c->queued() : 0});
  m.family("mqgate_cluster_messages_sent", kCounter,
           "Locally-published messages sent to the other nodes through NATS.");
  m.sample(st.sent);
  m.family("mqgate_cluster_messages_received", kCounter,
           "Messages from other nodes delivered to this node's router.");
  m.sample(st.received);
  m.family("mqgate_cluster_messages_kept_local", kCounter,
           "Locally-published messages not sent to NATS: no other node has a matching filter.");
  m.sample(st.not_wanted);
  m.family("mqgate_cluster_nodes", kGauge,
           "Other nodes this node knows (heard from within the last 10 s).");
  m.sample(uint64_t{c ? c->gossip().nodes() : 0});
  m.family("mqgate_cluster_remote_filters", kGauge,
           "Distinct filters of the other nodes' subscriptions, as this node knows them.");
  m.sample(uint64_t{c ? c->gossip().remote_filters() : 0});
  m.family("mqgate_cluster_interest_certain", kGauge,
           "1 while this node knows every other node's filters (it then sends only wanted "
           "messages); 0 while it sends every message (just connected, or resynchronising).");
  m.sample(uint64_t{c && c->gossip().certain() ? 1u : 0u});
  m.family("mqgate_cluster_interest_resyncs", kCounter,
           "Times another node's filter list was fetched again after a missed update.");
  m.sample(uint64_t{c ? c->gossip().stats().resyncs : 0});
  m.family("mqgate_cluster_interest_ack_timeouts", kCounter,
           "New filters whose SUBACK stopped waiting for another node's acknowledgement.");
  m.sample(uint64_t{c ? c->gossip().stats().ack_timeouts : 0});
  m.family("mqgate_cluster_duplicates", kCounter,
           "Copies of one message through overlapping NATS subjects, dropped.");
  m.sample(st.duplicates);
  const cluster::JetStream* js = c ? c->jetstream() : nullptr;
  const cluster::JetStream::Stats js_none{};
  const cluster::JetStream::Stats& jst = js ? js->stats() : js_none;
  struct Row {
    const char* name;
    bool counter;
    const char* help;
    uint64_t value;
  };
  const Row jetstream[] = {
      {"mqgate_cluster_jetstream_ready", false,
       "1 while this node's JetStream stream and consumer are set up; 0 otherwise.",
       js && js->ready() ? 1u : 0u},
      {"mqgate_cluster_jetstream_published", true,
       "QoS 1/2 messages stored by JetStream for another node (once per node).", jst.published},
      {"mqgate_cluster_jetstream_acks_pending", false,
       "Publishes to JetStream waiting for their acknowledgement.", js ? js->pending() : 0},
      {"mqgate_cluster_jetstream_publish_retries", true,
       "Publishes to JetStream sent again (no answer in time, or an error).", jst.retries},
      {"mqgate_cluster_jetstream_publish_failures", true,
       "QoS 1/2 messages JetStream did not store within publish_timeout: their publisher was "
       "refused.",
       jst.failures},
      {"mqgate_cluster_jetstream_received", true,
       "JetStream deliveries to this node handed to its router.", jst.received},
      {"mqgate_cluster_jetstream_redelivered", true,
       "JetStream deliveries to this node made more than once (not acknowledged in time, or "
       "after a restart).",
       jst.redelivered},
      {"mqgate_cluster_jetstream_duplicates", true,
       "JetStream redeliveries of messages this process had handed over already, dropped.",
       jst.duplicates},
  };
  for (const Row& r : jetstream) {
    m.family(r.name, r.counter ? kCounter : kGauge, r.help);
    m.sample(r.value);
  }
  m.family("mqgate_cluster_reconnects", kCounter, "NATS connections regained after a loss.");
  m.sample(ls ? ls->reconnects : 0);
  m.family("mqgate_cluster_messages_dropped", kCounter,
           "Messages not sent to or not taken from the cluster, by reason.");
  m.sample(st.dropped_down, {{"reason", "nats_down"}});
  m.sample(st.dropped_too_long, {{"reason", "too_long"}});
  m.sample(st.dropped_malformed, {{"reason", "malformed"}});
  m.sample(ls ? ls->dropped_qos0.load() : 0, {{"reason", "queue_full_qos0"}});
  m.sample(ls ? ls->dropped_qos12.load() : 0, {{"reason", "queue_full_qos12"}});
  m.sample(ls ? ls->dropped_replies.load() : 0, {{"reason", "reply_queue_full"}});
  m.sample(ls ? ls->slow_consumer.load() : 0, {{"reason", "slow_consumer"}});
  m.sample(ls ? ls->dropped_control.load() : 0, {{"reason", "control_queue_full"}});
  m.sample(uint64_t{c ? c->gossip().stats().malformed : 0}, {{"reason", "control_malformed"}});
}

}  // namespace

std::string render_metrics(const MetricsSources& sources) {
  MetricsText m;
  broker_metrics(m, sources);
  listener_metrics(m, sources);
  auth_metrics(m, sources);
  plugin_metrics(m, sources);
  loop_metrics(m, sources);
  cluster_metrics(m, sources);
  return m.text();
}

}  // namespace mqgate
