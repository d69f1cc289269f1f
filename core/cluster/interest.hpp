// Which distinct MQTT filters this node's local subscriptions hold, reference counted:
// the node is subscribed to a filter's NATS subjects from its first local subscription
// to its last, however many sessions share it (interest costs per node and per filter,
// never per session). Pure bookkeeping; the bridge acts on the transitions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mqgate::cluster {

class Interest {
 public:
  // True when `filter` had no local subscription before (subscribe its subjects).
  bool add(std::string_view filter);
  // True when that was its last one (unsubscribe them). A filter never added: false.
  bool remove(std::string_view filter);
  size_t size() const { return counts_.size(); }
  uint32_t count(std::string_view filter) const;
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& [filter, n] : counts_)
      fn(filter);
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> counts_;
};

}  // namespace mqgate::cluster
