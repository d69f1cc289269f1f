#include "x509.hpp"

#include <mbedtls/asn1write.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>

#include <cstdio>
#include <cstring>

#include "../plugins/common/x509_time.h"
#include "error.hpp"
#include "output.hpp"

namespace mqgate::pki {

// --- time -------------------------------------------------------------------------------

namespace {

// "YYYYMMDDhhmmss" in UTC.
std::string x509_time_string(std::time_t t) {
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

}  // namespace

std::string human_time(std::time_t t) {
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[40];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::time_t to_time_t(const mbedtls_x509_time& t) {
  int64_t seconds = 0;
  if (mqgate_x509_time_to_epoch(&t, &seconds) != 0) {
    char buf[80];
    snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d", t.year, t.mon, t.day, t.hour, t.min,
             t.sec);
    throw Error(std::string("a certificate time is not a date: ") + buf);
  }
  return static_cast<std::time_t>(seconds);
}

void write_x509_time(DerWriter& w, std::time_t t) {
  std::string s = x509_time_string(t);  // YYYYMMDDhhmmss
  int year = std::stoi(s.substr(0, 4));
  unsigned char tag = MBEDTLS_ASN1_GENERALIZED_TIME;
  if (year < 2050) {
    s = s.substr(2);
    tag = MBEDTLS_ASN1_UTC_TIME;
  }
  s += "Z";
  w.tagged(tag, ByteView(reinterpret_cast<const unsigned char*>(s.data()), s.size()));
}

// --- serials ------------------------------------------------------------------------------

void random_serial(mbedtls_mpi& serial, Random& rng) {
  unsigned char bytes[20];
  rng.fill(bytes, sizeof bytes);
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7f) | 0x40);
  check_mbedtls(mbedtls_mpi_read_binary(&serial, bytes, sizeof bytes), "cannot set the serial");
}

std::string serial_hex(ByteView serial) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  size_t i = 0;
  // Leading zero bytes only keep the DER integer positive; openssl does not show them.
  while (i + 1 < serial.size() && serial[i] == 0)
    ++i;
  for (; i < serial.size(); ++i) {
    if (!out.empty()) out += ':';
    out += hex[serial[i] >> 4];
    out += hex[serial[i] & 15];
  }
  return out;
}

std::string serial_hex(const mbedtls_mpi& serial) {
  Bytes bytes(mbedtls_mpi_size(&serial));
  check_mbedtls(mbedtls_mpi_write_binary(&serial, bytes.data(), bytes.size()),
                "cannot write the serial");
  return serial_hex(bytes);
}

// --- extensions -----------------------------------------------------------------------

Bytes key_identifier(const mbedtls_pk_context& pk) {
  std::vector<unsigned char> buf(MBEDTLS_MPI_MAX_SIZE * 2 + 64);
  unsigned char* p = buf.data() + buf.size();
  int len = mbedtls_pk_write_pubkey(&p, buf.data(), &pk);
  check_mbedtls(len, "cannot encode the public key");
  Bytes id(20);
  check_mbedtls(mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), p, static_cast<size_t>(len),
                           id.data()),
                "cannot hash the public key");
  return id;
}

AltName AltName::ip_address(Bytes bytes) {
  AltName n{Kind::kIp, format_ip_address(bytes), {}};
  n.ip = std::move(bytes);
  return n;
}

Bytes basic_constraints_value(bool is_ca, int pathlen) {
  DerWriter w(16);
  size_t seq = w.mark();
  // The writer works backwards: pathLenConstraint first, then cA.
  if (is_ca && pathlen >= 0) w.integer(pathlen);
  if (is_ca) w.boolean(true);  // cA DEFAULT FALSE: absent for an end entity
  w.close(seq, kSequence);
  return w.bytes();
}

Bytes key_usage_value(unsigned key_usage) {
  unsigned char bits[2] = {static_cast<unsigned char>(key_usage & 0xff),
                           static_cast<unsigned char>(key_usage >> 8)};
  Bytes buf(16);
  unsigned char* p = buf.data() + buf.size();
  // A named bit string: trailing zero bits are dropped, as DER requires.
  check_mbedtls(mbedtls_asn1_write_named_bitstring(&p, buf.data(), bits, 9),
                "cannot encode keyUsage");
  return Bytes(p, buf.data() + buf.size());
}

Bytes ext_key_usage_value(const std::vector<std::string>& oids) {
  DerWriter w(64 + 16 * oids.size());
  size_t seq = w.mark();
  for (auto it = oids.rbegin(); it != oids.rend(); ++it)
    w.oid(oid_bytes(*it));
  w.close(seq, kSequence);
  return w.bytes();
}

