#include "mqtt/topic.hpp"

// The rules live in one C header shared with the bundled plugins (acl, certauth), so
// the broker and its plugins cannot disagree about a topic.
#include "common/mqtt_topic.h"

namespace mqgate {

bool is_valid_topic_name(std::string_view topic) {
  return mqtt_topic_name_valid(topic.data(), topic.size()) != 0;
}

bool is_valid_topic_filter(std::string_view filter) {
  return mqtt_topic_filter_valid(filter.data(), filter.size()) != 0;
}

bool topic_matches(std::string_view filter, std::string_view topic) {
  return mqtt_topic_matches(filter.data(), filter.size(), topic.data(), topic.size()) != 0;
}

bool filter_covers(std::string_view pattern, std::string_view filter) {
  return mqtt_topic_covers(pattern.data(), pattern.size(), filter.data(), filter.size()) != 0;
}

}  // namespace mqgate
