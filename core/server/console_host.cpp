// What the console asks of the server (console/host.hpp): the broker's page (counters,
// listeners, certificates, CRLs), disconnections, and a listener's CRL reload.
#include <mbedtls/x509_crl.h>

#include <algorithm>
#include <ctime>

#include "base/log.hpp"
#include "base/loop_lag.hpp"
#include "base/version.hpp"
#include "client/mqtt5.hpp"
#include "console/clients.hpp"
#include "console/console.hpp"
#include "server/connection.hpp"
#include "server/listener.hpp"
#include "server/server.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

namespace {

size_t crl_entries(const mbedtls_x509_crl* crl) {
  size_t n = 0;
  for (const mbedtls_x509_crl* c = crl; c != nullptr; c = c->next)
    for (const mbedtls_x509_crl_entry* e = &c->entry; e != nullptr; e = e->next)
      if (e->serial.len != 0) ++n;
  return n;
}

}  // namespace

void Server::write_broker(console::Json& out) {
  const BrokerStats& st = broker_.stats();
  const int64_t now_s = static_cast<int64_t>(std::time(nullptr));
  uint64_t handshakes = 0;
  for (const auto& l : listeners_)
    if (const auto& g = l->tls_generation()) handshakes += g->counts().full + g->counts().resumed;
  out.field("version", MQGATE_VERSION)
      .field("uptime_s", started_ ? (now_ms() - started_ms_) / 1000 : 0)
      .field("time", console::iso_time(now_s))
      .key("counters")
      .begin_object()
      .field("clients_connected", st.clients_connected)
      .field("clients_maximum", st.clients_maximum)
      .field("connections_total", st.connections_total)
      .field("sessions", uint64_t{broker_.sessions().size()})
      .field("persistent_sessions", uint64_t{broker_.persistent_sessions()})
      .field("messages_received", st.messages_received)
      .field("messages_sent", st.delivery.messages_sent)
      .field("messages_dropped", st.delivery.messages_dropped)
      .field("bytes_received", st.bytes_received)
      .field("bytes_sent", st.bytes_sent)
      .field("publish_denied", st.publish_denied)
      .field("held_publishers", uint64_t{broker_.flow().held_count()})
      .field("tls_handshakes", handshakes)
      .field("tls_handshakes_refused", st.tls_handshakes_refused)
      .field("queued_messages", st.delivery.queued_now)
      .field("inflight_messages", st.delivery.inflight_now)
      .field("loop_lag_ms", lag_ ? static_cast<uint64_t>(lag_->last_seconds() * 1000) : 0)
      .end_object();
  out.key("listeners").begin_array();
  for (const auto& l : listeners_) {
    const ListenerConfig& c = l->config();
    out.begin_object()
        .field("name", c.name)
        .field("bind", c.bind)
        .field("port", l->bound_port())
        .field("tls", c.tls.has_value())
        .field("websocket", c.websocket.has_value())
        .field("connections", l->active_connections);
    out.key("plugins").begin_array();
    if (c.plugins) {
      for (const auto& p : *c.plugins)
        out.string(p);
    } else {
      for (const auto& p : config_.plugins)
        out.string(p.name);
    }
    out.end_array();
    if (const auto& g = l->tls_generation()) {
      out.key("certificates").begin_array();
      for (const mbedtls_x509_crt* crt = &g->served_chain(); crt != nullptr && crt->raw.len != 0;
           crt = crt->next) {
        out.begin_object();
        console::write_certificate_fields(*crt, now_s, out);
        out.end_object();
      }
      out.end_array();
      const TlsConfig& tls = g->settings();
      out.field("client_cert", tls.client_cert == TlsConfig::ClientCert::kRequired   ? "required"
                               : tls.client_cert == TlsConfig::ClientCert::kOptional ? "optional"
                                                                                     : "none");
      if (!tls.crlfile.empty()) {
        out.key("crl")
            .begin_object()
            .field("file", tls.crlfile)
            .field("entries", uint64_t{crl_entries(g->crl())})
            .field("next_update", console::iso_time(g->crl_next_update()))
            .field("stale", g->crl_next_update() != 0 && g->crl_next_update() < now_s)
            .field("console_can_sign", !tls.crl_ca_keyfile.empty())
            .end_object();
      }
    }
    out.end_object();
  }
  out.end_array();
  // The cluster as this node sees it (null without [cluster]).
  out.key("cluster");
  if (!cluster_) {
    out.null();
    return;
  }
  const cluster::Gossip& g = cluster_->gossip();
  const cluster::Bridge::Stats& cs = cluster_->stats();
  out.begin_object()
      .field("name", cluster_->config().name)
      .field("node", cluster_->config().node)
      .field("connected", cluster_->connected())
      .field("other_nodes", uint64_t{g.nodes()})
      .field("local_filters", uint64_t{cluster_->interest_filters()})
      .field("remote_filters", uint64_t{g.remote_filters()})
      .field("interest_certain", g.certain())
      .field("messages_sent", cs.sent)
      .field("messages_kept_local", cs.not_wanted)
      .field("messages_received", cs.received)
      .end_object();
}

