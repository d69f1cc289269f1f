#include "broker/shared_subscriptions.hpp"

#include <algorithm>

#include "client/mqtt5.hpp"
#include "mqtt/properties.hpp"
#include "mqtt/topic.hpp"

namespace mqgate {

ShareParse parse_shared_filter(std::string_view full, SharedFilter& out) {
  constexpr std::string_view kPrefix = "$share/";
  if (!full.starts_with(kPrefix)) return ShareParse::kNotShared;
  std::string_view rest = full.substr(kPrefix.size());
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return ShareParse::kInvalid;  // no filter part
  out.share = rest.substr(0, slash);
  out.filter = rest.substr(slash + 1);
  // [MQTT-4.8.2-1]: a ShareName of at least one character; [MQTT-4.8.2-2]: without '+'
  // or '#', followed by '/' and a Topic Filter (at least one character [MQTT-4.7.3-1]).
  if (out.share.empty() || out.share.find_first_of("+#") != std::string_view::npos)
    return ShareParse::kInvalid;
  if (!is_valid_topic_filter(out.filter)) return ShareParse::kInvalid;
  return ShareParse::kValid;
}

SharedSubscriptions::AddResult SharedSubscriptions::subscribe(Session* session,
                                                              std::string_view full,
                                                              const SharedFilter& parts,
                                                              uint8_t qos) {
  auto it = groups_.find(full);
  if (it == groups_.end()) {
    if (groups_.size() >= kMaxGroups) return AddResult::kFull;
    auto g = std::make_unique<Group>();
    g->full_filter.assign(full);
    if (free_ids_.empty()) {
      by_id_.push_back(g.get());
      g->id = static_cast<uint16_t>(by_id_.size());
    } else {
      g->id = free_ids_.back();
      free_ids_.pop_back();
      by_id_[g->id - 1] = g.get();
    }
    index_.subscribe(g.get(), parts.filter, 0);
    it = groups_.emplace(std::string(full), std::move(g)).first;
  }
  Group& g = *it->second;
  for (Member& m : g.members) {
    if (m.session == session) {
      m.qos = qos;
      return AddResult::kReplaced;
    }
  }
  g.members.push_back({session, qos});
  return AddResult::kAdded;
}

uint16_t SharedSubscriptions::unsubscribe(Session* session, std::string_view full,
                                          const SharedFilter& parts) {
  auto it = groups_.find(full);
  if (it == groups_.end()) return 0;
  Group& g = *it->second;
  auto m = std::find_if(g.members.begin(), g.members.end(),
                        [&](const Member& x) { return x.session == session; });
  if (m == g.members.end()) return 0;
  const size_t index = static_cast<size_t>(m - g.members.begin());
  g.members.erase(m);  // in order: the round robin goes on where it was
  if (index < g.next) --g.next;
  if (g.next >= g.members.size()) g.next = 0;
  const uint16_t id = g.id;
  if (g.members.empty()) {
    index_.unsubscribe(&g, parts.filter);
    by_id_[id - 1] = nullptr;
    free_ids_.push_back(id);
    groups_.erase(it);
  }
  return id;
}

const SharedSubscriptions::Group* SharedSubscriptions::find(std::string_view full) const {
  auto it = groups_.find(full);
  return it == groups_.end() ? nullptr : it->second.get();
}

MessagePtr without_subscription_ids(const MessagePtr& msg) {
  if (msg->props().empty()) return msg;
  // The property bytes behind their length, as the decoder reads a block.
  std::string block;
  codec::write_varint(block, static_cast<uint32_t>(msg->props().size()));
  block.append(msg->props());
  std::string_view in(block);
  codec::Properties p;
  if (codec::decode_properties(in, codec::PropertyContext::kPublish, p).error !=
          codec::PropertyError::kNone ||
      p.subscription_identifiers.empty())
    return msg;
  return Message::create(
      msg->topic(), msg->payload(), msg->qos(), msg->retain(), mqtt5::forwarded_properties(p),
      msg->expires() ? std::optional<uint64_t>(msg->expires_at_ms()) : std::nullopt);
}

}  // namespace mqgate
