// The broker's persistence hooks: acknowledgements that wait for durability, the
// records of persistent sessions, and the rebuild of the loaded state at start-up.
// Kept apart from broker.cpp's MQTT logic, which only calls these.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <unordered_map>

#include "broker/broker.hpp"
#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"
#include "store/journal.hpp"

namespace mqgate {

using codec::PacketType;

void Broker::set_persistence(Persistence* persistence) {
  persistence_ = persistence;
  session_limits_.journal = persistence;
}

uint64_t Broker::store_changes() const {
  return persistence_ ? persistence_->changes() : 0;
}

void Broker::send_ack(Client& client, PacketType type, uint16_t packet_id, uint8_t reason,
                      const std::vector<uint8_t>& codes) {
  if (type == PacketType::kUnsuback && client.protocol_level == codec::kProtocolLevel5)
    codec::encode_unsuback_v5(client.out(), packet_id, codes);
  else if (send_ack_reason_string(client, type, packet_id, reason))
    return;
  else
    mqtt5::encode_ack(client, client.out(), type, packet_id, reason);
}

void Broker::acknowledge(Client& client, PacketType type, uint16_t packet_id, bool durable,
                         uint8_t reason, std::vector<uint8_t> codes, uint64_t cluster_ticket) {
  // A 5.0 PUBREC with a failure code ends that QoS 2 exchange: no PUBREL follows, and the
  // packet id is free for the client's next message (4.3.3; nor does it count against
  // the Receive Maximum any longer).
  if (type == PacketType::kPubrec && reason >= 0x80 && client.v5() && client.session)
    client.session->end_incoming_qos2(packet_id, session_limits_);
  auto held = held_acks_.find(client.conn_id());
  // Behind a barrier if durable, or if others are held (a barrier each, as they complete
  // in order: a failed store withholds those behind it too).
  const bool barrier = persistence_ != nullptr && (durable || held != held_acks_.end());
  if (!barrier && cluster_ticket == 0 && held == held_acks_.end()) {
    send_ack(client, type, packet_id, reason, codes);
    return;
  }
  // Held, in order: acknowledgements of one client leave in the order its packets came
  // (barriers complete in the order they were made; the cluster's in any order).
  if (held == held_acks_.end()) {
    held = held_acks_.try_emplace(client.conn_id()).first;
    held->second.client = &client;
  }
  HeldAcks::Held h{type, packet_id, nullptr, reason, std::move(codes)};
  h.store_wait = barrier;
  h.cluster_ticket = cluster_ticket;
  held->second.acks.push_back(std::move(h));
  if (cluster_ticket != 0) cluster_tickets_[cluster_ticket] = client.conn_id();
  if (barrier)
    persistence_->barrier([this, id = client.conn_id()](bool ok) { ack_durable(id, ok); });
}

void Broker::ack_durable(ConnId client, bool ok) {
  MQGATE_BROKER_ENTRY();
  // Barriers complete in order: this one is the first still waiting for its barrier,
  // unless the client closed meanwhile (its entry went with it).
  auto it = held_acks_.find(client);
  if (it == held_acks_.end()) return;
  for (HeldAcks::Held& h : it->second.acks)
    if (h.store_wait) {
      h.store_wait = false;
      h.store_ok = ok;
      break;
    }
  release_held_acks(client);
}

void Broker::on_cluster_stored(uint64_t ticket, bool stored) {
  MQGATE_BROKER_ENTRY();
  auto owner = cluster_tickets_.find(ticket);
  if (owner != cluster_tickets_.end()) {
    const ConnId client = owner->second;
    cluster_tickets_.erase(owner);
    auto it = held_acks_.find(client);
    if (it != held_acks_.end()) {
      for (HeldAcks::Held& h : it->second.acks)
        if (h.cluster_ticket == ticket) {
          h.cluster_ticket = 0;
          h.cluster_failed = !stored;
          break;
        }
      release_held_acks(client);
    }
  }
  if (cluster_held_.empty() || cluster_->backlogged()) return;
  for (auto& [id, c] : std::exchange(cluster_held_, {}))
    if (c->state == Client::State::kConnected && !c->close_requested() && !awaiting_decision(*c) &&
        !flow_.holds(*c))
      c->resume_input();
}

void Broker::hold_for_cluster(Client& client) {
  client.hold_input();
  cluster_held_[client.conn_id()] = &client;
}

void Broker::when_stored(std::function<void(bool ok)> done) {
  if (persistence_ == nullptr)
    done(true);
  else
    persistence_->barrier(std::move(done));
}

void Broker::release_held_acks(ConnId client) {
  for (;;) {
    // Looked up each turn: finishing a SUBSCRIBE may add entries (and move this one).
    auto it = held_acks_.find(client);
    if (it == held_acks_.end()) return;
    HeldAcks& held = it->second;
    if (held.acks.empty() || held.acks.front().store_wait || held.acks.front().cluster_ticket)
      return;
    HeldAcks::Held front = std::move(held.acks.front());
    held.acks.pop_front();
    Client& c = *held.client;
    if (held.acks.empty()) held_acks_.erase(it);
    if (c.state == Client::State::kClosing || c.close_requested()) return;
    const PacketType type = front.type;
    const uint16_t packet_id = front.packet_id;
    if (!front.store_ok) {
      // Not stored (the journal logged why, once per batch): no acknowledgement, so the
      // client keeps the message and sends it again when it reconnects.
      CLIENT_LOG(log::Level::kDebug, c,
                 "%s for packet id %u withheld: the message could not be stored",
                 codec::packet_type_name(type), packet_id);
    } else if (front.cluster_failed) {
      refuse_unstored(c, type, packet_id);
    } else if (front.subscribe) {
      front.subscribe->durable = true;
      finish_subscribe(c, *front.subscribe);
    } else {
      send_ack(c, type, packet_id, front.reason, front.codes);
    }
  }
}

void Broker::refuse_unstored(Client& client, PacketType type, uint16_t packet_id) {
  constexpr const char* kWhy =
      "the cluster could not store the message for its other nodes (NATS JetStream "
      "unavailable); send it again";
  // The QoS 2 id is forgotten: the message sent again is a new one, not a duplicate to
  // acknowledge undelivered.
  if (type == PacketType::kPubrec && client.session)
    client.session->end_incoming_qos2(packet_id, session_limits_);
  if (!client.v5()) {
    // 3.1.1 has no negative acknowledgement: closed unacknowledged, it sends it again.
    CLIENT_LOG(log::Level::kWarning, client,
               "closing the connection: %s for packet id %u withheld, %s",
               codec::packet_type_name(type), packet_id, kWhy);
    client.close("the cluster could not store a QoS 1/2 message");
    return;
  }
  if (mqtt5::may_send_reason_string(client, kWhy, 5, false))
    client.v5()->ack_reason_strings.emplace_back(packet_id, kWhy);
  send_ack(client, type, packet_id, codec::reason::kImplementationSpecificError, {});
}

bool Broker::route_when_durable(Client& client, std::string_view topic, std::string_view payload,
                                uint8_t qos, bool retain, uint16_t packet_id, bool deliver,
                                std::string_view props, std::optional<uint64_t> expires_at_ms,
                                uint8_t ack_reason) {
  if (persistence_ == nullptr) return false;
  auto open = route_queue_of_.find(client.conn_id());
  if (open == route_queue_of_.end()) {
    if (!deliver || qos != 2 || client.session == nullptr || client.session->clean()) return false;
    open = route_queue_of_.emplace(client.conn_id(), OpenRouteQueue{++next_route_queue_, &client})
               .first;
    RouteQueue& fresh = route_queues_[open->second.queue];
    fresh.publisher = client.conn_id();
    fresh.origin = client.session;
  }
  const uint64_t queue = open->second.queue;
  RouteQueue& q = route_queues_[queue];
  // A publisher flooding QoS 0 while the store is slow or failing must not grow the
  // broker: past this, its QoS 0 messages are dropped (at most once allows it).
  constexpr size_t kMaxQueuedBytes = 16u << 20;
  if (qos == 0 && q.bytes > kMaxQueuedBytes) {
    stats_.delivery.messages_dropped++;
    stats_.delivery.dropped_qos0_backlog++;
    return true;
  }
  q.routes.push_back({std::string(topic), std::string(payload), qos, retain, packet_id, deliver,
                      ack_reason, std::string(props), expires_at_ms});
  q.bytes += topic.size() + payload.size() + sizeof(PendingRoute);
  persistence_->barrier([this, queue](bool ok) { route_durable(queue, ok); });
  return true;
}

void Broker::route_durable(uint64_t id, bool ok) {
  MQGATE_BROKER_ENTRY();
  auto it = route_queues_.find(id);
  if (it == route_queues_.end()) return;
  RouteQueue& q = it->second;
  PendingRoute r = std::move(q.routes.front());
  q.routes.pop_front();
  // The publisher, while still connected (flow control may hold it for this message).
  auto open = route_queue_of_.find(q.publisher);
  if (open != route_queue_of_.end() && open->second.queue != id) open = route_queue_of_.end();
  Client* source = open != route_queue_of_.end() ? open->second.client : nullptr;
  const Session* q_origin = q.origin;
  q.bytes -= r.topic.size() + r.payload.size() + sizeof(PendingRoute);
  if (q.routes.empty()) {
    if (open != route_queue_of_.end()) route_queue_of_.erase(open);
    route_queues_.erase(it);
  }
  // A QoS 2 message whose id could not be stored is not routed: its PUBREC is withheld
  // too, so the publisher sends it again (and it is routed then, once).
  if (!ok && r.qos == 2) return;
  const uint64_t changes = store_changes();
  uint8_t ack_reason = r.ack_reason;
  // A resend (deliver false) was routed the first time: no ticket of its own to wait for.
  Routed routed;
  if (r.deliver) {
    routed = route(r.topic, r.payload, r.qos, r.retain, false, source, r.props, q_origin,
                   r.expires_at_ms);
    if (!routed) ack_reason = codec::reason::kNoMatchingSubscribers;
  }
  const uint64_t ticket = routed.cluster_ticket;
  if (source == nullptr || r.qos == 0) return;  // gone: it sends again when it comes back
  // After what the routing changed (queues of persistent sessions) is durable in turn.
  acknowledge(*source, r.qos == 1 ? PacketType::kPuback : PacketType::kPubrec, r.packet_id,
              store_changes() != changes, ack_reason, {}, ticket);
}

bool Broker::hold_subscribe(Client& client, SubscribeState& st) {
  if (persistence_ == nullptr || st.durable || client.session == nullptr || client.session->clean())
    return false;
  auto held = held_acks_.find(client.conn_id());
  const bool granted = std::any_of(st.codes.begin(), st.codes.end(),
                                   [](uint8_t code) { return code < codec::kSubackFailure; });
  if (!granted && held == held_acks_.end()) return false;
  if (held == held_acks_.end()) {
    held = held_acks_.try_emplace(client.conn_id()).first;
    held->second.client = &client;
  }
  HeldAcks::Held h{
      PacketType::kSuback, st.packet_id, std::make_shared<SubscribeState>(std::move(st)), 0, {}};
  h.store_wait = true;
  held->second.acks.push_back(std::move(h));
  persistence_->barrier([this, id = client.conn_id()](bool ok) { ack_durable(id, ok); });
  return true;
}

void Broker::persist_session(const Session& session, bool online) {
  int64_t expires_at = 0;
  const uint32_t expiry = session_expiry_of(session);
  if (!online && expiry != Session::kNeverExpires) {
    const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch());
    expires_at = wall.count() + int64_t{expiry} * 1000;
  }
  persistence_->put_session(session, expires_at);
}

