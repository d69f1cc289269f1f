// The router knows topics: which sessions subscribe to what (a trie of filter levels),
// and which retained message stands on which topic (a trie of topic levels).
//
// Matching a topic visits only the trie branches that can match: the exact level, '+'
// and '#'. A session that matches through several overlapping filters is reported once,
// with the highest QoS of those filters [MQTT-3.3.5-1].
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mqtt/message.hpp"

namespace mqgate {

// What the router stores per subscriber; Session derives from it. The two match_*
// fields are scratch space for deduplicating one match() call.
struct RouteTarget {
  uint32_t match_epoch = 0;
  uint8_t match_qos = 0;
};

namespace detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Children of a trie node keyed by level, with lookups by string_view.
template <typename Node>
using LevelMap = std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>>;

// Splits a topic into its levels without allocating for up to kInline levels.
class SplitTopic {
 public:
  explicit SplitTopic(std::string_view topic);
  size_t size() const { return count_; }
  std::string_view operator[](size_t i) const { return heap_.empty() ? inline_[i] : heap_[i]; }

 private:
  static constexpr size_t kInline = 16;
  std::string_view inline_[kInline];
  std::vector<std::string_view> heap_;
  size_t count_ = 0;
};

}  // namespace detail

class Router {
 public:
  Router();
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // --- subscriptions ---------------------------------------------------------------
  // Adds or replaces `target`'s subscription to `filter` (valid). Returns true if the
  // filter was new for this target.
  bool subscribe(RouteTarget* target, std::string_view filter, uint8_t qos);
  // Returns true if the target had that subscription.
  bool unsubscribe(RouteTarget* target, std::string_view filter);
  size_t subscription_count() const { return subscription_count_; }

  // Calls fn(target, qos) once per subscribed target that matches `topic`, with the
  // highest QoS among its matching filters. `fn` must not change subscriptions.
  template <typename Fn>
  void match(std::string_view topic, Fn&& fn) {
    for (RouteTarget* t : matches(topic)) fn(t, t->match_qos);
  }
  // The same as a list: each target once, its QoS in match_qos. Valid until the next
  // call or subscription change.
  const std::vector<RouteTarget*>& matches(std::string_view topic) {
    matched_.clear();
    ++epoch_;
    if (epoch_ == 0) epoch_ = 1;  // 0 is "never matched"
    detail::SplitTopic levels(topic);
    collect(*subs_root_, levels, 0, true);
    return matched_;
  }

  // --- retained messages -----------------------------------------------------------
  // Stores `msg` as the retained message of its topic, or clears that topic when the
  // payload is empty [MQTT-3.3.1-10, -11]. Refuses (and keeps what is there) when
  // storing would take the store over `max_count` messages or `max_bytes` bytes of
  // topics and payloads, not counting '$' topics (the broker's own, always stored).
  enum class RetainResult : uint8_t { kStored, kCleared, kRefused };
  RetainResult retain(const MessagePtr& msg, uint64_t max_count = UINT64_MAX,
                      uint64_t max_bytes = UINT64_MAX);
  size_t retained_count() const { return retained_count_; }
  uint64_t retained_bytes() const { return retained_bytes_; }
  // The part the caps apply to (clients' messages, not '$' topics).
  size_t capped_retained_count() const { return capped_count_; }
  uint64_t capped_retained_bytes() const { return capped_bytes_; }
  // The retained message of `topic` (null if none).
  const Message* retained_message(std::string_view topic) const;
  // Calls fn(message) for each retained message whose topic matches `filter`.
  void retained_matching(std::string_view filter, const std::function<void(const MessagePtr&)>& fn) const;
  // The same in slices, for filters that match very many messages: the walk visits the
  // store's nodes in a fixed order, takes one unit of `budget` per node, and stops when
  // the budget is spent, leaving in `cursor` where to go on (the levels of the last
  // node visited; empty to start). Returns true when the walk is complete. Messages
  // stored or removed between slices are seen or not, nothing is visited twice.
  using RetainedCursor = std::vector<std::string>;
  bool retained_matching(std::string_view filter, RetainedCursor& cursor, size_t& budget,
                         const std::function<void(const MessagePtr&)>& fn) const;

 private:
  struct SubNode;
  struct RetainNode;
  struct RetainedWalk;
  void collect(const SubNode& node, const detail::SplitTopic& levels, size_t i, bool root);
  void add_matched(const SubNode& node);

  std::unique_ptr<SubNode> subs_root_;
  std::unique_ptr<RetainNode> retained_root_;
  std::vector<RouteTarget*> matched_;
  uint32_t epoch_ = 0;
  size_t subscription_count_ = 0;
  void account(const Message& m, int sign);
  size_t retained_count_ = 0;
  uint64_t retained_bytes_ = 0;
  // What counts against retain()'s caps: all but the broker's own '$' topics.
  size_t capped_count_ = 0;
  uint64_t capped_bytes_ = 0;
};

}  // namespace mqgate
