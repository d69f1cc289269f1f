#include "broker/router.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "mqtt/topic.hpp"

namespace mqgate {

namespace detail {

SplitTopic::SplitTopic(std::string_view topic) {
  TopicLevels levels(topic);
  std::string_view level;
  while (levels.next(level)) {
    if (count_ < kInline && heap_.empty()) {
      inline_[count_++] = level;
      continue;
    }
    if (heap_.empty()) heap_.assign(inline_, inline_ + count_);
    heap_.push_back(level);
    ++count_;
  }
}

}  // namespace detail

struct Router::SubNode {
  struct Subscriber {
    RouteTarget* target;
    uint8_t qos;
  };
  detail::LevelMap<SubNode> children;
  std::unique_ptr<SubNode> plus;  // the '+' level
  std::unique_ptr<SubNode> hash;  // the '#' level (always a leaf)
  std::vector<Subscriber> subscribers;

  bool empty() const { return children.empty() && !plus && !hash && subscribers.empty(); }
};

struct Router::RetainNode {
  // Ordered, so a sliced walk can resume where it stopped (retained_matching).
  std::map<std::string, std::unique_ptr<RetainNode>, std::less<>> children;
  MessagePtr message;
};

Router::Router()
    : subs_root_(std::make_unique<SubNode>()), retained_root_(std::make_unique<RetainNode>()) {}

Router::~Router() = default;

bool Router::subscribe(RouteTarget* target, std::string_view filter, uint8_t qos) {
  SubNode* node = subs_root_.get();
  TopicLevels levels(filter);
  std::string_view level;
  while (levels.next(level)) {
    std::unique_ptr<SubNode>* slot;
    if (level == "+") {
      slot = &node->plus;
    } else if (level == "#") {
      slot = &node->hash;
    } else {
      auto it = node->children.find(level);
      if (it == node->children.end()) it = node->children.emplace(std::string(level), nullptr).first;
      slot = &it->second;
    }
    if (!*slot) *slot = std::make_unique<SubNode>();
    node = slot->get();
  }
  for (auto& s : node->subscribers) {
    if (s.target == target) {
      s.qos = qos;
      return false;
    }
  }
  node->subscribers.push_back({target, qos});
  ++subscription_count_;
  return true;
}

bool Router::unsubscribe(RouteTarget* target, std::string_view filter) {
  // Walk down remembering the path, so empty nodes can be pruned on the way back.
  struct Step {
    SubNode* parent;
    std::string_view level;
  };
  std::vector<Step> path;
  SubNode* node = subs_root_.get();
  TopicLevels levels(filter);
  std::string_view level;
  while (levels.next(level)) {
    SubNode* next = nullptr;
    if (level == "+") {
      next = node->plus.get();
    } else if (level == "#") {
      next = node->hash.get();
    } else {
      auto it = node->children.find(level);
      if (it != node->children.end()) next = it->second.get();
    }
    if (next == nullptr) return false;
    path.push_back({node, level});
    node = next;
  }
  auto& subs = node->subscribers;
  auto it = std::find_if(subs.begin(), subs.end(), [&](auto& s) { return s.target == target; });
  if (it == subs.end()) return false;
  *it = subs.back();
  subs.pop_back();
  --subscription_count_;
  if (subs.empty()) subs.shrink_to_fit();

  for (auto step = path.rbegin(); step != path.rend() && node->empty(); ++step) {
    SubNode* parent = step->parent;
    if (step->level == "+") {
      parent->plus.reset();
    } else if (step->level == "#") {
      parent->hash.reset();
    } else {
      parent->children.erase(parent->children.find(step->level));
    }
    node = parent;
  }
  return true;
}

void Router::add_matched(const SubNode& node) {
  for (const auto& s : node.subscribers) {
    RouteTarget* t = s.target;
    if (t->match_epoch != epoch_) {
      t->match_epoch = epoch_;
      t->match_qos = s.qos;
      matched_.push_back(t);
    } else if (s.qos > t->match_qos) {
      t->match_qos = s.qos;
    }
  }
}

void Router::collect(const SubNode& node, const detail::SplitTopic& levels, size_t i, bool root) {
  // Topics starting with '$' are not matched by a leading wildcard [MQTT-4.7.2-1].
  const bool wildcards_allowed = !(root && !levels[0].empty() && levels[0][0] == '$');
  // '#' matches this level's parent and everything below [MQTT-4.7.1-2].
  if (node.hash && wildcards_allowed) add_matched(*node.hash);
  if (i == levels.size()) {
    add_matched(node);
    return;
  }
  if (!node.children.empty()) {
    auto it = node.children.find(levels[i]);
    if (it != node.children.end()) collect(*it->second, levels, i + 1, false);
  }
  if (node.plus && wildcards_allowed) collect(*node.plus, levels, i + 1, false);
}

namespace {
uint64_t retained_size(const Message& m) { return m.topic().size() + m.payload().size(); }
bool is_system(std::string_view topic) { return !topic.empty() && topic[0] == '$'; }
}  // namespace

const Message* Router::retained_message(std::string_view topic) const {
  detail::SplitTopic levels(topic);
  const RetainNode* node = retained_root_.get();
  for (size_t i = 0; i < levels.size() && node != nullptr; ++i) {
    auto it = node->children.find(levels[i]);
    node = it == node->children.end() ? nullptr : it->second.get();
  }
  return node && node->message ? node->message.get() : nullptr;
}

Router::RetainResult Router::retain(const MessagePtr& msg, uint64_t max_count, uint64_t max_bytes) {
  detail::SplitTopic levels(msg->topic());
  if (msg->payload().empty()) {
    // Clear: find the node, drop its message, prune empty nodes upwards.
    std::vector<std::pair<RetainNode*, std::string_view>> path;
    RetainNode* node = retained_root_.get();
    for (size_t i = 0; i < levels.size(); ++i) {
      auto it = node->children.find(levels[i]);
      if (it == node->children.end()) return RetainResult::kCleared;
      path.emplace_back(node, levels[i]);
      node = it->second.get();
    }
    if (!node->message) return RetainResult::kCleared;
    account(*node->message, -1);
    node->message = MessagePtr();
    for (auto step = path.rbegin(); step != path.rend(); ++step) {
      if (node->message || !node->children.empty()) break;
      step->first->children.erase(step->first->children.find(step->second));
      node = step->first;
    }
    return RetainResult::kCleared;
  }
  // Check the caps before creating any node, so a refusal leaves the trie as it was.
  const RetainNode* existing = retained_root_.get();
  for (size_t i = 0; i < levels.size() && existing != nullptr; ++i) {
    auto it = existing->children.find(levels[i]);
    existing = it == existing->children.end() ? nullptr : it->second.get();
  }
  const MessagePtr* old = existing && existing->message ? &existing->message : nullptr;
  const uint64_t old_bytes = old ? retained_size(**old) : 0;
  // The caps are the clients' budget: the broker's own '$' topics are not counted.
  if (!is_system(msg->topic()) &&
      ((old == nullptr && capped_count_ >= max_count) ||
       capped_bytes_ - old_bytes + retained_size(*msg) > max_bytes))
    return RetainResult::kRefused;
  RetainNode* node = retained_root_.get();
  for (size_t i = 0; i < levels.size(); ++i) {
    auto it = node->children.find(levels[i]);
    if (it == node->children.end())
      it = node->children.emplace(std::string(levels[i]), std::make_unique<RetainNode>()).first;
    node = it->second.get();
  }
  if (node->message) account(*node->message, -1);
  account(*msg, 1);
  node->message = msg;
  return RetainResult::kStored;
}

void Router::account(const Message& m, int sign) {
  const uint64_t bytes = retained_size(m);
  const bool capped = !is_system(m.topic());
  if (sign > 0) {
    ++retained_count_;
    retained_bytes_ += bytes;
    if (capped) ++capped_count_, capped_bytes_ += bytes;
  } else {
    --retained_count_;
    retained_bytes_ -= bytes;
    if (capped) --capped_count_, capped_bytes_ -= bytes;
  }
}

// A pre-order walk of the retained trie guided by a filter, resumable after a cursor:
// a node's own message comes before its children, children in key order.
struct Router::RetainedWalk {
  // Where a node stands relative to the cursor (the last node of the previous slice).
  enum class Resume : uint8_t {
    kAfter,   // after the cursor: visit it
    kPrefix,  // on the cursor's path above it: visited already, some children are not
    kAt,      // the cursor itself: visited already, all its children are not
  };

