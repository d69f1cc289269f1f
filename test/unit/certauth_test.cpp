// The certauth plugin (plugins/certauth/certauth.c), loaded as the built certauth.so by
// the real PluginHost from a parsed configuration, and asked about fake clients that
// carry a TLS peer chain. Certificates are made at run time by test/lib/x509_builder
// (mbedTLS's x509write, any subjectAltName we like, as raw DER) and, for one case, with
// the openssl command line in a temporary directory; nothing is written to the source
// tree.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../lib/x509_builder.hpp"
#include "broker/broker.hpp"
#include "config/config.hpp"
#include "fake_client.hpp"
#include "plugin/host.hpp"

using namespace mqgate;
using namespace mqgate::test;
using codec::PacketType;
using namespace mqgate::test::x509;

namespace {

constexpr const char* kDomain = "my.domain.name";

std::string device_uri(std::string_view id, std::string_view domain = kDomain) {
  return "spiffe://" + std::string(domain) + "/device/" + std::string(id);
}

// What device_creds makes: URI spiffe://<domain>/device/<id> and DNS <id>.local.
std::string device_cert(std::string_view id, std::string_view domain = kDomain) {
  return cert_with_san({uri(device_uri(id, domain)), dns(std::string(id) + ".local")});
}

// What server_creds makes: DNS <cn> and IP 127.0.0.1, no URI.
std::string server_cert() {
  return cert_with_san({dns(kDomain), ipv4(127, 0, 0, 1)}, kDomain);
}

// --- the broker side --------------------------------------------------------------------

std::string plugin_dir() {
  return PluginHost::default_plugin_dir();
}

// The seed's configuration: one TLS listener served by certauth only.
std::string seed_config(const std::string& certauth_options) {
  return "plugin_dir = \"" + plugin_dir() +
         "\"\n"
         "[listeners.ssl-mqtt]\n"
         "bind = \"127.0.0.1:0\"\n"
         "plugins = [\"certauth\"]\n"
         "[plugins.certauth]\n" +
         certauth_options;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : "\n") + s;
  return out;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// A configuration, the plugin host that loaded it, and a broker asking that host.
struct Harness {
  std::optional<Config> config;
  PluginHost host;
  std::unique_ptr<Broker> broker;

  explicit Harness(const std::string& text) {
    std::vector<std::string> errors;
    config = parse_config(text, "/tmp/certauth-test.toml", errors);
    REQUIRE_MESSAGE(config, join(errors));
    struct stat st;
    REQUIRE_MESSAGE(::stat((plugin_dir() + "/certauth.so").c_str(), &st) == 0,
                    "certauth.so is not built in " << plugin_dir());
    REQUIRE_MESSAGE(host.load(*config, errors), join(errors));
    broker = std::make_unique<Broker>(config->limits, host);
  }

  // A client on listener `listener` presenting `chain` (leaf first); no TLS at all if
  // `tls` is false.
  std::unique_ptr<FakeClient> client(const std::vector<std::string>& chain, bool tls = true,
                                     size_t listener = 0) {
    auto c = std::make_unique<FakeClient>(*broker, &config->listeners.at(listener));
    if (tls) {
      auto info = std::make_unique<TlsPeerInfo>();
      info->chain_der = chain;
      for (const auto& d : info->chain_der)
        info->chain.push_back({reinterpret_cast<const uint8_t*>(d.data()), d.size()});
      info->version = "TLSv1.2";
      info->cipher = "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256";
      c->set_tls(std::move(info));
    }
    return c;
  }

  // Asks the host about a CONNECT with client id `id` (empty: the broker generated one).
  AuthResult authenticate(FakeClient& c, std::string_view id) {
    codec::Connect conn;
    conn.protocol_name = "MQTT";
    conn.protocol_level = 4;
    conn.clean_session = true;
    conn.keepalive = 60;
    conn.client_id = id;
    c.set_client_id(id.empty() ? std::string("mqgate-00c0ffee00c0ffee") : std::string(id));
    return host.authenticate(c, conn);
  }

  // One client, one CONNECT: the host's answer.
  AuthResult check(const std::string& leaf, std::string_view id) {
    auto c = client({leaf});
    return authenticate(*c, id);
  }

  AuthResult publish(FakeClient& c, std::string_view topic, bool retain = false) {
    return host.authorize(c, topic, AuthAction::kPublish, 0, retain);
  }
  AuthResult subscribe(FakeClient& c, std::string_view filter) {
    return host.authorize(c, filter, AuthAction::kSubscribe, 0, false);
  }
  AuthResult retained(FakeClient& c, std::string_view topic) {
    return host.authorize(c, topic, AuthAction::kReceive, 0, true);
  }

