// Mosquitto ACL files (plugins/acl/aclfile.c): parsing and its refusals, Mosquitto's
// decision rules (checked live against Debian's Mosquitto by
// test/integration/test_acl_parity.py), and filter_covers / filter_intersects against a
// brute-force oracle over topic_matches (the matcher itself is checked against a naive
// reference in mqtt_topic_test.cpp).
#include <doctest/doctest.h>

#include <bitset>
#include <string>
#include <vector>

#include "aclfile.h"
#include "mqtt/topic.hpp"

namespace {

struct Acl {
  aclfile* acl = nullptr;
  std::string err;
  explicit Acl(const std::string& text) {
    char buf[ACL_ERR_LEN] = "";
    acl = aclfile_parse("acl", text.data(), text.size(), buf, sizeof buf);
    err = buf;
  }
  ~Acl() { aclfile_free(acl); }
  bool ok(const char* user, const char* topic, int access, const char* client = "cid",
          const char* identity = nullptr) const {
    return acl_check(acl, user, client, identity, topic, access) == 1;
  }
};

constexpr int R = ACL_READ, W = ACL_WRITE, S = ACL_SUBSCRIBE;

// Every sequence of 1..max_len levels over `alphabet`; '#' only as the last level.
std::vector<std::string> sequences(const std::vector<std::string>& alphabet, size_t max_len) {
  std::vector<std::string> out, frontier{""};
  for (size_t len = 1; len <= max_len; len++) {
    std::vector<std::string> next;
    for (const auto& prefix : frontier) {
      if (len > 1 && prefix.size() >= 1 && prefix.substr(prefix.rfind('/') + 1) == "#") continue;
      for (const auto& a : alphabet) next.push_back(len == 1 ? a : prefix + "/" + a);
    }
    for (const auto& s : next) out.push_back(s);
    frontier = std::move(next);
  }
  std::vector<std::string> valid;
  for (const auto& s : out)
    if (mqgate::is_valid_topic_filter(s)) valid.push_back(s);
  return valid;
}

}  // namespace

TEST_CASE("filter_covers and filter_intersects agree with a brute-force oracle") {
  // Levels: two literals, a '$' literal and the empty level; topics add "z", a level no
  // filter names (so a literal never covers '+'); topics go one level deeper than filters.
  const auto filters = sequences({"a", "b", "$x", "", "+", "#"}, 3);
  const auto topics = sequences({"a", "b", "$x", "", "z"}, 4);
  REQUIRE(topics.size() < 2048);
  std::vector<std::bitset<2048>> m(filters.size());
  for (size_t i = 0; i < filters.size(); i++)
    for (size_t t = 0; t < topics.size(); t++) {
      bool ours = acl_topic_matches(filters[i].c_str(), topics[t].c_str()) == 1;
      bool core = mqgate::topic_matches(filters[i], topics[t]);
      if (ours != core) FAIL_CHECK(filters[i] << " vs " << topics[t]);
      m[i][t] = core;
    }
  size_t pairs = 0, covered = 0, intersecting = 0;
  for (size_t r = 0; r < filters.size(); r++)
    for (size_t s = 0; s < filters.size(); s++) {
      bool covers = (m[s] & ~m[r]).none();
      bool meets = (m[s] & m[r]).any();
      pairs++;
      covered += covers;
      intersecting += meets;
      if ((filter_covers(filters[r].c_str(), filters[s].c_str()) == 1) != covers)
        FAIL_CHECK("filter_covers(" << filters[r] << ", " << filters[s] << ") should be "
                                    << covers);
      if ((filter_intersects(filters[r].c_str(), filters[s].c_str()) == 1) != meets)
        FAIL_CHECK("filter_intersects(" << filters[r] << ", " << filters[s] << ") should be "
                                        << meets);
    }
  MESSAGE(filters.size() << " filters, " << topics.size() << " topics, " << pairs
                         << " pairs, " << covered << " covering, " << intersecting
                         << " intersecting");
  CHECK(covered > 100);
}

TEST_CASE("filter_covers: the cases that matter") {
  CHECK(filter_covers("#", "a/b"));
  CHECK(filter_covers("#", "#"));
  CHECK(filter_covers("a/#", "a"));  // "a/#" matches "a"
  CHECK(filter_covers("a/#", "a/+/c"));
  CHECK_FALSE(filter_covers("a/+", "a/#"));  // "a" and "a/b/c"
  CHECK_FALSE(filter_covers("a/b", "a/+"));
  CHECK(filter_covers("a/+", "a/b"));
  CHECK_FALSE(filter_covers("#", "$SYS/x"));  // wildcards do not reach '$' topics
  CHECK_FALSE(filter_covers("+/x", "$SYS/x"));
  CHECK(filter_covers("$SYS/#", "$SYS/broker/+"));
  CHECK(filter_covers("#", "+/x"));  // "+/x" matches no '$' topic either
  CHECK_FALSE(filter_intersects("#", "$SYS/#"));
  CHECK(filter_intersects("a/+/c", "+/b/#"));
  CHECK_FALSE(filter_intersects("a/+", "a"));
  CHECK(filter_intersects("a/#", "a"));
}

