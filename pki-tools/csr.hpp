// PKCS#10 certificate signing requests: what a device sends to be issued a certificate
// for a key only it holds (docs/provisioning.md).
#pragma once

#include <string>
#include <vector>

#include "keys.hpp"
#include "random.hpp"
#include "x509.hpp"

namespace mqgate::pki {

// A CSR in PEM ("BEGIN CERTIFICATE REQUEST") signed with SHA-256 by `key`, subject
// CN=<common_name> (letters, digits, '.', '_', '-' only: it goes through mbedTLS's
// name-string parser), and the alt names, if any, in a requested subjectAltName.
std::string make_csr_pem(PrivateKey& key, const std::string& common_name,
                         const std::vector<AltName>& alt_names, Random& rng);

}  // namespace mqgate::pki
