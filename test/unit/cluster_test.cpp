// The cluster's pure parts: the topic <-> subject mapping checked against the
// single-node matcher on many random topics and filters, the envelope (including
// hostile bytes), and the interest reference counts.
#include <doctest/doctest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cluster/envelope.hpp"
#include "cluster/filter_set.hpp"
#include "cluster/gossip.hpp"
#include "cluster/interest.hpp"
#include "cluster/jetstream.hpp"
#include "cluster/subject.hpp"
#include "mqtt/topic.hpp"

using namespace mqgate;
using namespace mqgate::cluster;

namespace {

const std::string kPrefix = message_prefix("c1");

// Levels drawn from the awkward cases: empty, NATS's separator and wildcards, spaces,
// our escape, '$', UTF-8, controls, and plain words (few, so filters match often).
std::string random_level(std::mt19937& rng) {
  static const std::vector<std::string> pool = {
      "",     "a",  "b",  "a.b", "*",  ">",     "a b", "%", "%41", "$x",   "$SYS", "é",
      "日本", "\t", "x>", "*y",  "..", "~!'()", "-_",  "A", "a%",  "\x7f", "+a",   "%%"};
  std::string level = pool[rng() % pool.size()];
  if (level.find('+') != std::string::npos) level = "p";  // not allowed inside a level
  return level;
}

std::string random_topic(std::mt19937& rng) {
  const size_t n = 1 + rng() % 4;
  std::string t;
  for (size_t i = 0; i < n; ++i) {
    if (i) t += '/';
    t += random_level(rng);
  }
  if (t.empty()) t = "/";  // a topic has at least one byte
  return t;
}

std::string random_filter(std::mt19937& rng) {
  const size_t n = 1 + rng() % 4;
  std::string f;
  for (size_t i = 0; i < n; ++i) {
    if (i) f += '/';
    const unsigned r = rng() % 10;
    if (r < 3) {
      f += '+';
    } else if (r < 5 && i == n - 1) {
      f += '#';
    } else {
      f += random_level(rng);
    }
  }
  if (f.empty()) f = "/";
  return f;
}

bool nats_match(const std::string& filter, const std::string& topic) {
  const auto subject = topic_subject(kPrefix, topic);
  REQUIRE(subject);
  for (const auto& pattern : filter_subjects(kPrefix, filter))
    if (subject_matches(pattern, *subject)) return true;
  return false;
}

}  // namespace

TEST_CASE("topic subjects are NATS-safe tokens and decode to the same topic") {
  std::mt19937 rng(23);
  for (int i = 0; i < 20000; ++i) {
    const std::string t = random_topic(rng);
    REQUIRE(is_valid_topic_name(t));
    const auto s = topic_subject(kPrefix, t);
    REQUIRE(s);
    // No empty token, no whitespace or control byte, no wildcard token, ASCII only.
    std::string_view rest = std::string_view(*s).substr(kPrefix.size());
    size_t start = 0;
    for (size_t j = 0; j <= rest.size(); ++j) {
      if (j == rest.size() || rest[j] == '.') {
        const std::string_view tok = rest.substr(start, j - start);
        CHECK(!tok.empty());
        CHECK(tok != "*");
        CHECK(tok != ">");
        start = j + 1;
      } else {
        const auto c = static_cast<unsigned char>(rest[j]);
        CHECK(c > 0x20);
        CHECK(c < 0x7f);
        CHECK(c != '*');
        CHECK(c != '>');
      }
    }
    const auto back = subject_topic(kPrefix, *s);
    REQUIRE(back);
    CHECK(*back == t);
  }
}

