// X.509 building blocks: times, serials, key identifiers, extension values, signing, a
// certificate writer, PEM, and reading extensions of parsed objects.
#pragma once

#include <mbedtls/bignum.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "der.hpp"
#include "names.hpp"
#include "random.hpp"

namespace mqgate::pki {

// --- time -------------------------------------------------------------------------------

inline constexpr long kSecondsPerDay = 86400;

// "2026-11-27 04:19:00 UTC" for messages.
std::string human_time(std::time_t t);
// Seconds since the epoch (plugins/common/x509_time.h); throws Error if `t` is not a date.
std::time_t to_time_t(const mbedtls_x509_time& t);
// A Time (UTCTime before 2050, GeneralizedTime from 2050 on), as RFC 5280 requires.
void write_x509_time(DerWriter& w, std::time_t t);

// --- serials ------------------------------------------------------------------------------

// A random positive serial of exactly 159 bits (20 bytes in DER, top bit clear, 158 bits
// from the DRBG): unpredictable and within RFC 5280's 20-octet limit.
void random_serial(mbedtls_mpi& serial, Random& rng);

// "4F:3A:..." like openssl shows serials: from DER INTEGER content, or from a number.
std::string serial_hex(ByteView serial);
std::string serial_hex(const mbedtls_mpi& serial);

// An owned mbedtls_mpi.
class Mpi {
 public:
  Mpi() { mbedtls_mpi_init(&v_); }
  ~Mpi() { mbedtls_mpi_free(&v_); }
  Mpi(const Mpi&) = delete;
  Mpi& operator=(const Mpi&) = delete;
  mbedtls_mpi* get() { return &v_; }
  const mbedtls_mpi& operator*() const { return v_; }

 private:
  mbedtls_mpi v_;
};

// --- extensions -----------------------------------------------------------------------

// The RFC 5280 method-1 key identifier: SHA-1 of the subjectPublicKey bits.
Bytes key_identifier(const mbedtls_pk_context& pk);

struct AltName {
  enum class Kind { kDns, kIp, kUri };
  Kind kind;
  std::string text;  // DNS name, URI, or the IP address in text form
  Bytes ip;          // kIp: 4 or 16 bytes

  static AltName dns(std::string name) { return {Kind::kDns, std::move(name), {}}; }
  static AltName uri(std::string uri) { return {Kind::kUri, std::move(uri), {}}; }
  static AltName ip_address(Bytes bytes);
  bool operator==(const AltName& o) const { return kind == o.kind && text == o.text; }
};

// The DER value (extnValue content) of each extension.
// pathlen < 0: no pathLenConstraint (only meaningful with is_ca).
Bytes basic_constraints_value(bool is_ca, int pathlen = -1);
Bytes key_usage_value(unsigned key_usage);  // MBEDTLS_X509_KU_* bits
Bytes ext_key_usage_value(const std::vector<std::string>& oids);
Bytes subject_alt_name_value(const std::vector<AltName>& names);
Bytes subject_key_identifier_value(ByteView key_id);
Bytes authority_key_identifier_value(ByteView key_id);

// Finds an extension in a DER `Extensions` SEQUENCE, as mbedTLS leaves it in
// mbedtls_x509_crt::v3_ext and mbedtls_x509_crl::crl_ext. Returns its extnValue.
std::optional<ByteView> find_extension(const mbedtls_x509_buf& extensions, std::string_view oid);

// The subjectKeyIdentifier of a certificate, if it has one.
std::optional<Bytes> subject_key_identifier(const mbedtls_x509_crt& crt);

// --- PEM -----------------------------------------------------------------------------

// Base64 with "-----BEGIN <label>-----" lines, e.g. label "CERTIFICATE" or "X509 CRL".
std::string to_pem(ByteView der, const std::string& label);

// --- signing -----------------------------------------------------------------------

// The AlgorithmIdentifier of a SHA-256 signature by `signer`: sha256WithRSAEncryption
// with NULL parameters, or ecdsa-with-SHA256 with the parameters absent (RFC 5758 3.2).
// mbedTLS 2.28's own writer adds a NULL to the ECDSA one, which strict verifiers such as
// rustls/webpki reject; hence the tools encode certificates themselves.
void write_signature_algorithm(DerWriter& w, const mbedtls_pk_context& signer);

// SEQUENCE { tbs, signatureAlgorithm, signatureValue }: `tbs` (a TBSCertificate or
// TBSCertList whose signature field came from write_signature_algorithm) signed by
// `signer` with SHA-256.
Bytes sign_tbs(ByteView tbs, mbedtls_pk_context& signer, Random& rng);

// --- certificates ------------------------------------------------------------------

// Encodes and signs an X.509 v3 certificate (RFC 5280 4.1) with mbedTLS's ASN.1 writer,
// mbedtls_pk_write_pubkey_der and mbedtls_pk_sign. Its setters follow mbedTLS's
// x509write_crt flow (programs/x509/cert_write.c).
class CertificateWriter {
 public:
  void set_subject(const DistinguishedName& name) { subject_ = name.der(); }
  // The issuer's Name exactly as encoded in its certificate, so chains link byte for byte.
  void set_issuer(ByteView issuer_der) { issuer_.assign(issuer_der.begin(), issuer_der.end()); }
  void set_subject_key(mbedtls_pk_context* key) { subject_key_ = key; }
  void set_issuer_key(mbedtls_pk_context* key) { issuer_key_ = key; }
  void set_serial(const mbedtls_mpi& serial);
  void set_validity(std::time_t not_before, std::time_t not_after);
  // Extensions appear in the order they are added.
  void add_extension(std::string_view oid, bool critical, ByteView value);

  // The signed certificate in DER.
  Bytes sign(Random& rng);

 private:
  struct Extension {
    std::string oid;
    bool critical;
    Bytes value;
  };
  Bytes serial_;  // DER INTEGER
  Bytes subject_, issuer_;
  mbedtls_pk_context* subject_key_ = nullptr;
  mbedtls_pk_context* issuer_key_ = nullptr;
  std::time_t not_before_ = 0, not_after_ = 0;
  std::vector<Extension> extensions_;
};

// An owned, parsed certificate chain.
class ParsedCertificate {
 public:
  ParsedCertificate() { mbedtls_x509_crt_init(&crt_); }
  ~ParsedCertificate() { mbedtls_x509_crt_free(&crt_); }
  ParsedCertificate(const ParsedCertificate&) = delete;
  ParsedCertificate& operator=(const ParsedCertificate&) = delete;

  // Loads the first certificate of a PEM or DER file. `role` names it in errors.
  void load(const std::string& path, const std::string& role);
  void parse_der(ByteView der);

  mbedtls_x509_crt& get() { return crt_; }
  const mbedtls_x509_crt& get() const { return crt_; }
  mbedtls_x509_crt* operator->() { return &crt_; }
  const mbedtls_x509_crt* operator->() const { return &crt_; }

 private:
  mbedtls_x509_crt crt_;
};

// Checks that `signer_pk` made the signature of a parsed certificate or CRL.
bool signature_matches(const mbedtls_x509_buf& tbs, mbedtls_md_type_t md, mbedtls_pk_type_t pk,
                       const void* sig_opts, const mbedtls_x509_buf& sig,
                       mbedtls_pk_context& signer_pk);

}  // namespace mqgate::pki
