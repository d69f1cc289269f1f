#include "base/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace mqgate::codec {

bool is_valid_mqtt_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    // Fast path: eight ASCII bytes at a time (and no NUL among them).
    if (end - p >= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      const uint64_t has_high = word & 0x8080808080808080ull;
      const uint64_t has_zero = (word - 0x0101010101010101ull) & ~word & 0x8080808080808080ull;
      if ((has_high | has_zero) == 0) {
        p += 8;
        continue;
      }
    }
    const uint8_t c = *p;
    if (c < 0x80) {
      if (c == 0) return false;
      ++p;
      continue;
    }
    int extra;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte or 0xF8..0xFF where a sequence must start
    }
    if (end - p <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr uint32_t kMinForLength[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[extra]) return false;     // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;  // surrogate
    if (cp > 0x10FFFF) return false;
    p += extra + 1;
  }
  return true;
}

bool is_valid_utf8_payload(std::string_view s) {
  // A NUL cannot sit inside a multi-byte sequence, so the pieces between NULs are
  // checked on their own.
  while (!s.empty()) {
    const size_t nul = s.find('\0');
    if (!is_valid_mqtt_utf8(s.substr(0, nul))) return false;
    if (nul == std::string_view::npos) break;
    s.remove_prefix(nul + 1);
  }
  return true;
}

}  // namespace mqgate::codec