TEST_CASE("NATS matching of the encoded forms plus the local re-check is MQTT matching") {
  std::mt19937 rng(2323);
  size_t matched = 0, dollar_overmatch = 0;
  for (int i = 0; i < 60000; ++i) {
    const std::string t = random_topic(rng);
    const std::string f = random_filter(rng);
    REQUIRE(is_valid_topic_filter(f));
    const bool mqtt = topic_matches(f, t);
    const bool nats = nats_match(f, t);
    // NATS never misses a match; it over-matches only where the '$' rule applies, and
    // the receiving node's router (topic_matches) takes those out.
    if (mqtt) CHECK_MESSAGE(nats, "filter " << f << " topic " << t);
    if (nats && !mqtt) {
      CHECK_MESSAGE(t[0] == '$', "filter " << f << " topic " << t);
      CHECK((f[0] == '+' || f[0] == '#'));
      ++dollar_overmatch;
    }
    CHECK((nats && topic_matches(f, t)) == mqtt);
    matched += mqtt;
  }
  CHECK(matched > 1000);  // the random cases do exercise matches
  CHECK(dollar_overmatch > 10);
}

TEST_CASE("filter subjects: '+' and '#' and the parent level") {
  CHECK(filter_subjects(kPrefix, "#") == std::vector<std::string>{kPrefix + ">"});
  CHECK(filter_subjects(kPrefix, "a/#") ==
        std::vector<std::string>{kPrefix + "a", kPrefix + "a.>"});
  CHECK(filter_subjects(kPrefix, "+/b") == std::vector<std::string>{kPrefix + "*.b"});
  CHECK(filter_subjects(kPrefix, "/#") == std::vector<std::string>{kPrefix + "%", kPrefix + "%.>"});
  CHECK(*topic_subject(kPrefix, "/") == kPrefix + "%.%");
  CHECK(*topic_subject(kPrefix, "a.b/*/>/ /%") == kPrefix + "a%2Eb.%2A.%3E.%20.%25");
  CHECK(nats_match("a/#", "a"));
  CHECK(nats_match("+/+", "/"));
  CHECK(!nats_match("a/+", "a"));
}

TEST_CASE("subjects that are not encoded topics are refused") {
  for (const char* bad : {"mqgate.c1.m.", "mqgate.c2.m.a", "mqgate.c1.m.a..b", "mqgate.c1.m.*",
                          "mqgate.c1.m.a.>", "mqgate.c1.m.%4", "mqgate.c1.m.%zz", "mqgate.c1.m.%41",
                          "mqgate.c1.m.%2e", "mqgate.c1.m.a b", "other"})
    CHECK_MESSAGE(!subject_topic(kPrefix, bad), bad);
  CHECK(*subject_topic(kPrefix, "mqgate.c1.m.%") == "");
}

TEST_CASE("over-long topics and filters have no subject") {
  const std::string long_topic(kMaxSubjectBytes, 'x');
  CHECK(!topic_subject(kPrefix, long_topic));
  CHECK(filter_subjects(kPrefix, long_topic + "/#").empty());
  CHECK(topic_subject(kPrefix, std::string(1000, 'x')));
}

TEST_CASE("envelope round trip") {
  const std::string props("\x03\x00\x04text\x26\x00\x01k\x00\x01v", 14);
  Envelope e;
  e.qos = 2;
  e.retain = true;
  e.expiry_s = 77;
  e.instance = 0x0102030405060708ull;
  e.sequence = 42;
  e.node = "a";
  e.client_id = "pub-1";
  e.props = props;
  e.payload = std::string_view("\0payload", 8);
  std::string wire;
  encode_envelope(wire, e);
  Envelope d;
  const char* why = "";
  REQUIRE(decode_envelope(wire, d, why));
  CHECK(d.qos == 2);
  CHECK(d.retain);
  CHECK(d.expiry_s == 77u);
  CHECK(d.instance == e.instance);
  CHECK(d.sequence == 42);
  CHECK(d.node == "a");
  CHECK(d.client_id == "pub-1");
  CHECK(d.props == props);
  CHECK(d.payload == e.payload);
  CHECK(envelope_qos(wire) == 2);
}

