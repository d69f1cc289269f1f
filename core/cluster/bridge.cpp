#include "cluster/bridge.hpp"

#include <random>

#include "base/log.hpp"
#include "base/utf8.hpp"
#include "cluster/envelope.hpp"
#include "cluster/subject.hpp"
#include "mqtt/topic.hpp"

namespace mqgate::cluster {

namespace {

uint64_t random_instance() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0)
    v = (uint64_t{rd()} << 32) ^ rd();
  return v;
}

// Origins remembered for de-duplication: nodes come and go (each start is a new
// instance); past this many the table starts again (at worst a duplicate gets through).
constexpr size_t kMaxOrigins = 4096;

}  // namespace

Bridge::Bridge(uv_loop_t* loop, const ClusterConfig& config)
    : loop_(loop),
      config_(config),
      prefix_(message_prefix(config.name)),
      instance_(random_instance()),
      gossip_("mqgate." + config.name + ".ctl.", config.node, instance_) {}

Bridge::~Bridge() {
  stop();
}

bool Bridge::start(std::function<void()> ready, std::string& error) {
  ready_ = std::move(ready);
  link_ = std::make_unique<Link>(loop_, config_,
                                 Link::Callbacks{ready_, [this](bool up) { on_state(up); }});
  if (!link_->start(error)) {
    link_.reset();
    return false;
  }
  js_ = std::make_unique<JetStream>(*link_, config_, instance_);
  tick_ = new uv_timer_t;
  uv_timer_init(loop_, tick_);
  tick_->data = this;
  uv_timer_start(tick_, on_tick, 250, 250);
  LOG_INFO("cluster: node \"%s\" of cluster \"%s\" (subjects %s>), NATS: %zu server%s",
           config_.node.c_str(), config_.name.c_str(), prefix_.c_str(), config_.nats.size(),
           config_.nats.size() == 1 ? "" : "s");
  return true;
}

