// Mosquitto ACL files (plugins/acl/aclfile.c): parsing and its refusals, Mosquitto's
// decision rules (checked live against Debian's Mosquitto by
// test/integration/test_acl_parity.py), filter_covers / filter_intersects against a
// brute-force oracle over topic_matches (the matcher itself is checked against a naive
// reference in mqtt_topic_test.cpp), and acl_subscribe_reach against a brute-force
// oracle over acl_check's read decisions.
#include <doctest/doctest.h>

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <random>
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
  // %i is substituted escaped, one level whatever it holds (certauth's hold '/')
  CHECK(a.ok("u", "id/spiffe:%2Fx%2Fy/#", S, "cid", "spiffe:/x/y"));
  CHECK_FALSE(a.ok("u", "id/spiffe:/x/y/#", S, "cid", "spiffe:/x/y"));
  CHECK(a.ok("u", "id/x%2B/y", W, "cid", "x+"));
  CHECK(a.ok("u", "id/x%23%25/y", W, "cid", "x#%"));
  CHECK_FALSE(a.ok("u", "id/x/y", W, "cid", "x+"));
  CHECK_FALSE(a.ok("u", "id//y", W, "cid", ""));  // an empty identity: nothing
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

// ---- acl_subscribe_reach ------------------------------------------------------------------

namespace {

// A set of topics, by index in a list.
struct Bits {
  std::vector<uint64_t> w;
  explicit Bits(size_t n) : w((n + 63) / 64) {}
  void set(size_t i) { w[i / 64] |= uint64_t{1} << (i % 64); }
  bool meets(const Bits& o) const {
    for (size_t i = 0; i < w.size(); i++)
      if (w[i] & o.w[i]) return true;
    return false;
  }
  bool within(const Bits& o) const {
    for (size_t i = 0; i < w.size(); i++)
      if (w[i] & ~o.w[i]) return false;
    return true;
  }
};

std::string reach_name(int r) {
  return r == ACL_REACH_NONE   ? "NONE"
         : r == ACL_REACH_SOME ? "SOME"
         : r == ACL_REACH_ALL  ? "ALL"
                               : "?";
}

int reach(const Acl& a, const char* user, const char* filter, const char* client = "cid",
          const char* identity = nullptr) {
  return acl_subscribe_reach(a.acl, user, client, identity, filter);
}

}  // namespace

