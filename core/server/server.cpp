#include "server/server.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "base/log.hpp"
#include "base/loop_lag.hpp"
#include "base/sd_notify.hpp"
#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"
#include "console/console.hpp"
#include "http/endpoint.hpp"
#include "server/connection.hpp"
#include "server/http_tls.hpp"
#include "server/listener.hpp"
#include "server/metrics.hpp"
#include "server/sys_topics.hpp"
#include "store/sqlite_journal.hpp"
#include "transport/tls/cert_policy.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

Server::Server(Config config, AuthHooks& hooks)
    : config_(std::move(config)),
      hooks_(hooks),
      broker_(config_.limits, hooks),
      accepted_(config_.listeners.size(), 0),
      read_buffer_(new char[kReadBufferSize]) {
  const int rc = uv_loop_init(&loop_);
  if (rc != 0) {
    // Without a loop there is nothing to run, and no caller that could go on.
    LOG_ERROR("cannot create the event loop: %s", uv_strerror(rc));
    std::abort();
  }
  loop_.data = this;
  broker_.set_session_owner(config_.session_owner);
  broker_.set_response_information(config_.response_information);
}

Server::~Server() {
  broker_.set_cluster(nullptr);
  // Everything was closed by run(); this drains any close callbacks left (and those of
  // an endpoint that start() opened before failing).
  if (http_) http_->stop();
  if (lag_) lag_->stop();
  if (console_) console_->stop();
  if (cluster_) {  // (start() failed after the cluster started)
    // A connection made moments ago may still have socket-watcher changes queued in the
    // loop (cnats's libuv adapter): closing it now closes its socket under them, and the
    // loop's next epoll_ctl on that descriptor aborts. One turn of the loop first applies
    // them; nothing reaches the broker (drain_cluster does nothing once shutting down).
    shutting_down_ = true;
    uv_run(&loop_, UV_RUN_NOWAIT);
    cluster_->stop();
    auto* idle = reinterpret_cast<uv_handle_t*>(&cluster_idle_);
    if (!uv_is_closing(idle)) uv_close(idle, nullptr);
  }
  for (int i = 0; i < 4 || (i < 400 && cluster::Link::probes_pending()); ++i) {
    uv_run(&loop_, UV_RUN_NOWAIT);
    if (i >= 4) uv_sleep(5);  // a host name's lookup still on libuv's thread pool (2 s at most)
  }
  const int rc = uv_loop_close(&loop_);
  if (rc != 0) LOG_WARN("event loop closed with handles left: %s", uv_strerror(rc));
}

bool Server::open_store() {
  const PersistenceConfig& pc = config_.persistence;
  store::SqliteJournal::Options options;
  options.path = pc.path;
  options.durability = pc.batched ? store::Durability::kBatched : store::Durability::kSync;
  options.flush_interval_ms = pc.flush_interval_ms;
  options.max_bytes = pc.max_bytes;
  std::string error;
  const uint64_t started = uv_hrtime();
  journal_ = store::SqliteJournal::open(
      options, [](std::function<void()> fn) { DeferredQueue::post(std::move(fn)); }, error);
  store::State state;
  if (!journal_ || !journal_->load(state, error)) {
    LOG_ERROR("persistence: %s", error.c_str());
    journal_.reset();
    return false;
  }
  persistence_ = std::make_unique<Persistence>(*journal_, state.next_message_id);
  broker_.set_persistence(persistence_.get());
  const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  uv_update_time(&loop_);
  broker_.restore(state, now_ms(), wall.count());
  LOG_INFO("persistence: %s loaded in %.3f s (durability %s)", pc.path.c_str(),
           static_cast<double>(uv_hrtime() - started) / 1e9, pc.batched ? "batched" : "sync");
  return true;
}

