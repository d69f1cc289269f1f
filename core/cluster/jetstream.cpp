#include "cluster/jetstream.hpp"

#include <cinttypes>
#include <cstdio>

#include "base/log.hpp"

namespace mqgate::cluster {

namespace {

constexpr uint64_t kErrorRetryMs = 250;  // an error answer: sent again this much later
constexpr uint64_t kNs = 1000000000ull;
// JetStream's error codes (nats-server's errors.json) the setup reacts to.
constexpr uint64_t kStreamNameInUse = 10058;    // exists with another configuration
constexpr uint64_t kConsumerNameInUse = 10013;  // exists with another configuration
constexpr uint64_t kConsumerExists = 10148;

std::string hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof(b), "%016" PRIx64, v);
  return b;
}

// The value after `"key":` in `json` (not nested-aware: the answers are small and made
// by nats-server; a hostile one only yields a wrong number or text, never a crash).
std::string_view json_value(std::string_view json, std::string_view key) {
  const std::string needle = "\"" + std::string(key) + "\":";
  const size_t at = json.find(needle);
  if (at == std::string_view::npos) return {};
  std::string_view rest = json.substr(at + needle.size());
  while (!rest.empty() && rest[0] == ' ')
    rest.remove_prefix(1);
  return rest;
}

}  // namespace

bool json_number(std::string_view json, std::string_view key, uint64_t& out) {
  const std::string_view v = json_value(json, key);
  uint64_t n = 0;
  size_t i = 0;
  for (; i < v.size() && i < 20 && v[i] >= '0' && v[i] <= '9'; ++i)
    n = n * 10 + static_cast<uint64_t>(v[i] - '0');
  if (i == 0) return false;
  out = n;
  return true;
}

std::string jetstream_error(std::string_view json) {
  const size_t at = json.find("\"error\":");
  if (at == std::string_view::npos) return {};
  const std::string_view err = json.substr(at);
  std::string_view d = json_value(err, "description");
  std::string text;
  if (!d.empty() && d[0] == '"') {
    d.remove_prefix(1);
    for (size_t i = 0; i < d.size() && d[i] != '"' && text.size() < 200; ++i)
      text += (d[i] >= 0x20 && d[i] < 0x7f) ? d[i] : '?';
  }
  uint64_t code = 0;
  if (json_number(err, "err_code", code)) text += " (err_code " + std::to_string(code) + ")";
  return text.empty() ? "an error without a description" : text;
}

JetStream::JetStream(Link& link, const ClusterConfig& config, uint64_t instance)
    : link_(link),
      config_(config),
      stream_("MQGATE_" + config.name),
      queue_prefix_("mqgate." + config.name + ".q."),
      own_prefix_(queue_prefix_ + config.node + "."),
      deliver_("mqgate." + config.name + ".d." + config.node),
      inbox_("_INBOX.mqgate." + hex(instance) + "."),
      msg_id_prefix_(config.node + "-" + hex(instance) + "-") {}

void JetStream::connected(uint64_t now_ms) {
  setup_since_ms_ = now_ms;
  // cnats re-sends subscriptions after a reconnection: these are made once.
  if (replies_sub_ == nullptr) replies_sub_ = link_.subscribe_replies(reply_subscription());
  // Subscribed before the consumer exists, so its first deliveries find the interest.
  if (deliveries_sub_ == nullptr) deliveries_sub_ = link_.subscribe_deliveries(deliver_);
  request_setup(now_ms);
  // What waited for the connection goes now.
  for (auto& [id, p] : pending_)
    if (!p.sent) p.due_ms = now_ms;
}

void JetStream::stop() {
  link_.unsubscribe(replies_sub_);
  link_.unsubscribe(deliveries_sub_);
  replies_sub_ = deliveries_sub_ = nullptr;
  ready_ = false;
}

void JetStream::request_setup(uint64_t now_ms) {
  request_stream(false, now_ms);
}

void JetStream::request_stream(bool update, uint64_t now_ms) {
  const uint64_t max_age_ns = config_.max_age_s * kNs;
  const uint64_t window_ns = std::min<uint64_t>(120 * kNs, max_age_ns);
  const std::string body =
      "{\"name\":\"" + stream_ + "\",\"subjects\":[\"" + queue_prefix_ +
      ">\"],\"retention\":\"workqueue\",\"storage\":\"file\",\"discard\":\"new\","
      "\"max_consumers\":-1,\"max_msgs\":-1,\"max_msgs_per_subject\":-1,\"max_msg_size\":-1,"
      "\"max_bytes\":" +
      std::to_string(config_.max_bytes) + ",\"max_age\":" + std::to_string(max_age_ns) +
      ",\"num_replicas\":" + std::to_string(config_.replicas) +
      ",\"duplicate_window\":" + std::to_string(window_ns) + "}";
  setup_request(update ? Setup::kStreamUpdate : Setup::kStream,
                std::string("$JS.API.STREAM.") + (update ? "UPDATE." : "CREATE.") + stream_, body,
                now_ms);
}