TEST_CASE("acl_subscribe_reach agrees with a brute-force oracle over acl_check") {
  // Random small files: own rules (anonymous, user u1) and patterns over the levels a, b,
  // $x, the empty level, '+', '#' (and %u, %c in patterns), every access word. Every
  // filter of up to three levels, for clients whose own list is the anonymous rules, u1's,
  // none (u2: patterns only), or whose patterns are off ('+' in the client id) or have an
  // unsafe value ('/' in the username). The oracle: acl_check(READ) on every topic of up
  // to four levels (one more than any rule or filter) over the literals named, the
  // substituted values, a fresh literal and a fresh '$' literal. No filter here comes near
  // the budget, so every answer must be exact, not just sound.
  const auto filters = sequences({"a", "b", "$x", "", "+", "#", "u1"}, 3);
  const auto topics = sequences({"a", "b", "$x", "", "z", "$z", "u1", "u2", "c1"}, 4);
  std::vector<Bits> matched(filters.size(), Bits(topics.size()));
  for (size_t i = 0; i < filters.size(); i++)
    for (size_t t = 0; t < topics.size(); t++)
      if (acl_topic_matches(filters[i].c_str(), topics[t].c_str())) matched[i].set(t);
  struct Client {
    const char* user;
    const char* client;
  } clients[] = {{nullptr, "c1"}, {"u1", "c1"}, {"u2", "c1"}, {"u1", "c+"}, {"a/b", "c1"}};

  std::mt19937 rng(20261207);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  // Every other file draws on fewer levels with more rules: rules that only together
  // cover a filter, or shut it off, are likelier.
  bool narrow = false;
  auto random_filter = [&](bool pattern) {
    static const char* const wide[] = {"a", "b", "$x", "", "+", "#", "%u", "%c"};
    static const char* const few[] = {"a", "+", "#", "", "%u"};
    for (;;) {
      std::string f;
      for (size_t i = 0, n = 1 + pick(3); i < n; i++)
        f += (i ? "/" : "") +
             std::string(narrow ? few[pick(pattern ? 5 : 4)] : wide[pick(pattern ? 8 : 6)]);
      if (acl_filter_valid(f.c_str())) return f;
    }
  };
  auto random_rules = [&](const char* keyword) {
    static const char* const access[] = {"deny ", "deny ",      "read ",  "read ",
                                         "read ", "readwrite ", "write ", ""};
    std::string out;
    for (size_t i = 0, n = pick(narrow ? 8 : 5); i < n; i++)
      out += std::string(keyword) + " " + access[pick(8)] + random_filter(keyword[0] == 'p') + "\n";
    return out;
  };
  // The same file without its deny rules: a NONE where it reads something is a NONE the
  // deny rules made.
  auto without_denies = [](const std::string& text) {
    std::string out;
    for (size_t b = 0, e; b < text.size(); b = e + 1) {
      e = text.find('\n', b);
      std::string line = text.substr(b, e - b);
      if (line.find(" deny ") == std::string::npos) out += line + "\n";
    }
    return out;
  };

  size_t files = 0, asked = 0, all = 0, none = 0, some = 0, inexact = 0, unsound = 0;
  size_t out_of_steps = 0;
  unsigned long most_steps = 0;
  size_t subscribe_granted = 0, subscribe_unsound = 0, all_beyond_subscribe = 0;
  size_t none_by_denies = 0, none_by_union = 0;
  for (int round = 0; round < 200; round++) {
    narrow = round % 2 == 1;
    std::string text =
        random_rules("topic") + "user u1\n" + random_rules("topic") + random_rules("pattern");
    Acl a(text), open(without_denies(text));
    REQUIRE_MESSAGE(a.acl != nullptr, a.err);
    REQUIRE(open.acl != nullptr);
    files++;
    for (const auto& c : clients) {
      Bits readable(topics.size()), read_rules(topics.size());
      for (size_t t = 0; t < topics.size(); t++) {
        if (acl_check(a.acl, c.user, c.client, nullptr, topics[t].c_str(), R)) readable.set(t);
        if (acl_check(open.acl, c.user, c.client, nullptr, topics[t].c_str(), R)) read_rules.set(t);
      }
      for (size_t i = 0; i < filters.size(); i++) {
        const bool every = matched[i].within(readable), any = matched[i].meets(readable);
        acl_reach_cost cost;
        const int got = acl_subscribe_reach_cost(a.acl, c.user, c.client, nullptr,
                                                 filters[i].c_str(), ACL_REACH_STEPS, &cost);
        CHECK(got == acl_subscribe_reach(a.acl, c.user, c.client, nullptr, filters[i].c_str()));
        out_of_steps += cost.out_of_steps != 0;
        most_steps = std::max(most_steps, cost.steps);
        const int want = every ? ACL_REACH_ALL : any ? ACL_REACH_SOME : ACL_REACH_NONE;
        const bool subscribe = acl_check(a.acl, c.user, c.client, nullptr, filters[i].c_str(), S);
        asked++;
        all += got == ACL_REACH_ALL;
        none += got == ACL_REACH_NONE;
        some += got == ACL_REACH_SOME;
        subscribe_granted += subscribe;
        subscribe_unsound += subscribe && !every;
        all_beyond_subscribe += got == ACL_REACH_ALL && !subscribe;
        if (got == ACL_REACH_NONE && matched[i].meets(read_rules)) {
          none_by_denies++;
          // ...and no deny rule alone, pattern or not, covers the filter
          bool single = false;
          for (size_t b = 0, e; b < text.size(); b = e + 1) {
            e = text.find('\n', b);
            std::string line = text.substr(b, e - b);
            if (line.find(" deny ") == std::string::npos) continue;
            std::string rule = line.substr(line.find(" deny ") + 6);
            for (auto [from, to] :
                 {std::pair<std::string, const char*>{"%u", c.user}, {"%c", c.client}})
              for (size_t at; to && (at = rule.find(from)) != std::string::npos;)
                rule.replace(at, 2, to);
            single |= filter_covers(rule.c_str(), filters[i].c_str()) == 1;
          }
          none_by_union += !single;
        }
        const bool sound = (got != ACL_REACH_ALL || every) && (got != ACL_REACH_NONE || !any);
        unsound += !sound;
        inexact += got != want;
        if (got != want && inexact <= 10)
          FAIL_CHECK("reach(" << std::string(c.user ? c.user : "(anonymous)") << ", "
                              << std::string(c.client) << ", \"" << filters[i]
                              << "\") = " << reach_name(got) << ", the oracle says "
                              << reach_name(want) << std::string(sound ? "" : " (UNSOUND)") << "\n"
                              << text);
      }
    }
  }
  MESSAGE(files << " files, " << asked << " questions over " << filters.size() << " filters and "
                << topics.size() << " topics: " << all << " ALL, " << some << " SOME, " << none
                << " NONE (" << none_by_denies << " made by deny rules, " << none_by_union
                << " of them by no single one); ACL_SUBSCRIBE granted " << subscribe_granted << ", "
                << all_beyond_subscribe << " ALL it refuses; at most " << most_steps
                << " steps of the " << ACL_REACH_STEPS << " the search may take");
  CHECK(out_of_steps == 0);  // exact because within the budget, with room to spare
  CHECK(unsound == 0);
  CHECK(inexact == 0);
  CHECK(subscribe_unsound == 0);  // the old check stays sound: it only grants ALL filters
  CHECK(all > 1000);              // the random files must exercise every answer
  CHECK(none > 1000);
  CHECK(some > 1000);
  CHECK(all_beyond_subscribe > 0);
  CHECK(none_by_union > 0);
}