bool Server::start() {
  if (config_.cluster) {
    // Before the store is loaded: restored subscriptions are interest too.
    cluster_ = std::make_unique<cluster::Bridge>(&loop_, *config_.cluster);
    broker_.set_cluster(cluster_.get());
    uv_idle_init(&loop_, &cluster_idle_);
    cluster_idle_.data = this;
  }
  if (config_.persistence.enabled() && !open_store()) return false;
  if (cluster_) {
    std::string error;
    if (!cluster_->start([this] { drain_cluster(); }, error)) {
      LOG_ERROR("%s:%d: %s", config_.path.c_str(), config_.cluster->line, error.c_str());
      return false;
    }
  }
  const bool any_tls = std::any_of(config_.listeners.begin(), config_.listeners.end(),
                                   [](const ListenerConfig& l) { return l.tls.has_value(); }) ||
                       (config_.http && config_.http->tls);
  if (any_tls) {
    const size_t threads = config_.tls_threads ? config_.tls_threads
                                               : std::max(1u, std::thread::hardware_concurrency());
    tls_workers_ =
        std::make_unique<TlsWorkers>(&loop_, threads, config_.tls_max_pending_handshakes);
    LOG_INFO("TLS handshakes run on %zu thread%s, at most %u in progress", threads,
             threads == 1 ? "" : "s", config_.tls_max_pending_handshakes);
  }
  for (const auto& lc : config_.listeners) {
    auto l = std::make_unique<Listener>(*this, lc);
    Errors errors;
    if (!l->load_tls(tls_workers_ ? tls_workers_->size() : 1, errors) || !l->start(errors)) {
      for (const std::string& e : errors)
        LOG_ERROR("%s", e.c_str());
      l->stop();
      for (auto& started : listeners_)
        started->stop();
      listeners_.clear();
      uv_run(&loop_, UV_RUN_NOWAIT);
      return false;
    }
    listeners_.push_back(std::move(l));
  }
  if (!start_http()) {
    for (auto& started : listeners_) started->stop();
    listeners_.clear();
    uv_run(&loop_, UV_RUN_NOWAIT);
    return false;
  }
  // Without signals, the check and the sweep the broker would run but never stop,
  // flush or time anyone out: refuse to start.
  const auto started = [](int rc, const char* what) {
    if (rc != 0) LOG_ERROR("cannot start: %s: %s", what, uv_strerror(rc));
    return rc == 0;
  };
  bool ok = true;
  for (auto* sig : {&sigint_, &sigterm_, &sighup_}) {
    ok = ok && started(uv_signal_init(&loop_, sig), "signal handle");
    sig->data = this;
  }
  ok = ok && started(uv_signal_start(&sigint_, on_signal, SIGINT), "SIGINT handler") &&
       started(uv_signal_start(&sigterm_, on_signal, SIGTERM), "SIGTERM handler") &&
       started(uv_signal_start(&sighup_, on_signal, SIGHUP), "SIGHUP handler");
  // A peer that closes while we write must not kill the process.
  signal(SIGPIPE, SIG_IGN);

  ok = ok && started(uv_check_init(&loop_, &check_), "check handle");
  check_.data = this;
  ok = ok && started(uv_check_start(&check_, on_check), "check handle");
  ok = ok && started(uv_prepare_init(&loop_, &prepare_), "prepare handle");
  prepare_.data = this;
  ok = ok && started(uv_prepare_start(&prepare_, on_prepare), "prepare handle");
  ok = ok && started(uv_idle_init(&loop_, &idle_), "idle handle");
  idle_.data = this;
  ok = ok && started(uv_timer_init(&loop_, &sweep_timer_), "sweep timer");
  sweep_timer_.data = this;
  ok = ok && started(uv_timer_start(&sweep_timer_, on_sweep, kSweepIntervalMs, kSweepIntervalMs),
                     "sweep timer");
  if (ok && sd::watchdog_usec()) {
    // At half systemd's interval, from the loop: a loop that stalls stops pinging.
    const uint64_t every_ms = std::max<uint64_t>(1, sd::watchdog_usec() / 2000);
    ok = started(uv_timer_init(&loop_, &watchdog_timer_), "watchdog timer");
    watchdog_timer_.data = this;
    ok = ok && started(uv_timer_start(&watchdog_timer_, on_watchdog, every_ms, every_ms),
                       "watchdog timer");
    if (ok) LOG_INFO("systemd watchdog: pinging every %llu ms", (unsigned long long)every_ms);
  }
  if (!ok) return false;
  sys_ = std::make_unique<SysTopics>(&loop_, broker_, config_.sys_interval);
  deferred_ = std::make_unique<DeferredQueue>(&loop_);
  if (http_) {  // only GET /metrics reads it: no extra wake-ups without [http]
    lag_ = std::make_unique<LoopLag>(&loop_);
    if (!lag_->start()) LOG_WARN("cannot start the loop lag timer; mqgate_loop_lag_* stay at 0");
  }
  started_ = true;
  started_ms_ = now_ms();
  if (journal_) journal_->start();  // its completions are posted through deferred_
  return true;
}

