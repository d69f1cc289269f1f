// A connection's security layer as the HTTP endpoint sees it: HTTPS's TLS. The server
// makes it from the transport's TLS layer (which sits above this layer: the endpoint
// knows only this interface). The endpoint moves bytes between the socket and the
// channel; handshakes (on worker threads) and records are the channel's business.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/peer_info.hpp"

namespace mqgate::http {

class Channel {
 public:
  // What the channel reports later than the call that caused it (a handshake step ends
  // on a worker thread), or while it hands bytes up. On the loop.
  class Events {
   public:
    virtual ~Events() = default;
    // wire() has bytes for the peer (a handshake flight). False: the connection has
    // closed meanwhile (the channel is being released: it touches nothing more).
    virtual bool on_channel_output() = 0;
    // The handshake is over: "" (then decrypted bytes may follow: input({})) or why it
    // failed (wire() may hold an alert).
    virtual void on_channel_ready(const std::string& error) = 0;
    // Decrypted bytes, in order. False: no more for now.
    virtual bool on_channel_bytes(std::string_view bytes) = 0;
  };

  virtual ~Channel() = default;
  // Bytes from the socket; what they carry goes to Events::on_channel_bytes. False (with
  // `error`): the connection must close.
  virtual bool input(std::string_view bytes, std::string& error) = 0;
  virtual bool ready() const = 0;      // the handshake is done
  virtual bool available() const = 0;  // no worker owns it now: send() and wire() may be used
  // Encrypts `plain` (cleared) into wire(). Only when ready() and available().
  virtual bool send(std::string& plain, std::string& error) = 0;
  virtual std::string& wire() = 0;  // bytes for the socket
  virtual void shutdown() = 0;      // queues close_notify in wire() if it can
  // What the peer proved in the handshake (its certificate chain may be empty); null
  // until ready().
  virtual const TlsPeerInfo* peer() const = 0;
  // The connection is gone: the channel deletes itself now, or once the worker that owns
  // it is done. Called instead of the destructor.
  virtual void abandon() = 0;
};

// Makes a new connection's channel; null to refuse the connection (no room for another
// handshake). `events` outlives the channel until abandon().
using ChannelFactory = std::function<std::unique_ptr<Channel>(Channel::Events& events)>;

}  // namespace mqgate::http