  const detail::SplitTopic& filter;
  const RetainedCursor& resume;
  size_t& budget;
  const std::function<void(const MessagePtr&)>& fn;
  std::optional<RetainedCursor> stopped_at;  // set when the budget runs out
  std::vector<std::string_view> path;        // levels of the node being visited

  // Visits `node` (at `path`), which matched filter levels [0, i); `hash`: a '#' above
  // matched already, so the whole subtree matches.
  void visit(const RetainNode& node, size_t i, bool hash, Resume where) {
    const bool root = path.empty();
    const bool at_hash = !hash && i < filter.size() && filter[i] == "#";
    if (where == Resume::kAfter && !root) {
      // '#' matches its parent level too [MQTT-4.7.1-2].
      if ((hash || at_hash || i == filter.size()) && node.message) fn(node.message);
      if (budget > 0) --budget;
      if (budget == 0) {
        stopped_at.emplace(path.begin(), path.end());
        return;
      }
    }
    if (!hash && !at_hash && i == filter.size()) return;
    const bool subtree = hash || at_hash;
    const bool any_child = subtree || filter[i] == "+";
    const size_t next_i = subtree ? i : i + 1;
    if (where == Resume::kAt) where = Resume::kAfter;  // all of the cursor's children are new
    auto descend = [&](const std::string& name, const RetainNode& child) {
      Resume child_where = Resume::kAfter;
      if (where == Resume::kPrefix) {
        const std::string& want = resume[path.size()];
        if (name < want) return true;  // visited in an earlier slice
        if (name == want) child_where = path.size() + 1 == resume.size() ? Resume::kAt : Resume::kPrefix;
      }
      path.push_back(name);
      visit(child, next_i, subtree, child_where);
      path.pop_back();
      return !stopped_at;
    };
    if (!any_child) {
      auto it = node.children.find(filter[i]);
      if (it != node.children.end()) descend(it->first, *it->second);
      return;
    }
    auto it = where == Resume::kPrefix ? node.children.lower_bound(resume[path.size()])
                                       : node.children.begin();
    for (; it != node.children.end(); ++it) {
      // Topics starting with '$' are not matched by a leading wildcard [MQTT-4.7.2-1].
      if (root && !it->first.empty() && it->first[0] == '$') continue;
      if (!descend(it->first, *it->second)) return;
    }
  }
};

void Router::retained_matching(std::string_view filter,
                               const std::function<void(const MessagePtr&)>& fn) const {
  RetainedCursor cursor;
  size_t budget = SIZE_MAX;
  retained_matching(filter, cursor, budget, fn);
}

bool Router::retained_matching(std::string_view filter, RetainedCursor& cursor, size_t& budget,
                               const std::function<void(const MessagePtr&)>& fn) const {
  detail::SplitTopic levels(filter);
  RetainedWalk walk{levels, cursor, budget, fn, std::nullopt, {}};
  // The root is never a cursor (it holds no message and costs no budget).
  walk.visit(*retained_root_, 0, false,
             cursor.empty() ? RetainedWalk::Resume::kAfter : RetainedWalk::Resume::kPrefix);
  if (!walk.stopped_at) {
    cursor.clear();
    return true;
  }
  cursor = std::move(*walk.stopped_at);
  return false;
}

}  // namespace mqgate
