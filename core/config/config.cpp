#include "config/config.hpp"

#include "config/config_toml.hpp"

#include "base/log.hpp"
#include "base/privileges.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace mqgate {

std::string resolve_config_path(const std::string& path, const std::string& config_file) {
  if (path.empty() || path[0] == '/') return path;
  const auto slash = config_file.rfind('/');
  if (slash == std::string::npos) return path;
  return config_file.substr(0, slash + 1) + path;
}

namespace {

// A whole packet: 5 header bytes and the largest remaining length.
constexpr int64_t kLargestPacket = 268435455 + 5;

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    default:
      return "nothing";
  }
}

// Reads one TOML table against a fixed set of keys; collects every problem.
class TableChecker {
 public:
  TableChecker(const toml::table& table, std::string prefix, const std::string& file,
               Errors& errors)
      : table_(table), prefix_(std::move(prefix)), file_(file), errors_(errors) {}

  void error_at(const toml::source_region& where, const std::string& key, const std::string& msg) {
    std::ostringstream s;
    s << file_;
    if (where.begin.line) s << ':' << where.begin.line << ':' << where.begin.column;
    s << ": " << prefix_ << key << ": " << msg;
    errors_.push_back(s.str());
  }

  const toml::node* get(const std::string& key) {
    seen_.insert(key);
    return table_.get(key);
  }

  std::optional<int64_t> integer(const std::string& key, int64_t min, int64_t max) {
    const toml::node* n = get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer()) {
      error_at(n->source(), key,
               "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                   ", got " + type_name(*n));
      return std::nullopt;
    }
    const int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      error_at(n->source(), key,
               "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                   ", got " + std::to_string(v));
      return std::nullopt;
    }
    return v;
  }

  std::optional<std::string> string(const std::string& key) {
    const toml::node* n = get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) {
      error_at(n->source(), key, std::string("expected a string, got ") + type_name(*n));
      return std::nullopt;
    }
    return n->as_string()->get();
  }

  std::optional<bool> boolean(const std::string& key) {
    const toml::node* n = get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) {
      error_at(n->source(), key, std::string("expected true or false, got ") + type_name(*n));
      return std::nullopt;
    }
    return n->as_boolean()->get();
  }

  bool seen(const std::string& key) const { return seen_.count(key) != 0; }

  const toml::source_region& where(const std::string& key) const {
    const toml::node* n = table_.get(key);
    return n ? n->source() : table_.source();
  }

  std::optional<std::vector<std::string>> string_array(const std::string& key) {
    const toml::node* n = get(key);
    if (n == nullptr) return std::nullopt;
    const toml::array* a = n->as_array();
    if (a == nullptr) {
      error_at(n->source(), key, std::string("expected an array of strings, got ") + type_name(*n));
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (const toml::node& e : *a) {
      if (!e.is_string()) {
        error_at(e.source(), key,
                 std::string("expected an array of strings, found ") + type_name(e));
        return std::nullopt;
      }
      out.push_back(e.as_string()->get());
    }
    return out;
  }

  const toml::table* table(const std::string& key) {
    const toml::node* n = get(key);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) {
      error_at(n->source(), key, std::string("expected a table, got ") + type_name(*n));
      return nullptr;
    }
    return n->as_table();
  }

  // Reports every key that no getter asked for; the keys asked for are the expected ones.
  void reject_unknown() {
    std::string expected;
    for (const auto& k : seen_)
      expected += (expected.empty() ? "" : ", ") + k;
    reject_unknown(expected);
  }
  void reject_unknown(const std::string& expected) {
    for (auto&& [k, v] : table_) {
      if (seen_.count(std::string(k.str())) == 0)
        error_at(k.source(), std::string(k.str()),
                 "unknown key (expected one of: " + expected + ")");
    }
  }

 private:
  const toml::table& table_;
  std::string prefix_;
  const std::string& file_;
  Errors& errors_;
  std::set<std::string> seen_;
};

