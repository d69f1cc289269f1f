// One question to a listener's plugins, asked plugin by plugin, and how the answers
// combine ("Decisions and how they combine" in mqgate_plugin.h, "How decisions combine"
// in docs/writing-plugins.md): each answer is read for its plugin's ABI version (ABI 1
// decisions 0..2, ABI 2 decisions 16..19 and the verdict CONTINUE; anything else is a
// logged DENY); ABSTAIN is ignored, any DENY denies, AUTHENTICATE needs at least one
// ALLOW (all abstaining denies) and AUTHORIZE none; the first ALLOW that assigns a
// client id or vouches for an identity sets it; the first DENY's codes are the ones
// sent. A plugin may stop a run: it deferred (it took a
// token with api->defer and answers later through api->complete) or, in an MQTT 5.0
// enhanced authentication, continued (the client's next AUTH goes back to it).
//
// Pure: plugins are their callbacks (no dlopen), and nothing here waits, posts to the
// loop or reads a clock. Where a stopped run waits, and for how long, is the host's
// business (plugin/deferrals.hpp); tokens come from a TokenIssuer it supplies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqgate_plugin.h"
#include "plugin/auth.hpp"

namespace mqgate {

class Client;

// A listener's plugins, per event, in configuration order.
struct PluginChain {
  std::vector<mqgate_plugin*> authenticate, authorize, connected, disconnected;
  std::vector<mqgate_plugin*> message;  // those that claimed topics (ABI 2.5)
  // Identities for clients no plugin named: "<auth instances>:anonymous" (shared) and
  // "<auth instances>:user:<username>". Listeners with the same auth plugins share them.
  std::string identity_prefix;
  std::shared_ptr<const std::string> anonymous_identity;
};

// The identity of a client no plugin vouched for.
std::shared_ptr<const std::string> default_identity(const PluginChain& chain, const Client& client);

// The chain's AUTHENTICATE plugins that offer the enhanced authentication `method`.
std::vector<mqgate_plugin*> plugins_offering(const PluginChain& chain, std::string_view method);

// One question and what its answers add up to so far.
struct ChainRun {
  uint64_t id = 0;  // tokens name the run they answer by it
  Client* client = nullptr;
  const PluginChain* chain = nullptr;
  bool authenticating = true;  // else authorising
  size_t next = 0;             // the next plugin to ask
  // AUTHENTICATE inputs (the rest is on the client).
  bool client_id_generated = false, clean_session = false;
  uint32_t session_expiry = 0;  // the event's session_expiry (see mqgate_plugin.h)
  uint8_t protocol_level = 0;
  std::optional<std::string> password;
  // MQTT 5.0 AUTHENTICATE inputs: the CONNECT's user properties; for enhanced
  // authentication the method, this step's data from the client, and the plugins asked
  // (those that offer the method).
  // The CONNECT's User Properties as "name\0value\0" pairs in one string (what the client
  // sent, not 64 bytes of strings an entry: a deferred decision keeps it).
  std::string user_props;
  size_t user_props_count = 0;
  std::optional<std::string> auth_method, auth_data;
  std::vector<mqgate_plugin*> method_plugins;
  int auth_step = 0;
  bool reauthenticate = false;
  // AUTHORIZE inputs.
  std::string topic, filter;
  AuthAction action = AuthAction::kPublish;
  uint8_t qos = 0;
  bool retain = false, may_defer = false;
  bool live = false;              // kReceive: a live delivery (ABI 2.3)
  uint8_t delivery_check_in = 0;  // live kReceive: the subscription's check until now
  // So far.
  bool allowed = false, denied = false;
  std::string reasons, assigned, identity;
  int connack_code = 0;
  uint8_t delivery_check = 0;  // the strongest mqgate_delivery_check of the answers
  bool same_answer = true;     // PUBLISH: every plugin asked said its answer holds per topic
  // MQTT 5.0 answers: data for the client (the continuing plugin's, or the first
  // ALLOW's), the first denying plugin's reason code and string.
  std::optional<std::string> auth_data_out;
  uint8_t reason_code = 0;
  std::string reason_string;
  // Why the run stopped before the end of its plugins: `waiting_on` deferred (and the
  // run holds the host's reference of its `token`) or continued (`continuing`).
  mqgate_plugin* waiting_on = nullptr;
  mqgate_deferred* token = nullptr;
  bool continuing = false;
};

// Where tokens for api->defer come from (the host's Deferrals; tests fake it).
class TokenIssuer {
 public:
  // A token for a call of `run` that may defer (api->defer).
  virtual mqgate_deferred* issue(const ChainRun& run) = 0;
  // Gives back the host's reference of a token the run will not wait for (the plugin
  // took one but answered at once, or invalidly): its completion is then ignored.
  virtual void release(mqgate_deferred* token) = 0;

 protected:
  ~TokenIssuer() = default;
};

enum class ChainStop {
  kDone,        // every plugin answered: chain_result() has the decision
  kDeferred,    // run.waiting_on took run.token and answers later: resume_chain()
  kContinuing,  // run.waiting_on continues an enhanced authentication: send the client
                // run.auth_data_out, then next_auth_step() and run_chain() again
};

// Asks the run's plugins from run.next on, folding in each answer.
ChainStop run_chain(ChainRun& run, TokenIssuer& tokens);

// A deferred answer as api->complete handed it over (strings copied).
struct DeferredAnswer {
  int verdict = 0;
  std::string reason, identity, assign;
  int connack_code = 0;
  int reason_code = 0;  // MQTT 5.0
  std::string reason_string;
  std::optional<std::string> auth_data;
};

// Folds in run.waiting_on's deferred answer (its token is the caller's to release)
// and asks the plugins after it.
ChainStop resume_chain(ChainRun& run, const DeferredAnswer& answer, TokenIssuer& tokens);

// run.waiting_on did not answer within `timeout_s` seconds: DENY, counted as a timeout.
// The run is then over: chain_result() has the decision, the later plugins are not asked.
void time_out_chain(ChainRun& run, uint64_t timeout_s);

// The client answered a CONTINUE with AUTH 0x18 (`data`): the next step of the
// exchange, for the same plugin. run_chain() then asks it.
void next_auth_step(ChainRun& run, std::optional<std::string_view> data);

// What the answers add up to.
AuthResult chain_result(const ChainRun& run);

// api->defer: a token when a callback of `plugin` that may defer is running, else nullptr.
mqgate_deferred* defer_current_call(mqgate_plugin* plugin);

}  // namespace mqgate
