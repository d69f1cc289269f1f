// PUBLISH: the broker's rules and the plugins' decision, then routing to every matching
// session (fan-outs too big for one slice continue in run_fanouts).
#include "broker/broker.hpp"

#include <algorithm>
#include <utility>

#include "client/mqtt5.hpp"

namespace mqgate {

using codec::PacketType;
namespace reason = codec::reason;

AuthResult Broker::authorize_publish(const Client& client, std::string_view topic, uint8_t qos,
                                     bool retain) {
  // '$' topics are the broker's ($SYS). MQTT 3.1.1 section 4.7.2: "The Server SHOULD
  // prevent Clients from using such Topic Names to exchange messages with other Clients."
  if (!topic.empty() && topic[0] == '$')
    return AuthResult::deny("topics starting with '$' are reserved for the broker");
  return hooks_.authorize(client, topic, AuthAction::kPublish, qos, retain);
}

void Broker::handle_publish(Client& client, codec::Publish& p) {
  const bool v5 = is_v5(client);
  if (v5) {
    // From here on the topic is the resolved one (ACL, plugins, routing).
    if (const uint8_t rc = mqtt5::resolve_topic_alias(*client.v5(), p)) {
      protocol_violation(client,
                         rc == reason::kTopicAliasInvalid ? "topic alias 0 or over the Topic Alias Maximum"
                         : rc == reason::kQuotaExceeded
                             ? "topic aliases would hold more than 64 KiB of topics"
                             : "topic alias never set, without a topic",
                         rc);
      return;
    }
  }
  if (too_deep(client, p.topic)) return;
  stats_.messages_received++;
  Session& session = *client.session;
  const uint64_t changes = store_changes();
  if (p.qos == 2 && !session.begin_incoming_qos2(p.packet_id, session_limits_)) {
    // A resend of a QoS 2 message we already have: acknowledge, don't deliver twice
    // (once its id is durable; behind the client's messages still waiting to be routed).
    if (route_when_durable(client, {}, {}, 2, false, p.packet_id, false, {}, std::nullopt,
                           reason::kSuccess))
      return;
    acknowledge(client, PacketType::kPubrec, p.packet_id, !session.clean());
    return;
  }
  if (v5 && p.qos == 2 && session.incoming_qos2_count() > broker_receive_maximum()) {
    session.end_incoming_qos2(p.packet_id, session_limits_);
    protocol_violation(client, "more QoS 2 messages unacknowledged than the Receive Maximum",
                       reason::kReceiveMaximumExceeded);  // [MQTT-3.3.4-8]
    return;
  }
  const std::string props = v5 ? mqtt5::forwarded_properties(p.props) : std::string();
  std::optional<uint64_t> expires_at;
  if (v5 && p.props.message_expiry_interval)
    expires_at = now_ms_ + uint64_t{*p.props.message_expiry_interval} * 1000;
  AuthResult auth;
  const bool claimed = !p.topic.empty() && p.topic[0] == '$' && hooks_.claimed(client, p.topic);
  if (!p.topic.empty() && p.topic[0] == '$' && !claimed) {
    auth = authorize_publish(client, p.topic, p.qos, p.retain);  // refused by the broker
  } else {
    AuthRequest req;
    req.topic = p.topic;
    req.action = AuthAction::kPublish;
    req.qos = p.qos;
    req.retain = p.retain;
    req.may_defer = true;
    auth = hooks_.check(client, req);
  }
  PublishState state;
  state.packet_id = p.packet_id;
  state.qos = p.qos;
  state.retain = p.retain;
  if (auth.pending) {
    // Routed and acknowledged once decided; the client's next packets wait meanwhile.
    state.topic.assign(p.topic);
    state.payload.assign(p.payload);
    state.props = props;
    state.expires_at_ms = expires_at;
    state.claimed = claimed;
    if (claimed && v5) state.claimed_props = claimed_properties(p.props);
    await(client, Awaiting{std::move(state)});
    return;
  }
  uint8_t ack_reason = reason::kSuccess;
  Routed routed;
  if (auth.allowed && claimed) {
    const ClaimedProperties cp = v5 ? claimed_properties(p.props) : ClaimedProperties{};
    take_claimed(client, p.topic, p.payload, p.qos, p.packet_id, v5 ? &cp : nullptr);
    return;
  }
  if (auth.allowed) {
    if (refuse_unstorable(client, p.topic, p.payload, props, p.qos, p.retain, p.packet_id)) return;
    // Routed and acknowledged later, in order (a QoS 2 message of a persistent session).
    if (route_when_durable(client, p.topic, p.payload, p.qos, p.retain, p.packet_id, true, props,
                           expires_at, reason::kSuccess))
      return;
    routed = route(p.topic, p.payload, p.qos, p.retain, false, &client, props, client.session,
                   expires_at);
    if (!routed) ack_reason = reason::kNoMatchingSubscribers;
  } else {
    state.topic.assign(p.topic);
    finish_publish(client, state, auth);
    return;
  }
  const bool durable = store_changes() != changes;
  const uint64_t ticket = routed.cluster_ticket;
  if (p.qos == 1)
    acknowledge(client, PacketType::kPuback, p.packet_id, durable, ack_reason, {}, ticket);
  if (p.qos == 2)
    acknowledge(client, PacketType::kPubrec, p.packet_id, durable, ack_reason, {}, ticket);
}

void Broker::finish_publish(Client& client, const PublishState& p, const AuthResult& auth) {
  const uint64_t changes = store_changes();
  uint8_t ack_reason = reason::kSuccess;
  if (!auth.allowed) {
    stats_.publish_denied++;
    ack_reason = auth.reason_code != 0 ? auth.reason_code : reason::kNotAuthorized;
    if (p.qos > 0 && client.v5() &&
        mqtt5::may_send_reason_string(client, auth.reason_string, 5, false))
      client.v5()->ack_reason_strings.emplace_back(p.packet_id, auth.reason_string);
    CLIENT_LOG(log::Level::kInfo, client, "publish to %s denied (not forwarded): %s",
               log::quote(p.topic).c_str(), auth.reason.c_str());
  }
  if (auth.allowed && p.claimed) {
    take_claimed(client, p.topic, p.payload, p.qos, p.packet_id,
                 p.claimed_props ? &*p.claimed_props : nullptr);
    return;
  }
  if (auth.allowed &&
      refuse_unstorable(client, p.topic, p.payload, p.props, p.qos, p.retain, p.packet_id))
    return;
  // Routed (if allowed) and acknowledged later, in order.
  if (route_when_durable(client, p.topic, p.payload, p.qos, p.retain, p.packet_id, auth.allowed,
                         p.props, p.expires_at_ms, ack_reason))
    return;
  Routed routed;
  if (auth.allowed) {
    routed = route(p.topic, p.payload, p.qos, p.retain, false, &client, p.props, client.session,
                   p.expires_at_ms);
    if (!routed) ack_reason = reason::kNoMatchingSubscribers;
  }
  // 3.1.1 has no negative acknowledgement: a denied QoS 1/2 message is still acked
  // (5.0: with Not authorized).
  // (A QoS 2 id of a persistent session was journaled when the PUBLISH arrived.)
  const bool durable =
      store_changes() != changes || (p.qos == 2 && client.session && !client.session->clean());
  const uint64_t ticket = routed.cluster_ticket;
  if (p.qos == 1)
    acknowledge(client, PacketType::kPuback, p.packet_id, durable, ack_reason, {}, ticket);
  if (p.qos == 2)
    acknowledge(client, PacketType::kPubrec, p.packet_id, durable, ack_reason, {}, ticket);
}

Broker::Routed Broker::route(std::string_view topic, std::string_view payload, uint8_t qos,
                             bool retain, bool internal, Client* source, std::string_view props,
                             const Session* origin, std::optional<uint64_t> expires_at_ms) {
  MessagePtr msg;
  if (retain || !props.empty() || expires_at_ms)
    msg = Message::create(topic, payload, qos, retain, props, expires_at_ms);
  if (retain) {
    if (internal) router_.retain(msg);  // the broker's own few $SYS topics are not capped
    else
      store_retained(msg, source);
  }
  Routed routed;
  if (cluster_ && !internal) {
    routed.cluster_ticket =
        send_to_cluster(topic, payload, qos, retain, props, origin, expires_at_ms);
    // Past the bound of messages waiting for the cluster: this publisher waits too.
    if (routed.cluster_ticket != 0 && source != nullptr && cluster_->backlogged())
      hold_for_cluster(*source);
  }
  // Another node wants it (its subscribers match): not "no matching subscribers".
  routed.matched =
      deliver_local(topic, payload, qos, msg, source, origin, true) || routed.cluster_ticket != 0;
  return routed;
}

uint64_t Broker::send_to_cluster(std::string_view topic, std::string_view payload, uint8_t qos,
                                 bool retain, std::string_view props, const Session* origin,
                                 std::optional<uint64_t> expires_at_ms) {
  cluster::OutboundMessage m;
  if (expires_at_ms) {
    if (*expires_at_ms <= now_ms_) return 0;  // expired on the way: nobody may get it
    m.expiry_s = static_cast<uint32_t>((*expires_at_ms - now_ms_ + 999) / 1000);
  }
  m.topic = topic;
  m.payload = payload;
  m.qos = qos;
  m.retain = retain;
  m.props = props;
  if (origin) m.client_id = origin->client_id();
  return cluster_->publish(m);
}

void Broker::on_cluster_message(const cluster::InboundMessage& m, uint64_t now_ms) {
  MQGATE_BROKER_ENTRY();
  now_ms_ = std::max(now_ms_, now_ms);
  session_limits_.now_ms = now_ms_;  // the expiry left is counted from now
  std::optional<uint64_t> expires_at;
  if (m.expiry_s) expires_at = now_ms_ + uint64_t{*m.expiry_s} * 1000;
  MessagePtr msg;
  if (m.retain || !m.props.empty() || expires_at)
    msg = Message::create(m.topic, m.payload, m.qos, m.retain, m.props, expires_at);
  // No Local across nodes: the local session with the publisher's client id.
  const Session* origin = m.client_id.empty() ? nullptr : sessions_->find(m.client_id);
  deliver_local(m.topic, m.payload, m.qos, msg, nullptr, origin, false);
}

bool Broker::deliver_local(std::string_view topic, std::string_view payload, uint8_t qos,
                           MessagePtr& msg, Client* source, const Session* origin, bool shared) {
  const std::vector<RouteTarget*>& targets = router_.matches(topic);
  bool matched = !targets.empty();
  if (shared && !shared_.empty() && route_shared(topic, payload, qos, msg, source)) matched = true;
  size_t inline_count = targets.size();
  if (!fanouts_.empty()) inline_count = 0;  // behind a fan-out in progress: keep the order
  else if (inline_count > kSliceBudget) inline_count = kSliceBudget;
  for (size_t i = 0; i < inline_count; ++i)
    deliver_routed(*static_cast<Session*>(targets[i]), targets[i]->match_qos, topic, payload, qos,
                   msg, source, origin);
  if (inline_count == targets.size()) return matched;
  // A fan-out too big for one slice: the rest goes out in later slices, and until it
  // has, no connection's next packet is read (congested()), so nothing overtakes it.
  FanoutJob job;
  job.msg = msg ? msg : Message::create(topic, payload, qos, false);
  job.qos = qos;
  job.source = source;
  job.origin = origin;
  job.targets.reserve(targets.size() - inline_count);
  for (size_t i = inline_count; i < targets.size(); ++i)
    job.targets.push_back({static_cast<Session*>(targets[i]), targets[i]->match_qos});
  fanouts_.push_back(std::move(job));
  return matched;
}

void Broker::deliver_routed(Session& session, uint8_t sub_qos, std::string_view topic,
                            std::string_view payload, uint8_t qos, MessagePtr& msg,
                            Client* source, const Session* origin) {
  const uint8_t q = std::min(qos, sub_qos);  // [MQTT-3.8.4-6]
  if (q == 0 && flow_.sheds_qos0(session)) {  // slow_subscriber = "drop_qos0" applied
    stats_.delivery.messages_dropped++;
    flow_.count_shed(session);
    return;
  }
  const uint64_t dropped_before = stats_.delivery.congestion_drops();
  if (session.checks_deliveries(rules_epoch_)) {
    deliver_checked(session, q, topic, payload, qos, msg, origin);
  } else if (session.has_options()) {
    deliver_with_options(session, q, topic, payload, qos, msg, origin);
  } else if (q == 0 && !(msg && msg->expires())) {
    // Forwarded copies carry RETAIN 0 [MQTT-3.3.1-9].
    session.deliver_qos0(topic, payload, false, limits_.max_outgoing_bytes, stats_.delivery,
                         msg ? msg->props() : std::string_view());
  } else {
    if (!msg) msg = Message::create(topic, payload, qos, false);
    session.deliver(msg, q, false, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
  }
  after_delivery(session, q, dropped_before, source);
}

void Broker::deliver_with_options(Session& session, uint8_t q, std::string_view topic,
                                  std::string_view payload, uint8_t qos, MessagePtr& msg,
                                  const Session* origin) {
  const Session::Delivery d = session.match_options(topic, &session == origin);
  if (d.skip) return;  // No Local: its own message [MQTT-3.8.3-3]
  // The router's QoS is the highest over every matching filter, also a No Local one
  // skipped here: the delivery takes the best of those that apply [MQTT-3.8.4-8].
  q = std::min(q, d.qos);
  if (!msg) msg = Message::create(topic, payload, qos, false);
  // Retain As Published: the publication's RETAIN flag, else 0 [MQTT-3.3.1-12, -13].
  const bool retain = d.retain_as_published && msg->retain();
  // Subscription Identifiers make this delivery's copy its own [MQTT-3.3.4-3].
  const MessagePtr copy = d.ids.empty() ? msg : mqtt5::with_subscription_ids(*msg, d.ids);
  session.deliver(copy, q, retain, session_limits_, limits_.max_outgoing_bytes, stats_.delivery);
}

size_t Broker::run_fanouts(size_t budget) {
  size_t spent = 0;
  while (!fanouts_.empty() && spent < budget) {
    FanoutJob& job = fanouts_.front();
    MessagePtr msg = job.msg;
    while (job.next < job.targets.size() && spent < budget) {
      auto [session, sub_qos] = job.targets[job.next++];
      ++spent;
      if (!session->removed())
        deliver_routed(*session, sub_qos, msg->topic(), msg->payload(), job.qos, msg, job.source,
                       job.origin);
    }
    if (job.next == job.targets.size()) fanouts_.pop_front();
  }
  if (fanouts_.empty()) graveyard_.clear();  // nothing points at them any more
  return spent;
}

void Broker::publish_internal(std::string_view topic, std::string_view payload, bool retain) {
  MQGATE_BROKER_ENTRY();
  route(topic, payload, 0, retain, true);
}

}  // namespace mqgate
