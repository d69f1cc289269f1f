// The cluster's pure parts: the topic <-> subject mapping checked against the
// single-node matcher on many random topics and filters, the envelope (including
// hostile bytes), and the interest reference counts.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "cluster/envelope.hpp"
#include "cluster/interest.hpp"
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
