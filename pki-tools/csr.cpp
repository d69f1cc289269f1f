#include "csr.hpp"

#include <mbedtls/oid.h>
#include <mbedtls/x509_csr.h>

#include "error.hpp"

namespace mqgate::pki {

namespace {

// An owned mbedtls_x509write_csr.
class CsrWriter {
 public:
  CsrWriter() { mbedtls_x509write_csr_init(&csr_); }
  ~CsrWriter() { mbedtls_x509write_csr_free(&csr_); }
  CsrWriter(const CsrWriter&) = delete;
  CsrWriter& operator=(const CsrWriter&) = delete;
  mbedtls_x509write_csr* get() { return &csr_; }

 private:
  mbedtls_x509write_csr csr_;
};

}  // namespace

std::string make_csr_pem(PrivateKey& key, const std::string& common_name,
                         const std::vector<AltName>& alt_names, Random& rng) {
  CsrWriter csr;
  mbedtls_x509write_csr_set_md_alg(csr.get(), MBEDTLS_MD_SHA256);
  mbedtls_x509write_csr_set_key(csr.get(), key.get());
  check_mbedtls(mbedtls_x509write_csr_set_subject_name(csr.get(), ("CN=" + common_name).c_str()),
                "cannot set the request's subject");
  if (!alt_names.empty()) {
    const Bytes san = subject_alt_name_value(alt_names);
    check_mbedtls(mbedtls_x509write_csr_set_extension(
                      csr.get(), MBEDTLS_OID_SUBJECT_ALT_NAME,
                      MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), san.data(), san.size()),
                  "cannot add the request's subjectAltName");
  }
  std::string pem(4096 + 2 * MBEDTLS_MPI_MAX_SIZE, '\0');
  check_mbedtls(mbedtls_x509write_csr_pem(csr.get(), reinterpret_cast<unsigned char*>(pem.data()),
                                          pem.size(), Random::callback, rng.context()),
                "cannot write the certificate request");
  pem.resize(pem.find('\0'));
  return pem;
}

}  // namespace mqgate::pki
