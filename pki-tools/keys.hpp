// Private keys: generation (RSA or EC P-256), loading, and PEM output.
#pragma once

#include <mbedtls/pk.h>

#include <string>

#include "random.hpp"

namespace mqgate::pki {

enum class KeyType { kRsa, kEc };

struct KeySpec {
  KeyType type = KeyType::kRsa;
  unsigned rsa_bits = 2048;  // only for kRsa
};

// RSA sizes --key-bits accepts. mbedTLS's key generation time grows steeply with size.
inline constexpr unsigned kRsaBitsAllowed[] = {2048, 3072, 4096};

// An owned mbedtls_pk_context holding a private key.
class PrivateKey {
 public:
  PrivateKey();
  ~PrivateKey();
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;

  // A new key: RSA with e = 65537, or ECDSA on secp256r1 (P-256).
  static void generate(PrivateKey& key, const KeySpec& spec, Random& rng);

  // Loads an unencrypted key in PEM or DER: PKCS#1, SEC1 or PKCS#8. `role` names the
  // file in errors, e.g. "CA key".
  static void load(PrivateKey& key, const std::string& path, const std::string& role);

  // PEM as mbedTLS writes it: "RSA PRIVATE KEY" (PKCS#1) or "EC PRIVATE KEY" (SEC1).
  std::string to_pem();

  // "RSA 2048" or "EC secp256r1".
  std::string describe() const;

  mbedtls_pk_context* get() { return &pk_; }

 private:
  mbedtls_pk_context pk_;
};

}  // namespace mqgate::pki