TEST_CASE("hostile envelopes are refused, never read past the end") {
  Envelope e;
  e.qos = 1;
  e.node = "n";
  e.payload = "p";
  std::string wire;
  encode_envelope(wire, e);
  Envelope d;
  const char* why = "";
  for (size_t n = 0; n < wire.size() - 1; ++n)  // every truncation of the header
    CHECK(!decode_envelope(std::string_view(wire).substr(0, n), d, why));
  std::string bad = wire;
  bad[0] = 9;  // version
  CHECK(!decode_envelope(bad, d, why));
  bad = wire;
  bad[1] = 3;  // QoS 3
  CHECK(!decode_envelope(bad, d, why));
  // Properties that are not forwarded ones (a Topic Alias), or malformed.
  for (const std::string& props : {std::string("\x23\x00\x01", 3), std::string("\x26\x00", 2),
                                   std::string("\x02\x00\x00\x00\x05", 5)}) {
    Envelope p = e;
    p.props = props;
    std::string w;
    encode_envelope(w, p);
    CHECK(!decode_envelope(w, d, why));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {  // random bytes: refused or decoded, within bounds
    std::string junk(rng() % 64, '\0');
    for (char& c : junk)
      c = static_cast<char>(rng());
    if (!junk.empty()) junk[0] = 1;
    if (decode_envelope(junk, d, why)) {
      CHECK(d.payload.data() >= junk.data());
      CHECK(d.payload.data() + d.payload.size() <= junk.data() + junk.size());
    }
  }
}

TEST_CASE("interest is counted per filter, not per subscription") {
  Interest in;
  CHECK(in.add("a/+"));
  CHECK(!in.add("a/+"));
  CHECK(in.add("a/#"));
  CHECK(in.size() == 2);
  CHECK(!in.remove("a/+"));
  CHECK(in.remove("a/+"));
  CHECK(!in.remove("a/+"));
  CHECK(!in.remove("never"));
  CHECK(in.size() == 1);
  CHECK(in.count("a/#") == 1);
}

TEST_CASE("the merged filter set matches exactly as MQTT does, while filters come and go") {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    FilterSet set;
    std::multiset<std::string> held;
    for (int i = 0; i < 1 + static_cast<int>(rng() % 12); ++i) {
      std::string f = random_filter(rng);
      if (!is_valid_topic_filter(f)) continue;
      set.add(f);
      held.insert(f);
    }
    // Remove some (one copy each), and some never added.
    for (int i = 0; i < 3 && !held.empty(); ++i) {
      auto it = held.begin();
      std::advance(it, rng() % held.size());
      CHECK(set.remove(*it));
      held.erase(it);
    }
    CHECK_FALSE(set.remove("never/added/#/x"));
    CHECK(set.size() == std::set<std::string>(held.begin(), held.end()).size());
    for (int t = 0; t < 50; ++t) {
      const std::string topic = random_topic(rng);
      if (!is_valid_topic_name(topic)) continue;
      bool expected = false;
      for (const auto& f : held)
        expected = expected || topic_matches(f, topic);
      INFO("topic " << topic);
      CHECK(set.matches(topic) == expected);
    }
  }
}

TEST_CASE("the filter set: '#' matches the parent level, '$' topics only literally") {
  FilterSet set;
  CHECK_FALSE(set.matches("a"));
  set.add("a/#");
  CHECK(set.matches("a"));
  CHECK(set.matches("a/b/c"));
  CHECK_FALSE(set.matches("b"));
  set.add("#");
  CHECK(set.matches("b"));
  CHECK_FALSE(set.matches("$SYS/x"));
  set.add("+/x");
  CHECK_FALSE(set.matches("$SYS/x"));
  set.add("$SYS/+");
  CHECK(set.matches("$SYS/x"));
  CHECK(set.remove("#"));
  CHECK_FALSE(set.matches("b"));
  CHECK(set.remove("a/#"));
  CHECK_FALSE(set.matches("a"));
  CHECK(set.size() == 2);
}

