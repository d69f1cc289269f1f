// Whether a client certificate may still be used. One place decides it, for every moment
// it is asked: the end of a handshake (full or resumed: a resumed session skips
// verification), a CRL reload (disconnect_revoked) and the once-a-second sweep
// (disconnect_expired).
#pragma once

#include <cstdint>
#include <string>

namespace mqgate {

class TlsGeneration;

enum class CertStanding : uint8_t { kValid, kExpired, kRevoked };

// `crl` is the generation whose CRL is in force (nullptr: none); `not_after` is the
// certificate's notAfter in seconds since the epoch (0: unknown, not checked).
CertStanding cert_standing(const TlsGeneration* crl, const std::string& issuer_raw,
                           const std::string& serial_raw, int64_t not_after, int64_t now);

}  // namespace mqgate
