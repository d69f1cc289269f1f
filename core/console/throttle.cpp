#include "console/throttle.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace mqgate::console {

LoginThrottle::Entry& LoginThrottle::touch(const std::string& address, uint64_t now_ms) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) {
    if (by_address_.size() >= kMaxAddresses) {
      by_address_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(address);
    it = by_address_.emplace(address, Entry{}).first;
    it->second.lru = lru_.begin();
    it->second.last_ms = now_ms;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    if (now_ms - it->second.last_ms > kForgetMs) {
      it->second.failures = 0;
      it->second.by_name.clear();
      it->second.until_ms = 0;
      it->second.logged = false;
      it->second.said.clear();
    }
  }
  return it->second;
}

uint64_t LoginThrottle::wait_s(const std::string& address, uint64_t now_ms) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return 0;
  const Entry& e = it->second;
  if (e.until_ms > now_ms) return (e.until_ms - now_ms + 999) / 1000;
  // Tries under way count as failures: the 5th parallel guess waits for the others.
  if (e.pending > 0 && e.failures + e.pending >= kFreeFailures) return 1;
  return 0;
}

void LoginThrottle::started(const std::string& address, uint64_t now_ms) {
  touch(address, now_ms).pending++;
}

void LoginThrottle::finished(const std::string& address) {
  auto it = by_address_.find(address);
  if (it != by_address_.end() && it->second.pending > 0) it->second.pending--;
}

bool LoginThrottle::failed(const std::string& address, const std::string& name, uint64_t now_ms) {
  Entry& e = touch(address, now_ms);
  e.last_ms = now_ms;
  auto named = e.by_name.find(name);
  if (named != e.by_name.end())
    named->second++;
  else if (e.by_name.size() < kMaxNamesPerAddress)
    e.by_name.emplace(name, 1);
  if (++e.failures < kFreeFailures) return false;
  // The 5th failure waits 1 s, the 6th 2 s, ... up to the cap.
  const uint32_t doublings = std::min<uint32_t>(e.failures - kFreeFailures, 20);
  e.until_ms = now_ms + std::min(kMaxDelayMs, kBaseDelayMs << doublings);
  if (e.logged) return false;
  e.logged = true;
  return true;
}

void LoginThrottle::succeeded(const std::string& address, const std::string& name) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  Entry& e = it->second;
  if (auto named = e.by_name.find(name); named != e.by_name.end()) {
    e.failures -= std::min(e.failures, named->second);
    e.by_name.erase(named);
  }
  if (e.failures < kFreeFailures) {
    e.until_ms = 0;
    e.logged = false;
  }
  if (e.failures == 0 && e.pending == 0 && e.said.empty()) {
    lru_.erase(e.lru);
    by_address_.erase(it);
  }
}

bool LoginThrottle::first_said(const std::string& address, const std::string& what,
                               uint64_t now_ms) {
  Entry& e = touch(address, now_ms);
  return e.said.emplace(what, true).second;
}

std::string address_of(const std::string& peer) {
  if (!peer.empty() && peer.front() == '[') {
    const size_t close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

std::string throttle_key(const std::string& address) {
  unsigned char a[16];
  if (address.find(':') == std::string::npos || inet_pton(AF_INET6, address.c_str(), a) != 1)
    return address;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN];
  if (std::memcmp(a, kMapped, sizeof kMapped) == 0)
    return inet_ntop(AF_INET, a + 12, text, sizeof text) ? text : address;
  // One host or LAN usually holds a whole /64: per /128 it could rotate addresses freely.
  std::memset(a + 8, 0, 8);
  return inet_ntop(AF_INET6, a, text, sizeof text) ? std::string(text) + "/64" : address;
}

}  // namespace mqgate::console