  // A client that certauth let in as `id` (with its device certificate).
  std::unique_ptr<FakeClient> authenticated(std::string_view id, size_t listener = 0,
                                            std::string_view domain = kDomain) {
    auto c = client({device_cert(id, domain)}, true, listener);
    AuthResult r = authenticate(*c, id);
    REQUIRE_MESSAGE(r.allowed, r.reason);
    return c;
  }
};

// The init errors of a configuration whose certauth table is `options`.
std::string load_error(const std::string& options) {
  std::vector<std::string> errors;
  auto config = parse_config(seed_config(options), "/tmp/certauth-test.toml", errors);
  REQUIRE_MESSAGE(config, join(errors));
  PluginHost host;
  CHECK_FALSE(host.load(*config, errors));
  CHECK(host.instance_count() == 0);
  return join(errors);
}

uint8_t connack_code(FakeClient& c) {
  auto out = c.take();
  REQUIRE(!out.empty());
  REQUIRE(out[0].type == PacketType::kConnack);
  return static_cast<uint8_t>(out[0].body[1]);
}

// Captures what the broker logs (stderr) between construction and finish().
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    REQUIRE(file_ != nullptr);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(::fileno(file_), STDERR_FILENO);
  }
  ~StderrCapture() { finish(); }
  std::string finish() {
    if (file_ == nullptr) return text_;
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    std::rewind(file_);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0)
      text_.append(buf, n);
    std::fclose(file_);
    file_ = nullptr;
    std::fputs(text_.c_str(), stderr);  // keep it visible
    return text_;
  }

 private:
  FILE* file_ = nullptr;
  int saved_ = -1;
  std::string text_;
};

const std::string kSeed = "uri_domain = \"my.domain.name\"\n";

}  // namespace

// --- the decision ------------------------------------------------------------------------

TEST_CASE("the seed scenario: the certificate's device id as client id is allowed") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(device_cert("myUniqueDeviceId"), "myUniqueDeviceId");
  CHECK_MESSAGE(r.allowed, r.reason);
  CHECK(r.assigned_client_id.empty());

  // The same through the broker: CONNACK 0.
  auto c = h.client({device_cert("myUniqueDeviceId")});
  c->feed(connect_packet("myUniqueDeviceId"));
  CHECK(connack_code(*c) == 0);
  CHECK(c->state == Client::State::kConnected);
}

TEST_CASE(
    "another client id is denied; the reason says what was expected and what the cert holds") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(device_cert("dev1"), "dev2");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "plugin \"certauth\""));
  CHECK(contains(r.reason, "client id \"dev2\" is not the certificate's device id"));
  CHECK(contains(r.reason, "expected URI \"spiffe://my.domain.name/device/dev2\""));
  CHECK(contains(r.reason, "device id \"dev1\""));

  auto c = h.client({device_cert("dev1")});
  c->feed(connect_packet("dev2"));
  CHECK(connack_code(*c) == 5);
  CHECK(c->closed);
}

TEST_CASE("client ids are compared case-sensitively") {
  Harness h(seed_config(kSeed));
  CHECK_FALSE(h.check(device_cert("Dev1"), "dev1").allowed);
  CHECK_FALSE(h.check(device_cert("dev1"), "DEV1").allowed);
  CHECK_FALSE(h.check(device_cert("dev1"), "dev1 ").allowed);
  CHECK_FALSE(h.check(device_cert("dev1"), "dev").allowed);
  CHECK(h.check(device_cert("Dev1"), "Dev1").allowed);
}

TEST_CASE("no TLS, or TLS without a client certificate, is denied") {
  Harness h(seed_config(kSeed));
  SUBCASE("plain connection") {
    auto c = h.client({}, false);
    AuthResult r = h.authenticate(*c, "dev1");
    CHECK_FALSE(r.allowed);
    CHECK(contains(r.reason, "no client certificate: plain connection"));
  }
  SUBCASE("TLS, no certificate") {
    auto c = h.client({});
    AuthResult r = h.authenticate(*c, "dev1");
    CHECK_FALSE(r.allowed);
    CHECK(contains(r.reason, "no client certificate: the TLS client sent none"));
  }
  SUBCASE("through the broker: CONNACK 5") {
    auto c = h.client({});
    c->feed(connect_packet("dev1"));
    CHECK(connack_code(*c) == 5);
  }
}

TEST_CASE("a certificate without subjectAltName is denied") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(make_cert(""), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "client certificate has no subjectAltName"));
  CHECK(contains(r.reason, "expected URI \"spiffe://my.domain.name/device/dev1\""));
  // A v1 certificate has no extensions at all.
  r = h.check(make_cert("", "dev1", 1), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "client certificate has no subjectAltName"));
}

TEST_CASE("a certificate whose subjectAltName has no URI (a server certificate) is denied") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(server_cert(), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "no URI in its subjectAltName"));
  r = h.check(cert_with_san({dns("dev1.local"), email("dev1@my.domain.name")}), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "no URI in its subjectAltName"));

  // And the broker keeps serving: a good device connects after it.
  auto bad = h.client({server_cert()});
  bad->feed(connect_packet("my.domain.name"));
  CHECK(connack_code(*bad) == 5);
  auto good = h.client({device_cert("dev1")});
  good->feed(connect_packet("dev1"));
  CHECK(connack_code(*good) == 0);
}

