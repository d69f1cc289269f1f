// The client certificate a persistent session's client last connected with, kept with the
// session (and in the store) so that the console can show it and revoke it while the
// session is offline, across restarts too. Immutable once made; shared by reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/peer_info.hpp"

namespace mqgate {

struct SessionCertificate {
  // The chain kept: a longer one keeps its leaf only, and a leaf longer than this is
  // not kept (certificates are 1-2 KiB; the bound is for memory and the store).
  static constexpr size_t kMaxChainBytes = 16 * 1024;

  std::string listener;    // the listener the client connected to (its CRL revokes)
  std::string chain;       // DER certificates, leaf first, concatenated
  std::string issuer_raw;  // the leaf's issuer DN (DER) and serial: what a CRL lists
  std::string serial_raw;
  int64_t not_after = 0;  // the leaf's, seconds since the epoch

  // From a completed handshake; null without a client certificate (or too big a leaf).
  static std::shared_ptr<const SessionCertificate> of(std::string listener, const TlsPeerInfo& tls);
  // From the store: the leaf is parsed for its issuer, serial and notAfter; null if the
  // chain is empty, too big or does not parse (a damaged row shows no certificate).
  static std::shared_ptr<const SessionCertificate> restore(std::string listener, std::string chain);
  // The chain's certificates (views into `chain`), leaf first.
  std::vector<std::string_view> certificates() const;
};

}  // namespace mqgate
