#include "ws_client.hpp"

#include <cstring>

namespace mqgate::bench::ws {

namespace {
// Client frames must be masked (RFC 6455 5.3); the key's value does not matter to the
// broker, which unmasks whatever it is: a fixed one keeps the generator cheap.
constexpr uint8_t kMask[4] = {0x5a, 0xc3, 0x17, 0x8e};
}  // namespace

std::string upgrade_request(const std::string& host, const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host +
         "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: bWdhdGUtYmVuY2gta2V5MQ==\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Protocol: mqtt\r\n\r\n";
}

long upgrade_response(std::string_view in, std::string& error) {
  const size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (in.size() > 16384) {
      error = "WebSocket upgrade: response head too long";
      return -1;
    }
    return 0;
  }
  const std::string_view status = in.substr(0, in.find("\r\n"));
  if (status.substr(0, 13) != "HTTP/1.1 101 ") {
    error = "WebSocket upgrade refused: " + std::string(status);
    return -1;
  }
  return static_cast<long>(end + 4);
}

void append_frame(std::string& out, std::string_view payload) {
  const uint64_t n = payload.size();
  char head[14];
  size_t h = 0;
  head[h++] = static_cast<char>(0x82);  // FIN, binary
  if (n < 126) {
    head[h++] = static_cast<char>(0x80 | n);
  } else if (n < 65536) {
    head[h++] = static_cast<char>(0x80 | 126);
    head[h++] = static_cast<char>(n >> 8);
    head[h++] = static_cast<char>(n);
  } else {
    head[h++] = static_cast<char>(0x80 | 127);
    for (int s = 56; s >= 0; s -= 8) head[h++] = static_cast<char>(n >> s);
  }
  std::memcpy(head + h, kMask, 4);
  h += 4;
  out.append(head, h);
  const size_t start = out.size();
  out.append(payload);
  char* p = out.data() + start;
  uint64_t mask8;
  uint8_t m[8];
  for (int i = 0; i < 8; ++i) m[i] = kMask[i & 3];
  std::memcpy(&mask8, m, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    v ^= mask8;
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(p[i] ^ kMask[i & 3]);
}

bool ServerFrames::feed(std::string_view data, std::string& mqtt, std::string& error) {
  while (!data.empty()) {
    if (remaining_ > 0) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
      if (data_frame_) mqtt.append(data.substr(0, take));
      remaining_ -= take;
      data.remove_prefix(take);
      continue;
    }
    // A frame header: 2 bytes, then 0, 2 or 8 bytes of length (servers do not mask).
    const size_t before = head_.size();
    head_.append(data.substr(0, std::min<size_t>(data.size(), 10 - head_.size())));
    if (head_.size() < 2) return true;
    const auto b0 = static_cast<uint8_t>(head_[0]);
    const auto b1 = static_cast<uint8_t>(head_[1]);
    if (b1 & 0x80) {
      error = "WebSocket: a masked server frame";
      return false;
    }
    size_t need = 2;
    uint64_t len = b1 & 0x7f;
    if (len == 126) need = 4;
    if (len == 127) need = 10;
    if (head_.size() < need) {
      data.remove_prefix(head_.size() - before);
      return true;
    }
    if (need == 4) len = (uint64_t{static_cast<uint8_t>(head_[2])} << 8) | static_cast<uint8_t>(head_[3]);
    if (need == 10) {
      len = 0;
      for (size_t i = 2; i < 10; ++i) len = (len << 8) | static_cast<uint8_t>(head_[i]);
    }
    data.remove_prefix(need - before);
    head_.clear();
    const uint8_t opcode = b0 & 0x0f;
    if (opcode == 0x8) {
      error = "WebSocket close frame from the broker";
      return false;
    }
    if (opcode != 0x0 && opcode != 0x2 && opcode != 0xA && opcode != 0x9) {
      error = "WebSocket: unexpected opcode " + std::to_string(opcode);
      return false;
    }
    data_frame_ = opcode == 0x0 || opcode == 0x2;  // pings are not expected: skipped
    remaining_ = len;
  }
  return true;
}

}  // namespace mqgate::bench::ws