void Bridge::stop() {
  if (!link_) return;
  if (tick_) {
    uv_close(reinterpret_cast<uv_handle_t*>(tick_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    tick_ = nullptr;
  }
  gossip_.leave();
  send_control();
  for (auto*& s : control_subs_) {
    link_->unsubscribe(s);
    s = nullptr;
  }
  for (auto& [filter, subs] : subs_)
    for (auto* s : subs)
      link_->unsubscribe(s);
  subs_.clear();
  if (js_) js_->stop();
  link_->stop();
}

void Bridge::leave() {
  gossip_.leave();
  send_control();
  if (link_) link_->set_leaving();
}

void Bridge::on_tick(uv_timer_t* timer) {
  auto* self = static_cast<Bridge*>(timer->data);
  self->gossip_.tick(self->now_ms());
  self->send_control();
  if (self->js_) self->js_->tick(self->now_ms());
  // Whether it moved in this tick or outside one (a DELTA added or removed meanwhile),
  // the broker has not heard of it yet.
  // Tickets given up in the tick wait for the broker too.
  if ((self->gossip_.settled() != self->reported_settled_ || self->js_->has_done()) && self->ready_)
    self->ready_();
}

void Bridge::send_control() {
  for (const Gossip::Send& m : gossip_.take_sends())
    if (link_) link_->publish(m.subject, m.data);  // a lost one: the gossip recovers
}

bool Bridge::drain_control() {
  if (!link_) return false;
  // A slice at a time: a flood of control messages does not hold the loop.
  const size_t left = link_->take_control(control_batch_, kControlSlice);
  const uint64_t now = now_ms();
  for (; !control_batch_.empty(); control_batch_.pop_front())
    gossip_.on_message(control_batch_.front(), now);
  send_control();
  reported_settled_ = gossip_.settled();  // the server hands it to the broker next
  return left != 0;
}

uint64_t Bridge::publish(const OutboundMessage& m) {
  if (!link_) return 0;
  if (!gossip_.wanted(m.topic)) {
    stats_.not_wanted++;  // no other node has a filter that matches
    return 0;
  }
  if (m.qos == 0 && !link_->connected()) {
    stats_.dropped_down++;  // the connection-loss warning said so once
    return 0;
  }
  // QoS 1/2: stored by JetStream once per node that wants it (its consumer takes it).
  std::vector<std::string> subjects;
  if (m.qos != 0) {
    gossip_.wanting(m.topic, nodes_);
    if (nodes_.empty()) {
      stats_.not_wanted++;
      return 0;
    }
    for (const std::string_view node : nodes_) {
      auto s = topic_subject(js_->subject_for(node), m.topic);
      if (!s) break;
      subjects.push_back(std::move(*s));
    }
  }
  const auto subject = m.qos == 0 ? topic_subject(prefix_, m.topic) : std::optional<std::string>();
  if (m.qos == 0 ? !subject : subjects.size() != nodes_.size()) {
    stats_.dropped_too_long++;
    if (!logged_too_long_)
      LOG_WARN(
          "cluster: a topic of %zu bytes is too long for a NATS subject; such messages "
          "stay on this node (mqgate_cluster_messages_dropped_total{reason=\"too_long\"})",
          m.topic.size());
    logged_too_long_ = true;
    return 0;
  }
  Envelope e;
  e.qos = m.qos;
  e.retain = m.retain;
  e.expiry_s = m.expiry_s;
  e.instance = instance_;
  // Two sequence spaces: core NATS's (de-duplication of overlapping subscriptions) and
  // JetStream's (the ticket; JetStream deliveries are de-duplicated by stream sequence).
  e.sequence = m.qos == 0 ? ++sequence_ : ++js_sequence_;
  e.node = config_.node;
  e.client_id = m.client_id;
  e.props = m.props;
  e.payload = m.payload;
  buffer_.clear();
  encode_envelope(buffer_, e);
  if (m.qos != 0) {
    stats_.sent++;
    js_->publish(e.sequence, std::move(subjects), buffer_, now_ms());
    return e.sequence;
  }
  if (link_->publish(*subject, buffer_))
    stats_.sent++;
  else
    stats_.dropped_down++;  // not buffered (no connection yet, or the buffer is full)
  return 0;
}

uint64_t Bridge::add_interest(std::string_view filter) {
  // Held already: a SUBACK waits as long as the first one does, while that waits.
  if (!interest_.add(filter)) return gossip_.wait_for(filter);
  const std::string key(filter);
  subs_[key];  // subscribed now if a connection exists, else once there is one
  if (link_) subscribe_filter(key);
  const uint64_t wait = gossip_.local_add(filter, now_ms());
  send_control();
  return wait;
}

void Bridge::subscribe_filter(const std::string& filter) {
  auto& subs = subs_[filter];
  if (!subs.empty()) return;
  const auto subjects = filter_subjects(prefix_, filter);
  if (subjects.empty()) {
    LOG_WARN(
        "cluster: the filter of %zu bytes is too long for NATS subjects; it only matches "
        "messages published on this node",
        filter.size());
    return;
  }
  for (const auto& s : subjects)
    if (auto* sub = link_->subscribe(s)) subs.push_back(sub);
}

void Bridge::remove_interest(std::string_view filter) {
  if (!interest_.remove(filter)) return;
  gossip_.local_remove(filter, now_ms());
  send_control();
  auto it = subs_.find(std::string(filter));
  if (it == subs_.end()) return;
  for (auto* s : it->second)
    link_->unsubscribe(s);
  subs_.erase(it);
}

void Bridge::on_state(bool up) {
  if (!up) {
    gossip_.disconnected();
    js_->disconnected();
    if (ready_) ready_();  // SUBACKs waiting for other nodes go now
    return;
  }
  // cnats re-sends existing subscriptions after a reconnect; only filters added before
  // the first connection (or refused then) still need theirs.
  const std::string control[] = {gossip_.broadcast_subject(), gossip_.own_subject()};
  for (size_t i = 0; i < 2; ++i)
    if (control_subs_[i] == nullptr) control_subs_[i] = link_->subscribe_control(control[i]);
  for (auto& [filter, subs] : subs_)
    if (subs.empty()) subscribe_filter(filter);
  gossip_.connected(now_ms());
  send_control();
  js_->connected(now_ms());
}

bool Bridge::drain(size_t max, const std::function<void(const InboundMessage&)>& fn) {
  if (!link_) return false;
  const size_t left = link_->take(batch_, max);
  for (; !batch_.empty(); batch_.pop_front()) {
    const Link::Received& r = batch_.front();
    const bool durable = !r.reply.empty();                    // a JetStream delivery
    if (durable && !js_->accept_delivery(r.reply)) continue;  // handed over already
    Envelope e;
    const char* why = "";
    std::optional<std::string> topic =
        subject_topic(durable ? js_->delivery_prefix() : prefix_, r.subject);
    if (!topic) why = "its subject is not an encoded topic";
    // What a local PUBLISH could not carry does not come in from NATS either: no
    // wildcard, valid UTF-8, and no '$' topic (those are each broker's own).
    if (topic && (!is_valid_topic_name(*topic) || !codec::is_valid_mqtt_utf8(*topic) ||
                  (*topic)[0] == '$')) {
      why = "its topic is not one a client may publish to";
      topic.reset();
    }
    if (!topic || !decode_envelope(r.data, e, why)) {
      stats_.dropped_malformed++;
      if (!logged_malformed_)
        LOG_WARN(
            "cluster: dropped a malformed message from NATS subject \"%s\" (%s); "
            "further ones are only counted (mqgate_cluster_messages_dropped_total)",
            log::quote(r.subject.substr(0, 200)).c_str(), why);
      logged_malformed_ = true;
      if (durable) js_->ack(r.reply);  // never deliverable: out of the stream
      continue;
    }
    if (durable) {
      acks_.push_back(r.reply);
    } else {
      if (e.instance == instance_) continue;  // our own (NoEcho should spare us those)
      auto [it, fresh] = last_sequence_.try_emplace(e.instance, 0);
      if (!fresh && e.sequence <= it->second) {
        stats_.duplicates++;
        continue;
      }
      it->second = e.sequence;
      if (last_sequence_.size() > kMaxOrigins) last_sequence_.clear();
    }
    stats_.received++;
    InboundMessage m;
    m.topic = *topic;
    m.payload = e.payload;
    m.qos = e.qos;
    m.retain = e.retain;
    m.props = e.props;
    m.expiry_s = e.expiry_s;
    m.client_id = e.client_id;
    m.node = e.node;
    fn(m);
  }
  return left != 0;
}

void Bridge::ack(const std::vector<std::string>& replies) {
  if (!js_) return;
  for (const std::string& r : replies)
    js_->ack(r);
}

std::vector<std::pair<uint64_t, bool>> Bridge::take_stored() {
  if (!link_) return {};
  const uint64_t now = now_ms();
  // All of them: they are bounded by this node's own publishes.
  link_->take_replies(replies_, SIZE_MAX);
  for (; !replies_.empty(); replies_.pop_front())
    js_->on_reply(replies_.front(), now);
  return js_->take_done();
}

}  // namespace mqgate::cluster
