#include "cluster/link.hpp"

#include <nats/adapters/libuv.h>
#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <cstring>

#include "base/log.hpp"
#include "cluster/envelope.hpp"

namespace mqgate::cluster {

namespace {

constexpr uint64_t kMaxBackoffMs = 10000;
constexpr int kLost = 1, kChanged = 2;  // Link::events_

// host and port of "nats://host:port" / "tls://host:port" (config checked the form).
void split_url(const std::string& url, std::string& host, std::string& port) {
  std::string_view rest = url;
  rest.remove_prefix(rest.find("://") + 3);
  port = "4222";
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    host = std::string(rest.substr(1, close == std::string_view::npos ? rest.size() : close - 1));
    if (close != std::string_view::npos && rest.substr(close + 1, 1) == ":")
      port = std::string(rest.substr(close + 2));
    return;
  }
  const size_t colon = rest.rfind(':');
  host = std::string(rest.substr(0, colon));
  if (colon != std::string_view::npos) port = std::string(rest.substr(colon + 1));
}

std::string last_nats_error(natsStatus s) {
  natsStatus ignored;
  const char* text = nats_GetLastError(&ignored);
  std::string out = natsStatus_GetText(s);
  if (text != nullptr && *text != '\0' && out != text) out += std::string(": ") + text;
  return out;
}

}  // namespace

namespace {
int live_probes = 0;  // loop thread only

// Subscriptions cnats has not finished with. Closing one posts a message to cnats's
// delivery thread, which frees what the subscription still holds; a library shutdown
// (nats_CloseAndWait) before that thread got to it leaks those (seen under the
// sanitizers). The link's destructor waits, bounded, for this to reach 0. Global: the
// completion may come after a link is gone.
struct OpenSubscriptions {
  std::mutex mutex;
  std::condition_variable done;
  int count = 0;
} open_subscriptions;

void subscription_complete(void*) {
  std::lock_guard<std::mutex> lock(open_subscriptions.mutex);
  if (--open_subscriptions.count == 0) open_subscriptions.done.notify_all();
}

void track(natsSubscription* sub) {
  std::lock_guard<std::mutex> lock(open_subscriptions.mutex);
  if (natsSubscription_SetOnCompleteCB(sub, subscription_complete, nullptr) == NATS_OK)
    ++open_subscriptions.count;
}

}  // namespace

// A non-blocking reachability check of one URL: resolve, then a TCP connect. It frees
// itself in its last callback, which may come after the link stopped.
struct Link::Probe {
  Probe() { ++live_probes; }
  ~Probe() { --live_probes; }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  Link* link = nullptr;  // null once the link stopped (the probe then only cleans up)
  uv_getaddrinfo_t resolve{};
  uv_connect_t connect{};
  uv_tcp_t tcp{};
  bool tcp_open = false;
};

bool Link::probes_pending() {
  return live_probes != 0;
}