// Parses "host:port": an IPv4 literal, or an IPv6 literal in brackets.
template <typename Bound>  // ListenerConfig or HttpConfig: host, port, ipv6
bool parse_bind(const std::string& text, Bound& l, std::string& why) {
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      why = "expected \"[IPv6]:port\", e.g. \"[::1]:1883\"";
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    l.ipv6 = true;
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      why = "expected \"address:port\", e.g. \"127.0.0.1:1883\"";
      return false;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    l.ipv6 = false;
  }
  unsigned char buf[16];
  if (inet_pton(l.ipv6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
    why = l.ipv6 ? "\"" + host + "\" is not an IPv6 address"
                 : "\"" + host +
                       "\" is not an IPv4 address (IPv6 goes in brackets: \"[::1]:1883\"; "
                       "host names are not resolved)";
    return false;
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoul(port) > 65535) {
    why = "port \"" + port + "\" is not a number from 0 to 65535 (0: any free port)";
    return false;
  }
  l.host = host;
  l.port = static_cast<uint16_t>(std::stoul(port));
  return true;
}

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::vector<std::pair<std::string, const toml::table*>> tables_in_file_order(
    const toml::table& parent, TableChecker& checker, const std::string& what) {
  std::vector<std::pair<std::string, const toml::table*>> out;
  for (auto&& [k, v] : parent) {
    const std::string name(k.str());
    if (!v.is_table()) {
      checker.error_at(
          v.source(), name,
          std::string("expected a table [") + what + "." + name + "], got " + type_name(v));
      continue;
    }
    if (!valid_name(name)) {
      checker.error_at(k.source(), name,
                       "a " + what + " name must be 1-64 letters, digits, '-' or '_'");
      continue;
    }
    out.emplace_back(name, v.as_table());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second->source().begin < b.second->source().begin;
  });
  return out;
}

void read_limits(const toml::table& t, const std::string& file, LimitsConfig& limits,
                 Errors& errors) {
  TableChecker c(t, "limits.", file, errors);
  if (auto v = c.integer("max_packet_size", 16, kLargestPacket))
    limits.max_packet_size = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_inflight_messages", 1, 65535))
    limits.max_inflight_messages = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_queued_messages", 0, 10000000))
    limits.max_queued_messages = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_client_id_length", 23, 65535))
    limits.max_client_id_length = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_outgoing_bytes", 4096, 1ll << 31))
    limits.max_outgoing_bytes = static_cast<uint32_t>(*v);
  if (auto v = c.integer("connect_timeout", 1, 3600))
    limits.connect_timeout = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_topic_levels", 1, 10000))
    limits.max_topic_levels = static_cast<uint32_t>(*v);
  if (auto v = c.integer("session_expiry", 0, 86400ll * 365 * 10))
    limits.session_expiry = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_subscriptions_per_client", 1, 10000000))
    limits.max_subscriptions_per_client = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_persistent_sessions", 0, 100000000))
    limits.max_persistent_sessions = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_retained_messages", 0, 1000000000))
    limits.max_retained_messages = static_cast<uint64_t>(*v);
  if (auto v = c.integer("max_retained_bytes", 0, 1ll << 40))
    limits.max_retained_bytes = static_cast<uint64_t>(*v);
  if (auto v = c.integer("packet_timeout", 1, 3600))
    limits.packet_timeout = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_keepalive", 0, 65535))
    limits.max_keepalive = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_queued_bytes", 4096, 1ll << 40))
    limits.max_queued_bytes = static_cast<uint64_t>(*v);
  c.reject_unknown();
}

void read_persistence(const toml::table& t, const std::string& file, PersistenceConfig& p,
                      std::vector<std::string>& errors) {
  TableChecker c(t, "persistence.", file, errors);
  if (auto v = c.string("path")) {
    if (v->empty())
      c.error_at(c.where("path"), "path",
                 "must not be empty (leave the key out to turn persistence off)");
    else
      p.path = resolve_config_path(*v, file);
  }
  if (auto v = c.string("durability")) {
    if (*v == "sync")
      p.batched = false;
    else if (*v == "batched")
      p.batched = true;
    else
      c.error_at(c.where("durability"), "durability",
                 "expected \"sync\" (acknowledge once on disk) or \"batched\" (fsync every "
                 "flush_interval_ms), got \"" +
                     *v + "\"");
  }
  if (auto v = c.integer("flush_interval_ms", 1, 60000))
    p.flush_interval_ms = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_bytes", 0, 1ll << 50)) p.max_bytes = static_cast<uint64_t>(*v);
  c.reject_unknown();
}

