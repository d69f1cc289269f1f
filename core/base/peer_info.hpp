// What a transport layer's handshake proved about the peer (TLS today), handed to the
// client and from there to the plugins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mqgate {

// What a TLS transport learned from the handshake; empty for plain connections.
struct TlsPeerInfo {
  struct CertView {  // layout of the plugin ABI's mqgate_cert
    const uint8_t* der;
    size_t der_len;
  };
  std::vector<std::string> chain_der;  // verified peer chain, leaf first (DER)
  std::vector<CertView> chain;         // views of chain_der
  std::string issuer_raw;              // leaf's issuer DN (DER), for CRL lookups
  std::string serial_raw;              // leaf's serial number (DER content)
  int64_t not_after = 0;               // leaf's notAfter, seconds since the epoch
  std::string version;                 // e.g. "TLSv1.2"
  std::string cipher;                  // IANA/mbedTLS suite name
};

}  // namespace mqgate
