// Internal to the plugin host: what it knows about one loaded plugin instance, and
// the host API table it hands to plugins. Not part of the plugin ABI.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/config_toml.hpp"
#include "mqgate_plugin.h"
#include "plugin/auth.hpp"

namespace mqgate {
class PluginHost;
}

// The ABI's opaque mqgate_plugin handle is this struct.
struct mqgate_plugin {
  mqgate::PluginHost* host = nullptr;  // set once loaded
  std::string name;                    // instance name: [plugins.<name>]
  std::string module;                  // module name (file stem)
  std::string file;                    // the .so that was loaded
  std::string config_file;
  int config_line = 0;
  void* dl = nullptr;
  int abi_version = 0;
  void* instance = nullptr;  // what init stored
  bool in_init = false;      // register_event is allowed only then
  bool in_reload = false;    // claim_topic is allowed then too (ABI 2.5)
  bool initialised = false;
  mqgate_event_cb callbacks[MQGATE_EVT_MESSAGE + 1] = {};
  // Broker-owned topics it claimed (ABI 2.5), and those a reload is claiming: they
  // replace `claims` if the reload succeeds. `peers`: every instance, for the overlap
  // check (the host's list, set before init).
  std::vector<std::string> claims, reload_claims;
  const std::vector<std::unique_ptr<mqgate_plugin>>* peers = nullptr;
  // Its counters (ABI 2.5): names fixed at init, values added from any thread.
  static constexpr size_t kMaxCounters = 64;
  std::vector<std::pair<std::string, std::string>> counter_names;  // name, help
  std::array<std::atomic<uint64_t>, kMaxCounters> counter_values{};
  void (*shutdown)(void*) = nullptr;
  // MQTT 5.0 enhanced authentication methods it offers (api->register_auth_method).
  std::vector<std::string> auth_methods;
  // Its decisions, counted by the host (loop thread).
  uint64_t decisions[mqgate::AuthDecisionCounts::kPhaseCount]
                    [mqgate::AuthDecisionCounts::kVerdictCount] = {};
};

// The ABI's opaque deferred-decision token (plugin/deferrals.hpp). Two references: the
// plugin's (released by api->complete, from any thread) and the host's (released when
// the decision is applied, times out or its client goes away). Matched on the loop to
// the waiting chain run by `job_id` and then by pointer (the run holds the host's
// reference). `live` turns false when the host gives up its reference: from then on
// the completion is ignored (api->deferred_is_live, ABI 2.4).
struct mqgate_deferred {
  std::atomic<int> refs{2};
  std::atomic<bool> completed{false};
  std::atomic<bool> live{true};
  mqgate::PluginHost* host = nullptr;
  uint64_t job_id = 0;  // the ChainRun::id it answers
};

// The ABI's opaque mqgate_options handle: a plugin's TOML table.
struct mqgate_options {
  const toml::table* table = nullptr;
  std::shared_ptr<const toml::table> document;  // keeps `table` alive
  std::string file;                             // the configuration file, for opt_location
  int table_line = 0;                           // where [plugins.<name>] starts
  std::vector<std::string> keys;                // in file order
  mutable std::vector<std::unique_ptr<std::string>> scratch;  // strings handed out
};

namespace mqgate::detail {

// The host API table for plugins of an ABI version (one per version for the process;
// they never change).
const mqgate_host_api* host_api(int abi_version = MQGATE_PLUGIN_ABI_VERSION);

// Builds the options view of a plugin's table (keys in file order).
std::unique_ptr<mqgate_options> make_options(const PluginConfig& config, const std::string& file);

// Loads `config`'s .so, agrees on the ABI version and runs init. On failure returns
// nullptr and adds to `errors` why, naming the plugin, the file and the reason.
// `peers`: the instances loaded so far (claims must not overlap theirs).
std::unique_ptr<mqgate_plugin> load_plugin(const PluginConfig& config, const Config& broker_config,
                                           const std::string& default_dir,
                                           const std::vector<std::unique_ptr<mqgate_plugin>>& peers,
                                           Errors& errors);
// Runs shutdown (if init succeeded) and unloads the .so.
void unload_plugin(mqgate_plugin& plugin);

// Takes ownership of a string a plugin allocated with api->mprintf / strdup.
std::string take_plugin_string(char*& s);

// Host API functions implemented beside the code they serve: api_defer by the chain
// (chain.cpp), api_complete by the deferrals (deferrals.cpp), api_disconnect by the
// host (host.cpp).
mqgate_deferred* api_defer(mqgate_plugin* plugin);
int api_complete(mqgate_deferred* token, const mqgate_completion* completion);
int api_deferred_is_live(const mqgate_deferred* token);
int api_disconnect(mqgate_plugin* plugin, mqgate_client* client, const char* reason);
// Broker-owned topics (claims.cpp).
int api_claim_topic(mqgate_plugin* plugin, const char* filter);
int api_send_to_client(mqgate_plugin* plugin, const mqgate_outgoing* msg);
// Releases one reference of a token (deferrals.cpp).
void unref_token(mqgate_deferred* token);

}  // namespace mqgate::detail