// The TLS keys of a listener table, or of [http] (`listener` false: no CRL signing nor
// disconnecting, which are about MQTT clients; those keys are then unknown). Called for
// every such table so that TLS keys without `ssl = true` are reported rather than
// silently ignored.
void read_tls(TableChecker& c, const toml::table& t, const std::string& file, bool listener,
              std::optional<TlsConfig>& out) {
  const bool ssl = c.boolean("ssl").value_or(false);
  TlsConfig tls;
  auto path_key = [&](const char* key, std::string& out) {
    if (auto v = c.string(key)) {
      if (v->empty()) c.error_at(c.where(key), key, "must not be empty");
      out = resolve_config_path(*v, file);
    }
  };
  path_key("certfile", tls.certfile);
  path_key("keyfile", tls.keyfile);
  path_key("cafile", tls.cafile);
  path_key("crlfile", tls.crlfile);
  if (listener) {
    path_key("crl_ca_certfile", tls.crl_ca_certfile);
    path_key("crl_ca_keyfile", tls.crl_ca_keyfile);
  }
  std::optional<std::string> client_cert = c.string("client_cert");
  if (client_cert) {
    if (*client_cert == "none")
      tls.client_cert = TlsConfig::ClientCert::kNone;
    else if (*client_cert == "optional")
      tls.client_cert = TlsConfig::ClientCert::kOptional;
    else if (*client_cert == "required")
      tls.client_cert = TlsConfig::ClientCert::kRequired;
    else
      c.error_at(c.where("client_cert"), "client_cert",
                 "expected \"none\", \"optional\" or \"required\", got \"" + *client_cert + "\"");
  } else {
    // As in the seed: with a CA, a client certificate is asked for but not required.
    tls.client_cert =
        tls.cafile.empty() ? TlsConfig::ClientCert::kNone : TlsConfig::ClientCert::kOptional;
  }
  if (auto v = c.string("tls_min_version")) {
    if (*v == "1.2")
      tls.min_version_minor = 3;
    else if (*v == "1.1")
      tls.min_version_minor = 2;
    else if (*v == "1.0")
      tls.min_version_minor = 1;
    else if (*v == "1.3")
      c.error_at(c.where("tls_min_version"), "tls_min_version",
                 "TLS 1.3 is not available: mbedTLS 2.28 (Debian 12) implements TLS up to 1.2");
    else
      c.error_at(c.where("tls_min_version"), "tls_min_version",
                 "expected \"1.2\", \"1.1\" or \"1.0\", got \"" + *v + "\"");
  }
  if (auto v = c.string_array("ciphers")) tls.ciphers = *v;
  if (listener) {
    tls.disconnect_revoked = c.boolean("disconnect_revoked").value_or(false);
    tls.disconnect_expired = c.boolean("disconnect_expired").value_or(false);
  }
  tls.session_tickets = c.boolean("session_tickets").value_or(true);
  if (auto v = c.integer("session_cache_size", 0, 1000000))
    tls.session_cache_size = static_cast<uint32_t>(*v);
  if (auto v = c.integer("session_lifetime", 1, 86400 * 7))
    tls.session_lifetime = static_cast<uint32_t>(*v);

  static const char* kTlsKeys[] = {"certfile",
                                   "keyfile",
                                   "cafile",
                                   "crlfile",
                                   "crl_ca_certfile",
                                   "crl_ca_keyfile",
                                   "client_cert",
                                   "tls_min_version",
                                   "ciphers",
                                   "disconnect_revoked",
                                   "disconnect_expired",
                                   "session_tickets",
                                   "session_cache_size",
                                   "session_lifetime"};
  if (!ssl) {
    for (const char* key : kTlsKeys)
      if (t.get(key) && c.seen(key))
        c.error_at(c.where(key), key,
                   listener ? "is a TLS setting: it needs ssl = true on this listener"
                            : "is a TLS setting: it needs ssl = true in [http]");
    return;
  }
  if (tls.certfile.empty() && !t.get("certfile"))
    c.error_at(t.source(), "certfile", "missing: ssl = true needs the server certificate (PEM)");
  if (tls.keyfile.empty() && !t.get("keyfile"))
    c.error_at(t.source(), "keyfile", "missing: ssl = true needs the server's private key (PEM)");
  if (tls.client_cert != TlsConfig::ClientCert::kNone && tls.cafile.empty())
    c.error_at(c.where("client_cert"), "client_cert",
               "asks for client certificates but there is no cafile to verify them against");
  if (!tls.crlfile.empty() && tls.cafile.empty())
    c.error_at(c.where("crlfile"), "crlfile",
               "needs cafile (the CRL is checked against those CAs)");
  if (!tls.crlfile.empty() && tls.client_cert == TlsConfig::ClientCert::kNone)
    c.error_at(c.where("crlfile"), "crlfile", "is useless with client_cert = \"none\"");
  if ((tls.disconnect_revoked || tls.disconnect_expired) &&
      tls.client_cert == TlsConfig::ClientCert::kNone)
    c.error_at(c.where(tls.disconnect_revoked ? "disconnect_revoked" : "disconnect_expired"),
               tls.disconnect_revoked ? "disconnect_revoked" : "disconnect_expired",
               "needs client certificates (client_cert = \"optional\" or \"required\")");
  if (tls.crl_ca_certfile.empty() != tls.crl_ca_keyfile.empty()) {
    const char* given = tls.crl_ca_certfile.empty() ? "crl_ca_keyfile" : "crl_ca_certfile";
    c.error_at(c.where(given), given, "needs both crl_ca_certfile and crl_ca_keyfile");
  }
  if (!tls.crl_ca_certfile.empty() && tls.crlfile.empty())
    c.error_at(c.where("crl_ca_certfile"), "crl_ca_certfile", "needs a crlfile (the CRL it signs)");
  if (tls.disconnect_revoked && tls.crlfile.empty())
    c.error_at(c.where("disconnect_revoked"), "disconnect_revoked", "needs a crlfile");
  out = std::move(tls);
}

