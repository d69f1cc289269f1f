// What the broker asks before letting a client in or a message through. The plugin
// host implements it (plugin_host.cpp); without plugins every request is allowed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqgate {

class Client;
namespace codec {
struct Connect;
}

// kReceive: a message about to be delivered to a client that subscribed: a retained one
// for a new subscription, or (`live`) one routed through an existing subscription.
enum class AuthAction : uint8_t { kPublish, kSubscribe, kReceive };

// One authorisation question (AuthHooks::check).
struct AuthRequest {
  std::string_view topic;  // topic name (kPublish, kReceive) or filter (kSubscribe)
  AuthAction action = AuthAction::kPublish;
  uint8_t qos = 0;
  bool retain = false;
  std::string_view filter;  // kReceive: the subscription's filter
  // A client's PUBLISH or SUBSCRIBE: the answer may come later (see AuthHooks).
  bool may_defer = false;
  // kReceive: a live delivery, and how the subscription's deliveries are checked now
  // (an mqgate_delivery_check; 0 when asked only because of a reload or offline queue).
  bool live = false;
  uint8_t delivery_check = 0;
};

// How a subscription's deliveries are checked (the values of mqgate_delivery_check):
// not at all, with RECEIVE answers remembered per topic, or every one.
enum DeliveryCheck : uint8_t { kCheckNone = 0, kCheckPerTopic = 1, kCheckEvery = 2 };

struct AuthResult {
  bool allowed = true;
  std::string reason;  // why (for the log); names the deciding plugin when there is one
  // authenticate() only: a client id a plugin assigns to a client that sent an empty
  // one (e.g. the device id from its certificate). Empty: keep the generated id.
  std::string assigned_client_id;
  // authenticate() only: who the client proved to be. A persistent session belongs to
  // the identity that created it (Broker::handle_connect). Shared: most anonymous
  // clients of a listener have the same one.
  std::shared_ptr<const std::string> identity;
  // authenticate() only, when denied: the CONNACK return code (4 or 5).
  uint8_t connack_code = 5;
  // The decision is not made yet: it arrives later through the decision sink (the
  // other fields are meaningless). Only from authenticate() and check() with may_defer.
  bool pending = false;
  // MQTT 5.0, when denied: the reason code the deciding plugin chose (a legal one for
  // the packet; 0: the broker's default) and a Reason String for the client (never
  // logged as the reason: that is `reason`).
  uint8_t reason_code = 0;
  std::string reason_string;
  // check() of kSubscribe, or of a live kReceive, when allowed: how the subscription's
  // deliveries are to be checked from now on (a DeliveryCheck).
  uint8_t delivery_check = kCheckNone;
  // check() of kPublish, allowed: every plugin said the answer holds for the client's
  // later PUBLISHes to the same topic, QoS and retain flag (until a reload).
  bool same_answer = false;
  // MQTT 5.0 enhanced authentication: the plugin continues the exchange (send AUTH
  // 0x18 with `auth_data` and wait for the client's AUTH), or, allowed, final data for
  // the CONNACK / AUTH 0x00.
  bool continue_auth = false;
  std::optional<std::string> auth_data;

  static AuthResult deny(std::string why) {
    AuthResult r;
    r.allowed = false;
    r.reason = std::move(why);
    return r;
  }
};

// A PUBLISH to a broker-owned topic a plugin claimed (ABI 2.5), as the plugin gets it.
struct ClaimedProperties {  // the MQTT 5.0 properties a claiming plugin gets (copies)
  std::optional<std::string> response_topic, correlation_data, content_type;
  std::vector<std::pair<std::string, std::string>> user_properties;
};
struct ClaimedMessage {
  std::string_view topic, payload;
  uint8_t qos = 0;
  const ClaimedProperties* props = nullptr;  // 5.0; null for 3.1.1
};

// A plugin's message for one connection (api->send_to_client), copied on its way to
// the loop.
struct PrivateMessage {
  uint64_t conn = 0;  // ConnId
  std::string topic, payload;
  uint8_t qos = 0;
  std::optional<std::string> correlation_data, content_type;
  std::vector<std::pair<std::string, std::string>> user_properties;
  std::string plugin;  // who sent it, for the log
};

// One plugin counter (api->register_counter), for GET /metrics and $SYS.
struct PluginCounter {
  std::string plugin, name, help;
  uint64_t value = 0;
};

