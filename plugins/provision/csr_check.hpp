// What a device's certificate signing request must be before the provision plugin
// signs it (docs/provisioning.md): a PKCS#10 CSR (PEM or DER) whose signature verifies
// with its own key (proof of possession), with an acceptable key, and asking for no
// extension the issuer sets itself (subjectAltName, basicConstraints CA:TRUE).
#pragma once

#include <mbedtls/x509_csr.h>

#include <string>
#include <string_view>

namespace mqgate::provision {

struct KeyPolicy {
  unsigned min_rsa_bits = 2048;
  bool ec_p256 = true, ec_p384 = true;
};

// A refusal: `code` is one of the protocol's reason codes, `text` says why.
struct Refusal {
  std::string code, text;
  explicit operator bool() const { return !code.empty(); }
};

// An owned, parsed CSR.
class Csr {
 public:
  Csr() { mbedtls_x509_csr_init(&csr_); }
  ~Csr() { mbedtls_x509_csr_free(&csr_); }
  Csr(const Csr&) = delete;
  Csr& operator=(const Csr&) = delete;
  mbedtls_x509_csr& get() { return csr_; }

 private:
  mbedtls_x509_csr csr_;
};

// Parses `payload` into `csr` and checks it; an empty Refusal when it may be signed.
Refusal check_csr(std::string_view payload, const KeyPolicy& policy, Csr& csr);

}  // namespace mqgate::provision
