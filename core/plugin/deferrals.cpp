#include "plugin/deferrals.hpp"

#include "base/deferred.hpp"
#include "base/log.hpp"
#include "client/client.hpp"
#include "plugin/host.hpp"
#include "plugin/instance.hpp"

namespace mqgate {

namespace {
// Authentication Data a deferred step may send (an MQTT binary field).
constexpr size_t kMaxAuthDataLength = 65535;
}  // namespace

void detail::unref_token(mqgate_deferred* t) {
  if (t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
}

TokenCompletion::~TokenCompletion() {
  if (token) detail::unref_token(token);
}

// Any thread: copies the answer (the plugin's memory is its own again when this returns)
// and posts it to the loop, where the host matches it to its run.
int detail::api_complete(mqgate_deferred* token, const mqgate_completion* c) {
  if (token == nullptr) return MQGATE_ERR_INVALID;
  if (token->completed.exchange(true)) return MQGATE_ERR_INVALID;  // the plugin's ref is gone
  auto done = std::make_shared<TokenCompletion>();
  done->token = token;
  DeferredAnswer& a = done->answer;
  int rc = MQGATE_OK;
  if (c == nullptr || c->struct_size < offsetof(mqgate_completion, reserved) ||
      (c->verdict != MQGATE_ALLOW && c->verdict != MQGATE_DENY && c->verdict != MQGATE_ABSTAIN &&
       c->verdict != MQGATE_CONTINUE)) {
    a.verdict = MQGATE_DENY;
    a.reason = "completed with an invalid verdict";
    rc = MQGATE_ERR_INVALID;
  } else {
    a.verdict = c->verdict;
    if (c->reason) a.reason = c->reason;
    if (c->identity) a.identity = c->identity;
    if (c->assign_client_id) a.assign = c->assign_client_id;
    a.connack_code = c->connack_code;
    // MQTT 5.0 fields (ABI 2.1), where the plugin's struct has them.
    if (MQGATE_HAS_FIELD(c, mqgate_completion, reason_code)) a.reason_code = c->reason_code;
    if (MQGATE_HAS_FIELD(c, mqgate_completion, reason_string) && c->reason_string)
      a.reason_string = c->reason_string;
    if (MQGATE_HAS_FIELD(c, mqgate_completion, auth_data_len) && c->auth_data != nullptr) {
      if (c->auth_data_len > kMaxAuthDataLength) {
        a.verdict = MQGATE_DENY;
        a.reason = "completed with more than 65535 bytes of authentication data";
        rc = MQGATE_ERR_INVALID;
      } else {
        a.auth_data.emplace(reinterpret_cast<const char*>(c->auth_data), c->auth_data_len);
      }
    }
  }
  PluginHost* host = token->host;
  if (!DeferredQueue::post([host, done] { host->on_completion(*done); }))
    return MQGATE_ERR_UNSUPPORTED;  // shutting down: `done` released the token
  return rc;
}

mqgate_deferred* Deferrals::issue(const ChainRun& run) {
  auto* t = new mqgate_deferred;
  t->host = host_;
  t->job_id = run.id;
  return t;
}

// Any thread: the host's reference is held exactly while a run waits for the token.
int detail::api_deferred_is_live(const mqgate_deferred* token) {
  return token != nullptr && token->live.load(std::memory_order_acquire) ? 1 : 0;
}

void Deferrals::release(mqgate_deferred* token) {
  // Before the unref: the plugin's reference keeps the token alive for its readers.
  token->live.store(false, std::memory_order_release);
  detail::unref_token(token);
}

void Deferrals::park(std::unique_ptr<ChainRun> run, Clock::time_point deadline) {
  run_of_client_[run->client->conn_id()] = run->id;
  const uint64_t id = run->id;
  runs_[id] = Waiting{std::move(run), deadline};
}

std::unique_ptr<ChainRun> Deferrals::unpark(uint64_t id) {
  auto it = runs_.find(id);
  if (it == runs_.end()) return nullptr;
  std::unique_ptr<ChainRun> run = std::move(it->second.run);
  runs_.erase(it);
  run_of_client_.erase(run->client->conn_id());
  if (run->token) release(run->token);
  run->token = nullptr;
  return run;
}

std::unique_ptr<ChainRun> Deferrals::take(const TokenCompletion& completion) {
  auto it = runs_.find(completion.token->job_id);
  if (it == runs_.end() || it->second.run->token != completion.token) {
    LOG_DEBUG("a deferred decision arrived for a client that is gone or timed out; ignored");
    return nullptr;
  }
  return unpark(it->first);
}

std::vector<uint64_t> Deferrals::expired(Clock::time_point now) const {
  std::vector<uint64_t> ids;
  for (const auto& [id, waiting] : runs_)
    if (waiting.deadline <= now) ids.push_back(id);
  return ids;
}

std::unique_ptr<ChainRun> Deferrals::take_expired(uint64_t id) {
  return unpark(id);
}

void Deferrals::park_exchange(std::unique_ptr<ChainRun> run) {
  const ConnId client = run->client->conn_id();
  exchanges_[client] = std::move(run);
}

std::unique_ptr<ChainRun> Deferrals::take_exchange(const Client& client) {
  auto it = exchanges_.find(client.conn_id());
  if (it == exchanges_.end()) return nullptr;
  std::unique_ptr<ChainRun> run = std::move(it->second);
  exchanges_.erase(it);
  return run;
}

void Deferrals::forget(const Client& client) {
  exchanges_.erase(client.conn_id());
  auto it = run_of_client_.find(client.conn_id());
  if (it == run_of_client_.end()) return;
  std::unique_ptr<ChainRun> run = unpark(it->second);
  CLIENT_LOG(log::Level::kDebug, client, "gone while plugin \"%s\" owed a decision",
             run->waiting_on->name.c_str());
}

void Deferrals::clear() {
  for (auto& [id, waiting] : runs_)
    if (waiting.run->token) release(waiting.run->token);
  runs_.clear();
  run_of_client_.clear();
  exchanges_.clear();
}

}  // namespace mqgate