void Broker::restore(store::State& state, uint64_t now_ms, int64_t wall_ms) {
  MQGATE_BROKER_ENTRY();
  persistence_->set_clock(now_ms, wall_ms);
  now_ms_ = std::max(now_ms_, now_ms);
  session_limits_.now_ms = now_ms_;
  // Message Expiry is stored as wall-clock time: the time the broker was down counts.
  auto expires_at = [&](int64_t wall) -> std::optional<uint64_t> {
    if (wall == 0) return std::nullopt;
    return persistence_->loop_of(wall);
  };
  std::unordered_map<uint64_t, MessagePtr> bodies;
  bodies.reserve(state.messages.size());
  for (store::MessageRecord& m : state.messages) {
    MessagePtr msg =
        Message::create(m.topic, m.payload, m.qos, false, m.props, expires_at(m.expires_at_ms));
    msg->set_durable_id(m.id);
    bodies.emplace(m.id, std::move(msg));
    std::string().swap(m.payload);  // one copy at a time
  }
  state.messages.clear();
  state.messages.shrink_to_fit();

  // Sessions, each with its own expiry (5.0) or the broker's (3.1.1), whichever applies
  // now (the broker's cap may have changed).
  size_t expired = 0;
  for (const store::SessionRecord& r : state.sessions) {
    if (sessions_->find(r.client_id) != nullptr) continue;
    Session* s = sessions_->create(r.client_id, false);
    s->set_protocol_level(r.protocol_level);
    if (r.protocol_level == codec::kProtocolLevel5)
      s->set_expiry_interval(applied_session_expiry(r.expiry_interval.value_or(0)));
    const uint32_t expiry = session_expiry_of(*s);
    if (expiry != Session::kNeverExpires && r.expires_at_ms != 0 && r.expires_at_ms <= wall_ms) {
      sessions_->remove(s);
      persistence_->remove_session_record(r.client_id);
      ++expired;
      continue;
    }
    persistent_sessions_++;
    s->set_owner(r.owner == *anonymous_identity_ ? anonymous_identity_
                                                 : std::make_shared<const std::string>(r.owner));
    if (!r.cert_chain.empty())
      s->set_certificate(SessionCertificate::restore(r.cert_listener, r.cert_chain));
    // Offline since the restart when it was online (or has no expiry): the stored expiry
    // is absolute, so the time the broker was down counts.
    s->detach(now_ms);
    if (expiry == Session::kNeverExpires) continue;
    uint64_t remaining = uint64_t{expiry} * 1000;
    if (r.expires_at_ms != 0)
      remaining = std::min(remaining, static_cast<uint64_t>(r.expires_at_ms - wall_ms));
    offline_.schedule(s, now_ms + remaining);
  }

  size_t subscriptions = 0;
  for (const store::SubscriptionRecord& r : state.subscriptions) {
    Session* s = sessions_->find(r.client_id);
    if (s == nullptr) continue;  // of an expired session (removed with it)
    index_subscribe(*s, r.filter, r.qos);
    s->add_subscription(r.filter, r.qos, r.options, r.subscription_id);
    ++subscriptions;
  }
  size_t queued = 0, dropped = 0;
  for (const store::OutgoingRecord& r : state.outgoing) {
    Session* s = sessions_->find(r.client_id);
    if (s == nullptr) continue;
    MessagePtr msg;
    if (r.state != store::OutgoingRecord::State::kAwaitPubcomp) {
      auto b = bodies.find(r.message_id);
      if (b == bodies.end()) {
        // Cannot happen with this broker's writes; never guess a body.
        persistence_->remove_outgoing_record(r.client_id, r.seq);
        ++dropped;
        continue;
      }
      msg = b->second;
      msg->add_durable_ref();
    }
    s->restore_outgoing(std::move(msg), static_cast<uint32_t>(r.seq), r.qos, r.retain, r.packet_id,
                        static_cast<SessionJournal::OutState>(r.state));
    ++queued;
  }
  if (!shared_.empty())
    for (const store::SessionRecord& r : state.sessions)
      if (Session* s = sessions_->find(r.client_id)) retag_shared_messages(*s);
  for (const store::IncomingQos2Record& r : state.incoming_qos2)
    if (Session* s = sessions_->find(r.client_id)) s->restore_incoming_qos2(r.packet_id);
  for (auto& [id, msg] : bodies)
    if (msg->durable_refs() == 0)
      persistence_->remove_message_record(id, !msg->props().empty());  // orphaned
  size_t retained = 0;
  size_t retained_expired = 0;
  for (const store::RetainedRecord& r : state.retained) {
    if (r.expires_at_ms != 0 && r.expires_at_ms <= wall_ms) {
      persistence_->remove_retained(r.topic);  // its Message Expiry passed while down
      ++retained_expired;
      continue;
    }
    MessagePtr msg =
        Message::create(r.topic, r.payload, r.qos, true, r.props, expires_at(r.expires_at_ms));
    if (router_.retain(msg, limits_.max_retained_messages, limits_.max_retained_bytes) ==
        Router::RetainResult::kStored) {
      track_retained_expiry(*msg);
      ++retained;
    } else
      LOG_WARN(
          "stored retained message on %s not restored: over max_retained_messages or "
          "max_retained_bytes",
          log::quote(r.topic).c_str());
  }
  LOG_INFO(
      "persistence: restored %zu persistent session%s (%zu expired while the broker was down), "
      "%zu subscription%s, %zu queued or in-flight message%s, %zu retained message%s",
      sessions_->size(), sessions_->size() == 1 ? "" : "s", expired, subscriptions,
      subscriptions == 1 ? "" : "s", queued, queued == 1 ? "" : "s", retained,
      retained == 1 ? "" : "s");
  if (retained_expired)
    LOG_INFO("persistence: %zu retained message%s expired while the broker was down",
             retained_expired, retained_expired == 1 ? "" : "s");
  restore_wills(state.wills);
  if (dropped)
    LOG_ERROR("persistence: %zu queued message%s referred to a missing message body and %s dropped",
              dropped, dropped == 1 ? "" : "s", dropped == 1 ? "was" : "were");
  note_expiry_due(now_ms);
}

