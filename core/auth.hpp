// What the broker asks before letting a client in or a message through. The plugin
// host implements it (plugin_host.cpp); without plugins every request is allowed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace mqgate {

class Client;
namespace codec {
struct Connect;
}

enum class AuthAction : uint8_t { kPublish, kSubscribe };

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

  static AuthResult deny(std::string why) {
    AuthResult r;
    r.allowed = false;
    r.reason = std::move(why);
    return r;
  }
};

class AuthHooks {
 public:
  virtual ~AuthHooks() = default;
  // Called once per CONNECT, before any session state changes. The client's id is
  // already set (generated when the CONNECT's was empty).
  virtual AuthResult authenticate(const Client& client, const codec::Connect& connect) = 0;
  // Called per PUBLISH (including wills and retained deliveries) and per SUBSCRIBE filter.
  virtual AuthResult authorize(const Client& client, std::string_view topic, AuthAction action,
                               uint8_t qos, bool retain) = 0;
  // Notifications.
  virtual void on_connected(const Client& client, bool session_present) = 0;
  virtual void on_disconnected(const Client& client, const char* reason) = 0;
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