void Server::console_disconnect(Client& client, const char* why) {
  mqtt5::disconnect(client, codec::reason::kAdministrativeAction, why);
  carry_out_requests();
}

void Server::reload_listener_tls(const std::string& name, std::function<void(bool ok)> then) {
  auto it = std::find_if(listeners_.begin(), listeners_.end(),
                         [&](const auto& l) { return l->config().name == name; });
  if (it == listeners_.end() || !(*it)->config().tls || !tls_workers_) {
    then(false);
    return;
  }
  const ListenerConfig& config = (*it)->config();
  if (tls_reload_running_) {
    // After the running load (it may have read the CRL before it changed).
    if (!tls_reload_waiting_) tls_reload_waiting_.emplace();
    auto& waiting = *tls_reload_waiting_;
    if (std::none_of(waiting.begin(), waiting.end(),
                     [&](const ListenerConfig& l) { return l.name == name; }))
      waiting.push_back(config);
    tls_reload_done_waiting_.emplace_back(name, std::move(then));
    return;
  }
  tls_reload_done_.emplace_back(name, std::move(then));
  if (!start_tls_reload({config})) tls_reload_finished({});
}

size_t Server::disconnect_certificate(const std::string& issuer_raw, const std::string& serial_raw,
                                      const char* why) {
  size_t closed = 0;
  for (Connection* c = connections_; c != nullptr; c = c->next) {
    const TlsPeerInfo* info = c->tls();
    if (info == nullptr || c->closing() || info->serial_raw != serial_raw ||
        info->issuer_raw != issuer_raw)
      continue;
    CLIENT_LOG(log::Level::kInfo, *c, "%s; closing", why);
    mqtt5::disconnect(*c, codec::reason::kAdministrativeAction, why);
    ++closed;
  }
  carry_out_requests();
  return closed;
}

void Server::reload_console(const HttpConfig& fresh) {
  // The password file is read on the thread pool; the console takes it on the loop.
  struct Work {
    uv_work_t req;
    Server* server;
    HttpConfig config;
    console::Users users;
    std::string error;
  };
  auto work = std::make_unique<Work>();
  work->server = this;
  work->config = fresh;
  work->users.admins.insert(fresh.console_admins.begin(), fresh.console_admins.end());
  work->req.data = work.get();
  const int rc = uv_queue_work(
      &loop_, &work->req,
      [](uv_work_t* req) {
        auto* w = static_cast<Work*>(req->data);
        if (!w->config.console_users.empty())
          console::load_users(w->config.console_users, w->users, w->error);
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        Server* s = w->server;
        if (status != 0 || s->shutting_down_ || !s->console_) return;
        if (!w->error.empty()) {
          LOG_ERROR("reload: http.console_users: %s; keeping the previous users", w->error.c_str());
          return;
        }
        s->console_->reload(w->config, std::move(w->users));
      });
  if (rc == 0) work.release();
}

}  // namespace mqgate
