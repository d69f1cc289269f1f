// Checking deliveries: the plugins' RECEIVE question for messages routed through an
// existing subscription (docs/writing-plugins.md, "Checking deliveries").
//
// A subscription is decided once, at SUBSCRIBE: most never need asking again. One whose
// plugin asked for checks (an ACL deny rule inside a wildcard filter), or whose session
// was decided under rules older than the last reload, has each delivery asked about
// first; answers are remembered per subscription and topic when the plugins allow it.
// After a reload the SUBSCRIBE question is asked again for every connected client's
// subscriptions, in slices, which restores the fast path where the new rules allow.
#include <algorithm>

#include "broker/broker.hpp"
#include "client/mqtt5.hpp"

namespace mqgate {

namespace {

// What the plugins were asked at SUBSCRIBE: a shared subscription's Topic Filter.
std::string_view authorised_filter(std::string_view filter) {
  SharedFilter parts;
  if (filter.starts_with("$share/") && parse_shared_filter(filter, parts) == ShareParse::kValid)
    return parts.filter;
  return filter;
}

}  // namespace

void Broker::deliver_checked(Session& session, uint8_t q, std::string_view topic,
                             std::string_view payload, uint8_t qos, MessagePtr& msg,
                             const Session* origin) {
  Client* client = session.client();
  const bool own = &session == origin;
  Session::Delivery d;
  bool withheld = false;
  if (client == nullptr) {
    // No client to ask about: queued unchecked, and asked about when it is back.
    d = session.match_options(topic, own);
  } else {
    const bool stale = !session.decided_at(rules_epoch_);
    d = session.match_checked(
        topic, own, stale, [&](const std::string& filter, const Session::Subscription& sub) {
          const bool ok =
              receive_allowed(session, *client, filter, sub, topic, std::min(qos, sub.qos), stale);
          withheld |= !ok;
          return ok;
        });
  }
  if (d.skip) {
    if (withheld) stats_.deliveries_denied++;
    return;
  }
  q = std::min(q, d.qos);
  if (!msg) msg = Message::create(topic, payload, qos, false);
  const bool retain = d.retain_as_published && msg->retain();  // [MQTT-3.3.1-12, -13]
  const MessagePtr copy = d.ids.empty() ? msg : mqtt5::with_subscription_ids(*msg, d.ids);
  session.deliver(copy, q, retain, session_limits_, limits_.max_outgoing_bytes, stats_.delivery, 0,
                  client == nullptr);
}

bool Broker::receive_allowed(Session& session, Client& client, const std::string& filter,
                             const Session::Subscription& sub, std::string_view topic, uint8_t qos,
                             bool stale) {
  // Answers are remembered only where the plugins said they may be, and never while
  // the subscription is asked about only because the rules changed.
  if (!stale && sub.check == kCheckPerTopic)
    if (std::optional<bool> known = session.remembered(&sub, topic, rules_epoch_)) return *known;
  AuthRequest req;
  req.topic = topic;
  req.action = AuthAction::kReceive;
  req.qos = qos;
  req.filter = authorised_filter(filter);
  req.live = true;
  req.delivery_check = stale ? uint8_t{kCheckNone} : sub.check;
  stats_.delivery_checks++;
  const AuthResult r = hooks_.check(client, req);
  if (!r.allowed)
    CLIENT_LOG(log::Level::kDebug, client, "message on %s withheld from its subscription %s: %s",
               log::quote(topic).c_str(), log::quote(filter).c_str(), r.reason.c_str());
  const uint8_t check = r.allowed && !stale ? r.delivery_check : sub.check;
  if (!stale && check == kCheckPerTopic) session.remember(&sub, topic, rules_epoch_, r.allowed);
  // The plugins may stop (or change) the questions; `sub` is the session's own entry.
  if (!stale && check != sub.check) session.set_delivery_check(filter, check);
  return r.allowed;
}

bool Broker::member_may_receive(Session& session, const std::string& filter, std::string_view topic,
                                uint8_t qos) {
  if (!session.checks_deliveries(rules_epoch_)) return true;
  Client* client = session.client();
  const Session::Subscription* sub = session.find_subscription(filter);
  if (client == nullptr || sub == nullptr) return true;  // offline: checked when it is back
  const bool stale = !session.decided_at(rules_epoch_);
  if (!stale && sub->check == kCheckNone) return true;
  return receive_allowed(session, *client, filter, *sub, topic, std::min(qos, sub->qos), stale);
}

void Broker::check_resumed(Client& client, Session& session) {
  const bool stale = !session.decided_at(rules_epoch_);
  // Each queued message is asked about through the first of the session's subscriptions
  // that matches it (none left: through its own topic, as it was routed before an
  // UNSUBSCRIBE, which does not take back what was queued).
  const size_t dropped = session.check_queued(
      [&](const Message& m) {
        const std::string* through = nullptr;
        const Session::Subscription* sub = nullptr;
        session.for_each_subscription([&](const std::string& filter, uint8_t) {
          if (through == nullptr && topic_matches(authorised_filter(filter), m.topic())) {
            through = &filter;
            sub = session.find_subscription(filter);
          }
        });
        if (through != nullptr)
          return receive_allowed(session, client, *through, *sub, m.topic(), m.qos(), true);
        AuthRequest req;
        req.topic = m.topic();
        req.action = AuthAction::kReceive;
        req.qos = m.qos();
        req.filter = m.topic();
        req.live = true;
        stats_.delivery_checks++;
        return hooks_.check(client, req).allowed;
      },
      session_limits_, stats_.delivery);
  if (dropped > 0) {
    stats_.deliveries_denied += dropped;
    CLIENT_LOG(log::Level::kInfo, client,
               "%zu message%s queued while it was offline withheld: the plugins do not let it "
               "receive them",
               dropped, dropped == 1 ? "" : "s");
  }
  if (stale) queue_redecision(client);
}

void Broker::rules_reloaded() {
  MQGATE_BROKER_ENTRY();
  if (++rules_epoch_ == 0) {
    // After 65,535 reloads the numbers come round: no session may look decided now, nor
    // an answer remembered 65,535 reloads ago current.
    rules_epoch_ = 1;
    sessions_->for_each([](Session& s) {
      s.mark_decided(0);
      s.forget_answers();
    });
  }
  size_t clients = 0;
  sessions_->for_each([&](Session& s) {
    if (s.client() != nullptr && s.subscription_count() > 0) {
      queue_redecision(*s.client());
      ++clients;
    }
  });
  if (clients > 0)
    LOG_INFO(
        "reload: the subscriptions of %zu connected client%s are being decided again under "
        "the plugins' new rules; until each is, its deliveries are checked one by one",
        clients, clients == 1 ? "" : "s");
}

void Broker::queue_redecision(Client& client) {
  auto [it, created] = redecisions_.try_emplace(client.conn_id());
  Redecision& r = it->second;
  r.client = &client;
  r.filters.clear();  // taken at its first turn, under the rules of then
  r.next = 0;
  if (created) redecision_order_.push_back(client.conn_id());
}

size_t Broker::run_redecisions(size_t budget) {
  size_t spent = 0;
  while (!redecision_order_.empty() && spent < budget) {
    auto it = redecisions_.find(redecision_order_.front());
    if (it == redecisions_.end()) {  // closed meanwhile
      redecision_order_.pop_front();
      continue;
    }
    Redecision& r = it->second;
    Client& client = *r.client;
    Session* session = client.session;
    if (session == nullptr) {
      redecisions_.erase(it);
      redecision_order_.pop_front();
      continue;
    }
    if (r.filters.empty() || r.epoch != rules_epoch_) {
      // First turn, or the rules changed again: start over under the current ones.
      r.filters.clear();
      r.filters.reserve(session->subscription_count());
      session->for_each_subscription(
          [&](const std::string& f, uint8_t) { r.filters.push_back(f); });
      r.next = 0;
      r.epoch = rules_epoch_;
      spent += 1 + r.filters.size() / 64;  // the snapshot's own cost
    }
    for (; r.next < r.filters.size() && spent < budget; ++r.next, ++spent) {
      const std::string& filter = r.filters[r.next];
      const Session::Subscription* sub = session->find_subscription(filter);
      if (sub == nullptr) continue;  // unsubscribed meanwhile
      session->set_delivery_check(filter, redecide(client, filter, sub->qos));
    }
    if (r.next < r.filters.size()) break;  // the budget is spent: go on in the next slice
    session->mark_decided(r.epoch);
    redecisions_.erase(it);
    redecision_order_.pop_front();
  }
  return spent;
}

uint8_t Broker::redecide(Client& client, std::string_view filter, uint8_t qos) {
  AuthRequest req;
  req.topic = authorised_filter(filter);
  req.action = AuthAction::kSubscribe;
  req.qos = qos;
  const AuthResult r = hooks_.check(client, req);
  if (r.allowed) return r.delivery_check;
  // Kept (the client was told it was granted), but each of its messages is asked about:
  // under these rules they are all refused; a later reload may allow them again.
  CLIENT_LOG(log::Level::kInfo, client,
             "subscription to %s is no longer allowed by the plugins' new rules (%s): its "
             "messages are withheld",
             log::quote(filter).c_str(), r.reason.c_str());
  return kCheckPerTopic;
}

}  // namespace mqgate