bool Server::start_http() {
  if (!config_.http) return true;
  const HttpConfig& h = *config_.http;
  http::Endpoint::Options o;
  o.host = h.host;
  o.port = h.port;
  o.ipv6 = h.ipv6;
  o.bearer_token = h.token;
  o.max_connections = h.max_connections;
  o.request_timeout_ms = h.request_timeout * 1000;
  o.max_connections_per_address = h.max_connections_per_address;
  o.crowded_timeout_ms = h.crowded_request_timeout_ms;
  if (h.tls) {
    Errors errors;
    http_tls_ = TlsGeneration::load(Listener::http_tls_config(h), tls_workers_->size(), errors);
    if (!http_tls_) {
      LOG_ERROR("%s:%d: %s", config_.path.c_str(), h.line, one_line(errors).c_str());
      return false;
    }
    LOG_INFO("[http]: TLS %s", http_tls_->summary().c_str());
    o.channel = [this](http::Channel::Events& events) -> std::unique_ptr<http::Channel> {
      if (!tls_workers_->has_room()) {  // tls_max_pending_handshakes, shared with listeners
        tls_workers_->refused(now_ms());
        return nullptr;
      }
      return std::make_unique<HttpTlsChannel>(&http_tls_, *tls_workers_, read_buffer(),
                                              read_buffer_size(), events);
    };
  }
  http::Endpoint::Callbacks callbacks{[this] { return metrics_text(); },
                                      [this] { return healthy(); },
                                      [this] { return health_detail(); }, nullptr};
  if (h.console) {
    console::Users users;
    users.admins.insert(h.console_admins.begin(), h.console_admins.end());
    std::string error;
    if (!h.console_users.empty() && !console::load_users(h.console_users, users, error)) {
      LOG_ERROR("%s:%d: http.console_users: %s", config_.path.c_str(), h.line, error.c_str());
      return false;
    }
    console_ = std::make_unique<console::Console>(&loop_, *this, h, std::move(users));
    callbacks.console = [this](const http::Request& request, const std::string& peer,
                               const TlsPeerInfo* tls, http::Reply reply) {
      console_->handle(request, peer, tls, std::move(reply));
    };
  }
  http_ = std::make_unique<http::Endpoint>(&loop_, std::move(o), std::move(callbacks));
  std::string error;
  if (!http_->start(error)) {
    LOG_ERROR("%s:%d: http.bind: %s", config_.path.c_str(), h.line, error.c_str());
    return false;
  }
  return true;
}

std::string Server::health_detail() const {
  if (!cluster_) return {};
  if (!cluster_->connected()) return "cluster: disconnected (local clients only, reconnecting)\n";
  const cluster::JetStream* js = cluster_->jetstream();
  if (js && !js->ready())
    return "cluster: connected, JetStream not ready (QoS 1/2 messages for other nodes held, "
           "then refused)\n";
  return "cluster: connected\n";
}

void Server::drain_cluster() {
  if (!cluster_ || shutting_down_) return;
  // Other nodes' interest and acknowledgements first, congested or not.
  const bool more_control = cluster_->drain_control();
  broker_.on_cluster_settled(cluster_->settled());
  // JetStream's answers: held PUBACK/PUBREC go (or refusals), held publishers resume.
  for (const auto& [ticket, stored] : cluster_->take_stored())
    broker_.on_cluster_stored(ticket, stored);
  if (more_control && !uv_is_active(reinterpret_cast<uv_handle_t*>(&cluster_idle_)))
    uv_idle_start(&cluster_idle_, on_cluster_idle);
  if (broker_.congested()) {  // on_check comes back once the fan-out is done
    carry_out_requests();
    return;
  }
  const uint64_t now = now_ms();
  const uint64_t changes = broker_.store_changes();
  const bool more = cluster_->drain(Broker::kSliceBudget, [&](const cluster::InboundMessage& m) {
    broker_.on_cluster_message(m, now);
  });
  // JetStream deliveries are acknowledged once the broker has them: queued to the local
  // sessions, and durable where a persistent session's queue was written.
  if (std::vector<std::string> acks = cluster_->take_acks(); !acks.empty()) {
    if (broker_.store_changes() == changes)
      cluster_->ack(acks);
    else
      broker_.when_stored([this, acks = std::move(acks)](bool ok) {
        if (ok && cluster_) cluster_->ack(acks);  // not stored: JetStream delivers it again
      });
  }
  carry_out_requests();
  // More than a budget waits: the next iteration takes more, after polling the clients.
  if (more && !uv_is_active(reinterpret_cast<uv_handle_t*>(&cluster_idle_)))
    uv_idle_start(&cluster_idle_, on_cluster_idle);
}

void Server::on_cluster_idle(uv_idle_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  uv_idle_stop(handle);
  self->drain_cluster();
}

