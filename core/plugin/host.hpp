// The plugin host knows .so files: it loads the plugin instances the configuration
// names, agrees an ABI version with each, runs their init, and asks them -- in
// configuration order, per listener -- whether clients may connect, publish and
// subscribe (as the broker's AuthHooks). How the answers combine is the chain's
// (plugin/chain.hpp); decisions owed meanwhile are kept by plugin/deferrals.hpp. It
// also forwards the connected, disconnected, reload and tick events.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "mqgate_plugin.h"
#include "plugin/auth.hpp"
#include "plugin/chain.hpp"
#include "plugin/deferrals.hpp"

// The ABI's opaque plugin handle, defined in plugin_instance.hpp.
struct mqgate_plugin;

namespace mqgate {

// Whether some topic name matches both topic filters (claims may not overlap).
bool filters_overlap(std::string_view a, std::string_view b);

class PluginHost final : public AuthHooks {
 public:
  PluginHost();
  ~PluginHost() override;
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // Loads and initialises every [plugins.*] instance, then builds each listener's
  // chain. On failure returns false with one message per problem in `errors`; every
  // instance loaded so far is shut down again.
  bool load(const Config& config, Errors& errors);
  // Shuts every instance down and unloads them (also done by the destructor).
  void unload();

  // SIGHUP: hands each instance its re-read table.
  void reload(const Config& config);
  // Once a second.
  void tick(uint64_t now_ms);

  size_t instance_count() const;

  // AuthHooks
  AuthResult authenticate(const Client& client, const codec::Connect& connect) override;
  AuthResult authorize(const Client& client, std::string_view topic, AuthAction action,
                       uint8_t qos, bool retain) override;
  AuthResult check(const Client& client, const AuthRequest& request) override;
  void forget(const Client& client) override;
  // MQTT 5.0 enhanced authentication.
  bool offers_auth_method(const Client& client, std::string_view method) const override;
  AuthResult continue_auth(const Client& client, std::optional<std::string_view> data) override;
  AuthResult reauthenticate(const Client& client, std::string_view method,
                            std::optional<std::string_view> data) override;

  // --- deferred decisions and host requests (loop thread) ----------------------------
  // A plugin completed a token (posted to the loop by api->complete).
  void on_completion(const TokenCompletion& completion);
  // api->disconnect: closes the client from the loop, soon, outside any callback.
  bool request_disconnect(Client& client, std::string reason);
  size_t pending_decisions() const { return deferrals_.pending(); }
  // Seconds a deferred decision may take (Config::auth_timeout).
  void set_auth_timeout(uint32_t seconds) { auth_timeout_ms_ = uint64_t{seconds} * 1000; }
  void on_connected(const Client& client, bool session_present) override;
  void on_disconnected(const Client& client, const char* reason) override;
  std::vector<AuthDecisionCounts> decision_counts() const override;
  // Broker-owned topics (ABI 2.5).
  bool claimed(const Client& client, std::string_view topic) const override;
  AuthResult take_message(const Client& client, const ClaimedMessage& message) override;
  std::vector<PluginCounter> plugin_counters() const override;
  // api->send_to_client, on the loop: to the broker's private sink.
  void send_private(PrivateMessage message);

  // The plugin directory used when a plugin has no `path` and the configuration no
  // `plugin_dir`: the installed one, or the build tree's when running from it.
  static std::string default_plugin_dir();

 private:
  const PluginChain& chain_for(const Client& client) const;
  // The plugin of the client's listener that claimed `topic`, or null.
  mqgate_plugin* claimant(const Client& client, std::string_view topic) const;
  // Runs a new or resumed authentication: its result, pending (the run waits for a
  // plugin's token), or continuing (the run waits for the client's AUTH).
  AuthResult run_auth(std::unique_ptr<ChainRun> run);
  void expire_decisions();
  void run_disconnects();
  Deferrals deferrals_{this};
  // Counts reloads (from 1): PUBLISH answers remembered under older options are void.
  uint64_t generation_ = 1;
  uint64_t next_run_id_ = 1;
  uint64_t auth_timeout_ms_ = 10000;
  std::vector<std::pair<Client*, std::string>> disconnects_;  // api->disconnect requests
  // Connected clients of listeners with claims, by connection: where
  // api->send_to_client's messages go (ABI 2.5).
  std::unordered_map<ConnId, Client*> addressable_;
  std::vector<std::unique_ptr<mqgate_plugin>> instances_;
  std::vector<std::unique_ptr<PluginChain>> chains_;  // indexed by ListenerConfig::index
  std::unique_ptr<PluginChain> empty_chain_;
};

}  // namespace mqgate
