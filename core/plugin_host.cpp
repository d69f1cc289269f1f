#include "plugin_host.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "client.hpp"
#include "codec/packet.hpp"
#include "log.hpp"
#include "plugin_instance.hpp"

#ifndef MQGATE_PLUGIN_INSTALL_DIR
#define MQGATE_PLUGIN_INSTALL_DIR "/usr/local/lib/mqgate/plugins"
#endif
#ifndef MQGATE_BUILD_ROOT
#define MQGATE_BUILD_ROOT ""
#endif

namespace mqgate {

using detail::take_plugin_string;

// The instances a listener asks, per event, in order.
struct PluginHost::Chain {
  std::vector<mqgate_plugin*> authenticate, authorize, connected, disconnected;
  // Identities for clients no plugin named: "<auth instances>:anonymous" (shared) and
  // "<auth instances>:user:<username>". Listeners with the same auth plugins share them.
  std::string identity_prefix;
  std::shared_ptr<const std::string> anonymous_identity;
};

namespace {
// Plugin identities are prefixed with the instance name, so one plugin cannot claim
// another's identities; they are bounded so a session key stays small.
constexpr size_t kMaxIdentityLength = 128 * 1024;
}  // namespace

PluginHost::PluginHost() : empty_chain_(std::make_unique<Chain>()) {
  empty_chain_->identity_prefix = "(no auth plugin)";
  empty_chain_->anonymous_identity = std::make_shared<const std::string>("(no auth plugin):anonymous");
}

PluginHost::~PluginHost() { unload(); }

std::string PluginHost::default_plugin_dir() {
  // Running from the build tree (core/mqgate): use the plugins built beside it.
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  const std::string build_root = MQGATE_BUILD_ROOT;
  if (n > 0 && !build_root.empty()) {
    exe[n] = '\0';
    if (std::string(exe).rfind(build_root + "/", 0) == 0) return build_root + "/plugins";
  }
  return MQGATE_PLUGIN_INSTALL_DIR;
}

size_t PluginHost::instance_count() const { return instances_.size(); }

bool PluginHost::load(const Config& config, std::vector<std::string>& errors) {
  const std::string default_dir = default_plugin_dir();
  for (const auto& pc : config.plugins) {
    std::string error;
    auto p = detail::load_plugin(pc, config, default_dir, error);
    if (!p) {
      errors.push_back(error);
      unload();
      return false;
    }
    instances_.push_back(std::move(p));
  }
  chains_.clear();
  for (const auto& lc : config.listeners) {
    auto chain = std::make_unique<Chain>();
    std::vector<mqgate_plugin*> members;
    if (lc.plugins) {
      for (const auto& name : *lc.plugins)
        for (auto& p : instances_)
          if (p->name == name) members.push_back(p.get());
    } else {
      for (auto& p : instances_) members.push_back(p.get());
    }
    for (mqgate_plugin* p : members) {
      if (p->callbacks[MQGATE_EVT_AUTHENTICATE]) chain->authenticate.push_back(p);
      if (p->callbacks[MQGATE_EVT_AUTHORIZE]) chain->authorize.push_back(p);
      if (p->callbacks[MQGATE_EVT_CONNECTED]) chain->connected.push_back(p);
      if (p->callbacks[MQGATE_EVT_DISCONNECTED]) chain->disconnected.push_back(p);
    }
    for (mqgate_plugin* p : chain->authenticate)
      chain->identity_prefix += (chain->identity_prefix.empty() ? "" : ",") + p->name;
    if (chain->authenticate.empty()) chain->identity_prefix = "(no auth plugin)";
    chain->anonymous_identity =
        std::make_shared<const std::string>(chain->identity_prefix + ":anonymous");
    if (chain->authenticate.empty())
      LOG_WARN("listener \"%s\" has no authentication plugin: every client may connect",
               lc.name.c_str());
    chains_.push_back(std::move(chain));
  }
  return true;
}

void PluginHost::unload() {
  // Last loaded, first unloaded.
  for (auto it = instances_.rbegin(); it != instances_.rend(); ++it) detail::unload_plugin(**it);
  instances_.clear();
  chains_.clear();
}

const PluginHost::Chain& PluginHost::chain_for(const Client& client) const {
  const ListenerConfig* l = client.listener();
  if (l == nullptr || l->index >= chains_.size()) return *empty_chain_;
  return *chains_[l->index];
}

namespace {

const char* decision_name(int d) {
  switch (d) {
    case MQGATE_DECISION_ALLOW:
      return "ALLOW";
    case MQGATE_DECISION_DENY:
      return "DENY";
    case MQGATE_DECISION_ABSTAIN:
      return "ABSTAIN";
  }
  return "invalid";
}

mqgate_client* handle(const Client& c) {
  return reinterpret_cast<mqgate_client*>(const_cast<Client*>(&c));
}

}  // namespace

namespace {

std::shared_ptr<const std::string> default_identity(const std::string& prefix,
                                                    const std::shared_ptr<const std::string>& anonymous,
                                                    const Client& client) {
  if (client.username() == nullptr) return anonymous;
  return std::make_shared<const std::string>(prefix + ":user:" + *client.username());
}

}  // namespace

AuthResult PluginHost::authenticate(const Client& client, const codec::Connect& connect) {
  const Chain& chain = chain_for(client);
  if (chain.authenticate.empty()) {
    AuthResult open;
    open.identity = default_identity(chain.identity_prefix, chain.anonymous_identity, client);
    return open;
  }
  bool allowed = false, denied = false;
  std::string reasons, assigned, identity;
  const TlsPeerInfo* tls = client.tls();
  for (mqgate_plugin* p : chain.authenticate) {
    mqgate_evt_authenticate evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.client = handle(client);
    evt.client_id = client.client_id().c_str();
    evt.client_id_generated = connect.client_id.empty() ? 1 : 0;
    evt.username = client.username() ? client.username()->c_str() : nullptr;
    if (connect.password) {
      evt.password = reinterpret_cast<const uint8_t*>(connect.password->data());
      evt.password_len = connect.password->size();
    }
    evt.protocol_level = connect.protocol_level;
    evt.listener = client.listener() ? client.listener()->name.c_str() : "";
    evt.peer_address = client.peer().c_str();
    if (tls != nullptr) {
      if (!tls->chain.empty()) {
        evt.peer_chain = reinterpret_cast<const mqgate_cert*>(tls->chain.data());
        evt.peer_chain_len = tls->chain.size();
      }
      evt.tls_version = tls->version.c_str();
      evt.tls_cipher = tls->cipher.c_str();
    }
    const int d = p->callbacks[MQGATE_EVT_AUTHENTICATE](MQGATE_EVT_AUTHENTICATE, &evt, p->instance);
    const std::string reason = take_plugin_string(evt.reason);
    std::string assign = take_plugin_string(evt.assign_client_id);
    std::string vouched = take_plugin_string(evt.identity);
    CLIENT_LOG(log::Level::kDebug, client, "plugin \"%s\": authenticate -> %s%s%s", p->name.c_str(),
               decision_name(d), reason.empty() ? "" : ": ", log::quote(reason).c_str());
    std::string why;
    switch (d) {  // reasons are plugin text that may carry client data: quoted below
      case MQGATE_DECISION_ALLOW:
        allowed = true;
        if (assigned.empty()) assigned = std::move(assign);
        if (identity.empty() && !vouched.empty()) {
          if (vouched.size() > kMaxIdentityLength) {
            LOG_ERROR("plugin \"%s\": identity of %zu bytes is over %zu; treated as DENY",
                      p->name.c_str(), vouched.size(), kMaxIdentityLength);
            why = "set an identity longer than " + std::to_string(kMaxIdentityLength) + " bytes";
            break;
          }
          identity = p->name + ":" + vouched;
        }
        continue;
      case MQGATE_DECISION_ABSTAIN:
        continue;
      case MQGATE_DECISION_DENY:
        why = reason.empty() ? "denied" : reason;
        break;
      default:
        LOG_ERROR("plugin \"%s\": authenticate returned %d, not a decision; treated as DENY",
                  p->name.c_str(), d);
        why = "returned an invalid decision (" + std::to_string(d) + ")";
        break;
    }
    denied = true;
    if (!reasons.empty()) reasons += "; ";
    reasons += "plugin \"" + p->name + "\": " + log::sanitize(why);
  }
  if (denied) return AuthResult::deny(reasons);
  if (!allowed) return AuthResult::deny("no plugin allowed the client (all abstained)");
  AuthResult ok;
  ok.assigned_client_id = std::move(assigned);
  ok.identity = identity.empty()
                    ? default_identity(chain.identity_prefix, chain.anonymous_identity, client)
                    : std::make_shared<const std::string>(std::move(identity));
  return ok;
}

AuthResult PluginHost::authorize(const Client& client, std::string_view topic, AuthAction action,
                                 uint8_t qos, bool retain) {
  const Chain& chain = chain_for(client);
  if (chain.authorize.empty()) return {};
  const std::string topic_z(topic);  // the ABI promises NUL-terminated strings
  std::string reasons;
  bool denied = false;
  for (mqgate_plugin* p : chain.authorize) {
    mqgate_evt_authorize evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.client = handle(client);
    evt.action = action == AuthAction::kPublish ? MQGATE_ACTION_PUBLISH : MQGATE_ACTION_SUBSCRIBE;
    evt.topic = topic_z.c_str();
    evt.qos = qos;
    evt.retain = retain ? 1 : 0;
    const int d = p->callbacks[MQGATE_EVT_AUTHORIZE](MQGATE_EVT_AUTHORIZE, &evt, p->instance);
    const std::string reason = take_plugin_string(evt.reason);
    if (d == MQGATE_DECISION_ALLOW || d == MQGATE_DECISION_ABSTAIN) continue;
    std::string why;
    if (d == MQGATE_DECISION_DENY) {
      why = reason.empty() ? "denied" : reason;
    } else {
      LOG_ERROR("plugin \"%s\": authorize returned %d, not a decision; treated as DENY",
                p->name.c_str(), d);
      why = "returned an invalid decision (" + std::to_string(d) + ")";
    }
    denied = true;
    if (!reasons.empty()) reasons += "; ";
    reasons += "plugin \"" + p->name + "\": " + log::sanitize(why);
  }
  if (denied) return AuthResult::deny(reasons);
  return {};
}

void PluginHost::on_connected(const Client& client, bool session_present) {
  for (mqgate_plugin* p : chain_for(client).connected) {
    mqgate_evt_connected evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.client = handle(client);
    evt.session_present = session_present ? 1 : 0;
    p->callbacks[MQGATE_EVT_CONNECTED](MQGATE_EVT_CONNECTED, &evt, p->instance);
  }
}

void PluginHost::on_disconnected(const Client& client, const char* reason) {
  for (mqgate_plugin* p : chain_for(client).disconnected) {
    mqgate_evt_disconnected evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.client = handle(client);
    evt.reason = reason;
    p->callbacks[MQGATE_EVT_DISCONNECTED](MQGATE_EVT_DISCONNECTED, &evt, p->instance);
  }
}

void PluginHost::reload(const Config& config) {
  for (auto& p : instances_) {
    auto it = std::find_if(config.plugins.begin(), config.plugins.end(),
                           [&](const PluginConfig& pc) { return pc.name == p->name; });
    if (it == config.plugins.end()) {
      LOG_WARN("reload: plugin \"%s\" is no longer configured; it stays loaded until a restart",
               p->name.c_str());
      continue;
    }
    if (it->module != p->module || (!it->path.empty() && it->path != p->file))
      LOG_WARN("reload: plugin \"%s\" names another module or path; that takes a restart",
               p->name.c_str());
    mqgate_event_cb cb = p->callbacks[MQGATE_EVT_RELOAD];
    if (cb == nullptr) continue;
    auto options = detail::make_options(*it, config.path);
    mqgate_evt_reload evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.options = options.get();
    const int rc = cb(MQGATE_EVT_RELOAD, &evt, p->instance);
    const std::string msg = take_plugin_string(evt.errmsg);
    if (rc == MQGATE_OK) {
      LOG_INFO("reload: plugin \"%s\" took its new options", p->name.c_str());
    } else {
      LOG_ERROR("reload: plugin \"%s\" refused its new options (%s)%s%s; it keeps the old ones",
                p->name.c_str(), detail::host_api()->strerror(rc), msg.empty() ? "" : ": ",
                msg.c_str());
    }
  }
  for (const auto& pc : config.plugins) {
    bool known = std::any_of(instances_.begin(), instances_.end(),
                             [&](const auto& p) { return p->name == pc.name; });
    if (!known)
      LOG_WARN("reload: new plugin \"%s\" is loaded at the next restart", pc.name.c_str());
  }
}

void PluginHost::tick(uint64_t now_ms) {
  for (auto& p : instances_) {
    mqgate_event_cb cb = p->callbacks[MQGATE_EVT_TICK];
    if (cb == nullptr) continue;
    mqgate_evt_tick evt;
    std::memset(&evt, 0, sizeof evt);
    evt.struct_size = sizeof evt;
    evt.now_ms = now_ms;
    cb(MQGATE_EVT_TICK, &evt, p->instance);
  }
}

}  // namespace mqgate
