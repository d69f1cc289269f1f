#include "crl.hpp"

#include <mbedtls/oid.h>

#include <cstring>

#include "error.hpp"
#include "output.hpp"

namespace mqgate::pki {

CrlEntry make_crl_entry(ByteView serial, std::time_t revocation_date) {
  DerWriter w(serial.size() + 64);
  size_t entry = w.mark();
  write_x509_time(w, revocation_date);
  w.tagged(MBEDTLS_ASN1_INTEGER, serial);
  w.close(entry, kSequence);
  return CrlEntry{Bytes(serial.begin(), serial.end()), w.bytes()};
}

RevocationList::RevocationList() {
  mbedtls_mpi_init(&number_);
}

RevocationList::~RevocationList() {
  mbedtls_mpi_free(&number_);
}

void ParsedCrl::load(const std::string& path, const std::string& role) {
  std::string text = read_file(path, role);
  int ret = mbedtls_x509_crl_parse(&crl_, reinterpret_cast<const unsigned char*>(text.c_str()),
                                   parse_length(text));
  if (ret != 0) {
    throw Error(role + " '" + path + "' is not a PEM or DER X.509 CRL (" + mbedtls_message(ret) +
                ")");
  }
  if (crl_.next != nullptr) throw Error(role + " '" + path + "' holds more than one CRL");
}

void ParsedCrl::parse_der(ByteView der) {
  check_mbedtls(mbedtls_x509_crl_parse_der(&crl_, der.data(), der.size()), "cannot parse the CRL");
}

bool crl_number(const mbedtls_x509_crl& crl, mbedtls_mpi& number) {
  auto value = find_extension(crl.crl_ext, MBEDTLS_OID_CRL_NUMBER);
  if (!value) return false;
  unsigned char* p = const_cast<unsigned char*>(value->data());
  return mbedtls_asn1_get_mpi(&p, value->data() + value->size(), &number) == 0;
}

void RevocationList::load(const std::string& path, IssuingCa& ca) {
  ParsedCrl crl;
  crl.load(path, "CRL");
  ByteView issuer(crl->issuer_raw.p, crl->issuer_raw.len);
  ByteView ca_subject = ca.subject_der();
  if (issuer.size() != ca_subject.size() ||
      std::memcmp(issuer.data(), ca_subject.data(), issuer.size()) != 0 ||
      !signature_matches(crl->tbs, crl->sig_md, crl->sig_pk, crl->sig_opts, crl->sig,
                         ca.cert().pk)) {
    throw Error("CRL '" + path + "' was not issued by CA certificate '" + ca.cert_path() + "'");
  }
  entries_.clear();
  for (const mbedtls_x509_crl_entry* e = &crl->entry; e != nullptr; e = e->next) {
    if (e->raw.p == nullptr || e->raw.len == 0) continue;  // a CRL without entries
    // mbedTLS keeps each entry's content; put its SEQUENCE header back.
    DerWriter w(e->raw.len + 16);
    w.tagged(kSequence, ByteView(e->raw.p, e->raw.len));
    entries_.push_back(CrlEntry{Bytes(e->serial.p, e->serial.p + e->serial.len), w.bytes()});
  }
  if (!crl_number(crl.get(), number_)) {
    check_mbedtls(mbedtls_mpi_lset(&number_, 0), "cannot set the CRL number");
  }
}

bool RevocationList::contains(ByteView serial) const {
  for (const CrlEntry& e : entries_) {
    if (e.serial.size() == serial.size() &&
        std::memcmp(e.serial.data(), serial.data(), serial.size()) == 0) {
      return true;
    }
  }
  return false;
}

Bytes RevocationList::sign(IssuingCa& ca, std::time_t this_update, std::time_t next_update,
                           Random& rng, mbedtls_mpi& new_number) const {
  check_mbedtls(mbedtls_mpi_add_int(&new_number, &number_, 1), "cannot compute the CRL number");

  size_t capacity = 4096 + ca.subject_der().size();
  for (const CrlEntry& e : entries_)
    capacity += e.der.size();
  DerWriter tbs(capacity);
  size_t tbs_mark = tbs.mark();

  // crlExtensions [0] EXPLICIT Extensions
  size_t exts_tag = tbs.mark();
  size_t exts = tbs.mark();
  {
    DerWriter number(64);
    number.integer(new_number);
    write_extension(tbs, oid_bytes(MBEDTLS_OID_CRL_NUMBER), false, number.view());
  }
  write_extension(tbs, oid_bytes(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), false,
                  authority_key_identifier_value(ca.key_id()));
  tbs.close(exts, kSequence);
  tbs.close(exts_tag, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0);

  // revokedCertificates: absent, not empty, when there are none (RFC 5280 5.1.2.6).
  if (!entries_.empty()) {
    size_t revoked = tbs.mark();
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
      tbs.raw(it->der);
    tbs.close(revoked, kSequence);
  }
  write_x509_time(tbs, next_update);
  write_x509_time(tbs, this_update);
  tbs.raw(ca.subject_der());
  write_signature_algorithm(tbs, *ca.key().get());
  tbs.integer(1);  // v2
  tbs.close(tbs_mark, kSequence);

  return sign_tbs(tbs.view(), *ca.key().get(), rng);
}

}  // namespace mqgate::pki