void JetStream::request_consumer(uint64_t now_ms) {
  const std::string body =
      "{\"stream_name\":\"" + stream_ + "\",\"config\":{\"durable_name\":\"" + config_.node +
      "\",\"deliver_subject\":\"" + deliver_ +
      "\",\"deliver_policy\":\"all\",\"ack_policy\":\"explicit\",\"ack_wait\":" +
      std::to_string(kAckWaitS * kNs) + ",\"max_deliver\":-1,\"filter_subject\":\"" + own_prefix_ +
      ">\",\"replay_policy\":\"instant\",\"max_ack_pending\":" + std::to_string(kMaxAckPending) +
      "}}";
  setup_request(Setup::kConsumer, "$JS.API.CONSUMER.DURABLE.CREATE." + stream_ + "." + config_.node,
                body, now_ms);
}

void JetStream::setup_request(Setup step, const std::string& subject, const std::string& body,
                              uint64_t now_ms) {
  setup_ = step;
  setup_request_ = ++next_id_;
  setup_due_ms_ = now_ms + kAttemptMs;
  link_.publish_request(subject, inbox_ + "s" + std::to_string(setup_request_), {}, body);
}

void JetStream::on_setup_reply(const Link::Reply& r, uint64_t now_ms) {
  const std::string error =
      !r.status.empty() ? "JetStream is not available (status " + r.status + ": no responders)"
                        : jetstream_error(r.data);
  uint64_t code = 0;
  if (r.status.empty()) json_number(r.data, "err_code", code);
  switch (setup_) {
    case Setup::kStream:
      if (error.empty()) return request_consumer(now_ms);
      // It exists with other settings (changed keys, or another node's): update it.
      if (code == kStreamNameInUse) return request_stream(true, now_ms);
      return setup_failed("stream " + stream_ + ": " + error, !r.status.empty(), now_ms);
    case Setup::kStreamUpdate:
      if (!r.status.empty())
        return setup_failed("stream " + stream_ + ": " + error, !r.status.empty(), now_ms);
      if (!error.empty())
        LOG_WARN("cluster: JetStream stream %s kept its settings: %s", stream_.c_str(),
                 error.c_str());
      return request_consumer(now_ms);
    case Setup::kConsumer:
      if (!error.empty() && code != kConsumerNameInUse && code != kConsumerExists)
        return setup_failed("consumer " + config_.node + ": " + error, !r.status.empty(), now_ms);
      // An existing consumer with other settings still delivers to this node's subject.
      if (!error.empty())
        LOG_WARN("cluster: JetStream consumer %s of %s kept its settings: %s", config_.node.c_str(),
                 stream_.c_str(), error.c_str());
      setup_ = Setup::kDone;
      ready_ = true;
      logged_setup_ = false;
      LOG_INFO(
          "cluster: JetStream stream %s (replicas %u) and consumer %s ready: QoS 1/2 messages "
          "for other nodes are acknowledged once stored",
          stream_.c_str(), config_.replicas, config_.node.c_str());
      return;
    default:
      return;
  }
}

void JetStream::setup_failed(const std::string& what, bool absent, uint64_t now_ms) {
  ready_ = false;
  setup_ = Setup::kIdle;
  setup_due_ms_ = now_ms + kSetupRetryMs;
  // A NATS cluster just started elects its JetStream leader first: quiet for a while,
  // unless no JetStream answers at all.
  if (!logged_setup_ && (absent || now_ms - setup_since_ms_ >= kSetupGraceMs))
    LOG_WARN(
        "cluster: cannot set up JetStream (%s); QoS 1/2 messages other nodes want are held, "
        "then refused; retrying",
        what.c_str());
  logged_setup_ = true;
}

void JetStream::publish(uint64_t ticket, std::vector<std::string> subjects, std::string_view data,
                        uint64_t now_ms) {
  auto shared = std::make_shared<const std::string>(data);
  Ticket& t = tickets_[ticket];
  for (size_t i = 0; i < subjects.size(); ++i) {
    const uint64_t id = ++next_id_;
    Pending& p = pending_[id];
    p.ticket = ticket;
    p.subject = std::move(subjects[i]);
    p.msg_id = msg_id_prefix_ + std::to_string(ticket) + "-" + std::to_string(i);
    p.data = shared;
    p.first_ms = now_ms;
    bytes_ += data.size() + p.subject.size();
    t.remaining++;
    send(id, p, now_ms);
  }
}

void JetStream::send(uint64_t id, Pending& p, uint64_t now_ms) {
  p.sent = link_.connected() &&
           link_.publish_request(p.subject, inbox_ + "p" + std::to_string(id), p.msg_id, *p.data);
  p.due_ms = p.sent ? now_ms + kAttemptMs : now_ms + kErrorRetryMs;
}

