// SUBSCRIBE (filters decided one by one: by the broker's limits, the plugins, possibly
// deferred or sliced) and UNSUBSCRIBE.
#include "broker/broker.hpp"

#include <algorithm>
#include <cinttypes>

#include "broker/persistence.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::PacketType;
namespace reason = codec::reason;

namespace {

// A SUBSCRIBE or UNSUBSCRIBE whose SUBACK or UNSUBACK, without properties, would exceed the
// client's Maximum Packet Size gets no answer it could take [MQTT-3.1.2-25]: it is refused
// before any filter is acted on, with DISCONNECT 0x95 (4 bytes: it fits, as the CONNACK
// did), rather than left unanswered with its subscriptions made.
bool answer_too_large(Client& client, PacketType answer, size_t filters) {
  if (mqtt5::reason_list_fits(client, filters)) return false;
  CLIENT_LOG(log::Level::kWarning, client,
             "the %s to %zu filters would exceed the client's Maximum Packet Size (%" PRIu32
             "); closing",
             codec::packet_type_name(answer), filters, client.v5()->max_packet_size);
  mqtt5::disconnect(client, reason::kPacketTooLarge,
                    "the answer would exceed the client's Maximum Packet Size");
  return true;
}

}  // namespace

void Broker::handle_subscribe(Client& client, const codec::Subscribe& s) {
  if (answer_too_large(client, PacketType::kSuback, s.topics.size())) return;
  for (const auto& t : s.topics) {
    if (too_deep(client, t.filter)) return;
    if (t.no_local && t.filter.starts_with("$share/")) {
      protocol_violation(client, "No Local on a shared subscription");  // [MQTT-3.8.3-4]
      return;
    }
  }
  SubscribeState state;
  state.packet_id = s.packet_id;
  state.v5 = is_v5(client);
  if (state.v5 && !s.props.subscription_identifiers.empty())
    state.subscription_id = s.props.subscription_identifiers.front();
  state.topics.reserve(s.topics.size());
  for (const auto& t : s.topics) {
    state.topics.emplace_back(std::string(t.filter), t.qos);
    if (state.v5) {
      state.retain_handling.push_back(t.retain_handling);
      state.options.push_back(
          static_cast<uint8_t>((t.no_local ? Session::kNoLocal : 0) |
                               (t.retain_as_published ? Session::kRetainAsPublished : 0)));
    }
  }
  state.codes.reserve(s.topics.size());
  const Progress progress = continue_subscribe(client, state);
  if (progress != Progress::kDone) {
    park_subscribe(client, std::move(state), progress);  // SUBACK once every filter is decided
    return;
  }
  finish_subscribe(client, state);
}

void Broker::park_subscribe(Client& client, SubscribeState s, Progress progress) {
  s.sliced = progress == Progress::kSliced;
  await(client, Awaiting{std::move(s)});
  if (progress == Progress::kSliced) sliced_subscribes_.push_back(client.conn_id());
}

size_t Broker::run_sliced_subscribes(size_t budget) {
  size_t spent = 0;
  for (size_t n = sliced_subscribes_.size(); n > 0 && spent < budget; --n) {
    const ConnId id = sliced_subscribes_.front();
    sliced_subscribes_.pop_front();
    auto it = awaiting_.find(id);
    if (it == awaiting_.end()) continue;  // closed meanwhile
    Client* client = it->second.client;
    auto* s = std::get_if<SubscribeState>(&it->second.state);
    if (s == nullptr || !s->sliced) continue;  // waits for a plugin's decision now
    s->sliced = false;
    const size_t before = s->next;
    const Progress progress = continue_subscribe(*client, *s, std::min(budget - spent, kSliceBudget / 2));
    spent += std::max<size_t>(1, s->next - before);
    if (progress == Progress::kSliced) {
      s->sliced = true;
      sliced_subscribes_.push_back(id);
    } else if (progress == Progress::kDone) {
      SubscribeState done = std::move(*s);
      awaiting_.erase(it);
      finish_subscribe(*client, done);
      resume_if_free(*client);
    }
    // kDeferred: stays in awaiting_ until the plugin's decision (on_decided) arrives.
  }
  return spent;
}

