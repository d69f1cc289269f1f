#include "console/json.hpp"

namespace mqgate::console {

namespace {

void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto u_escape = [&](unsigned c) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4)
      out += kHex[(c >> shift) & 0xF];
  };
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '<':
        case '>':
        case '&':
          u_escape(c);
          break;
        default:
          if (c < 0x20 || c == 0x7F)
            u_escape(c);
          else
            out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // A well-formed multi-byte sequence (no overlongs, no surrogates, <= U+10FFFF) is
    // copied; anything else costs one byte and becomes U+FFFD.
    size_t len = 0;
    unsigned cp = 0;
    if (c >= 0xC2 && c <= 0xDF)
      len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
      len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
      len = 4, cp = c & 0x07;
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (ok) {
      ok = !(len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) &&
           !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF));
    }
    if (!ok) {
      u_escape(0xFFFD);
      ++i;
      continue;
    }
    if (cp == 0x2028 || cp == 0x2029)
      u_escape(cp);
    else
      out.append(s.substr(i, len));
    i += len;
  }
  out += '"';
}

}  // namespace

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_escaped(out, s);
  return out;
}

void Json::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_) out_ += ',';
  first_ = false;
}

Json& Json::begin_object() {
  separate();
  out_ += '{';
  first_ = true;
  return *this;
}

Json& Json::end_object() {
  out_ += '}';
  first_ = false;
  return *this;
}

Json& Json::begin_array() {
  separate();
  out_ += '[';
  first_ = true;
  return *this;
}

Json& Json::end_array() {
  out_ += ']';
  first_ = false;
  return *this;
}

Json& Json::key(std::string_view k) {
  separate();
  append_escaped(out_, k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

Json& Json::string(std::string_view s) {
  separate();
  append_escaped(out_, s);
  return *this;
}

Json& Json::number(uint64_t v) {
  separate();
  out_ += std::to_string(v);
  return *this;
}

Json& Json::number(int64_t v) {
  separate();
  out_ += std::to_string(v);
  return *this;
}

Json& Json::boolean(bool v) {
  separate();
  out_ += v ? "true" : "false";
  return *this;
}

Json& Json::null() {
  separate();
  out_ += "null";
  return *this;
}

}  // namespace mqgate::console
