#include "issuer.hpp"

#include <mbedtls/oid.h>

#include <cstring>

#include "error.hpp"

namespace mqgate::pki {

IssuingCa::IssuingCa(const std::string& key_path, const std::string& crt_path, CaUse use)
    : crt_path_(crt_path) {
  const std::string what = "CA certificate '" + crt_path + "'";
  PrivateKey::load(key_, key_path, "CA key");
  cert_.load(crt_path, "CA certificate");

  if (mbedtls_pk_check_pair(&cert_->pk, key_.get()) != 0) {
    throw Error("CA key '" + key_path + "' does not match " + what);
  }
  if (cert_->version < 3 || !(cert_->ext_types & MBEDTLS_X509_EXT_BASIC_CONSTRAINTS) ||
      !cert_->ca_istrue) {
    throw Error(what + " is not a CA certificate (no basicConstraints CA:TRUE)");
  }
  if (use == CaUse::kIssueCertificates &&
      mbedtls_x509_crt_check_key_usage(&cert_.get(), MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0) {
    throw Error(what + " may not sign certificates (its keyUsage lacks keyCertSign)");
  }
  if (use == CaUse::kSignCrls &&
      mbedtls_x509_crt_check_key_usage(&cert_.get(), MBEDTLS_X509_KU_CRL_SIGN) != 0) {
    throw Error(what + " may not sign CRLs (its keyUsage lacks cRLSign)");
  }
  std::time_t now = std::time(nullptr);
  if (to_time_t(cert_->valid_from) > now) {
    throw Error(what + " is not valid before " + human_time(to_time_t(cert_->valid_from)));
  }
  if (to_time_t(cert_->valid_to) <= now) {
    throw Error(what + " expired on " + human_time(to_time_t(cert_->valid_to)));
  }
  if (cert_->subject_raw.len <= 2) throw Error(what + " has an empty subject");
  key_id_ = subject_key_identifier(cert_.get()).value_or(key_identifier(cert_->pk));
}

bool IssuingCa::issued(const mbedtls_x509_crt& crt) {
  if (crt.issuer_raw.len != cert_->subject_raw.len ||
      std::memcmp(crt.issuer_raw.p, cert_->subject_raw.p, crt.issuer_raw.len) != 0) {
    return false;
  }
  return signature_matches(crt.tbs, crt.sig_md, crt.sig_pk, crt.sig_opts, crt.sig, cert_->pk);
}

}  // namespace mqgate::pki
