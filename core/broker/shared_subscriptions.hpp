// Shared subscriptions, `$share/<ShareName>/<filter>` (MQTT 5.0 section 4.8.2; 3.1.1
// clients may use them too, as with Mosquitto): a group is identified by (ShareName,
// filter) and each matching message goes to one member of each matching group.
//
// The groups live in an index of their own (a Router whose targets are groups), apart
// from the ordinary subscriptions: routing a message costs nothing more while no shared
// subscription exists. Which member gets a message is the broker's choice (it knows who
// is online and congested); this module keeps the members and the round-robin cursor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/router.hpp"
#include "mqtt/message.hpp"

namespace mqgate {

class Session;

// The parts of a shared subscription's filter.
struct SharedFilter {
  std::string_view share;   // ShareName
  std::string_view filter;  // the Topic Filter after it
};

enum class ShareParse : uint8_t {
  kNotShared,  // an ordinary filter
  kValid,
  // Starts with "$share/" but breaks [MQTT-4.8.2-1] / [MQTT-4.8.2-2]: an empty
  // ShareName, one with '+' or '#', or no Topic Filter after it.
  kInvalid,
};
// `full` is a filter the codec accepted (valid as an ordinary filter).
ShareParse parse_shared_filter(std::string_view full, SharedFilter& out);

class SharedSubscriptions {
 public:
  struct Member {
    Session* session;
    uint8_t qos;
  };
  // A group; a RouteTarget so the index can match it (each group has one filter).
  struct Group : RouteTarget {
    std::string full_filter;  // "$share/<ShareName>/<filter>", the members' subscription key
    uint16_t id = 0;          // tags the messages given to a member (Session), never 0
    std::vector<Member> members;
    size_t next = 0;  // round robin: the member to try first
  };
  // Groups that may exist at once: ids fit the 16 bits a queued message has for them.
  static constexpr size_t kMaxGroups = 65535;

  bool empty() const { return groups_.empty(); }
  size_t group_count() const { return groups_.size(); }

  enum class AddResult : uint8_t { kAdded, kReplaced, kFull };
  // Adds `session` to the group of `full` (parsed into `parts`), or updates its QoS.
  // kFull: kMaxGroups groups exist and this would be a new one.
  AddResult subscribe(Session* session, std::string_view full, const SharedFilter& parts,
                      uint8_t qos);
  // Removes `session` from the group of `full`; the group goes with its last member.
  // Returns the group's id (0 if the session was not a member).
  uint16_t unsubscribe(Session* session, std::string_view full, const SharedFilter& parts);

  // The groups whose filter matches `topic`, each once. Valid until the next call or
  // change.
  const std::vector<RouteTarget*>& matches(std::string_view topic) { return index_.matches(topic); }
  // The group with this id, or null (it disappeared).
  Group* group(uint16_t id) const {
    return id != 0 && id <= by_id_.size() ? by_id_[id - 1] : nullptr;
  }
  const Group* find(std::string_view full) const;

  // Round robin that chooses well: the first member from the cursor on for which
  // `usable(member)` holds; when none does, the next member in turn anyway (a message
  // for an offline or congested member is queued in its session, not lost). `exclude`
  // is never chosen (a member whose messages are being moved away). Advances the
  // cursor past the chosen member. Null only if no member but `exclude` exists.
  template <typename Usable>
  Member* choose(Group& g, const Session* exclude, Usable&& usable) {
    const size_t n = g.members.size();
    Member* fallback = nullptr;
    size_t fallback_at = 0;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (g.next + k) % n;
      Member& m = g.members[i];
      if (m.session == exclude) continue;
      if (usable(m)) {
        g.next = (i + 1) % n;
        return &m;
      }
      if (fallback == nullptr) fallback = &m, fallback_at = i;
    }
    if (fallback != nullptr) g.next = (fallback_at + 1) % n;
    return fallback;
  }

 private:
  Router index_;  // filter -> groups (as RouteTargets)
  std::unordered_map<std::string, std::unique_ptr<Group>, detail::StringHash, std::equal_to<>>
      groups_;                 // by full filter
  std::vector<Group*> by_id_;  // id - 1 -> group; null: free
  std::vector<uint16_t> free_ids_;
};

// A copy of `msg` without the Subscription Identifiers a delivery added (when a message
// moves from one member to another, the new member's identifier replaces them); `msg`
// itself if it has none.
MessagePtr without_subscription_ids(const MessagePtr& msg);

}  // namespace mqgate
