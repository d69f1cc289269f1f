#include "transport/tls/cert_policy.hpp"

#include "transport/tls/tls.hpp"

namespace mqgate {

CertStanding cert_standing(const TlsGeneration* crl, const std::string& issuer_raw,
                           const std::string& serial_raw, int64_t not_after, int64_t now) {
  // Revocation first: a revoked certificate is refused whatever its dates.
  if (crl != nullptr && !serial_raw.empty() && crl->is_revoked(issuer_raw, serial_raw))
    return CertStanding::kRevoked;
  if (not_after != 0 && not_after < now) return CertStanding::kExpired;
  return CertStanding::kValid;
}

}  // namespace mqgate
