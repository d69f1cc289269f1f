#include "plugin/chain.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "base/log.hpp"
#include "client/client.hpp"
#include "mqtt/packet.hpp"
#include "plugin/instance.hpp"

namespace mqgate {

using detail::take_plugin_string;

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

// Names an answer (ABI 1 decisions are mapped to ABI 2 values first).
const char* answer_name(int v) {
  switch (v) {
    case MQGATE_ALLOW:
      return "ALLOW";
    case MQGATE_DENY:
      return "DENY";
    case MQGATE_ABSTAIN:
      return "ABSTAIN";
    case MQGATE_DEFER:
      return "DEFER";
    case MQGATE_CONTINUE:
      return "CONTINUE";
  }
  return "invalid";
}

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

mqgate_client* handle(const Client& c) {
  return reinterpret_cast<mqgate_client*>(const_cast<Client*>(&c));
}

// A plugin's answer in ABI 2 values; 0 for one that is not valid for its ABI version.
int to_abi2(const mqgate_plugin& p, int d) {
  if (p.abi_version == 1) {
    switch (d) {
      case MQGATE_DECISION_ABSTAIN:
        return MQGATE_ABSTAIN;
      case MQGATE_DECISION_ALLOW:
        return MQGATE_ALLOW;
      case MQGATE_DECISION_DENY:
        return MQGATE_DENY;
    }
    return 0;
  }
  return d >= MQGATE_ABSTAIN && d <= MQGATE_CONTINUE ? d : 0;
}

// Counts a plugin's final answer to one question (a DEFER is counted when it completes).
void count_answer(mqgate_plugin& p, bool authenticating, int answer) {
  using C = AuthDecisionCounts;
  const C::Verdict v = answer == MQGATE_ALLOW     ? C::kAllow
                       : answer == MQGATE_DENY    ? C::kDeny
                       : answer == MQGATE_ABSTAIN ? C::kAbstain
                                                  : C::kError;
  p.decisions[authenticating ? C::kAuthenticate : C::kAuthorize][v]++;
}

// Where api->defer() finds the callback it may defer (loop thread only).
struct DeferSlot {
  const ChainRun* run = nullptr;
  TokenIssuer* tokens = nullptr;
  mqgate_plugin* plugin = nullptr;
  bool allowed = false;
  mqgate_deferred* token = nullptr;
};
DeferSlot* g_defer_slot = nullptr;

// Sets g_defer_slot for the length of one callback.
class InCall {
 public:
  explicit InCall(DeferSlot& slot) { g_defer_slot = &slot; }
  ~InCall() { g_defer_slot = nullptr; }
  InCall(const InCall&) = delete;
  InCall& operator=(const InCall&) = delete;
};

// One plugin's immediate answer, read out of its event struct.
struct Answer {
  int raw = 0;  // what the callback returned
  std::string reason, assign, vouched;
  int connack_code = 0;
  int reason_code = 0;  // MQTT 5.0
  std::string reason_string;
  std::optional<std::string> data_out;
  bool bad_data_out = false;  // auth_data_out NULL with a length, or too long
  int delivery_check = 0;     // ABI 2.3, AUTHORIZE SUBSCRIBE and live RECEIVE
  bool same_answer = false;   // ABI 2.3, AUTHORIZE PUBLISH
};

Answer ask_authenticate(const ChainRun& run, mqgate_plugin& p, DeferSlot& slot) {
  const Client& client = *run.client;
  const bool v1 = p.abi_version < 2;
  Answer a;
  mqgate_evt_authenticate evt;
  std::memset(&evt, 0, sizeof evt);
  // ABI 1 plugins get the struct they were built for; MQGATE_HAS_FIELD tells them that
  // the ABI 2 fields in its reserved bytes are not filled.
  evt.struct_size = v1 ? MQGATE_EVT_AUTHENTICATE_SIZE_V1 : sizeof evt;
  evt.client = handle(client);
  evt.client_id = client.client_id().c_str();
  evt.client_id_generated = run.client_id_generated ? 1 : 0;
  evt.username = client.username() ? client.username()->c_str() : nullptr;
  if (run.password) {
    evt.password = reinterpret_cast<const uint8_t*>(run.password->data());
    evt.password_len = run.password->size();
  }
  evt.protocol_level = run.protocol_level;
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
  std::vector<mqgate_user_property> props;  // views of run.user_props, for this call
  if (!v1) {
    evt.clean_session = run.clean_session ? 1 : 0;
    evt.session_expiry = run.session_expiry;
    props.reserve(run.user_props_count);
    for (const char* p = run.user_props.c_str(); props.size() < run.user_props_count;) {
      const char* value = p + std::strlen(p) + 1;
      props.push_back({p, value});
      p = value + std::strlen(value) + 1;
    }
    if (!props.empty()) {
      evt.user_properties = props.data();
      evt.user_properties_len = props.size();
    }
    if (run.auth_method) evt.auth_method = run.auth_method->c_str();
    if (run.auth_data) {
      evt.auth_data = reinterpret_cast<const uint8_t*>(run.auth_data->data());
      evt.auth_data_len = run.auth_data->size();
    }
    evt.auth_step = run.auth_step;
    evt.reauthenticate = run.reauthenticate ? 1 : 0;
  }
  {
    InCall in_call(slot);
    a.raw = p.callbacks[MQGATE_EVT_AUTHENTICATE](MQGATE_EVT_AUTHENTICATE, &evt, p.instance);
  }
  a.reason = take_plugin_string(evt.reason);
  a.assign = take_plugin_string(evt.assign_client_id);
  a.vouched = take_plugin_string(evt.identity);  // ABI 1.1: also ABI 1 plugins
  if (!v1) {
    a.connack_code = evt.connack_code;
    a.reason_code = evt.reason_code;
    a.reason_string = take_plugin_string(evt.reason_string);
    if (evt.auth_data_out != nullptr) {
      if (evt.auth_data_out_len <= kMaxAuthDataLength)
        a.data_out.emplace(reinterpret_cast<const char*>(evt.auth_data_out), evt.auth_data_out_len);
      else
        a.bad_data_out = true;
      std::free(evt.auth_data_out);
    } else if (evt.auth_data_out_len != 0) {
      a.bad_data_out = true;
    }
  }
  return a;
}

Answer ask_authorize(const ChainRun& run, mqgate_plugin& p, DeferSlot& slot) {
  const bool v1 = p.abi_version < 2;
  Answer a;
  mqgate_evt_authorize evt;
  std::memset(&evt, 0, sizeof evt);
  evt.struct_size = v1 ? MQGATE_EVT_AUTHORIZE_SIZE_V1 : sizeof evt;
  evt.client = handle(*run.client);
  evt.topic = run.topic.c_str();
  evt.qos = run.qos;
  evt.retain = run.retain ? 1 : 0;
  switch (run.action) {
    case AuthAction::kPublish:
      evt.action = MQGATE_ACTION_PUBLISH;
      break;
    case AuthAction::kSubscribe:
      evt.action = MQGATE_ACTION_SUBSCRIBE;
      break;
    case AuthAction::kReceive:  // ABI 1: a SUBSCRIBE event with retain 1
      evt.action = v1 ? MQGATE_ACTION_SUBSCRIBE : MQGATE_ACTION_RECEIVE;
      evt.retain = run.live ? (run.retain ? 1 : 0) : 1;
      if (!v1) evt.filter = run.filter.c_str();
      break;
  }
  if (!v1) {
    evt.deferrable = slot.allowed ? 1 : 0;
    evt.live = run.live ? 1 : 0;
    evt.delivery_check = run.live ? run.delivery_check_in : 0;
  }
  {
    InCall in_call(slot);
    a.raw = p.callbacks[MQGATE_EVT_AUTHORIZE](MQGATE_EVT_AUTHORIZE, &evt, p.instance);
  }
  a.reason = take_plugin_string(evt.reason);
  if (!v1) {
    a.reason_code = evt.reason_code;
    a.reason_string = take_plugin_string(evt.reason_string);
    if (run.action == AuthAction::kSubscribe || run.live) a.delivery_check = evt.delivery_check;
    a.same_answer = evt.same_answer == 1;
  } else if (run.live) {
    a.delivery_check = run.delivery_check_in;  // no field to lower it with: as it was
  }
  return a;
}

// The MQTT 5.0 part of one plugin's answer: data for the client, the first denial's
// reason code (checked against the packet's failure codes) and string.
void fold_v5(ChainRun& run, const mqgate_plugin& p, int answer, int reason_code,
             std::string reason_string, std::optional<std::string> data_out) {
  if (answer == MQGATE_ALLOW && run.authenticating && data_out && !run.auth_data_out)
    run.auth_data_out = std::move(data_out);
  if (answer != MQGATE_DENY || run.denied) return;  // the first denial's are sent
  if (reason_code != 0) {
    const bool legal = run.authenticating                     ? legal_connack_failure(reason_code)
                       : run.action == AuthAction::kSubscribe ? legal_suback_failure(reason_code)
                                                              : legal_puback_failure(reason_code);
    if (!legal) {
      LOG_ERROR(
          "plugin \"%s\": reason code 0x%02x is not a failure code for a %s; 0x87 (not "
          "authorised) is sent",
          p.name.c_str(), static_cast<unsigned>(reason_code) & 0xFFFFu,
          run.authenticating                     ? "CONNACK"
          : run.action == AuthAction::kSubscribe ? "SUBACK"
                                                 : "PUBACK/PUBREC");
      reason_code = codec::reason::kNotAuthorized;
    }
  }
  run.reason_code = static_cast<uint8_t>(reason_code);
  run.reason_string = std::move(reason_string);
}

// The combination rules, for one plugin's final answer (an ABI 2 value; anything else
// is invalid). `raw` is what the plugin returned, for the log.
void fold(ChainRun& run, const mqgate_plugin& p, int answer, const std::string& reason,
          std::string assign, std::string vouched, int connack_code, int raw) {
  std::string why;
  switch (answer) {  // reasons are plugin text that may carry client data: sanitised below
    case MQGATE_ALLOW:
      if (!run.authenticating) return;
      if (!vouched.empty() && run.identity.empty() && vouched.size() > kMaxIdentityLength) {
        LOG_ERROR("plugin \"%s\": identity of %zu bytes is over %zu; treated as DENY",
                  p.name.c_str(), vouched.size(), kMaxIdentityLength);
        why = "set an identity longer than " + std::to_string(kMaxIdentityLength) + " bytes";
        break;
      }
      run.allowed = true;
      // The first plugin that ALLOWs with a client id (identity) sets it.
      if (run.assigned.empty()) run.assigned = std::move(assign);
      if (run.identity.empty() && !vouched.empty()) run.identity = p.name + ":" + vouched;
      return;
    case MQGATE_ABSTAIN:
      return;
    case MQGATE_DENY:
      why = reason.empty() ? "denied" : reason;
      break;
    default:
      LOG_ERROR("plugin \"%s\": %s returned %d, %s; treated as DENY", p.name.c_str(),
                run.authenticating ? "authenticate" : "authorize", raw,
                p.abi_version >= 2 && (raw == MQGATE_OK || raw < 0)
                    ? "an error code, not a decision (ABI 2 callbacks return MQGATE_ALLOW, "
                      "MQGATE_DENY, MQGATE_ABSTAIN or MQGATE_DEFER)"
                    : "not a decision");
      why = "returned an invalid decision (" + std::to_string(raw) + ")";
      break;
  }
  if (!run.denied && run.authenticating)
    run.connack_code = connack_code == MQGATE_CONNACK_BAD_CREDENTIALS ? 4 : 5;
  run.denied = true;
  if (!run.reasons.empty()) run.reasons += "; ";
  run.reasons += "plugin \"" + p.name + "\": " + log::sanitize(why);
}

// The strongest wish for checking a subscription's deliveries (ABI 2.3); a value that
// is not an enum mqgate_delivery_check is logged and taken as MQGATE_CHECK_EVERY, the
// safe reading.
void fold_delivery_check(ChainRun& run, const mqgate_plugin& p, int check) {
  if (check < MQGATE_CHECK_NONE || check > MQGATE_CHECK_EVERY) {
    LOG_ERROR(
        "plugin \"%s\": delivery_check %d is not an enum mqgate_delivery_check; taken as "
        "MQGATE_CHECK_EVERY",
        p.name.c_str(), check);
    check = MQGATE_CHECK_EVERY;
  }
  run.delivery_check = std::max(run.delivery_check, static_cast<uint8_t>(check));
}

const std::vector<mqgate_plugin*>& plugins_of(const ChainRun& run) {
  return !run.authenticating ? run.chain->authorize
         : run.auth_method   ? run.method_plugins
                             : run.chain->authenticate;
}

}  // namespace

