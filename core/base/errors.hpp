// How mqgate reports what it cannot load or start: configuration, TLS material, plugins,
// listeners. One style everywhere: a function that can fail returns whether it succeeded
// (a bool, a pointer or an optional) and appends one message per problem to an Errors
// list, each message naming where the problem is (file and line, listener or plugin, key,
// the file a key names). The caller decides what failure means: print every message and
// refuse to start (main), or log them and keep what was loaded before (a SIGHUP).
#pragma once

#include <string>
#include <vector>

namespace mqgate {

using Errors = std::vector<std::string>;

// "a; b; c": the messages on one line, for a log line.
inline std::string one_line(const Errors& errors) {
  std::string out;
  for (const std::string& e : errors) {
    if (!out.empty()) out += "; ";
    out += e;
  }
  return out;
}

}  // namespace mqgate
