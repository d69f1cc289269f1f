// The host key of a peer address (plugins/common/peer_host.h), which the passwd plugin's
// max_pending_per_address counts by: IPv4 without the port, IPv6 by its /64.
#include <doctest/doctest.h>

#include <string>

#include "peer_host.h"

namespace {
std::string key(const char* peer) {
  char out[PEER_HOST_KEY_LEN];
  peer_host_key(peer, out, sizeof out);
  return out;
}
}  // namespace

TEST_CASE("peer host keys: IPv4 without port, IPv6 by /64, mapped IPv4 as IPv4") {
  CHECK(key("192.0.2.1:51000") == "192.0.2.1");
  CHECK(key("192.0.2.1") == "192.0.2.1");
  CHECK(key("[2001:db8:0:1::7]:51000") == "2001:db8:0:1::/64");
  // Every address of one /64 is one host; the next /64 is another.
  CHECK(key("[2001:db8:0:1:dead:beef:1:2]:1") == "2001:db8:0:1::/64");
  CHECK(key("[2001:0db8:0000:0002::1]:1") == "2001:db8:0:2::/64");
  CHECK(key("[::1]:1883") == "0:0:0:0::/64");
  CHECK(key("[::ffff:192.0.2.9]:1883") == "192.0.2.9");
  CHECK(key(nullptr) == "?");
  CHECK(key("") == "?");
  CHECK(key("[fe80::1%eth0]:1") == "fe80::1%eth0");  // not inet_pton's: kept as text
  CHECK(key("unix") == "unix");
  CHECK(key(("[" + std::string(200, 'a') + "]:1").c_str()).size() < PEER_HOST_KEY_LEN);
}
