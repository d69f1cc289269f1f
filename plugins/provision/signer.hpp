// The issuing CA of the provision plugin: signs device certificates exactly as
// device_creds makes them (CN=<id>, SAN URI spiffe://<domain>/device/<id>, clientAuth,
// CA:FALSE, SKI/AKI, a random serial), for a key the device proved it holds.
#pragma once

#include <mbedtls/pk.h>

#include <ctime>
#include <memory>
#include <mutex>
#include <string>

namespace mqgate::pki {
class IssuingCa;
}

namespace mqgate::provision {

struct Issued {
  std::string chain_pem;  // the leaf, then the issuing CA (and what its file holds after it)
  std::string serial;     // "4F:3A:..."
  std::time_t not_after = 0;
};

class Signer {
 public:
  // Loads and checks the CA (pki::IssuingCa); `chain_path`: the PEM appended to each
  // leaf (the CA certificate file, or its chain file). Throws pki::Error naming a file.
  Signer(const std::string& key_path, const std::string& cert_path, const std::string& chain_path);
  ~Signer();
  // Thread-safe (one signature at a time: the CA key's context is not). Throws pki::Error.
  Issued sign(const std::string& device_id, const std::string& uri_domain, unsigned days,
              mbedtls_pk_context& device_key);

 private:
  std::mutex mu_;
  std::unique_ptr<pki::IssuingCa> ca_;
  std::string chain_pem_;
};

}  // namespace mqgate::provision
