#include "base/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace mqgate::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
}

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

const char* level_name(Level level) {
  switch (level) {
    case Level::kError:
      return "ERROR";
    case Level::kWarning:
      return "WARN";
    case Level::kInfo:
      return "INFO";
    case Level::kDebug:
      return "DEBUG";
  }
  return "?";
}

bool parse_level(std::string_view text, Level& out) {
  if (text == "error") out = Level::kError;
  else if (text == "warning" || text == "warn") out = Level::kWarning;
  else if (text == "info") out = Level::kInfo;
  else if (text == "debug") out = Level::kDebug;
  else return false;
  return true;
}

void write(Level lvl, const char* format, ...) {
  char line[2048];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                   utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                   utc.tm_sec, ts.tv_nsec / 1000000, level_name(lvl));
  va_list ap;
  va_start(ap, format);
  int m = vsnprintf(line + n, sizeof line - n - 1, format, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;  // truncated: still one line
  line[len++] = '\n';
  // One write() per line, so lines from threads never interleave.
  const char* p = line;
  while (len > 0) {
    ssize_t w = ::write(STDERR_FILENO, p, len);
    if (w <= 0) break;
    p += w;
    len -= static_cast<size_t>(w);
  }
}

std::string sanitize(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  size_t i = 0;
  for (; i < text.size() && i < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) {
      char esc[5];
      snprintf(esc, sizeof esc, "\\x%02x", c);
      out.append(esc);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (i < text.size()) out.append("...");
  return out;
}

std::string quote(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  size_t i = 0;
  for (; i < text.size() && i < max_bytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7F) {
      char esc[5];
      snprintf(esc, sizeof esc, "\\x%02x", c);
      out.append(esc);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
  if (i < text.size()) out.append("...");
  return out;
}

}  // namespace mqgate::log
