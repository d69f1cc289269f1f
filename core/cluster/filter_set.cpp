#include "cluster/filter_set.hpp"

#include <vector>

#include "mqtt/topic.hpp"

namespace mqgate::cluster {

struct FilterSet::Node {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_map<std::string, std::unique_ptr<Node>, Hash, std::equal_to<>> children;
  std::unique_ptr<Node> plus;  // the '+' level
  uint32_t ending = 0;         // filters ending at this level
  uint32_t hash = 0;           // filters ending with '#' after this level
  size_t below = 0;            // filters through this node (0: it can go)
};

FilterSet::FilterSet() : root_(std::make_unique<Node>()) {}
FilterSet::~FilterSet() = default;

void FilterSet::clear() {
  root_ = std::make_unique<Node>();
  distinct_ = 0;
}

void FilterSet::add(std::string_view filter) {
  Node* node = root_.get();
  node->below++;
  TopicLevels levels(filter);
  std::string_view level;
  while (levels.next(level)) {
    if (level == "#") {
      if (node->hash++ == 0) distinct_++;
      return;
    }
    std::unique_ptr<Node>* next;
    if (level == "+") {
      next = &node->plus;
    } else {
      auto it = node->children.find(level);
      if (it == node->children.end())
        it = node->children.emplace(std::string(level), nullptr).first;
      next = &it->second;
    }
    if (!*next) *next = std::make_unique<Node>();
    node = next->get();
    node->below++;
  }
  if (node->ending++ == 0) distinct_++;
}

bool FilterSet::remove(std::string_view filter) {
  // The path first (a filter not held changes nothing), then the counts, then the nodes
  // no filter passes through any more.
  struct Step {
    Node* parent;
    std::string_view level;
  };
  std::vector<Step> path;
  Node* node = root_.get();
  bool hash = false;
  TopicLevels levels(filter);
  std::string_view level;
  while (levels.next(level)) {
    if (level == "#") {
      hash = true;
      break;
    }
    Node* next = nullptr;
    if (level == "+") {
      next = node->plus.get();
    } else {
      auto it = node->children.find(level);
      if (it != node->children.end()) next = it->second.get();
    }
    if (next == nullptr) return false;
    path.push_back({node, level});
    node = next;
  }
  uint32_t& count = hash ? node->hash : node->ending;
  if (count == 0) return false;
  if (--count == 0) distinct_--;
  root_->below--;
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    Node* parent = it->parent;
    std::unique_ptr<Node>& child =
        it->level == "+" ? parent->plus : parent->children.find(it->level)->second;
    if (--child->below == 0) {
      if (it->level == "+")
        parent->plus.reset();
      else
        parent->children.erase(parent->children.find(it->level));
    }
  }
  return true;
}

bool FilterSet::matches(std::string_view topic) const {
  if (root_->below == 0) return false;
  std::vector<std::string_view>& levels = levels_;
  levels.clear();
  TopicLevels split(topic);
  std::string_view level;
  while (split.next(level))
    levels.push_back(level);
  // Wildcards at the first level do not match a '$' topic [MQTT-4.7.2-1].
  const bool dollar = !topic.empty() && topic[0] == '$';
  std::vector<Visit>& stack = stack_;
  stack.assign(1, Visit{root_.get(), 0});
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    const bool wild_ok = depth != 0 || !dollar;
    // '#' matches the rest, and the parent level too ("a/#" matches "a").
    if (node->hash != 0 && wild_ok) return true;
    if (depth == levels.size()) {
      if (node->ending != 0) return true;
      continue;
    }
    if (auto it = node->children.find(levels[depth]); it != node->children.end())
      stack.push_back({it->second.get(), depth + 1});
    if (node->plus && wild_ok) stack.push_back({node->plus.get(), depth + 1});
  }
  return false;
}

}  // namespace mqgate::cluster
