// The tools' only source of randomness: mbedTLS CTR_DRBG seeded from the OS entropy.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include <string_view>

namespace mqgate::pki {

class Random {
 public:
  // Seeds the DRBG from the entropy source; `personalization` separates the tools' streams.
  explicit Random(std::string_view personalization);
  ~Random();
  Random(const Random&) = delete;
  Random& operator=(const Random&) = delete;

  // For mbedTLS calls that take (f_rng, p_rng).
  static int callback(void* self, unsigned char* out, size_t len);
  void* context() { return this; }

  void fill(unsigned char* out, size_t len);

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
};

}  // namespace mqgate::pki
