#include "router.hpp"

#include <algorithm>

#include "topic.hpp"

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
  detail::LevelMap<RetainNode> children;
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

void Router::retain(const MessagePtr& msg) {
  detail::SplitTopic levels(msg->topic());
  if (msg->payload().empty()) {
    // Clear: find the node, drop its message, prune empty nodes upwards.
    std::vector<std::pair<RetainNode*, std::string_view>> path;
    RetainNode* node = retained_root_.get();
    for (size_t i = 0; i < levels.size(); ++i) {
      auto it = node->children.find(levels[i]);
      if (it == node->children.end()) return;
      path.emplace_back(node, levels[i]);
      node = it->second.get();
    }
    if (!node->message) return;
    node->message = MessagePtr();
    --retained_count_;
    for (auto step = path.rbegin(); step != path.rend(); ++step) {
      if (node->message || !node->children.empty()) break;
      step->first->children.erase(step->first->children.find(step->second));
      node = step->first;
    }
    return;
  }
  RetainNode* node = retained_root_.get();
  for (size_t i = 0; i < levels.size(); ++i) {
    auto it = node->children.find(levels[i]);
    if (it == node->children.end())
      it = node->children.emplace(std::string(levels[i]), std::make_unique<RetainNode>()).first;
    node = it->second.get();
  }
  if (!node->message) ++retained_count_;
  node->message = msg;
}

void Router::retained_all(const RetainNode& node,
                          const std::function<void(const MessagePtr&)>& fn) {
  if (node.message) fn(node.message);
  for (const auto& [level, child] : node.children) retained_all(*child, fn);
}

void Router::retained_walk(const RetainNode& node, const detail::SplitTopic& filter, size_t i,
                           bool root, const std::function<void(const MessagePtr&)>& fn) {
  if (i == filter.size()) {
    if (node.message) fn(node.message);
    return;
  }
  const std::string_view level = filter[i];
  if (level == "#") {
    // '#' matches the parent level itself and every topic below it, except '$' topics
    // when '#' is the first level.
    if (node.message && !root) fn(node.message);
    for (const auto& [name, child] : node.children) {
      if (root && !name.empty() && name[0] == '$') continue;
      retained_all(*child, fn);
    }
    return;
  }
  if (level == "+") {
    for (const auto& [name, child] : node.children) {
      if (root && !name.empty() && name[0] == '$') continue;
      retained_walk(*child, filter, i + 1, false, fn);
    }
    return;
  }
  auto it = node.children.find(level);
  if (it != node.children.end()) retained_walk(*it->second, filter, i + 1, false, fn);
}

void Router::retained_matching(std::string_view filter,
                               const std::function<void(const MessagePtr&)>& fn) const {
  detail::SplitTopic levels(filter);
  retained_walk(*retained_root_, levels, 0, true, fn);
}

}  // namespace mqgate
