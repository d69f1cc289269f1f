#include "signer.hpp"

#include <mbedtls/oid.h>

#include <fstream>
#include <sstream>

#include "error.hpp"
#include "issuer.hpp"
#include "random.hpp"
#include "x509.hpp"

namespace mqgate::provision {

Signer::Signer(const std::string& key_path, const std::string& cert_path,
               const std::string& chain_path)
    : ca_(std::make_unique<pki::IssuingCa>(key_path, cert_path, pki::CaUse::kIssueCertificates)) {
  std::ifstream in(chain_path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN CERTIFICATE-----") == std::string::npos)
    throw pki::Error("'" + chain_path + "': cannot read a PEM certificate chain from it");
  chain_pem_ = text.str();
  if (!chain_pem_.empty() && chain_pem_.back() != '\n') chain_pem_ += '\n';
}

Signer::~Signer() = default;

Issued Signer::sign(const std::string& id, const std::string& domain, unsigned days,
                    mbedtls_pk_context& device_key) {
  thread_local pki::Random rng("mqgate provision");
  std::lock_guard<std::mutex> lock(mu_);
  const std::time_t not_before = std::time(nullptr);
  std::time_t not_after = not_before + static_cast<std::time_t>(days) * pki::kSecondsPerDay;
  if (not_after > ca_->not_after()) not_after = ca_->not_after();  // not beyond its issuer
  pki::Mpi serial;
  pki::random_serial(*serial.get(), rng);
  pki::DistinguishedName subject;
  subject.add_common_name(id);
  pki::CertificateWriter w;
  w.set_subject(subject);
  w.set_subject_key(&device_key);
  w.set_serial(*serial);
  w.set_validity(not_before, not_after);
  w.set_issuer(ca_->subject_der());
  w.set_issuer_key(ca_->key().get());
  // device_creds's profile (pki-tools/issue.cpp, Profile::kDevice), in its order.
  w.add_extension(MBEDTLS_OID_BASIC_CONSTRAINTS, true, pki::basic_constraints_value(false));
  w.add_extension(MBEDTLS_OID_KEY_USAGE, true,
                  pki::key_usage_value(MBEDTLS_X509_KU_DIGITAL_SIGNATURE));
  w.add_extension(MBEDTLS_OID_EXTENDED_KEY_USAGE, false,
                  pki::ext_key_usage_value({MBEDTLS_OID_CLIENT_AUTH}));
  w.add_extension(
      MBEDTLS_OID_SUBJECT_ALT_NAME, false,
      pki::subject_alt_name_value({pki::AltName::uri("spiffe://" + domain + "/device/" + id)}));
  w.add_extension(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER, false,
                  pki::subject_key_identifier_value(pki::key_identifier(device_key)));
  w.add_extension(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER, false,
                  pki::authority_key_identifier_value(ca_->key_id()));
  const pki::Bytes der = w.sign(rng);
  Issued out;
  out.chain_pem = pki::to_pem(der, "CERTIFICATE") + chain_pem_;
  out.serial = pki::serial_hex(*serial);
  out.not_after = not_after;
  return out;
}

}  // namespace mqgate::provision
