// The console's pure parts: JSON escaping of hostile bytes, the list query's parameters,
// percent-decoding, Basic credentials, login sessions' bounds, the failed-login throttle.
#include <doctest/doctest.h>
#include <mbedtls/base64.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "broker/broker.hpp"
#include "broker/session_certificate.hpp"

#include "console/auth.hpp"
#include "console/clients.hpp"
#include "console/json.hpp"
#include "console/throttle.hpp"

using namespace mqgate::console;

TEST_CASE("json: quotes, controls, HTML and line separators are escaped") {
  CHECK(json_quote("a\"b\\c") == R"("a\"b\\c")");
  CHECK(json_quote(std::string("\x01\x1f\x7f\n\t", 5)) == R"("\u0001\u001f\u007f\n\t")");
  CHECK(json_quote("<script>&</script>") == R"("\u003cscript\u003e\u0026\u003c/script\u003e")");
  CHECK(json_quote("\xe2\x80\xa8\xe2\x80\xa9") == R"("\u2028\u2029")");
  CHECK(json_quote(std::string("\0", 1)) == R"("\u0000")");
  CHECK(json_quote("h\xc3\xa9 \xf0\x9f\x98\x80") == "\"h\xc3\xa9 \xf0\x9f\x98\x80\"");
}

TEST_CASE("json: bytes that are not UTF-8 become U+FFFD, one per byte") {
  CHECK(json_quote("\xff") == R"("\ufffd")");
  CHECK(json_quote("a\xc3") == R"("a\ufffd")");                              // cut short
  CHECK(json_quote("\xc0\xaf") == R"("\ufffd\ufffd")");                      // overlong
  CHECK(json_quote("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");            // a surrogate
  CHECK(json_quote("\xf4\x90\x80\x80") == R"("\ufffd\ufffd\ufffd\ufffd")");  // > U+10FFFF
}

TEST_CASE("json: objects and arrays get their commas") {
  Json j;
  j.begin_object().field("a", 1).key("b").begin_array().number(uint64_t{2}).string("x");
  j.begin_object().end_object().end_array().field("c", true).key("d").null().end_object();
  CHECK(j.text() == R"({"a":1,"b":[2,"x",{}],"c":true,"d":null})");
}

TEST_CASE("list query: defaults, values, and every bad parameter refused") {
  ListQuery q;
  std::string error;
  REQUIRE(parse_list_query("", q, error));
  CHECK(q.limit == 50);
  REQUIRE(
      parse_list_query("search=Dev%20One&sort=not_after&order=desc&offset=10&limit=500&"
                       "state=offline",
                       q, error));
  CHECK(q.search == "dev one");
  CHECK(q.sort == ListQuery::Sort::kNotAfter);
  CHECK(q.descending);
  CHECK(q.offset == 10);
  CHECK(q.limit == 500);
  CHECK(q.state == ListQuery::State::kOffline);
  for (const char* bad : {"limit=501", "limit=0", "limit=-1", "limit=1e3",
                          "limit=", "limit=184467440737095516160", "offset=-1", "offset=10000001",
                          "sort=x", "order=x", "state=x", "x=1", "search=%", "search=%g0"}) {
    ListQuery q2;
    CHECK_MESSAGE(!parse_list_query(bad, q2, error), bad);
    CHECK(!error.empty());
  }
}

TEST_CASE("percent-decoding: any byte, '+' a space in queries only") {
  std::string out;
  REQUIRE(percent_decode("a%00b%2F%3c+", false, out));
  CHECK(out == std::string("a\0b/<+", 6));
  REQUIRE(percent_decode("a+b", true, out));
  CHECK(out == "a b");
  CHECK(!percent_decode("%4", false, out));
  CHECK(!percent_decode("%", false, out));
}

TEST_CASE("Basic credentials") {
  std::string user, password;
  REQUIRE(parse_basic("Basic YWxpY2U6cHc6eA==", user, password));  // alice:pw:x
  CHECK(user == "alice");
  CHECK(password == "pw:x");
  CHECK(!parse_basic("Bearer YWxpY2U6cHc=", user, password));
  CHECK(!parse_basic("Basic !!!", user, password));
  CHECK(!parse_basic("Basic OnB3", user, password));  // ":pw": no user
}

TEST_CASE("login sessions: idle and lifetime limits, bounded count") {
  LoginSessions s;
  std::string id;
  const auto& login = s.create("alice", false, Role::kAdmin, 1000, id);
  CHECK(login.csrf.size() == 64);
  CHECK(id.size() == 64);
  CHECK(s.find(id, 1000 + LoginSessions::kIdleMs) != nullptr);  // used: idle time restarts
  CHECK(s.find(id, 1000 + 2 * LoginSessions::kIdleMs) != nullptr);
  CHECK(s.find(id, 1000 + 3 * LoginSessions::kIdleMs + 1) == nullptr);  // idle too long
  CHECK(s.find("nope", 0) == nullptr);
  std::string first;
  s.create("u", false, Role::kReadOnly, 0, first);
  for (size_t i = 0; i < LoginSessions::kMaxSessions; ++i) {
    std::string other;
    s.create("u" + std::to_string(i), false, Role::kReadOnly, 1 + i, other);
  }
  CHECK(s.size() == LoginSessions::kMaxSessions);
  CHECK(s.find(first, 10) == nullptr);  // the least recently used went
}

TEST_CASE("login sessions: at most kMaxPerIdentity per user or certificate identity") {
  LoginSessions s;
  std::string first, id, cert;
  s.create("alice", false, Role::kAdmin, 0, first);
  s.create("alice", true, Role::kAdmin, 0, cert, "fp");  // a certificate identity of that name
  for (size_t i = 1; i < LoginSessions::kMaxPerIdentity; ++i)
    s.create("alice", false, Role::kAdmin, i, id);
  CHECK(s.find(first, 100) != nullptr);
  s.create("alice", false, Role::kAdmin, 200, id);  // first was used at 100: the one at 1 goes
  CHECK(s.size() == LoginSessions::kMaxPerIdentity + 1);
  CHECK(s.find(first, 300) != nullptr);
  CHECK(s.find(cert, 300) != nullptr);
  CHECK(s.find(cert, 300)->fingerprint == "fp");
}

TEST_CASE("login throttle: waits after 5 failures, doubling to a cap") {
  LoginThrottle t;
  const std::string a = "192.0.2.1";
  for (uint32_t i = 1; i < LoginThrottle::kFreeFailures; ++i) {
    CHECK(!t.failed(a, "user:alice", 1000));
    CHECK(t.wait_s(a, 1000) == 0);
  }
  CHECK(t.failed(a, "user:alice", 1000));  // the 5th: throttled now, said once
  CHECK(t.wait_s(a, 1000) == 1);
  CHECK(t.wait_s(a, 2000) == 0);
  CHECK(!t.failed(a, "user:alice", 2000));  // not said again
  CHECK(t.wait_s(a, 2000) == 2);
  uint64_t now = 10000;
  for (int i = 0; i < 30; ++i)
    t.failed(a, "user:alice", now);
  CHECK(t.wait_s(a, now) == LoginThrottle::kMaxDelayMs / 1000);  // capped
  CHECK(t.wait_s("192.0.2.2", now) == 0);                        // per address
  t.succeeded(a, "user:alice");
  CHECK(t.wait_s(a, now) == 0);
  CHECK(t.tracked() == 0);
  // Quiet for kForgetMs: starts afresh.
  for (uint32_t i = 0; i < LoginThrottle::kFreeFailures; ++i)
    t.failed(a, "user:x", now);
  now += LoginThrottle::kForgetMs + 1;
  CHECK(!t.failed(a, "user:x", now));
  CHECK(t.wait_s(a, now) == 0);
  // Bounded: the least recently failing address goes.
  for (size_t i = 0; i <= LoginThrottle::kMaxAddresses; ++i)
    t.failed("10.0." + std::to_string(i), "token", now);
  CHECK(t.tracked() == LoginThrottle::kMaxAddresses);
  CHECK(address_of("127.0.0.1:5000") == "127.0.0.1");
  CHECK(address_of("[::1]:5000") == "::1");
}

TEST_CASE("login throttle: a success clears its own name's failures only") {
  LoginThrottle t;
  const std::string a = "192.0.2.1";
  // A reader guesses alice's password 4 times, then logs in as himself: still counted.
  for (int i = 0; i < 4; ++i)
    t.failed(a, "user:alice", 0);
  t.succeeded(a, "user:bob");
  CHECK(t.failed(a, "user:alice", 0));
  CHECK(t.wait_s(a, 0) == 1);
  // A certificate login does not clear password (or token) failures either.
  t.succeeded(a, "certificate");
  CHECK(t.wait_s(a, 0) == 1);
  t.failed(a, "token", 0);
  t.succeeded(a, "user:alice");  // alice's 5 go; the token's stays
  CHECK(t.wait_s(a, 0) == 0);
  CHECK(t.tracked() == 1);
  // More names than kMaxNamesPerAddress: their failures count and are never forgiven.
  LoginThrottle u;
  for (size_t i = 0; i < LoginThrottle::kMaxNamesPerAddress + 4; ++i)
    u.failed(a, "user:u" + std::to_string(i), 0);
  for (size_t i = 0; i < LoginThrottle::kMaxNamesPerAddress + 4; ++i)
    u.succeeded(a, "user:u" + std::to_string(i));
  CHECK(u.tracked() == 1);
}

TEST_CASE("login throttle: tries in flight count; IPv6 per /64") {
  LoginThrottle t;
  const std::string a = "192.0.2.1";
  for (int i = 0; i < 4; ++i)
    t.failed(a, "user:alice", 0);
  CHECK(t.wait_s(a, 0) == 0);
  t.started(a, 0);  // the 5th guess is being checked: a 6th in parallel waits
  CHECK(t.wait_s(a, 0) == 1);
  t.finished(a);
  CHECK(t.wait_s(a, 0) == 0);
  LoginThrottle q;  // a right password checked: nothing left behind
  q.started(a, 0);
  q.finished(a);
  q.succeeded(a, "user:alice");
  CHECK(q.tracked() == 0);
  LoginThrottle p;  // 4 parallel guesses from a fresh address: the 5th waits
  for (int i = 0; i < 4; ++i)
    p.started(a, 0);
  CHECK(p.wait_s(a, 0) == 0);
  p.started(a, 0);
  CHECK(p.wait_s(a, 0) == 1);
  CHECK(throttle_key("192.0.2.1") == "192.0.2.1");
  CHECK(throttle_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64");
  CHECK(throttle_key("2001:db8:1:2::1") == throttle_key("2001:db8:1:2:ffff::9"));
  CHECK(throttle_key("2001:db8:1:3::1") != throttle_key("2001:db8:1:2::1"));
  CHECK(throttle_key("::ffff:192.0.2.7") == "192.0.2.7");
  CHECK(throttle_key("not an address") == "not an address");
}

TEST_CASE("certificate identities are typed: cn:, dns:, uri:") {
  // O=mqgate tests, CN=op-admin; SAN DNS ops.example.com, URI spiffe://example.com/ops/alice.
  static constexpr std::string_view kPem =
      "MIIB6jCCAY+gAwIBAgIUSd124DoTRMtRibq1lk7dtUKrKBcwCgYIKoZIzj0EAwIw"
      "KjEVMBMGA1UECgwMbXFnYXRlIHRlc3RzMREwDwYDVQQDDAhvcC1hZG1pbjAgFw0y"
      "NjEyMDcxNzU3MjhaGA8yMTI2MTExMzE3NTcyOFowKjEVMBMGA1UECgwMbXFnYXRl"
      "IHRlc3RzMREwDwYDVQQDDAhvcC1hZG1pbjBZMBMGByqGSM49AgEGCCqGSM49AwEH"
      "A0IABAnsu7+gq262dJR9H3B1bN+NoLuiewbJm9AQ/okxmVZ46uLPRT3Baxuk1JuI"
      "h0iO/T4nJo3NY4pcOEnIx2eFjIyjgZAwgY0wHQYDVR0OBBYEFAV9kY+S1n6UPyrq"
      "ru3qLe+jBEOIMB8GA1UdIwQYMBaAFAV9kY+S1n6UPyrqru3qLe+jBEOIMA8GA1Ud"
      "EwEB/wQFMAMBAf8wOgYDVR0RBDMwMYIPb3BzLmV4YW1wbGUuY29thh5zcGlmZmU6"
      "Ly9leGFtcGxlLmNvbS9vcHMvYWxpY2UwCgYIKoZIzj0EAwIDSQAwRgIhAOGhFF/6"
      "vZzomuT5Ny6snd9LacHoBXrZMtma3PCucav0AiEAp/KI+EChfwPjP+WnDAliwqmI"
      "IkL8oW/sGIphArEmYkM=";
  std::string der(kPem.size(), '\0');
  size_t len = 0;
  REQUIRE(mbedtls_base64_decode(reinterpret_cast<unsigned char*>(der.data()), der.size(), &len,
                                reinterpret_cast<const unsigned char*>(kPem.data()),
                                kPem.size()) == 0);
  der.resize(len);
  std::vector<std::string> ids;
  std::string subject;
  REQUIRE(certificate_identities(der, ids, subject));
  CHECK(subject == "O=mqgate tests, CN=op-admin");
  CHECK(ids == std::vector<std::string>{"cn:op-admin", "dns:ops.example.com",
                                        "uri:spiffe://example.com/ops/alice"});
  CertRoles roles;
  std::string matched;
  roles.admins = {"op-admin"};  // untyped: matches nothing
  CHECK(!roles.role_of(ids, matched));
  roles.admins = {"uri:op-admin"};  // a URI entry is not the CN
  CHECK(!roles.role_of(ids, matched));
  roles.readers = {"dns:ops.example.com"};
  CHECK(roles.role_of(ids, matched) == Role::kReadOnly);
  CHECK(matched == "dns:ops.example.com");
  ids.clear();
  CHECK(!certificate_identities("not DER", ids, subject));
  CHECK(certificate_fingerprint(der).size() == 64);
  CHECK(certificate_fingerprint(der) != certificate_fingerprint(der + "x"));
}

TEST_CASE("a session's kept certificate: a damaged store row shows none, never a crash") {
  using mqgate::SessionCertificate;
  CHECK(SessionCertificate::restore("tls", "") == nullptr);
  CHECK(SessionCertificate::restore("tls", "not DER at all") == nullptr);
  CHECK(SessionCertificate::restore("tls", std::string("\x30\x82\xff\xff\x01", 5)) == nullptr);
  CHECK(SessionCertificate::restore(
            "tls", std::string(SessionCertificate::kMaxChainBytes + 1, '\x30')) == nullptr);
  mqgate::TlsPeerInfo none;
  CHECK(SessionCertificate::of("tls", none) == nullptr);
  mqgate::TlsPeerInfo big;
  big.chain_der = {std::string(100, 'a'), std::string(SessionCertificate::kMaxChainBytes, 'b')};
  auto kept = SessionCertificate::of("tls", big);
  REQUIRE(kept != nullptr);
  CHECK(kept->chain == std::string(100, 'a'));  // over the bound: the leaf alone
  big.chain_der = {std::string(SessionCertificate::kMaxChainBytes + 1, 'a')};
  CHECK(SessionCertificate::of("tls", big) == nullptr);
}

namespace {

// A broker whose store holds offline persistent sessions "d00000".. (as the console
// lists them).
struct Fleet {
  mqgate::LimitsConfig limits;
  mqgate::AllowAllHooks hooks;
  mqgate::Broker broker{limits, hooks};
  mqgate::SessionStore& store = broker.sessions();
  void add(int from, int to, const char* format = "d%05d") {
    char id[32];
    for (int i = from; i < to; ++i) {
      std::snprintf(id, sizeof id, format, i);
      store.create(id, /*clean=*/false);
    }
  }
};

std::vector<std::string> page_ids(mqgate::Broker& broker, const ListWalk& w) {
  Json j;
  j.begin_object();
  write_page(broker, w, Clock{0, 0}, j);
  j.end_object();
  std::vector<std::string> ids;
  const std::string& t = j.text();
  for (size_t at = t.find("\"client_id\":\""); at != std::string::npos;
       at = t.find("\"client_id\":\"", at + 1)) {
    const size_t start = at + 13;
    ids.push_back(t.substr(start, t.find('"', start) - start));
  }
  return ids;
}

}  // namespace

TEST_CASE("device list: a walk in slices sees every session that stays, once") {
  Fleet fleet;
  auto& store = fleet.store;
  fleet.add(0, 5000);
  char id[32];
  ListWalk w;
  std::string error;
  REQUIRE(parse_list_query("limit=500&offset=1000", w.q, error));
  w.layout = store.layout();
  int slices = 0, removed = 0;
  while (!walk_clients(store, w, 100)) {
    ++slices;
    // Between slices sessions go (every 7th of a range the walk may or may not have seen)
    // and come (without a rehash: the store holds fewer than at the start).
    if (slices == 10) {
      for (int i = 0; i < 5000; i += 7) {
        std::snprintf(id, sizeof id, "d%05d", i);
        store.remove(store.find(id));
        ++removed;
      }
      fleet.add(0, 300, "new%04d");
      REQUIRE(store.layout() == w.layout);
    }
  }
  CHECK(slices > 40);
  std::set<std::string> seen;
  for (const auto& r : w.rows)
    CHECK(seen.insert(r.id).second);  // never twice
  for (int i = 0; i < 5000; ++i) {
    std::snprintf(id, sizeof id, "d%05d", i);
    if (i % 7 != 0) CHECK(seen.count(id) == 1);  // stayed throughout: seen
  }
  sort_page(w);
  const auto ids = page_ids(fleet.broker, w);
  CHECK(ids.size() <= 500);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  for (const auto& i : ids)
    CHECK(store.find(i) != nullptr);  // sessions gone since the walk are left out
}

TEST_CASE("device list: a rehash during the walk starts it again") {
  Fleet fleet;
  auto& store = fleet.store;
  fleet.add(0, 1000);
  ListWalk w;
  w.layout = store.layout();
  REQUIRE(!walk_clients(store, w, 10));
  fleet.add(1000, 20000);  // grows: rehashes
  REQUIRE(store.layout() != w.layout);
  while (!walk_clients(store, w, 1000)) {
  }
  CHECK(w.rows.size() == 20000);
}
