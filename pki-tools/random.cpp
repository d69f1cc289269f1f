#include "random.hpp"

#include "error.hpp"

namespace mqgate::pki {

Random::Random(std::string_view personalization) {
  mbedtls_entropy_init(&entropy_);
  mbedtls_ctr_drbg_init(&drbg_);
  int ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                  reinterpret_cast<const unsigned char*>(personalization.data()),
                                  personalization.size());
  if (ret != 0) {
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
    check_mbedtls(ret, "cannot seed the random generator");
  }
}

Random::~Random() {
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

int Random::callback(void* self, unsigned char* out, size_t len) {
  return mbedtls_ctr_drbg_random(&static_cast<Random*>(self)->drbg_, out, len);
}

void Random::fill(unsigned char* out, size_t len) {
  // CTR_DRBG hands out at most MBEDTLS_CTR_DRBG_MAX_REQUEST bytes per call.
  while (len > 0) {
    size_t n = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;
    check_mbedtls(mbedtls_ctr_drbg_random(&drbg_, out, n), "random generator failed");
    out += n;
    len -= n;
  }
}

}  // namespace mqgate::pki
