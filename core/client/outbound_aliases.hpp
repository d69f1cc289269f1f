// Topic aliases the broker assigns on the PUBLISHes it sends to one MQTT 5.0 client
// (3.3.2.3.4): the first PUBLISH of a topic carries the topic and a new alias, later
// ones only the alias. Bounded by the client's Topic Alias Maximum [MQTT-3.3.2-10] and by
// the broker's own limits, so a client announcing 65535 cannot make the broker keep
// 65535 topics for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mqgate {

class OutboundAliases {
 public:
  // Aliases per connection, whatever the client allows.
  static constexpr uint16_t kMaxAliases = 64;
  // Topic bytes kept per connection, and per topic: a longer topic goes without alias.
  static constexpr size_t kMaxBytes = 16 * 1024;
  static constexpr size_t kMaxTopic = 1024;
  // Topics this short save nothing: the alias property is 3 bytes.
  static constexpr size_t kMinTopic = 4;

  explicit OutboundAliases(uint16_t client_maximum);

  // What to put in the next PUBLISH of `topic`: `alias` 0 means no alias (send the
  // topic); otherwise send the alias, and the topic too when `with_topic` (a new or
  // reassigned alias). Call once per PUBLISH, in the order they are written: the client
  // learns the mapping from the wire.
  struct Use {
    uint16_t alias = 0;
    bool with_topic = true;
  };
  Use use(std::string_view topic);

  size_t size() const { return index_.size(); }

 private:
  struct Slot {
    std::string topic;  // empty: free
    bool referenced = false;
  };
  uint16_t limit_;
  // Slots never move (reserved up front): index_ keys view their topics.
  std::vector<Slot> slots_;
  std::unordered_map<std::string_view, uint16_t> index_;  // topic -> alias
  size_t bytes_ = 0;
  size_t hand_ = 0;  // the clock hand: next slot considered for reuse
};

}  // namespace mqgate
