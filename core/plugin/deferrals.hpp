// Deferred decisions while they are owed: the tokens plugins get from api->defer, the
// chain runs waiting for one (each with its deadline, auth_timeout after it was
// deferred), and the MQTT 5.0 enhanced authentications waiting for the client's next
// AUTH. What a run does once its answer is in (or its deadline passed) is the chain's
// (plugin/chain.hpp); the host glues the two together. Loop thread, except
// api->complete, which may be called from any thread and posts to the loop.
//
// A token has two references: the plugin's, given up by api->complete, and the
// host's, given up when the run stops waiting for it (answered, timed out, client
// gone, or the plugin answered at once after all). The last one frees it. A token is
// matched to its run by the run's id and then by pointer, so a completion for a run
// that is gone, or for an earlier token of a run that has moved on, is ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "client/client.hpp"
#include "plugin/chain.hpp"

namespace mqgate {

class PluginHost;

// api->complete's copy of a deferred answer, on its way to the loop. Holds the
// plugin's reference of the token until it has been matched.
struct TokenCompletion {
  mqgate_deferred* token = nullptr;
  DeferredAnswer answer;
  TokenCompletion() = default;
  TokenCompletion(const TokenCompletion&) = delete;
  TokenCompletion& operator=(const TokenCompletion&) = delete;
  ~TokenCompletion();
};

class Deferrals final : public TokenIssuer {
 public:
  using Clock = std::chrono::steady_clock;

  // Completions of this host's tokens go to host->on_completion (on the loop).
  explicit Deferrals(PluginHost* host) : host_(host) {}
  ~Deferrals() { clear(); }
  Deferrals(const Deferrals&) = delete;
  Deferrals& operator=(const Deferrals&) = delete;

  // TokenIssuer
  mqgate_deferred* issue(const ChainRun& run) override;
  void release(mqgate_deferred* token) override;

  // A run whose plugin deferred (run->token set) waits until `deadline`.
  void park(std::unique_ptr<ChainRun> run, Clock::time_point deadline);
  // The run `completion` answers, no longer waiting and its token released; nullptr
  // if there is none (timed out, client gone, or a token the run no longer waits for).
  std::unique_ptr<ChainRun> take(const TokenCompletion& completion);
  // The ids of the runs whose deadline is `now` or earlier; take_expired(id) each.
  std::vector<uint64_t> expired(Clock::time_point now) const;
  // That run, no longer waiting and its token released; nullptr if it went meanwhile.
  std::unique_ptr<ChainRun> take_expired(uint64_t id);

  // An enhanced authentication waiting for `run->client`'s next AUTH.
  void park_exchange(std::unique_ptr<ChainRun> run);
  std::unique_ptr<ChainRun> take_exchange(const Client& client);

  // The client is going away: drops what it waits for (no answer will be applied).
  void forget(const Client& client);
  // Drops everything (unloading): completions still to come are ignored.
  void clear();

  size_t pending() const { return runs_.size(); }

 private:
  struct Waiting {
    std::unique_ptr<ChainRun> run;
    Clock::time_point deadline;
  };
  std::unique_ptr<ChainRun> unpark(uint64_t id);

  PluginHost* host_;
  std::unordered_map<uint64_t, Waiting> runs_;  // by ChainRun::id
  // By connection id, like the broker's tables (the run holds the client's pointer,
  // valid until forget()).
  std::unordered_map<ConnId, uint64_t> run_of_client_;
  std::unordered_map<ConnId, std::unique_ptr<ChainRun>> exchanges_;
};

}  // namespace mqgate
