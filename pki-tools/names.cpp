#include "names.hpp"

#include <arpa/inet.h>
#include <mbedtls/oid.h>

#include <cctype>

#include "error.hpp"

namespace mqgate::pki {

namespace {

std::string quoted(std::string_view value) {
  // Values are shown in messages; keep control characters from reaching the terminal.
  std::string out = "'";
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

// Decodes UTF-8; returns false on malformed input. Counts code points, and reports
// whether any is a control character (C0, DEL or C1).
bool scan_utf8(std::string_view s, size_t& chars, bool& has_control) {
  chars = 0;
  has_control = false;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if ((c & 0xe0) == 0xc0) {
      cp = c & 0x1f;
      n = 2;
    } else if ((c & 0xf0) == 0xe0) {
      cp = c & 0x0f;
      n = 3;
    } else if ((c & 0xf8) == 0xf0) {
      cp = c & 0x07;
      n = 4;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[n] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return false;
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) has_control = true;
    ++chars;
    i += n;
  }
  return true;
}

bool is_ldh_label(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  for (char c : label) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

// Why value is not a DNS name, or "" if it is one.
std::string dns_name_problem(std::string_view value, bool allow_wildcard) {
  if (value.empty()) return "must not be empty";
  if (value.find("://") != std::string_view::npos || value.find('/') != std::string_view::npos) {
    return "must be a bare domain name, not a URI or path";
  }
  if (value.size() > 253) return "is longer than 253 characters";
  if (value.back() == '.') return "must not end with '.'";
  std::vector<std::string_view> labels;
  size_t start = 0;
  for (;;) {
    size_t dot = value.find('.', start);
    labels.push_back(value.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    std::string_view label = labels[i];
    if (i == 0 && allow_wildcard && label == "*" && labels.size() > 1) continue;
    if (label.empty()) return "has an empty label";
    if (label.size() > 63) return "has a label longer than 63 characters";
    if (!is_ldh_label(label)) {
      return "has an invalid label '" + std::string(label) +
             "' (labels use letters, digits and '-', and do not start or end with '-')";
    }
  }
  bool all_digits = true;
  for (char c : labels.back())
    all_digits = all_digits && std::isdigit(static_cast<unsigned char>(c));
  if (all_digits) return "looks like an IP address, not a DNS name";
  return "";
}

}  // namespace

void DistinguishedName::add(std::string_view oid, unsigned char tag, std::string value) {
  attrs_.push_back(NameAttribute{std::string(oid), tag, std::move(value)});
}

void DistinguishedName::add_country(std::string value) {
  add(MBEDTLS_OID_AT_COUNTRY, MBEDTLS_ASN1_PRINTABLE_STRING, std::move(value));
}
void DistinguishedName::add_state(std::string value) {
  add(MBEDTLS_OID_AT_STATE, MBEDTLS_ASN1_UTF8_STRING, std::move(value));
}
void DistinguishedName::add_locality(std::string value) {
  add(MBEDTLS_OID_AT_LOCALITY, MBEDTLS_ASN1_UTF8_STRING, std::move(value));
}
void DistinguishedName::add_organization(std::string value) {
  add(MBEDTLS_OID_AT_ORGANIZATION, MBEDTLS_ASN1_UTF8_STRING, std::move(value));
}
void DistinguishedName::add_common_name(std::string value) {
  add(MBEDTLS_OID_AT_CN, MBEDTLS_ASN1_UTF8_STRING, std::move(value));
}

Bytes DistinguishedName::der() const {
  size_t capacity = 16;
  for (const NameAttribute& a : attrs_)
    capacity += a.oid.size() + a.value.size() + 24;
  DerWriter w(capacity);
  size_t name = w.mark();
  for (auto it = attrs_.rbegin(); it != attrs_.rend(); ++it) {
    size_t rdn = w.mark();
    size_t atv = w.mark();
    w.tagged(it->tag,
             ByteView(reinterpret_cast<const unsigned char*>(it->value.data()), it->value.size()));
    w.oid(oid_bytes(it->oid));
    w.close(atv, kSequence);
    w.close(rdn, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET);
  }
  w.close(name, kSequence);
  return w.bytes();
}

std::string DistinguishedName::to_string() const {
  std::string out;
  for (const NameAttribute& a : attrs_) {
    const char* short_name = nullptr;
    mbedtls_asn1_buf oid{MBEDTLS_ASN1_OID, a.oid.size(),
                         reinterpret_cast<unsigned char*>(const_cast<char*>(a.oid.data()))};
    if (mbedtls_oid_get_attr_short_name(&oid, &short_name) != 0) short_name = "?";
    if (!out.empty()) out += ", ";
    out += short_name;
    out += "=";
    out += a.value;
  }
  return out;
}

std::string normalize_country(std::string_view option, std::string_view value) {
  if (value.size() != 2 || !std::isalpha(static_cast<unsigned char>(value[0])) ||
      !std::isalpha(static_cast<unsigned char>(value[1]))) {
    throw UsageError(std::string(option) + " " + quoted(value) +
                     " must be exactly 2 letters (an ISO 3166 country code such as US)");
  }
  std::string out(value);
  for (char& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

void check_dn_text(std::string_view option, std::string_view value, size_t max_chars) {
  std::string opt(option);
  size_t chars = 0;
  bool has_control = false;
  if (value.empty()) throw UsageError(opt + " must not be empty");
  if (!scan_utf8(value, chars, has_control)) throw UsageError(opt + " is not valid UTF-8");
  if (has_control) {
    throw UsageError(opt + " " + quoted(value) + " must not contain control characters");
  }
  bool blank = true;
  for (char c : value)
    blank = blank && c == ' ';
  if (blank) throw UsageError(opt + " must not be blank");
  if (chars > max_chars) {
    throw UsageError(opt + " is " + std::to_string(chars) + " characters long; at most " +
                     std::to_string(max_chars) + " are allowed");
  }
}

std::string normalize_dns_name(std::string_view option, std::string_view value,
                               bool allow_wildcard) {
  std::string problem = dns_name_problem(value, allow_wildcard);
  if (!problem.empty()) {
    throw UsageError(std::string(option) + " " + quoted(value) +
                     " is not a valid DNS name: " + problem);
  }
  std::string out(value);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_dns_name(std::string_view value, bool allow_wildcard) {
  return dns_name_problem(value, allow_wildcard).empty();
}

Bytes parse_ip_address(std::string_view value) {
  std::string text(value);
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return Bytes(buf, buf + 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return Bytes(buf, buf + 16);
  return {};
}

std::string format_ip_address(ByteView bytes) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (bytes.size() == 4) inet_ntop(AF_INET, bytes.data(), buf, sizeof buf);
  if (bytes.size() == 16) inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
  return buf;
}

namespace {

// The rule shared by device ids and claim batch names (names.hpp), up to max_chars.
void check_id_text(const std::string& opt, std::string_view value, size_t max_chars) {
  if (value.empty()) throw UsageError(opt + " must not be empty");
  for (char ch : value) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '/') throw UsageError(opt + " " + quoted(value) + " must not contain '/'");
    if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
      throw UsageError(opt + " " + quoted(value) + " must not contain whitespace");
    }
    if (c < 0x20 || c == 0x7f) {
      throw UsageError(opt + " " + quoted(value) + " must not contain control characters");
    }
  }
  for (char ch : value) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (!std::isalnum(c) && c != '.' && c != '_' && c != '-') {
      std::string shown = c < 0x80 ? std::string("'") + ch + "'" : "a non-ASCII character";
      throw UsageError(opt + " " + quoted(value) + " contains " + shown +
                       "; allowed are letters, digits, '.', '_' and '-'");
    }
  }
  if (value == "." || value == "..") {
    throw UsageError(opt + " " + quoted(value) + " is not a usable file name");
  }
  if (!std::isalnum(static_cast<unsigned char>(value.front()))) {
    throw UsageError(opt + " " + quoted(value) + " must start with a letter or digit");
  }
  if (value.back() == '.' || value.find("..") != std::string_view::npos) {
    throw UsageError(opt + " " + quoted(value) + " must not end with '.' or contain '..'");
  }
  if (value.size() > max_chars) {
    throw UsageError(opt + " is " + std::to_string(value.size()) + " characters long; at most " +
                     std::to_string(max_chars) + " are allowed");
  }
}

}  // namespace

void check_device_id(std::string_view value) {
  check_id_text("--device-id", value, 63);
}

void check_claim_batch(std::string_view value) {
  check_id_text("--claim", value, 64);
}

}  // namespace mqgate::pki