TEST_CASE("URIs not exactly spiffe://<uri_domain>/device/<id> do not match") {
  Harness h(seed_config(kSeed));
  const std::vector<std::string> uris = {
      "spiffe://domain.name/device/dev1",           // parent domain
      "spiffe://sub.my.domain.name/device/dev1",    // child domain
      "spiffe://my.domain.name.evil/device/dev1",   // longer domain
      "spiffe://my.domain.namex/device/dev1",       // ditto
      "spiffe://MY.DOMAIN.NAME/device/dev1",        // domains are compared in lower case
      "spiffe://my.domain.name:443/device/dev1",    // port
      "spiffe://user@my.domain.name/device/dev1",   // userinfo
      "spiffe://my.domain.name/devices/dev1",       // /devices/
      "spiffe://my.domain.name/Device/dev1",        // path case
      "spiffe://my.domain.name/device/dev1/",       // trailing slash
      "spiffe://my.domain.name/device/dev1/extra",  // extra segment
      "spiffe://my.domain.name/x/device/dev1",      // segment before
      "spiffe://my.domain.name//device/dev1",       // empty segment
      "spiffe://my.domain.name/device//dev1",       // empty segment
      "spiffe://my.domain.name/device/",            // empty id
      "spiffe://my.domain.name/device",             // no id
      "spiffe://my.domain.name/device/dev1?x=1",    // query
      "spiffe://my.domain.name/device/dev1#frag",   // fragment
      "SPIFFE://my.domain.name/device/dev1",        // scheme case
      "Spiffe://my.domain.name/device/dev1",        // scheme case
      "spiffe:/my.domain.name/device/dev1",         // one slash
      "https://my.domain.name/device/dev1",         // another scheme
      " spiffe://my.domain.name/device/dev1",       // leading space
      std::string("spiffe://my.domain.name/device/dev1\0", 36),  // NUL in the id
      "",                                                        // empty URI
  };
  for (const auto& u : uris) {
    CAPTURE(u);
    AuthResult r = h.check(cert_with_san({uri(u)}), "dev1");
    CHECK_FALSE(r.allowed);
    CHECK(contains(r.reason, "none of the form spiffe://my.domain.name/device/<id>"));
  }
  // The control: the exact form is accepted.
  CHECK(h.check(cert_with_san({uri("spiffe://my.domain.name/device/dev1")}), "dev1").allowed);
}

TEST_CASE("every URI is looked at, not only the first") {
  Harness h(seed_config(kSeed));
  const std::string second = cert_with_san(
      {uri("spiffe://other.domain/device/dev1"), dns("dev1.local"), uri(device_uri("dev1"))});
  CHECK(h.check(second, "dev1").allowed);
  const std::string third = cert_with_san({uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
                                           uri(device_uri("dev0")), uri(device_uri("dev1"))});
  CHECK(h.check(third, "dev1").allowed);
  CHECK(h.check(third, "dev0").allowed);
  AuthResult r = h.check(third, "dev2");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "device ids \"dev0\", \"dev1\""));
  const std::string five =
      cert_with_san({uri(device_uri("a")), uri(device_uri("b")), uri(device_uri("a")),
                     uri(device_uri("c")), uri(device_uri("d")), uri(device_uri("e"))});
  r = h.check(five, "x");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "device ids \"a\", \"b\", \"c\" and more"));
  CHECK(h.check(five, "e").allowed);
}

TEST_CASE("only the leaf counts: a matching URI in a CA certificate of the chain does not") {
  Harness h(seed_config(kSeed));
  const std::string ca = cert_with_san({uri(device_uri("dev1"))}, "intermediate");
  auto good = h.client({device_cert("dev1"), ca});
  CHECK(h.authenticate(*good, "dev1").allowed);
  auto bad = h.client({server_cert(), ca});
  CHECK_FALSE(h.authenticate(*bad, "dev1").allowed);
}

TEST_CASE("garbage, truncated and corrupted certificates are denied without crashing") {
  Harness h(seed_config(kSeed));
  std::mt19937 rng(1234);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& ch : s)
      ch = static_cast<char>(rng());
    return s;
  };
  SUBCASE("random bytes, empty, huge") {
    for (size_t n : {0u, 1u, 2u, 16u, 500u, 4096u, 1u << 20}) {
      CAPTURE(n);
      AuthResult r = h.check(random_bytes(n), "dev1");
      CHECK_FALSE(r.allowed);
      CHECK(contains(r.reason, n == 0 ? "client certificate is empty" : "cannot be parsed"));
    }
    // Something that starts like a certificate (SEQUENCE with a huge length).
    AuthResult r = h.check(std::string("\x30\x84\x7f\xff\xff\xff\x30", 7), "dev1");
    CHECK_FALSE(r.allowed);
  }
  SUBCASE("every truncation of a valid certificate") {
    const std::string der = device_cert("dev1");
    for (size_t n = 0; n < der.size(); ++n) {
      AuthResult r = h.check(der.substr(0, n), "dev1");
      CHECK_FALSE(r.allowed);
    }
  }
  SUBCASE("every byte of a valid certificate flipped") {
    // Decisions may go either way (a flipped signature byte still names dev1); what
    // matters is no crash and no ASan report, and a reason for every denial.
    const std::string der = device_cert("dev1");
    for (size_t i = 0; i < der.size(); ++i) {
      std::string bad = der;
      bad[i] = static_cast<char>(bad[i] ^ 0xff);
      AuthResult r = h.check(bad, "dev1");
      if (!r.allowed) CHECK_FALSE(r.reason.empty());
    }
  }
  SUBCASE("odd subjectAltName contents") {
    for (const std::string& value :
         {std::string("\x30\x00", 2), std::string("\x30\x02\x86\x05", 4),
          std::string("\x05\x00", 2), san({tlv(0xa6, uri(device_uri("dev1")))}),
          san({tlv(0x86, std::string(70000, 'a'))})}) {
      AuthResult r = h.check(make_cert(value), "dev1");
      CHECK_FALSE(r.allowed);
      CHECK_FALSE(r.reason.empty());
    }
  }
  SUBCASE("random GeneralNames that mbedTLS may or may not accept") {
    // Random tags (URIs, DNS names, constructed and universal ones), contents and
    // length encodings, some with the matching URI among them; whatever mbedTLS lets
    // through, the plugin must answer without a crash and allow only with that URI.
    const uint8_t tags[] = {0x86, 0x86, 0x86, 0x82, 0x81, 0x87, 0xa0, 0xa4, 0xa6, 0x04, 0x30, 0x9f};
    size_t allowed = 0;
    for (int round = 0; round < 300; ++round) {
      std::string names;
      bool has_match = false;
      const int count = static_cast<int>(rng() % 6);
      for (int i = 0; i < count; ++i) {
        const uint8_t tag = tags[rng() % sizeof tags];
        std::string value;
        switch (rng() % 4) {
          case 0:
            value = device_uri("dev1");
            break;
          case 1:
            value = device_uri("dev1").substr(0, rng() % 40);
            break;
          case 2:
            value = random_bytes(rng() % 40);
            break;
          default:
            value = "spiffe://my.domain.name/device/" + random_bytes(1 + rng() % 4);
        }
        if (rng() % 8 == 0) {  // a non-minimal long-form length
          names += std::string(1, static_cast<char>(tag)) + "\x81" +
                   std::string(1, static_cast<char>(value.size())) + value;
        } else if (rng() % 8 == 0) {  // a length that lies
          names += std::string(1, static_cast<char>(tag)) +
                   std::string(1, static_cast<char>(value.size() + 1 + rng() % 3)) + value;
        } else {
          names += tlv(tag, value);
        }
        if (tag == 0x86 && value == device_uri("dev1")) has_match = true;
      }
      AuthResult r = h.check(make_cert(tlv(0x30, names)), "dev1");
      if (r.allowed) {
        ++allowed;
        CHECK(has_match);
      } else {
        CHECK_FALSE(r.reason.empty());
      }
    }
    CHECK(allowed > 0);
  }
}

