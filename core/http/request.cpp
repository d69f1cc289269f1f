#include "http/request.hpp"

#include <algorithm>

namespace mqgate::http {

namespace {

// RFC 9110 5.6.2: tchar.
bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

// RFC 9110 5.5: field-value characters (VCHAR, obs-text, SP, HTAB).
bool is_field_char(unsigned char c) { return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f); }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

const std::string* Request::header(std::string_view name) const {
  const std::string* found = nullptr;
  for (const Header& h : headers) {
    if (h.name != name) continue;
    if (found) return nullptr;  // repeated: not "the" value
    found = &h.value;
  }
  return found;
}

std::vector<std::string_view> Request::values(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const Header& h : headers)
    if (h.name == name) out.emplace_back(h.value);
  return out;
}

bool Request::header_has_token(std::string_view name, std::string_view token) const {
  for (std::string_view v : values(name)) {
    while (!v.empty()) {
      const size_t comma = v.find(',');
      std::string_view item = trim(v.substr(0, comma));
      if (iequals(item, token)) return true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return false;
}

ParseStatus RequestParser::fail(int status, std::string reason) {
  status_ = ParseStatus::kError;
  error_status_ = status;
  error_reason_ = std::move(reason);
  head_.clear();
  head_.shrink_to_fit();
  return status_;
}

ParseStatus RequestParser::feed(std::string_view bytes, size_t& consumed) {
  consumed = 0;
  if (status_ != ParseStatus::kIncomplete) return status_;
  const size_t room = limits_.max_head_bytes - head_.size();
  const size_t take = std::min(bytes.size(), room);
  const size_t before = head_.size();
  head_.append(bytes.substr(0, take));
  // Look for the blank line, and for bare LFs, in what is new (and the 3 bytes before).
  size_t i = scanned_ >= 3 ? scanned_ - 3 : 0;
  for (; i < head_.size(); ++i) {
    if (head_[i] != '\n') continue;
    if (i == 0 || head_[i - 1] != '\r') return fail(400, "a line ends in LF without CR");
    if (i >= 3 && head_.compare(i - 3, 4, "\r\n\r\n") == 0) {
      consumed = i + 1 - before;
      head_.resize(i + 1);
      scanned_ = head_.size();
      return parse_head();
    }
  }
  scanned_ = head_.size();
  if (head_.size() >= limits_.max_head_bytes) {
    const bool in_request_line = head_.find("\r\n") == std::string::npos;
    return fail(in_request_line ? 414 : 431,
                "request head over " + std::to_string(limits_.max_head_bytes) + " bytes");
  }
  consumed = take;
  return status_;
}

ParseStatus RequestParser::parse_head() {
  std::string_view rest = head_;
  rest.remove_suffix(2);  // the blank line's CRLF; every line below ends in CRLF
  bool first = true;
  while (!rest.empty()) {
    const size_t end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    if (first) {
      if (!parse_request_line(line)) return status_;
      first = false;
    } else if (!parse_header_line(line)) {
      return status_;
    }
  }
  if (first) return fail(400, "empty request");
  const auto hosts = request_.values("host");
  if (hosts.size() != 1) return fail(400, hosts.empty() ? "no Host header" : "several Host headers");
  if (!request_.values("transfer-encoding").empty())
    return fail(400, "a request body is not accepted (Transfer-Encoding)");
  const auto lengths = request_.values("content-length");
  if (lengths.size() > 1) return fail(400, "several Content-Length headers");
  if (lengths.size() == 1 && lengths[0] != "0") return fail(413, "a request body is not accepted");
  head_.clear();
  head_.shrink_to_fit();
  status_ = ParseStatus::kComplete;
  return status_;
}

bool RequestParser::parse_request_line(std::string_view line) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    fail(400, "malformed request line");
    return false;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) {
    fail(400, "malformed method");
    return false;
  }
  if (target.empty() || target[0] != '/' ||
      !std::all_of(target.begin(), target.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u < 0x7f && c != '#';
      })) {
    fail(400, "request target must be an absolute path (origin-form)");
    return false;
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    fail(400, "malformed HTTP version");
    return false;
  }
  if (version != "HTTP/1.1") {
    fail(505, "only HTTP/1.1 is supported");
    return false;
  }
  request_.method = method;
  request_.target = target;
  const size_t q = target.find('?');
  request_.path = target.substr(0, q);
  request_.query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
  request_.version_minor = 1;
  return true;
}

bool RequestParser::parse_header_line(std::string_view line) {
  if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
    fail(400, "obsolete line folding");
    return false;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
    fail(400, "malformed header field name");
    return false;
  }
  const std::string_view value = trim(line.substr(colon + 1));
  if (!std::all_of(value.begin(), value.end(),
                   [](char c) { return is_field_char(static_cast<unsigned char>(c)); })) {
    fail(400, "control character in a header value");
    return false;
  }
  if (request_.headers.size() >= limits_.max_headers) {
    fail(431, "more than " + std::to_string(limits_.max_headers) + " headers");
    return false;
  }
  Header h;
  h.name.reserve(colon);
  for (char c : line.substr(0, colon)) h.name.push_back(lower(c));
  h.value = value;
  request_.headers.push_back(std::move(h));
  return true;
}

const char* status_text(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string response(int status, std::string_view content_type, std::string_view body,
                     const std::vector<std::string>& extra_headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + status_text(status) + "\r\n";
  if (!content_type.empty()) out.append("Content-Type: ").append(content_type).append("\r\n");
  out += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n";
  for (const std::string& h : extra_headers) out.append(h).append("\r\n");
  out += "\r\n";
  out.append(body);
  return out;
}

}  // namespace mqgate::http