TEST_CASE("acl_subscribe_reach: issue 21's examples") {
  Acl a("topic readwrite #\ntopic deny secrets/#\n");
  REQUIRE(a.acl != nullptr);
  CHECK(reach(a, nullptr, "#") == ACL_REACH_SOME);  // secrets/x is denied, a/b is not
  CHECK(reach(a, nullptr, "+/+") == ACL_REACH_SOME);
  CHECK(reach(a, nullptr, "sensors/+") == ACL_REACH_ALL);
  CHECK(reach(a, nullptr, "secrets/#") == ACL_REACH_NONE);
  CHECK(reach(a, nullptr, "secrets") == ACL_REACH_NONE);  // secrets/# matches its parent
  CHECK(reach(a, nullptr, "secrets/+/x") == ACL_REACH_NONE);
  CHECK(reach(a, nullptr, "$SYS/#") == ACL_REACH_NONE);  // '#' in a rule does not reach '$'
  CHECK(reach(a, nullptr, "a/#/b") == ACL_REACH_NONE);   // not a filter
  CHECK(reach(a, "bob", "#") == ACL_REACH_NONE);         // bob has no rules
  CHECK(acl_subscribe_reach(nullptr, nullptr, "c", nullptr, "#") == ACL_REACH_NONE);
  CHECK(acl_subscribe_reach(a.acl, nullptr, "c", nullptr, nullptr) == ACL_REACH_NONE);
}

