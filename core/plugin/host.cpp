#include "plugin/host.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <initializer_list>

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

// The instances a listener asks, per event, in order.
struct PluginHost::Chain {
  std::vector<mqgate_plugin*> authenticate, authorize, connected, disconnected;
  // Identities for clients no plugin named: "<auth instances>:anonymous" (shared) and
  // "<auth instances>:user:<username>". Listeners with the same auth plugins share them.
  std::string identity_prefix;
  std::shared_ptr<const std::string> anonymous_identity;
};

// One question to a listener's chain, asked plugin by plugin; parked in jobs_ while a
// plugin owes a deferred decision.
struct PluginHost::Job {
  uint64_t id = 0;
  Client* client = nullptr;
  const Chain* chain = nullptr;
  bool authenticating = true;  // else authorising
  size_t next = 0;             // the next plugin of the chain to ask
  // AUTHENTICATE inputs (the rest is on the client).
  bool client_id_generated = false, clean_session = false;
  uint8_t protocol_level = 0;
  std::optional<std::string> password;
  // AUTHORIZE inputs.
  std::string topic, filter;
  AuthAction action = AuthAction::kPublish;
  uint8_t qos = 0;
  bool retain = false, may_defer = false;
  // So far.
  bool allowed = false, denied = false;
  std::string reasons, assigned, identity;
  int connack_code = 0;
  // MQTT 5.0 AUTHENTICATE inputs: the CONNECT's user properties; for enhanced
  // authentication the method, this step's data from the client, and the plugins
  // asked (those that offer the method).
  std::vector<std::pair<std::string, std::string>> user_props;
  std::optional<std::string> auth_method, auth_data;
  std::vector<mqgate_plugin*> method_plugins;
  int auth_step = 0;
  bool reauthenticate = false;
  // A plugin (waiting_on) answered CONTINUE: the job waits for the client's AUTH.
  bool continuing = false;
  // MQTT 5.0 answers: data for the client (the continuing plugin's, or the first ALLOW's),
  // the first denying plugin's reason code and string.
  std::optional<std::string> auth_data_out;
  uint8_t reason_code = 0;
  std::string reason_string;
  // Waiting for `waiting_on` to complete `token` (the host's reference) by `deadline`.
  mqgate_plugin* waiting_on = nullptr;
  mqgate_deferred* token = nullptr;
  std::chrono::steady_clock::time_point deadline;
};

struct PluginHost::Completion {
  mqgate_deferred* token = nullptr;  // the plugin's reference, released by the destructor
  int verdict = 0;
  std::string reason, identity, assign;
  int connack_code = 0;
  int reason_code = 0;  // MQTT 5.0
  std::string reason_string;
  std::optional<std::string> auth_data;
  Completion() = default;
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
  ~Completion() {
    if (token) detail::unref_token(token);
  }
};

namespace {
// Plugin identities are prefixed with the instance name, so one plugin cannot claim
// another's identities; they are bounded so a session key stays small.
constexpr size_t kMaxIdentityLength = 128 * 1024;
// Authentication Data a plugin sends in one step (an MQTT binary field).
constexpr size_t kMaxAuthDataLength = 65535;

// MQTT 5.0 failure reason codes a plugin may choose, per packet (2.4 and 3.2.2.2,
// 3.4.2.1, 3.9.3).
bool is_one_of(int code, std::initializer_list<int> codes) {
  return std::find(codes.begin(), codes.end(), code) != codes.end();
}
bool legal_connack_failure(int code) {
  return is_one_of(code, {0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                          0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F});
}
bool legal_puback_failure(int code) {
  return is_one_of(code, {0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99});
}
bool legal_suback_failure(int code) {
  return is_one_of(code, {0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2});
}
}  // namespace