Bytes subject_alt_name_value(const std::vector<AltName>& names) {
  size_t capacity = 16;
  for (const AltName& n : names)
    capacity += n.text.size() + n.ip.size() + 8;
  DerWriter w(capacity);
  size_t seq = w.mark();
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    const AltName& n = *it;
    auto text = ByteView(reinterpret_cast<const unsigned char*>(n.text.data()), n.text.size());
    switch (n.kind) {
      case AltName::Kind::kDns:  // dNSName [2] IMPLICIT IA5String
        w.tagged(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, text);
        break;
      case AltName::Kind::kUri:  // uniformResourceIdentifier [6] IMPLICIT IA5String
        w.tagged(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6, text);
        break;
      case AltName::Kind::kIp:  // iPAddress [7] IMPLICIT OCTET STRING
        w.tagged(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, n.ip);
        break;
    }
  }
  w.close(seq, kSequence);
  return w.bytes();
}

Bytes subject_key_identifier_value(ByteView key_id) {
  DerWriter w(key_id.size() + 8);
  w.octet_string(key_id);
  return w.bytes();
}

Bytes authority_key_identifier_value(ByteView key_id) {
  DerWriter w(key_id.size() + 8);
  size_t seq = w.mark();
  w.tagged(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0, key_id);  // keyIdentifier [0] IMPLICIT
  w.close(seq, kSequence);
  return w.bytes();
}

std::optional<ByteView> find_extension(const mbedtls_x509_buf& extensions, std::string_view oid) {
  if (extensions.p == nullptr || extensions.len == 0) return std::nullopt;
  unsigned char* p = extensions.p;
  const unsigned char* end = extensions.p + extensions.len;
  size_t len = 0;
  if (mbedtls_asn1_get_tag(&p, end, &len, kSequence) != 0) return std::nullopt;
  end = p + len;
  while (p < end) {
    if (mbedtls_asn1_get_tag(&p, end, &len, kSequence) != 0) return std::nullopt;
    const unsigned char* ext_end = p + len;
    size_t oid_len = 0;
    if (mbedtls_asn1_get_tag(&p, ext_end, &oid_len, MBEDTLS_ASN1_OID) != 0) return std::nullopt;
    bool match = oid_len == oid.size() && std::memcmp(p, oid.data(), oid_len) == 0;
    p += oid_len;
    int critical = 0;
    int ret = mbedtls_asn1_get_bool(&p, ext_end, &critical);
    if (ret != 0 && ret != MBEDTLS_ERR_ASN1_UNEXPECTED_TAG) return std::nullopt;
    size_t value_len = 0;
    if (mbedtls_asn1_get_tag(&p, ext_end, &value_len, MBEDTLS_ASN1_OCTET_STRING) != 0) {
      return std::nullopt;
    }
    if (match) return ByteView(p, value_len);
    p = const_cast<unsigned char*>(ext_end);
  }
  return std::nullopt;
}

std::optional<Bytes> subject_key_identifier(const mbedtls_x509_crt& crt) {
  auto value = find_extension(crt.v3_ext, MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER);
  if (!value) return std::nullopt;
  unsigned char* p = const_cast<unsigned char*>(value->data());
  size_t len = 0;
  if (mbedtls_asn1_get_tag(&p, value->data() + value->size(), &len, MBEDTLS_ASN1_OCTET_STRING) !=
          0 ||
      len == 0) {
    return std::nullopt;
  }
  return Bytes(p, p + len);
}

// --- PEM -----------------------------------------------------------------------------

std::string to_pem(ByteView der, const std::string& label) {
  std::string header = "-----BEGIN " + label + "-----\n";
  std::string footer = "-----END " + label + "-----\n";
  Bytes buf(der.size() * 2 + header.size() + footer.size() + 64);
  size_t olen = 0;
  check_mbedtls(mbedtls_pem_write_buffer(header.c_str(), footer.c_str(), der.data(), der.size(),
                                         buf.data(), buf.size(), &olen),
                "cannot write PEM");
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

// --- signing -----------------------------------------------------------------------

void write_signature_algorithm(DerWriter& w, const mbedtls_pk_context& signer) {
  const bool rsa = mbedtls_pk_can_do(&signer, MBEDTLS_PK_RSA);
  const char* oid = nullptr;
  size_t oid_len = 0;
  check_mbedtls(mbedtls_oid_get_oid_by_sig_alg(rsa ? MBEDTLS_PK_RSA : MBEDTLS_PK_ECDSA,
                                               MBEDTLS_MD_SHA256, &oid, &oid_len),
                "no signature algorithm for the signing key");
  size_t alg = w.mark();
  if (rsa) w.null();
  w.oid(oid_bytes(std::string_view(oid, oid_len)));
  w.close(alg, kSequence);
}

Bytes sign_tbs(ByteView tbs, mbedtls_pk_context& signer, Random& rng) {
  unsigned char hash[32];
  check_mbedtls(
      mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), tbs.data(), tbs.size(), hash),
      "cannot hash the data to sign");
  unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
  size_t sig_len = 0;
  check_mbedtls(mbedtls_pk_sign(&signer, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &sig_len,
                                Random::callback, rng.context()),
                "signing failed");
  DerWriter w(tbs.size() + sig_len + 64);
  size_t seq = w.mark();
  w.bit_string(ByteView(sig, sig_len));
  write_signature_algorithm(w, signer);
  w.raw(tbs);
  w.close(seq, kSequence);
  return w.bytes();
}