std::shared_ptr<const std::string> default_identity(const PluginChain& chain,
                                                    const Client& client) {
  if (client.username() == nullptr) return chain.anonymous_identity;
  return std::make_shared<const std::string>(chain.identity_prefix + ":user:" + *client.username());
}

std::vector<mqgate_plugin*> plugins_offering(const PluginChain& chain, std::string_view method) {
  std::vector<mqgate_plugin*> out;
  for (mqgate_plugin* p : chain.authenticate)
    if (std::find(p->auth_methods.begin(), p->auth_methods.end(), method) != p->auth_methods.end())
      out.push_back(p);
  return out;
}

mqgate_deferred* defer_current_call(mqgate_plugin* plugin) {
  DeferSlot* slot = g_defer_slot;
  if (slot == nullptr || plugin != slot->plugin || !slot->allowed || slot->token != nullptr)
    return nullptr;
  slot->token = slot->tokens->issue(*slot->run);
  return slot->token;
}

mqgate_deferred* detail::api_defer(mqgate_plugin* plugin) {
  return defer_current_call(plugin);
}

ChainStop run_chain(ChainRun& run, TokenIssuer& tokens) {
  const std::vector<mqgate_plugin*>& plugins = plugins_of(run);
  const Client& client = *run.client;
  for (; run.next < plugins.size(); ++run.next) {
    mqgate_plugin* p = plugins[run.next];
    DeferSlot slot;
    slot.run = &run;
    slot.tokens = &tokens;
    slot.plugin = p;
    slot.allowed = p->abi_version >= 2 && (run.authenticating || run.may_defer);
    Answer a = run.authenticating ? ask_authenticate(run, *p, slot) : ask_authorize(run, *p, slot);
    int answer = to_abi2(*p, a.raw);
    if (a.bad_data_out && answer != 0) {
      LOG_ERROR(
          "plugin \"%s\": auth_data_out is NULL with a length, or over %zu bytes; treated "
          "as DENY",
          p->name.c_str(), kMaxAuthDataLength);
      if (slot.token != nullptr) tokens.release(slot.token);
      slot.token = nullptr;
      answer = MQGATE_DENY;
      a.reason = "sent invalid authentication data";
    }
    if (run.authenticating)
      CLIENT_LOG(log::Level::kDebug, client, "plugin \"%s\": authenticate -> %s%s%s",
                 p->name.c_str(), answer_name(answer), a.reason.empty() ? "" : ": ",
                 a.reason.empty() ? "" : log::quote(a.reason).c_str());
    if (answer == MQGATE_CONTINUE && run.authenticating && run.auth_method) {
      if (slot.token != nullptr) tokens.release(slot.token);  // its completion is ignored
      run.waiting_on = p;
      run.continuing = true;
      run.auth_data_out = std::move(a.data_out);
      return ChainStop::kContinuing;
    }
    if (!run.authenticating && answer != MQGATE_DENY)
      fold_delivery_check(run, *p, a.delivery_check);
    if (!a.same_answer) run.same_answer = false;
    if (answer == MQGATE_DEFER && slot.token != nullptr) {
      run.waiting_on = p;
      run.token = slot.token;
      return ChainStop::kDeferred;
    }
    if (slot.token != nullptr) tokens.release(slot.token);  // its completion is ignored
    count_answer(*p, run.authenticating, answer);
    if (answer == MQGATE_DEFER) {
      LOG_ERROR(
          "plugin \"%s\": returned MQGATE_DEFER without a token from api->defer (or where it "
          "cannot defer); treated as DENY",
          p->name.c_str());
      a.reason = "deferred where it cannot";
      answer = MQGATE_DENY;
    }
    if (answer == MQGATE_CONTINUE) {
      LOG_ERROR(
          "plugin \"%s\": returned MQGATE_CONTINUE outside an enhanced authentication; "
          "treated as DENY",
          p->name.c_str());
      a.reason = "continued outside an enhanced authentication";
      answer = MQGATE_DENY;
    }
    fold_v5(run, *p, answer, a.reason_code, std::move(a.reason_string), std::move(a.data_out));
    fold(run, *p, answer, a.reason, std::move(a.assign), std::move(a.vouched), a.connack_code,
         a.raw);
  }
  return ChainStop::kDone;
}