// How often one plugin decided each way (GET /metrics).
struct AuthDecisionCounts {
  // kError: not a valid verdict (or DEFER where it cannot); kTimeout: a deferred
  // decision that did not come within auth_timeout. Both count as DENY for the client.
  enum Verdict : uint8_t { kAllow, kDeny, kAbstain, kError, kTimeout, kVerdictCount };
  enum Phase : uint8_t { kAuthenticate, kAuthorize, kPhaseCount };
  static const char* verdict_name(Verdict v);
  static const char* phase_name(Phase p) {
    return p == kAuthenticate ? "authenticate" : "authorize";
  }
  std::string plugin;  // the instance name
  uint64_t counts[kPhaseCount][kVerdictCount] = {};
};

class AuthHooks {
 public:
  virtual ~AuthHooks() = default;
  // Called once per CONNECT, before any session state changes. The client's id is
  // already set (generated when the CONNECT's was empty). May return `pending`: the
  // decision then comes through the sink, on the loop, later (never from inside a call
  // to these hooks), unless forget(client) is called first.
  virtual AuthResult authenticate(const Client& client, const codec::Connect& connect) = 0;
  // Called per PUBLISH (including wills and retained deliveries) and per SUBSCRIBE
  // filter. Never pending.
  virtual AuthResult authorize(const Client& client, std::string_view topic, AuthAction action,
                               uint8_t qos, bool retain) = 0;
  // The same with every detail; may be pending when request.may_defer.
  virtual AuthResult check(const Client& client, const AuthRequest& request) {
    return authorize(client, request.topic, request.action, request.qos, request.retain);
  }
  // The client is going away: drop its pending decision (no sink call for it).
  virtual void forget(const Client&) {}
  // MQTT 5.0 enhanced authentication (4.12). Whether a plugin of the client's listener
  // offers `method` (the broker refuses others with CONNACK 0x8C).
  virtual bool offers_auth_method(const Client&, std::string_view) const { return false; }
  // The client's AUTH 0x18 answers a `continue_auth` result: asks the same plugin with
  // its data. May be pending or continue again.
  virtual AuthResult continue_auth(const Client&, std::optional<std::string_view>) {
    return AuthResult::deny("no authentication exchange in progress");
  }
  // A connected client's AUTH 0x19 (re-authentication with its method). As above.
  virtual AuthResult reauthenticate(const Client&, std::string_view,
                                    std::optional<std::string_view>) {
    return AuthResult::deny("enhanced authentication is not offered");
  }
  // --- broker-owned topics (ABI 2.5) ---------------------------------------------------
  // Whether a plugin of the client's listener claimed `topic` (a '$' topic).
  virtual bool claimed(const Client&, std::string_view) const { return false; }
  // Hands an allowed PUBLISH on a claimed topic to its plugin: allowed (taken) or
  // denied with the plugin's reason, reason code and string.
  virtual AuthResult take_message(const Client&, const ClaimedMessage&) {
    return AuthResult::deny("no plugin claims the topic");
  }
  // Where plugins' messages for one connection go (the broker sets it; loop thread).
  // `client` is null when the connection is gone (the message is dropped).
  using PrivateSink = std::function<void(Client* client, PrivateMessage message)>;
  void set_private_sink(PrivateSink sink) { private_sink_ = std::move(sink); }
  // Every plugin's counters, in configuration order.
  virtual std::vector<PluginCounter> plugin_counters() const { return {}; }
  // Where pending decisions go (the broker sets it).
  using DecisionSink = std::function<void(const Client& client, AuthResult result)>;
  void set_decision_sink(DecisionSink sink) { sink_ = std::move(sink); }
  // Notifications.
  virtual void on_connected(const Client& client, bool session_present) = 0;
  virtual void on_disconnected(const Client& client, const char* reason) = 0;
  // Each plugin's decisions so far, in configuration order (none without plugins).
  virtual std::vector<AuthDecisionCounts> decision_counts() const { return {}; }

 protected:
  DecisionSink sink_;
  PrivateSink private_sink_;
};

// Allows everything; used when no plugin is configured.
class AllowAllHooks final : public AuthHooks {
 public:
  AuthResult authenticate(const Client&, const codec::Connect&) override { return {}; }
  AuthResult authorize(const Client&, std::string_view, AuthAction, uint8_t, bool) override {
    return {};
  }
  void on_connected(const Client&, bool) override {}
  void on_disconnected(const Client&, const char*) override {}
};

}  // namespace mqgate
