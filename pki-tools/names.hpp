// Names: distinguished names for subjects and issuers, and validation of the values the
// user gives for them (country, DN text, DNS names, IP addresses, device ids).
//
// Validators throw UsageError with a message that names the option and the problem.
#pragma once

#include <mbedtls/asn1.h>

#include <string>
#include <string_view>
#include <vector>

#include "der.hpp"

namespace mqgate::pki {

// One attribute of a distinguished name: its OID (DER content), string tag and value.
struct NameAttribute {
  std::string oid;
  unsigned char tag = MBEDTLS_ASN1_UTF8_STRING;
  std::string value;
};

// An X.509 Name as an ordered list of attributes, most significant (C) first, each in
// its own RDN.
class DistinguishedName {
 public:
  void add(std::string_view oid, unsigned char tag, std::string value);
  // C as PrintableString, the others as UTF8String (RFC 5280).
  void add_country(std::string value);
  void add_state(std::string value);
  void add_locality(std::string value);
  void add_organization(std::string value);
  void add_common_name(std::string value);

  const std::vector<NameAttribute>& attributes() const { return attrs_; }
  bool empty() const { return attrs_.empty(); }

  // The DER Name: SEQUENCE OF RDN, one attribute per RDN, in the order added.
  Bytes der() const;

  // "C=US, O=My Org, CN=name" for messages.
  std::string to_string() const;

 private:
  std::vector<NameAttribute> attrs_;
};

// --country: exactly two ASCII letters, returned in upper case.
std::string normalize_country(std::string_view option, std::string_view value);

// A DN text value: non-empty, valid UTF-8, no control characters, at most `max_chars`
// characters (RFC 5280's upper bounds: 64 for CN and O, 128 for ST and L).
void check_dn_text(std::string_view option, std::string_view value, size_t max_chars);

// A DNS name: dot-separated LDH labels of 1-63 characters that neither start nor end
// with '-', 253 characters at most, no trailing dot, a last label that is not all
// digits. With `allow_wildcard`, the first label may be "*". Returned in lower case.
std::string normalize_dns_name(std::string_view option, std::string_view value,
                               bool allow_wildcard);

// True if value is a valid DNS name per normalize_dns_name (without throwing).
bool is_dns_name(std::string_view value, bool allow_wildcard);

// An IPv4 or IPv6 address in text form; returns its 4 or 16 bytes, or an empty vector.
Bytes parse_ip_address(std::string_view value);

// Text form of 4 or 16 address bytes.
std::string format_ip_address(ByteView bytes);

// --device-id: it becomes the CN, a file name, a DNS label prefix and a SPIFFE path
// segment, so: 1-63 characters from A-Z a-z 0-9 '.' '_' '-', starting with a letter or
// digit, not ending with '.', and without "..".
void check_device_id(std::string_view value);

// --claim: a claim certificate's batch name, the last segment of its SAN URI
// spiffe://<domain>/claim/<batch>. The --device-id rule, up to 64 characters.
void check_claim_batch(std::string_view value);

}  // namespace mqgate::pki