// The WebSocket keys of a listener table (path and origins need websocket = true).
void read_listener_websocket(TableChecker& c, const toml::table& t, ListenerConfig& l) {
  const bool websocket = c.boolean("websocket").value_or(false);
  WebSocketConfig ws;
  if (auto v = c.string("path")) {
    // An origin-form path: the request target a client's URL ends with (ws://host/mqtt).
    bool ok = !v->empty() && (*v)[0] == '/' && v->size() <= 256;
    for (char ch : *v)
      ok = ok && ch > 0x20 && ch < 0x7f && ch != '?' && ch != '#';
    if (!ok)
      c.error_at(c.where("path"), "path",
                 "expected a URL path such as \"/mqtt\", got \"" + *v + "\"");
    ws.path = *v;
  }
  if (auto v = c.string_array("origins")) {
    for (const std::string& origin : *v)
      if (origin.empty() || origin.find_first_of(" \t\r\n,") != std::string::npos)
        c.error_at(c.where("origins"), "origins",
                   "expected origins such as \"https://app.example.com\", got \"" + origin + "\"");
    ws.origins = *v;
  }
  if (!websocket) {
    for (const char* key : {"path", "origins"})
      if (t.get(key))
        c.error_at(c.where(key), key,
                   "is a WebSocket setting: it needs websocket = true on this listener");
    return;
  }
  l.websocket = std::move(ws);
}

// What happens to a subscriber that holds its publishers up for too long.
void read_listener_flow(TableChecker& c, ListenerConfig& l) {
  if (auto v = c.string("slow_subscriber")) {
    if (*v == "disconnect")
      l.slow_subscriber = ListenerConfig::SlowSubscriber::kDisconnect;
    else if (*v == "drop_qos0")
      l.slow_subscriber = ListenerConfig::SlowSubscriber::kDropQos0;
    else if (*v == "wait")
      l.slow_subscriber = ListenerConfig::SlowSubscriber::kWait;
    else
      c.error_at(c.where("slow_subscriber"), "slow_subscriber",
                 "expected \"disconnect\", \"drop_qos0\" or \"wait\", got " + log::quote(*v, 64));
  }
  if (auto v = c.integer("slow_subscriber_grace", 1, 86400))
    l.slow_subscriber_grace = static_cast<uint32_t>(*v);
}

void read_listener(const std::string& name, const toml::table& t, const std::string& file,
                   ListenerConfig& l, Errors& errors) {
  TableChecker c(t, "listeners." + name + ".", file, errors);
  l.name = name;
  l.line = static_cast<int>(t.source().begin.line);
  if (auto bind = c.string("bind")) {
    std::string why;
    l.bind = *bind;
    if (!parse_bind(*bind, l, why)) c.error_at(t.get("bind")->source(), "bind", why);
  } else if (t.get("bind") == nullptr) {
    c.error_at(t.source(), "bind", "missing (e.g. bind = \"127.0.0.1:1883\")");
  }
  if (auto v = c.integer("max_connections", 0, 1000000))
    l.max_connections = static_cast<uint32_t>(*v);
  if (auto v = c.string_array("plugins")) l.plugins = *v;
  read_listener_flow(c, l);
  read_tls(c, t, file, true, l.tls);
  read_listener_websocket(c, t, l);
  c.reject_unknown();
}

// A bearer token is compared with what follows "Bearer " in a header: visible ASCII only.
bool valid_token(const std::string& token) {
  return std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

constexpr size_t kMaxTokenBytes = 4096;
constexpr size_t kMinExposedTokenBytes = 32;

// Reads token_file: at most kMaxTokenBytes, one line (a final newline is dropped). Never
// puts the content in a message.
bool read_token_file(const std::string& path, std::string& token, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = "cannot open \"" + path + "\": " + std::strerror(errno);
    return false;
  }
  std::string text(kMaxTokenBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    why = "cannot read \"" + path + "\": " + std::strerror(errno);
    return false;
  }
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxTokenBytes) {
    why = "\"" + path + "\" is over " + std::to_string(kMaxTokenBytes) +
          " bytes (a token is one line)";
    return false;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  if (text.empty()) {
    why = "\"" + path + "\" is empty";
    return false;
  }
  if (!valid_token(text)) {
    why = "\"" + path + "\" must hold one line of visible ASCII characters (no spaces)";
    return false;
  }
  token = std::move(text);
  return true;
}

