// Broker-owned topics (ABI 2.5, "Broker-owned topics" in mqgate_plugin.h): the claims
// plugins make on '$' topics, and their messages for one connection
// (api->send_to_client), copied and posted to the loop.
#include <algorithm>
#include <cstring>
#include <iterator>

#include "base/deferred.hpp"
#include "base/log.hpp"
#include "base/utf8.hpp"
#include "client/client.hpp"
#include "mqtt/packet.hpp"
#include "mqtt/topic.hpp"
#include "plugin/host.hpp"
#include "plugin/instance.hpp"

namespace mqgate {

using detail::take_plugin_string;

namespace {

constexpr size_t kMaxClaims = 64;
constexpr size_t kMaxProperty = 65535;  // an MQTT string or binary field

std::vector<std::string_view> levels(std::string_view filter) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t slash = filter.find('/', start);
    out.push_back(filter.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return out;
    start = slash + 1;
  }
}

bool overlap_from(const std::vector<std::string_view>& a, size_t i,
                  const std::vector<std::string_view>& b, size_t j) {
  for (;; ++i, ++j) {
    const bool a_end = i == a.size(), b_end = j == b.size();
    if (!a_end && a[i] == "#") return true;  // '#' also matches its parent level
    if (!b_end && b[j] == "#") return true;
    if (a_end || b_end) return a_end && b_end;
    if (a[i] != "+" && b[j] != "+" && a[i] != b[j]) return false;
  }
}

// Why `filter` cannot be a claim by itself; empty if it can.
std::string claim_problem(std::string_view filter) {
  if (!is_valid_topic_filter(filter)) return "not a valid topic filter";
  const std::string_view first = levels(filter).front();
  if (first.empty() || first[0] != '$')
    return "a claim must start with a '$' level (only broker-owned topics can be claimed)";
  if (first == "$SYS") return "$SYS belongs to the broker";
  if (first == "$share") return "$share names shared subscriptions";
  return {};
}

mqgate_client* handle(const Client& c) {
  return reinterpret_cast<mqgate_client*>(const_cast<Client*>(&c));
}

bool valid_utf8_string(const char* s) {
  return s != nullptr && std::strlen(s) <= kMaxProperty && codec::is_valid_mqtt_utf8(s);
}

}  // namespace

bool filters_overlap(std::string_view a, std::string_view b) {
  return overlap_from(levels(a), 0, levels(b), 0);
}

int detail::api_claim_topic(mqgate_plugin* plugin, const char* filter) {
  if (plugin == nullptr || filter == nullptr) return MQGATE_ERR_INVALID;
  const char* name = plugin->name.c_str();
  if (!plugin->in_init && !plugin->in_reload) {
    LOG_ERROR("plugin \"%s\": claim_topic(%s) outside init and reload; refused", name,
              log::quote(filter).c_str());
    return MQGATE_ERR_INVALID;
  }
  std::vector<std::string>& mine = plugin->in_reload ? plugin->reload_claims : plugin->claims;
  std::string why = claim_problem(filter);
  if (why.empty() && mine.size() >= kMaxClaims)
    why = "more than " + std::to_string(kMaxClaims) + " claims";
  if (why.empty() && plugin->peers != nullptr) {
    for (const auto& other : *plugin->peers) {
      if (other.get() == plugin) continue;
      for (const std::string& theirs : other->claims)
        if (filters_overlap(filter, theirs)) {
          why = "it overlaps " + log::quote(theirs) + ", claimed by plugin \"" + other->name + "\"";
          break;
        }
      if (!why.empty()) break;
    }
  }
  if (!why.empty()) {
    LOG_ERROR("plugin \"%s\": cannot claim the topic filter %s: %s", name,
              log::quote(filter).c_str(), why.c_str());
    return MQGATE_ERR_INVALID;
  }
  if (std::find(mine.begin(), mine.end(), filter) == mine.end()) mine.emplace_back(filter);
  return MQGATE_OK;
}