TEST_CASE("a huge certificate: thousands of URIs are all looked at; the reason stays short") {
  Harness h(seed_config(kSeed));
  std::vector<std::string> names;
  for (int i = 0; i < 3000; ++i)
    names.push_back(uri("spiffe://other.domain/device/x" + std::to_string(i)));
  std::vector<std::string> with_match = names;
  with_match.push_back(uri(device_uri("dev1")));
  CHECK(h.check(cert_with_san(with_match), "dev1").allowed);

  AuthResult r = h.check(cert_with_san(names), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason,
                 "\"spiffe://other.domain/device/x0\", \"spiffe://other.domain/device/x1\""));
  CHECK(contains(r.reason, "(+2997 more)"));
  CHECK(r.reason.size() < 600);

  // Long URIs and ids are cut in the reason.
  const std::string long_id(5000, 'z');
  r = h.check(cert_with_san({uri(device_uri(long_id))}), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(r.reason.size() < 600);
  CHECK(contains(r.reason, "zzz\"..."));
  CHECK(h.check(cert_with_san({uri(device_uri(long_id))}), long_id).allowed);
}

TEST_CASE("untrusted text in reasons is quoted and escaped") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(cert_with_san({uri(device_uri("a\"b\\c\nd\x7f\xc3\xa9"))}), "x\ny");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "client id \"x\\x0ay\""));
  CHECK(contains(r.reason, "\"a\\\"b\\\\c\\x0ad\\x7f\\xc3\\xa9\""));
  CHECK(r.reason.find('\n') == std::string::npos);
}

TEST_CASE("uri_domain is normalised to lower case; upper case in a certificate's domain denies") {
  Harness h(seed_config("uri_domain = \"My.Domain.NAME\"\n"));
  CHECK(h.check(device_cert("dev1"), "dev1").allowed);
  AuthResult r = h.check(device_cert("dev1", "MY.DOMAIN.NAME"), "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "expected URI \"spiffe://my.domain.name/device/dev1\""));
}

TEST_CASE("device ids may hold '+' (literal) but not '#', '?' or '/'") {
  Harness h(seed_config(kSeed));
  CHECK(h.check(device_cert("d+1"), "d+1").allowed);
  CHECK(h.check(device_cert("+"), "+").allowed);
  CHECK(h.check(device_cert("dev.1_a-b~%41"), "dev.1_a-b~%41").allowed);  // no percent-decoding
  CHECK_FALSE(h.check(device_cert("#"), "#").allowed);
  CHECK_FALSE(h.check(device_cert("a#b"), "a#b").allowed);
  CHECK_FALSE(h.check(device_cert("a?b"), "a?b").allowed);
  CHECK_FALSE(h.check(device_cert("a/b"), "a/b").allowed);
}

// --- client_id_from_cert ---------------------------------------------------------------

TEST_CASE("client_id_from_cert off (default): an empty client id is denied") {
  Harness h(seed_config(kSeed));
  AuthResult r = h.check(device_cert("dev1"), "");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "empty client id"));
  CHECK(contains(r.reason, "\"dev1\""));
  CHECK(contains(r.reason, "client_id_from_cert"));
  CHECK(r.assigned_client_id.empty());
}