struct Link::Hooks {
  static void message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    enqueue(static_cast<Link*>(closure), msg, false);
  }
  // A JetStream delivery: kept with its ack subject.
  static void delivery(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    enqueue(static_cast<Link*>(closure), msg, true);
  }
  static void enqueue(Link* self, natsMsg* msg, bool durable) {
    const char* subject = natsMsg_GetSubject(msg);
    const char* reply = durable ? natsMsg_GetReply(msg) : nullptr;
    const std::string_view payload = payload_of(msg);
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      const size_t bytes = payload.size() + std::strlen(subject);
      if (durable && (reply == nullptr || *reply == '\0')) {
        // A status message (heartbeat, flow control): none is asked for; ignored.
      } else if (self->inbox_.size() >= self->config_.inbound_queue_messages ||
                 self->inbox_bytes_ + bytes > self->config_.inbound_queue_bytes) {
        // Counted here, logged by the loop (no logging from this thread). A JetStream
        // delivery dropped here is not acknowledged: it comes again.
        if (!durable && envelope_qos(payload) == 0)
          self->stats_.dropped_qos0++;
        else
          self->stats_.dropped_qos12++;
        wake = true;  // the loop logs the start of the drops (wake-ups coalesce)
      } else {
        wake = self->inbox_.empty() && self->control_.empty();
        self->inbox_.push_back({subject, std::string(payload), reply ? reply : ""});
        self->inbox_bytes_ += bytes;
      }
    }
    natsMsg_Destroy(msg);
    if (wake) self->wake();
  }
  static std::string_view payload_of(natsMsg* msg) {
    const char* data = natsMsg_GetData(msg);
    const int len = natsMsg_GetDataLength(msg);
    return {data ? data : "", len > 0 ? static_cast<size_t>(len) : 0};
  }
  // Appends to one of the queues of small messages (control, replies), under mutex_:
  // counted with an overhead per message (many tiny ones cost memory too), dropped and
  // counted past kMaxControlBytes. Returns whether the loop must be woken.
  template <typename T>
  static bool push_small(std::deque<T>& queue, uint64_t& bytes, size_t size, T item,
                         std::atomic<uint64_t>& dropped) {
    const size_t cost = size + kControlOverhead;
    if (bytes + cost > kMaxControlBytes) {
      dropped++;
      return false;
    }
    const bool wake = queue.empty();
    queue.push_back(std::move(item));
    bytes += cost;
    return wake;
  }
  static void reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Link*>(closure);
    const std::string_view payload = payload_of(msg);
    const char* status = nullptr;
    if (payload.empty() && natsMsgHeader_Get(msg, "Status", &status) != NATS_OK) status = nullptr;
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      wake = push_small(self->replies_, self->reply_bytes_, payload.size(),
                        Reply{natsMsg_GetSubject(msg), std::string(payload), status ? status : ""},
                        self->stats_.dropped_replies);
    }
    natsMsg_Destroy(msg);
    if (wake) self->wake();
  }
  static void control(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Link*>(closure);
    const std::string_view payload = payload_of(msg);
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      wake = push_small(self->control_, self->control_bytes_, payload.size(), std::string(payload),
                        self->stats_.dropped_control);
    }
    natsMsg_Destroy(msg);
    if (wake) self->wake();
  }
  // Events are remembered, not just the status: a fast failover to another server is
  // connected again before the loop looks, and must still count as a loss and a regain.
  static void lost(natsConnection*, void* closure) {
    auto* self = static_cast<Link*>(closure);
    self->events_.fetch_or(kLost);
    self->wake();
  }
  static void event(natsConnection*, void* closure) {
    auto* self = static_cast<Link*>(closure);
    self->events_.fetch_or(kChanged);
    self->wake();
  }
  static void error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
    auto* self = static_cast<Link*>(closure);
    if (err == NATS_SLOW_CONSUMER) self->stats_.slow_consumer++;
    self->last_error_.store(static_cast<int>(err));
    self->wake();
  }
};

Link::Link(uv_loop_t* loop, const ClusterConfig& config, Callbacks callbacks)
    : loop_(loop), config_(config), callbacks_(std::move(callbacks)) {}

Link::~Link() {
  stop();
  if (options_) natsOptions_Destroy(options_);
  // cnats may still run a callback on one of its threads (a closed event after Close);
  // they stop touching this object once alive_ is false, and this waits for the threads
  // to end before the object goes.
  if (started_) {
    std::unique_lock<std::mutex> lock(open_subscriptions.mutex);
    open_subscriptions.done.wait_for(lock, std::chrono::seconds(1),
                                     [] { return open_subscriptions.count <= 0; });
  }
  if (started_) nats_CloseAndWait(2000);
}

void Link::wake() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (alive_) uv_async_send(wakeup_);
}