namespace {

// Several Gossip instances and a bus between them that can lose, hold or reorder.
struct GossipNet {
  struct Node {
    std::unique_ptr<Gossip> g;
    bool up = true;
  };
  std::map<uint64_t, Node> nodes;
  uint64_t now = 1000;
  std::deque<std::pair<std::string, std::string>> wire;  // subject, data
  std::function<bool(const std::string&)> lose;          // drop this message?

  Gossip& add(uint64_t instance) {
    auto& n = nodes[instance];
    n.g = std::make_unique<Gossip>("mqgate.c.ctl.", "node" + std::to_string(instance), instance);
    n.g->connected(now);
    collect();
    return *n.g;
  }
  void collect() {
    for (auto& [id, n] : nodes)
      for (auto& m : n.g->take_sends())
        if (n.up && !(lose && lose(m.data))) wire.emplace_back(m.subject, m.data);
  }
  // Delivers everything (and what that causes) to the subscribers of each subject.
  void settle() {
    for (int guard = 0; guard < 10000 && !wire.empty(); ++guard) {
      auto [subject, data] = wire.front();
      wire.pop_front();
      for (auto& [id, n] : nodes)
        if (n.up && (subject == n.g->broadcast_subject() || subject == n.g->own_subject()))
          n.g->on_message(data, now);
      collect();
    }
  }
  void advance(uint64_t ms) {
    for (uint64_t t = 0; t < ms; t += 250) {
      now += 250;
      for (auto& [id, n] : nodes)
        n.g->tick(now);
      collect();
      settle();
    }
  }
};

}  // namespace

TEST_CASE("gossip: each node learns the others' filters and publishes only what is wanted") {
  GossipNet net;
  Gossip& a = net.add(1);
  Gossip& b = net.add(2);
  Gossip& c = net.add(3);
  net.settle();
  CHECK_FALSE(a.certain());  // warming up: everything goes out
  CHECK(a.wanted("x/y"));
  net.advance(2000);
  REQUIRE(a.certain());
  CHECK(a.nodes() == 2);
  CHECK_FALSE(a.wanted("x/y"));
  // b subscribes: its SUBACK waits for a's and c's acknowledgements.
  const uint64_t wait = b.local_add("x/+", net.now);
  CHECK(wait > b.settled());
  net.collect();
  net.settle();
  CHECK(b.settled() >= wait);
  CHECK(a.wanted("x/y"));
  CHECK(c.wanted("x/y"));
  CHECK_FALSE(a.wanted("x/y/z"));
  CHECK_FALSE(b.wanted("x/y"));  // its own filters do not count
  b.local_remove("x/+", net.now);
  net.collect();
  net.settle();
  CHECK_FALSE(a.wanted("x/y"));
  CHECK(a.certain());
}

TEST_CASE("gossip: QoS 1/2 go to the nodes that want them; unsure, to every node known") {
  GossipNet net;
  Gossip& a = net.add(1);
  Gossip& b = net.add(2);
  Gossip& c = net.add(3);
  std::vector<std::string_view> nodes;
  net.settle();
  a.wanting("k/1", nodes);  // unsure: every node known, by name
  CHECK(std::set<std::string_view>(nodes.begin(), nodes.end()) ==
        std::set<std::string_view>{"node2", "node3"});
  net.advance(2000);
  REQUIRE(a.certain());
  a.wanting("k/1", nodes);
  CHECK(nodes.empty());
  b.local_add("k/+", net.now);
  c.local_add("k/#", net.now);
  c.local_add("other", net.now);
  net.collect();
  net.settle();
  a.wanting("k/1", nodes);
  CHECK(std::set<std::string_view>(nodes.begin(), nodes.end()) ==
        std::set<std::string_view>{"node2", "node3"});
  a.wanting("k", nodes);  // '#' also matches the parent level
  CHECK(nodes == std::vector<std::string_view>{"node3"});
  a.wanting("other", nodes);
  CHECK(nodes == std::vector<std::string_view>{"node3"});
  // NATS lost while sure: the view as it was (not every node).
  a.disconnected();
  a.wanting("other", nodes);
  CHECK(nodes == std::vector<std::string_view>{"node3"});
  a.wanting("nobody", nodes);
  CHECK(nodes.empty());
}