// The console's keys of [http]. Without TLS on [http], the console serves loopback
// binds only: passwords and session cookies must not cross a network in clear.
void read_http_console(TableChecker& c, const toml::table& t, const std::string& file,
                       HttpConfig& h) {
  h.console = c.boolean("console").value_or(false);
  if (auto v = c.string("console_users")) {
    if (v->empty())
      c.error_at(c.where("console_users"), "console_users", "must not be empty");
    else
      h.console_users = resolve_config_path(*v, file);
  }
  if (auto v = c.string_array("console_admins")) h.console_admins = *v;
  static constexpr const char* kCertKeys[] = {"console_cert_admins", "console_cert_readers"};
  for (auto* list : {&h.console_cert_admins, &h.console_cert_readers}) {
    const char* key = kCertKeys[list == &h.console_cert_admins ? 0 : 1];
    if (auto v = c.string_array(key)) {
      for (const std::string& id : *v) {
        const size_t colon = id.find(':');
        const std::string_view type =
            colon == std::string::npos ? std::string_view() : std::string_view(id).substr(0, colon);
        if (id.empty() || id.size() > 1024)
          c.error_at(c.where(key), key, "identities are 1 to 1024 bytes");
        else if ((type != "cn" && type != "dns" && type != "uri") || colon + 1 == id.size())
          // Typed, so that a device's CN cannot pass for an operator's name or URI.
          c.error_at(c.where(key), key,
                     "identities are typed: cn:<subject CN>, dns:<SAN DNS name> or "
                     "uri:<SAN URI>, got " +
                         log::quote(id, 64));
      }
      *list = *v;
    }
  }
  if (!h.console) {
    for (const char* key :
         {"console_users", "console_admins", "console_cert_admins", "console_cert_readers"})
      if (t.get(key)) c.error_at(c.where(key), key, "needs console = true");
    return;
  }
  const bool cert_logins = !h.console_cert_admins.empty() || !h.console_cert_readers.empty();
  if (cert_logins &&
      (!h.tls || h.tls->cafile.empty() || h.tls->client_cert == TlsConfig::ClientCert::kNone)) {
    const char* key = h.console_cert_admins.empty() ? kCertKeys[1] : kCertKeys[0];
    c.error_at(c.where(key), key,
               "needs client certificates on [http]: ssl = true, cafile and client_cert = "
               "\"optional\" (or \"required\")");
  }
  if (h.token.empty() && h.console_users.empty() && !cert_logins)
    c.error_at(c.where("console"), "console",
               "needs token (or token_file), console_users or console_cert_admins/readers: "
               "every call is authenticated");
  if (!h.console_admins.empty() && h.console_users.empty())
    c.error_at(c.where("console_admins"), "console_admins", "needs console_users");
  const bool loopback = h.ipv6 ? h.host == "::1" : h.host.starts_with("127.");
  if (!h.host.empty() && !loopback && !h.tls)
    c.error_at(c.where("console"), "console",
               "is served over plain HTTP on loopback binds only (127.0.0.0/8, ::1): turn on "
               "TLS for [http] (ssl = true, certfile, keyfile) or bind the endpoint to loopback "
               "and reach it through an SSH tunnel");
}