// Any thread: checks and copies the message, then posts it to the loop.
int detail::api_send_to_client(mqgate_plugin* plugin, const mqgate_outgoing* m) {
  if (plugin == nullptr || m == nullptr || m->struct_size < offsetof(mqgate_outgoing, reserved))
    return MQGATE_ERR_INVALID;
  if (m->to == 0 || m->topic == nullptr || !is_valid_topic_name(m->topic) || m->qos < 0 ||
      m->qos > 2 || (m->payload == nullptr && m->payload_len != 0) ||
      (m->correlation_data == nullptr && m->correlation_data_len != 0) ||
      m->correlation_data_len > kMaxProperty ||
      (m->content_type != nullptr && !valid_utf8_string(m->content_type)) ||
      (m->user_properties == nullptr && m->user_properties_len != 0))
    return MQGATE_ERR_INVALID;
  PrivateMessage out;
  for (size_t i = 0; i < m->user_properties_len; ++i) {
    const mqgate_user_property& p = m->user_properties[i];
    if (!valid_utf8_string(p.name) || !valid_utf8_string(p.value)) return MQGATE_ERR_INVALID;
    out.user_properties.emplace_back(p.name, p.value);
  }
  out.conn = m->to;
  out.topic = m->topic;
  if (m->payload_len != 0)
    out.payload.assign(reinterpret_cast<const char*>(m->payload), m->payload_len);
  out.qos = static_cast<uint8_t>(m->qos);
  if (m->correlation_data != nullptr)
    out.correlation_data.emplace(reinterpret_cast<const char*>(m->correlation_data),
                                 m->correlation_data_len);
  if (m->content_type != nullptr) out.content_type.emplace(m->content_type);
  out.plugin = plugin->name;
  PluginHost* host = plugin->host;
  if (host == nullptr) return MQGATE_ERR_UNSUPPORTED;
  auto shared = std::make_shared<PrivateMessage>(std::move(out));
  if (!DeferredQueue::post([host, shared] { host->send_private(std::move(*shared)); }))
    return MQGATE_ERR_UNSUPPORTED;
  return MQGATE_OK;
}

mqgate_plugin* PluginHost::claimant(const Client& client, std::string_view topic) const {
  if (topic.empty() || topic[0] != '$') return nullptr;
  for (mqgate_plugin* p : chain_for(client).message)
    for (const std::string& claim : p->claims)
      if (topic_matches(claim, topic)) return p;
  return nullptr;
}

bool PluginHost::claimed(const Client& client, std::string_view topic) const {
  return claimant(client, topic) != nullptr;
}

AuthResult PluginHost::take_message(const Client& client, const ClaimedMessage& m) {
  mqgate_plugin* p = claimant(client, m.topic);
  if (p == nullptr) return AuthResult::deny("no plugin claims the topic");
  const std::string topic(m.topic);  // the ABI promises NUL-terminated strings
  mqgate_evt_message evt;
  std::memset(&evt, 0, sizeof evt);
  evt.struct_size = sizeof evt;
  evt.client = handle(client);
  evt.topic = topic.c_str();
  evt.payload = reinterpret_cast<const uint8_t*>(m.payload.data());
  evt.payload_len = m.payload.size();
  evt.qos = m.qos;
  evt.reply_to = client.conn_id();
  std::vector<mqgate_user_property> props;
  if (const ClaimedProperties* in = m.props) {
    if (in->response_topic) evt.response_topic = in->response_topic->c_str();
    if (in->correlation_data) {
      evt.correlation_data = reinterpret_cast<const uint8_t*>(in->correlation_data->data());
      evt.correlation_data_len = in->correlation_data->size();
    }
    if (in->content_type) evt.content_type = in->content_type->c_str();
    for (const auto& [name, value] : in->user_properties)
      props.push_back({name.c_str(), value.c_str()});
    if (!props.empty()) {
      evt.user_properties = props.data();
      evt.user_properties_len = props.size();
    }
  }
  const int rc = p->callbacks[MQGATE_EVT_MESSAGE](MQGATE_EVT_MESSAGE, &evt, p->instance);
  const std::string reason = take_plugin_string(evt.reason);
  std::string reason_string = take_plugin_string(evt.reason_string);
  AuthResult r;
  if (rc == MQGATE_ALLOW) return r;
  r.allowed = false;
  r.reason = "plugin \"" + p->name + "\": " + log::sanitize(reason.empty() ? "refused" : reason);
  if (rc != MQGATE_DENY) {
    LOG_ERROR("plugin \"%s\": message returned %d, not MQGATE_ALLOW or MQGATE_DENY; refused",
              p->name.c_str(), rc);
  } else if (evt.reason_code != 0) {
    static constexpr uint8_t kLegal[] = {0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
    if (std::find(std::begin(kLegal), std::end(kLegal), evt.reason_code) != std::end(kLegal))
      r.reason_code = static_cast<uint8_t>(evt.reason_code);
    else
      LOG_ERROR(
          "plugin \"%s\": reason code 0x%02x is not a PUBACK/PUBREC failure code; 0x80 is sent",
          p->name.c_str(), static_cast<unsigned>(evt.reason_code) & 0xFFu);
  }
  if (r.reason_code == 0) r.reason_code = codec::reason::kUnspecifiedError;
  r.reason_string = std::move(reason_string);
  return r;
}

void PluginHost::send_private(PrivateMessage message) {
  auto it = addressable_.find(message.conn);
  if (private_sink_)
    private_sink_(it == addressable_.end() ? nullptr : it->second, std::move(message));
}

std::vector<PluginCounter> PluginHost::plugin_counters() const {
  std::vector<PluginCounter> out;
  for (const auto& p : instances_)
    for (size_t i = 0; i < p->counter_names.size(); ++i)
      out.push_back({p->name, p->counter_names[i].first, p->counter_names[i].second,
                     p->counter_values[i].load(std::memory_order_relaxed)});
  return out;
}

}  // namespace mqgate