TEST_CASE("client_id_from_cert on: an empty client id gets the device id") {
  Harness h(seed_config(kSeed + "client_id_from_cert = true\n"));
  AuthResult r = h.check(device_cert("dev1"), "");
  CHECK_MESSAGE(r.allowed, r.reason);
  CHECK(r.assigned_client_id == "dev1");

  // Through the broker: CONNACK 0 and the client is now "dev1".
  auto c = h.client({device_cert("dev1")});
  c->feed(connect_packet("", true));
  CHECK(connack_code(*c) == 0);
  CHECK(c->client_id() == "dev1");

  // A client that names itself is still checked.
  CHECK(h.check(device_cert("dev1"), "dev1").allowed);
  CHECK_FALSE(h.check(device_cert("dev1"), "dev2").allowed);
  // No certificate, no device id: denied.
  auto plain = h.client({}, false);
  CHECK_FALSE(h.authenticate(*plain, "").allowed);
  // A non-device certificate: denied.
  CHECK_FALSE(h.check(server_cert(), "").allowed);
}

TEST_CASE("client_id_from_cert: several device ids are ambiguous; one id twice is not") {
  Harness h(seed_config(kSeed + "client_id_from_cert = true\n"));
  const std::string two = cert_with_san({uri(device_uri("dev1")), uri(device_uri("dev2"))});
  AuthResult r = h.check(two, "");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "several device ids (\"dev1\", \"dev2\")"));
  CHECK(contains(r.reason, "ambiguous"));
  // With an explicit client id either one works.
  CHECK(h.check(two, "dev2").allowed);

  const std::string twice = cert_with_san(
      {uri(device_uri("dev1")), uri("spiffe://other.domain/device/dev9"), uri(device_uri("dev1"))});
  r = h.check(twice, "");
  CHECK_MESSAGE(r.allowed, r.reason);
  CHECK(r.assigned_client_id == "dev1");
}

// --- allowed_topics --------------------------------------------------------------------

TEST_CASE("allowed_topics absent: certauth does not restrict topics") {
  Harness h(seed_config(kSeed));
  auto c = h.authenticated("dev1");
  CHECK(h.publish(*c, "anything/at/all").allowed);
  CHECK(h.subscribe(*c, "#").allowed);
  CHECK(h.retained(*c, "devices/dev2/x").allowed);
}

TEST_CASE("allowed_topics: publishes (and wills) must match a pattern") {
  Harness h(seed_config(kSeed +
                        "allowed_topics = [\"devices/{device_id}/#\", \"hello/{device_id}\", "
                        "\"all/+/status\", \"pre-{device_id}-{device_id}/x\"]\n"));
  auto c = h.authenticated("dev1");
  CHECK(h.publish(*c, "devices/dev1/temp").allowed);
  CHECK(h.publish(*c, "devices/dev1/a/b/c").allowed);
  CHECK(h.publish(*c, "devices/dev1").allowed);  // '#' matches the parent level
  CHECK(h.publish(*c, "devices/dev1/").allowed);
  CHECK(h.publish(*c, "hello/dev1").allowed);
  CHECK(h.publish(*c, "all/x/status").allowed);
  CHECK(h.publish(*c, "pre-dev1-dev1/x").allowed);
  CHECK(h.publish(*c, "devices/dev1/x", true).allowed);  // retained publish

  for (const char* topic :
       {"devices/dev2/temp", "devices/dev10/temp", "devices/dev/temp", "devices", "hello/dev1/x",
        "hello/dev2", "all/status", "all/x/status/y", "pre-dev1-dev2/x", "pre-dev1/x",
        "Devices/dev1/x", "$SYS/x", "other", "/devices/dev1/x"}) {
    CAPTURE(topic);
    AuthResult r = h.publish(*c, topic);
    CHECK_FALSE(r.allowed);
    CHECK(contains(r.reason, "device \"dev1\" may not publish to this topic"));
    CHECK(contains(
        r.reason,
        "it matches no pattern of allowed_topics \"devices/{device_id}/#\", \"hello/{device_id}\", "
        "\"all/+/status\" (+1 more)"));
  }
}

TEST_CASE("allowed_topics: a subscription must be covered by a pattern") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\", "
                                "\"fleet/{device_id}/+/status\", \"+/{device_id}\"]\n"));
  auto c = h.authenticated("d1");
  for (const char* filter :
       {"devices/d1/#", "devices/d1/+/x", "devices/d1/+", "devices/d1/x", "devices/d1",
        "devices/d1/+/+/#", "fleet/d1/+/status", "fleet/d1/a/status", "+/d1", "x/d1"}) {
    CAPTURE(filter);
    AuthResult r = h.subscribe(*c, filter);
    CHECK_MESSAGE(r.allowed, r.reason);
  }
  for (const char* filter :
       {"devices/+/x", "#", "+", "devices/#", "devices/+/#", "+/d1/x", "devices/d2/#",
        "devices/d1x/#", "devices", "fleet/d1/#", "fleet/d1/a/+", "fleet/d1/a/status/x",
        "fleet/d1/+", "fleet/+/a/status", "+/+", "#/d1", "$SYS/d1", "+/d1/#"}) {
    CAPTURE(filter);
    AuthResult r = h.subscribe(*c, filter);
    CHECK_FALSE(r.allowed);
    CHECK(contains(r.reason,
                   "device \"d1\" may not subscribe to this filter: it is not within a pattern of "
                   "allowed_topics \"devices/{device_id}/#\""));
  }
}

