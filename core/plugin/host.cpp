#include "plugin/host.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/deferred.hpp"
#include "base/log.hpp"
#include "client/client.hpp"
#include "client/mqtt5.hpp"
#include "mqtt/packet.hpp"
#include "plugin/instance.hpp"

#ifndef MQGATE_PLUGIN_INSTALL_DIR
#define MQGATE_PLUGIN_INSTALL_DIR "/usr/local/lib/mqgate/plugins"
#endif
#ifndef MQGATE_BUILD_ROOT
#define MQGATE_BUILD_ROOT ""
#endif

namespace mqgate {

using detail::take_plugin_string;

namespace {
mqgate_client* handle(const Client& c) {
  return reinterpret_cast<mqgate_client*>(const_cast<Client*>(&c));
}
}  // namespace

PluginHost::PluginHost() : empty_chain_(std::make_unique<PluginChain>()) {
  empty_chain_->identity_prefix = "(no auth plugin)";
  empty_chain_->anonymous_identity =
      std::make_shared<const std::string>("(no auth plugin):anonymous");
}

PluginHost::~PluginHost() {
  unload();
}

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

size_t PluginHost::instance_count() const {
  return instances_.size();
}

const char* AuthDecisionCounts::verdict_name(Verdict v) {
  switch (v) {
    case kAllow:
      return "allow";
    case kDeny:
      return "deny";
    case kAbstain:
      return "abstain";
    case kError:
      return "error";
    case kTimeout:
      return "timeout";
    case kVerdictCount:
      break;
  }
  return "?";
}

std::vector<AuthDecisionCounts> PluginHost::decision_counts() const {
  std::vector<AuthDecisionCounts> out(instances_.size());
  for (size_t i = 0; i < instances_.size(); ++i) {
    out[i].plugin = instances_[i]->name;
    std::memcpy(out[i].counts, instances_[i]->decisions, sizeof out[i].counts);
  }
  return out;
}

bool PluginHost::load(const Config& config, Errors& errors) {
  const std::string default_dir = default_plugin_dir();
  for (const auto& pc : config.plugins) {
    auto p = detail::load_plugin(pc, config, default_dir, instances_, errors);
    if (!p) {
      unload();
      return false;
    }
    p->host = this;
    instances_.push_back(std::move(p));
  }
  auth_timeout_ms_ = uint64_t{config.auth_timeout} * 1000;
  chains_.clear();
  for (const auto& lc : config.listeners) {
    auto chain = std::make_unique<PluginChain>();
    std::vector<mqgate_plugin*> members;
    if (lc.plugins) {
      for (const auto& name : *lc.plugins)
        for (auto& p : instances_)
          if (p->name == name) members.push_back(p.get());
    } else {
      for (auto& p : instances_)
        members.push_back(p.get());
    }
    for (mqgate_plugin* p : members) {
      if (p->callbacks[MQGATE_EVT_AUTHENTICATE]) chain->authenticate.push_back(p);
      if (p->callbacks[MQGATE_EVT_AUTHORIZE]) chain->authorize.push_back(p);
      if (p->callbacks[MQGATE_EVT_CONNECTED]) chain->connected.push_back(p);
      if (p->callbacks[MQGATE_EVT_DISCONNECTED]) chain->disconnected.push_back(p);
      if (!p->claims.empty()) chain->message.push_back(p);
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
  // Pending decisions die with the plugins; their tokens' completions are ignored.
  deferrals_.clear();
  disconnects_.clear();
  addressable_.clear();
  // Last loaded, first unloaded.
  for (auto it = instances_.rbegin(); it != instances_.rend(); ++it)
    detail::unload_plugin(**it);
  instances_.clear();
  chains_.clear();
}

const PluginChain& PluginHost::chain_for(const Client& client) const {
  const ListenerConfig* l = client.listener();
  if (l == nullptr || l->index >= chains_.size()) return *empty_chain_;
  return *chains_[l->index];
}

int detail::api_disconnect(mqgate_plugin* plugin, mqgate_client* client, const char* reason) {
  if (plugin == nullptr || plugin->host == nullptr || client == nullptr) return MQGATE_ERR_INVALID;
  std::string why = "disconnected by plugin \"" + plugin->name + "\"";
  if (reason != nullptr && *reason != '\0') why += ": " + log::sanitize(reason);
  if (!plugin->host->request_disconnect(*reinterpret_cast<Client*>(client), std::move(why)))
    return MQGATE_ERR_UNSUPPORTED;
  return MQGATE_OK;
}

bool PluginHost::request_disconnect(Client& client, std::string reason) {
  if (client.state == Client::State::kClosing) return true;
  for (auto& [c, why] : disconnects_)
    if (c == &client) return true;
  if (disconnects_.empty() && !DeferredQueue::post([this] { run_disconnects(); })) return false;
  disconnects_.emplace_back(&client, std::move(reason));
  return true;
}

void PluginHost::run_disconnects() {
  // forget() removes the requests of clients that closed meanwhile; clients are only
  // deleted by the transport later in the loop iteration, so the batch stays valid.
  auto batch = std::move(disconnects_);
  disconnects_.clear();
  for (auto& [c, why] : batch) {
    if (c->state == Client::State::kClosing) continue;
    CLIENT_LOG(log::Level::kInfo, *c, "%s; closing", why.c_str());
    mqtt5::disconnect(*c, codec::reason::kAdministrativeAction, why.c_str());
  }
}

void PluginHost::forget(const Client& client) {
  for (size_t i = 0; i < disconnects_.size(); ++i)
    if (disconnects_[i].first == &client)
      disconnects_.erase(disconnects_.begin() + static_cast<long>(i--));
  deferrals_.forget(client);
}

void PluginHost::on_completion(const TokenCompletion& c) {
  std::unique_ptr<ChainRun> run = deferrals_.take(c);
  if (!run) return;  // gone, timed out, or a token the run no longer waits for
  Client* client = run->client;
  const ChainStop stop = resume_chain(*run, c.answer, deferrals_);
  if (stop == ChainStop::kDeferred) {  // a later plugin deferred
    const auto deadline = Deferrals::Clock::now() + std::chrono::milliseconds(auth_timeout_ms_);
    deferrals_.park(std::move(run), deadline);
    return;
  }
  AuthResult r;
  if (stop == ChainStop::kContinuing) {
    r.continue_auth = true;
    r.auth_data = run->auth_data_out;
    deferrals_.park_exchange(std::move(run));
  } else {
    r = chain_result(*run);
  }
  if (sink_) sink_(*client, std::move(r));
}

void PluginHost::expire_decisions() {
  if (deferrals_.pending() == 0) return;
  // One at a time: a sink call may close other clients, whose runs then go.
  for (uint64_t id : deferrals_.expired(Deferrals::Clock::now())) {
    std::unique_ptr<ChainRun> run = deferrals_.take_expired(id);
    if (!run) continue;
    time_out_chain(*run, auth_timeout_ms_ / 1000);
    Client* client = run->client;
    AuthResult r = chain_result(*run);
    run.reset();
    if (sink_) sink_(*client, std::move(r));
  }
}

AuthResult PluginHost::authenticate(const Client& client, const codec::Connect& connect) {
  const PluginChain& chain = chain_for(client);
  if (chain.authenticate.empty()) {
    AuthResult open;
    open.identity = default_identity(chain, client);
    return open;
  }
  auto run = std::make_unique<ChainRun>();
  run->id = next_run_id_++;
  run->client = const_cast<Client*>(&client);
  run->chain = &chain;
  run->authenticating = true;
  run->client_id_generated = connect.client_id.empty();
  run->clean_session = connect.clean_session;
  run->session_expiry = connect.protocol_level == codec::kProtocolLevel5
                            ? connect.props.session_expiry_interval.value_or(0)
                        : connect.clean_session ? 0
                                                : 0xFFFFFFFFu;
  run->protocol_level = connect.protocol_level;
  if (connect.password) run->password.emplace(*connect.password);
  for (const auto& [name, value] : connect.props.user_properties) {
    run->user_props.append(name).push_back('\0');  // the codec refuses NUL in UTF-8 strings
    run->user_props.append(value).push_back('\0');
  }
  run->user_props_count = connect.props.user_properties.size();
  if (connect.props.authentication_method) {
    run->auth_method.emplace(*connect.props.authentication_method);
    run->method_plugins = plugins_offering(chain, *run->auth_method);
    if (connect.props.authentication_data)
      run->auth_data.emplace(*connect.props.authentication_data);
  }
  return run_auth(std::move(run));
}

AuthResult PluginHost::run_auth(std::unique_ptr<ChainRun> run) {
  switch (run_chain(*run, deferrals_)) {
    case ChainStop::kDone:
      return chain_result(*run);
    case ChainStop::kContinuing: {
      AuthResult r;
      r.continue_auth = true;
      r.auth_data = run->auth_data_out;
      deferrals_.park_exchange(std::move(run));
      return r;
    }
    case ChainStop::kDeferred:
      break;
  }
  deferrals_.park(std::move(run),
                  Deferrals::Clock::now() + std::chrono::milliseconds(auth_timeout_ms_));
  AuthResult pending;
  pending.pending = true;
  return pending;
}

bool PluginHost::offers_auth_method(const Client& client, std::string_view method) const {
  return !plugins_offering(chain_for(client), method).empty();
}

AuthResult PluginHost::continue_auth(const Client& client, std::optional<std::string_view> data) {
  std::unique_ptr<ChainRun> run = deferrals_.take_exchange(client);
  if (!run) return AuthResult::deny("no authentication exchange in progress");
  next_auth_step(*run, data);
  run->id = next_run_id_++;
  return run_auth(std::move(run));  // run->next is still the plugin that continued
}

AuthResult PluginHost::reauthenticate(const Client& client, std::string_view method,
                                      std::optional<std::string_view> data) {
  const PluginChain& chain = chain_for(client);
  const_cast<Client&>(client).forget_publish_allowed();  // the plugins learn anew who it is
  auto run = std::make_unique<ChainRun>();
  run->id = next_run_id_++;
  run->client = const_cast<Client*>(&client);
  run->chain = &chain;
  run->authenticating = true;
  run->reauthenticate = true;
  run->clean_session = client.clean_session;
  run->session_expiry = client.v5()            ? client.v5()->session_expiry
                        : client.clean_session ? 0
                                               : 0xFFFFFFFFu;
  run->protocol_level = client.protocol_level;
  run->auth_method.emplace(method);
  run->method_plugins = plugins_offering(chain, method);
  if (run->method_plugins.empty()) return AuthResult::deny("no plugin offers the method");
  if (data) run->auth_data.emplace(*data);
  return run_auth(std::move(run));
}

AuthResult PluginHost::authorize(const Client& client, std::string_view topic, AuthAction action,
                                 uint8_t qos, bool retain) {
  AuthRequest req;
  req.topic = topic;
  req.action = action;
  req.qos = qos;
  req.retain = retain;
  return check(client, req);
}

AuthResult PluginHost::check(const Client& client, const AuthRequest& req) {
  const PluginChain& chain = chain_for(client);
  if (chain.authorize.empty()) return {};
  // A device publishing to its topic again: the plugins said their ALLOW holds.
  const bool publish = req.action == AuthAction::kPublish;
  if (publish && client.publish_allowed_before(req.topic, req.qos, req.retain, generation_))
    return {};
  ChainRun run;
  run.id = next_run_id_++;
  run.client = const_cast<Client*>(&client);
  run.chain = &chain;
  run.authenticating = false;
  run.topic.assign(req.topic);  // the ABI promises NUL-terminated strings
  run.filter.assign(req.filter);
  run.action = req.action;
  run.qos = req.qos;
  run.retain = req.retain;
  run.may_defer = req.may_defer && req.action != AuthAction::kReceive;
  run.live = req.live && req.action == AuthAction::kReceive;
  run.delivery_check_in = req.delivery_check;
  if (run_chain(run, deferrals_) == ChainStop::kDeferred) {
    deferrals_.park(std::make_unique<ChainRun>(std::move(run)),
                    Deferrals::Clock::now() + std::chrono::milliseconds(auth_timeout_ms_));
    AuthResult pending;
    pending.pending = true;
    return pending;
  }
  AuthResult result = chain_result(run);
  if (publish && result.allowed && result.same_answer)
    const_cast<Client&>(client).remember_publish_allowed(req.topic, req.qos, req.retain,
                                                         generation_);
  return result;
}

void PluginHost::on_connected(const Client& client, bool session_present) {
  if (!chain_for(client).message.empty())
    addressable_[client.conn_id()] = const_cast<Client*>(&client);
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
  addressable_.erase(client.conn_id());
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
  ++generation_;  // the plugins' answers may change with their options
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
    p->reload_claims.clear();
    p->in_reload = true;
    const int rc = cb(MQGATE_EVT_RELOAD, &evt, p->instance);
    p->in_reload = false;
    const std::string msg = take_plugin_string(evt.errmsg);
    // A reload that claims replaces the claims (the listeners' chains keep the instance
    // only if it claimed at load: a plugin that starts claiming takes a restart).
    if (rc == MQGATE_OK && !p->reload_claims.empty()) p->claims = std::move(p->reload_claims);
    p->reload_claims.clear();
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
  expire_decisions();
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
