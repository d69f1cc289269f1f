// pki_check: test-only. Loads certificates and CRLs with mbedTLS, the broker's TLS
// library, and reports what mbedTLS makes of them. Not installed.
//
//   pki_check crl <file>                       prints "revoked <serial>" per entry, and
//                                              "crl_number <n>" and "next_update <time>"
//   pki_check verify <ca> <cert> [<crl>]       verifies cert against ca (and the CRL);
//                                              prints "ok" or the failure flags
//   pki_check keypair <key> <cert>             "ok" if mbedTLS pairs the key with the cert
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "crl.hpp"
#include "error.hpp"
#include "keys.hpp"
#include "x509.hpp"

using namespace mqgate::pki;

namespace {

int crl_command(const char* path) {
  mbedtls_x509_crl crl;
  mbedtls_x509_crl_init(&crl);
  int ret = mbedtls_x509_crl_parse_file(&crl, path);
  if (ret != 0) {
    std::printf("parse error: %s\n", mbedtls_message(ret).c_str());
    mbedtls_x509_crl_free(&crl);
    return 1;
  }
  std::printf("version %d\n", crl.version);
  for (const mbedtls_x509_crl_entry* e = &crl.entry; e != nullptr; e = e->next) {
    if (e->raw.len == 0) continue;
    std::printf("revoked %s\n", serial_hex({e->serial.p, e->serial.len}).c_str());
  }
  Mpi number;
  if (crl_number(crl, *number.get())) {
    char text[64];
    size_t olen = 0;
    mbedtls_mpi_write_string(number.get(), 10, text, sizeof text, &olen);
    std::printf("crl_number %s\n", text);
  }
  std::printf("next_update %s\n", human_time(to_time_t(crl.next_update)).c_str());
  mbedtls_x509_crl_free(&crl);
  return 0;
}

int verify_command(const char* ca_path, const char* crt_path, const char* crl_path) {
  mbedtls_x509_crt ca, crt;
  mbedtls_x509_crl crl;
  mbedtls_x509_crt_init(&ca);
  mbedtls_x509_crt_init(&crt);
  mbedtls_x509_crl_init(&crl);
  int rc = 1;
  int ret = mbedtls_x509_crt_parse_file(&ca, ca_path);
  if (ret == 0) ret = mbedtls_x509_crt_parse_file(&crt, crt_path);
  if (ret == 0 && crl_path != nullptr) ret = mbedtls_x509_crl_parse_file(&crl, crl_path);
  if (ret != 0) {
    std::printf("parse error: %s\n", mbedtls_message(ret).c_str());
  } else {
    uint32_t flags = 0;
    ret = mbedtls_x509_crt_verify(&crt, &ca, crl_path ? &crl : nullptr, nullptr, &flags, nullptr,
                                  nullptr);
    if (ret == 0) {
      std::printf("ok\n");
      rc = 0;
    } else {
      char info[1024];
      mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
      std::printf("failed:\n%s", info);
    }
  }
  mbedtls_x509_crl_free(&crl);
  mbedtls_x509_crt_free(&crt);
  mbedtls_x509_crt_free(&ca);
  return rc;
}

int keypair_command(const char* key_path, const char* crt_path) {
  PrivateKey key;
  PrivateKey::load(key, key_path, "key");
  ParsedCertificate crt;
  crt.load(crt_path, "certificate");
  if (mbedtls_pk_check_pair(&crt->pk, key.get()) != 0) {
    std::printf("mismatch\n");
    return 1;
  }
  std::printf("ok %s\n", key.describe().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  set_program_name("pki_check");
  try {
    if (argc == 3 && std::strcmp(argv[1], "crl") == 0) return crl_command(argv[2]);
    if ((argc == 4 || argc == 5) && std::strcmp(argv[1], "verify") == 0) {
      return verify_command(argv[2], argv[3], argc == 5 ? argv[4] : nullptr);
    }
    if (argc == 4 && std::strcmp(argv[1], "keypair") == 0) return keypair_command(argv[2], argv[3]);
  } catch (const Error& e) {
    std::fprintf(stderr, "pki_check: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: pki_check crl FILE | verify CA CERT [CRL] | keypair KEY CERT\n");
  return 2;
}