void Server::reload_http(const Config& fresh) {
  const bool had = config_.http.has_value(), has = fresh.http.has_value();
  if (had != has || (had && fresh.http->bind != config_.http->bind)) {
    const char* what = !has ? "removed" : !had ? "added" : "bind changed";
    LOG_WARN("reload: [http] %s; that takes effect at the next restart", what);
  }
  if (!http_ || !has) return;
  if (fresh.http->token != config_.http->token) {
    http_->set_token(fresh.http->token);
    LOG_INFO("reload: [http] bearer token %s", fresh.http->token.empty() ? "removed" : "replaced");
  }
  config_.http->token = fresh.http->token;
  reload_http_tls(*fresh.http);
  if (fresh.http->console != config_.http->console)
    LOG_WARN("reload: [http] console %s; that takes effect at the next restart",
             fresh.http->console ? "turned on" : "turned off");
  else if (console_)
    reload_console(*fresh.http);
}

// [http]'s TLS material, loaded again off the loop as the listeners' is (TlsReload).
void Server::reload_http_tls(const HttpConfig& fresh) {
  if (!http_tls_) {
    if (fresh.tls) LOG_WARN("reload: [http] ssl turned on; that takes effect at the next restart");
    return;
  }
  if (!fresh.tls) {
    LOG_ERROR("reload: [http] ssl cannot be turned off without a restart; keeping TLS");
    return;
  }
  ListenerConfig tls = Listener::http_tls_config(fresh);
  if (http_tls_reload_running_) {
    LOG_INFO(
        "reload: [http]'s TLS material of the previous SIGHUP is still loading; loading again "
        "after it");
    http_tls_reload_waiting_ = std::move(tls);
    return;
  }
  start_http_tls_reload(tls);
}

bool Server::start_http_tls_reload(const ListenerConfig& fresh) {
  struct Work {
    uv_work_t req;
    Server* server;
    size_t workers;
    ListenerConfig fresh;
    std::shared_ptr<TlsGeneration> generation;
    Errors errors;
  };
  auto work = std::make_unique<Work>();
  work->server = this;
  work->workers = tls_workers_->size();
  work->fresh = fresh;
  work->req.data = work.get();
  const int rc = uv_queue_work(
      &loop_, &work->req,
      [](uv_work_t* req) {
        auto* w = static_cast<Work*>(req->data);
        w->generation = TlsGeneration::load(w->fresh, w->workers, w->errors);
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        Server& self = *w->server;
        self.http_tls_reload_running_ = false;
        if (status != 0 || self.shutting_down_ || !self.http_) return;
        if (!w->generation) {
          LOG_ERROR("reload: %s; keeping the previous TLS material", one_line(w->errors).c_str());
        } else {
          LOG_INFO("reload: [http]: TLS %s (open connections keep theirs)",
                   w->generation->summary().c_str());
          std::shared_ptr<const TlsGeneration> previous = std::move(w->generation);
          self.http_tls_.swap(previous);
          self.retired_tls_.push_back(std::move(previous));
          self.free_retired_tls();
        }
        if (self.http_tls_reload_waiting_) {
          const ListenerConfig next = std::move(*self.http_tls_reload_waiting_);
          self.http_tls_reload_waiting_.reset();
          self.start_http_tls_reload(next);
        }
      });
  if (rc != 0) {
    LOG_ERROR("reload: cannot load [http]'s TLS material: %s; keeping the previous",
              uv_strerror(rc));
    return false;
  }
  work.release();
  http_tls_reload_running_ = true;
  return true;
}

std::string Server::metrics_text() {
  MetricsSources sources{broker_, listeners_, accepted_, hooks_};
  sources.lag = lag_.get();
  sources.tls_workers = tls_workers_.get();
  sources.http = http_.get();
  sources.held_connections = held_.size();
  sources.lingering_connections = lingering_;
  sources.uptime_ms = started_ ? now_ms() - started_ms_ : 0;
  sources.cluster = cluster_.get();
  return render_metrics(sources);
}

int Server::run() {
  LOG_INFO("mqgate ready (%zu listener%s)", listeners_.size(), listeners_.size() == 1 ? "" : "s");
  notify_status("READY=1\n");
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Stopped: finish what the TLS threads hold, close the remaining handles and let
  // their callbacks run.
  if (cluster_) {
    cluster_->stop();
    // The NATS adapter closes its handles in a chain of close callbacks: let them run
    // before the walk below closes whatever is left.
    for (int i = 0; i < 4; ++i)
      uv_run(&loop_, UV_RUN_NOWAIT);
  }
  if (tls_workers_) tls_workers_->stop();
  if (journal_) journal_->flush();  // what the last clients' departures changed
  if (deferred_) deferred_->stop();
  // These free what their handles point at from close callbacks: they close their own.
  if (http_) http_->stop();
  if (lag_) lag_->stop();
  if (console_) console_->stop();
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  LOG_INFO("mqgate stopped");
  return 0;
}

void Server::add_connection(Connection* c) {
  const size_t index = c->listener_ref().config().index;
  if (index < accepted_.size()) accepted_[index]++;
  c->next = connections_;
  if (connections_) connections_->prev = c;
  connections_ = c;
}