TEST_CASE("parsing: Mosquitto's syntax, comments, blank lines, repeated users") {
  Acl a(
      "# comment\n"
      "\n"
      "topic read public/#\n"
      "   # indented comment\n"
      "user alice\n"
      "topic write  alice/out\n"
      "topic readwrite  with space/x \n"
      "user bob smith\n"
      "topic bob/#\n"
      "user alice\n"
      "topic read shared\r\n"
      "pattern read users/%u/#\n"
      "pattern deny users/%c/secret\n");
  REQUIRE_MESSAGE(a.acl != nullptr, a.err);
  CHECK(a.ok(nullptr, "public/x", R));
  CHECK(a.ok("alice", "alice/out", W));
  CHECK(a.ok("alice", "with space/x", W));
  CHECK(a.ok("alice", "shared", R));  // the second "user alice" adds to the first
  CHECK(a.ok("bob smith", "bob/x", W));
  CHECK_FALSE(a.ok("bob", "bob/x", W));
}

TEST_CASE("parsing: many users, each named on several lines") {
  std::string text;
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < 20000; i++)
      text += "user u" + std::to_string(i) + "\ntopic read t" + std::to_string(round) + "/u" +
              std::to_string(i) + "\n";
  Acl a(text);
  REQUIRE_MESSAGE(a.acl != nullptr, a.err);
  for (int i : {0, 1, 9999, 19999})
    for (int round = 0; round < 3; round++) {
      std::string u = "u" + std::to_string(i);
      std::string t = "t" + std::to_string(round) + "/" + u;
      CHECK(a.ok(u.c_str(), t.c_str(), R));
      CHECK_FALSE(a.ok("u5", t.c_str(), R));
    }
}

TEST_CASE("parsing: a bad file is refused with file, line and reason") {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"topic read a\nfoo bar\n", "acl:2: unknown keyword \"foo\""},
      {"user\n", "acl:1: \"user\" without a username"},
      {"topic\n", "acl:1: topic without a topic"},
      {"pattern deny\n", "acl:1: pattern without a topic"},
      {"topic a b\n", "acl:1: unknown access \"a\""},
      {"topic reed a\n", "acl:1: unknown access \"reed\""},
      {"topic read a/#/b\n", "acl:1: invalid topic filter \"a/#/b\""},
      {"topic read a+\n", "acl:1: invalid topic filter"},
      {"\n\npattern read x/%u-data\n", "acl:3: %u, %c and %i must be the whole level"},
      {"Topic read a\n", "acl:1: unknown keyword \"Topic\""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    Acl a(c.text);
    CHECK(a.acl == nullptr);
    CHECK_MESSAGE(a.err.find(c.expect) != std::string::npos, a.err);
  }
  char err[ACL_ERR_LEN];
  CHECK(aclfile_load("/nonexistent/acl", err, sizeof err) == nullptr);
  CHECK(std::string(err).find("/nonexistent/acl: No such file") != std::string::npos);
}

TEST_CASE("decisions: Mosquitto's documented example") {
  // mosquitto-conf(5) and Mosquitto's aclfile.example
  Acl a(
      "topic read $SYS/#\n"
      "\n"
      "user roger\n"
      "topic foo/bar\n"
      "\n"
      "pattern write $SYS/broker/connection/%c/state\n"
      "pattern write sensor/%u/data\n");
  REQUIRE_MESSAGE(a.acl != nullptr, a.err);
  // anonymous clients: the rules before any user line
  CHECK(a.ok(nullptr, "$SYS/broker/uptime", R));
  CHECK(a.ok(nullptr, "$SYS/broker/uptime", S));
  CHECK(a.ok(nullptr, "$SYS/#", S));
  CHECK_FALSE(a.ok(nullptr, "$SYS/broker/uptime", W));
  CHECK_FALSE(a.ok(nullptr, "foo/bar", R));
  // a user does not get the anonymous rules
  CHECK_FALSE(a.ok("roger", "$SYS/broker/uptime", R));
  CHECK(a.ok("roger", "foo/bar", R));
  CHECK(a.ok("roger", "foo/bar", W));
  CHECK(a.ok("roger", "foo/bar", S));
  CHECK_FALSE(a.ok("roger", "foo/+", S));
  CHECK_FALSE(a.ok("roger", "foo/baz", W));
  // patterns apply to every client; %u only to clients with a username
  CHECK(a.ok("roger", "sensor/roger/data", W));
  CHECK(a.ok("other", "sensor/other/data", W));
  CHECK_FALSE(a.ok("other", "sensor/roger/data", W));
  CHECK_FALSE(a.ok("other", "sensor/other/data", R));
  CHECK_FALSE(a.ok(nullptr, "sensor//data", W));
  CHECK(a.ok(nullptr, "$SYS/broker/connection/cid/state", W) == false);  // $SYS: never written
}

