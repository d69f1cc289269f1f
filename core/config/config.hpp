// The broker's configuration, read from a TOML file and checked completely before the
// broker listens: an unknown key, a wrong type or an impossible value is an error that
// names the file, the line and the key, and says what was expected.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/errors.hpp"
#include "base/log.hpp"

namespace mqgate {

struct PluginTable;

struct LimitsConfig {
  uint32_t max_packet_size = 1024 * 1024;         // bytes, whole packet
  uint32_t max_inflight_messages = 20;            // per client, outgoing QoS 1/2 awaiting ack
  uint32_t max_queued_messages = 1000;            // per client, beyond the window / while offline
  uint32_t max_client_id_length = 256;            // bytes
  uint32_t max_outgoing_bytes = 4 * 1024 * 1024;  // per client backlog; QoS 0 dropped beyond
  uint32_t connect_timeout = 10;                  // seconds from accept to CONNECT
  uint32_t max_topic_levels = 200;                // levels in a topic or filter
  uint32_t session_expiry = 0;  // seconds an offline persistent session is kept; 0: forever
  uint32_t max_subscriptions_per_client = 1000;  // beyond: SUBACK 0x80
  uint32_t max_persistent_sessions = 100000;   // clean session 0, online or not; beyond: CONNACK 3
  uint64_t max_retained_messages = 1000000;    // beyond: a new retained topic is not stored
  uint64_t max_retained_bytes = 256ull << 20;  // topic + payload bytes of retained messages
  uint32_t packet_timeout = 60;                // seconds a started packet has to arrive completely
  // Longest keep-alive a client may ask for (0: any, also none). 5.0 clients asking for
  // more or none get this one (Server Keep Alive); 3.x clients are refused (CONNACK 2).
  uint32_t max_keepalive = 0;
  // Bytes (topic, payload, properties) of one session's queued messages; beyond: new ones
  // are dropped as for max_queued_messages. Bounds what an offline session can hold.
  uint64_t max_queued_bytes = 64ull << 20;
};

// TLS settings of a listener (`ssl = true`). File paths are resolved against the
// configuration file's directory.
struct TlsConfig {
  enum class ClientCert : uint8_t { kNone, kOptional, kRequired };
  std::string certfile;  // server certificate, may be followed by its chain
  std::string keyfile;   // RSA or EC; PKCS#1, PKCS#8 or SEC1; not encrypted
  std::string cafile;    // CAs that client certificates must chain to
  std::string crlfile;   // revoked client certificates (needs cafile)
  ClientCert client_cert = ClientCert::kNone;
  int min_version_minor = 3;  // mbedTLS minor version: 3 = TLS 1.2, 2 = 1.1, 1 = 1.0
  std::vector<std::string>
      ciphers;  // mbedTLS suite names; empty: ECDHE AES-GCM, then ChaCha20 (tls_material.cpp)
  bool disconnect_revoked = false;     // after a CRL reload, close clients now revoked
  bool disconnect_expired = false;     // close clients whose certificate has expired
  bool session_tickets = true;         // RFC 5077 resumption
  uint32_t session_cache_size = 1000;  // session-id resumption; 0 disables
  uint32_t session_lifetime = 3600;    // seconds a ticket / cached session stays valid
  // Where the ticket keys are kept across restarts (set when [persistence] is on); "": memory only.
  std::string ticket_key_file;
  // The CA (certificate and key) that signs crlfile when the console revokes a device
  // (docs/console.md); both or neither. Read only when a revocation runs, off the loop.
  std::string crl_ca_certfile;
  std::string crl_ca_keyfile;
};

// MQTT over WebSocket on a listener (`websocket = true`).
struct WebSocketConfig {
  std::string path = "/mqtt";        // the only request target upgraded
  std::vector<std::string> origins;  // allowed Origin header values; empty: any
};

struct ListenerConfig {
  std::string name;
  size_t index = 0;  // position in Config::listeners
  std::string bind;  // as written, for messages
  std::string host;  // IPv4 or IPv6 literal
  uint16_t port = 0;
  bool ipv6 = false;
  uint32_t max_connections = 0;              // 0: no limit
  std::optional<TlsConfig> tls;              // set when ssl = true
  std::optional<WebSocketConfig> websocket;  // set when websocket = true (above TLS if both)
  // Plugin instances asked for this listener; unset: every configured plugin.
  std::optional<std::vector<std::string>> plugins;
  // A subscriber of this listener that stays over its high-water mark (flow_control.hpp)
  // for slow_subscriber_grace seconds while publishers wait on it: closed (its persistent
  // session keeps its queue), its QoS 0 messages dropped, or waited for.
  enum class SlowSubscriber : uint8_t { kDisconnect, kDropQos0, kWait };
  SlowSubscriber slow_subscriber = SlowSubscriber::kDisconnect;
  uint32_t slow_subscriber_grace = 5;  // seconds
  int line = 0;  // where the table starts, for later messages
};

// The operators' HTTP endpoint (`[http]`): GET /metrics and GET /healthz.
struct HttpConfig {
  std::string bind;  // as written, for messages
  std::string host;  // IPv4 or IPv6 literal
  uint16_t port = 0;
  bool ipv6 = false;
  // Non-empty: GET /metrics needs "Authorization: Bearer <token>" (from `token` or
  // `token_file`). A secret: never logged, never in an error message.
  std::string token;
  uint32_t max_connections = 16;  // HTTP connections open at once; beyond: the oldest idle goes
  uint32_t request_timeout = 5;   // seconds to send a request head (and to read the answer)
  uint32_t max_connections_per_address = 0;    // 0: half of max_connections (all below 4)
  uint32_t crowded_request_timeout_ms = 1000;  // the head's deadline while the pool is full
  // Set when ssl = true: HTTPS, with the listeners' TLS keys (the CRL-signing and
  // disconnect_* keys excepted). Then the console may bind beyond loopback.
  std::optional<TlsConfig> tls;
  // The fleet console (docs/console.md): /api/v1/ and /console/ on this endpoint. Off
  // unless `console = true`; then every call needs the token or a logged-in user.
  bool console = false;
  std::string console_users;                // Mosquitto password file ("": token only)
  std::vector<std::string> console_admins;  // users who may act; the others read only
  // Logins with a client certificate (needs ssl, cafile, client_cert): the identities (the
  // leaf's subject CN, or a subjectAltName DNS name or URI) that log in as admin or
  // read-only. Any other certificate is refused.
  std::vector<std::string> console_cert_admins;
  std::vector<std::string> console_cert_readers;
  int line = 0;
};

struct PluginConfig {
  std::string name;    // the instance name: [plugins.<name>]
  std::string module;  // the .so to load: `module` key, default: the instance name
  std::string path;    // explicit file, overrides plugin_dir lookup
  // The plugin's TOML table, with its source positions (config_toml.hpp; kept opaque
  // here so that the broker's headers do not carry toml++). The host's keys (`module`,
  // `path`) are not the plugin's options.
  std::shared_ptr<const PluginTable> options;
  int line = 0;
  static bool is_host_key(std::string_view key) { return key == "module" || key == "path"; }
};

// Durable state ([persistence]): off unless `path` is set.
struct PersistenceConfig {
  std::string path;  // the store file, resolved against the config file; "": off
  // "sync" (default): a PUBACK/PUBREC waits until its message is fsynced (group
  // commit). "batched": written at once, fsynced every flush_interval; a machine crash
  // (not a broker crash) may lose the last interval.
  bool batched = false;
  uint32_t flush_interval_ms = 100;  // kBatched: fsync period; kSync: idle wake-up
  uint64_t max_bytes = 0;            // cap on the store file; 0: none (past it: as disk full)
  bool enabled() const { return !path.empty(); }
};

// Joining a cluster of nodes over NATS (`[cluster]`, docs/cluster.md). Absent: one node.
struct ClusterConfig {
  std::string node;               // unique in the cluster; a NATS subject token
  std::string name = "mqgate";    // the cluster's name, in every subject
  std::vector<std::string> nats;  // server URLs: nats://host:port or tls://host:port
  // Credentials (secrets: never logged, never in an error message): user + password
  // (from password_file), a token (token_file), or a NATS .creds file (JWT + nkey).
  std::string user;
  std::string password;
  std::string token;
  std::string creds_file;
  // TLS to NATS: the CAs NATS's certificate must chain to, and ours (mTLS).
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // Messages from NATS waiting for the loop; beyond either, new ones are dropped.
  uint32_t inbound_queue_messages = 100000;
  uint64_t inbound_queue_bytes = 64ull << 20;
  // Durability of QoS 1/2 messages other nodes want (docs/cluster.md#durability): the
  // JetStream stream's replicas, how long and how many bytes it keeps what a node has not
  // taken yet, and how many publishes may wait for JetStream's acknowledgement.
  uint32_t replicas = 3;
  uint64_t max_age_s = 7 * 24 * 3600;
  uint64_t max_bytes = 1ull << 30;
  uint32_t max_pending = 8192;
  // How long such a message waits for JetStream (retried meanwhile) before its publisher
  // is refused.
  uint32_t publish_timeout_s = 10;
  int line = 0;
  bool tls() const { return !ca_file.empty() || !cert_file.empty(); }
};

struct Config {
  std::string path;  // the file it came from
  log::Level log_level = log::Level::kInfo;
  uint32_t sys_interval = 10;  // seconds; 0 disables $SYS
  std::string plugin_dir;      // empty: the build's or install's plugin directory
  // The user to run as once bound, when started as root (base/privileges.hpp); unset:
  // "mqgate". `user_line`: where it was set, for messages.
  std::optional<std::string> user;
  int user_line = 0;
  uint32_t tls_threads = 0;    // TLS handshake threads; 0: one per CPU core
  // Seconds a plugin may take over a deferred decision before it counts as DENY.
  uint32_t auth_timeout = 10;
  // TLS handshakes in progress (waiting for a worker, on one, or for the client's next
  // flight) beyond which new TLS connections are closed at once. 1024 is a reconnect
  // storm of a thousand devices, about a second of full RSA handshakes on two cores and
  // well inside connect_timeout; at most ~100 MiB of handshake buffers.
  uint32_t tls_max_pending_handshakes = 1024;
  // Who may take over or resume a session: only the identity that created it
  // (default), or anybody with its client id (MQTT's and Mosquitto's rule).
  enum class SessionOwner : uint8_t { kIdentity, kClientId };
  SessionOwner session_owner = SessionOwner::kIdentity;
  // MQTT 5.0 Response Information for clients that ask for it (Request Response
  // Information 1): "%c" is replaced by the client id. Empty: never sent.
  std::string response_information;
  LimitsConfig limits;
  PersistenceConfig persistence;
  std::vector<ListenerConfig> listeners;  // in file order
  std::vector<PluginConfig> plugins;      // in file order
  std::optional<HttpConfig> http;         // set when there is an [http] table
  std::optional<ClusterConfig> cluster;   // set when there is a [cluster] table
};

// A path from the configuration, relative to the configuration file's directory
// (absolute paths and "" are returned as they are).
std::string resolve_config_path(const std::string& path, const std::string& config_file);

// Reads and checks `path`. On failure returns nullopt and adds one message per problem
// to `errors`, each naming the file, line and key (errors.hpp).
std::optional<Config> load_config(const std::string& path, Errors& errors);

// Same, from text (for tests); `path` is only used in messages.
std::optional<Config> parse_config(std::string_view text, const std::string& path, Errors& errors);

}  // namespace mqgate
