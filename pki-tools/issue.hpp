// The common flow of ca_creds, server_creds and device_creds: check the CA, prepare the
// outputs, generate a key, build and sign the certificate, check it, write both files.
#pragma once

#include <string>
#include <vector>

#include "keys.hpp"
#include "names.hpp"
#include "x509.hpp"

namespace mqgate::pki {

// What the certificate is for; decides its extensions (docs/pki-tools.md lists them).
enum class Profile {
  kRootCa,     // self-signed; CA:TRUE; keyCertSign + cRLSign; SKI
  kIssuingCa,  // an intermediate: CA:TRUE, pathlen 0; keyCertSign + cRLSign; SKI; AKI
  kServer,     // CA:FALSE; digitalSignature (+ keyEncipherment for RSA); serverAuth; SAN; SKI; AKI
  kDevice,     // CA:FALSE; digitalSignature; clientAuth; SAN; SKI; AKI
};

// Validity bounds for --days.
inline constexpr unsigned kMaxDays = 36500;

struct CredentialRequest {
  Profile profile = Profile::kRootCa;
  DistinguishedName subject;
  std::vector<AltName> alt_names;
  KeySpec key;
  unsigned days = 365;
  std::string output_dir = ".";
  std::string base_name;  // writes <base_name>.key and <base_name>.crt
  // Also writes <base_name>-chain.crt: the new certificate followed by its CA's.
  bool write_chain = false;
  bool force = false;
  std::string ca_key_path;  // the signing CA, for every profile but kRootCa
  std::string ca_crt_path;
};

// Writes <output_dir>/<base_name>.key (mode 0600) and <base_name>.crt (mode 0644) (and
// the chain, if asked), all or none, and prints what it wrote. Throws Error on any failure.
void make_credentials(const CredentialRequest& request);

}  // namespace mqgate::pki
