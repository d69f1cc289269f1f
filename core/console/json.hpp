// A small JSON writer for the console's API. Every string goes through string(), which
// escapes quotes, backslashes and control characters, replaces bytes that are not
// well-formed UTF-8 with U+FFFD (client ids and certificate names are bytes from the
// network), and escapes <, >, & and U+2028/U+2029 so that the text is inert even if
// someone pastes it into HTML or a script.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mqgate::console {

class Json {
 public:
  Json& begin_object();
  Json& end_object();
  Json& begin_array();
  Json& end_array();
  Json& key(std::string_view k);  // inside an object, before its value
  Json& string(std::string_view s);
  Json& number(uint64_t v);
  Json& number(int64_t v);
  Json& boolean(bool v);
  Json& null();
  // key(k) then the value.
  template <typename T>
  Json& field(std::string_view k, T&& v) {
    key(k);
    return value(std::forward<T>(v));
  }
  Json& value(std::string_view s) { return string(s); }
  Json& value(const std::string& s) { return string(s); }
  Json& value(const char* s) { return string(s); }
  Json& value(bool v) { return boolean(v); }
  Json& value(uint64_t v) { return number(v); }
  Json& value(uint32_t v) { return number(uint64_t{v}); }
  Json& value(uint16_t v) { return number(uint64_t{v}); }
  Json& value(uint8_t v) { return number(uint64_t{v}); }
  Json& value(int64_t v) { return number(v); }
  Json& value(int v) { return number(int64_t{v}); }

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void separate();  // a comma before every value but the first of its container
  std::string out_;
  bool first_ = true;       // nothing written yet in the current container
  bool after_key_ = false;  // the next value follows a key
};

// `s` as a JSON string literal (with its quotes), escaped as Json::string does.
std::string json_quote(std::string_view s);

}  // namespace mqgate::console
