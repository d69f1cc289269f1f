#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "config/config.hpp"
#include "config/config_toml.hpp"

using namespace mqgate;

namespace {
std::vector<std::string> errors_of(const std::string& text) {
  std::vector<std::string> errors;
  auto cfg = parse_config(text, "test.toml", errors);
  CHECK_MESSAGE(!cfg, "expected the config to be refused");
  return errors;
}

bool any_contains(const std::vector<std::string>& errors, const std::string& needle) {
  for (const auto& e : errors)
    if (e.find(needle) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST_CASE("a full config parses, listeners and plugins in file order") {
  std::vector<std::string> errors;
  auto cfg = parse_config(R"(
log_level = "debug"
sys_interval = 0
[limits]
max_packet_size = 2048
max_inflight_messages = 5
[listeners.zeta]
bind = "127.0.0.1:0"
[listeners.alpha]
bind = "[::1]:1884"
max_connections = 10
plugins = ["b"]
[plugins.b]
allow_anonymous = true
[plugins.a]
module = "anonymous"
)",
                          "test.toml", errors);
  REQUIRE_MESSAGE(cfg, (errors.empty() ? "" : errors[0]));
  CHECK(cfg->log_level == log::Level::kDebug);
  CHECK(cfg->sys_interval == 0);
  CHECK(cfg->limits.max_packet_size == 2048);
  CHECK(cfg->limits.max_inflight_messages == 5);
  CHECK(cfg->limits.max_queued_messages == 1000);
  REQUIRE(cfg->listeners.size() == 2);
  CHECK(cfg->listeners[0].name == "zeta");
  CHECK(cfg->listeners[1].name == "alpha");
  CHECK(cfg->listeners[1].ipv6);
  CHECK(cfg->listeners[1].host == "::1");
  CHECK(cfg->listeners[1].port == 1884);
  REQUIRE(cfg->listeners[1].plugins);
  REQUIRE(cfg->plugins.size() == 2);
  CHECK(cfg->plugins[0].name == "b");
  CHECK(cfg->plugins[0].module == "b");
  CHECK(cfg->plugins[1].module == "anonymous");
  CHECK(cfg->plugins[0].options->table->contains("allow_anonymous"));
  CHECK(PluginConfig::is_host_key("module"));
}

TEST_CASE("errors name the file, line and key") {
  auto e = errors_of("log_level = \"loud\"\n[listeners.default]\nbind = \"127.0.0.1:1883\"\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].find("test.toml:1:") == 0);
  CHECK(e[0].find("log_level") != std::string::npos);

  e = errors_of("[listeners.default]\nbind = \"127.0.0.1:1883\"\n[limits]\nmax_packet_size = \"big\"\n");
  CHECK(any_contains(e, "test.toml:4:"));
  CHECK(any_contains(e, "limits.max_packet_size: expected an integer"));

  e = errors_of("[listeners.default]\nbind = \"127.0.0.1:1883\"\nbindd = 1\n");
  CHECK(any_contains(e, "test.toml:3:1: listeners.default.bindd: unknown key"));

  e = errors_of("[listeners.default]\nbind = \"127.0.0.1:1883\"\n[limits]\nmax_inflight_messages = 0\n");
  CHECK(any_contains(e, "from 1 to 65535, got 0"));

  e = errors_of("sys_interval = 10\n");
  CHECK(any_contains(e, "no listener configured"));

  e = errors_of("[listeners.default\nbind = 1\n");
  CHECK(any_contains(e, "test.toml:1:"));  // a TOML syntax error
}

TEST_CASE("bind addresses") {
  for (const char* bad : {"localhost:1883", "127.0.0.1", "127.0.0.1:99999", "[::1:1883", "::1:1883",
                          "127.0.0.1:-1", "127.0.0.1:"}) {
    INFO(bad);
    auto e = errors_of(std::string("[listeners.x]\nbind = \"") + bad + "\"\n");
    CHECK(any_contains(e, "listeners.x.bind"));
  }
  auto e = errors_of("[listeners.x]\nmax_connections = 1\n");
  CHECK(any_contains(e, "listeners.x.bind: missing"));
}

TEST_CASE("a listener's plugin list must name configured plugins") {
  auto e = errors_of("[listeners.x]\nbind = \"127.0.0.1:0\"\nplugins = [\"nope\"]\n");
  CHECK(any_contains(e, "\"nope\" is not a configured plugin"));
  e = errors_of("[listeners.x]\nbind = \"127.0.0.1:0\"\nplugins = \"certauth\"\n");
  CHECK(any_contains(e, "expected an array of strings"));
}

TEST_CASE("tls_max_pending_handshakes: default, range and errors") {
  const std::string listener = "[listeners.default]\nbind = \"127.0.0.1:1883\"\n";
  std::vector<std::string> errors;
  auto cfg = parse_config(listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->tls_max_pending_handshakes == 1024);
  cfg = parse_config("tls_max_pending_handshakes = 1\n" + listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->tls_max_pending_handshakes == 1);

  auto e = errors_of("tls_max_pending_handshakes = 0\n" + listener);
  CHECK(any_contains(e, "test.toml:1:30: tls_max_pending_handshakes: expected an integer from 1 to "
                        "1000000, got 0"));
  e = errors_of("tls_max_pending_handshakes = 1000001\n" + listener);
  CHECK(any_contains(e, "tls_max_pending_handshakes: expected an integer from 1 to 1000000, got "
                        "1000001"));
  e = errors_of("tls_max_pending_handshakes = \"many\"\n" + listener);
  CHECK(any_contains(e, "test.toml:1:30: tls_max_pending_handshakes: expected an integer from 1 to "
                        "1000000, got a string"));
  // Top level only: inside [limits] it is an unknown key.
  e = errors_of(listener + "[limits]\ntls_max_pending_handshakes = 5\n");
  CHECK(any_contains(e, "limits.tls_max_pending_handshakes: unknown key"));
}

TEST_CASE("auth_timeout: default, range and errors") {
  const std::string listener = "[listeners.default]\nbind = \"127.0.0.1:1883\"\n";
  std::vector<std::string> errors;
  auto cfg = parse_config(listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->auth_timeout == 10);
  cfg = parse_config("auth_timeout = 2\n" + listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->auth_timeout == 2);
  auto e = errors_of("auth_timeout = 0\n" + listener);
  CHECK(any_contains(e, "auth_timeout: expected an integer from 1 to 3600, got 0"));
}

TEST_CASE("[http]: bind, token or token_file, limits; the token never in a message") {
  const std::string listener = "[listeners.default]\nbind = \"127.0.0.1:1883\"\n";
  std::vector<std::string> errors;
  auto cfg = parse_config(listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(!cfg->http);

  cfg = parse_config(listener + "[http]\nbind = \"[::1]:9183\"\ntoken = \"s3cret-Token\"\n",
                     "test.toml", errors);
  REQUIRE(cfg);
  REQUIRE(cfg->http);
  CHECK(cfg->http->host == "::1");
  CHECK(cfg->http->ipv6);
  CHECK(cfg->http->port == 9183);
  CHECK(cfg->http->token == "s3cret-Token");
  CHECK(cfg->http->max_connections == 16);
  CHECK(cfg->http->request_timeout == 5);

  auto e = errors_of(listener + "[http]\ntoken = \"x\"\n");
  CHECK(any_contains(e, "http.bind: missing"));
  e = errors_of(listener + "[http]\nbind = \"localhost:9183\"\n");
  CHECK(any_contains(e, "test.toml:4:8: http.bind: \"localhost\" is not an IPv4 address"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\nport = 1\n");
  CHECK(any_contains(e,
                     "http.port: unknown key (expected one of: bind, cafile, certfile, ciphers, "
                     "client_cert, console, console_admins, console_cert_admins, "
                     "console_cert_readers, console_users, crlfile, "
                     "crowded_request_timeout_ms, keyfile, max_connections, "
                     "max_connections_per_address, request_timeout, session_cache_size, "
                     "session_lifetime, session_tickets, ssl, tls_min_version, token, "
                     "token_file)"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\ntoken = \"has space\"\n");
  CHECK(any_contains(e, "http.token: expected 1 to 4096 visible ASCII characters"));
  CHECK(!any_contains(e, "has space"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\ntoken = \"a\"\ntoken_file = \"t\"\n");
  CHECK(any_contains(e, "http.token_file: give either token or token_file, not both"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\ntoken_file = \"/nonexistent/token\"\n");
  CHECK(any_contains(e, "http.token_file: cannot open \"/nonexistent/token\""));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\nmax_connections = 0\n");
  CHECK(any_contains(e, "http.max_connections: expected an integer from 1 to 1024, got 0"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\nrequest_timeout = 301\n");
  CHECK(any_contains(e, "http.request_timeout: expected an integer from 1 to 300, got 301"));
  e = errors_of("http = 1\n" + listener);
  CHECK(any_contains(e, "http: expected a table"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\nmax_connections_per_address = 17\n");
  CHECK(any_contains(e, "http.max_connections_per_address: must not exceed max_connections (16)"));
  e = errors_of(listener + "[http]\nbind = \"127.0.0.1:0\"\ncrowded_request_timeout_ms = 50\n");
  CHECK(any_contains(e, "http.crowded_request_timeout_ms: expected an integer from 100 to 300000"));
  cfg = parse_config(listener +
                         "[http]\nbind = \"127.0.0.1:0\"\nmax_connections = 64\n"
                         "max_connections_per_address = 4\ncrowded_request_timeout_ms = 250\n",
                     "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->http->max_connections_per_address == 4);
  CHECK(cfg->http->crowded_request_timeout_ms == 250);
}

TEST_CASE("[persistence]: off by default; path relative to the file; ticket keys beside it") {
  std::vector<std::string> errors;
  auto off = parse_config("[listeners.a]\nbind = \"127.0.0.1:0\"\n", "/etc/mqgate/m.toml", errors);
  REQUIRE(off);
  CHECK(!off->persistence.enabled());
  auto on = parse_config(R"(
[persistence]
path = "state/mqgate.db"
durability = "batched"
flush_interval_ms = 250
max_bytes = 1000000
[listeners.plain]
bind = "127.0.0.1:0"
[listeners.tls]
bind = "127.0.0.1:0"
ssl = true
certfile = "c.crt"
keyfile = "c.key"
)",
                         "/etc/mqgate/m.toml", errors);
  REQUIRE_MESSAGE(on, (errors.empty() ? std::string() : errors[0]));
  CHECK(on->persistence.path == "/etc/mqgate/state/mqgate.db");
  CHECK(on->persistence.batched);
  CHECK(on->persistence.flush_interval_ms == 250);
  CHECK(on->persistence.max_bytes == 1000000);
  CHECK(on->listeners[1].tls->ticket_key_file == "/etc/mqgate/state/mqgate.db.tls-tickets-tls");
}

TEST_CASE("[persistence]: bad values are named") {
  const std::string listener = "\n[listeners.a]\nbind = \"127.0.0.1:0\"\n";
  CHECK(any_contains(errors_of("[persistence]\npath = \"\"" + listener), "persistence.path"));
  CHECK(any_contains(errors_of("[persistence]\npath = \"x\"\ndurability = \"fast\"" + listener),
                     "persistence.durability: expected \"sync\""));
  CHECK(any_contains(errors_of("[persistence]\npath = \"x\"\nflush_interval_ms = 0" + listener),
                     "persistence.flush_interval_ms"));
  CHECK(
      any_contains(errors_of("[persistence]\npath = \"x\"\nautosave = 1" + listener), "autosave"));
}

TEST_CASE("slow_subscriber and slow_subscriber_grace: defaults, values and errors") {
  const std::string listener = "[listeners.default]\nbind = \"127.0.0.1:1883\"\n";
  std::vector<std::string> errors;
  auto cfg = parse_config(listener, "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->listeners[0].slow_subscriber == ListenerConfig::SlowSubscriber::kDisconnect);
  CHECK(cfg->listeners[0].slow_subscriber_grace == 5);
  cfg = parse_config(listener + "slow_subscriber = \"drop_qos0\"\nslow_subscriber_grace = 30\n",
                     "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->listeners[0].slow_subscriber == ListenerConfig::SlowSubscriber::kDropQos0);
  CHECK(cfg->listeners[0].slow_subscriber_grace == 30);
  cfg = parse_config(listener + "slow_subscriber = \"wait\"\n", "test.toml", errors);
  REQUIRE(cfg);
  CHECK(cfg->listeners[0].slow_subscriber == ListenerConfig::SlowSubscriber::kWait);

  auto e = errors_of(listener + "slow_subscriber = \"drop\"\n");
  CHECK(any_contains(e, "test.toml:3:19: listeners.default.slow_subscriber: expected "
                        "\"disconnect\", \"drop_qos0\" or \"wait\", got \"drop\""));
  e = errors_of(listener + "slow_subscriber_grace = 0\n");
  CHECK(any_contains(e, "listeners.default.slow_subscriber_grace: expected an integer from 1 to "
                        "86400, got 0"));
  // A listener key: in [limits] it is unknown.
  e = errors_of(listener + "[limits]\nslow_subscriber = \"wait\"\n");
  CHECK(any_contains(e, "limits.slow_subscriber: unknown key"));
}

TEST_CASE("[cluster]: absent by default; node, nats, name; credentials from files") {
  std::vector<std::string> errors;
  auto cfg = parse_config("[listeners.a]\nbind = \"127.0.0.1:0\"\n", "test.toml", errors);
  REQUIRE(cfg);
  CHECK(!cfg->cluster);
  const std::string dir = "/tmp/mqgate-config-test-cluster";
  REQUIRE(system(("mkdir -p " + dir + " && printf 's3cret\\n' > " + dir + "/pw").c_str()) == 0);
  cfg = parse_config(R"(
[listeners.a]
bind = "127.0.0.1:0"
[cluster]
node = "n-1"
nats = ["nats://127.0.0.1:4222", "tls://[::1]:4223", "nats://nats.example.com"]
user = "mq"
password_file = "pw"
)",
                     dir + "/m.toml", errors);
  const std::string first_error = errors.empty() ? std::string() : errors[0];
  INFO(first_error);
  REQUIRE(cfg);
  REQUIRE(cfg->cluster);
  CHECK(cfg->cluster->node == "n-1");
  CHECK(cfg->cluster->name == "mqgate");
  CHECK(cfg->cluster->nats.size() == 3);
  CHECK(cfg->cluster->user == "mq");
  CHECK(cfg->cluster->password == "s3cret");
}

TEST_CASE("[cluster]: every bad key is named, secrets never shown") {
  const std::string base = "[listeners.a]\nbind = \"127.0.0.1:0\"\n[cluster]\n";
  auto e = errors_of(base + "nats = [\"nats://h:1\"]\n");
  CHECK(any_contains(e, "cluster.node: missing"));
  e = errors_of(base + "node = \"a\"\n");
  CHECK(any_contains(e, "cluster.nats: missing"));
  e = errors_of(base + "node = \"a.b\"\nnats = [\"nats://h:1\"]\n");
  CHECK(any_contains(e, "cluster.node:"));
  e = errors_of(base + "node = \"a\"\nname = \"x y\"\nnats = [\"nats://h:1\"]\n");
  CHECK(any_contains(e, "cluster.name:"));
  e = errors_of(base + "node = \"a\"\nnats = [\"http://h:1\"]\n");
  CHECK(any_contains(e, "cluster.nats: expected \"nats://host:port\""));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://u:secretpw@h:1\"]\n");
  CHECK(any_contains(e, "cluster.nats: credentials do not go in the URL"));
  CHECK(!any_contains(e, "secretpw"));
  e = errors_of(base + "node = \"a\"\nnats = []\n");
  CHECK(any_contains(e, "cluster.nats: expected 1 to 64"));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\nuser = \"u\"\n");
  CHECK(any_contains(e, "cluster.password_file: user and password_file go together"));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\ntoken_file = \"/nonexistent/t\"\n");
  CHECK(any_contains(e, "cluster.token_file: cannot open \"/nonexistent/t\""));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\ncreds_file = \"/nonexistent/c\"\n");
  CHECK(any_contains(e, "cluster.creds_file: cannot open \"/nonexistent/c\""));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\ncert_file = \"/nonexistent/c\"\n");
  CHECK(any_contains(e, "cluster.cert_file: cannot open"));
  CHECK(any_contains(e, "cluster.key_file: cert_file and key_file go together"));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\nca_file = \"/nonexistent/ca\"\n");
  CHECK(any_contains(e, "cluster.ca_file: cannot open \"/nonexistent/ca\""));
  // Within the stream's duplicate window, so a message sent again is not stored twice.
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\npublish_timeout = 61\n");
  CHECK(any_contains(e, "cluster.publish_timeout: expected an integer from 1 to 60"));
  e = errors_of(base + "node = \"a\"\nnats = [\"nats://h:1\"]\nbogus = 1\n");
  CHECK(any_contains(e, "cluster.bogus: unknown key"));
}
