// What the console needs from the server that owns the loop, the connections and the
// listeners: implemented by Server (the console sits below it in the layers).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "broker/broker.hpp"
#include "console/json.hpp"

namespace mqgate::console {

class Host {
 public:
  virtual ~Host() = default;
  virtual Broker& console_broker() = 0;
  virtual const Config& console_config() const = 0;
  virtual uint64_t console_now_ms() = 0;  // loop time
  // The "broker" object of GET /api/v1/broker: counters, listeners with their plugin
  // chains, served certificates, CRLs (its fields, inside an open object).
  virtual void write_broker(Json& out) = 0;
  // Closes a connected client (5.0: DISCONNECT 0x98 Administrative action first) and
  // carries the close out.
  virtual void console_disconnect(Client& client, const char* why) = 0;
  // Loads the TLS material of listener `name` again (its CRL) off the loop; `then(ok)` runs
  // on the loop once it is installed (false: the listener has no TLS or the load failed).
  virtual void reload_listener_tls(const std::string& name, std::function<void(bool ok)> then) = 0;
  // Closes every connection whose leaf certificate is (issuer DER, serial DER content).
  virtual size_t disconnect_certificate(const std::string& issuer_raw,
                                        const std::string& serial_raw, const char* why) = 0;
};

}  // namespace mqgate::console
