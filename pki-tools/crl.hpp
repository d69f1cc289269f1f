// Certificate revocation lists. mbedTLS 2.28 parses CRLs but cannot write them, so the
// CRL is encoded here with its ASN.1 writer and signed with mbedtls_pk_sign:
//
//   CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
//   TBSCertList ::= SEQUENCE {
//     version v2, signature, issuer, thisUpdate, nextUpdate,
//     revokedCertificates SEQUENCE OF SEQUENCE { serial, revocationDate, ... } OPTIONAL,
//     crlExtensions [0] EXPLICIT { authorityKeyIdentifier, cRLNumber } }
#pragma once

#include <mbedtls/x509_crl.h>

#include <ctime>
#include <string>
#include <vector>

#include "issuer.hpp"
#include "x509.hpp"

namespace mqgate::pki {

struct CrlEntry {
  Bytes serial;  // the serial's DER INTEGER content, as in the certificate
  Bytes der;     // the whole entry (SEQUENCE), kept as is when a CRL is updated
};

CrlEntry make_crl_entry(ByteView serial, std::time_t revocation_date);

// The revocation list of one CA: its entries and CRL number.
class RevocationList {
 public:
  RevocationList();
  ~RevocationList();
  RevocationList(const RevocationList&) = delete;
  RevocationList& operator=(const RevocationList&) = delete;

  // Reads an existing CRL (PEM or DER). It must have been issued and signed by `ca`.
  void load(const std::string& path, IssuingCa& ca);

  bool contains(ByteView serial) const;
  void add(CrlEntry entry) { entries_.push_back(std::move(entry)); }
  const std::vector<CrlEntry>& entries() const { return entries_; }

  // The CRL number of the loaded CRL (0 when new or when it had none).
  const mbedtls_mpi& number() const { return number_; }

  // A new CRL: the entries, CRL number = number() + 1, signed by `ca` with SHA-256.
  // Returns the DER, and the number it used in `new_number`.
  Bytes sign(IssuingCa& ca, std::time_t this_update, std::time_t next_update, Random& rng,
             mbedtls_mpi& new_number) const;

 private:
  std::vector<CrlEntry> entries_;
  mbedtls_mpi number_;
};

// An owned, parsed CRL.
class ParsedCrl {
 public:
  ParsedCrl() { mbedtls_x509_crl_init(&crl_); }
  ~ParsedCrl() { mbedtls_x509_crl_free(&crl_); }
  ParsedCrl(const ParsedCrl&) = delete;
  ParsedCrl& operator=(const ParsedCrl&) = delete;

  // `role` names the file in errors.
  void load(const std::string& path, const std::string& role);
  void parse_der(ByteView der);

  mbedtls_x509_crl& get() { return crl_; }
  mbedtls_x509_crl* operator->() { return &crl_; }

 private:
  mbedtls_x509_crl crl_;
};

// Reads the cRLNumber extension of a parsed CRL into `number`; false if it has none.
bool crl_number(const mbedtls_x509_crl& crl, mbedtls_mpi& number);

}  // namespace mqgate::pki
