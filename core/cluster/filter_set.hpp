// The filters other nodes' subscriptions hold, merged: a counted multiset of MQTT
// filters in a level trie, asked one question per outgoing message: does any of them
// match this topic? (If none does, no other node wants the message and it is not
// published to NATS.) Matching follows MQTT exactly, '$' rule included; the unit test
// checks it against mqtt/topic.hpp's matcher. Pure data structure, loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mqgate::cluster {

class FilterSet {
 public:
  FilterSet();
  ~FilterSet();
  FilterSet(const FilterSet&) = delete;
  FilterSet& operator=(const FilterSet&) = delete;

  // `filter` is a valid MQTT filter (the caller checked). Counted: added twice, it must
  // be removed twice. remove() of a filter not held does nothing and returns false.
  void add(std::string_view filter);
  bool remove(std::string_view filter);
  // Whether any filter held matches `topic` (a valid topic name).
  bool matches(std::string_view topic) const;
  // Distinct filters held.
  size_t size() const { return distinct_; }
  void clear();

 private:
  struct Node;
  struct Visit {
    const Node* node;
    size_t depth;
  };
  std::unique_ptr<Node> root_;
  size_t distinct_ = 0;
  // matches()'s scratch, kept between calls: it runs for every local message of a
  // cluster node (loop thread only), so it does not allocate each time.
  mutable std::vector<std::string_view> levels_;
  mutable std::vector<Visit> stack_;
};

}  // namespace mqgate::cluster