TEST_CASE("acl_subscribe_reach: several rules together") {
  // The ALL and NONE answers acl_check(ACL_SUBSCRIBE), one rule at a time, cannot give.
  Acl a(
      "topic read a\n"
      "topic read a/+/#\n"
      "topic read b/#\n"
      "topic deny b/x\n"
      "topic deny b/+/+/#\n"
      "topic read c/#\n"
      "topic deny c/+\n"
      "topic deny c/+/+/+/#\n");
  REQUIRE(a.acl != nullptr);
  CHECK(reach(a, nullptr, "a/#") == ACL_REACH_ALL);  // a, and a/x/... : both rules
  CHECK_FALSE(a.ok(nullptr, "a/#", S));
  CHECK(reach(a, nullptr, "b/x/#") == ACL_REACH_NONE);  // b/x, and b/x/y...: both denies
  CHECK(reach(a, nullptr, "b/#") == ACL_REACH_SOME);    // b, b/y
  CHECK(reach(a, nullptr, "b/+") == ACL_REACH_SOME);    // b/y
  CHECK(reach(a, nullptr, "b/y") == ACL_REACH_ALL);
  CHECK(reach(a, nullptr, "c/+/#") == ACL_REACH_SOME);  // only c/y/z, between the denies
  CHECK(reach(a, nullptr, "c/+/+") == ACL_REACH_ALL);
  CHECK(reach(a, nullptr, "c/+/+/+") == ACL_REACH_NONE);  // "#" matches its parent
  CHECK(reach(a, nullptr, "c/+/+/#") == ACL_REACH_SOME);
  // a deny pattern only matters where the own list does not read: here it reads a/a
  Acl m("topic read a/+\npattern read a/#\npattern deny a/a\n");
  REQUIRE(m.acl != nullptr);
  CHECK(reach(m, nullptr, "a/#") == ACL_REACH_ALL);
  CHECK_FALSE(m.ok(nullptr, "a/#", S));
  CHECK(reach(m, "bob", "a/#") == ACL_REACH_SOME);  // no own list: a/a is denied
  // '#' matches its parent, except the empty topic: "/#" never matches ""
  Acl b("topic read #\ntopic deny /+/#\n");
  REQUIRE(b.acl != nullptr);
  CHECK(reach(b, nullptr, "/#") == ACL_REACH_NONE);  // "/" and "/x/...", not ""
  CHECK(reach(b, nullptr, "+/#") == ACL_REACH_SOME);
  CHECK(reach(b, nullptr, "+") == ACL_REACH_ALL);
  // the empty level is a level like any other
  Acl e("topic read +/#\ntopic deny /#\n");
  REQUIRE(e.acl != nullptr);
  CHECK(reach(e, nullptr, "+") == ACL_REACH_ALL);  // one level: not "", so not under "/"
  CHECK(reach(e, nullptr, "+/+") == ACL_REACH_SOME);
  CHECK(reach(e, nullptr, "/+") == ACL_REACH_NONE);
}

TEST_CASE("acl_subscribe_reach: the own list answers first, then the patterns") {
  Acl a(
      "user alice\n"
      "topic deny alice/secret\n"
      "topic read shared/#\n"
      "pattern read %u/#\n"
      "pattern read users/%u/#\n"
      "pattern deny users/%u/private/#\n"
      "pattern readwrite clients/%c/#\n"
      "pattern deny shared/x\n"
      "pattern read id/%i/#\n");
  REQUIRE(a.acl != nullptr);
  // alice's deny is final, even where a pattern grants
  CHECK(reach(a, "alice", "alice/#") == ACL_REACH_SOME);
  CHECK(reach(a, "alice", "alice/secret") == ACL_REACH_NONE);
  CHECK(reach(a, "alice", "alice/x/#") == ACL_REACH_ALL);
  // her read is final too: the deny pattern does not take shared/x from her
  CHECK(reach(a, "alice", "shared/#") == ACL_REACH_ALL);
  CHECK(reach(a, "bob", "shared/#") == ACL_REACH_NONE);  // bob has no list, no pattern for it
  // %u
  CHECK(reach(a, "bob", "users/bob/#") == ACL_REACH_SOME);
  CHECK(reach(a, "bob", "users/bob/public/#") == ACL_REACH_ALL);
  CHECK(reach(a, "bob", "users/bob/private/+") == ACL_REACH_NONE);
  CHECK(reach(a, "bob", "users/+/inbox") == ACL_REACH_SOME);  // users/bob/inbox only
  CHECK(reach(a, "bob", "users/alice/#") == ACL_REACH_NONE);
  CHECK(reach(a, nullptr, "users/+/x") == ACL_REACH_NONE);  // no username: no %u pattern
  // %c
  CHECK(reach(a, "bob", "clients/c1/+", "c1") == ACL_REACH_ALL);
  CHECK(reach(a, "bob", "clients/+/x", "c1") == ACL_REACH_SOME);
  CHECK(reach(a, "bob", "clients/c2/#", "c1") == ACL_REACH_NONE);
  // '+' or '#' in the username or client id: no pattern at all
  CHECK(reach(a, "b+b", "b+b/#") == ACL_REACH_NONE);
  CHECK(reach(a, "bob", "clients/c#/x", "c#") == ACL_REACH_NONE);
  // '/' in %u: the %u patterns grant nothing, and the %u deny pattern denies everything
  CHECK(reach(a, "bob/x", "clients/c1/#", "c1") == ACL_REACH_NONE);
  // %i is one level, its '/' escaped; no identity: no %i pattern
  CHECK(reach(a, "bob", "id/x%2Fy/#", "c1", "x/y") == ACL_REACH_ALL);
  CHECK(reach(a, "bob", "id/x/y/#", "c1", "x/y") == ACL_REACH_NONE);
  CHECK(reach(a, "bob", "id/+/#", "c1", "x/y") == ACL_REACH_SOME);
  CHECK(reach(a, "bob", "id/x/y/#", "c1", nullptr) == ACL_REACH_NONE);
}

