// The CA that signs: its key and certificate, loaded and checked.
#pragma once

#include <ctime>
#include <string>

#include "keys.hpp"
#include "x509.hpp"

namespace mqgate::pki {

enum class CaUse {
  kIssueCertificates,  // needs keyUsage keyCertSign (if keyUsage is present)
  kSignCrls,           // needs keyUsage cRLSign (if keyUsage is present)
};

class IssuingCa {
 public:
  // Loads the key (PKCS#1, SEC1 or PKCS#8; RSA or EC) and the first certificate of
  // crt_path, and checks that: the key matches the certificate, the certificate is a CA
  // (basicConstraints CA:TRUE), its keyUsage (if any) allows `use`, and it is valid now.
  // Throws Error naming the file and the problem otherwise.
  IssuingCa(const std::string& key_path, const std::string& crt_path, CaUse use);

  PrivateKey& key() { return key_; }
  mbedtls_x509_crt& cert() { return cert_.get(); }
  const std::string& cert_path() const { return crt_path_; }

  // The CA's subject as encoded in its certificate: the issuer of what it signs.
  ByteView subject_der() const { return {cert_->subject_raw.p, cert_->subject_raw.len}; }

  // For authorityKeyIdentifier: the CA's subjectKeyIdentifier, or, if it has none, the
  // method-1 identifier of its key.
  const Bytes& key_id() const { return key_id_; }

  std::time_t not_after() const { return to_time_t(cert_->valid_to); }

  // True if crt names this CA as its issuer and carries this CA's signature.
  bool issued(const mbedtls_x509_crt& crt);

 private:
  std::string crt_path_;
  PrivateKey key_;
  ParsedCertificate cert_;
  Bytes key_id_;
};

}  // namespace mqgate::pki