bool Link::start(std::string& error) {
  natsLibuv_Init();
  // The adapter must know which thread runs the loop: its calls from other threads
  // (reconnects) are then scheduled onto the loop.
  natsLibuv_SetThreadLocalLoop(loop_);
  // One delivery thread for every subscription: messages reach the queue in the order
  // they came off the socket (per publisher and topic, as NATS sent them), and the
  // bridge can recognise the copies one message makes through overlapping subjects.
  nats_SetMessageDeliveryPoolSize(1);
  natsStatus s = natsOptions_Create(&options_);
  std::vector<const char*> urls;
  for (const auto& u : config_.nats)
    urls.push_back(u.c_str());
  const auto check = [&](natsStatus st, const char* what) {
    if (s == NATS_OK && st != NATS_OK) {
      error = std::string("[cluster] ") + what + ": " + last_nats_error(st);
      s = st;
    }
  };
  if (s != NATS_OK) {
    error = "cannot create the NATS options: " + last_nats_error(s);
    return false;
  }
  check(natsOptions_SetServers(options_, urls.data(), static_cast<int>(urls.size())), "nats");
  check(natsOptions_SetName(options_, ("mqgate node " + config_.node).c_str()), "node");
  check(natsOptions_SetNoEcho(options_, true), "no echo");
  check(natsOptions_SetEventLoop(options_, loop_, natsLibuv_Attach, natsLibuv_Read, natsLibuv_Write,
                                 natsLibuv_Detach),
        "event loop");
  check(natsOptions_UseGlobalMessageDelivery(options_, true), "message delivery");
  check(natsOptions_SetAllowReconnect(options_, true), "reconnect");
  check(natsOptions_SetMaxReconnect(options_, -1), "reconnect");  // never give up
  check(natsOptions_SetReconnectWait(options_, 1000), "reconnect");
  check(natsOptions_SetReconnectJitter(options_, 200, 1000), "reconnect");
  check(natsOptions_SetReconnectBufSize(options_, 8 * 1024 * 1024), "reconnect buffer");
  check(natsOptions_SetTimeout(options_, 2000), "timeout");
  // A silent partition is noticed within ~15 s, not cnats's default 4 minutes.
  check(natsOptions_SetPingInterval(options_, 5000), "ping interval");
  check(natsOptions_SetMaxPingsOut(options_, 3), "pings out");
  check(natsOptions_SetDisconnectedCB(options_, Hooks::lost, this), "callbacks");
  check(natsOptions_SetReconnectedCB(options_, Hooks::event, this), "callbacks");
  check(natsOptions_SetClosedCB(options_, Hooks::event, this), "callbacks");
  check(natsOptions_SetErrorHandler(options_, Hooks::error, this), "callbacks");
  if (!config_.user.empty())
    check(natsOptions_SetUserInfo(options_, config_.user.c_str(), config_.password.c_str()),
          "user");
  if (!config_.token.empty())
    check(natsOptions_SetToken(options_, config_.token.c_str()), "token_file");
  if (!config_.creds_file.empty())
    check(natsOptions_SetUserCredentialsFromFiles(options_, config_.creds_file.c_str(), nullptr),
          ("creds_file " + config_.creds_file).c_str());
  bool secure = config_.tls();
  for (const auto& u : config_.nats)
    secure = secure || u.rfind("tls://", 0) == 0;
  if (secure) check(natsOptions_SetSecure(options_, true), "TLS");
  if (!config_.ca_file.empty())
    check(natsOptions_LoadCATrustedCertificates(options_, config_.ca_file.c_str()),
          ("ca_file " + config_.ca_file).c_str());
  if (!config_.cert_file.empty())
    check(natsOptions_LoadCertificatesChain(options_, config_.cert_file.c_str(),
                                            config_.key_file.c_str()),
          ("cert_file " + config_.cert_file + " / key_file " + config_.key_file).c_str());
  if (s != NATS_OK) return false;

  started_ = true;
  wakeup_ = new uv_async_t;
  uv_async_init(loop_, wakeup_, [](uv_async_t* h) { static_cast<Link*>(h->data)->on_wakeup(); });
  wakeup_->data = this;
  retry_timer_ = new uv_timer_t;
  uv_timer_init(loop_, retry_timer_);
  retry_timer_->data = this;
  probe_next();
  return true;
}

