// The broker's side of shared subscriptions (MQTT 5.0 section 4.8.2): which member of a
// group gets a message, and moving a member's unacknowledged messages to another member
// when its connection is lost. The groups themselves are shared_subscriptions.hpp's.
//
// Distribution: round robin over the group's members, skipping those that could not
// take the message now (offline; past flow control's high-water mark; for QoS 1/2, a
// full Receive Maximum window or messages already queued) while another can. Only when
// none can does the next member in turn get it anyway: it is queued in that member's
// session (or, QoS 0 to an offline member, dropped as for any subscription).
#include <algorithm>
#include <cinttypes>

#include "broker/broker.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/topic.hpp"

namespace mqgate {

namespace reason = codec::reason;
using Group = SharedSubscriptions::Group;
using Member = SharedSubscriptions::Member;

bool Broker::index_subscribe(Session& session, std::string_view filter, uint8_t qos,
                             uint64_t* cluster_wait) {
  SharedFilter parts;
  // An invalid `$share/` filter is never accepted now; one loaded from a store written
  // when it was an ordinary filter stays one.
  if (parse_shared_filter(filter, parts) != ShareParse::kValid) {
    if (router_.subscribe(&session, filter, qos) && cluster_) {
      const uint64_t wait = cluster_->add_interest(filter);
      if (cluster_wait) *cluster_wait = std::max(*cluster_wait, wait);
    }
    return true;
  }
  return shared_.subscribe(&session, filter, parts, qos) != SharedSubscriptions::AddResult::kFull;
}

bool Broker::index_unsubscribe(Session& session, std::string_view filter) {
  SharedFilter parts;
  if (parse_shared_filter(filter, parts) != ShareParse::kValid) {
    const bool had = router_.unsubscribe(&session, filter);
    if (had && cluster_) cluster_->remove_interest(filter);
    return had;
  }
  const uint16_t id = shared_.unsubscribe(&session, filter, parts);
  if (id == 0) return false;
  session.untag_shared(id);  // what it holds stays with it; the id may be reused
  return true;
}

bool Broker::refuse_invalid_share(Client& client, SubscribeState& s, std::string_view filter) {
  SharedFilter parts;
  if (parse_shared_filter(filter, parts) != ShareParse::kInvalid) return false;
  CLIENT_LOG(
      log::Level::kInfo, client,
      "subscription to %s refused (%s): a shared subscription is $share/<ShareName>/<filter>, "
      "the ShareName not empty and without '+' or '#'",
      log::quote(filter).c_str(), s.v5 ? "0x8F" : "0x80");
  s.codes.push_back(s.v5 ? reason::kTopicFilterInvalid : codec::kSubackFailure);
  return true;
}

bool Broker::member_usable(const Session& session, uint8_t qos) const {
  const Client* client = session.client();
  if (client == nullptr || session.removed() || flow_.is_congested(session)) return false;
  if (client->pending_output() > limits_.max_outgoing_bytes) return false;
  if (qos == 0) return true;
  return session.queued_count() == 0 &&
         session.inflight_count() < mqtt5::send_window(client, limits_.max_inflight_messages);
}

Member* Broker::choose_member(Group& group, uint8_t qos, const Session* exclude) {
  return shared_.choose(group, exclude, [&](const Member& m) {
    return member_usable(*m.session, std::min(qos, m.qos));
  });
}

Member* Broker::choose_receiving_member(Group& group, uint8_t qos, std::string_view topic,
                                        const Session* exclude) {
  // A member the plugins do not let receive this message is passed over like one that
  // cannot take it now; when none can take it, the next in turn still has to be allowed.
  // Each member is asked at most once (a question may reach the plugins every time).
  const Member* accepted = nullptr;
  const Member* passed_over = nullptr;  // the first one: choose()'s fallback
  bool passed_over_denied = false;      // ...asked (it was usable), and denied
  Member* m = shared_.choose(group, exclude, [&](const Member& c) {
    const bool usable = member_usable(*c.session, std::min(qos, c.qos));
    if (usable && member_may_receive(*c.session, group.full_filter, topic, qos)) {
      accepted = &c;
      return true;
    }
    if (passed_over == nullptr) {
      passed_over = &c;
      passed_over_denied = usable;
    }
    return false;
  });
  if (m == nullptr || m == accepted) return m;
  if (passed_over_denied || !member_may_receive(*m->session, group.full_filter, topic, qos)) {
    stats_.deliveries_denied++;
    return nullptr;
  }
  return m;
}

void Broker::deliver_shared(Group& group, Member& member, uint8_t qos, const MessagePtr& msg,
                            Client* source) {
  Session& session = *member.session;
  const uint8_t q = std::min(qos, member.qos);  // [MQTT-3.8.4-6]
  if (q == 0 && flow_.sheds_qos0(session)) {    // slow_subscriber = "drop_qos0" applied
    stats_.delivery.messages_dropped++;
    flow_.count_shed(session);
    return;
  }
  const uint64_t dropped_before = stats_.delivery.messages_dropped;
  const Session::Subscription* sub = session.find_subscription(group.full_filter);
  // Retain As Published applies as to any subscription [MQTT-3.3.1-12, -13]; the
  // Subscription Identifier is the member's own [MQTT-3.3.4-3].
  const bool retain = sub && (sub->flags & Session::kRetainAsPublished) && msg->retain();
  const uint32_t id = sub ? sub->id : 0;
  const MessagePtr copy = id == 0 ? msg : mqtt5::with_subscription_ids(*msg, {&id, 1});
  // Offline, a member whose deliveries are checked has the message checked when it is back.
  const bool unchecked = session.client() == nullptr && session.checks_deliveries(rules_epoch_);
  session.deliver(copy, q, retain, session_limits_, limits_.max_outgoing_bytes, stats_.delivery,
                  q > 0 ? group.id : 0, unchecked);
  after_delivery(session, q, dropped_before, source);
}

bool Broker::route_shared(std::string_view topic, std::string_view payload, uint8_t qos,
                          MessagePtr& msg, Client* source) {
  const std::vector<RouteTarget*>& groups = shared_.matches(topic);
  if (groups.empty()) return false;
  if (!msg) msg = Message::create(topic, payload, qos, false);
  // One member of each group: at most one delivery per group, so no fan-out slicing.
  for (RouteTarget* t : groups) {
    Group& group = *static_cast<Group*>(t);
    if (Member* m = choose_receiving_member(group, qos, topic))
      deliver_shared(group, *m, qos, msg, source);
  }
  return true;
}

void Broker::move_shared_messages(Session& session, bool session_ends) {
  if (session.inflight_count() + session.queued_count() == 0) return;
  // Only messages that have somewhere to go move; the others stay with the session.
  auto elsewhere = [&](uint16_t id) {
    const Group* g = shared_.group(id);
    if (g == nullptr) return false;
    return std::any_of(g->members.begin(), g->members.end(), [&](const Member& m) {
      return m.session != &session && !m.session->removed() &&
             (session_ends || m.session->client() != nullptr);
    });
  };
  std::vector<Session::Taken> taken = session.take_shared(elsewhere, stats_.delivery);
  if (taken.empty()) return;
  for (Session::Taken& t : taken) {
    Group* g = shared_.group(t.share);
    // Only to a member that may receive it (none: it is withheld, as it would have been
    // had it been published now).
    Member* m = g ? choose_receiving_member(*g, t.msg->qos(), t.msg->topic(), &session) : nullptr;
    // A new message for that member (new packet id, DUP 0): it never saw it. Its QoS is
    // the publication's, limited by that member's subscription.
    if (m != nullptr)
      deliver_shared(*g, *m, t.msg->qos(), without_subscription_ids(t.msg), nullptr);
  }
  // Out of this session's store entries only now that the new ones exist: a crash in
  // between may deliver one twice, never lose one.
  session.release_taken(taken, session_limits_);
  LOG_INFO("client %s: %zu message%s of shared subscriptions moved to other members (%s)",
           log::quote(session.client_id()).c_str(), taken.size(), taken.size() == 1 ? "" : "s",
           session_ends ? "its session ended" : "its connection was lost");
}

void Broker::retag_shared_messages(Session& session) {
  if (session.inflight_count() + session.queued_count() == 0) return;
  std::vector<std::pair<std::string_view, const Group*>> shared;  // (filter part, group)
  std::vector<std::string_view> plain;
  session.for_each_subscription([&](const std::string& filter, uint8_t) {
    SharedFilter parts;
    if (parse_shared_filter(filter, parts) != ShareParse::kValid) {
      plain.push_back(filter);
    } else if (const Group* g = shared_.find(filter)) {
      shared.emplace_back(parts.filter, g);
    }
  });
  if (shared.empty()) return;
  // The store does not say which subscription a message came through: a message that
  // only a shared subscription of the session matches came through it.
  session.retag_shared([&](const Message& m) -> uint16_t {
    for (std::string_view f : plain)
      if (topic_matches(f, m.topic())) return 0;
    for (const auto& [f, g] : shared)
      if (topic_matches(f, m.topic())) return g->id;
    return 0;
  });
}

}  // namespace mqgate
