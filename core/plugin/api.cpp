// The host side of the plugin ABI: the functions in mqgate_host_api.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/log.hpp"
#include "base/version.hpp"
#include "client/client.hpp"
#include "mqtt/topic.hpp"
#include "plugin/instance.hpp"

static_assert(sizeof(mqgate_cert) == sizeof(mqgate::TlsPeerInfo::CertView));
static_assert(offsetof(mqgate_cert, der_len) == offsetof(mqgate::TlsPeerInfo::CertView, der_len));

namespace mqgate::detail {

namespace {

const Client* as_client(const mqgate_client* c) { return reinterpret_cast<const Client*>(c); }

log::Level to_level(int level) {
  switch (level) {
    case MQGATE_LOG_ERROR:
      return log::Level::kError;
    case MQGATE_LOG_WARNING:
      return log::Level::kWarning;
    case MQGATE_LOG_DEBUG:
      return log::Level::kDebug;
    default:
      return log::Level::kInfo;
  }
}

int api_register_event(mqgate_plugin* plugin, int event, mqgate_event_cb cb) {
  if (plugin == nullptr || cb == nullptr || !plugin->in_init) return MQGATE_ERR_INVALID;
  if (event < MQGATE_EVT_AUTHENTICATE || event > MQGATE_EVT_MESSAGE) return MQGATE_ERR_UNSUPPORTED;
  plugin->callbacks[event] = cb;
  return MQGATE_OK;
}

void api_log(mqgate_plugin* plugin, int level, const char* format, ...) {
  const log::Level lvl = to_level(level);
  if (!log::enabled(lvl) || format == nullptr) return;
  char text[1024];
  va_list ap;
  va_start(ap, format);
  vsnprintf(text, sizeof text, format, ap);
  va_end(ap);
  // A plugin's text may carry client data: one event stays one line.
  log::write(lvl, "plugin \"%s\": %s", plugin ? plugin->name.c_str() : "?", log::sanitize(text).c_str());
}

char* api_mprintf(const char* format, ...) {
  if (format == nullptr) return nullptr;
  va_list ap;
  va_start(ap, format);
  char* out = nullptr;
  if (vasprintf(&out, format, ap) < 0) out = nullptr;
  va_end(ap);
  return out;
}

char* api_strdup(const char* s) { return s ? ::strdup(s) : nullptr; }
void api_free(void* p) { std::free(p); }

const char* api_strerror(int code) {
  switch (code) {
#define MQGATE_X_TEXT(name, value, text) \
  case value:                            \
    return text;
    MQGATE_ERR_MAP(MQGATE_X_TEXT)
#undef MQGATE_X_TEXT
  }
  return "unknown error code";
}

const toml::node* option(const mqgate_options* o, const char* key) {
  if (o == nullptr || key == nullptr || o->table == nullptr) return nullptr;
  if (PluginConfig::is_host_key(key)) return nullptr;
  return o->table->get(key);
}

size_t api_opt_count(const mqgate_options* o) { return o ? o->keys.size() : 0; }

const char* api_opt_key(const mqgate_options* o, size_t index) {
  return o && index < o->keys.size() ? o->keys[index].c_str() : nullptr;
}

int api_opt_type(const mqgate_options* o, const char* key) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_OPT_MISSING;
  if (n->is_string()) return MQGATE_OPT_STRING;
  if (n->is_integer()) return MQGATE_OPT_INTEGER;
  if (n->is_boolean()) return MQGATE_OPT_BOOLEAN;
  if (const toml::array* a = n->as_array()) {
    for (const auto& e : *a)
      if (!e.is_string()) return MQGATE_OPT_OTHER;
    return MQGATE_OPT_STRING_ARRAY;
  }
  return MQGATE_OPT_OTHER;
}

int api_opt_string(const mqgate_options* o, const char* key, const char** out) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_ERR_NOT_FOUND;
  if (!n->is_string() || out == nullptr) return MQGATE_ERR_TYPE;
  *out = n->as_string()->get().c_str();
  return MQGATE_OK;
}

int api_opt_path(const mqgate_options* o, const char* key, const char** out) {
  const char* value = nullptr;
  const int rc = api_opt_string(o, key, &value);
  if (rc != MQGATE_OK) return rc;
  o->scratch.push_back(std::make_unique<std::string>(resolve_config_path(value, o->file)));
  *out = o->scratch.back()->c_str();
  return MQGATE_OK;
}

int api_opt_integer(const mqgate_options* o, const char* key, int64_t* out) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_ERR_NOT_FOUND;
  if (!n->is_integer() || out == nullptr) return MQGATE_ERR_TYPE;
  *out = n->as_integer()->get();
  return MQGATE_OK;
}

