// One line per event on stderr: time, level, message. Connection-related lines carry
// the client id, the peer address and the listener (CLIENT_LOG in client.hpp).
#pragma once

#include <string>
#include <string_view>

namespace mqgate::log {

enum class Level : int { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

void set_level(Level level);
Level level();
inline bool enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(level()); }
bool parse_level(std::string_view text, Level& out);
const char* level_name(Level level);

void write(Level level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Quotes untrusted text (client ids, topics, usernames, plugin reasons) for a log
// line: control characters, quotes and backslashes are escaped, long text is cut.
std::string quote(std::string_view text, size_t max_bytes = 200);
// Escapes only control characters (as \xNN), for text that is already readable, such
// as a plugin's reason: one log line stays one line.
std::string sanitize(std::string_view text, size_t max_bytes = 512);

}  // namespace mqgate::log

#define MQGATE_LOG(lvl, ...)                                                          \
  do {                                                                                \
    if (::mqgate::log::enabled(lvl)) ::mqgate::log::write(lvl, __VA_ARGS__);          \
  } while (0)
#define LOG_ERROR(...) MQGATE_LOG(::mqgate::log::Level::kError, __VA_ARGS__)
#define LOG_WARN(...) MQGATE_LOG(::mqgate::log::Level::kWarning, __VA_ARGS__)
#define LOG_INFO(...) MQGATE_LOG(::mqgate::log::Level::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) MQGATE_LOG(::mqgate::log::Level::kDebug, __VA_ARGS__)
