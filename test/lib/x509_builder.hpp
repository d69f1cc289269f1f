// Test helpers for plugin tests: DER for subjectAltName values and X.509 certificates
// made at run time with mbedTLS's x509write (moved out of certauth_test.cpp so other
// plugin tests can use them). Failures throw std::runtime_error (doctest reports it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mqgate::test::x509 {

// DER: a definite length, and a tag-length-value.
std::string der_length(size_t n);
std::string tlv(uint8_t tag, std::string_view value);

// GeneralName values for a subjectAltName.
std::string uri(std::string_view s);                           // [6] uniformResourceIdentifier
std::string dns(std::string_view s);                           // [2] dNSName
std::string email(std::string_view s);                         // [1] rfc822Name
std::string ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);  // [7] iPAddress
// GeneralNames ::= SEQUENCE OF GeneralName
std::string san(const std::vector<std::string>& names);

// A DER certificate with the given subjectAltName extension value (none if empty), the
// subject "C=US,O=mqgate tests,CN=<cn>", issued by "CN=certauth test CA". All are
// "signed" with one EC P-256 key made for the run (plugins do not verify signatures:
// TLS did that before). `version` 1 makes a v1 certificate, without extensions.
std::string make_cert(const std::string& san_value, const std::string& cn = "device",
                      int version = 3);
// make_cert(san(names), cn).
std::string cert_with_san(const std::vector<std::string>& names, const std::string& cn = "device");

}  // namespace mqgate::test::x509
