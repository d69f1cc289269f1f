#include "issue.hpp"

#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>

#include <cstdio>
#include <ctime>
#include <memory>

#include "error.hpp"
#include "issuer.hpp"
#include "output.hpp"

namespace mqgate::pki {

namespace {

// Extensions of each profile, in the order they appear in the certificate.
void add_profile_extensions(CertificateWriter& builder, const CredentialRequest& req,
                            PrivateKey& key, const IssuingCa* ca) {
  const bool is_ca = req.profile == Profile::kRootCa || req.profile == Profile::kIssuingCa;
  // An issuing CA signs end entities only: pathlen 0 keeps a stolen issuing key from
  // minting further CAs.
  const int pathlen = req.profile == Profile::kIssuingCa ? 0 : -1;
  builder.add_extension(MBEDTLS_OID_BASIC_CONSTRAINTS, true,
                        basic_constraints_value(is_ca, pathlen));

  unsigned key_usage = 0;
  std::vector<std::string> eku;
  switch (req.profile) {
    case Profile::kRootCa:
    case Profile::kIssuingCa:
      key_usage = MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN;
      break;
    case Profile::kServer:
      key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
      // RSA key exchange encrypts to the server key; RFC 5480 forbids the bit for EC keys.
      if (req.key.type == KeyType::kRsa) key_usage |= MBEDTLS_X509_KU_KEY_ENCIPHERMENT;
      eku.push_back(MBEDTLS_OID_SERVER_AUTH);
      break;
    case Profile::kDevice:
      key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
      eku.push_back(MBEDTLS_OID_CLIENT_AUTH);
      break;
  }
  builder.add_extension(MBEDTLS_OID_KEY_USAGE, true, key_usage_value(key_usage));
  if (!eku.empty()) {
    builder.add_extension(MBEDTLS_OID_EXTENDED_KEY_USAGE, false, ext_key_usage_value(eku));
  }
  if (!req.alt_names.empty()) {
    builder.add_extension(MBEDTLS_OID_SUBJECT_ALT_NAME, false,
                          subject_alt_name_value(req.alt_names));
  }
  builder.add_extension(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER, false,
                        subject_key_identifier_value(key_identifier(*key.get())));
  if (ca != nullptr) {
    builder.add_extension(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER, false,
                          authority_key_identifier_value(ca->key_id()));
  }
}

// The new certificate must parse, hold the new key, and verify against its issuer: a
// last check that what is about to be written is what was meant.
void check_new_certificate(ByteView der, PrivateKey& key, IssuingCa* ca) {
  ParsedCertificate crt;
  crt.parse_der(der);
  bool ok = mbedtls_pk_check_pair(&crt->pk, key.get()) == 0;
  if (ca != nullptr) {
    ok = ok && ca->issued(crt.get());
  } else {
    ok = ok &&
         signature_matches(crt->tbs, crt->sig_md, crt->sig_pk, crt->sig_opts, crt->sig, crt->pk);
  }
  if (!ok) throw Error("internal error: the new certificate does not verify");
}

}  // namespace

void make_credentials(const CredentialRequest& req) {
  // 1. The CA, checked before anything is created.
  std::unique_ptr<IssuingCa> ca;
  if (req.profile != Profile::kRootCa) {
    ca = std::make_unique<IssuingCa>(req.ca_key_path, req.ca_crt_path, CaUse::kIssueCertificates);
    // mbedTLS keeps pathLenConstraint + 1 (0: none): 1 means the CA may sign end entities only.
    if (req.profile == Profile::kIssuingCa && ca->cert().max_pathlen == 1) {
      throw Error("CA certificate '" + ca->cert_path() +
                  "' has pathlen 0: it may sign end-entity certificates only, not another CA");
    }
  }

  // 2. Validity, capped at the CA's own notAfter.
  const std::time_t not_before = std::time(nullptr);
  std::time_t not_after = not_before + static_cast<std::time_t>(req.days) * kSecondsPerDay;
  if (ca && not_after > ca->not_after()) {
    // Routine right after ca_creds (both default to 365 days): only a real cut is news.
    if (not_after - ca->not_after() > kSecondsPerDay) {
      warn("--days " + std::to_string(req.days) + " would outlive the CA certificate '" +
           ca->cert_path() + "'; the certificate expires with it, on " +
           human_time(ca->not_after()));
    }
    not_after = ca->not_after();
  }

  // 3. The outputs: refused if present (unless --force), temporary files created now so
  //    that an unwritable directory fails before the slow key generation.
  OutputSet out(req.force);
  out.create_directory(req.output_dir);
  const size_t key_file = out.add(join_path(req.output_dir, req.base_name + ".key"), 0600);
  const size_t crt_file = out.add(join_path(req.output_dir, req.base_name + ".crt"), 0644);
  size_t chain_file = 0;
  if (req.write_chain) {
    chain_file = out.add(join_path(req.output_dir, req.base_name + "-chain.crt"), 0644);
  }

  // 4. Key and certificate.
  Random rng("mqgate " + program_name());
  PrivateKey key;
  PrivateKey::generate(key, req.key, rng);

  Mpi serial;
  random_serial(*serial.get(), rng);

  CertificateWriter builder;
  builder.set_subject(req.subject);
  builder.set_subject_key(key.get());
  builder.set_serial(*serial);
  builder.set_validity(not_before, not_after);
  if (ca) {
    builder.set_issuer(ca->subject_der());
    builder.set_issuer_key(ca->key().get());
  } else {
    const Bytes self = req.subject.der();
    builder.set_issuer(self);
    builder.set_issuer_key(key.get());
  }
  add_profile_extensions(builder, req, key, ca.get());
  const Bytes der = builder.sign(rng);
  check_new_certificate(der, key, ca.get());

  // 5. Write both, then rename both into place.
  std::string key_pem = key.to_pem();
  out.write(key_file, key_pem);
  mbedtls_platform_zeroize(key_pem.data(), key_pem.size());
  const std::string crt_pem = to_pem(der, "CERTIFICATE");
  out.write(crt_file, crt_pem);
  if (req.write_chain) {
    const mbedtls_x509_crt& ca_crt = ca->cert();
    out.write(chain_file, crt_pem + to_pem({ca_crt.raw.p, ca_crt.raw.len}, "CERTIFICATE"));
  }
  out.commit();

  std::printf("wrote %s (%s private key, mode 0600)\n", out.path(key_file).c_str(),
              key.describe().c_str());
  std::printf("wrote %s (%s; serial %s; valid until %s)\n", out.path(crt_file).c_str(),
              req.subject.to_string().c_str(), serial_hex(*serial).c_str(),
              human_time(not_after).c_str());
  if (req.write_chain) {
    std::printf("wrote %s (%s, then its CA certificate)\n", out.path(chain_file).c_str(),
                out.path(crt_file).c_str());
  }
}

}  // namespace mqgate::pki