ChainStop resume_chain(ChainRun& run, const DeferredAnswer& c, TokenIssuer& tokens) {
  mqgate_plugin* p = run.waiting_on;
  run.token = nullptr;
  run.waiting_on = nullptr;
  CLIENT_LOG(log::Level::kDebug, *run.client, "plugin \"%s\": deferred %s -> %s%s%s",
             p->name.c_str(), run.authenticating ? "authenticate" : action_name(run.action),
             answer_name(c.verdict), c.reason.empty() ? "" : ": ",
             c.reason.empty() ? "" : log::quote(c.reason).c_str());
  if (c.verdict == MQGATE_CONTINUE && run.authenticating && run.auth_method) {
    // The exchange goes on with this plugin: the client's next AUTH comes back to it.
    run.continuing = true;
    run.waiting_on = p;
    run.auth_data_out = c.auth_data;
    return ChainStop::kContinuing;
  }
  int answer = c.verdict;
  std::string reason = c.reason;
  if (answer == MQGATE_CONTINUE) {
    LOG_ERROR(
        "plugin \"%s\": completed with MQGATE_CONTINUE outside an enhanced authentication; "
        "treated as DENY",
        p->name.c_str());
    answer = MQGATE_DENY;
    reason = "continued outside an enhanced authentication";
  }
  count_answer(*p, run.authenticating, answer);
  fold_v5(run, *p, answer, c.reason_code, c.reason_string, c.auth_data);
  fold(run, *p, answer, reason, c.assign, c.identity, c.connack_code, answer);
  run.next++;
  return run_chain(run, tokens);
}