void Link::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    alive_ = false;
  }
  if (probe_) {
    // Its callbacks free it: the resolve's (cancelled, or done and told to stop), or
    // the TCP handle's close.
    probe_->link = nullptr;
    if (probe_->tcp_open) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&probe_->tcp)))
        uv_close(reinterpret_cast<uv_handle_t*>(&probe_->tcp),
                 [](uv_handle_t* h) { delete static_cast<Probe*>(h->data); });
    } else {
      uv_cancel(reinterpret_cast<uv_req_t*>(&probe_->resolve));
    }
  }
  probe_ = nullptr;
  if (conn_) {
    // Closing on the loop thread: the adapter closes its handles in the next iterations.
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
  }
  connected_ = false;
  const auto close = [](auto*& h) {
    if (h == nullptr) return;
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) {
      delete reinterpret_cast<std::remove_reference_t<decltype(h)>>(x);
    });
    h = nullptr;
  };
  close(retry_timer_);
  close(wakeup_);
}

void Link::probe_next() {
  if (stopped_) return;
  if (next_url_ >= config_.nats.size()) {
    next_url_ = 0;
    retry_later();
    return;
  }
  auto* p = new Probe{};
  p->link = this;
  p->resolve.data = p;
  probe_ = p;
  std::string host, port;
  split_url(config_.nats[next_url_], host, port);
  // An IP literal needs no resolver (whose request runs on libuv's thread pool).
  char* end = nullptr;
  const long port_number = std::strtol(port.c_str(), &end, 10);
  sockaddr_storage addr{};
  if (end != nullptr && *end == '\0' && port_number > 0 && port_number < 65536 &&
      (uv_ip4_addr(host.c_str(), static_cast<int>(port_number),
                   reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
       uv_ip6_addr(host.c_str(), static_cast<int>(port_number),
                   reinterpret_cast<sockaddr_in6*>(&addr)) == 0)) {
    start_tcp(p, reinterpret_cast<const sockaddr*>(&addr));
    return;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const int rc = uv_getaddrinfo(
      loop_, &p->resolve,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* p = static_cast<Probe*>(req->data);
        if (p->link == nullptr || status != 0 || res == nullptr) {
          if (res) uv_freeaddrinfo(res);
          Link* link = p->link;
          delete p;
          if (link) link->probe_done(false);
          return;
        }
        start_tcp(p, res->ai_addr);
        uv_freeaddrinfo(res);
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete p;
    probe_ = nullptr;
    ++next_url_;
    probe_next();
  }
}

void Link::start_tcp(Probe* p, const sockaddr* addr) {
  uv_tcp_init(p->link->loop_, &p->tcp);
  p->tcp_open = true;
  p->tcp.data = p;
  p->connect.data = p;
  const int rc = uv_tcp_connect(&p->connect, &p->tcp, addr, [](uv_connect_t* c, int st) {
    auto* p = static_cast<Probe*>(c->data);
    Link* link = p->link;
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&p->tcp))) return;  // stop() closed it
    uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp),
             [](uv_handle_t* h) { delete static_cast<Probe*>(h->data); });
    if (link) link->probe_done(st == 0);
  });
  if (rc != 0) {
    Link* link = p->link;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp),
             [](uv_handle_t* h) { delete static_cast<Probe*>(h->data); });
    if (link) link->probe_done(false);
  }
}

void Link::probe_done(bool reachable) {
  probe_ = nullptr;
  if (stopped_) return;
  if (!reachable) {
    ++next_url_;
    probe_next();
    return;
  }
  connect_now();
}