Broker::Progress Broker::continue_subscribe(Client& client, SubscribeState& s, size_t budget) {
  Session& session = *client.session;
  for (; s.next < s.topics.size(); ++s.next) {
    if (budget-- == 0) return Progress::kSliced;
    const auto& [filter, qos] = s.topics[s.next];
    if (session.subscription_count() >= limits_.max_subscriptions_per_client &&
        !session.has_subscription(filter)) {
      ++s.over_limit;
      s.codes.push_back(s.v5 ? reason::kQuotaExceeded : codec::kSubackFailure);
      continue;
    }
    if (refuse_invalid_share(client, s, filter)) continue;
    AuthRequest req;
    // A shared subscription is authorised on its Topic Filter: it gets (some of) the
    // messages that filter would, so the same ACL rules apply.
    SharedFilter shared;
    req.topic = parse_shared_filter(filter, shared) == ShareParse::kValid ? shared.filter : filter;
    req.action = AuthAction::kSubscribe;
    req.qos = qos;
    req.may_defer = true;
    s.asked_epoch = rules_epoch_;
    AuthResult auth = hooks_.check(client, req);
    if (auth.pending) return Progress::kDeferred;
    subscribe_decided(client, s, auth);
  }
  return Progress::kDone;
}

void Broker::subscribe_decided(Client& client, SubscribeState& s, const AuthResult& auth) {
  Session& session = *client.session;
  const auto& [filter, qos] = s.topics[s.next];
  if (!auth.allowed) {
    CLIENT_LOG(log::Level::kInfo, client, "subscription to %s denied: %s",
               log::quote(filter).c_str(), auth.reason.c_str());
    s.codes.push_back(s.v5 ? (auth.reason_code != 0 ? auth.reason_code : reason::kNotAuthorized)
                           : codec::kSubackFailure);
    if (s.v5 && s.reason_string.empty()) s.reason_string = auth.reason_string;
    return;
  }
  if (!index_subscribe(session, filter, qos, &s.cluster_wait)) {
    CLIENT_LOG(log::Level::kWarning, client,
               "subscription to %s refused: %zu shared subscription groups exist (the most "
               "there can be)",
               log::quote(filter).c_str(), SharedSubscriptions::kMaxGroups);
    s.codes.push_back(s.v5 ? reason::kQuotaExceeded : codec::kSubackFailure);
    return;
  }
  // No retained messages on a shared subscription (3.3.1.3: only "when a new Non-shared
  // Subscription is made").
  if (filter.starts_with("$share/")) s.no_retained.push_back(s.next);
  // A session without subscriptions has nothing decided under older rules. An answer
  // asked for before a reload (deferred meanwhile) may be one under the old rules: the
  // session's deliveries are checked until its subscriptions are decided again.
  const bool asked_before_reload = s.asked_epoch != rules_epoch_;
  if (asked_before_reload)
    session.mark_decided(0);
  else if (session.subscription_count() == 0)
    session.mark_decided(rules_epoch_);
  const bool added = session.add_subscription(filter, qos, s.v5 ? s.options[s.next] : 0,
                                              s.v5 ? s.subscription_id : 0, auth.delivery_check);
  if (asked_before_reload) queue_redecision(client);
  if (s.v5) {
    // Retain Handling 1: retained messages only for a new subscription; 2: never.
    const uint8_t rh = s.retain_handling[s.next];
    if (rh == 2 || (rh == 1 && !added)) s.no_retained.push_back(s.next);
  }
  if (persistence_ && !session.clean()) {
    if (s.v5)
      persistence_->put_subscription(session, filter, qos, s.options[s.next], s.subscription_id);
    else
      persistence_->put_subscription(session, filter, qos);
  }
  s.codes.push_back(qos);
  CLIENT_LOG(log::Level::kDebug, client, "subscribed to %s (QoS %u)", log::quote(filter).c_str(),
             qos);
}