PluginHost::PluginHost() : empty_chain_(std::make_unique<Chain>()) {
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

namespace {

// Counts a plugin's final answer to one question (a DEFER is counted when it completes).
void count_decision(mqgate_plugin& p, bool authenticating, int verdict) {
  using C = AuthDecisionCounts;
  const C::Verdict v = verdict == MQGATE_VERDICT_ALLOW     ? C::kAllow
                       : verdict == MQGATE_VERDICT_DENY    ? C::kDeny
                       : verdict == MQGATE_VERDICT_ABSTAIN ? C::kAbstain
                                                           : C::kError;
  p.decisions[authenticating ? C::kAuthenticate : C::kAuthorize][v]++;
}

}  // namespace

bool PluginHost::load(const Config& config, Errors& errors) {
  const std::string default_dir = default_plugin_dir();
  for (const auto& pc : config.plugins) {
    auto p = detail::load_plugin(pc, config, default_dir, errors);
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
    auto chain = std::make_unique<Chain>();
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
  for (auto& [id, job] : jobs_)
    if (job->token) detail::unref_token(job->token);
  jobs_.clear();
  job_of_client_.clear();
  exchanges_.clear();
  disconnects_.clear();
  // Last loaded, first unloaded.
  for (auto it = instances_.rbegin(); it != instances_.rend(); ++it)
    detail::unload_plugin(**it);
  instances_.clear();
  chains_.clear();
}

const PluginHost::Chain& PluginHost::chain_for(const Client& client) const {
  const ListenerConfig* l = client.listener();
  if (l == nullptr || l->index >= chains_.size()) return *empty_chain_;
  return *chains_[l->index];
}

namespace {

// Names a verdict (ABI 1 decisions are mapped to verdicts first).
const char* decision_name(int v) {
  switch (v) {
    case MQGATE_VERDICT_ALLOW:
      return "ALLOW";
    case MQGATE_VERDICT_DENY:
      return "DENY";
    case MQGATE_VERDICT_ABSTAIN:
      return "ABSTAIN";
    case MQGATE_VERDICT_DEFER:
      return "DEFER";
    case MQGATE_VERDICT_CONTINUE:
      return "CONTINUE";
  }
  return "invalid";
}

mqgate_client* handle(const Client& c) {
  return reinterpret_cast<mqgate_client*>(const_cast<Client*>(&c));
}

}  // namespace

namespace {

std::shared_ptr<const std::string> default_identity(
    const std::string& prefix, const std::shared_ptr<const std::string>& anonymous,
    const Client& client) {
  if (client.username() == nullptr) return anonymous;
  return std::make_shared<const std::string>(prefix + ":user:" + *client.username());
}

}  // namespace

namespace {

// Where api->defer() finds the call it may defer (loop thread only).
struct DeferSlot {
  PluginHost* host = nullptr;
  mqgate_plugin* plugin = nullptr;
  uint64_t job_id = 0;
  bool allowed = false;
  mqgate_deferred* token = nullptr;
};
DeferSlot* g_defer_slot = nullptr;

const char* action_name(AuthAction a) {
  switch (a) {
    case AuthAction::kPublish:
      return "publish";
    case AuthAction::kSubscribe:
      return "subscribe";
    case AuthAction::kReceive:
      return "receive";
  }
  return "?";
}

// A plugin's answer, in ABI 2 terms; 0 for one that is not valid for its ABI version.
int to_verdict(const mqgate_plugin& p, int d) {
  if (p.abi_version == 1) {
    switch (d) {
      case MQGATE_DECISION_ABSTAIN:
        return MQGATE_VERDICT_ABSTAIN;
      case MQGATE_DECISION_ALLOW:
        return MQGATE_VERDICT_ALLOW;
      case MQGATE_DECISION_DENY:
        return MQGATE_VERDICT_DENY;
    }
    return 0;
  }
  return d >= MQGATE_VERDICT_ABSTAIN && d <= MQGATE_VERDICT_CONTINUE ? d : 0;
}

}  // namespace

mqgate_deferred* detail::api_defer(mqgate_plugin* plugin) {
  DeferSlot* slot = g_defer_slot;
  if (slot == nullptr || plugin != slot->plugin || !slot->allowed || slot->token != nullptr)
    return nullptr;
  auto* t = new mqgate_deferred;
  t->host = slot->host;
  t->job_id = slot->job_id;
  slot->token = t;
  return t;
}

void detail::unref_token(mqgate_deferred* t) {
  if (t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
}

int detail::api_complete(mqgate_deferred* token, const mqgate_completion* c) {
  if (token == nullptr) return MQGATE_ERR_INVALID;
  if (token->completed.exchange(true)) return MQGATE_ERR_INVALID;  // the plugin's ref is gone
  auto done = std::make_shared<PluginHost::Completion>();
  done->token = token;
  int rc = MQGATE_OK;
  if (c == nullptr || c->struct_size < offsetof(mqgate_completion, reserved) ||
      (c->verdict != MQGATE_VERDICT_ALLOW && c->verdict != MQGATE_VERDICT_DENY &&
       c->verdict != MQGATE_VERDICT_ABSTAIN && c->verdict != MQGATE_VERDICT_CONTINUE)) {
    done->verdict = MQGATE_VERDICT_DENY;
    done->reason = "completed with an invalid verdict";
    rc = MQGATE_ERR_INVALID;
  } else {
    done->verdict = c->verdict;
    if (c->reason) done->reason = c->reason;
    if (c->identity) done->identity = c->identity;
    if (c->assign_client_id) done->assign = c->assign_client_id;
    done->connack_code = c->connack_code;
    // MQTT 5.0 fields, where the plugin's struct has them.
    if (MQGATE_HAS_FIELD(c, mqgate_completion, reason_code)) done->reason_code = c->reason_code;
    if (MQGATE_HAS_FIELD(c, mqgate_completion, reason_string) && c->reason_string)
      done->reason_string = c->reason_string;
    if (MQGATE_HAS_FIELD(c, mqgate_completion, auth_data_len) && c->auth_data != nullptr) {
      if (c->auth_data_len > kMaxAuthDataLength) {
        done->verdict = MQGATE_VERDICT_DENY;
        done->reason = "completed with more than 65535 bytes of authentication data";
        rc = MQGATE_ERR_INVALID;
      } else {
        done->auth_data.emplace(reinterpret_cast<const char*>(c->auth_data), c->auth_data_len);
      }
    }
  }
  PluginHost* host = token->host;
  if (!DeferredQueue::post([host, done] { host->on_completion(*done); }))
    return MQGATE_ERR_UNSUPPORTED;  // shutting down: `done` released the token
  return rc;
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

void PluginHost::park(std::unique_ptr<Job> job) {
  job_of_client_[job->client] = job->id;
  const uint64_t id = job->id;
  jobs_.emplace(id, std::move(job));
}

std::unique_ptr<PluginHost::Job> PluginHost::unpark(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nullptr;
  std::unique_ptr<Job> job = std::move(it->second);
  jobs_.erase(it);
  job_of_client_.erase(job->client);
  return job;
}

void PluginHost::forget(const Client& client) {
  for (size_t i = 0; i < disconnects_.size(); ++i)
    if (disconnects_[i].first == &client)
      disconnects_.erase(disconnects_.begin() + static_cast<long>(i--));
  exchanges_.erase(&client);
  auto it = job_of_client_.find(&client);
  if (it == job_of_client_.end()) return;
  std::unique_ptr<Job> job = unpark(it->second);
  CLIENT_LOG(log::Level::kDebug, client, "gone while plugin \"%s\" owed a decision",
             job->waiting_on->name.c_str());
  if (job->token) detail::unref_token(job->token);
}

void PluginHost::on_completion(const Completion& c) {
  std::unique_ptr<Job> job = unpark(c.token->job_id);
  if (!job || job->token != c.token) {
    LOG_DEBUG("a deferred decision arrived for a client that is gone or timed out; ignored");
    if (job) park(std::move(job));
    return;
  }
  detail::unref_token(job->token);
  job->token = nullptr;
  mqgate_plugin* p = job->waiting_on;
  job->waiting_on = nullptr;
  CLIENT_LOG(log::Level::kDebug, *job->client, "plugin \"%s\": deferred %s -> %s%s%s",
             p->name.c_str(), job->authenticating ? "authenticate" : action_name(job->action),
             decision_name(c.verdict), c.reason.empty() ? "" : ": ",
             c.reason.empty() ? "" : log::quote(c.reason).c_str());
  Client* client = job->client;
  if (c.verdict == MQGATE_VERDICT_CONTINUE && job->authenticating && job->auth_method) {
    // The exchange goes on with this plugin: the client's next AUTH comes back to it.
    job->continuing = true;
    job->waiting_on = p;
    job->auth_data_out = c.auth_data;
    AuthResult r;
    r.continue_auth = true;
    r.auth_data = job->auth_data_out;
    exchanges_[client] = std::move(job);
    if (sink_) sink_(*client, std::move(r));
    return;
  }
  int verdict = c.verdict;
  std::string reason = c.reason;
  if (verdict == MQGATE_VERDICT_CONTINUE) {
    LOG_ERROR(
        "plugin \"%s\": completed with MQGATE_VERDICT_CONTINUE outside an enhanced "
        "authentication; treated as DENY",
        p->name.c_str());
    verdict = MQGATE_VERDICT_DENY;
    reason = "continued outside an enhanced authentication";
  }
  count_decision(*p, job->authenticating, verdict);
  apply_v5(*job, p, verdict, c.reason_code, c.reason_string, c.auth_data);
  apply(*job, p, verdict, reason, c.assign, c.identity, c.connack_code, verdict);
  job->next++;
  AuthResult r = run_auth(std::move(job));
  if (r.pending) return;  // another plugin deferred
  if (sink_) sink_(*client, std::move(r));
}

void PluginHost::expire_decisions() {
  if (jobs_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<uint64_t> expired;
  for (auto& [id, job] : jobs_)
    if (job->deadline <= now) expired.push_back(id);
  for (uint64_t id : expired) {
    std::unique_ptr<Job> job = unpark(id);
    if (!job) continue;  // a client closed by an earlier one's consequences
    if (job->token) detail::unref_token(job->token);
    job->token = nullptr;
    const std::string why =
        "no decision within auth_timeout (" + std::to_string(auth_timeout_ms_ / 1000) + " s)";
    CLIENT_LOG(log::Level::kWarning, *job->client, "plugin \"%s\": %s; treated as DENY",
               job->waiting_on->name.c_str(), why.c_str());
    job->waiting_on->decisions[job->authenticating ? AuthDecisionCounts::kAuthenticate
                                                   : AuthDecisionCounts::kAuthorize]
                              [AuthDecisionCounts::kTimeout]++;
    apply(*job, job->waiting_on, MQGATE_VERDICT_DENY, why, {}, {}, 0, 0);
    Client* client = job->client;
    AuthResult r = result(*job);
    job.reset();
    if (sink_) sink_(*client, std::move(r));
  }
}

void PluginHost::apply(Job& job, mqgate_plugin* p, int verdict, const std::string& reason,
                       std::string assign, std::string vouched, int connack_code, int raw) {
  std::string why;
  switch (verdict) {  // reasons are plugin text that may carry client data: sanitised below
    case MQGATE_VERDICT_ALLOW:
      if (!job.authenticating) return;
      if (!vouched.empty() && job.identity.empty() && vouched.size() > kMaxIdentityLength) {
        LOG_ERROR("plugin \"%s\": identity of %zu bytes is over %zu; treated as DENY",
                  p->name.c_str(), vouched.size(), kMaxIdentityLength);
        why = "set an identity longer than " + std::to_string(kMaxIdentityLength) + " bytes";
        break;
      }
      job.allowed = true;
      // The first plugin that ALLOWs with a client id (identity) sets it.
      if (job.assigned.empty()) job.assigned = std::move(assign);
      if (job.identity.empty() && !vouched.empty()) job.identity = p->name + ":" + vouched;
      return;
    case MQGATE_VERDICT_ABSTAIN:
      return;
    case MQGATE_VERDICT_DENY:
      why = reason.empty() ? "denied" : reason;
      break;
    default:
      LOG_ERROR("plugin \"%s\": %s returned %d, %s; treated as DENY", p->name.c_str(),
                job.authenticating ? "authenticate" : "authorize", raw,
                p->abi_version >= 2 && (raw == MQGATE_OK || raw < 0)
                    ? "an error code, not a verdict (ABI 2 callbacks return MQGATE_VERDICT_*)"
                    : "not a decision");
      why = "returned an invalid decision (" + std::to_string(raw) + ")";
      break;
  }
  if (!job.denied && job.authenticating)
    job.connack_code = connack_code == MQGATE_CONNACK_BAD_CREDENTIALS ? 4 : 5;
  job.denied = true;
  if (!job.reasons.empty()) job.reasons += "; ";
  job.reasons += "plugin \"" + p->name + "\": " + log::sanitize(why);
}

void PluginHost::apply_v5(Job& job, mqgate_plugin* p, int verdict, int reason_code,
                          std::string reason_string, std::optional<std::string> data_out) {
  if (verdict == MQGATE_VERDICT_ALLOW && job.authenticating && data_out && !job.auth_data_out)
    job.auth_data_out = std::move(data_out);
  if (verdict != MQGATE_VERDICT_DENY || job.denied) return;  // the first denial's are sent
  if (reason_code != 0) {
    const bool legal = job.authenticating                     ? legal_connack_failure(reason_code)
                       : job.action == AuthAction::kSubscribe ? legal_suback_failure(reason_code)
                                                              : legal_puback_failure(reason_code);
    if (!legal) {
      LOG_ERROR(
          "plugin \"%s\": reason code 0x%02x is not a failure code for a %s; 0x87 (not "
          "authorised) is sent",
          p->name.c_str(), static_cast<unsigned>(reason_code) & 0xFFFFu,
          job.authenticating                     ? "CONNACK"
          : job.action == AuthAction::kSubscribe ? "SUBACK"
                                                 : "PUBACK/PUBREC");
      reason_code = codec::reason::kNotAuthorized;
    }
  }
  job.reason_code = static_cast<uint8_t>(reason_code);
  job.reason_string = std::move(reason_string);
}

AuthResult PluginHost::result(const Job& job) const {
  if (job.denied) {
    AuthResult r = AuthResult::deny(job.reasons);
    if (job.authenticating) r.connack_code = static_cast<uint8_t>(job.connack_code);
    r.reason_code = job.reason_code;
    r.reason_string = job.reason_string;
    return r;
  }
  if (!job.authenticating) return {};
  if (!job.allowed) return AuthResult::deny("no plugin allowed the client (all abstained)");
  AuthResult ok;
  ok.auth_data = job.auth_data_out;
  ok.assigned_client_id = job.assigned;
  ok.identity = job.identity.empty() ? default_identity(job.chain->identity_prefix,
                                                        job.chain->anonymous_identity, *job.client)
                                     : std::make_shared<const std::string>(job.identity);
  return ok;
}

bool PluginHost::run(Job& job) {
  const std::vector<mqgate_plugin*>& plugins = !job.authenticating ? job.chain->authorize
                                               : job.auth_method   ? job.method_plugins
                                                                   : job.chain->authenticate;
  const Client& client = *job.client;
  for (; job.next < plugins.size(); ++job.next) {
    mqgate_plugin* p = plugins[job.next];
    const bool v1 = p->abi_version < 2;
    DeferSlot slot;
    slot.host = this;
    slot.plugin = p;
    slot.job_id = job.id;
    slot.allowed = !v1 && (job.authenticating || job.may_defer);
    int d;
    std::string reason, assign, vouched;
    int connack_code = 0;
    int reason_code = 0;  // MQTT 5.0 answers
    std::string reason_string;
    std::optional<std::string> data_out;
    bool bad_data_out = false;
    if (job.authenticating) {
      mqgate_evt_authenticate evt;
      std::memset(&evt, 0, sizeof evt);
      evt.struct_size = v1 ? MQGATE_EVT_AUTHENTICATE_SIZE_V1 : sizeof evt;
      evt.client = handle(client);
      evt.client_id = client.client_id().c_str();
      evt.client_id_generated = job.client_id_generated ? 1 : 0;
      evt.username = client.username() ? client.username()->c_str() : nullptr;
      if (job.password) {
        evt.password = reinterpret_cast<const uint8_t*>(job.password->data());
        evt.password_len = job.password->size();
      }
      evt.protocol_level = job.protocol_level;
      evt.listener = client.listener() ? client.listener()->name.c_str() : "";
      evt.peer_address = client.peer().c_str();
      if (const TlsPeerInfo* tls = client.tls()) {
        if (!tls->chain.empty()) {
          evt.peer_chain = reinterpret_cast<const mqgate_cert*>(tls->chain.data());
          evt.peer_chain_len = tls->chain.size();
        }
        evt.tls_version = tls->version.c_str();
        evt.tls_cipher = tls->cipher.c_str();
      }
      if (!v1) evt.clean_session = job.clean_session ? 1 : 0;
      std::vector<mqgate_user_property> props;  // views of job.user_props, for this call
      if (!v1) {
        props.reserve(job.user_props.size());
        for (const auto& [name, value] : job.user_props)
          props.push_back({name.c_str(), value.c_str()});
        if (!props.empty()) {
          evt.user_properties = props.data();
          evt.user_properties_len = props.size();
        }
        if (job.auth_method) evt.auth_method = job.auth_method->c_str();
        if (job.auth_data) {
          evt.auth_data = reinterpret_cast<const uint8_t*>(job.auth_data->data());
          evt.auth_data_len = job.auth_data->size();
        }
        evt.auth_step = job.auth_step;
        evt.reauthenticate = job.reauthenticate ? 1 : 0;
      }
      g_defer_slot = &slot;
      d = p->callbacks[MQGATE_EVT_AUTHENTICATE](MQGATE_EVT_AUTHENTICATE, &evt, p->instance);
      g_defer_slot = nullptr;
      reason = take_plugin_string(evt.reason);
      assign = take_plugin_string(evt.assign_client_id);
      vouched = take_plugin_string(evt.identity);
      if (!v1) {
        connack_code = evt.connack_code;
        reason_code = evt.reason_code;
        reason_string = take_plugin_string(evt.reason_string);
        if (evt.auth_data_out != nullptr) {
          if (evt.auth_data_out_len <= kMaxAuthDataLength)
            data_out.emplace(reinterpret_cast<const char*>(evt.auth_data_out),
                             evt.auth_data_out_len);
          else
            bad_data_out = true;
          std::free(evt.auth_data_out);
        } else if (evt.auth_data_out_len != 0) {
          bad_data_out = true;
        }
      }
    } else {
      mqgate_evt_authorize evt;
      std::memset(&evt, 0, sizeof evt);
      evt.struct_size = v1 ? MQGATE_EVT_AUTHORIZE_SIZE_V1 : sizeof evt;
      evt.client = handle(client);
      evt.topic = job.topic.c_str();
      evt.qos = job.qos;
      evt.retain = job.retain ? 1 : 0;
      switch (job.action) {
        case AuthAction::kPublish:
          evt.action = MQGATE_ACTION_PUBLISH;
          break;
        case AuthAction::kSubscribe:
          evt.action = MQGATE_ACTION_SUBSCRIBE;
          break;
        case AuthAction::kReceive:  // ABI 1: a SUBSCRIBE event with retain 1
          evt.action = v1 ? MQGATE_ACTION_SUBSCRIBE : MQGATE_ACTION_RECEIVE;
          evt.retain = 1;
          if (!v1) evt.filter = job.filter.c_str();
          break;
      }
      if (!v1) evt.deferrable = slot.allowed ? 1 : 0;
      g_defer_slot = &slot;
      d = p->callbacks[MQGATE_EVT_AUTHORIZE](MQGATE_EVT_AUTHORIZE, &evt, p->instance);
      g_defer_slot = nullptr;
      reason = take_plugin_string(evt.reason);
      if (!v1) {
        reason_code = evt.reason_code;
        reason_string = take_plugin_string(evt.reason_string);
      }
    }
    int verdict = to_verdict(*p, d);
    if (bad_data_out && verdict != 0) {
      LOG_ERROR(
          "plugin \"%s\": auth_data_out is NULL with a length, or over %zu bytes; treated "
          "as DENY",
          p->name.c_str(), kMaxAuthDataLength);
      if (slot.token != nullptr) detail::unref_token(slot.token);
      slot.token = nullptr;
      verdict = MQGATE_VERDICT_DENY;
      reason = "sent invalid authentication data";
    }
    if (job.authenticating)
      CLIENT_LOG(log::Level::kDebug, client, "plugin \"%s\": authenticate -> %s%s%s",
                 p->name.c_str(), decision_name(verdict), reason.empty() ? "" : ": ",
                 reason.empty() ? "" : log::quote(reason).c_str());
    if (verdict == MQGATE_VERDICT_CONTINUE && job.authenticating && job.auth_method) {
      if (slot.token != nullptr) detail::unref_token(slot.token);  // its completion is ignored
      job.waiting_on = p;
      job.continuing = true;
      job.auth_data_out = std::move(data_out);
      return false;
    }
    if (verdict == MQGATE_VERDICT_DEFER && slot.token != nullptr) {
      job.waiting_on = p;
      job.token = slot.token;
      job.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(auth_timeout_ms_);
      return false;
    }
    if (slot.token != nullptr) detail::unref_token(slot.token);  // its completion is ignored
    count_decision(*p, job.authenticating, verdict);
    if (verdict == MQGATE_VERDICT_DEFER) {
      LOG_ERROR(
          "plugin \"%s\": returned MQGATE_VERDICT_DEFER without a token from api->defer "
          "(or where it cannot defer); treated as DENY",
          p->name.c_str());
      reason = "deferred where it cannot";
      verdict = MQGATE_VERDICT_DENY;
    }
    if (verdict == MQGATE_VERDICT_CONTINUE) {
      LOG_ERROR(
          "plugin \"%s\": returned MQGATE_VERDICT_CONTINUE outside an enhanced authentication; "
          "treated as DENY",
          p->name.c_str());
      reason = "continued outside an enhanced authentication";
      verdict = MQGATE_VERDICT_DENY;
    }
    apply_v5(job, p, verdict, reason_code, std::move(reason_string), std::move(data_out));
    apply(job, p, verdict, reason, std::move(assign), std::move(vouched), connack_code, d);
  }
  return true;
}

AuthResult PluginHost::authenticate(const Client& client, const codec::Connect& connect) {
  const Chain& chain = chain_for(client);
  if (chain.authenticate.empty()) {
    AuthResult open;
    open.identity = default_identity(chain.identity_prefix, chain.anonymous_identity, client);
    return open;
  }
  auto job = std::make_unique<Job>();
  job->id = next_job_id_++;
  job->client = const_cast<Client*>(&client);
  job->chain = &chain;
  job->authenticating = true;
  job->client_id_generated = connect.client_id.empty();
  job->clean_session = connect.clean_session;
  job->protocol_level = connect.protocol_level;
  if (connect.password) job->password.emplace(*connect.password);
  for (const auto& [name, value] : connect.props.user_properties)
    job->user_props.emplace_back(name, value);
  if (connect.props.authentication_method) {
    job->auth_method.emplace(*connect.props.authentication_method);
    job->method_plugins = method_plugins(chain, *job->auth_method);
    if (connect.props.authentication_data)
      job->auth_data.emplace(*connect.props.authentication_data);
  }
  return run_auth(std::move(job));
}

AuthResult PluginHost::run_auth(std::unique_ptr<Job> job) {
  if (run(*job)) return result(*job);
  if (job->continuing) {
    AuthResult r;
    r.continue_auth = true;
    r.auth_data = job->auth_data_out;
    exchanges_[job->client] = std::move(job);
    return r;
  }
  park(std::move(job));
  AuthResult pending;
  pending.pending = true;
  return pending;
}

std::vector<mqgate_plugin*> PluginHost::method_plugins(const Chain& chain,
                                                       std::string_view method) const {
  std::vector<mqgate_plugin*> out;
  for (mqgate_plugin* p : chain.authenticate)
    if (std::find(p->auth_methods.begin(), p->auth_methods.end(), method) != p->auth_methods.end())
      out.push_back(p);
  return out;
}

bool PluginHost::offers_auth_method(const Client& client, std::string_view method) const {
  return !method_plugins(chain_for(client), method).empty();
}

AuthResult PluginHost::continue_auth(const Client& client, std::optional<std::string_view> data) {
  auto it = exchanges_.find(&client);
  if (it == exchanges_.end()) return AuthResult::deny("no authentication exchange in progress");
  std::unique_ptr<Job> job = std::move(it->second);
  exchanges_.erase(it);
  job->continuing = false;
  job->waiting_on = nullptr;
  job->auth_step++;
  job->auth_data_out.reset();
  if (data)
    job->auth_data.emplace(*data);
  else
    job->auth_data.reset();
  job->id = next_job_id_++;
  return run_auth(std::move(job));  // job->next is still the plugin that continued
}

AuthResult PluginHost::reauthenticate(const Client& client, std::string_view method,
                                      std::optional<std::string_view> data) {
  const Chain& chain = chain_for(client);
  auto job = std::make_unique<Job>();
  job->id = next_job_id_++;
  job->client = const_cast<Client*>(&client);
  job->chain = &chain;
  job->authenticating = true;
  job->reauthenticate = true;
  job->clean_session = client.clean_session;
  job->protocol_level = client.protocol_level;
  job->auth_method.emplace(method);
  job->method_plugins = method_plugins(chain, method);
  if (job->method_plugins.empty()) return AuthResult::deny("no plugin offers the method");
  if (data) job->auth_data.emplace(*data);
  return run_auth(std::move(job));
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
  const Chain& chain = chain_for(client);
  if (chain.authorize.empty()) return {};
  Job job;
  job.id = next_job_id_++;
  job.client = const_cast<Client*>(&client);
  job.chain = &chain;
  job.authenticating = false;
  job.topic.assign(req.topic);  // the ABI promises NUL-terminated strings
  job.filter.assign(req.filter);
  job.action = req.action;
  job.qos = req.qos;
  job.retain = req.retain;
  job.may_defer = req.may_defer && req.action != AuthAction::kReceive;
  if (!run(job)) {
    park(std::make_unique<Job>(std::move(job)));
    AuthResult pending;
    pending.pending = true;
    return pending;
  }
  return result(job);
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