void Link::connect_now() {
  // The server that answered goes first, so the handshake does not start with one
  // that might not (the loop waits for the handshake: it is short once TCP is up).
  std::vector<const char*> urls{config_.nats[next_url_].c_str()};
  for (size_t i = 0; i < config_.nats.size(); ++i)
    if (i != next_url_) urls.push_back(config_.nats[i].c_str());
  natsOptions_SetServers(options_, urls.data(), static_cast<int>(urls.size()));
  natsOptions_SetNoRandomize(options_, true);
  natsConnection* nc = nullptr;
  const natsStatus s = natsConnection_Connect(&nc, options_);
  if (s != NATS_OK) {
    std::string why = last_nats_error(s);
    if (why != last_connect_error_) {
      if (s == NATS_CONNECTION_AUTH_FAILED || why.find("uthoriz") != std::string::npos)
        LOG_ERROR(
            "cluster: NATS at %s refused node \"%s\": %s (check [cluster] user/password_file, "
            "token_file or creds_file); retrying",
            config_.nats[next_url_].c_str(), config_.node.c_str(), why.c_str());
      else
        LOG_WARN("cluster: cannot connect to NATS at %s: %s; retrying",
                 config_.nats[next_url_].c_str(), why.c_str());
      last_connect_error_ = why;
    }
    ++next_url_;
    probe_next();
    return;
  }
  conn_ = nc;
  last_connect_error_.clear();
  backoff_ms_ = 1000;
  char url[256] = "";
  natsConnection_GetConnectedUrl(conn_, url, sizeof(url));
  LOG_INFO("cluster: node \"%s\" connected to NATS at %s (cluster \"%s\")", config_.node.c_str(),
           url, config_.name.c_str());
  warned_unreachable_ = false;
  connected_ = true;
  if (callbacks_.state) callbacks_.state(true);
}

void Link::retry_later() {
  if (stopped_) return;
  if (!warned_unreachable_ && last_connect_error_.empty()) {
    std::string all;
    for (const auto& u : config_.nats)
      all += (all.empty() ? "" : ", ") + u;
    LOG_WARN("cluster: no NATS server reachable (%s); serving local clients only, retrying",
             all.c_str());
  }
  warned_unreachable_ = true;
  uv_timer_start(
      retry_timer_, [](uv_timer_t* t) { static_cast<Link*>(t->data)->probe_next(); }, backoff_ms_,
      0);
  backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
}

void Link::on_wakeup() {
  if (stopped_) return;
  if (const int events = events_.exchange(0)) check_state((events & kLost) != 0);
  const int err = last_error_.exchange(0);
  if (err != 0 && err != NATS_SLOW_CONSUMER)
    LOG_WARN("cluster: NATS reported: %s", natsStatus_GetText(static_cast<natsStatus>(err)));
  const uint64_t dropped = stats_.dropped_qos0 + stats_.dropped_qos12;
  if (dropped != drops_seen_ && !dropping_) {
    dropping_ = true;
    LOG_WARN(
        "cluster: the queue of messages from NATS is full (%u messages or %llu bytes): "
        "dropping them until it drains (mqgate_cluster_messages_dropped_total)",
        config_.inbound_queue_messages,
        static_cast<unsigned long long>(config_.inbound_queue_bytes));
  }
  drops_seen_ = dropped;
  if (queued() != 0 && callbacks_.inbound) callbacks_.inbound();
}

void Link::check_state(bool lost) {
  if (conn_ == nullptr) return;
  if (lost && connected_) {
    connected_ = false;
    if (leaving_)
      LOG_INFO("cluster: the NATS connection closed while this node stops");
    else
      LOG_WARN("cluster: lost the NATS connection; serving local clients only, reconnecting");
    if (callbacks_.state) callbacks_.state(false);
  }
  const bool up = natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
  if (up == connected_) return;
  connected_ = up;
  if (up) {
    stats_.reconnects++;
    char url[256] = "";
    natsConnection_GetConnectedUrl(conn_, url, sizeof(url));
    LOG_WARN("cluster: NATS connection regained at %s", url);
  } else if (leaving_) {
    LOG_INFO("cluster: the NATS connection closed while this node stops");
  } else {
    LOG_WARN("cluster: lost the NATS connection; serving local clients only, reconnecting");
  }
  if (callbacks_.state) callbacks_.state(up);
}

