#include "keys.hpp"

#include <mbedtls/ecp.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>

#include <vector>

#include "error.hpp"
#include "output.hpp"

namespace mqgate::pki {

PrivateKey::PrivateKey() {
  mbedtls_pk_init(&pk_);
}

PrivateKey::~PrivateKey() {
  mbedtls_pk_free(&pk_);
}

void PrivateKey::generate(PrivateKey& key, const KeySpec& spec, Random& rng) {
  if (spec.type == KeyType::kRsa) {
    check_mbedtls(mbedtls_pk_setup(&key.pk_, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)),
                  "cannot set up an RSA key");
    check_mbedtls(mbedtls_rsa_gen_key(mbedtls_pk_rsa(key.pk_), Random::callback, rng.context(),
                                      spec.rsa_bits, 65537),
                  "RSA key generation failed");
  } else {
    check_mbedtls(mbedtls_pk_setup(&key.pk_, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)),
                  "cannot set up an EC key");
    check_mbedtls(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key.pk_),
                                      Random::callback, rng.context()),
                  "EC key generation failed");
  }
}

void PrivateKey::load(PrivateKey& key, const std::string& path, const std::string& role) {
  std::string text = read_file(path, role);
  const bool looks_like_cert = text.find("-----BEGIN CERTIFICATE-----") != std::string::npos;
  int ret = mbedtls_pk_parse_key(&key.pk_, reinterpret_cast<const unsigned char*>(text.c_str()),
                                 parse_length(text), nullptr, 0);
  mbedtls_platform_zeroize(text.data(), text.size());
  if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || ret == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
    throw Error(role + " '" + path + "' is encrypted; the tools need an unencrypted key");
  }
  if (ret != 0 && looks_like_cert) {
    throw Error(role + " '" + path + "' holds a certificate, not a private key");
  }
  if (ret != 0) {
    throw Error(role + " '" + path + "' is not a PEM or DER private key (" + mbedtls_message(ret) +
                ")");
  }
  mbedtls_pk_type_t type = mbedtls_pk_get_type(&key.pk_);
  if (type != MBEDTLS_PK_RSA && type != MBEDTLS_PK_ECKEY && type != MBEDTLS_PK_ECDSA) {
    throw Error(role + " '" + path + "' is a " + mbedtls_pk_get_name(&key.pk_) +
                " key; only RSA and EC keys are supported");
  }
}

std::string PrivateKey::to_pem() {
  // Large enough for an 8192-bit RSA key in PKCS#1 PEM.
  std::vector<unsigned char> buf(16000);
  int ret = mbedtls_pk_write_key_pem(&pk_, buf.data(), buf.size());
  if (ret != 0) {
    mbedtls_platform_zeroize(buf.data(), buf.size());
    check_mbedtls(ret, "cannot write the private key as PEM");
  }
  std::string pem(reinterpret_cast<const char*>(buf.data()));
  mbedtls_platform_zeroize(buf.data(), buf.size());
  return pem;
}

std::string PrivateKey::describe() const {
  if (mbedtls_pk_can_do(&pk_, MBEDTLS_PK_RSA)) {
    return "RSA " + std::to_string(mbedtls_pk_get_bitlen(&pk_));
  }
  if (mbedtls_pk_can_do(&pk_, MBEDTLS_PK_ECKEY)) {
    const mbedtls_ecp_curve_info* info =
        mbedtls_ecp_curve_info_from_grp_id(mbedtls_pk_ec(pk_)->grp.id);
    return std::string("EC ") + (info ? info->name : "unknown curve");
  }
  return mbedtls_pk_get_name(&pk_);
}

}  // namespace mqgate::pki