void Server::remove_connection(Connection* c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    connections_ = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  if (c->in_dirty_list) {
    dirty_.erase(std::find(dirty_.begin(), dirty_.end(), c));
    c->in_dirty_list = false;
  }
  if (c->in_held_list) {
    held_.erase(std::find(held_.begin(), held_.end(), c));
    c->in_held_list = false;
  }
  if (c->in_close_list) {
    closes_.erase(std::find(closes_.begin(), closes_.end(), c));
    c->in_close_list = false;
  }
}

void Server::queue_close_report(Connection* c) {
  if (c->in_close_list) return;
  c->in_close_list = true;
  closes_.push_back(c);
}

void Server::report_closes() {
  // Reporting runs the broker (wills, plugins' hooks), which may ask for more closes:
  // take them in order until none is left.
  for (size_t i = 0; i < closes_.size(); ++i) {
    Connection* c = closes_[i];
    c->in_close_list = false;
    // Flushing may close the socket, but the connection is only deleted by libuv's
    // close callback, later in the iteration.
    c->report_close();
  }
  closes_.clear();
}

void Server::queue_dispatch(Connection* c) {
  if (c->in_held_list) return;
  c->in_held_list = true;
  held_.push_back(c);
}

void Server::carry_out_requests() {
  for (;;) {
    report_closes();
    if (held_.empty() || broker_.congested()) return;
    dispatch_held_inputs();  // may request more closes (and holds)
  }
}

void Server::dispatch_held_inputs() {
  // In the order they were queued; one may congest the broker again, and then the rest
  // (and it) are parked again at their next packet.
  std::vector<Connection*> batch;
  batch.swap(held_);
  for (Connection* c : batch)
    c->in_held_list = false;
  // Connections closed meanwhile are only deleted by libuv's close callback, later in
  // the iteration: the pointers stay valid, and dispatch_held() skips closing ones.
  for (Connection* c : batch)
    c->dispatch_held();
}

void Server::mark_dirty(Connection* c) {
  if (c->in_dirty_list) return;
  c->in_dirty_list = true;
  dirty_.push_back(c);
}

void Server::on_prepare(uv_prepare_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  self->carry_out_requests();
  self->schedule_slices();
  // With sliced work queued the poll does not block and the check handle flushes right
  // after it, together with what the poll brought: one write, not two.
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&self->idle_))) self->flush_dirty();
}

void Server::on_check(uv_check_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  // Inbound cluster messages held back while the broker was congested.
  if (self->cluster_ && !self->broker_.congested() && self->cluster_->queued() != 0)
    self->drain_cluster();
  // What this iteration's callbacks into the broker asked for (plugins' decisions and
  // the store's completions come through the deferred queue's callback).
  self->carry_out_requests();
  self->schedule_slices();
  self->flush_dirty();
  // Publishers whose congested subscribers drained (acks, writes, the flush above) get
  // their held packets dispatched now, and their output flushed in this iteration; a
  // few rounds, as that flush often drains the subscriber at once. Publishers still
  // resumable must not wait for the next event: the idle handle keeps the poll short.
  for (int round = 0; round < kFlowRounds && self->broker_.release_flow_holds(); ++round) {
    self->carry_out_requests();
    self->schedule_slices();
    self->flush_dirty();
  }
  if (self->broker_.flow().has_resumable() &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(&self->idle_)))
    uv_idle_start(&self->idle_, on_idle);
}

void Server::schedule_slices() {
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&idle_)) || !broker_.has_work()) return;
  if (slices_blocked_ && broker_.stats().bytes_received == blocked_at_bytes_received_) return;
  slices_blocked_ = false;
  // An active idle handle makes the loop poll without blocking, then run one slice.
  const int rc = uv_idle_start(&idle_, on_idle);
  if (rc != 0) LOG_ERROR("cannot schedule the broker's sliced work: %s", uv_strerror(rc));
}

void Server::on_idle(uv_idle_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  const bool progress = self->broker_.run_slice(self->now_ms());
  self->carry_out_requests();
  if (!self->broker_.has_work() || !progress) {
    uv_idle_stop(handle);
    self->slices_blocked_ = self->broker_.has_work();
    self->blocked_at_bytes_received_ = self->broker_.stats().bytes_received;
  }
}

void Server::flush_dirty() {
  // flush() can complete writes synchronously and close connections, which removes them
  // from dirty_; so take the list first.
  std::vector<Connection*> batch;
  batch.swap(dirty_);
  for (Connection* c : batch)
    c->in_dirty_list = false;
  for (size_t i = 0; i < batch.size(); ++i) {
    Connection* c = batch[i];
    c->flush();
    if (broker_.flow_active()) broker_.on_output_drained(*c);
  }
  if (dirty_.empty() && dirty_.capacity() < batch.capacity()) {
    batch.clear();
    dirty_.swap(batch);  // keep the larger allocation
  }
}