TEST_CASE("decisions: %i does not reach into another identity's subtree (issue 22)") {
  // passwd's identity is "passwd:<username>", and a username may hold '/': user "eve/x"
  // must not get "ids/passwd:eve/x/...", which is inside user eve's "ids/passwd:eve/#".
  Acl a("pattern readwrite ids/%i/#\npattern deny ids/%i/locked\n");
  REQUIRE(a.acl != nullptr);
  CHECK(a.ok("eve", "ids/passwd:eve/x/y", W, "c1", "passwd:eve"));
  CHECK_FALSE(a.ok("eve/x", "ids/passwd:eve/x/y", W, "c2", "passwd:eve/x"));
  CHECK_FALSE(a.ok("eve/x", "ids/passwd:eve/x/y", R, "c2", "passwd:eve/x"));
  CHECK_FALSE(a.ok("eve/x", "ids/passwd:eve/x/#", S, "c2", "passwd:eve/x"));
  CHECK_FALSE(a.ok("eve/x", "ids/passwd:eve/#", S, "c2", "passwd:eve/x"));
  CHECK(reach(a, "eve/x", "ids/passwd:eve/#", "c2", "passwd:eve/x") == ACL_REACH_NONE);
  CHECK(reach(a, "eve/x", "ids/passwd:eve/x/#", "c2", "passwd:eve/x") == ACL_REACH_NONE);
  CHECK(reach(a, "eve/x", "ids/passwd:eve/+/#", "c2", "passwd:eve/x") == ACL_REACH_NONE);
  // its own subtree, one level: "passwd:eve%2Fx"
  CHECK(a.ok("eve/x", "ids/passwd:eve%2Fx/y", W, "c2", "passwd:eve/x"));
  CHECK(reach(a, "eve/x", "ids/passwd:eve%2Fx/y/#", "c2", "passwd:eve/x") == ACL_REACH_ALL);
  CHECK(reach(a, "eve/x", "ids/#", "c2", "passwd:eve/x") == ACL_REACH_SOME);
  // a deny pattern applies to the escaped value too
  CHECK_FALSE(a.ok("eve/x", "ids/passwd:eve%2Fx/locked", W, "c2", "passwd:eve/x"));
  // eve's deny pattern is not moved either: eve/x's "locked" is not eve's "x/locked"
  CHECK(a.ok("eve", "ids/passwd:eve/x/locked", W, "c1", "passwd:eve"));
  // escaping is one to one: "%" is escaped too, so "a%2Fb" is not "a/b"
  CHECK_FALSE(a.ok("u", "ids/a%2Fb/y", W, "c3", "a%2Fb"));
  CHECK(a.ok("u", "ids/a%252Fb/y", W, "c3", "a%2Fb"));
  // wildcards in an identity never become wildcards in the rule
  CHECK_FALSE(a.ok("u", "ids/a/y", W, "c3", "#"));
  CHECK_FALSE(a.ok("u", "ids/anything/y", W, "c3", "+"));
  CHECK(reach(a, "u", "ids/#", "c3", "#") == ACL_REACH_SOME);
  CHECK(reach(a, "u", "ids/%23/#", "c3", "#") == ACL_REACH_SOME);  // all but %23/locked
}