bool Link::publish(const std::string& subject, std::string_view data) {
  if (conn_ == nullptr) return false;
  return natsConnection_Publish(conn_, subject.c_str(), data.data(),
                                static_cast<int>(data.size())) == NATS_OK;
}

natsSubscription* Link::subscribe_with(const std::string& subject, Handler handler,
                                       bool unlimited) {
  if (conn_ == nullptr) return nullptr;
  natsSubscription* sub = nullptr;
  const natsStatus s = natsConnection_Subscribe(&sub, conn_, subject.c_str(), handler, this);
  if (s != NATS_OK) {
    LOG_WARN("cluster: cannot subscribe to NATS subject \"%s\": %s", subject.c_str(),
             last_nats_error(s).c_str());
    return nullptr;
  }
  if (unlimited) natsSubscription_SetPendingLimits(sub, -1, -1);
  track(sub);
  return sub;
}

natsSubscription* Link::subscribe(const std::string& subject) {
  return subscribe_with(subject, Hooks::message, false);
}

natsSubscription* Link::subscribe_control(const std::string& subject) {
  // Control traffic is small and must not be cut by cnats's default pending limits.
  return subscribe_with(subject, Hooks::control, true);
}

natsSubscription* Link::subscribe_replies(const std::string& subject) {
  // Answers are bounded by this node's own requests (max_pending); the reply queue
  // bounds anything else.
  return subscribe_with(subject, Hooks::reply, true);
}

natsSubscription* Link::subscribe_deliveries(const std::string& subject) {
  // JetStream's max_ack_pending bounds what is in flight to this node.
  return subscribe_with(subject, Hooks::delivery, true);
}

bool Link::publish_request(const std::string& subject, const std::string& reply,
                           const std::string& msg_id, std::string_view data) {
  if (conn_ == nullptr) return false;
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), reply.c_str(), data.data(),
                                static_cast<int>(data.size()));
  if (s == NATS_OK && !msg_id.empty()) s = natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id.c_str());
  if (s == NATS_OK) s = natsConnection_PublishMsg(conn_, msg);
  natsMsg_Destroy(msg);
  return s == NATS_OK;
}

size_t Link::take_replies(std::deque<Reply>& out, size_t max) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (max-- > 0 && !replies_.empty()) {
    reply_bytes_ -= replies_.front().data.size() + kControlOverhead;
    out.push_back(std::move(replies_.front()));
    replies_.pop_front();
  }
  return replies_.size();
}

size_t Link::take_control(std::deque<std::string>& out, size_t max) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (max-- > 0 && !control_.empty()) {
    control_bytes_ -= control_.front().size() + kControlOverhead;
    out.push_back(std::move(control_.front()));
    control_.pop_front();
  }
  return control_.size();
}

void Link::unsubscribe(natsSubscription* sub) {
  if (sub == nullptr) return;
  if (conn_ != nullptr) natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
}

size_t Link::take(std::deque<Received>& out, size_t max) {
  std::lock_guard<std::mutex> lock(mutex_);
  while (max-- > 0 && !inbox_.empty()) {
    inbox_bytes_ -= inbox_.front().data.size() + inbox_.front().subject.size();
    out.push_back(std::move(inbox_.front()));
    inbox_.pop_front();
  }
  const size_t left = inbox_.size();
  if (left == 0 && dropping_) {
    dropping_ = false;  // the next overflow is a new episode
    const uint64_t dropped = stats_.dropped_qos0 + stats_.dropped_qos12;
    LOG_WARN("cluster: the queue of messages from NATS drained (%llu dropped so far)",
             static_cast<unsigned long long>(dropped));
  }
  return left;
}

size_t Link::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return inbox_.size() + control_.size() + replies_.size();
}

}  // namespace mqgate::cluster
