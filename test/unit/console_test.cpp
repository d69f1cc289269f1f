// The console's pure parts: JSON escaping of hostile bytes, the list query's parameters,
// percent-decoding, Basic credentials, login sessions' bounds, the failed-login throttle.
#include <doctest/doctest.h>

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
    s.create("u", false, Role::kReadOnly, 1 + i, other);
  }
  CHECK(s.size() == LoginSessions::kMaxSessions);
  CHECK(s.find(first, 10) == nullptr);  // the least recently used went
}

TEST_CASE("login throttle: waits after 5 failures, doubling to a cap; success resets") {
  LoginThrottle t;
  const std::string a = "192.0.2.1";
  for (uint32_t i = 1; i < LoginThrottle::kFreeFailures; ++i) {
    CHECK(!t.failed(a, 1000));
    CHECK(t.wait_s(a, 1000) == 0);
  }
  CHECK(t.failed(a, 1000));  // the 5th: throttled now, said once
  CHECK(t.wait_s(a, 1000) == 1);
  CHECK(t.wait_s(a, 2000) == 0);
  CHECK(!t.failed(a, 2000));  // not said again
  CHECK(t.wait_s(a, 2000) == 2);
  uint64_t now = 10000;
  for (int i = 0; i < 30; ++i)
    t.failed(a, now);
  CHECK(t.wait_s(a, now) == LoginThrottle::kMaxDelayMs / 1000);  // capped
  CHECK(t.wait_s("192.0.2.2", now) == 0);                        // per address
  t.succeeded(a);
  CHECK(t.wait_s(a, now) == 0);
  CHECK(t.tracked() == 0);
  // Bounded: the least recently failing address goes.
  for (size_t i = 0; i <= LoginThrottle::kMaxAddresses; ++i)
    t.failed("10.0." + std::to_string(i), now);
  CHECK(t.tracked() == LoginThrottle::kMaxAddresses);
  CHECK(address_of("127.0.0.1:5000") == "127.0.0.1");
  CHECK(address_of("[::1]:5000") == "::1");
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