void Server::on_sweep(uv_timer_t* handle) {
  static_cast<Server*>(handle->data)->sweep();
}

void Server::sweep() {
  const uint64_t now = now_ms();
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next;  // closing may unlink c
    if (c->lingering()) {
      // Shutting down too: the loop stops once these are closed, kLingerMs at most.
      if (now - c->linger_since_ms() >= kLingerMs)
        c->end_linger("the linger time is over");
      else if (now - c->linger_last_input_ms() >= kLingerQuietMs)
        c->end_linger("the client sent nothing more");
    } else if (c->closing()) {
      if (now - c->closing_since_ms() > kCloseGraceMs) c->force_close();
    } else {
      broker_.check_timeouts(*c, now);
      // An idle TLS connection gives its record buffers' pages back (a no-op once done).
      if (c->transport() && now - c->last_rx_ms > kTlsIdleTrimMs)
        c->transport()->release_idle_buffers(true);
    }
    c = next;
  }
  // Before the requests are carried out below: the plugins' tick times out their
  // decisions (PluginHost::expire_decisions), which refuse clients or resume their input.
  if (!shutting_down_ && now - last_tick_ms_ >= 1000) {
    last_tick_ms_ = now;
    notify_status();
    for (auto& hook : tick_hooks_)
      hook(now);
    broker_.check_expiry(now);
    if (tls_workers_) check_tls_health(now);
  }
  broker_.check_flow(now);  // slow_subscriber policies
  carry_out_requests();
  broker_.release_flow_holds();
  // (The prepare handle carries out the rest and flushes before the loop polls.)
  slices_blocked_ = false;  // paced work is retried at least every sweep
  schedule_slices();
  if (shutting_down_ && (connections_ == nullptr || now - shutdown_started_ms_ > kCloseGraceMs)) {
    for (Connection* c = connections_; c != nullptr; c = c->next)
      c->force_close();
    uv_stop(&loop_);
  }
}

void Server::on_signal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Server*>(handle->data);
  if (signum == SIGHUP) {
    self->reload();
  } else {
    self->begin_shutdown(signum == SIGINT ? "SIGINT" : "SIGTERM");
  }
}

void Server::notify_status(const char* prefix) {
  if (!sd::enabled()) return;
  const uint64_t clients = broker_.stats().clients_connected;
  std::string status = std::to_string(listeners_.size()) + " listener" +
                       (listeners_.size() == 1 ? "" : "s") + ", " + std::to_string(clients) +
                       " client" + (clients == 1 ? "" : "s") + " connected";
  if (!prefix && status == last_status_) return;
  last_status_ = status;
  sd::notify((prefix ? prefix : "") + ("STATUS=" + status));
}

void Server::on_watchdog(uv_timer_t*) {
  sd::notify("WATCHDOG=1");
}

void Server::begin_shutdown(const char* why) {
  if (shutting_down_) return;
  shutting_down_ = true;
  sd::notify("STOPPING=1");
  shutdown_started_ms_ = now_ms();
  LOG_INFO("%s received: closing listeners and %s", why,
           connections_ ? "disconnecting clients" : "stopping");
  broker_.begin_shutdown();
  // A BYE to the other nodes now, while the loop still writes to NATS; the link closes
  // once the loop has stopped (run()).
  if (cluster_) cluster_->leave();
  for (auto& l : listeners_)
    l->stop();
  if (sys_) sys_->stop();
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next;
    mqtt5::disconnect(*c, codec::reason::kServerShuttingDown, "broker shutting down");
    c = next;
  }
  carry_out_requests();
  // The sweep stops the loop once every connection has flushed and closed.
  const int rc = uv_timer_start(&sweep_timer_, on_sweep, 10, 50);  // restarts it
  if (rc != 0) {
    // No sweep, no stop: stop the loop now, whatever is still queued.
    LOG_ERROR("cannot restart the sweep timer: %s; stopping now", uv_strerror(rc));
    for (Connection* c = connections_; c != nullptr; c = c->next)
      c->force_close();
    uv_stop(&loop_);
  }
}

