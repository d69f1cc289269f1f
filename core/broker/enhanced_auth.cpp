// MQTT 5.0 enhanced authentication (4.12): AUTH exchanges during CONNECT and
// re-authentication of a connected client.
#include "broker/broker.hpp"

#include <algorithm>

#include "client/mqtt5.hpp"
#include "mqtt/encoder.hpp"

namespace mqgate {

using codec::ConnackCode;
namespace reason = codec::reason;

// One more AUTH 0x18 of an exchange: within kMaxAuthRounds and the client's Maximum
// Packet Size, else the exchange fails (and false).
bool Broker::may_continue_auth(Client& client, const std::optional<std::string>& data) {
  mqtt5::ClientState& s = *client.v5();
  const size_t data_size = data ? data->size() : 0;
  if (s.auth_rounds >= mqtt5::kMaxAuthRounds) {
    fail_auth_exchange(client, "authentication exchange over 16 round trips",
                       reason::kNotAuthorized);
    return false;
  }
  if (s.max_packet_size != 0 && 16 + s.auth_method.size() + data_size > s.max_packet_size) {
    fail_auth_exchange(client, "authentication data over the client's Maximum Packet Size",
                       reason::kImplementationSpecificError);
    return false;
  }
  s.auth_rounds++;
  return true;
}

void Broker::continue_connect_auth(Client& client, ConnectState c, const AuthResult& auth) {
  if (!may_continue_auth(client, auth.auth_data)) return;
  mqtt5::ClientState& s = *client.v5();
  s.auth_exchange = mqtt5::ClientState::AuthExchange::kConnecting;
  auth_exchanges_.insert_or_assign(client.conn_id(), std::move(c));
  CLIENT_LOG(log::Level::kDebug, client, "enhanced authentication: AUTH 0x18 (round %u)",
             s.auth_rounds);  // never the data
  mqtt5::encode_auth(client, client.out(), reason::kContinueAuthentication, auth.auth_data);
}

void Broker::fail_auth_exchange(Client& client, const char* why, uint8_t reason_code) {
  hooks_.forget(client);  // the plugin's exchange (or decision) is moot
  if (mqtt5::ClientState* s = client.v5())
    s->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
  auth_exchanges_.erase(client.conn_id());
  if (client.state == Client::State::kAwaitConnect) {
    refuse_connect(client, ConnackCode::kNotAuthorized, why, reason_code);
    return;
  }
  CLIENT_LOG(log::Level::kWarning, client, "re-authentication failed: %s; closing", why);
  mqtt5::disconnect(client, reason_code, why);
}

void Broker::handle_auth(Client& client, const codec::Auth& a, uint64_t now_ms) {
  using AuthExchange = mqtt5::ClientState::AuthExchange;
  mqtt5::ClientState* s = client.v5();
  const bool connecting = client.state == Client::State::kAwaitConnect;
  if (connecting && auth_exchanges_.count(client.conn_id()) == 0) {
    protocol_violation(client, "AUTH before CONNECT");  // [MQTT-3.1.0-1]
    return;
  }
  // Protocol Errors: AUTH from a client that did not use enhanced authentication
  // [MQTT-4.12.0-7], with another method [MQTT-4.12.1-1], or out of turn.
  const char* error = nullptr;
  if (s == nullptr || s->auth_method.empty())
    error = "AUTH without enhanced authentication (no Authentication Method in CONNECT)";
  else if (!a.props.authentication_method || *a.props.authentication_method != s->auth_method)
    error = "AUTH with another Authentication Method than the CONNECT's";
  else if (a.reason_code == reason::kContinueAuthentication &&
           (s->auth_exchange == AuthExchange::kNone ||
            (connecting && !auth_exchanges_.count(client.conn_id()))))
    error = "AUTH 0x18 while no authentication exchange is in progress";
  else if (a.reason_code == reason::kReauthenticate &&
           (connecting || s->auth_exchange != AuthExchange::kNone))
    error = "AUTH 0x19 before CONNACK or during another exchange";
  else if (a.reason_code == reason::kSuccess)
    error = "AUTH 0x00 (Success) from a client";
  if (error != nullptr) {
    if (connecting) {
      hooks_.forget(client);
      auth_exchanges_.erase(client.conn_id());
      refuse_connect(client, ConnackCode::kNotAuthorized, error, reason::kProtocolError);
    } else {
      protocol_violation(client, error);
    }
    return;
  }
  std::optional<std::string_view> data = a.props.authentication_data;
  AuthResult r;
  if (a.reason_code == reason::kReauthenticate) {
    s->auth_exchange = AuthExchange::kReauthenticating;
    s->auth_started_ms = now_ms;
    s->auth_rounds = 0;
    CLIENT_LOG(log::Level::kDebug, client, "re-authentication (method %s)",
               log::quote(s->auth_method, 64).c_str());
    r = hooks_.reauthenticate(client, s->auth_method, data);
  } else {
    r = hooks_.continue_auth(client, data);
  }
  auth_step_decided(client, std::move(r));
}

void Broker::auth_step_decided(Client& client, AuthResult r) {
  const bool connecting = client.state == Client::State::kAwaitConnect;
  if (!connecting) {
    if (r.pending)
      await(client, Awaiting{ReauthState{}});
    else
      reauth_decided(client, r);
    return;
  }
  auto it = auth_exchanges_.find(client.conn_id());
  if (it == auth_exchanges_.end()) return;  // cannot happen: handle_auth checked
  ConnectState c = std::move(it->second);
  auth_exchanges_.erase(it);
  if (r.pending) {
    await(client, Awaiting{std::move(c)});
  } else if (r.continue_auth) {
    continue_connect_auth(client, std::move(c), r);
  } else {
    client.v5()->auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
    finish_connect(client, c, std::move(r));
  }
}

void Broker::reauth_decided(Client& client, const AuthResult& r) {
  mqtt5::ClientState& s = *client.v5();
  if (client.state != Client::State::kConnected) return;
  if (r.continue_auth) {
    if (!may_continue_auth(client, r.auth_data)) return;
    mqtt5::encode_auth(client, client.out(), reason::kContinueAuthentication, r.auth_data);
    return;
  }
  s.auth_exchange = mqtt5::ClientState::AuthExchange::kNone;
  if (!r.allowed) {
    // DISCONNECT with the plugin's code, if one a server may send [4.12.1].
    static constexpr uint8_t kServerCodes[] = {0x80, 0x81, 0x82, 0x83, 0x87, 0x89,
                                               0x97, 0x98, 0x9C, 0x9D, 0x9F};
    uint8_t code = r.reason_code;
    if (std::find(std::begin(kServerCodes), std::end(kServerCodes), code) == std::end(kServerCodes))
      code = reason::kNotAuthorized;
    CLIENT_LOG(log::Level::kInfo, client, "re-authentication refused (DISCONNECT 0x%02x): %s", code,
               r.reason.c_str());
    codec::Properties props;
    if (mqtt5::may_send_reason_string(client, r.reason_string, 4, true))
      props.reason_string = r.reason_string;
    if (!client.close_requested()) codec::encode_disconnect_v5(client.out(), code, &props);
    client.close("re-authentication failed");
    return;
  }
  CLIENT_LOG(log::Level::kInfo, client, "re-authenticated");
  const size_t data_size = r.auth_data ? r.auth_data->size() : 0;
  if (s.max_packet_size != 0 && 16 + s.auth_method.size() + data_size > s.max_packet_size) {
    fail_auth_exchange(client, "authentication data over the client's Maximum Packet Size",
                       reason::kImplementationSpecificError);
    return;
  }
  mqtt5::encode_auth(client, client.out(), reason::kSuccess, r.auth_data);
}

}  // namespace mqgate