int api_opt_boolean(const mqgate_options* o, const char* key, int* out) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_ERR_NOT_FOUND;
  if (!n->is_boolean() || out == nullptr) return MQGATE_ERR_TYPE;
  *out = n->as_boolean()->get() ? 1 : 0;
  return MQGATE_OK;
}

int api_opt_array_size(const mqgate_options* o, const char* key, size_t* out) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_ERR_NOT_FOUND;
  if (api_opt_type(o, key) != MQGATE_OPT_STRING_ARRAY || out == nullptr) return MQGATE_ERR_TYPE;
  *out = n->as_array()->size();
  return MQGATE_OK;
}

int api_opt_array_string(const mqgate_options* o, const char* key, size_t index, const char** out) {
  const toml::node* n = option(o, key);
  if (n == nullptr) return MQGATE_ERR_NOT_FOUND;
  if (api_opt_type(o, key) != MQGATE_OPT_STRING_ARRAY || out == nullptr) return MQGATE_ERR_TYPE;
  const toml::array* a = n->as_array();
  if (index >= a->size()) return MQGATE_ERR_NOT_FOUND;
  *out = a->get(index)->as_string()->get().c_str();
  return MQGATE_OK;
}

const char* api_opt_location(const mqgate_options* o, const char* key) {
  if (o == nullptr) return "";
  std::string where = o->file + ":" + std::to_string(o->table_line);
  if (option(o, key) != nullptr) {
    for (auto&& [k, v] : *o->table) {
      if (k.str() != key) continue;
      where = o->file + ":" + std::to_string(k.source().begin.line) + ":" +
              std::to_string(k.source().begin.column);
    }
  }
  o->scratch.push_back(std::make_unique<std::string>(std::move(where)));
  return o->scratch.back()->c_str();
}

const char* api_client_id(const mqgate_client* c) { return c ? as_client(c)->client_id().c_str() : nullptr; }

const char* api_client_username(const mqgate_client* c) {
  const std::string* u = c ? as_client(c)->username() : nullptr;
  return u ? u->c_str() : nullptr;
}

const char* api_client_listener(const mqgate_client* c) {
  return c && as_client(c)->listener() ? as_client(c)->listener()->name.c_str() : nullptr;
}

const char* api_client_peer_address(const mqgate_client* c) {
  return c ? as_client(c)->peer().c_str() : nullptr;
}

const mqgate_cert* api_client_peer_chain(const mqgate_client* c, size_t* count) {
  const TlsPeerInfo* tls = c ? as_client(c)->tls() : nullptr;
  if (tls == nullptr || tls->chain.empty()) {
    if (count) *count = 0;
    return nullptr;
  }
  if (count) *count = tls->chain.size();
  return reinterpret_cast<const mqgate_cert*>(tls->chain.data());
}

int api_client_set_data(mqgate_client* c, mqgate_plugin* plugin, void* data, void (*free_fn)(void*)) {
  if (c == nullptr || plugin == nullptr) return MQGATE_ERR_INVALID;
  reinterpret_cast<Client*>(c)->set_plugin_data(plugin, data, free_fn);
  return MQGATE_OK;
}

void* api_client_get_data(const mqgate_client* c, mqgate_plugin* plugin) {
  return c ? as_client(c)->plugin_data(plugin) : nullptr;
}

int api_topic_matches(const char* filter, const char* topic) {
  if (filter == nullptr || topic == nullptr) return 0;
  if (!is_valid_topic_filter(filter) || !is_valid_topic_name(topic)) return 0;
  return topic_matches(filter, topic) ? 1 : 0;
}

const char* api_client_identity(const mqgate_client* c) {
  const std::string* identity = c ? as_client(c)->identity : nullptr;
  return identity ? identity->c_str() : nullptr;
}

int api_client_protocol_level(const mqgate_client* c) {
  return c ? as_client(c)->protocol_level : 0;
}

int api_client_clean_session(const mqgate_client* c) {
  return c && as_client(c)->clean_session ? 1 : 0;
}

const char* api_client_tls_version(const mqgate_client* c) {
  const TlsPeerInfo* tls = c ? as_client(c)->tls() : nullptr;
  return tls ? tls->version.c_str() : nullptr;
}

const char* api_client_tls_cipher(const mqgate_client* c) {
  const TlsPeerInfo* tls = c ? as_client(c)->tls() : nullptr;
  return tls ? tls->cipher.c_str() : nullptr;
}

