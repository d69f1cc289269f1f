// Failed console logins and bearer tokens per peer address (an IPv6 address per /64):
// after kFreeFailures the address must wait before its next try (429 with Retry-After),
// kBaseDelayMs doubling with each further failure up to kMaxDelayMs. Each failure is
// counted against the address and the name it tried ("user:alice", "certificate",
// "token"): a success clears only that name's failures, so logging in as oneself does not
// wipe guesses at someone else's password. Tries still being checked count too, so
// parallel guesses cannot all pass under the threshold. An address quiet for kForgetMs
// starts afresh. Memory is bounded: at most kMaxAddresses, the least recently failing
// goes first, and kMaxNamesPerAddress names each (further names' failures are never
// cleared by a success).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
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
  static constexpr size_t kMaxNamesPerAddress = 8;

  // 0 if `address` may try now, else the whole seconds it must still wait (at least 1).
  uint64_t wait_s(const std::string& address, uint64_t now_ms);
  // A try is being checked (off the loop): it counts as a failure until finished().
  void started(const std::string& address, uint64_t now_ms);
  void finished(const std::string& address);
  // A failed try of `name` from `address`. True the first time this makes it wait (to
  // log once).
  bool failed(const std::string& address, const std::string& name, uint64_t now_ms);
  // `name` logged in from `address`: its own failures there are cleared, no others.
  void succeeded(const std::string& address, const std::string& name);
  // True the first time `what` (e.g. "token") is said of `address` (to log once).
  bool first_said(const std::string& address, const std::string& what, uint64_t now_ms);
  size_t tracked() const { return by_address_.size(); }

 private:
  struct Entry {
    uint32_t failures = 0;  // all names'
    uint32_t pending = 0;   // tries being checked
    std::map<std::string, uint32_t> by_name;
    uint64_t last_ms = 0;   // the last failure
    uint64_t until_ms = 0;  // no try before this
    bool logged = false;    // "now throttled" was said
    std::map<std::string, bool> said;
    std::list<std::string>::iterator lru;
  };
  Entry& touch(const std::string& address, uint64_t now_ms);
  std::unordered_map<std::string, Entry> by_address_;
  std::list<std::string> lru_;  // the most recent failure first
};

// "ip:port" or "[ip]:port" -> "ip".
std::string address_of(const std::string& peer);
// What the throttle counts against: the IPv4 address, or an IPv6 address's /64
// ("2001:db8:1:2::/64"); an IPv4-mapped IPv6 address as IPv4.
std::string throttle_key(const std::string& address);

}  // namespace mqgate::console
