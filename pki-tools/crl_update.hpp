// Revoking serials in a CA's CRL file: load it (or start an empty one), add the serials not
// listed yet, sign it anew, check that it parses and verifies, and replace the file
// atomically under a directory lock. Shared by revoke_creds and the broker's console.
#pragma once

#include <ctime>
#include <string>
#include <vector>

#include "der.hpp"
#include "issuer.hpp"

namespace mqgate::pki {

struct CrlUpdate {
  std::vector<std::string> revoked;  // serials added now ("4F:3A:..." as openssl shows them)
  std::vector<std::string> already;  // serials that were listed before
  bool existed = false;              // the CRL file was there
  bool written = false;              // false: nothing new and no refresh asked; unchanged
  size_t entries = 0;                // serials listed in the CRL now
  std::string number;                // the new CRL number, in decimal ("" if not written)
  std::time_t next_update = 0;       // of the new CRL (0 if not written)
};

// Adds `serials` (DER INTEGER contents) to the CRL at `crl_path`, signed by `ca`, with
// nextUpdate `days` from now. With nothing new to add it writes only if `refresh`.
// Throws Error (naming the file) on any problem; the file is then unchanged.
CrlUpdate update_crl(IssuingCa& ca, const std::string& crl_path, const std::vector<Bytes>& serials,
                     unsigned days, bool refresh, const char* personalization);

}  // namespace mqgate::pki