void time_out_chain(ChainRun& run, uint64_t timeout_s) {
  mqgate_plugin* p = run.waiting_on;
  const std::string why = "no decision within auth_timeout (" + std::to_string(timeout_s) + " s)";
  CLIENT_LOG(log::Level::kWarning, *run.client, "plugin \"%s\": %s; treated as DENY",
             p->name.c_str(), why.c_str());
  p->decisions[run.authenticating ? AuthDecisionCounts::kAuthenticate
                                  : AuthDecisionCounts::kAuthorize][AuthDecisionCounts::kTimeout]++;
  fold(run, *p, MQGATE_DENY, why, {}, {}, 0, 0);
}

void next_auth_step(ChainRun& run, std::optional<std::string_view> data) {
  run.continuing = false;
  run.waiting_on = nullptr;
  run.auth_step++;
  run.auth_data_out.reset();
  if (data)
    run.auth_data.emplace(*data);
  else
    run.auth_data.reset();
}

AuthResult chain_result(const ChainRun& run) {
  if (run.denied) {
    AuthResult r = AuthResult::deny(run.reasons);
    if (run.authenticating) r.connack_code = static_cast<uint8_t>(run.connack_code);
    r.reason_code = run.reason_code;
    r.reason_string = run.reason_string;
    return r;
  }
  AuthResult ok;
  if (!run.authenticating) {
    ok.delivery_check = run.delivery_check;
    ok.same_answer = run.same_answer && run.action == AuthAction::kPublish;
    return ok;
  }
  if (!run.allowed) return AuthResult::deny("no plugin allowed the client (all abstained)");
  ok.auth_data = run.auth_data_out;
  ok.assigned_client_id = run.assigned;
  ok.identity = run.identity.empty() ? default_identity(*run.chain, *run.client)
                                     : std::make_shared<const std::string>(run.identity);
  return ok;
}

}  // namespace mqgate
