#include "client/outbound_aliases.hpp"

#include <algorithm>

namespace mqgate {

OutboundAliases::OutboundAliases(uint16_t client_maximum)
    : limit_(std::min(client_maximum, kMaxAliases)) {
  slots_.reserve(limit_);
}

OutboundAliases::Use OutboundAliases::use(std::string_view topic) {
  if (limit_ == 0 || topic.size() < kMinTopic || topic.size() > kMaxTopic) return {};
  if (auto it = index_.find(topic); it != index_.end()) {
    slots_[it->second - 1].referenced = true;
    return {it->second, false};
  }
  // A free alias while there are some and the byte budget allows.
  if (slots_.size() < limit_ && bytes_ + topic.size() <= kMaxBytes) {
    slots_.push_back({std::string(topic), false});
    const auto alias = static_cast<uint16_t>(slots_.size());
    index_.emplace(slots_.back().topic, alias);
    bytes_ += topic.size();
    return {alias, true};
  }
  if (slots_.empty()) return {};
  // Full: reuse the first slot not used again since it was set or the hand last passed
  // it (CLOCK), so topics in steady use keep their alias while one-off topics take turns
  // in the others.
  for (size_t step = 0; step < 2 * slots_.size(); step++) {
    Slot& s = slots_[hand_];
    const size_t at = hand_;
    hand_ = (hand_ + 1) % slots_.size();
    if (s.referenced) {
      s.referenced = false;
      continue;
    }
    if (bytes_ - s.topic.size() + topic.size() > kMaxBytes) continue;
    index_.erase(s.topic);
    bytes_ = bytes_ - s.topic.size() + topic.size();
    s.topic.assign(topic);
    s.referenced = false;  // protected from reuse only once used again
    const auto alias = static_cast<uint16_t>(at + 1);
    index_.emplace(s.topic, alias);
    return {alias, true};
  }
  return {};
}

}  // namespace mqgate