void read_http(const toml::table& t, const std::string& file, HttpConfig& h,
               std::vector<std::string>& errors) {
  TableChecker c(t, "http.", file, errors);
  h.line = static_cast<int>(t.source().begin.line);
  if (auto bind = c.string("bind")) {
    std::string why;
    h.bind = *bind;
    if (!parse_bind(*bind, h, why)) c.error_at(t.get("bind")->source(), "bind", why);
  } else if (t.get("bind") == nullptr) {
    c.error_at(t.source(), "bind", "missing (e.g. bind = \"127.0.0.1:9183\")");
  }
  const auto token = c.string("token");
  const auto token_file = c.string("token_file");
  if (token && token_file) {
    c.error_at(c.where("token_file"), "token_file", "give either token or token_file, not both");
  } else if (token) {
    if (token->empty() || token->size() > kMaxTokenBytes || !valid_token(*token))
      c.error_at(c.where("token"), "token",
                 "expected 1 to " + std::to_string(kMaxTokenBytes) +
                     " visible ASCII characters (no spaces)");
    else
      h.token = *token;
  } else if (token_file) {
    std::string why;
    if (token_file->empty())
      c.error_at(c.where("token_file"), "token_file", "must not be empty");
    else if (!read_token_file(resolve_config_path(*token_file, file), h.token, why))
      c.error_at(c.where("token_file"), "token_file", why);
  }
  if (auto v = c.integer("max_connections", 1, 1024)) h.max_connections = static_cast<uint32_t>(*v);
  if (auto v = c.integer("request_timeout", 1, 300)) h.request_timeout = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_connections_per_address", 1, 1024)) {
    if (static_cast<uint32_t>(*v) > h.max_connections)
      c.error_at(c.where("max_connections_per_address"), "max_connections_per_address",
                 "must not exceed max_connections (" + std::to_string(h.max_connections) + ")");
    else
      h.max_connections_per_address = static_cast<uint32_t>(*v);
  }
  if (auto v = c.integer("crowded_request_timeout_ms", 100, 300000))
    h.crowded_request_timeout_ms = static_cast<uint32_t>(*v);
  read_tls(c, t, file, false, h.tls);
  // A token reachable from a network is an admin's key: long enough not to be guessed.
  const bool loopback = h.ipv6 ? h.host == "::1" : h.host.starts_with("127.");
  if (!h.token.empty() && h.token.size() < kMinExposedTokenBytes && (h.tls || !loopback)) {
    const char* key = token_file ? "token_file" : "token";
    c.error_at(c.where(key), key,
               "must be at least " + std::to_string(kMinExposedTokenBytes) +
                   " characters when [http] has ssl = true or binds beyond loopback (e.g. "
                   "openssl rand -hex 32)");
  }
  read_http_console(c, t, file, h);
  c.reject_unknown();
}

// A file named in [cluster]: it must be readable now, not at the first reconnect.
bool readable_file(const std::string& path, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = "cannot open \"" + path + "\": " + std::strerror(errno);
    return false;
  }
  return true;
}