TEST_CASE("allowed_topics: a pattern without placeholder, and '$' topics") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"#\"]\n"));
  auto c = h.authenticated("d1");
  CHECK(h.subscribe(*c, "#").allowed);
  CHECK(h.subscribe(*c, "a/+/b").allowed);
  CHECK(h.publish(*c, "a/b").allowed);
  // '#' as the first level matches no '$' topic (MQTT 3.1.1, 4.7.2).
  CHECK_FALSE(h.subscribe(*c, "$SYS/#").allowed);
  CHECK_FALSE(h.publish(*c, "$SYS/x").allowed);
  CHECK_FALSE(h.retained(*c, "$SYS/broker/uptime").allowed);

  Harness sys(seed_config(kSeed + "allowed_topics = [\"$SYS/#\"]\n"));
  auto s = sys.authenticated("d1");
  CHECK(sys.subscribe(*s, "$SYS/#").allowed);
  CHECK(sys.subscribe(*s, "$SYS/broker/+").allowed);
  CHECK_FALSE(sys.subscribe(*s, "#").allowed);
  CHECK_FALSE(sys.subscribe(*s, "+/broker").allowed);

  // "#" matches every topic not starting with '$', and each has a level at least: "+/#"
  // covers it. "/#" matches "/" and deeper, not its parent "" (no topic): "+/+/#" covers
  // it. (The broker's matcher, plugins/common/mqtt_topic.h, decides.)
  Harness plus(seed_config(kSeed + "allowed_topics = [\"+/#\"]\n"));
  auto p = plus.authenticated("d1");
  CHECK(plus.subscribe(*p, "#").allowed);
  CHECK_FALSE(plus.subscribe(*p, "$SYS/#").allowed);
  Harness two(seed_config(kSeed + "allowed_topics = [\"+/+/#\"]\n"));
  auto t = two.authenticated("d1");
  CHECK(two.subscribe(*t, "/#").allowed);
  CHECK_FALSE(two.subscribe(*t, "#").allowed);  // "a"
  CHECK_FALSE(two.subscribe(*t, "a/#").allowed);
}

TEST_CASE("allowed_topics: retained deliveries must match a pattern") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\"]\n"));
  auto c = h.authenticated("d1");
  CHECK(h.retained(*c, "devices/d1/x").allowed);
  CHECK(h.retained(*c, "devices/d1").allowed);
  AuthResult r = h.retained(*c, "devices/d2/x");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "may not receive retained messages of this topic"));
}

TEST_CASE("allowed_topics: a device id with '+' is substituted literally, never as a wildcard") {
  Harness h(
      seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\", \"x/{device_id}\"]\n"));
  for (const char* id : {"+", "d+1", "+x"}) {
    CAPTURE(id);
    auto c = h.authenticated(id);
    CHECK_FALSE(h.publish(*c, "devices/other/x").allowed);
    CHECK_FALSE(h.publish(*c, "x/other").allowed);
    CHECK_FALSE(h.publish(*c, "devices/d1/x").allowed);
    CHECK_FALSE(h.subscribe(*c, "devices/+/#").allowed);
    CHECK_FALSE(h.subscribe(*c, "devices/+/x").allowed);
    CHECK_FALSE(h.subscribe(*c, "devices/#").allowed);
    CHECK_FALSE(h.subscribe(*c, "x/+").allowed);
    CHECK_FALSE(h.retained(*c, "devices/other/x").allowed);
  }
}

TEST_CASE("allowed_topics = []: the devices may neither publish nor subscribe") {
  Harness h(seed_config(kSeed + "allowed_topics = []\n"));
  auto c = h.authenticated("d1");
  AuthResult r = h.publish(*c, "devices/d1/x");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "allowed_topics (it is empty)"));
  CHECK_FALSE(h.subscribe(*c, "devices/d1/#").allowed);
}

TEST_CASE("allowed_topics: clients certauth did not authenticate are left to other plugins") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\"]\n"));
  auto stranger = h.client({device_cert("d1")});
  stranger->set_client_id("d1");
  CHECK(h.publish(*stranger, "anything").allowed);  // ABSTAIN: nothing else denies
  auto denied = h.client({device_cert("d1")});
  CHECK_FALSE(h.authenticate(*denied, "d2").allowed);
  CHECK(h.publish(*denied, "anything").allowed);  // not authenticated by certauth either
}

TEST_CASE("allowed_topics through the broker: SUBACK 0x80, publishes and wills not forwarded") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\", \"shared/#\"]\n"));
  auto sub = h.client({device_cert("d2")});
  sub->feed(connect_packet("d2"));
  REQUIRE(connack_code(*sub) == 0);
  sub->feed(
      subscribe_packet(1, {{"devices/d2/#", 0}, {"shared/#", 0}, {"devices/+/x", 0}, {"#", 0}}));
  auto out = sub->take();
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].type == PacketType::kSuback);
  CHECK(out[0].body.substr(2) == std::string("\x00\x00\x80\x80", 4));

  codec::Will will{"devices/d2/will", "gone", 0, false};
  auto pub = h.client({device_cert("d1")});
  pub->feed(connect_packet("d1", true, 60, will));
  REQUIRE(connack_code(*pub) == 0);
  pub->feed(publish_packet("devices/d2/x", "not yours"));  // denied
  pub->feed(publish_packet("shared/x", "hello"));          // allowed
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].topic == "shared/x");

  pub->close("network error");  // abnormal: the will is authorised like a publish: denied
  CHECK(sub->take().empty());

  codec::Will ok_will{"shared/will", "bye", 0, false};
  auto pub2 = h.client({device_cert("d3")});
  pub2->feed(connect_packet("d3", true, 60, ok_will));
  REQUIRE(connack_code(*pub2) == 0);
  pub2->close("network error");
  out = sub->take();
  REQUIRE(out.size() == 1);
  CHECK(out[0].topic == "shared/will");
}