int api_filter_covers(const char* pattern, const char* filter) {
  if (pattern == nullptr || filter == nullptr) return 0;
  if (!is_valid_topic_filter(pattern) || !is_valid_topic_filter(filter)) return 0;
  return filter_covers(pattern, filter) ? 1 : 0;
}

int api_register_auth_method(mqgate_plugin* plugin, const char* method) {
  if (plugin == nullptr || method == nullptr || *method == '\0' || !plugin->in_init)
    return MQGATE_ERR_INVALID;
  if (std::strlen(method) > 65535) return MQGATE_ERR_INVALID;  // an MQTT string
  if (std::find(plugin->auth_methods.begin(), plugin->auth_methods.end(), method) ==
      plugin->auth_methods.end())
    plugin->auth_methods.emplace_back(method);
  return MQGATE_OK;
}

void* api_alloc(size_t size) {
  return std::malloc(size == 0 ? 1 : size);
}

int api_register_counter(mqgate_plugin* plugin, const char* name, const char* help) {
  if (plugin == nullptr || name == nullptr || !plugin->in_init) return MQGATE_ERR_INVALID;
  const size_t n = std::strlen(name);
  if (n == 0 || n > 48 || std::strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != n ||
      plugin->counter_names.size() >= mqgate_plugin::kMaxCounters)
    return MQGATE_ERR_INVALID;
  for (const auto& [known, h] : plugin->counter_names)
    if (known == name) return MQGATE_ERR_INVALID;
  // Help text is one line of printable text in the exposition.
  plugin->counter_names.emplace_back(name, help ? log::sanitize(help) : std::string());
  return static_cast<int>(plugin->counter_names.size() - 1);
}

void api_counter_add(mqgate_plugin* plugin, int index, uint64_t n) {
  if (plugin == nullptr || index < 0 || static_cast<size_t>(index) >= mqgate_plugin::kMaxCounters)
    return;
  plugin->counter_values[static_cast<size_t>(index)].fetch_add(n, std::memory_order_relaxed);
}

// ABI 2's table; ABI 1 plugins get the same with their version and size (up to
// client_identity, ABI 1.1), so MQGATE_API_HAS tells them the newer members are not
// theirs and MQGATE_ABI_MINOR says 1.
const mqgate_host_api kHostApi = {
    sizeof(mqgate_host_api),
    MQGATE_PLUGIN_ABI_VERSION,
    MQGATE_VERSION,
    api_register_event,
    api_log,
    api_mprintf,
    api_strdup,
    api_free,
    api_strerror,
    api_opt_count,
    api_opt_key,
    api_opt_type,
    api_opt_string,
    api_opt_integer,
    api_opt_boolean,
    api_opt_array_size,
    api_opt_array_string,
    api_opt_location,
    api_client_id,
    api_client_username,
    api_client_listener,
    api_client_peer_address,
    api_client_peer_chain,
    api_client_set_data,
    api_client_get_data,
    api_topic_matches,
    api_client_identity,
    api_defer,
    api_complete,
    api_disconnect,
    api_client_protocol_level,
    api_client_clean_session,
    api_client_tls_version,
    api_client_tls_cipher,
    api_filter_covers,
    api_opt_path,
    api_register_auth_method,
    api_alloc,
    MQGATE_PLUGIN_ABI_MINOR,
    api_deferred_is_live,
    api_claim_topic,
    api_send_to_client,
    api_register_counter,
    api_counter_add,
};

mqgate_host_api make_v1_api() {
  mqgate_host_api api = kHostApi;
  api.struct_size = offsetof(mqgate_host_api, defer);
  api.abi_version = 1;
  return api;
}
const mqgate_host_api kHostApiV1 = make_v1_api();

}  // namespace

const mqgate_host_api* host_api(int abi_version) {
  return abi_version == 1 ? &kHostApiV1 : &kHostApi;
}

std::unique_ptr<mqgate_options> make_options(const PluginConfig& config, const std::string& file) {
  auto o = std::make_unique<mqgate_options>();
  o->table = config.options->table;
  o->document = config.options->document;
  o->file = file;
  o->table_line = config.line;
  std::vector<std::pair<toml::source_position, std::string>> keys;
  for (auto&& [k, v] : *config.options->table)
    if (!PluginConfig::is_host_key(k.str())) keys.emplace_back(k.source().begin, std::string(k.str()));
  std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [pos, k] : keys) o->keys.push_back(std::move(k));
  return o;
}

std::string take_plugin_string(char*& s) {
  if (s == nullptr) return {};
  std::string out(s);
  std::free(s);
  s = nullptr;
  return out;
}

}  // namespace mqgate::detail
