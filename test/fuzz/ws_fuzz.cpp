// libFuzzer target: the WebSocket frame decoder and the HTTP request parser must never
// crash, hang, read out of bounds or hold more than a frame header or a control frame,
// whatever bytes arrive and however they are split; nor must the WebSocket transport
// layer that drives them (after a valid upgrade, and from the first byte). The first
// byte picks the split.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/request.hpp"
#include "transport/websocket.hpp"
#include "transport/websocket_layer.hpp"

using namespace mqgate;

namespace {

struct Sink final : transport::Receiver {
  bool on_bytes(std::string_view bytes) override {
    received += bytes.size();
    return true;
  }
  size_t received = 0;
};

// The layer, fed `prefix` then `input` in `step`-byte pieces, until it fails.
void drive_layer(std::string_view prefix, std::string_view input, size_t step) {
  ws::HandshakeSettings settings;
  transport::WebSocketCounts counts;
  transport::WebSocketLayer layer(settings, 4096, counts);
  Sink up;
  std::string error;
  if (!layer.input(prefix, up, error)) std::abort();  // a valid upgrade
  for (size_t i = 0; i < input.size(); i += step) {
    if (!layer.input(input.substr(i, step), up, error)) {
      if (error.empty() || layer.ready()) std::abort();  // a failure says why and ends it
      break;
    }
    if (layer.buffered() > 14 + 125) std::abort();
  }
  if (up.received > input.size()) std::abort();
  std::string out = "x";
  if (layer.ready() && (!layer.send(out, error) || !out.empty())) std::abort();
  layer.shutdown();
}

constexpr char kUpgrade[] =
    "GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t step = 1 + data[0] % 32;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  ws::FrameDecoder frames(4096);
  size_t delivered = 0;
  bool ok = true;
  for (size_t i = 0; i < input.size() && ok; i += step) {
    ok = frames.feed(input.substr(i, step), [&](const ws::Event& e) {
      delivered += e.data.size();
      if (e.kind == ws::Event::Kind::kPing && e.data.size() > 125) std::abort();
    });
    if (frames.buffered() > 14 + 125) std::abort();
  }
  if (delivered > input.size()) std::abort();

  http::Limits limits;
  limits.max_head_bytes = 1024;
  http::RequestParser parser(limits);
  size_t consumed_total = 0;
  for (size_t i = 0; i < input.size(); i += step) {
    size_t consumed = 0;
    const http::ParseStatus s = parser.feed(input.substr(i, step), consumed);
    consumed_total += consumed;
    if (s == http::ParseStatus::kError) {
      if (parser.error_status() < 400 || parser.error_status() > 505) std::abort();
      break;
    }
    if (s == http::ParseStatus::kComplete) {
      if (parser.request().method.empty() || parser.request().path.empty() ||
          parser.request().path[0] != '/')
        std::abort();
      ws::HandshakeSettings settings;
      (void)ws::accept_upgrade(parser.request(), settings);
      break;
    }
  }
  if (consumed_total > input.size() || consumed_total > limits.max_head_bytes) std::abort();

  drive_layer(kUpgrade, input, step);
  drive_layer({}, input, step);
  return 0;
}