void JetStream::finish(uint64_t id, bool stored) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  const uint64_t ticket = it->second.ticket;
  bytes_ -= it->second.data->size() + it->second.subject.size();
  pending_.erase(it);
  auto t = tickets_.find(ticket);
  if (t == tickets_.end()) return;
  if (stored)
    stats_.published++;
  else
    t->second.failed = true;
  if (--t->second.remaining != 0) return;
  if (t->second.failed) stats_.failures++;
  done_.emplace_back(ticket, !t->second.failed);
  tickets_.erase(t);
}

void JetStream::on_reply(const Link::Reply& r, uint64_t now_ms) {
  if (r.subject.size() < inbox_.size() + 2 || r.subject.compare(0, inbox_.size(), inbox_) != 0)
    return;
  const char kind = r.subject[inbox_.size()];
  uint64_t id = 0;
  for (size_t i = inbox_.size() + 1; i < r.subject.size(); ++i) {
    const char c = r.subject[i];
    if (c < '0' || c > '9' || i > inbox_.size() + 20) return;
    id = id * 10 + static_cast<uint64_t>(c - '0');
  }
  if (kind == 's') {
    if (id == setup_request_) on_setup_reply(r, now_ms);
    return;
  }
  if (kind != 'p') return;
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // answered after it was sent again, or given up
  const std::string error = !r.status.empty()
                                ? "no JetStream stream answered (status " + r.status + ")"
                                : jetstream_error(r.data);
  if (error.empty()) {
    last_error_.clear();
    finish(id, true);
    return;
  }
  // Sent again at the next tick (same Msg-Id), until publish_timeout. The last error
  // is what the log says if the message is given up.
  it->second.due_ms = now_ms + kErrorRetryMs;
  it->second.sent = false;
  last_error_ = error;
}

void JetStream::tick(uint64_t now_ms) {
  if (setup_ != Setup::kDone && link_.connected() && now_ms >= setup_due_ms_) {
    if (setup_ != Setup::kIdle && !logged_setup_ && now_ms - setup_since_ms_ >= kSetupGraceMs) {
      LOG_WARN(
          "cluster: no answer from the JetStream API; QoS 1/2 messages other nodes want are "
          "held, then refused; retrying");
      logged_setup_ = true;
    }
    request_setup(now_ms);  // (also when a request went unanswered)
  }
  const uint64_t timeout_ms = uint64_t{config_.publish_timeout_s} * 1000;
  std::vector<uint64_t> due;
  for (const auto& [id, p] : pending_)
    if (p.due_ms <= now_ms) due.push_back(id);
  for (const uint64_t id : due) {
    auto it = pending_.find(id);
    if (now_ms - it->second.first_ms >= timeout_ms) {
      if (!logged_failure_)
        LOG_WARN(
            "cluster: JetStream did not store a message for another node within "
            "publish_timeout (%s); its publisher is refused, and so are the next ones until "
            "it stores again (mqgate_cluster_jetstream_publish_failures_total)",
            last_error_.empty() ? "no answer" : last_error_.c_str());
      logged_failure_ = true;
      finish(id, false);
      continue;
    }
    // Sent again under a new request id (an old answer arriving late is ignored).
    Pending p = std::move(it->second);
    pending_.erase(it);
    const uint64_t fresh = ++next_id_;
    Pending& moved = pending_.emplace(fresh, std::move(p)).first->second;
    if (moved.sent) stats_.retries++;
    send(fresh, moved, now_ms);
  }
  if (pending_.empty() && logged_failure_) {
    logged_failure_ = false;
    LOG_INFO("cluster: JetStream stores messages again");
  }
}

bool JetStream::accept_delivery(const std::string& reply) {
  // $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
  // or with <domain>.<account hash> after ACK and a token at the end.
  std::vector<std::string_view> tokens;
  std::string_view rest = reply;
  while (tokens.size() < 16) {
    const size_t dot = rest.find('.');
    tokens.push_back(rest.substr(0, dot));
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  const size_t base = tokens.size() == 9 ? 4 : tokens.size() >= 11 ? 6 : 0;
  stats_.received++;
  if (base == 0 || tokens[0] != "$JS" || tokens[1] != "ACK") return true;
  const auto number = [](std::string_view t) {
    uint64_t n = 0;
    for (size_t i = 0; i < t.size() && i < 20 && t[i] >= '0' && t[i] <= '9'; ++i)
      n = n * 10 + static_cast<uint64_t>(t[i] - '0');
    return n;
  };
  const uint64_t delivered = number(tokens[base]);
  const uint64_t sequence = number(tokens[base + 1]);
  if (delivered > 1) {
    stats_.redelivered++;
    if (handed_.contains(sequence)) {
      stats_.received--;
      stats_.duplicates++;
      ack(reply);
      return false;
    }
  }
  if (handed_.insert(sequence).second) {
    handed_order_.push_back(sequence);
    if (handed_order_.size() > kMaxHanded) {
      handed_.erase(handed_order_.front());
      handed_order_.pop_front();
    }
  }
  return true;
}

void JetStream::ack(const std::string& reply) {
  link_.publish(reply, "+ACK");
}

}  // namespace mqgate::cluster