TEST_CASE("gossip: a lost DELTA is found by the next BEAT and repaired by a snapshot") {
  GossipNet net;
  Gossip& a = net.add(1);
  Gossip& b = net.add(2);
  net.advance(2000);
  REQUIRE(a.certain());
  bool drop = true;
  net.lose = [&](const std::string& d) { return drop && !d.empty() && d[0] == 'D'; };
  const uint64_t wait = b.local_add("lost/#", net.now);
  net.collect();
  net.settle();
  drop = false;
  // No acknowledgement came: the SUBACK waits, at most ack_wait_ms.
  CHECK(b.settled() < wait);
  CHECK_FALSE(a.wanted("lost/x"));
  net.advance(1250);  // a BEAT from b: a sees the gap, asks, gets the snapshot
  CHECK(b.settled() >= wait);
  CHECK(a.certain());
  CHECK(a.wanted("lost/x"));
  CHECK(a.stats().resyncs >= 1);
  CHECK(b.stats().ack_timeouts == 1);
}

TEST_CASE("gossip: while unsure of a node, everything is published; silent nodes are forgotten") {
  GossipNet net;
  Gossip& a = net.add(1);
  net.add(2);
  net.advance(2000);
  REQUIRE(a.certain());
  // A third node's first message: a is unsure until its snapshot comes.
  net.nodes[3].g = std::make_unique<Gossip>("mqgate.c.ctl.", "node3", 3);
  Gossip& c = *net.nodes[3].g;
  c.connected(net.now);
  c.local_add("only/c", net.now);
  net.collect();
  // Deliver just the first message (the HELLO) to a.
  auto first = net.wire.front();
  net.wire.pop_front();
  a.on_message(first.second, net.now);
  CHECK_FALSE(a.certain());
  CHECK(a.wanted("anything"));
  net.collect();
  net.settle();
  net.advance(2000);
  CHECK(a.certain());
  CHECK(a.wanted("only/c"));
  CHECK(a.nodes() == 2);
  net.nodes[3].up = false;  // c dies without a BYE
  net.advance(11000);
  CHECK(a.nodes() == 1);
  net.advance(2000);  // unsure for a moment after forgetting someone
  CHECK_FALSE(a.wanted("only/c"));
}

TEST_CASE("gossip: a snapshot of many filters comes in parts; a BYE forgets at once") {
  GossipNet net;
  Gossip& a = net.add(1);
  Gossip& b = net.add(2);
  for (int i = 0; i < 30000; ++i)
    b.local_add("devices/" + std::to_string(i) + "/cmd/with/a/longer/filter", net.now);
  net.collect();
  net.settle();
  net.advance(2000);
  // A node joining now gets them all by snapshot (several parts of 256 KiB).
  Gossip& c = net.add(3);
  net.settle();
  net.advance(2000);
  CHECK(c.certain());
  CHECK(c.remote_filters() == 30000);
  CHECK(c.wanted("devices/29999/cmd/with/a/longer/filter"));
  CHECK_FALSE(c.wanted("devices/30000/cmd/with/a/longer/filter"));
  b.leave();
  net.collect();
  net.settle();
  CHECK(a.nodes() == 1);
  CHECK(c.remote_filters() == 0);
}