void Server::reload() {
  LOG_INFO("SIGHUP received: reloading %s", config_.path.c_str());
  sd::notify(sd::reloading_message());
  std::vector<std::string> errors;
  auto fresh = load_config(config_.path, errors);
  if (!fresh) {
    for (const auto& e : errors)
      LOG_ERROR("reload: %s", e.c_str());
    LOG_ERROR("reload failed; keeping the running configuration");
    notify_status("READY=1\n");
    return;
  }
  if (fresh->user != config_.user)
    LOG_WARN("reload: user changed; that takes effect at the next restart");
  log::set_level(fresh->log_level);
  LOG_INFO("reload: log_level is %s", log::level_name(fresh->log_level));
  broker_.set_limits(fresh->limits);
  broker_.set_session_owner(fresh->session_owner);
  broker_.set_response_information(fresh->response_information);
  if (sys_ && fresh->sys_interval != config_.sys_interval) sys_->set_interval(fresh->sys_interval);
  bool listeners_changed = fresh->listeners.size() != config_.listeners.size();
  for (size_t i = 0; !listeners_changed && i < fresh->listeners.size(); ++i)
    listeners_changed = fresh->listeners[i].name != config_.listeners[i].name ||
                        fresh->listeners[i].bind != config_.listeners[i].bind;
  if (listeners_changed)
    LOG_WARN("reload: listener addresses changed; they take effect at the next restart");
  reload_tls(*fresh);
  reload_http(*fresh);
  if (fresh->cluster.has_value() != config_.cluster.has_value() ||
      (fresh->cluster && (fresh->cluster->node != config_.cluster->node ||
                          fresh->cluster->nats != config_.cluster->nats ||
                          fresh->cluster->name != config_.cluster->name)))
    LOG_WARN("reload: [cluster] changed; that takes effect at the next restart");
  for (auto& hook : reload_hooks_)
    hook(*fresh);  // the plugins take their new options
  broker_.rules_reloaded();
  carry_out_requests();
  schedule_slices();
  config_.log_level = fresh->log_level;
  config_.sys_interval = fresh->sys_interval;
  config_.limits = fresh->limits;
  config_.session_owner = fresh->session_owner;
  config_.response_information = fresh->response_information;
  notify_status("READY=1\n");
}

// Reading and parsing certificates, keys and a CRL of up to 16 MiB can take a second:
// done on the loop it would stall every client, so it runs on libuv's thread pool.
struct Server::TlsReload {
  uv_work_t req;
  Server* server;
  size_t workers;
  struct Item {
    Listener* listener;
    ListenerConfig fresh;
    std::shared_ptr<TlsGeneration> generation;  // set by the thread, or `error`
    Errors errors;
  };
  std::vector<Item> items;
};

void Server::reload_tls(const Config& fresh) {
  if (!tls_workers_) return;
  if (fresh.tls_max_pending_handshakes != tls_workers_->max_pending()) {
    tls_workers_->set_max_pending(fresh.tls_max_pending_handshakes);
    LOG_INFO("reload: tls_max_pending_handshakes is %u", fresh.tls_max_pending_handshakes);
  }
  if (tls_reload_running_) {
    // Queued, not run beside it: the newest file wins, and one load at a time is enough.
    LOG_INFO(
        "reload: the TLS material of the previous SIGHUP is still loading; loading again "
        "after it");
    tls_reload_waiting_ = fresh.listeners;
    return;
  }
  if (!start_tls_reload(fresh.listeners)) tls_reload_finished({});
}

bool Server::start_tls_reload(const std::vector<ListenerConfig>& fresh) {
  auto reload = std::make_unique<TlsReload>();
  reload->server = this;
  reload->workers = tls_workers_->size();
  for (auto& l : listeners_) {
    auto it = std::find_if(fresh.begin(), fresh.end(),
                           [&](const ListenerConfig& f) { return f.name == l->config().name; });
    if (it == fresh.end() || !l->can_reload_tls(*it)) continue;
    reload->items.push_back({l.get(), *it, nullptr, {}});
  }
  if (reload->items.empty()) return false;
  reload->req.data = reload.get();
  const int rc = uv_queue_work(
      &loop_, &reload->req,
      [](uv_work_t* req) {  // on a thread: nothing here touches the loop's state
        auto* r = static_cast<TlsReload*>(req->data);
        for (auto& item : r->items)
          item.generation = TlsGeneration::load(item.fresh, r->workers, item.errors);
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<TlsReload> r(static_cast<TlsReload*>(req->data));
        r->server->tls_reload_running_ = false;
        if (status == 0 && !r->server->shutting_down_) r->server->finish_tls_reload(*r);
      });
  if (rc != 0) {
    LOG_ERROR("reload: cannot load the TLS material: %s; keeping the previous", uv_strerror(rc));
    return false;
  }
  reload.release();  // the after-work callback owns it
  tls_reload_running_ = true;
  return true;
}