// --- certificates ------------------------------------------------------------------

void CertificateWriter::set_serial(const mbedtls_mpi& serial) {
  DerWriter w(64);
  w.integer(serial);
  serial_ = w.bytes();
}

void CertificateWriter::set_validity(std::time_t not_before, std::time_t not_after) {
  not_before_ = not_before;
  not_after_ = not_after;
}

void CertificateWriter::add_extension(std::string_view oid, bool critical, ByteView value) {
  extensions_.push_back(Extension{std::string(oid), critical, Bytes(value.begin(), value.end())});
}

Bytes CertificateWriter::sign(Random& rng) {
  if (serial_.empty() || subject_.empty() || issuer_.empty() || subject_key_ == nullptr ||
      issuer_key_ == nullptr) {
    throw Error("internal error: incomplete certificate");
  }
  size_t capacity = 4096 + subject_.size() + issuer_.size();
  for (const Extension& e : extensions_)
    capacity += e.oid.size() + e.value.size() + 16;
  DerWriter w(capacity);
  size_t tbs = w.mark();

  // extensions [3] EXPLICIT Extensions
  size_t exts_tag = w.mark();
  size_t exts = w.mark();
  for (auto it = extensions_.rbegin(); it != extensions_.rend(); ++it) {
    write_extension(w, oid_bytes(it->oid), it->critical, it->value);
  }
  w.close(exts, kSequence);
  w.close(exts_tag, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3);

  // subjectPublicKeyInfo, as mbedTLS writes it.
  Bytes spki(MBEDTLS_MPI_MAX_SIZE * 2 + 64);
  int spki_len = mbedtls_pk_write_pubkey_der(subject_key_, spki.data(), spki.size());
  check_mbedtls(spki_len, "cannot encode the public key");
  w.raw(ByteView(spki.data() + spki.size() - spki_len, static_cast<size_t>(spki_len)));

  w.raw(subject_);
  size_t validity = w.mark();
  write_x509_time(w, not_after_);
  write_x509_time(w, not_before_);
  w.close(validity, kSequence);
  w.raw(issuer_);
  write_signature_algorithm(w, *issuer_key_);
  w.raw(serial_);
  size_t version = w.mark();
  w.integer(2);  // v3
  w.close(version, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0);
  w.close(tbs, kSequence);

  return sign_tbs(w.view(), *issuer_key_, rng);
}

void ParsedCertificate::load(const std::string& path, const std::string& role) {
  std::string text = read_file(path, role);
  int ret = mbedtls_x509_crt_parse(&crt_, reinterpret_cast<const unsigned char*>(text.c_str()),
                                   parse_length(text));
  if (ret != 0) {
    if (ret > 0) {
      throw Error(role + " '" + path + "': " + std::to_string(ret) +
                  " of its certificates could not be parsed");
    }
    throw Error(role + " '" + path + "' is not a PEM or DER X.509 certificate (" +
                mbedtls_message(ret) + ")");
  }
}

void ParsedCertificate::parse_der(ByteView der) {
  check_mbedtls(mbedtls_x509_crt_parse_der(&crt_, der.data(), der.size()),
                "cannot parse the certificate");
}

bool signature_matches(const mbedtls_x509_buf& tbs, mbedtls_md_type_t md, mbedtls_pk_type_t pk,
                       const void* sig_opts, const mbedtls_x509_buf& sig,
                       mbedtls_pk_context& signer_pk) {
  const mbedtls_md_info_t* info = mbedtls_md_info_from_type(md);
  if (info == nullptr) return false;
  unsigned char hash[MBEDTLS_MD_MAX_SIZE];
  if (mbedtls_md(info, tbs.p, tbs.len, hash) != 0) return false;
  return mbedtls_pk_verify_ext(pk, sig_opts, &signer_pk, md, hash, mbedtls_md_get_size(info), sig.p,
                               sig.len) == 0;
}

}  // namespace mqgate::pki
