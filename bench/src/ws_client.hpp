// The client side of MQTT over WebSocket for the load generator: the Upgrade request,
// masked client frames out, the server's (unmasked) frames in. Only what a benchmark
// client needs: binary data, and a close or anything unexpected ends the connection.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mqgate::bench::ws {

// The GET request that asks `host` to upgrade `path` to WebSocket, subprotocol "mqtt".
std::string upgrade_request(const std::string& host, const std::string& path);

// Reads the response head at the start of `in`: returns its length once it is complete
// and says 101, 0 while incomplete, -1 (with `error`) if the upgrade was refused.
long upgrade_response(std::string_view in, std::string& error);

// Appends `payload` as one masked binary frame.
void append_frame(std::string& out, std::string_view payload);

// The server's frames, cut from a byte stream.
class ServerFrames {
 public:
  // Appends the payload of binary (and continuation) frames to `mqtt`. Returns false
  // (with `error`) on a close frame or a frame a broker must not send.
  bool feed(std::string_view data, std::string& mqtt, std::string& error);

 private:
  std::string head_;        // an incomplete frame header
  uint64_t remaining_ = 0;  // payload bytes of the current frame still to come
  bool data_frame_ = false; // the current frame's payload is MQTT bytes
};

}  // namespace mqgate::bench::ws
