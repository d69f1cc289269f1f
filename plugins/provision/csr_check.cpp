#include "csr_check.hpp"

#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>

#include <cstring>

namespace mqgate::provision {

namespace {

constexpr size_t kMaxCsrBytes = 16384;  // a 4096-bit RSA CSR in PEM is under 2 KiB

bool oid_is(const unsigned char* p, size_t len, const char* oid, size_t oid_len) {
  return len == oid_len && std::memcmp(p, oid, len) == 0;
}

// One requested extension: subjectAltName, or basicConstraints with cA TRUE, is refused.
Refusal check_extension(unsigned char* p, const unsigned char* end) {
  size_t len;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_OID) != 0)
    return {"bad-csr", "malformed extension request"};
  const unsigned char* oid = p;
  const size_t oid_len = len;
  p += len;
  int critical = 0;
  if (p < end && *p == MBEDTLS_ASN1_BOOLEAN && mbedtls_asn1_get_bool(&p, end, &critical) != 0)
    return {"bad-csr", "malformed extension request"};
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0)
    return {"bad-csr", "malformed extension request"};
  if (oid_is(oid, oid_len, MBEDTLS_OID_SUBJECT_ALT_NAME,
             MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME)))
    return {"bad-csr",
            "the CSR asks for a subjectAltName: the issuer sets the device's name itself; "
            "send a CSR without one"};
  if (oid_is(oid, oid_len, MBEDTLS_OID_BASIC_CONSTRAINTS,
             MBEDTLS_OID_SIZE(MBEDTLS_OID_BASIC_CONSTRAINTS))) {
    unsigned char* v = p;
    const unsigned char* v_end = p + len;
    size_t seq;
    int ca = 0;
    if (mbedtls_asn1_get_tag(&v, v_end, &seq, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) !=
        0)
      return {"bad-csr", "malformed basicConstraints request"};
    if (seq > 0 && *v == MBEDTLS_ASN1_BOOLEAN && mbedtls_asn1_get_bool(&v, v_end, &ca) != 0)
      return {"bad-csr", "malformed basicConstraints request"};
    if (ca) return {"bad-csr", "the CSR asks for CA:TRUE: a device certificate is never a CA"};
  }
  return {};
}

// CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, [0] attributes };
// the extensionRequest attribute (PKCS#9, 1.2.840.113549.1.9.14) holds Extensions.
Refusal check_requested_extensions(const mbedtls_x509_buf& cri) {
  static const char kExtensionRequest[] = MBEDTLS_OID_PKCS9 "\x0e";
  unsigned char* p = cri.p;
  const unsigned char* end = cri.p + cri.len;
  size_t len;
  const Refusal malformed{"bad-csr", "malformed CertificationRequestInfo"};
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return malformed;
  end = p + len;
  for (int skip = 0; skip < 3; ++skip) {  // version, subject, subjectPKInfo
    if (p >= end) return malformed;
    ++p;  // the tag
    if (mbedtls_asn1_get_len(&p, end, &len) != 0) return malformed;
    p += len;
  }
  if (p >= end) return {};  // no attributes
  if (mbedtls_asn1_get_tag(&p, end, &len,
                           MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED) != 0)
    return malformed;
  const unsigned char* attrs_end = p + len;
  while (p < attrs_end) {
    if (mbedtls_asn1_get_tag(&p, attrs_end, &len,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
      return malformed;
    const unsigned char* attr_end = p + len;
    unsigned char* q = p;
    p += len;
    if (mbedtls_asn1_get_tag(&q, attr_end, &len, MBEDTLS_ASN1_OID) != 0) return malformed;
    const bool ext_request = oid_is(q, len, kExtensionRequest, sizeof kExtensionRequest - 1);
    q += len;
    if (!ext_request) continue;
    if (mbedtls_asn1_get_tag(&q, attr_end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET) !=
            0 ||
        mbedtls_asn1_get_tag(&q, attr_end, &len,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
      return malformed;
    const unsigned char* exts_end = q + len;
    while (q < exts_end) {
      if (mbedtls_asn1_get_tag(&q, exts_end, &len,
                               MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
        return malformed;
      if (Refusal r = check_extension(q, q + len)) return r;
      q += len;
    }
  }
  return {};
}

Refusal check_key(mbedtls_pk_context& pk, const KeyPolicy& policy) {
  const mbedtls_pk_type_t type = mbedtls_pk_get_type(&pk);
  if (type == MBEDTLS_PK_RSA) {
    const size_t bits = mbedtls_pk_get_bitlen(&pk);
    if (bits < policy.min_rsa_bits)
      return {"weak-key", "RSA key of " + std::to_string(bits) + " bits; at least " +
                              std::to_string(policy.min_rsa_bits) + " are needed"};
    return {};
  }
  if (type == MBEDTLS_PK_ECKEY || type == MBEDTLS_PK_ECDSA) {
    const mbedtls_ecp_group_id curve = mbedtls_pk_ec(pk)->grp.id;
    if ((curve == MBEDTLS_ECP_DP_SECP256R1 && policy.ec_p256) ||
        (curve == MBEDTLS_ECP_DP_SECP384R1 && policy.ec_p384))
      return {};
    return {"weak-key", "EC key on a curve that is not allowed (P-256 or P-384 are)"};
  }
  return {"weak-key", "key type not allowed (EC P-256/P-384 or RSA are)"};
}

}  // namespace

Refusal check_csr(std::string_view payload, const KeyPolicy& policy, Csr& out) {
  if (payload.empty() || payload.size() > kMaxCsrBytes)
    return {"bad-csr", "the payload must be one PKCS#10 CSR (PEM or DER) of at most 16 KiB"};
  mbedtls_x509_csr& csr = out.get();
  int ret;
  if (payload.find("-----BEGIN") != std::string_view::npos) {
    const std::string pem(payload);  // mbedTLS wants PEM NUL-terminated, the NUL counted
    ret = mbedtls_x509_csr_parse(&csr, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                 pem.size() + 1);
  } else {
    ret = mbedtls_x509_csr_parse_der(&csr, reinterpret_cast<const unsigned char*>(payload.data()),
                                     payload.size());
  }
  if (ret != 0) return {"bad-csr", "the payload is not a PKCS#10 CSR that can be parsed"};
  // Proof of possession: the request is signed by the key it carries.
  const mbedtls_md_info_t* md = mbedtls_md_info_from_type(csr.sig_md);
  unsigned char hash[MBEDTLS_MD_MAX_SIZE];
  if (md == nullptr || mbedtls_md(md, csr.cri.p, csr.cri.len, hash) != 0)
    return {"bad-signature", "the CSR's signature algorithm is not supported"};
  if (mbedtls_pk_verify_ext(csr.sig_pk, csr.sig_opts, &csr.pk, csr.sig_md, hash,
                            mbedtls_md_get_size(md), csr.sig.p, csr.sig.len) != 0)
    return {"bad-signature",
            "the CSR's signature does not verify with its own key (no proof of possession)"};
  if (Refusal r = check_key(csr.pk, policy)) return r;
  return check_requested_extensions(csr.cri);
}

}  // namespace mqgate::provision