TEST_CASE("gossip: hostile control messages are counted and change nothing") {
  Gossip g("mqgate.c.ctl.", "n", 1);
  g.connected(0);
  const std::vector<std::string> bad = {
      "",
      "D",
      std::string("D\0\0\0\0\0\0\0\2", 9),                                   // no seq
      std::string("D\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\1\1a/#/b", 23),           // bad filter
      std::string("S\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\0", 25),  // 0 parts
      std::string("Z\0\0\0\0\0\0\0\2", 9),
      std::string("A\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\x09", 17),  // ack of a future seq
  };
  for (const auto& m : bad)
    g.on_message(m, 10);
  CHECK(g.stats().malformed == bad.size());
  CHECK(g.remote_filters() == 0);
  // A node that never said who it is gets no snapshot; a known one asking in a loop gets
  // one per period.
  const std::string request("Q\0\0\0\0\0\0\0\5", 9);
  g.on_message(request, 20);
  CHECK(g.stats().snapshots_sent == 0);
  std::string beat("B\0\0\0\0\0\0\0\5", 9);
  beat.append(24, '\0');
  beat += "n5";
  g.on_message(beat, 20);
  for (int i = 0; i < 10; ++i)
    g.on_message(request, 20);
  CHECK(g.stats().snapshots_sent == 1);
  g.on_message(request, 20 + 1000);
  CHECK(g.stats().snapshots_sent == 2);
}

TEST_CASE("gossip: a second subscriber to a filter whose DELTA is not settled waits as long") {
  GossipNet net;
  Gossip& a = net.add(1);
  Gossip& b = net.add(2);
  net.advance(2000);
  REQUIRE(a.certain());
  const uint64_t wait = b.local_add("same/#", net.now);
  REQUIRE(wait > b.settled());
  CHECK(b.wait_for("same/#") == wait);  // held, but a's ACK has not come
  net.collect();
  net.settle();
  CHECK(b.wait_for("same/#") == 0);
  CHECK(a.wanted("same/x"));
}

TEST_CASE("gossip: a stalled loop forgets nobody; after a stall the node is unsure a moment") {
  GossipNet net;
  Gossip& a = net.add(1);
  net.add(2);
  net.advance(2000);
  REQUIRE(a.certain());
  net.now += 15000;  // the loop did not run for 15 s
  a.tick(net.now);
  CHECK(a.nodes() == 1);
  CHECK_FALSE(a.certain());
  net.collect();
  net.settle();
  net.advance(2000);
  CHECK(a.certain());
  CHECK(a.nodes() == 1);
}

TEST_CASE("gossip: after leave() a reconnection does not bring the node back") {
  Gossip g("mqgate.c.ctl.", "n", 1);
  g.connected(0);
  g.take_sends();
  g.leave();
  auto bye = g.take_sends();
  REQUIRE(bye.size() == 1);
  CHECK(bye[0].data[0] == 'X');
  g.connected(100);
  CHECK(g.take_sends().empty());
  CHECK_FALSE(g.certain());
}

TEST_CASE("JetStream answers: errors and numbers found, hostile bytes only yield text") {
  using mqgate::cluster::jetstream_error;
  using mqgate::cluster::json_number;
  CHECK(jetstream_error(R"({"stream":"MQGATE_x","seq":42})").empty());
  uint64_t seq = 0;
  CHECK(json_number(R"({"stream":"MQGATE_x","seq":42})", "seq", seq));
  CHECK(seq == 42);
  CHECK_FALSE(json_number(R"({"seq":"x"})", "seq", seq));
  CHECK_FALSE(json_number(R"({"seq":)", "seq", seq));
  const std::string e = jetstream_error(
      R"({"error":{"code":400,"err_code":10058,"description":"stream name already in use"}})");
  CHECK(e == "stream name already in use (err_code 10058)");
  CHECK(jetstream_error("{\"error\":{\"description\":\"\x01"
                        "bad") == "?bad");
  CHECK(jetstream_error(R"({"error":{}})") == "an error without a description");
  CHECK(jetstream_error(R"({"error":)") == "an error without a description");
  uint64_t big = 0;
  CHECK(json_number(R"({"n":99999999999999999999999999})", "n", big));  // 20 digits at most
}
