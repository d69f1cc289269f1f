#include "cluster/subject.hpp"

#include "mqtt/topic.hpp"

namespace mqgate::cluster {

namespace {

// Bytes kept as they are: printable ASCII but the NATS separator, its wildcards and
// our escape character. Everything else (controls, space, DEL, UTF-8 bytes) is %XX.
bool safe(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>' && c != '%';
}

void append_level(std::string& out, std::string_view level) {
  if (level.empty()) {
    out.push_back('%');
    return;
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char ch : level) {
    const auto c = static_cast<unsigned char>(ch);
    if (safe(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lower case is never produced: refusing it keeps one spelling per topic
}

// One token back to its level; false if it is not one append_level() makes.
bool decode_token(std::string_view token, std::string& out) {
  if (token == "%") return true;  // the empty level
  if (token.empty()) return false;
  for (size_t i = 0; i < token.size(); ++i) {
    const auto c = static_cast<unsigned char>(token[i]);
    if (c != '%') {
      if (!safe(c)) return false;
      out.push_back(token[i]);
      continue;
    }
    if (i + 2 >= token.size()) return false;
    const int hi = hex_value(token[i + 1]), lo = hex_value(token[i + 2]);
    if (hi < 0 || lo < 0) return false;
    const auto byte = static_cast<unsigned char>(hi << 4 | lo);
    if (safe(byte)) return false;  // a safe byte is never escaped
    out.push_back(static_cast<char>(byte));
    i += 2;
  }
  return true;
}

}  // namespace

std::string message_prefix(std::string_view cluster_name) {
  std::string p = "mqgate.";
  p.append(cluster_name);
  p.append(".m.");
  return p;
}

std::optional<std::string> topic_subject(std::string_view prefix, std::string_view topic) {
  std::string out(prefix);
  out.reserve(prefix.size() + topic.size() + 8);
  TopicLevels levels(topic);
  std::string_view level;
  bool first = true;
  while (levels.next(level)) {
    if (!first) out.push_back('.');
    first = false;
    append_level(out, level);
    if (out.size() > kMaxSubjectBytes) return std::nullopt;
  }
  return out;
}

std::optional<std::string> subject_topic(std::string_view prefix, std::string_view subject) {
  if (subject.size() <= prefix.size() || subject.substr(0, prefix.size()) != prefix)
    return std::nullopt;
  std::string_view rest = subject.substr(prefix.size());
  std::string topic;
  topic.reserve(rest.size());
  for (;;) {
    const size_t dot = rest.find('.');
    if (!decode_token(rest.substr(0, dot), topic)) return std::nullopt;
    if (dot == std::string_view::npos) break;
    topic.push_back('/');
    rest.remove_prefix(dot + 1);
  }
  return topic;
}

std::vector<std::string> filter_subjects(std::string_view prefix, std::string_view filter) {
  std::string out(prefix);
  TopicLevels levels(filter);
  std::string_view level;
  bool first = true, hash = false;
  size_t parent_end = 0;  // out's size before the '#' level's separator
  while (levels.next(level)) {
    parent_end = out.size();
    if (!first) out.push_back('.');
    first = false;
    if (level == "+") {
      out.push_back('*');
    } else if (level == "#") {
      out.push_back('>');
      hash = true;
    } else {
      append_level(out, level);
    }
    if (out.size() > kMaxSubjectBytes) return {};
  }
  // "a/#" also matches "a"; a bare "#" has no parent ("mqgate.x.m.>" matches all).
  if (hash && parent_end > prefix.size()) return {out.substr(0, parent_end), out};
  return {out};
}

bool subject_matches(std::string_view pattern, std::string_view subject) {
  for (;;) {
    const size_t pd = pattern.find('.'), sd = subject.find('.');
    const std::string_view p = pattern.substr(0, pd), s = subject.substr(0, sd);
    if (p == ">") return !s.empty() || sd != std::string_view::npos;
    if (p != "*" && p != s) return false;
    if (pd == std::string_view::npos || sd == std::string_view::npos)
      return pd == std::string_view::npos && sd == std::string_view::npos;
    pattern.remove_prefix(pd + 1);
    subject.remove_prefix(sd + 1);
  }
}

}  // namespace mqgate::cluster