TEST_CASE("acl_subscribe_reach: hostile filters end, with a safe answer") {
  // A client chooses the filter (up to 65,535 bytes): thousands of levels must neither
  // overflow a stack nor run unbounded. When the search runs out of steps, SOME.
  std::string plus;
  for (int i = 0; i < 20000; i++)
    plus += i ? "/+" : "+";
  std::string text = "topic read #\n";
  for (int i = 0; i < 50; i++) {
    std::string rule;
    for (int l = 0; l < 20000; l++)
      rule += (l ? "/" : "") + std::string(l == 7 + i * 397 ? "x" : "+");
    text += "topic deny " + rule + "\n";
  }
  Acl a(text);
  REQUIRE_MESSAGE(a.acl != nullptr, a.err);
  CHECK(reach(a, nullptr, plus.c_str()) == ACL_REACH_SOME);  // z/z/... read, x/... denied
  // the same rules as reads: is some topic unreadable? z/z/... is, too deep to look
  std::string reads = "topic read #\n";
  for (size_t pos = 0; (pos = text.find("topic deny ", pos)) != std::string::npos; pos++)
    reads += "topic read " + text.substr(pos + 11, text.find('\n', pos) - pos - 11) + "\n";
  Acl b(reads.substr(13));  // without "topic read #"
  REQUIRE_MESSAGE(b.acl != nullptr, b.err);
  CHECK(reach(b, nullptr, plus.c_str()) == ACL_REACH_SOME);
  // the longest filter there is: 32,768 levels, none of them a problem
  std::string longest = plus;
  while (longest.size() + 2 <= 65535)
    longest += "/+";
  CHECK(reach(a, nullptr, longest.c_str()) == ACL_REACH_ALL);  // no deny has that many levels
  CHECK(reach(b, nullptr, longest.c_str()) == ACL_REACH_NONE);
  CHECK(reach(a, nullptr, "+/+/+/+/+/#") == ACL_REACH_SOME);  // under the denies' levels
  CHECK(reach(b, nullptr, "+/+/+/+/+/#") == ACL_REACH_SOME);
  // a search that branches at every level: "a" or anything else, 14 levels, every branch
  // but one shut by a deny rule only at the end
  std::string branchy = "topic read #\n";
  std::string f14;
  for (int i = 0; i < 14; i++)
    f14 += i ? "/+" : "+";
  for (int i = 0; i < 14; i++) {
    std::string rule;
    for (int l = 0; l < 14; l++)
      rule += (l ? "/" : "") + std::string(l == i ? "a" : "+");
    branchy += "topic deny " + rule + "\n";
  }
  Acl c(branchy);
  REQUIRE(c.acl != nullptr);
  CHECK(reach(c, nullptr, f14.c_str()) == ACL_REACH_SOME);  // z/z/.../z
}

