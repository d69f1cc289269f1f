#include "broker/session_certificate.hpp"

#include <mbedtls/asn1.h>
#include <mbedtls/x509_crt.h>

#include "common/x509_time.h"

namespace mqgate {

namespace {

// The length of the DER element at the start of `der` (tag, length and content), or 0.
size_t der_element_size(std::string_view der) {
  auto* start = reinterpret_cast<unsigned char*>(const_cast<char*>(der.data()));
  unsigned char* p = start;
  size_t len = 0;
  if (der.size() < 2 || mbedtls_asn1_get_tag(&p, start + der.size(), &len,
                                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return 0;
  return static_cast<size_t>(p - start) + len;
}

}  // namespace

std::shared_ptr<const SessionCertificate> SessionCertificate::of(std::string listener,
                                                                 const TlsPeerInfo& tls) {
  if (tls.chain_der.empty() || tls.chain_der.front().size() > kMaxChainBytes) return nullptr;
  auto c = std::make_shared<SessionCertificate>();
  c->listener = std::move(listener);
  for (const std::string& der : tls.chain_der) {
    if (c->chain.size() + der.size() > kMaxChainBytes) {
      c->chain = tls.chain_der.front();
      break;
    }
    c->chain += der;
  }
  c->issuer_raw = tls.issuer_raw;
  c->serial_raw = tls.serial_raw;
  c->not_after = tls.not_after;
  return c;
}

std::shared_ptr<const SessionCertificate> SessionCertificate::restore(std::string listener,
                                                                      std::string chain) {
  if (chain.empty() || chain.size() > kMaxChainBytes) return nullptr;
  const size_t leaf_size = der_element_size(chain);
  if (leaf_size == 0 || leaf_size > chain.size()) return nullptr;
  mbedtls_x509_crt leaf;
  mbedtls_x509_crt_init(&leaf);
  std::shared_ptr<SessionCertificate> c;
  if (mbedtls_x509_crt_parse_der(&leaf, reinterpret_cast<const unsigned char*>(chain.data()),
                                 leaf_size) == 0) {
    c = std::make_shared<SessionCertificate>();
    c->issuer_raw.assign(reinterpret_cast<const char*>(leaf.issuer_raw.p), leaf.issuer_raw.len);
    c->serial_raw.assign(reinterpret_cast<const char*>(leaf.serial.p), leaf.serial.len);
    // As the TLS layer does: a date mbedTLS cannot convert counts as expired.
    int64_t seconds = 0;
    c->not_after = mqgate_x509_time_to_epoch(&leaf.valid_to, &seconds) == 0 ? seconds : INT64_MIN;
    c->listener = std::move(listener);
    c->chain = std::move(chain);
  }
  mbedtls_x509_crt_free(&leaf);
  return c;
}

std::vector<std::string_view> SessionCertificate::certificates() const {
  std::vector<std::string_view> out;
  std::string_view rest = chain;
  while (!rest.empty()) {
    const size_t n = der_element_size(rest);
    if (n == 0 || n > rest.size()) break;
    out.push_back(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  return out;
}

}  // namespace mqgate