TEST_CASE("decisions: deny rules, precedence and anonymous clients") {
  Acl a(
      "topic read public/#\n"
      "topic deny public/secret/#\n"
      "user alice\n"
      "topic readwrite alice/#\n"
      "topic deny alice/locked\n"
      "topic read public/#\n"
      "user bob\n"
      "topic write bob/out\n"
      "pattern read users/%u/#\n"
      "pattern readwrite clients/%c/#\n"
      "pattern deny clients/%c/admin\n"
      "pattern readwrite shared/#\n"
      "pattern deny shared/blocked\n"
      "pattern read identity/%i/#\n");
  REQUIRE_MESSAGE(a.acl != nullptr, a.err);
  // anonymous: deny beats a broader grant, whatever the order
  CHECK(a.ok(nullptr, "public/news", R));
  CHECK_FALSE(a.ok(nullptr, "public/secret/x", R));
  CHECK_FALSE(a.ok(nullptr, "public/news", W));
  // ...and a subscription that could reach a denied topic is refused whole
  CHECK(a.ok(nullptr, "public/news/#", S));
  CHECK_FALSE(a.ok(nullptr, "public/#", S));
  CHECK_FALSE(a.ok(nullptr, "public/+/x", S));
  // users: their own list, then the patterns
  CHECK(a.ok("alice", "alice/x", W));
  CHECK_FALSE(a.ok("alice", "alice/locked", W));
  CHECK_FALSE(a.ok("alice", "public/secret/x", W));
  CHECK(a.ok("alice", "public/secret/x", R));  // alice's list has no deny for it
  CHECK(a.ok("bob", "bob/out", W));
  CHECK_FALSE(a.ok("bob", "bob/out", R));
  CHECK_FALSE(a.ok("bob", "public/news", R));  // anonymous rules are not for users
  CHECK(a.ok("bob", "users/bob/x", R));
  CHECK_FALSE(a.ok("bob", "users/bob/x", W));
  CHECK_FALSE(a.ok("bob", "users/alice/x", R));
  CHECK(a.ok("bob", "users/bob/#", S));
  CHECK_FALSE(a.ok("bob", "users/+/x", S));
  // %c
  CHECK(a.ok("bob", "clients/c1/x", W, "c1"));
  CHECK_FALSE(a.ok("bob", "clients/c1/admin", W, "c1"));
  CHECK_FALSE(a.ok("bob", "clients/c2/x", W, "c1"));
  CHECK(a.ok(nullptr, "clients/c1/x", W, "c1"));  // patterns apply to anonymous too
  CHECK_FALSE(a.ok(nullptr, "shared/blocked", W));
  CHECK(a.ok(nullptr, "shared/open", W));
  // %i: only with an identity
  CHECK(a.ok("bob", "identity/dev1/x", R, "cid", "dev1"));
  CHECK_FALSE(a.ok("bob", "identity/dev1/x", R, "cid", nullptr));
  // unknown user, no matching pattern
  CHECK_FALSE(a.ok("mallory", "alice/x", R));
  CHECK(a.ok("mallory", "shared/x", R));
}

TEST_CASE("decisions: a deny in the client's own list is final") {
  // Mosquitto 2.0 checks the client's list first: a deny there ends it; only when the
  // list neither allows nor denies are the patterns asked (checked live by
  // test_acl_parity.py).
  Acl a(
      "user alice\n"
      "topic deny alice/private\n"
      "topic readwrite alice/#\n"
      "pattern read %u/#\n"
      "pattern write other/#\n");
  REQUIRE(a.acl != nullptr);
  CHECK_FALSE(a.ok("alice", "alice/private", R));
  CHECK_FALSE(a.ok("alice", "alice/private", W));
  CHECK(a.ok("alice", "alice/other", W));
  CHECK(a.ok("alice", "other/x", W));  // no match in her list: the patterns
  CHECK_FALSE(a.ok("alice", "alice/#", S));
  CHECK(a.ok("alice", "alice/+/x", S));
}

