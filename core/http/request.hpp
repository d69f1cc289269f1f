// A strict, bounded HTTP/1.1 request-head parser, for the two places mqgate speaks HTTP:
// the WebSocket Upgrade handshake and the metrics/health endpoint. Pure: bytes in, a
// parsed head or an HTTP status out; no I/O, no allocation beyond the limits.
//
// Strict on purpose (RFC 9112): CRLF line ends only, no obsolete line folding, tokens
// and field values checked character by character, one Host, no request body (neither
// endpoint takes one, and refusing Content-Length / Transfer-Encoding rules out request
// smuggling), origin-form targets only. Whatever is not understood is an error with the
// status to answer, never a guess.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mqgate::http {

struct Limits {
  size_t max_head_bytes = 8192;  // request line + headers + the blank line
  size_t max_headers = 64;
};

struct Header {
  std::string name;  // lower-cased (field names are case-insensitive)
  std::string value;  // leading and trailing spaces/tabs removed
};

struct Request {
  std::string method;  // e.g. "GET" (case-sensitive, RFC 9110 9.1)
  std::string target;  // origin-form: "/path?query"
  std::string path;    // target up to '?'
  std::string query;   // after '?', without it ("" if none)
  int version_minor = 1;  // HTTP/1.<minor>; only 1.1 is accepted
  std::vector<Header> headers;

  // The value of the only header named `name` (lower case); nullptr if absent.
  // Use values() for headers that may be repeated.
  const std::string* header(std::string_view name) const;
  std::vector<std::string_view> values(std::string_view name) const;
  // Whether a comma-separated header (e.g. Connection, Upgrade) lists `token`,
  // case-insensitively, in any of its occurrences.
  bool header_has_token(std::string_view name, std::string_view token) const;
};

enum class ParseStatus : uint8_t { kIncomplete, kComplete, kError };

class RequestParser {
 public:
  explicit RequestParser(Limits limits = {}) : limits_(limits) {}

  // Feeds bytes. Returns kComplete once the head is whole (request() is then valid and
  // `consumed` says how many of these bytes belonged to it: the rest, if any, came
  // after the head); kError with error_status()/error_reason() set; or kIncomplete.
  // After kComplete or kError, further calls return the same status.
  ParseStatus feed(std::string_view bytes, size_t& consumed);

  const Request& request() const { return request_; }
  int error_status() const { return error_status_; }  // 400, 413, 431, 501, 505
  const std::string& error_reason() const { return error_reason_; }

 private:
  ParseStatus fail(int status, std::string reason);
  ParseStatus parse_head();
  bool parse_request_line(std::string_view line);
  bool parse_header_line(std::string_view line);

  Limits limits_;
  std::string head_;  // bytes of the head received so far
  size_t scanned_ = 0;
  ParseStatus status_ = ParseStatus::kIncomplete;
  Request request_;
  int error_status_ = 0;
  std::string error_reason_;
};

// The reason phrase of a status code mqgate sends ("Not Found").
const char* status_text(int status);

// A whole response head (and body) for simple answers: status line, Content-Type (when
// there is a body), Content-Length, Connection: close, the extra header lines given
// (each "Name: value"), a blank line, then `body`.
std::string response(int status, std::string_view content_type, std::string_view body,
                     const std::vector<std::string>& extra_headers = {});

}  // namespace mqgate::http
