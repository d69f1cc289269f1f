// Failed console logins (password or certificate) per peer address: after kFreeFailures
// in a row the address must wait before its next try (429 with Retry-After), kBaseDelayMs
// doubling with each further failure up to kMaxDelayMs; a success clears it. Memory is
// bounded: at most kMaxAddresses are tracked, the least recently failing one goes first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

namespace mqgate::console {

class LoginThrottle {
 public:
  static constexpr uint32_t kFreeFailures = 5;
  static constexpr uint64_t kBaseDelayMs = 1000;
  static constexpr uint64_t kMaxDelayMs = 5 * 60 * 1000;
  // An address that has not failed for this long starts afresh.
  static constexpr uint64_t kForgetMs = 30 * 60 * 1000;
  static constexpr size_t kMaxAddresses = 4096;

  // 0 if `address` may try now, else the whole seconds it must still wait (at least 1).
  uint64_t wait_s(const std::string& address, uint64_t now_ms);
  // A failed login from `address`. True the first time this makes it wait (to log once).
  bool failed(const std::string& address, uint64_t now_ms);
  void succeeded(const std::string& address);
  size_t tracked() const { return by_address_.size(); }

 private:
  struct Entry {
    uint32_t failures = 0;
    uint64_t last_ms = 0;   // the last failure
    uint64_t until_ms = 0;  // no try before this
    bool logged = false;    // "now throttled" was said
    std::list<std::string>::iterator lru;
  };
  std::unordered_map<std::string, Entry> by_address_;
  std::list<std::string> lru_;  // the most recent failure first
};

// "ip:port" or "[ip]:port" -> "ip".
std::string address_of(const std::string& peer);

}  // namespace mqgate::console
