// Topic names and topic filters (MQTT 3.1.1 section 4.7): validation and matching.
// Pure string logic, shared by the codec, the router and the plugin host.
#pragma once

#include <string_view>

namespace mqgate {

// The answers come from plugins/common/mqtt_topic.h, which documents the rules; the
// plugins use the same header.

// A topic name as a PUBLISH (or will) may carry it: at least one byte, no '+' or '#'.
// (UTF-8 well-formedness is the codec's job and is checked before this.)
bool is_valid_topic_name(std::string_view topic);

// A topic filter as a SUBSCRIBE may carry it: at least one byte; '+' only as a whole
// level; '#' only as the whole last level.
bool is_valid_topic_filter(std::string_view filter);

// Whether `filter` (valid) matches `topic` (valid). Topics starting with '$' are not
// matched by a filter whose first level is a wildcard [MQTT-4.7.2-1].
bool topic_matches(std::string_view filter, std::string_view topic);

// Whether every topic `filter` (valid) matches is also matched by `pattern` (valid):
// level by level, '#' in the pattern covers the rest (and the parent level), '+'
// covers one level (a literal or '+', not '#'), a literal covers only itself; a '#' in
// the filter is covered only by a '#' at the same level, or, when the filter's parent
// is the empty string (the filters "#" and "/#"), by '+' then '#' there ("+/#" covers
// "#", "+/+/#" covers "/#"). '$' topics: a pattern whose first level is a wildcard
// covers no filter whose first level starts with '$'.
bool filter_covers(std::string_view pattern, std::string_view filter);

// Iterates the '/'-separated levels of a topic or filter, including empty ones:
// "a//b" has the levels "a", "", "b"; "/" has "", "".
class TopicLevels {
 public:
  explicit TopicLevels(std::string_view s) : rest_(s) {}
  // Stores the next level in `level`; false when there are no more.
  bool next(std::string_view& level) {
    if (done_) return false;
    auto slash = rest_.find('/');
    if (slash == std::string_view::npos) {
      level = rest_;
      done_ = true;
    } else {
      level = rest_.substr(0, slash);
      rest_.remove_prefix(slash + 1);
    }
    return true;
  }

 private:
  std::string_view rest_;
  bool done_ = false;
};

}  // namespace mqgate
