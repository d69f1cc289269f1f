// MQTT over WebSocket (RFC 6455; MQTT 3.1.1 section 6): the transport layer that answers
// the HTTP Upgrade request, then unwraps binary frames into the MQTT byte stream and
// wraps what the broker sends into binary frames. The rules themselves (what a valid
// upgrade or frame is) live in ws/websocket.hpp; this layer only moves bytes through
// them.
//
// Bad upgrades get their HTTP error and the connection closes; protocol errors in
// frames get a close frame with the matching status, then the connection closes.
#pragma once

#include <memory>
#include <string>

#include "http/request.hpp"
#include "transport/stream_layer.hpp"
#include "transport/websocket.hpp"

namespace mqgate::transport {

// What a listener's WebSocket connections did, for GET /metrics (loop thread only).
struct WebSocketCounts {
  uint64_t upgraded = 0;         // answered 101 Switching Protocols
  uint64_t refused = 0;          // answered with an HTTP error
  uint64_t protocol_errors = 0;  // closed for a bad frame
};

class WebSocketLayer final : public StreamLayer {
 public:
  // `max_frame` bounds a frame's announced payload (frames are decoded as they stream
  // in, so this bounds no memory; it refuses nonsense). `counts` (the listener's)
  // outlives the layer.
  WebSocketLayer(const ws::HandshakeSettings& settings, size_t max_frame, WebSocketCounts& counts);

  const char* name() const override { return "WebSocket"; }
  bool input(std::string_view bytes, Receiver& up, std::string& error) override;
  bool ready() const override { return state_ == State::kOpen; }
  bool send(std::string& bytes, std::string& error) override;
  std::string& wire() override { return wire_; }
  void shutdown() override;
  size_t buffered() const override { return frames_.buffered(); }
  void release_idle_buffers(bool long_idle) override;

  // The subprotocol agreed on ("mqtt" or "mqttv3.1"; empty before the upgrade).
  const std::string& protocol() const { return protocol_; }

 private:
  enum class State : uint8_t { kUpgrade, kOpen, kClosed };
  bool upgrade(std::string_view& bytes, std::string& error);
  bool frames(std::string_view bytes, Receiver& up, std::string& error);

  const ws::HandshakeSettings& settings_;  // the listener's, which outlives its connections
  WebSocketCounts& counts_;
  State state_ = State::kUpgrade;
  std::unique_ptr<http::RequestParser> request_;  // until the upgrade is done
  ws::FrameDecoder frames_;
  std::string wire_;
  std::string protocol_;
};

}  // namespace mqgate::transport