TEST_CASE("allowed_topics with client_id_from_cert: the assigned id is the device id") {
  Harness h(seed_config(
      kSeed + "client_id_from_cert = true\nallowed_topics = [\"devices/{device_id}/#\"]\n"));
  auto c = h.client({device_cert("dev7")});
  AuthResult r = h.authenticate(*c, "");
  REQUIRE(r.allowed);
  CHECK(h.publish(*c, "devices/dev7/x").allowed);
  CHECK_FALSE(h.publish(*c, "devices/mqgate-00c0ffee00c0ffee/x").allowed);
}

// --- instances, reload, configuration errors -----------------------------------------

TEST_CASE("two instances with different options are independent") {
  Harness h("plugin_dir = \"" + plugin_dir() +
            "\"\n"
            "[listeners.a]\nbind = \"127.0.0.1:0\"\nplugins = [\"cert_a\"]\n"
            "[listeners.b]\nbind = \"127.0.0.1:0\"\nplugins = [\"cert_b\"]\n"
            "[plugins.cert_a]\nmodule = \"certauth\"\nuri_domain = \"a.example\"\n"
            "allowed_topics = [\"a/{device_id}\"]\n"
            "[plugins.cert_b]\nmodule = \"certauth\"\nuri_domain = \"b.example\"\n"
            "client_id_from_cert = true\n");
  CHECK(h.host.instance_count() == 2);
  auto on_a = [&](const std::string& leaf, std::string_view id) {
    auto c = h.client({leaf}, true, 0);
    return h.authenticate(*c, id);
  };
  auto on_b = [&](const std::string& leaf, std::string_view id) {
    auto c = h.client({leaf}, true, 1);
    return h.authenticate(*c, id);
  };
  CHECK(on_a(device_cert("d1", "a.example"), "d1").allowed);
  CHECK_FALSE(on_a(device_cert("d1", "b.example"), "d1").allowed);
  CHECK(on_b(device_cert("d1", "b.example"), "d1").allowed);
  CHECK_FALSE(on_b(device_cert("d1", "a.example"), "d1").allowed);
  CHECK_FALSE(on_a(device_cert("d1", "a.example"), "").allowed);  // only cert_b assigns ids
  CHECK(on_b(device_cert("d1", "b.example"), "").assigned_client_id == "d1");

  auto ca = h.authenticated("d1", 0, "a.example");
  auto cb = h.authenticated("d1", 1, "b.example");
  CHECK(h.publish(*ca, "a/d1").allowed);
  CHECK_FALSE(h.publish(*ca, "b/d1").allowed);
  CHECK(h.publish(*cb, "b/d1").allowed);  // cert_b has no topic rules
}

TEST_CASE("reload: new options take effect; a bad set is refused and the old one kept") {
  Harness h(seed_config(kSeed + "allowed_topics = [\"devices/{device_id}/#\"]\n"));
  auto reload = [&](const std::string& options) {
    std::vector<std::string> errors;
    auto cfg = parse_config(seed_config(options), "/tmp/certauth-test.toml", errors);
    REQUIRE_MESSAGE(cfg, join(errors));
    StderrCapture capture;
    h.host.reload(*cfg);
    return capture.finish();
  };

  std::string log = reload("uri_domain = \"\"\n");
  CHECK(contains(log, "refused its new options"));
  CHECK(contains(log, "uri_domain: must not be empty"));
  CHECK(h.check(device_cert("d1"), "d1").allowed);  // the old domain still

  log = reload(kSeed + "allowed_topics = [\"a/#/b\"]\n");
  CHECK(contains(log, "allowed_topics[0]"));
  CHECK(contains(log, "'#' must be the last level"));
  auto c = h.authenticated("d1");
  CHECK(h.publish(*c, "devices/d1/x").allowed);  // the old patterns still
  CHECK_FALSE(h.publish(*c, "a/x/b").allowed);

  log = reload(kSeed + "bogus = 1\n");
  CHECK(contains(log, "unknown option \"bogus\""));

  log = reload("uri_domain = \"other.example\"\nallowed_topics = [\"a/{device_id}\"]\n");
  CHECK(contains(log, "took its new options"));
  CHECK_FALSE(h.check(device_cert("d1"), "d1").allowed);
  CHECK(h.check(device_cert("d1", "other.example"), "d1").allowed);
  // A client connected before the reload keeps its device id, under the new patterns.
  CHECK(h.publish(*c, "a/d1").allowed);
  CHECK_FALSE(h.publish(*c, "devices/d1/x").allowed);

  log = reload("uri_domain = \"other.example\"\n");  // allowed_topics removed: no restriction
  CHECK(h.publish(*c, "devices/d1/x").allowed);
}