void Server::finish_tls_reload(TlsReload& reload) {
  std::vector<std::string> installed;
  for (auto& item : reload.items) {
    if (!item.generation) {
      LOG_ERROR("reload: %s; keeping the previous TLS material", one_line(item.errors).c_str());
      continue;
    }
    installed.push_back(item.fresh.name);
    if (const auto& previous = item.listener->tls_generation())
      item.generation->share_counts(*previous);
    const bool disconnect = item.generation->settings().disconnect_revoked;
    retired_tls_.push_back(item.listener->install_tls(item.generation, item.fresh));
    if (disconnect) disconnect_revoked(*item.listener, *item.generation);
  }
  free_retired_tls();
  tls_reload_finished(installed);
  if (tls_reload_waiting_) {
    auto next = std::move(*tls_reload_waiting_);
    tls_reload_waiting_.reset();
    tls_reload_done_ = std::move(tls_reload_done_waiting_);
    tls_reload_done_waiting_.clear();
    if (!start_tls_reload(next)) tls_reload_finished({});
  }
}

void Server::tls_reload_finished(const std::vector<std::string>& installed) {
  auto done = std::move(tls_reload_done_);
  tls_reload_done_.clear();
  for (auto& [name, then] : done)
    then(std::find(installed.begin(), installed.end(), name) != installed.end());
}

// Freeing a generation is slow too (a CRL of 300,000 entries: ~0.1 s), so a generation a
// reload replaced is freed on a thread once no connection uses it. Only the loop thread
// copies these pointers: use_count() is exact here.
void Server::free_retired_tls() {
  struct Work {
    uv_work_t req;
    std::vector<std::shared_ptr<const TlsGeneration>> unused;
  };
  auto work = std::make_unique<Work>();
  for (auto it = retired_tls_.begin(); it != retired_tls_.end();) {
    if (it->use_count() > 1) {
      ++it;
      continue;
    }
    work->unused.push_back(std::move(*it));
    it = retired_tls_.erase(it);
  }
  if (work->unused.empty()) return;
  work->req.data = work.get();
  const int rc = uv_queue_work(
      &loop_, &work->req, [](uv_work_t* req) { static_cast<Work*>(req->data)->unused.clear(); },
      [](uv_work_t* req, int) { delete static_cast<Work*>(req->data); });
  if (rc == 0) work.release();  // else freed here, on the loop
}

void Server::disconnect_revoked(Listener& listener, const TlsGeneration& generation) {
  size_t closed = 0;
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next;
    const TlsPeerInfo* info = c->tls();
    if (&c->listener_ref() == &listener && info && !c->closing() &&
        cert_standing(&generation, info->issuer_raw, info->serial_raw, 0, 0) ==
            CertStanding::kRevoked) {
      CLIENT_LOG(log::Level::kInfo, *c,
                 "client certificate is revoked by the reloaded CRL; closing");
      c->close("client certificate revoked");
      ++closed;
    }
    c = next;
  }
  carry_out_requests();
  LOG_INFO("reload: listener \"%s\": %zu client%s with a revoked certificate disconnected",
           listener.config().name.c_str(), closed, closed == 1 ? "" : "s");
}

void Server::check_tls_health(uint64_t now_ms) {
  tls_workers_->report_refused(now_ms);  // the rest of a burst of refusals
  if (!retired_tls_.empty()) free_retired_tls();
  const int64_t now = static_cast<int64_t>(time(nullptr));
  // A stale CRL is a loud error, every ten minutes, until it is refreshed.
  if (last_stale_crl_log_ms_ == 0 || now_ms - last_stale_crl_log_ms_ >= 600000) {
    for (auto& l : listeners_) {
      auto g = l->tls_generation();
      if (g && g->crl_next_update() != 0 && g->crl_next_update() < now) {
        LOG_ERROR(
            "listener \"%s\": the CRL in %s is stale (nextUpdate passed %lld s ago); revoked "
            "certificates it lists are still refused; refresh it and send SIGHUP",
            l->config().name.c_str(), g->settings().crlfile.c_str(),
            static_cast<long long>(now - g->crl_next_update()));
        last_stale_crl_log_ms_ = now_ms;
      }
    }
  }
  for (Connection* c = connections_; c != nullptr;) {
    Connection* next = c->next;
    const TlsPeerInfo* info = c->tls();
    if (info && !c->closing() &&
        cert_standing(nullptr, info->issuer_raw, info->serial_raw, info->not_after, now) ==
            CertStanding::kExpired) {
      const auto& tls = c->listener_ref().config().tls;
      if (tls && tls->disconnect_expired) {
        CLIENT_LOG(log::Level::kInfo, *c,
                   "client certificate expired; closing (disconnect_expired)");
        c->close("client certificate expired");
      }
    }
    c = next;
  }
  carry_out_requests();
}

}  // namespace mqgate