// "nats://host:port" or "tls://host:port" (host: a name, IPv4, or [IPv6]; an optional
// port). Credentials belong in the credential keys, not in URLs that end up in logs.
bool valid_nats_url(const std::string& url, std::string& why) {
  std::string_view rest = url;
  if (rest.substr(0, 7) == "nats://")
    rest.remove_prefix(7);
  else if (rest.substr(0, 6) == "tls://")
    rest.remove_prefix(6);
  else {
    why = "expected \"nats://host:port\" or \"tls://host:port\", got \"" + url + "\"";
    return false;
  }
  if (rest.find('@') != std::string_view::npos) {
    why = "credentials do not go in the URL (use user + password_file, token_file or creds_file)";
    return false;
  }
  if (rest.empty() || rest.size() > 255 || rest.find('/') != std::string_view::npos ||
      std::any_of(rest.begin(), rest.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    why = "expected \"nats://host:port\", got \"" + url + "\"";
    return false;
  }
  return true;
}

void read_cluster(const toml::table& t, const std::string& file, ClusterConfig& cc,
                  Errors& errors) {
  TableChecker c(t, "cluster.", file, errors);
  cc.line = static_cast<int>(t.source().begin.line);
  if (auto v = c.string("node")) {
    if (!valid_name(*v))
      c.error_at(c.where("node"), "node", "a node name must be 1-64 letters, digits, '-' or '_'");
    else
      cc.node = *v;
  } else if (t.get("node") == nullptr) {
    c.error_at(t.source(), "node", "missing (this node's unique name, e.g. node = \"a\")");
  }
  if (auto v = c.string("name")) {
    if (!valid_name(*v))
      c.error_at(c.where("name"), "name",
                 "a cluster name must be 1-64 letters, digits, '-' or '_'");
    else
      cc.name = *v;
  }
  if (auto urls = c.string_array("nats")) {
    if (urls->empty() || urls->size() > 64)
      c.error_at(c.where("nats"), "nats", "expected 1 to 64 server URLs");
    for (const auto& u : *urls) {
      std::string why;
      if (!valid_nats_url(u, why)) c.error_at(c.where("nats"), "nats", why);
    }
    cc.nats = *urls;
  } else if (t.get("nats") == nullptr) {
    c.error_at(t.source(), "nats",
               "missing (the NATS servers, e.g. nats = [\"nats://127.0.0.1:4222\"])");
  }
  // A secret file: one line of visible ASCII, never shown.
  const auto secret = [&](const char* key, std::string& out) {
    auto v = c.string(key);
    if (!v) return false;
    std::string why;
    if (v->empty())
      c.error_at(c.where(key), key, "must not be empty");
    else if (!read_token_file(resolve_config_path(*v, file), out, why))
      c.error_at(c.where(key), key, why);
    return true;
  };
  // A file cnats reads itself, at every (re)connect: checked readable now.
  const auto path = [&](const char* key, std::string& out) {
    auto v = c.string(key);
    if (!v) return false;
    std::string why;
    out = resolve_config_path(*v, file);
    if (v->empty())
      c.error_at(c.where(key), key, "must not be empty");
    else if (!readable_file(out, why))
      c.error_at(c.where(key), key, why);
    return true;
  };
  if (auto v = c.string("user")) {
    if (v->empty() || v->size() > 256 || !valid_token(*v))
      c.error_at(c.where("user"), "user", "expected 1 to 256 visible ASCII characters");
    else
      cc.user = *v;
  }
  const bool has_user = t.get("user") != nullptr;
  const bool has_password = secret("password_file", cc.password);
  const bool has_token = secret("token_file", cc.token);
  const bool has_creds = path("creds_file", cc.creds_file);
  if (has_user != has_password)
    c.error_at(c.where(has_user ? "user" : "password_file"), has_user ? "password_file" : "user",
               "user and password_file go together");
  if (int(has_user) + int(has_token) + int(has_creds) > 1)
    c.error_at(c.where(has_token ? "token_file" : "creds_file"),
               has_token ? "token_file" : "creds_file",
               "give one of user + password_file, token_file or creds_file");
  path("ca_file", cc.ca_file);
  const bool has_cert = path("cert_file", cc.cert_file);
  const bool has_key = path("key_file", cc.key_file);
  if (has_cert != has_key)
    c.error_at(c.where(has_cert ? "cert_file" : "key_file"), has_cert ? "key_file" : "cert_file",
               "cert_file and key_file go together");
  if (auto v = c.integer("inbound_queue_messages", 16, 10000000))
    cc.inbound_queue_messages = static_cast<uint32_t>(*v);
  if (auto v = c.integer("inbound_queue_bytes", 65536, int64_t{1} << 40))
    cc.inbound_queue_bytes = static_cast<uint64_t>(*v);
  if (auto v = c.integer("replicas", 1, 5)) cc.replicas = static_cast<uint32_t>(*v);
  if (auto v = c.integer("max_age", 60, int64_t{10} * 365 * 24 * 3600))
    cc.max_age_s = static_cast<uint64_t>(*v);
  if (auto v = c.integer("max_bytes", 1 << 20, int64_t{1} << 50))
    cc.max_bytes = static_cast<uint64_t>(*v);
  if (auto v = c.integer("max_pending", 16, 1000000)) cc.max_pending = static_cast<uint32_t>(*v);
  // At most the stream's duplicate window (2 minutes, at least max_age's 60 s): a message
  // sent again until publish_timeout must still be recognised by its Nats-Msg-Id.
  if (auto v = c.integer("publish_timeout", 1, 60))
    cc.publish_timeout_s = static_cast<uint32_t>(*v);
  c.reject_unknown();
}

void read_plugin(const std::string& name, const toml::table& t, const std::string& file,
                 const std::shared_ptr<const toml::table>& document, PluginConfig& p,
                 Errors& errors) {
  TableChecker c(t, "plugins." + name + ".", file, errors);
  p.name = name;
  p.line = static_cast<int>(t.source().begin.line);
  p.module = c.string("module").value_or(name);
  p.path = resolve_config_path(c.string("path").value_or(""), file);
  if (!valid_name(p.module))
    c.error_at(t.source(), "module", "a module name must be 1-64 letters, digits, '-' or '_'");
  auto options = std::make_shared<PluginTable>();
  options->document = document;
  options->table = &t;
  p.options = std::move(options);
  // The remaining keys belong to the plugin, which checks them in its init.
}

}  // namespace