TEST_CASE("decisions: substituted values that would change the topic's shape") {
  Acl a(
      "pattern readwrite users/%u/#\n"
      "pattern readwrite clients/%c/#\n"
      "pattern deny users/%u/admin\n"
      "pattern readwrite id/%i/#\n");
  REQUIRE(a.acl != nullptr);
  // Mosquitto: a username or client id with '+' or '#' gets nothing from any pattern
  CHECK_FALSE(a.ok("a+b", "clients/cid/x", W));
  CHECK_FALSE(a.ok("bob", "users/bob/x", W, "c#"));
  CHECK(a.ok("bob", "users/bob/x", W));
  // mqgate: a '/' (or an empty value) would move the rule into another subtree: such a
  // value grants nothing, and a deny rule with it denies
  CHECK_FALSE(a.ok("alice/x", "users/alice/x/y", W));
  CHECK_FALSE(a.ok("", "users//x", W));
  CHECK_FALSE(a.ok("bob", "clients/a/b/x", W, "a/b"));
  CHECK_FALSE(a.ok("alice/x", "clients/cid/x", W));  // the %u deny rule applies
  // identities may hold '/' (certauth's spiffe URIs); '+' and '#' never
  CHECK(a.ok("u", "id/spiffe:/x/y/#", S, "cid", "spiffe:/x/y") == 1);
  CHECK_FALSE(a.ok("u", "id/x/y", W, "cid", "x+"));
}

TEST_CASE("decisions: a pattern whose first level is empty") {
  // "/a/%u" has the levels "", "a", "%u": substituted, "/a/bob" (not "a/bob")
  Acl a(
      "pattern read /a/%u\n"
      "pattern read /+/x\n"
      "pattern deny /%c/x\n");
  REQUIRE(a.acl != nullptr);
  CHECK(a.ok("bob", "/a/bob", R));
  CHECK(a.ok("bob", "/a/bob", S));
  CHECK_FALSE(a.ok("bob", "a/bob", R));
  CHECK(a.ok("bob", "/other/x", R));
  CHECK_FALSE(a.ok("bob", "/cid/x", R));
  CHECK_FALSE(a.ok("bob", "cid/x", R));
}

TEST_CASE("decisions: no rules for the client, invalid input") {
  Acl empty("");
  REQUIRE(empty.acl != nullptr);
  CHECK_FALSE(empty.ok(nullptr, "a", R));
  CHECK_FALSE(empty.ok("u", "a", W));
  Acl a("user u\ntopic #\n");
  REQUIRE(a.acl != nullptr);
  CHECK(a.ok("u", "a/b", W));
  CHECK(a.ok("u", "#", S));
  CHECK_FALSE(a.ok("u", "$SYS/x", R));  // '#' does not reach '$' topics
  CHECK_FALSE(a.ok("u", "a/+", W));     // not a topic name
  CHECK_FALSE(a.ok("u", "a/#/b", S));   // not a filter
  CHECK_FALSE(a.ok("u", "", W));
  CHECK_FALSE(a.ok(nullptr, "a/b", R));
  CHECK_FALSE(a.ok("u", "a", 3));
}

TEST_CASE("docs/acl.md: the subscription table") {
  struct Case {
    const char* rules;
    const char* user;
    const char* filter;
    bool allowed;
  } cases[] = {
      {"topic read sensors/#", nullptr, "sensors/+/temp", true},
      {"topic read sensors/#", nullptr, "sensors", true},
      {"topic read sensors/+", nullptr, "sensors/#", false},
      {"topic read sensors/+/temp", nullptr, "sensors/+/+", false},
      {"topic read sensors/+/temp", nullptr, "sensors/kitchen/temp", true},
      {"topic read #", nullptr, "$SYS/#", false},
      {"topic read #\ntopic deny secret/#", nullptr, "#", false},
      {"topic read #\ntopic deny secret/#", nullptr, "public/#", true},
      {"pattern read users/%u/#", "bob", "users/bob/#", true},
      {"pattern read users/%u/#", "bob", "users/+/inbox", false},
      // conservative: only the two rules together cover it
      {"topic read a\ntopic read a/+/#", nullptr, "a/#", false},
      {"topic read a\ntopic read a/+/#", nullptr, "a/b/#", true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.rules);
    CAPTURE(c.filter);
    Acl a(std::string(c.rules) + "\n");
    REQUIRE(a.acl != nullptr);
    CHECK(a.ok(c.user, c.filter, S) == c.allowed);
  }
}
