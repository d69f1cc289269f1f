#include "console/throttle.hpp"

#include <algorithm>

namespace mqgate::console {

uint64_t LoginThrottle::wait_s(const std::string& address, uint64_t now_ms) {
  auto it = by_address_.find(address);
  if (it == by_address_.end() || it->second.until_ms <= now_ms) return 0;
  return (it->second.until_ms - now_ms + 999) / 1000;
}

bool LoginThrottle::failed(const std::string& address, uint64_t now_ms) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) {
    if (by_address_.size() >= kMaxAddresses) {
      by_address_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(address);
    it = by_address_.emplace(address, Entry{}).first;
    it->second.lru = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    if (now_ms - it->second.last_ms > kForgetMs) {
      it->second.failures = 0;
      it->second.logged = false;
    }
  }
  Entry& e = it->second;
  e.last_ms = now_ms;
  if (++e.failures < kFreeFailures) return false;
  // The 5th failure waits 1 s, the 6th 2 s, ... up to the cap.
  const uint32_t doublings = std::min<uint32_t>(e.failures - kFreeFailures, 20);
  e.until_ms = now_ms + std::min(kMaxDelayMs, kBaseDelayMs << doublings);
  if (e.logged) return false;
  e.logged = true;
  return true;
}

void LoginThrottle::succeeded(const std::string& address) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  lru_.erase(it->second.lru);
  by_address_.erase(it);
}

std::string address_of(const std::string& peer) {
  if (!peer.empty() && peer.front() == '[') {
    const size_t close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

}  // namespace mqgate::console