std::optional<Config> parse_config(std::string_view text, const std::string& path, Errors& errors) {
  auto document = std::make_shared<toml::table>();
  toml::table& root = *document;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream s;
    s << path << ':' << e.source().begin.line << ':' << e.source().begin.column << ": "
      << e.description();
    errors.push_back(s.str());
    return std::nullopt;
  }

  Config cfg;
  cfg.path = path;
  TableChecker top(root, "", path, errors);
  if (auto level = top.string("log_level")) {
    if (!log::parse_level(*level, cfg.log_level))
      top.error_at(
          root.get("log_level")->source(), "log_level",
          "expected \"error\", \"warning\", \"info\" or \"debug\", got \"" + *level + "\"");
  }
  if (auto v = top.integer("sys_interval", 0, 86400)) cfg.sys_interval = static_cast<uint32_t>(*v);
  if (auto v = top.string("plugin_dir")) cfg.plugin_dir = resolve_config_path(*v, path);
  if (auto v = top.string("user")) {
    const auto& at = root.get("user")->source();
    const bool ok =
        !v->empty() && v->size() <= 32 && (*v)[0] != '-' &&
        std::all_of(v->begin(), v->end(), [](char ch) {
          return isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.';
        });
    if (!ok)
      top.error_at(at, "user", "expected a user name (1-32 letters, digits, '_', '-' or '.')");
    cfg.user = *v;
    cfg.user_line = static_cast<int>(at.begin.line);
  }
  if (auto v = top.integer("tls_threads", 0, 256)) cfg.tls_threads = static_cast<uint32_t>(*v);
  if (auto v = top.integer("auth_timeout", 1, 3600)) cfg.auth_timeout = static_cast<uint32_t>(*v);
  if (auto v = top.integer("tls_max_pending_handshakes", 1, 1000000))
    cfg.tls_max_pending_handshakes = static_cast<uint32_t>(*v);
  if (auto v = top.string("session_owner")) {
    if (*v == "identity")
      cfg.session_owner = Config::SessionOwner::kIdentity;
    else if (*v == "client_id")
      cfg.session_owner = Config::SessionOwner::kClientId;
    else
      top.error_at(root.get("session_owner")->source(), "session_owner",
                   "expected \"identity\" or \"client_id\", got \"" + *v + "\"");
  }
  if (auto v = top.string("response_information")) {
    if (v->size() > 1024 || v->find('\0') != std::string::npos)
      top.error_at(root.get("response_information")->source(), "response_information",
                   "expected at most 1024 bytes without NUL");
    else
      cfg.response_information = *v;
  }
  if (const toml::table* limits = top.table("limits")) read_limits(*limits, path, cfg.limits, errors);
  if (const toml::table* persistence = top.table("persistence"))
    read_persistence(*persistence, path, cfg.persistence, errors);

  if (const toml::table* listeners = top.table("listeners")) {
    TableChecker lc(*listeners, "listeners.", path, errors);
    for (auto& [name, t] : tables_in_file_order(*listeners, lc, "listeners")) {
      ListenerConfig l;
      l.index = cfg.listeners.size();
      read_listener(name, *t, path, l, errors);
      cfg.listeners.push_back(std::move(l));
    }
  }
  if (cfg.listeners.empty())
    errors.push_back(path +
                     ": no listener configured (add e.g. [listeners.default] with "
                     "bind = \"127.0.0.1:1883\")");

  if (const toml::table* http = top.table("http")) {
    HttpConfig h;
    read_http(*http, path, h, errors);
    cfg.http = std::move(h);
  }

  if (const toml::table* cluster = top.table("cluster")) {
    ClusterConfig cc;
    read_cluster(*cluster, path, cc, errors);
    cfg.cluster = std::move(cc);
  }

  if (const toml::table* plugins = top.table("plugins")) {
    TableChecker pc(*plugins, "plugins.", path, errors);
    for (auto& [name, t] : tables_in_file_order(*plugins, pc, "plugins")) {
      PluginConfig p;
      read_plugin(name, *t, path, document, p, errors);
      cfg.plugins.push_back(std::move(p));
    }
  }
  // With persistence, TLS session-ticket keys live next to the store (one file per listener).
  if (cfg.persistence.enabled()) {
    for (auto& l : cfg.listeners) {
      if (!l.tls) continue;
      std::string name = l.name;
      for (char& ch : name)
        if (!isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') ch = '_';
      l.tls->ticket_key_file = cfg.persistence.path + ".tls-tickets-" + name;
    }
  }
  // A listener's plugin list must name configured instances.
  for (const auto& l : cfg.listeners) {
    if (!l.plugins) continue;
    for (const auto& name : *l.plugins) {
      bool found = std::any_of(cfg.plugins.begin(), cfg.plugins.end(),
                               [&](const PluginConfig& p) { return p.name == name; });
      if (!found)
        errors.push_back(path + ":" + std::to_string(l.line) + ": listeners." + l.name +
                         ".plugins: \"" + name + "\" is not a configured plugin (no [plugins." +
                         name + "] table)");
    }
  }
  top.reject_unknown();
  if (!errors.empty()) return std::nullopt;
  return cfg;
}

std::optional<Config> load_config(const std::string& path, Errors& errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    errors.push_back(path + ": cannot open config file: " + std::strerror(err) + access_hint(err));
    return std::nullopt;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    errors.push_back(path + ": cannot read config file: " + std::strerror(errno));
    return std::nullopt;
  }
  return parse_config(buf.str(), path, errors);
}

}  // namespace mqgate
