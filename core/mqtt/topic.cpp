#include "mqtt/topic.hpp"

namespace mqgate {

bool is_valid_topic_name(std::string_view topic) {
  return !topic.empty() && topic.find_first_of("+#") == std::string_view::npos;
}

bool is_valid_topic_filter(std::string_view filter) {
  if (filter.empty()) return false;
  TopicLevels levels(filter);
  std::string_view level;
  bool last_was_hash = false;
  while (levels.next(level)) {
    if (last_was_hash) return false;  // '#' must be the last level
    if (level.find_first_of("+#") != std::string_view::npos) {
      if (level.size() != 1) return false;  // a wildcard must be the whole level
      last_was_hash = level[0] == '#';
    }
  }
  return true;
}

bool topic_matches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#'))
    return false;
  TopicLevels f(filter), t(topic);
  std::string_view fl, tl;
  while (f.next(fl)) {
    if (fl == "#") return true;  // matches the parent level and everything below
    if (!t.next(tl)) return false;
    if (fl != "+" && fl != tl) return false;
  }
  return !t.next(tl);
}

bool filter_covers(std::string_view pattern, std::string_view filter) {
  const bool pattern_wild = !pattern.empty() && (pattern[0] == '+' || pattern[0] == '#');
  if (pattern_wild && !filter.empty() && filter[0] == '$') return false;
  TopicLevels p(pattern), f(filter);
  std::string_view pl, fl;
  for (size_t level = 0;; ++level) {
    const bool has_p = p.next(pl);
    const bool has_f = f.next(fl);
    if (!has_p) return !has_f;   // the pattern ends: so must the filter
    if (pl == "#") return true;  // everything from here on, and the parent
    if (!has_f) return false;    // the filter's topics end here, the pattern's do not
    if (fl == "#") {
      // The filter matches the parent (when there is one) and any depth below: only a
      // '#' covers that, or "+/#" for the whole filter "#" (no parent then).
      if (level == 0 && pl == "+" && p.next(pl) && pl == "#") return !p.next(pl);
      return false;
    }
    if (pl == "+") continue;  // any one level, '+' included
    if (fl == "+" || pl != fl) return false;
  }
}

}  // namespace mqgate