TEST_CASE("acl_subscribe_reach: what a call costs is bounded (work counted, not timed)") {
  // The setup relates each rule to the filter once: a step per level of the rule (and per
  // 32 bytes), so at most about the file's size, whatever the filter. The filter's
  // generic topic then rules out one of the two questions; the other stops at the first
  // charge past its budget, and a charge is at most a frame's cursors or one level.
  auto level_i = [](int i, int levels, const char* literal) {
    std::string rule;
    for (int l = 0; l < levels; l++)
      rule += (l ? "/" : "") + std::string(l == i % levels ? literal : "+");
    return rule;
  };
  std::string f200 = "+";
  for (int l = 1; l < 200; l++)
    f200 += "/+";
  {  // 200 deny rules that each take "a" at their own level: z/z/.../z is readable, one
    // deny meets the filter: SOME, without a search
    std::string text = "topic read #\n";
    for (int i = 0; i < 200; i++)
      text += "topic deny " + level_i(i, 200, "a") + "\n";
    Acl a(text);
    REQUIRE(a.acl != nullptr);
    acl_reach_cost cost;
    CHECK(acl_subscribe_reach_cost(a.acl, nullptr, "c", nullptr, f200.c_str(), ACL_REACH_STEPS,
                                   &cost) == ACL_REACH_SOME);
    CHECK(cost.steps == 0);
    CHECK(cost.setup >= 200 * 200);  // every rule meets the filter at every level...
    CHECK(cost.setup <= text.size() + f200.size());  // ...and is walked once
  }
  // Is some topic unreadable? Own reads that each need "a" at their level, deny patterns
  // that each take "b" at theirs, "#" read by a pattern: b/z/.../z is, 200 levels down.
  std::string text = "user u\n";
  for (int i = 0; i < 200; i++)
    text += "topic read " + level_i(i, 200, "a") + "\n";
  text += "pattern read #\n";
  for (int i = 0; i < 200; i++)
    text += "pattern deny " + level_i(i, 200, "b") + "\n";
  Acl a(text);
  REQUIRE(a.acl != nullptr);
  const unsigned long slack = 200 + 16;
  for (long budget : {0L, 100L, ACL_REACH_STEPS, 20000L}) {
    CAPTURE(budget);
    acl_reach_cost cost;
    CHECK(acl_subscribe_reach_cost(a.acl, "u", "c", nullptr, f200.c_str(), budget, &cost) ==
          ACL_REACH_SOME);
    CHECK(cost.out_of_steps);
    CHECK(cost.steps <= static_cast<unsigned long>(budget) + slack);
    CHECK(cost.setup <= text.size() + f200.size());
  }
  {  // with room enough the search ends on its own, with the same answer
    acl_reach_cost cost;
    CHECK(acl_subscribe_reach_cost(a.acl, "u", "c", nullptr, f200.c_str(), 1000000L, &cost) ==
          ACL_REACH_SOME);
    CHECK_FALSE(cost.out_of_steps);
    CHECK(cost.steps > static_cast<unsigned long>(ACL_REACH_STEPS));
  }
  {  // the rules' walk does not grow with the filter's length: one level of 60,000 bytes
    // against 1,000 rules is a level or two per rule
    std::string many = "topic read #\n", longest(60000, 'x');
    for (int i = 0; i < 1000; i++)
      many += "topic deny +/a" + std::to_string(i) + "\n";
    Acl m(many);
    REQUIRE(m.acl != nullptr);
    acl_reach_cost cost;
    CHECK(acl_subscribe_reach_cost(m.acl, nullptr, "c", nullptr, longest.c_str(), ACL_REACH_STEPS,
                                   &cost) == ACL_REACH_ALL);
    CHECK(cost.setup <= 3 * 1000 + longest.size() / 32);
    CHECK(cost.steps == 0);  // no deny meets it, "#" covers it: nothing to search
  }
  {  // answers the setup alone decides spend no step, on any budget
    Acl d("topic read #\ntopic deny secrets/#\n");
    REQUIRE(d.acl != nullptr);
    acl_reach_cost cost;
    CHECK(acl_subscribe_reach_cost(d.acl, nullptr, "c", nullptr, "sensors/#", 0, &cost) ==
          ACL_REACH_ALL);
    CHECK(cost.steps == 0);
    CHECK(acl_subscribe_reach_cost(d.acl, nullptr, "c", nullptr, "secrets/+/x", 0, &cost) ==
          ACL_REACH_NONE);
    CHECK(cost.steps == 0);
    CHECK_FALSE(cost.out_of_steps);
  }
}