TEST_CASE("configuration errors stop the broker with a message naming the key") {
  SUBCASE("uri_domain missing") {
    std::string e = load_error("");
    CHECK(contains(e, "plugin \"certauth\""));
    CHECK(contains(e, "init failed (invalid plugin configuration)"));
    CHECK(contains(e, "/tmp/certauth-test.toml:5: uri_domain: missing"));
  }
  SUBCASE("only another option") {
    CHECK(contains(load_error("client_id_from_cert = true\n"), "uri_domain: missing"));
  }
  SUBCASE("uri_domain empty") {
    CHECK(contains(load_error("uri_domain = \"\"\n"),
                   "/tmp/certauth-test.toml:6:1: uri_domain: must not be empty"));
  }
  SUBCASE("uri_domain not a DNS name") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"spiffe://my.domain.name", "give the bare domain, not a URI"},
        {"my_domain.name", "only letters, digits"},
        {"my domain", "only letters, digits"},
        {"my.domain.name/device", "only letters, digits"},
        {"my..domain", "empty label"},
        {".my.domain", "empty label"},
        {"my.domain.", "empty label"},
        {"-my.domain", "starts with '-'"},
        {"my-.domain", "ends with '-'"},
        {"10.0.0.1", "all digits"},
        {std::string(64, 'a') + ".com", "longer than 63"},
        {std::string(250, 'a') + ".com", "longer than 253"},
    };
    for (const auto& [domain, why] : cases) {
      const std::string& shown = domain;  // clang cannot capture a structured binding
      CAPTURE(shown);
      std::string e = load_error("uri_domain = \"" + domain + "\"\n");
      CHECK(contains(e, "uri_domain: \""));
      CHECK(contains(e, "is not a valid DNS name"));
      CHECK(contains(e, why));
    }
  }
  SUBCASE("unknown key") {
    std::string e = load_error(kSeed + "uri-domain = \"x\"\n");
    CHECK(contains(e, "/tmp/certauth-test.toml:7:1: unknown option \"uri-domain\""));
    CHECK(contains(e, "certauth knows uri_domain, client_id_from_cert, allowed_topics"));
  }
  SUBCASE("wrong types") {
    CHECK(contains(
        load_error("uri_domain = 42\n"),
        "uri_domain: expected a string (a DNS name such as \"my.domain.name\"), not an integer"));
    CHECK(contains(load_error("uri_domain = [\"a.b\"]\n"), "uri_domain: expected a string"));
    CHECK(contains(
        load_error(kSeed + "client_id_from_cert = \"yes\"\n"),
        "/tmp/certauth-test.toml:7:1: client_id_from_cert: expected true or false, not a string"));
    CHECK(contains(load_error(kSeed + "allowed_topics = \"devices/#\"\n"),
                   "allowed_topics: expected an array of strings"));
    CHECK(contains(load_error(kSeed + "allowed_topics = [1, 2]\n"),
                   "allowed_topics: expected an array of strings (topic filters, e.g. "
                   "[\"devices/{device_id}/#\"]), not another type"));
  }
  SUBCASE("invalid patterns") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "empty"},
        {"a/#/b", "'#' must be the last level"},
        {"#/a", "'#' must be the last level"},
        {"a+/b", "a wildcard ('+' or '#') must be a whole level"},
        {"a/b#", "a wildcard ('+' or '#') must be a whole level"},
        {"devices/{device_id}+", "a wildcard ('+' or '#') must be a whole level"},
        {"devices/{deviceid}/#", "unknown placeholder"},
        {"devices/{client_id}/#", "unknown placeholder"},
        {"devices/{device_id/#", "unknown placeholder"},
        {"devices/device_id}/#", "'}' outside"},
    };
    for (const auto& [pattern, why] : cases) {
      const std::string& shown = pattern;  // clang cannot capture a structured binding
      CAPTURE(shown);
      std::string e =
          load_error(kSeed + "allowed_topics = [\"devices/{device_id}/#\", \"" + pattern + "\"]\n");
      CHECK(contains(e, "/tmp/certauth-test.toml:7:1: allowed_topics[1]: \"" + pattern +
                            "\" is not a valid topic filter pattern: " + why));
    }
  }
}

// --- certificates made by openssl ----------------------------------------------------

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A self-signed EC certificate made with `openssl req -x509` in a temporary directory,
// with the given subjectAltName (openssl syntax); returned as DER.
std::string openssl_cert(const std::string& dir, const std::string& name, const std::string& san) {
  const std::string base = dir + "/" + name;
  const std::string cmd =
      "/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
      "-nodes -keyout '" +
      base + ".key' -out '" + base +
      ".der' -outform DER "
      "-days 1 -subj '/C=US/O=openssl tests/CN=" +
      name + "' -addext 'subjectAltName=" + san + "' >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  return read_file(base + ".der");
}

}  // namespace

TEST_CASE("certificates made by openssl") {
  if (::access("/usr/bin/openssl", X_OK) != 0) {
    MESSAGE("skipped: /usr/bin/openssl is not installed");
    return;
  }
  char tmpl[] = "/tmp/certauth-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  Harness h(seed_config(kSeed));
  const std::string device =
      openssl_cert(dir, "dev1",
                   "URI:spiffe://other.domain/device/dev1,DNS:dev1.local,URI:spiffe://"
                   "my.domain.name/device/dev1");
  const std::string server = openssl_cert(dir, "server", "DNS:my.domain.name,IP:127.0.0.1");
  const std::string child =
      openssl_cert(dir, "child", "URI:spiffe://sub.my.domain.name/device/dev1");
  std::system(("rm -rf '" + dir + "'").c_str());

  CHECK(h.check(device, "dev1").allowed);
  CHECK_FALSE(h.check(device, "Dev1").allowed);
  AuthResult r = h.check(server, "dev1");
  CHECK_FALSE(r.allowed);
  CHECK(contains(r.reason, "no URI in its subjectAltName"));
  CHECK_FALSE(h.check(child, "dev1").allowed);
}
