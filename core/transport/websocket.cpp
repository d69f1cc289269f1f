#include "transport/websocket.hpp"

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>

#include "base/utf8.hpp"

namespace mqgate::ws {

namespace {

// 7.4: codes an endpoint may receive in a close frame.
bool valid_close_code(uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

bool is_control(Opcode op) { return (static_cast<uint8_t>(op) & 0x8) != 0; }

}  // namespace

std::string accept_key(std::string_view key) {
  static const char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const std::string input = std::string(key) + kGuid;
  unsigned char digest[20];
  mbedtls_sha1_ret(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  unsigned char out[32];
  size_t n = 0;
  mbedtls_base64_encode(out, sizeof out, &n, digest, sizeof digest);
  return std::string(reinterpret_cast<char*>(out), n);
}

HandshakeResult accept_upgrade(const http::Request& r, const HandshakeSettings& settings) {
  HandshakeResult result;
  auto refuse = [&](int status, std::string why, std::vector<std::string> extra = {}) {
    result.status = status;
    result.reason = why;
    result.response = http::response(status, "text/plain; charset=utf-8", why + "\n", extra);
    return result;
  };
  if (r.method != "GET") return refuse(405, "a WebSocket upgrade is a GET", {"Allow: GET"});
  if (r.path != settings.path) return refuse(404, "MQTT is served on " + settings.path);
  if (!r.header_has_token("upgrade", "websocket") || !r.header_has_token("connection", "upgrade"))
    return refuse(426, "this is an MQTT over WebSocket endpoint: upgrade to websocket",
                  {"Upgrade: websocket", "Connection: Upgrade"});
  const std::string* version = r.header("sec-websocket-version");
  if (version == nullptr || *version != "13")
    return refuse(426, "Sec-WebSocket-Version 13 is required", {"Sec-WebSocket-Version: 13"});
  const std::string* key = r.header("sec-websocket-key");
  unsigned char raw[32];
  size_t raw_len = 0;
  if (key == nullptr || key->size() != 24 ||
      mbedtls_base64_decode(raw, sizeof raw, &raw_len, reinterpret_cast<const unsigned char*>(key->data()),
                            key->size()) != 0 ||
      raw_len != 16)
    return refuse(400, "Sec-WebSocket-Key must be 16 bytes in base64");
  if (!settings.origins.empty()) {
    const std::string* origin = r.header("origin");
    bool allowed = false;
    for (const std::string& o : settings.origins) allowed |= origin != nullptr && *origin == o;
    if (!allowed)
      return refuse(403, origin ? "origin " + *origin + " is not allowed" : "an Origin header is required");
  }
  // [MQTT-6.0.0-3]/[-4]: "mqtt"; MQTT 3.1 clients (and old libraries) ask for "mqttv3.1".
  for (const char* p : {"mqtt", "mqttv3.1"}) {
    if (r.header_has_token("sec-websocket-protocol", p)) {
      result.protocol = p;
      break;
    }
  }
  if (result.protocol.empty())
    return refuse(400, "Sec-WebSocket-Protocol must offer \"mqtt\" (or \"mqttv3.1\")");
  result.status = 101;
  result.response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: " +
                    accept_key(*key) + "\r\nSec-WebSocket-Protocol: " + result.protocol + "\r\n\r\n";
  return result;
}

int FrameDecoder::fail(uint16_t code, std::string reason) {
  error_code_ = code;
  error_reason_ = std::move(reason);
  return -1;
}

int FrameDecoder::step(std::string_view& bytes, Event& e) {
  if (error_code_ != 0) return -1;
  if (!in_payload_) {
    auto needed = [&] {
      if (header_.size() < 2) return size_t{2};
      const uint8_t len7 = static_cast<uint8_t>(header_[1]) & 0x7f;
      return size_t{2} + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    };
    while (header_.size() < needed() && !bytes.empty()) {
      header_.push_back(bytes[0]);
      bytes.remove_prefix(1);
      if (header_.size() == 2) {  // refuse what the first two bytes already rule out
        const auto b0 = static_cast<uint8_t>(header_[0]), b1 = static_cast<uint8_t>(header_[1]);
        if ((b0 & 0x70) != 0) return fail(kCloseProtocolError, "reserved bits set (no extension was negotiated)");
        if ((b1 & 0x80) == 0) return fail(kCloseProtocolError, "client frames must be masked");
      }
    }
    if (header_.size() < needed()) return 0;
    const auto* h = reinterpret_cast<const uint8_t*>(header_.data());
    fin_ = (h[0] & 0x80) != 0;
    opcode_ = static_cast<Opcode>(h[0] & 0x0f);
    uint64_t len = h[1] & 0x7f;
    size_t at = 2;
    if (len == 126) {
      len = uint64_t{h[2]} << 8 | h[3];
      at = 4;
      if (len < 126) return fail(kCloseProtocolError, "length not in its shortest form");
    } else if (len == 127) {
      len = 0;
      for (size_t i = 2; i < 10; ++i) len = len << 8 | h[i];
      at = 10;
      if (len >> 63) return fail(kCloseProtocolError, "length with its top bit set");
      if (len < 65536) return fail(kCloseProtocolError, "length not in its shortest form");
    }
    for (size_t i = 0; i < 4; ++i) mask_[i] = h[at + i];
    header_.clear();
    switch (opcode_) {
      case Opcode::kClose:
      case Opcode::kPing:
      case Opcode::kPong:
        if (!fin_) return fail(kCloseProtocolError, "a fragmented control frame");
        if (len > 125) return fail(kCloseProtocolError, "a control frame over 125 bytes");
        control_.clear();
        break;
      case Opcode::kText:
        return fail(kCloseUnsupportedData, "a text frame: MQTT is carried in binary frames");
      case Opcode::kBinary:
        if (in_message_) return fail(kCloseProtocolError, "a new message inside a fragmented one");
        in_message_ = !fin_;
        break;
      case Opcode::kContinuation:
        if (!in_message_) return fail(kCloseProtocolError, "a continuation frame outside a message");
        in_message_ = !fin_;
        break;
      default:
        return fail(kCloseProtocolError, "an unknown opcode");
    }
    if (!is_control(opcode_) && len > max_payload_)
      return fail(kCloseTooBig, "a frame of " + std::to_string(len) + " bytes is over the maximum of " +
                                    std::to_string(max_payload_));
    remaining_ = len;
    mask_offset_ = 0;
    in_payload_ = true;
  }
  const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size()));
  std::string& into = is_control(opcode_) ? control_ : data_;
  if (!is_control(opcode_)) data_.clear();
  const size_t base = into.size();
  into.append(bytes.substr(0, n));
  for (size_t i = 0; i < n; ++i) into[base + i] ^= static_cast<char>(mask_[(mask_offset_ + i) & 3]);
  bytes.remove_prefix(n);
  remaining_ -= n;
  mask_offset_ += n;
  if (remaining_ == 0) in_payload_ = false;
  if (!is_control(opcode_)) {
    if (n == 0) return 0;
    e.kind = Event::Kind::kData;
    e.data = data_;
    return 1;
  }
  if (in_payload_) return 0;  // a control frame is handed up whole
  switch (opcode_) {
    case Opcode::kPing:
      e.kind = Event::Kind::kPing;
      e.data = control_;
      return 1;
    case Opcode::kPong:
      e.kind = Event::Kind::kPong;
      e.data = control_;
      return 1;
    default: {  // close
      e.kind = Event::Kind::kClose;
      if (control_.empty()) {
        e.code = 1005;  // no status code
        return 1;
      }
      if (control_.size() == 1) return fail(kCloseProtocolError, "a close frame with a 1-byte payload");
      e.code = static_cast<uint16_t>(static_cast<uint8_t>(control_[0]) << 8 | static_cast<uint8_t>(control_[1]));
      if (!valid_close_code(e.code)) return fail(kCloseProtocolError, "an invalid close code");
      e.data = std::string_view(control_).substr(2);
      if (!codec::is_valid_utf8_payload(e.data)) return fail(kCloseInvalidPayload, "a close reason that is not UTF-8");
      return 1;
    }
  }
}

void encode_frame(std::string& out, Opcode opcode, std::string_view payload) {
  out.push_back(static_cast<char>(0x80 | static_cast<uint8_t>(opcode)));
  const uint64_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(n));
  } else if (n < 65536) {
    out.push_back(126);
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xff));
  } else {
    out.push_back(127);
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  out.append(payload);
}

void encode_close(std::string& out, uint16_t code, std::string_view reason) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xff));
  payload.append(reason.substr(0, 123));
  encode_frame(out, Opcode::kClose, payload);
}

}  // namespace mqgate::ws
