#include "x509_builder.hpp"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include <stdexcept>

namespace mqgate::test::x509 {

namespace {

void check(bool ok) {
  if (!ok) throw std::runtime_error("x509_builder: an mbedTLS call failed");
}

// One EC P-256 key for the whole run; every certificate is "signed" with it.

class CertMaker {
 public:
  static CertMaker& get() {
    static CertMaker maker;
    return maker;
  }

  // A v3 certificate with the given subjectAltName extension value (none if empty).
  // `version` 1 makes a v1 certificate, which has no extensions at all.
  std::string make(const std::string& san_value, const std::string& cn = "device",
                   int version = 3) {
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    mbedtls_x509write_crt_set_version(
        &w, version == 1 ? MBEDTLS_X509_CRT_VERSION_1 : MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &key_);
    mbedtls_x509write_crt_set_issuer_key(&w, &key_);
    check(mbedtls_x509write_crt_set_subject_name(&w, ("C=US,O=mqgate tests,CN=" + cn).c_str()) ==
          0);
    check(mbedtls_x509write_crt_set_issuer_name(&w, "C=US,O=mqgate tests,CN=certauth test CA") ==
          0);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    check(mbedtls_mpi_lset(&serial, ++serial_) == 0);
    check(mbedtls_x509write_crt_set_serial(&w, &serial) == 0);
    mbedtls_mpi_free(&serial);
    check(mbedtls_x509write_crt_set_validity(&w, "20250101000000", "20450101000000") == 0);
    check(mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1) == 0);
    if (!san_value.empty()) {
      check(mbedtls_x509write_crt_set_extension(
                &w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                reinterpret_cast<const unsigned char*>(san_value.data()), san_value.size()) == 0);
    }
    std::vector<unsigned char> buf(4096 + 2 * san_value.size());
    const int n =
        mbedtls_x509write_crt_der(&w, buf.data(), buf.size(), mbedtls_ctr_drbg_random, &drbg_);
    mbedtls_x509write_crt_free(&w);
    check(n > 0);
    return std::string(reinterpret_cast<const char*>(buf.data() + buf.size() - n),
                       static_cast<size_t>(n));
  }

 private:
  CertMaker() {
    mbedtls_pk_init(&key_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    const char pers[] = "x509_builder";
    check(mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                reinterpret_cast<const unsigned char*>(pers),
                                sizeof pers - 1) == 0);
    check(mbedtls_pk_setup(&key_, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0);
    check(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key_),
                              mbedtls_ctr_drbg_random, &drbg_) == 0);
  }
  ~CertMaker() {
    mbedtls_pk_free(&key_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  mbedtls_pk_context key_;
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  int serial_ = 0;
};

}  // namespace

std::string der_length(size_t n) {
  if (n < 0x80) return std::string(1, static_cast<char>(n));
  std::string bytes;
  while (n > 0) {
    bytes.insert(bytes.begin(), static_cast<char>(n & 0xff));
    n >>= 8;
  }
  return std::string(1, static_cast<char>(0x80 | bytes.size())) + bytes;
}

// Appends to one string rather than concatenating temporaries: with
// operator+(string&&, string&&) inlined at -O3, GCC 12 warns -Wrestrict about the
// memcpy in basic_string::_M_replace, a false positive (the strings are distinct).
std::string tlv(uint8_t tag, std::string_view value) {
  std::string out(1, static_cast<char>(tag));
  out += der_length(value.size());
  out += value;
  return out;
}

std::string uri(std::string_view s) {
  return tlv(0x86, s);
}  // [6] uniformResourceIdentifier
std::string dns(std::string_view s) {
  return tlv(0x82, s);
}  // [2] dNSName
std::string email(std::string_view s) {
  return tlv(0x81, s);
}  // [1] rfc822Name
std::string ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {  // [7] iPAddress
  const char raw[4] = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                       static_cast<char>(d)};
  return tlv(0x87, std::string_view(raw, 4));
}

// GeneralNames ::= SEQUENCE OF GeneralName
std::string san(const std::vector<std::string>& names) {
  std::string all;
  for (const auto& n : names)
    all += n;
  return tlv(0x30, all);
}

std::string make_cert(const std::string& san_value, const std::string& cn, int version) {
  return CertMaker::get().make(san_value, cn, version);
}

std::string cert_with_san(const std::vector<std::string>& names, const std::string& cn) {
  return make_cert(san(names), cn);
}

}  // namespace mqgate::test::x509
