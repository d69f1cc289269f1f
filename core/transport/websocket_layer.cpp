#include "transport/websocket_layer.hpp"

namespace mqgate::transport {

WebSocketLayer::WebSocketLayer(const ws::HandshakeSettings& settings, size_t max_frame,
                               WebSocketCounts& counts)
    : settings_(settings),
      counts_(counts),
      request_(std::make_unique<http::RequestParser>()),
      frames_(max_frame) {}

bool WebSocketLayer::input(std::string_view bytes, Receiver& up, std::string& error) {
  if (state_ == State::kClosed) return true;  // after a close frame: nothing more is read
  if (state_ == State::kUpgrade) {
    if (!upgrade(bytes, error)) return false;
    if (state_ == State::kUpgrade) return true;  // the head is not complete yet
  }
  return frames(bytes, up, error);
}

// Consumes the request head from `bytes` (leaving what follows it, if anything).
bool WebSocketLayer::upgrade(std::string_view& bytes, std::string& error) {
  size_t consumed = 0;
  const http::ParseStatus status = request_->feed(bytes, consumed);
  if (status == http::ParseStatus::kIncomplete) return true;
  if (status == http::ParseStatus::kError) {
    wire_ = http::response(request_->error_status(), "text/plain; charset=utf-8",
                           request_->error_reason() + "\n");
    error = "WebSocket upgrade refused (" + std::to_string(request_->error_status()) +
            "): " + request_->error_reason();
    state_ = State::kClosed;
    request_.reset();
    counts_.refused++;
    return false;
  }
  const ws::HandshakeResult result = ws::accept_upgrade(request_->request(), settings_);
  request_.reset();  // an open WebSocket keeps nothing of its request
  wire_ = result.response;
  if (result.status != 101) {
    error = "WebSocket upgrade refused (" + std::to_string(result.status) + "): " + result.reason;
    state_ = State::kClosed;
    counts_.refused++;
    return false;
  }
  counts_.upgraded++;
  protocol_ = result.protocol;
  state_ = State::kOpen;
  bytes.remove_prefix(consumed);  // frames the client sent right behind its request
  return true;
}

bool WebSocketLayer::frames(std::string_view bytes, Receiver& up, std::string& error) {
  bool closing = false;  // the peer's close frame came
  bool stopped = false;  // `up` wants no more
  uint16_t peer_code = 0;
  const bool ok = frames_.feed(bytes, [&](const ws::Event& e) {
    if (closing) return;  // nothing after a close frame is looked at (RFC 6455 5.5.1)
    switch (e.kind) {
      case ws::Event::Kind::kData:
        if (!stopped && !up.on_bytes(e.data)) stopped = true;
        break;
      case ws::Event::Kind::kPing:
        ws::encode_frame(wire_, ws::Opcode::kPong, e.data);
        break;
      case ws::Event::Kind::kPong:
        break;
      case ws::Event::Kind::kClose:
        closing = true;
        peer_code = e.code;
        break;
    }
  });
  if (!ok) {
    ws::encode_close(wire_, frames_.error_code(), frames_.error_reason());
    state_ = State::kClosed;
    counts_.protocol_errors++;
    error = "WebSocket protocol error (" + std::to_string(frames_.error_code()) +
            "): " + frames_.error_reason();
    return false;
  }
  if (closing) {
    // Echo the status (1000 when the peer gave none, 1005), then the connection closes.
    ws::encode_close(wire_,
                     peer_code == 1005 ? static_cast<uint16_t>(ws::kCloseNormal) : peer_code);
    state_ = State::kClosed;
    error = "WebSocket closed by the client (status " + std::to_string(peer_code) + ")";
    return false;
  }
  return true;
}

bool WebSocketLayer::send(std::string& bytes, std::string&) {
  // One binary frame per flush: the MQTT stream may be cut anywhere ([MQTT-6.0.0-2]),
  // and fewer frames are fewer headers and fewer wake-ups for the client.
  ws::encode_frame(wire_, ws::Opcode::kBinary, bytes);
  bytes.clear();
  return true;
}

void WebSocketLayer::shutdown() {
  if (state_ != State::kOpen) return;  // refused, or a close frame already went
  ws::encode_close(wire_, ws::kCloseNormal);
  state_ = State::kClosed;
}

void WebSocketLayer::release_idle_buffers(bool long_idle) {
  if (wire_.empty()) std::string().swap(wire_);
  if (long_idle) frames_.release_scratch();  // up to a read's worth, kept for the next
}

}  // namespace mqgate::transport