void Broker::finish_subscribe(Client& client, SubscribeState& st) {
  if (cluster_ && st.cluster_wait > cluster_->settled()) {
    // SUBACK once the other nodes know the new filters: a message published on any node
    // after it reaches this subscriber. The client's input waits with it.
    cluster_waits_.push_back(client.conn_id());
    st.waits_for_cluster = true;
    await(client, Awaiting{std::move(st)});
    return;
  }
  if (hold_subscribe(client, st)) return;  // SUBACK once the subscriptions are durable
  Session& session = *client.session;
  const std::vector<uint8_t>& codes = st.codes;
  const size_t over_limit = st.over_limit;
  if (over_limit > 0) {
    stats_.subscriptions_refused += over_limit;
    CLIENT_LOG(log::Level::kWarning, client,
               "%zu subscription%s refused (0x80): the client has %zu, max_subscriptions_per_client "
               "is %u",
               over_limit, over_limit == 1 ? "" : "s", session.subscription_count(),
               limits_.max_subscriptions_per_client);
  }
  if (st.v5 && mqtt5::may_send_reason_string(client, st.reason_string, 5 + codes.size(), false)) {
    codec::Properties props;
    props.reason_string = st.reason_string;
    codec::encode_suback_v5(client.out(), st.packet_id, codes, &props);
  } else if (st.v5)
    codec::encode_suback_v5(client.out(), st.packet_id, codes);
  else
    codec::encode_suback(client.out(), st.packet_id, codes);
  // Retained messages follow the SUBACK, for every filter granted (again, when a
  // subscription is replaced [MQTT-3.8.4-3]). A first slice goes at once; what a wide
  // filter matches beyond it is sent in later slices (run_slice), so one SUBSCRIBE
  // never holds the loop.
  for (size_t i = 0; i < st.topics.size(); ++i) {
    if (codes[i] < codec::kSubackFailure &&
        std::find(st.no_retained.begin(), st.no_retained.end(), i) == st.no_retained.end())
      queue_retained(client, st.topics[i].first, codes[i]);
  }
  auto job = retained_jobs_.find(client.conn_id());
  if (job == retained_jobs_.end()) return;
  size_t budget = kSliceBudget / 4;
  if (!run_retained_job(client, job->second, budget)) return;
  // Done with its SUBACK (the usual case): its turn goes too, if it is the last one
  // queued, as no slice may come to drop it (one SUBSCRIBE after another would pile up
  // stale turns). One left elsewhere is dropped by the next slice.
  const std::pair<ConnId, uint64_t> turn{client.conn_id(), job->second.serial};
  if (!retained_order_.empty() && retained_order_.back() == turn) retained_order_.pop_back();
  retained_jobs_.erase(job);
}

void Broker::on_cluster_settled(uint64_t settled) {
  MQGATE_BROKER_ENTRY();
  if (cluster_waits_.empty()) return;
  std::vector<ConnId> waits = std::move(cluster_waits_);
  cluster_waits_.clear();
  for (ConnId id : waits) {
    auto it = awaiting_.find(id);
    if (it == awaiting_.end()) continue;  // closed meanwhile
    auto* s = std::get_if<SubscribeState>(&it->second.state);
    if (s == nullptr || !s->waits_for_cluster) continue;
    if (s->cluster_wait > settled) {
      cluster_waits_.push_back(id);
      continue;
    }
    Client& client = *it->second.client;
    SubscribeState done = std::move(*s);
    done.waits_for_cluster = false;
    awaiting_.erase(it);
    finish_subscribe(client, done);
    resume_if_free(client);
  }
}

void Broker::handle_unsubscribe(Client& client, const codec::Unsubscribe& u) {
  if (answer_too_large(client, PacketType::kUnsuback, u.filters.size())) return;
  for (auto filter : u.filters)
    if (too_deep(client, filter)) return;
  Session& session = *client.session;
  std::vector<uint8_t> codes;  // 5.0: one per filter [MQTT-3.11.3-1]
  for (auto filter : u.filters) {
    index_unsubscribe(session, filter);
    const bool existed = session.remove_subscription(filter);
    if (existed && persistence_ && !session.clean())
      persistence_->remove_subscription(session, filter);
    if (is_v5(client)) codes.push_back(existed ? reason::kSuccess : reason::kNoSubscriptionExisted);
  }
  const bool durable = persistence_ && !session.clean();
  acknowledge(client, PacketType::kUnsuback, u.packet_id, durable, 0,
              std::move(codes));  // [MQTT-3.10.4-5]
}

}  // namespace mqgate