void Broker::restore_wills(std::vector<store::WillRecord>& wills) {
  size_t waiting = 0, published = 0;
  for (store::WillRecord& r : wills) {
    MessagePtr msg = Message::create(r.topic, r.payload, r.qos, r.retain, r.props);
    Session* s = sessions_->find(r.client_id);
    if (s == nullptr) {
      // Its session ended while the broker was down: the will is owed now.
      persistence_->remove_will_record(r.client_id);
      route_will(msg, r.expiry_interval);
      ++published;
      continue;
    }
    DelayedWill& w = delayed_wills_[s];
    w.msg = std::move(msg);
    w.due_ms = persistence_->loop_of(r.due_at_ms);  // past: published at the first check
    w.expiry = r.expiry_interval;
    w.client_id = r.client_id;
    will_order_.emplace(w.due_ms, s);
    ++waiting;
  }
  if (waiting + published)
    LOG_INFO(
        "persistence: %zu delayed will%s restored, %zu published (their session ended "
        "while the broker was down)",
        waiting, waiting == 1 ? "" : "s", published);
}

}  // namespace mqgate

namespace mqgate {

namespace {
// Far from the cap a message needs no counting of the rows it adds: this much room
// covers the queue entries of ~10,000 persistent subscribers.
constexpr uint64_t kStoreSlack = 1u << 20;
}  // namespace

bool Broker::store_fits(uint64_t bytes) const {
  const std::optional<uint64_t> room = persistence_ ? persistence_->room() : std::nullopt;
  return !room || bytes <= *room;
}

bool Broker::refuse_unstorable(Client& client, std::string_view topic, std::string_view payload,
                               std::string_view props, uint8_t qos, bool retain,
                               uint16_t packet_id) {
  if (persistence_ == nullptr || qos == 0) return false;  // QoS 0: store_retained decides
  const std::optional<uint64_t> room = persistence_->room();
  if (!room) return false;
  const uint64_t body = store::message_bytes(topic, payload, props);
  if (*room >= body + kStoreSlack) return false;
  // Near the cap: count what this message would really add, and no further than the room
  // (a fan-out to many persistent sessions is not walked twice).
  uint64_t need = retain && !payload.empty() ? body : 0;
  bool queued = false;
  for (const RouteTarget* t : router_.matches(topic)) {
    if (need > *room) break;
    const auto& s = *static_cast<const Session*>(t);
    if (s.clean() || t->match_qos == 0) continue;
    if (!queued) need += body;  // one body, shared by every queue entry
    queued = true;
    need += store::queue_entry_bytes(s.client_id());
  }
  if (need <= *room) return false;
  stats_.store_refused++;
  log_store_full(&client, topic, need);
  if (client.v5()) {
    constexpr std::string_view kWhy = "the broker's store is full";
    if (mqtt5::may_send_reason_string(client, kWhy, 5, false))
      client.v5()->ack_reason_strings.emplace_back(packet_id, std::string(kWhy));
    // Behind this client's messages still waiting to be routed, in order.
    if (route_when_durable(client, topic, {}, qos, false, packet_id, false, {}, std::nullopt,
                           codec::reason::kQuotaExceeded))
      return true;
    acknowledge(client, qos == 1 ? PacketType::kPuback : PacketType::kPubrec, packet_id, false,
                codec::reason::kQuotaExceeded);
    return true;
  }
  // 3.x cannot say no: close without acknowledging. The QoS 2 packet id is forgotten, or
  // the resend would be taken for a duplicate and acknowledged undelivered.
  if (qos == 2 && client.session) client.session->end_incoming_qos2(packet_id, session_limits_);
  mqtt5::disconnect(client, codec::reason::kQuotaExceeded, "store full",
                    "the message does not fit in the broker's store");
  return true;
}

void Broker::log_store_full(const Client* client, std::string_view topic, uint64_t bytes) {
  // A WARNING for the first refusal, then at most one a minute (an attacker alternating
  // big and small messages must not flood the log); the rest are counted.
  const bool warn = store_full_logged_ms_ == 0 || now_ms_ >= store_full_logged_ms_ + 60'000;
  const log::Level level = warn ? log::Level::kWarning : log::Level::kDebug;
  if (warn) store_full_logged_ms_ = std::max<uint64_t>(now_ms_, 1);
  const uint64_t room = persistence_->room().value_or(0);
  constexpr const char* kFormat =
      "persistence: message to %s refused: it needs about %" PRIu64 " bytes of the store, %" PRIu64
      " are left under [persistence] max_bytes (%" PRIu64
      " refused in all: mqgate_store_refused_total)";
  if (client)
    CLIENT_LOG(level, *client, kFormat, log::quote(topic).c_str(), bytes, room,
               stats_.store_refused);
  else if (log::enabled(level))
    log::write(level, kFormat, log::quote(topic).c_str(), bytes, room, stats_.store_refused);
}

}  // namespace mqgate
