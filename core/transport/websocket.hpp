// RFC 6455 for MQTT over WebSockets, pure: the opening handshake's checks and answer,
// and a frame decoder/encoder. No I/O. The WebSocket transport layer feeds bytes in
// and gets MQTT bytes (the payloads of binary messages, which may split or join MQTT
// packets freely) and control events out.
//
// Server side only: client frames must be masked (5.1), server frames are not; only
// binary data frames are accepted for MQTT ([MQTT-6.0.0-1]); fragmentation is
// reassembled as a byte stream (it needs no buffering: MQTT is a stream); control
// frames may come between fragments and are at most 125 bytes, never fragmented.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/request.hpp"

namespace mqgate::ws {

// --- opening handshake (RFC 6455 4.2) -----------------------------------------------

struct HandshakeSettings {
  std::string path = "/mqtt";        // the only resource served
  std::vector<std::string> origins;  // allowed Origin values; empty: any (or none)
};

struct HandshakeResult {
  int status = 0;          // 101 on success, else the HTTP error to answer with
  std::string response;    // the whole HTTP response to send
  std::string protocol;    // negotiated subprotocol: "mqtt" or "mqttv3.1"
  std::string reason;      // why it was refused (for the log)
};

// Checks an Upgrade request and builds the answer: GET, the path, Upgrade: websocket,
// Connection: Upgrade, Sec-WebSocket-Version 13, a 16-byte base64 Sec-WebSocket-Key,
// an allowed Origin, and a Sec-WebSocket-Protocol list containing "mqtt" (preferred)
// or "mqttv3.1".
HandshakeResult accept_upgrade(const http::Request& request, const HandshakeSettings& settings);

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) (4.2.2), with mbedTLS.
std::string accept_key(std::string_view key);

// --- frames (RFC 6455 5) --------------------------------------------------------------

enum class Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close status codes used here (7.4.1).
enum CloseCode : uint16_t {
  kCloseNormal = 1000,
  kCloseGoingAway = 1001,
  kCloseProtocolError = 1002,
  kCloseUnsupportedData = 1003,  // a text frame: MQTT is binary
  kCloseInvalidPayload = 1007,   // a close reason that is not UTF-8
  kClosePolicyViolation = 1008,
  kCloseTooBig = 1009,
  kCloseInternalError = 1011,
};

// What the decoder hands up.
struct Event {
  enum class Kind : uint8_t {
    kData,   // MQTT bytes (a piece of a binary message)
    kPing,   // answer with a pong carrying `data`
    kPong,   // ignored
    kClose,  // the peer closes: answer with a close frame (code) and close
  };
  Kind kind;
  std::string_view data;  // valid until the next feed()
  uint16_t code = 0;      // kClose: the peer's code (1005 if none)
};

class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_payload = 1 << 20) : max_payload_(max_frame_payload) {}

  // Decodes as much of `bytes` as possible, calling on_event for each event in order.
  // Returns false on a protocol error: error_code() says which close code to send.
  // Data is unmasked in place in a copy kept only for the frame being decoded.
  template <typename Fn>
  bool feed(std::string_view bytes, Fn&& on_event) {
    while (!bytes.empty()) {
      Event e{};
      const int r = step(bytes, e);
      if (r < 0) return false;
      if (r > 0) on_event(e);
    }
    return true;
  }
  uint16_t error_code() const { return error_code_; }
  const std::string& error_reason() const { return error_reason_; }
  // Bytes held for a frame header or a control frame not yet complete (memory).
  size_t buffered() const { return header_.size() + control_.size(); }
  // Frees the scratch copy of the last data read (idle connections; between feeds).
  void release_scratch() { std::string().swap(data_); }

 private:
  // Consumes from `bytes`; returns 1 with an event, 0 without, -1 on error.
  int step(std::string_view& bytes, Event& e);
  int fail(uint16_t code, std::string reason);

  size_t max_payload_;
  std::string header_;       // header bytes of the frame being read (2-14)
  bool in_payload_ = false;  // the header is complete
  Opcode opcode_ = Opcode::kBinary;
  bool fin_ = false;
  uint8_t mask_[4] = {};
  uint64_t remaining_ = 0;   // payload bytes still to come
  uint64_t mask_offset_ = 0;
  bool in_message_ = false;  // a fragmented binary message is open
  std::string data_;         // unmasked data of the current read
  std::string control_;      // a control frame's payload
  uint16_t error_code_ = 0;
  std::string error_reason_;
};

// Appends a server frame (unmasked, FIN set) to `out`.
void encode_frame(std::string& out, Opcode opcode, std::string_view payload);
// A close frame with a status code (and a short reason).
void encode_close(std::string& out, uint16_t code, std::string_view reason = {});

}  // namespace mqgate::ws
